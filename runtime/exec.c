/* The executor: runs a planned graph forward on a batch.
 *
 * Threading (see ntc/runtime.h): thread t of T runs the whole schedule on
 * its contiguous slice of the batch, in its own arena and workspace, so no
 * two threads ever write the same bytes and no barrier is needed between
 * nodes.  Where a value lives for thread t:
 *   graph input   the caller's array, at the slice's first item
 *   graph output  the executor's output buffer [max_batch, ...], at the slice
 *   intermediate  arena[t] + offset * chunk, laid out [chunk, ...]
 * A thread walks its slice in chunks of at most `chunk` items, running the
 * whole schedule on each, so that a chunk's live activations stay in the
 * core's cache (the whole slice's would not: 128 items of a 28x28
 * ResNet-20 are 19 MB).
 * OpenBLAS is pinned to one thread for the same reason.  A batch smaller
 * than the pool runs as one slice whose convolutions share out their rows
 * (kern_conv.c). */
#include "ntc/runtime.h"
#include "kernels.h"
#include "pool.h"

#include <cblas.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

struct ntc_exec {
    ntc_graph *g;
    ntc_plan *plan;
    ntc_pool *pool;
    int max_batch, threads;
    int chunk;                   /* items per pass through the schedule */
    int slices;                  /* most slices a batch is cut into: min(threads, max_batch) */
    int64_t work_floats;         /* largest workspace any node needs */
    int max_in;                  /* most inputs of any node */
    float **arena, **work;       /* per thread */
    int *input_of;               /* per value: graph input index or -1 */
    int *output_of;              /* per value: output buffer index or -1 */
    float **outbuf;              /* per graph output */
    /* The current run, read by the threads. */
    const float *const *inputs;
    int batch, ran_batch;
};

typedef struct {
    ntc_exec *x;
    int ntasks;
} run_ctx;

static int64_t numel(const ntc_exec *x, int v) { return ntc_shape_numel(&x->g->values[v].shape); }

/* Address of value v's first item of the slice [b0, ...) on thread t. */
static float *locate(const ntc_exec *x, int v, int t, int b0)
{
    if (x->input_of[v] >= 0)
        return (float *)x->inputs[x->input_of[v]] + b0 * numel(x, v);
    if (x->output_of[v] >= 0)
        return x->outbuf[x->output_of[v]] + b0 * numel(x, v);
    return x->arena[t] + x->plan->offset[v] * x->chunk;
}

static ntc_shape batch_shape(const ntc_exec *x, int v, int batch)
{
    ntc_shape s = x->g->values[v].shape;
    s.dims[0] = batch;
    return s;
}

/* Runs the schedule on items [b0, b0 + count) with thread t's arena. */
static void run_chunk(ntc_exec *x, int t, int b0, int count, ntc_pool *team)
{
    const ntc_graph *g = x->g;
    const float *in[x->max_in > 0 ? x->max_in : 1];
    ntc_shape in_shape[x->max_in > 0 ? x->max_in : 1];
    ntc_shape par_shape[NTC_MAX_PARAMS];
    for (int s = 0; s < x->plan->n_steps; s++) {
        const ntc_node *n = &g->nodes[x->plan->order[s]];
        ntc_kargs k = {.node = n, .batch = count, .n_in = n->n_in, .in = in, .in_shape = in_shape,
                       .par_shape = par_shape, .work = x->work[t], .team = team};
        for (int j = 0; j < n->n_in; j++) {
            in[j] = locate(x, n->in[j], t, b0);
            in_shape[j] = batch_shape(x, n->in[j], count);
        }
        for (int p = 0; p < NTC_MAX_PARAMS; p++) {
            k.par[p] = n->par[p] >= 0 ? g->values[n->par[p]].data : NULL;
            par_shape[p] = n->par[p] >= 0 ? g->values[n->par[p]].shape : (ntc_shape){0};
        }
        k.out = locate(x, n->out, t, b0);
        k.out_shape = batch_shape(x, n->out, count);
        ntc_kernels[n->op].forward(&k);
    }
}

static void run_slice(void *arg, int t)
{
    run_ctx *c = arg;
    ntc_exec *x = c->x;
    /* Thread t takes items [b0, b0 + count): the first batch % ntasks threads take one more. */
    int base = x->batch / c->ntasks, extra = x->batch % c->ntasks;
    int b0 = t * base + (t < extra ? t : extra);
    int count = base + (t < extra);
    /* A batch smaller than the pool runs as one slice whose kernels may
     * split their own work over the idle threads. */
    ntc_pool *team = c->ntasks == 1 && x->threads > 1 ? x->pool : NULL;
    for (int at = b0; at < b0 + count; at += x->chunk)
        run_chunk(x, t, at, b0 + count - at < x->chunk ? b0 + count - at : x->chunk, team);
}

/* Items per chunk: as many as keep the arena within CHUNK_BYTES (about a
 * core's L2 cache), at least 1, at most a slice. */
#define CHUNK_BYTES (512 * 1024)

static int chunk_items(const ntc_plan *p, int slice)
{
    int64_t per_item = p->arena_floats * (int64_t)sizeof(float);
    int64_t n = per_item > 0 ? CHUNK_BYTES / per_item : slice;
    return n < 1 ? 1 : n > slice ? slice : (int)n;
}

/* Checks what the kernels rely on: parameters with data, a leading batch
 * dimension on every activation.  Also measures workspace and arity. */
static int check_graph(ntc_exec *x, ntc_err *err)
{
    ntc_graph *g = x->g;
    for (int i = 0; i < g->n_inputs; i++) {
        const ntc_value *v = &g->values[g->inputs[i]];
        if (v->shape.rank < 1 || v->shape.dims[0] != NTC_BATCH)
            return ntc_error(err, g->path, 0, "input '%s' has no batch dimension (N) first", v->name);
    }
    for (int s = 0; s < x->plan->n_steps; s++) {
        const ntc_node *n = &g->nodes[x->plan->order[s]];
        for (int p = 0; p < NTC_MAX_PARAMS; p++)
            if (n->par[p] >= 0 && !g->values[n->par[p]].data)
                return ntc_error(err, g->path, n->line, "parameter '%s' of node '%s' has no data (weights not loaded)",
                                 g->values[n->par[p]].name, n->name);
        const ntc_value *out = &g->values[n->out];
        if (out->shape.dims[0] != NTC_BATCH)
            return ntc_error(err, g->path, n->line, "node '%s': output has no batch dimension first", n->name);
        /* BLAS takes int dimensions: one item's tensors must fit. */
        if (ntc_shape_numel(&out->shape) > INT_MAX / 16)
            return ntc_error(err, g->path, n->line, "node '%s': output too large for the interpreter", n->name);
        if (n->n_in > x->max_in)
            x->max_in = n->n_in;
        if (ntc_kernels[n->op].work) {
            ntc_shape in[n->n_in > 0 ? n->n_in : 1];
            for (int j = 0; j < n->n_in; j++) {
                in[j] = g->values[n->in[j]].shape;
                in[j].dims[0] = 1;
            }
            ntc_shape os = out->shape;
            os.dims[0] = 1;
            int64_t w = ntc_kernels[n->op].work(n, in, &os);
            if (w > x->work_floats)
                x->work_floats = w;
        }
    }
    return 0;
}

/* Which values are graph inputs and outputs; output buffers. */
static int bind_io(ntc_exec *x)
{
    ntc_graph *g = x->g;
    if (!(x->input_of = ntc_malloc(sizeof(int) * ((size_t)g->n_values + 1))) ||
        !(x->output_of = ntc_malloc(sizeof(int) * ((size_t)g->n_values + 1))) ||
        !(x->outbuf = ntc_calloc((size_t)g->n_outputs + 1, sizeof(float *))))
        return -1;
    for (int v = 0; v < g->n_values; v++)
        x->input_of[v] = x->output_of[v] = -1;
    for (int i = 0; i < g->n_inputs; i++)
        x->input_of[g->inputs[i]] = i;
    for (int o = 0; o < g->n_outputs; o++) {
        int v = g->outputs[o].value;
        if (x->output_of[v] < 0 && x->input_of[v] < 0)
            x->output_of[v] = o;
        if (!(x->outbuf[o] = ntc_malloc(sizeof(float) * (size_t)(numel(x, v) * x->max_batch))))
            return -1;
    }
    return 0;
}

static int alloc_threads(ntc_exec *x)
{
    if (!(x->arena = ntc_calloc((size_t)x->slices, sizeof(float *))) ||
        !(x->work = ntc_calloc((size_t)x->slices, sizeof(float *))))
        return -1;
    for (int t = 0; t < x->slices; t++) {
        /* +1 keeps the allocation non-empty for graphs without intermediates. */
        if (!(x->arena[t] = ntc_malloc(sizeof(float) * (size_t)(x->plan->arena_floats * x->chunk + 1))) ||
            !(x->work[t] = ntc_malloc(sizeof(float) * (size_t)(x->work_floats + 1))))
            return -1;
    }
    return (x->pool = ntc_pool_new(x->threads, NULL)) ? 0 : -1;
}

ntc_exec *ntc_exec_new_threads(ntc_graph *g, int max_batch, int threads, ntc_err *err)
{
    if (max_batch < 1) {
        ntc_error(err, g->path, 0, "batch size must be >= 1, got %d", max_batch);
        return NULL;
    }
    threads = ntc_pool_default_threads(threads);
    if (ntc_graph_infer_shapes(g, err))
        return NULL;
    ntc_exec *x = ntc_calloc(1, sizeof *x);
    if (!x) {
        ntc_error(err, g->path, 0, "out of memory");
        return NULL;
    }
    x->g = g;
    x->max_batch = max_batch;
    x->threads = threads;
    x->slices = threads < max_batch ? threads : max_batch;
    if (!(x->plan = ntc_plan_new(g, err)) || check_graph(x, err))
        goto fail;
    x->chunk = chunk_items(x->plan, (max_batch + x->slices - 1) / x->slices);
    if (bind_io(x) || alloc_threads(x)) {
        ntc_error(err, g->path, 0, "out of memory for %d threads at batch %d", threads, max_batch);
        goto fail;
    }
    /* The pool is the only parallelism: OpenBLAS's threads would compete
     * with it for the same cores. */
    openblas_set_num_threads(1);
    return x;
fail:
    ntc_exec_free(x);
    return NULL;
}

ntc_exec *ntc_exec_new(ntc_graph *g, int max_batch, ntc_err *err)
{
    return ntc_exec_new_threads(g, max_batch, 0, err);
}

int ntc_exec_run(ntc_exec *x, const float *const *inputs, int batch, ntc_err *err)
{
    const ntc_graph *g = x->g;
    if (batch < 1 || batch > x->max_batch)
        return ntc_error(err, g->path, 0, "batch %d outside 1..%d", batch, x->max_batch);
    for (int i = 0; i < g->n_inputs; i++)
        if (!inputs[i])
            return ntc_error(err, g->path, 0, "no data for input '%s'", g->values[g->inputs[i]].name);
    x->inputs = inputs;
    x->batch = batch;
    run_ctx c = {x, batch < x->slices ? batch : x->slices};
    ntc_pool_run(x->pool, c.ntasks, run_slice, &c);
    /* Outputs that are graph inputs (or repeat another output) are copies. */
    for (int o = 0; o < g->n_outputs; o++) {
        int v = g->outputs[o].value;
        if (x->output_of[v] != o)
            memcpy(x->outbuf[o], locate(x, v, 0, 0), sizeof(float) * (size_t)(numel(x, v) * batch));
    }
    x->inputs = NULL;
    x->ran_batch = batch;
    return 0;
}

const float *ntc_exec_output(const ntc_exec *x, int i)
{
    if (!x->ran_batch || i < 0 || i >= x->g->n_outputs)
        return NULL;
    return x->outbuf[i];
}

ntc_shape ntc_exec_output_shape(const ntc_exec *x, int i)
{
    if (i < 0 || i >= x->g->n_outputs)
        return (ntc_shape){0};
    return batch_shape(x, x->g->outputs[i].value, x->ran_batch);
}

int ntc_exec_threads(const ntc_exec *x) { return x->threads; }

const ntc_plan *ntc_exec_plan(const ntc_exec *x) { return x->plan; }

void ntc_exec_free(ntc_exec *x)
{
    if (!x)
        return;
    ntc_pool_free(x->pool);
    for (int t = 0; x->arena && t < x->slices; t++)
        ntc_free(x->arena[t]);
    for (int t = 0; x->work && t < x->slices; t++)
        ntc_free(x->work[t]);
    for (int o = 0; x->outbuf && o < x->g->n_outputs; o++)
        ntc_free(x->outbuf[o]);
    ntc_free(x->arena);
    ntc_free(x->work);
    ntc_free(x->outbuf);
    ntc_free(x->input_of);
    ntc_free(x->output_of);
    ntc_plan_free(x->plan);
    ntc_free(x);
}
