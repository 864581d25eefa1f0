/* Losses and the accuracy metric of ntc/train.h.
 *
 * Cross-entropy uses the max-shifted log-sum-exp, so large logits neither
 * overflow exp nor lose the loss to rounding:
 *     -log softmax(z)[y] = log sum_j exp(z_j - m) - (z_y - m),  m = max_j z_j
 * and its gradient is (softmax(z) - onehot(y)) / n for the batch mean.
 * Sums are double: a batch mean adds thousands of terms. */
#include "ntc/train.h"

#include <math.h>

double ntc_loss_cross_entropy(const float *z, const int32_t *y, int n, int k, float weight,
                              float *grad)
{
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *zi = z + (int64_t)i * k;
        float m = zi[0];
        for (int j = 1; j < k; j++)
            m = zi[j] > m ? zi[j] : m;
        double sum = 0.0;
        for (int j = 0; j < k; j++)
            sum += exp((double)zi[j] - m);
        total += log(sum) - ((double)zi[y[i]] - m);
        if (grad) {
            float *gi = grad + (int64_t)i * k;
            const double scale = (double)weight / n;
            for (int j = 0; j < k; j++) {
                double p = exp((double)zi[j] - m) / sum;
                gi[j] += (float)(scale * (p - (j == y[i])));
            }
        }
    }
    return n > 0 ? total / n : 0.0;
}

double ntc_loss_mse(const float *x, const float *target, int64_t count, float weight, float *grad)
{
    double total = 0.0;
    const double scale = count > 0 ? 2.0 * weight / (double)count : 0.0;
    for (int64_t i = 0; i < count; i++) {
        const double d = (double)x[i] - target[i];
        total += d * d;
        if (grad)
            grad[i] += (float)(scale * d);
    }
    return count > 0 ? total / (double)count : 0.0;
}

int ntc_count_correct(const float *z, const int32_t *y, int n, int k)
{
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *zi = z + (int64_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            best = zi[j] > zi[best] ? j : best;
        hits += best == y[i];
    }
    return hits;
}
