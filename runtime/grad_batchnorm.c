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

/* sum a[i] and sum a[i] * (b[i] - shift) over n elements, in double.
 * Four independent accumulator pairs, so each add does not wait for the
 * previous one (a single chain of double adds runs at one element per add
 * latency, the bottleneck of these passes). */
static void pair_sums(const float *a, const float *b, float shift, int64_t n, double *sum_a,
                      double *sum_ab)
{
    double s[4] = {0}, t[4] = {0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) {
            s[l] += a[i + l];
            t[l] += (double)a[i + l] * (b[i + l] - shift);
        }
    for (; i < n; i++) {
        s[0] += a[i];
        t[0] += (double)a[i] * (b[i] - shift);
    }
    *sum_a = (s[0] + s[1]) + (s[2] + s[3]);
    *sum_ab = (t[0] + t[1]) + (t[2] + t[3]);
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
            if (dx) {
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
            const float *x = k->in[0] + at;
            float *y = k->out + at;
            const float a = scale[c] * invstd[c], mc = mean[c], bc = bias[c];
            for (int64_t i = 0; i < inner; i++)
                y[i] = a * (x[i] - mc) + bc;
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
            const float *x = k->in[0] + at, *g = grad_out + at;
            float *dx = grad_in + at;
            const float is = invstd[c], a = scale[c] * is, mc = mean[c];
            const float mean_dy = (float)(sum_dy[c] / (double)count);
            const float mean_dy_xhat = (float)(sum_dy_xhat[c] / (double)count);
            for (int64_t i = 0; i < inner; i++) {
                const float xhat = (x[i] - mc) * is;
                dx[i] += a * (g[i] - mean_dy - xhat * mean_dy_xhat);
            }
        }
}
