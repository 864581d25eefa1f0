/* dce: dead-code elimination.
 *
 * A node is live when its output reaches a graph output through node
 * inputs.  Everything else goes: dead nodes with their outputs, parameters
 * no live node reads, blocks left without a live node.  Graph inputs stay
 * even when unused: they are the graph's interface.  The graph is then
 * compacted, so handles change.
 *
 * Linear in the size of the graph: one backward walk from the outputs,
 * one sweep over the nodes and one over the parameters. */
#include "ntc/pass.h"

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)ctx;
    bool *live = ntc_calloc((size_t)g->n_nodes + 1, sizeof *live);
    int *stack = ntc_malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
    int *param_uses = ntc_calloc((size_t)g->n_values + 1, sizeof(int));
    int *block_nodes = ntc_calloc((size_t)g->n_blocks + 1, sizeof(int));
    if (!live || !stack || !param_uses || !block_nodes) {
        ntc_free(live);
        ntc_free(stack);
        ntc_free(param_uses);
        ntc_free(block_nodes);
        return ntc_error(err, g->path, 0, "out of memory");
    }

    int top = 0;
    for (int i = 0; i < g->n_outputs; i++) {
        int p = g->values[g->outputs[i].value].producer;
        if (p >= 0 && !g->nodes[p].dead && !live[p]) {
            live[p] = true;
            stack[top++] = p;
        }
    }
    while (top > 0) {
        const ntc_node *n = &g->nodes[stack[--top]];
        for (int j = 0; j < n->n_in; j++) {
            int p = g->values[n->in[j]].producer;
            if (p >= 0 && !g->nodes[p].dead && !live[p]) {
                live[p] = true;
                stack[top++] = p;
            }
        }
    }

    int changed = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        if (!live[i]) {
            n->dead = true;
            g->values[n->out].dead = true;
            changed = 1;
            continue;
        }
        for (int j = 0; j < NTC_MAX_PARAMS; j++)
            if (n->par[j] >= 0)
                param_uses[n->par[j]]++;
        if (n->block >= 0)
            block_nodes[n->block]++;
    }
    for (int v = 0; v < g->n_values; v++)
        if (!g->values[v].dead && g->values[v].kind == NTC_VAL_PARAM && !param_uses[v]) {
            g->values[v].dead = true;
            changed = 1;
        }
    for (int b = 0; b < g->n_blocks; b++)
        if (!g->blocks[b].dead && !block_nodes[b]) {
            g->blocks[b].dead = true;
            changed = 1;
        }

    ntc_free(live);
    ntc_free(stack);
    ntc_free(param_uses);
    ntc_free(block_nodes);
    /* Compacting also reclaims what earlier passes only marked dead. */
    ntc_graph_compact(g);
    return changed;
}

const ntc_pass ntc_pass_dce = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "dce",
    .description = "remove nodes whose outputs reach no graph output, then unused parameters and empty blocks",
    .modes = NTC_PASS_ANY,
    .fixed_point = false,
    .run = run,
};
