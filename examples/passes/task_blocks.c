/* An ntc pass plugin with two passes over the blocks of a graph.
 *
 *   flop-profile            prints each block's MACs and parameters and
 *                           their share of the graph; changes nothing.
 *   drop-small-task-blocks  removes task-specific blocks whose MACs are
 *                           below a share of the graph's (option below=F,
 *                           default 0.01), where that keeps the graph valid.
 *
 * Why drop small task blocks: in a NetTailor student every layer mixes its
 * universal block with small task-specific proxies.  A proxy that costs
 * almost nothing still costs a node launch, a buffer and a memory pass
 * per image, which on small inputs is what dominates latency.  Dropping
 * it is safe where its output only feeds a mix (the softmax then
 * renormalises over the branches that stay, as NetTailor's prune does) or
 * a sum that keeps at least two other terms; any other block is kept.
 * Run dce afterwards to remove what fed only the dropped blocks:
 *
 *   cc -shared -fPIC -o task_blocks.so task_blocks.c $(pkg-config --cflags ntc)
 *   ntc opt student.xml --load-pass ./task_blocks.so --passes=flop-profile
 *   ntc opt student.xml --load-pass ./task_blocks.so \
 *       --passes=drop-small-task-blocks:below=0.02,dce -o smaller.xml
 *
 * Written only against <ntc/pass.h>, as any plugin would be. */
#include <ntc/pass.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* MACs and learnable parameters of block b (-1: nodes outside blocks). */
static void block_cost(const ntc_graph *g, int b, int64_t *macs, int64_t *params, int *nodes)
{
    *macs = *params = 0;
    *nodes = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].block == b) {
            *macs += ntc_node_macs(g, i);
            *params += ntc_node_params(g, i);
            ++*nodes;
        }
}

static double share(int64_t part, int64_t total) { return total > 0 ? 100.0 * (double)part / (double)total : 0; }

/* ---- flop-profile ------------------------------------------------------------ */

static void profile_row(FILE *f, const char *name, const char *role, int nodes, int64_t macs,
                        int64_t params, int64_t total_macs, int64_t total_params)
{
    fprintf(f, "%-24s %-9s %5d %14" PRId64 " %6.2f%% %12" PRId64 " %6.2f%%\n", name, role, nodes, macs,
            share(macs, total_macs), params, share(params, total_params));
}

static int profile_run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)err;
    FILE *f = ntc_pass_out(ctx);
    int64_t total_macs, total_params, role_macs[3] = {0}, macs, params;
    int nodes;
    total_macs = total_params = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead) {
            total_macs += ntc_node_macs(g, i);
            total_params += ntc_node_params(g, i);
        }
    fprintf(f, "%-24s %-9s %5s %14s %7s %12s %7s\n", "block", "role", "nodes", "MACs", "share",
            "params", "share");
    for (int b = 0; b < g->n_blocks; b++) {
        if (g->blocks[b].dead)
            continue;
        block_cost(g, b, &macs, &params, &nodes);
        role_macs[g->blocks[b].role] += macs;
        profile_row(f, g->blocks[b].name, ntc_role_name(g->blocks[b].role), nodes, macs, params,
                    total_macs, total_params);
    }
    block_cost(g, -1, &macs, &params, &nodes);
    if (nodes)
        profile_row(f, "(outside blocks)", "-", nodes, macs, params, total_macs, total_params);
    int all = 0;
    for (int i = 0; i < g->n_nodes; i++)
        all += !g->nodes[i].dead;
    profile_row(f, "total", "", all, total_macs, total_params, total_macs, total_params);
    fprintf(f, "MACs in universal blocks %.2f%%, in task blocks %.2f%%\n",
            share(role_macs[NTC_ROLE_UNIVERSAL], total_macs), share(role_macs[NTC_ROLE_TASK], total_macs));
    return 0;
}

static const ntc_pass flop_profile = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "flop-profile",
    .description = "print MACs and parameters per block with their share of the graph",
    .modes = NTC_PASS_ANY,
    .run = profile_run,
};

/* ---- drop-small-task-blocks ------------------------------------------------------ */

static bool in_block(const ntc_graph *g, int v, int b)
{
    int p = g->values[v].producer;
    return p >= 0 && g->nodes[p].block == b;
}

/* Inputs of node n that do not come from block b. */
static int kept_inputs(const ntc_graph *g, const ntc_node *n, int b)
{
    int k = 0;
    for (int j = 0; j < n->n_in; j++)
        k += !in_block(g, n->in[j], b);
    return k;
}

/* Whether every reader of block b's outputs outside b survives losing
 * them; *why says what stands in the way. */
static bool removable(const ntc_graph *g, int b, const char **why, const char **who)
{
    for (int i = 0; i < g->n_outputs; i++)
        if (in_block(g, g->outputs[i].value, b)) {
            *why = "its output is a graph output";
            *who = g->outputs[i].name;
            return false;
        }
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead || n->block == b || kept_inputs(g, n, b) == n->n_in)
            continue;
        int min = n->op == NTC_OP_mix ? 1 : n->op == NTC_OP_add ? 2 : -1;
        if (min < 0 || kept_inputs(g, n, b) < min) {
            *why = "a node needs its output";
            *who = n->name;
            return false;
        }
    }
    return true;
}

/* Drops the inputs of node `ni` that come from block b; a mix also drops
 * the matching entries of its alpha vector. */
static int detach(ntc_graph *g, int ni, int b, ntc_err *err)
{
    ntc_node *n = &g->nodes[ni];
    int *in = malloc(sizeof(int) * (size_t)n->n_in);
    float *alpha = malloc(sizeof(float) * (size_t)n->n_in);
    if (!in || !alpha) {
        free(in);
        free(alpha);
        return ntc_node_error(err, g, ni, "out of memory");
    }
    int a = n->op == NTC_OP_mix ? n->par[0] : -1;
    const float *old = a >= 0 ? g->values[a].data : NULL;
    int k = 0;
    for (int j = 0; j < n->n_in; j++)
        if (!in_block(g, n->in[j], b)) {
            if (old)
                alpha[k] = old[j];
            in[k++] = n->in[j];
        }
    int rc = ntc_node_set_inputs(g, ni, in, k) ? ntc_node_error(err, g, ni, "out of memory") : 0;
    if (rc == 0 && a >= 0) {
        g->values[a].shape.dims[0] = k;
        if (old) {
            float *data = ntc_param_data_alloc(g, a, err);
            if (data)
                memcpy(data, alpha, sizeof(float) * (size_t)k);
            else
                rc = -1;
        }
    }
    free(in);
    free(alpha);
    return rc;
}

static int drop_run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    double below;
    if (ntc_pass_opt_double(ctx, "below", 0.01, &below, err))
        return -1;
    if (below < 0 || below > 1)
        return ntc_error(err, NULL, 0, "option 'below' is a share of the graph's MACs in [0, 1], got %g", below);
    FILE *f = ntc_pass_out(ctx);
    int64_t total = 0, macs, params;
    int nodes;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead)
            total += ntc_node_macs(g, i);
    int changed = 0;
    for (int b = 0; b < g->n_blocks; b++) {
        if (g->blocks[b].dead || g->blocks[b].role != NTC_ROLE_TASK)
            continue;
        block_cost(g, b, &macs, &params, &nodes);
        if ((double)macs >= below * (double)total)
            continue;
        const char *why, *who;
        if (!removable(g, b, &why, &who)) {
            if (ntc_pass_verbosity(ctx) > 0)
                fprintf(f, "drop-small-task-blocks: keeping '%s' (%.2f%% of MACs): %s ('%s')\n",
                        g->blocks[b].name, share(macs, total), why, who);
            continue;
        }
        for (int i = 0; i < g->n_nodes; i++) {
            const ntc_node *n = &g->nodes[i];
            if (!n->dead && n->block != b && kept_inputs(g, n, b) < n->n_in && detach(g, i, b, err))
                return -1;
        }
        for (int i = 0; i < g->n_nodes; i++)
            if (!g->nodes[i].dead && g->nodes[i].block == b)
                ntc_graph_remove_node(g, i);
        g->blocks[b].dead = true;
        changed = 1;
        if (ntc_pass_verbosity(ctx) > 0)
            fprintf(f, "drop-small-task-blocks: dropped '%s' (%.2f%% of MACs)\n", g->blocks[b].name,
                    share(macs, total));
    }
    return changed;
}

static const ntc_pass_option drop_options[] = {
    {"below", "drop task blocks whose MACs are below this share of the graph's (default 0.01)"},
    {NULL, NULL},
};

static const ntc_pass drop_small_task_blocks = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "drop-small-task-blocks",
    .description = "remove task blocks with a small share of the MACs whose outputs only feed mix or add",
    .modes = NTC_PASS_ANY,
    .options = drop_options,
    .run = drop_run,
};

NTC_PASS_PLUGIN(&flop_profile, &drop_small_task_blocks);
