/* libFuzzer target: the safetensors weights reader (ntc_weights_load).
 *
 * The input is a weights file for a small fixed graph whose parameters
 * cover ranks 1 to 4 (conv2d, batchnorm and linear weights).  Any input
 * must load or fail with a message.  After a load every float of every
 * parameter is read, so a tensor bound past the end of the data shows up
 * under ASan (heap copies) or as a fault (mapped data).
 */
#include "fuzz_util.h"

#include "ntc/ir.h"

static const char graph_xml[] =
    "<graph name=\"fz\" ir-version=\"1\">\n"
    "  <input name=\"x\" shape=\"N,1,4,4\"/>\n"
    "  <node op=\"conv2d\" name=\"c\" in=\"x\" filters=\"2\" kernel=\"3\" pad=\"1\"/>\n"
    "  <node op=\"batchnorm\" name=\"b\" in=\"c\"/>\n"
    "  <node op=\"flatten\" name=\"f\" in=\"b\"/>\n"
    "  <node op=\"linear\" name=\"a\" in=\"f\" units=\"3\" bias=\"a.bias\"/>\n"
    "  <output name=\"y\" from=\"a\"/>\n"
    "</graph>\n";

static ntc_graph *graph;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    ntc_err err = {0};
    const char *path = fuzz_write("graph.xml", (const uint8_t *)graph_xml, sizeof graph_xml - 1);
    if (!(graph = ntc_graph_read_xml_opts(path, true, &err))) {
        fprintf(stderr, "fuzz_safetensors: %s\n", ntc_err_str(&err));
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ntc_graph *g = ntc_graph_clone(graph);
    if (!g)
        return 0;
    const char *path = fuzz_write("w.safetensors", data, size);
    ntc_err err = {0};
    if (ntc_weights_load(g, path, &err) == 0) {
        volatile float sink = 0;
        for (int v = 0; v < g->n_values; v++)
            if (g->values[v].data)
                for (int64_t i = 0; i < ntc_shape_numel(&g->values[v].shape); i++)
                    sink += g->values[v].data[i];
        (void)sink;
    } else {
        fuzz_check_err(&err);
    }
    ntc_graph_free(g);
    return 0;
}
