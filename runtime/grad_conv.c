/* conv2d backward, the transpose of kern_conv.c's im2col + sgemm.
 *
 * Per item, with K = C*kh*kw, P = OH*OW, cols = im2col(x) [K, P] and
 * g = dL/dy [F, P]:
 *     dW[F, K]  += g * cols^T          (im2col of x, then one sgemm)
 *     dcols[K, P] = W^T * g            (one sgemm)
 *     dx        += col2im(dcols)       (each column entry back to its pixel)
 *     dbias[F]  += sum over P of g
 * The workspace holds one [K, P] matrix (work_conv2d, the forward's size):
 * first cols for dW, then dcols for dx.  A 1x1 convolution with stride 1
 * and no padding has cols == x, so it needs neither im2col nor col2im and
 * accumulates straight into the gradients with beta = 1. */
#include "kernels.h"

#include <cblas.h>
#include <string.h>

/* dst[i] += src[i] for i < n, four floats at a time, vectorised whatever
 * the optimisation level (at -O2 GCC does not vectorise a loop that needs
 * an alias check); this add is most of col2im's time. */
typedef float float4 __attribute__((vector_size(16), aligned(4), may_alias));

static void add_row(float *dst, const float *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        *(float4 *)(dst + i) += *(const float4 *)(src + i);
    for (; i < n; i++)
        dst[i] += src[i];
}

/* The adjoint of im2col: adds every entry of dcols to the pixel it was
 * read from; entries that came from padding are dropped. */
static void col2im_add(const ntc_attrs *a, const float *dcols, int64_t C, int64_t H, int64_t W,
                       int64_t OH, int64_t OW, float *dx)
{
    const int kh = a->kernel[0], kw = a->kernel[1], sh = a->stride[0], sw = a->stride[1];
    const int dh = a->dilation[0], dw = a->dilation[1], pt = a->pad[0], pl = a->pad[1];
    for (int64_t c = 0; c < C; c++)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                const float *row = dcols + ((c * kh + i) * kw + j) * OH * OW;
                const int64_t off = (int64_t)j * dw - pl;
                int64_t lo, hi;
                ntc_conv_inside_cols(off, sw, W, OW, &lo, &hi);
                for (int64_t oh = 0; oh < OH; oh++, row += OW) {
                    const int64_t ih = oh * sh - pt + (int64_t)i * dh;
                    if (ih < 0 || ih >= H)
                        continue;
                    float *xr = dx + (c * H + ih) * W + off;
                    if (sw == 1)
                        add_row(xr + lo, row + lo, hi - lo);
                    else
                        for (int64_t ow = lo; ow < hi; ow++)
                            xr[ow * sw] += row[ow];
                }
            }
}

/* Sum of n floats over four independent accumulators (one serial chain
 * of adds would run at one element per add latency). */
static float sum(const float *v, int64_t n)
{
    float s[4] = {0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++)
            s[l] += v[i + l];
    for (; i < n; i++)
        s[0] += v[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

void bwd_conv2d(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                float *const grad_par[NTC_MAX_PARAMS])
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3];
    const int64_t F = os->dims[1], OH = os->dims[2], OW = os->dims[3];
    const int64_t K = C * a->kernel[0] * a->kernel[1], P = OH * OW;
    const bool pointwise = ntc_conv_pointwise(a);
    float *dx = grad_in ? grad_in[0] : NULL;
    float *dw = grad_par ? grad_par[0] : NULL, *db = grad_par ? grad_par[1] : NULL;
    for (int b = 0; b < k->batch; b++) {
        const float *x = k->in[0] + b * C * H * W, *g = grad_out + b * F * P;
        if (db)
            for (int64_t f = 0; f < F; f++)
                db[f] += sum(g + f * P, P);
        if (dw) {
            const float *cols = x;
            if (!pointwise) {
                ntc_im2col(a, x, C, H, W, OH, OW, 0, OH, k->work);
                cols = k->work;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)F, (int)K, (int)P,
                        1.0f, g, (int)P, cols, (int)P, 1.0f, dw, (int)K);
        }
        if (dx) {
            float *dxb = dx + b * C * H * W;
            float *dcols = pointwise ? dxb : k->work;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)P, (int)F,
                        1.0f, k->par[0], (int)K, g, (int)P, pointwise ? 1.0f : 0.0f, dcols, (int)P);
            if (!pointwise)
                col2im_add(a, dcols, C, H, W, OH, OW, dxb);
        }
    }
}
