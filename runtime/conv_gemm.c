/* The convolution's matrix products (kern_conv.c, grad_conv.c).
 *
 * ntc_conv_gemm: C[M, N] = A[M, Kd] * B[Kd, N] (C overwritten), B and C
 * row-major, A read through strides, so the same code multiplies by the
 * weight W[F, K] (forward: A = W) and by its transpose (backward to the
 * input: A = W^T) without copying it.
 *
 * ntc_conv_implicit: the same product for a stride-1 convolution whose
 * output rows are as wide as its input rows, with B = im2col(x) never
 * built: row (c, i, j) of B, over the output pixels p, is the plane x[c]
 * read at p + shift(i, j), and masked where that falls into the padding.
 * Unfolding x is K = C*kh*kw floats of memory traffic per output pixel,
 * more than the product itself costs for F = 16 filters.
 *
 * On a CPU with AVX-512 both are register-blocked kernels of their own:
 * the products here have one small side (F = 16..64 filters, or F as the
 * inner dimension), so OpenBLAS spends much of its time packing panels
 * that are used for only a few dozen FMAs, and its kernel for this build
 * (OPENBLAS_CORETYPE=Haswell) uses 8-float vectors.  The kernel reads A
 * and B where they lie: a tile of MR rows x 3 vectors of C is summed over
 * the whole inner dimension in registers and stored once.  Elsewhere
 * ntc_conv_gemm calls OpenBLAS and ntc_conv_implicit is not offered.
 *
 * Each C element is a sum of A(m, k) * B(k, n), one FMA after the other,
 * over k in a fixed order (ntc_conv_gemm: k = 0, 1, ...; the implicit
 * product: tap by tap, each over the source planes), whatever the tile or
 * the position of column n: a column's value does not depend on what
 * other columns or rows share the call. */
#include "kernels.h"

#include <cblas.h>
#include <immintrin.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MR 8                     /* rows of C per tile */
#define NV 3                     /* 16-float vectors of C per tile row */
#define MAX_TAPS 64              /* kh*kw the implicit kernel takes (masks on the stack) */

/* Where the tile's B rows come from: row k = (s, t) for s < n_src, t < taps
 * (k = s*taps + t) is src + s*plane + off[t], its lanes masked by mask[t].
 * An explicit matrix is n_src = Kd rows of one tap with offset 0. */
typedef struct {
    const float *src;
    int64_t n_src, plane;
    int taps;
    const int64_t *off;
    const __mmask16 (*mask)[NV];
} bsource;

/* A tile of C, rows [0, mr) by vectors [0, nv) whose lanes are masked by
 * cm[] (the last tile of a row may be partial); add: C += product, else
 * C = product.  Always inlined with constant mr, nv and add (tile_switch),
 * so the dead rows and vectors vanish and the accumulators are named
 * registers: GCC keeps an array of vectors in memory, storing every
 * accumulator on every step. */
#define ACC_ROW(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = c##r##0, c##r##2 = c##r##0
#define FMA_ROW(r)                                                          \
    if (mr > r) {                                                           \
        const __m512 w = _mm512_set1_ps(ak[r * ars]);                       \
        c##r##0 = _mm512_fmadd_ps(w, b0, c##r##0);                          \
        if (nv > 1)                                                         \
            c##r##1 = _mm512_fmadd_ps(w, b1, c##r##1);                      \
        if (nv > 2)                                                         \
            c##r##2 = _mm512_fmadd_ps(w, b2, c##r##2);                      \
    }
#define STORE_VEC(r, v)                                                     \
    do {                                                                    \
        float *at = c + r * ldc + 16 * v;                                   \
        if (add)                                                            \
            c##r##v = _mm512_add_ps(_mm512_maskz_loadu_ps(cm[v], at), c##r##v); \
        _mm512_mask_storeu_ps(at, cm[v], c##r##v);                          \
    } while (0)
#define STORE_ROW(r)                                                        \
    if (mr > r) {                                                           \
        STORE_VEC(r, 0);                                                    \
        if (nv > 1)                                                         \
            STORE_VEC(r, 1);                                                \
        if (nv > 2)                                                         \
            STORE_VEC(r, 2);                                                \
    }

__attribute__((target("avx512f"), always_inline)) static inline void
tile(int mr, int nv, bool add, const bsource *bs, const float *a, int64_t ars, int64_t acs,
     float *c, int64_t ldc, const __mmask16 *cm)
{
    ACC_ROW(0); ACC_ROW(1); ACC_ROW(2); ACC_ROW(3);
    ACC_ROW(4); ACC_ROW(5); ACC_ROW(6); ACC_ROW(7);
    __m512 b1 = _mm512_setzero_ps(), b2 = b1;
    const uintptr_t plane = (uintptr_t)bs->plane * sizeof(float);
    /* Taps outside, source planes inside: a tap's masks stay in mask
     * registers for all its rows. */
    for (int t = 0; t < bs->taps; t++) {
        const __mmask16 m0 = bs->mask[t][0], m1 = bs->mask[t][1], m2 = bs->mask[t][2];
        const float *ak = a + t * acs;
        /* Integer arithmetic: a padded tap's address may lie outside x,
         * and only its masked-off lanes are there (never read). */
        uintptr_t src = (uintptr_t)bs->src + (uintptr_t)bs->off[t] * sizeof(float);
        for (int64_t s = 0; s < bs->n_src; s++, src += plane, ak += bs->taps * acs) {
            const float *bk = (const float *)src;
            const __m512 b0 = _mm512_maskz_loadu_ps(m0, bk);
            if (nv > 1)
                b1 = _mm512_maskz_loadu_ps(m1, bk + 16);
            if (nv > 2)
                b2 = _mm512_maskz_loadu_ps(m2, bk + 32);
            FMA_ROW(0) FMA_ROW(1) FMA_ROW(2) FMA_ROW(3)
            FMA_ROW(4) FMA_ROW(5) FMA_ROW(6) FMA_ROW(7)
        }
    }
    STORE_ROW(0) STORE_ROW(1) STORE_ROW(2) STORE_ROW(3)
    STORE_ROW(4) STORE_ROW(5) STORE_ROW(6) STORE_ROW(7)
}

#define TILE(mr, nv) add ? tile(mr, nv, true, bs, a, ars, acs, c, ldc, cm) : tile(mr, nv, false, bs, a, ars, acs, c, ldc, cm)
#define TILE_ROWS(mr)                                                                      \
    case mr:                                                                               \
        if (nv == 3)                                                                       \
            TILE(mr, 3);                                                                   \
        else if (nv == 2)                                                                  \
            TILE(mr, 2);                                                                   \
        else                                                                               \
            TILE(mr, 1);                                                                   \
        return;

__attribute__((target("avx512f"))) static void
tile_switch(int mr, int nv, bool add, const bsource *bs, const float *a, int64_t ars, int64_t acs,
            float *c, int64_t ldc, const __mmask16 *cm)
{
    switch (mr) {
        TILE_ROWS(8) TILE_ROWS(7) TILE_ROWS(6) TILE_ROWS(5)
        TILE_ROWS(4) TILE_ROWS(3) TILE_ROWS(2) TILE_ROWS(1)
    }
}

/* Lanes [0, n) of each of the NV vectors of a panel of n columns. */
static void panel_mask(int64_t n, __mmask16 *m)
{
    for (int v = 0; v < NV; v++) {
        const int64_t left = n - 16 * v;
        m[v] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
}

/* Every block of MR rows of one column panel (its B rows are reused from
 * cache by each block). */
__attribute__((target("avx512f"))) static void
panel(int64_t M, int nv, bool add, const bsource *bs, const float *a, int64_t ars, int64_t acs,
      float *c, int64_t ldc, const __mmask16 *cm)
{
    for (int64_t m0 = 0; m0 < M; m0 += MR)
        tile_switch(M - m0 < MR ? (int)(M - m0) : MR, nv, add, bs, a + m0 * ars, ars, acs,
                    c + m0 * ldc, ldc, cm);
}

__attribute__((target("avx512f"))) static void
gemm_avx512(int64_t M, int64_t N, int64_t Kd, const float *a, int64_t ars, int64_t acs,
            const float *b, int64_t ldb, float *c, int64_t ldc)
{
    static const int64_t zero_off = 0;
    for (int64_t n0 = 0; n0 < N; n0 += 16 * NV) {
        const int64_t cols = N - n0 < 16 * NV ? N - n0 : 16 * NV;
        __mmask16 m[1][NV];
        panel_mask(cols, m[0]);
        const bsource bs = {b + n0, Kd, ldb, 1, &zero_off, (const __mmask16(*)[NV])m};
        panel(M, (int)((cols + 15) / 16), false, &bs, a, ars, acs, c + n0, ldc, m[0]);
    }
}

void ntc_conv_gemm(int64_t M, int64_t N, int64_t Kd, const float *a, int64_t ars, int64_t acs,
                   const float *b, int64_t ldb, float *c, int64_t ldc)
{
    if (ntc_conv_avx512()) {
        gemm_avx512(M, N, Kd, a, ars, acs, b, ldb, c, ldc);
        return;
    }
    /* A row-major (A(m, k) = a[m*lda + k], lda >= Kd) or transposed
     * (a[k*lda + m], lda >= M); with M == 1 or Kd == 1 both strides may be
     * 1, and the leading dimension must still be one BLAS accepts. */
    const bool trans = !(acs == 1 && (ars >= Kd || M == 1));
    const int64_t lda = trans ? (acs > M ? acs : M) : (ars > Kd ? ars : Kd);
    cblas_sgemm(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, CblasNoTrans, (int)M, (int)N,
                (int)Kd, 1.0f, a, (int)lda, b, (int)ldb, 0.0f, c, (int)ldc);
}

/* ---- implicit im2col ---------------------------------------------------------------- */

/* NTC_NO_AVX512 set (non-empty) in the environment forces the portable path, so its
 * tests can run on a machine with AVX-512 (read once). */
bool ntc_conv_avx512(void)
{
    static atomic_int known;     /* 0: not yet, 1: yes, 2: no */
    int k = atomic_load_explicit(&known, memory_order_relaxed);
    if (!k) {
        const char *off = getenv("NTC_NO_AVX512");
        k = __builtin_cpu_supports("avx512f") && !(off && *off) ? 1 : 2;
        atomic_store_explicit(&known, k, memory_order_relaxed);
    }
    return k == 1;
}

bool ntc_conv_implicit_ok(int kh, int kw, int sh, int sw, int64_t W, int64_t OW)
{
    return sh == 1 && sw == 1 && W == OW && kh * kw <= MAX_TAPS && ntc_conv_avx512();
}

void ntc_conv_tap_masks(const ntc_implicit *im, int64_t p0, int64_t n, int nvec, uint16_t *mask)
{
    uint16_t rows[im->kh][nvec], cols[im->kw][nvec];
    memset(rows, 0, sizeof rows);
    memset(cols, 0, sizeof cols);
    int64_t r = p0 / im->W, q = p0 % im->W;
    for (int64_t l = 0; l < n; l++) {
        const int v = (int)(l / 16);
        const uint16_t bit = (uint16_t)(1u << (l % 16));
        for (int i = 0; i < im->kh; i++)
            if (r + im->dr[i] >= 0 && r + im->dr[i] < im->src_h)
                rows[i][v] |= bit;
        for (int j = 0; j < im->kw; j++)
            if (q + im->dq[j] >= 0 && q + im->dq[j] < im->W)
                cols[j][v] |= bit;
        if (++q == im->W)
            q = 0, r++;
    }
    for (int i = 0; i < im->kh; i++)
        for (int j = 0; j < im->kw; j++)
            for (int v = 0; v < nvec; v++)
                mask[(i * im->kw + j) * nvec + v] = rows[i][v] & cols[j][v];
}

/* The masks of a run of panels are computed once for every item (they
 * depend only on the geometry); items go outside the panels, so an
 * item's source planes stay in cache from one panel to the next. */
#define MASK_PANELS 64           /* panels whose masks are kept at a time */

__attribute__((target("avx512f"))) void ntc_conv_implicit(const ntc_implicit *im, const float *a, int items,
                                                           const float *src, int64_t src_item, float *c,
                                                           int64_t c_item, bool add)
{
    const int taps = im->kh * im->kw;
    const int64_t P = im->dst_h * im->W, Kd = im->n_src * taps, span = MASK_PANELS * 16 * NV;
    int64_t off[MAX_TAPS];
    for (int i = 0; i < im->kh; i++)
        for (int j = 0; j < im->kw; j++)
            off[i * im->kw + j] = im->dr[i] * im->W + im->dq[j];
    __mmask16 mask[MASK_PANELS][MAX_TAPS][NV], cm[MASK_PANELS][NV];
    for (int64_t s0 = 0; s0 < P; s0 += span) {
        const int64_t s1 = P - s0 < span ? P : s0 + span;
        for (int64_t n0 = s0; n0 < s1; n0 += 16 * NV) {
            const int64_t q = (n0 - s0) / (16 * NV), cols = s1 - n0 < 16 * NV ? s1 - n0 : 16 * NV;
            ntc_conv_tap_masks(im, n0, cols, NV, &mask[q][0][0]);
            panel_mask(cols, cm[q]);
        }
        for (int b = 0; b < items; b++)
            for (int64_t n0 = s0; n0 < s1; n0 += 16 * NV) {
                const int64_t q = (n0 - s0) / (16 * NV), cols = s1 - n0 < 16 * NV ? s1 - n0 : 16 * NV;
                const bsource bs = {src + b * src_item + n0, im->n_src, im->src_h * im->W, taps, off,
                                    (const __mmask16(*)[NV])mask[q]};
                panel(im->M, (int)((cols + 15) / 16), add, &bs, a, Kd, 1, c + b * c_item + n0, P, cm[q]);
            }
    }
}
