/* The denoising loop against diffusers' StableDiffusionXLPipeline (0.27.2):
 * tests/data/refs/tiny-sdxl-ref/pipeline_*.safetensors (4 steps, 64×64, CFG 5,
 * P0, negative None or NEG) and the variants' 3-step Euler runs. Tolerance:
 * refs README, rel 1e-3 of max|x| on latents. */
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "model/unet.h"
#include "pipeline/denoise.h"
#include "test.h"

static const char *P0 = "a photo of an astronaut riding a horse on mars";
static const char *NEG = "blurry, low quality, bad anatomy, watermark";

typedef struct {
    const sdxl_st_file *ref;
    const char *prefix;
    int steps_seen;
    double worst;
    int worst_step;
} step_check;

static double rel_err(const float *a, const float *ref, int64_t n) {
    double md = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - ref[i]));
        mx = fmax(mx, fabs((double)ref[i]));
    }
    return mx > 0 ? md / mx : md;
}

static bool on_step(void *ud, int step, int total, const float *lat) {
    step_check *c = ud;
    (void)total;
    char name[128];
    snprintf(name, sizeof name, "%sstep%d.latents_after", c->prefix, step - 1);
    const sdxl_st_tensor *t = sdxl_st_find(c->ref, name);
    c->steps_seen++;
    if (!t) {
        c->worst = 1e30;
        return true;
    }
    double e = rel_err(lat, t->data, (int64_t)(t->nbytes / 4));
    if (e > c->worst) {
        c->worst = e;
        c->worst_step = step - 1;
    }
    return true;
}

/* Run one reference: model dir, ref file, key prefix, prompt/negative, sampler, image size. */
static void run_ref(const char *model_rel, const char *ref_rel, const char *prefix, const char *prompt,
                    const char *negative, sdxl_sampler_kind kind, bool karras, bool ddim_cfg, int H, int W) {
    sdxl_error err = {0};
    sdxl_model *m = NULL;
    sdxl_backend *be = NULL;
    sdxl_st_file *ref = NULL;
    sdxl_sampler *s = NULL;
    sdxl_cond pos = {0}, neg = {0};
    float *lat = NULL;
    sdxl_model_params mp = sdxl_model_default_params();
    char model_path[1024];
    snprintf(model_path, sizeof model_path, "%s", sdxl_test_data(model_rel));
    if (sdxl_model_load(model_path, &mp, &m, &err) || !(be = sdxl_backend_create(NULL, &err)) ||
        sdxl_st_open(sdxl_test_data(ref_rel), &ref, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: setup: %s", ref_rel, err.msg);
        goto out;
    }
    sdxl_cond_request req = {.prompt = prompt, .negative = negative, .force_zeros_for_empty_prompt = true};
    req.prompt_params = sdxl_prompt_default_params();
    req.prompt_params.syntax = SDXL_PROMPT_PLAIN;
    req.prompt_params.long_mode = SDXL_LONG_TRUNCATE;
    if (sdxl_encode_prompts(be, m->weights, m->tok[0], m->tok[1], &req, &pos, &neg, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: encode: %s", ref_rel, err.msg);
        goto out;
    }
    const sdxl_model_config *mc = sdxl_weights_config(m->weights);
    sdxl_sched_config sc;
    if (sdxl_sched_config_parse(mc->scheduler_json, strlen(mc->scheduler_json), &sc, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", ref_rel, err.msg);
        goto out;
    }
    if (karras) sc.use_karras_sigmas = true;
    if (ddim_cfg) sc.clip_sample = false, sc.set_alpha_to_one = false;
    char name[128];
    snprintf(name, sizeof name, "%sin.latents", prefix);
    const sdxl_st_tensor *in = sdxl_st_find(ref, name);
    snprintf(name, sizeof name, "%sout.latents", prefix);
    const sdxl_st_tensor *outl = sdxl_st_find(ref, name);
    if (!in || !outl) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: latents missing", ref_rel);
        goto out;
    }
    int64_t n = (int64_t)(in->nbytes / 4);
    snprintf(name, sizeof name, "%ssched.timesteps", prefix);
    const sdxl_st_tensor *ts = sdxl_st_find(ref, name);
    int steps = ts ? (int)ts->shape[0] : 4;
    if (sdxl_sampler_create(kind, &sc, steps, n, &s, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", ref_rel, err.msg);
        goto out;
    }
    lat = malloc((size_t)n * sizeof(float));
    memcpy(lat, in->data, (size_t)n * sizeof(float));
    step_check sc_ = {.ref = ref, .prefix = prefix};
    sdxl_denoise_params p = sdxl_denoise_default_params();
    p.width = W;
    p.height = H;
    p.latent_height = (int)in->shape[2];
    p.latent_width = (int)in->shape[3];
    p.guidance = 5.0;
    p.on_step = on_step;
    p.user_data = &sc_;
    if (sdxl_denoise(be, m->weights, s, &pos, &neg, 1, &p, lat, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: denoise: %s", ref_rel, err.msg);
        goto out;
    }
    double e_out = rel_err(lat, outl->data, n);
    CHECK_EQ_INT(sc_.steps_seen, steps);
    CHECK_MSG(sc_.worst < 1e-3, "%s %s: step %d latents rel err %.3g", ref_rel, prefix, sc_.worst_step, sc_.worst);
    CHECK_MSG(e_out < 1e-3, "%s %s: out.latents rel err %.3g", ref_rel, prefix, e_out);
    printf("    %-52s %-10s worst step rel %.2e, out rel %.2e\n", ref_rel, sdxl_sampler_kind_name(kind), sc_.worst,
           e_out);
out:
    free(lat);
    sdxl_sampler_free(s);
    sdxl_cond_free(&pos);
    sdxl_cond_free(&neg);
    sdxl_st_close(ref);
    sdxl_backend_free(be);
    sdxl_model_free(m);
}

TEST(pipeline_euler) {
    run_ref("refs/tiny-sdxl", "refs/tiny-sdxl-ref/pipeline_euler.safetensors", "", P0, NULL, SDXL_SAMPLER_EULER,
            false, false, 64, 64);
}
TEST(pipeline_euler_negprompt) {
    run_ref("refs/tiny-sdxl", "refs/tiny-sdxl-ref/pipeline_euler_negprompt.safetensors", "", P0, NEG,
            SDXL_SAMPLER_EULER, false, false, 64, 64);
}
TEST(pipeline_dpmpp2m_karras) {
    run_ref("refs/tiny-sdxl", "refs/tiny-sdxl-ref/pipeline_dpmpp2m_karras.safetensors", "", P0, NULL,
            SDXL_SAMPLER_DPMPP_2M, true, false, 64, 64);
}
TEST(pipeline_ddim) {
    run_ref("refs/tiny-sdxl", "refs/tiny-sdxl-ref/pipeline_ddim.safetensors", "", P0, NULL, SDXL_SAMPLER_DDIM, false,
            true, 64, 64);
}
TEST(pipeline_variants_euler) {
    static const struct {
        const char *name;
        int H, W;
    } V[] = {{"v1_convproj", 16, 16}, {"v2_sdxl3lvl", 64, 64}, {"v3_nonsquare", 32, 48}, {"v4_midattn", 24, 24}};
    for (int i = 0; i < 4; i++) {
        char model[256], ref[256];
        snprintf(model, sizeof model, "refs/variants/%s/model", V[i].name);
        snprintf(ref, sizeof ref, "refs/variants/%s/ref.safetensors", V[i].name);
        run_ref(model, ref, "pipeline_euler.", "a photo of a cat", NULL, SDXL_SAMPLER_EULER, false, false, V[i].H,
                V[i].W);
    }
}

/* Batch split (memory_budget) = unsplit, bit for bit: tiny model, B = 3 with
 * CFG (6 rows), three different prompt pairs (n_cond = B), Euler ancestral
 * (the rng draws must not depend on the split either); budgets set to the
 * arena of exactly 1, 2 and 4 rows. */
static sdxl_status split_run(sdxl_backend *be, const sdxl_model *m, const sdxl_cond *pos, const sdxl_cond *neg,
                             size_t budget, const float *init, float *lat, int64_t n, sdxl_error *err) {
    const sdxl_model_config *mc = sdxl_weights_config(m->weights);
    sdxl_sched_config sc;
    sdxl_sampler *s = NULL;
    sdxl_status st = sdxl_sched_config_parse(mc->scheduler_json, strlen(mc->scheduler_json), &sc, err);
    if (!st) st = sdxl_sampler_create(SDXL_SAMPLER_EULER_A, &sc, 3, n, &s, err);
    if (st) return st;
    sdxl_rng rng;
    sdxl_rng_seed(&rng, 7);
    memcpy(lat, init, (size_t)n * sizeof(float));
    sdxl_denoise_params p = sdxl_denoise_default_params();
    p.batch = 3;
    p.width = p.height = 64;
    p.rng = &rng;
    p.memory_budget = budget;
    st = sdxl_denoise(be, m->weights, s, pos, neg, 3, &p, lat, err);
    sdxl_sampler_free(s);
    return st;
}

TEST(denoise_batch_split_bit_identical) {
    sdxl_error err = {0};
    sdxl_model *m = NULL;
    sdxl_backend *be = NULL;
    sdxl_cond pos[3] = {{0}}, neg[3] = {{0}};
    float *init = NULL, *ref = NULL, *lat = NULL;
    static const char *PROMPTS[3] = {"a red circle", "a photo of a cat", "a blue star on a yellow background"};
    static const char *NEGS[3] = {"", "blurry", "low quality, watermark"};
    if (sdxl_model_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &m, &err) || !(be = sdxl_backend_create(NULL, &err))) {
        sdxl_test_fail(__FILE__, __LINE__, "setup: %s", err.msg);
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        sdxl_cond_request req = {.prompt = PROMPTS[i], .negative = NEGS[i], .force_zeros_for_empty_prompt = true};
        req.prompt_params = sdxl_prompt_default_params();
        if (sdxl_encode_prompts(be, m->weights, m->tok[0], m->tok[1], &req, &pos[i], &neg[i], &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "encode: %s", err.msg);
            goto out;
        }
    }
    const sdxl_model_config *mc = sdxl_weights_config(m->weights);
    const int lh = 64 >> (mc->vae.num_levels - 1), lw = lh;
    const int64_t n = (int64_t)3 * mc->unet.in_channels * lh * lw;
    init = malloc((size_t)n * sizeof(float));
    ref = malloc((size_t)n * sizeof(float));
    lat = malloc((size_t)n * sizeof(float));
    sdxl_rng rng;
    sdxl_rng_seed(&rng, 42);
    sdxl_rng_randn(&rng, init, n);
    if (split_run(be, m, pos, neg, 0, init, ref, n, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "unsplit: %s", err.msg);
        goto out;
    }
    sdxl_denoise_params p = sdxl_denoise_default_params();
    p.batch = 3;
    p.width = p.height = 64;
    int rows = 0, per_pass = 0;
    CHECK_EQ_INT(sdxl_denoise_plan(m->weights, &p, pos[0].n_tokens, &rows, &per_pass, NULL, &err), SDXL_STATUS_OK);
    CHECK_EQ_INT(rows, 6);
    CHECK_EQ_INT(per_pass, 6);
    static const int KS[3] = {1, 2, 4};
    for (int j = 0; j < 3; j++) {
        size_t budget = 0;
        sdxl_unet_shape shape = {.batch = KS[j], .height = lh, .width = lw, .context_tokens = pos[0].n_tokens};
        if (sdxl_unet_arena_bytes(&mc->unet, &shape, &budget, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "arena bytes: %s", err.msg);
            goto out;
        }
        p.memory_budget = budget;
        size_t bytes = 0;
        CHECK_EQ_INT(sdxl_denoise_plan(m->weights, &p, pos[0].n_tokens, &rows, &per_pass, &bytes, &err),
                     SDXL_STATUS_OK);
        CHECK_EQ_INT(per_pass, KS[j]);
        CHECK(bytes == budget);
        if (split_run(be, m, pos, neg, budget, init, lat, n, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "split %d: %s", KS[j], err.msg);
            continue;
        }
        CHECK_MSG(memcmp(lat, ref, (size_t)n * sizeof(float)) == 0, "split into %d-row passes differs from unsplit",
                  KS[j]);
        /* and not trivially: the rows differ from each other */
        CHECK(memcmp(lat, lat + n / 3, (size_t)(n / 3) * sizeof(float)) != 0);
    }
    /* a budget below one row: OUT_OF_MEMORY before any work */
    {
        size_t one = 0;
        sdxl_unet_shape shape = {.batch = 1, .height = lh, .width = lw, .context_tokens = pos[0].n_tokens};
        CHECK_EQ_INT(sdxl_unet_arena_bytes(&mc->unet, &shape, &one, &err), SDXL_STATUS_OK);
        memcpy(lat, init, (size_t)n * sizeof(float));
        CHECK_EQ_INT(split_run(be, m, pos, neg, one - 1, init, lat, n, &err), SDXL_STATUS_OUT_OF_MEMORY);
        CHECK(strstr(err.msg, "memory budget") != NULL);
        CHECK(memcmp(lat, init, (size_t)n * sizeof(float)) == 0);
    }
out:
    free(init);
    free(ref);
    free(lat);
    for (int i = 0; i < 3; i++) sdxl_cond_free(&pos[i]), sdxl_cond_free(&neg[i]);
    sdxl_backend_free(be);
    sdxl_model_free(m);
}
