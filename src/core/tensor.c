#include "core/tensor.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

sdxl_tensor sdxl_tensor_make(void *data, sdxl_dtype dtype, int ndim, const int64_t *shape) {
    assert(ndim >= 0 && ndim <= SDXL_MAX_DIMS); /* programmer error: shapes come from code */
    sdxl_tensor t = {.data = data, .dtype = dtype, .device = SDXL_DEVICE_CPU, .ndim = ndim};
    for (int i = 0; i < SDXL_MAX_DIMS; i++) t.ne[i] = i < ndim ? shape[i] : 1;
    return t;
}

sdxl_tensor sdxl_tensor_1d(void *data, sdxl_dtype dtype, int64_t n0) {
    return sdxl_tensor_make(data, dtype, 1, (int64_t[]){n0});
}
sdxl_tensor sdxl_tensor_2d(void *data, sdxl_dtype dtype, int64_t n0, int64_t n1) {
    return sdxl_tensor_make(data, dtype, 2, (int64_t[]){n0, n1});
}
sdxl_tensor sdxl_tensor_3d(void *data, sdxl_dtype dtype, int64_t n0, int64_t n1, int64_t n2) {
    return sdxl_tensor_make(data, dtype, 3, (int64_t[]){n0, n1, n2});
}
sdxl_tensor sdxl_tensor_4d(void *data, sdxl_dtype dtype, int64_t n0, int64_t n1, int64_t n2, int64_t n3) {
    return sdxl_tensor_make(data, dtype, 4, (int64_t[]){n0, n1, n2, n3});
}

int64_t sdxl_tensor_nelem(const sdxl_tensor *t) {
    /* an empty tensor has 0 elements whatever its other dims, which need not
     * multiply within int64 (a file may say [2^32, 2^32, 0]); a non-empty
     * one is backed by memory, so its product fits */
    for (int i = 0; i < t->ndim; i++)
        if (t->ne[i] == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

size_t sdxl_tensor_nbytes(const sdxl_tensor *t) {
    return (size_t)sdxl_tensor_nelem(t) * sdxl_dtype_size(t->dtype);
}

bool sdxl_tensor_same_shape(const sdxl_tensor *a, const sdxl_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->ne[i] != b->ne[i]) return false;
    return true;
}

int64_t sdxl_tensor_inner(const sdxl_tensor *t, int from) {
    int64_t n = 1;
    for (int i = from < 0 ? 0 : from; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

bool sdxl_tensor_reshape(const sdxl_tensor *t, int ndim, const int64_t *shape, sdxl_tensor *out) {
    if (ndim < 0 || ndim > SDXL_MAX_DIMS) return false;
    sdxl_tensor r = sdxl_tensor_make(t->data, t->dtype, ndim, shape);
    r.device = t->device;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return false;
    if (sdxl_tensor_nelem(&r) != sdxl_tensor_nelem(t)) return false;
    *out = r;
    return true;
}

sdxl_tensor sdxl_tensor_slice0(const sdxl_tensor *t, int64_t begin, int64_t end) {
    assert(t->ndim >= 1 && begin >= 0 && begin <= end && end <= t->ne[0]);
    sdxl_tensor r = *t;
    int64_t row = sdxl_tensor_inner(t, 1) * (int64_t)sdxl_dtype_size(t->dtype);
    r.data = (char *)t->data + begin * row;
    r.ne[0] = end - begin;
    return r;
}

const char *sdxl_tensor_describe(const sdxl_tensor *t, char *buf, size_t n) {
    int k = snprintf(buf, n, "%s[", sdxl_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim && k > 0 && (size_t)k < n; i++)
        k += snprintf(buf + k, n - (size_t)k, i ? ",%lld" : "%lld", (long long)t->ne[i]);
    if (k > 0 && (size_t)k < n) snprintf(buf + k, n - (size_t)k, "]");
    return buf;
}
