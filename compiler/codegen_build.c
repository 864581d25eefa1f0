/* Small helpers over the LLVM C API builder that the emitters share: counted
 * loops, float pointer arithmetic, vectors and intrinsics.  Indices are
 * i64, data is float. */
#include "codegen.h"

#include <string.h>

void cg_for_carry(cg *c, cg_loop *l, LLVMValueRef lo, LLVMValueRef hi, int64_t step, const char *name,
                  int n, const LLVMValueRef *init)
{
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
    l->header = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
    l->exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
    l->step = cg_i64(c, step);
    l->n_carry = n;
    LLVMBuildBr(c->b, l->header);
    LLVMPositionBuilderAtEnd(c->b, l->header);
    l->iv = LLVMBuildPhi(c->b, c->i64, name);
    LLVMAddIncoming(l->iv, &lo, &pre, 1);
    for (int k = 0; k < n; k++) {
        l->carry[k] = LLVMBuildPhi(c->b, LLVMTypeOf(init[k]), "acc");
        LLVMAddIncoming(l->carry[k], (LLVMValueRef *)&init[k], &pre, 1);
    }
    LLVMValueRef more = LLVMBuildICmp(c->b, LLVMIntSLT, l->iv, hi, "");
    LLVMBuildCondBr(c->b, more, body, l->exit);
    LLVMPositionBuilderAtEnd(c->b, body);
}

void cg_end_carry(cg *c, cg_loop *l, const LLVMValueRef *next)
{
    LLVMValueRef iv_next = LLVMBuildNSWAdd(c->b, l->iv, l->step, "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
    LLVMBuildBr(c->b, l->header);
    LLVMAddIncoming(l->iv, &iv_next, &latch, 1);
    for (int k = 0; k < l->n_carry; k++)
        LLVMAddIncoming(l->carry[k], (LLVMValueRef *)&next[k], &latch, 1);
    LLVMPositionBuilderAtEnd(c->b, l->exit);
}

cg_loop cg_for(cg *c, LLVMValueRef lo, LLVMValueRef hi, int64_t step, const char *name)
{
    cg_loop l;
    cg_for_carry(c, &l, lo, hi, step, name, 0, NULL);
    return l;
}

void cg_end(cg *c, cg_loop *l) { cg_end_carry(c, l, NULL); }

LLVMValueRef cg_i64(cg *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }

LLVMValueRef cg_f32(cg *c, double v) { return LLVMConstReal(c->f32, v); }

LLVMValueRef cg_gep(cg *c, LLVMValueRef p, LLVMValueRef i)
{
    return LLVMBuildInBoundsGEP2(c->b, c->f32, p, &i, 1, "");
}

LLVMValueRef cg_load(cg *c, LLVMValueRef p, LLVMValueRef i)
{
    LLVMValueRef v = LLVMBuildLoad2(c->b, c->f32, cg_gep(c, p, i), "");
    LLVMSetAlignment(v, 4);
    return v;
}

void cg_store(cg *c, LLVMValueRef v, LLVMValueRef p, LLVMValueRef i)
{
    LLVMSetAlignment(LLVMBuildStore(c->b, v, cg_gep(c, p, i)), 4);
}

/* Vectors are loaded and stored unaligned: rows of odd widths start
 * anywhere, and unaligned moves cost the same as aligned ones on the CPUs
 * with wide vectors. */
LLVMValueRef cg_vload(cg *c, LLVMValueRef p, LLVMValueRef i)
{
    LLVMValueRef v = LLVMBuildLoad2(c->b, c->vec, cg_gep(c, p, i), "");
    LLVMSetAlignment(v, 4);
    return v;
}

void cg_vstore(cg *c, LLVMValueRef v, LLVMValueRef p, LLVMValueRef i)
{
    LLVMSetAlignment(LLVMBuildStore(c->b, v, cg_gep(c, p, i)), 4);
}

LLVMValueRef cg_splat(cg *c, LLVMValueRef scalar)
{
    LLVMValueRef one = LLVMBuildInsertElement(c->b, LLVMGetPoison(c->vec), scalar,
                                              LLVMConstInt(c->i32, 0, 0), "");
    LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(c->i32, (unsigned)c->vw));
    return LLVMBuildShuffleVector(c->b, one, LLVMGetPoison(c->vec), zeros, "");
}

/* Lane k: first + k (i32). */
static LLVMValueRef lane_indices(cg *c, int64_t first)
{
    LLVMValueRef k[64];
    for (int i = 0; i < c->vw; i++)
        k[i] = LLVMConstInt(c->i32, (unsigned long long)(first + i), 1);
    return LLVMConstVector(k, (unsigned)c->vw);
}

LLVMValueRef cg_lane_mask(cg *c, int64_t first, LLVMValueRef lo, LLVMValueRef hi)
{
    LLVMTypeRef v32 = LLVMVectorType(c->i32, (unsigned)c->vw);
    LLVMValueRef idx = lane_indices(c, first), zeros = LLVMConstNull(v32);
    LLVMValueRef lo_v = LLVMBuildInsertElement(c->b, LLVMGetPoison(v32), LLVMBuildTrunc(c->b, lo, c->i32, ""),
                                               LLVMConstInt(c->i32, 0, 0), "");
    LLVMValueRef hi_v = LLVMBuildInsertElement(c->b, LLVMGetPoison(v32), LLVMBuildTrunc(c->b, hi, c->i32, ""),
                                               LLVMConstInt(c->i32, 0, 0), "");
    lo_v = LLVMBuildShuffleVector(c->b, lo_v, LLVMGetPoison(v32), zeros, "");
    hi_v = LLVMBuildShuffleVector(c->b, hi_v, LLVMGetPoison(v32), zeros, "");
    return LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntSGE, idx, lo_v, ""),
                        LLVMBuildICmp(c->b, LLVMIntSLT, idx, hi_v, ""), "");
}

/* &p[i] without inbounds: a masked access may start before or run past
 * the object (its masked-off lanes are never touched). */
static LLVMValueRef gep_any(cg *c, LLVMValueRef p, LLVMValueRef i) { return LLVMBuildGEP2(c->b, c->f32, p, &i, 1, ""); }

LLVMValueRef cg_vload_masked(cg *c, LLVMValueRef p, LLVMValueRef i, LLVMValueRef mask)
{
    const char *name = "llvm.masked.load";
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef t[2] = {c->vec, c->ptr};
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, t, 2);
    LLVMValueRef args[4] = {gep_any(c, p, i), LLVMConstInt(c->i32, 4, 0), mask, LLVMConstNull(c->vec)};
    return LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, t, 2), fn, args, 4, "");
}

void cg_vstore_masked(cg *c, LLVMValueRef v, LLVMValueRef p, LLVMValueRef i, LLVMValueRef mask)
{
    const char *name = "llvm.masked.store";
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef t[2] = {c->vec, c->ptr};
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, t, 2);
    LLVMValueRef args[4] = {v, gep_any(c, p, i), LLVMConstInt(c->i32, 4, 0), mask};
    LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, t, 2), fn, args, 4, "");
}

LLVMValueRef cg_add(cg *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(c->b, a, b, ""); }

LLVMValueRef cg_mul(cg *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(c->b, a, b, ""); }

LLVMValueRef cg_smax(cg *c, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, a, b, ""), a, b, "");
}

LLVMValueRef cg_smin(cg *c, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, a, b, ""), a, b, "");
}

LLVMValueRef cg_fadd(cg *c, LLVMValueRef a, LLVMValueRef b, bool reassoc)
{
    LLVMValueRef r = LLVMBuildFAdd(c->b, a, b, "");
    if (reassoc)
        LLVMSetFastMathFlags(r, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract);
    return r;
}

LLVMValueRef cg_fmul(cg *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(c->b, a, b, ""); }

static LLVMValueRef call_intrinsic(cg *c, const char *name, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef t = LLVMTypeOf(args[0]);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, &t, 1);
    LLVMTypeRef ft = LLVMIntrinsicGetType(c->ctx, id, &t, 1);
    return LLVMBuildCall2(c->b, ft, fn, args, n, "");
}

LLVMValueRef cg_fmuladd(cg *c, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc)
{
    LLVMValueRef args[3] = {a, b, acc};
    return call_intrinsic(c, "llvm.fmuladd", args, 3);
}

LLVMValueRef cg_intrinsic1(cg *c, const char *name, LLVMValueRef x) { return call_intrinsic(c, name, &x, 1); }

LLVMValueRef cg_maxnum(cg *c, LLVMValueRef a, LLVMValueRef b)
{
    LLVMValueRef args[2] = {a, b};
    return call_intrinsic(c, "llvm.maxnum", args, 2);
}

LLVMValueRef cg_relu(cg *c, LLVMValueRef x)
{
    LLVMValueRef zero = LLVMConstNull(LLVMTypeOf(x));
    return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, x, zero, ""), x, zero, "");
}

/* Spins (pause on x86) before a waiter starts yielding its CPU. */
#define CG_BARRIER_SPINS 2000

static LLVMValueRef atomic_load_i32(cg *c, LLVMValueRef p)
{
    LLVMValueRef v = LLVMBuildLoad2(c->b, c->i32, p, "");
    LLVMSetOrdering(v, LLVMAtomicOrderingAcquire);
    LLVMSetAlignment(v, 4);
    return v;
}

LLVMValueRef cg_emit_barrier(cg *c)
{
    LLVMValueRef fn = LLVMGetNamedFunction(c->mod, "team.sync");
    if (fn)
        return fn;
    LLVMTypeRef args[2] = {c->ptr, c->i64};
    fn = LLVMAddFunction(c->mod, "team.sync", LLVMFunctionType(LLVMVoidTypeInContext(c->ctx), args, 2, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    cg_add_attr(c, fn, LLVMAttributeFunctionIndex, "noinline");
    LLVMTypeRef yield_t = LLVMFunctionType(c->i32, NULL, 0, 0);
    LLVMValueRef yield = LLVMGetNamedFunction(c->mod, "sched_yield");
    if (!yield)
        yield = LLVMAddFunction(c->mod, "sched_yield", yield_t);
    bool x86 = !strncmp(LLVMGetTarget(c->mod), "x86_64", 6);

    LLVMValueRef caller = c->fn;
    LLVMBasicBlockRef at = LLVMGetInsertBlock(c->b);
    c->fn = fn;
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->ctx, fn, "entry");
    LLVMBasicBlockRef last = LLVMAppendBasicBlockInContext(c->ctx, fn, "last");
    LLVMBasicBlockRef wait = LLVMAppendBasicBlockInContext(c->ctx, fn, "wait");
    LLVMBasicBlockRef spin = LLVMAppendBasicBlockInContext(c->ctx, fn, "spin");
    LLVMBasicBlockRef give = LLVMAppendBasicBlockInContext(c->ctx, fn, "yield");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(c->ctx, fn, "next");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, fn, "done");
    LLVMPositionBuilderAtEnd(c->b, entry);
    LLVMValueRef count = LLVMGetParam(fn, 0), n = LLVMBuildTrunc(c->b, LLVMGetParam(fn, 1), c->i32, "");
    LLVMValueRef one = LLVMConstInt(c->i32, 1, 0), idx = cg_i64(c, 1);
    LLVMValueRef gen_p = LLVMBuildInBoundsGEP2(c->b, c->i32, count, &idx, 1, "");
    /* The generation is read before arriving: the last arrival bumps it
     * only after everyone has arrived. */
    LLVMValueRef gen = atomic_load_i32(c, gen_p);
    LLVMValueRef before = LLVMBuildAtomicRMW(c->b, LLVMAtomicRMWBinOpAdd, count, one, LLVMAtomicOrderingAcquireRelease, 0);
    LLVMValueRef is_last = LLVMBuildICmp(c->b, LLVMIntEQ, LLVMBuildAdd(c->b, before, one, ""), n, "");
    LLVMBuildCondBr(c->b, is_last, last, wait);

    /* The last arrival resets the count, then releases the others. */
    LLVMPositionBuilderAtEnd(c->b, last);
    LLVMValueRef reset = LLVMBuildStore(c->b, LLVMConstInt(c->i32, 0, 0), count);
    LLVMSetOrdering(reset, LLVMAtomicOrderingMonotonic);
    LLVMSetAlignment(reset, 4);
    LLVMBuildAtomicRMW(c->b, LLVMAtomicRMWBinOpAdd, gen_p, one, LLVMAtomicOrderingRelease, 0);
    LLVMBuildBr(c->b, done);

    LLVMPositionBuilderAtEnd(c->b, wait);
    LLVMValueRef spins = LLVMBuildPhi(c->b, c->i32, "spins");
    LLVMValueRef zero = LLVMConstInt(c->i32, 0, 0);
    LLVMAddIncoming(spins, &zero, &entry, 1);
    LLVMValueRef moved = LLVMBuildICmp(c->b, LLVMIntNE, atomic_load_i32(c, gen_p), gen, "");
    LLVMBuildCondBr(c->b, moved, done, spin);

    LLVMPositionBuilderAtEnd(c->b, spin);
    LLVMValueRef more = LLVMBuildAdd(c->b, spins, one, "");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntUGT, more, LLVMConstInt(c->i32, CG_BARRIER_SPINS, 0), ""),
                    give, next);
    LLVMPositionBuilderAtEnd(c->b, give);
    LLVMBuildCall2(c->b, yield_t, yield, NULL, 0, "");
    LLVMBuildBr(c->b, next);
    LLVMPositionBuilderAtEnd(c->b, next);
    if (x86) {
        unsigned id = LLVMLookupIntrinsicID("llvm.x86.sse2.pause", strlen("llvm.x86.sse2.pause"));
        LLVMValueRef pause = LLVMGetIntrinsicDeclaration(c->mod, id, NULL, 0);
        LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, NULL, 0), pause, NULL, 0, "");
    }
    LLVMAddIncoming(spins, &more, &next, 1);
    LLVMBuildBr(c->b, wait);

    LLVMPositionBuilderAtEnd(c->b, done);
    LLVMBuildRetVoid(c->b);
    c->fn = caller;
    LLVMPositionBuilderAtEnd(c->b, at);
    return fn;
}
