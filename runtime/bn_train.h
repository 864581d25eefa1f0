/* runtime/bn_train.h - batchnorm in training mode, as phases an executor
 * that splits the batch across threads can call with a reduction between
 * them, so the statistics span the WHOLE batch however it is split.
 *
 * (The table's fwd_batchnorm / bwd_batchnorm are the inference-mode
 * kernels: running statistics, a per-channel affine map.  Frozen blocks
 * and evaluation use those.)
 *
 * Notation: channel axis 1, C channels, M = count = batch * prod(dims[2..])
 * elements per channel over the whole batch; mean and var are the batch's
 * (var biased, divided by M, as normalisation uses), invstd = 1/sqrt(var + eps),
 * xhat = (x - mean) * invstd, y = scale * xhat + bias.
 *
 * Forward of one step:
 *     per slice:  bn_train_stats(k, sum_t, sumsq_t)          (t = thread; arrays zeroed by the caller)
 *     once:       sum = sum_t sum_t, sumsq likewise
 *                 bn_train_finish(node, C, M, sum, sumsq, mean, invstd, running_mean, running_var)
 *     per slice:  bn_train_apply(k, mean, invstd)             (writes k->out)
 * Backward of the same step, g = dL/dy (mean and invstd kept from the forward):
 *     per slice:  bn_train_grad_stats(k, g, mean, invstd, sum_dy_t, sum_dy_xhat_t)
 *     once:       reduce both over the threads
 *                 bn_train_grad_params(C, sum_dy, sum_dy_xhat, grad_scale, grad_bias)
 *     per slice:  bn_train_grad_apply(k, g, mean, invstd, M, sum_dy, sum_dy_xhat, grad_in)
 * The per-slice sums are double: they run over up to batch*H*W elements,
 * and the variance is taken as E[x^2] - E[x]^2. */
#ifndef NTC_RUNTIME_BN_TRAIN_H
#define NTC_RUNTIME_BN_TRAIN_H

#include "kernels.h"

/* Elements per channel that a call on `batch` items of shape `s` covers:
 * batch * prod(s->dims[2..]). */
int64_t bn_train_count(const ntc_shape *s, int batch);

/* Adds, per channel c, the slice's sum of x into sum[c] and of x*x into sumsq[c]. */
void bn_train_stats(const ntc_kargs *k, double *sum, double *sumsq);

/* From the whole batch's sums over `count` elements per channel, writes
 * mean[c] and invstd[c] and, when running_mean/running_var are non-NULL,
 * updates them with the node's momentum m:
 *     running_mean = (1 - m) * running_mean + m * mean
 *     running_var  = (1 - m) * running_var  + m * var * count / (count - 1)
 * (the unbiased variance, as PyTorch keeps; with count == 1 the biased one,
 * 0, since one value has no spread to estimate). */
void bn_train_finish(const ntc_node *n, int64_t C, int64_t count, const double *sum,
                     const double *sumsq, float *mean, float *invstd, float *running_mean,
                     float *running_var);

/* y = scale * (x - mean) * invstd + bias over the slice (writes k->out). */
void bn_train_apply(const ntc_kargs *k, const float *mean, const float *invstd);

/* Adds, per channel, the slice's sum of g into sum_dy[c] and of g * xhat
 * into sum_dy_xhat[c]. */
void bn_train_grad_stats(const ntc_kargs *k, const float *grad_out, const float *mean,
                         const float *invstd, double *sum_dy, double *sum_dy_xhat);

/* The parameter gradients of the whole batch, once after the reduction:
 * grad_bias[c] += sum_dy[c], grad_scale[c] += sum_dy_xhat[c] (either may be NULL). */
void bn_train_grad_params(int64_t C, const double *sum_dy, const double *sum_dy_xhat,
                          float *grad_scale, float *grad_bias);

/* Accumulates dL/dx over the slice, the batch statistics' dependence on x
 * included:
 *     dx += scale * invstd * (g - sum_dy / M - xhat * sum_dy_xhat / M)
 * with the whole batch's reduced sums and M = count (dx = ... when
 * k->gin_fresh marks grad_in fresh). */
void bn_train_grad_apply(const ntc_kargs *k, const float *grad_out, const float *mean,
                         const float *invstd, int64_t count, const double *sum_dy,
                         const double *sum_dy_xhat, float *grad_in);

#endif
