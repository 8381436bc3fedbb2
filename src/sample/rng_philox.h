/* rng_philox.h - torch's CUDA generator (Philox4x32-10) for randn, on the CPU.
 *
 *   g = torch.Generator("cuda").manual_seed(s)            == sdxl_philox_seed(&g, s)
 *   torch.randn(shape, generator=g, device="cuda")        == sdxl_philox_randn(&g, out, numel)
 *                                                            (float32)
 *
 * This is the "GPU seed" of A1111 (and its CPU "NV" source): a seed gives the
 * same starting noise as on an NVIDIA card (to within 1.5e-6, see below).
 * Assumptions: a fresh generator (offset 0) and one randn per image, as
 * A1111 draws; consecutive draws advance the offset as torch does.
 *
 * What torch does (ATen normal_kernel -> distribution_nullary_kernel, float):
 *   - launch: 256 threads per block, grid = min(ceil(n/256),
 *     multiProcessorCount * (maxThreadsPerMultiProcessor/256)); stride =
 *     256*grid threads.
 *   - thread t: curand_init(seed, subsequence = t, offset = generator
 *     offset), i.e. Philox key = (seed lo, seed hi), counter = (offset/4 as
 *     64 bits in words 0-1, t as 64 bits in words 2-3).
 *   - each curand_normal4 call takes one Philox output (4 x uint32) and
 *     makes two Box-Muller pairs: (x,y) -> (s·sin, s·cos), (z,w) likewise,
 *     with u = x·2^-32 + 2^-33, v = y·2π·2^-32 + π·2^-32, s = sqrt(-2 ln u).
 *   - grid-stride loop unrolled by 4: call k of thread t writes its 4 values
 *     to elements t + stride·(4k + j), j = 0..3 (those < n).
 *   - afterwards the generator offset grows by 4·ceil(n / (4·stride)).
 * For n <= stride (every latent up to 1056·256 = 270336 elements on an
 * H100/H200, 125952 on an RTX 3090: SDXL at 1024x1024 is 65536) element i
 * is simply the first Box-Muller value of Philox(counter (offset/4, 0, i, 0))
 * and the result does not depend on the card; A1111's CPU "NV" source
 * (rng_philox.py) relies on exactly that. Larger draws depend on the card's
 * SM count and threads per SM: sdxl_philox_set_device() sets them (the
 * default is the H100/H200: 132 SMs, 2048 threads per SM).
 *
 * Exactness: the Philox integers, the counter/offset layout, the launch
 * geometry and the element order are exact. The values are NOT bit for bit:
 * the GPU computes sin/cos with __sincosf, a hardware approximation (MUFU)
 * that cannot be reproduced on a CPU. Against torch 2.11 on an H200 (4.0M
 * values: seeds 0/1/42/12345/7, 7 to 1M elements, second draws) every value
 * is within 1.5e-6 of torch's and about a quarter are bit-identical
 * (tests/sample/test_rng_philox.c). For image generation that difference
 * is far below anything visible.
 *
 * No allocation; the struct may be copied. Not thread-safe per instance.
 */
#ifndef SDXL_SAMPLE_RNG_PHILOX_H
#define SDXL_SAMPLE_RNG_PHILOX_H

#include <stdint.h>

typedef struct sdxl_philox {
    uint64_t seed;
    uint64_t offset;        /* torch's philox offset (in 32-bit draws; a multiple of 4) */
    uint32_t sm_count;      /* device multiProcessorCount */
    uint32_t threads_per_sm; /* device maxThreadsPerMultiProcessor */
} sdxl_philox;

/* torch.Generator("cuda").manual_seed(seed): offset 0, H100/H200 grid. */
void sdxl_philox_seed(sdxl_philox *g, uint64_t seed);

/* The card whose launch grid is reproduced (matters only for n > stride). */
void sdxl_philox_set_device(sdxl_philox *g, uint32_t sm_count, uint32_t threads_per_sm);

/* Philox4x32-10 of one counter (4 words) under key (2 words). */
void sdxl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* torch.randn(n, generator=g, device="cuda", dtype=float32): n standard
 * normals into out (shape does not matter, only the count); advances the
 * offset as torch does. n <= 0: nothing. */
void sdxl_philox_randn(sdxl_philox *g, float *out, int64_t n);

#endif
