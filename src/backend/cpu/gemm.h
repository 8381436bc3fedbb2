/* gemm.h - the CPU back end's private GEMM engine (implemented in linear.c).
 *
 *     C[M, N] = A[M, K] · B[K, N] + bias
 *
 * A is a row-major matrix of any float dtype (f32/f16/bf16, widened while it
 * is packed); B is never read directly but through a packer callback, so the
 * same engine serves linear (B = wᵀ, read transposed out of w [N, K]) and
 * conv2d (B = the im2col matrix of the input, generated band by band while
 * packing, so no full im2col buffer ever exists).
 *
 * Blocking (BLIS style, sizes in linear.c): for each block of NC columns and
 * KC depth, B is packed once into slivers of NR columns ([KC][NR] each,
 * shared by all threads); the threads then take tasks of MC rows x a range of
 * slivers, pack their rows of A into slivers of MR rows ([KC][MR]) and run
 * the MR x NR register-tile micro-kernel of the current ISA level.
 *
 * Scratch: the back end's reusable scratch (sdxl__cpu_scratch), bounded by
 * KC·NC + threads·MC·KC floats plus the bias; nothing is allocated per call
 * once the scratch has grown. Not reentrant: one op at a time per back end.
 */
#ifndef SDXL_BACKEND_CPU_GEMM_H
#define SDXL_BACKEND_CPU_GEMM_H

#include <stdint.h>

#include "backend/cpu/cpu_internal.h"

/* Fill dst[k * NR + j] = B(k0 + k, n0 + j) for k < kc, j < nr, and 0 for
 * nr <= j < NR. dst is 64-byte aligned. Called from several threads at once
 * (different slivers). */
struct sdxl__gemm_isa;
typedef void (*sdxl__gemm_pack_b_fn)(const struct sdxl__gemm_isa *isa, const void *ctx, int64_t k0,
                                     int64_t kc, int64_t n0, int64_t nr, int NR, float *dst);

typedef struct sdxl__gemm {
    int64_t M, N, K;
    const void *a;           /* A [M, K], row stride lda elements */
    sdxl_dtype a_dtype;      /* f32 | f16 | bf16 */
    int64_t lda;
    sdxl__gemm_pack_b_fn pack_b; /* B [K, N] */
    const void *b_ctx;
    const void *bias;        /* NULL, or [N] (bias_per_row false) or [M] (true) */
    sdxl_dtype bias_dtype;   /* f32 | f16 | bf16 */
    int bias_per_row;
    float *c;                /* C [M, N], row stride ldc */
    int64_t ldc;
} sdxl__gemm;

/* Run it on the back end's pool at the current ISA level (sdxl_cpu_isa()).
 * Errors: OUT_OF_MEMORY (scratch), reported through be->base.err with `op`
 * as the prefix. */
sdxl_status sdxl__gemm_run(sdxl_cpu_backend *be, const char *op, const sdxl__gemm *g);

/* Ready-made B packers.
 * Row-major f32 B: B(k, n) = p[k * ld + n]   (1x1 convolution: x [Cin, H·W]). */
typedef struct sdxl__gemm_b_rows {
    const float *p;
    int64_t ld;
} sdxl__gemm_b_rows;
void sdxl__gemm_pack_b_rows(const struct sdxl__gemm_isa *isa, const void *ctx, int64_t k0, int64_t kc,
                            int64_t n0, int64_t nr, int NR, float *dst);

/* Transposed B of any float dtype: B(k, n) = w[n * ld + k]   (linear: w [N, K]). */
typedef struct sdxl__gemm_b_trans {
    const void *w;
    sdxl_dtype dtype;
    int64_t ld;
} sdxl__gemm_b_trans;
void sdxl__gemm_pack_b_trans(const struct sdxl__gemm_isa *isa, const void *ctx, int64_t k0,
                             int64_t kc, int64_t n0, int64_t nr, int NR, float *dst);

/* ---- per-ISA pieces (linear.c, linear_avx2.c, linear_avx512.c) ----------
 * Micro-kernel on one MR x NR tile of C (row stride ldc):
 *   C[i][j] = init + sum_k ap[k*MR + i] * bp[k*NR + j],   i < MR, j < NR
 *   init    = accumulate ? C[i][j] : (bias_n ? bias_n[j] : 0) + (bias_m ? bias_m[i] : 0)
 * ap [kc][MR] and bp [kc][NR] are packed slivers (bp 64-byte aligned). */
typedef void (*sdxl__gemm_ukernel_fn)(int64_t kc, const float *ap, const float *bp, float *c,
                                      int64_t ldc, const float *bias_n, const float *bias_m,
                                      int accumulate);

/* Transposing packer: dst[k * NR + j] = src[j * ld + k] for k < kc, j < nr,
 * zero for j >= nr; f32 source. (Used for both A slivers, with NR = MR, and
 * transposed B.) */
typedef void (*sdxl__gemm_pack_t_fn)(const float *src, int64_t ld, int64_t kc, int64_t nr, int NR,
                                     float *dst);

/* Few-row product (linear with M <= SDXL__GEMV_MAX_M): for n in [n0, n1), m < M
 *   y[m * ldy + n] = (bias ? bias[n] : 0) + sum_k x[m * K + k] * w[n * K + k]
 * x [M, K] f32, w [N, K] f32|f16|bf16 widened in registers, bias f32. Each
 * weight row is read from memory once and reused from L1 for all M rows. */
#define SDXL__GEMV_MAX_M 8
typedef void (*sdxl__gemv_fn)(int64_t M, int64_t K, const float *x, const void *w, sdxl_dtype wt,
                              int64_t n0, int64_t n1, const float *bias, float *y, int64_t ldy);

typedef struct sdxl__gemm_isa {
    int mr, nr;
    sdxl__gemm_ukernel_fn kernel;
    sdxl__gemm_pack_t_fn pack_t;
    sdxl__gemv_fn gemv;
} sdxl__gemm_isa;

void sdxl__gemm_pack_t_generic(const float *src, int64_t ld, int64_t kc, int64_t nr, int NR,
                               float *dst);
extern const sdxl__gemm_isa sdxl__gemm_isa_generic;
extern const sdxl__gemm_isa sdxl__gemm_isa_avx2;
extern const sdxl__gemm_isa sdxl__gemm_isa_avx512;

/* The table for a level (falls back to lower levels). */
const sdxl__gemm_isa *sdxl__gemm_isa_for(sdxl_isa_level level);

#endif
