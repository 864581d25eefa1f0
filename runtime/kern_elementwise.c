/* Elementwise forwards: relu, add (ONNX Sum of same-shape inputs) and
 * flatten (a copy: the layout of a C-ordered tensor does not change when
 * its dimensions are regrouped). */
#include "kernels.h"

#include <string.h>

void fwd_relu(const ntc_kargs *k)
{
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    const float *x = k->in[0];
    for (int64_t i = 0; i < n; i++)
        k->out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void fwd_add(const ntc_kargs *k)
{
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    memcpy(k->out, k->in[0], sizeof(float) * (size_t)n);
    for (int j = 1; j < k->n_in; j++) {
        const float *x = k->in[j];
        for (int64_t i = 0; i < n; i++)
            k->out[i] += x[i];
    }
}

void fwd_flatten(const ntc_kargs *k)
{
    memcpy(k->out, k->in[0], sizeof(float) * (size_t)ntc_numel_from(&k->out_shape, 0));
}
