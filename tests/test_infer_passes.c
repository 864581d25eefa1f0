/* The inference-only passes (passes/fold_bn.c, fold_alpha.c, fuse.c):
 * every rewrite must leave the graph computing the same function.  Each
 * test builds graphs (small random ones, and a tailored ResNet-8), runs
 * the pass on a clone and feeds both graphs the same random batch through
 * the interpreter; the outputs must agree to a relative error of 1e-5,
 * measured as max |after - before| / max |before| (element-wise ratios are
 * meaningless for outputs that cross zero).  The structure of the result
 * is checked too, so a pass that changes nothing cannot pass. */
#include "testutil.h"
#include "ntc/frontends.h"
#include "ntc/pass.h"
#include "ntc/runtime.h"

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

/* max |a - b| / max |b| over n floats. */
static double rel_error(const float *a, const float *b, int64_t n)
{
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return scale > 0 ? diff / scale : diff;
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
    double e = rel_error(after, before, n1);
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
            snprintf(pipeline, sizeof pipeline, "fold-alpha:universal=%d", universal);
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
            if (!universal)
                universal_params_unchanged(g, h);
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
    return tu_run(s);
}
