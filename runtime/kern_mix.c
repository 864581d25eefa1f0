/* mix forward: NetTailor's layer aggregation
 *     y = sum_j softmax(alpha)_j * x_j
 * over the layer's kept branches (inputs of one shape, alpha [n_in]). */
#include "kernels.h"

#include <math.h>

/* w = softmax(alpha), shifted by the max so large logits do not overflow. */
static void softmax_weights(const float *alpha, int n, float *w)
{
    float m = alpha[0];
    for (int j = 1; j < n; j++)
        m = alpha[j] > m ? alpha[j] : m;
    float sum = 0.0f;
    for (int j = 0; j < n; j++)
        sum += w[j] = expf(alpha[j] - m);
    for (int j = 0; j < n; j++)
        w[j] /= sum;
}

/* y = w*x (accumulate 0) or y += w*x, in blocks of NTC_VEC so -O2 vectorises. */
static void scale_add(float *restrict y, const float *restrict x, int64_t n, float w, bool accumulate)
{
    int64_t i = 0;
    if (!accumulate) {
        for (; i + NTC_VEC <= n; i += NTC_VEC)
            for (int l = 0; l < NTC_VEC; l++)
                y[i + l] = w * x[i + l];
        for (; i < n; i++)
            y[i] = w * x[i];
        return;
    }
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int l = 0; l < NTC_VEC; l++)
            y[i + l] += w * x[i + l];
    for (; i < n; i++)
        y[i] += w * x[i];
}

void fwd_mix(const ntc_kargs *k)
{
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    float *w = k->work;
    softmax_weights(k->par[0], k->n_in, w);
    for (int j = 0; j < k->n_in; j++)
        scale_add(k->out, k->in[j], n, w[j], j > 0);
}

int64_t work_mix(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    (void)in, (void)out;
    return n->n_in;
}
