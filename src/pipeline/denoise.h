/* denoise.h - the SDXL denoising loop (text-to-image core of diffusers'
 * StableDiffusionXLPipeline.__call__, from prepared latents to final
 * latents; VAE decode is separate, see model/vae.h).
 *
 *   x = latents · init_noise_sigma                 (only when start_step == 0)
 *   for i in start_step .. steps-1:
 *       x_in   = scale_model_input(i, x)
 *       pred   = UNet([x_in; x_in], t_i, context [neg; pos], pooled [neg; pos],
 *                     time_ids [orig_h, orig_w, crop_top, crop_left, H, W] per row)
 *       eps    = uncond + g · (cond − uncond)   (+ guidance_rescale)
 *       x      = sampler.step(i, eps, x)
 *       on_step(i+1, steps, x)   → false cancels (SDXL_STATUS_CANCELLED)
 * With guidance <= 1 there is no CFG: the UNet runs on the B positive rows
 * only (diffusers: do_classifier_free_guidance = guidance_scale > 1).
 *
 * Batch: B images per UNet call (2B rows with CFG). Conditioning is given
 * per image (n_cond == B) or once for all (n_cond == 1); all conds must have
 * the same n_tokens and dim (sdxl_encode_prompts guarantees it for a
 * positive/negative pair).
 *
 * Memory: everything (UNet arena planned with sdxl_unet_arena_bytes, the
 * context/pooled/time_ids rows, UNet input/output, sampler state) is
 * allocated before the first step; the loop allocates nothing.
 *
 * Batch split: with memory_budget > 0, when the UNet arena for all rows (2B
 * with CFG, else B) exceeds the budget, each step runs the UNet on
 * consecutive sub-batches of rows_per_pass rows (the largest count whose
 * arena fits; the last pass may be smaller), each row with its own sample,
 * conditioning and time ids; the arena is allocated once, for rows_per_pass.
 * Rows are independent (uncond and cond of one image may land in different
 * passes), and the CPU kernels compute each row's values in the same order
 * whatever the batch, so a split run is bit-identical to an unsplit one
 * (tests/pipeline/test_denoise.c checks it). A budget below one row's arena
 * is OUT_OF_MEMORY, before any work. The sampler
 * is the caller's (created for `steps` and n = B·C·h·w floats); it is reset
 * before use, so one sampler can serve several batches in turn.
 */
#ifndef SDXL_PIPELINE_DENOISE_H
#define SDXL_PIPELINE_DENOISE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/conditioning.h"
#include "model/weights.h"
#include "sample/rng.h"
#include "sample/scheduler.h"

/* Called after each step: step = 1..total (steps done so far in this run,
 * counting from start_step), latents [B,C,h,w] after the step (valid during
 * the call only). Return false to cancel. */
typedef bool (*sdxl_denoise_step_fn)(void *user_data, int step, int total, const float *latents);

typedef struct sdxl_denoise_params {
    int batch;                   /* B >= 1 */
    int width, height;           /* image size in pixels (target size in time_ids) */
    int latent_width, latent_height; /* 0: image size / vae factor (2^(vae levels-1)) */
    int orig_width, orig_height; /* 0: same as width/height (SDXL default) */
    int crop_left, crop_top;     /* 0 */
    double guidance;             /* 5.0 in the references; <= 1 disables CFG */
    double guidance_rescale;     /* 0 */
    int start_step;              /* 0 (img2img: first step index; latents are then not scaled) */
    sdxl_rng *rng;               /* for stochastic samplers (Euler a); may be NULL otherwise */
    sdxl_denoise_step_fn on_step; /* NULL: none */
    void *user_data;
    size_t memory_budget;        /* bytes for the UNet arena; 0 = no limit (one pass over all rows) */
} sdxl_denoise_params;

/* Zeroed params with batch 1, guidance 5.0. */
sdxl_denoise_params sdxl_denoise_default_params(void);

/* Run the loop. latents [B, unet in_channels, h, w] f32 host: on input the
 * initial noise as diffusers' `latents=` takes it (not yet multiplied by
 * init_noise_sigma), on output the final latents (before the VAE scaling
 * factor is divided out). pos/neg: n_cond conds each (1 or B); neg may be
 * NULL only when guidance <= 1. On error or cancel, latents hold the last
 * completed step. Errors: INVALID_ARG (shapes, counts, sampler built for
 * another n), CANCELLED, OUT_OF_MEMORY, and what the UNet / sampler report. */
sdxl_status sdxl_denoise(sdxl_backend *be, const sdxl_weights *w, sdxl_sampler *sampler, const sdxl_cond *pos,
                         const sdxl_cond *neg, int n_cond, const sdxl_denoise_params *p, float *latents,
                         sdxl_error *err);

/* The split sdxl_denoise would use for `p` (only batch, guidance, sizes and
 * memory_budget are read) with conditioning of `context_tokens` tokens:
 * *rows (2B with CFG, else B), *rows_per_pass (== *rows when no split is
 * needed) and *arena_bytes (the UNet arena for rows_per_pass rows). Any of
 * the outputs may be NULL. Errors: INVALID_ARG (batch, sizes),
 * OUT_OF_MEMORY (one row's arena exceeds the budget; the message gives it),
 * and what sdxl_unet_arena_bytes reports. */
sdxl_status sdxl_denoise_plan(const sdxl_weights *w, const sdxl_denoise_params *p, int context_tokens, int *rows,
                              int *rows_per_pass, size_t *arena_bytes, sdxl_error *err);

#endif
