/* Elementwise backwards: relu, add and flatten.
 *
 * relu: dL/dx = dL/dy where x > 0, else 0 (the subgradient 0 at x == 0,
 *   PyTorch's choice).
 * add: every input receives dL/dy unchanged.
 * flatten: the forward is a copy, so the gradient is copied back. */
#include "kernels.h"

void bwd_relu(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
              float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (!grad_in || !grad_in[0])
        return;
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    const float *x = k->in[0];
    float *dx = grad_in[0];
    for (int64_t i = 0; i < n; i++)
        dx[i] += x[i] > 0.0f ? grad_out[i] : 0.0f;
}

static void add_into(float *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] += src[i];
}

void bwd_add(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
             float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (!grad_in)
        return;
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    for (int j = 0; j < k->n_in; j++)
        if (grad_in[j])
            add_into(grad_in[j], grad_out, n);
}

void bwd_flatten(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                 float *const grad_par[NTC_MAX_PARAMS])
{
    (void)grad_par;
    if (grad_in && grad_in[0])
        add_into(grad_in[0], grad_out, ntc_numel_from(&k->out_shape, 0));
}
