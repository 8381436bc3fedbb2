/* linear_avx2.c - AVX2 + FMA pieces of the GEMM engine (gemm.h).
 *
 * Micro-kernel: a 6 x 16 tile of C in 12 ymm accumulators; per k two loads
 * of B and six broadcasts of A feed 12 FMAs (16 ymm registers in all). */
#include <immintrin.h>

#include "backend/cpu/gemm.h"
#include "core/dtype.h"

#define MR 6
#define NR 16

static void ukernel_6x16(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                         const float *bias_n, const float *bias_m, int accumulate) {
    __m256 c0[MR], c1[MR]; /* rows i: columns 0..7, 8..15 */
    if (accumulate) {
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            c0[i] = _mm256_loadu_ps(c + i * ldc);
            c1[i] = _mm256_loadu_ps(c + i * ldc + 8);
        }
    } else {
        __m256 b0 = bias_n ? _mm256_loadu_ps(bias_n) : _mm256_setzero_ps();
        __m256 b1 = bias_n ? _mm256_loadu_ps(bias_n + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 bm = bias_m ? _mm256_set1_ps(bias_m[i]) : _mm256_setzero_ps();
            c0[i] = _mm256_add_ps(b0, bm);
            c1[i] = _mm256_add_ps(b1, bm);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256 a = _mm256_broadcast_ss(ap + i);
            c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
        }
        ap += MR;
        bp += NR;
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(c + i * ldc, c0[i]);
        _mm256_storeu_ps(c + i * ldc + 8, c1[i]);
    }
}

/* In-register transpose of 8 rows of 8 (r[i]: row i in, column i out). */
static inline void transpose8(__m256 r[8]) {
    __m256 a[8], b[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        a[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) { /* b[4g + c], lane L: rows 4g..4g+3 of column 4L + c */
        __m256d x0 = _mm256_castps_pd(a[4 * g]), x1 = _mm256_castps_pd(a[4 * g + 1]);
        __m256d x2 = _mm256_castps_pd(a[4 * g + 2]), x3 = _mm256_castps_pd(a[4 * g + 3]);
        b[4 * g + 0] = _mm256_castpd_ps(_mm256_unpacklo_pd(x0, x2));
        b[4 * g + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(x0, x2));
        b[4 * g + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(x1, x3));
        b[4 * g + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(x1, x3));
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(b[c], b[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(b[c], b[4 + c], 0x31);
    }
}

/* src [nr rows, stride ld][kc] -> dst [kc][ldd]: 8 x 8 blocks in registers,
 * partial blocks through the generic code. */
static void pack_t_avx2(const float *src, int64_t ld, int64_t kc, int64_t nr, int ldd, float *dst) {
    const int64_t kc8 = kc & ~(int64_t)7;
    int j0 = 0;
    for (; j0 + 8 <= ldd && j0 + 8 <= nr; j0 += 8) {
        for (int64_t k0 = 0; k0 < kc8; k0 += 8) {
            __m256 r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (j0 + i) * ld + k0);
            transpose8(r);
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) _mm256_storeu_ps(dst + (k0 + t) * ldd + j0, r[t]);
        }
        for (int64_t k = kc8; k < kc; k++)
            for (int i = 0; i < 8; i++) dst[k * ldd + j0 + i] = src[(j0 + i) * ld + k];
    }
    /* remaining columns j0..ldd-1 (rows j0..nr-1 real, the rest zero) */
    for (int64_t k = 0; k < kc; k++)
        for (int j = j0; j < ldd; j++) dst[k * ldd + j] = j < nr ? src[j * ld + k] : 0.0f;
}

/* 8 weights from element i of a row, widened. */
static inline __attribute__((always_inline)) __m256 load_w(const void *row, sdxl_dtype wt, int64_t i) {
    if (wt == SDXL_DTYPE_F32) return _mm256_loadu_ps((const float *)row + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    if (wt == SDXL_DTYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); /* bf16 */
}

static inline float load_w1(const void *row, sdxl_dtype wt, int64_t i) {
    if (wt == SDXL_DTYPE_F32) return ((const float *)row)[i];
    uint16_t h = ((const uint16_t *)row)[i];
    return wt == SDXL_DTYPE_F16 ? sdxl_f16_to_f32(h) : sdxl_bf16_to_f32(h);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* y[m, n0..n1) for m < M: one weight row at a time against each x row
 * (two accumulators hide the FMA latency). */
static inline __attribute__((always_inline)) void gemv_t(int64_t M, int64_t K, const float *x,
                                                          const void *w, sdxl_dtype wt, int64_t n0,
                                                          int64_t n1, const float *bias, float *y,
                                                          int64_t ldy) {
    const size_t es = wt == SDXL_DTYPE_F32 ? 4 : 2;
    const int64_t K16 = K & ~(int64_t)15, K8 = K & ~(int64_t)7;
    for (int64_t n = n0; n < n1; n++) {
        const char *wr = (const char *)w + (size_t)n * (size_t)K * es; /* row n [K] */
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * K;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;
            int64_t k = 0;
            for (; k < K16; k += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xm + k), load_w(wr, wt, k), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xm + k + 8), load_w(wr, wt, k + 8), a1);
            }
            for (; k < K8; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xm + k), load_w(wr, wt, k), a0);
            float s = hsum8(_mm256_add_ps(a0, a1));
            for (; k < K; k++) s += xm[k] * load_w1(wr, wt, k);
            y[m * ldy + n] = s + (bias ? bias[n] : 0.0f);
        }
    }
}

static void gemv_avx2(int64_t M, int64_t K, const float *x, const void *w, sdxl_dtype wt, int64_t n0,
                      int64_t n1, const float *bias, float *y, int64_t ldy) {
    if (wt == SDXL_DTYPE_F32)
        gemv_t(M, K, x, w, SDXL_DTYPE_F32, n0, n1, bias, y, ldy);
    else if (wt == SDXL_DTYPE_F16)
        gemv_t(M, K, x, w, SDXL_DTYPE_F16, n0, n1, bias, y, ldy);
    else
        gemv_t(M, K, x, w, SDXL_DTYPE_BF16, n0, n1, bias, y, ldy);
}

const sdxl__gemm_isa sdxl__gemm_isa_avx2 = {MR, NR, ukernel_6x16, pack_t_avx2, gemv_avx2};
