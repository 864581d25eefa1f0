/* batchnorm backward in inference mode (the table's bwd_batchnorm) and the
 * training-mode phases of bn_train.h.
 *
 * Inference mode, y = scale * (x - mean) * inv + bias, inv = 1/sqrt(var + eps),
 * is a per-channel affine map of x, so with g = dL/dy:
 *     dx     += scale * inv * g
 *     dscale += sum g * (x - mean) * inv          dbias += sum g
 *     dmean  += -scale * inv * sum g
 *     dvar   += -scale * inv^3 / 2 * sum g * (x - mean)
 * The running statistics are never trained (the executor passes NULL for
 * them); their gradients are still exact, so the contract has no exception.
 *
 * Training mode: see bn_train.h for the phases and their formulas. */
#include "bn_train.h"

#include <math.h>

/* The passes over the activations below are cloned for AVX-512 (GCC
 * picks the clone when the program loads): at the build's baseline ISA a
 * pass converting floats to double runs at about an element per cycle,
 * and these passes cover every element of every batchnorm, twice in each
 * direction.  A machine always runs the same clone, so results stay
 * deterministic on it. */
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "default")))

typedef float f8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef double d8 __attribute__((vector_size(64)));

/* By pointer: a 64-byte vector passed by value changes the ABI with and
 * without AVX-512, which clang refuses in the VECTOR_CLONES variants. */
static double lane_total(const d8 *p)
{
    const d8 v = *p;
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* sum a[i] and sum a[i] * (b[i] - shift) over n elements, in double, with
 * eight independent lanes (a single chain of double adds runs at one
 * element per add latency); the tail is added after the lanes' total. */
VECTOR_CLONES static void pair_sums(const float *a, const float *b, float shift, int64_t n,
                                    double *sum_a, double *sum_ab)
{
    d8 s = {0}, t = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const d8 ad = __builtin_convertvector(*(const f8 *)(a + i), d8);
        s += ad;
        t += ad * __builtin_convertvector(*(const f8 *)(b + i) - shift, d8);
    }
    double sa = lane_total(&s), sab = lane_total(&t);
    for (; i < n; i++) {
        sa += a[i];
        sab += (double)a[i] * (b[i] - shift);
    }
    *sum_a = sa;
    *sum_ab = sab;
}

/* y = a * (x - m) + c over n floats. */
VECTOR_CLONES static void affine(float *restrict y, const float *restrict x, int64_t n, float a,
                                 float m, float c)
{
    int64_t i = 0;
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++)
            y[i + j] = a * (x[i + j] - m) + c;
    for (; i < n; i++)
        y[i] = a * (x[i] - m) + c;
}

/* dx (+)= a * (g - mean_dy - (x - m) * is * mean_dy_xhat) over n floats;
 * fresh: dx is written, not added to. */
VECTOR_CLONES static void train_grad_row(float *restrict dx, const float *restrict x,
                                         const float *restrict g, int64_t n, float a, float m,
                                         float is, float mean_dy, float mean_dy_xhat, bool fresh)
{
    int64_t i = 0;
    if (fresh) {
        for (; i + NTC_VEC <= n; i += NTC_VEC)
            for (int j = 0; j < NTC_VEC; j++) {
                const float xhat = (x[i + j] - m) * is;
                dx[i + j] = a * (g[i + j] - mean_dy - xhat * mean_dy_xhat);
            }
        for (; i < n; i++) {
            const float xhat = (x[i] - m) * is;
            dx[i] = a * (g[i] - mean_dy - xhat * mean_dy_xhat);
        }
        return;
    }
    for (; i + NTC_VEC <= n; i += NTC_VEC)
        for (int j = 0; j < NTC_VEC; j++) {
            const float xhat = (x[i + j] - m) * is;
            dx[i + j] += a * (g[i + j] - mean_dy - xhat * mean_dy_xhat);
        }
    for (; i < n; i++) {
        const float xhat = (x[i] - m) * is;
        dx[i] += a * (g[i] - mean_dy - xhat * mean_dy_xhat);
    }
}

void bwd_batchnorm(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                   float *const grad_par[NTC_MAX_PARAMS])
{
    const int64_t C = k->in_shape[0].dims[1], inner = ntc_numel_from(&k->in_shape[0], 2);
    const float *scale = k->par[0], *mean = k->par[2], *var = k->par[3];
    const float eps = k->node->a.epsilon;
    float *dx = grad_in ? grad_in[0] : NULL;
    float *dpar[NTC_MAX_PARAMS] = {0};
    for (int s = 0; grad_par && s < NTC_MAX_PARAMS; s++)
        dpar[s] = grad_par[s];
    const bool any_par = dpar[0] || dpar[1] || dpar[2] || dpar[3];
    for (int64_t b = 0; b < k->batch; b++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t at = (b * C + c) * inner;
            const float *x = k->in[0] + at, *g = grad_out + at;
            const float inv = 1.0f / sqrtf(var[c] + eps), a = scale[c] * inv, m = mean[c];
            if (dx && ntc_gin_fresh(k, 0)) {
                float *d = dx + at;
                for (int64_t i = 0; i < inner; i++)
                    d[i] = a * g[i];
            } else if (dx) {
                float *d = dx + at;
                for (int64_t i = 0; i < inner; i++)
                    d[i] += a * g[i];
            }
            if (any_par) {
                double sg, sgx;                  /* sum g, sum g * (x - mean) */
                pair_sums(g, x, m, inner, &sg, &sgx);
                if (dpar[0])
                    dpar[0][c] += (float)(sgx * inv);
                if (dpar[1])
                    dpar[1][c] += (float)sg;
                if (dpar[2])
                    dpar[2][c] += (float)(-a * sg);
                if (dpar[3])
                    dpar[3][c] += (float)(-0.5 * a * inv * inv * sgx);
            }
        }
}

/* ---- training mode ------------------------------------------------------------ */

int64_t bn_train_count(const ntc_shape *s, int batch) { return batch * ntc_numel_from(s, 2); }

void bn_train_stats(const ntc_kargs *k, double *sum, double *sumsq)
{
    const int64_t C = k->in_shape[0].dims[1], inner = ntc_numel_from(&k->in_shape[0], 2);
    for (int64_t b = 0; b < k->batch; b++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t at = (b * C + c) * inner;
            const float *x = k->in[0] + at;
            double s, q;
            pair_sums(x, x, 0.0f, inner, &s, &q);
            sum[c] += s;
            sumsq[c] += q;
        }
}

void bn_train_finish(const ntc_node *n, int64_t C, int64_t count, const double *sum,
                     const double *sumsq, float *mean, float *invstd, float *running_mean,
                     float *running_var)
{
    const double m = n->a.momentum;
    for (int64_t c = 0; c < C; c++) {
        const double mu = sum[c] / (double)count;
        double var = sumsq[c] / (double)count - mu * mu;
        if (var < 0.0)                       /* rounding of E[x^2] - E[x]^2 */
            var = 0.0;
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(var + n->a.epsilon));
        if (running_mean)
            running_mean[c] = (float)((1.0 - m) * running_mean[c] + m * mu);
        if (running_var) {
            const double unbiased = count > 1 ? var * (double)count / (double)(count - 1) : var;
            running_var[c] = (float)((1.0 - m) * running_var[c] + m * unbiased);
        }
    }
}

void bn_train_apply(const ntc_kargs *k, const float *mean, const float *invstd)
{
    const int64_t C = k->in_shape[0].dims[1], inner = ntc_numel_from(&k->in_shape[0], 2);
    const float *scale = k->par[0], *bias = k->par[1];
    for (int64_t b = 0; b < k->batch; b++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t at = (b * C + c) * inner;
            affine(k->out + at, k->in[0] + at, inner, scale[c] * invstd[c], mean[c], bias[c]);
        }
}

void bn_train_grad_stats(const ntc_kargs *k, const float *grad_out, const float *mean,
                         const float *invstd, double *sum_dy, double *sum_dy_xhat)
{
    const int64_t C = k->in_shape[0].dims[1], inner = ntc_numel_from(&k->in_shape[0], 2);
    for (int64_t b = 0; b < k->batch; b++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t at = (b * C + c) * inner;
            const float *x = k->in[0] + at, *g = grad_out + at;
            const float mc = mean[c];
            double sg, sgx;
            pair_sums(g, x, mc, inner, &sg, &sgx);
            sum_dy[c] += sg;
            sum_dy_xhat[c] += sgx * invstd[c];
        }
}

void bn_train_grad_params(int64_t C, const double *sum_dy, const double *sum_dy_xhat,
                          float *grad_scale, float *grad_bias)
{
    for (int64_t c = 0; c < C; c++) {
        if (grad_scale)
            grad_scale[c] += (float)sum_dy_xhat[c];
        if (grad_bias)
            grad_bias[c] += (float)sum_dy[c];
    }
}

void bn_train_grad_apply(const ntc_kargs *k, const float *grad_out, const float *mean,
                         const float *invstd, int64_t count, const double *sum_dy,
                         const double *sum_dy_xhat, float *grad_in)
{
    const int64_t C = k->in_shape[0].dims[1], inner = ntc_numel_from(&k->in_shape[0], 2);
    const float *scale = k->par[0];
    for (int64_t b = 0; b < k->batch; b++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t at = (b * C + c) * inner;
            train_grad_row(grad_in + at, k->in[0] + at, grad_out + at, inner, scale[c] * invstd[c],
                           mean[c], invstd[c], (float)(sum_dy[c] / (double)count),
                           (float)(sum_dy_xhat[c] / (double)count), ntc_gin_fresh(k, 0));
        }
}
