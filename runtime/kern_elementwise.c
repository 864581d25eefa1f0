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

/* y = a + b over n floats. */
static void sum2(float *restrict y, const float *restrict a, const float *restrict b, int64_t n)
{
    int64_t i = 0;
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++)
            y[i + j] = a[i + j] + b[i + j];
    for (; i < n; i++)
        y[i] = a[i] + b[i];
}

/* The first two inputs in one pass (not a copy, then an add: one pass
 * over the output fewer), the same sums in the same order. */
void fwd_add(const ntc_kargs *k)
{
    const int64_t n = ntc_numel_from(&k->out_shape, 0);
    sum2(k->out, k->in[0], k->in[1], n);
    for (int j = 2; j < k->n_in; j++)
        ntc_add_into(k->out, k->in[j], n);
}

void fwd_flatten(const ntc_kargs *k)
{
    memcpy(k->out, k->in[0], sizeof(float) * (size_t)ntc_numel_from(&k->out_shape, 0));
}
