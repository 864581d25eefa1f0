/* tailor: turn a backbone into NetTailor's student supernetwork.
 *
 * Input: a graph whose first universal block (in topological order) is the
 * stem and whose later universal blocks are the layers, each reading the
 * previous one's output (what `ntc new resnet` and `ntc import` produce).
 * For every layer i with universal block U_i:
 *
 *   - U_i is frozen (its batchnorm runs in inference mode from now on, so
 *     its weights stay byte-identical across tasks);
 *   - U_i's final relu, if any, moves out of the block and reads a new
 *     mix node "<U_i>.mix" instead, so the relu's value (named as in the
 *     backbone, which lets distillation pair it with the teacher's) is
 *     x_i = relu(mix(U_i(x_{i-1}), P_i1(x_{i-1}), ..., P_ik(x_{i-k})));
 *   - a proxy P_ij, a task block "<U_i>.p<j>", reads x_{i-j} for
 *     j = 1..min(i, max-skip), x_0 being the stem's output:
 *     [maxpool(k = s+1, stride s, pad s/2) when the resolution drops by s]
 *     + 1x1 conv to U_i's channels + batchnorm;
 *   - the alpha logits start at +2 for U_i and -2 for the proxies.
 *
 * The classifier (the last linear node) is replaced by a new one with
 * `classes` outputs (default: as many as before), freshly initialised.
 * The backbone's MACs are recorded in the metadata: E[C] is measured
 * against them even after pruning. */
#include "ntc/nettailor.h"
#include "ntc/pass.h"
#include "ntc/rng.h"
#include "nettailor_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* The node of block b whose output is read outside the block (its last
 * node when several qualify), or -1. */
static int block_output_node(const ntc_graph *g, int b)
{
    int out = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead || n->block != b)
            continue;
        for (int k = 0; k < g->n_nodes; k++) {
            const ntc_node *r = &g->nodes[k];
            if (r->dead || r->block == b)
                continue;
            for (int j = 0; j < r->n_in; j++)
                if (r->in[j] == n->out)
                    out = i;
        }
        for (int o = 0; o < g->n_outputs; o++)
            if (g->outputs[o].value == n->out)
                out = i;
    }
    return out;
}

typedef struct {
    int block;        /* universal block */
    int out_value;    /* x_i: the layer's output value */
    int pre;          /* value the mix's universal branch gives (pre-activation) */
    int relu;         /* the relu node moved out of the block, or -1 */
} layer_info;

static int add_conv1x1(ntc_graph *g, const char *name, int in, int filters, int block)
{
    int c = ntc_graph_add_node(g, NTC_OP_conv2d, name, &in, 1, block);
    if (c < 0)
        return -1;
    g->nodes[c].a.filters = filters;
    g->nodes[c].a.kernel[0] = g->nodes[c].a.kernel[1] = 1;
    return ntc_node_add_param(g, c, "weight", NULL) < 0 ? -1 : c;
}

static int add_bn(ntc_graph *g, const char *name, int in, int block)
{
    int b = ntc_graph_add_node(g, NTC_OP_batchnorm, name, &in, 1, block);
    if (b < 0)
        return -1;
    for (const ntc_param_spec *s = ntc_ops[NTC_OP_batchnorm].params; s->name; s++)
        if (ntc_node_add_param(g, b, s->name, NULL) < 0)
            return -1;
    return b;
}

/* A proxy from value src to the shape of value dst; returns its output. */
static int add_proxy(ntc_graph *g, const char *name, int src, int dst, int *block_out, ntc_err *err)
{
    const ntc_shape *s = &g->values[src].shape, *d = &g->values[dst].shape;
    if (s->rank != 4 || d->rank != 4)
        return ntc_error(err, g->path, 0, "proxy %s: layers must be 4-D images", name);
    /* The smallest stride whose maxpool(k = s+1, pad s/2) lands on d's size. */
    int64_t stride = (s->dims[2] + d->dims[2] - 1) / d->dims[2];
    for (int i = 2; i < 4; i++) {
        int64_t o = stride == 1 ? s->dims[i] : (s->dims[i] + 2 * (stride / 2) - (stride + 1)) / stride + 1;
        if (o != d->dims[i])
            return ntc_error(err, g->path, 0, "proxy %s: cannot map %" PRId64 "x%" PRId64 " onto %" PRId64 "x%" PRId64,
                             name, s->dims[2], s->dims[3], d->dims[2], d->dims[3]);
    }
    if (ntc_graph_find_block(g, name) >= 0)
        return ntc_error(err, g->path, 0, "proxy block '%s' exists already", name);
    int b = ntc_graph_add_block(g, name, NTC_ROLE_TASK);
    if (b < 0)
        return ntc_error(err, g->path, 0, "out of memory");
    *block_out = b;
    char nm[600];
    int x = src;
    if (stride > 1) {
        snprintf(nm, sizeof nm, "%s.pool", name);
        int p = ntc_graph_add_node(g, NTC_OP_maxpool, nm, &x, 1, b);
        if (p < 0)
            return ntc_error(err, g->path, 0, "cannot add node '%s'", nm);
        ntc_attrs *a = &g->nodes[p].a;
        a->kernel[0] = a->kernel[1] = (int)stride + 1;
        a->stride[0] = a->stride[1] = (int)stride;
        for (int i = 0; i < 4; i++)
            a->pad[i] = (int)stride / 2;
        x = g->nodes[p].out;
    }
    snprintf(nm, sizeof nm, "%s.conv", name);
    int c = add_conv1x1(g, nm, x, (int)d->dims[1], b);
    snprintf(nm, sizeof nm, "%s.bn", name);
    int n = c < 0 ? -1 : add_bn(g, nm, g->nodes[c].out, b);
    if (n < 0) /* names were checked free above, so only memory can fail */
        return ntc_error(err, g->path, 0, "out of memory adding the nodes of proxy '%s'", name);
    return g->nodes[n].out;
}

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    long max_skip, classes, seed;
    if (ntc_pass_opt_int(ctx, "max-skip", 3, &max_skip, err) ||
        ntc_pass_opt_int(ctx, "classes", 0, &classes, err) ||
        ntc_pass_opt_int(ctx, "seed", 1, &seed, err))
        return -1;
    if (max_skip < 0 || max_skip > 16)
        return ntc_error(err, NULL, 0, "tailor: max-skip must be in 0..16, got %ld", max_skip);
    if (classes < 0)
        return ntc_error(err, NULL, 0, "tailor: classes must be positive, got %ld", classes);
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].op == NTC_OP_mix)
            return ntc_node_error(err, g, i, "the graph is tailored already");

    int first_new_value = g->n_values;
    if (ntc_nt_replace_classifier(g, classes, err) || ntc_graph_infer_shapes(g, err))
        return -1;
    char buf[64];
    snprintf(buf, sizeof buf, "%" PRId64, ntc_graph_macs(g));
    if (ntc_graph_set_meta(g, NTC_META_BACKBONE_MACS, buf))
        return ntc_error(err, NULL, 0, "out of memory");
    snprintf(buf, sizeof buf, "%ld", max_skip);
    if (ntc_graph_set_meta(g, NTC_META_MAX_SKIP, buf))
        return ntc_error(err, NULL, 0, "out of memory");

    /* Universal blocks in topological order of their first node. */
    int *order = ntc_malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
    layer_info *layers = ntc_calloc((size_t)g->n_blocks + 1, sizeof(layer_info));
    bool *seen = ntc_calloc((size_t)g->n_blocks + 1, sizeof(bool));
    int rc = -1, n_layers = 0;
    if (!order || !layers || !seen) {
        ntc_error(err, NULL, 0, "out of memory");
        goto done;
    }
    int count = ntc_graph_topo_order(g, order, err);
    if (count < 0)
        goto done;
    for (int k = 0; k < count; k++) {
        int b = g->nodes[order[k]].block;
        if (b < 0 || seen[b] || g->blocks[b].role != NTC_ROLE_UNIVERSAL)
            continue;
        seen[b] = true;
        int o = block_output_node(g, b);
        if (o < 0) {
            ntc_error(err, g->path, g->blocks[b].line, "universal block '%s' has no output", g->blocks[b].name);
            goto done;
        }
        layer_info *li = &layers[n_layers++];
        li->block = b;
        li->out_value = g->nodes[o].out;
        li->relu = g->nodes[o].op == NTC_OP_relu ? o : -1;
        li->pre = li->relu >= 0 ? g->nodes[o].in[0] : g->nodes[o].out;
        g->blocks[b].frozen = true;
        g->blocks[b].layer = g->blocks[b].name;
    }
    if (n_layers < 2) {
        ntc_error(err, g->path, 0, "tailor needs a stem and at least one more universal block, found %d universal block(s)",
                  n_layers);
        goto done;
    }
    /* Layer 0 is the stem: its output x_0 is a fixed source. */
    for (int i = 1; i < n_layers; i++) {
        layer_info *li = &layers[i];
        ntc_block *ub = &g->blocks[li->block];
        ub->reads = g->blocks[layers[i - 1].block].name;
        int n_br = 1 + (int)(i < max_skip ? i : max_skip);
        int ins[17];
        ins[0] = li->pre;
        char name[512];
        for (int j = 1; j < n_br; j++) {
            snprintf(name, sizeof name, "%s.p%d", ub->name, j);
            int pb = -1;
            ins[j] = add_proxy(g, name, layers[i - j].out_value, li->pre, &pb, err);
            if (ins[j] < 0)
                goto done;
            ub = &g->blocks[li->block]; /* blocks may have moved */
            g->blocks[pb].layer = ub->name;
            g->blocks[pb].reads = g->blocks[layers[i - j].block].name;
            if (ntc_graph_infer_shapes(g, err))
                goto done;
        }
        snprintf(name, sizeof name, "%s.mix", ub->name);
        int mix = ntc_graph_add_node(g, NTC_OP_mix, name, ins, n_br, -1);
        if (mix < 0 || ntc_node_add_param(g, mix, "alpha", NULL) < 0) {
            ntc_error(err, NULL, 0, "cannot add node '%s'", name);
            goto done;
        }
        if (li->relu >= 0) {
            g->nodes[li->relu].in[0] = g->nodes[mix].out;
            g->nodes[li->relu].block = -1;
        } else {
            /* No activation: the mix itself becomes the layer output. */
            ntc_graph_replace_uses(g, li->out_value, g->nodes[mix].out);
            g->nodes[mix].in[0] = li->pre;
            layers[i].out_value = g->nodes[mix].out;
        }
        if (ntc_graph_infer_shapes(g, err))
            goto done;
        float *alpha = ntc_param_data_alloc(g, g->nodes[mix].par[0], err);
        if (!alpha)
            goto done;
        for (int j = 0; j < n_br; j++)
            alpha[j] = j == 0 ? 2.0f : -2.0f;
    }
    for (int i = 0; i < n_layers; i++)
        g->blocks[layers[i].block].frozen = true;
    if (ntc_nt_init_params(g, first_new_value, (uint64_t)seed, err))
        goto done;
    ntc_graph_compact(g);
    rc = 1;
done:
    ntc_free(order);
    ntc_free(layers);
    ntc_free(seen);
    return rc;
}

static const ntc_pass_option options[] = {
    {"max-skip", "proxies per layer read up to this many layers back (default 3)"},
    {"classes", "outputs of the new classifier (default: as the backbone's)"},
    {"seed", "seed of the new weights' initialisation (default 1)"},
    {NULL, NULL},
};

const ntc_pass ntc_pass_tailor = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "tailor",
    .description = "NetTailor student: freeze universal blocks, add proxies, alphas and a new classifier",
    .modes = NTC_PASS_TRAINING,
    .fixed_point = false,
    .options = options,
    .run = run,
};
