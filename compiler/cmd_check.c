/* ntc check: reads graphs (with their weights) and verifies them. */
#include "driver.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "usage: ntc check [--no-weights] GRAPH.xml...\n"
    "\n"
    "Reads each graph, its weights file unless --no-weights, infers shapes and\n"
    "verifies the result.  Prints 'ok' and a summary per graph and exits 0, or\n"
    "prints 'ntc: error: FILE:LINE: what' and exits 1.\n"
    "\n"
    "  --no-weights   check the XML alone; do not load the weights file\n";

static const char *plural(int64_t n) { return n == 1 ? "" : "s"; }

/* "ok: FILE: graph 'g', 12 nodes, 3456 parameters, 4 blocks, 1 input, 1 output" */
static void summary(const char *path, const ntc_graph *g)
{
    int nodes = 0, blocks = 0, inputs = 0;
    int64_t params = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead) {
            nodes++;
            params += ntc_node_params(g, i);
        }
    for (int i = 0; i < g->n_blocks; i++)
        blocks += !g->blocks[i].dead;
    for (int i = 0; i < g->n_inputs; i++)
        inputs += !g->values[g->inputs[i]].dead;
    printf("ok: %s: graph '%s', %d node%s, %" PRId64 " parameter%s, %d block%s, %d input%s, %d output%s\n",
           path, g->name, nodes, plural(nodes), params, plural(params), blocks, plural(blocks), inputs,
           plural(inputs), g->n_outputs, plural(g->n_outputs));
}

int cmd_check(int argc, char **argv)
{
    bool no_weights = false;
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (!strcmp(argv[first], "--help") || !strcmp(argv[first], "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(argv[first], "--no-weights"))
            no_weights = true;
        else if (!strcmp(argv[first], "--")) {
            first++;
            break;
        } else
            return drv_usage("check", "unknown option '%s'", argv[first]);
    }
    if (first == argc)
        return drv_usage("check", "no graph given");
    int status = 0;
    for (int i = first; i < argc; i++) {
        ntc_err err = {0};
        ntc_graph *g = ntc_graph_read_xml_opts(argv[i], no_weights, &err);
        if (!g) {
            status = drv_fail(&err);
            continue;
        }
        summary(argv[i], g);
        fflush(stdout);    /* keep "ok" and error lines in order when both go to one pipe */
        ntc_graph_free(g);
    }
    return status;
}
