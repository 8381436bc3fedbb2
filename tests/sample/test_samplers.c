/* Heun, DPM++ 2M SDE, LCM and UniPC against diffusers 0.27.2 scheduler-only
 * references (tests/data/refs/samplers/, made by tools/refs/make_sampler_refs.py):
 * timesteps, sigmas, init_noise_sigma and the sample after every step() of a
 * loop driven by the fake model
 *     out = 0.1 * scale_model_input(x, t) + (t / 1000) * pattern
 * with the torch CPU generator for the stochastic kinds (sdxl_rng reproduces
 * it bit for bit). Tolerance: max|c - ref| / max|ref| <= 1e-5 per step, because
 * torch keeps sigmas / alphas as float32 tensors and computes the step
 * coefficients (log, exp, sqrt of float32 scalars) in float32, while this
 * engine computes them in double and rounds once to float; both apply them to
 * float32 latents, so results agree to a few float32 ulps per step. Set
 * SDXL_TEST_VERBOSE=1 to print the errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "io/safetensors.h"
#include "sample/scheduler.h"
#include "test.h"

static float *tensor_f32(const sdxl_st_file *f, const char *name, int64_t *numel) {
    const sdxl_st_tensor *t = sdxl_st_find(f, name);
    if (!t || t->dtype != SDXL_ST_F32) return NULL;
    int64_t ne = 1;
    for (int d = 0; d < t->ndim; d++) ne *= t->shape[d];
    float *out = malloc((size_t)(ne ? ne : 1) * sizeof(float));
    if (out) memcpy(out, t->data, (size_t)ne * sizeof(float));
    if (numel) *numel = ne;
    return out;
}

static void check_sampler_ref(const char *file, sdxl_sampler_kind kind) {
    char rel[256];
    snprintf(rel, sizeof rel, "refs/samplers/%s.safetensors", file);
    sdxl_error err = {0};
    sdxl_st_file *f = NULL;
    REQUIRE_OK(sdxl_st_open(sdxl_test_data(rel), &f, &err), &err);
    const char *over = sdxl_st_metadata(f, "overrides");
    const char *steps_s = sdxl_st_metadata(f, "steps");
    const char *seed_s = sdxl_st_metadata(f, "seed");
    REQUIRE(over && steps_s && seed_s);
    sdxl_sched_config cfg;
    REQUIRE_OK(sdxl_sched_config_parse(over, strlen(over), &cfg, &err), &err);
    int steps = atoi(steps_s);
    long long seed = atoll(seed_s);
    int64_t nt = 0, nsig = 0, n = 0, np = 0, ns = 0;
    float *ts = tensor_f32(f, "timesteps", &nt), *sig = tensor_f32(f, "sigmas", &nsig);
    float *ins = tensor_f32(f, "init_noise_sigma", NULL), *x0 = tensor_f32(f, "x_init", &n);
    float *pat = tensor_f32(f, "pattern", &np), *ref = tensor_f32(f, "samples", &ns);
    sdxl_sampler *s = NULL;
    float *x = malloc((size_t)n * sizeof(float)), *xin = malloc((size_t)n * sizeof(float));
    float *out = malloc((size_t)n * sizeof(float));
    if (!ts || !ins || !x0 || !pat || !ref || !x || !xin || !out || np != n || ns != nt * n) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: tensors missing or malformed", file);
        goto done;
    }
    if (sdxl_sampler_create(kind, &cfg, steps, n, &s, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", file, err.msg);
        goto done;
    }
    CHECK_EQ_INT(sdxl_sampler_steps(s), (int)nt);
    CHECK_EQ_INT(sdxl_sampler_inference_steps(s), steps);
    if (sdxl_sampler_steps(s) != (int)nt) goto done;
    for (int i = 0; i < nt; i++)
        CHECK_MSG(fabs(sdxl_sampler_timestep(s, i) - ts[i]) < 1e-3, "%s t[%d] %g vs %g", file, i,
                  sdxl_sampler_timestep(s, i), ts[i]);
    const double *cs = sdxl_sampler_sigmas(s);
    if (sig) {
        CHECK_EQ_INT((int)nsig, (int)nt + 1);
        REQUIRE(cs);
        for (int i = 0; i < nsig && i <= nt; i++)
            CHECK_MSG(fabs(cs[i] - sig[i]) <= 1e-5 * fabs(sig[i]) + 1e-7, "%s sigma[%d] %.9g vs %.9g", file, i, cs[i],
                      sig[i]);
    } else {
        CHECK(cs == NULL);
    }
    CHECK_NEAR(sdxl_sampler_init_noise_sigma(s), ins[0], 1e-5 * ins[0]);
    sdxl_rng rng;
    sdxl_rng_seed(&rng, seed >= 0 ? (uint64_t)seed : 0);
    float ns0 = (float)sdxl_sampler_init_noise_sigma(s);
    for (int64_t k = 0; k < n; k++) x[k] = x0[k] * ns0;
    double worst = 0;
    for (int i = 0; i < nt; i++) {
        sdxl_sampler_scale_model_input(s, i, x, xin, n);
        float tc = (float)(sdxl_sampler_timestep(s, i) / 1000.0);
        for (int64_t k = 0; k < n; k++) out[k] = 0.1f * xin[k] + tc * pat[k];
        sdxl_status st = sdxl_sampler_step(s, i, out, x, n, seed >= 0 ? &rng : NULL, &err);
        if (st) {
            sdxl_test_fail(__FILE__, __LINE__, "%s step %d: %s", file, i, err.msg);
            goto done;
        }
        const float *r = ref + (size_t)i * (size_t)n;
        double md = 0, mr = 0;
        for (int64_t k = 0; k < n; k++) {
            md = fmax(md, fabs((double)x[k] - r[k]));
            mr = fmax(mr, fabs((double)r[k]));
        }
        double rel_err = md / (mr > 0 ? mr : 1);
        worst = fmax(worst, rel_err);
        CHECK_MSG(rel_err <= 1e-5, "%s step %d: max abs diff %.3g, rel %.3g", file, i, md, rel_err);
    }
    if (getenv("SDXL_TEST_VERBOSE")) fprintf(stderr, "  %-24s %2d calls, worst rel err %.3g\n", file, (int)nt, worst);
done:
    sdxl_sampler_free(s);
    free(ts);
    free(sig);
    free(ins);
    free(x0);
    free(pat);
    free(ref);
    free(x);
    free(xin);
    free(out);
    sdxl_st_close(f);
}

TEST(sched_heun_ref) {
    check_sampler_ref("heun_leading_5", SDXL_SAMPLER_HEUN);
    check_sampler_ref("heun_karras_4", SDXL_SAMPLER_HEUN);
    check_sampler_ref("heun_trailing_v_3", SDXL_SAMPLER_HEUN);
}

TEST(sched_dpmpp2m_sde_ref) {
    check_sampler_ref("dpmpp2m_sde_karras_6", SDXL_SAMPLER_DPMPP_2M_SDE);
    check_sampler_ref("dpmpp2m_sde_leading_5", SDXL_SAMPLER_DPMPP_2M_SDE);
}

TEST(sched_lcm_ref) {
    check_sampler_ref("lcm_4", SDXL_SAMPLER_LCM);
    check_sampler_ref("lcm_1", SDXL_SAMPLER_LCM);
    check_sampler_ref("lcm_6_v", SDXL_SAMPLER_LCM);
}

TEST(sched_unipc_ref) {
    check_sampler_ref("unipc_leading_6", SDXL_SAMPLER_UNIPC);
    check_sampler_ref("unipc_karras_5", SDXL_SAMPLER_UNIPC);
    check_sampler_ref("unipc_trailing_v_4", SDXL_SAMPLER_UNIPC);
    check_sampler_ref("unipc_linspace_2", SDXL_SAMPLER_UNIPC);
}

TEST(sched_new_names) {
    sdxl_error err = {0};
    sdxl_sampler_kind k;
    bool karras = true;
    REQUIRE_OK(sdxl_sampler_parse_name("heun", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_HEUN && !karras);
    REQUIRE_OK(sdxl_sampler_parse_name("HeunDiscreteScheduler", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_HEUN);
    REQUIRE_OK(sdxl_sampler_parse_name("DPM++ 2M SDE Karras", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_DPMPP_2M_SDE && karras);
    REQUIRE_OK(sdxl_sampler_parse_name("dpmpp_2m_sde", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_DPMPP_2M_SDE && !karras);
    REQUIRE_OK(sdxl_sampler_parse_name("lcm", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_LCM);
    REQUIRE_OK(sdxl_sampler_parse_name("LCMScheduler", &k, NULL, &err), &err);
    CHECK(k == SDXL_SAMPLER_LCM);
    REQUIRE_OK(sdxl_sampler_parse_name("uni_pc", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_UNIPC && !karras);
    REQUIRE_OK(sdxl_sampler_parse_name("UniPCMultistepScheduler", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_UNIPC);
    CHECK(sdxl_sampler_parse_name("nope", &k, NULL, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "UniPC") != NULL);
    CHECK(strstr(err.msg, "DPM++ 2M SDE Karras") != NULL);
    CHECK(strstr(err.msg, "LCM") != NULL && strstr(err.msg, "Heun") != NULL);
    CHECK(sdxl_sampler_kind_is_stochastic(SDXL_SAMPLER_DPMPP_2M_SDE));
    CHECK(sdxl_sampler_kind_is_stochastic(SDXL_SAMPLER_LCM));
    CHECK(!sdxl_sampler_kind_is_stochastic(SDXL_SAMPLER_HEUN));
    CHECK(!sdxl_sampler_kind_supports_karras(SDXL_SAMPLER_LCM));
}

TEST(sched_new_errors) {
    sdxl_error err = {0};
    sdxl_sched_config c;
    sdxl_sched_config_default(&c);
    sdxl_sampler *s = NULL;
    /* LCM: at most original_inference_steps (50) steps; no Karras */
    CHECK(sdxl_sampler_create(SDXL_SAMPLER_LCM, &c, 51, 16, &s, &err) == SDXL_STATUS_INVALID_ARG);
    c.use_karras_sigmas = true;
    CHECK(sdxl_sampler_create(SDXL_SAMPLER_LCM, &c, 4, 16, &s, &err) == SDXL_STATUS_UNSUPPORTED);
    c.use_karras_sigmas = false;
    /* stochastic kinds need an rng */
    REQUIRE_OK(sdxl_sampler_create(SDXL_SAMPLER_DPMPP_2M_SDE, &c, 4, 16, &s, &err), &err);
    float x[16] = {0}, e[16] = {0};
    CHECK(sdxl_sampler_step(s, 0, e, x, 16, NULL, &err) == SDXL_STATUS_INVALID_ARG);
    sdxl_sampler_free(s);
    /* Heun: 2·steps-1 calls, order 2; a single step is one call */
    REQUIRE_OK(sdxl_sampler_create(SDXL_SAMPLER_HEUN, &c, 1, 16, &s, &err), &err);
    CHECK_EQ_INT(sdxl_sampler_steps(s), 1);
    CHECK_EQ_INT(sdxl_sampler_order(s), 2);
    REQUIRE_OK(sdxl_sampler_step(s, 0, e, x, 16, NULL, &err), &err);
    sdxl_sampler_free(s);
    REQUIRE_OK(sdxl_sampler_create(SDXL_SAMPLER_HEUN, &c, 30, 0, &s, &err), &err);
    CHECK_EQ_INT(sdxl_sampler_steps(s), 59);
    CHECK_EQ_INT(sdxl_sampler_inference_steps(s), 30);
    CHECK_NEAR(sdxl_sampler_sigmas(s)[59], 0.0, 0);
    sdxl_sampler_free(s);
}
