/* AVX2 + F16C variants of the bulk conversions (built with -mavx2 -mfma
 * -mf16c; called only at the "avx2" level).
 *
 * f16: VCVTPH2PS / VCVTPS2PH with an explicit round-to-nearest-even
 * immediate. Both ignore MXCSR's FTZ/DAZ for these conversions and the
 * immediate overrides its rounding mode, so they match the integer scalar
 * code for every input, NaNs included (both quiet a signalling NaN and keep
 * the top payload bits); tests/core/test_dtype.c checks all of that.
 * bf16: there is no instruction before AVX-512-BF16, so it is the scalar
 * integer rounding done eight lanes at a time.
 * Tails (n not a multiple of the vector width) go through the scalar code. */
#include <immintrin.h>

#include "core/dtype.h"
#include "core/dtype_impl.h"

void sdxl__f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 8));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(a));
        _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(b));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = sdxl_f16_to_f32(src[i]);
}

void sdxl__f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), a);
        _mm_storeu_si128((__m128i *)(dst + i + 8), b);
    }
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = sdxl_f32_to_f16(src[i]);
}

void sdxl__bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i + 8)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(a, 16));
        _mm256_storeu_si256((__m256i *)(dst + i + 8), _mm256_slli_epi32(b, 16));
    }
    for (; i < n; i++) dst[i] = sdxl_bf16_to_f32(src[i]);
}

/* Eight f32 bit patterns -> eight bf16 in the low 16 bits of each lane. */
static inline __m256i bf16_round8(__m256i u) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256i inf = _mm256_set1_epi32(0x7F800000);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    r = _mm256_srli_epi32(r, 16);
    /* |u| and 0x7F800000 are both non-negative as int32, so a signed compare
     * finds the NaNs. */
    __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x0040));
    return _mm256_blendv_epi8(r, nan, is_nan);
}

void sdxl__f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m256i b = bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i + 8)));
        /* Lanes hold 0..0xFFFF, so the unsigned-saturating pack is exact; it
         * interleaves the 128-bit halves (a0 b0 a1 b1), the permute undoes it. */
        __m256i p = _mm256_packus_epi32(a, b);
        p = _mm256_permute4x64_epi64(p, _MM_SHUFFLE(3, 1, 2, 0));
        _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
    for (; i < n; i++) dst[i] = sdxl_f32_to_bf16(src[i]);
}
