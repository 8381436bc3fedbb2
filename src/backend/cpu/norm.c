/* STUB */
#include "backend/cpu/cpu_internal.h"
sdxl_status sdxl__cpu_group_norm(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *gamma, const sdxl_tensor *beta, int groups, float eps, bool silu, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
sdxl_status sdxl__cpu_layer_norm(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *gamma, const sdxl_tensor *beta, float eps, sdxl_tensor *y) { return SDXL_STATUS_UNSUPPORTED; }
