#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/cpu.h"
#include "test.h"

TEST(cpu_isa_level_consistent_with_features) {
    const sdxl_cpu_features *f = sdxl_cpu_get();
    REQUIRE(f);
    CHECK(f == sdxl_cpu_get()); /* detected once, cached */
    CHECK_EQ_INT(f->n_cores, sysconf(_SC_NPROCESSORS_ONLN));
    CHECK(f->n_cores >= 1);
    sdxl_isa_level saved = sdxl_cpu_max_isa();
    sdxl_cpu_set_max_isa(SDXL_ISA_AVX512);
    sdxl_isa_level l = sdxl_cpu_isa();
    bool has_avx2 = f->avx2 && f->fma && f->f16c;
    bool has_avx512 = f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq;
    sdxl_isa_level want = has_avx2 ? (has_avx512 ? SDXL_ISA_AVX512 : SDXL_ISA_AVX2) : SDXL_ISA_GENERIC;
    CHECK_EQ_INT(l, want);
    /* extensions only with their foundation */
    if (f->avx512bw || f->avx512vl || f->avx512dq || f->avx512_bf16 || f->avx512_fp16 || f->avx512_vnni)
        CHECK(f->avx512f);
    if (f->amx_bf16) CHECK(f->amx_tile);
    sdxl_cpu_set_max_isa(saved);
    printf("    isa %s (cap %s), %d cores, avx2 %d fma %d f16c %d avx512 f%d bw%d vl%d dq%d bf16 %d fp16 %d "
           "vnni %d amx %d/%d\n",
           sdxl_isa_name(sdxl_cpu_isa()), sdxl_isa_name(saved), f->n_cores, f->avx2, f->fma, f->f16c, f->avx512f,
           f->avx512bw, f->avx512vl, f->avx512dq, f->avx512_bf16, f->avx512_fp16, f->avx512_vnni, f->amx_tile,
           f->amx_bf16);
}

/* The kernel's own view of the CPU (it also hides what XSAVE does not
 * enable) is an independent check of our CPUID/XGETBV decoding. */
static bool cpuinfo_has(const char *flags, const char *name) {
    size_t n = strlen(name);
    for (const char *p = flags; (p = strstr(p, name)) != NULL; p += n)
        if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == 0)) return true;
    return false;
}

TEST(cpu_features_match_proc_cpuinfo) {
#if defined(__x86_64__) || defined(__i386__)
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp) {
        printf("    skipped: no /proc/cpuinfo\n");
        return;
    }
    static char line[8192];
    bool found = false;
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "flags", 5) == 0) {
            found = true;
            break;
        }
    fclose(fp);
    REQUIRE(found);
    const sdxl_cpu_features *f = sdxl_cpu_get();
    CHECK_EQ_INT(f->avx2, cpuinfo_has(line, "avx2"));
    CHECK_EQ_INT(f->fma, cpuinfo_has(line, "fma"));
    CHECK_EQ_INT(f->f16c, cpuinfo_has(line, "f16c"));
    CHECK_EQ_INT(f->avx512f, cpuinfo_has(line, "avx512f"));
    CHECK_EQ_INT(f->avx512bw, cpuinfo_has(line, "avx512bw"));
    CHECK_EQ_INT(f->avx512vl, cpuinfo_has(line, "avx512vl"));
    CHECK_EQ_INT(f->avx512dq, cpuinfo_has(line, "avx512dq"));
    CHECK_EQ_INT(f->avx512_bf16, cpuinfo_has(line, "avx512_bf16"));
    CHECK_EQ_INT(f->avx512_fp16, cpuinfo_has(line, "avx512_fp16"));
    CHECK_EQ_INT(f->avx512_vnni, cpuinfo_has(line, "avx512_vnni"));
    if (f->amx_tile) CHECK(cpuinfo_has(line, "amx_tile")); /* listed even where not granted */
    if (f->amx_bf16) CHECK(cpuinfo_has(line, "amx_bf16"));
#else
    CHECK(!sdxl_cpu_get()->avx2);
#endif
}

TEST(cpu_set_max_isa_caps_dispatch) {
    sdxl_isa_level saved = sdxl_cpu_max_isa();
    sdxl_cpu_set_max_isa(SDXL_ISA_AVX512);
    sdxl_isa_level top = sdxl_cpu_isa();
    for (int l = SDXL_ISA_GENERIC; l <= SDXL_ISA_AVX512; l++) {
        sdxl_cpu_set_max_isa((sdxl_isa_level)l);
        CHECK_EQ_INT(sdxl_cpu_max_isa(), l);
        CHECK_EQ_INT(sdxl_cpu_isa(), l < (int)top ? l : (int)top);
    }
    sdxl_cpu_set_max_isa((sdxl_isa_level)-5); /* clamped */
    CHECK_EQ_INT(sdxl_cpu_isa(), SDXL_ISA_GENERIC);
    sdxl_cpu_set_max_isa((sdxl_isa_level)99);
    CHECK_EQ_INT(sdxl_cpu_isa(), top);
    sdxl_cpu_set_max_isa(saved);
    CHECK_EQ_INT(sdxl_cpu_max_isa(), saved);
    CHECK(strcmp(sdxl_isa_name(SDXL_ISA_GENERIC), "generic") == 0);
    CHECK(strcmp(sdxl_isa_name(SDXL_ISA_AVX2), "avx2") == 0);
    CHECK(strcmp(sdxl_isa_name(SDXL_ISA_AVX512), "avx512") == 0);
    CHECK(strcmp(sdxl_isa_name((sdxl_isa_level)3), "?") == 0);
}

/* Run in a child process by the test below (and harmless on its own): the
 * cap in force must be what SDXL_CPU_MAX says, as this process read it at
 * start. Its name must not be a substring of any other test's name. */
TEST(cpu_cap_from_env_probe) {
    const char *env = getenv("SDXL_CPU_MAX");
    sdxl_isa_level want = SDXL_ISA_AVX512;
    if (env && strcasecmp(env, "generic") == 0) want = SDXL_ISA_GENERIC;
    if (env && strcasecmp(env, "avx2") == 0) want = SDXL_ISA_AVX2;
    CHECK_EQ_INT(sdxl_cpu_max_isa(), want);
    if (getenv("SDXL_TEST_CPU_CHILD")) printf("child-isa=%s\n", sdxl_isa_name(sdxl_cpu_isa()));
}

TEST(cpu_env_var_caps_isa) {
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        printf("    skipped: no /proc/self/exe\n");
        return;
    }
    exe[len] = 0;
    sdxl_isa_level saved = sdxl_cpu_max_isa();
    sdxl_cpu_set_max_isa(SDXL_ISA_AVX512);
    sdxl_isa_level top = sdxl_cpu_isa();
    sdxl_cpu_set_max_isa(saved);
    static const char *const values[] = {"generic", "avx2", "AVX512", "bogus"};
    static const sdxl_isa_level caps[] = {SDXL_ISA_GENERIC, SDXL_ISA_AVX2, SDXL_ISA_AVX512, SDXL_ISA_AVX512};
    for (int i = 0; i < 4; i++) {
        char cmd[PATH_MAX + 128];
        snprintf(cmd, sizeof cmd, "SDXL_TEST_CPU_CHILD=1 SDXL_CPU_MAX=%s '%s' cpu_cap_from_env_probe 2>/dev/null",
                 values[i], exe);
        FILE *p = popen(cmd, "r");
        REQUIRE(p);
        char out[4096];
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        int rc = pclose(p);
        sdxl_isa_level want = caps[i] < top ? caps[i] : top;
        char expect[64];
        snprintf(expect, sizeof expect, "child-isa=%s\n", sdxl_isa_name(want));
        CHECK_MSG(rc == 0 && strstr(out, expect) && strstr(out, "1 passed, 0 failed"),
                  "SDXL_CPU_MAX=%s: rc %d, expected %s, got:\n%s", values[i], rc, expect, out);
    }
}
