/* denoise.c - the SDXL denoising loop (see denoise.h). */
#include "pipeline/denoise.h"

#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "model/unet.h"

sdxl_denoise_params sdxl_denoise_default_params(void) {
    sdxl_denoise_params p;
    memset(&p, 0, sizeof p);
    p.batch = 1;
    p.guidance = 5.0;
    return p;
}

/* Latent size for p (0 in latent_width/height: image size / vae factor). */
static void latent_size(const sdxl_model_config *mc, const sdxl_denoise_params *p, int *lh, int *lw) {
    int vf = 1 << (mc->vae.num_levels - 1);
    *lw = p->latent_width ? p->latent_width : p->width / vf;
    *lh = p->latent_height ? p->latent_height : p->height / vf;
}

sdxl_status sdxl_denoise_plan(const sdxl_weights *w, const sdxl_denoise_params *p, int context_tokens, int *rows_out,
                              int *per_pass_out, size_t *bytes_out, sdxl_error *err) {
    if (!w || !p) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise plan: NULL argument");
    const sdxl_model_config *mc = sdxl_weights_config(w);
    const int B = p->batch;
    if (B < 1 || B > SDXL_UNET_MAX_BATCH / 2)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: batch %d out of range", B);
    if (p->width <= 0 || p->height <= 0)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: image size %dx%d", p->width, p->height);
    int lh, lw;
    latent_size(mc, p, &lh, &lw);
    const int rows = p->guidance > 1.0 ? 2 * B : B;
    sdxl_unet_shape shape = {.batch = rows, .height = lh, .width = lw, .context_tokens = context_tokens};
    size_t bytes = 0;
    sdxl_status st = sdxl_unet_arena_bytes(&mc->unet, &shape, &bytes, err);
    if (st) return sdxl_error_prefix(err, "denoise"), st;
    int per_pass = rows;
    if (p->memory_budget && bytes > p->memory_budget) {
        /* largest k in [1, rows) whose arena fits (the arena grows with k) */
        shape.batch = 1;
        if ((st = sdxl_unet_arena_bytes(&mc->unet, &shape, &bytes, err))) return sdxl_error_prefix(err, "denoise"), st;
        if (bytes > p->memory_budget)
            return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY,
                                  "denoise: memory budget %zu bytes is below one UNet row's arena (%zu bytes at "
                                  "latent %dx%d)",
                                  p->memory_budget, bytes, lw, lh);
        int lo = 1, hi = rows - 1; /* lo fits */
        size_t lo_bytes = bytes;
        while (lo < hi) {
            int mid = lo + (hi - lo + 1) / 2;
            shape.batch = mid;
            if ((st = sdxl_unet_arena_bytes(&mc->unet, &shape, &bytes, err)))
                return sdxl_error_prefix(err, "denoise"), st;
            if (bytes <= p->memory_budget) lo = mid, lo_bytes = bytes;
            else hi = mid - 1;
        }
        per_pass = lo;
        bytes = lo_bytes;
    }
    if (rows_out) *rows_out = rows;
    if (per_pass_out) *per_pass_out = per_pass;
    if (bytes_out) *bytes_out = bytes;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_denoise(sdxl_backend *be, const sdxl_weights *w, sdxl_sampler *sampler, const sdxl_cond *pos,
                         const sdxl_cond *neg, int n_cond, const sdxl_denoise_params *p, float *latents,
                         sdxl_error *err) {
    if (!be || !w || !sampler || !pos || !p || !latents)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: NULL argument");
    const sdxl_model_config *mc = sdxl_weights_config(w);
    const sdxl_unet_config *uc = &mc->unet;
    const int B = p->batch;
    const bool cfg = p->guidance > 1.0;
    if (B < 1 || B > SDXL_UNET_MAX_BATCH / 2)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: batch %d out of range", B);
    if (n_cond != 1 && n_cond != B)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: %d conds for batch %d (need 1 or B)", n_cond, B);
    if (cfg && !neg) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: guidance > 1 needs a negative cond");
    if (p->width <= 0 || p->height <= 0)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: image size %dx%d", p->width, p->height);
    int lh, lw;
    latent_size(mc, p, &lh, &lw);
    const int steps = sdxl_sampler_steps(sampler);
    if (p->start_step < 0 || p->start_step >= steps)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: start_step %d not in [0, %d)", p->start_step,
                              steps);
    const int tokens = pos[0].n_tokens, dim = pos[0].dim, pdim = pos[0].pooled_dim;
    for (int i = 0; i < n_cond; i++) {
        const sdxl_cond *c[2] = {&pos[i], cfg ? &neg[i] : &pos[i]};
        for (int k = 0; k < 2; k++)
            if (c[k]->n_tokens != tokens || c[k]->dim != dim || c[k]->pooled_dim != pdim || !c[k]->embeds ||
                !c[k]->pooled)
                return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                      "denoise: conditioning %d has shape [%d,%d]+%d, expected [%d,%d]+%d", i,
                                      c[k]->n_tokens, c[k]->dim, c[k]->pooled_dim, tokens, dim, pdim);
    }
    if (dim != uc->cross_attention_dim || uc->num_time_ids != 6 ||
        pdim + uc->num_time_ids * uc->addition_time_embed_dim != uc->projection_class_embeddings_input_dim)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "denoise: conditioning dim %d / pooled %d does not fit the UNet", dim, pdim);
    if (sdxl_sampler_kind_is_stochastic(sdxl_sampler_get_kind(sampler)) && !p->rng)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "denoise: %s needs an rng",
                              sdxl_sampler_kind_name(sdxl_sampler_get_kind(sampler)));

    const int rows = cfg ? 2 * B : B;
    const int64_t per = (int64_t)uc->in_channels * lh * lw;
    const int64_t n = per * B;
    if (uc->out_channels != uc->in_channels)
        return sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "denoise: UNet in %d != out %d channels", uc->in_channels,
                              uc->out_channels);

    int per_pass = rows;
    size_t bytes = 0;
    sdxl_status st = sdxl_denoise_plan(w, p, tokens, NULL, &per_pass, &bytes, err);
    if (st) return st;

    /* everything the loop needs, before the loop */
    sdxl_arena *arena = sdxl_arena_create(bytes);
    float *x_in = sdxl_malloc((size_t)(rows * per) * sizeof(float));
    float *pred = sdxl_malloc((size_t)(rows * per) * sizeof(float));
    float *ctx = sdxl_malloc((size_t)rows * tokens * dim * sizeof(float));
    float *pooled = sdxl_malloc((size_t)rows * pdim * sizeof(float));
    float *tids = sdxl_malloc((size_t)rows * 6 * sizeof(float));
    if (!arena || !x_in || !pred || !ctx || !pooled || !tids) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "denoise: out of memory (UNet arena %zu bytes)", bytes);
        goto out;
    }
    /* rows: [neg 0..B-1; pos 0..B-1] with CFG, else [pos 0..B-1] */
    for (int r = 0; r < rows; r++) {
        int img = cfg ? r % B : r;
        const sdxl_cond *c = (cfg && r < B) ? &neg[n_cond == 1 ? 0 : img] : &pos[n_cond == 1 ? 0 : img];
        memcpy(ctx + (size_t)r * tokens * dim, c->embeds, (size_t)tokens * dim * sizeof(float));
        memcpy(pooled + (size_t)r * pdim, c->pooled, (size_t)pdim * sizeof(float));
        float *t = tids + (size_t)r * 6;
        t[0] = (float)(p->orig_height ? p->orig_height : p->height);
        t[1] = (float)(p->orig_width ? p->orig_width : p->width);
        t[2] = (float)p->crop_top;
        t[3] = (float)p->crop_left;
        t[4] = (float)p->height;
        t[5] = (float)p->width;
    }

    sdxl_sampler_reset(sampler);
    if (p->start_step == 0) {
        float s = (float)sdxl_sampler_init_noise_sigma(sampler);
        if (s != 1.0f)
            for (int64_t k = 0; k < n; k++) latents[k] *= s;
    }
    sdxl_sampler_set_begin_index(sampler, p->start_step);
    for (int i = p->start_step; i < steps; i++) {
        sdxl_sampler_scale_model_input(sampler, i, latents, x_in, n);
        if (cfg) memcpy(x_in + n, x_in, (size_t)n * sizeof(float));
        float t = (float)sdxl_sampler_timestep(sampler, i);
        for (int r0 = 0; r0 < rows; r0 += per_pass) { /* one pass unless the budget splits the rows */
            int k = rows - r0 < per_pass ? rows - r0 : per_pass;
            sdxl_unet_inputs in = {.shape = {.batch = k, .height = lh, .width = lw, .context_tokens = tokens},
                                   .sample = x_in + (size_t)r0 * per,
                                   .timesteps = &t,
                                   .n_timesteps = 1,
                                   .context = ctx + (size_t)r0 * tokens * dim,
                                   .text_embeds = pooled + (size_t)r0 * pdim,
                                   .time_ids = tids + (size_t)r0 * 6};
            st = sdxl_unet_forward(be, w, &in, arena, pred + (size_t)r0 * per, NULL, err);
            if (st) {
                if (per_pass < rows)
                    sdxl_error_prefix(err, "denoise step %d/%d rows %d..%d", i + 1, steps, r0, r0 + k - 1);
                else
                    sdxl_error_prefix(err, "denoise step %d/%d", i + 1, steps);
                goto out;
            }
        }
        if (cfg) {
            st = sdxl_unet_cfg_combine(pred, B, per, p->guidance, p->guidance_rescale, pred, err);
            if (st) goto out;
        }
        st = sdxl_sampler_step(sampler, i, pred, latents, n, p->rng, err);
        if (st) goto out;
        if (p->on_step && !p->on_step(p->user_data, i + 1 - p->start_step, steps - p->start_step, latents)) {
            st = sdxl_error_set(err, SDXL_STATUS_CANCELLED, "denoise: cancelled after step %d/%d", i + 1, steps);
            goto out;
        }
    }
out:
    sdxl_arena_free(arena);
    sdxl_free(x_in);
    sdxl_free(pred);
    sdxl_free(ctx);
    sdxl_free(pooled);
    sdxl_free(tids);
    return st;
}
