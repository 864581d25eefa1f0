/* conv2d forward: ONNX Conv with group 1, any stride, dilation and
 * asymmetric padding, as im2col + one OpenBLAS sgemm per item.
 *
 * Per item, with K = C*kh*kw and P = OH*OW:
 *     out[F, P] = W[F, K] * cols[K, P] (+ bias[F] broadcast over P)
 * cols row (c, i, j), column (oh, ow) holds x[c, oh*sh - pt + i*dh, ow*sw - pl + j*dw],
 * or 0 where that falls into the padding.  A 1x1 convolution with stride 1
 * and no padding has cols == x, so it multiplies the input directly. */
#include "kernels.h"

#include <cblas.h>
#include <string.h>

static bool is_pointwise(const ntc_node *n)
{
    const ntc_attrs *a = &n->a;
    return a->kernel[0] == 1 && a->kernel[1] == 1 && a->stride[0] == 1 && a->stride[1] == 1 &&
           !a->pad[0] && !a->pad[1] && !a->pad[2] && !a->pad[3];
}

int64_t work_conv2d(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    if (is_pointwise(n))
        return 0;
    return in->dims[1] * n->a.kernel[0] * n->a.kernel[1] * out->dims[2] * out->dims[3];
}

/* Unfolds one item x[C, H, W] into cols[C*kh*kw, OH*OW]. */
static void im2col(const ntc_attrs *a, const float *x, int64_t C, int64_t H, int64_t W,
                   int64_t OH, int64_t OW, float *cols)
{
    const int kh = a->kernel[0], kw = a->kernel[1];
    const int sh = a->stride[0], sw = a->stride[1];
    const int dh = a->dilation[0], dw = a->dilation[1];
    const int pt = a->pad[0], pl = a->pad[1];
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                float *row = cols + ((c * kh + i) * kw + j) * OH * OW;
                /* Output columns whose input column is inside [0, W): the
                 * range is computed once per (i, j) so the inner loop is
                 * branch-free. */
                int64_t off = (int64_t)j * dw - pl;
                int64_t ow_lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                int64_t ow_hi = W - off <= 0 ? 0 : (W - off + sw - 1) / sw; /* first ow with iw >= W */
                if (ow_hi > OW)
                    ow_hi = OW;
                if (ow_lo > ow_hi)
                    ow_lo = ow_hi;
                for (int64_t oh = 0; oh < OH; oh++, row += OW) {
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

void fwd_conv2d(const ntc_kargs *k)
{
    const ntc_node *n = k->node;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3];
    const int64_t F = os->dims[1], OH = os->dims[2], OW = os->dims[3];
    const int64_t K = C * n->a.kernel[0] * n->a.kernel[1], P = OH * OW;
    const float *w = k->par[0], *bias = k->par[1];
    const bool pointwise = is_pointwise(n);
    for (int b = 0; b < k->batch; b++) {
        const float *x = k->in[0] + b * C * H * W;
        float *y = k->out + b * F * P;
        const float *cols = x;
        if (!pointwise) {
            im2col(&n->a, x, C, H, W, OH, OW, k->work);
            cols = k->work;
        }
        float beta = 0.0f;
        if (bias) {
            for (int64_t f = 0; f < F; f++)
                for (int64_t p = 0; p < P; p++)
                    y[f * P + p] = bias[f];
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)F, (int)P, (int)K,
                    1.0f, w, (int)K, cols, (int)P, beta, y, (int)P);
    }
}
