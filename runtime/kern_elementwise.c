/* Elementwise forwards: relu, add (ONNX Sum of same-shape inputs) and
 * flatten (a copy: the layout of a C-ordered tensor does not change when
 * its dimensions are regrouped).
 *
 * The loops run in blocks of NTC_VEC: the build's -O2 vectorises a loop
 * only when the vector code replaces the scalar loop entirely, which a
 * fixed inner trip count guarantees; the tail runs scalar. */
#include "kernels.h"

#include <string.h>

/* y = max(x, 0); restrict parameters (not locals) are what GCC's alias
 * analysis trusts. */
static void relu(float *restrict y, const float *restrict x, int64_t n)
{
    int64_t i = 0;
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++)
            y[i + j] = x[i + j] > 0.0f ? x[i + j] : 0.0f;
    for (; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void fwd_relu(const ntc_kargs *k) { relu(k->out, k->in[0], ntc_numel_from(&k->out_shape, 0)); }

/* y += x over n floats. */
static void accumulate(float *restrict y, const float *restrict x, int64_t n)
{
    int64_t i = 0;
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++)
            y[i + j] += x[i + j];
    for (; i < n; i++)
        y[i] += x[i];
}

void fwd_add(const ntc_kargs *k)
{
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    memcpy(k->out, k->in[0], sizeof(float) * (size_t)n);
    for (int j = 1; j < k->n_in; j++)
        accumulate(k->out, k->in[j], n);
}

void fwd_flatten(const ntc_kargs *k)
{
    memcpy(k->out, k->in[0], sizeof(float) * (size_t)ntc_numel_from(&k->out_shape, 0));
}
