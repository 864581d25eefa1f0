/* Training: losses, the training executor's gradients, local terms,
 * SGD and schedules, the training loop, checkpoints and resume.
 *
 * - Losses against values computed by hand.
 * - The executor's parameter gradients against central finite differences
 *   of the whole forward + loss on a tiny conv-bn-relu-mix-gap-linear graph
 *   with a frozen block (batchnorm of trainable blocks in training mode),
 *   and no gradient for frozen parameters or for values nothing trainable
 *   feeds.
 * - Thread count changes results only by rounding.
 * - A local term reaches only its scope's parameters, with the gradient
 *   finite differences of the term alone give there.
 * - SGD with momentum and weight decay against a hand-computed update.
 * - Training: the loss falls on a small fixed problem; an interrupted and
 *   resumed run ends with the same weights, bit for bit, as an
 *   uninterrupted one; a NaN loss stops training with an error. */
#include "testutil.h"
#include "ntc/data.h"
#include "ntc/frontends.h"
#include "ntc/pass.h"
#include "ntc/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- a tiny graph ----------------------------------------------------------------- */

static int node1(ntc_graph *g, ntc_op op, const char *name, int in, int block)
{
    int n = ntc_graph_add_node(g, op, name, &in, 1, block);
    ck_assert_int_ge(n, 0);
    return n;
}

static int add_params(ntc_graph *g, int n, const char *const *slots)
{
    for (int i = 0; slots[i]; i++)
        ck_assert_int_ge(ntc_node_add_param(g, n, slots[i], NULL), 0);
    return g->nodes[n].out;
}

static int conv(ntc_graph *g, const char *name, int in, int filters, int k, int block)
{
    int n = node1(g, NTC_OP_conv2d, name, in, block);
    ntc_attrs *a = &g->nodes[n].a;
    a->filters = filters;
    a->kernel[0] = a->kernel[1] = k;
    for (int i = 0; i < 4; i++)
        a->pad[i] = k / 2;
    return add_params(g, n, (const char *[]){"weight", "bias", NULL});
}

static int bn(ntc_graph *g, const char *name, int in, int block)
{
    return add_params(g, node1(g, NTC_OP_batchnorm, name, in, block),
                      (const char *[]){"scale", "bias", "mean", "var", NULL});
}

static void fill_params(ntc_graph *g, unsigned seed)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        for (int p = 0; p < NTC_MAX_PARAMS; p++) {
            if (n->par[p] < 0)
                continue;
            ntc_value *v = &g->values[n->par[p]];
            int64_t cnt = ntc_shape_numel(&v->shape);
            v->data = ntc_malloc(sizeof(float) * (size_t)cnt);
            v->owned = true;
            bool var = n->op == NTC_OP_batchnorm && p == 3;
            bool scale = n->op == NTC_OP_batchnorm && p == 0;
            for (int64_t k = 0; k < cnt; k++) {
                float r = tu_randf(&seed);
                v->data[k] = var ? 1.0f + 0.5f * r : scale ? 1.0f + 0.3f * r : 0.5f * r;
            }
        }
    }
}

/* image [N,2,6,6] -> a trainable stem conv 1x1 ("s") -> frozen universal
 * conv+bn ("u") and a task proxy conv 1x1 + bn ("p"), mixed by alphas, relu, a task head conv+bn+relu, global
 * average pool, flatten, linear to 4 logits.  Handles of interest: */
typedef struct {
    ntc_graph *g;
    int image, u_conv, p_conv, mix, relu, head_conv, fc;   /* node handles */
    int scope[8];                                          /* the layer: p block, mix, relu */
    int n_scope;
} tiny_net;

static tiny_net tiny(unsigned seed)
{
    tiny_net t = {0};
    ntc_graph *g = t.g = ntc_graph_new("tiny");
    ntc_shape s;
    ntc_shape_parse("N,2,6,6", &s);
    t.image = ntc_graph_add_input(g, "image", &s);
    int ub = ntc_graph_add_block(g, "u", NTC_ROLE_UNIVERSAL);
    int pb = ntc_graph_add_block(g, "p", NTC_ROLE_TASK);
    int hb = ntc_graph_add_block(g, "head", NTC_ROLE_TASK);
    int sb = ntc_graph_add_block(g, "s", NTC_ROLE_TASK);
    g->blocks[ub].frozen = true;
    int stem = conv(g, "s.conv", t.image, 2, 1, sb);
    int u = bn(g, "u.bn", conv(g, "u.conv", stem, 3, 3, ub), ub);
    int p = bn(g, "p.bn", conv(g, "p.conv", stem, 3, 1, pb), pb);
    int br[] = {u, p};
    t.mix = ntc_graph_add_node(g, NTC_OP_mix, "mix", br, 2, -1);
    int m = add_params(g, t.mix, (const char *[]){"alpha", NULL});
    t.relu = node1(g, NTC_OP_relu, "relu", m, -1);
    int h = bn(g, "h.bn", conv(g, "h.conv", g->nodes[t.relu].out, 4, 3, hb), hb);
    int hr = g->nodes[node1(g, NTC_OP_relu, "h.relu", h, hb)].out;
    int gap = g->nodes[node1(g, NTC_OP_global_avgpool, "gap", hr, hb)].out;
    int flat = g->nodes[node1(g, NTC_OP_flatten, "flat", gap, hb)].out;
    t.fc = node1(g, NTC_OP_linear, "fc", flat, hb);
    g->nodes[t.fc].a.units = 4;
    int z = add_params(g, t.fc, (const char *[]){"weight", "bias", NULL});
    ntc_graph_add_output(g, "logits", z);
    t.u_conv = ntc_graph_find_node(g, "u.conv");
    t.p_conv = ntc_graph_find_node(g, "p.conv");
    t.head_conv = ntc_graph_find_node(g, "h.conv");
    t.scope[t.n_scope++] = t.p_conv;
    t.scope[t.n_scope++] = ntc_graph_find_node(g, "p.bn");
    t.scope[t.n_scope++] = ntc_graph_find_node(g, "u.conv");
    t.scope[t.n_scope++] = ntc_graph_find_node(g, "u.bn");
    t.scope[t.n_scope++] = t.mix;
    t.scope[t.n_scope++] = t.relu;
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    fill_params(g, seed);
    return t;
}

enum { TB = 5, TK = 4 };

static void tiny_data(float *x, int32_t *y)
{
    unsigned s = 99;
    for (int i = 0; i < TB * 2 * 36; i++)
        x[i] = tu_randf(&s);
    for (int i = 0; i < TB; i++)
        y[i] = i % TK;
}

/* The training-mode CE loss of a forward (and, if backward, the gradients). */
static double ce_step(ntc_trainer *tr, const float *x, const int32_t *y, bool backward)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_trainer_graph(tr);
    ck_assert_msg(ntc_trainer_forward(tr, (const float *[]){x}, TB, true, &err) == 0, "%s", ntc_err_str(&err));
    double l = ntc_loss_cross_entropy(ntc_trainer_value(tr, g->outputs[0].value), y, TB, TK, 1.0f,
                                      ntc_trainer_output_grad(tr, 0));
    if (backward)
        ck_assert_msg(ntc_trainer_backward(tr, &err) == 0, "%s", ntc_err_str(&err));
    return l;
}

/* ---- losses -------------------------------------------------------------------------- */

START_TEST(cross_entropy_by_hand)
{
    /* z = [0, ln 3] for label 1: softmax = [1/4, 3/4], loss = -ln(3/4);
     * label 0 of [2, 2]: ln 2.  Mean of the two. */
    float z[] = {0.0f, logf(3.0f), 2.0f, 2.0f};
    int32_t y[] = {1, 0};
    float g[4] = {0};
    double l = ntc_loss_cross_entropy(z, y, 2, 2, 2.0f, g);
    ck_assert_double_eq_tol(l, (-log(0.75) + log(2.0)) / 2, 1e-6);
    /* weight 2, mean over 2: grad = (p - onehot) */
    ck_assert_float_eq_tol(g[0], 0.25f, 1e-6f);
    ck_assert_float_eq_tol(g[1], -0.25f, 1e-6f);
    ck_assert_float_eq_tol(g[2], -0.5f, 1e-6f);
    ck_assert_float_eq_tol(g[3], 0.5f, 1e-6f);
    /* Huge logits stay finite: the shift by the max. */
    float big[] = {1000.0f, 0.0f};
    int32_t y0[] = {1};
    ck_assert_double_eq_tol(ntc_loss_cross_entropy(big, y0, 1, 2, 1.0f, NULL), 1000.0, 1e-3);
    float nan[] = {NAN, 0.0f};
    ck_assert(!isfinite(ntc_loss_cross_entropy(nan, y0, 1, 2, 1.0f, NULL)));
    ck_assert_int_eq(ntc_count_correct(z, y, 2, 2), 2);
    int32_t wrong[] = {0, 1};
    ck_assert_int_eq(ntc_count_correct(z, wrong, 2, 2), 0);
}
END_TEST

START_TEST(mse_by_hand)
{
    float x[] = {1, 2, 3, 4}, t[] = {1, 0, 3, 8};
    float g[4] = {0};
    /* (0 + 4 + 0 + 16) / 4 = 5; d/dx = 2 (x - t) / 4 * weight 3 */
    ck_assert_double_eq_tol(ntc_loss_mse(x, t, 4, 3.0f, g), 5.0, 1e-9);
    ck_assert_float_eq_tol(g[0], 0.0f, 1e-7f);
    ck_assert_float_eq_tol(g[1], 3.0f, 1e-6f);
    ck_assert_float_eq_tol(g[3], -6.0f, 1e-6f);
}
END_TEST

/* ---- gradients ----------------------------------------------------------------------- */

/* Central differences of loss_fn over every element of every trainable
 * parameter, against the analytic gradient ana[i] (trainer order). */
typedef double (*loss_fn)(ntc_trainer *tr, void *ctx);

static void check_fd(ntc_trainer *tr, loss_fn f, void *ctx, float *const *ana, double tol,
                     const char *skip_prefix)
{
    ntc_graph *g = ntc_trainer_graph(tr);
    const double h = 1e-3;
    for (int i = 0; i < ntc_trainer_n_params(tr); i++) {
        ntc_value *v = &g->values[ntc_trainer_param(tr, i)];
        if (skip_prefix && !strncmp(v->name, skip_prefix, strlen(skip_prefix)))
            continue;
        for (int64_t j = 0; j < ntc_shape_numel(&v->shape); j++) {
            float keep = v->data[j];
            v->data[j] = keep + (float)h;
            double up = f(tr, ctx);
            v->data[j] = keep - (float)h;
            double down = f(tr, ctx);
            v->data[j] = keep;
            double num = (up - down) / (2 * h);
            double err = fabs(num - ana[i][j]);
            ck_assert_msg(err <= tol * (1.0 + fabs(num)), "%s[%lld]: analytic %.6g, numeric %.6g", v->name,
                          (long long)j, ana[i][j], num);
        }
    }
}

typedef struct {
    const float *x;
    const int32_t *y;
} ce_ctx;

static double ce_loss(ntc_trainer *tr, void *ctx)
{
    ce_ctx *c = ctx;
    return ce_step(tr, c->x, c->y, false);
}

/* Copies of the trainer's gradients (the next step overwrites them). */
static float **copy_grads(ntc_trainer *tr)
{
    ntc_graph *g = ntc_trainer_graph(tr);
    int n = ntc_trainer_n_params(tr);
    float **out = calloc((size_t)n, sizeof(float *));
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)ntc_shape_numel(&g->values[ntc_trainer_param(tr, i)].shape);
        out[i] = malloc(sizeof(float) * cnt);
        memcpy(out[i], ntc_trainer_grad(tr, i), sizeof(float) * cnt);
    }
    return out;
}

static void free_grads(float **gr, int n)
{
    for (int i = 0; i < n; i++)
        free(gr[i]);
    free(gr);
}

START_TEST(gradients_match_finite_differences)
{
    tiny_net t = tiny(7);
    ntc_graph *g = t.g;
    ntc_err err = {0};
    ntc_trainer *tr = ntc_trainer_new(g, TB, 1, &err);
    ck_assert_msg(tr != NULL, "%s", ntc_err_str(&err));
    float x[TB * 72];
    int32_t y[TB];
    tiny_data(x, y);
    /* Frozen parameters and what only frozen parts feed get no gradient. */
    const ntc_node *uc = &g->nodes[t.u_conv];
    ck_assert_int_eq(ntc_trainer_param_index(tr, uc->par[0]), -1);
    ck_assert_int_eq(ntc_trainer_param_index(tr, g->nodes[ntc_graph_find_node(g, "u.bn")].par[0]), -1);
    ck_assert_int_eq(ntc_trainer_param_index(tr, g->nodes[ntc_graph_find_node(g, "h.bn")].par[2]), -1);
    ck_assert(!ntc_trainer_needs_grad(tr, t.image));
    ck_assert(ntc_trainer_needs_grad(tr, uc->out));      /* the stem below trains */
    ck_assert(ntc_trainer_needs_grad(tr, g->nodes[t.mix].out));
    ck_assert(ntc_trainer_param_index(tr, g->nodes[t.mix].par[0]) >= 0);
    /* stem w, b; proxy conv w, b, bn scale, bias; alpha; head conv w, b, bn scale, bias; fc w, b */
    ck_assert_int_eq(ntc_trainer_n_params(tr), 13);
    ck_assert(ntc_trainer_param_index(tr, g->nodes[ntc_graph_find_node(g, "s.conv")].par[0]) >= 0);
    float frozen_mean[3];
    const float *um = g->values[g->nodes[ntc_graph_find_node(g, "u.bn")].par[2]].data;
    memcpy(frozen_mean, um, sizeof frozen_mean);
    const float *hm = g->values[g->nodes[ntc_graph_find_node(g, "h.bn")].par[2]].data;
    float head_mean = hm[0];

    ce_step(tr, x, y, true);
    /* Training mode moved the trainable batchnorm's running mean, not the frozen one's. */
    ck_assert(memcmp(frozen_mean, um, sizeof frozen_mean) == 0);
    ck_assert(hm[0] != head_mean);
    float **ana = copy_grads(tr);
    ce_ctx c = {x, y};
    check_fd(tr, ce_loss, &c, ana, 2e-2, NULL);
    free_grads(ana, ntc_trainer_n_params(tr));
    ntc_trainer_free(tr);
    ntc_graph_free(g);
}
END_TEST

START_TEST(threads_change_only_rounding)
{
    float x[TB * 72];
    int32_t y[TB];
    tiny_data(x, y);
    float **ref = NULL;
    int n = 0;
    for (int threads = 1; threads <= 4; threads++) {
        tiny_net t = tiny(11);
        ntc_err err = {0};
        ntc_trainer *tr = ntc_trainer_new(t.g, TB, threads, &err);
        ck_assert_msg(tr != NULL, "%s", ntc_err_str(&err));
        ck_assert_int_eq(ntc_trainer_threads(tr), threads);
        ce_step(tr, x, y, true);
        n = ntc_trainer_n_params(tr);
        if (!ref) {
            ref = copy_grads(tr);
        } else {
            for (int i = 0; i < n; i++) {
                const ntc_value *v = &t.g->values[ntc_trainer_param(tr, i)];
                for (int64_t j = 0; j < ntc_shape_numel(&v->shape); j++)
                    ck_assert_msg(fabsf(ntc_trainer_grad(tr, i)[j] - ref[i][j]) <= 1e-5f * (1 + fabsf(ref[i][j])),
                                  "%d threads: %s[%lld] %g vs %g", threads, v->name, (long long)j,
                                  ntc_trainer_grad(tr, i)[j], ref[i][j]);
            }
        }
        ntc_trainer_free(tr);
        ntc_graph_free(t.g);
    }
    free_grads(ref, n);
}
END_TEST

/* The local term: MSE of the layer output (relu) to a fixed target. */
typedef struct {
    int term, value;
    const float *x, *target;
    int64_t count;
} local_ctx;

static double local_loss(ntc_trainer *tr, void *ctx)
{
    local_ctx *c = ctx;
    ntc_err err = {0};
    ck_assert(ntc_trainer_forward(tr, (const float *[]){c->x}, TB, true, &err) == 0);
    return ntc_loss_mse(ntc_trainer_value(tr, c->value), c->target, c->count, 1.0f, NULL);
}

START_TEST(local_term_stays_in_scope)
{
    tiny_net t = tiny(5);
    ntc_graph *g = t.g;
    ntc_err err = {0};
    ntc_trainer *tr = ntc_trainer_new(g, TB, 2, &err);
    ck_assert_msg(tr != NULL, "%s", ntc_err_str(&err));
    int v = g->nodes[t.relu].out;
    int k = ntc_trainer_add_local(tr, v, t.scope, t.n_scope, &err);
    ck_assert_msg(k == 0, "%s", ntc_err_str(&err));
    float x[TB * 72], target[TB * 108];
    int32_t y[TB];
    tiny_data(x, y);
    unsigned s = 3;
    for (int i = 0; i < TB * 108; i++)
        target[i] = tu_randf(&s);
    /* Main loss zero: only the local term's gradient. */
    ck_assert(ntc_trainer_forward(tr, (const float *[]){x}, TB, true, &err) == 0);
    ntc_loss_mse(ntc_trainer_value(tr, v), target, TB * 108, 1.0f, ntc_trainer_local_grad(tr, k));
    ck_assert(ntc_trainer_backward(tr, &err) == 0);
    /* Outside the scope: exactly zero, downstream (the head) and upstream
     * (the stem, whose output the scope reads: the stop-gradient). */
    int n = ntc_trainer_n_params(tr);
    for (int i = 0; i < n; i++) {
        const ntc_value *pv = &g->values[ntc_trainer_param(tr, i)];
        bool head = !strncmp(pv->name, "h.", 2) || !strncmp(pv->name, "fc.", 3) || !strncmp(pv->name, "s.", 2);
        bool nonzero = false;
        for (int64_t j = 0; j < ntc_shape_numel(&pv->shape); j++)
            nonzero |= ntc_trainer_grad(tr, i)[j] != 0.0f;
        ck_assert_msg(head ? !nonzero : nonzero, "%s: gradient %s", pv->name, nonzero ? "non-zero" : "zero");
    }
    /* Inside: the analytic gradient of the term alone.  (The head's
     * finite differences are zero too: it is downstream of v.  The stem's
     * are not: the stop-gradient is what keeps them out.) */
    float **ana = copy_grads(tr);
    local_ctx c = {k, v, x, target, TB * 108};
    check_fd(tr, local_loss, &c, ana, 2e-2, "s.");
    free_grads(ana, n);

    /* Both at once: main + local gradients add up. */
    ce_step(tr, x, y, true);
    float **main_only = copy_grads(tr);
    ck_assert(ntc_trainer_forward(tr, (const float *[]){x}, TB, true, &err) == 0);
    ntc_loss_cross_entropy(ntc_trainer_value(tr, g->outputs[0].value), y, TB, TK, 1.0f, ntc_trainer_output_grad(tr, 0));
    ntc_loss_mse(ntc_trainer_value(tr, v), target, TB * 108, 1.0f, ntc_trainer_local_grad(tr, k));
    ck_assert(ntc_trainer_backward(tr, &err) == 0);
    float **both = copy_grads(tr);
    ck_assert(ntc_trainer_forward(tr, (const float *[]){x}, TB, true, &err) == 0);
    ntc_loss_mse(ntc_trainer_value(tr, v), target, TB * 108, 1.0f, ntc_trainer_local_grad(tr, k));
    ck_assert(ntc_trainer_backward(tr, &err) == 0);
    for (int i = 0; i < n; i++) {
        const ntc_value *pv = &g->values[ntc_trainer_param(tr, i)];
        for (int64_t j = 0; j < ntc_shape_numel(&pv->shape); j++) {
            float sum = main_only[i][j] + ntc_trainer_grad(tr, i)[j];
            ck_assert_msg(fabsf(both[i][j] - sum) <= 1e-5f * (1 + fabsf(sum)), "%s", pv->name);
        }
    }
    free_grads(main_only, n);
    free_grads(both, n);
    ntc_trainer_free(tr);
    ntc_graph_free(g);
}
END_TEST

/* ---- SGD and schedules ------------------------------------------------------------------ */

START_TEST(sgd_by_hand)
{
    tiny_net t = tiny(2);
    ntc_graph *g = t.g;
    ntc_err err = {0};
    ntc_trainer *tr = ntc_trainer_new(g, TB, 1, &err);
    ck_assert(tr != NULL);
    ntc_sgd_opts o = {.momentum = 0.9, .weight_decay = 0.1, .alpha_lr_scale = 2.0};
    ntc_sgd *opt = ntc_sgd_new(tr, &o, &err);
    ck_assert(opt != NULL);
    float x[TB * 72];
    int32_t y[TB];
    tiny_data(x, y);
    int wi = ntc_trainer_param_index(tr, g->nodes[t.fc].par[0]);
    int ai = ntc_trainer_param_index(tr, g->nodes[t.mix].par[0]);
    int si = ntc_trainer_param_index(tr, g->nodes[ntc_graph_find_node(g, "h.bn")].par[0]);
    ck_assert(wi >= 0 && ai >= 0 && si >= 0);
    ck_assert_int_eq(ntc_param_group_of(g, ntc_trainer_param(tr, wi)), NTC_GROUP_WEIGHT);
    ck_assert_int_eq(ntc_param_group_of(g, ntc_trainer_param(tr, ai)), NTC_GROUP_ALPHA);
    ck_assert_int_eq(ntc_param_group_of(g, ntc_trainer_param(tr, si)), NTC_GROUP_NORM);
    float *w = g->values[ntc_trainer_param(tr, wi)].data, *a = g->values[ntc_trainer_param(tr, ai)].data;
    float *sc = g->values[ntc_trainer_param(tr, si)].data;
    /* Two steps; buf1 = d1, w1 = w0 - lr buf1; buf2 = 0.9 buf1 + d2, w2 = w1 - lr buf2. */
    double w0 = w[0], a0 = a[0], s0 = sc[0], lr = 0.5;
    ce_step(tr, x, y, true);
    double gw1 = ntc_trainer_grad(tr, wi)[0], ga1 = ntc_trainer_grad(tr, ai)[0], gs1 = ntc_trainer_grad(tr, si)[0];
    ntc_sgd_step(opt, lr);
    double bw1 = gw1 + 0.1 * w0, w1 = w0 - lr * bw1;
    double ba1 = ga1, a1 = a0 - 2 * lr * ba1;          /* no decay, lr x2 */
    double bs1 = gs1, s1 = s0 - lr * bs1;              /* no decay */
    ck_assert_double_eq_tol(w[0], w1, 1e-6);
    ck_assert_double_eq_tol(a[0], a1, 1e-6);
    ck_assert_double_eq_tol(sc[0], s1, 1e-6);
    ce_step(tr, x, y, true);
    double gw2 = ntc_trainer_grad(tr, wi)[0];
    ntc_sgd_step(opt, lr);
    double w2 = w1 - lr * (0.9 * bw1 + gw2 + 0.1 * w1);
    ck_assert_double_eq_tol(w[0], w2, 1e-5);
    ck_assert_int_eq(ntc_sgd_state_floats(opt) > 0, 1);
    ntc_sgd_free(opt);
    ntc_trainer_free(tr);
    ntc_graph_free(g);
}
END_TEST

START_TEST(schedules)
{
    ntc_schedule s = {.kind = NTC_SCHED_COSINE, .lr = 0.1, .total_steps = 100};
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 0), 0.1, 1e-12);
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 50), 0.05, 1e-12);
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 100), 0.0, 1e-12);
    s.kind = NTC_SCHED_STEP;
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 49), 0.1, 1e-12);
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 50), 0.01, 1e-12);
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 75), 0.001, 1e-12);
    s.kind = NTC_SCHED_COSINE;
    s.warmup_steps = 10;
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 0), 0.01, 1e-12);
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 9), 0.1, 1e-12);
    ck_assert_double_eq_tol(ntc_schedule_lr(&s, 55), 0.05, 1e-12);
    ntc_schedule_kind k;
    ck_assert_int_eq(ntc_schedule_parse("step", &k), 0);
    ck_assert_int_eq(k, NTC_SCHED_STEP);
    ck_assert_int_eq(ntc_schedule_parse("linear", &k), -1);
}
END_TEST


/* ---- the training loop ------------------------------------------------------------------ */

static ntc_graph *small_resnet(int classes)
{
    ntc_resnet_opts o;
    ntc_resnet_opts_default(&o);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_resnet_set_input(&o, "1x12x12", &err), 0);
    o.depth = 8;
    o.classes = classes;
    o.seed = 5;
    ntc_graph *g = ntc_resnet_build(&o, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    return g;
}

static void digits_opts(ntc_train_opts *o, const char *dir)
{
    ntc_train_opts_default(o);
    o->data.source = "digits";
    o->batch = 64;
    o->threads = 2;
    o->limit = 512;
    o->lr = 0.05;
    o->run_dir = dir;
}

/* train_loss of each line of run_dir/train.jsonl into loss[]; the count. */
static int read_losses(const char *dir, double *loss, int cap)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s", path);
    char line[1024];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"train_loss\": ");
        ck_assert(p != NULL);
        loss[n++] = atof(p + 14);
    }
    fclose(f);
    return n;
}

START_TEST(loss_falls)
{
    /* 512 digits, 8 steps per epoch, 4 epochs: 32 steps. */
    ntc_graph *g = small_resnet(10);
    ntc_train_opts o;
    digits_opts(&o, tu_tmpdir());
    o.epochs = 4;
    o.lr = 0.1;
    o.schedule = NTC_SCHED_CONSTANT;
    ntc_train_result res;
    ntc_err err = {0};
    ck_assert_msg(ntc_train(g, &o, &res, &err) == NTC_TRAIN_DONE, "%s", ntc_err_str(&err));
    ck_assert_int_eq(res.steps, 32);
    double loss[8];
    ck_assert_int_eq(read_losses(o.run_dir, loss, 8), 4);
    ck_assert_msg(loss[3] < 0.75 * loss[0], "epoch losses %g .. %g", loss[0], loss[3]);
    ck_assert_msg(res.train_acc > 0.5, "train accuracy %g", res.train_acc);
    ntc_graph_free(g);
}
END_TEST

static bool same_params(const ntc_graph *a, const ntc_graph *b)
{
    int checked = 0;
    for (int v = 0; v < a->n_values; v++) {
        if (a->values[v].kind != NTC_VAL_PARAM)
            continue;
        int w = ntc_graph_find_value(b, a->values[v].name);
        ck_assert_int_ge(w, 0);
        size_t bytes = sizeof(float) * (size_t)ntc_shape_numel(&a->values[v].shape);
        if (memcmp(a->values[v].data, b->values[w].data, bytes))
            return false;
        checked++;
    }
    ck_assert_int_gt(checked, 10);
    return true;
}

START_TEST(resume_is_bit_exact)
{
    char a_dir[2048], b_dir[2048];
    snprintf(a_dir, sizeof a_dir, "%.1000s/a", tu_tmpdir());
    snprintf(b_dir, sizeof b_dir, "%.1000s/b", a_dir);
    ck_assert_int_eq(mkdir(a_dir, 0777), 0);
    ck_assert_int_eq(mkdir(b_dir, 0777), 0);
    ntc_train_opts o;
    ntc_train_result res;
    ntc_err err = {0};
    /* Uninterrupted: 2 epochs of 4 steps, with validation and crops. */
    ntc_graph *full = small_resnet(10);
    digits_opts(&o, a_dir);
    o.epochs = 2;
    o.limit = 256;
    o.data.val_size = 200;
    ck_assert_msg(ntc_train(full, &o, &res, &err) == NTC_TRAIN_DONE, "%s", ntc_err_str(&err));
    /* Interrupted after 1 epoch and 2 steps, then resumed from the checkpoint. */
    ntc_graph *part = small_resnet(10);
    o.run_dir = b_dir;
    o.stop_after_steps = 6;
    ck_assert_msg(ntc_train(part, &o, &res, &err) == NTC_TRAIN_STOPPED, "%s", ntc_err_str(&err));
    ck_assert_int_eq(res.steps, 6);
    ck_assert(!same_params(full, part));
    ntc_graph_free(part);
    ntc_graph *resumed = ntc_train_checkpoint_graph(b_dir, &err);
    ck_assert_msg(resumed != NULL, "%s", ntc_err_str(&err));
    o.stop_after_steps = 0;
    o.resume = true;
    ck_assert_msg(ntc_train(resumed, &o, &res, &err) == NTC_TRAIN_DONE, "%s", ntc_err_str(&err));
    ck_assert_int_eq(res.steps, 8);
    ck_assert_msg(same_params(full, resumed), "resumed weights differ from the uninterrupted run's");
    double la[4], lb[4];
    ck_assert_int_eq(read_losses(a_dir, la, 4), 2);
    ck_assert_int_eq(read_losses(b_dir, lb, 4), 2);
    ck_assert(la[0] == lb[0] && la[1] == lb[1]);
    /* A resume with other options is refused. */
    o.lr = 0.01;
    ck_assert_int_eq(ntc_train(resumed, &o, &res, &err), -1);
    ck_assert_msg(strstr(err.msg, "lr") != NULL, "%s", err.msg);
    ntc_graph_free(resumed);
    ntc_graph_free(full);
}
END_TEST

START_TEST(nan_loss_stops)
{
    ntc_graph *g = small_resnet(10);
    int w = ntc_graph_find_value(g, "head.fc.weight");
    ck_assert_int_ge(w, 0);
    g->values[w].data[3] = NAN;
    ntc_train_opts o;
    digits_opts(&o, tu_tmpdir());
    o.epochs = 1;
    ntc_train_result res;
    ntc_err err = {0};
    ck_assert_int_eq(ntc_train(g, &o, &res, &err), -1);
    ck_assert_msg(strstr(err.msg, "NaN") && strstr(err.msg, "no checkpoint"), "%s", err.msg);
    ntc_graph_free(g);
}
END_TEST

START_TEST(cli_errors)
{
    const char *dir = tu_tmpdir();
    char *out = NULL;
    ck_assert_int_eq(tu_ntc(&out, "new resnet --depth 8 --input 1x12x12 --classes 5 -o %s/b.xml", dir), 0);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "train %s/b.xml --data digits --epochs 0 -o %s/o.xml", dir, dir), 2);
    ck_assert_msg(strstr(out, "--epochs"), "%s", out);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "train %s/b.xml --data digits --schedule linear -o %s/o.xml", dir, dir), 2);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "train %s/b.xml --data digits --epochs 1", dir), 2);
    ck_assert_msg(strstr(out, "-o"), "%s", out);
    free(out);
    /* 10 digit classes, 5 logits. */
    ck_assert_int_eq(tu_ntc(&out, "train %s/b.xml --data digits --epochs 1 -o %s/o.xml", dir, dir), 1);
    ck_assert_msg(strstr(out, "10 classes") && strstr(out, "only 5"), "%s", out);
    free(out);
    /* Fashion-MNIST is 28x28: no silent resampling to 12x12. */
    ck_assert_int_eq(tu_ntc(&out, "train %s/b.xml --data fashion-mnist --epochs 1 -o %s/o.xml", dir, dir), 1);
    ck_assert_msg(strstr(out, "error"), "%s", out);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "train %s/b.xml --data digits --epochs 1 -o /proc/nope/o.xml", dir), 1);
    ck_assert_msg(strstr(out, "cannot write"), "%s", out);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "train --resume %s/none --data digits -o %s/o.xml", dir, dir), 1);
    ck_assert_msg(strstr(out, "checkpoint"), "%s", out);
    free(out);
}
END_TEST

START_TEST(cli_trains_and_writes)
{
    const char *dir = tu_tmpdir();
    char *out = NULL;
    ck_assert_int_eq(tu_ntc(&out, "new resnet --depth 8 --input 1x12x12 --classes 10 -o %s/b.xml", dir), 0);
    free(out);
    int rc = tu_ntc(&out, "train %s/b.xml --data digits --epochs 2 --limit 256 --batch 64 --threads 2 --val 100 "
                          "--run-dir %s/run -o %s/t.xml", dir, dir, dir);
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_msg(strstr(out, "test: accuracy") && strstr(out, "epoch 2/2"), "%s", out);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "check %s/t.xml", dir), 0);
    free(out);
    char path[1024];
    snprintf(path, sizeof path, "%s/run/checkpoint", dir);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
}
END_TEST

/* ---- NetTailor ---------------------------------------------------------------------------- */

START_TEST(nettailor_trains_only_task_parts)
{
    ntc_graph *teacher = small_resnet(10);
    ntc_graph *g = ntc_graph_clone(teacher);
    ntc_err err = {0};
    ck_assert_msg(ntc_run_passes(g, "tailor:max-skip=2", NTC_PASS_TRAINING, &err) == 0, "%s", ntc_err_str(&err));
    /* Snapshot every parameter of a frozen (universal) block. */
    int n = 0;
    float *snap[256];
    int which[256];
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *nd = &g->nodes[i];
        if (nd->dead || nd->block < 0 || !g->blocks[nd->block].frozen)
            continue;
        for (int p = 0; p < NTC_MAX_PARAMS; p++)
            if (nd->par[p] >= 0) {
                size_t bytes = sizeof(float) * (size_t)ntc_shape_numel(&g->values[nd->par[p]].shape);
                which[n] = nd->par[p];
                snap[n] = malloc(bytes);
                memcpy(snap[n++], g->values[nd->par[p]].data, bytes);
            }
    }
    ck_assert_int_gt(n, 10);
    int alpha = g->nodes[ntc_graph_find_node(g, "s2.b0.mix")].par[0];
    ck_assert_int_ge(alpha, 0);
    float alpha0 = g->values[alpha].data[1];

    ntc_train_opts o;
    digits_opts(&o, tu_tmpdir());
    o.epochs = 2;
    o.limit = 256;
    o.teacher = teacher;
    o.nettailor = true;
    o.lambda_complexity = 2.0;
    ntc_train_result res;
    ck_assert_msg(ntc_train(g, &o, &res, &err) == NTC_TRAIN_DONE, "%s", ntc_err_str(&err));
    /* Universal blocks (weights and running statistics) are untouched. */
    for (int k = 0; k < n; k++) {
        size_t bytes = sizeof(float) * (size_t)ntc_shape_numel(&g->values[which[k]].shape);
        ck_assert_msg(!memcmp(snap[k], g->values[which[k]].data, bytes), "%s changed", g->values[which[k]].name);
        free(snap[k]);
    }
    ck_assert(g->values[alpha].data[1] != alpha0);
    ck_assert(res.complexity > 0 && res.complexity < 1.5);
    ntc_graph_free(g);
    ntc_graph_free(teacher);
}
END_TEST

/* The distillation loss: zero against itself, positive against another
 * network; E[C] falls when training follows only its gradient. */
START_TEST(distill_terms)
{
    ntc_graph *backbone = small_resnet(10);
    ntc_graph *g = ntc_graph_clone(backbone);
    ntc_err err = {0};
    ck_assert(ntc_run_passes(g, "tailor:max-skip=2", NTC_PASS_TRAINING, &err) == 0);
    ntc_trainer *tr = ntc_trainer_new(g, 8, 2, &err);
    ck_assert_msg(tr != NULL, "%s", ntc_err_str(&err));
    ntc_distill *d = ntc_distill_new(tr, backbone, 1.0, 1.0, 8, 2, &err);
    ck_assert_msg(d != NULL, "%s", ntc_err_str(&err));
    ck_assert_int_eq(ntc_distill_layers(d), 3);
    float x[8 * 144];
    unsigned seed = 4;
    for (int i = 0; i < 8 * 144; i++)
        x[i] = tu_randf(&seed);
    const float *in[] = {x};
    double lt = 0;
    ck_assert(ntc_trainer_forward(tr, in, 8, true, &err) == 0);
    ck_assert(ntc_distill_forward(d, in, 8, &lt, &err) == 0);
    /* The student's layers differ from the backbone's (proxies, training-
     * mode batchnorm elsewhere, a new head). */
    ck_assert_msg(lt > 0 && isfinite(lt), "L_t %g", lt);
    ck_assert(ntc_trainer_local_grad(tr, 0) != NULL);
    /* E[C] alone: a few SGD steps on its gradient lower it. */
    ntc_sgd_opts so = {0};
    ntc_sgd *opt = ntc_sgd_new(tr, &so, &err);
    double ec0 = ntc_distill_complexity(d, false);
    for (int s = 0; s < 5; s++) {
        ck_assert(ntc_trainer_forward(tr, in, 8, true, &err) == 0);
        ck_assert(ntc_trainer_backward(tr, &err) == 0);     /* no loss seeded: zero gradients */
        ntc_distill_complexity(d, true);
        ntc_sgd_step(opt, 1.0);
    }
    double ec1 = ntc_distill_complexity(d, false);
    ck_assert_msg(ec1 < ec0, "E[C] %g -> %g", ec0, ec1);
    ntc_sgd_free(opt);
    ntc_distill_free(d);
    ntc_trainer_free(tr);
    /* A teacher without the student's layer values is refused. */
    ntc_graph *other = small_resnet(10);
    int v = ntc_graph_find_value(other, "s2.b0.relu");
    ck_assert_int_ge(v, 0);
    other->values[v].name = ntc_graph_strdup(other, "renamed");
    tr = ntc_trainer_new(g, 8, 1, &err);
    ck_assert(ntc_distill_new(tr, other, 1.0, 1.0, 8, 1, &err) == NULL);
    ck_assert_msg(strstr(err.msg, "s2.b0.relu"), "%s", err.msg);
    ntc_trainer_free(tr);
    ntc_graph_free(other);
    ntc_graph_free(g);
    ntc_graph_free(backbone);
}
END_TEST

/* SIGINT: the run finishes its step, checkpoints, exits 130 saying how to
 * resume; resuming finishes the run. */
START_TEST(cli_interrupt_and_resume)
{
    const char *dir = tu_tmpdir();
    char *out = NULL;
    ck_assert_int_eq(tu_ntc(&out, "new resnet --depth 8 --input 1x12x12 --classes 10 -o %s/b.xml", dir), 0);
    free(out);
    const char *ntc = getenv("NTC_BIN");
    ck_assert(ntc != NULL);
    char cmd[4096], ckpt[2048], log[2048];
    const char *opts = "--data digits --epochs 40 --limit 128 --batch 64 --threads 1 --no-test";
    snprintf(cmd, sizeof cmd, "exec %s train %s/b.xml %s --run-dir %s/run -o %s/t.xml >%s/log 2>&1", ntc, dir, opts,
             dir, dir, dir);
    snprintf(ckpt, sizeof ckpt, "%s/run/checkpoint", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    struct stat st;
    while (stat(ckpt, &st) != 0)             /* the first epoch's checkpoint */
        usleep(20000);
    ck_assert_int_eq(kill(pid, SIGINT), 0);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    char *text = NULL;
    size_t len = 0;
    FILE *f = fopen(log, "r");
    ck_assert(f != NULL);
    ck_assert(getdelim(&text, &len, 0, f) > 0);
    fclose(f);
    /* It may have finished before the signal landed only if 40 epochs ran. */
    if (WEXITSTATUS(status) == 0) {
        ck_assert_msg(strstr(text, "trained 40 epochs"), "%s", text);
    } else {
        ck_assert_msg(WEXITSTATUS(status) == 130, "exit %d: %s", WEXITSTATUS(status), text);
        ck_assert_msg(strstr(text, "interrupted") && strstr(text, "--resume"), "%s", text);
        int rc = tu_ntc(&out, "train %s/b.xml %s --resume %s/run -o %s/t.xml", dir, opts, dir, dir);
        ck_assert_msg(rc == 0 && strstr(out, "trained 40 epochs"), "%s", out);
        free(out);
    }
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, cross_entropy_by_hand);
    tcase_add_test(tc, mse_by_hand);
    tcase_add_test(tc, gradients_match_finite_differences);
    tcase_add_test(tc, threads_change_only_rounding);
    tcase_add_test(tc, local_term_stays_in_scope);
    tcase_add_test(tc, sgd_by_hand);
    tcase_add_test(tc, schedules);
    tcase_add_test(tc, loss_falls);
    tcase_add_test(tc, resume_is_bit_exact);
    tcase_add_test(tc, nan_loss_stops);
    tcase_add_test(tc, cli_errors);
    tcase_add_test(tc, cli_trains_and_writes);
    tcase_add_test(tc, cli_interrupt_and_resume);
    tcase_add_test(tc, nettailor_trains_only_task_parts);
    tcase_add_test(tc, distill_terms);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
