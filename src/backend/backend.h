/* backend.h - the op table: every tensor operation the SDXL model needs.
 *
 * A back end is a table of function pointers (sdxl_backend_ops) plus a
 * context. Model code calls ops only through this table and never asks which
 * back end runs it (ARCHITECTURE rule 1). The CPU back end is the reference
 * implementation of every op; each CUDA op is tested against it.
 *
 * Conventions for every op:
 *   - activations are f32; weight operands (w, gamma, table) may be f32, f16
 *     or bf16 and are widened inside the kernel;
 *   - tensors are contiguous (core/tensor.h); layouts are given per op;
 *   - shapes are checked: a mismatch returns SDXL_STATUS_INVALID_ARG and the
 *     back end's last error says which op, which operand and which shapes;
 *   - an output may alias an input only where the op says so;
 *   - ops never allocate memory per call beyond what sdxl_backend_create
 *     reserved, except the scratch noted per op (sized on first use, reused).
 * Thread-safety: one back end runs one op at a time (it owns its threads);
 * use one back end per concurrent job.
 */
#ifndef SDXL_BACKEND_BACKEND_H
#define SDXL_BACKEND_BACKEND_H

#include <stdbool.h>

#include "core/status.h"
#include "core/tensor.h"

typedef struct sdxl_backend sdxl_backend;

typedef enum sdxl_unary_op {
    SDXL_UNARY_SILU = 0,   /* x * sigmoid(x) */
    SDXL_UNARY_GELU_ERF,   /* 0.5 x (1 + erf(x / sqrt 2))            torch gelu */
    SDXL_UNARY_GELU_TANH,  /* 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))  gelu(approximate="tanh") */
    SDXL_UNARY_QUICK_GELU, /* x * sigmoid(1.702 x)                   CLIP-L */
    SDXL_UNARY_COUNT_
} sdxl_unary_op;

typedef enum sdxl_binary_op {
    SDXL_BINARY_ADD = 0,
    SDXL_BINARY_MUL,
    SDXL_BINARY_COUNT_
} sdxl_binary_op;

typedef struct sdxl_conv2d_params {
    int stride_h, stride_w;
    int pad_top, pad_bottom, pad_left, pad_right; /* zero padding; may be asymmetric (VAE downsample) */
} sdxl_conv2d_params;

typedef struct sdxl_attention_params {
    int heads;   /* q/k/v rows hold `heads` heads of head_dim = C / heads each */
    float scale; /* usually 1/sqrt(head_dim) */
    bool causal; /* query i sees keys 0..i only (CLIP text encoders) */
} sdxl_attention_params;

typedef struct sdxl_backend_ops {
    const char *name; /* "cpu", "cuda" */

    void (*destroy)(sdxl_backend *be);

    /* ---- memory ---------------------------------------------------------
     * Device buffers. On the CPU they are sdxl_malloc'd (64-byte aligned). */
    sdxl_status (*buffer_alloc)(sdxl_backend *be, size_t bytes, void **out);
    void (*buffer_free)(sdxl_backend *be, void *ptr);
    /* Copy host <-> device (CPU: memcpy). */
    sdxl_status (*upload)(sdxl_backend *be, void *dst_dev, const void *src_host, size_t bytes);
    sdxl_status (*download)(sdxl_backend *be, void *dst_host, const void *src_dev, size_t bytes);
    /* Wait for all queued work (CPU: no-op). */
    sdxl_status (*synchronize)(sdxl_backend *be);

    /* ---- ops ------------------------------------------------------------ */
    /* y = x · wᵀ + b.   x [..., K] f32, w [N, K] f32|f16|bf16, b [N] (any float dtype) or NULL,
     * y [..., N] f32. All leading dims of x are flattened into M rows. */
    sdxl_status (*linear)(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w,
                          const sdxl_tensor *b, sdxl_tensor *y);

    /* 2-D convolution, NCHW.  x [B, Cin, H, W] f32, w [Cout, Cin, KH, KW] f32|f16|bf16,
     * b [Cout] or NULL, y [B, Cout, Ho, Wo] with Ho = (H + pt + pb - KH) / sh + 1. */
    sdxl_status (*conv2d)(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w,
                          const sdxl_tensor *b, const sdxl_conv2d_params *p, sdxl_tensor *y);

    /* Group norm over x [B, C, ...] (any trailing spatial dims) with `groups` groups of C/groups
     * channels; gamma, beta [C] or NULL (1 and 0); then SiLU if `silu`. y may alias x. */
    sdxl_status (*group_norm)(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *gamma,
                              const sdxl_tensor *beta, int groups, float eps, bool silu,
                              sdxl_tensor *y);

    /* Layer norm over the last dim of x [..., C]; gamma, beta [C] or NULL. y may alias x. */
    sdxl_status (*layer_norm)(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *gamma,
                              const sdxl_tensor *beta, float eps, sdxl_tensor *y);

    /* Multi-head attention, tokens-major: q [B, Tq, C], k [B, Tk, C], v [B, Tk, C] (C = heads·D),
     * o [B, Tq, C]; head h uses columns [h·D, (h+1)·D). o = softmax(q·kᵀ·scale)·v per head, computed
     * blockwise with an online softmax: memory O(tokens × D) per head, never Tq × Tk. o must not
     * alias q, k or v. */
    sdxl_status (*attention)(sdxl_backend *be, const sdxl_tensor *q, const sdxl_tensor *k,
                             const sdxl_tensor *v, const sdxl_attention_params *p, sdxl_tensor *o);

    /* Softmax over the last dim. y may alias x. A row holding a NaN, or only -inf, gives NaN
     * (as torch). */
    sdxl_status (*softmax)(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);

    /* Elementwise activation. y may alias x. */
    sdxl_status (*unary)(sdxl_backend *be, sdxl_unary_op op, const sdxl_tensor *x, sdxl_tensor *y);

    /* GEGLU (diffusers): x [..., 2N] = [h | g] → y [..., N] = h · gelu_erf(g). y must not overlap x. */
    sdxl_status (*geglu)(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);

    /* y = a (op) b with b broadcast to a's shape: b has a's ndim after left-padding with 1s, and each
     * of b's dims is 1 or equal to a's. a, b, y f32; y has a's shape and may alias a (not b unless
     * b has a's shape). */
    sdxl_status (*binary)(sdxl_backend *be, sdxl_binary_op op, const sdxl_tensor *a,
                          const sdxl_tensor *b, sdxl_tensor *y);

    /* y = x · s + t (t usually 0). y may alias x. */
    sdxl_status (*scale)(sdxl_backend *be, const sdxl_tensor *x, float s, float t, sdxl_tensor *y);

    /* Concatenate a and b along `dim` (0 <= dim < ndim; same dtype; all other dims equal). */
    sdxl_status (*concat)(sdxl_backend *be, const sdxl_tensor *a, const sdxl_tensor *b, int dim,
                          sdxl_tensor *y);

    /* Batched 2-D transpose: x [B, R, C] → y [B, C, R] (NCHW viewed as [B, C, H·W] ↔ tokens
     * [B, H·W, C] around a transformer). Same dtype (any). y must not alias x. */
    sdxl_status (*transpose)(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);

    /* Nearest-neighbour ×2 upsample: x [B, C, H, W] → y [B, C, 2H, 2W], f32. */
    sdxl_status (*upsample_nearest2x)(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);

    /* Rows of table [V, D] (f32|f16|bf16) picked by ids [N] (i32; or any shape [...] giving
     * y [..., D]) → y [N, D] f32. An id outside
     * [0, V) is SDXL_STATUS_BAD_INPUT naming the position and value. */
    sdxl_status (*embedding)(sdxl_backend *be, const sdxl_tensor *table, const sdxl_tensor *ids,
                             sdxl_tensor *y);

    /* Convert between float dtypes (f32/f16/bf16, rounding to nearest even); same shape. Same
     * dtype copies; y == x with the same dtype does nothing; any other overlap is rejected. */
    sdxl_status (*cast)(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y);
} sdxl_backend_ops;

typedef enum sdxl_backend_kind {
    SDXL_BACKEND_CPU = 0,
    SDXL_BACKEND_CUDA,
} sdxl_backend_kind;

typedef struct sdxl_backend_params {
    sdxl_backend_kind kind;
    int n_threads; /* CPU: worker threads, <= 0 = all online CPUs */
    int device;    /* CUDA: device index */
} sdxl_backend_params;

sdxl_backend_params sdxl_backend_default_params(void);

/* Create a back end; on failure returns NULL and fills err. The CUDA back end
 * returns NULL with SDXL_STATUS_UNSUPPORTED when the build has no CUDA or no
 * device is present. */
sdxl_backend *sdxl_backend_create(const sdxl_backend_params *params, sdxl_error *err);
void sdxl_backend_free(sdxl_backend *be); /* NULL-safe */

/* The table (never NULL for a live back end). */
const sdxl_backend_ops *sdxl_backend_ops_of(const sdxl_backend *be);
/* Worker threads the back end computes with (CPU), 1 for a device back end. */
int sdxl_backend_threads(const sdxl_backend *be);
/* Text of the last failed op on this back end. */
const char *sdxl_backend_last_error(const sdxl_backend *be);

/* Shared by implementations: every back end struct begins with this. */
struct sdxl_backend {
    const sdxl_backend_ops *ops;
    sdxl_error err;
    int n_threads;
};

/* Implementations' constructors (backend.c picks one by kind). */
sdxl_backend *sdxl__backend_cpu_create(const sdxl_backend_params *params, sdxl_error *err);
sdxl_backend *sdxl__backend_cuda_create(const sdxl_backend_params *params, sdxl_error *err);

#endif
