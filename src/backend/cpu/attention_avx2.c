/* attention_avx2.c - AVX2 + FMA kernels of the fused attention (attention.h).
 *
 * scores: 4 queries x 24 keys per register tile (12 ymm accumulators).
 * pv:     3 queries x 32 output dims (12 accumulators).
 * exp2:   as in attention_avx512.c (degree-7 Taylor series of 2^f on
 *         [-1/2, 1/2], < 1e-6 relative), 2^n built in the exponent bits
 *         (n >= -126 after the clamp, so the result is a normal float).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/attention.h"

#define BQ SDXL__ATT_BQ
#define BK SDXL__ATT_BK

static inline __m256 exp2_ps(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-126.0f));
    const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.5252733804059840e-05f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.5403530393381608e-04f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-03f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-03f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-02f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-01f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-01f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static void exp2_n_avx2(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp2_ps(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float t[8] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(t, exp2_ps(_mm256_loadu_ps(t)));
        memcpy(y + i, t, (size_t)(n - i) * sizeof(float));
    }
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* s[i][8v + t] for i < 4, v < NV. */
static inline __attribute__((always_inline)) void scores_tile(int64_t D, const float *qp, const float *kp,
                                                               float *s, const int NV) {
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d++) {
        __m256 kv[3];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) kv[v] = _mm256_load_ps(kp + d * BK + 8 * v);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m256 a = _mm256_broadcast_ss(qp + d * BQ + i);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(a, kv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) _mm256_store_ps(s + i * BK + 8 * v, acc[i][v]);
}

static void scores_avx2(int64_t D, const float *qp, const float *kp, int64_t nk16, float *s) {
    int64_t j = 0;
    for (; j + 24 <= nk16; j += 24)
        for (int i0 = 0; i0 < BQ; i0 += 4) scores_tile(D, qp + i0, kp + j, s + i0 * BK + j, 3);
    if (nk16 - j == 16)
        for (int i0 = 0; i0 < BQ; i0 += 4) scores_tile(D, qp + i0, kp + j, s + i0 * BK + j, 2);
    else if (nk16 - j == 8)
        for (int i0 = 0; i0 < BQ; i0 += 4) scores_tile(D, qp + i0, kp + j, s + i0 * BK + j, 1);
}

static void softmax_avx2(float *s, int64_t nk, const int64_t *nvalid, float *m, float *l, float *alpha) {
    for (int i = 0; i < BQ; i++) {
        float *row = s + i * BK; /* [nk] */
        const int64_t n = nvalid[i], n8 = n & ~(int64_t)7;
        if (n == 0) {
            alpha[i] = 1.0f;
            memset(row, 0, (size_t)nk * sizeof(float));
            continue;
        }
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        for (int64_t j = 0; j < n8; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(row + j));
        float mx = hmax(vmax);
        for (int64_t j = n8; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        const float mn = m[i] > mx ? m[i] : mx;
        const float a = m[i] == -INFINITY ? 0.0f : exp2f(m[i] - mn);
        const __m256 vm = _mm256_set1_ps(mn);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < n8; j += 8) {
            const __m256 pj = exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
            _mm256_storeu_ps(row + j, pj);
            sum = _mm256_add_ps(sum, pj);
        }
        float ssum = hsum(sum);
        if (n8 < n) { /* tail through a padded vector */
            float t[8];
            for (int u = 0; u < 8; u++) t[u] = n8 + u < n ? row[n8 + u] - mn : -126.0f;
            _mm256_storeu_ps(t, exp2_ps(_mm256_loadu_ps(t)));
            for (int64_t j = n8; j < n; j++) {
                row[j] = t[j - n8];
                ssum += row[j];
            }
        }
        for (int64_t j = n; j < nk; j++) row[j] = 0.0f;
        l[i] = l[i] * a + ssum;
        m[i] = mn;
        alpha[i] = a;
    }
}

/* o[i][8v + t] for i < 3, v < NV. */
static inline __attribute__((always_inline)) void pv_tile(const float *p, int64_t nk, const float *vp, int64_t Dp,
                                                           const float *alpha, float *o, const int NV) {
    __m256 acc[3][4];
#pragma GCC unroll 3
    for (int i = 0; i < 3; i++) {
        const __m256 a = _mm256_set1_ps(alpha[i]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_mul_ps(a, _mm256_load_ps(o + i * Dp + 8 * v));
    }
    for (int64_t j = 0; j < nk; j++) {
        const __m256 a0 = _mm256_broadcast_ss(p + j), a1 = _mm256_broadcast_ss(p + BK + j),
                     a2 = _mm256_broadcast_ss(p + 2 * BK + j);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            const __m256 vv = _mm256_load_ps(vp + j * Dp + 8 * v);
            acc[0][v] = _mm256_fmadd_ps(a0, vv, acc[0][v]);
            acc[1][v] = _mm256_fmadd_ps(a1, vv, acc[1][v]);
            acc[2][v] = _mm256_fmadd_ps(a2, vv, acc[2][v]);
        }
    }
#pragma GCC unroll 3
    for (int i = 0; i < 3; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm256_store_ps(o + i * Dp + 8 * v, acc[i][v]);
}

static void pv_avx2(const float *p, int64_t nk, const float *vp, int64_t Dp, const float *alpha, float *o) {
    for (int i0 = 0; i0 < BQ; i0 += 3) {
        const float *pi = p + i0 * BK;
        float *oi = o + i0 * Dp;
        int64_t d0 = 0;
        for (; d0 + 32 <= Dp; d0 += 32) pv_tile(pi, nk, vp + d0, Dp, alpha + i0, oi + d0, 4);
        if (Dp - d0 == 16) pv_tile(pi, nk, vp + d0, Dp, alpha + i0, oi + d0, 2);
    }
}

const sdxl__attn_isa sdxl__attn_isa_avx2 = {scores_avx2, softmax_avx2, pv_avx2, exp2_n_avx2};
