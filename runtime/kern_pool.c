/* Pooling forwards: ONNX MaxPool, AveragePool and GlobalAveragePool.
 *
 * The output size (floor or ceil mode) comes from shape inference
 * (ir/ops.c, window_out); the kernels only walk the windows.  Window
 * (oh, ow) covers input rows oh*sh - pt .. oh*sh - pt + kh - 1 and the
 * matching columns.
 *
 * maxpool: padding never wins; the max is over the window's elements that
 *   lie inside the input (every window has one: pads are smaller than the
 *   kernel and ceil mode drops windows that start in the end padding).
 * avgpool: count_include_pad 0 divides by the elements inside the input;
 *   count_include_pad 1 divides by the elements inside the padded input
 *   [-pt, H + pb) x [-pl, W + pb), so a ceil-mode window that runs past the
 *   end padding is not charged for the part beyond it (PyTorch's and ONNX
 *   Runtime's rule). */
#include "kernels.h"

#include <math.h>

/* Clipped extent of one window along an axis. */
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

static void pool(const ntc_kargs *k, bool is_max)
{
    const ntc_attrs *a = &k->node->a;
    const ntc_shape *is = &k->in_shape[0], *os = &k->out_shape;
    const int64_t planes = is->dims[0] * is->dims[1];
    const int64_t H = is->dims[2], W = is->dims[3], OH = os->dims[2], OW = os->dims[3];
    for (int64_t p = 0; p < planes; p++) {
        const float *x = k->in[0] + p * H * W;
        float *y = k->out + p * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            span r = window_span(oh, a->stride[0], a->kernel[0], a->pad[0], a->pad[2], H);
            for (int64_t ow = 0; ow < OW; ow++) {
                span c = window_span(ow, a->stride[1], a->kernel[1], a->pad[1], a->pad[3], W);
                float acc = is_max ? -INFINITY : 0.0f;
                for (int64_t ih = r.lo; ih < r.hi; ih++)
                    for (int64_t iw = c.lo; iw < c.hi; iw++) {
                        float v = x[ih * W + iw];
                        if (is_max)
                            acc = v > acc || isnan(v) ? v : acc;
                        else
                            acc += v;
                    }
                if (!is_max) {
                    int64_t count = a->count_include_pad ? r.padded * c.padded
                                                         : (r.hi - r.lo) * (c.hi - c.lo);
                    acc /= (float)count;
                }
                y[oh * OW + ow] = acc;
            }
        }
    }
}

void fwd_maxpool(const ntc_kargs *k) { pool(k, true); }

void fwd_avgpool(const ntc_kargs *k) { pool(k, false); }

void fwd_global_avgpool(const ntc_kargs *k)
{
    const ntc_shape *is = &k->in_shape[0];
    const int64_t planes = is->dims[0] * is->dims[1], hw = is->dims[2] * is->dims[3];
    for (int64_t p = 0; p < planes; p++) {
        const float *x = k->in[0] + p * hw;
        float acc = 0.0f;
        for (int64_t i = 0; i < hw; i++)
            acc += x[i];
        k->out[p] = acc / (float)hw;
    }
}
