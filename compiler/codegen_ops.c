/* Emitters for every op but conv2d (codegen_conv.c) and the windowed
 * pools (codegen_pool.c): plain loop nests over one batch item with every
 * extent a constant.  They are memory-bound, so they stay simple and
 * leave vectorisation to LLVM (pointer arguments are noalias; reductions
 * mark their additions reassociable).  Semantics follow the interpreter's
 * kernels in runtime/kern_*.c. */
#include "codegen.h"

#include <math.h>

static int64_t item_numel(const ntc_shape *s) { return ntc_shape_numel(s); }

/* Product of dims[from..to) of a shape whose dims[0] is the batch. */
static int64_t dims_product(const ntc_shape *s, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++)
        p *= s->dims[i];
    return p;
}

int cg_emit_relu(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    cg_loop i = cg_for(c, cg_i64(c, 0), cg_i64(c, item_numel(nd->out_shape)), 1, "i");
    cg_store(c, cg_relu(c, cg_load(c, nd->in[0], i.iv)), nd->out, i.iv);
    cg_end(c, &i);
    return 0;
}

/* Left-to-right sum, as the interpreter adds. */
int cg_emit_add(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    cg_loop i = cg_for(c, cg_i64(c, 0), cg_i64(c, item_numel(nd->out_shape)), 1, "i");
    LLVMValueRef acc = cg_load(c, nd->in[0], i.iv);
    for (int j = 1; j < nd->n->n_in; j++)
        acc = cg_fadd(c, acc, cg_load(c, nd->in[j], i.iv), false);
    cg_store(c, acc, nd->out, i.iv);
    cg_end(c, &i);
    return 0;
}

int cg_emit_flatten(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    cg_loop i = cg_for(c, cg_i64(c, 0), cg_i64(c, item_numel(nd->out_shape)), 1, "i");
    cg_store(c, cg_load(c, nd->in[0], i.iv), nd->out, i.iv);
    cg_end(c, &i);
    return 0;
}

/* softmax(alpha) into scalars w[j]: exp(a_j - max) / sum, computed on
 * every call so the weights stay data. */
static void softmax_scalars(cg *c, LLVMValueRef alpha, int n, LLVMValueRef *w)
{
    LLVMValueRef a[CG_MAX_INPUTS], m = NULL, sum = NULL;
    for (int j = 0; j < n; j++) {
        a[j] = cg_load(c, alpha, cg_i64(c, j));
        m = j ? cg_maxnum(c, m, a[j]) : a[j];
    }
    for (int j = 0; j < n; j++) {
        w[j] = cg_intrinsic1(c, "llvm.exp", LLVMBuildFSub(c->b, a[j], m, ""));
        sum = j ? cg_fadd(c, sum, w[j], false) : w[j];
    }
    for (int j = 0; j < n; j++)
        w[j] = LLVMBuildFDiv(c->b, w[j], sum, "");
}

int cg_emit_mix(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    int n = nd->n->n_in;
    LLVMValueRef w[CG_MAX_INPUTS];
    softmax_scalars(c, nd->par[0], n, w);
    cg_loop i = cg_for(c, cg_i64(c, 0), cg_i64(c, item_numel(nd->out_shape)), 1, "i");
    LLVMValueRef acc = cg_fmul(c, w[0], cg_load(c, nd->in[0], i.iv));
    for (int j = 1; j < n; j++)
        acc = cg_fadd(c, acc, cg_fmul(c, w[j], cg_load(c, nd->in[j], i.iv)), false);
    cg_store(c, nd->relu ? cg_relu(c, acc) : acc, nd->out, i.iv);   /* a fused relu (codegen_plan.c) */
    cg_end(c, &i);
    return 0;
}

/* y = x * g + (bias - mean * g) with g = scale / sqrt(var + eps), per
 * channel (axis 1), as the interpreter's bn_gain/bn_apply. */
int cg_emit_batchnorm(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    const ntc_shape *s = nd->in_shape;
    int64_t inner = dims_product(s, 2, s->rank);
    cg_loop ch = cg_for(c, cg_i64(c, 0), cg_i64(c, s->dims[1]), 1, "c");
    LLVMValueRef var = cg_load(c, nd->par[3], ch.iv);
    LLVMValueRef sd = cg_intrinsic1(c, "llvm.sqrt", cg_fadd(c, var, cg_f32(c, nd->n->a.epsilon), false));
    LLVMValueRef gain = LLVMBuildFDiv(c->b, cg_load(c, nd->par[0], ch.iv), sd, "");
    LLVMValueRef shift = LLVMBuildFSub(c->b, cg_load(c, nd->par[1], ch.iv),
                                       cg_fmul(c, cg_load(c, nd->par[2], ch.iv), gain), "");
    LLVMValueRef base = cg_mul(c, ch.iv, cg_i64(c, inner));
    cg_loop i = cg_for(c, cg_i64(c, 0), cg_i64(c, inner), 1, "i");
    LLVMValueRef at = cg_add(c, base, i.iv);
    cg_store(c, cg_fadd(c, cg_fmul(c, cg_load(c, nd->in[0], at), gain), shift, false), nd->out, at);
    cg_end(c, &i);
    cg_end(c, &ch);
    return 0;
}

/* Sum of n floats at p[base..base+n) (reassociable, so it vectorises). */
static LLVMValueRef emit_sum(cg *c, LLVMValueRef p, LLVMValueRef base, int64_t n, LLVMValueRef init)
{
    cg_loop i;
    cg_for_carry(c, &i, cg_i64(c, 0), cg_i64(c, n), 1, "i", 1, &init);
    LLVMValueRef next = cg_fadd(c, i.carry[0], cg_load(c, p, cg_add(c, base, i.iv)), true);
    cg_end_carry(c, &i, &next);
    return i.carry[0];
}

int cg_emit_global_avgpool(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    const int64_t hw = nd->in_shape->dims[2] * nd->in_shape->dims[3];
    cg_loop p = cg_for(c, cg_i64(c, 0), cg_i64(c, nd->in_shape->dims[1]), 1, "plane");
    LLVMValueRef sum = emit_sum(c, nd->in[0], cg_mul(c, p.iv, cg_i64(c, hw)), hw, cg_f32(c, 0));
    cg_store(c, LLVMBuildFDiv(c->b, sum, cg_f32(c, (double)hw), ""), nd->out, p.iv);
    cg_end(c, &p);
    return 0;
}

/* y[u] = b[u] + sum_i W[u, i] x[i] */
int cg_emit_linear(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    const int64_t in = nd->in_shape->dims[1], units = nd->n->a.units;
    cg_loop u = cg_for(c, cg_i64(c, 0), cg_i64(c, units), 1, "u");
    LLVMValueRef row = cg_mul(c, u.iv, cg_i64(c, in));
    LLVMValueRef zero = cg_f32(c, 0);
    cg_loop i;
    cg_for_carry(c, &i, cg_i64(c, 0), cg_i64(c, in), 1, "i", 1, &zero);
    LLVMValueRef prod = cg_fmul(c, cg_load(c, nd->par[0], cg_add(c, row, i.iv)), cg_load(c, nd->in[0], i.iv));
    LLVMSetFastMathFlags(prod, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract);
    LLVMValueRef next = cg_fadd(c, i.carry[0], prod, true);
    cg_end_carry(c, &i, &next);
    LLVMValueRef y = i.carry[0];
    if (nd->par[1])
        y = cg_fadd(c, y, cg_load(c, nd->par[1], u.iv), false);
    cg_store(c, y, nd->out, u.iv);
    cg_end(c, &u);
    return 0;
}

/* ONNX Softmax (opset 13) along one axis: exp(x - max) / sum over that
 * axis, for every outer and inner index. */
int cg_emit_softmax(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    const ntc_shape *s = nd->in_shape;
    int axis = nd->n->a.axis < 0 ? nd->n->a.axis + s->rank : nd->n->a.axis;
    const int64_t outer = dims_product(s, 1, axis), n = s->dims[axis], inner = dims_product(s, axis + 1, s->rank);
    cg_loop o = cg_for(c, cg_i64(c, 0), cg_i64(c, outer), 1, "outer");
    cg_loop in = cg_for(c, cg_i64(c, 0), cg_i64(c, inner), 1, "inner");
    LLVMValueRef base = cg_add(c, cg_mul(c, o.iv, cg_i64(c, n * inner)), in.iv);
    LLVMValueRef stride = cg_i64(c, inner);

    /* max */
    LLVMValueRef ninf = cg_f32(c, -INFINITY);
    cg_loop k;
    cg_for_carry(c, &k, cg_i64(c, 0), cg_i64(c, n), 1, "k", 1, &ninf);
    LLVMValueRef m_next = cg_maxnum(c, k.carry[0], cg_load(c, nd->in[0], cg_add(c, base, cg_mul(c, k.iv, stride))));
    cg_end_carry(c, &k, &m_next);
    LLVMValueRef m = k.carry[0];

    /* exp and sum */
    LLVMValueRef zero = cg_f32(c, 0);
    cg_loop k2;
    cg_for_carry(c, &k2, cg_i64(c, 0), cg_i64(c, n), 1, "k", 1, &zero);
    LLVMValueRef at = cg_add(c, base, cg_mul(c, k2.iv, stride));
    LLVMValueRef e = cg_intrinsic1(c, "llvm.exp", LLVMBuildFSub(c->b, cg_load(c, nd->in[0], at), m, ""));
    cg_store(c, e, nd->out, at);
    LLVMValueRef sum_next = cg_fadd(c, k2.carry[0], e, false);
    cg_end_carry(c, &k2, &sum_next);
    LLVMValueRef sum = k2.carry[0];

    /* normalise */
    cg_loop k3 = cg_for(c, cg_i64(c, 0), cg_i64(c, n), 1, "k");
    LLVMValueRef at3 = cg_add(c, base, cg_mul(c, k3.iv, stride));
    cg_store(c, LLVMBuildFDiv(c->b, cg_load(c, nd->out, at3), sum, ""), nd->out, at3);
    cg_end(c, &k3);

    cg_end(c, &in);
    cg_end(c, &o);
    return 0;
}
