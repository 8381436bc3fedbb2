/* rng_philox.c - torch's CUDA randn (curand Philox4x32-10) on the CPU.
 * See rng_philox.h for the algorithm and what is exact. */
#include "sample/rng_philox.h"

#include <math.h>
#include <stddef.h>

/* Philox4x32 round multipliers and Weyl key increments (Salmon et al. 2011,
 * the values curand uses). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Threads per block of torch's distribution kernels. */
#define TORCH_BLOCK 256u

void sdxl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

void sdxl_philox_seed(sdxl_philox *g, uint64_t seed) {
    g->seed = seed;
    g->offset = 0;
    sdxl_philox_set_device(g, 132, 2048);
}

void sdxl_philox_set_device(sdxl_philox *g, uint32_t sm_count, uint32_t threads_per_sm) {
    g->sm_count = sm_count ? sm_count : 1;
    g->threads_per_sm = threads_per_sm >= TORCH_BLOCK ? threads_per_sm : TORCH_BLOCK;
}

/* Words w .. w+3 of subsequence `sub` of the Philox stream (curand4 after
 * curand_init(seed, sub, w)): counter = (w/4 as 64 bits, sub as 64 bits). */
static void stream4(uint32_t key[2], uint64_t sub, uint64_t w, uint32_t r[4]) {
    uint64_t blk = w >> 2;
    unsigned part = (unsigned)(w & 3);
    uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)sub, (uint32_t)(sub >> 32)};
    uint32_t a[4];
    sdxl_philox4x32_10(ctr, key, a);
    if (!part) {
        r[0] = a[0], r[1] = a[1], r[2] = a[2], r[3] = a[3];
        return;
    }
    /* offsets torch uses are multiples of 4; kept general for curand's
     * semantics (the words straddle two counters) */
    uint64_t nb = blk + 1;
    uint32_t ctr2[4] = {(uint32_t)nb, (uint32_t)(nb >> 32), ctr[2], ctr[3]};
    if (!nb) { /* 64-bit carry into the subsequence words, as curand's 128-bit increment */
        if (!++ctr2[2]) ++ctr2[3];
    }
    uint32_t b[4];
    sdxl_philox4x32_10(ctr2, key, b);
    uint32_t all[8] = {a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]};
    for (unsigned i = 0; i < 4; i++) r[i] = all[part + i];
}

/* curand's _curand_box_muller on the GPU:
 *   u = x * 2^-32 + 2^-33           (float; the product is exact)
 *   v = y * C + C/2, C = fl(2^-32 * fl(2π)), contracted to one fma by nvcc
 *   s = sqrtf(-2 * logf(u));  (sin v, cos v) by __sincosf;  (s·sin, s·cos)
 * logf and sqrtf are (near-)correctly rounded on the GPU; here log is taken
 * in double and rounded. __sincosf scales v to turns (round toward zero)
 * and uses the MUFU hardware approximation of sin/cos(2π·turns), whose exact
 * bits are unknown; here the same scaling, then sin/cos in double rounded to
 * float. Measured against an H200 (torch 2.11): |difference| <= 1.5e-6. */
static void box_muller(uint32_t x, uint32_t y, float *a, float *b) {
    const float inv32 = 0x1p-32f;
    const float c2pi = 0x1p-32f * 6.2831855f;
    float u = (float)x * inv32 + inv32 / 2;
    float v = fmaf((float)y, c2pi, c2pi / 2);
    float lu = (float)log((double)u);
    float s = sqrtf(-2.0f * lu);
    /* __sincosf: FMUL.RZ by fl(1/2π), then MUFU.SIN/COS of that many turns */
    double e = (double)v * (double)0.15915494f;
    float t = (float)e;
    if ((double)t > e) t = nextafterf(t, 0.0f); /* round toward zero (t >= 0) */
    float sv = (float)sin(6.283185307179586 * (double)t), cv = (float)cos(6.283185307179586 * (double)t);
    *a = s * sv;
    *b = s * cv;
}

void sdxl_philox_randn(sdxl_philox *g, float *out, int64_t n) {
    if (n <= 0) return;
    uint64_t un = (uint64_t)n;
    uint64_t grid = (un + TORCH_BLOCK - 1) / TORCH_BLOCK;
    uint64_t max_grid = (uint64_t)g->sm_count * (g->threads_per_sm / TORCH_BLOCK);
    if (grid > max_grid) grid = max_grid;
    uint64_t stride = grid * TORCH_BLOCK;
    uint64_t iters = (un - 1) / (stride * 4) + 1; /* curand_normal4 calls per thread */
    uint32_t key[2] = {(uint32_t)g->seed, (uint32_t)(g->seed >> 32)};
    uint64_t threads = stride < un ? stride : un; /* threads that write anything */
    for (uint64_t t = 0; t < threads; t++) {
        for (uint64_t k = 0; k < iters; k++) {
            uint64_t base = t + stride * 4 * k;
            if (base >= un) break;
            uint32_t r[4];
            stream4(key, t, g->offset + 4 * k, r);
            float z[4];
            box_muller(r[0], r[1], &z[0], &z[1]);
            box_muller(r[2], r[3], &z[2], &z[3]);
            for (uint64_t j = 0; j < 4; j++) {
                uint64_t li = base + stride * j;
                if (li < un) out[li] = z[j];
            }
        }
    }
    g->offset += 4 * iters;
}
