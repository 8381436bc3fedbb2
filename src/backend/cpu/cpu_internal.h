/* cpu_internal.h - what the CPU back end's op files share.
 *
 * Each op family lives in its own file (linear.c, conv2d.c, attention.c,
 * norm.c, elementwise.c) and is wired into the table in backend_cpu.c.
 * ISA variants of a kernel live in <file>_avx2.c / <file>_avx512.c, compiled
 * with that ISA's flags (CMakeLists.txt) and chosen at run time with
 * sdxl_cpu_isa() (core/cpu.h).
 */
#ifndef SDXL_BACKEND_CPU_INTERNAL_H
#define SDXL_BACKEND_CPU_INTERNAL_H

#include "backend/backend.h"
#include "core/cpu.h"
#include "core/threadpool.h"

typedef struct sdxl_cpu_backend {
    sdxl_backend base; /* must be first */
    sdxl_threadpool *pool;
    int n_threads;
    /* Scratch for ops that need a temporary (weights widened to f32, im2col
     * panels, attention tiles): grows to the largest request and is reused,
     * so steady-state calls allocate nothing. One op runs at a time. */
    void *scratch;
    size_t scratch_size;
} sdxl_cpu_backend;

static inline sdxl_cpu_backend *sdxl__cpu(sdxl_backend *be) { return (sdxl_cpu_backend *)be; }

/* At least `bytes` of 64-byte-aligned scratch, or NULL (and be->err set) on OOM.
 * The pointer is valid until the next call. */
void *sdxl__cpu_scratch(sdxl_cpu_backend *be, size_t bytes);

/* Fill be->err (op name first) and return st. */
sdxl_status sdxl__cpu_fail(sdxl_backend *be, sdxl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- ops (one family per file) ------------------------------------------ */
/* linear.c */
sdxl_status sdxl__cpu_linear(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w,
                             const sdxl_tensor *b, sdxl_tensor *y);
/* conv2d.c */
sdxl_status sdxl__cpu_conv2d(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w,
                             const sdxl_tensor *b, const sdxl_conv2d_params *p, sdxl_tensor *y);
/* attention.c */
sdxl_status sdxl__cpu_attention(sdxl_backend *be, const sdxl_tensor *q, const sdxl_tensor *k,
                                const sdxl_tensor *v, const sdxl_attention_params *p, sdxl_tensor *o);
/* norm.c */
sdxl_status sdxl__cpu_group_norm(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *gamma,
                                 const sdxl_tensor *beta, int groups, float eps, bool silu,
                                 sdxl_tensor *y);
sdxl_status sdxl__cpu_layer_norm(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *gamma,
                                 const sdxl_tensor *beta, float eps, sdxl_tensor *y);
/* elementwise.c */
sdxl_status sdxl__cpu_softmax(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);
sdxl_status sdxl__cpu_unary(sdxl_backend *be, sdxl_unary_op op, const sdxl_tensor *x, sdxl_tensor *y);
sdxl_status sdxl__cpu_geglu(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);
sdxl_status sdxl__cpu_binary(sdxl_backend *be, sdxl_binary_op op, const sdxl_tensor *a,
                             const sdxl_tensor *b, sdxl_tensor *y);
sdxl_status sdxl__cpu_scale(sdxl_backend *be, const sdxl_tensor *x, float s, float t, sdxl_tensor *y);
sdxl_status sdxl__cpu_concat(sdxl_backend *be, const sdxl_tensor *a, const sdxl_tensor *b, int dim,
                             sdxl_tensor *y);
/* transpose.c */
sdxl_status sdxl__cpu_transpose(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);
sdxl_status sdxl__cpu_upsample_nearest2x(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);
sdxl_status sdxl__cpu_embedding(sdxl_backend *be, const sdxl_tensor *table, const sdxl_tensor *ids,
                                sdxl_tensor *y);
sdxl_status sdxl__cpu_cast(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);

#endif
