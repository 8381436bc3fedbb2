/* img2img.c - initial latents from an image (see img2img.h). */
#include "pipeline/img2img.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "sample/add_noise.h"

sdxl_status sdxl_img2img_start_step(int steps, double strength, int *start_step, sdxl_error *err) {
    if (!start_step) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "img2img: NULL start_step");
    if (steps < 1) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "img2img: steps %d < 1", steps);
    if (!(strength >= 0.0 && strength <= 1.0))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "img2img: strength %g not in [0, 1]", strength);
    int init = (int)(steps * strength); /* python int(): truncation */
    if (init > steps) init = steps;
    if (init < 1)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "img2img: strength %g with %d steps runs no step (need steps*strength >= 1)", strength,
                              steps);
    *start_step = steps - init;
    return SDXL_STATUS_OK;
}

sdxl_img2img_params sdxl_img2img_default_params(void) {
    sdxl_img2img_params p = {.strength = SDXL_IMG2IMG_DEFAULT_STRENGTH, .sample_posterior = true, .vae = NULL};
    return p;
}

sdxl_status sdxl_img2img_prepare(sdxl_backend *be, const sdxl_weights *w, const sdxl_sampler *sampler,
                                 const sdxl_img2img_params *p, const uint8_t *rgb, int H, int W, int B,
                                 sdxl_rng *rng, float *latents, int *start_step, sdxl_error *err) {
    if (!be || !w || !sampler || !rgb || !rng || !latents || !start_step)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "img2img: NULL argument");
    sdxl_img2img_params dp = sdxl_img2img_default_params();
    if (!p) p = &dp;
    const sdxl_model_config *cfg = sdxl_weights_config(w);
    const int f = sdxl_vae_factor(&cfg->vae), lat = cfg->vae.latent_channels;
    if (B < 1 || H < f || W < f || H % f || W % f || H > SDXL_VAE_MAX_SIDE || W > SDXL_VAE_MAX_SIDE)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "img2img: image %dx%d (batch %d): sides must be multiples of %d", W, H, B, f);
    if (cfg->unet.in_channels != lat)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "img2img: UNet takes %d channels, VAE gives %d",
                              cfg->unet.in_channels, lat);
    /* diffusers: timesteps[t_start·order:] (Heun: two model calls per step) */
    int t_start = 0;
    sdxl_status st = sdxl_img2img_start_step(sdxl_sampler_inference_steps(sampler), p->strength, &t_start, err);
    if (st) return st;
    *start_step = t_start * sdxl_sampler_order(sampler);

    sdxl_vae_params vp = p->vae ? *p->vae : sdxl_vae_default_params();
    sdxl_vae_plan plan;
    if ((st = sdxl_vae_plan_encode(&cfg->vae, &vp, 1, H, W, &plan, err))) return st;
    const int h = H / f, wd = W / f;
    const int64_t per = (int64_t)lat * h * wd, n = per * B;
    float *image = sdxl_malloc((size_t)3 * H * W * sizeof(float));
    float *mean = sdxl_malloc((size_t)per * sizeof(float));
    float *logvar = sdxl_malloc((size_t)per * sizeof(float));
    float *noise = sdxl_malloc((size_t)n * sizeof(float));
    sdxl_arena *arena = sdxl_arena_create(plan.arena_bytes);
    if (!image || !mean || !logvar || !noise || !arena) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "img2img: buffers for a %dx%d image", W, H);
        goto out;
    }
    sdxl_vae_rgb8_to_image(rgb, 1, H, W, image);
    if ((st = sdxl_vae_encode(be, w, &vp, image, 1, H, W, arena, mean, logvar, err))) goto out;
    if (p->sample_posterior) {
        /* latent_dist.sample(generator): mean + std·randn(mean.shape), std = exp(0.5·logvar), f32 */
        sdxl_rng_randn(rng, noise, per);
        for (int64_t k = 0; k < per; k++) mean[k] = mean[k] + expf(0.5f * logvar[k]) * noise[k];
    }
    sdxl_vae_scale_latents(&cfg->vae, mean, 1, h, wd, mean);
    for (int b = 0; b < B; b++) memcpy(latents + (size_t)b * per, mean, (size_t)per * sizeof(float));
    sdxl_rng_randn(rng, noise, n); /* randn_tensor(shape [B,C,h,w], generator) */
    st = sdxl_sampler_add_noise(sampler, *start_step, latents, noise, latents, n, err);
out:
    sdxl_arena_free(arena);
    sdxl_free(image);
    sdxl_free(mean);
    sdxl_free(logvar);
    sdxl_free(noise);
    return st;
}
