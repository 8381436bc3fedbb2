/* elementwise_avx2.c - elementwise_math.h's kernels compiled for AVX2 + FMA + F16C
 * (flags from CMakeLists.txt): the same C, vectorized 8 floats wide. Only
 * called when sdxl_cpu_isa() >= SDXL_ISA_AVX2. */
#define SDXL_EW_TABLE sdxl__ew_kernels_avx2
#define SDXL_EW_ISA SDXL_ISA_AVX2
#include "backend/cpu/elementwise_math.h"
