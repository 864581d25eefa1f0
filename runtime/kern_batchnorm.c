/* batchnorm forward, inference mode (ONNX BatchNormalization with
 * training_mode 0):
 *     y = scale * (x - mean) / sqrt(var + epsilon) + bias   per channel (axis 1)
 * computed as y = a * (x - mean) + bias with a = scale / sqrt(var + eps)
 * (subtracting the mean first keeps outputs near zero accurate).
 *
 * Where the statistics come from is split from applying them: training
 * mode (issue 4) computes the batch's mean and variance and calls the
 * same bn_apply. */
#include "kernels.h"

#include <math.h>

/* a[c] = scale[c] / sqrt(var[c] + eps). */
static void bn_gain(const ntc_kargs *k, const float *var, int64_t C, float *a)
{
    const float *scale = k->par[0];
    const float eps = k->node->a.epsilon;
    for (int64_t c = 0; c < C; c++)
        a[c] = scale[c] / sqrtf(var[c] + eps);
}

/* y = a * (x - m) + b over n floats, in blocks of NTC_VEC so -O2 vectorises. */
static void affine(float *restrict y, const float *restrict x, int64_t n, float a, float m, float b)
{
    int64_t i = 0;
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++)
            y[i + j] = a * (x[i + j] - m) + b;
    for (; i < n; i++)
        y[i] = a * (x[i] - m) + b;
}

/* y = a[c] * (x - mean[c]) + bias[c] over every item and position. */
static void bn_apply(const ntc_kargs *k, const float *a, const float *mean, int64_t C)
{
    const int64_t inner = ntc_numel_from(&k->in_shape[0], 2);
    const float *bias = k->par[1];
    for (int64_t n = 0; n < k->batch; n++)
        for (int64_t c = 0; c < C; c++) {
            int64_t at = (n * C + c) * inner;
            affine(k->out + at, k->in[0] + at, inner, a[c], mean[c], bias[c]);
        }
}

void fwd_batchnorm(const ntc_kargs *k)
{
    const int64_t C = k->in_shape[0].dims[1];
    bn_gain(k, k->par[3], C, k->work);
    bn_apply(k, k->work, k->par[2], C);
}

int64_t work_batchnorm(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    (void)n, (void)out;
    return in->dims[1];
}
