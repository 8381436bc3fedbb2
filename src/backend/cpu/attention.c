/* STUB */
#include "backend/cpu/cpu_internal.h"
sdxl_status sdxl__cpu_attention(sdxl_backend *be, const sdxl_tensor *q, const sdxl_tensor *k, const sdxl_tensor *v, const sdxl_attention_params *p, sdxl_tensor *o) { return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "attention: not implemented"); }
