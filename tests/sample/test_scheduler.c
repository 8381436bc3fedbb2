/* Schedules against diffusers 0.27.2 (tests/data/refs/tiny-sdxl-ref/pipeline_*.safetensors
 * sched.* tensors and their scheduler_config metadata; variants v3 = trailing). */
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "sample/scheduler.h"
#include "test.h"

static void check_sched(const char *file, sdxl_sampler_kind kind) {
    sdxl_error err = {0};
    sdxl_st_file *f = NULL;
    REQUIRE_OK(sdxl_st_open(sdxl_test_data(file), &f, &err), &err);
    const char *js = sdxl_st_metadata(f, "scheduler_config");
    sdxl_sched_config cfg;
    if (!js) { /* variants: the pipeline's own scheduler config */
        sdxl_sched_config_default(&cfg);
        const char *sp = sdxl_st_metadata(f, "timestep_spacing");
        if (sp && strcmp(sp, "trailing") == 0) cfg.timestep_spacing = SDXL_SPACING_TRAILING;
    } else if (sdxl_sched_config_parse(js, strlen(js), &cfg, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", file, err.msg);
        sdxl_st_close(f);
        return;
    }
    const sdxl_st_tensor *ts = sdxl_st_find(f, "sched.timesteps");
    const sdxl_st_tensor *sg = sdxl_st_find(f, "sched.sigmas");
    const sdxl_st_tensor *ins = sdxl_st_find(f, "sched.init_noise_sigma");
    const sdxl_st_tensor *ac = sdxl_st_find(f, "sched.alphas_cumprod");
    if (!ts || !ins) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: sched.* missing", file);
        sdxl_st_close(f);
        return;
    }
    int steps = (int)ts->shape[0];
    sdxl_sampler *s = NULL;
    if (sdxl_sampler_create(kind, &cfg, steps, 16, &s, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", file, err.msg);
        sdxl_st_close(f);
        return;
    }
    const float *rt = ts->data;
    for (int i = 0; i < steps; i++) CHECK_MSG(fabs(sdxl_sampler_timestep(s, i) - rt[i]) < 1e-3,
                                              "%s t[%d] %g vs %g", file, i, sdxl_sampler_timestep(s, i), rt[i]);
    if (sg && sg->shape[0] == steps + 1) {
        const double *sig = sdxl_sampler_sigmas(s);
        const float *rs = sg->data;
        REQUIRE(sig);
        for (int i = 0; i <= steps; i++)
            CHECK_MSG(fabs(sig[i] - rs[i]) <= 1e-5 * fabs(rs[i]) + 1e-7, "%s sigma[%d] %.9g vs %.9g", file, i, sig[i], rs[i]);
    }
    CHECK_NEAR(sdxl_sampler_init_noise_sigma(s), *(const float *)ins->data, 1e-5);
    if (ac) {
        const float *ra = ac->data;
        const float *ga = sdxl_sampler_alphas_cumprod(s);
        double md = 0;
        for (int i = 0; i < 1000; i++) md = fmax(md, fabs((double)ga[i] - ra[i]) / ra[i]);
        CHECK_MSG(md < 1e-6, "%s alphas_cumprod rel diff %g", file, md);
    }
    sdxl_sampler_free(s);
    sdxl_st_close(f);
}

TEST(sched_euler_leading) { check_sched("refs/tiny-sdxl-ref/pipeline_euler.safetensors", SDXL_SAMPLER_EULER); }
TEST(sched_dpmpp2m_karras) {
    check_sched("refs/tiny-sdxl-ref/pipeline_dpmpp2m_karras.safetensors", SDXL_SAMPLER_DPMPP_2M);
}
TEST(sched_ddim) { check_sched("refs/tiny-sdxl-ref/pipeline_ddim.safetensors", SDXL_SAMPLER_DDIM); }

/* Values computed by hand from diffusers 0.27.2's set_timesteps formulas. */
TEST(sched_spacings) {
    sdxl_error err = {0};
    sdxl_sched_config c;
    sdxl_sched_config_default(&c);
    sdxl_sampler *s = NULL;
    c.timestep_spacing = SDXL_SPACING_TRAILING;
    REQUIRE_OK(sdxl_sampler_create(SDXL_SAMPLER_EULER, &c, 4, 0, &s, &err), &err);
    const double tr[4] = {999, 749, 499, 249};
    for (int i = 0; i < 4; i++) CHECK_NEAR(sdxl_sampler_timestep(s, i), tr[i], 0);
    CHECK_NEAR(sdxl_sampler_init_noise_sigma(s), sdxl_sampler_sigmas(s)[0], 0); /* σmax for trailing */
    sdxl_sampler_free(s);
    c.timestep_spacing = SDXL_SPACING_LEADING;
    REQUIRE_OK(sdxl_sampler_create(SDXL_SAMPLER_DPMPP_2M, &c, 4, 0, &s, &err), &err);
    const double dl[4] = {801, 601, 401, 201}; /* 1000 // 5 = 200 */
    for (int i = 0; i < 4; i++) CHECK_NEAR(sdxl_sampler_timestep(s, i), dl[i], 0);
    sdxl_sampler_free(s);
    c.timestep_spacing = SDXL_SPACING_LINSPACE;
    REQUIRE_OK(sdxl_sampler_create(SDXL_SAMPLER_DDIM, &c, 4, 0, &s, &err), &err);
    const double ll[4] = {999, 666, 333, 0};
    for (int i = 0; i < 4; i++) CHECK_NEAR(sdxl_sampler_timestep(s, i), ll[i], 0);
    sdxl_sampler_free(s);
}

TEST(sched_names) {
    sdxl_error err = {0};
    sdxl_sampler_kind k;
    bool karras = true;
    REQUIRE_OK(sdxl_sampler_parse_name("eulerdiscretescheduler", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_EULER && !karras);
    REQUIRE_OK(sdxl_sampler_parse_name("EULER", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_EULER);
    REQUIRE_OK(sdxl_sampler_parse_name("dpm++ 2m karras", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_DPMPP_2M && karras);
    REQUIRE_OK(sdxl_sampler_parse_name("dpmpp_2m", &k, &karras, &err), &err);
    CHECK(k == SDXL_SAMPLER_DPMPP_2M && !karras);
    REQUIRE_OK(sdxl_sampler_parse_name("Euler a", &k, NULL, &err), &err);
    CHECK(k == SDXL_SAMPLER_EULER_A);
    REQUIRE_OK(sdxl_sampler_parse_name("ddim", &k, NULL, &err), &err);
    CHECK(k == SDXL_SAMPLER_DDIM);
    CHECK(sdxl_sampler_parse_name("heun2", &k, NULL, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "DPM++ 2M Karras") != NULL);
}

TEST(sched_config_parse) {
    sdxl_error err = {0};
    sdxl_sched_config c;
    const char *j = "{\"beta_schedule\":\"linear\",\"timestep_spacing\":\"trailing\",\"prediction_type\":"
                    "\"v_prediction\",\"steps_offset\":0,\"use_karras_sigmas\":true,\"trained_betas\":null}";
    REQUIRE_OK(sdxl_sched_config_parse(j, strlen(j), &c, &err), &err);
    CHECK(c.beta_schedule == SDXL_BETA_LINEAR && c.timestep_spacing == SDXL_SPACING_TRAILING);
    CHECK(c.prediction_type == SDXL_PREDICT_V && c.steps_offset == 0 && c.use_karras_sigmas);
    j = "{\"beta_schedule\":\"cosine\"}";
    CHECK(sdxl_sched_config_parse(j, strlen(j), &c, &err) == SDXL_STATUS_BAD_INPUT);
    j = "{\"prediction_type\":\"sample\"}";
    CHECK(sdxl_sched_config_parse(j, strlen(j), &c, &err) == SDXL_STATUS_UNSUPPORTED);
    j = "{\"steps_offset\":\"1\"}";
    CHECK(sdxl_sched_config_parse(j, strlen(j), &c, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(sdxl_sched_config_parse("{", 1, &c, &err) == SDXL_STATUS_BAD_INPUT);
    sdxl_sched_config_default(&c);
    c.use_karras_sigmas = true;
    sdxl_sampler *s = NULL;
    CHECK(sdxl_sampler_create(SDXL_SAMPLER_DDIM, &c, 4, 0, &s, &err) == SDXL_STATUS_UNSUPPORTED);
}
