/* tensor.h - the engine's tensor: a typed, shaped view of a contiguous buffer.
 *
 * Decision: tensors are CONTIGUOUS ONLY, row-major, shapes in PyTorch order
 * (outermost first: NCHW for images, [B,T,C] for token sequences). A view
 * (slice along the outermost dimension, reshape) is a new sdxl_tensor struct
 * pointing into the same buffer; no strides. Kernels get simpler and faster,
 * and every layout change the model needs is an explicit op (e.g. the
 * attention op reads heads straight out of [B,T,H*D], so no permute exists).
 *
 * A tensor never owns its data: weights live in a mapped file or a backend
 * buffer, activations in an arena. `device` says whose memory `data` is.
 */
#ifndef SDXL_CORE_TENSOR_H
#define SDXL_CORE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

#define SDXL_MAX_DIMS 4

typedef enum sdxl_device {
    SDXL_DEVICE_CPU = 0,
    SDXL_DEVICE_CUDA,
} sdxl_device;

typedef struct sdxl_tensor {
    void *data;                /* first element; not owned */
    sdxl_dtype dtype;
    sdxl_device device;
    int ndim;                  /* 1..SDXL_MAX_DIMS (0 = scalar, one element) */
    int64_t ne[SDXL_MAX_DIMS]; /* shape, outermost first; ne[i] = 1 for i >= ndim */
} sdxl_tensor;

/* Build a CPU tensor over `data`. ndim 0..4; dims beyond ndim are set to 1. */
sdxl_tensor sdxl_tensor_make(void *data, sdxl_dtype dtype, int ndim, const int64_t *shape);
/* Convenience: sdxl_tensor_4d(data, F32, N, C, H, W) etc. */
sdxl_tensor sdxl_tensor_1d(void *data, sdxl_dtype dtype, int64_t n0);
sdxl_tensor sdxl_tensor_2d(void *data, sdxl_dtype dtype, int64_t n0, int64_t n1);
sdxl_tensor sdxl_tensor_3d(void *data, sdxl_dtype dtype, int64_t n0, int64_t n1, int64_t n2);
sdxl_tensor sdxl_tensor_4d(void *data, sdxl_dtype dtype, int64_t n0, int64_t n1, int64_t n2, int64_t n3);

int64_t sdxl_tensor_nelem(const sdxl_tensor *t);
size_t sdxl_tensor_nbytes(const sdxl_tensor *t);
bool sdxl_tensor_same_shape(const sdxl_tensor *a, const sdxl_tensor *b);
/* Product of the dims from `from` to the last (inner size). */
int64_t sdxl_tensor_inner(const sdxl_tensor *t, int from);
/* Same buffer, new shape with the same element count; false if counts differ. */
bool sdxl_tensor_reshape(const sdxl_tensor *t, int ndim, const int64_t *shape, sdxl_tensor *out);
/* Rows [begin, end) of the outermost dimension, as a view. */
sdxl_tensor sdxl_tensor_slice0(const sdxl_tensor *t, int64_t begin, int64_t end);
/* "f32[2,4,64,64]" into buf; returns buf. */
const char *sdxl_tensor_describe(const sdxl_tensor *t, char *buf, size_t n);

#endif
