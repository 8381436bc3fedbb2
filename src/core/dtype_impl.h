/* dtype_impl.h - private: the per-ISA variants behind the bulk conversions
 * of dtype.h. Each one gives results bit-identical to the scalar functions
 * for every input and any n (tails included).
 *
 * The _avx2 variants need the "avx2" level of cpu.h (AVX2 + FMA + F16C), the
 * _avx512 ones the "avx512" level (F + BW + VL + DQ); call them only after
 * sdxl_cpu_isa() says so. The dispatching *_n functions in dtype.c do that.
 */
#ifndef SDXL_CORE_DTYPE_IMPL_H
#define SDXL_CORE_DTYPE_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* Portable C; what the generic level runs. */
void sdxl__f16_to_f32_generic(const uint16_t *src, float *dst, size_t n);
void sdxl__f32_to_f16_generic(const float *src, uint16_t *dst, size_t n);
void sdxl__bf16_to_f32_generic(const uint16_t *src, float *dst, size_t n);
void sdxl__f32_to_bf16_generic(const float *src, uint16_t *dst, size_t n);

/* dtype_avx2.c */
void sdxl__f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);
void sdxl__f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n);
void sdxl__bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);
void sdxl__f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n);

/* dtype_avx512.c */
void sdxl__f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n);
void sdxl__f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n);
void sdxl__bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n);
void sdxl__f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n);

#endif
