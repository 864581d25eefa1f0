/* fused_conv2d forward: the conv2d kernel (kern_conv.c), then the
 * residual input added and relu applied in one pass over the output:
 *     y = [relu](conv(x; W, b) + r)      (r = input 2, if present)
 * The same operations in the same order as the unfused conv2d -> add ->
 * relu nodes, so the results are bit for bit those of the unfused graph. */
#include "kernels.h"

/* y = y + r (if r), then max(y, 0) (if relu), in blocks of NTC_VEC so -O2
 * vectorises (see kern_elementwise.c). */
static void epilogue(float *restrict y, const float *restrict r, int64_t n, bool relu)
{
    int64_t i = 0;
    if (r) {
        for (; i + NTC_VEC <= n; i += NTC_VEC)
            for (int j = 0; j < NTC_VEC; j++)
                y[i + j] += r[i + j];
        for (; i < n; i++)
            y[i] += r[i];
    }
    if (relu) {
        for (i = 0; i + NTC_VEC <= n; i += NTC_VEC)
            for (int j = 0; j < NTC_VEC; j++)
                y[i + j] = y[i + j] > 0.0f ? y[i + j] : 0.0f;
        for (; i < n; i++)
            y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    }
}

void fwd_fused_conv2d(const ntc_kargs *k)
{
    fwd_conv2d(k);      /* reads in[0], the weight and bias, and the first work_conv2d floats */
    epilogue(k->out, k->n_in == 2 ? k->in[1] : NULL, ntc_numel_from(&k->out_shape, 0), k->node->a.relu);
}

/* The convolution's scratch, then (for the backward of a relu) one item's
 * gradient of the pre-relu output. */
int64_t work_fused_conv2d(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    return work_conv2d(n, in, out) + (n->a.relu ? ntc_numel_from(out, 1) : 0);
}
