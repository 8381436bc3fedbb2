/* STUB */
#include "backend/cpu/cpu_internal.h"
sdxl_status sdxl__cpu_softmax(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_unary(sdxl_backend *be, sdxl_unary_op op, const sdxl_tensor *x, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_geglu(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_binary(sdxl_backend *be, sdxl_binary_op op, const sdxl_tensor *a, const sdxl_tensor *b, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_scale(sdxl_backend *be, const sdxl_tensor *x, float s, float t, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_concat(sdxl_backend *be, const sdxl_tensor *a, const sdxl_tensor *b, int dim, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_upsample_nearest2x(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_embedding(sdxl_backend *be, const sdxl_tensor *table, const sdxl_tensor *ids, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_cast(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
