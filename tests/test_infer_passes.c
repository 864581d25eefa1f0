/* The inference-only passes (passes/fold_bn.c, fold_alpha.c, fuse.c):
 * every rewrite must leave the graph computing the same function.  Each
 * test builds graphs (small random ones, and a tailored ResNet-8), runs
 * the pass on a clone and feeds both graphs the same random batch through
 * the interpreter; the outputs must agree to a relative error of 1e-5,
 * measured as max |after - before| / max |before| (element-wise ratios are
 * meaningless for outputs that cross zero).  The structure of the result
 * is checked too, so a pass that changes nothing cannot pass.
 *
 * The fused_conv2d op that fuse creates is checked on its own: its kernel
 * against the unfused conv2d -> add -> relu nodes (equal bits), its
 * backward against finite differences, a fused graph through an XML round
 * trip and through the JIT. */
#include "testutil.h"
#include "ntc/frontends.h"
#include "ntc/jit.h"
#include "ntc/pass.h"
#include "ntc/runtime.h"
#include "runtime/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

/* ---- building graphs ------------------------------------------------------------- */

static int out(const ntc_graph *g, int n) { return g->nodes[n].out; }

static int node_n(ntc_graph *g, ntc_op op, const char *name, const int *in, int n_in, int block)
{
    int n = ntc_graph_add_node(g, op, name, in, n_in, block);
    ck_assert_msg(n >= 0, "cannot add node %s", name);
    return n;
}

static int node1(ntc_graph *g, ntc_op op, const char *name, int in, int block)
{
    return node_n(g, op, name, &in, 1, block);
}

typedef struct {
    int filters, k, stride, pad[4];
    bool bias;
} conv_spec;

static int conv(ntc_graph *g, const char *name, int in, int block, conv_spec s)
{
    int c = node1(g, NTC_OP_conv2d, name, in, block);
    ntc_attrs *a = &g->nodes[c].a;
    a->filters = s.filters;
    a->kernel[0] = a->kernel[1] = s.k;
    a->stride[0] = a->stride[1] = s.stride;
    memcpy(a->pad, s.pad, sizeof a->pad);
    ck_assert_int_ge(ntc_node_add_param(g, c, "weight", NULL), 0);
    if (s.bias)
        ck_assert_int_ge(ntc_node_add_param(g, c, "bias", NULL), 0);
    return c;
}

static int batchnorm(ntc_graph *g, const char *name, int in, int block)
{
    int b = node1(g, NTC_OP_batchnorm, name, in, block);
    static const char *const slots[] = {"scale", "bias", "mean", "var"};
    for (int s = 0; s < 4; s++)
        ck_assert_int_ge(ntc_node_add_param(g, b, slots[s], NULL), 0);
    return b;
}

static int mix(ntc_graph *g, const char *name, const int *in, int n_in, int block)
{
    int m = node_n(g, NTC_OP_mix, name, in, n_in, block);
    ck_assert_int_ge(ntc_node_add_param(g, m, "alpha", NULL), 0);
    return m;
}

static unsigned rnd(unsigned *seed, unsigned n)
{
    *seed = *seed * 1664525u + 1013904223u;
    return (*seed >> 8) % n;
}

/* Infers shapes and gives every parameter without data random values:
 * weights in [-1, 1) scaled by 1/sqrt(fan-in) so activations stay O(1),
 * batchnorm statistics of a trained network (mean in [-0.5, 0.5), var in
 * [0.25, 1.75), scale in [0.5, 1.5) with random sign, bias in [-0.5, 0.5)),
 * alpha logits in [-2, 2). */
static void fill_params(ntc_graph *g, unsigned seed)
{
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_infer_shapes(g, &err) == 0, "%s", ntc_err_str(&err));
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int s = 0; ntc_ops[n->op].params[s].name; s++) {
            ntc_value *v = n->par[s] >= 0 ? &g->values[n->par[s]] : NULL;
            if (!v || v->data)
                continue;
            int64_t numel = ntc_shape_numel(&v->shape);
            v->data = ntc_malloc(sizeof(float) * (size_t)numel);
            v->owned = true;
            const char *slot = ntc_ops[n->op].params[s].name;
            double fan_in = v->shape.rank > 1 ? (double)(numel / v->shape.dims[0]) : 1.0;
            for (int64_t j = 0; j < numel; j++) {
                float u = tu_randf(&seed);
                if (n->op == NTC_OP_batchnorm && !strcmp(slot, "var"))
                    u = 1.0f + 0.75f * u;
                else if (n->op == NTC_OP_batchnorm && !strcmp(slot, "scale"))
                    u = (u < 0 ? -1.0f : 1.0f) * (0.5f + fabsf(u));
                else if (n->op == NTC_OP_batchnorm)
                    u *= 0.5f;
                else if (n->op == NTC_OP_mix)
                    u *= 2.0f;
                else
                    u = (float)(u / sqrt(fan_in));
                v->data[j] = u;
            }
        }
    }
}

/* ---- running graphs -------------------------------------------------------------- */

/* Graph output 0 on `batch` items of x; malloc'ed, *numel set. */
static float *run_graph(ntc_graph *g, const float *x, int batch, int64_t *numel)
{
    ntc_err err = {0};
    ntc_exec *ex = ntc_exec_new(g, batch, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    ck_assert_msg(ntc_exec_run(ex, &x, batch, &err) == 0, "%s", ntc_err_str(&err));
    ntc_shape s = ntc_exec_output_shape(ex, 0);
    *numel = 1;
    for (int i = 0; i < s.rank; i++)
        *numel *= s.dims[i];
    float *y = malloc(sizeof(float) * (size_t)*numel);
    memcpy(y, ntc_exec_output(ex, 0), sizeof(float) * (size_t)*numel);
    ntc_exec_free(ex);
    return y;
}

static float *random_input(const ntc_graph *g, int batch, unsigned seed)
{
    int64_t n = batch * ntc_shape_numel(&g->values[g->inputs[0]].shape);
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        x[i] = tu_randf(&seed);
    return x;
}

/* Runs `pipeline` (inference mode) on a clone of g and checks that both
 * give the same outputs on a random batch of 3; returns the clone. */
static ntc_graph *same_outputs_after(ntc_graph *g, const char *pipeline, unsigned seed, const char *what)
{
    ntc_graph *h = ntc_graph_clone(g);
    ck_assert_ptr_nonnull(h);
    ntc_err err = {0};
    ck_assert_msg(ntc_run_passes(h, pipeline, NTC_PASS_INFERENCE, &err) == 0, "%s: %s: %s", what, pipeline,
                  ntc_err_str(&err));
    const int batch = 3;
    float *x = random_input(g, batch, seed);
    int64_t n1, n2;
    float *before = run_graph(g, x, batch, &n1), *after = run_graph(h, x, batch, &n2);
    ck_assert_int_eq(n1, n2);
    double e = tu_rel_error(after, before, n1);
    ck_assert_msg(e <= TOL, "%s: %s changed the outputs: relative error %.3g", what, pipeline, e);
    free(x), free(before), free(after);
    return h;
}

static int count_op(const ntc_graph *g, ntc_op op)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += !g->nodes[i].dead && g->nodes[i].op == op;
    return n;
}

static const ntc_node *find(const ntc_graph *g, const char *name)
{
    int n = ntc_graph_find_node(g, name);
    ck_assert_msg(n >= 0 && !g->nodes[n].dead, "no node %s", name);
    return &g->nodes[n];
}

static ntc_graph *new_graph(const char *shape, int *x)
{
    ntc_graph *g = ntc_graph_new("t");
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse(shape, &s), 0);
    *x = ntc_graph_add_input(g, "x", &s);
    return g;
}

/* A random conv: kernel 1..3, stride 1..max_stride, asymmetric padding 0..k-1. */
static conv_spec random_conv(unsigned *seed, int filters, int max_stride, bool bias)
{
    conv_spec s = {filters, 1 + (int)rnd(seed, 3), 1 + (int)rnd(seed, (unsigned)max_stride), {0}, bias};
    for (int i = 0; i < 4; i++)
        s.pad[i] = (int)rnd(seed, (unsigned)s.k);
    return s;
}

/* ---- fold-bn --------------------------------------------------------------------- */

/* x -> [conv -> bn -> relu] x depth -> out, with convs of random geometry,
 * with and without bias; plus a conv whose output a second node reads
 * (its batchnorm must stay) and a batchnorm after a relu (nothing to fold
 * into).  Returns the number of batchnorms fold-bn must remove. */
static ntc_graph *bn_chain(unsigned seed, int *foldable)
{
    int x;
    ntc_graph *g = new_graph("N,3,9,8", &x);
    int blk = ntc_graph_add_block(g, "u", NTC_ROLE_UNIVERSAL);
    int cur = x, depth = 2 + (int)rnd(&seed, 3);
    char name[64];
    for (int d = 0; d < depth; d++) {
        snprintf(name, sizeof name, "c%d", d);
        int c = conv(g, name, cur, d % 2 ? blk : -1, random_conv(&seed, 2 + (int)rnd(&seed, 4), d ? 1 : 2, rnd(&seed, 2)));
        snprintf(name, sizeof name, "bn%d", d);
        int b = batchnorm(g, name, out(g, c), d % 2 ? blk : -1);
        snprintf(name, sizeof name, "r%d", d);
        cur = out(g, node1(g, NTC_OP_relu, name, out(g, b), -1));
    }
    *foldable = depth;
    /* Shared conv output: bn and a relu both read it; the sum joins them. */
    int c = conv(g, "shared", cur, -1, (conv_spec){4, 3, 1, {1, 1, 1, 1}, true});
    int b = batchnorm(g, "shared.bn", out(g, c), -1);
    int r = node1(g, NTC_OP_relu, "shared.relu", out(g, c), -1);
    int s = node_n(g, NTC_OP_add, "sum", (int[]){out(g, b), out(g, r)}, 2, -1);
    /* A batchnorm reading a relu. */
    int b2 = batchnorm(g, "late.bn", out(g, s), -1);
    ntc_graph_add_output(g, "y", out(g, b2));
    fill_params(g, seed);
    return g;
}

START_TEST(fold_bn_random_chains)
{
    for (unsigned seed = 1; seed <= 12; seed++) {
        int foldable;
        ntc_graph *g = bn_chain(seed, &foldable);
        char what[32];
        snprintf(what, sizeof what, "seed %u", seed);
        ntc_graph *h = same_outputs_after(g, "fold-bn", seed, what);
        ck_assert_int_eq(count_op(h, NTC_OP_batchnorm), count_op(g, NTC_OP_batchnorm) - foldable);
        ck_assert_int_eq(count_op(h, NTC_OP_conv2d), count_op(g, NTC_OP_conv2d));
        /* Every conv that absorbed a batchnorm has a bias now. */
        char name[16];
        for (int d = 0; d < foldable; d++) {
            snprintf(name, sizeof name, "c%d", d);
            ck_assert_int_ge(find(h, name)->par[1], 0);
        }
        find(h, "shared.bn");
        find(h, "late.bn");
        ntc_graph_free(g), ntc_graph_free(h);
    }
}
END_TEST

/* A conv without bias gets "<conv>.bias"; the bias values are exact for
 * a hand-made case: W = 1, x = 1 everywhere, 1x1 kernel, so conv = C. */
START_TEST(fold_bn_by_hand)
{
    int x;
    ntc_graph *g = new_graph("N,2,1,1", &x);
    int c = conv(g, "c", x, -1, (conv_spec){1, 1, 1, {0}, false});
    int b = batchnorm(g, "bn", out(g, c), -1);
    ntc_graph_add_output(g, "y", out(g, b));
    g->nodes[b].a.epsilon = 0.25f;
    fill_params(g, 1);
    const float w[2] = {1, 1}, p[4] = {3, 0.5f, 1, 4}; /* scale, bias, mean, var */
    memcpy(g->values[g->nodes[c].par[0]].data, w, sizeof w);
    for (int s = 0; s < 4; s++)
        g->values[g->nodes[b].par[s]].data[0] = p[s];
    ntc_graph *h = same_outputs_after(g, "fold-bn", 1, "by hand");
    const ntc_node *hc = find(h, "c");
    ck_assert_int_eq(count_op(h, NTC_OP_batchnorm), 0);
    ck_assert_str_eq(h->values[hc->par[1]].name, "c.bias");
    /* gain = 3 / sqrt(4 + 0.25) */
    const double gain = 3 / sqrt(4.25);
    ck_assert_double_eq_tol(h->values[hc->par[0]].data[0], gain, 1e-6);
    ck_assert_double_eq_tol(h->values[hc->par[1]].data[0], -1 * gain + 0.5, 1e-6);
    ck_assert_int_eq(h->outputs[0].value, hc->out);
    ntc_graph_free(g), ntc_graph_free(h);
}
END_TEST

/* Weights read from a file are mapped: fold-bn must give the conv new
 * tensors and leave the mapped bytes (shared with other graphs of the
 * same file) as they were. */
START_TEST(fold_bn_never_writes_in_place)
{
    int foldable;
    ntc_graph *g = bn_chain(5, &foldable);
    const char *dir = tu_tmpdir();
    char xml[512], st[512];
    snprintf(xml, sizeof xml, "%s/g.xml", dir);
    snprintf(st, sizeof st, "%s/g.safetensors", dir);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_write_xml(g, xml, st, &err) == 0, "%s", ntc_err_str(&err));
    ntc_graph *m = ntc_graph_read_xml(xml, &err);
    ck_assert_msg(m != NULL, "%s", ntc_err_str(&err));
    int w = ntc_graph_find_value(m, "c0.weight");
    ck_assert(!m->values[w].owned);
    const float *mapped = m->values[w].data;
    int64_t n = ntc_shape_numel(&m->values[w].shape);
    float *copy = malloc(sizeof(float) * (size_t)n);
    memcpy(copy, mapped, sizeof(float) * (size_t)n);
    ck_assert_msg(ntc_run_passes(m, "fold-bn", NTC_PASS_INFERENCE, &err) == 0, "%s", ntc_err_str(&err));
    w = ntc_graph_find_value(m, "c0.weight");
    ck_assert(m->values[w].owned);
    ck_assert_ptr_ne(m->values[w].data, mapped);
    ck_assert_int_eq(memcmp(mapped, copy, sizeof(float) * (size_t)n), 0);
    free(copy);
    ntc_graph_free(m), ntc_graph_free(g);
}
END_TEST

/* Training graphs keep their batchnorms: the pass is refused. */
START_TEST(fold_bn_inference_only)
{
    int foldable;
    ntc_graph *g = bn_chain(2, &foldable);
    ntc_err err = {0};
    ck_assert_int_ne(ntc_run_passes(g, "fold-bn", NTC_PASS_TRAINING, &err), 0);
    ck_assert_int_eq(count_op(g, NTC_OP_batchnorm), foldable + 2);
    ntc_graph_free(g);
}
END_TEST

/* ---- fold-alpha ------------------------------------------------------------------ */

/* The kinds of branch a random mix gets, and whether each can absorb its
 * weight (with universal=0 / universal=1). */
typedef enum {
    B_TASK_CONV_BN,          /* task: conv -> bn */
    B_TASK_CONV,             /* task: conv, with or without bias */
    B_TASK_RELU_POOL,        /* task: conv -> bn -> relu -> maxpool (positively homogeneous) */
    B_TASK_MIX,              /* task: mix of two convs (nested mix) */
    B_UNIV_DOWN,             /* universal: conv -> bn plus conv -> bn shortcut, add */
    B_UNIV_IDENTITY,         /* universal: conv -> bn plus the stem's output, add */
    B_SHARED,                /* the stem's output itself, which other nodes read */
    B_KINDS
} branch_kind;

static bool absorbable(branch_kind k, bool universal)
{
    return k <= B_TASK_MIX || (k == B_UNIV_DOWN && universal);
}

/* Branch j of kind k reading s [N,4,6,6]; returns its output value. */
static int branch(ntc_graph *g, branch_kind k, int j, int s, unsigned *seed)
{
    char bname[16], name[64];
    snprintf(bname, sizeof bname, "b%d", j);
    int blk = ntc_graph_add_block(g, bname, k >= B_UNIV_DOWN ? NTC_ROLE_UNIVERSAL : NTC_ROLE_TASK);
    const conv_spec c3 = {4, 3, 1, {1, 1, 1, 1}, rnd(seed, 2)}, c1 = {4, 1, 1, {0}, rnd(seed, 2)};
#define NAME(suffix) (snprintf(name, sizeof name, "%s.%s", bname, suffix), name)
    switch (k) {
    case B_TASK_CONV_BN:
        return out(g, batchnorm(g, NAME("bn"), out(g, conv(g, NAME("conv"), s, blk, c1)), blk));
    case B_TASK_CONV:
        return out(g, conv(g, NAME("conv"), s, blk, c3));
    case B_TASK_RELU_POOL: {
        int b = batchnorm(g, NAME("bn"), out(g, conv(g, NAME("conv"), s, blk, c3)), blk);
        int r = node1(g, NTC_OP_relu, NAME("relu"), out(g, b), blk);
        int p = node1(g, NTC_OP_maxpool, NAME("pool"), out(g, r), blk);
        g->nodes[p].a.kernel[0] = g->nodes[p].a.kernel[1] = 3;
        for (int i = 0; i < 4; i++)
            g->nodes[p].a.pad[i] = 1;
        return out(g, p);
    }
    case B_TASK_MIX: {
        int a = conv(g, NAME("conv1"), s, blk, c1), b = conv(g, NAME("conv2"), s, blk, c3);
        return out(g, mix(g, NAME("mix"), (int[]){out(g, a), out(g, b)}, 2, blk));
    }
    case B_UNIV_DOWN:
    case B_UNIV_IDENTITY: {
        int main_ = batchnorm(g, NAME("bn"), out(g, conv(g, NAME("conv"), s, blk, c3)), blk);
        int sc = s;
        if (k == B_UNIV_DOWN)
            sc = out(g, batchnorm(g, NAME("down.bn"), out(g, conv(g, NAME("down"), s, blk, c1)), blk));
        return out(g, node_n(g, NTC_OP_add, NAME("add"), (int[]){out(g, main_), sc}, 2, blk));
    }
    default:
        return s;
    }
#undef NAME
}

/* x [N,3,6,6] -> stem (conv, bn, relu) = s -> mix over n branches of the
 * given kinds -> relu = y. */
static ntc_graph *mix_layer(const branch_kind *kinds, int n, unsigned seed)
{
    int x;
    ntc_graph *g = new_graph("N,3,6,6", &x);
    int c = conv(g, "stem.conv", x, -1, (conv_spec){4, 3, 1, {1, 1, 1, 1}, false});
    int s = out(g, node1(g, NTC_OP_relu, "stem.relu", out(g, batchnorm(g, "stem.bn", out(g, c), -1)), -1));
    int in[4];
    for (int j = 0; j < n; j++)
        in[j] = branch(g, kinds[j], j, s, &seed);
    int m = mix(g, "mix", in, n, -1);
    ntc_graph_add_output(g, "y", out(g, node1(g, NTC_OP_relu, "relu", out(g, m), -1)));
    fill_params(g, seed);
    return g;
}

/* Every parameter of a universal block has the same bytes in g and h. */
static void universal_params_unchanged(const ntc_graph *g, const ntc_graph *h)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead || n->block < 0 || g->blocks[n->block].role != NTC_ROLE_UNIVERSAL)
            continue;
        for (int s = 0; s < NTC_MAX_PARAMS; s++) {
            if (n->par[s] < 0)
                continue;
            const ntc_value *a = &g->values[n->par[s]];
            int v = ntc_graph_find_value(h, a->name);
            ck_assert_msg(v >= 0, "universal parameter %s is gone", a->name);
            ck_assert_msg(!memcmp(a->data, h->values[v].data, sizeof(float) * (size_t)ntc_shape_numel(&a->shape)),
                          "universal parameter %s changed", a->name);
        }
    }
}

START_TEST(fold_alpha_random_mixes)
{
    int folded[2] = {0}, kept[2] = {0};
    for (unsigned seed = 1; seed <= 60; seed++) {
        unsigned r = seed * 2654435761u;
        int n = 1 + (int)rnd(&r, 4);
        branch_kind kinds[4];
        for (int j = 0; j < n; j++)
            kinds[j] = (branch_kind)rnd(&r, B_KINDS);
        ntc_graph *g = mix_layer(kinds, n, seed);
        for (int universal = 0; universal <= 1; universal++) {
            bool all = true;
            for (int j = 0; j < n; j++)
                all = all && absorbable(kinds[j], universal);
            char what[64], pipeline[64];
            snprintf(what, sizeof what, "seed %u, %d branches", seed, n);
            /* Every other seed fuses first: fold-alpha then meets fused_conv2d nodes. */
            snprintf(pipeline, sizeof pipeline, "%sfold-alpha:universal=%d", seed % 2 ? "" : "fold-bn,fuse,",
                     universal);
            ntc_graph *h = same_outputs_after(g, pipeline, seed, what);
            /* A nested mix (B_TASK_MIX) always folds: its branches are task convs. */
            bool fold = all || n == 1;
            ck_assert_msg(count_op(h, NTC_OP_mix) == !fold, "%s, %s: %d mixes left", what, pipeline,
                          count_op(h, NTC_OP_mix));
            if (!fold)
                ck_assert_int_eq(find(h, "mix")->op, NTC_OP_mix);
            else if (n > 1)
                ck_assert_int_eq(find(h, "mix")->op, NTC_OP_add);
            else
                ck_assert_int_lt(ntc_graph_find_node(h, "mix"), 0);
            if (!universal) {
                /* fold-bn may change them, fold-alpha must not. */
                ntc_graph *ref = seed % 2 ? g : same_outputs_after(g, "fold-bn,fuse", seed, what);
                universal_params_unchanged(ref, h);
                if (ref != g)
                    ntc_graph_free(ref);
            }
            folded[universal] += fold && n > 1;
            kept[universal] += !fold;
            ntc_graph_free(h);
        }
        ntc_graph_free(g);
    }
    /* The random cases cover both outcomes in both modes. */
    for (int u = 0; u < 2; u++)
        ck_assert_msg(folded[u] > 3 && kept[u] > 3, "universal=%d: %d folded, %d kept", u, folded[u], kept[u]);
}
END_TEST

/* The weights by hand: alpha = (0, log 3) gives 1/4 and 3/4; a conv with
 * bias and a batchnorm absorb them into fresh tensors. */
START_TEST(fold_alpha_by_hand)
{
    ntc_graph *g = mix_layer((branch_kind[]){B_TASK_CONV, B_TASK_CONV_BN}, 2, 3);
    float *alpha = g->values[find(g, "mix")->par[0]].data;
    alpha[0] = 0, alpha[1] = logf(3);
    const ntc_node *c = find(g, "b0.conv"), *b = find(g, "b1.bn");
    float w0 = g->values[c->par[0]].data[0], s1 = g->values[b->par[0]].data[0];
    float bias1 = g->values[b->par[1]].data[0], mean1 = g->values[b->par[2]].data[0];
    ntc_graph *h = same_outputs_after(g, "fold-alpha", 1, "by hand");
    c = find(h, "b0.conv"), b = find(h, "b1.bn");
    ck_assert_double_eq_tol(h->values[c->par[0]].data[0], 0.25 * w0, 1e-7);
    ck_assert_double_eq_tol(h->values[b->par[0]].data[0], 0.75 * s1, 1e-7);
    ck_assert_double_eq_tol(h->values[b->par[1]].data[0], 0.75 * bias1, 1e-7);
    ck_assert_float_eq(h->values[b->par[2]].data[0], mean1);   /* statistics untouched */
    ck_assert_int_eq(find(h, "mix")->op, NTC_OP_add);
    ck_assert_int_lt(ntc_graph_find_value(h, "mix.alpha"), 0);
    ntc_graph_free(g), ntc_graph_free(h);
}
END_TEST

/* A branch that a graph output also names cannot be scaled; a bad option
 * value is refused. */
START_TEST(fold_alpha_refusals)
{
    ntc_graph *g = mix_layer((branch_kind[]){B_TASK_CONV, B_TASK_CONV_BN}, 2, 4);
    ntc_graph_add_output(g, "peek", find(g, "b1.bn")->out);
    ntc_graph *h = same_outputs_after(g, "fold-alpha", 1, "output branch");
    ck_assert_int_eq(find(h, "mix")->op, NTC_OP_mix);
    ntc_err err = {0};
    ck_assert_int_ne(ntc_run_passes(h, "fold-alpha:universal=2", NTC_PASS_INFERENCE, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "universal"));
    ck_assert_int_ne(ntc_run_passes(h, "fold-alpha", NTC_PASS_TRAINING, &err), 0);
    ntc_graph_free(g), ntc_graph_free(h);
}
END_TEST

/* ---- fused_conv2d: the kernel and its backward ------------------------------------------ */

typedef struct {
    int c, h, w, f, k, stride, dil, pad[4];
    bool bias, residual, relu;
} fused_case;

static fused_case random_fused_case(unsigned *seed)
{
    fused_case fc = {1 + (int)rnd(seed, 3), 6 + (int)rnd(seed, 5), 6 + (int)rnd(seed, 5), 1 + (int)rnd(seed, 4),
                     1 + (int)rnd(seed, 3), 1 + (int)rnd(seed, 2), 1 + (int)rnd(seed, 2), {0},
                     rnd(seed, 2), rnd(seed, 2), rnd(seed, 2)};
    for (int i = 0; i < 4; i++)
        fc.pad[i] = (int)rnd(seed, (unsigned)fc.k + 1);
    return fc;
}

static void set_geometry(ntc_attrs *a, const fused_case *fc)
{
    a->filters = fc->f;
    a->kernel[0] = a->kernel[1] = fc->k;
    a->stride[0] = a->stride[1] = fc->stride;
    a->dilation[0] = a->dilation[1] = fc->dil;
    memcpy(a->pad, fc->pad, sizeof a->pad);
}

/* x -> conv "c" [-> add(., r)] [-> relu] = y, where r is another conv of
 * x with the same geometry ("r"), unfused (fused = false) or as one
 * fused_conv2d "c" built by hand. */
static ntc_graph *conv_chain(const fused_case *fc, bool fused)
{
    char shape[64];
    snprintf(shape, sizeof shape, "N,%d,%d,%d", fc->c, fc->h, fc->w);
    int x;
    ntc_graph *g = new_graph(shape, &x);
    int r = -1;
    if (fc->residual) {
        int rn = node1(g, NTC_OP_conv2d, "r", x, -1);
        set_geometry(&g->nodes[rn].a, fc);
        ck_assert_int_ge(ntc_node_add_param(g, rn, "weight", NULL), 0);
        r = out(g, rn);
    }
    int in[2] = {x, r};
    int c = node_n(g, fused ? NTC_OP_fused_conv2d : NTC_OP_conv2d, "c", in, fused && fc->residual ? 2 : 1, -1);
    set_geometry(&g->nodes[c].a, fc);
    g->nodes[c].a.relu = fused && fc->relu;
    ck_assert_int_ge(ntc_node_add_param(g, c, "weight", NULL), 0);
    if (fc->bias)
        ck_assert_int_ge(ntc_node_add_param(g, c, "bias", NULL), 0);
    int y = out(g, c);
    if (!fused && fc->residual)
        y = out(g, node_n(g, NTC_OP_add, "add", (int[]){y, r}, 2, -1));
    if (!fused && fc->relu)
        y = out(g, node1(g, NTC_OP_relu, "relu", y, -1));
    ntc_graph_add_output(g, "y", y);
    return g;
}

/* Gives h's parameters the data of g's parameters of the same name. */
static void copy_params(const ntc_graph *g, ntc_graph *h)
{
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_infer_shapes(h, &err) == 0, "%s", ntc_err_str(&err));
    for (int v = 0; v < h->n_values; v++) {
        if (h->values[v].dead || h->values[v].kind != NTC_VAL_PARAM)
            continue;
        int u = ntc_graph_find_value(g, h->values[v].name);
        ck_assert_int_ge(u, 0);
        float *d = ntc_param_data_alloc(h, v, &err);
        ck_assert_ptr_nonnull(d);
        memcpy(d, g->values[u].data, sizeof(float) * (size_t)ntc_shape_numel(&h->values[v].shape));
    }
}

/* The fused kernel computes exactly what conv2d, add and relu compute in
 * turn (same operations, same order): equal bits, at batch 1 (the
 * convolution's rows split over the thread pool) and batch 5. */
START_TEST(fused_kernel_equals_unfused_sequence)
{
    unsigned seed = 11;
    for (int t = 0; t < 40; t++) {
        fused_case fc = random_fused_case(&seed);
        ntc_graph *g = conv_chain(&fc, false), *h = conv_chain(&fc, true);
        fill_params(g, seed);
        copy_params(g, h);
        ntc_err err = {0};
        ck_assert_msg(ntc_graph_verify(h, &err) == 0, "%s", ntc_err_str(&err));
        for (int batch = 1; batch <= 5; batch += 4) {
            float *x = random_input(g, batch, seed + (unsigned)batch);
            int64_t n1, n2;
            float *a = run_graph(g, x, batch, &n1), *b = run_graph(h, x, batch, &n2);
            ck_assert_int_eq(n1, n2);
            ck_assert_msg(!memcmp(a, b, sizeof(float) * (size_t)n1), "case %d (k%d s%d d%d bias %d res %d relu %d), "
                          "batch %d: fused output differs", t, fc.k, fc.stride, fc.dil, fc.bias, fc.residual,
                          fc.relu, batch);
            free(x), free(a), free(b);
        }
        ntc_graph_free(g), ntc_graph_free(h);
    }
}
END_TEST

/* One fused_conv2d node fed by graph inputs x (and r), for the kernels. */
typedef struct {
    ntc_graph *g;
    int node, batch;
    float *in[2], *w;            /* inputs; loss weights dL/dy */
    int64_t in_n[2], out_n;
} fused_problem;

static const ntc_node *fp_node(const fused_problem *p) { return &p->g->nodes[p->node]; }
static float *fp_par(const fused_problem *p, int s) { return p->g->values[fp_node(p)->par[s]].data; }
static int64_t fp_par_n(const fused_problem *p, int s)
{
    return ntc_shape_numel(&p->g->values[fp_node(p)->par[s]].shape);
}

/* Kernel arguments over the whole batch; work sized exactly as promised. */
static ntc_kargs fp_args(const fused_problem *p, const float **in, ntc_shape *in_shape, ntc_shape *par_shape,
                         float *y)
{
    const ntc_node *n = fp_node(p);
    ntc_shape item[2];
    ntc_kargs k = {.node = n, .batch = p->batch, .n_in = n->n_in, .in = in, .in_shape = in_shape,
                   .par_shape = par_shape, .out = y};
    for (int j = 0; j < n->n_in; j++) {
        in[j] = p->in[j];
        in_shape[j] = item[j] = p->g->values[n->in[j]].shape;
        in_shape[j].dims[0] = p->batch, item[j].dims[0] = 1;
    }
    for (int s = 0; s < NTC_MAX_PARAMS; s++) {
        par_shape[s] = (ntc_shape){0};
        if (n->par[s] >= 0)
            k.par[s] = fp_par(p, s), par_shape[s] = p->g->values[n->par[s]].shape;
    }
    k.out_shape = p->g->values[n->out].shape;
    k.out_shape.dims[0] = p->batch;
    ntc_shape out1 = k.out_shape;
    out1.dims[0] = 1;
    int64_t work = ntc_kernels[n->op].work(n, item, &out1);
    k.work = malloc(sizeof(float) * (size_t)(work > 0 ? work : 1));
    for (int64_t i = 0; i < work; i++)
        k.work[i] = NAN;         /* neither pass may read scratch it did not write */
    return k;
}

static float *fp_forward(const fused_problem *p)
{
    const float *in[2];
    ntc_shape in_shape[2], par_shape[NTC_MAX_PARAMS];
    float *y = malloc(sizeof(float) * (size_t)p->out_n);
    ntc_kargs k = fp_args(p, in, in_shape, par_shape, y);
    fwd_fused_conv2d(&k);
    free(k.work);
    return y;
}

static double fp_loss(const fused_problem *p)
{
    float *y = fp_forward(p);
    double l = 0;
    for (int64_t i = 0; i < p->out_n; i++)
        l += (double)p->w[i] * y[i];
    free(y);
    return l;
}

/* Central differences on (at most 150 evenly spread) elements of v. */
static void fd_check(const fused_problem *p, float *v, int64_t n, const float *analytic, const char *what)
{
    const float h = 1e-2f;
    int64_t step = n > 150 ? n / 150 : 1;
    double *num = malloc(sizeof(double) * (size_t)n), scale = 0.1;
    for (int64_t i = 0; i < n; i += step) {
        float keep = v[i];
        v[i] = keep + h;
        double hi = fp_loss(p);
        v[i] = keep - h;
        double lo = fp_loss(p);
        v[i] = keep;
        num[i] = (hi - lo) / ((double)(keep + h) - (double)(keep - h));
        scale = fmax(scale, fabs(num[i]));
    }
    for (int64_t i = 0; i < n; i += step)
        ck_assert_msg(fabs(analytic[i] - num[i]) <= 1e-2 * fabs(num[i]) + 2e-3 * scale,
                      "%s[%lld]: backward %.7g, finite differences %.7g", what, (long long)i, analytic[i], num[i]);
    free(num);
}

/* The backward against finite differences, for inputs, residual, weight
 * and bias, accumulating onto non-zero gradients. */
START_TEST(fused_backward_finite_differences)
{
    unsigned seed = 5;
    for (int t = 0; t < 24; t++) {
        fused_case fc = random_fused_case(&seed);
        fc.relu = t % 2;
        fc.residual = t % 4 >= 2;
        fused_problem p = {.batch = 2};
        char shape[64];
        snprintf(shape, sizeof shape, "N,%d,%d,%d", fc.c, fc.h, fc.w);
        int x;
        p.g = new_graph(shape, &x);
        int in[2] = {x, -1};
        if (fc.residual) {
            /* r has the output's shape: infer it from a plain conv first. */
            int probe = node1(p.g, NTC_OP_conv2d, "probe", x, -1);
            set_geometry(&p.g->nodes[probe].a, &fc);
            ntc_err err = {0};
            ck_assert_msg(ntc_graph_infer_shapes(p.g, &err) == 0, "%s", ntc_err_str(&err));
            ntc_shape rs = p.g->values[out(p.g, probe)].shape;
            ntc_graph_remove_node(p.g, probe);
            in[1] = ntc_graph_add_input(p.g, "res", &rs);
        }
        p.node = node_n(p.g, NTC_OP_fused_conv2d, "c", in, fc.residual ? 2 : 1, -1);
        set_geometry(&p.g->nodes[p.node].a, &fc);
        p.g->nodes[p.node].a.relu = fc.relu;
        ck_assert_int_ge(ntc_node_add_param(p.g, p.node, "weight", NULL), 0);
        if (fc.bias)
            ck_assert_int_ge(ntc_node_add_param(p.g, p.node, "bias", NULL), 0);
        ntc_graph_add_output(p.g, "y", out(p.g, p.node));
        fill_params(p.g, seed);
        unsigned s2 = seed * 31;
        for (int j = 0; j < (fc.residual ? 2 : 1); j++) {
            p.in_n[j] = p.batch * ntc_shape_numel(&p.g->values[in[j]].shape);
            p.in[j] = malloc(sizeof(float) * (size_t)p.in_n[j]);
            for (int64_t i = 0; i < p.in_n[j]; i++)
                p.in[j][i] = tu_randf(&s2);
        }
        p.out_n = p.batch * ntc_shape_numel(&p.g->values[out(p.g, p.node)].shape);
        p.w = malloc(sizeof(float) * (size_t)p.out_n);
        for (int64_t i = 0; i < p.out_n; i++)
            p.w[i] = tu_randf(&s2);
        if (fc.relu) {
            /* Outputs whose pre-activation z lies within 0.05 of relu's kink
             * get loss weight 0, so a step crossing the kink changes
             * nothing (a step moves z by at most 1e-2 here: weights and
             * inputs are below 1 in magnitude). */
            p.g->nodes[p.node].a.relu = 0;
            float *z = fp_forward(&p);
            p.g->nodes[p.node].a.relu = 1;
            for (int64_t i = 0; i < p.out_n; i++)
                if (fabsf(z[i]) < 0.05f)
                    p.w[i] = 0;
            free(z);
        }

        /* Gradients accumulated onto a base of 0.5 each. */
        const ntc_node *n = fp_node(&p);
        float *gin[2] = {NULL, NULL}, *gpar[NTC_MAX_PARAMS] = {NULL};
        for (int j = 0; j < n->n_in; j++) {
            gin[j] = malloc(sizeof(float) * (size_t)p.in_n[j]);
            for (int64_t i = 0; i < p.in_n[j]; i++)
                gin[j][i] = 0.5f;
        }
        for (int s = 0; s < 2; s++)
            if (n->par[s] >= 0) {
                gpar[s] = malloc(sizeof(float) * (size_t)fp_par_n(&p, s));
                for (int64_t i = 0; i < fp_par_n(&p, s); i++)
                    gpar[s][i] = 0.5f;
            }
        const float *kin[2];
        ntc_shape in_shape[2], par_shape[NTC_MAX_PARAMS];
        float *y = fp_forward(&p);
        ntc_kargs k = fp_args(&p, kin, in_shape, par_shape, y);
        bwd_fused_conv2d(&k, p.w, gin, gpar);
        free(k.work), free(y);
        for (int j = 0; j < n->n_in; j++)
            for (int64_t i = 0; i < p.in_n[j]; i++)
                gin[j][i] -= 0.5f;
        for (int s = 0; s < 2; s++)
            for (int64_t i = 0; gpar[s] && i < fp_par_n(&p, s); i++)
                gpar[s][i] -= 0.5f;
        char what[96];
        snprintf(what, sizeof what, "case %d (k%d s%d d%d bias %d res %d relu %d) dx", t, fc.k, fc.stride, fc.dil,
                 fc.bias, fc.residual, fc.relu);
        fd_check(&p, p.in[0], p.in_n[0], gin[0], what);
        if (fc.residual)
            fd_check(&p, p.in[1], p.in_n[1], gin[1], "d residual");
        fd_check(&p, fp_par(&p, 0), fp_par_n(&p, 0), gpar[0], "d weight");
        if (fc.bias)
            fd_check(&p, fp_par(&p, 1), fp_par_n(&p, 1), gpar[1], "d bias");
        for (int j = 0; j < 2; j++)
            free(gin[j]), free(p.in[j]);
        for (int s = 0; s < NTC_MAX_PARAMS; s++)
            free(gpar[s]);
        free(p.w);
        ntc_graph_free(p.g);
    }
}
END_TEST

/* ---- fuse ---------------------------------------------------------------------------- */

/* Layer shapes of the random fuse graphs, each reading s [N,4,7,7] and
 * returning a value of that shape; what fuse makes of each is in the
 * comments and in `expect`. */
typedef enum {
    L_RESIDUAL,              /* relu(conv(s) + s)               -> 1 fused */
    L_CONV_RELU,             /* relu(conv(s))                   -> 1 fused */
    L_TWO_CONVS,             /* relu(conv3(s) + conv1(s))       -> 1 fused (the 3x3), conv1 stays */
    L_THREE_TERMS,           /* relu(conv(s) + s + conv(s))     -> 2 fused, the add goes */
    L_SHARED,                /* c = conv(s): relu(c + s) + relu(c): c has two readers -> nothing */
    L_KINDS
} layer_kind;

typedef struct {
    int fused, conv, add, relu;
} op_counts;

static int layer(ntc_graph *g, layer_kind k, int i, int s, unsigned *seed, op_counts *expect)
{
    char name[64];
    const conv_spec c3 = {4, 3, 1, {1, 1, 1, 1}, rnd(seed, 2)}, c1 = {4, 1, 1, {0}, rnd(seed, 2)};
#define NAME(what) (snprintf(name, sizeof name, "l%d.%s", i, what), name)
    switch (k) {
    case L_RESIDUAL: {
        int c = conv(g, NAME("conv"), s, -1, c3);
        int a = node_n(g, NTC_OP_add, NAME("add"), (int[]){s, out(g, c)}, 2, -1);
        expect->fused++;
        return out(g, node1(g, NTC_OP_relu, NAME("relu"), out(g, a), -1));
    }
    case L_CONV_RELU:
        expect->fused++;
        return out(g, node1(g, NTC_OP_relu, NAME("relu"), out(g, conv(g, NAME("conv"), s, -1, c1)), -1));
    case L_TWO_CONVS: {
        int a = conv(g, NAME("conv1"), s, -1, c1), b = conv(g, NAME("conv3"), s, -1, c3);
        int sum = node_n(g, NTC_OP_add, NAME("add"), (int[]){out(g, a), out(g, b)}, 2, -1);
        expect->fused++, expect->conv++;
        return out(g, node1(g, NTC_OP_relu, NAME("relu"), out(g, sum), -1));
    }
    case L_THREE_TERMS: {
        int a = conv(g, NAME("conva"), s, -1, c3), b = conv(g, NAME("convb"), s, -1, c1);
        int sum = node_n(g, NTC_OP_add, NAME("add"), (int[]){out(g, a), s, out(g, b)}, 3, -1);
        expect->fused += 2;
        return out(g, node1(g, NTC_OP_relu, NAME("relu"), out(g, sum), -1));
    }
    default: {
        int c = conv(g, NAME("conv"), s, -1, c3);
        int a = node_n(g, NTC_OP_add, NAME("add"), (int[]){out(g, c), s}, 2, -1);
        int r1 = node1(g, NTC_OP_relu, NAME("relu1"), out(g, a), -1);
        int r2 = node1(g, NTC_OP_relu, NAME("relu2"), out(g, c), -1);
        expect->conv++, expect->add += 2, expect->relu += 2;
        return out(g, node_n(g, NTC_OP_add, NAME("join"), (int[]){out(g, r1), out(g, r2)}, 2, -1));
    }
    }
#undef NAME
}

/* x [N,3,7,7] -> relu(conv) -> n random layers -> y. */
static ntc_graph *fuse_net(unsigned seed, op_counts *expect)
{
    int x;
    ntc_graph *g = new_graph("N,3,7,7", &x);
    *expect = (op_counts){1, 0, 0, 0};   /* the stem's conv and relu */
    int s = out(g, node1(g, NTC_OP_relu, "stem.relu",
                         out(g, conv(g, "stem", x, -1, (conv_spec){4, 3, 1, {1, 1, 1, 1}, true})), -1));
    int n = 2 + (int)rnd(&seed, 4);
    for (int i = 0; i < n; i++)
        s = layer(g, (layer_kind)rnd(&seed, L_KINDS), i, s, &seed, expect);
    ntc_graph_add_output(g, "y", s);
    fill_params(g, seed);
    return g;
}

START_TEST(fuse_random_nets)
{
    for (unsigned seed = 1; seed <= 30; seed++) {
        op_counts want;
        ntc_graph *g = fuse_net(seed, &want);
        char what[32];
        snprintf(what, sizeof what, "seed %u", seed);
        ntc_graph *h = same_outputs_after(g, "fuse", seed, what);
        op_counts got = {count_op(h, NTC_OP_fused_conv2d), count_op(h, NTC_OP_conv2d), count_op(h, NTC_OP_add),
                         count_op(h, NTC_OP_relu)};
        ck_assert_msg(!memcmp(&got, &want, sizeof got), "%s: fused %d conv %d add %d relu %d, expected %d %d %d %d",
                      what, got.fused, got.conv, got.add, got.relu, want.fused, want.conv, want.add, want.relu);
        /* A second run finds nothing left. */
        ntc_graph *again = same_outputs_after(h, "fuse", seed, what);
        ck_assert_int_eq(count_op(again, NTC_OP_fused_conv2d), got.fused);
        ntc_graph_free(again), ntc_graph_free(h), ntc_graph_free(g);
    }
}
END_TEST

/* ---- the whole pipeline on a tailored ResNet-8 ---------------------------------------------- */

/* ResNet-8 on 1x16x16, tailored (max-skip 3: layers s1, s2, s3 get 1, 2
 * and 3 proxies), with random batchnorm statistics and alphas. */
static ntc_graph *tailored_resnet8(unsigned seed)
{
    ntc_resnet_opts o;
    ntc_err err = {0};
    ntc_resnet_opts_default(&o);
    o.depth = 8;
    ck_assert_int_eq(ntc_resnet_set_input(&o, "1x16x16", &err), 0);
    ntc_graph *g = ntc_resnet_build(&o, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    ck_assert_msg(ntc_run_passes(g, "tailor", NTC_PASS_TRAINING, &err) == 0, "%s", ntc_err_str(&err));
    /* Drop the initial statistics and alphas so fill_params draws them. */
    for (int i = 0; i < g->n_nodes; i++) {
        ntc_node *n = &g->nodes[i];
        if (n->dead || (n->op != NTC_OP_batchnorm && n->op != NTC_OP_mix))
            continue;
        for (int s = 0; s < NTC_MAX_PARAMS; s++)
            if (n->par[s] >= 0) {
                ntc_value *v = &g->values[n->par[s]];
                if (v->owned)
                    ntc_free(v->data);
                v->data = NULL;
            }
    }
    fill_params(g, seed);
    return g;
}

static const ntc_node *fused(const ntc_graph *g, const char *name, int n_in, int relu)
{
    const ntc_node *n = find(g, name);
    ck_assert_msg(n->op == NTC_OP_fused_conv2d && n->n_in == n_in && n->a.relu == relu,
                  "%s: %s with %d inputs, relu=%d; expected fused_conv2d, %d inputs, relu=%d", name,
                  ntc_op_name(n->op), n->n_in, n->a.relu, n_in, relu);
    return n;
}

/* Counts after fold-bn, fold-alpha, fuse and dce, derived from the
 * student's structure (see the comments):
 * - fold-bn leaves no batchnorm (each follows a conv read by it alone);
 * - with universal=1 the mixes of s2 and s3 become adds (their universal
 *   branch ends in add(conv2, down-conv), two convs after fold-bn); s1's
 *   keeps its alphas: its shortcut is the stem's relu, read elsewhere too;
 *   with universal=0 every mix stays (each has a universal branch);
 * - fuse: stem conv+relu; each block's conv1+relu1; conv2 + shortcut add
 *   (relu only where the add feeds a relu); in s2 and s3 with
 *   universal=1 each proxy conv absorbs one term of the sum that replaced
 *   the mix, the last one the relu; down-convs stay convs (the residual). */
START_TEST(pipeline_on_tailored_resnet8)
{
    for (int universal = 0; universal <= 1; universal++) {
        ntc_graph *g = tailored_resnet8(7 + (unsigned)universal);
        char pipeline[96];
        snprintf(pipeline, sizeof pipeline, "fold-bn,fold-alpha:universal=%d,fuse,dce", universal);
        ntc_graph *h = same_outputs_after(g, pipeline, 3, "tailored resnet8");
        ck_assert_int_eq(count_op(h, NTC_OP_batchnorm), 0);
        ck_assert_int_eq(count_op(h, NTC_OP_add), 0);
        ck_assert_int_eq(count_op(h, NTC_OP_maxpool), 5);
        fused(h, "stem.conv", 1, 1);
        fused(h, "s1.b0.conv1", 1, 1);
        fused(h, "s1.b0.conv2", 2, 0);           /* + stem.relu; the mix reads it */
        ck_assert_int_eq(find(h, "s1.b0.mix")->op, NTC_OP_mix);
        for (int s = 2; s <= 3; s++) {
            char name[64];
            snprintf(name, sizeof name, "s%d.b0.conv1", s);
            fused(h, name, 1, 1);
            snprintf(name, sizeof name, "s%d.b0.conv2", s);
            const ntc_node *c2 = fused(h, name, 2, 0);
            snprintf(name, sizeof name, "s%d.b0.down.conv", s);
            ck_assert_int_eq(c2->in[1], find(h, name)->out);  /* the down-conv is the residual */
            ck_assert_int_eq(find(h, name)->op, NTC_OP_conv2d);
        }
        if (universal) {
            /* s2: p1 absorbs the relu and reads p2 + the block; s3 likewise over three proxies */
            fused(h, "s2.b0.p1.conv", 2, 1);
            fused(h, "s2.b0.p2.conv", 2, 0);
            fused(h, "s3.b0.p1.conv", 2, 1);
            fused(h, "s3.b0.p2.conv", 2, 0);
            fused(h, "s3.b0.p3.conv", 2, 0);
            ck_assert_int_eq(count_op(h, NTC_OP_mix), 1);
            ck_assert_int_eq(count_op(h, NTC_OP_relu), 1);
            ck_assert_int_eq(count_op(h, NTC_OP_fused_conv2d), 12);
            ck_assert_int_eq(count_op(h, NTC_OP_conv2d), 3);    /* s1's proxy, two down-convs */
        } else {
            ck_assert_int_eq(count_op(h, NTC_OP_mix), 3);
            ck_assert_int_eq(count_op(h, NTC_OP_relu), 3);
            ck_assert_int_eq(count_op(h, NTC_OP_fused_conv2d), 7);
            ck_assert_int_eq(count_op(h, NTC_OP_conv2d), 8);    /* 6 proxies, two down-convs */
            /* fold-alpha left the universal blocks as fold-bn made them. */
            ntc_graph *bn_only = same_outputs_after(g, "fold-bn", 3, "tailored resnet8");
            universal_params_unchanged(bn_only, h);
            ntc_graph_free(bn_only);
        }
        ck_assert_int_eq(h->n_nodes, universal ? 25 : 29);
        ntc_graph_free(g), ntc_graph_free(h);
    }
}
END_TEST

/* A fused graph writes and reads back unchanged (text and outputs), and
 * the code generator compiles it to the interpreter's results. */
START_TEST(fused_graph_xml_round_trip_and_jit)
{
    ntc_graph *g = tailored_resnet8(9);
    ntc_graph *h = same_outputs_after(g, "fold-bn,fold-alpha:universal=1,fuse,dce", 4, "round trip");
    const char *dir = tu_tmpdir();
    char xml[512], st[512];
    snprintf(xml, sizeof xml, "%s/fused.xml", dir);
    snprintf(st, sizeof st, "%s/fused.safetensors", dir);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_write_xml(h, xml, st, &err) == 0, "%s", ntc_err_str(&err));
    ntc_graph *back = ntc_graph_read_xml(xml, &err);
    ck_assert_msg(back != NULL, "%s", ntc_err_str(&err));
    size_t n1, n2;
    char *t1 = ntc_graph_to_xml(h, &n1), *t2 = ntc_graph_to_xml(back, &n2);
    ck_assert_str_eq(t1, t2);
    ck_assert_ptr_nonnull(strstr(t1, "op=\"fused_conv2d\" name=\"s1.b0.conv2\" in=\"s1.b0.conv1,stem.conv\""));
    ck_assert_ptr_nonnull(strstr(t1, "relu=\"1\""));
    const int batch = 4;
    float *x = random_input(h, batch, 8);
    int64_t m1, m2;
    float *a = run_graph(h, x, batch, &m1), *b = run_graph(back, x, batch, &m2);
    ck_assert_int_eq(m1, m2);
    ck_assert_int_eq(memcmp(a, b, sizeof(float) * (size_t)m1), 0);

    ntc_jit *j = ntc_jit_compile(back, &err);
    ck_assert_msg(j != NULL, "%s", ntc_err_str(&err));
    float *y = malloc(sizeof(float) * (size_t)m1);
    ck_assert_msg(ntc_jit_run(j, x, batch, y, &err) == 0, "%s", ntc_err_str(&err));
    double e = tu_rel_error(y, a, m1);
    ck_assert_msg(e <= 1e-4, "JIT of the fused graph vs interpreter: relative error %.3g", e);
    ntc_jit_free(j);
    free(t1), free(t2), free(x), free(a), free(b), free(y);
    ntc_graph_free(back), ntc_graph_free(h), ntc_graph_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("infer_passes");
    TCase *tc = tcase_create("fold-bn");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fold_bn_random_chains);
    tcase_add_test(tc, fold_bn_by_hand);
    tcase_add_test(tc, fold_bn_never_writes_in_place);
    tcase_add_test(tc, fold_bn_inference_only);
    suite_add_tcase(s, tc);
    tc = tcase_create("fold-alpha");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fold_alpha_random_mixes);
    tcase_add_test(tc, fold_alpha_by_hand);
    tcase_add_test(tc, fold_alpha_refusals);
    suite_add_tcase(s, tc);
    tc = tcase_create("fused_conv2d");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, fused_kernel_equals_unfused_sequence);
    tcase_add_test(tc, fused_backward_finite_differences);
    suite_add_tcase(s, tc);
    tc = tcase_create("fuse");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, fuse_random_nets);
    tcase_add_test(tc, pipeline_on_tailored_resnet8);
    tcase_add_test(tc, fused_graph_xml_round_trip_and_jit);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
