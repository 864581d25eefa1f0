/* Elementwise backwards: relu, add and flatten.
 *
 * relu: dL/dx = dL/dy where x > 0, else 0 (the subgradient 0 at x == 0,
 *   PyTorch's choice).
 * add: every input receives dL/dy unchanged.
 * flatten: the forward is a copy, so the gradient is copied back. */
#include "kernels.h"

#include <string.h>

/* The loops run in blocks of NTC_VEC over restrict parameters, so -O2
 * vectorises them (see kern_elementwise.c); relu's select then becomes a
 * compare and a mask, not a branch that mispredicts on every sign change. */
static void relu_grad(float *restrict dx, const float *restrict x, const float *restrict g, int64_t n)
{
    int64_t i = 0;
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++) {
            const float gj = g[i + j];              /* loaded first: a select of two values */
            dx[i + j] += x[i + j] > 0.0f ? gj : 0.0f;
        }
    for (; i < n; i++)
        dx[i] += x[i] > 0.0f ? g[i] : 0.0f;
}

/* The same for a fresh dx (written, not added to). */
static void relu_grad_set(float *restrict dx, const float *restrict x, const float *restrict g, int64_t n)
{
    int64_t i = 0;
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++) {
            const float gj = g[i + j];
            dx[i + j] = x[i + j] > 0.0f ? gj : 0.0f;
        }
    for (; i < n; i++)
        dx[i] = x[i] > 0.0f ? g[i] : 0.0f;
}

bool ntc_bwd_overwrites(ntc_op op)
{
    return op == NTC_OP_relu || op == NTC_OP_add || op == NTC_OP_batchnorm || op == NTC_OP_conv2d;
}

void bwd_relu(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
              float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (!grad_in || !grad_in[0])
        return;
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    if (ntc_gin_fresh(k, 0))
        relu_grad_set(grad_in[0], k->in[0], grad_out, n);
    else
        relu_grad(grad_in[0], k->in[0], grad_out, n);
}

void bwd_add(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
             float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (!grad_in)
        return;
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    /* In input order: of add(x, x) only the first is ever fresh. */
    for (int j = 0; j < k->n_in; j++) {
        if (grad_in[j] && ntc_gin_fresh(k, j))
            memcpy(grad_in[j], grad_out, sizeof(float) * (size_t)n);
        else if (grad_in[j])
            ntc_add_into(grad_in[j], grad_out, n);
    }
}

void bwd_flatten(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                 float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (grad_in && grad_in[0])
        ntc_add_into(grad_in[0], grad_out, ntc_numel_from(&k->out_shape, 0));
}
