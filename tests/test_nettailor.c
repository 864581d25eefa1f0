/* NetTailor passes: E[C] and its gradient on a hand-worked graph, prune
 * propagation, tailor's structure on ResNet-8. */
#include "testutil.h"
#include "ntc/frontends.h"
#include "ntc/nettailor.h"
#include "ntc/pass.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- a hand-built tailored graph ------------------------------------------
 *
 * Every activation is [N,2,1,1], so a 1x1 conv costs 2*2 = 4 MACs.  The
 * backbone is declared to cost 40 MACs, so a universal block (two convs)
 * has c = 8/40 = 0.2 and a proxy (one conv) c = 4/40 = 0.1.
 *
 *   stem:  s = conv(x)
 *   A:     a = relu(mix(uA(s), pA1(s)))
 *   B:     b = relu(mix(uB(a), pB1(a), pB2(s)))
 *   C:     c = relu(mix(uC(b), pC1(b), pC2(a)))       (only in the 3-layer graph)
 *   head:  logits = linear(flatten(last layer))
 */

static int conv(ntc_graph *g, const char *name, int in, int block)
{
    int n = ntc_graph_add_node(g, NTC_OP_conv2d, name, &in, 1, block);
    ck_assert_int_ge(n, 0);
    g->nodes[n].a.filters = 2;
    g->nodes[n].a.kernel[0] = g->nodes[n].a.kernel[1] = 1;
    ck_assert_int_ge(ntc_node_add_param(g, n, "weight", NULL), 0);
    return g->nodes[n].out;
}

static int block(ntc_graph *g, const char *name, ntc_role role, int src, int convs)
{
    int b = ntc_graph_add_block(g, name, role);
    ck_assert_int_ge(b, 0);
    char nm[64];
    int v = src;
    for (int i = 0; i < convs; i++) {
        snprintf(nm, sizeof nm, "%s.c%d", name, i);
        v = conv(g, nm, v, b);
    }
    return v;
}

static int layer(ntc_graph *g, const char *name, const int *br, int n, const float *logits)
{
    char nm[64];
    snprintf(nm, sizeof nm, "%s.mix", name);
    int m = ntc_graph_add_node(g, NTC_OP_mix, nm, br, n, -1);
    ck_assert_int_ge(m, 0);
    int alpha = ntc_node_add_param(g, m, "alpha", NULL);
    g->values[alpha].shape = (ntc_shape){1, {n}};
    g->values[alpha].data = ntc_malloc(sizeof(float) * (size_t)n);
    g->values[alpha].owned = true;
    memcpy(g->values[alpha].data, logits, sizeof(float) * (size_t)n);
    int mo = g->nodes[m].out;
    int r = ntc_graph_add_node(g, NTC_OP_relu, name, &mo, 1, -1);
    return g->nodes[r].out;
}

static ntc_graph *hand_graph(bool three, const float *zA, const float *zB, const float *zC)
{
    ntc_graph *g = ntc_graph_new("hand");
    ntc_shape s = {4, {NTC_BATCH, 2, 1, 1}};
    int x = ntc_graph_add_input(g, "x", &s);
    int st = block(g, "stem", NTC_ROLE_UNIVERSAL, x, 1);
    int a = layer(g, "A", (int[]){block(g, "uA", NTC_ROLE_UNIVERSAL, st, 2),
                                  block(g, "pA1", NTC_ROLE_TASK, st, 1)}, 2, zA);
    int b = layer(g, "B", (int[]){block(g, "uB", NTC_ROLE_UNIVERSAL, a, 2),
                                  block(g, "pB1", NTC_ROLE_TASK, a, 1),
                                  block(g, "pB2", NTC_ROLE_TASK, st, 1)}, 3, zB);
    int last = b;
    if (three)
        last = layer(g, "C", (int[]){block(g, "uC", NTC_ROLE_UNIVERSAL, b, 2),
                                     block(g, "pC1", NTC_ROLE_TASK, b, 1),
                                     block(g, "pC2", NTC_ROLE_TASK, a, 1)}, 3, zC);
    int f = ntc_graph_add_node(g, NTC_OP_flatten, "flat", &last, 1, -1);
    int fo = g->nodes[f].out;
    int fc = ntc_graph_add_node(g, NTC_OP_linear, "fc", &fo, 1, -1);
    g->nodes[fc].a.units = 3;
    ntc_node_add_param(g, fc, "weight", NULL);
    ntc_graph_add_output(g, "logits", g->nodes[fc].out);
    ntc_graph_set_meta(g, NTC_META_BACKBONE_MACS, "40");
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    return g;
}

/* alphas A = [.5, .5], B = [.5, .25, .25]:
 *   P_out(A) = (1 - .5)(1 - .25) = .375 (uB and pB1 read a); P_out(B) = 0 (head)
 *   uA : .2 * (.5 - 0 - .375)   = .025
 *   pA1: .1 * (.5 - 0 - .375)   = .0125
 *   uB : .2 * (.5 - .25 - 0)    = .05     P_in = (1 - .5)(1 - .5)
 *   pB1: .1 * (.25 - .25 - 0)   = 0
 *   pB2: .1 * (.25 - 0 - 0)     = .025    (reads the stem: P_in = 0)
 *   E[C] = .1125
 * dE/dalpha: A0 = .2 + (.2 + .1)(1 - .5) = .35     A1 = .1 + .3 * .5 = .25
 *            B0 = .2 + (.2 + .1)(1 - .25) = .425   B1 = .1 + .3 * (1 - .5) = .25
 *            B2 = .1
 * through the softmax, dz_k = a_k (da_k - sum_m a_m da_m):
 *   A: sum = .3  -> dz = [.025, -.025]
 *   B: sum = .3  -> dz = [.0625, -.0125, -.05] */
START_TEST(expected_complexity_by_hand)
{
    ntc_graph *g = hand_graph(false, (float[]){0, 0}, (float[]){logf(2), 0, 0}, NULL);
    ntc_err err = {0};
    ntc_nt_model *m = ntc_nt_analyze(g, &err);
    ck_assert_msg(m != NULL, "%s", ntc_err_str(&err));
    ck_assert_int_eq(m->n_layers, 2);
    ck_assert_int_eq(m->backbone_macs, 40);
    ck_assert(m->layers[0].br[0].universal);
    ck_assert(!m->layers[0].br[1].universal);
    ck_assert_int_eq(m->layers[0].br[0].src_layer, -1);
    ck_assert_int_eq(m->layers[1].br[0].src_layer, 0);
    ck_assert_int_eq(m->layers[1].br[2].src_layer, -1);
    ck_assert(!m->layers[0].fixed_reader);
    ck_assert(m->layers[1].fixed_reader);
    ck_assert_double_eq_tol(m->layers[0].br[0].cost, 0.2, 1e-12);
    ck_assert_double_eq_tol(m->layers[1].br[2].cost, 0.1, 1e-12);
    float gA[2], gB[3];
    float *grad[] = {gA, gB};
    double e = ntc_nt_expected_complexity(m, g, grad);
    ck_assert_double_eq_tol(e, 0.1125, 1e-6);
    ck_assert_float_eq_tol(gA[0], 0.025f, 1e-6f);
    ck_assert_float_eq_tol(gA[1], -0.025f, 1e-6f);
    ck_assert_float_eq_tol(gB[0], 0.0625f, 1e-6f);
    ck_assert_float_eq_tol(gB[1], -0.0125f, 1e-6f);
    ck_assert_float_eq_tol(gB[2], -0.05f, 1e-6f);
    ntc_nt_free(m);
    ntc_graph_free(g);
}
END_TEST

/* The analytic gradient matches central differences at random logits on
 * the three-layer graph (P_in, P_out and a layer read across two layers). */
START_TEST(expected_complexity_gradient)
{
    unsigned seed = 7;
    float zA[2], zB[3], zC[3];
    for (int i = 0; i < 3; i++) {
        zB[i] = 2 * tu_randf(&seed);
        zC[i] = 2 * tu_randf(&seed);
        if (i < 2)
            zA[i] = 2 * tu_randf(&seed);
    }
    ntc_graph *g = hand_graph(true, zA, zB, zC);
    ntc_err err = {0};
    ntc_nt_model *m = ntc_nt_analyze(g, &err);
    ck_assert_ptr_nonnull(m);
    float gA[2], gB[3], gC[3];
    float *grad[] = {gA, gB, gC};
    ntc_nt_expected_complexity(m, g, grad);
    for (int l = 0; l < 3; l++) {
        float *z = g->values[m->layers[l].alpha].data;
        for (int k = 0; k < m->layers[l].n_branches; k++) {
            float keep = z[k], h = 1e-3f;
            z[k] = keep + h;
            double ep = ntc_nt_expected_complexity(m, g, NULL);
            z[k] = keep - h;
            double em = ntc_nt_expected_complexity(m, g, NULL);
            z[k] = keep;
            double fd = (ep - em) / (2 * h);
            ck_assert_msg(fabs(fd - grad[l][k]) < 1e-4, "layer %d branch %d: analytic %g, numeric %g",
                          l, k, grad[l][k], fd);
        }
    }
    ntc_nt_free(m);
    ntc_graph_free(g);
}
END_TEST

static int prune(ntc_graph *g, const char *pipeline, ntc_err *err)
{
    return ntc_run_passes(g, pipeline, NTC_PASS_TRAINING, err);
}

static bool has_block(const ntc_graph *g, const char *name) { return ntc_graph_find_block(g, name) >= 0; }

static void assert_blocks(const ntc_graph *g, const char *const *kept, const char *const *gone)
{
    for (; *kept; kept++)
        ck_assert_msg(has_block(g, *kept), "block %s should be kept", *kept);
    for (; *gone; gone++)
        ck_assert_msg(!has_block(g, *gone), "block %s should be gone", *gone);
}

/* A layer losing all its branches is dead, and so is every branch that
 * reads it (here uB, pB1 and pC2 read layer A).
 *   A = softmax(-1, -3) = [.881, .119]
 *   B = softmax(0, -5, 3) = [.047, .0003, .953]
 *   C = softmax(3, 0, 0) = [.909, .045, .045]
 * universal=2 cuts uB (.047) and uA (.881 < .909); proxy-threshold .2
 * cuts pA1, pB1, pC1, pC2.  A has nothing left: dead.  B lives on pB2,
 * which reads the stem; C on uC. */
START_TEST(prune_dead_layer_kills_readers)
{
    ntc_graph *g = hand_graph(true, (float[]){-1, -3}, (float[]){0, -5, 3}, (float[]){3, 0, 0});
    ntc_err err = {0};
    ck_assert_msg(prune(g, "prune:universal=2:proxy-threshold=0.2,dce", &err) == 0, "%s", ntc_err_str(&err));
    assert_blocks(g, (const char *[]){"stem", "pB2", "uC", NULL},
                  (const char *[]){"uA", "pA1", "uB", "pB1", "pC1", "pC2", NULL});
    ck_assert_int_lt(ntc_graph_find_node(g, "A"), 0);
    ck_assert_int_lt(ntc_graph_find_node(g, "A.mix"), 0);
    int mb = ntc_graph_find_node(g, "B.mix");
    ck_assert_int_eq(g->nodes[mb].n_in, 1);
    ck_assert_int_eq(g->values[g->nodes[mb].par[0]].shape.dims[0], 1);
    ck_assert_float_eq(g->values[g->nodes[mb].par[0]].data[0], 3.0f);   /* pB2's logit kept */
    ck_assert_ptr_nonnull(ntc_graph_get_meta(g, NTC_META_PRUNED "uA"));
    ck_assert_ptr_nonnull(strstr(ntc_graph_get_meta(g, NTC_META_PRUNED "pB1"), "layer=uB"));
    ck_assert_int_eq(ntc_graph_verify(g, &err), 0);
    ntc_graph_free(g);
}
END_TEST

/* A layer whose output nobody reads is dead although its branches pass
 * the thresholds: A = [.5, .5] is read by uB (cut: lowest universal),
 * pB1 (.0003) and pC2 (.045), all cut. */
START_TEST(prune_unread_layer_dies)
{
    ntc_graph *g = hand_graph(true, (float[]){0, 0}, (float[]){-5, -5, 3}, (float[]){3, 0, 0});
    ntc_err err = {0};
    ck_assert_msg(prune(g, "prune:universal=1:proxy-threshold=0.2,dce", &err) == 0, "%s", ntc_err_str(&err));
    assert_blocks(g, (const char *[]){"stem", "pB2", "uC", NULL},
                  (const char *[]){"uA", "pA1", "uB", "pB1", "pC1", "pC2", NULL});
    ntc_graph_free(g);
}
END_TEST

/* Nothing below the thresholds: the graph is unchanged.  Asked for more
 * universal blocks than can go without disconnecting the classifier, the
 * pass removes only what it can (here none: every layer has only its
 * universal block left once the proxies are gone).  Thresholds that empty
 * the last layer are an error. */
START_TEST(prune_keeps_and_refuses)
{
    ntc_graph *g = hand_graph(true, (float[]){0, 0}, (float[]){0, 0, 0}, (float[]){0, 0, 0});
    int nodes = g->n_nodes;
    ntc_err err = {0};
    ck_assert_int_eq(prune(g, "prune:proxy-threshold=0.1", &err), 0);
    ck_assert_int_eq(g->n_nodes, nodes);
    ck_assert_msg(prune(g, "prune:universal=3:proxy-threshold=0.5,dce", &err) == 0, "%s", ntc_err_str(&err));
    assert_blocks(g, (const char *[]){"stem", "uA", "uB", "uC", NULL},
                  (const char *[]){"pA1", "pB1", "pB2", "pC1", "pC2", NULL});
    ntc_graph_free(g);
    g = hand_graph(true, (float[]){0, 0}, (float[]){0, 0, 0}, (float[]){0, 0, 0});
    ck_assert_int_ne(prune(g, "prune:universal-threshold=0.4:proxy-threshold=0.5", &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "the thresholds remove every branch of layer 'uC'"));
    ntc_graph_free(g);
}
END_TEST

/* ResNet-8 has a stem and 3 residual layers: max-skip k gives layer i
 * (1-based) min(i, k) proxies. */
START_TEST(tailor_resnet8)
{
    const int want_proxies[] = {0, 3, 5, 6};
    const int want_sizes[][3] = {{0}, {2, 2, 2}, {2, 3, 3}, {2, 3, 4}};
    for (int k = 1; k <= 3; k++) {
        ntc_graph *g = tu_resnet(8, 0);
        ntc_err err = {0};
        char pipeline[64];
        snprintf(pipeline, sizeof pipeline, "tailor:max-skip=%d:classes=7", k);
        ck_assert_msg(ntc_run_passes(g, pipeline, NTC_PASS_TRAINING, &err) == 0, "%s", ntc_err_str(&err));
        int proxies = 0, universal = 0;
        for (int b = 0; b < g->n_blocks; b++) {
            if (g->blocks[b].role == NTC_ROLE_UNIVERSAL) {
                universal++;
                ck_assert(g->blocks[b].frozen);
            } else if (strstr(g->blocks[b].name, ".p")) {
                proxies++;
                ck_assert(!g->blocks[b].frozen);
                ck_assert_ptr_nonnull(g->blocks[b].reads);
            }
        }
        ck_assert_int_eq(universal, 4);
        ck_assert_int_eq(proxies, want_proxies[k]);
        ntc_nt_model *m = ntc_nt_analyze(g, &err);
        ck_assert_int_eq(m->n_layers, 3);
        for (int l = 0; l < 3; l++) {
            ck_assert_int_eq(m->layers[l].n_branches, want_sizes[k][l]);
            const float *z = g->values[m->layers[l].alpha].data;
            ck_assert_float_eq(z[0], 2.0f);
            for (int j = 1; j < m->layers[l].n_branches; j++)
                ck_assert_float_eq(z[j], -2.0f);
        }
        /* Layer outputs keep the backbone's names (the teacher pairs them). */
        ck_assert_str_eq(g->values[m->layers[2].out].name, "s3.b0.relu");
        int fc = ntc_graph_find_node(g, "head.fc");
        ck_assert_int_ge(fc, 0);
        ck_assert_int_eq(g->nodes[fc].a.units, 7);
        ck_assert_ptr_nonnull(ntc_graph_get_meta(g, NTC_META_BACKBONE_MACS));
        /* With logits +2/-2 the universal path dominates: E[C] is close to
         * the universal blocks' share. */
        double e = ntc_nt_expected_complexity(m, g, NULL);
        ck_assert(e > 0.5 && e < 1.0);
        ntc_nt_free(m);
        ntc_graph_free(g);
    }
}
END_TEST

START_TEST(tailor_refuses)
{
    ntc_graph *g = tu_resnet(8, 0);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_run_passes(g, "tailor", NTC_PASS_TRAINING, &err), 0);
    ck_assert_int_ne(ntc_run_passes(g, "tailor", NTC_PASS_TRAINING, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "tailored already"));
    ntc_graph_free(g);
    g = tu_resnet(8, 0);
    ck_assert_int_ne(ntc_run_passes(g, "tailor:max-skip=99", NTC_PASS_TRAINING, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "max-skip"));
    ntc_graph_free(g);
}
END_TEST

/* new-head replaces only the classifier: same name, new size, fresh
 * weights; every other parameter untouched. */
START_TEST(new_head)
{
    ntc_graph *g = tu_resnet(8, 0);
    ntc_err err = {0};
    int w = ntc_graph_find_value(g, "s1.b0.conv1.weight");
    float before = g->values[w].data[3];
    ck_assert_msg(ntc_run_passes(g, "new-head:classes=26", NTC_PASS_TRAINING, &err) == 0, "%s", ntc_err_str(&err));
    int fc = ntc_graph_find_node(g, "head.fc");
    ck_assert_int_ge(fc, 0);
    ck_assert_int_eq(g->nodes[fc].a.units, 26);
    int fw = g->nodes[fc].par[0];
    ck_assert_int_eq(g->values[fw].shape.dims[0], 26);
    ck_assert_ptr_nonnull(g->values[fw].data);
    ck_assert_float_eq(g->values[ntc_graph_find_value(g, "s1.b0.conv1.weight")].data[3], before);
    ck_assert_int_eq(g->values[g->outputs[0].value].shape.dims[1], 26);
    ntc_graph_free(g);
}
END_TEST

/* The commands end to end: tailor and prune a ResNet-8, then stats shows
 * the alpha table with the removed universal block and dot greys it. */
START_TEST(commands)
{
    const char *d = tu_tmpdir();
    char *out = NULL;
    ck_assert_int_eq(tu_ntc(NULL, "new resnet --depth 8 --input 1x28x28 --classes 10 -o %s/b.xml", d), 0);
    ck_assert_int_eq(tu_ntc(&out, "tailor %s/b.xml --classes 4 -o %s/s.xml", d, d), 0);
    ck_assert_ptr_nonnull(strstr(out, "student graph"));
    free(out);
    /* all universal alphas start equal (+2); with 2, 3 and 4 branches the
     * last layer's is the lowest: universal=1 removes s3.b0. */
    ck_assert_int_eq(tu_ntc(&out, "prune %s/s.xml --universal 1 --proxy-threshold 0.01 -o %s/p.xml", d, d), 0);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "stats %s/p.xml --json", d), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"universal_kept\": 2, \"universal_total\": 3"));
    ck_assert_ptr_nonnull(strstr(out, "\"removed\": [{\"block\": \"s3.b0\", \"layer\": \"s3.b0\", \"universal\": true"));
    ck_assert_ptr_nonnull(strstr(out, "\"expected_complexity\""));
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "stats %s/p.xml", d), 0);
    ck_assert_ptr_nonnull(strstr(out, "removed by prune"));
    ck_assert_ptr_nonnull(strstr(out, "universal blocks kept 2/3, proxies kept 6/6"));
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "dot %s/p.xml", d), 0);
    ck_assert_ptr_nonnull(strstr(out, "s3.b0\\nuniversal, removed"));
    ck_assert_ptr_nonnull(strstr(out, "style=\"dashed,rounded,filled\""));
    free(out);
    /* every proxy cut: no universal block can go without cutting the
     * classifier off, so none does, and prune says so */
    ck_assert_int_eq(tu_ntc(&out, "prune %s/s.xml --universal 1 --proxy-threshold 0.5 -o %s/q.xml", d, d), 0);
    ck_assert_ptr_nonnull(strstr(out, "would disconnect the classifier"));
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "prune %s/s.xml --universal-threshold 0.99 --proxy-threshold 0.5 -o %s/q.xml", d, d), 1);
    ck_assert_ptr_nonnull(strstr(out, "ntc: error: "));
    ck_assert_ptr_nonnull(strstr(out, "whose output the network needs"));
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "tailor %s/b.xml --max-skip x -o %s/t.xml", d, d), 2);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nettailor");
    TCase *tc = tcase_create("nettailor");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, expected_complexity_by_hand);
    tcase_add_test(tc, expected_complexity_gradient);
    tcase_add_test(tc, prune_dead_layer_kills_readers);
    tcase_add_test(tc, prune_unread_layer_dies);
    tcase_add_test(tc, prune_keeps_and_refuses);
    tcase_add_test(tc, tailor_resnet8);
    tcase_add_test(tc, tailor_refuses);
    tcase_add_test(tc, new_head);
    tcase_add_test(tc, commands);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
