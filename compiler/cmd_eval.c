/* ntc eval: accuracy, mean cross-entropy loss and throughput of a
 * classifier graph on a labelled dataset. */
#include "driver.h"
#include "ntc/data.h"
#include "ntc/jit.h"
#include "ntc/runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char eval_help[] =
    "usage: ntc eval GRAPH.xml --data SOURCE [OPTIONS]\n"
    "\n"
    "Runs the graph (one image input [N,C,H,W], first output the logits [N,K])\n"
    "over a labelled dataset and prints the accuracy, the mean cross-entropy\n"
    "loss of softmax(logits) and the forward throughput in images/s.\n"
    "\n"
    "options:\n"
    "  --data SOURCE   fashion-mnist, digits, a folder of PNGs per class, or\n"
    "                  IMAGES,LABELS (two .npy or two IDX files)\n"
    "  --split S       train, val, test (default) or all\n"
    "  --val-size N    examples of train held out as val (default 0)\n"
    "  --batch B       images per forward pass (default 256)\n"
    "  --limit N       only the first N examples of the split\n"
    "  --threads T     worker threads (default: one per CPU; not with --jit)\n"
    "  --jit           compile the graph for this CPU through LLVM and evaluate the\n"
    "                  native code (the graph must have exactly one output)\n"
    "  --mean M --std S  normalisation x = (pixel/255 - M) / S for every channel\n"
    "                  (default: the dataset's documented one)\n"
    "  --resize        resample images to the graph's input size\n"
    "\n"
    "example:\n"
    "  ntc eval backbone.xml --data fashion-mnist --split test\n";

typedef struct {
    const char *graph;
    ntc_data_opts data;
    long batch, limit, threads;
    bool jit;
} eval_opts;

static int parse(int argc, char **argv, eval_opts *o)
{
    ntc_data_opts_default(&o->data);
    o->data.split = NTC_SPLIT_TEST;
    o->batch = 256;
    bool mean = false, std = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(eval_help, stdout);
            return -1;
        }
        if (!strcmp(a, "--resize") || !strcmp(a, "--jit")) {
            *(a[2] == 'r' ? &o->data.resize : &o->jit) = true;
            continue;
        }
        if (a[0] != '-') {
            if (o->graph)
                return drv_usage("eval", "more than one graph ('%s' and '%s')", o->graph, a);
            o->graph = a;
            continue;
        }
        if (i + 1 >= argc)
            return drv_usage("eval", "%s needs a value", a);
        const char *v = argv[++i];
        long n = 0;
        double f = 0;
        ntc_err err = {0};
        if (!strcmp(a, "--data")) {
            o->data.source = v;
        } else if (!strcmp(a, "--split")) {
            if (ntc_split_parse(v, &o->data.split, &err))
                return drv_usage("eval", "%s", err.msg);
        } else if (!strcmp(a, "--val-size") || !strcmp(a, "--batch") || !strcmp(a, "--limit") ||
                   !strcmp(a, "--threads")) {
            if (drv_parse_int("eval", a, v, &n))
                return 2;
            if (n < (strcmp(a, "--val-size") ? 1 : 0))
                return drv_usage("eval", "%s must be >= %d", a, strcmp(a, "--val-size") ? 1 : 0);
            if (!strcmp(a, "--val-size"))
                o->data.val_size = n;
            else
                *(!strcmp(a, "--batch") ? &o->batch : !strcmp(a, "--limit") ? &o->limit : &o->threads) = n;
        } else if (!strcmp(a, "--mean") || !strcmp(a, "--std")) {
            if (drv_parse_float("eval", a, v, &f))
                return 2;
            if (!strcmp(a, "--std") && !(f > 0))
                return drv_usage("eval", "--std must be > 0");
            o->data.n_norm = 1;
            if (!strcmp(a, "--mean"))
                o->data.mean[0] = (float)f, mean = true;
            else
                o->data.std[0] = (float)f, std = true;
        } else {
            return drv_usage("eval", "unknown option '%s'", a);
        }
    }
    if (!o->graph)
        return drv_usage("eval", "no graph given");
    if (!o->data.source)
        return drv_usage("eval", "no --data given");
    if (mean != std)
        return drv_usage("eval", "--mean and --std go together");
    if (o->jit && o->threads)
        return drv_usage("eval", "--threads does not apply to --jit (the native code uses every CPU)");
    return 0;
}

/* The graph's image input sets the dataset's shape; its first output must be [N,K]. */
static int conform(const ntc_graph *g, ntc_data_opts *d, int64_t *classes)
{
    if (g->n_inputs != 1)
        return drv_failf("%s: eval needs a graph with one input, it has %d", g->path, g->n_inputs);
    const ntc_shape *s = &g->values[g->inputs[0]].shape;
    if (s->rank != 4)
        return drv_failf("%s: eval needs an image input [N,C,H,W]", g->path);
    d->channels = (int)s->dims[1], d->height = (int)s->dims[2], d->width = (int)s->dims[3];
    if (g->n_outputs < 1 || g->values[g->outputs[0].value].shape.rank != 2)
        return drv_failf("%s: eval needs logits [N,K] as the first output", g->path);
    *classes = g->values[g->outputs[0].value].shape.dims[1];
    return 0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Adds -log softmax(z)[y] to *loss and 1 to *hits when argmax z == y. */
static void score(const float *z, int64_t k, int32_t y, double *loss, int64_t *hits)
{
    int64_t best = 0;
    for (int64_t j = 1; j < k; j++)
        best = z[j] > z[best] ? j : best;
    double sum = 0;
    for (int64_t j = 0; j < k; j++)
        sum += exp((double)z[j] - z[best]);
    *loss += log(sum) - ((double)z[y] - z[best]);
    *hits += best == y;
}

int cmd_eval(int argc, char **argv)
{
    eval_opts o = {0};
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    ntc_graph *g = drv_read_graph(o.graph);
    if (!g)
        return 1;
    ntc_err err = {0};
    ntc_dataset *ds = NULL;
    ntc_exec *x = NULL;
    ntc_jit *j = NULL;
    float *images = NULL, *jit_logits = NULL;
    int32_t *labels = NULL;
    int64_t *idx = NULL, classes = 0;
    rc = 1;
    if (conform(g, &o.data, &classes))
        goto done;
    if (!(ds = ntc_dataset_open(&o.data, &err))) {
        drv_fail(&err);
        goto done;
    }
    if (ds->n_classes > classes) {
        drv_failf("%s has %d classes, the graph's logits only %lld", ds->name, ds->n_classes, (long long)classes);
        goto done;
    }
    int64_t total = o.limit && o.limit < ds->n ? o.limit : ds->n;
    int batch = (int)(o.batch < total ? o.batch : total);
    if (total < 1) {
        drv_failf("%s is empty", ds->name);
        goto done;
    }
    if (o.jit ? !(j = ntc_jit_compile(g, &err)) : !(x = ntc_exec_new_threads(g, batch, (int)o.threads, &err))) {
        drv_fail(&err);
        goto done;
    }
    images = malloc(sizeof(float) * ntc_dataset_example_size(ds) * (size_t)batch);
    labels = malloc(sizeof(int32_t) * (size_t)batch);
    idx = malloc(sizeof(int64_t) * (size_t)batch);
    if (j)
        jit_logits = malloc(sizeof(float) * (size_t)classes * (size_t)batch);
    if (!images || !labels || !idx || (j && !jit_logits)) {
        drv_failf("out of memory for a batch of %d", batch);
        goto done;
    }
    bool progress = isatty(STDERR_FILENO);   /* a progress line on a terminal only */
    double loss = 0, busy = 0;
    int64_t hits = 0;
    for (int64_t at = 0; at < total; at += batch) {
        int n = (int)(total - at < batch ? total - at : batch);
        for (int i = 0; i < n; i++)
            idx[i] = at + i;
        ntc_dataset_fill(ds, idx, n, images, labels);
        const float *in[] = {images};
        double t0 = now();
        if (j ? ntc_jit_run(j, images, n, jit_logits, &err) : ntc_exec_run(x, in, n, &err)) {
            drv_fail(&err);
            goto done;
        }
        busy += now() - t0;
        const float *logits = j ? jit_logits : ntc_exec_output(x, 0);
        for (int i = 0; i < n; i++)
            score(logits + i * classes, classes, labels[i], &loss, &hits);
        if (progress)
            fprintf(stderr, "\r%lld/%lld images", (long long)(at + n), (long long)total);
    }
    if (progress)
        fputs("\r\033[K", stderr);
    printf("%s: %lld images\n", ds->name, (long long)total);
    printf("accuracy %.2f%%  loss %.4f  %.0f images/s (forward only, batch %d, ", 100.0 * (double)hits / (double)total,
           loss / (double)total, (double)total / busy, batch);
    if (j)
        printf("JIT)\n");
    else
        printf("%d threads)\n", ntc_exec_threads(x));
    rc = 0;
done:
    free(images);
    free(labels);
    free(idx);
    free(jit_logits);
    ntc_jit_free(j);   /* before the graph it borrows */
    ntc_exec_free(x);
    ntc_dataset_free(ds);
    ntc_graph_free(g);
    return rc;
}
