/* dtype.h - element types of engine tensors and exact conversions.
 *
 * f16 is IEEE 754 binary16; bf16 is the top half of an IEEE binary32.
 * f32 -> f16/bf16 rounds to nearest, ties to even; overflow goes to ±Inf;
 * f32 subnormals and f16 subnormals are handled exactly (no flush to zero);
 * NaN stays NaN with its sign, quiet bit set (payload top bits kept), the
 * way torch and the F16C instructions do it. f16/bf16 -> f32 is exact.
 *
 * NaN, precisely (one rule for both narrow types, the hardware's):
 *   f32 -> f16:  sign | 0x7E00 | (f32 mantissa >> 13)      (= VCVTPS2PH)
 *   f32 -> bf16: (f32 bits >> 16) | 0x0040                  (= VCVTNEPS2BF16, ARM BFCVT)
 *   f16 -> f32:  sign | 0x7FC00000 | (f16 mantissa << 13)   (= VCVTPH2PS: quiets sNaN)
 *   bf16 -> f32: bits << 16                                 (pure widening, sNaN stays)
 * So a quiet NaN survives a round trip bit for bit, and a NaN never turns
 * into Inf by rounding. torch's scalar c10::BFloat16 instead maps every NaN
 * to 0x7FC0 (and its AVX-512 kernels to 0xFFFF); for the default NaN
 * 0x7FC00000 all three agree.
 *
 * The bulk functions pick the fastest code for this CPU at run time
 * (AVX2 + F16C, AVX-512; see core/cpu.h) and give bit-identical results to
 * the scalar ones for every input and length. All functions are thread-safe
 * and independent of the FP environment (MXCSR rounding mode, FTZ, DAZ).
 */
#ifndef SDXL_CORE_DTYPE_H
#define SDXL_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum sdxl_dtype {
    SDXL_DTYPE_F32 = 0,
    SDXL_DTYPE_F16,
    SDXL_DTYPE_BF16,
    SDXL_DTYPE_I32,
    SDXL_DTYPE_COUNT_
} sdxl_dtype;

size_t sdxl_dtype_size(sdxl_dtype t);       /* bytes per element; 0 for an invalid value */
const char *sdxl_dtype_name(sdxl_dtype t);  /* "f32", "f16", "bf16", "i32"; "?" if invalid */

float sdxl_f16_to_f32(uint16_t h);
uint16_t sdxl_f32_to_f16(float f);
float sdxl_bf16_to_f32(uint16_t h);
uint16_t sdxl_f32_to_bf16(float f);

/* Bulk versions; src and dst must not overlap. */
void sdxl_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void sdxl_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void sdxl_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void sdxl_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);

/* Convert n elements between any two float dtypes (f32/f16/bf16; same dtype
 * copies, with memmove). f16 <-> bf16 goes through an exact f32, so it is
 * rounded once. Returns 0, or -1 if a dtype is not a float type (i32
 * included). Except for a same-dtype copy, src and dst must not overlap. */
int sdxl_convert_n(const void *src, sdxl_dtype src_t, void *dst, sdxl_dtype dst_t, size_t n);

#endif
