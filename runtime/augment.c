/* Training-time augmentation of one normalised image.
 *
 * Random crop with padding (as torchvision's RandomCrop(size, padding)):
 * the image is placed on a canvas padded by `pad` on every side and an
 * HxW window is cut at a uniformly random offset in [0, 2*pad]^2.  The
 * padding is black, which after normalisation is (0 - mean) / std per
 * channel: the caller passes it as fill.  Horizontal flips (probability 1/2)
 * are off unless asked for: they turn characters into non-characters.
 */
#include "ntc/data.h"

#include <string.h>

void ntc_augment_apply(const ntc_augment *a, ntc_rng *r, float *x, int c, int h, int w,
                       const float *fill, float *scratch)
{
    size_t hw = (size_t)h * (size_t)w;
    if (a->pad > 0) {
        int dy = (int)ntc_rng_below(r, 2 * (uint64_t)a->pad + 1) - a->pad;
        int dx = (int)ntc_rng_below(r, 2 * (uint64_t)a->pad + 1) - a->pad;
        memcpy(scratch, x, (size_t)c * hw * sizeof(float));
        for (int ch = 0; ch < c; ch++) {
            const float *src = scratch + (size_t)ch * hw;
            float *dst = x + (size_t)ch * hw;
            for (int y = 0; y < h; y++) {
                int sy = y + dy;
                for (int xx = 0; xx < w; xx++) {
                    int sx = xx + dx;
                    bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
                    dst[(size_t)y * w + xx] = inside ? src[(size_t)sy * w + sx] : fill[ch];
                }
            }
        }
    }
    if (a->hflip && (ntc_rng_next(r) >> 63)) {
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++) {
                float *row = x + (size_t)ch * hw + (size_t)y * w;
                for (int i = 0, j = w - 1; i < j; i++, j--) {
                    float t = row[i];
                    row[i] = row[j];
                    row[j] = t;
                }
            }
    }
}
