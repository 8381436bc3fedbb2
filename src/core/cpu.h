/* cpu.h - x86-64 feature detection (CPUID + XGETBV: the OS must enable
 * the register state too). Read once, cached; thread-safe.
 * SDXL_CPU_MAX=generic|avx2|avx512 in the environment caps what is used
 * (tests run every kernel variant on one machine this way). */
#ifndef SDXL_CORE_CPU_H
#define SDXL_CORE_CPU_H

#include <stdbool.h>

typedef struct sdxl_cpu_features {
    bool avx2, fma, f16c;                 /* the "avx2" level needs all three */
    bool avx512f, avx512bw, avx512vl, avx512dq; /* the "avx512" level needs all four */
    bool avx512_bf16, avx512_fp16, avx512_vnni;
    bool amx_tile, amx_bf16;              /* AMX also needs the OS to grant XTILEDATA */
    int n_cores;                          /* online logical CPUs */
} sdxl_cpu_features;

typedef enum sdxl_isa_level {
    SDXL_ISA_GENERIC = 0,
    SDXL_ISA_AVX2,
    SDXL_ISA_AVX512,
} sdxl_isa_level;

const sdxl_cpu_features *sdxl_cpu_get(void);
/* Highest level usable here, after the SDXL_CPU_MAX cap. */
sdxl_isa_level sdxl_cpu_isa(void);
const char *sdxl_isa_name(sdxl_isa_level l); /* "generic", "avx2", "avx512"; "?" if invalid */
/* Override the cap at run time (tests, benchmarks). Not thread-safe against
 * concurrent kernel dispatch: call it between ops. It replaces the cap taken
 * from SDXL_CPU_MAX (it can raise it again); values out of range are clamped.
 * Asking for more than the CPU has is fine: sdxl_cpu_isa() stays at what the
 * CPU supports. */
void sdxl_cpu_set_max_isa(sdxl_isa_level l);
/* The cap in force now (SDXL_CPU_MAX or the last sdxl_cpu_set_max_isa;
 * SDXL_ISA_AVX512 when neither), so a caller can restore it. */
sdxl_isa_level sdxl_cpu_max_isa(void);

#endif
