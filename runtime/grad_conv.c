/* conv2d backward, the transpose of kern_conv.c's im2col + sgemm.
 *
 * Per item, with K = C*kh*kw, P = OH*OW, cols = im2col(x) [K, P] and
 * g = dL/dy [F, P]:
 *     dW[F, K]  += g * cols^T          (im2col of x, then one sgemm)
 *     dcols[K, P] = W^T * g            (one sgemm)
 *     dx        += col2im(dcols)       (each column entry back to its pixel)
 *     dbias[F]  += sum over P of g
 * Items go in the forward's groups (ntc_conv_group_items): the group's g
 * blocks are gathered side by side into g[F, n*P] and its cols into
 * cols[K, n*P], so each product is one sgemm over the group.  The
 * workspace (work_conv2d, the forward's size) holds cols, first im2col(x)
 * for dW, then dcols for dx, and the gathered g.  A 1x1 convolution with
 * stride 1 and no padding has cols == x, so it needs neither im2col nor
 * col2im and accumulates item by item straight into the gradients with
 * beta = 1. */
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
static void col2im_add(const ntc_attrs *a, const float *dcols, int64_t ld, int64_t C, int64_t H,
                       int64_t W, int64_t OH, int64_t OW, float *dx)
{
    const int kh = a->kernel[0], kw = a->kernel[1], sh = a->stride[0], sw = a->stride[1];
    const int dh = a->dilation[0], dw = a->dilation[1], pt = a->pad[0], pl = a->pad[1];
    for (int64_t c = 0; c < C; c++)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                const float *row = dcols + ((c * kh + i) * kw + j) * ld;
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

/* The pointwise convolution, item by item: x is its own cols. */
static void bwd_pointwise(const ntc_kargs *k, const float *grad_out, float *dx, float *dw)
{
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], F = os->dims[1], P = os->dims[2] * os->dims[3];
    for (int b = 0; b < k->batch; b++) {
        const float *x = k->in[0] + b * C * P, *g = grad_out + b * F * P;
        if (dw)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)F, (int)C, (int)P,
                        1.0f, g, (int)P, x, (int)P, 1.0f, dw, (int)C);
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)C, (int)P, (int)F,
                        1.0f, k->par[0], (int)C, g, (int)P, 1.0f, dx + b * C * P, (int)P);
    }
}

/* Items [b0, b0 + n) on AVX-512, whose kernels need no long rows: each
 * item's cols [K, P] one after the other, the weight gradient over all of
 * them with g where it lies, dx item by item through dcols (in the
 * workspace after the group's cols). */
static void bwd_group_avx512(const ntc_kargs *k, const float *grad_out, int b0, int n, float *dx,
                             float *dw)
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3];
    const int64_t F = os->dims[1], OH = os->dims[2], OW = os->dims[3];
    const int64_t K = C * a->kernel[0] * a->kernel[1], P = OH * OW;
    const float *g = grad_out + b0 * F * P;
    float *cols = k->work;
    if (dw) {
        for (int i = 0; i < n; i++)
            ntc_im2col(a, k->in[0] + (b0 + i) * C * H * W, C, H, W, OW, 0, OH, P, cols + i * K * P);
        /* cols as K source planes of one row of P pixels, one tap. */
        const int64_t zero = 0;
        const ntc_implicit im = {F, K, 1, 1, P, 1, 1, &zero, &zero};
        ntc_conv_wgrad(&im, n, g, F * P, cols, K * P, dw);
    }
    for (int i = 0; dx && i < n; i++) {
        ntc_conv_gemm(K, P, F, k->par[0], 1, K, g + i * F * P, P, cols, P);
        col2im_add(a, cols, P, C, H, W, OH, OW, dx + (b0 + i) * C * H * W);
    }
}

/* Items [b0, b0 + n) as one group for OpenBLAS: g and cols gathered to
 * [., n*P], so each product is one long sgemm. */
static void bwd_group(const ntc_kargs *k, const float *grad_out, int b0, int n, float *dx, float *dw)
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3];
    const int64_t F = os->dims[1], OH = os->dims[2], OW = os->dims[3];
    const int64_t K = C * a->kernel[0] * a->kernel[1], P = OH * OW, N = n * P;
    float *cols = k->work;
    const float *g = grad_out + b0 * F * P;
    if (n > 1) {
        float *gg = k->work + K * N;
        for (int i = 0; i < n; i++)
            for (int64_t f = 0; f < F; f++)
                memcpy(gg + f * N + i * P, g + (i * F + f) * P, sizeof(float) * (size_t)P);
        g = gg;
    }
    if (dw) {
        for (int i = 0; i < n; i++)
            ntc_im2col(a, k->in[0] + (b0 + i) * C * H * W, C, H, W, OW, 0, OH, N, cols + i * P);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)F, (int)K, (int)N,
                    1.0f, g, (int)N, cols, (int)N, 1.0f, dw, (int)K);
    }
    if (dx) {
        ntc_conv_gemm(K, N, F, k->par[0], 1, K, g, N, cols, N);
        for (int i = 0; i < n; i++)
            col2im_add(a, cols + i * P, N, C, H, W, OH, OW, dx + (b0 + i) * C * H * W);
    }
}

/* dx += the transposed convolution of g, item by item, through the
 * implicit product: A = W with its F and C axes swapped (built in the
 * workspace's tail, see work_conv2d), source planes g[f], and the source
 * offsets of the forward negated. */
static void bwd_input_implicit(const ntc_kargs *k, const float *grad_out, float *dx)
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3];
    const int64_t F = os->dims[1], OH = os->dims[2], P = OH * os->dims[3];
    const int taps = a->kernel[0] * a->kernel[1];
    const int64_t K = C * taps;
    float *wt = k->work + work_conv2d(k->node, is, os) - K * F;
    for (int64_t f = 0; f < F; f++)
        for (int64_t c = 0; c < C; c++)
            memcpy(wt + (c * F + f) * taps, k->par[0] + (f * C + c) * taps, sizeof(float) * (size_t)taps);
    int64_t dr[a->kernel[0]], dq[a->kernel[1]];
    for (int i = 0; i < a->kernel[0]; i++)
        dr[i] = a->pad[0] - (int64_t)i * a->dilation[0];
    for (int j = 0; j < a->kernel[1]; j++)
        dq[j] = a->pad[1] - (int64_t)j * a->dilation[1];
    const ntc_implicit im = {C, F, OH, H, W, a->kernel[0], a->kernel[1], dr, dq};
    ntc_conv_implicit(&im, wt, k->batch, grad_out, F * P, dx, C * H * W, !ntc_gin_fresh(k, 0));
}

void bwd_conv2d(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                float *const grad_par[NTC_MAX_PARAMS])
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t F = os->dims[1], P = os->dims[2] * os->dims[3];
    const int64_t K = is->dims[1] * a->kernel[0] * a->kernel[1];
    float *dx = grad_in ? grad_in[0] : NULL;
    float *dw = grad_par ? grad_par[0] : NULL, *db = grad_par ? grad_par[1] : NULL;
    for (int b = 0; db && b < k->batch; b++)
        for (int64_t f = 0; f < F; f++)
            db[f] += sum(grad_out + (b * F + f) * P, P);
    if (!dx && !dw)
        return;
    const bool implicit = !ntc_conv_pointwise(a) &&
                          ntc_conv_implicit_ok(a->kernel[0], a->kernel[1], a->stride[0], a->stride[1],
                                               is->dims[3], os->dims[3]);
    /* A fresh dx is overwritten by the implicit product; the other paths add. */
    if (dx && ntc_gin_fresh(k, 0) && !implicit)
        memset(dx, 0, sizeof(float) * (size_t)ntc_numel_from(is, 0));
    if (ntc_conv_pointwise(a)) {
        bwd_pointwise(k, grad_out, dx, dw);
        return;
    }
    if (implicit) {
        if (dw) {
            int64_t dr[a->kernel[0]], dq[a->kernel[1]];
            for (int i = 0; i < a->kernel[0]; i++)
                dr[i] = (int64_t)i * a->dilation[0] - a->pad[0];
            for (int j = 0; j < a->kernel[1]; j++)
                dq[j] = (int64_t)j * a->dilation[1] - a->pad[1];
            const ntc_implicit im = {F, is->dims[1], is->dims[2], os->dims[2], is->dims[3],
                                     a->kernel[0], a->kernel[1], dr, dq};
            ntc_conv_wgrad(&im, k->batch, grad_out, F * P, k->in[0], ntc_numel_from(is, 1), dw);
        }
        if (dx)
            bwd_input_implicit(k, grad_out, dx);
        return;
    }
    const int group = ntc_conv_group_items(a, K, P);
    for (int b = 0; b < k->batch; b += group) {
        const int n = k->batch - b < group ? k->batch - b : group;
        if (ntc_conv_avx512())
            bwd_group_avx512(k, grad_out, b, n, dx, dw);
        else
            bwd_group(k, grad_out, b, n, dx, dw);
    }
}
