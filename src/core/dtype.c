/* Scalar conversions are done on the bit patterns with integer arithmetic
 * only. That keeps them independent of the compiler (_Float16 support), of
 * the FP environment (MXCSR FTZ/DAZ and rounding mode, which a library in the
 * same process may have changed) and of the target, so they can serve as the
 * reference every SIMD variant is tested against bit for bit. */
#include "core/dtype.h"

#include <string.h>

#include "core/cpu.h"
#include "core/dtype_impl.h"

size_t sdxl_dtype_size(sdxl_dtype t) {
    switch (t) {
    case SDXL_DTYPE_F32: return 4;
    case SDXL_DTYPE_F16: return 2;
    case SDXL_DTYPE_BF16: return 2;
    case SDXL_DTYPE_I32: return 4;
    default: return 0;
    }
}

const char *sdxl_dtype_name(sdxl_dtype t) {
    switch (t) {
    case SDXL_DTYPE_F32: return "f32";
    case SDXL_DTYPE_F16: return "f16";
    case SDXL_DTYPE_BF16: return "bf16";
    case SDXL_DTYPE_I32: return "i32";
    default: return "?";
    }
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float sdxl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;
    uint32_t u;
    if (e == 0x1F) {
        /* Inf, or NaN: a signalling NaN comes out quiet, as VCVTPH2PS does,
         * so the F16C path and this one agree on every pattern. */
        u = sign | 0x7F800000u | (m << 13) | (m ? 0x00400000u : 0);
    } else if (e != 0) {
        u = sign | ((e + (127 - 15)) << 23) | (m << 13);
    } else if (m == 0) {
        u = sign;
    } else {
        /* Subnormal m * 2^-24 becomes a normal f32: the top set bit p of m
         * is the implicit one, so the exponent is p - 24. */
        int p = 31 - __builtin_clz(m);
        u = sign | ((uint32_t)(p - 24 + 127) << 23) | ((m << (23 - p)) & 0x7FFFFFu);
    }
    return f32_from_bits(u);
}

uint16_t sdxl_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) /* NaN: keep the top 10 payload bits, set the quiet bit */
        return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a >= 0x477FF000u) /* >= 65520, the midpoint of 65504 and 2^16: ties go to even = Inf */
        return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x38800000u) { /* >= 2^-14: a normal f16 */
        /* Rebias the exponent in place, then round the 13 dropped mantissa
         * bits to nearest even; a carry out of the mantissa correctly bumps
         * the exponent (at most to 30, since a < 65520). */
        uint32_t r = a - ((uint32_t)(127 - 15) << 23);
        r += 0x0FFFu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    /* f16 subnormal range: count in units of 2^-24. Biased exponents below
     * 102 (|f| < 2^-25, f32 subnormals included) are under half a unit. */
    uint32_t e = a >> 23;
    if (e < 102) return sign;
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++; /* q = 0x400 is the smallest normal: still right */
    return (uint16_t)(sign | q);
}

float sdxl_bf16_to_f32(uint16_t h) {
    /* Pure widening, NaNs included: bf16 is defined as the top half of an f32
     * and every library (torch too) widens it this way. */
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t sdxl_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        /* NaN: the rounding below could carry a NaN into Inf. Keep the sign and
         * the top 6 payload bits, set the quiet bit (VCVTNEPS2BF16, ARM BFCVT). */
        return (uint16_t)((u >> 16) | 0x0040u);
    /* Adding 0x7FFF plus the lowest kept bit rounds to nearest even; values at
     * or past the bf16 max + half an ulp carry into the exponent and give Inf. */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* ---- bulk: portable variants -------------------------------------------- */

void sdxl__f16_to_f32_generic(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = sdxl_f16_to_f32(src[i]);
}

void sdxl__f32_to_f16_generic(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = sdxl_f32_to_f16(src[i]);
}

void sdxl__bf16_to_f32_generic(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = sdxl_bf16_to_f32(src[i]);
}

void sdxl__f32_to_bf16_generic(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = sdxl_f32_to_bf16(src[i]);
}

/* ---- bulk: dispatch -------------------------------------------------------
 * sdxl_cpu_isa() is an atomic load after the first call, cheap enough to ask
 * on every call; asking each time lets sdxl_cpu_set_max_isa take effect
 * between calls (the tests run every variant this way). */

void sdxl_f16_to_f32_n(const uint16_t *src, float *dst, size_t n) {
    switch (sdxl_cpu_isa()) {
    case SDXL_ISA_AVX512: sdxl__f16_to_f32_avx512(src, dst, n); break;
    case SDXL_ISA_AVX2: sdxl__f16_to_f32_avx2(src, dst, n); break;
    default: sdxl__f16_to_f32_generic(src, dst, n); break;
    }
}

void sdxl_f32_to_f16_n(const float *src, uint16_t *dst, size_t n) {
    switch (sdxl_cpu_isa()) {
    case SDXL_ISA_AVX512: sdxl__f32_to_f16_avx512(src, dst, n); break;
    case SDXL_ISA_AVX2: sdxl__f32_to_f16_avx2(src, dst, n); break;
    default: sdxl__f32_to_f16_generic(src, dst, n); break;
    }
}

void sdxl_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n) {
    switch (sdxl_cpu_isa()) {
    case SDXL_ISA_AVX512: sdxl__bf16_to_f32_avx512(src, dst, n); break;
    case SDXL_ISA_AVX2: sdxl__bf16_to_f32_avx2(src, dst, n); break;
    default: sdxl__bf16_to_f32_generic(src, dst, n); break;
    }
}

void sdxl_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n) {
    switch (sdxl_cpu_isa()) {
    case SDXL_ISA_AVX512: sdxl__f32_to_bf16_avx512(src, dst, n); break;
    case SDXL_ISA_AVX2: sdxl__f32_to_bf16_avx2(src, dst, n); break;
    default: sdxl__f32_to_bf16_generic(src, dst, n); break;
    }
}

static int is_float(sdxl_dtype t) {
    return t == SDXL_DTYPE_F32 || t == SDXL_DTYPE_F16 || t == SDXL_DTYPE_BF16;
}

int sdxl_convert_n(const void *src, sdxl_dtype src_t, void *dst, sdxl_dtype dst_t, size_t n) {
    if (!is_float(src_t) || !is_float(dst_t)) return -1;
    if (n == 0) return 0;
    if (src_t == dst_t) {
        memmove(dst, src, n * sdxl_dtype_size(src_t));
        return 0;
    }
    if (src_t == SDXL_DTYPE_F32) {
        if (dst_t == SDXL_DTYPE_F16) sdxl_f32_to_f16_n(src, dst, n);
        else sdxl_f32_to_bf16_n(src, dst, n);
        return 0;
    }
    if (dst_t == SDXL_DTYPE_F32) {
        if (src_t == SDXL_DTYPE_F16) sdxl_f16_to_f32_n(src, dst, n);
        else sdxl_bf16_to_f32_n(src, dst, n);
        return 0;
    }
    /* f16 <-> bf16 through f32 in cache-sized pieces. Widening to f32 is
     * exact, so this is a single correct rounding, not a double one. */
    float tmp[1024];
    const uint16_t *s = src;
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i += 1024) {
        size_t k = n - i < 1024 ? n - i : 1024;
        if (src_t == SDXL_DTYPE_F16) {
            sdxl_f16_to_f32_n(s + i, tmp, k);
            sdxl_f32_to_bf16_n(tmp, d + i, k);
        } else {
            sdxl_bf16_to_f32_n(s + i, tmp, k);
            sdxl_f32_to_f16_n(tmp, d + i, k);
        }
    }
    return 0;
}
