/* rng.h - torch's CPU generator, bit for bit.
 *
 *   torch.Generator("cpu").manual_seed(s)  ==  sdxl_rng_seed(&r, s)
 *   torch.randn(shape, generator=g)        ==  sdxl_rng_randn(&r, out, numel(shape))   (float32)
 *
 * The state is a Mersenne Twister (mt19937, 32-bit words) seeded with the low
 * 32 bits of the seed, plus torch's cached second Box-Muller sample (used by
 * the scalar path for tensors of fewer than 16 elements), so consecutive
 * draws from one generator give the same values as consecutive torch calls
 * on one generator (e.g. the initial latents, then ancestral noise).
 *
 * randn of n floats (contiguous, float32):
 *   n >= 16: n uniform floats (24-bit draws), Box-Muller over blocks of 16
 *            (first 8 = radius·cos, last 8 = radius·sin); a ragged tail is
 *            redrawn as a final block of 16 ending at n. Float arithmetic.
 *   n < 16:  one normal at a time from two 53-bit uniform doubles, the
 *            second value of each pair cached for the next draw.
 * For n >= 16 torch's AVX2/AVX-512 CPU kernels (every x86-64 machine of the
 * last decade) use the Cephes-style float log/sincos of "avx_mathfun",
 * which rng.c reproduces exactly (same polynomials, same FMA fusion).
 * torch's non-AVX2 fallback (ATEN_CPU_CAPABILITY=default, non-x86 builds)
 * calls libm instead and differs from it in the last bit of some values.
 *
 * No allocation; the struct may be copied to fork the stream. Not
 * thread-safe per instance.
 */
#ifndef SDXL_SAMPLE_RNG_H
#define SDXL_SAMPLE_RNG_H

#include <stdbool.h>
#include <stdint.h>

#define SDXL_RNG_MT_N 624

typedef struct sdxl_rng {
    uint32_t mt[SDXL_RNG_MT_N];
    int index;
    bool has_next_normal; /* torch's next_double_normal_sample */
    double next_normal;
    uint64_t seed;
    /* Stand-in: when set, sdxl_rng_randn draws through fill instead of this
     * generator (sdxl generate --rng cuda routes the samplers' per-step noise
     * to each image's own CUDA-generator stream this way, as A1111 does).
     * sdxl_rng_seed clears it. */
    void (*fill)(void *user_data, float *out, int64_t n);
    void *fill_user_data;
} sdxl_rng;

/* torch.Generator("cpu").manual_seed(seed). */
void sdxl_rng_seed(sdxl_rng *r, uint64_t seed);

/* Raw draws: one mt19937 output, and torch's random64 (two outputs, the
 * first in the high word). */
uint32_t sdxl_rng_u32(sdxl_rng *r);
uint64_t sdxl_rng_u64(sdxl_rng *r);

/* torch.randn(n, dtype=float32, generator=r): n standard normals into out.
 * The shape does not matter, only the element count. n <= 0: nothing. */
void sdxl_rng_randn(sdxl_rng *r, float *out, int64_t n);

/* A seed from the OS (for seed -1), in torch's accepted range [0, 2^63). */
uint64_t sdxl_rng_random_seed(void);

#endif
