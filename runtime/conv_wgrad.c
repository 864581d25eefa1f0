/* The convolution's weight gradient on AVX-512 (grad_conv.c):
 *     dW[F, K] += sum over items b and output pixels p of g_b[f, p] * B_b[k, p]
 * with B the implicit im2col matrix of conv_gemm.c (row k = (s, i, j) is
 * source plane s read at p + shift(i, j), 0 in the padding), so neither
 * im2col nor a transposed copy is built.
 *
 * A tile of WR filters x WC columns of dW keeps WR*WC vectors of partial
 * sums (lane l sums the pixels p = l mod 16) over a group of items and a
 * chunk of at most CHUNK_STEPS*16 pixels, then adds each vector's total
 * (a fixed tree of adds) into dW.  Groups and chunks depend only on the
 * shapes and the number of items, so for a given batch split the sums
 * come out the same on every run.  A group's g and source planes are
 * about L2-sized, so the tiles after the first read them from there. */
#include "kernels.h"

#include <immintrin.h>

#define WR 4                     /* filters per tile */
#define WC 6                     /* columns of dW per tile */
#define CHUNK_STEPS 64           /* 16-pixel steps per chunk (bounds the masks on the stack) */
#define GROUP_FLOATS (128 * 1024)/* g and source floats of a group of items, at least one item */
#define MAX_TAPS 64              /* as conv_gemm.c */

/* One chunk of pixels of one group of items. */
typedef struct {
    const float *g, *src;        /* the group's first item, at the chunk's first pixel */
    int64_t g_item, src_item, P; /* item strides, g's row length */
    int items, steps;
    const uint16_t *mask;        /* [taps][steps] lanes inside the source plane */
    const uint16_t *range;       /* [steps] lanes inside the chunk */
} wchunk;

#define ACC_ROW(r) __m512 a##r##0 = _mm512_setzero_ps(), a##r##1 = a##r##0, a##r##2 = a##r##0, \
                          a##r##3 = a##r##0, a##r##4 = a##r##0, a##r##5 = a##r##0
#define G_ROW(r) const __m512 g##r = mr > r ? _mm512_maskz_loadu_ps(m, gb + r * ch->P + 16 * v) : zero
#define FMA_COL(j)                                                                          \
    if (nr > j) {                                                                           \
        const float *xp = (const float *)(xb + (uintptr_t)off[j] * sizeof(float)) + 16 * v; \
        const __m512 x = _mm512_maskz_loadu_ps(mrow[j][v], xp);                             \
        a0##j = _mm512_fmadd_ps(g0, x, a0##j);                                              \
        if (mr > 1)                                                                         \
            a1##j = _mm512_fmadd_ps(g1, x, a1##j);                                          \
        if (mr > 2)                                                                         \
            a2##j = _mm512_fmadd_ps(g2, x, a2##j);                                          \
        if (mr > 3)                                                                         \
            a3##j = _mm512_fmadd_ps(g3, x, a3##j);                                          \
    }
#define SUM_AT(r, j)                                          \
    if (mr > r && nr > j)                                     \
        dw[r * ldw + j] += _mm512_reduce_add_ps(a##r##j);
#define SUM_ROW(r) SUM_AT(r, 0) SUM_AT(r, 1) SUM_AT(r, 2) SUM_AT(r, 3) SUM_AT(r, 4) SUM_AT(r, 5)

/* dw[0..mr, 0..nr) (row stride ldw) += the chunk's sums of g rows
 * [0, mr) (from gf) times the B rows whose offsets from an item's source
 * are off[j] and whose masks are mrow[j].  Always inlined with constant
 * mr and nr (wtile_switch): named accumulators stay in registers. */
__attribute__((target("avx512f"), always_inline)) static inline void
wtile(int mr, int nr, const wchunk *ch, const float *gf, const int64_t *off,
      const uint16_t *const *mrow, float *dw, int64_t ldw)
{
    ACC_ROW(0); ACC_ROW(1); ACC_ROW(2); ACC_ROW(3);
    const __m512 zero = _mm512_setzero_ps();
    for (int b = 0; b < ch->items; b++) {
        const float *gb = gf + b * ch->g_item;
        /* Integer arithmetic: a padded tap's address may lie outside the
         * source, and only its masked-off lanes are there. */
        const uintptr_t xb = (uintptr_t)(ch->src + b * ch->src_item);
        for (int v = 0; v < ch->steps; v++) {
            const __mmask16 m = ch->range[v];
            G_ROW(0); G_ROW(1); G_ROW(2); G_ROW(3);
            FMA_COL(0) FMA_COL(1) FMA_COL(2) FMA_COL(3) FMA_COL(4) FMA_COL(5)
        }
    }
    SUM_ROW(0) SUM_ROW(1) SUM_ROW(2) SUM_ROW(3)
}

#define WTILE(mr, nr) wtile(mr, nr, ch, gf, off, mrow, dw, ldw)
#define WTILE_ROWS(mr)                                                                    \
    case mr:                                                                              \
        switch (nr) {                                                                     \
        case 6: WTILE(mr, 6); return;                                                     \
        case 5: WTILE(mr, 5); return;                                                     \
        case 4: WTILE(mr, 4); return;                                                     \
        case 3: WTILE(mr, 3); return;                                                     \
        case 2: WTILE(mr, 2); return;                                                     \
        default: WTILE(mr, 1); return;                                                    \
        }

__attribute__((target("avx512f"))) static void
wtile_switch(int mr, int nr, const wchunk *ch, const float *gf, const int64_t *off,
             const uint16_t *const *mrow, float *dw, int64_t ldw)
{
    switch (mr) {
        WTILE_ROWS(4) WTILE_ROWS(3) WTILE_ROWS(2) WTILE_ROWS(1)
    }
}

/* Every tile of dW over one chunk. */
static void wchunk_all(const ntc_implicit *im, const wchunk *ch, const int64_t *tap_off, float *dw)
{
    const int taps = im->kh * im->kw;
    const int64_t Kd = im->n_src * taps, plane = im->src_h * im->W;
    for (int64_t k0 = 0; k0 < Kd; k0 += WC) {
        const int nr = Kd - k0 < WC ? (int)(Kd - k0) : WC;
        int64_t off[WC];
        const uint16_t *mrow[WC];
        for (int j = 0; j < nr; j++) {
            const int64_t s = (k0 + j) / taps, t = (k0 + j) % taps;
            off[j] = s * plane + tap_off[t];
            mrow[j] = ch->mask + t * ch->steps;
        }
        for (int64_t f0 = 0; f0 < im->M; f0 += WR)
            wtile_switch(im->M - f0 < WR ? (int)(im->M - f0) : WR, nr, ch, ch->g + f0 * ch->P, off,
                         mrow, dw + f0 * Kd + k0, Kd);
    }
}

void ntc_conv_wgrad(const ntc_implicit *im, int items, const float *g, int64_t g_item,
                    const float *src, int64_t src_item, float *dw)
{
    const int64_t P = im->dst_h * im->W, per_item = (im->M + im->n_src) * P;
    const int group = per_item >= GROUP_FLOATS ? 1 : (int)(GROUP_FLOATS / per_item);
    int64_t tap_off[MAX_TAPS];
    for (int i = 0; i < im->kh; i++)
        for (int j = 0; j < im->kw; j++)
            tap_off[i * im->kw + j] = im->dr[i] * im->W + im->dq[j];
    uint16_t mask[MAX_TAPS * CHUNK_STEPS], range[CHUNK_STEPS];
    /* Chunks outside, groups inside: a chunk's masks serve every group. */
    for (int64_t p0 = 0; p0 < P; p0 += 16 * CHUNK_STEPS) {
        const int64_t n = P - p0 < 16 * CHUNK_STEPS ? P - p0 : 16 * CHUNK_STEPS;
        const int steps = (int)((n + 15) / 16);
        ntc_conv_tap_masks(im, p0, n, steps, mask);
        for (int v = 0; v < steps; v++) {
            const int64_t left = n - 16 * v;
            range[v] = left >= 16 ? 0xffff : (uint16_t)((1u << left) - 1);
        }
        for (int b0 = 0; b0 < items; b0 += group) {
            const wchunk ch = {g + b0 * g_item + p0, src + b0 * src_item + p0, g_item, src_item, P,
                               items - b0 < group ? items - b0 : group, steps, mask, range};
            wchunk_all(im, &ch, tap_off, dw);
        }
    }
}
