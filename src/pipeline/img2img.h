/* img2img.h - initial latents from an image (diffusers 0.27.2's
 * StableDiffusionXLImg2ImgPipeline: get_timesteps + prepare_latents).
 *
 *   start  = order·(steps − min(⌊steps·strength⌋, steps)) (get_timesteps; order 2 for Heun)
 *   image  = rgb/255·2 − 1                               (image_processor.preprocess)
 *   post   = VAE encode (one image, mean + logvar)
 *   x0     = mean + exp(½·logvar)·ε,  ε = randn(rng)     (latent_dist.sample(generator))
 *            or the mean when sample_posterior is false ("argmax" mode)
 *   x0     = sdxl_vae_scale_latents(x0)                  (× scaling_factor)
 *   x0     repeated for the B images of the batch         (diffusers: one image, batch B)
 *   noise  = randn(rng) of [B,C,h,w]                      (drawn after ε, same generator)
 *   latents = scheduler.add_noise(x0, noise, timesteps[start])
 * then sdxl_denoise with params.start_step = start (latents are not scaled by
 * init_noise_sigma there, as diffusers does not for img2img).
 *
 * With rng seeded as torch.Generator("cpu").manual_seed(s), the result is
 * diffusers' for generator=that generator (same rng consumption order). The
 * time ids are as txt2img (SDXL base: requires_aesthetics_score false).
 *
 * Memory: the VAE arena, the f32 image and the posterior are allocated and
 * freed inside the call.
 */
#ifndef SDXL_PIPELINE_IMG2IMG_H
#define SDXL_PIPELINE_IMG2IMG_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/vae.h"
#include "model/weights.h"
#include "sample/rng.h"
#include "sample/scheduler.h"

/* diffusers' default strength. */
#define SDXL_IMG2IMG_DEFAULT_STRENGTH 0.3

/* First step index for `steps` and `strength` in [0,1]: steps − min(⌊steps·strength⌋, steps).
 * INVALID_ARG for strength outside [0,1] (or NaN), steps < 1, or a strength so small that
 * no step would run (⌊steps·strength⌋ == 0; diffusers fails there too). */
sdxl_status sdxl_img2img_start_step(int steps, double strength, int *start_step, sdxl_error *err);

typedef struct sdxl_img2img_params {
    double strength;        /* SDXL_IMG2IMG_DEFAULT_STRENGTH */
    bool sample_posterior;  /* true (diffusers' sample_mode "sample"); false: posterior mean */
    const sdxl_vae_params *vae; /* NULL: sdxl_vae_default_params() */
} sdxl_img2img_params;

sdxl_img2img_params sdxl_img2img_default_params(void);

/* Initial latents for B images from one RGB8 image rgb [H,W,3] (H, W the
 * image size; multiples of the VAE factor). sampler: the one sdxl_denoise
 * will use (created for the run's steps). rng: the run's generator (needed
 * when sample_posterior; always used for the noise). latents: [B, C, H/f, W/f]
 * (C = unet in_channels, which must equal the VAE's latent_channels).
 * *start_step receives the model-call index to pass as
 * sdxl_denoise_params.start_step (order·t_start, see the top).
 * Errors: INVALID_ARG (sizes, strength, NULLs), OUT_OF_MEMORY, UNSUPPORTED
 * (a sampler without add_noise), and what the VAE encode reports. */
sdxl_status sdxl_img2img_prepare(sdxl_backend *be, const sdxl_weights *w, const sdxl_sampler *sampler,
                                 const sdxl_img2img_params *p, const uint8_t *rgb, int H, int W, int B,
                                 sdxl_rng *rng, float *latents, int *start_step, sdxl_error *err);

#endif
