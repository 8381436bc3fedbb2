/* linear_avx512.c - AVX-512 pieces of the GEMM engine (gemm.h).
 *
 * Micro-kernel: a 14 x 32 tile of C in 28 zmm accumulators; per k it loads
 * two vectors of the B sliver and broadcasts 14 values of the A sliver
 * (28 FMAs for 16 loads, within the 2 FMA + 2 load ports per cycle). */
#include <immintrin.h>

#include "backend/cpu/gemm.h"

#define MR 14
#define NR 32

static void ukernel_14x32(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                          const float *bias_n, const float *bias_m, int accumulate) {
    __m512 c0[MR], c1[MR]; /* rows i: columns 0..15, 16..31 */
    if (accumulate) {
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            c0[i] = _mm512_loadu_ps(c + i * ldc);
            c1[i] = _mm512_loadu_ps(c + i * ldc + 16);
        }
    } else {
        __m512 b0 = bias_n ? _mm512_loadu_ps(bias_n) : _mm512_setzero_ps();
        __m512 b1 = bias_n ? _mm512_loadu_ps(bias_n + 16) : _mm512_setzero_ps();
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            __m512 bm = bias_m ? _mm512_set1_ps(bias_m[i]) : _mm512_setzero_ps();
            c0[i] = _mm512_add_ps(b0, bm);
            c1[i] = _mm512_add_ps(b1, bm);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            const __m512 a = _mm512_set1_ps(ap[i]);
            c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
        }
        ap += MR;
        bp += NR;
    }
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        _mm512_storeu_ps(c + i * ldc, c0[i]);
        _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
    }
}

/* In-register transpose of 16 rows of 16: r[i] holds row i on entry and
 * column i on return. Four shuffle stages, 64 shuffles. */
static inline void transpose16(__m512 r[16]) {
    __m512 a[16], b[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) { /* per 128-bit lane: pairs of rows interleaved */
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) { /* b[4g + c], lane L: rows 4g..4g+3 of column 4L + c */
        __m512d x0 = _mm512_castps_pd(a[4 * g]), x1 = _mm512_castps_pd(a[4 * g + 1]);
        __m512d x2 = _mm512_castps_pd(a[4 * g + 2]), x3 = _mm512_castps_pd(a[4 * g + 3]);
        b[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(x0, x2));
        b[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x0, x2));
        b[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(x1, x3));
        b[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(x1, x3));
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) { /* gather lane L of b[c], b[4+c], b[8+c], b[12+c] */
        __m512 d0 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0x88);
        __m512 e0 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0x88);
        __m512 d1 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0xDD);
        __m512 e1 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(d0, e0, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(d0, e0, 0xDD);
        r[4 + c] = _mm512_shuffle_f32x4(d1, e1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(d1, e1, 0xDD);
    }
}

/* src [nr rows, stride ld][kc] -> dst [kc][ldd], zero columns nr..NR-1:
 * 16 x 16 blocks transposed in registers, tails masked. */
static void pack_t_avx512(const float *src, int64_t ld, int64_t kc, int64_t nr, int ldd, float *dst) {
    for (int j0 = 0; j0 < ldd; j0 += 16) {
        const int w = ldd - j0 < 16 ? ldd - j0 : 16;
        const __mmask16 wm = (__mmask16)((1u << w) - 1);
        for (int64_t k0 = 0; k0 < kc; k0 += 16) {
            const int64_t kn = kc - k0 < 16 ? kc - k0 : 16;
            const __mmask16 km = (__mmask16)((1u << kn) - 1);
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = j0 + i < nr ? _mm512_maskz_loadu_ps(km, src + (j0 + i) * ld + k0) : _mm512_setzero_ps();
            transpose16(r);
            for (int t = 0; t < kn; t++) _mm512_mask_storeu_ps(dst + (k0 + t) * ldd + j0, wm, r[t]);
        }
    }
}

/* 16 weights from element i of a row (lanes off in m read nothing), widened. */
static inline __attribute__((always_inline)) __m512 load_w(const void *row, sdxl_dtype wt, int64_t i,
                                                            __mmask16 m) {
    if (wt == SDXL_DTYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i);
    if (wt == SDXL_DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* bf16 */
}

/* y[m, n0..n1) for m < M: blocks of 4 weight rows against each x row. */
static inline __attribute__((always_inline)) void gemv_t(int64_t M, int64_t K, const float *x,
                                                          const void *w, sdxl_dtype wt, int64_t n0,
                                                          int64_t n1, const float *bias, float *y,
                                                          int64_t ldy) {
    const size_t es = wt == SDXL_DTYPE_F32 ? 4 : 2;
    const int64_t K16 = K & ~(int64_t)15;
    const __mmask16 tail = (__mmask16)((1u << (K - K16)) - 1);
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
        const char *w0 = (const char *)w + (size_t)n * (size_t)K * es; /* rows n..n+3 [4][K] */
        const char *w1 = w0 + K * es, *w2 = w1 + K * es, *w3 = w2 + K * es;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * K;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = 0; k < K16; k += 16) {
                __m512 xv = _mm512_loadu_ps(xm + k);
                a0 = _mm512_fmadd_ps(xv, load_w(w0, wt, k, 0xFFFF), a0);
                a1 = _mm512_fmadd_ps(xv, load_w(w1, wt, k, 0xFFFF), a1);
                a2 = _mm512_fmadd_ps(xv, load_w(w2, wt, k, 0xFFFF), a2);
                a3 = _mm512_fmadd_ps(xv, load_w(w3, wt, k, 0xFFFF), a3);
            }
            if (tail) {
                __m512 xv = _mm512_maskz_loadu_ps(tail, xm + K16);
                a0 = _mm512_fmadd_ps(xv, load_w(w0, wt, K16, tail), a0);
                a1 = _mm512_fmadd_ps(xv, load_w(w1, wt, K16, tail), a1);
                a2 = _mm512_fmadd_ps(xv, load_w(w2, wt, K16, tail), a2);
                a3 = _mm512_fmadd_ps(xv, load_w(w3, wt, K16, tail), a3);
            }
            float *ym = y + m * ldy + n;
            ym[0] = _mm512_reduce_add_ps(a0) + (bias ? bias[n] : 0.0f);
            ym[1] = _mm512_reduce_add_ps(a1) + (bias ? bias[n + 1] : 0.0f);
            ym[2] = _mm512_reduce_add_ps(a2) + (bias ? bias[n + 2] : 0.0f);
            ym[3] = _mm512_reduce_add_ps(a3) + (bias ? bias[n + 3] : 0.0f);
        }
    }
    for (; n < n1; n++) {
        const char *w0 = (const char *)w + (size_t)n * (size_t)K * es;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * K;
            __m512 a0 = _mm512_setzero_ps();
            for (int64_t k = 0; k < K16; k += 16)
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(xm + k), load_w(w0, wt, k, 0xFFFF), a0);
            if (tail) a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, xm + K16), load_w(w0, wt, K16, tail), a0);
            y[m * ldy + n] = _mm512_reduce_add_ps(a0) + (bias ? bias[n] : 0.0f);
        }
    }
}

static void gemv_avx512(int64_t M, int64_t K, const float *x, const void *w, sdxl_dtype wt, int64_t n0,
                        int64_t n1, const float *bias, float *y, int64_t ldy) {
    if (wt == SDXL_DTYPE_F32)
        gemv_t(M, K, x, w, SDXL_DTYPE_F32, n0, n1, bias, y, ldy);
    else if (wt == SDXL_DTYPE_F16)
        gemv_t(M, K, x, w, SDXL_DTYPE_F16, n0, n1, bias, y, ldy);
    else
        gemv_t(M, K, x, w, SDXL_DTYPE_BF16, n0, n1, bias, y, ldy);
}

const sdxl__gemm_isa sdxl__gemm_isa_avx512 = {MR, NR, ukernel_14x32, pack_t_avx512, gemv_avx512};
