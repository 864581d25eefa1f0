/* ntc import: read an ONNX model and write it as OUT.xml + OUT.safetensors. */
#include "driver.h"
#include "ntc/frontends.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char import_help[] =
    "usage: ntc import MODEL.onnx -o OUT.xml\n"
    "\n"
    "Imports an ONNX model (opsets 9 to 17) with its weights: writes the graph\n"
    "to OUT.xml and the weights to OUT.safetensors, then prints a summary.\n"
    "\n"
    "Residual blocks become universal blocks (shared by every task), the nodes\n"
    "before the first one the universal block 'stem', and the classifier\n"
    "(pooling, flatten, last Gemm/MatMul) the task block 'head', so\n"
    "`ntc tailor OUT.xml` works on the result.  docs/onnx.md lists the\n"
    "supported operators and attributes; anything else is refused with the\n"
    "node, its operator and the opset.\n"
    "\n"
    "example:\n"
    "  ntc import resnet.onnx -o backbone.xml\n"
    "  ntc run backbone.xml --input x.npy -o y.npy\n";

static void print_summary(const ntc_graph *g, const char *out, const char *weights)
{
    int64_t params = 0, macs = 0;
    int nodes = 0, universal = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        params += ntc_node_params(g, i);
        macs += ntc_node_macs(g, i);
        nodes += !g->nodes[i].dead;
    }
    printf("wrote %s and %s\n", out, weights);
    const char *opset = ntc_graph_get_meta(g, "onnx.opset");
    printf("%s: opset %s, %d input(s), %d output(s)\n", g->name, opset ? opset : "?", g->n_inputs, g->n_outputs);
    for (int i = 0; i < g->n_inputs; i++) {
        char s[128];
        ntc_shape_format(&g->values[g->inputs[i]].shape, s, sizeof s);
        printf("  input  %s [%s]\n", g->values[g->inputs[i]].name, s);
    }
    for (int i = 0; i < g->n_outputs; i++) {
        char s[128];
        ntc_shape_format(&g->values[g->outputs[i].value].shape, s, sizeof s);
        printf("  output %s [%s]\n", g->outputs[i].name, s);
    }
    printf("blocks:");
    for (int b = 0; b < g->n_blocks; b++) {
        universal += g->blocks[b].role == NTC_ROLE_UNIVERSAL;
        printf(" %s (%s)", g->blocks[b].name, ntc_role_name(g->blocks[b].role));
    }
    printf("\n");
    char p[32], m[32];
    printf("%d nodes, %d blocks (%d universal), %s parameters, %s MACs per item\n", nodes, g->n_blocks, universal,
           drv_grouped(params, p), drv_grouped(macs, m));
}

int cmd_import(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(import_help, stdout);
            return 0;
        }
        if (!strcmp(a, "-o")) {
            if (i + 1 >= argc)
                return drv_usage("import", "-o needs a value");
            out = argv[++i];
        } else if (a[0] == '-') {
            return drv_usage("import", "unknown option '%s'", a);
        } else if (in) {
            return drv_usage("import", "more than one model ('%s' and '%s')", in, a);
        } else {
            in = a;
        }
    }
    if (!in)
        return drv_usage("import", "no model given (ntc import MODEL.onnx -o OUT.xml)");
    if (!out)
        return drv_usage("import", "no output file: give -o OUT.xml");
    char *weights = drv_weights_name(out);
    if (!weights)
        return drv_failf("out of memory");
    if (!strcmp(weights, out)) {
        free(weights);
        return drv_usage("import", "-o %s would be both the graph and its weights file; name the graph .xml", out);
    }
    ntc_err err = {0};
    ntc_graph *g = ntc_onnx_import(in, &err);
    int rc = !g ? drv_fail(&err) : ntc_graph_write_xml(g, out, weights, &err) ? drv_fail(&err) : 0;
    if (rc == 0)
        print_summary(g, out, weights);
    ntc_graph_free(g);
    free(weights);
    return rc;
}
