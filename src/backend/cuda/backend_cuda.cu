// backend_cuda.cu - the CUDA back end's slot in the op table.
//
// This file holds the device handling (buffers, copies, sync) today. The ops
// land with the CUDA back-end issue, one .cu per op family, each tested
// against the CPU op. Until then every op entry is NULL and model code that
// needs one gets SDXL_STATUS_UNSUPPORTED from sdxl_backend_create's caller.
#include <cuda_runtime.h>

extern "C" {
#include "backend/backend.h"
#include "core/alloc.h"
}

namespace {

struct cuda_backend {
    sdxl_backend base; // must be first
    int device;
};

sdxl_status cuda_fail(sdxl_backend *be, cudaError_t e, const char *what) {
    return sdxl_error_set(&be->err, SDXL_STATUS_IO, "cuda %s: %s", what, cudaGetErrorString(e));
}

void cuda_destroy(sdxl_backend *be) { sdxl_free(be); }

sdxl_status cuda_buffer_alloc(sdxl_backend *be, size_t bytes, void **out) {
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *out = nullptr;
        return sdxl_error_set(&be->err, SDXL_STATUS_OUT_OF_MEMORY, "cudaMalloc(%zu): %s", bytes,
                              cudaGetErrorString(e));
    }
    return SDXL_STATUS_OK;
}

void cuda_buffer_free(sdxl_backend *, void *ptr) { cudaFree(ptr); }

sdxl_status cuda_upload(sdxl_backend *be, void *dst, const void *src, size_t n) {
    cudaError_t e = cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice);
    return e == cudaSuccess ? SDXL_STATUS_OK : cuda_fail(be, e, "upload");
}

sdxl_status cuda_download(sdxl_backend *be, void *dst, const void *src, size_t n) {
    cudaError_t e = cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost);
    return e == cudaSuccess ? SDXL_STATUS_OK : cuda_fail(be, e, "download");
}

sdxl_status cuda_synchronize(sdxl_backend *be) {
    cudaError_t e = cudaDeviceSynchronize();
    return e == cudaSuccess ? SDXL_STATUS_OK : cuda_fail(be, e, "synchronize");
}

sdxl_backend_ops make_ops() {
    sdxl_backend_ops o = {};
    o.name = "cuda";
    o.destroy = cuda_destroy;
    o.buffer_alloc = cuda_buffer_alloc;
    o.buffer_free = cuda_buffer_free;
    o.upload = cuda_upload;
    o.download = cuda_download;
    o.synchronize = cuda_synchronize;
    return o;
}

const sdxl_backend_ops cuda_ops = make_ops();

} // namespace

extern "C" sdxl_backend *sdxl__backend_cuda_create(const sdxl_backend_params *params, sdxl_error *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "no CUDA device: %s",
                       e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
        return nullptr;
    }
    if (params->device < 0 || params->device >= n) {
        sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "CUDA device %d does not exist (%d present)",
                       params->device, n);
        return nullptr;
    }
    e = cudaSetDevice(params->device);
    if (e != cudaSuccess) {
        sdxl_error_set(err, SDXL_STATUS_IO, "cudaSetDevice(%d): %s", params->device, cudaGetErrorString(e));
        return nullptr;
    }
    cuda_backend *be = static_cast<cuda_backend *>(sdxl_calloc(1, sizeof *be));
    if (!be) {
        sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "allocating the CUDA back end");
        return nullptr;
    }
    be->base.ops = &cuda_ops;
    be->device = params->device;
    return &be->base;
}
