/* linear and softmax forwards.
 *
 * linear: ONNX Gemm with transB = 1, y[B, U] = x[B, K] W[U, K]^T + b[U],
 *   one sgemm over the call's items.
 * softmax: ONNX Softmax (opset 13) along one axis: for every position of
 *   the other axes, y = exp(x - max) / sum exp(x - max) over the axis. */
#include "kernels.h"

#include <cblas.h>
#include <math.h>

void fwd_linear(const ntc_kargs *k)
{
    const int64_t B = k->batch, K = k->in_shape[0].dims[1], U = k->out_shape.dims[1];
    const float *w = k->par[0], *bias = k->par[1];
    float beta = 0.0f;
    if (bias) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t u = 0; u < U; u++)
                k->out[b * U + u] = bias[u];
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)U, (int)K,
                1.0f, k->in[0], (int)K, w, (int)K, beta, k->out, (int)U);
}

void fwd_softmax(const ntc_kargs *k)
{
    const ntc_shape *s = &k->in_shape[0];
    const int axis = k->node->a.axis < 0 ? k->node->a.axis + s->rank : k->node->a.axis;
    const int64_t n = s->dims[axis], inner = ntc_numel_from(s, axis + 1);
    const int64_t outer = ntc_numel_from(s, 0) / (n * inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *x = k->in[0] + o * n * inner + i;
            float *y = k->out + o * n * inner + i;
            float m = x[0];
            for (int64_t j = 1; j < n; j++)
                m = x[j * inner] > m ? x[j * inner] : m;
            float sum = 0.0f;
            for (int64_t j = 0; j < n; j++)
                sum += y[j * inner] = expf(x[j * inner] - m);
            for (int64_t j = 0; j < n; j++)
                y[j * inner] /= sum;
        }
}
