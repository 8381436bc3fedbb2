/* STUB */
#include "backend/cpu/cpu_internal.h"
sdxl_status sdxl__cpu_linear(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w, const sdxl_tensor *b, sdxl_tensor *y) { return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "linear: not implemented"); }
