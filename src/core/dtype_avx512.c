/* AVX-512 variants of the bulk conversions (built with -mavx512f/bw/vl/dq
 * -mavx512bf16; called only at the "avx512" level, which guarantees F, BW,
 * VL and DQ but not BF16).
 *
 * f32 -> bf16 does NOT use VCVTNEPS2BF16 even where AVX-512-BF16 exists: that
 * instruction treats subnormal inputs as zero (0x00010000 gives 0x0000, not
 * 0x0001), which breaks the exactness promised by dtype.h. Its NaN rule is
 * ours, but the integer rounding below costs nothing extra in a loop that is
 * bound by memory bandwidth anyway.
 * Tails use masked loads and stores, so every element goes through the same
 * instructions and no scalar code runs. */
#include <immintrin.h>

#include "core/dtype.h"
#include "core/dtype_impl.h"

static inline __mmask16 tail_mask(size_t r) { return (__mmask16)((1u << r) - 1u); }

void sdxl__f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 16));
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(a));
        _mm512_storeu_ps(dst + i + 16, _mm512_cvtph_ps(b));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i));
        _mm512_mask_storeu_ps(dst + i, m, v);
    }
}

void sdxl__f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        __m256i b = _mm512_cvtps_ph(_mm512_loadu_ps(src + i + 16), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(dst + i), a);
        _mm256_storeu_si256((__m256i *)(dst + i + 16), b);
    }
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(dst + i, m, h);
    }
}

void sdxl__bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512i a = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m512i b = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i + 16)));
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(a, 16));
        _mm512_storeu_si512(dst + i + 16, _mm512_slli_epi32(b, 16));
    }
    for (; i < n; i += 16) {
        size_t r = n - i < 16 ? n - i : 16;
        __mmask16 m = tail_mask(r);
        __m512i a = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
        _mm512_mask_storeu_epi32(dst + i, m, _mm512_slli_epi32(a, 16));
    }
}

/* Sixteen f32 bit patterns -> sixteen bf16 in the low halves of the lanes. */
static inline __m512i bf16_round16(__m512i u) {
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
    __mmask16 is_nan = _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7F800000));
    __m512i nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x0040));
    return _mm512_mask_blend_epi32(is_nan, r, nan);
}

void sdxl__f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512i a = bf16_round16(_mm512_loadu_si512(src + i));
        __m512i b = bf16_round16(_mm512_loadu_si512(src + i + 16));
        /* Lanes hold 0..0xFFFF: the truncating narrow is exact and keeps order. */
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(a));
        _mm256_storeu_si256((__m256i *)(dst + i + 16), _mm512_cvtepi32_epi16(b));
    }
    for (; i < n; i += 16) {
        size_t r = n - i < 16 ? n - i : 16;
        __mmask16 m = tail_mask(r);
        __m512i a = bf16_round16(_mm512_maskz_loadu_epi32(m, src + i));
        _mm512_mask_cvtepi32_storeu_epi16(dst + i, m, a);
    }
}
