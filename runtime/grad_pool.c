/* Pooling backwards: the windows of kern_pool.c walked again.
 *
 * maxpool: each window's gradient goes to the element the forward chose:
 *   the first maximum in window order (rows, then columns), with the
 *   forward's own comparison so ties and NaNs pick the same element.
 * avgpool: each window's gradient is spread evenly over the window's
 *   elements inside the input, divided by the forward's count
 *   (count_include_pad 0: elements inside the input; 1: inside the padded
 *   input, so a ceil-mode window is not charged past the end padding).
 * global_avgpool: dL/dy / (H*W) to every element of the plane. */
#include "kernels.h"

#include <math.h>

/* Clipped extent of one window along an axis (as in kern_pool.c). */
typedef struct {
    int64_t lo, hi;          /* inside the input: [lo, hi) */
    int64_t padded;          /* elements inside the padded input */
} span;

static span window_span(int64_t o, int stride, int kernel, int pad_begin, int pad_end, int64_t size)
{
    int64_t start = o * stride - pad_begin, end = start + kernel;
    int64_t pend = end < size + pad_end ? end : size + pad_end;
    span s = {start < 0 ? 0 : start, end < size ? end : size, pend - start};
    return s;
}

static void pool_backward(const ntc_kargs *k, const float *grad_out, float *dx, bool is_max)
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t planes = is->dims[0] * is->dims[1];
    const int64_t H = is->dims[2], W = is->dims[3], OH = os->dims[2], OW = os->dims[3];
    for (int64_t p = 0; p < planes; p++) {
        const float *x = k->in[0] + p * H * W, *g = grad_out + p * OH * OW;
        float *d = dx + p * H * W;
        for (int64_t oh = 0; oh < OH; oh++) {
            span r = window_span(oh, a->stride[0], a->kernel[0], a->pad[0], a->pad[2], H);
            for (int64_t ow = 0; ow < OW; ow++) {
                span c = window_span(ow, a->stride[1], a->kernel[1], a->pad[1], a->pad[3], W);
                const float go = g[oh * OW + ow];
                if (is_max) {
                    float best = -INFINITY;
                    int64_t at = r.lo * W + c.lo;
                    for (int64_t ih = r.lo; ih < r.hi; ih++)
                        for (int64_t iw = c.lo; iw < c.hi; iw++) {
                            float v = x[ih * W + iw];
                            if (v > best || isnan(v))
                                best = v, at = ih * W + iw;
                        }
                    d[at] += go;
                } else {
                    int64_t count = a->count_include_pad ? r.padded * c.padded
                                                         : (r.hi - r.lo) * (c.hi - c.lo);
                    const float share = go / (float)count;
                    for (int64_t ih = r.lo; ih < r.hi; ih++)
                        for (int64_t iw = c.lo; iw < c.hi; iw++)
                            d[ih * W + iw] += share;
                }
            }
        }
    }
}

void bwd_maxpool(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                 float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (grad_in && grad_in[0])
        pool_backward(k, grad_out, grad_in[0], true);
}

void bwd_avgpool(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                 float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (grad_in && grad_in[0])
        pool_backward(k, grad_out, grad_in[0], false);
}

void bwd_global_avgpool(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                        float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (!grad_in || !grad_in[0])
        return;
    const ntc_shape *is = &k->in_shape[0];
    const int64_t planes = is->dims[0] * is->dims[1], hw = is->dims[2] * is->dims[3];
    for (int64_t p = 0; p < planes; p++) {
        const float share = grad_out[p] / (float)hw;
        float *d = grad_in[0] + p * hw;
        for (int64_t i = 0; i < hw; i++)
            d[i] += share;
    }
}
