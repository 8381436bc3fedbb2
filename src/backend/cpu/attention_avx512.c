/* attention_avx512.c - AVX-512 kernels of the fused attention (attention.h).
 *
 * scores: 8 queries x 48 keys per register tile (24 zmm accumulators; per
 *         head dim d: 3 key loads + 8 query broadcasts for 24 FMAs).
 * pv:     6 queries x 64 output dims (24 accumulators; per key: 4 value
 *         loads + 6 probability broadcasts).
 * exp2:   2^x = 2^n · 2^f with n = round(x), f in [-1/2, 1/2]; 2^f by its
 *         Taylor series in f·ln2 to degree 7. Truncation error
 *         (ln2/2)^8/8! < 5.2e-9 relative, below float rounding; the Horner
 *         evaluation adds a few ulp (tested: < 1e-6 relative). 2^n is
 *         applied exactly by vscalefps. Inputs below -126 are clamped (their
 *         weight, < 1e-38 of the row maximum, does not matter).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/attention.h"

#define BQ SDXL__ATT_BQ
#define BK SDXL__ATT_BK

static inline __m512 exp2_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.5252733804059840e-05f); /* ln2^7/7! */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530393381608e-04f)); /* ln2^6/6! */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-03f)); /* ln2^5/5! */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-03f)); /* ln2^4/4! */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-02f)); /* ln2^3/3! */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-01f)); /* ln2^2/2! */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-01f)); /* ln2 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static void exp2_n_avx512(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, exp2_ps(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

/* s[i][j0 + 16v + t] for i < 8, v < NV: rows qp[.][i0..i0+8), keys kp[.][j0..). */
static inline __attribute__((always_inline)) void scores_tile(int64_t D, const float *qp, const float *kp,
                                                               float *s, const int NV) {
    __m512 acc[8][3];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; d++) {
        __m512 kv[3];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) kv[v] = _mm512_load_ps(kp + d * BK + 16 * v);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            const __m512 a = _mm512_set1_ps(qp[d * BQ + i]);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(a, kv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) _mm512_store_ps(s + i * BK + 16 * v, acc[i][v]);
}

static void scores_avx512(int64_t D, const float *qp, const float *kp, int64_t nk16, float *s) {
    int64_t j = 0;
    for (; j + 48 <= nk16; j += 48) /* a 48-key column of kp (D x 48) stays in L1 over all rows */
        for (int i0 = 0; i0 < BQ; i0 += 8) scores_tile(D, qp + i0, kp + j, s + i0 * BK + j, 3);
    if (nk16 - j == 32)
        for (int i0 = 0; i0 < BQ; i0 += 8) scores_tile(D, qp + i0, kp + j, s + i0 * BK + j, 2);
    else if (nk16 - j == 16)
        for (int i0 = 0; i0 < BQ; i0 += 8) scores_tile(D, qp + i0, kp + j, s + i0 * BK + j, 1);
}

static void softmax_avx512(float *s, int64_t nk, const int64_t *nvalid, float *m, float *l, float *alpha) {
    float mnew[BQ] __attribute__((aligned(64))), delta[BQ] __attribute__((aligned(64)));
    for (int i = 0; i < BQ; i++) { /* row maxima */
        const float *row = s + i * BK;
        const int64_t n = nvalid[i];
        __m512 vmax = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 k = n - j >= 16 ? 0xFFFF : (__mmask16)((1u << (n - j)) - 1);
            vmax = _mm512_mask_max_ps(vmax, k, vmax, _mm512_loadu_ps(row + j));
        }
        const float mx = n ? _mm512_reduce_max_ps(vmax) : m[i];
        mnew[i] = m[i] > mx ? m[i] : mx;
        delta[i] = m[i] == -INFINITY ? -INFINITY : m[i] - mnew[i]; /* <= 0 */
    }
    for (int i = 0; i < BQ; i += 16) { /* alpha = 2^delta for all rows at once; 2^-inf = 0 */
        const __m512 d = _mm512_load_ps(delta + i);
        const __mmask16 fin = _mm512_cmp_ps_mask(d, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
        _mm512_storeu_ps(alpha + i, _mm512_maskz_mov_ps(fin, exp2_ps(d)));
    }
    for (int i = 0; i < BQ; i++) {
        float *row = s + i * BK; /* [nk] */
        const int64_t n = nvalid[i];
        if (n == 0) {
            alpha[i] = 1.0f;
            memset(row, 0, (size_t)nk * sizeof(float));
            continue;
        }
        const __m512 vm = _mm512_set1_ps(mnew[i]);
        __m512 sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 k = n - j >= 16 ? 0xFFFF : (__mmask16)((1u << (n - j)) - 1);
            const __m512 pj = _mm512_maskz_mov_ps(k, exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(row + j), vm)));
            _mm512_mask_storeu_ps(row + j, k, pj);
            sum = _mm512_add_ps(sum, pj);
        }
        for (int64_t j = n; j < nk; j++) row[j] = 0.0f;
        l[i] = l[i] * alpha[i] + _mm512_reduce_add_ps(sum);
        m[i] = mnew[i];
    }
}

/* o[i][d0 + 16v + t] for i < 6, v < NV. */
static inline __attribute__((always_inline)) void pv_tile(const float *p, int64_t nk, const float *vp, int64_t Dp,
                                                           const float *alpha, float *o, const int NV) {
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) {
        const __m512 a = _mm512_set1_ps(alpha[i]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_mul_ps(a, _mm512_load_ps(o + i * Dp + 16 * v));
    }
    for (int64_t j = 0; j < nk; j++) {
        __m512 vv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) vv[v] = _mm512_load_ps(vp + j * Dp + 16 * v);
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) {
            const __m512 a = _mm512_set1_ps(p[i * BK + j]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(a, vv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_store_ps(o + i * Dp + 16 * v, acc[i][v]);
}

static void pv_avx512(const float *p, int64_t nk, const float *vp, int64_t Dp, const float *alpha, float *o) {
    for (int i0 = 0; i0 < BQ; i0 += 6) {
        const float *pi = p + i0 * BK;
        float *oi = o + i0 * Dp;
        int64_t d0 = 0;
        for (; d0 + 64 <= Dp; d0 += 64) pv_tile(pi, nk, vp + d0, Dp, alpha + i0, oi + d0, 4);
        switch ((Dp - d0) / 16) {
        case 3: pv_tile(pi, nk, vp + d0, Dp, alpha + i0, oi + d0, 3); break;
        case 2: pv_tile(pi, nk, vp + d0, Dp, alpha + i0, oi + d0, 2); break;
        case 1: pv_tile(pi, nk, vp + d0, Dp, alpha + i0, oi + d0, 1); break;
        default: break;
        }
    }
}

const sdxl__attn_isa sdxl__attn_isa_avx512 = {scores_avx512, softmax_avx512, pv_avx512, exp2_n_avx512};
