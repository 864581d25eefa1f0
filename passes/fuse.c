/* fuse: turn conv2d -> add -> relu chains into single fused_conv2d nodes.
 *
 * fused_conv2d computes [relu](conv(x) + r): the convolution with its bias,
 * plus an optional residual input r, then an optional relu, in one pass
 * over the output (runtime/kern_fused.c, compiler/codegen_fused.c).  Run
 * after fold-bn and fold-alpha, which leave ResNet blocks and NetTailor
 * layers as convolutions joined by adds.
 *
 * Patterns, each part read by nothing but the next (a graph output counts
 * as a reader, so values the caller sees are never fused away):
 *   add(.., c, ..) [-> relu]   c a conv2d: c absorbs the add (and the
 *                              relu); the add's other inputs are the
 *                              residual: one value, or for an add of three
 *                              or more a new add of the rest, which takes
 *                              the old add's name and is fused in turn.
 *                              Of several convs the one with the most MACs
 *                              is chosen.
 *   conv2d -> relu             relu=1, no residual.
 * A conv2d with nothing to absorb stays a conv2d.  The fused node takes
 * the convolution's name, block and parameters; readers of the chain's
 * last value read it instead.  Sums are reassociated ((a + c) + b becomes
 * c + (a + b)), which changes results by float rounding only.
 *
 * One sweep: adds made here are appended and visited by the same loop. */
#include "ntc/pass.h"

#include <string.h>

/* The conv2d computing v when v's only reader is the node being fused. */
static int sole_conv(const ntc_graph *g, int v)
{
    int p = g->values[v].producer;
    if (p < 0 || g->nodes[p].dead || g->nodes[p].op != NTC_OP_conv2d)
        return -1;
    return ntc_graph_count_uses(g, v) == 1 ? p : -1;
}

/* The relu that alone reads v, or -1. */
static int sole_relu(const ntc_graph *g, int v)
{
    int r;
    if (ntc_graph_count_uses(g, v) != 1 || ntc_value_users(g, v, &r, 1) != 1)
        return -1;
    return g->nodes[r].op == NTC_OP_relu ? r : -1;
}

/* Replaces conv2d node c by a fused_conv2d of the same name reading c's
 * input and the residual (-1: none), with the relu flag; readers of
 * value `last` (the chain's end, already removed) read it instead. */
static int make_fused(ntc_graph *g, int c, int residual, bool relu, int last, ntc_err *err)
{
    const ntc_node conv = g->nodes[c];
    /* Detached, the parameters outlive the conv's removal for the fused node. */
    for (int s = 0; s < NTC_MAX_PARAMS; s++)
        g->nodes[c].par[s] = -1;
    ntc_graph_remove_node(g, c);
    const int in[2] = {conv.in[0], residual};
    int f = ntc_graph_add_node(g, NTC_OP_fused_conv2d, conv.name, in, residual >= 0 ? 2 : 1, conv.block);
    if (f < 0)
        return ntc_error(err, g->path, conv.line, "out of memory fusing '%s'", conv.name);
    ntc_node *n = &g->nodes[f];
    n->a = conv.a;
    n->a.relu = relu;
    memcpy(n->par, conv.par, sizeof n->par);
    n->line = conv.line;
    ntc_graph_replace_uses(g, last, n->out);
    return 0;
}

static void report(const ntc_pass_ctx *ctx, const ntc_graph *g, int c, const char *what)
{
    if (ntc_pass_verbosity(ctx) > 0)
        fprintf(ntc_pass_out(ctx), "fuse: '%s' absorbs %s\n", g->nodes[c].name, what);
}

/* Fuses add node a with one of its convolutions (and a relu after it).
 * 1 fused, 0 nothing to fuse, -1 error. */
static int fuse_add(ntc_graph *g, int a, const ntc_pass_ctx *ctx, ntc_err *err)
{
    const ntc_node add = g->nodes[a];
    int pick = -1, c = -1;
    for (int j = 0; j < add.n_in; j++) {
        int cj = sole_conv(g, add.in[j]);
        if (cj >= 0 && (c < 0 || ntc_node_macs(g, cj) > ntc_node_macs(g, c)))
            pick = j, c = cj;
    }
    if (c < 0)
        return 0;
    int relu = sole_relu(g, add.out);
    int last = relu >= 0 ? g->nodes[relu].out : add.out;
    char what[600];
    snprintf(what, sizeof what, "'%s'%s%s%s", add.name, relu >= 0 ? " and '" : "",
             relu >= 0 ? g->nodes[relu].name : "", relu >= 0 ? "'" : "");
    report(ctx, g, c, what);
    if (relu >= 0)
        ntc_graph_remove_node(g, relu);
    ntc_graph_remove_node(g, a);

    int rest[add.n_in], n_rest = 0;
    for (int j = 0; j < add.n_in; j++)
        if (j != pick)
            rest[n_rest++] = add.in[j];
    int residual = rest[0];
    if (n_rest > 1) {
        int r = ntc_graph_add_node(g, NTC_OP_add, add.name, rest, n_rest, add.block);
        if (r < 0)
            return ntc_error(err, g->path, add.line, "out of memory fusing '%s'", add.name);
        g->nodes[r].line = add.line;
        residual = g->nodes[r].out;
    }
    return make_fused(g, c, residual, relu >= 0, last, err) ? -1 : 1;
}

/* Fuses relu node r into the convolution it alone reads. */
static int fuse_relu(ntc_graph *g, int r, const ntc_pass_ctx *ctx, ntc_err *err)
{
    int c = sole_conv(g, g->nodes[r].in[0]);
    if (c < 0)
        return 0;
    char what[600];
    snprintf(what, sizeof what, "'%s'", g->nodes[r].name);
    report(ctx, g, c, what);
    ntc_graph_remove_node(g, r);
    return make_fused(g, c, -1, true, g->nodes[r].out, err) ? -1 : 1;
}

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    int changed = 0;
    /* g->n_nodes grows as the sums of the rest are added. */
    for (int i = 0; i < g->n_nodes && changed >= 0; i++)
        if (!g->nodes[i].dead && g->nodes[i].op == NTC_OP_add) {
            int r = fuse_add(g, i, ctx, err);
            changed = r < 0 ? -1 : changed | r;
        }
    for (int i = 0; i < g->n_nodes && changed >= 0; i++)
        if (!g->nodes[i].dead && g->nodes[i].op == NTC_OP_relu) {
            int r = fuse_relu(g, i, ctx, err);
            changed = r < 0 ? -1 : changed | r;
        }
    return changed;
}

const ntc_pass ntc_pass_fuse = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "fuse",
    .description = "fuse conv2d -> add -> relu chains (add or relu may be absent) into fused_conv2d nodes",
    .modes = NTC_PASS_INFERENCE,
    .fixed_point = false,
    .options = NULL,
    .run = run,
};
