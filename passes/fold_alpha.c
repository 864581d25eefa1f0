/* fold-alpha: fold the fixed post-training alphas into the branches of
 * each mix node.
 *
 * After training a mix computes y = sum_j w_j * x_j with constant weights
 * w = softmax(alpha), all > 0.  When every branch x_j can absorb its
 * factor, i.e. compute w_j * x_j itself, the mix becomes a plain `add`
 * of the branches (a mix of one input is the identity: softmax of one
 * logit is 1).  A branch absorbs a factor a > 0 through:
 *   conv2d, linear   weight and bias times a (linear in both);
 *   fused_conv2d     weight and bias times a, and the residual absorbs a
 *                    (relu(a z) = a relu(z), see below), so the pass may
 *                    run before or after fuse;
 *   batchnorm        scale and bias times a: a(g(x - m)/s + b) = (ag)(x - m)/s + ab;
 *   add, mix         every input absorbs a (a sum is linear);
 *   relu, maxpool, avgpool, global_avgpool, flatten
 *                    the input absorbs a: these are positively homogeneous,
 *                    f(a x) = a f(x) for a > 0 (padding never wins a max).
 * Each value on the way must be read by that one consumer only (else the
 * other readers would see the scaled value), and no node may be reached
 * twice.  If some branch cannot absorb, the mix is left as it is (still
 * correct) and `-v` says which branch and why.  Scaled parameters get
 * fresh tensors (ntc_param_data_alloc); existing data, which may be a
 * mapped weights file, is never written.
 *
 * Universal blocks (option universal, default 0).  Every task reads the
 * same universal weights file; scaling a universal block's parameters by
 * one task's w_0 would give each task its own copy of them.  By default
 * the pass therefore folds into task blocks (and nodes outside blocks)
 * only, and a mix with a universal branch keeps its alphas.  We looked for
 * a way round: the mix is followed by a relu, and relu is positively
 * homogeneous, so
 *     relu(w_0 u + sum_j w_j p_j) = w_0 * relu(u + sum_j (w_j / w_0) p_j),
 * the proxies could absorb w_j / w_0 and leave u unscaled, with w_0 pushed
 * into the readers of the relu.  Those readers are the next layer's
 * universal block (and proxies): w_0 passes its first convolution (linear)
 * but stops at the batchnorm after it, an affine map, not a homogeneous
 * one (g(a x - m) + b != a (g(x - m) + b)), and the same holds for a conv
 * bias after fold-bn.  So w_0 would land in the next universal block's
 * weights after all, or need an explicit scaling node, which costs what
 * the mix costs.  universal=1 folds into universal blocks too: right for a
 * single-task deployment, where sharing does not matter.
 *
 * Inference only: training would update the alphas the fold froze. */
#include "ntc/pass.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

typedef struct {
    ntc_graph *g;
    bool universal;              /* may scale parameters of universal blocks */
    int *stamp;                  /* per node: mark of the last mix that visited it */
    int mark;
    char why[512];               /* why the last branch checked cannot absorb */
} folder;

static bool refuse(folder *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool refuse(folder *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->why, sizeof f->why, fmt, ap);
    va_end(ap);
    return false;
}

static bool in_universal_block(const ntc_graph *g, const ntc_node *n)
{
    return n->block >= 0 && g->blocks[n->block].role == NTC_ROLE_UNIVERSAL;
}

/* Ops whose parameter slots 0 and 1 absorb the factor: weight and bias of
 * conv2d, fused_conv2d and linear, scale and bias of batchnorm. */
static bool absorbs(ntc_op op)
{
    return op == NTC_OP_conv2d || op == NTC_OP_fused_conv2d || op == NTC_OP_linear || op == NTC_OP_batchnorm;
}

/* Positively homogeneous single-input ops: the factor goes to the input. */
static bool passes_through(ntc_op op)
{
    return op == NTC_OP_relu || op == NTC_OP_maxpool || op == NTC_OP_avgpool || op == NTC_OP_global_avgpool ||
           op == NTC_OP_flatten;
}

/* Whether value v, read once by the node being folded, can be made to
 * carry a positive factor; marks the nodes it would change. */
static bool can_absorb(folder *f, int v)
{
    const ntc_graph *g = f->g;
    const char *name = g->values[v].name;
    if (ntc_graph_count_uses(g, v) != 1)
        return refuse(f, "'%s' has other readers", name);
    int p = g->values[v].producer;
    if (p < 0)
        return refuse(f, "'%s' is a graph input", name);
    const ntc_node *n = &g->nodes[p];
    if (f->stamp[p] == f->mark)
        return refuse(f, "'%s' is reached twice", name);
    f->stamp[p] = f->mark;
    if (absorbs(n->op)) {
        if (in_universal_block(g, n) && !f->universal)
            return refuse(f, "'%s' is in universal block '%s' (universal=1 folds into it)", name,
                          g->blocks[n->block].name);
        for (int s = 0; s < 2; s++)
            if (n->par[s] >= 0 && !g->values[n->par[s]].data)
                return refuse(f, "parameter '%s' has no data", g->values[n->par[s]].name);
        /* A fused convolution's residual is part of its output. */
        return n->op != NTC_OP_fused_conv2d || n->n_in == 1 || can_absorb(f, n->in[1]);
    }
    if (n->op == NTC_OP_add || n->op == NTC_OP_mix) {
        for (int j = 0; j < n->n_in; j++)
            if (!can_absorb(f, n->in[j]))
                return false;
        return true;
    }
    if (passes_through(n->op))
        return can_absorb(f, n->in[0]);
    return refuse(f, "'%s' is computed by a %s, which cannot absorb a factor", name, ntc_op_name(n->op));
}

/* Parameter v's data times a, in a fresh tensor. */
static int scale_param(ntc_graph *g, int v, double a, ntc_err *err)
{
    int64_t n = ntc_shape_numel(&g->values[v].shape);
    float *scaled = ntc_malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!scaled)
        return ntc_error(err, g->path, 0, "out of memory scaling '%s'", g->values[v].name);
    for (int64_t i = 0; i < n; i++)
        scaled[i] = (float)(a * g->values[v].data[i]);
    float *fresh = ntc_param_data_alloc(g, v, err);
    if (fresh)
        memcpy(fresh, scaled, sizeof(float) * (size_t)n);
    ntc_free(scaled);
    return fresh ? 0 : -1;
}

/* Makes value v (checked by can_absorb) carry the factor a. */
static int absorb(ntc_graph *g, int v, double a, ntc_err *err)
{
    const ntc_node *n = &g->nodes[g->values[v].producer];
    if (absorbs(n->op)) {
        for (int s = 0; s < 2; s++)
            if (n->par[s] >= 0 && scale_param(g, n->par[s], a, err))
                return -1;
        return n->op == NTC_OP_fused_conv2d && n->n_in == 2 ? absorb(g, n->in[1], a, err) : 0;
    }
    for (int j = 0; j < n->n_in; j++)   /* add, mix, or a single-input op */
        if (absorb(g, n->in[j], a, err))
            return -1;
    return 0;
}

/* softmax(alpha) of mix node m into w[0..n_in), in double. */
static int mix_weights(const ntc_graph *g, int m, double *w, ntc_err *err)
{
    const ntc_node *n = &g->nodes[m];
    const float *alpha = g->values[n->par[0]].data;
    if (!alpha)
        return ntc_node_error(err, g, m, "fold-alpha needs the alphas: '%s' has no data",
                              g->values[n->par[0]].name);
    double top = -INFINITY, sum = 0;
    for (int j = 0; j < n->n_in; j++) {
        if (!isfinite(alpha[j]))
            return ntc_node_error(err, g, m, "alpha %d is not finite", j);
        top = fmax(top, alpha[j]);
    }
    for (int j = 0; j < n->n_in; j++)
        sum += w[j] = exp(alpha[j] - top);
    for (int j = 0; j < n->n_in; j++)
        w[j] /= sum;
    return 0;
}

/* Replaces mix node m by an add of its inputs (or, for one input, by the
 * input itself).  The add takes the mix's name and block. */
static int replace_by_sum(ntc_graph *g, int m, ntc_err *err)
{
    const ntc_node n = g->nodes[m];
    ntc_graph_remove_node(g, m);
    if (n.n_in == 1) {
        ntc_graph_replace_uses(g, n.out, n.in[0]);
        return 0;
    }
    int a = ntc_graph_add_node(g, NTC_OP_add, n.name, n.in, n.n_in, n.block);
    if (a < 0)
        return ntc_error(err, g->path, n.line, "out of memory replacing mix '%s'", n.name);
    g->nodes[a].line = n.line;
    ntc_graph_replace_uses(g, n.out, g->nodes[a].out);
    return 0;
}

/* Folds mix node m if every branch can absorb its weight.  1 folded,
 * 0 left as it is, -1 error. */
static int fold_mix(folder *f, int m, const ntc_pass_ctx *ctx, ntc_err *err)
{
    ntc_graph *g = f->g;
    const int n_in = g->nodes[m].n_in;
    double *w = ntc_malloc(sizeof(double) * (size_t)n_in);
    if (!w)
        return ntc_node_error(err, g, m, "out of memory");
    int rc = mix_weights(g, m, w, err);
    if (!rc && n_in > 1) {
        f->mark = m + 1;
        for (int j = 0; j < n_in; j++) {
            if (can_absorb(f, g->nodes[m].in[j]))
                continue;
            if (ntc_pass_verbosity(ctx) > 0)
                fprintf(ntc_pass_out(ctx), "fold-alpha: kept mix '%s': branch '%s' cannot absorb its weight: %s\n",
                        g->nodes[m].name, g->values[g->nodes[m].in[j]].name, f->why);
            ntc_free(w);
            return 0;
        }
        for (int j = 0; j < n_in && !rc; j++)
            rc = absorb(g, g->nodes[m].in[j], w[j], err);
    }
    ntc_free(w);
    if (rc || replace_by_sum(g, m, err))
        return -1;
    return 1;
}

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    long universal;
    if (ntc_pass_opt_int(ctx, "universal", 0, &universal, err))
        return -1;
    if (universal != 0 && universal != 1)
        return ntc_error(err, NULL, 0, "fold-alpha: option 'universal' is 0 or 1, not %ld", universal);
    /* Each fold adds at most one node (the sum), which a later mix's
     * branch may reach: stamps cover them too.  They are past n and none
     * is a mix, so the loop need not visit them. */
    int n = g->n_nodes, mixes = 0;
    for (int i = 0; i < n; i++)
        mixes += !g->nodes[i].dead && g->nodes[i].op == NTC_OP_mix;
    folder f = {.g = g, .universal = universal, .stamp = ntc_calloc((size_t)(n + mixes) + 1, sizeof(int))};
    if (!f.stamp)
        return ntc_error(err, g->path, 0, "out of memory");
    int changed = 0;
    for (int i = 0; i < n && changed >= 0; i++) {
        if (g->nodes[i].dead || g->nodes[i].op != NTC_OP_mix)
            continue;
        int r = fold_mix(&f, i, ctx, err);
        changed = r < 0 ? -1 : changed | r;
    }
    ntc_free(f.stamp);
    return changed;
}

static const ntc_pass_option options[] = {
    {"universal", "1: fold into universal blocks too (their weights become per-task tensors); default 0"},
    {NULL, NULL},
};

const ntc_pass ntc_pass_fold_alpha = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "fold-alpha",
    .description = "fold the fixed alphas of mix nodes into their branches, which are then added",
    .modes = NTC_PASS_INFERENCE,
    .fixed_point = false,
    .options = options,
    .run = run,
};
