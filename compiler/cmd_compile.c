/* ntc compile: a graph to a shared object with a C header (ntc/jit.h,
 * ntc_aot_compile). */
#include "driver.h"
#include "ntc/jit.h"

#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "usage: ntc compile GRAPH.xml -o TASK.so [options]\n"
    "\n"
    "Compiles the graph for this machine's CPU into TASK.so and writes TASK.h (the\n"
    "entry points TASK_create/TASK_run/TASK_destroy and the input and output\n"
    "shapes) and TASK.weights (the task's own parameters).  Parameters of universal\n"
    "blocks go to one shared universal weights file instead, which every task\n"
    "compiled against it reads (mapped read-only, so its pages are shared); tensors\n"
    "it lacks are appended, never moved.  A task checks at load time that the\n"
    "universal file still holds what it was compiled with.\n"
    "\n"
    "  -o TASK.so                 the shared object to write (required)\n"
    "  --universal-weights FILE   the shared universal weights file\n"
    "                             (default: universal.weights next to TASK.so)\n"
    "  --cc CC                    C compiler used to link (default: $CC or cc)\n"
    "  --keep-temps               keep TASK.o and TASK.c next to TASK.so\n"
    "  --time                     print code generation times on stderr\n";

int cmd_compile(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    ntc_aot_opts o = {0};
    bool timing = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--universal-weights") || !strcmp(a, "--cc")) {
            if (i + 1 >= argc)
                return drv_usage("compile", "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "-o"))
                out = v;
            else if (!strcmp(a, "--cc"))
                o.cc = v;
            else
                o.universal_weights = v;
        } else if (!strncmp(a, "--universal-weights=", 20)) {
            o.universal_weights = a + 20;
        } else if (!strcmp(a, "--keep-temps")) {
            o.keep_temps = true;
        } else if (!strcmp(a, "--time")) {
            timing = true;
        } else if (a[0] == '-') {
            return drv_usage("compile", "unknown option '%s'", a);
        } else if (in) {
            return drv_usage("compile", "more than one graph given ('%s' and '%s')", in, a);
        } else {
            in = a;
        }
    }
    if (!in)
        return drv_usage("compile", "no graph given");
    if (!out)
        return drv_usage("compile", "no output given (-o TASK.so)");
    ntc_graph *g = drv_read_graph(in);
    if (!g)
        return 1;
    ntc_err err = {0};
    ntc_aot_times t = {0};
    o.times = &t;
    int rc = ntc_aot_compile(g, out, &o, &err);
    ntc_graph_free(g);
    if (rc)
        return drv_fail(&err);
    if (timing)
        fprintf(stderr, "codegen %.3f s, optimise %.3f s, machine code %.3f s, link %.3f s\n", t.ir, t.opt,
                t.emit, t.link);
    return 0;
}
