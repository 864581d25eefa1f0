/* conv2d forward: ONNX Conv with group 1, any stride, dilation and
 * asymmetric padding, as im2col + OpenBLAS sgemm.
 *
 * Per item, with K = C*kh*kw and P = OH*OW:
 *     out[F, P] = W[F, K] * cols[K, P] (+ bias[F] broadcast over P)
 * cols row (c, i, j), column (oh, ow) holds x[c, oh*sh - pt + i*dh, ow*sw - pl + j*dw],
 * or 0 where that falls into the padding.  A 1x1 convolution with stride 1
 * and no padding has cols == x, so it multiplies the input directly.
 *
 * Items go through the GEMM in groups (ntc_conv_group_items): the group's
 * cols sit side by side, cols[K, n*P], and one sgemm gives out[F, n*P],
 * which is then scattered to the items' [F, P] blocks.  With F = 16..64
 * filters and P down to 49 pixels, one sgemm per item spends more in
 * OpenBLAS's call and packing overhead than in multiplying; a group
 * amortises it.  Each output column is still the dot product of one
 * filter row with one cols column, summed in the same order whatever
 * the group, so an item's result does not depend on its neighbours.
 *
 * Threads: the executor normally gives each thread whole items; when the
 * batch is smaller than the thread count it passes a team instead, and
 * the output rows of each item are split over it. */
#include "kernels.h"
#include "pool.h"

#include <cblas.h>
#include <string.h>

bool ntc_conv_pointwise(const ntc_attrs *a)
{
    return a->kernel[0] == 1 && a->kernel[1] == 1 && a->stride[0] == 1 && a->stride[1] == 1 &&
           !a->pad[0] && !a->pad[1] && !a->pad[2] && !a->pad[3];
}

void ntc_conv_inside_cols(int64_t off, int sw, int64_t W, int64_t OW, int64_t *lo, int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int64_t h = W - off <= 0 ? 0 : (W - off + sw - 1) / sw; /* first ow with iw >= W */
    if (h > OW)
        h = OW;
    if (l > h)
        l = h;
    *lo = l, *hi = h;
}

int ntc_conv_group_items(const ntc_attrs *a, int64_t K, int64_t P)
{
    if (ntc_conv_pointwise(a))
        return 1;
    int64_t n = NTC_CONV_GROUP_FLOATS / (K * P);
    return n < 2 ? 1 : n > 1024 ? 1024 : (int)n;
}

/* Group of n > 1 items: cols[K, n*P] and the product [F, n*P] (one item:
 * cols only, the product goes straight to the output); then the weight
 * with its axes swapped for the implicit backward (grad_conv.c). */
int64_t work_conv2d(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    if (ntc_conv_pointwise(&n->a))
        return 0;
    const int64_t K = in->dims[1] * n->a.kernel[0] * n->a.kernel[1], F = out->dims[1];
    const int64_t P = out->dims[2] * out->dims[3];
    const int items = ntc_conv_group_items(&n->a, K, P);
    return (items == 1 ? K * P : (K + F) * items * P) + K * F;
}

/* Copies n floats; a loop of 8-float blocks rather than memcpy, which for
 * rows of a few dozen floats costs more in the call than in the copy (and
 * GCC would turn a plain loop back into a memcpy call). */
typedef float float8 __attribute__((vector_size(32), aligned(4), may_alias));

static void copy_row(float *restrict dst, const float *restrict src, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        *(float8 *)(dst + i) = *(const float8 *)(src + i);
    for (; i < n; i++)
        dst[i] = src[i];
}

static void zero_row(float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = 0.0f;
}

void ntc_im2col(const ntc_attrs *a, const float *x, int64_t C, int64_t H, int64_t W,
                int64_t OW, int64_t oh0, int64_t oh1, int64_t ld, float *cols)
{
    const int kh = a->kernel[0], kw = a->kernel[1];
    const int sh = a->stride[0], sw = a->stride[1];
    const int dh = a->dilation[0], dw = a->dilation[1];
    const int pt = a->pad[0], pl = a->pad[1];
    /* Output columns whose input column is inside [0, W), per kernel
     * column j: the range does not depend on the channel or row, and
     * knowing it keeps the inner loops branch-free. */
    int64_t lo[kw], hi[kw];
    for (int j = 0; j < kw; j++)
        ntc_conv_inside_cols((int64_t)j * dw - pl, sw, W, OW, &lo[j], &hi[j]);
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                float *row = cols + ((c * kh + i) * kw + j) * ld + oh0 * OW;
                const int64_t off = (int64_t)j * dw - pl, l = lo[j], h = hi[j];
                for (int64_t oh = oh0; oh < oh1; oh++, row += OW) {
                    int64_t ih = oh * sh - pt + (int64_t)i * dh;
                    if (ih < 0 || ih >= H) {
                        zero_row(row, OW);
                        continue;
                    }
                    const float *xr = xc + ih * W + off;
                    zero_row(row, l);
                    if (sw == 1) {
                        copy_row(row + l, xr + l, h - l);
                    } else {
                        for (int64_t ow = l; ow < h; ow++)
                            row[ow] = xr[ow * sw];
                    }
                    zero_row(row + h, OW - h);
                }
            }
        }
    }
}

/* One item's convolution, output rows [oh0, oh1): the columns of those
 * rows only, so several threads can share an item (and its cols buffer). */
typedef struct {
    const ntc_kargs *k;
    const float *x;
    float *y;
    int64_t oh_per_task;
} conv_item;

static void conv_rows(const ntc_kargs *k, const float *x, float *y, int64_t oh0, int64_t oh1)
{
    const ntc_node *n = k->node;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3];
    const int64_t F = os->dims[1], OH = os->dims[2], OW = os->dims[3];
    const int64_t K = C * n->a.kernel[0] * n->a.kernel[1], P = OH * OW;
    const int64_t p0 = oh0 * OW, cols_n = (oh1 - oh0) * OW;
    const float *w = k->par[0], *bias = k->par[1];
    const float *cols = x;
    if (!ntc_conv_pointwise(&n->a)) {
        ntc_im2col(&n->a, x, C, H, W, OW, oh0, oh1, P, k->work);
        cols = k->work;
    }
    ntc_conv_gemm(F, cols_n, K, w, K, 1, cols + p0, P, y + p0, P);
    /* The bias after the product, as conv_group adds it, so an item's
     * result is the same on either path. */
    for (int64_t f = 0; bias && f < F; f++)
        for (int64_t p = p0; p < p0 + cols_n; p++)
            y[f * P + p] += bias[f];
}

static void conv_task(void *arg, int t)
{
    const conv_item *c = arg;
    const int64_t OH = c->k->out_shape.dims[2];
    int64_t oh0 = t * c->oh_per_task, oh1 = oh0 + c->oh_per_task;
    if (oh1 > OH)
        oh1 = OH;
    if (oh0 < oh1)
        conv_rows(c->k, c->x, c->y, oh0, oh1);
}

/* Items [b0, b0 + n) as one GEMM: cols[K, n*P] x W -> prod[F, n*P], then
 * each item's [F, P] block of prod (plus the bias) to its output. */
static void conv_group(const ntc_kargs *k, int b0, int n)
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3];
    const int64_t F = os->dims[1], OH = os->dims[2], OW = os->dims[3];
    const int64_t K = C * a->kernel[0] * a->kernel[1], P = OH * OW, N = n * P;
    const float *bias = k->par[1];
    float *cols = k->work, *prod = k->work + K * N;
    for (int i = 0; i < n; i++)
        ntc_im2col(a, k->in[0] + (b0 + i) * C * H * W, C, H, W, OW, 0, OH, N, cols + i * P);
    ntc_conv_gemm(F, N, K, k->par[0], K, 1, cols, N, prod, N);
    for (int i = 0; i < n; i++) {
        float *y = k->out + (b0 + i) * F * P;
        for (int64_t f = 0; f < F; f++) {
            const float *src = prod + f * N + i * P;
            float *dst = y + f * P;
            if (bias) {
                const float bf = bias[f];
                for (int64_t p = 0; p < P; p++)
                    dst[p] = src[p] + bf;
            } else {
                copy_row(dst, src, P);
            }
        }
    }
}

/* The implicit product (no cols at all) for filters [f0, f1) of every item. */
static void conv_implicit_filters(const ntc_kargs *k, int64_t f0, int64_t f1)
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3];
    const int64_t F = os->dims[1], P = os->dims[2] * os->dims[3], K = C * a->kernel[0] * a->kernel[1];
    int64_t dr[a->kernel[0]], dq[a->kernel[1]];
    for (int i = 0; i < a->kernel[0]; i++)
        dr[i] = (int64_t)i * a->dilation[0] - a->pad[0];
    for (int j = 0; j < a->kernel[1]; j++)
        dq[j] = (int64_t)j * a->dilation[1] - a->pad[1];
    const ntc_implicit im = {f1 - f0, C, H, os->dims[2], W, a->kernel[0], a->kernel[1], dr, dq};
    const float *bias = k->par[1];
    ntc_conv_implicit(&im, k->par[0] + f0 * K, k->batch, k->in[0], C * H * W, k->out + f0 * P, F * P, false);
    for (int b = 0; bias && b < k->batch; b++)
        for (int64_t f = f0; f < f1; f++)
            for (int64_t p = 0; p < P; p++)
                k->out[(b * F + f) * P + p] += bias[f];
}

/* Thread t of a team: its share of the filters. */
static void conv_implicit_task(void *arg, int t)
{
    const ntc_kargs *k = arg;
    const int64_t F = k->out_shape.dims[1], tasks = ntc_pool_threads(k->team);
    const int64_t per = (F + tasks - 1) / tasks, f0 = t * per, f1 = f0 + per < F ? f0 + per : F;
    if (f0 < f1)
        conv_implicit_filters(k, f0, f1);
}

void fwd_conv2d(const ntc_kargs *k)
{
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t in_item = is->dims[1] * is->dims[2] * is->dims[3];
    const int64_t out_item = os->dims[1] * os->dims[2] * os->dims[3], OH = os->dims[2];
    const int64_t K = is->dims[1] * k->node->a.kernel[0] * k->node->a.kernel[1];
    const ntc_attrs *a = &k->node->a;
    if (!ntc_conv_pointwise(a) &&
        ntc_conv_implicit_ok(a->kernel[0], a->kernel[1], a->stride[0], a->stride[1], is->dims[3], os->dims[3])) {
        /* With a team (a batch too small to split) the filters are shared
         * out: each output is computed as without one. */
        if (k->team)
            ntc_pool_run(k->team, ntc_pool_threads(k->team), conv_implicit_task, (void *)k);
        else
            conv_implicit_filters(k, 0, os->dims[1]);
        return;
    }
    /* Groups serve OpenBLAS (one long sgemm instead of many short ones);
     * the AVX-512 kernel has no per-call packing to amortise, so there
     * each item goes straight from its cols to its output. */
    const int group = ntc_conv_avx512() ? 1 : ntc_conv_group_items(a, K, OH * os->dims[3]);
    if (group > 1 && !k->team && k->batch > 1) {
        for (int b = 0; b < k->batch; b += group)
            conv_group(k, b, k->batch - b < group ? k->batch - b : group);
        return;
    }
    /* With a team (a batch too small to split), each item's output rows
     * are shared out; each thread unfolds and multiplies its own rows. */
    int tasks = k->team ? ntc_pool_threads(k->team) : 1;
    if (tasks > OH)
        tasks = (int)OH;
    for (int b = 0; b < k->batch; b++) {
        conv_item c = {k, k->in[0] + b * in_item, k->out + b * out_item, (OH + tasks - 1) / tasks};
        if (tasks > 1)
            ntc_pool_run(k->team, tasks, conv_task, &c);
        else
            conv_rows(k, c.x, c.y, 0, OH);
    }
}
