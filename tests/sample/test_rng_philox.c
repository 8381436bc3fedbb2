/* torch's CUDA randn (Philox4x32-10 + curand_normal4), computed on the CPU.
 *
 * Expected values were made by tools/refs/cuda_randn_refs.py on an NVIDIA H200
 * (132 SMs, 2048 threads per SM), torch 2.11.0+cu130 (CUDA 13.0):
 *   g = torch.Generator("cuda").manual_seed(seed)
 *   t = torch.randn(shape, generator=g, device="cuda", dtype=torch.float32)
 *   (draw 2: the second randn from the same generator)
 *   first/last = float bits of t[0..7] and t[-4..-1] (t[0..6] for 7 elements);
 *   sum / sumsq = sum of t and of t*t over all elements (double, from the
 *   full tensors the script wrote); offset_after = g.get_offset().
 * The GPU's __sincosf is a hardware approximation, so the values are compared
 * with a tolerance: on all 4.0M values of those runs the CPU result is within
 * 1.43e-6 of torch's (24% bit-identical); the test allows 2e-6 per value.
 * The Philox integers are checked exactly against Random123's known answers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sample/rng_philox.h"
#include "test.h"

static float fromb(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct {
    uint64_t seed;
    int64_t n;
    int draw;
    uint64_t offset_after;
    uint32_t first[8], last[4];
    double sum, sumsq;
} philox_case;

static const philox_case CASES[] = {
    {0, 16384, 1, 4, {0xbf6cb6ad, 0xbed9c6b8, 0xc02934c5, 0x3e14ab14, 0xbdf788ce, 0xbf1468e8, 0xbf1f732a, 0xbea82254}, {0xbf2a22aa, 0xbe06b4e4, 0xbed77760, 0xc03d1381}, -113.793903, 16412.5312}, /* 1x4x64x64 */
    {0, 65536, 1, 4, {0xbf6cb6ad, 0xbed9c6b8, 0xc02934c5, 0x3e14ab14, 0xbdf788ce, 0xbf1468e8, 0xbf1f732a, 0xbea82254}, {0xbf4f32d0, 0x3f07c7cc, 0xbf9180e4, 0xbf4bcfaa}, -250.919023, 65507.9472}, /* 1x4x128x128 */
    {0, 512, 1, 4, {0xbf6cb6ad, 0xbed9c6b8, 0xc02934c5, 0x3e14ab14, 0xbdf788ce, 0xbf1468e8, 0xbf1f732a, 0xbea82254}, {0x3e2dcc28, 0xbea33c48, 0x3fb384cc, 0x3f27eb7e}, -29.8037888, 449.158228}, /* 2x4x8x8 */
    {0, 7, 1, 4, {0xbf6cb6ad, 0xbed9c6b8, 0xc02934c5, 0x3e14ab14, 0xbdf788ce, 0xbf1468e8, 0xbf1f732a, 0x00000000}, {0x3e14ab14, 0xbdf788ce, 0xbf1468e8, 0xbf1f732a}, -5.17211173, 8.78555125}, /* 7 */
    {0, 17, 1, 4, {0xbf6cb6ad, 0xbed9c6b8, 0xc02934c5, 0x3e14ab14, 0xbdf788ce, 0xbf1468e8, 0xbf1f732a, 0xbea82254}, {0xbe3c9c11, 0x3fa4b0b5, 0x3f974a3a, 0xbe021bd8}, -3.87469837, 21.3045035}, /* 17 */
    {1, 16384, 1, 4, {0xbe97b1c0, 0x402b4aed, 0xbe1039fd, 0xbf5816a0, 0x3e94c175, 0xbe91524a, 0xbfba0ad6, 0x4017ea65}, {0xba344190, 0xbe5676c2, 0x3d96b2e5, 0x3f3bfef5}, -44.9297931, 16597.1043}, /* 1x4x64x64 */
    {1, 65536, 1, 4, {0xbe97b1c0, 0x402b4aed, 0xbe1039fd, 0xbf5816a0, 0x3e94c175, 0xbe91524a, 0xbfba0ad6, 0x4017ea65}, {0x3dbc9ef3, 0x3fcb7a2b, 0x3f3e5162, 0x3f765aa2}, 150.920186, 65723.9248}, /* 1x4x128x128 */
    {1, 512, 1, 4, {0xbe97b1c0, 0x402b4aed, 0xbe1039fd, 0xbf5816a0, 0x3e94c175, 0xbe91524a, 0xbfba0ad6, 0x4017ea65}, {0x4010d2fe, 0xbea83865, 0x3e22fb90, 0xbf99b9cb}, -27.3798679, 541.875189}, /* 2x4x8x8 */
    {1, 7, 1, 4, {0xbe97b1c0, 0x402b4aed, 0xbe1039fd, 0xbf5816a0, 0x3e94c175, 0xbe91524a, 0xbfba0ad6, 0x00000000}, {0xbf5816a0, 0x3e94c175, 0xbe91524a, 0xbfba0ad6}, -0.0515194982, 10.2609956}, /* 7 */
    {1, 17, 1, 4, {0xbe97b1c0, 0x402b4aed, 0xbe1039fd, 0xbf5816a0, 0x3e94c175, 0xbe91524a, 0xbfba0ad6, 0x4017ea65}, {0xbdff8ec6, 0xbf6d04f4, 0xbfc5edd7, 0xbefaf69a}, -4.64101939, 29.7629411}, /* 17 */
    {42, 16384, 1, 4, {0x3e46acdd, 0x400a53f2, 0xbe302def, 0x3f595c01, 0xbff652b5, 0x3f272a0f, 0xbf2641c1, 0xbf51494d}, {0x3f0bf903, 0xbe146c49, 0xbf73e281, 0x3da9f5ec}, 50.9345153, 16282.6282}, /* 1x4x64x64 */
    {42, 65536, 1, 4, {0x3e46acdd, 0x400a53f2, 0xbe302def, 0x3f595c01, 0xbff652b5, 0x3f272a0f, 0xbf2641c1, 0xbf51494d}, {0xc00f6f34, 0xbfce66d1, 0xbf30fa76, 0x3ec2f0a3}, -356.633045, 65240.6324}, /* 1x4x128x128 */
    {42, 512, 1, 4, {0x3e46acdd, 0x400a53f2, 0xbe302def, 0x3f595c01, 0xbff652b5, 0x3f272a0f, 0xbf2641c1, 0xbf51494d}, {0x3f060b55, 0x3e46f35c, 0x3ebd3c7e, 0xbf5c26f7}, 7.49617619, 488.197531}, /* 2x4x8x8 */
    {42, 7, 1, 4, {0x3e46acdd, 0x400a53f2, 0xbe302def, 0x3f595c01, 0xbff652b5, 0x3f272a0f, 0xbf2641c1, 0x00000000}, {0x3f595c01, 0xbff652b5, 0x3f272a0f, 0xbf2641c1}, 1.11154798, 10.0111586}, /* 7 */
    {42, 17, 1, 4, {0x3e46acdd, 0x400a53f2, 0xbe302def, 0x3f595c01, 0xbff652b5, 0x3f272a0f, 0xbf2641c1, 0xbf51494d}, {0x3e4c04d3, 0xbf8f6a58, 0x3fedc7c2, 0xbf36eab5}, -2.28942797, 20.7044992}, /* 17 */
    {12345, 16384, 1, 4, {0x3f1421d5, 0xbf065667, 0xbe95746c, 0x3c659a66, 0xc00a8aef, 0x3e8ed76b, 0x3fcee610, 0xbe2bd0be}, {0xbe92bcee, 0x3efc751f, 0x3c4b7b05, 0x40106644}, -207.733832, 16173.5414}, /* 1x4x64x64 */
    {12345, 65536, 1, 4, {0x3f1421d5, 0xbf065667, 0xbe95746c, 0x3c659a66, 0xc00a8aef, 0x3e8ed76b, 0x3fcee610, 0xbe2bd0be}, {0x3fb6215d, 0x3f618cee, 0x3e44dcc3, 0x3f915911}, -590.378152, 65024.6513}, /* 1x4x128x128 */
    {12345, 512, 1, 4, {0x3f1421d5, 0xbf065667, 0xbe95746c, 0x3c659a66, 0xc00a8aef, 0x3e8ed76b, 0x3fcee610, 0xbe2bd0be}, {0xbefae75a, 0xbee584a5, 0x3e46df4c, 0xbf7cbf02}, -27.7129886, 502.467817}, /* 2x4x8x8 */
    {12345, 7, 1, 4, {0x3f1421d5, 0xbf065667, 0xbe95746c, 0x3c659a66, 0xc00a8aef, 0x3e8ed76b, 0x3fcee610, 0x00000000}, {0x3c659a66, 0xc00a8aef, 0x3e8ed76b, 0x3fcee610}, -0.493351275, 8.07222369}, /* 7 */
    {12345, 17, 1, 4, {0x3f1421d5, 0xbf065667, 0xbe95746c, 0x3c659a66, 0xc00a8aef, 0x3e8ed76b, 0x3fcee610, 0xbe2bd0be}, {0x3f3b595a, 0x3ecd0700, 0x3f7de925, 0x3f2743bd}, 0.945212578, 13.504995}, /* 17 */
    {0, 262144, 1, 4, {0xbf6cb6ad, 0xbed9c6b8, 0xc02934c5, 0x3e14ab14, 0xbdf788ce, 0xbf1468e8, 0xbf1f732a, 0xbea82254}, {0xbf235a7d, 0x3e3d76e9, 0x3ff9ff9e, 0xbfb31f3b}, -734.331405, 261742.483}, /* 1x4x256x256 */
    {0, 1048576, 1, 4, {0xbf6cb6ad, 0xbed9c6b8, 0xc02934c5, 0x3e14ab14, 0xbdf788ce, 0xbf1468e8, 0xbf1f732a, 0xbea82254}, {0xbca6b1d9, 0x4010216b, 0x3eab2151, 0x3dabed64}, -1468.62812, 1048533.51}, /* 1x4x512x512 */
    {42, 262144, 1, 4, {0x3e46acdd, 0x400a53f2, 0xbe302def, 0x3f595c01, 0xbff652b5, 0x3f272a0f, 0xbf2641c1, 0xbf51494d}, {0xbfb9e471, 0x3f895738, 0x3f837942, 0x3fe8a248}, -220.210461, 262508.889}, /* 1x4x256x256 */
    {42, 1048576, 1, 4, {0x3e46acdd, 0x400a53f2, 0xbe302def, 0x3f595c01, 0xbff652b5, 0x3f272a0f, 0xbf2641c1, 0xbf51494d}, {0xbf5451a0, 0x3f66a8b2, 0xbf44a76a, 0xbff1abea}, -802.537468, 1047956.77}, /* 1x4x512x512 */
    {0, 16384, 2, 8, {0x3e392a68, 0xbf0d6118, 0x3f6c7f08, 0xbf3c2706, 0x3fb0a3aa, 0x3f5e1d0b, 0x3e04c486, 0xbf70cdc9}, {0xbfcca4da, 0x3ead35c9, 0xbdf061d2, 0xbfb8e0c0}, 13.8975104, 16485.2759}, /* 1x4x64x64 */
    {7, 17, 2, 8, {0xbfa4bccc, 0xbecaaa98, 0x3ec04b18, 0x3e83c1f4, 0x3fb5a423, 0x3edf9858, 0xbe0462f1, 0x3f2585a1}, {0x3ec02fbe, 0xbeae5f9c, 0x3eb1c13f, 0x3fa1ace9}, 1.78101333, 7.8589688}, /* 17 */
    {7, 1048576, 2, 8, {0xbfa4bccc, 0xbecaaa98, 0x3ec04b18, 0x3e83c1f4, 0x3fb5a423, 0x3edf9858, 0xbe0462f1, 0x3f2585a1}, {0xbfaa6fd4, 0xbf2aebfd, 0x3f2e530b, 0x3f195106}, -889.826267, 1046494.04}, /* 1x4x512x512 */
};

TEST(philox_kat) {
    /* Random123 kat_vectors, philox4x32 10 rounds */
    static const uint32_t v[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e,
         0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb,
         0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        sdxl_philox4x32_10(v[i], v[i] + 4, out);
        CHECK_MSG(!memcmp(out, v[i] + 6, sizeof out), "kat %d: %08x %08x %08x %08x", i, out[0], out[1], out[2],
                  out[3]);
    }
}

TEST(philox_randn_torch_cuda) {
    float *buf = malloc((size_t)1048576 * sizeof(float));
    REQUIRE(buf);
    const double tol = 2e-6;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const philox_case *k = &CASES[c];
        sdxl_philox g;
        sdxl_philox_seed(&g, k->seed);
        for (int d = 0; d < k->draw; d++) sdxl_philox_randn(&g, buf, k->n);
        double worst = 0, s = 0, s2 = 0;
        int nf = k->n < 8 ? (int)k->n : 8;
        for (int i = 0; i < nf; i++) worst = fmax(worst, fabs(buf[i] - fromb(k->first[i])));
        for (int i = 0; i < 4; i++) worst = fmax(worst, fabs(buf[k->n - 4 + i] - fromb(k->last[i])));
        for (int64_t i = 0; i < k->n; i++) s += buf[i], s2 += (double)buf[i] * buf[i];
        /* the MUFU sin/cos differ with a slight bias: measured |sum| drift <= 1.4e-8·n, sumsq <= 1.5e-7·n */
        double stol = 3e-8 * (double)k->n + 1e-3, s2tol = 4e-7 * (double)k->n + 1e-2;
        CHECK_MSG(worst <= tol && fabs(s - k->sum) <= stol && fabs(s2 - k->sumsq) <= s2tol &&
                      g.offset == k->offset_after,
                  "seed %llu n %lld draw %d: worst %.3g sum %.9g/%.9g sumsq %.9g/%.9g offset %llu/%llu",
                  (unsigned long long)k->seed, (long long)k->n, k->draw, worst, s, k->sum, s2, k->sumsq,
                  (unsigned long long)g.offset, (unsigned long long)k->offset_after);
    }
    free(buf);
}

/* Element i of a draw that fits in one pass is thread i's first value, so a
 * shorter draw is a prefix of a longer one; past the stride it is not. */
TEST(philox_layout) {
    float a[17], b[1000];
    sdxl_philox g;
    sdxl_philox_seed(&g, 5);
    sdxl_philox_randn(&g, a, 17);
    sdxl_philox_seed(&g, 5);
    sdxl_philox_randn(&g, b, 1000);
    CHECK(!memcmp(a, b, sizeof a));
    /* tiny device: 1 SM x 256 threads -> stride 256: element 256 is thread 0's
     * second value (its cos), not thread 256's first */
    sdxl_philox_seed(&g, 5);
    sdxl_philox_set_device(&g, 1, 256);
    sdxl_philox_randn(&g, b, 1000);
    CHECK(!memcmp(a, b, sizeof a));
    float c[300];
    sdxl_philox_seed(&g, 5);
    sdxl_philox_randn(&g, c, 300);
    CHECK(c[256] != b[256]);
    CHECK(g.offset == 4);
}
