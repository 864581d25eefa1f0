/* linear and softmax backwards.
 *
 * linear, y[B, U] = x[B, K] W[U, K]^T + b[U], with g = dL/dy:
 *     dx[B, K] += g W          dW[U, K] += g^T x          db[U] += sum over B of g
 *   each one sgemm (beta = 1 accumulates) over the call's items.
 * softmax along an axis, per line of the axis:
 *     dx_j = y_j * (g_j - sum_k g_k y_k)
 *   from the forward's output alone. */
#include "kernels.h"

#include <cblas.h>

void bwd_linear(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                float *const grad_par[NTC_MAX_PARAMS])
{
    const int64_t B = k->batch, K = k->in_shape[0].dims[1], U = k->out_shape.dims[1];
    float *dx = grad_in ? grad_in[0] : NULL;
    float *dw = grad_par ? grad_par[0] : NULL, *db = grad_par ? grad_par[1] : NULL;
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)K, (int)U,
                    1.0f, grad_out, (int)U, k->par[0], (int)K, 1.0f, dx, (int)K);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)U, (int)K, (int)B,
                    1.0f, grad_out, (int)U, k->in[0], (int)K, 1.0f, dw, (int)K);
    if (db)
        for (int64_t b = 0; b < B; b++)
            for (int64_t u = 0; u < U; u++)
                db[u] += grad_out[b * U + u];
}

void bwd_softmax(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                 float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (!grad_in || !grad_in[0])
        return;
    const ntc_shape *s = &k->in_shape[0];
    const int axis = k->node->a.axis < 0 ? k->node->a.axis + s->rank : k->node->a.axis;
    const int64_t n = s->dims[axis], inner = ntc_numel_from(s, axis + 1);
    const int64_t outer = ntc_numel_from(s, 0) / (n * inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * n * inner + i;
            const float *y = k->out + base, *g = grad_out + base;
            float *dx = grad_in[0] + base;
            float gy = 0.0f;
            for (int64_t j = 0; j < n; j++)
                gy += g[j * inner] * y[j * inner];
            for (int64_t j = 0; j < n; j++)
                dx[j * inner] += y[j * inner] * (g[j * inner] - gy);
        }
}
