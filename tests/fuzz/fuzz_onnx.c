/* libFuzzer target: the ONNX importer (ntc_onnx_import_buffer).
 *
 * Any input must import as a verified graph or fail with a message.  An
 * imported graph must also be expressible in the XML IR: its XML reads
 * back (weights aside, which the safetensors target covers) and writes
 * the same text again.
 */
#include "fuzz_util.h"

#include "ntc/frontends.h"
#include "ntc/ir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

static void through_xml(const ntc_graph *g)
{
    size_t len;
    char *text = ntc_graph_to_xml(g, &len);
    if (!text)
        return;                          /* out of memory under the cap */
    const char *path = fuzz_write("imported.xml", (const uint8_t *)text, len);
    ntc_err err = {0};
    ntc_graph *again = ntc_graph_read_xml_opts(path, true, &err);
    if (!again) {
        fprintf(stderr, "an imported graph's XML does not read back: %s\n%s\n", ntc_err_str(&err), text);
        abort();
    }
    size_t len2;
    char *text2 = ntc_graph_to_xml(again, &len2);
    if (text2 && (len2 != len || memcmp(text, text2, len))) {
        fprintf(stderr, "an imported graph's XML changed on a round trip:\n%s\n---\n%s\n", text, text2);
        abort();
    }
    ntc_free(text2);
    ntc_graph_free(again);
    ntc_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_onnx_import_buffer(data, size, "fuzz.onnx", &err);
    if (!g) {
        fuzz_check_err(&err);
        return 0;
    }
    through_xml(g);
    ntc_graph_free(g);
    return 0;
}
