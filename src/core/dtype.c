/* STUB: truncating conversions until the exact ones land. */
#include "core/dtype.h"
#include <string.h>
size_t sdxl_dtype_size(sdxl_dtype t) { return t == SDXL_DTYPE_F16 || t == SDXL_DTYPE_BF16 ? 2 : (unsigned)t < SDXL_DTYPE_COUNT_ ? 4 : 0; }
const char *sdxl_dtype_name(sdxl_dtype t) { static const char *n[] = {"f32", "f16", "bf16", "i32"}; return (unsigned)t < SDXL_DTYPE_COUNT_ ? n[t] : "?"; }
float sdxl_bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
uint16_t sdxl_f32_to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)(u >> 16); }
float sdxl_f16_to_f32(uint16_t h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }
uint16_t sdxl_f32_to_f16(float f) { _Float16 x = (_Float16)f; uint16_t h; memcpy(&h, &x, 2); return h; }
void sdxl_f16_to_f32_n(const uint16_t *s, float *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = sdxl_f16_to_f32(s[i]); }
void sdxl_f32_to_f16_n(const float *s, uint16_t *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = sdxl_f32_to_f16(s[i]); }
void sdxl_bf16_to_f32_n(const uint16_t *s, float *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = sdxl_bf16_to_f32(s[i]); }
void sdxl_f32_to_bf16_n(const float *s, uint16_t *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = sdxl_f32_to_bf16(s[i]); }
int sdxl_convert_n(const void *src, sdxl_dtype st, void *dst, sdxl_dtype dt, size_t n) { return -1; }
