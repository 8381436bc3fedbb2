/* STUB until feature detection lands. */
#include "core/cpu.h"
static sdxl_cpu_features feats = {.n_cores = 1};
const sdxl_cpu_features *sdxl_cpu_get(void) { return &feats; }
sdxl_isa_level sdxl_cpu_isa(void) { return SDXL_ISA_GENERIC; }
const char *sdxl_isa_name(sdxl_isa_level l) { return l == SDXL_ISA_AVX512 ? "avx512" : l == SDXL_ISA_AVX2 ? "avx2" : "generic"; }
void sdxl_cpu_set_max_isa(sdxl_isa_level l) {}
