/* generate.h - one whole generation: prompts → conditioning → noise (or an
 * init image) → denoise rounds → VAE decode → 8-bit images, handed to the
 * caller one by one. The command line and the worker service both run
 * their requests through here (same numbers whatever the front end).
 *
 *     sdxl_gen_params p = sdxl_gen_default_params();
 *     p.prompt = "a red circle"; p.seed = 2; p.steps = 20; p.cfg = 6;
 *     p.on_image = save_png; p.user_data = ctx;
 *     sdxl_gen_stats st;
 *     if (sdxl_generate(be, model, &p, &st, &err)) ... err.msg ...
 *
 * Noise: `rng_cuda` false: round r draws the [B,4,h,w] latents in one randn
 * from torch's CPU generator seeded with seed + r·B (diffusers' batch);
 * true: image i of round r gets its own draw from a CUDA-Philox generator
 * seeded with seed + r·B + i (A1111's GPU seeds), and the samplers' step
 * noise continues each image's stream. `init_latents` replaces the draw
 * (diffusers' latents=; one round). img2img: `init_rgb` (H×W×3, its size is
 * the image size) and `strength`, CPU generator only.
 *
 * Prompts are used as given: a caller that supports `<lora:...>` tags
 * removes them first (lora/worker.h). Errors: INVALID_ARG (sizes, steps,
 * strength, combinations; message says which), CANCELLED (on_step returned
 * false), and whatever the stages report. Nothing is handed out for a round
 * that did not finish. */
#ifndef SDXL_PIPELINE_GENERATE_H
#define SDXL_PIPELINE_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/model.h"
#include "model/prompt.h"
#include "sample/scheduler.h"

#define SDXL_GEN_MAX_SIDE 4096
#define SDXL_GEN_MAX_STEPS 1000
#define SDXL_GEN_MAX_BATCH 64

typedef struct sdxl_gen_image {
    const uint8_t *rgb; /* height × width × 3, valid during the callback */
    int width, height;
    uint64_t seed;      /* the image's seed as A1111 reports it */
    int round, index;   /* round (n_iter), position in the batch */
    int number;         /* 0-based over the whole run */
} sdxl_gen_image;

typedef struct sdxl_gen_params {
    const char *prompt, *prompt_2, *negative, *negative_2; /* negative NULL: none */
    sdxl_prompt_params prompt_params;
    int width, height; /* 0: the model's sample size */
    int steps, batch, n_iter;
    double cfg, guidance_rescale;
    const char *sampler;   /* any name sdxl_sampler_parse_name takes */
    bool karras;
    const char *spacing;   /* NULL, "leading", "trailing", "linspace" */
    int64_t seed;          /* < 0: random (the seed used is in the stats) */
    bool rng_cuda;
    const uint8_t *init_rgb; /* img2img: init_height × init_width × 3, or NULL */
    int init_width, init_height;
    double strength;
    const float *init_latents; /* [batch,C,h,w] used as given, or NULL */
    size_t memory_budget;      /* UNet activations; 0 = no limit */
    /* per step: false stops the run (CANCELLED) */
    bool (*on_step)(void *user_data, int round, int step, int total);
    /* each finished image; an error status stops the run with it */
    sdxl_status (*on_image)(void *user_data, const sdxl_gen_image *img, sdxl_error *err);
    /* the final latents of each round (before decode), or NULL */
    sdxl_status (*on_latents)(void *user_data, int round, uint64_t round_seed, const float *latents,
                              const int64_t shape[4], sdxl_error *err);
    /* once, before the first round: the UNet batch plan */
    void (*on_plan)(void *user_data, int rows, int rows_per_pass, size_t arena_bytes);
    void *user_data;
} sdxl_gen_params;

/* steps 20, batch 1, n_iter 1, cfg 5, euler, seed -1, strength 0.3,
 * A1111 prompt syntax with chunking, no memory budget. */
sdxl_gen_params sdxl_gen_default_params(void);

typedef struct sdxl_gen_stats {
    uint64_t seed;         /* the base seed used */
    int width, height;     /* the image size used */
    sdxl_sampler_kind sampler;
    bool karras;
    double encode_ms, denoise_ms, decode_ms;
    int images;            /* handed to on_image */
} sdxl_gen_stats;

sdxl_status sdxl_generate(sdxl_backend *be, const sdxl_model *m, const sdxl_gen_params *p, sdxl_gen_stats *stats,
                          sdxl_error *err);

/* A1111's infotext ("parameters" PNG chunk) for one image:
 *   <prompt>\n[Negative prompt: <neg>\n]Steps: N, Sampler: S[ Karras], CFG scale: G, Seed: S,
 *   Size: WxH, [Model hash: H, ]Model: M, RNG: CPU|NV[, Denoising strength: D]
 *   [, Batch pos: i][, Lora hashes: "a: h, b: h"]
 * `prompt` is the prompt as the user wrote it (tags included, as A1111
 * keeps them). model_hash and lora_hashes may be NULL or "". */
void sdxl_gen_infotext(char *buf, size_t n, const sdxl_gen_params *p, const sdxl_gen_stats *st,
                       const sdxl_gen_image *img, const char *prompt, const char *model_name, const char *model_hash,
                       const char *lora_hashes);

#endif
