#include "backend/backend.h"

sdxl_backend_params sdxl_backend_default_params(void) {
    sdxl_backend_params p = {.kind = SDXL_BACKEND_CPU, .n_threads = 0, .device = 0};
    return p;
}

sdxl_backend *sdxl_backend_create(const sdxl_backend_params *params, sdxl_error *err) {
    sdxl_backend_params p = params ? *params : sdxl_backend_default_params();
    switch (p.kind) {
    case SDXL_BACKEND_CPU:
        return sdxl__backend_cpu_create(&p, err);
    case SDXL_BACKEND_CUDA:
#ifdef SDXL_HAVE_CUDA
        return sdxl__backend_cuda_create(&p, err);
#else
        sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED,
                       "CUDA back end requested but this build has none (configure with -DSDXL_CUDA=ON)");
        return NULL;
#endif
    }
    sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "unknown back end kind %d", (int)p.kind);
    return NULL;
}

void sdxl_backend_free(sdxl_backend *be) {
    if (be) be->ops->destroy(be);
}

const sdxl_backend_ops *sdxl_backend_ops_of(const sdxl_backend *be) { return be->ops; }

const char *sdxl_backend_last_error(const sdxl_backend *be) { return be->err.msg; }

int sdxl_backend_threads(const sdxl_backend *be) { return be->n_threads > 0 ? be->n_threads : 1; }
