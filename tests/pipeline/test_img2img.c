/* img2img against diffusers 0.27.2's StableDiffusionXLImg2ImgPipeline:
 * tests/data/refs/img2img/tiny_<sampler>.safetensors (tools/refs/make_img2img_refs.py:
 * tiny-sdxl, init image demo/reference/base_red_circle.png, P0, guidance 5,
 * seed 7, strength 0.5, 6 steps, every sampler kind; and demo_blue_star: the demo model, 10
 * Euler steps, guidance 6, seed 5, strength 0.6). Checks the start step, the init latents
 * (posterior sample × scaling), the noised latents (add_noise) and the final
 * latents: rel 1e-3 of max|x| (refs README pipeline tolerance). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "image/png.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "pipeline/denoise.h"
#include "pipeline/img2img.h"
#include "sample/add_noise.h"
#include "test.h"

#ifndef SDXL_SOURCE_DIR
#define SDXL_SOURCE_DIR "."
#endif

static const char *P0 = "a photo of an astronaut riding a horse on mars";

static double rel_err(const float *a, const float *ref, int64_t n) {
    double md = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - ref[i]));
        mx = fmax(mx, fabs((double)ref[i]));
    }
    return mx > 0 ? md / mx : md;
}

TEST(img2img_start_step) {
    sdxl_error err = {0};
    int s = -1;
    CHECK(sdxl_img2img_start_step(6, 0.5, &s, &err) == SDXL_STATUS_OK && s == 3);
    CHECK(sdxl_img2img_start_step(10, 0.3, &s, &err) == SDXL_STATUS_OK && s == 7);
    CHECK(sdxl_img2img_start_step(20, 1.0, &s, &err) == SDXL_STATUS_OK && s == 0);
    CHECK(sdxl_img2img_start_step(7, 0.99, &s, &err) == SDXL_STATUS_OK && s == 1); /* int(6.93) = 6 */
    CHECK(sdxl_img2img_start_step(3, 0.2, &s, &err) == SDXL_STATUS_INVALID_ARG);   /* no step would run */
    CHECK(sdxl_img2img_start_step(3, 1.5, &s, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_img2img_start_step(3, NAN, &s, &err) == SDXL_STATUS_INVALID_ARG);
}

typedef struct {
    const char *name, *model, *ref, *prompt;
    sdxl_sampler_kind kind;
    int steps;
    uint64_t seed;
    double strength, guidance;
} case_;

static void run_case(const case_ *c) {
    const char *name = c->name;
    sdxl_error err = {0};
    sdxl_model *m = NULL;
    sdxl_backend *be = NULL;
    sdxl_st_file *ref = NULL;
    sdxl_sampler *s = NULL;
    sdxl_cond pos = {0}, neg = {0};
    float *lat = NULL;
    uint8_t *rgb = NULL;
    char path[1024], model_path[1024];
    if (c->model[0] == '/') snprintf(model_path, sizeof model_path, "%s", c->model);
    else snprintf(model_path, sizeof model_path, "%s", sdxl_test_data(c->model));
    snprintf(path, sizeof path, "%s", sdxl_test_data(c->ref));
    sdxl_model_params mp = sdxl_model_default_params();
    if (sdxl_model_load(model_path, &mp, &m, &err) || !(be = sdxl_backend_create(NULL, &err)) ||
        sdxl_st_open(path, &ref, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: setup: %s", name, err.msg);
        goto out;
    }
    int W, H;
    char png[1024];
    snprintf(png, sizeof png, "%s", sdxl_test_data("refs/img2img/init_red_circle.png"));
    if (sdxl_png_read(png, &rgb, &W, &H, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        goto out;
    }
    sdxl_cond_request req = {.prompt = c->prompt, .force_zeros_for_empty_prompt = true};
    req.prompt_params = sdxl_prompt_default_params();
    req.prompt_params.syntax = SDXL_PROMPT_PLAIN;
    req.prompt_params.long_mode = SDXL_LONG_TRUNCATE;
    if (sdxl_encode_prompts(be, m->weights, m->tok[0], m->tok[1], &req, &pos, &neg, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: encode: %s", name, err.msg);
        goto out;
    }
    const sdxl_model_config *mc = sdxl_weights_config(m->weights);
    sdxl_sched_config sc;
    if (sdxl_sched_config_parse(mc->scheduler_json, strlen(mc->scheduler_json), &sc, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        goto out;
    }
    const sdxl_st_tensor *t_init = sdxl_st_find(ref, "init_latents"), *t_noisy = sdxl_st_find(ref, "noisy"),
                         *t_out = sdxl_st_find(ref, "latents");
    const char *ms = sdxl_st_metadata(ref, "start_step");
    if (!t_init || !t_noisy || !t_out || !ms) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: reference tensors missing", name);
        goto out;
    }
    const int64_t n = (int64_t)(t_out->nbytes / 4);
    const int steps = c->steps;
    if (sdxl_sampler_create(c->kind, &sc, steps, n, &s, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        goto out;
    }
    lat = malloc((size_t)n * sizeof(float));
    sdxl_rng rng;
    sdxl_rng_seed(&rng, c->seed);
    sdxl_img2img_params ip = sdxl_img2img_default_params();
    ip.strength = c->strength;
    int start = -1;
    if (sdxl_img2img_prepare(be, m->weights, s, &ip, rgb, H, W, 1, &rng, lat, &start, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: prepare: %s", name, err.msg);
        goto out;
    }
    CHECK_EQ_INT(start, atoi(ms));
    double e_noisy = rel_err(lat, t_noisy->data, n);
    /* add_noise alone, on the reference's own inputs */
    float *tmp = malloc((size_t)n * sizeof(float));
    const sdxl_st_tensor *t_noise = sdxl_st_find(ref, "noise");
    double e_add = 1e30;
    if (tmp && t_noise && sdxl_sampler_add_noise(s, start, t_init->data, t_noise->data, tmp, n, &err) == 0)
        e_add = rel_err(tmp, t_noisy->data, n);
    free(tmp);
    sdxl_denoise_params p = sdxl_denoise_default_params();
    p.width = W;
    p.height = H;
    p.guidance = c->guidance;
    p.start_step = start;
    p.rng = &rng;
    if (sdxl_denoise(be, m->weights, s, &pos, &neg, 1, &p, lat, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: denoise: %s", name, err.msg);
        goto out;
    }
    double e_out = rel_err(lat, t_out->data, n);
    CHECK_MSG(e_add < 1e-6, "%s: add_noise rel err %.3g", name, e_add);
    CHECK_MSG(e_noisy < 1e-3, "%s: noised init latents rel err %.3g", name, e_noisy);
    CHECK_MSG(e_out < 1e-3, "%s: final latents rel err %.3g", name, e_out);
    printf("    img2img %-9s start %d: add_noise rel %.2e, noised init rel %.2e, final rel %.2e\n", name, start, e_add,
           e_noisy, e_out);
out:
    free(lat);
    sdxl_free(rgb);
    sdxl_sampler_free(s);
    sdxl_cond_free(&pos);
    sdxl_cond_free(&neg);
    sdxl_st_close(ref);
    sdxl_backend_free(be);
    sdxl_model_free(m);
}

#define TINY(n, k) \
    {n, "refs/tiny-sdxl", "refs/img2img/tiny_" n ".safetensors", P0, k, 6, 7, 0.5, 5.0}
TEST(img2img_euler) { run_case(&(case_)TINY("euler", SDXL_SAMPLER_EULER)); }
TEST(img2img_euler_a) { run_case(&(case_)TINY("euler_a", SDXL_SAMPLER_EULER_A)); }
TEST(img2img_dpmpp_2m) { run_case(&(case_)TINY("dpmpp_2m", SDXL_SAMPLER_DPMPP_2M)); }
TEST(img2img_ddim) { run_case(&(case_)TINY("ddim", SDXL_SAMPLER_DDIM)); }
TEST(img2img_heun) { run_case(&(case_)TINY("heun", SDXL_SAMPLER_HEUN)); }
TEST(img2img_dpmpp_2m_sde) { run_case(&(case_)TINY("dpmpp_2m_sde", SDXL_SAMPLER_DPMPP_2M_SDE)); }
TEST(img2img_unipc) { run_case(&(case_)TINY("unipc", SDXL_SAMPLER_UNIPC)); }
TEST(img2img_lcm) { run_case(&(case_)TINY("lcm", SDXL_SAMPLER_LCM)); }
TEST(img2img_demo_euler) {
    run_case(&(case_){"demo", SDXL_SOURCE_DIR "/demo/model", "refs/img2img/demo_blue_star.safetensors",
                      "a blue star on a yellow background", SDXL_SAMPLER_EULER, 10, 5, 0.6, 6.0});
}
