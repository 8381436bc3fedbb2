/* elementwise_avx512.c - elementwise_math.h's kernels compiled for AVX-512
 * (F/BW/VL/DQ, flags from CMakeLists.txt): the same C, vectorized 16 floats
 * wide. Only called when sdxl_cpu_isa() == SDXL_ISA_AVX512. */
#define SDXL_EW_TABLE sdxl__ew_kernels_avx512
#define SDXL_EW_ISA SDXL_ISA_AVX512
#include "backend/cpu/elementwise_math.h"
