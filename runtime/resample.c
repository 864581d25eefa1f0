/* Conforming one image to a graph's input: channel conversion and bilinear
 * resampling.  Used for digits (8x8 -> the backbone's 28x28), PNG folders
 * and, on request, any other source. */
#include "data_internal.h"

#include <stdlib.h>

bool ntc__channels_convertible(int c0, int c)
{
    if (c0 == c)
        return true;
    /* gray (1), gray+alpha (2), RGB (3), RGBA (4) into gray or RGB */
    return c0 >= 1 && c0 <= 4 && (c == 1 || c == 3);
}

/* Channel ch of the target from src's pixel k (plane stride hw). */
static float channel_value(const float *src, int c0, size_t hw, size_t k, int c, int ch)
{
    if (c0 == c)
        return src[(size_t)ch * hw + k];
    bool color = c0 >= 3;
    if (c == 1 && color)   /* ITU-R BT.601 luma, as PIL's convert("L") */
        return 0.299f * src[k] + 0.587f * src[hw + k] + 0.114f * src[2 * hw + k];
    if (c == 1)            /* gray+alpha: drop alpha */
        return src[k];
    return color ? src[(size_t)ch * hw + k] : src[k];   /* c == 3 */
}

/* Source coordinate of output index i for half-pixel centres, clamped:
 * i0/i1 the two neighbours and t the weight of i1. */
static void source_pos(int i, int in, int out, int *i0, int *i1, float *t)
{
    float x = ((float)i + 0.5f) * (float)in / (float)out - 0.5f;
    if (x < 0)
        x = 0;
    int lo = (int)x;
    if (lo > in - 1)
        lo = in - 1;
    *i0 = lo;
    *i1 = lo + 1 < in ? lo + 1 : in - 1;
    *t = x - (float)lo;
    if (*i1 == lo)
        *t = 0;
}

int ntc__conform_image(const float *src, int c0, int h0, int w0, float *dst, int c, int h, int w)
{
    if (!ntc__channels_convertible(c0, c))
        return -1;
    size_t hw0 = (size_t)h0 * (size_t)w0;
    for (int ch = 0; ch < c; ch++) {
        float *out = dst + (size_t)ch * h * w;
        for (int y = 0; y < h; y++) {
            int y0, y1;
            float ty;
            source_pos(y, h0, h, &y0, &y1, &ty);
            for (int x = 0; x < w; x++) {
                int x0, x1;
                float tx;
                source_pos(x, w0, w, &x0, &x1, &tx);
                float a = channel_value(src, c0, hw0, (size_t)y0 * w0 + x0, c, ch);
                float b = channel_value(src, c0, hw0, (size_t)y0 * w0 + x1, c, ch);
                float d = channel_value(src, c0, hw0, (size_t)y1 * w0 + x0, c, ch);
                float e = channel_value(src, c0, hw0, (size_t)y1 * w0 + x1, c, ch);
                float top = a + (b - a) * tx, bottom = d + (e - d) * tx;
                out[(size_t)y * w + x] = top + (bottom - top) * ty;
            }
        }
    }
    return 0;
}
