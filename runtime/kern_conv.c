/* conv2d forward: ONNX Conv with group 1, any stride, dilation and
 * asymmetric padding, as im2col + one OpenBLAS sgemm per item.
 *
 * Per item, with K = C*kh*kw and P = OH*OW:
 *     out[F, P] = W[F, K] * cols[K, P] (+ bias[F] broadcast over P)
 * cols row (c, i, j), column (oh, ow) holds x[c, oh*sh - pt + i*dh, ow*sw - pl + j*dw],
 * or 0 where that falls into the padding.  A 1x1 convolution with stride 1
 * and no padding has cols == x, so it multiplies the input directly.
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

int64_t work_conv2d(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    if (ntc_conv_pointwise(&n->a))
        return 0;
    return in->dims[1] * n->a.kernel[0] * n->a.kernel[1] * out->dims[2] * out->dims[3];
}

void ntc_im2col(const ntc_attrs *a, const float *x, int64_t C, int64_t H, int64_t W,
                   int64_t OH, int64_t OW, int64_t oh0, int64_t oh1, float *cols)
{
    const int kh = a->kernel[0], kw = a->kernel[1];
    const int sh = a->stride[0], sw = a->stride[1];
    const int dh = a->dilation[0], dw = a->dilation[1];
    const int pt = a->pad[0], pl = a->pad[1];
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                float *row = cols + ((c * kh + i) * kw + j) * OH * OW + oh0 * OW;
                /* Output columns whose input column is inside [0, W): the
                 * range is computed once per (i, j) so the inner loop is
                 * branch-free. */
                int64_t off = (int64_t)j * dw - pl, ow_lo, ow_hi;
                ntc_conv_inside_cols(off, sw, W, OW, &ow_lo, &ow_hi);
                for (int64_t oh = oh0; oh < oh1; oh++, row += OW) {
                    int64_t ih = oh * sh - pt + (int64_t)i * dh;
                    if (ih < 0 || ih >= H) {
                        memset(row, 0, sizeof(float) * (size_t)OW);
                        continue;
                    }
                    const float *xr = xc + ih * W + off;
                    for (int64_t ow = 0; ow < ow_lo; ow++)
                        row[ow] = 0;
                    if (sw == 1) {
                        memcpy(row + ow_lo, xr + ow_lo, sizeof(float) * (size_t)(ow_hi - ow_lo));
                    } else {
                        for (int64_t ow = ow_lo; ow < ow_hi; ow++)
                            row[ow] = xr[ow * sw];
                    }
                    for (int64_t ow = ow_hi; ow < OW; ow++)
                        row[ow] = 0;
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
        ntc_im2col(&n->a, x, C, H, W, OH, OW, oh0, oh1, k->work);
        cols = k->work;
    }
    float beta = 0.0f;
    if (bias) {
        for (int64_t f = 0; f < F; f++)
            for (int64_t p = p0; p < p0 + cols_n; p++)
                y[f * P + p] = bias[f];
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)F, (int)cols_n, (int)K,
                1.0f, w, (int)K, cols + p0, (int)P, beta, y + p0, (int)P);
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

void fwd_conv2d(const ntc_kargs *k)
{
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t in_item = is->dims[1] * is->dims[2] * is->dims[3];
    const int64_t out_item = os->dims[1] * os->dims[2] * os->dims[3], OH = os->dims[2];
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
