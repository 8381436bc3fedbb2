/* backend_cpu.c - the CPU back end: context, memory and the op table. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "core/alloc.h"

void *sdxl__cpu_scratch(sdxl_cpu_backend *be, size_t bytes) {
    if (bytes <= be->scratch_size) return be->scratch;
    void *p = sdxl_malloc(bytes);
    if (!p) {
        sdxl_error_set(&be->base.err, SDXL_STATUS_OUT_OF_MEMORY, "cpu scratch: cannot allocate %zu bytes",
                       bytes);
        return NULL;
    }
    sdxl_free(be->scratch);
    be->scratch = p;
    be->scratch_size = bytes;
    return p;
}

sdxl_status sdxl__cpu_fail(sdxl_backend *be, sdxl_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sdxl_error_vset(&be->err, st, fmt, ap);
    va_end(ap);
    return st;
}

static void cpu_destroy(sdxl_backend *be) {
    sdxl_cpu_backend *c = sdxl__cpu(be);
    sdxl_threadpool_free(c->pool);
    sdxl_free(c->scratch);
    sdxl_free(c);
}

static sdxl_status cpu_buffer_alloc(sdxl_backend *be, size_t bytes, void **out) {
    *out = sdxl_malloc(bytes);
    if (!*out)
        return sdxl__cpu_fail(be, SDXL_STATUS_OUT_OF_MEMORY, "buffer_alloc: cannot allocate %zu bytes", bytes);
    return SDXL_STATUS_OK;
}

static void cpu_buffer_free(sdxl_backend *be, void *ptr) { sdxl_free(ptr); }

static sdxl_status cpu_copy(sdxl_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
    return SDXL_STATUS_OK;
}

static sdxl_status cpu_synchronize(sdxl_backend *be) { return SDXL_STATUS_OK; }

static const sdxl_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = cpu_synchronize,
    .linear = sdxl__cpu_linear,
    .conv2d = sdxl__cpu_conv2d,
    .group_norm = sdxl__cpu_group_norm,
    .layer_norm = sdxl__cpu_layer_norm,
    .attention = sdxl__cpu_attention,
    .softmax = sdxl__cpu_softmax,
    .unary = sdxl__cpu_unary,
    .geglu = sdxl__cpu_geglu,
    .binary = sdxl__cpu_binary,
    .scale = sdxl__cpu_scale,
    .concat = sdxl__cpu_concat,
    .transpose = sdxl__cpu_transpose,
    .upsample_nearest2x = sdxl__cpu_upsample_nearest2x,
    .embedding = sdxl__cpu_embedding,
    .cast = sdxl__cpu_cast,
};

sdxl_backend *sdxl__backend_cpu_create(const sdxl_backend_params *params, sdxl_error *err) {
    sdxl_cpu_backend *c = sdxl_calloc(1, sizeof *c);
    if (!c) {
        sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "allocating the CPU back end");
        return NULL;
    }
    c->base.ops = &cpu_ops;
    c->pool = sdxl_threadpool_create(params->n_threads);
    if (!c->pool) {
        sdxl_free(c);
        sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "creating the CPU thread pool");
        return NULL;
    }
    c->n_threads = sdxl_threadpool_size(c->pool);
    c->base.n_threads = c->n_threads;
    return &c->base;
}
