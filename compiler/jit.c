/* The JIT: the object file from ntc_codegen linked in memory by ORC LLJIT,
 * run over batch slices on ntc's thread pool (runtime/pool.h), one
 * workspace per thread; batches smaller than the pool run each item on
 * the whole pool (the team entry). */
#include "ntc/jit.h"

#include "compiler/codegen.h"
#include "runtime/pool.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <math.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void (*task_fn)(const float *const *params, const float *input, float *output, int64_t batch,
                        float *workspace);
/* The team entry (codegen.c): one item, thread tid of nthreads. */
typedef void (*team_fn)(const float *const *params, const float *input, float *output, float *workspace,
                        float *own_workspace, int64_t tid, int64_t nthreads, int32_t *barrier);

struct ntc_jit {
    LLVMOrcLLJITRef lljit;
    task_fn run;
    team_fn run_team;
    _Alignas(64) int32_t barrier[16];   /* the team barrier's state, on its own cache line */
    /* Small batches: seconds per item of the team and of one thread
     * (moving averages, 0 until measured) and calls so far; see
     * choose_team. */
    double team_s, solo_s;
    unsigned long small_calls, next_probe, probe_gap;
    const float **params;
    float **packed;             /* per parameter: the JIT's packed copy, or NULL */
    int n_params;
    int64_t in_numel, out_numel, ws_floats;
    int threads;
    ntc_pool *pool;
    void *ws_block;             /* allocation holding ws */
    float *ws;                  /* threads x (ws_floats + 16), 64-byte aligned */
    char *ir;
    double t_ir, t_opt, t_emit;
};

static int llvm_fail(LLVMErrorRef e, const char *what, ntc_err *err)
{
    char *m = LLVMGetErrorMessage(e);
    ntc_error(err, NULL, 0, "%s: %s", what, m);
    LLVMDisposeErrorMessage(m);
    return -1;
}

/* Library functions the generated code may call (llvm.exp lowers to expf;
 * loops may become memcpy/memset), bound to this process's definitions so
 * lookup never depends on how the executable was linked. */
static int define_runtime_symbols(LLVMOrcLLJITRef j, ntc_err *err)
{
    static const struct {
        const char *name;
        void *addr;
    } syms[] = {
        {"expf", (void *)expf}, {"sqrtf", (void *)sqrtf}, {"memcpy", (void *)memcpy},
        {"memset", (void *)memset}, {"memmove", (void *)memmove}, {"sched_yield", (void *)sched_yield},
    };
    enum { N = sizeof syms / sizeof syms[0] };
    LLVMOrcCSymbolMapPair pairs[N];
    for (int i = 0; i < N; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j, syms[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)syms[i].addr;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, N);
    LLVMErrorRef e = LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(j), mu);
    if (e) {
        LLVMOrcDisposeMaterializationUnit(mu);
        return llvm_fail(e, "cannot define runtime symbols in the JIT", err);
    }
    return 0;
}

static int link_object(ntc_jit *j, const ntc_cg_result *r, ntc_err *err)
{
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->lljit, NULL);
    if (e)
        return llvm_fail(e, "cannot create the LLVM JIT", err);
    if (define_runtime_symbols(j->lljit, err))
        return -1;
    LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(r->obj, r->obj_len, "ntc-task.o");
    e = LLVMOrcLLJITAddObjectFile(j->lljit, LLVMOrcLLJITGetMainJITDylib(j->lljit), buf);
    if (e)
        return llvm_fail(e, "cannot add the generated object to the JIT", err);
    LLVMOrcExecutorAddress addr = 0;
    e = LLVMOrcLLJITLookup(j->lljit, &addr, NTC_CG_ENTRY);
    if (e)
        return llvm_fail(e, "cannot link the generated code", err);
    j->run = (task_fn)(uintptr_t)addr;
    e = LLVMOrcLLJITLookup(j->lljit, &addr, NTC_CG_ENTRY_TEAM);
    if (e)
        return llvm_fail(e, "cannot link the generated code", err);
    j->run_team = (team_fn)(uintptr_t)addr;
    return 0;
}

ntc_jit *ntc_jit_compile(ntc_graph *g, ntc_err *err)
{
    ntc_cg_opts o = {.keep_ir = getenv("NTC_JIT_KEEP_IR") != NULL};
    ntc_cg_result r;
    if (ntc_codegen(g, &o, &r, err))
        return NULL;
    ntc_jit *j = ntc_calloc(1, sizeof *j);
    if (!j) {
        ntc_cg_result_free(&r);
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    j->in_numel = r.in_numel, j->out_numel = r.out_numel, j->ws_floats = r.ws_floats;
    j->t_ir = r.t_ir, j->t_opt = r.t_opt, j->t_emit = r.t_emit;
    j->ir = r.ir;
    r.ir = NULL;
    const char *threads = getenv("NTC_JIT_THREADS");
    j->threads = ntc_pool_default_threads(threads ? atoi(threads) : 0);
    j->params = ntc_calloc((size_t)r.n_params + 1, sizeof *j->params);
    j->packed = ntc_calloc((size_t)r.n_params + 1, sizeof *j->packed);
    j->n_params = r.n_params;
    size_t ws_bytes = sizeof(float) * (size_t)(j->ws_floats + 16) * (size_t)j->threads;
    j->ws_block = ntc_malloc(ws_bytes + 64);
    j->ws = j->ws_block ? (float *)(((uintptr_t)j->ws_block + 63) & ~(uintptr_t)63) : NULL;
    if (!j->params || !j->packed || !j->ws) {
        ntc_error(err, NULL, 0, "out of memory");
        goto fail;
    }
    if (!(j->pool = ntc_pool_new(j->threads, err)))
        goto fail;
    for (int i = 0; i < r.n_params; i++) {
        int64_t dims[8];
        int rank;
        if (!(j->params[i] = ntc_cg_param_data(g, &r, i, &j->packed[i], dims, &rank))) {
            ntc_error(err, NULL, 0, "out of memory");
            goto fail;
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (link_object(j, &r, err))
        goto fail;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    j->t_emit += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    ntc_cg_result_free(&r);
    return j;
fail:
    ntc_cg_result_free(&r);
    ntc_jit_free(j);
    return NULL;
}

typedef struct {
    ntc_jit *j;
    const float *input;
    float *output;
    int batch, slices;
} run_ctx;

/* Slice `task` of the batch, contiguous items, on its own workspace. */
static void run_slice(void *ctx, int task)
{
    run_ctx *rc = ctx;
    int lo = (int)((int64_t)rc->batch * task / rc->slices), hi = (int)((int64_t)rc->batch * (task + 1) / rc->slices);
    if (hi <= lo)
        return;
    ntc_jit *j = rc->j;
    j->run(j->params, rc->input + (int64_t)lo * j->in_numel, rc->output + (int64_t)lo * j->out_numel, hi - lo,
           j->ws + (size_t)task * (size_t)(j->ws_floats + 16));
}

/* Thread `task` of the team, on every item in turn (values in thread 0's
 * workspace, scratch in its own). */
static void run_team(void *ctx, int task)
{
    run_ctx *rc = ctx;
    ntc_jit *j = rc->j;
    for (int i = 0; i < rc->batch; i++)
        j->run_team(j->params, rc->input + (int64_t)i * j->in_numel, rc->output + (int64_t)i * j->out_numel, j->ws,
                    j->ws + (size_t)task * (size_t)(j->ws_floats + 16), task, rc->slices, j->barrier);
}

/* Calls between two timings of the mode not in use: from PROBE_GAP,
 * doubled (up to PROBE_GAP_MAX) each time that mode is still slower. */
#define PROBE_GAP 16
#define PROBE_GAP_MAX 4096

/* Whether a batch smaller than the pool runs on the team or on one thread.
 * The team divides each convolution's work, but it meets at a barrier
 * after every step: on an idle machine that costs well under a
 * microsecond, on one with more runnable threads than CPUs a barrier
 * waits for a thread the kernel has not scheduled, and one thread is
 * faster.  So both are timed, the faster is used, and the other is timed
 * again now and then (the load changes). */
static bool choose_team(ntc_jit *j, bool *probe)
{
    unsigned long k = j->small_calls++;
    *probe = false;
    if (j->team_s == 0 || j->solo_s == 0)
        return j->team_s == 0;
    bool team = j->team_s <= j->solo_s;
    if (k < j->next_probe)
        return team;
    *probe = true;
    return !team;
}

/* After a probe: back off while the probed mode stays slower. */
static void probed(ntc_jit *j, bool team)
{
    bool lost = team ? j->team_s > j->solo_s : j->solo_s >= j->team_s;
    j->probe_gap = !lost ? PROBE_GAP : j->probe_gap * 2 > PROBE_GAP_MAX ? PROBE_GAP_MAX : j->probe_gap * 2;
    j->next_probe = j->small_calls + j->probe_gap;
}

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int ntc_jit_run(ntc_jit *j, const float *input, int batch, float *output, ntc_err *err)
{
    if (batch < 0)
        return ntc_error(err, NULL, 0, "batch must be >= 0, got %d", batch);
    run_ctx rc = {j, input, output, batch, batch >= j->threads ? j->threads : 1};
    if (batch == 0 || batch >= j->threads) {
        /* one slice of items per thread */
        if (rc.slices == 1)
            run_slice(&rc, 0);
        else
            ntc_pool_run(j->pool, rc.slices, run_slice, &rc);
        return 0;
    }
    /* Fewer items than threads: the whole team on each item (the
     * convolutions split their work), or one thread. */
    bool probe, team = choose_team(j, &probe);
    double t0 = seconds();
    if (team) {
        rc.slices = j->threads;
        ntc_pool_run(j->pool, rc.slices, run_team, &rc);
    } else {
        run_slice(&rc, 0);
    }
    double per_item = (seconds() - t0) / batch, *avg = team ? &j->team_s : &j->solo_s;
    /* A probe replaces the old figure (the load may have changed since). */
    *avg = *avg == 0 || probe ? per_item : 0.75 * *avg + 0.25 * per_item;
    if (probe || j->probe_gap == 0)
        probed(j, team);
    return 0;
}

void ntc_jit_free(ntc_jit *j)
{
    if (!j)
        return;
    if (j->lljit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->lljit);
        if (e)
            LLVMConsumeError(e);
    }
    ntc_pool_free(j->pool);
    ntc_free(j->ws_block);
    for (int i = 0; j->packed && i < j->n_params; i++)
        ntc_free(j->packed[i]);
    ntc_free(j->packed);
    ntc_free(j->params);
    ntc_free(j->ir);
    ntc_free(j);
}

int64_t ntc_jit_input_numel(const ntc_jit *j) { return j->in_numel; }

int64_t ntc_jit_output_numel(const ntc_jit *j) { return j->out_numel; }

void ntc_jit_times(const ntc_jit *j, double *ir, double *opt, double *emit)
{
    if (ir)
        *ir = j->t_ir;
    if (opt)
        *opt = j->t_opt;
    if (emit)
        *emit = j->t_emit;
}

const char *ntc_jit_ir(const ntc_jit *j) { return j->ir; }
