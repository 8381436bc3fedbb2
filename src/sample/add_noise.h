/* add_noise.h - diffusers' scheduler.add_noise(original, noise, timestep) for
 * the start of an img2img run (built on the public sampler API, see
 * sample/scheduler.h).
 *
 * i is the model-call index the run starts at (0 <= i < sdxl_sampler_steps):
 * order·t_start, which is what diffusers 0.27.2's img2img pipeline finds with
 * index_for_timestep(scheduler.timesteps[order·t_start]) (for Heun's
 * repeated timesteps it takes the second of the pair, i.e. that same index).
 * All arithmetic is float32, as torch does it with the scheduler's float32
 * sigmas / alphas_cumprod:
 *   Euler, Euler a, Heun   (Euler/EulerAncestral/HeunDiscrete): out = x + noise·σ_i
 *   DPM++ 2M (SDE), UniPC  (DPMSolverMultistep, UniPCMultistep):
 *                          α = 1/√(σ_i²+1), s = σ_i·α, out = α·x + s·noise
 *   DDIM, LCM              ᾱ = alphas_cumprod[timesteps[i]], out = √ᾱ·x + √(1−ᾱ)·noise
 * A kind added to scheduler.h later -> UNSUPPORTED until it is added here.
 */
#ifndef SDXL_SAMPLE_ADD_NOISE_H
#define SDXL_SAMPLE_ADD_NOISE_H

#include <stdint.h>

#include "core/status.h"
#include "sample/scheduler.h"

/* out[0..n) = add_noise(x, noise) at step i (0 <= i < steps); out may alias
 * x or noise. INVALID_ARG for NULL pointers, n < 0 or i out of range. */
sdxl_status sdxl_sampler_add_noise(const sdxl_sampler *s, int i, const float *x, const float *noise, float *out,
                                   int64_t n, sdxl_error *err);

#endif
