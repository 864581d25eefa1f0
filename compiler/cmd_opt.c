/* ntc opt: runs a pipeline of passes (built in or from plugins) over a graph. */
#include "driver.h"
#include "ntc/pass.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: ntc opt GRAPH.xml --passes=PIPELINE [options] [-o OUT.xml]\n"
    "       ntc opt --list-passes [--load-pass PLUGIN.so]...\n"
    "\n"
    "Runs the passes of PIPELINE in order over the graph and writes the result to\n"
    "OUT.xml and its weights to OUT.safetensors.  Without -o nothing is written: the\n"
    "pipeline runs and is verified (useful for analysis passes such as flop-profile).\n"
    "\n"
    "PIPELINE is NAME[:KEY=VALUE]... separated by commas, e.g.\n"
    "  --passes=drop-small-task-blocks:below=0.02,dce\n"
    "\n"
    "  --passes=PIPELINE    the passes to run\n"
    "  --load-pass FILE     load the passes of a plugin (repeatable; see docs/passes.md)\n"
    "  --list-passes        list the known passes, their modes and options, and exit\n"
    "  --mode=MODE          what the graph is for: inference (default) or training;\n"
    "                       passes that do not apply to it are refused\n"
    "  --verify-each        verify the graph after every pass (default in debug builds)\n"
    "  --no-verify-each     verify only at the end\n"
    "  --time-passes        print each pass's wall time on stderr\n"
    "  --dump-after=P|all   after pass P (or every pass) write OUT.after-NN-P.xml and\n"
    "                       its .safetensors (next to OUT, or to the input without -o)\n"
    "  -o OUT.xml           where to write the result\n"
    "  -v                   more detail from passes that report (repeatable)\n";

/* The value of option `name` given as "name=VALUE" or "name VALUE";
 * NULL when argv[*i] is another option.  Advances *i past a separate value. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    *missing = false;
    if (strncmp(a, name, n))
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n])
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

static const char *modes_name(unsigned modes)
{
    switch (modes) {
    case NTC_PASS_TRAINING: return "training";
    case NTC_PASS_INFERENCE: return "inference";
    default: return "training,inference";
    }
}

static void list_passes(const ntc_pass_registry *r)
{
    int width = 4, opt_width = 0;
    for (int i = 0; i < ntc_pass_count(r); i++) {
        const ntc_pass *p = ntc_pass_at(r, i, NULL);
        int n = (int)strlen(p->name);
        width = n > width ? n : width;
        for (const ntc_pass_option *o = p->options; o && o->name; o++) {
            n = (int)strlen(o->name);
            opt_width = n > opt_width ? n : opt_width;
        }
    }
    const char *shown = "";
    for (int i = 0; i < ntc_pass_count(r); i++) {
        const char *origin;
        const ntc_pass *p = ntc_pass_at(r, i, &origin);
        const char *from = origin ? origin : "";
        if (i == 0 || strcmp(from, shown)) {
            if (origin)
                printf("%spasses from %s:\n", i ? "\n" : "", origin);
            else
                printf("built-in passes:\n");
            shown = from;
        }
        printf("  %-*s  %-18s  %s%s\n", width, p->name, modes_name(p->modes), p->description,
               p->fixed_point ? " (runs to a fixed point)" : "");
        for (const ntc_pass_option *o = p->options; o && o->name; o++)
            printf("  %*s  :%-*s  %s\n", width, "", opt_width + 2, o->name, o->help ? o->help : "");
    }
}

/* "out.xml" -> "out": the stem dumps are named after. */
static char *strip_xml(const char *path)
{
    size_t n = strlen(path);
    if (n > 4 && !strcmp(path + n - 4, ".xml"))
        n -= 4;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, path, n);
        s[n] = 0;
    }
    return s;
}

typedef struct {
    const char *input, *output, *passes, *dump_after;
    const char **plugins;
    int n_plugins;
    bool list, time_passes;
    ntc_pipeline_opts run;
} opt_args;

/* Parses the command line into a; returns 0, or the exit status. */
static int parse_args(int argc, char **argv, opt_args *a)
{
    ntc_pipeline_opts_default(&a->run);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v;
        bool missing = false;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            fputs(usage_text, stdout);
            return -1;
        } else if ((v = opt_value(argc, argv, &i, "--passes", &missing))) {
            a->passes = v;
        } else if (!missing && (v = opt_value(argc, argv, &i, "--load-pass", &missing))) {
            a->plugins[a->n_plugins++] = v;
        } else if (!missing && (v = opt_value(argc, argv, &i, "--dump-after", &missing))) {
            a->run.dump_after = v;
        } else if (!missing && (v = opt_value(argc, argv, &i, "--mode", &missing))) {
            if (!strcmp(v, "inference"))
                a->run.mode = NTC_PASS_INFERENCE;
            else if (!strcmp(v, "training"))
                a->run.mode = NTC_PASS_TRAINING;
            else
                return drv_usage("opt", "--mode is 'inference' or 'training', not '%s'", v);
        } else if (!missing && (v = opt_value(argc, argv, &i, "-o", &missing))) {
            a->output = v;
        } else if (missing) {
            return drv_usage("opt", "%s needs a value", arg);
        } else if (!strcmp(arg, "--list-passes")) {
            a->list = true;
        } else if (!strcmp(arg, "--verify-each")) {
            a->run.verify_each = true;
        } else if (!strcmp(arg, "--no-verify-each")) {
            a->run.verify_each = false;
        } else if (!strcmp(arg, "--time-passes")) {
            a->time_passes = true;
        } else if (!strcmp(arg, "-v")) {
            a->run.verbosity++;
        } else if (arg[0] == '-' && arg[1]) {
            return drv_usage("opt", "unknown option '%s'", arg);
        } else if (a->input) {
            return drv_usage("opt", "more than one graph given ('%s' and '%s')", a->input, arg);
        } else {
            a->input = arg;
        }
    }
    if (a->list)
        return 0;
    if (!a->input)
        return drv_usage("opt", "no graph given");
    if (!a->passes)
        return drv_usage("opt", "no --passes given");
    return 0;
}

/* Loads the graph, runs the pipeline, writes the result. */
static int optimise(const ntc_pass_registry *r, opt_args *a)
{
    ntc_err err = {0};
    ntc_pipeline *p = ntc_pipeline_parse(r, a->passes, &err);
    if (!p)
        return drv_usage("opt", "--passes: %s", err.msg);
    int status = 1;
    char *prefix = strip_xml(a->output ? a->output : a->input);
    char *weights = a->output ? drv_weights_name(a->output) : NULL;
    ntc_graph *g = drv_read_graph(a->input);
    if (!g || !prefix || (a->output && !weights))
        goto done;
    a->run.dump_prefix = prefix;
    int rc = ntc_pipeline_run(p, g, &a->run, &err);
    if (a->time_passes)
        ntc_pipeline_print_times(p, stderr);
    if (rc) {
        drv_fail(&err);
        goto done;
    }
    if (a->output && ntc_graph_write_xml(g, a->output, weights, &err)) {
        drv_fail(&err);
        goto done;
    }
    status = 0;
done:
    ntc_graph_free(g);
    ntc_pipeline_free(p);
    free(prefix);
    free(weights);
    return status;
}

int cmd_opt(int argc, char **argv)
{
    opt_args a = {0};
    a.plugins = calloc((size_t)argc, sizeof *a.plugins);
    if (!a.plugins)
        return drv_failf("out of memory");
    int status = parse_args(argc, argv, &a);
    if (status) {
        free(a.plugins);
        return status < 0 ? 0 : status;
    }
    ntc_err err = {0};
    ntc_pass_registry *r = ntc_pass_registry_new(&err);
    if (!r) {
        free(a.plugins);
        return drv_fail(&err);
    }
    for (int i = 0; i < a.n_plugins && status == 0; i++)
        if (ntc_pass_load_plugin(r, a.plugins[i], &err) < 0)
            status = drv_fail(&err);
    if (status == 0) {
        if (a.list)
            list_passes(r);
        else
            status = optimise(r, &a);
    }
    ntc_pass_registry_free(r);
    free(a.plugins);
    return status;
}
