/* Pooling emitters: maxpool and avgpool (global_avgpool is in
 * codegen_ops.c).  Semantics follow runtime/kern_pool.c.
 *
 * The general form walks each output's window, clipped to the input, with
 * scalar loops.  Max pooling takes a vector form when it can (the
 * stride-2 max pools of NetTailor's proxies; ResNet stems): per output
 * row, vw outputs at a time, each tap of the window one masked load of the
 * input row (column stride 2: two loads and the even lanes shuffled out).
 *   - Columns outside the input are masked out of the comparison, so
 *     padding never wins.
 *   - Rows outside the input are clamped to the nearest input row.  Every
 *     window meets the input (pads are smaller than the kernel; ceil mode
 *     drops windows that start in the end padding), so a clamped row is
 *     the window's first or last input row once more: the max is the same,
 *     and equal values still resolve to the first in window order.
 * On the pruned demo student the scalar form was 9% of the time at batch
 * 64, for 0.1% of the MACs. */
#include "codegen.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* One axis of a pooling window: input rows [lo, hi) and, for
 * count_include_pad, the extent inside the padded input. */
typedef struct {
    LLVMValueRef lo, hi, padded;
} cg_span;

static cg_span window_span(cg *c, LLVMValueRef o, int stride, int kernel, int pad_begin, int pad_end,
                           int64_t size)
{
    LLVMValueRef start = LLVMBuildNSWSub(c->b, cg_mul(c, o, cg_i64(c, stride)), cg_i64(c, pad_begin), "");
    LLVMValueRef end = cg_add(c, start, cg_i64(c, kernel));
    cg_span s;
    s.lo = cg_smax(c, start, cg_i64(c, 0));
    s.hi = cg_smin(c, end, cg_i64(c, size));
    s.padded = LLVMBuildNSWSub(c->b, cg_smin(c, end, cg_i64(c, size + pad_end)), start, "");
    return s;
}

/* Max: padding never wins, NaN propagates (the interpreter's rule:
 * acc = v > acc || isnan(v) ? v : acc).  Average: divides by the elements
 * inside the input, or inside the padded input with count_include_pad. */
static int emit_pool(cg *c, const cg_node *nd, bool is_max)
{
    const ntc_attrs *a = &nd->n->a;
    const ntc_shape *is = nd->in_shape, *os = nd->out_shape;
    const int64_t H = is->dims[2], W = is->dims[3], OH = os->dims[2], OW = os->dims[3];
    cg_loop p = cg_for(c, cg_i64(c, 0), cg_i64(c, is->dims[1]), 1, "plane");
    LLVMValueRef x = cg_gep(c, nd->in[0], cg_mul(c, p.iv, cg_i64(c, H * W)));
    LLVMValueRef y = cg_gep(c, nd->out, cg_mul(c, p.iv, cg_i64(c, OH * OW)));
    cg_loop oh = cg_for(c, cg_i64(c, 0), cg_i64(c, OH), 1, "oh");
    cg_span r = window_span(c, oh.iv, a->stride[0], a->kernel[0], a->pad[0], a->pad[2], H);
    cg_loop ow = cg_for(c, cg_i64(c, 0), cg_i64(c, OW), 1, "ow");
    cg_span s = window_span(c, ow.iv, a->stride[1], a->kernel[1], a->pad[1], a->pad[3], W);

    LLVMValueRef init = cg_f32(c, is_max ? -INFINITY : 0.0);
    cg_loop ih, iw;
    cg_for_carry(c, &ih, r.lo, r.hi, 1, "ih", 1, &init);
    LLVMValueRef row = cg_mul(c, ih.iv, cg_i64(c, W));
    cg_for_carry(c, &iw, s.lo, s.hi, 1, "iw", 1, ih.carry);
    LLVMValueRef acc = iw.carry[0];
    LLVMValueRef v = cg_load(c, x, cg_add(c, row, iw.iv));
    LLVMValueRef next;
    if (is_max) {
        LLVMValueRef take = LLVMBuildOr(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, v, acc, ""),
                                        LLVMBuildFCmp(c->b, LLVMRealUNO, v, v, ""), "");
        next = LLVMBuildSelect(c->b, take, v, acc, "");
    } else {
        next = cg_fadd(c, acc, v, false);
    }
    cg_end_carry(c, &iw, &next);
    cg_end_carry(c, &ih, iw.carry);
    LLVMValueRef result = ih.carry[0];
    if (!is_max) {
        LLVMValueRef count = a->count_include_pad ? cg_mul(c, r.padded, s.padded)
                                                  : cg_mul(c, LLVMBuildNSWSub(c->b, r.hi, r.lo, ""),
                                                           LLVMBuildNSWSub(c->b, s.hi, s.lo, ""));
        result = LLVMBuildFDiv(c->b, result, LLVMBuildSIToFP(c->b, count, c->f32, ""), "");
    }
    cg_store(c, result, y, cg_add(c, cg_mul(c, oh.iv, cg_i64(c, OW)), ow.iv));
    cg_end(c, &ow);
    cg_end(c, &oh);
    cg_end(c, &p);
    return 0;
}

/* Lanes l in [0, vw) with lo <= first + step * l < hi: a constant mask. */
static LLVMValueRef const_mask(cg *c, int64_t first, int64_t step, int64_t lo, int64_t hi, bool *any)
{
    LLVMValueRef k[64];
    LLVMTypeRef i1 = LLVMInt1TypeInContext(c->ctx);
    *any = false;
    for (int l = 0; l < c->vw; l++) {
        int64_t at = first + step * l;
        k[l] = LLVMConstInt(i1, at >= lo && at < hi, 0);
        *any |= at >= lo && at < hi;
    }
    return LLVMConstVector(k, (unsigned)c->vw);
}

/* Whether max pooling takes the vector form: column stride 1 or 2, rows
 * of at most 16 vectors and windows of at most 64 taps (the code is
 * unrolled over both), every window's rows meeting the input. */
static bool max_vector_form(const cg *c, const ntc_attrs *a, int64_t H, int64_t OH, int64_t OW)
{
    return (a->stride[1] == 1 || a->stride[1] == 2) && OW <= 16 * (int64_t)c->vw &&
           a->kernel[0] * a->kernel[1] <= 64 && a->pad[0] < a->kernel[0] &&
           (OH - 1) * a->stride[0] - a->pad[0] < H;
}

static int emit_max_vector(cg *c, const cg_node *nd)
{
    const ntc_attrs *a = &nd->n->a;
    const ntc_shape *is = nd->in_shape, *os = nd->out_shape;
    const int64_t H = is->dims[2], W = is->dims[3], OH = os->dims[2], OW = os->dims[3];
    const int KH = a->kernel[0], KW = a->kernel[1], SW = a->stride[1], vw = c->vw;
    LLVMValueRef even[64];
    for (int l = 0; l < vw; l++)
        even[l] = LLVMConstInt(c->i32, (unsigned long long)(2 * l), 0);
    LLVMValueRef even_lanes = LLVMConstVector(even, (unsigned)vw);
    LLVMValueRef ninf = cg_splat(c, cg_f32(c, -INFINITY));
    /* the step's name says which form it is (for profiles and tests) */
    size_t len;
    const char *name = LLVMGetValueName2(c->fn, &len);
    char vector_name[128];
    snprintf(vector_name, sizeof vector_name, "%.*s.vector", (int)len, name);
    LLVMSetValueName2(c->fn, vector_name, strlen(vector_name));

    cg_loop p = cg_for(c, cg_i64(c, 0), cg_i64(c, is->dims[1]), 1, "plane");
    LLVMValueRef x = cg_gep(c, nd->in[0], cg_mul(c, p.iv, cg_i64(c, H * W)));
    LLVMValueRef y = cg_gep(c, nd->out, cg_mul(c, p.iv, cg_i64(c, OH * OW)));
    cg_loop oh = cg_for(c, cg_i64(c, 0), cg_i64(c, OH), 1, "oh");
    LLVMValueRef row[64];
    for (int kh = 0; kh < KH; kh++) {
        LLVMValueRef ih = cg_add(c, cg_mul(c, oh.iv, cg_i64(c, a->stride[0])), cg_i64(c, kh - a->pad[0]));
        row[kh] = cg_mul(c, cg_smin(c, cg_smax(c, ih, cg_i64(c, 0)), cg_i64(c, H - 1)), cg_i64(c, W));
    }
    for (int64_t ow0 = 0; ow0 < OW; ow0 += vw) {
        LLVMValueRef acc = ninf;
        bool any;
        for (int kh = 0; kh < KH; kh++)
            for (int kw = 0; kw < KW; kw++) {
                /* lane l reads column first + SW * l */
                int64_t first = ow0 * SW - a->pad[1] + kw;
                LLVMValueRef valid = const_mask(c, first, SW, 0, W, &any);
                if (!any)
                    continue;
                LLVMValueRef at = cg_add(c, row[kh], cg_i64(c, first)), v;
                if (SW == 1) {
                    v = cg_vload_masked(c, x, at, valid);
                } else {
                    bool any_lo, any_hi;
                    LLVMValueRef m_lo = const_mask(c, first, 1, 0, W, &any_lo);
                    LLVMValueRef m_hi = const_mask(c, first + vw, 1, 0, W, &any_hi);
                    LLVMValueRef lo = any_lo ? cg_vload_masked(c, x, at, m_lo) : ninf;
                    LLVMValueRef hi = any_hi ? cg_vload_masked(c, x, cg_add(c, at, cg_i64(c, vw)), m_hi) : ninf;
                    v = LLVMBuildShuffleVector(c->b, lo, hi, even_lanes, "");
                }
                LLVMValueRef take = LLVMBuildOr(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, v, acc, ""),
                                                LLVMBuildFCmp(c->b, LLVMRealUNO, v, v, ""), "");
                acc = LLVMBuildSelect(c->b, LLVMBuildAnd(c->b, valid, take, ""), v, acc, "");
            }
        LLVMValueRef out = cg_add(c, cg_mul(c, oh.iv, cg_i64(c, OW)), cg_i64(c, ow0));
        cg_vstore_masked(c, acc, y, out, const_mask(c, ow0, 1, 0, OW, &any));
    }
    cg_end(c, &oh);
    cg_end(c, &p);
    return 0;
}

int cg_emit_maxpool(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    if (max_vector_form(c, &nd->n->a, nd->in_shape->dims[2], nd->out_shape->dims[2], nd->out_shape->dims[3]))
        return emit_max_vector(c, nd);
    return emit_pool(c, nd, true);
}

int cg_emit_avgpool(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    return emit_pool(c, nd, false);
}
