/* runtime/kernels.h - the runtime's column of the ops table: one kernel row
 * per op of ntc/ops.def, internal to libntc (the executor and the tests use
 * it; users go through ntc/runtime.h).
 *
 * Every kernel works on float32 tensors laid out batch-major and C-ordered
 * (NCHW for images).  A call handles `batch` items; the executor splits a
 * batch into slices and calls the kernel once per slice, so a kernel must
 * never assume it sees the whole batch, and each item's result must not
 * depend on which other items share the call (this is what makes results
 * equal across batch splits).
 *
 * The table (kern_table.c) is built from ops.def with the X-macro: a row
 * of ops.def without its fwd_<op> kernel does not compile. */
#ifndef NTC_RUNTIME_KERNELS_H
#define NTC_RUNTIME_KERNELS_H

#include "ntc/ir.h"

/* Everything a kernel sees for one call.  Shapes are the concrete shapes
 * of this call: dims[0] == batch (never NTC_BATCH). */
typedef struct ntc_kargs {
    const ntc_node *node;            /* op and attributes */
    int batch;                       /* items in this call */
    int n_in;
    const float *const *in;          /* n_in activation inputs */
    const ntc_shape *in_shape;       /* their shapes */
    const float *par[NTC_MAX_PARAMS];/* parameter data per slot of the op's row, NULL if absent */
    const ntc_shape *par_shape;      /* NTC_MAX_PARAMS shapes (rank 0 if absent) */
    float *out;                      /* output, never aliasing an input */
    ntc_shape out_shape;
    float *work;                     /* scratch of work_<op>() floats, private to this call */
    /* Threads this call may split its own work over (ntc_pool_run), when
     * the batch is too small to split (batch 1 on two cores); NULL: run
     * on the calling thread only.  Kernels that ignore it stay correct. */
    struct ntc_pool *team;
    /* Backward only, NULL elsewhere: per input j, whether grad_in[j] holds
     * no gradient yet, so the kernel must overwrite it (contents
     * undefined) instead of accumulating.  Set only for the ops for which
     * ntc_bwd_overwrites() holds; the executor zeroes the others' first. */
    const bool *gin_fresh;
} ntc_kargs;

/* Forward: writes k->out from k->in and k->par. */
typedef void (*ntc_fwd_fn)(const ntc_kargs *k);
/* Backward (grad_*.c): given dL/d(out) ACCUMULATES (+=) dL/d(in[j]) into
 * grad_in[j] (NULL: not needed) and dL/d(par[s]) into grad_par[s] (NULL:
 * frozen or absent); grad_in or grad_par itself may be NULL (nothing of
 * that kind wanted).  Accumulating lets a value read by several nodes sum
 * its gradients.  k is the forward's (inputs, parameters and output still
 * valid) with a workspace of the forward's size, whose contents need not
 * survive from the forward.  Like the forward it sees one batch slice:
 * grad_in is the slice's, but grad_par covers the whole parameter, so
 * threads working on different slices must each accumulate into their own
 * grad_par copy, which the caller sums afterwards.  (Batchnorm in training
 * mode needs whole-batch statistics: see bn_train.h.) */
typedef void (*ntc_bwd_fn)(const ntc_kargs *k, const float *grad_out,
                           float *const *grad_in, float *const grad_par[NTC_MAX_PARAMS]);
/* Whether op's backward honours ntc_kargs.gin_fresh (relu, add, batchnorm,
 * conv2d): its first write of an input gradient can replace a pass of
 * zeroing and a pass of reading (grad_elementwise.c). */
bool ntc_bwd_overwrites(ntc_op op);
/* grad_in[j] of a backward call is fresh (see ntc_kargs.gin_fresh). */
static inline bool ntc_gin_fresh(const ntc_kargs *k, int j) { return k->gin_fresh && k->gin_fresh[j]; }
/* Scratch floats one call needs, independent of the batch size (kernels
 * that need per-item scratch process items one at a time, or in groups of
 * a size fixed by the node and one item's shapes, as conv2d does).
 * Shapes as in ntc_kargs with dims[0] == 1. */
typedef int64_t (*ntc_work_fn)(const ntc_node *n, const ntc_shape *in, const ntc_shape *out);

typedef struct {
    ntc_fwd_fn forward;
    ntc_bwd_fn backward;
    ntc_work_fn work;                /* NULL: no scratch */
} ntc_kernel;

extern const ntc_kernel ntc_kernels[NTC_OP_COUNT];

/* The forward kernels, one per row of ops.def (kern_*.c). */
#define OP(name, min_in, max_in, doc) void fwd_##name(const ntc_kargs *k);
#include "ntc/ops.def"
#undef OP

/* The backward kernels, one per row of ops.def (grad_*.c). */
#define OP(name, min_in, max_in, doc)                                                  \
    void bwd_##name(const ntc_kargs *k, const float *grad_out, float *const *grad_in, \
                    float *const grad_par[NTC_MAX_PARAMS]);
#include "ntc/ops.def"
#undef OP

/* Workspace rules of the ops that need scratch. */
int64_t work_conv2d(const ntc_node *n, const ntc_shape *in, const ntc_shape *out);
int64_t work_fused_conv2d(const ntc_node *n, const ntc_shape *in, const ntc_shape *out);
int64_t work_batchnorm(const ntc_node *n, const ntc_shape *in, const ntc_shape *out);
int64_t work_mix(const ntc_node *n, const ntc_shape *in, const ntc_shape *out);

/* Block length of the elementwise loops (see kern_elementwise.c). */
#define NTC_VEC 8

/* dst += src over n floats, in NTC_VEC blocks the compiler vectorises (add
 * forward and the backward of add and flatten share it). */
static inline void ntc_add_into(float *restrict dst, const float *restrict src, int64_t n)
{
    int64_t i = 0;
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++)
            dst[i + j] += src[i + j];
    for (; i < n; i++)
        dst[i] += src[i];
}

/* Convolution helpers shared by the forward and backward kernels
 * (kern_conv.c). */
/* 1x1, stride 1, no padding: the input already is the im2col matrix. */
bool ntc_conv_pointwise(const ntc_attrs *a);
/* Output columns ow whose input column ow*sw + off lies inside [0, W):
 * [*lo, *hi), clipped to [0, OW). */
void ntc_conv_inside_cols(int64_t off, int sw, int64_t W, int64_t OW, int64_t *lo, int64_t *hi);
/* Unfolds output rows [oh0, oh1) of one item x[C, H, W] (output width OW)
 * into the matching columns [oh0*OW, oh1*OW) of cols[C*kh*kw, ld] (zeros
 * for padding); ld > OH*OW leaves room for other items' columns beside
 * this one's. */
void ntc_im2col(const ntc_attrs *a, const float *x, int64_t C, int64_t H, int64_t W,
                int64_t OW, int64_t oh0, int64_t oh1, int64_t ld, float *cols);
/* Items whose im2col matrices go through one GEMM side by side (1 for a
 * pointwise convolution, which has none): as many as keep the group's
 * cols[K, items*P] within NTC_CONV_GROUP_FLOATS, about a core's L2 cache,
 * at least 1.  work_conv2d sizes the workspace for it; the OpenBLAS
 * forward and both backwards use it (the AVX-512 forward needs no groups). */
#define NTC_CONV_GROUP_FLOATS (256 * 1024)
int ntc_conv_group_items(const ntc_attrs *a, int64_t K, int64_t P);

/* C[M, N] = A[M, Kd] * B[Kd, N], C overwritten; A(m, k) is a[m*ars + k*acs]
 * (one of ars, acs is 1: A or a transposed row-major matrix), B and C are
 * row-major with leading dimensions ldb, ldc.  Each column of C is computed
 * the same whatever the others are (conv_gemm.c: AVX-512 or OpenBLAS). */
void ntc_conv_gemm(int64_t M, int64_t N, int64_t Kd, const float *a, int64_t ars, int64_t acs,
                   const float *b, int64_t ldb, float *c, int64_t ldc);

/* A stride-1 convolution's product with its im2col matrix left implicit
 * (conv_gemm.c): C[M, dst_h*W] (+)= A[M, n_src*kh*kw] * B where row
 * (s, i, j) of B at output pixel (r, q) is src[s, r + dr[i], q + dq[j]],
 * 0 outside the source plane [src_h, W].  Forward: A = the weight, src = x,
 * dr[i] = i*dh - pt, dq[j] = j*dw - pl; backward to x: A = the weight with
 * its first two axes swapped, src = dL/dy, dr[i] = pt - i*dh, dq[j] = pl - j*dw. */
typedef struct {
    int64_t M, n_src, src_h, dst_h, W;
    int kh, kw;
    const int64_t *dr, *dq;      /* kh and kw source offsets */
} ntc_implicit;
/* Whether this CPU runs the AVX-512 kernels of conv_gemm.c and conv_wgrad.c
 * (never with NTC_NO_AVX512 in the environment: the portable path). */
bool ntc_conv_avx512(void);
/* Whether ntc_conv_implicit runs here: stride 1, output rows as wide as
 * the input's (W == OW), a kernel of at most 64 taps and a CPU with AVX-512. */
bool ntc_conv_implicit_ok(int kh, int kw, int sh, int sw, int64_t W, int64_t OW);
/* C = A * B (add: C += A * B), C row-major [M, dst_h*W], A row-major, for
 * `items` items: item b's source at src + b*src_item, its C at c + b*c_item. */
void ntc_conv_implicit(const ntc_implicit *im, const float *a, int items, const float *src,
                       int64_t src_item, float *c, int64_t c_item, bool add);
/* Which lanes of B's rows are inside the source plane, for the output
 * pixels [p0, p0 + n) in nvec vectors of 16 (n <= 16*nvec): bit l of
 * mask[t*nvec + v] for pixel p0 + 16v + l and tap t = i*kw + j. */
void ntc_conv_tap_masks(const ntc_implicit *im, int64_t p0, int64_t n, int nvec, uint16_t *mask);
/* dw[M, n_src*kh*kw] += sum over `items` items and their pixels p of
 * g[m, p] * B[(s, i, j), p] (B as for ntc_conv_implicit, forward offsets;
 * an explicit cols[K, P] is K planes of one row of P pixels, one tap),
 * item b's g at g + b*g_item and source at src + b*src_item (conv_wgrad.c;
 * only where ntc_conv_avx512). */
void ntc_conv_wgrad(const ntc_implicit *im, int items, const float *g, int64_t g_item,
                    const float *src, int64_t src_item, float *dw);

/* Product of dims[from..rank); 1 when from >= rank.  Shared by the kernels. */
int64_t ntc_numel_from(const ntc_shape *s, int from);

#endif
