/* ntc run: feed .npy arrays to a graph and write its outputs as .npy,
 * through the interpreter or (--jit) native code compiled for this CPU. */
#include "driver.h"
#include "ntc/data.h"
#include "ntc/jit.h"
#include "ntc/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char run_help[] =
    "usage: ntc run GRAPH.xml --input X.npy [--input NAME=X.npy ...] -o Y.npy [OPTIONS]\n"
    "\n"
    "Runs the graph forward with the interpreter (or, with --jit, native code)\n"
    "on every item of the input arrays and writes the outputs as float32 .npy files.\n"
    "\n"
    "options:\n"
    "  --input [NAME=]X.npy  a float32 array [B, ...] for a graph input; without\n"
    "                     NAME the inputs are taken in the graph's order.  B, the\n"
    "                     batch, is any size; the other dimensions must match.\n"
    "  -o [NAME=]Y.npy    where an output goes (without NAME: the first output)\n"
    "  --batch B          items per forward pass (default: the whole array, at most 256)\n"
    "  --threads T        worker threads (default: one per CPU; not with --jit)\n"
    "  --jit              compile the graph for this CPU through LLVM first and run\n"
    "                     the native code (one input and one output; outputs equal\n"
    "                     the interpreter's up to float rounding)\n"
    "  --repeat R         run the forward R times (for timing; default 1)\n"
    "  --time             print the forward time per pass (and the JIT's compile\n"
    "                     time) on stderr\n"
    "\n"
    "Inputs must already be float32: run feeds arrays to the graph unchanged and\n"
    "does not guess a normalisation for raw uint8 pixels.  Convert them first\n"
    "(e.g. numpy: (x / 255).astype('float32')), or let `ntc eval --data`\n"
    "normalise a dataset.\n";

#define MAX_IO 16

typedef struct {
    const char *name;            /* NULL: positional; else not NUL-terminated */
    int name_len;
    const char *path;
} binding;

/* "NAME=PATH" or "PATH".  A '=' inside a path needs the NAME= form. */
static binding parse_binding(const char *s)
{
    const char *eq = strchr(s, '=');
    if (!eq)
        return (binding){NULL, 0, s};
    return (binding){s, (int)(eq - s), eq + 1};
}

static bool names(const binding *b, const char *name)
{
    return (int)strlen(name) == b->name_len && !strncmp(name, b->name, (size_t)b->name_len);
}

static int64_t item_numel(const ntc_graph *g, int v) { return ntc_shape_numel(&g->values[v].shape); }

/* Loads the arrays and matches them to the graph's inputs: arrays[i] feeds input i. */
static int load_inputs(const ntc_graph *g, const binding *in, int n_in, ntc_array *arrays, int64_t *batch)
{
    int next = 0;
    for (int k = 0; k < n_in; k++) {
        int slot = -1;
        if (in[k].name) {
            for (int i = 0; i < g->n_inputs; i++)
                if (names(&in[k], g->values[g->inputs[i]].name))
                    slot = i;
            if (slot < 0)
                return drv_usage("run", "the graph has no input '%.*s'", in[k].name_len, in[k].name);
        } else {
            while (next < g->n_inputs && arrays[next].data)
                next++;
            if (next >= g->n_inputs)
                return drv_usage("run", "more --input arrays than graph inputs (%d)", g->n_inputs);
            slot = next;
        }
        if (arrays[slot].data)
            return drv_usage("run", "input '%s' given twice", g->values[g->inputs[slot]].name);
        ntc_err err = {0};
        if (ntc_npy_read(in[k].path, &arrays[slot], &err))
            return drv_fail(&err);
        const ntc_array *a = &arrays[slot];
        const ntc_value *v = &g->values[g->inputs[slot]];
        if (a->dtype != NTC_DT_F32)
            return drv_failf("%s: input '%s' must be float32, the array is %s (run does not normalise raw "
                             "data; convert it, or use ntc eval --data)", in[k].path, v->name, ntc_dtype_name(a->dtype));
        bool ok = a->shape.rank == v->shape.rank && a->shape.rank >= 1 && a->shape.dims[0] >= 1;
        for (int d = 1; ok && d < v->shape.rank; d++)
            ok = a->shape.dims[d] == v->shape.dims[d];
        if (!ok) {
            char want[128], got[128];
            ntc_shape_format(&v->shape, want, sizeof want);
            ntc_shape_format(&a->shape, got, sizeof got);
            return drv_failf("%s: input '%s' has shape %s, the graph wants %s", in[k].path, v->name, got, want);
        }
        if (*batch >= 0 && a->shape.dims[0] != *batch)
            return drv_failf("%s: %lld items, another input has %lld", in[k].path,
                             (long long)a->shape.dims[0], (long long)*batch);
        *batch = a->shape.dims[0];
    }
    for (int i = 0; i < g->n_inputs; i++)
        if (!arrays[i].data)
            return drv_usage("run", "no --input for graph input '%s'", g->values[g->inputs[i]].name);
    return 0;
}

/* Output index for each -o binding. */
static int match_outputs(const ntc_graph *g, const binding *out, int n_out, int *which)
{
    if (g->n_outputs == 0)
        return drv_failf("the graph has no outputs");
    for (int k = 0; k < n_out; k++) {
        which[k] = out[k].name ? -1 : 0;
        for (int o = 0; out[k].name && o < g->n_outputs; o++)
            if (names(&out[k], g->outputs[o].name))
                which[k] = o;
        if (which[k] < 0)
            return drv_usage("run", "the graph has no output '%.*s'", out[k].name_len, out[k].name);
    }
    return 0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* What runs the graph: the interpreter (x) or the JIT's native code (j). */
typedef struct {
    ntc_exec *x;
    ntc_jit *j;
} engine;

/* Runs every chunk of `chunk` items, copying outputs into results. */
static int forward_all(const engine *e, const ntc_graph *g, const ntc_array *arrays, int64_t batch, int chunk,
                       float **results)
{
    const float *ptr[MAX_IO];
    for (int64_t at = 0; at < batch; at += chunk) {
        int n = (int)(batch - at < chunk ? batch - at : chunk);
        for (int i = 0; i < g->n_inputs; i++)
            ptr[i] = (const float *)arrays[i].data + at * item_numel(g, g->inputs[i]);
        ntc_err err = {0};
        if (e->j) {   /* one input, one output: the JIT writes straight into the result */
            if (ntc_jit_run(e->j, ptr[0], n, results[0] + at * item_numel(g, g->outputs[0].value), &err))
                return drv_fail(&err);
            continue;
        }
        if (ntc_exec_run(e->x, ptr, n, &err))
            return drv_fail(&err);
        for (int o = 0; o < g->n_outputs; o++) {
            int64_t per = item_numel(g, g->outputs[o].value);
            memcpy(results[o] + at * per, ntc_exec_output(e->x, o), sizeof(float) * (size_t)(per * n));
        }
    }
    return 0;
}

static int write_outputs(const ntc_graph *g, const binding *out, const int *which, int n_out, int64_t batch,
                         float **results)
{
    for (int k = 0; k < n_out; k++) {
        int o = which[k];
        ntc_array a = {NTC_DT_F32, g->values[g->outputs[o].value].shape, results[o]};
        a.shape.dims[0] = batch;
        ntc_err err = {0};
        if (ntc_npy_write(out[k].path, &a, &err))
            return drv_fail(&err);
    }
    return 0;
}

int cmd_run(int argc, char **argv)
{
    const char *graph = NULL;
    binding in[MAX_IO], out[MAX_IO];
    int n_in = 0, n_out = 0;
    long chunk = 0, threads = 0, repeat = 1;
    bool timing = false, jit = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(run_help, stdout);
            return 0;
        }
        bool has_value = !strcmp(a, "--input") || !strcmp(a, "-o") || !strcmp(a, "--batch") ||
                         !strcmp(a, "--threads") || !strcmp(a, "--repeat");
        if (has_value && i + 1 >= argc)
            return drv_usage("run", "%s needs a value", a);
        if (!strcmp(a, "--input") || !strcmp(a, "-o")) {
            bool is_in = a[1] == '-';
            if ((is_in ? n_in : n_out) == MAX_IO)
                return drv_usage("run", "at most %d %s", MAX_IO, a);
            binding b = parse_binding(argv[++i]);
            if (is_in)
                in[n_in++] = b;
            else
                out[n_out++] = b;
        } else if (!strcmp(a, "--batch")) {
            if (drv_parse_int("run", a, argv[++i], &chunk))
                return 2;
            if (chunk < 1)
                return drv_usage("run", "--batch must be >= 1");
        } else if (!strcmp(a, "--threads")) {
            if (drv_parse_int("run", a, argv[++i], &threads))
                return 2;
            if (threads < 1)
                return drv_usage("run", "--threads must be >= 1");
        } else if (!strcmp(a, "--repeat")) {
            if (drv_parse_int("run", a, argv[++i], &repeat))
                return 2;
            if (repeat < 1)
                return drv_usage("run", "--repeat must be >= 1");
        } else if (!strcmp(a, "--time")) {
            timing = true;
        } else if (!strcmp(a, "--jit")) {
            jit = true;
        } else if (a[0] == '-') {
            return drv_usage("run", "unknown option '%s'", a);
        } else if (graph) {
            return drv_usage("run", "more than one graph ('%s' and '%s')", graph, a);
        } else {
            graph = a;
        }
    }
    if (!graph)
        return drv_usage("run", "no graph given");
    if (!n_in)
        return drv_usage("run", "no --input given");
    if (!n_out)
        return drv_usage("run", "no -o given");
    if (jit && threads)
        return drv_usage("run", "--threads does not apply to --jit (the native code uses every CPU)");

    ntc_graph *g = drv_read_graph(graph);
    if (!g)
        return 1;
    int rc = 1;
    ntc_array arrays[MAX_IO] = {{0}};
    float *results[MAX_IO] = {0};
    int which[MAX_IO];
    engine e = {0};
    int64_t batch = -1;
    if (g->n_inputs > MAX_IO || g->n_outputs > MAX_IO) {
        drv_failf("%s: more than %d inputs or outputs", graph, MAX_IO);
        goto done;
    }
    if ((rc = load_inputs(g, in, n_in, arrays, &batch)) || (rc = match_outputs(g, out, n_out, which)))
        goto done;
    rc = 1;
    if (!chunk)
        chunk = batch < 256 ? batch : 256;
    if (chunk > batch)
        chunk = batch;
    ntc_err err = {0};
    double t0 = now();
    if (jit ? !(e.j = ntc_jit_compile(g, &err)) : !(e.x = ntc_exec_new_threads(g, (int)chunk, (int)threads, &err))) {
        drv_fail(&err);
        goto done;
    }
    if (jit && timing) {
        double ir, opt, emit;
        ntc_jit_times(e.j, &ir, &opt, &emit);
        fprintf(stderr, "ntc run: JIT compile %.3f ms (IR %.3f, optimise %.3f, machine code %.3f)\n",
                1e3 * (now() - t0), 1e3 * ir, 1e3 * opt, 1e3 * emit);
    }
    for (int o = 0; o < g->n_outputs; o++)
        if (!(results[o] = malloc(sizeof(float) * (size_t)(item_numel(g, g->outputs[o].value) * batch)))) {
            drv_failf("out of memory for %lld outputs", (long long)batch);
            goto done;
        }
    for (long r = 0; r < repeat; r++) {
        t0 = now();
        if (forward_all(&e, g, arrays, batch, (int)chunk, results))
            goto done;
        if (timing && jit)
            fprintf(stderr, "ntc run: %lld items in %.3f ms (batch %ld, JIT)\n", (long long)batch,
                    1e3 * (now() - t0), chunk);
        else if (timing)
            fprintf(stderr, "ntc run: %lld items in %.3f ms (batch %ld, %d threads)\n", (long long)batch,
                    1e3 * (now() - t0), chunk, ntc_exec_threads(e.x));
    }
    rc = write_outputs(g, out, which, n_out, batch, results);
done:
    for (int i = 0; i < MAX_IO; i++) {
        ntc_array_free(&arrays[i]);
        free(results[i]);
    }
    ntc_jit_free(e.j);   /* before the graph it borrows */
    ntc_exec_free(e.x);
    ntc_graph_free(g);
    return rc;
}
