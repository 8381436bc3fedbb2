/* A feature is reported only when it is usable: the CPU has it (CPUID) AND
 * the OS saves its register state across context switches (XCR0 via
 * XGETBV). Otherwise, e.g. under a hypervisor or kernel that leaves ZMM state
 * disabled, an AVX-512 instruction would fault although CPUID lists it. */
#include "core/cpu.h"

#include <sched.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SDXL_X86 1
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#endif

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static sdxl_cpu_features feats;
static sdxl_isa_level detected_isa;
/* The cap is read on every dispatch and may be changed by another thread
 * (tests, benchmarks), so it is an atomic even though the header does not
 * promise anything about changing it concurrently with dispatch. */
static atomic_int isa_cap = SDXL_ISA_AVX512;

#ifdef SDXL_X86
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    /* The raw opcode would be needed for very old assemblers only; "xgetbv"
     * keeps it readable and needs no -mxsave (unlike _xgetbv). */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool bit(uint32_t reg, int b) { return (reg >> b) & 1u; }

/* Linux (5.16+) keeps AMX tile data disabled per process until asked: without
 * the permission the first tile instruction kills the process with SIGILL. */
static bool request_amx_permission(void) {
#if defined(__linux__) && defined(__x86_64__)
    enum { ARCH_GET_XCOMP_PERM = 0x1022, ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return false;
    unsigned long perm = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm) != 0) return false;
    return (perm >> XFEATURE_XTILEDATA) & 1u;
#else
    return false;
#endif
}

static void detect_x86(sdxl_cpu_features *f) {
    uint32_t a, b, c, d;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 1) return;
    __cpuid(1, a, b, c, d);
    bool fma = bit(c, 12), osxsave = bit(c, 27), avx = bit(c, 28), f16c = bit(c, 29);

    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    bool os_ymm = (xcr0 & 0x6) == 0x6;                  /* XMM (1) + YMM (2) */
    bool os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0;      /* opmask (5), ZMM_Hi256 (6), Hi16_ZMM (7) */
    bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17); /* XTILECFG (17), XTILEDATA (18) */

    uint32_t b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (max_leaf >= 7) {
        uint32_t max_sub;
        __cpuid_count(7, 0, max_sub, b7, c7, d7);
        if (max_sub >= 1) __cpuid_count(7, 1, a71, b, c, d);
    }

    if (os_ymm && avx) {
        f->avx2 = bit(b7, 5);
        f->fma = fma;
        f->f16c = f16c;
    }
    if (os_zmm) {
        f->avx512f = bit(b7, 16);
        f->avx512dq = bit(b7, 17);
        f->avx512bw = bit(b7, 30);
        f->avx512vl = bit(b7, 31);
        /* The extensions are meaningless without the foundation. */
        f->avx512_vnni = f->avx512f && bit(c7, 11);
        f->avx512_fp16 = f->avx512f && bit(d7, 23);
        f->avx512_bf16 = f->avx512f && bit(a71, 5);
    }
    bool amx_tile = bit(d7, 24), amx_bf16 = bit(d7, 22);
    if (os_amx && amx_tile && request_amx_permission()) {
        f->amx_tile = true;
        f->amx_bf16 = amx_bf16;
    }
}
#endif

static bool isa_parse(const char *s, sdxl_isa_level *out) {
    static const char *const names[] = {"generic", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = (sdxl_isa_level)i;
            return true;
        }
    }
    return false;
}

static void cpu_init(void) {
#ifdef SDXL_X86
    detect_x86(&feats);
#endif
    /* CPUs this process may run on (affinity, taskset, container cpusets),
     * not all online ones: a pool larger than that only oversubscribes. */
    cpu_set_t set;
    long n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    feats.n_cores = n > 0 ? (int)n : 1;

    detected_isa = SDXL_ISA_GENERIC;
    if (feats.avx2 && feats.fma && feats.f16c) {
        detected_isa = SDXL_ISA_AVX2;
        /* The avx512 kernels may also use AVX2/F16C instructions. */
        if (feats.avx512f && feats.avx512bw && feats.avx512vl && feats.avx512dq)
            detected_isa = SDXL_ISA_AVX512;
    }

    const char *env = getenv("SDXL_CPU_MAX");
    if (env && *env) {
        sdxl_isa_level cap;
        if (isa_parse(env, &cap))
            atomic_store(&isa_cap, (int)cap);
        else
            SDXL_LOG_W("SDXL_CPU_MAX=%s is not one of generic, avx2, avx512: ignored", env);
    }
}

const sdxl_cpu_features *sdxl_cpu_get(void) {
    pthread_once(&cpu_once, cpu_init);
    return &feats;
}

sdxl_isa_level sdxl_cpu_max_isa(void) {
    pthread_once(&cpu_once, cpu_init);
    return (sdxl_isa_level)atomic_load_explicit(&isa_cap, memory_order_relaxed);
}

sdxl_isa_level sdxl_cpu_isa(void) {
    pthread_once(&cpu_once, cpu_init);
    int cap = atomic_load_explicit(&isa_cap, memory_order_relaxed);
    return (int)detected_isa < cap ? detected_isa : (sdxl_isa_level)cap;
}

const char *sdxl_isa_name(sdxl_isa_level l) {
    switch (l) {
    case SDXL_ISA_GENERIC: return "generic";
    case SDXL_ISA_AVX2: return "avx2";
    case SDXL_ISA_AVX512: return "avx512";
    default: return "?";
    }
}

void sdxl_cpu_set_max_isa(sdxl_isa_level l) {
    /* Init first, so a later first call cannot overwrite this with the
     * environment's value. */
    pthread_once(&cpu_once, cpu_init);
    int v = (int)l;
    if (v < SDXL_ISA_GENERIC) v = SDXL_ISA_GENERIC;
    if (v > SDXL_ISA_AVX512) v = SDXL_ISA_AVX512;
    atomic_store_explicit(&isa_cap, v, memory_order_relaxed);
}
