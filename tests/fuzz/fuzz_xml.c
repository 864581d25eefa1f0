/* libFuzzer target: the XML graph reader (ntc_graph_read_xml_opts).
 *
 * Any input must either load as a verified graph or fail with a message;
 * ASan/UBSan catch the rest.  A graph that loads must also survive a round
 * trip: the writer's text reads back, and writing that graph again gives
 * the same text (the writer is canonical).  Weights are not loaded: the
 * safetensors reader has its own target, and a fuzzed weights="..." must
 * not make the result depend on the files of the machine.
 */
#include "fuzz_util.h"

#include "ntc/ir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

static void round_trip(const ntc_graph *g)
{
    size_t len;
    char *text = ntc_graph_to_xml(g, &len);
    if (!text)
        return;                          /* out of memory under the cap */
    const char *path = fuzz_write("again.xml", (const uint8_t *)text, len);
    ntc_err err = {0};
    ntc_graph *again = ntc_graph_read_xml_opts(path, true, &err);
    if (!again) {
        fprintf(stderr, "the writer's output does not read back: %s\n%s\n", ntc_err_str(&err), text);
        abort();
    }
    size_t len2;
    char *text2 = ntc_graph_to_xml(again, &len2);
    if (text2 && (len2 != len || memcmp(text, text2, len))) {
        fprintf(stderr, "writing a re-read graph changed the text:\n%s\n---\n%s\n", text, text2);
        abort();
    }
    ntc_free(text2);
    ntc_graph_free(again);
    ntc_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("graph.xml", data, size);
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml_opts(path, true, &err);
    if (!g) {
        fuzz_check_err(&err);
        return 0;
    }
    round_trip(g);
    ntc_graph_free(g);
    return 0;
}
