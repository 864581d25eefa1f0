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

void fwd_mix(const ntc_kargs *k)
{
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    float *w = k->work;
    softmax_weights(k->par[0], k->n_in, w);
    const float *x0 = k->in[0];
    for (int64_t i = 0; i < n; i++)
        k->out[i] = w[0] * x0[i];
    for (int j = 1; j < k->n_in; j++) {
        const float *x = k->in[j];
        const float wj = w[j];
        for (int64_t i = 0; i < n; i++)
            k->out[i] += wj * x[i];
    }
}

int64_t work_mix(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    (void)in, (void)out;
    return n->n_in;
}
