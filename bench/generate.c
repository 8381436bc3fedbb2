/* bench/generate.c - one whole image as `sdxl generate` makes it: seconds for
 * prompt encode, N denoise steps (it/s) and VAE decode, separately timed.
 *
 *   sdxl_bench_generate MODEL [--size WxH] [--steps N] [--batch B] [--cfg G] [--threads N]
 *
 * MODEL: a diffusers folder or single .safetensors (`sdxl make-model
 * --config sdxl-base` writes a full-size random one; the cost does not
 * depend on the values). Defaults: the model's sample size, 4 steps, batch 1,
 * CFG 5 (UNet on 2 rows per step), Euler, seed 0. Weights are mapped: the
 * first UNet step also faults them in, so the first-step time and the
 * steady it/s over the later steps are printed apart. Peak RSS (getrusage)
 * includes touched pages of the mapped weights. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "model/conditioning.h"
#include "model/model.h"
#include "model/vae.h"
#include "pipeline/denoise.h"
#include "sample/rng.h"
#include "sample/scheduler.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

typedef struct {
    double t_prev, first, rest;
} step_times;

static bool on_step(void *ud, int step, int total, const float *lat) {
    (void)lat;
    step_times *s = ud;
    double t = now_s(), d = t - s->t_prev;
    s->t_prev = t;
    if (step == 1) s->first = d;
    else s->rest += d;
    fprintf(stderr, "  step %d/%d  %.2f s\n", step, total, d);
    return true;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int W = 0, H = 0, steps = 4, B = 1, threads = 0;
    double cfg = 5.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            if (sscanf(argv[++i], "%dx%d", &W, &H) != 2) return fprintf(stderr, "bad --size\n"), 2;
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cfg") && i + 1 < argc) cfg = atof(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else {
            fprintf(stderr, "usage: %s MODEL [--size WxH] [--steps N] [--batch B] [--cfg G] [--threads N]\n", argv[0]);
            return 2;
        }
    }
    if (!path || steps < 1 || B < 1) {
        fprintf(stderr, "usage: %s MODEL [--size WxH] [--steps N] [--batch B] [--cfg G] [--threads N]\n", argv[0]);
        return 2;
    }
    sdxl_error err = {0};
    sdxl_model *m = NULL;
    sdxl_backend *be = NULL;
    sdxl_sampler *smp = NULL;
    sdxl_cond pos = {0}, neg = {0};
    float *lat = NULL, *img = NULL;
    sdxl_arena *vae_arena = NULL;
    int rc = 1;
    double t0 = now_s();
    if (sdxl_model_load(path, NULL, &m, &err)) goto fail;
    double t_load = now_s() - t0;
    const sdxl_model_config *mc = sdxl_weights_config(m->weights);
    const int f = 1 << (mc->vae.num_levels - 1), C = mc->unet.in_channels;
    if (!W) W = mc->unet.sample_size * f;
    if (!H) H = mc->unet.sample_size * f;
    const int h = H / f, w = W / f;
    const int64_t n = (int64_t)B * C * h * w;
    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = threads;
    if (!(be = sdxl_backend_create(&bp, &err))) goto fail;
    sdxl_sched_config sc;
    if (sdxl_sched_config_parse(mc->scheduler_json, strlen(mc->scheduler_json), &sc, &err)) goto fail;
    if (sdxl_sampler_create(SDXL_SAMPLER_EULER, &sc, steps, n, &smp, &err)) goto fail;
    sdxl_vae_params vp = sdxl_vae_default_params();
    sdxl_vae_plan plan;
    if (sdxl_vae_plan_decode(&mc->vae, &vp, B, H, W, &plan, &err)) goto fail;
    lat = sdxl_malloc((size_t)n * sizeof(float));
    img = sdxl_malloc((size_t)B * 3 * H * W * sizeof(float));
    vae_arena = sdxl_arena_create(plan.arena_bytes);
    if (!lat || !img || !vae_arena) {
        sdxl_error_set(&err, SDXL_STATUS_OUT_OF_MEMORY, "buffers");
        goto fail;
    }
    printf("model %s: %dx%d, batch %d, %d Euler steps, CFG %g, %d threads\n", path, W, H, B, steps, cfg,
           sdxl_backend_threads(be));
    fflush(stdout);

    double t1 = now_s();
    sdxl_cond_request req = {.prompt = "a photo of an astronaut riding a horse on mars",
                             .negative = "blurry, low quality",
                             .prompt_params = sdxl_prompt_default_params(),
                             .force_zeros_for_empty_prompt = mc->pipeline.force_zeros_for_empty_prompt};
    if (sdxl_encode_prompts(be, m->weights, m->tok[0], m->tok[1], &req, &pos, &neg, &err)) goto fail;
    double t_enc = now_s() - t1;

    sdxl_rng rng;
    sdxl_rng_seed(&rng, 0);
    sdxl_rng_randn(&rng, lat, n);
    sdxl_denoise_params dp = sdxl_denoise_default_params();
    dp.batch = B;
    dp.width = W;
    dp.height = H;
    dp.guidance = cfg;
    dp.rng = &rng;
    step_times st = {0};
    dp.on_step = on_step;
    dp.user_data = &st;
    double t2 = now_s();
    st.t_prev = t2;
    if (sdxl_denoise(be, m->weights, smp, &pos, &neg, 1, &dp, lat, &err)) goto fail;
    double t_den = now_s() - t2;

    double t3 = now_s();
    if (sdxl_vae_decode(be, m->weights, &vp, lat, B, h, w, vae_arena, img, &err)) goto fail;
    double t_dec = now_s() - t3;

    printf("load (map + parse)   %8.2f s\n", t_load);
    printf("encode (both CLIPs)  %8.2f s\n", t_enc);
    printf("denoise %3d steps    %8.2f s  %.4f it/s  (first step %.2f s; steady %.4f it/s)\n", steps, t_den,
           steps / t_den, st.first, steps > 1 ? (steps - 1) / st.rest : steps / t_den);
    printf("VAE decode           %8.2f s\n", t_dec);
    printf("image (enc+den+dec)  %8.2f s   peak RSS %.0f MiB\n", t_enc + t_den + t_dec, peak_rss_mib());
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench generate: %s\n", err.msg);
done:
    sdxl_arena_free(vae_arena);
    sdxl_free(lat);
    sdxl_free(img);
    sdxl_cond_free(&pos);
    sdxl_cond_free(&neg);
    sdxl_sampler_free(smp);
    sdxl_backend_free(be);
    sdxl_model_free(m);
    return rc;
}
