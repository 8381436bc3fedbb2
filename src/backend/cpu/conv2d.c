/* STUB */
#include "backend/cpu/cpu_internal.h"
sdxl_status sdxl__cpu_conv2d(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w, const sdxl_tensor *b, const sdxl_conv2d_params *p, sdxl_tensor *y) { return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "conv2d: not implemented"); }
