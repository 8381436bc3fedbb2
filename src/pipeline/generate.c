/* generate.c - a whole generation run (see generate.h). */
#include "pipeline/generate.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "model/conditioning.h"
#include "model/vae.h"
#include "pipeline/denoise.h"
#include "pipeline/img2img.h"
#include "sample/rng.h"
#include "sample/rng_philox.h"

sdxl_gen_params sdxl_gen_default_params(void) {
    sdxl_gen_params p;
    memset(&p, 0, sizeof p);
    p.prompt_params = sdxl_prompt_default_params();
    p.steps = 20;
    p.batch = 1;
    p.n_iter = 1;
    p.cfg = 5.0;
    p.sampler = "euler";
    p.seed = -1;
    p.strength = SDXL_IMG2IMG_DEFAULT_STRENGTH;
    return p;
}

/* rng cuda: one CUDA-generator stream per image (A1111's ImageRNG); a draw of
 * n floats for the whole batch takes n/B from each image's stream. */
typedef struct {
    sdxl_philox gen[SDXL_GEN_MAX_BATCH];
    int n;
} philox_batch;

static void philox_fill(void *user_data, float *out, int64_t n) {
    philox_batch *pb = user_data;
    int64_t per = n / pb->n;
    for (int i = 0; i < pb->n; i++) sdxl_philox_randn(&pb->gen[i], out + (int64_t)i * per, per);
}

typedef struct {
    const sdxl_gen_params *p;
    int round;
} step_ctx;

static bool step_cb(void *ud, int step, int total, const float *latents) {
    (void)latents;
    step_ctx *c = ud;
    return c->p->on_step ? c->p->on_step(c->p->user_data, c->round, step, total) : true;
}

sdxl_status sdxl_generate(sdxl_backend *be, const sdxl_model *m, const sdxl_gen_params *p, sdxl_gen_stats *stats,
                          sdxl_error *err) {
    if (!be || !m || !p || !p->prompt) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "generate: NULL argument");
    sdxl_gen_stats st_local;
    sdxl_gen_stats *st = stats ? stats : &st_local;
    memset(st, 0, sizeof *st);
    const sdxl_model_config *cfg = sdxl_weights_config(m->weights);
    const int f = 1 << (cfg->vae.num_levels - 1), C = cfg->unet.in_channels;
    const int unet_mult = f << (cfg->unet.num_levels - 1); /* latent sides must divide by 2^(levels-1) */
    int W = p->width, H = p->height;
    if (p->init_rgb) {
        if ((W && W != p->init_width) || (H && H != p->init_height))
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                  "the init image is %dx%d but the size asked is %dx%d (resize it first)",
                                  p->init_width, p->init_height, W ? W : p->init_width, H ? H : p->init_height);
        W = p->init_width;
        H = p->init_height;
    }
    if (!W) W = cfg->unet.sample_size * f;
    if (!H) H = cfg->unet.sample_size * f;
    if (W <= 0 || H <= 0 || W % unet_mult || H % unet_mult || W > SDXL_GEN_MAX_SIDE || H > SDXL_GEN_MAX_SIDE)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "%dx%d: this model needs width and height in multiples of %d, at most %d", W, H,
                              unet_mult, SDXL_GEN_MAX_SIDE);
    if (p->steps < 1 || p->steps > SDXL_GEN_MAX_STEPS)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "steps must be in 1..%d", SDXL_GEN_MAX_STEPS);
    if (p->batch < 1 || p->batch > SDXL_GEN_MAX_BATCH || p->n_iter < 1 || p->n_iter > 10000)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "batch must be in 1..%d and n_iter in 1..10000",
                              SDXL_GEN_MAX_BATCH);
    if (!isfinite(p->cfg) || !isfinite(p->guidance_rescale) || p->guidance_rescale < 0 || p->guidance_rescale > 1)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "cfg must be finite and guidance_rescale in [0,1]");
    if (p->rng_cuda && p->init_rgb) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "img2img takes rng cpu only");
    if (p->init_latents && p->n_iter > 1)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "init latents give one round: use n_iter 1");
    if (p->init_latents && p->init_rgb)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "an init image and init latents exclude each other");
    if (p->init_rgb) {
        int t0;
        sdxl_status s = sdxl_img2img_start_step(p->steps, p->strength, &t0, err);
        if (s) return s;
    }
    const int h = H / f, w = W / f, B = p->batch;
    const int64_t nlat = (int64_t)B * C * h * w;
    st->width = W;
    st->height = H;

    sdxl_sched_config sc;
    bool karras = p->karras;
    sdxl_status s;
    if ((s = sdxl_sched_config_parse(cfg->scheduler_json, strlen(cfg->scheduler_json), &sc, err))) return s;
    if ((s = sdxl_sampler_parse_name(p->sampler ? p->sampler : "euler", &st->sampler, &karras, err))) return s;
    if (karras) sc.use_karras_sigmas = true;
    st->karras = karras;
    if (p->spacing) {
        if (!strcmp(p->spacing, "leading")) sc.timestep_spacing = SDXL_SPACING_LEADING;
        else if (!strcmp(p->spacing, "trailing")) sc.timestep_spacing = SDXL_SPACING_TRAILING;
        else if (!strcmp(p->spacing, "linspace")) sc.timestep_spacing = SDXL_SPACING_LINSPACE;
        else
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                  "timestep spacing must be leading, trailing or linspace, not '%s'", p->spacing);
    }
    sdxl_sampler *smp = NULL;
    sdxl_cond pos = {0}, neg = {0};
    float *latents = NULL, *image = NULL;
    uint8_t *rgb = NULL;
    sdxl_arena *vae_arena = NULL;
    philox_batch *philox = NULL;
    if ((s = sdxl_sampler_create(st->sampler, &sc, p->steps, nlat, &smp, err))) return s;

    double t0 = sdxl_now_s();
    sdxl_cond_request req = {.prompt = p->prompt, .prompt_2 = p->prompt_2, .negative = p->negative,
                             .negative_2 = p->negative_2, .prompt_params = p->prompt_params,
                             .force_zeros_for_empty_prompt = cfg->pipeline.force_zeros_for_empty_prompt};
    if ((s = sdxl_encode_prompts(be, m->weights, m->tok[0], m->tok[1], &req, &pos, &neg, err))) goto done;
    st->encode_ms = sdxl_ms_since(t0);

    sdxl_vae_params vp = sdxl_vae_default_params();
    sdxl_vae_plan plan;
    if ((s = sdxl_vae_plan_decode(&cfg->vae, &vp, B, H, W, &plan, err))) goto done;
    latents = sdxl_malloc((size_t)nlat * 4);
    image = sdxl_malloc((size_t)B * 3 * H * W * 4);
    rgb = sdxl_malloc((size_t)B * 3 * H * W);
    vae_arena = sdxl_arena_create(plan.arena_bytes);
    philox = p->rng_cuda ? sdxl_malloc(sizeof *philox) : NULL;
    if (!latents || !image || !rgb || !vae_arena || (p->rng_cuda && !philox)) {
        s = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "buffers for %d image(s) of %dx%d", B, W, H);
        goto done;
    }
    /* a random seed below 2^32, as A1111 draws them (and exact in JSON) */
    uint64_t seed = p->seed < 0 ? sdxl_rng_random_seed() % 4294967295u : (uint64_t)p->seed;
    st->seed = seed;
    int number = 0;
    for (int r = 0; r < p->n_iter; r++) {
        uint64_t round_seed = seed + (uint64_t)r * (uint64_t)B;
        sdxl_rng rng;
        sdxl_rng_seed(&rng, round_seed);
        if (p->init_latents) {
            memcpy(latents, p->init_latents, (size_t)nlat * 4);
        } else if (!p->init_rgb && p->rng_cuda) {
            for (int i = 0; i < B; i++) { /* image i: its own [1,C,h,w] draw with seed + i, as A1111 */
                sdxl_philox_seed(&philox->gen[i], round_seed + (uint64_t)i);
                sdxl_philox_randn(&philox->gen[i], latents + (size_t)i * C * h * w, (int64_t)C * h * w);
            }
            /* the samplers' per-step noise continues each image's own stream */
            philox->n = B;
            rng.fill = philox_fill;
            rng.fill_user_data = philox;
        } else if (!p->init_rgb) {
            sdxl_rng_randn(&rng, latents, nlat); /* one [B,C,h,w] draw, as diffusers */
        }
        int start_step = 0;
        if (p->init_rgb) {
            sdxl_img2img_params ip = sdxl_img2img_default_params();
            ip.strength = p->strength;
            ip.vae = &vp;
            if ((s = sdxl_img2img_prepare(be, m->weights, smp, &ip, p->init_rgb, H, W, B, &rng, latents, &start_step,
                                          err)))
                goto done;
        }
        step_ctx sctx = {p, r};
        sdxl_denoise_params dp = sdxl_denoise_default_params();
        dp.start_step = start_step;
        dp.batch = B;
        dp.width = W;
        dp.height = H;
        dp.guidance = p->cfg;
        dp.guidance_rescale = p->guidance_rescale;
        dp.rng = &rng;
        dp.on_step = step_cb;
        dp.user_data = &sctx;
        dp.memory_budget = p->memory_budget;
        if (r == 0 && p->on_plan) {
            int rows = 0, per_pass = 0;
            size_t ab = 0;
            if ((s = sdxl_denoise_plan(m->weights, &dp, pos.n_tokens, &rows, &per_pass, &ab, err))) goto done;
            p->on_plan(p->user_data, rows, per_pass, ab);
        }
        double td = sdxl_now_s();
        if ((s = sdxl_denoise(be, m->weights, smp, &pos, &neg, 1, &dp, latents, err))) goto done;
        st->denoise_ms += sdxl_ms_since(td);
        if (p->on_latents) {
            int64_t shape[4] = {B, C, h, w};
            if ((s = p->on_latents(p->user_data, r, round_seed, latents, shape, err))) goto done;
        }
        double tv = sdxl_now_s();
        if ((s = sdxl_vae_decode(be, m->weights, &vp, latents, B, h, w, vae_arena, image, err))) goto done;
        st->decode_ms += sdxl_ms_since(tv);
        sdxl_vae_image_to_rgb8(image, B, H, W, rgb);
        for (int i = 0; i < B; i++) {
            sdxl_gen_image img = {rgb + (size_t)i * H * W * 3, W, H,
                                  p->rng_cuda ? round_seed + (uint64_t)i : round_seed, r, i, number};
            if (p->on_image && (s = p->on_image(p->user_data, &img, err))) goto done;
            number++;
            st->images++;
        }
    }
done:
    sdxl_free(philox);
    sdxl_arena_free(vae_arena);
    sdxl_free(latents);
    sdxl_free(image);
    sdxl_free(rgb);
    sdxl_cond_free(&pos);
    sdxl_cond_free(&neg);
    sdxl_sampler_free(smp);
    return s;
}

void sdxl_gen_infotext(char *buf, size_t n, const sdxl_gen_params *p, const sdxl_gen_stats *st,
                       const sdxl_gen_image *img, const char *prompt, const char *model_name, const char *model_hash,
                       const char *lora_hashes) {
    if (!buf || !n) return;
    size_t k = 0;
#define APPEND(...)                                                                                    \
    do {                                                                                               \
        if (k < n) {                                                                                   \
            int w_ = snprintf(buf + k, n - k, __VA_ARGS__);                                            \
            k = w_ < 0 ? n : k + (size_t)w_;                                                           \
        }                                                                                              \
    } while (0)
    APPEND("%s\n", prompt ? prompt : p->prompt);
    if (p->negative) APPEND("Negative prompt: %s\n", p->negative);
    APPEND("Steps: %d, Sampler: %s%s, CFG scale: %g, Seed: %llu, Size: %dx%d, ", p->steps,
           sdxl_sampler_kind_name(st->sampler), st->karras ? " Karras" : "", p->cfg, (unsigned long long)img->seed,
           st->width, st->height);
    if (model_hash && *model_hash) APPEND("Model hash: %s, ", model_hash);
    APPEND("Model: %s, RNG: %s", model_name ? model_name : "", p->rng_cuda ? "NV" : "CPU");
    if (p->init_rgb) APPEND(", Denoising strength: %g", p->strength);
    if (p->batch > 1 && !p->rng_cuda) APPEND(", Batch pos: %d", img->index); /* with rng cuda: seed + i */
    if (lora_hashes && *lora_hashes) APPEND(", Lora hashes: \"%s\"", lora_hashes);
#undef APPEND
    if (k >= n) buf[n - 1] = 0;
}
