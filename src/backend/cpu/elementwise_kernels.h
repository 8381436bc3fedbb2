/* elementwise_kernels.h - the float kernels behind elementwise.c and norm.c,
 * one table per ISA level (private to the CPU back end).
 *
 * The kernels are written ONCE, in plain C, in elementwise_math.h. That file
 * is compiled three times - by elementwise.c (generic x86-64: SSE2),
 * elementwise_avx2.c and elementwise_avx512.c (with those ISAs' flags, see
 * CMakeLists.txt) - and GCC vectorizes the same loops 4, 8 or 16 lanes wide.
 * The arithmetic uses only IEEE +, -, *, /, conversions and selects (no FMA:
 * C11 mode means -ffp-contract=off, no libm calls, no -ffast-math), and every
 * reduction keeps explicit lanes, so the three tables give BIT-IDENTICAL
 * results; the tests check that.
 *
 * Every kernel works on a contiguous range and is thread-safe (no state);
 * the ops in elementwise.c / norm.c split work across the pool and call them.
 */
#ifndef SDXL_BACKEND_CPU_ELEMENTWISE_KERNELS_H
#define SDXL_BACKEND_CPU_ELEMENTWISE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/backend.h"
#include "core/tensor.h"
#include "core/cpu.h"

typedef struct sdxl__ew_kernels {
    sdxl_isa_level isa;
    /* y[i] = f(x[i]), i < n. y may equal x (not overlap it otherwise). */
    void (*unary[SDXL_UNARY_COUNT_])(const float *x, float *y, size_t n);
    /* y[i] = h[i] * gelu_erf(g[i]). y must not overlap h or g. */
    void (*geglu)(const float *h, const float *g, float *y, size_t n);
    /* Mean and biased variance of x[0..n), n >= 1, accumulated in double. */
    void (*moments)(const float *x, size_t n, double *mean, double *var);
    /* y[i] = (x[i] - mean) * scale + shift, then SiLU if `silu` (one group-norm
     * channel); mean = mean_hi + mean_lo (the double mean split in two floats).
     * y may equal x. */
    void (*norm_apply)(const float *x, float *y, size_t n, float mean_hi, float mean_lo,
                       float scale, float shift, bool silu);
    /* One layer-norm row: y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i], mean as
     * above; gamma / beta NULL mean 1 / 0. y may equal x. */
    void (*layer_norm_row)(const float *x, float *y, size_t n, float mean_hi, float mean_lo,
                           float rstd, const float *gamma, const float *beta);
    /* One softmax row, max-subtracted; n >= 1. y may equal x. */
    void (*softmax_row)(const float *x, float *y, size_t n);
} sdxl__ew_kernels;

extern const sdxl__ew_kernels sdxl__ew_kernels_generic; /* elementwise.c */
extern const sdxl__ew_kernels sdxl__ew_kernels_avx2;    /* elementwise_avx2.c */
extern const sdxl__ew_kernels sdxl__ew_kernels_avx512;  /* elementwise_avx512.c */

/* The table for the current sdxl_cpu_isa() (read per op, so
 * sdxl_cpu_set_max_isa between ops takes effect). Never NULL. */
const sdxl__ew_kernels *sdxl__ew_kernels_get(void);

/* ---- helpers shared by elementwise.c and norm.c ----------------------------- */
#define SDXL__EW_DTYPE_BIT(t) (1u << (unsigned)(t))
#define SDXL__EW_FLOATS                                                                            \
    (SDXL__EW_DTYPE_BIT(SDXL_DTYPE_F32) | SDXL__EW_DTYPE_BIT(SDXL_DTYPE_F16) |                     \
     SDXL__EW_DTYPE_BIT(SDXL_DTYPE_BF16))
#define SDXL__EW_ANY (SDXL__EW_FLOATS | SDXL__EW_DTYPE_BIT(SDXL_DTYPE_I32))

/* Elementwise work is split into blocks of this many elements: big enough that
 * a block amortizes the pool's dispatch, small enough that tensors under
 * ~16K elements stay on the calling thread. */
#define SDXL__EW_BLOCK ((size_t)16384)

/* Is `t` a usable CPU tensor (non-NULL, ndim 0..4, dims >= 0, data when it has
 * elements, host memory) of a dtype in the mask `dtypes`? If not, fills be's
 * error ("<op>: <name> ...") and returns INVALID_ARG, or UNSUPPORTED for a valid
 * dtype outside the mask. */
sdxl_status sdxl__ew_check(sdxl_backend *be, const char *op, const char *name,
                           const sdxl_tensor *t, unsigned dtypes);
/* Do the bytes of a and b intersect? (Empty tensors never do.) */
bool sdxl__ew_overlap(const sdxl_tensor *a, const sdxl_tensor *b);
/* "f32[2,4,64,64]" in a caller-provided buffer (for messages). */
#define SDXL__EW_DESC(t) sdxl_tensor_describe((t), (char[80]){0}, 80)

#endif
