/* rng.c - torch's CPU generator (mt19937 + torch's normal sampling).
 *
 * Facts reproduced (PyTorch's CPUGeneratorImpl, DistributionTemplates.h,
 * TransformationHelper.h, DistributionsHelper.h; this is an independent
 * implementation of the same arithmetic):
 *   - manual_seed(s): mt19937 initialised with s & 0xffffffff (standard
 *     init: v[i] = 1812433253·(v[i-1] ^ (v[i-1] >> 30)) + i), and both
 *     cached normal samples dropped.
 *   - random() = one 32-bit output; random64() = (first << 32) | second.
 *   - uniform float = (random() & (2^24-1)) · 2^-24; uniform double =
 *     (random64() & (2^53-1)) · 2^-53.
 *   - randn float, n >= 16 contiguous: fill n uniform floats, then for
 *     each block of 16 at 0, 16, ...: for j < 8, u1 = 1 - d[j], u2 = d[j+8],
 *     r = sqrt(-2·log(u1)), θ = 2π·u2 (float), d[j] = r·cos θ,
 *     d[j+8] = r·sin θ. If n % 16 != 0, the last 16 slots (ending at n) get
 *     16 fresh uniforms and the block transform again. log and sincos are
 *     torch's AVX2 kernel's (avx_mathfun, Cephes), see below; torch's
 *     non-AVX2 fallback uses libm and may differ in the last bit.
 *   - n < 16: one double normal per element: if a cached sample exists use
 *     it; else u1, u2 = uniform doubles, r = sqrt(-2·log1p(-u2)),
 *     θ = 2π·u1, cache r·sin θ, return r·cos θ (then cast to float).
 */
#define _POSIX_C_SOURCE 200809L
#include "sample/rng.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

static const double TWO_PI = 6.283185307179586476925286766559; /* 2·π rounded to double */

void sdxl_rng_seed(sdxl_rng *r, uint64_t seed) {
    r->seed = seed;
    r->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (int i = 1; i < SDXL_RNG_MT_N; i++) {
        uint32_t p = r->mt[i - 1];
        r->mt[i] = 1812433253u * (p ^ (p >> 30)) + (uint32_t)i;
    }
    r->index = SDXL_RNG_MT_N; /* regenerate on first draw */
    r->has_next_normal = false;
    r->next_normal = 0.0;
    r->fill = NULL;
    r->fill_user_data = NULL;
}

static void mt_twist(sdxl_rng *r) {
    uint32_t *v = r->mt;
    for (int i = 0; i < SDXL_RNG_MT_N; i++) {
        uint32_t y = (v[i] & MT_UPPER) | (v[(i + 1) % SDXL_RNG_MT_N] & MT_LOWER);
        uint32_t x = v[(i + MT_M) % SDXL_RNG_MT_N] ^ (y >> 1);
        if (y & 1u) x ^= MT_MATRIX_A;
        v[i] = x;
    }
    r->index = 0;
}

uint32_t sdxl_rng_u32(sdxl_rng *r) {
    if (r->index >= SDXL_RNG_MT_N) mt_twist(r);
    uint32_t y = r->mt[r->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t sdxl_rng_u64(sdxl_rng *r) {
    uint64_t hi = sdxl_rng_u32(r);
    uint64_t lo = sdxl_rng_u32(r);
    return (hi << 32) | lo;
}

static float uniform_f32(sdxl_rng *r) {
    return (float)(sdxl_rng_u32(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

static double uniform_f64(sdxl_rng *r) {
    return (double)(sdxl_rng_u64(r) & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

static double normal_f64(sdxl_rng *r) {
    if (r->has_next_normal) {
        r->has_next_normal = false;
        return r->next_normal;
    }
    double u1 = uniform_f64(r);
    double u2 = uniform_f64(r);
    double rad = sqrt(-2.0 * log1p(-u2));
    double theta = TWO_PI * u1;
    r->next_normal = rad * sin(theta);
    r->has_next_normal = true;
    return rad * cos(theta);
}

/* torch's AVX2 kernel computes log and sin/cos with the Cephes-derived
 * single-precision approximations of "avx_mathfun" (range reduction by
 * π/4 with a 3-part constant, minimax polynomials), in 8-wide vectors,
 * built by GCC with -mfma: a multiply whose only use is an add/sub is
 * fused. The scalar functions below evaluate the same polynomials with the
 * same operation order and the same fusions (fmaf), so each lane's result
 * is bit-identical. Vectors never mix lanes, so scalar code is exact. */
#define FUSE(a, b, c) fmaf((a), (b), (c))

static float bits_to_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Natural log for u in (0, 1] (the Box-Muller argument; never 0 or negative). */
static float cephes_logf(float x) {
    const float min_norm = bits_to_f(0x00800000u);
    if (x < min_norm) x = min_norm;
    uint32_t ix = f_to_bits(x);
    int32_t ex = (int32_t)(ix >> 23) - 0x7f;
    x = bits_to_f((ix & 0x807fffffu) | 0x3f000000u); /* mantissa in [0.5, 1) */
    float e = (float)ex + 1.0f;
    bool lt = x < 0.707106781186547524f;
    float tmp = lt ? x : 0.0f;
    x = x - 1.0f;
    e = e - (lt ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = 7.0376836292e-2f;
    y = FUSE(y, x, -1.1514610310e-1f);
    y = FUSE(y, x, 1.1676998740e-1f);
    y = FUSE(y, x, -1.2420140846e-1f);
    y = FUSE(y, x, 1.4249322787e-1f);
    y = FUSE(y, x, -1.6668057665e-1f);
    y = FUSE(y, x, 2.0000714765e-1f);
    y = FUSE(y, x, -2.4999993993e-1f);
    y = FUSE(y, x, 3.3333331174e-1f);
    y = y * x;
    y = FUSE(y, z, e * -2.12194440e-4f); /* y·z + e·q1, the first product fused */
    y = y - z * 0.5f;                     /* z·0.5 is exact */
    x = x + y;
    x = FUSE(e, 0.693359375f, x);
    return x;
}

/* sin and cos of x >= 0 (θ = 2π·u, u in [0, 1)). */
static void cephes_sincosf(float x, float *s, float *c) {
    /* x >= 0 here, so the input sign bit is clear. */
    float y = x * 1.27323954473516f; /* 4/π */
    int32_t j = (int32_t)y;          /* truncation */
    j = (j + 1) & ~1;
    y = (float)j;
    bool swap_sin = (j & 4) != 0;
    bool poly_sin = (j & 2) == 0; /* true: sin from the sine polynomial */
    bool neg_cos = ((~(j - 2)) & 4) != 0;
    x = FUSE(y, -0.78515625f, x);
    x = FUSE(y, -2.4187564849853515625e-4f, x);
    x = FUSE(y, -3.77489497744594108e-8f, x);
    float z = x * x;
    float yc = 2.443315711809948e-5f;
    yc = FUSE(yc, z, -1.388731625493765e-3f);
    yc = FUSE(yc, z, 4.166664568298827e-2f);
    yc = yc * z;
    yc = FUSE(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;
    float ys = -1.9515295891e-4f;
    ys = FUSE(ys, z, 8.3321608736e-3f);
    ys = FUSE(ys, z, -1.6666654611e-1f);
    ys = ys * z;
    ys = FUSE(ys, x, x);
    float sv = poly_sin ? ys : yc;
    float cv = poly_sin ? yc : ys;
    if (swap_sin) sv = -sv;
    if (neg_cos) cv = -cv;
    *s = sv;
    *c = cv;
}

/* Box-Muller on one block of 16 uniforms, in place. */
static void block16(float *d) {
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float rad = sqrtf(-2.0f * cephes_logf(u1));
        float theta = (float)TWO_PI * u2;
        float s, c;
        cephes_sincosf(theta, &s, &c);
        d[j] = rad * c;
        d[j + 8] = rad * s;
    }
}

void sdxl_rng_randn(sdxl_rng *r, float *out, int64_t n) {
    if (n <= 0) return;
    if (r->fill) {
        r->fill(r->fill_user_data, out, n);
        return;
    }
    if (n < 16) {
        for (int64_t i = 0; i < n; i++) out[i] = (float)normal_f64(r);
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = uniform_f32(r);
    for (int64_t i = 0; i + 16 <= n; i += 16) block16(out + i);
    if (n % 16 != 0) {
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f32(r);
        block16(tail);
    }
}

uint64_t sdxl_rng_random_seed(void) {
    uint64_t s = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&s, sizeof s, 1, f) != 1) s = 0;
        fclose(f);
    }
    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec;
    }
    return s & ((UINT64_C(1) << 63) - 1);
}
