/* fold-bn: fold an inference-mode batchnorm into the convolution before it.
 *
 * In inference mode a batchnorm is a per-channel affine map,
 *     y[c] = g[c] * (x[c] - mean[c]) + bias[c],   g[c] = scale[c] / sqrt(var[c] + eps),
 * and a conv2d is linear in its weights, so when the batchnorm's input x is
 * a conv2d's output that nothing else reads, the pair is one conv2d with
 *     W'[c, ...] = W[c, ...] * g[c]
 *     b'[c]      = (b[c] - mean[c]) * g[c] + bias[c]     (b = 0 without a bias)
 * The conv keeps its name and computes what the batchnorm did; readers of
 * the batchnorm read the conv; the batchnorm and its four parameters go.
 * A conv without a bias gets one, named "<conv>.bias".
 *
 * The conv's weights may be memory-mapped (a universal weights file shared
 * by every task, copy-on-write): the pass never writes into existing
 * parameter data, it computes the folded tensors into fresh buffers
 * (ntc_param_data_alloc) that replace the old ones in this graph only.
 *
 * Sharing: universal blocks are frozen, so their batchnorm statistics, and
 * hence their folded weights, are the same for every task; but they are
 * new tensors, no longer the bytes of the shared universal weights file.
 * fold-bn therefore suits single-task deployment (one graph, one weights
 * file).  `ntc compile` keeps universal weights shared by folding
 * batchnorms at code-generation time instead (the code reads the original
 * weights and statistics).
 *
 * Arithmetic is in double and rounded once to float per folded value.
 * Inference only: training would update the statistics the fold froze. */
#include "ntc/pass.h"

#include <math.h>
#include <string.h>

/* The conv2d whose output only batchnorm node bn reads, or -1. */
static int foldable_conv(const ntc_graph *g, const ntc_node *bn)
{
    int c = g->values[bn->in[0]].producer;
    if (c < 0 || g->nodes[c].dead || g->nodes[c].op != NTC_OP_conv2d)
        return -1;
    /* One use: the batchnorm (a graph output naming the conv's value
     * would be a second one, and needs the unfolded value). */
    return ntc_graph_count_uses(g, bn->in[0]) == 1 ? c : -1;
}

static int need_data(const ntc_graph *g, int node, int v, ntc_err *err)
{
    if (!g->values[v].data)
        return ntc_node_error(err, g, node, "fold-bn needs the weights: parameter '%s' has no data",
                              g->values[v].name);
    return 0;
}

/* Replaces parameter v's data by the n floats of `fresh` (a fresh buffer
 * owned by the graph; the old data, possibly mapped, is never written). */
static int replace_data(ntc_graph *g, int v, const float *fresh, int64_t n, ntc_err *err)
{
    float *d = ntc_param_data_alloc(g, v, err);
    if (!d)
        return -1;
    memcpy(d, fresh, sizeof(float) * (size_t)n);
    return 0;
}

/* Folds batchnorm node b into conv2d node c.  0, or -1 with err filled. */
static int fold(ntc_graph *g, int b, int c, ntc_err *err)
{
    const ntc_node *bn = &g->nodes[b];
    for (int s = 0; s < 4; s++)
        if (need_data(g, b, bn->par[s], err))
            return -1;
    if (need_data(g, c, g->nodes[c].par[0], err) ||
        (g->nodes[c].par[1] >= 0 && need_data(g, c, g->nodes[c].par[1], err)))
        return -1;

    const int64_t F = g->nodes[c].a.filters;
    const int wv = g->nodes[c].par[0];
    const int64_t per_filter = ntc_shape_numel(&g->values[wv].shape) / F;
    const float *scale = g->values[bn->par[0]].data, *shift = g->values[bn->par[1]].data;
    const float *mean = g->values[bn->par[2]].data, *var = g->values[bn->par[3]].data;
    const double eps = bn->a.epsilon;
    const float *w = g->values[wv].data;
    const float *bias = g->nodes[c].par[1] >= 0 ? g->values[g->nodes[c].par[1]].data : NULL;

    float *nw = ntc_malloc(sizeof(float) * (size_t)(F * per_filter));
    float *nb = ntc_malloc(sizeof(float) * (size_t)F);
    if (!nw || !nb) {
        ntc_free(nw), ntc_free(nb);
        return ntc_node_error(err, g, c, "out of memory folding '%s'", bn->name);
    }
    for (int64_t f = 0; f < F; f++) {
        double gain = (double)scale[f] / sqrt((double)var[f] + eps);
        for (int64_t i = 0; i < per_filter; i++)
            nw[f * per_filter + i] = (float)((double)w[f * per_filter + i] * gain);
        nb[f] = (float)(((bias ? (double)bias[f] : 0.0) - (double)mean[f]) * gain + (double)shift[f]);
    }

    int rc = replace_data(g, wv, nw, F * per_filter, err);
    if (!rc && g->nodes[c].par[1] < 0) {
        int bv = ntc_node_add_param(g, c, "bias", NULL);
        if (bv < 0)
            rc = ntc_node_error(err, g, c, "cannot add a bias: the name '%s.bias' is taken", g->nodes[c].name);
        else
            g->values[bv].shape = (ntc_shape){1, {F}};
    }
    if (!rc)
        rc = replace_data(g, g->nodes[c].par[1], nb, F, err);
    ntc_free(nw), ntc_free(nb);
    if (rc)
        return -1;

    ntc_graph_replace_uses(g, g->nodes[b].out, g->nodes[c].out);
    ntc_graph_remove_node(g, b);
    return 0;
}

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    int changed = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].dead || g->nodes[i].op != NTC_OP_batchnorm)
            continue;
        int c = foldable_conv(g, &g->nodes[i]);
        if (c < 0)
            continue;
        if (fold(g, i, c, err))
            return -1;
        if (ntc_pass_verbosity(ctx) > 0)
            fprintf(ntc_pass_out(ctx), "fold-bn: folded '%s' into '%s'\n", g->nodes[i].name, g->nodes[c].name);
        changed = 1;
    }
    return changed;
}

const ntc_pass ntc_pass_fold_bn = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "fold-bn",
    .description = "fold batchnorms into the conv2d they read (fresh tensors, for single-task graphs)",
    .modes = NTC_PASS_INFERENCE,
    .fixed_point = false,
    .run = run,
};
