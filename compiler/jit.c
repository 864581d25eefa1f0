/* The JIT: the object file from ntc_codegen linked in memory by ORC LLJIT,
 * run over batch slices on ntc's thread pool (runtime/pool.h), one
 * workspace per thread. */
#include "ntc/jit.h"

#include "compiler/codegen.h"
#include "runtime/pool.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void (*task_fn)(const float *const *params, const float *input, float *output, int64_t batch,
                        float *workspace);

struct ntc_jit {
    LLVMOrcLLJITRef lljit;
    task_fn run;
    const float **params;
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
        {"memset", (void *)memset}, {"memmove", (void *)memmove},
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
    j->threads = ntc_pool_default_threads(0);
    j->params = ntc_calloc((size_t)r.n_params + 1, sizeof *j->params);
    size_t ws_bytes = sizeof(float) * (size_t)(j->ws_floats + 16) * (size_t)j->threads;
    j->ws_block = ntc_malloc(ws_bytes + 64);
    j->ws = j->ws_block ? (float *)(((uintptr_t)j->ws_block + 63) & ~(uintptr_t)63) : NULL;
    if (!j->params || !j->ws) {
        ntc_error(err, NULL, 0, "out of memory");
        goto fail;
    }
    if (!(j->pool = ntc_pool_new(j->threads, err)))
        goto fail;
    for (int i = 0; i < r.n_params; i++)
        j->params[i] = g->values[r.params[i]].data;
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

int ntc_jit_run(ntc_jit *j, const float *input, int batch, float *output, ntc_err *err)
{
    if (batch < 0)
        return ntc_error(err, NULL, 0, "batch must be >= 0, got %d", batch);
    run_ctx rc = {j, input, output, batch, batch < j->threads ? (batch ? batch : 1) : j->threads};
    if (rc.slices == 1)
        run_slice(&rc, 0);
    else
        ntc_pool_run(j->pool, rc.slices, run_slice, &rc);
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
