/* mix backward.  With s = softmax(alpha) and y = sum_j s_j x_j:
 *     dL/dx_j     = s_j * g
 *     dL/dalpha_j = s_j * (<g, x_j> - sum_k s_k <g, x_k>)
 *                 = s_j * (<g, x_j> - <g, y>)
 * (the softmax Jacobian ds_k/dalpha_j = s_k (delta_jk - s_j)); the second
 * form reads the forward's output instead of keeping n dot products, so the
 * only scratch is s (work_mix: n_in floats).  Dot products over the slice
 * are summed in double: they run over every element of the batch slice. */
#include "kernels.h"

#include <math.h>

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* w = softmax(alpha), shifted by the max exactly as the forward does. */
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

void bwd_mix(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
             float *const grad_par[NTC_MAX_PARAMS])
{
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    float *s = k->work;
    softmax_weights(k->par[0], k->n_in, s);
    float *dalpha = grad_par ? grad_par[0] : NULL;
    const double gy = dalpha ? dot(grad_out, k->out, n) : 0.0;
    for (int j = 0; j < k->n_in; j++) {
        if (grad_in && grad_in[j]) {
            float *dx = grad_in[j];
            const float sj = s[j];
            for (int64_t i = 0; i < n; i++)
                dx[i] += sj * grad_out[i];
        }
        if (dalpha)
            dalpha[j] += (float)(s[j] * (dot(grad_out, k->in[j], n) - gy));
    }
}
