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
/* Scratch floats one call needs, independent of the batch size (kernels
 * that need per-item scratch process items one at a time).  Shapes as in
 * ntc_kargs with dims[0] == 1. */
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

/* Convolution helpers shared by the forward and backward kernels
 * (kern_conv.c). */
/* 1x1, stride 1, no padding: the input already is the im2col matrix. */
bool ntc_conv_pointwise(const ntc_attrs *a);
/* Output columns ow whose input column ow*sw + off lies inside [0, W):
 * [*lo, *hi), clipped to [0, OW). */
void ntc_conv_inside_cols(int64_t off, int sw, int64_t W, int64_t OW, int64_t *lo, int64_t *hi);
/* Unfolds output rows [oh0, oh1) of one item x[C, H, W] into the matching
 * columns [oh0*OW, oh1*OW) of cols[C*kh*kw, OH*OW] (zeros for padding). */
void ntc_im2col(const ntc_attrs *a, const float *x, int64_t C, int64_t H, int64_t W,
                int64_t OH, int64_t OW, int64_t oh0, int64_t oh1, float *cols);

/* Product of dims[from..rank); 1 when from >= rank.  Shared by the kernels. */
int64_t ntc_numel_from(const ntc_shape *s, int from);

#endif
