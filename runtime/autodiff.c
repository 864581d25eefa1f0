/* The training executor: a forward that keeps every activation, then
 * reverse-mode autodiff through the ops' backward kernels.
 *
 * Memory: every value the graph computes (and every graph input, copied)
 * has its own buffer [max_batch, ...] for the whole step, so backward
 * reads exactly what the forward produced; values that need a gradient
 * have a gradient buffer of the same size.  No buffer is reused across
 * the forward/backward boundary.
 *
 * Threading: thread t of T runs the schedule on its contiguous slice of
 * the batch, as the forward executor does.  Two things span the slices:
 *   - batchnorm in training mode needs whole-batch sums (forward: sum and
 *     sum of squares; backward: sum dy and sum dy*xhat).  Each thread adds
 *     its slice's sums into its own row, a barrier, thread 0 reduces the
 *     rows in thread order and finishes, a second barrier, then every
 *     thread applies the result to its slice;
 *   - parameter gradients: each thread accumulates into its own copy, and
 *     after a barrier the copies are summed in thread order, each thread
 *     summing its own share of the parameters.
 * So a step's result depends on T only through float rounding.
 *
 * The schedule is a topological order fixed by the node names
 * (canonical_order), so sums come out the same however the graph's
 * arrays are ordered.
 *
 * Backward is a list of programs run one after the other by every thread:
 * the main program (every node whose output needs a gradient, in reverse
 * topological order, seeded by the graph outputs' gradients), then one per
 * local term (only the scope's nodes, gradients only for values produced
 * inside the scope, seeded by the term's gradient).  Kernels accumulate,
 * so a gradient buffer is zeroed right before the first step that writes
 * it in each program, unless that step's op can overwrite it instead
 * (ntc_bwd_overwrites: it is then told so through gin_fresh). */
#include "ntc/train.h"
#include "bn_train.h"
#include "kernels.h"
#include "pool.h"

#include <cblas.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

/* A step of a backward program: node n, which inputs get a gradient, and
 * which gradient buffers to zero first. */
typedef struct {
    int node;
    bool *gin;                   /* per input of the node */
    bool *fresh;                 /* per input: first write of its gradient, by an op that overwrites */
    bool gpar[NTC_MAX_PARAMS];   /* per parameter slot: trainable */
    int n_zero;
    int *zero;                   /* value handles */
} bwd_step;

typedef struct {
    int n_steps;
    bwd_step *steps;
    int seed_value;              /* local terms: the value the seed goes to; -1 for main */
    float *seed;                 /* local terms: [max_batch, numel(seed_value)] */
} bwd_program;

/* A sense-counting barrier for the threads of one pool run: short waits
 * spin, long ones yield (more threads than cores must still progress). */
typedef struct {
    atomic_int count;
    atomic_int generation;
    int n;
} barrier;

struct ntc_trainer {
    ntc_graph *g;
    int max_batch, threads;
    ntc_pool *pool;
    int n_order;
    int *order;                  /* topological order of live nodes */
    int64_t *numel;              /* per value, per item */
    float **act, **grad;         /* per value: [max_batch, numel] or NULL */
    bool *needs;                 /* per value: main pass computes its gradient */
    bool *train_bn;              /* per node: batchnorm outside frozen blocks */
    float **bn_mean, **bn_invstd;/* per node in train_bn: this step's statistics */
    double *bn_part;             /* per thread: 2 * max_c partial sums */
    double *bn_sum;              /* 2 * max_c reduced sums */
    int64_t max_c;
    /* Trainable parameters. */
    int n_params;
    int *params;                 /* value handles */
    int *param_index;            /* per value: index into params or -1 */
    int64_t *param_off;          /* offset in a gradient block */
    int64_t param_floats;
    float **pgrad_t;             /* per thread gradient block */
    float *pgrad;                /* summed */
    /* Programs: [0] main, [1 + k] local term k. */
    int n_prog;
    bwd_program *prog;
    int64_t work_floats;
    float **work;
    int max_in;
    ntc_arena *arena;            /* step descriptors */
    /* The current run. */
    barrier bar;
    int batch, ntasks, ran_batch;
    bool train, ran_train;
};

/* ---- small helpers ------------------------------------------------------------------ */

static void barrier_wait(barrier *b)
{
    int gen = atomic_load(&b->generation);
    if (atomic_fetch_add(&b->count, 1) == b->n - 1) {
        atomic_store(&b->count, 0);
        atomic_fetch_add(&b->generation, 1);
        return;
    }
    for (int spins = 0; atomic_load(&b->generation) == gen; spins++)
        if (spins > 2000)
            sched_yield();
}

static bool param_trainable(const ntc_graph *g, const ntc_node *n, int slot)
{
    return n->par[slot] >= 0 && !ntc_ops[n->op].params[slot].frozen_stat &&
           !ntc_value_frozen(g, n->par[slot]);
}

static bool node_has_trainable(const ntc_graph *g, const ntc_node *n)
{
    for (int s = 0; s < NTC_MAX_PARAMS; s++)
        if (param_trainable(g, n, s))
            return true;
    return false;
}

static bool node_frozen(const ntc_graph *g, const ntc_node *n)
{
    return n->block >= 0 && g->blocks[n->block].frozen;
}

/* Items [b0, b0 + count) of thread t's slice. */
static void slice_of(const ntc_trainer *t, int task, int *b0, int *count)
{
    int base = t->batch / t->ntasks, extra = t->batch % t->ntasks;
    *b0 = task * base + (task < extra ? task : extra);
    *count = base + (task < extra);
}

static ntc_shape batch_shape(const ntc_trainer *t, int v, int batch)
{
    ntc_shape s = t->g->values[v].shape;
    s.dims[0] = batch;
    return s;
}

/* Fills k for node n on the slice [b0, b0 + count) of thread `task`. */
static void make_args(const ntc_trainer *t, const ntc_node *n, int task, int b0, int count,
                      ntc_kargs *k, const float **in, ntc_shape *in_shape, ntc_shape *par_shape)
{
    const ntc_graph *g = t->g;
    *k = (ntc_kargs){.node = n, .batch = count, .n_in = n->n_in, .in = in, .in_shape = in_shape,
                     .par_shape = par_shape, .work = t->work[task]};
    for (int j = 0; j < n->n_in; j++) {
        in[j] = t->act[n->in[j]] + b0 * t->numel[n->in[j]];
        in_shape[j] = batch_shape(t, n->in[j], count);
    }
    for (int p = 0; p < NTC_MAX_PARAMS; p++) {
        k->par[p] = n->par[p] >= 0 ? g->values[n->par[p]].data : NULL;
        par_shape[p] = n->par[p] >= 0 ? g->values[n->par[p]].shape : (ntc_shape){0};
    }
    k->out = t->act[n->out] + b0 * t->numel[n->out];
    k->out_shape = batch_shape(t, n->out, count);
}

/* ---- forward ---------------------------------------------------------------------------- */

typedef struct {
    ntc_trainer *t;
    const float *const *inputs;
} fwd_ctx;

/* Training-mode batchnorm of node n across the threads (see bn_train.h). */
static void bn_forward(ntc_trainer *t, const ntc_node *n, int ni, const ntc_kargs *k, int task)
{
    const int64_t C = k->in_shape[0].dims[1];
    double *part = t->bn_part + (size_t)task * 2 * t->max_c;
    memset(part, 0, sizeof(double) * 2 * (size_t)t->max_c);
    bn_train_stats(k, part, part + t->max_c);
    barrier_wait(&t->bar);
    if (task == 0) {
        memset(t->bn_sum, 0, sizeof(double) * 2 * (size_t)t->max_c);
        for (int r = 0; r < t->ntasks; r++) {
            const double *p = t->bn_part + (size_t)r * 2 * t->max_c;
            for (int64_t c = 0; c < C; c++) {
                t->bn_sum[c] += p[c];
                t->bn_sum[t->max_c + c] += p[t->max_c + c];
            }
        }
        const ntc_shape s = batch_shape(t, n->in[0], t->batch);
        bn_train_finish(n, C, bn_train_count(&s, t->batch), t->bn_sum, t->bn_sum + t->max_c,
                        t->bn_mean[ni], t->bn_invstd[ni], t->g->values[n->par[2]].data,
                        t->g->values[n->par[3]].data);
    }
    barrier_wait(&t->bar);
    bn_train_apply(k, t->bn_mean[ni], t->bn_invstd[ni]);
}

static void forward_task(void *arg, int task)
{
    fwd_ctx *c = arg;
    ntc_trainer *t = c->t;
    const ntc_graph *g = t->g;
    int b0, count;
    slice_of(t, task, &b0, &count);
    for (int i = 0; i < g->n_inputs; i++) {
        int v = g->inputs[i];
        memcpy(t->act[v] + b0 * t->numel[v], c->inputs[i] + b0 * t->numel[v],
               sizeof(float) * (size_t)(count * t->numel[v]));
    }
    for (int o = 0; o < g->n_outputs; o++) {
        int v = g->outputs[o].value;
        memset(t->grad[v] + b0 * t->numel[v], 0, sizeof(float) * (size_t)(count * t->numel[v]));
    }
    for (int p = 1; p < t->n_prog; p++) {
        int64_t m = t->numel[t->prog[p].seed_value];
        memset(t->prog[p].seed + b0 * m, 0, sizeof(float) * (size_t)(count * m));
    }
    const float *in[t->max_in];
    ntc_shape in_shape[t->max_in], par_shape[NTC_MAX_PARAMS];
    for (int s = 0; s < t->n_order; s++) {
        const ntc_node *n = &g->nodes[t->order[s]];
        ntc_kargs k;
        make_args(t, n, task, b0, count, &k, in, in_shape, par_shape);
        if (t->train && t->train_bn[t->order[s]])
            bn_forward(t, n, t->order[s], &k, task);
        else
            ntc_kernels[n->op].forward(&k);
    }
}

int ntc_trainer_forward(ntc_trainer *t, const float *const *inputs, int batch, bool train,
                        ntc_err *err)
{
    const ntc_graph *g = t->g;
    if (batch < 1 || batch > t->max_batch)
        return ntc_error(err, g->path, 0, "batch %d outside 1..%d", batch, t->max_batch);
    for (int i = 0; i < g->n_inputs; i++)
        if (!inputs[i])
            return ntc_error(err, g->path, 0, "no data for input '%s'", g->values[g->inputs[i]].name);
    t->batch = batch;
    t->ntasks = batch < t->threads ? batch : t->threads;
    t->train = train;
    t->bar.n = t->ntasks;
    fwd_ctx c = {t, inputs};
    ntc_pool_run(t->pool, t->ntasks, forward_task, &c);
    t->ran_batch = batch;
    t->ran_train = train;
    return 0;
}

/* ---- backward ----------------------------------------------------------------------------- */

/* Training-mode batchnorm backward across the threads.  grad_in may be NULL. */
static void bn_backward(ntc_trainer *t, const ntc_node *n, int ni, const ntc_kargs *k,
                        const float *gout, float *gin, float *const *gpar, int task)
{
    const int64_t C = k->in_shape[0].dims[1];
    double *part = t->bn_part + (size_t)task * 2 * t->max_c;
    memset(part, 0, sizeof(double) * 2 * (size_t)t->max_c);
    bn_train_grad_stats(k, gout, t->bn_mean[ni], t->bn_invstd[ni], part, part + t->max_c);
    barrier_wait(&t->bar);
    if (task == 0) {
        memset(t->bn_sum, 0, sizeof(double) * 2 * (size_t)t->max_c);
        for (int r = 0; r < t->ntasks; r++) {
            const double *p = t->bn_part + (size_t)r * 2 * t->max_c;
            for (int64_t c = 0; c < C; c++) {
                t->bn_sum[c] += p[c];
                t->bn_sum[t->max_c + c] += p[t->max_c + c];
            }
        }
        /* Thread 0's gradient copy takes the whole batch's parameter gradient. */
        bn_train_grad_params(C, t->bn_sum, t->bn_sum + t->max_c, gpar ? gpar[0] : NULL,
                             gpar ? gpar[1] : NULL);
    }
    barrier_wait(&t->bar);
    if (gin) {
        const ntc_shape s = batch_shape(t, n->in[0], t->batch);
        bn_train_grad_apply(k, gout, t->bn_mean[ni], t->bn_invstd[ni], bn_train_count(&s, t->batch),
                            t->bn_sum, t->bn_sum + t->max_c, gin);
    }
    /* No third barrier: thread 0 overwrites bn_sum only after the next
     * batchnorm's first barrier, which every thread reaches after this
     * apply. */
}

static void run_program(ntc_trainer *t, const bwd_program *p, int task, int b0, int count)
{
    const ntc_graph *g = t->g;
    if (p->seed_value >= 0) {
        int64_t m = t->numel[p->seed_value];
        memcpy(t->grad[p->seed_value] + b0 * m, p->seed + b0 * m, sizeof(float) * (size_t)(count * m));
    }
    const float *in[t->max_in];
    float *gin[t->max_in];
    ntc_shape in_shape[t->max_in], par_shape[NTC_MAX_PARAMS];
    for (int s = 0; s < p->n_steps; s++) {
        const bwd_step *st = &p->steps[s];
        const ntc_node *n = &g->nodes[st->node];
        for (int z = 0; z < st->n_zero; z++) {
            int v = st->zero[z];
            memset(t->grad[v] + b0 * t->numel[v], 0, sizeof(float) * (size_t)(count * t->numel[v]));
        }
        ntc_kargs k;
        make_args(t, n, task, b0, count, &k, in, in_shape, par_shape);
        k.gin_fresh = st->fresh;
        bool any_in = false;
        for (int j = 0; j < n->n_in; j++) {
            gin[j] = st->gin[j] ? t->grad[n->in[j]] + b0 * t->numel[n->in[j]] : NULL;
            any_in |= st->gin[j];
        }
        float *gpar[NTC_MAX_PARAMS] = {0};
        bool any_par = false;
        for (int q = 0; q < NTC_MAX_PARAMS; q++)
            if (st->gpar[q]) {
                gpar[q] = t->pgrad_t[task] + t->param_off[t->param_index[n->par[q]]];
                any_par = true;
            }
        const float *gout = t->grad[n->out] + b0 * t->numel[n->out];
        if (t->ran_train && t->train_bn[st->node])
            bn_backward(t, n, st->node, &k, gout, gin[0], any_par ? gpar : NULL, task);
        else
            ntc_kernels[n->op].backward(&k, gout, any_in ? gin : NULL, any_par ? gpar : NULL);
    }
}

static void backward_task(void *arg, int task)
{
    ntc_trainer *t = arg;
    int b0, count;
    slice_of(t, task, &b0, &count);
    memset(t->pgrad_t[task], 0, sizeof(float) * (size_t)t->param_floats);
    for (int p = 0; p < t->n_prog; p++)
        run_program(t, &t->prog[p], task, b0, count);
    barrier_wait(&t->bar);
    /* Sum the threads' copies: this thread's share of the floats. */
    int64_t share = (t->param_floats + t->ntasks - 1) / t->ntasks;
    int64_t lo = task * share, hi = lo + share < t->param_floats ? lo + share : t->param_floats;
    for (int64_t i = lo; i < hi; i++) {
        float s = 0.0f;
        for (int r = 0; r < t->ntasks; r++)
            s += t->pgrad_t[r][i];
        t->pgrad[i] = s;
    }
}

int ntc_trainer_backward(ntc_trainer *t, ntc_err *err)
{
    if (!t->ran_batch)
        return ntc_error(err, t->g->path, 0, "backward before any forward");
    t->batch = t->ran_batch;
    t->ntasks = t->batch < t->threads ? t->batch : t->threads;
    t->bar.n = t->ntasks;
    ntc_pool_run(t->pool, t->ntasks, backward_task, t);
    return 0;
}

/* ---- programs ----------------------------------------------------------------------------- */

/* Builds a program over the nodes in reverse topological order for which
 * in_scope is true and needs[out] holds, giving input j a gradient when
 * needs[in[j]].  The seeds (seed_value, or the graph outputs for the main
 * program) start the gradients and are never zeroed. */
static int build_program(ntc_trainer *t, bwd_program *p, const bool *in_scope, const bool *needs,
                         int seed_value)
{
    const ntc_graph *g = t->g;
    bool *written = ntc_calloc((size_t)g->n_values + 1, sizeof(bool));
    if (!written || !(p->steps = ntc_arena_alloc(t->arena, sizeof(bwd_step) * ((size_t)t->n_order + 1)))) {
        ntc_free(written);
        return -1;
    }
    p->seed_value = seed_value;
    if (seed_value >= 0)
        written[seed_value] = true;
    else
        for (int o = 0; o < g->n_outputs; o++)
            written[g->outputs[o].value] = true;
    for (int s = t->n_order - 1; s >= 0; s--) {
        int ni = t->order[s];
        const ntc_node *n = &g->nodes[ni];
        /* Skipped: outside the scope, no gradient wanted, or nothing
         * downstream produced one (its gradient is zero). */
        if (!in_scope[ni] || !needs[n->out] || !written[n->out])
            continue;
        bwd_step *st = &p->steps[p->n_steps++];
        st->node = ni;
        for (int q = 0; q < NTC_MAX_PARAMS; q++)
            st->gpar[q] = param_trainable(g, n, q);
        st->gin = ntc_arena_alloc(t->arena, sizeof(bool) * (size_t)n->n_in + 1);
        st->fresh = ntc_arena_alloc(t->arena, sizeof(bool) * (size_t)n->n_in + 1);
        st->zero = ntc_arena_alloc(t->arena, sizeof(int) * (size_t)n->n_in + 1);
        if (!st->gin || !st->fresh || !st->zero) {
            ntc_free(written);
            return -1;
        }
        /* The first write of a gradient either overwrites it (ops that can,
         * saving a pass of zeroing and one of reading) or follows a zeroing. */
        const bool overwrites = ntc_bwd_overwrites(n->op);
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            st->gin[j] = needs[v];
            st->fresh[j] = false;
            if (needs[v] && !written[v]) {
                written[v] = true;
                if (overwrites)
                    st->fresh[j] = true;
                else
                    st->zero[st->n_zero++] = v;
            }
        }
    }
    ntc_free(written);
    return 0;
}

int ntc_trainer_add_local(ntc_trainer *t, int v, const int *scope, int n, ntc_err *err)
{
    const ntc_graph *g = t->g;
    if (v < 0 || v >= g->n_values || g->values[v].producer < 0)
        return ntc_error(err, g->path, 0, "local term on a value that no node produces");
    bool *in_scope = ntc_calloc((size_t)g->n_nodes + 1, sizeof(bool));
    bool *needs = ntc_calloc((size_t)g->n_values + 1, sizeof(bool));
    bwd_program *prog = ntc_realloc(t->prog, sizeof(bwd_program) * (size_t)(t->n_prog + 1));
    int rc = -1;
    if (!in_scope || !needs || !prog) {
        ntc_error(err, g->path, 0, "out of memory");
        goto done;
    }
    t->prog = prog;
    for (int i = 0; i < n; i++) {
        if (scope[i] < 0 || scope[i] >= g->n_nodes) {
            ntc_error(err, g->path, 0, "local term: scope node %d does not exist", scope[i]);
            goto done;
        }
        in_scope[scope[i]] = true;
    }
    if (!in_scope[g->values[v].producer]) {
        ntc_error(err, g->path, 0, "local term on '%s': its producer is outside the scope", g->values[v].name);
        goto done;
    }
    /* A value inside the scope needs the local gradient when a trainable
     * parameter of the scope lies upstream of it within the scope. */
    for (int s = 0; s < t->n_order; s++) {
        int ni = t->order[s];
        const ntc_node *nd = &g->nodes[ni];
        if (!in_scope[ni])
            continue;
        bool need = node_has_trainable(g, nd);
        for (int j = 0; j < nd->n_in; j++)
            need |= needs[nd->in[j]];
        needs[nd->out] = need;
    }
    bwd_program *p = &t->prog[t->n_prog];
    *p = (bwd_program){0};
    if (!(p->seed = ntc_calloc((size_t)(t->max_batch * t->numel[v]) + 1, sizeof(float))) ||
        build_program(t, p, in_scope, needs, v)) {
        ntc_free(p->seed);
        ntc_error(err, g->path, 0, "out of memory");
        goto done;
    }
    /* The seed lands in v's gradient buffer; the main pass may not have one. */
    if (!t->grad[v] && !(t->grad[v] = ntc_malloc(sizeof(float) * (size_t)(t->max_batch * t->numel[v]) + 1))) {
        ntc_free(p->seed);
        ntc_error(err, g->path, 0, "out of memory");
        goto done;
    }
    for (int s = 0; s < p->n_steps; s++) {
        const ntc_node *nd = &g->nodes[p->steps[s].node];
        for (int j = 0; j < nd->n_in; j++)
            if (p->steps[s].gin[j] && !t->grad[nd->in[j]]) {
                /* Unreachable in practice: needs (local) implies needs (main). */
                ntc_error(err, g->path, 0, "local term: no gradient buffer for '%s'", g->values[nd->in[j]].name);
                goto done;
            }
    }
    rc = t->n_prog++ - 1;
done:
    ntc_free(in_scope);
    ntc_free(needs);
    return rc;
}

/* ---- construction ------------------------------------------------------------------------- */

/* A step buffer of n floats, written once now: a fresh allocation is
 * mapped page by page on first touch, and the buffers of a step are
 * hundreds of MB (ResNet-20 at batch 128), so the first step would
 * otherwise spend a good part of its time in page faults. */
static float *step_buffer(int64_t n)
{
    float *p = ntc_malloc(sizeof(float) * (size_t)n + 1);
    if (p)
        memset(p, 0, sizeof(float) * (size_t)n);
    return p;
}

static int plan_values(ntc_trainer *t, ntc_err *err)
{
    ntc_graph *g = t->g;
    size_t nv = (size_t)g->n_values + 1;
    if (!(t->numel = ntc_calloc(nv, sizeof(int64_t))) || !(t->act = ntc_calloc(nv, sizeof(float *))) ||
        !(t->grad = ntc_calloc(nv, sizeof(float *))) || !(t->needs = ntc_calloc(nv, sizeof(bool))) ||
        !(t->param_index = ntc_malloc(nv * sizeof(int))) ||
        !(t->params = ntc_malloc(nv * sizeof(int))) || !(t->param_off = ntc_malloc(nv * sizeof(int64_t))))
        return ntc_error(err, g->path, 0, "out of memory");
    for (int v = 0; v < g->n_values; v++) {
        t->numel[v] = ntc_shape_numel(&g->values[v].shape);
        t->param_index[v] = -1;
    }
    /* Trainable parameters in node order. */
    for (int s = 0; s < t->n_order; s++) {
        const ntc_node *n = &g->nodes[t->order[s]];
        for (int q = 0; q < NTC_MAX_PARAMS; q++) {
            int v = n->par[q];
            if (!param_trainable(g, n, q) || t->param_index[v] >= 0)
                continue;
            t->param_index[v] = t->n_params;
            t->param_off[t->n_params] = t->param_floats;
            t->params[t->n_params++] = v;
            t->param_floats += (t->numel[v] + 15) & ~(int64_t)15;
        }
    }
    /* needs: a trainable parameter lies upstream. */
    for (int s = 0; s < t->n_order; s++) {
        const ntc_node *n = &g->nodes[t->order[s]];
        bool need = node_has_trainable(g, n);
        for (int j = 0; j < n->n_in; j++)
            need |= t->needs[n->in[j]];
        t->needs[n->out] = need;
    }
    for (int i = 0; i < g->n_inputs; i++) {
        int v = g->inputs[i];
        if (!(t->act[v] = step_buffer(t->numel[v] * t->max_batch)))
            return ntc_error(err, g->path, 0, "out of memory");
    }
    for (int s = 0; s < t->n_order; s++) {
        int v = g->nodes[t->order[s]].out;
        if (!(t->act[v] = step_buffer(t->numel[v] * t->max_batch)))
            return ntc_error(err, g->path, 0, "out of memory for activations at batch %d", t->max_batch);
    }
    for (int v = 0; v < g->n_values; v++)
        if (t->needs[v] && !(t->grad[v] = step_buffer(t->numel[v] * t->max_batch)))
            return ntc_error(err, g->path, 0, "out of memory for gradients at batch %d", t->max_batch);
    for (int o = 0; o < g->n_outputs; o++) {
        int v = g->outputs[o].value;
        if (!t->grad[v] && !(t->grad[v] = step_buffer(t->numel[v] * t->max_batch)))
            return ntc_error(err, g->path, 0, "out of memory");
    }
    return 0;
}

static int plan_nodes(ntc_trainer *t, ntc_err *err)
{
    ntc_graph *g = t->g;
    size_t nn = (size_t)g->n_nodes + 1;
    if (!(t->train_bn = ntc_calloc(nn, sizeof(bool))) || !(t->bn_mean = ntc_calloc(nn, sizeof(float *))) ||
        !(t->bn_invstd = ntc_calloc(nn, sizeof(float *))))
        return ntc_error(err, g->path, 0, "out of memory");
    t->max_in = 1;
    for (int s = 0; s < t->n_order; s++) {
        int ni = t->order[s];
        const ntc_node *n = &g->nodes[ni];
        for (int p = 0; p < NTC_MAX_PARAMS; p++)
            if (n->par[p] >= 0 && !g->values[n->par[p]].data)
                return ntc_error(err, g->path, n->line, "parameter '%s' of node '%s' has no data (weights not loaded)",
                                 g->values[n->par[p]].name, n->name);
        if (g->values[n->out].shape.dims[0] != NTC_BATCH)
            return ntc_error(err, g->path, n->line, "node '%s': output has no batch dimension first", n->name);
        if (n->n_in > t->max_in)
            t->max_in = n->n_in;
        if (ntc_kernels[n->op].work) {
            ntc_shape in[n->n_in > 0 ? n->n_in : 1];
            for (int j = 0; j < n->n_in; j++) {
                in[j] = g->values[n->in[j]].shape;
                in[j].dims[0] = 1;
            }
            ntc_shape os = g->values[n->out].shape;
            os.dims[0] = 1;
            int64_t w = ntc_kernels[n->op].work(n, in, &os);
            t->work_floats = w > t->work_floats ? w : t->work_floats;
        }
        if (n->op == NTC_OP_batchnorm && !node_frozen(g, n)) {
            int64_t C = g->values[n->in[0]].shape.dims[1];
            t->train_bn[ni] = true;
            t->max_c = C > t->max_c ? C : t->max_c;
            if (!(t->bn_mean[ni] = ntc_malloc(sizeof(float) * (size_t)C)) ||
                !(t->bn_invstd[ni] = ntc_malloc(sizeof(float) * (size_t)C)))
                return ntc_error(err, g->path, 0, "out of memory");
        }
    }
    for (int i = 0; i < g->n_inputs; i++) {
        const ntc_value *v = &g->values[g->inputs[i]];
        if (v->shape.rank < 1 || v->shape.dims[0] != NTC_BATCH)
            return ntc_error(err, g->path, 0, "input '%s' has no batch dimension (N) first", v->name);
    }
    return 0;
}

static int alloc_threads(ntc_trainer *t, ntc_err *err)
{
    int T = t->threads;
    if (!(t->work = ntc_calloc((size_t)T, sizeof(float *))) ||
        !(t->pgrad_t = ntc_calloc((size_t)T, sizeof(float *))) ||
        !(t->pgrad = ntc_calloc((size_t)t->param_floats + 1, sizeof(float))) ||
        !(t->bn_part = ntc_calloc((size_t)(2 * t->max_c * T) + 1, sizeof(double))) ||
        !(t->bn_sum = ntc_calloc((size_t)(2 * t->max_c) + 1, sizeof(double))))
        return ntc_error(err, t->g->path, 0, "out of memory");
    for (int i = 0; i < T; i++)
        if (!(t->work[i] = ntc_malloc(sizeof(float) * (size_t)t->work_floats + 1)) ||
            !(t->pgrad_t[i] = ntc_malloc(sizeof(float) * (size_t)t->param_floats + 1)))
            return ntc_error(err, t->g->path, 0, "out of memory");
    if (!(t->pool = ntc_pool_new(T, err)))
        return -1;
    return 0;
}

/* A topological order of the live nodes that depends only on the graph's
 * structure and names, not on the order of its node array: among the
 * nodes whose inputs are ready, the one with the smallest name runs
 * first.  Gradients of a value read by several nodes are summed in this
 * order, so a graph written to a checkpoint and read back (which may list
 * its nodes differently) continues with bit-identical sums.  Quadratic in
 * the node count, which is a few hundred.  Returns the count, or -1 with
 * err on a cycle. */
static int canonical_order(const ntc_graph *g, int *order, ntc_err *err)
{
    bool *done = ntc_calloc((size_t)g->n_nodes + 1, sizeof(bool));
    if (!done)
        return ntc_error(err, g->path, 0, "out of memory");
    int live = 0, n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        live += !g->nodes[i].dead;
    while (n < live) {
        int pick = -1;
        for (int i = 0; i < g->n_nodes; i++) {
            const ntc_node *nd = &g->nodes[i];
            if (nd->dead || done[i])
                continue;
            bool ready = true;
            for (int j = 0; j < nd->n_in && ready; j++) {
                int p = g->values[nd->in[j]].producer;
                ready = p < 0 || done[p];
            }
            if (ready && (pick < 0 || strcmp(nd->name, g->nodes[pick].name) < 0))
                pick = i;
        }
        if (pick < 0) {
            ntc_free(done);
            return ntc_error(err, g->path, 0, "the graph has a cycle");
        }
        done[pick] = true;
        order[n++] = pick;
    }
    ntc_free(done);
    return n;
}

ntc_trainer *ntc_trainer_new(ntc_graph *g, int max_batch, int threads, ntc_err *err)
{
    if (max_batch < 1) {
        ntc_error(err, g->path, 0, "batch size must be >= 1, got %d", max_batch);
        return NULL;
    }
    threads = ntc_pool_default_threads(threads);
    if (threads > max_batch)
        threads = max_batch;
    if (ntc_graph_infer_shapes(g, err))
        return NULL;
    ntc_trainer *t = ntc_calloc(1, sizeof *t);
    if (!t) {
        ntc_error(err, g->path, 0, "out of memory");
        return NULL;
    }
    t->g = g;
    t->max_batch = max_batch;
    t->threads = threads;
    if (!(t->arena = ntc_arena_new()) || !(t->order = ntc_malloc(sizeof(int) * ((size_t)g->n_nodes + 1)))) {
        ntc_error(err, g->path, 0, "out of memory");
        goto fail;
    }
    if ((t->n_order = canonical_order(g, t->order, err)) < 0)
        goto fail;
    if (plan_nodes(t, err) || plan_values(t, err) || alloc_threads(t, err))
        goto fail;
    bool *all = ntc_malloc(sizeof(bool) * ((size_t)g->n_nodes + 1));
    if (!all || !(t->prog = ntc_calloc(1, sizeof(bwd_program)))) {
        ntc_free(all);
        ntc_error(err, g->path, 0, "out of memory");
        goto fail;
    }
    for (int i = 0; i < g->n_nodes; i++)
        all[i] = true;
    t->n_prog = 1;
    int rc = build_program(t, &t->prog[0], all, t->needs, -1);
    ntc_free(all);
    if (rc) {
        ntc_error(err, g->path, 0, "out of memory");
        goto fail;
    }
    /* The pool is the only parallelism (see ntc/runtime.h). */
    openblas_set_num_threads(1);
    return t;
fail:
    ntc_trainer_free(t);
    return NULL;
}

void ntc_trainer_free(ntc_trainer *t)
{
    if (!t)
        return;
    ntc_pool_free(t->pool);
    const ntc_graph *g = t->g;
    for (int v = 0; v < g->n_values; v++) {
        if (t->act)
            ntc_free(t->act[v]);
        if (t->grad)
            ntc_free(t->grad[v]);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        if (t->bn_mean)
            ntc_free(t->bn_mean[i]);
        if (t->bn_invstd)
            ntc_free(t->bn_invstd[i]);
    }
    for (int i = 0; i < t->threads; i++) {
        if (t->work)
            ntc_free(t->work[i]);
        if (t->pgrad_t)
            ntc_free(t->pgrad_t[i]);
    }
    for (int p = 1; p < t->n_prog; p++)
        ntc_free(t->prog[p].seed);
    ntc_free(t->prog);
    ntc_free(t->work);
    ntc_free(t->pgrad_t);
    ntc_free(t->pgrad);
    ntc_free(t->bn_part);
    ntc_free(t->bn_sum);
    ntc_free(t->bn_mean);
    ntc_free(t->bn_invstd);
    ntc_free(t->train_bn);
    ntc_free(t->numel);
    ntc_free(t->act);
    ntc_free(t->grad);
    ntc_free(t->needs);
    ntc_free(t->params);
    ntc_free(t->param_index);
    ntc_free(t->param_off);
    ntc_free(t->order);
    ntc_arena_free(t->arena);
    ntc_free(t);
}

/* ---- accessors ---------------------------------------------------------------------------- */

int ntc_trainer_threads(const ntc_trainer *t) { return t->threads; }
ntc_graph *ntc_trainer_graph(const ntc_trainer *t) { return t->g; }

const float *ntc_trainer_value(const ntc_trainer *t, int v)
{
    return v >= 0 && v < t->g->n_values ? t->act[v] : NULL;
}

float *ntc_trainer_output_grad(ntc_trainer *t, int i)
{
    return i >= 0 && i < t->g->n_outputs ? t->grad[t->g->outputs[i].value] : NULL;
}

float *ntc_trainer_local_grad(ntc_trainer *t, int k)
{
    return k >= 0 && k + 1 < t->n_prog ? t->prog[k + 1].seed : NULL;
}

int ntc_trainer_n_params(const ntc_trainer *t) { return t->n_params; }

int ntc_trainer_param(const ntc_trainer *t, int i)
{
    return i >= 0 && i < t->n_params ? t->params[i] : -1;
}

float *ntc_trainer_grad(const ntc_trainer *t, int i)
{
    return i >= 0 && i < t->n_params ? t->pgrad + t->param_off[i] : NULL;
}

int ntc_trainer_param_index(const ntc_trainer *t, int v)
{
    return v >= 0 && v < t->g->n_values ? t->param_index[v] : -1;
}

bool ntc_trainer_needs_grad(const ntc_trainer *t, int v)
{
    return v >= 0 && v < t->g->n_values && t->needs[v];
}
