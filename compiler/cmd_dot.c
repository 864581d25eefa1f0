/* ntc dot: the graph as a Graphviz digraph.
 *
 * One cluster per block (universal and task blocks in different colours,
 * frozen blocks drawn with a heavy border and marked in the label); nodes
 * show their op and output shape, parameters are left out; graph inputs
 * and outputs are drawn as distinct shapes.  Node ids are positional
 * (i<k> inputs, n<k> nodes, o<k> outputs) so any name is safe; names go to
 * the tooltip. */
#include "driver.h"
#include "ntc/nettailor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char dot_help[] =
    "usage: ntc dot GRAPH.xml [-o OUT.dot]\n"
    "\n"
    "Writes the graph in Graphviz's DOT language (to stdout, or atomically to\n"
    "OUT.dot): one box per block, universal blocks blue, task blocks orange,\n"
    "frozen blocks with a heavy border; each node shows its op and output shape.\n"
    "Branches that NetTailor's prune pass removed are drawn greyed and dashed.\n"
    "The weights file is not read.  Render with: dot -Tsvg OUT.dot -o OUT.svg\n"
    "\n"
    "options:\n"
    "  -o OUT.dot   output file (default: stdout)\n";

#define UNIVERSAL_FILL "#dbe9f6"
#define UNIVERSAL_LINE "#3d6fa3"
#define TASK_FILL "#fde3c3"
#define TASK_LINE "#c07020"
#define OTHER_FILL "#eeeeee"
#define OTHER_LINE "#777777"

/* Text inside a DOT double-quoted string. */
static void dot_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
}

static void dot_string(FILE *f, const char *s)
{
    fputc('"', f);
    dot_escaped(f, s);
    fputc('"', f);
}

/* label="<top>\n<shape>": two centred lines. */
static void dot_label(FILE *f, const char *top, const ntc_shape *shape)
{
    char sh[128];
    ntc_shape_format(shape, sh, sizeof sh);
    fputs("label=\"", f);
    dot_escaped(f, top);
    fprintf(f, "\\n%s\"", sh);
}

static void emit_node(FILE *f, const ntc_graph *g, int i, const char *indent)
{
    const ntc_node *n = &g->nodes[i];
    fprintf(f, "%sn%d [", indent, i);
    dot_label(f, ntc_op_name(n->op), &g->values[n->out].shape);
    fputs(", tooltip=", f);
    dot_string(f, n->name);
    fputs("];\n", f);
}

static void emit_block(FILE *f, const ntc_graph *g, int b)
{
    const ntc_block *blk = &g->blocks[b];
    const char *fill = blk->role == NTC_ROLE_UNIVERSAL ? UNIVERSAL_FILL : blk->role == NTC_ROLE_TASK ? TASK_FILL : OTHER_FILL;
    const char *line = blk->role == NTC_ROLE_UNIVERSAL ? UNIVERSAL_LINE : blk->role == NTC_ROLE_TASK ? TASK_LINE : OTHER_LINE;
    char label[512];
    snprintf(label, sizeof label, "%s (%s%s)", blk->name, ntc_role_name(blk->role), blk->frozen ? ", frozen" : "");
    fprintf(f, "  subgraph cluster_%d {\n    label=", b);
    dot_string(f, label);
    fprintf(f, ";\n    style=filled; fillcolor=\"%s\"; color=\"%s\"; penwidth=%d;\n", fill, line, blk->frozen ? 3 : 1);
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].block == b)
            emit_node(f, g, i, "    ");
    fputs("  }\n", f);
}

/* The id of whatever produces value v: a node or a graph input. */
static void emit_source(FILE *f, const ntc_graph *g, int v)
{
    if (g->values[v].producer >= 0) {
        fprintf(f, "n%d", g->values[v].producer);
        return;
    }
    for (int k = 0; k < g->n_inputs; k++)
        if (g->inputs[k] == v)
            fprintf(f, "i%d", k);
}

/* Branches the prune pass removed (recorded in the metadata as
 * "layer=L reads=V role=R alpha=A ..."): a grey dashed box, with dashed
 * edges from what it read and into its layer's mix when those remain. */
static void emit_pruned(FILE *f, const ntc_graph *g)
{
    size_t plen = strlen(NTC_META_PRUNED);
    for (int i = 0; i < g->n_meta; i++) {
        const ntc_meta *m = &g->meta[i];
        char layer[256], reads[256], role[32];
        double alpha;
        if (strncmp(m->key, NTC_META_PRUNED, plen) ||
            sscanf(m->value, "layer=%255s reads=%255s role=%31s alpha=%lf", layer, reads, role, &alpha) != 4)
            continue;
        fprintf(f, "  p%d [label=\"", i);
        dot_escaped(f, m->key + plen);
        fprintf(f, "\\n%s, removed (alpha %.3f)", role, alpha);
        fputs("\", style=\"dashed,rounded,filled\", fillcolor=\"#f4f4f4\", color=\"#bbbbbb\", "
              "fontcolor=\"#999999\"];\n", f);
        int src = ntc_graph_find_value(g, reads);
        if (src >= 0) {
            fputs("  ", f);
            emit_source(f, g, src);
            fprintf(f, " -> p%d [style=dashed, color=\"#bbbbbb\"];\n", i);
        }
        char mix[300];
        snprintf(mix, sizeof mix, "%s.mix", layer);
        int n = ntc_graph_find_node(g, mix);
        if (n >= 0)
            fprintf(f, "  p%d -> n%d [style=dashed, color=\"#bbbbbb\"];\n", i, n);
    }
}

static void emit_graph(FILE *f, const ntc_graph *g)
{
    fputs("digraph ", f);
    dot_string(f, g->name);
    fputs(" {\n"
          "  rankdir=TB;\n"
          "  fontname=\"Helvetica\"; fontsize=11;\n"
          "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\", fontsize=10];\n"
          "  edge [color=\"#555555\"];\n",
          f);
    for (int k = 0; k < g->n_inputs; k++) {
        const ntc_value *v = &g->values[g->inputs[k]];
        fprintf(f, "  i%d [shape=invhouse, style=filled, fillcolor=\"#d8f0d8\", ", k);
        dot_label(f, v->name, &v->shape);
        fputs("];\n", f);
    }
    for (int b = 0; b < g->n_blocks; b++)
        if (!g->blocks[b].dead)
            emit_block(f, g, b);
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].block < 0)
            emit_node(f, g, i, "  ");
    for (int k = 0; k < g->n_outputs; k++) {
        fprintf(f, "  o%d [shape=house, style=filled, fillcolor=\"#f0d8d8\", ", k);
        dot_label(f, g->outputs[k].name, &g->values[g->outputs[k].value].shape);
        fputs("];\n", f);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < n->n_in; j++) {
            fputs("  ", f);
            emit_source(f, g, n->in[j]);
            fprintf(f, " -> n%d;\n", i);
        }
    }
    for (int k = 0; k < g->n_outputs; k++) {
        fputs("  ", f);
        emit_source(f, g, g->outputs[k].value);
        fprintf(f, " -> o%d;\n", k);
    }
    emit_pruned(f, g);
    fputs("}\n", f);
}

int cmd_dot(int argc, char **argv)
{
    const char *path = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(dot_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "-o")) {
            if (i + 1 >= argc)
                return drv_usage("dot", "-o needs a file name");
            out = argv[++i];
        } else if (argv[i][0] == '-') {
            return drv_usage("dot", "unknown option '%s'", argv[i]);
        } else if (path) {
            return drv_usage("dot", "one graph at a time ('%s' and '%s')", path, argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path)
        return drv_usage("dot", "no graph given");
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml_opts(path, true, &err);
    if (!g)
        return drv_fail(&err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        ntc_graph_free(g);
        return drv_failf("out of memory");
    }
    emit_graph(f, g);
    ntc_graph_free(g);
    int rc = fclose(f) ? drv_failf("out of memory") : 0;
    if (rc == 0 && out)
        rc = ntc_write_file_atomic(out, text, len, &err) ? drv_fail(&err) : 0;
    else if (rc == 0 && fwrite(text, 1, len, stdout) != len)
        rc = drv_failf("cannot write to stdout");
    free(text);
    return rc;
}
