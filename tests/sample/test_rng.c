/* torch-compatible CPU randn, bit for bit.
 *
 * Expected values were made with torch 2.2.2 (CPU, capability AVX512, which
 * runs the scalar normal_fill kernel) from /work/venv-refs:
 *   g = torch.Generator("cpu").manual_seed(seed); t = torch.randn(n, generator=g)
 *   first/last = float bits of t[0], t[-1];
 *   bitsum = sum over t of the float bits read as uint32 (as int64)
 * and the sequence check: manual_seed(7); randn(7); randn(3) -> bits of the 3;
 * then randn(20) -> bits of first and last (the cached double-normal sample
 * and the stream position carry over between calls).
 * pipeline_euler.safetensors' in.latents is randn(seed 2024) [1,4,32,32]
 * made by torch 1.13 (Debian): checked for equality of every bit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "sample/rng.h"
#include "test.h"

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

typedef struct {
    uint64_t seed;
    int64_t n;
    uint32_t first, last;
    int64_t bitsum;
} randn_case;

static const randn_case CASES[] = {
    {0, 1, 0x3fc53f5c, 0x3fc53f5c, 1069891420},
    {0, 7, 0x3fc53f5c, 0x3ece837a, 16030944243},
    {0, 16, 0xbf901b85, 0xbe7d367c, 34106856706},
    {0, 17, 0xbf901b85, 0x3f6e8c30, 33074863608},
    {0, 100, 0xbf901b85, 0x3e6e8222, 206683338475},
    {0, 65536, 0xbf901b85, 0xbfba9953, 139831104796834},
    {1, 7, 0x3f294e60, 0xbfc2ea14, 13809881328},
    {1, 17, 0xbfc346ba, 0xbf4c668d, 39447235383},
    {1, 65536, 0xbfc346ba, 0xbf9962e8, 139442500210778},
    {42, 1, 0x3eac62ae, 0x3eac62ae, 1051484846},
    {42, 16, 0x3ff6a529, 0x3f432f9f, 38475242377},
    {42, 100, 0x3ff6a529, 0x3f1e061c, 213131594316},
    {2024, 7, 0xbd25990e, 0xbf490650, 15993147523},
    {2024, 17, 0xbf9cf549, 0xbd9f0468, 30919740156},
    {2024, 65536, 0xbf9cf549, 0x3fd6ff02, 139768540304111},
    {123456789, 100, 0x3e874c7c, 0xc0042572, 221770535385},
    {123456789, 65536, 0x3e874c7c, 0xbed04f94, 139767911423858},
    {UINT64_C(4294967301), 7, 0xbef93b54, 0xbfb36af9, 18157392110},
    {UINT64_C(4294967301), 100, 0x3febd177, 0xbf8c4888, 219618936509},
};

TEST(rng_randn_torch_bits) {
    float *buf = malloc(65536 * sizeof(float));
    REQUIRE(buf);
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const randn_case *k = &CASES[c];
        sdxl_rng r;
        sdxl_rng_seed(&r, k->seed);
        sdxl_rng_randn(&r, buf, k->n);
        int64_t s = 0;
        for (int64_t i = 0; i < k->n; i++) s += fbits(buf[i]);
        CHECK_MSG(fbits(buf[0]) == k->first && fbits(buf[k->n - 1]) == k->last && s == k->bitsum,
                  "seed %llu n %lld: first %08x/%08x last %08x/%08x bitsum %lld/%lld",
                  (unsigned long long)k->seed, (long long)k->n, fbits(buf[0]), k->first,
                  fbits(buf[k->n - 1]), k->last, (long long)s, (long long)k->bitsum);
    }
    free(buf);
}

TEST(rng_randn_sequence) {
    sdxl_rng r;
    sdxl_rng_seed(&r, 7);
    float a[7], b[3], c[20];
    sdxl_rng_randn(&r, a, 7);
    sdxl_rng_randn(&r, b, 3);
    sdxl_rng_randn(&r, c, 20);
    CHECK(fbits(b[0]) == 0x3f9dbed1u);
    CHECK(fbits(b[1]) == 0x3e0d7d22u);
    CHECK(fbits(b[2]) == 0xbfd75248u);
    CHECK(fbits(c[0]) == 0x3e4b352eu);
    CHECK(fbits(c[19]) == 0xbdbbc13du);
    /* reseeding drops the cached sample */
    sdxl_rng_seed(&r, 0);
    sdxl_rng_randn(&r, a, 1);
    CHECK(fbits(a[0]) == 0x3fc53f5cu);
}

TEST(rng_matches_pipeline_in_latents) {
    sdxl_error err = {0};
    sdxl_st_file *f = NULL;
    REQUIRE_OK(sdxl_st_open(sdxl_test_data("refs/tiny-sdxl-ref/pipeline_euler.safetensors"), &f, &err), &err);
    const sdxl_st_tensor *t = sdxl_st_find(f, "in.latents");
    REQUIRE(t && t->dtype == SDXL_ST_F32 && t->nbytes == 4 * 32 * 32 * 4);
    float got[4 * 32 * 32];
    sdxl_rng r;
    sdxl_rng_seed(&r, 2024);
    sdxl_rng_randn(&r, got, 4 * 32 * 32);
    CHECK(memcmp(got, t->data, sizeof got) == 0);
    sdxl_st_close(f);
}
