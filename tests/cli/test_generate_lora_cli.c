/* `sdxl generate --lora` end to end on the demo model against diffusers'
 * images with the demo LoRAs (demo/reference, made with
 * load_lora_weights + set_adapters; same settings as the base cases). Same
 * bound as test_generate_cli.c: max 2 levels, mean 0.02 levels per channel
 * (8-bit rounding of values ~1e-6 apart). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "image/png.h"
#include "io/safetensors.h"
#include "test.h"

#define DEMO SDXL_SOURCE_DIR "/demo"

static const struct {
    const char *name, *prompt, *loras;
    int seed;
} CASES[] = {
    {"outline_1.0_red_circle", "a red circle on a blue background", "--lora " DEMO "/loras/styles/outline_style.safetensors", 2},
    {"outline_0.5_red_circle", "a red circle on a blue background",
     "--lora " DEMO "/loras/styles/outline_style.safetensors:0.5", 2},
    /* the .pt twin of the night adapter */
    {"night_1.0_red_circle", "a red circle on a blue background", "--lora " DEMO "/loras/lighting/night_lighting.pt:1", 2},
    {"smiley_1.0_orange_circle", "an orange circle on a green background",
     "--lora " DEMO "/loras/characters/smiley_face.safetensors:1.0", 3},
    {"smiley_1.5_white_square", "a white square on a blue background",
     "--lora " DEMO "/loras/characters/smiley_face.safetensors:1.5", 1},
    /* 0.75 x global 2 = 1.5 */
    {"smiley_1.5_red_circle", "a red circle on a blue background",
     "--lora " DEMO "/loras/characters/smiley_face.safetensors:0.75 --global-weight 2", 2},
    {"outline_1.0+night_1.0_red_circle", "a red circle on a blue background",
     "--lora " DEMO "/loras/styles/outline_style.safetensors --lora " DEMO "/loras/lighting/night_lighting.safetensors",
     2},
};

/* max and mean |a-b| over two 64x64 PNGs; false if unreadable */
static bool png_diff(const char *a_path, const char *b_path, int *mx, double *mean) {
    sdxl_error err = {0};
    uint8_t *a = NULL, *b = NULL;
    int w, h, w2, h2;
    if (sdxl_png_read(a_path, &a, &w, &h, &err) || sdxl_png_read(b_path, &b, &w2, &h2, &err) || w != w2 || h != h2) {
        sdxl_test_fail(__FILE__, __LINE__, "%s / %s: %s", a_path, b_path, err.msg);
        sdxl_free(a);
        sdxl_free(b);
        return false;
    }
    long sum = 0;
    *mx = 0;
    for (int i = 0; i < w * h * 3; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        *mx = d > *mx ? d : *mx;
        sum += d;
    }
    *mean = (double)sum / (w * h * 3);
    sdxl_free(a);
    sdxl_free(b);
    return true;
}

TEST(generate_lora_demo_matches_diffusers_images) {
    static char out[65536];
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        char args[4096], png[512], ref[512];
        snprintf(png, sizeof png, "%s/%s.png", sdxl_test_tmpdir(), CASES[c].name);
        snprintf(ref, sizeof ref, DEMO "/reference/%s.png", CASES[c].name);
        snprintf(args, sizeof args,
                 "generate --model " DEMO "/model --prompt '%s' --seed %d --steps 20 --cfg 6 --width 64 --height 64 "
                 "%s -q -o %s",
                 CASES[c].prompt, CASES[c].seed, CASES[c].loras, png);
        int rc = sdxl_test_run_cli(args, out, sizeof out);
        CHECK_MSG(rc == 0, "%s: exit %d: %s", CASES[c].name, rc, out);
        if (rc) continue;
        int mx;
        double mean;
        if (!png_diff(png, ref, &mx, &mean)) continue;
        CHECK_MSG(mx <= 2 && mean <= 0.02, "%s: max diff %d, mean %.4f", CASES[c].name, mx, mean);
        printf("    %-34s max %d, mean %.4f levels\n", CASES[c].name, mx, mean);
    }
}

/* A missing file, a file of the wrong kind and one that matches no module
 * do not stop the request: each is reported, the good adapter applies, and
 * the image is the good adapter's alone. */
TEST(generate_lora_bad_adapters_never_block) {
    char junk[512], nomatch[512], png[512];
    snprintf(junk, sizeof junk, "%s/junk.safetensors", sdxl_test_tmpdir());
    snprintf(nomatch, sizeof nomatch, "%s/nomatch.safetensors", sdxl_test_tmpdir());
    snprintf(png, sizeof png, "%s/partial.png", sdxl_test_tmpdir());
    FILE *f = fopen(junk, "wb");
    REQUIRE(f != NULL);
    fputs("not a tensor file", f);
    fclose(f);
    sdxl_error err = {0};
    float v[4] = {1, 2, 3, 4};
    int64_t shape[2] = {2, 2};
    sdxl_st_write_entry e[2] = {{"lora_unet_nothing_here.lora_down.weight", SDXL_ST_F32, 2, shape, v},
                                {"lora_unet_nothing_here.lora_up.weight", SDXL_ST_F32, 2, shape, v}};
    REQUIRE_OK(sdxl_st_write(nomatch, e, 2, NULL, &err), &err);
    char missing[] = "/nonexistent/missing.safetensors:0.7";
    const char *argv[] = {"generate", "--model", DEMO "/model", "--prompt", "a red circle on a blue background",
                          "--seed", "2", "--steps", "20", "--cfg", "6", "--width", "64", "--height", "64",
                          "--lora", missing, "--lora", junk, "--lora", nomatch,
                          "--lora", DEMO "/loras/styles/outline_style.safetensors:1.0", "-q", "-o", png, NULL};
    const char *const *fixed = argv;
    char *out = NULL, *errs = NULL;
    int rc = sdxl_test_exec(fixed, &out, &errs);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, errs ? errs : "");
    if (errs) {
        CHECK(strstr(errs, "missing.safetensors: not_found: ") != NULL);
        CHECK(strstr(errs, "junk.safetensors: invalid_file: ") != NULL);
        CHECK(strstr(errs, "nomatch.safetensors: no_matching_keys: ") != NULL);
        CHECK(strstr(errs, "outline_style.safetensors: applied, unet 1 te 1") != NULL);
        CHECK(strstr(errs, "1 of 4 applied") != NULL);
    }
    free(out);
    free(errs);
    int mx;
    double mean;
    if (rc == 0 && png_diff(png, DEMO "/reference/outline_1.0_red_circle.png", &mx, &mean))
        CHECK_MSG(mx <= 2 && mean <= 0.02, "partial failure: max diff %d, mean %.4f", mx, mean);
}

/* The seed's request verbatim (its adapter names, in a tree named as the
 * seed's config lists it) through `generate --request --config`: the result
 * JSON on stdout, images in output_dir, every status reported. */
TEST(generate_request_seed_verbatim_end_to_end) {
    char root[1024], cfgp[1200], reqp[1200], outd[1200];
    snprintf(root, sizeof root, "%s/seed-tree", sdxl_test_tmpdir());
    snprintf(cfgp, sizeof cfgp, "%s/worker.json", root);
    snprintf(reqp, sizeof reqp, "%s/request.json", root);
    snprintf(outd, sizeof outd, "%s/out", root);
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/models/lora/styles %s/models/lora/characters %s/models/lora/lighting && "
             "cp " DEMO "/loras/styles/outline_style.safetensors %s/models/lora/styles/anime_style_v2.safetensors && "
             "cp " DEMO "/loras/characters/smiley_face.safetensors %s/models/lora/characters/girl_character_lora.safetensors && "
             "cp " DEMO "/loras/lighting/night_lighting.pt %s/models/lora/lighting/simple_lora_name.pt",
             root, root, root, root, root, root);
    REQUIRE(system(cmd) == 0);
    FILE *f = fopen(cfgp, "w");
    REQUIRE(f != NULL);
    fputs("{\"lora_config\": {\"lora_directories\": [\"models/lora/styles\", \"models/lora/characters\", "
          "\"models/lora/lighting\"], \"memory_limit_mb\": 2048, \"enable_caching\": true, \"cache_size\": 8, "
          "\"enable_memory_monitoring\": true}}",
          f);
    fclose(f);
    f = fopen(reqp, "w");
    REQUIRE(f != NULL);
    fprintf(f,
            "{\"request_id\": \"seed-1\", \"prompt\": \"A beautiful anime girl warrior in golden hour lighting\", "
            "\"width\": 64, \"height\": 64, \"steps\": 4, \"seed\": 5, \"output_dir\": \"%s\", "
            "\"lora\": {\"enabled\": true, \"global_weight\": 1.1, \"models\": ["
            "{\"name\": \"anime_style_v2\", \"weight\": 0.8, \"category\": \"style\"}, "
            "{\"name\": \"girl_character_lora\", \"weight\": 0.7, \"category\": \"character\"}, "
            "\"simple_lora_name\", \"missing_one\", \"../../etc/passwd\"]}}",
            outd);
    fclose(f);
    const char *argv[] = {"generate", "--model", DEMO "/model", "--config", cfgp, "--request", reqp, NULL};
    char *out = NULL, *errs = NULL;
    int rc = sdxl_test_exec(argv, &out, &errs);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, errs ? errs : "");
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    CHECK_MSG(j != NULL, "stdout is not JSON: %s", out ? out : "");
    if (j) {
        CHECK(!strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "ok"));
        CHECK(!strcmp(cJSON_GetObjectItem(j, "request_id")->valuestring, "seed-1"));
        const cJSON *imgs = cJSON_GetObjectItem(j, "images");
        CHECK_EQ_INT(cJSON_GetArraySize(imgs), 1);
        const cJSON *im = cJSON_GetArrayItem(imgs, 0);
        struct stat sb;
        CHECK(im && stat(cJSON_GetObjectItem(im, "path")->valuestring, &sb) == 0 && sb.st_size > 0);
        CHECK(cJSON_GetObjectItem(im, "seed")->valuedouble == 5);
        const cJSON *ads = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "lora"), "adapters");
        static const char *want[][2] = {{"anime_style_v2", "applied"},      {"girl_character_lora", "applied"},
                                        {"simple_lora_name", "applied"},    {"missing_one", "not_found"},
                                        {"../../etc/passwd", "invalid_name"}};
        CHECK_EQ_INT(cJSON_GetArraySize(ads), 5);
        for (int i = 0; i < 5 && i < cJSON_GetArraySize(ads); i++) {
            const cJSON *a = cJSON_GetArrayItem(ads, i);
            CHECK(!strcmp(cJSON_GetObjectItem(a, "name")->valuestring, want[i][0]));
            CHECK_MSG(!strcmp(cJSON_GetObjectItem(a, "status")->valuestring, want[i][1]), "%s: %s", want[i][0],
                      cJSON_GetObjectItem(a, "status")->valuestring);
        }
        const cJSON *tm = cJSON_GetObjectItem(j, "timings");
        CHECK(cJSON_GetObjectItem(tm, "denoise_ms")->valuedouble > 0 && cJSON_GetObjectItem(tm, "total_ms")->valuedouble > 0);
        const cJSON *mt = cJSON_GetObjectItem(j, "metrics");
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(mt, "cache"), "misses")->valuedouble == 3);
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(mt, "memory"), "rss_bytes")->valuedouble > 0);
        /* the PNG's parameters carry the Lora hashes */
        char *p = NULL;
        sdxl_error err = {0};
        if (im && !sdxl_png_read_text(cJSON_GetObjectItem(im, "path")->valuestring, "parameters", &p, &err)) {
            CHECK_MSG(strstr(p, "Lora hashes: \"anime_style_v2: 52cb1e252d57, girl_character_lora: ") != NULL, "%s", p);
            sdxl_free(p);
        }
        cJSON_Delete(j);
    }
    free(out);
    free(errs);
    /* a malformed request: an error JSON, exit 2, nothing written */
    f = fopen(reqp, "w");
    fputs("{\"prompt\": \"x\", \"steps\": \"many\"}", f);
    fclose(f);
    rc = sdxl_test_exec(argv, &out, &errs);
    CHECK_EQ_INT(rc, 2);
    CHECK(out && strstr(out, "\"status\":\"error\"") && strstr(out, "steps: expected a number"));
    free(out);
    free(errs);
}

TEST(lora_ls_lists_the_demo_loras) {
    char *out = NULL, *errs = NULL;
    const char *argv[] = {"lora", "ls", "--lora-dir", DEMO "/loras", NULL};
    int rc = sdxl_test_exec(argv, &out, &errs);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, errs ? errs : "");
    CHECK(out && strstr(out, "outline_style") && strstr(out, "style") && strstr(out, "52cb1e252d57") &&
          strstr(out, "smiley_face") && strstr(out, "4 adapter files"));
    free(out);
    free(errs);
    const char *argv2[] = {"lora", "ls", "--json", "--lora-dir", DEMO "/loras", NULL};
    rc = sdxl_test_exec(argv2, &out, &errs);
    CHECK_EQ_INT(rc, 0);
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    CHECK(j && cJSON_IsArray(j) && cJSON_GetArraySize(j) == 4);
    bool saw = false;
    for (int i = 0; j && i < cJSON_GetArraySize(j); i++) {
        const cJSON *o = cJSON_GetArrayItem(j, i);
        if (!strcmp(cJSON_GetObjectItem(o, "name")->valuestring, "outline_style"))
            saw = !strcmp(cJSON_GetObjectItem(o, "category")->valuestring, "style") &&
                  !strcmp(cJSON_GetObjectItem(o, "hash")->valuestring, "52cb1e252d57") &&
                  cJSON_GetObjectItem(o, "rank")->valuedouble == 8;
    }
    CHECK(saw);
    cJSON_Delete(j);
    free(out);
    free(errs);
    const char *argv3[] = {"lora", "ls", NULL};
    rc = sdxl_test_exec(argv3, &out, &errs);
    CHECK_EQ_INT(rc, 2);
    free(out);
    free(errs);
}
