/* `sdxl generate` end to end on the demo model against diffusers' images
 * (demo/reference: StableDiffusionXLPipeline, 20 Euler steps, guidance 6,
 * no negative, 64x64, torch CPU generator). The pipeline is deterministic
 * f32 on both sides; the only expected differences are 8-bit rounding of
 * values that sit on a .5 boundary after ~1e-6 float differences, so the
 * bound is max 2 levels and mean 0.02 levels per channel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/alloc.h"
#include "image/png.h"
#include "io/safetensors.h"
#include "test.h"

#ifndef SDXL_BINARY_DIR
#define SDXL_BINARY_DIR "build"
#endif
#ifndef SDXL_SOURCE_DIR
#define SDXL_SOURCE_DIR "."
#endif

static const struct {
    const char *name, *prompt;
    int seed;
} CASES[] = {
    {"base_red_circle", "a red circle on a blue background", 2},
    {"base_blue_star", "a blue star on a yellow background", 2},
    {"base_orange_circle", "an orange circle on a green background", 3},
    {"base_green_triangle", "a green triangle on a white background", 1},
};

TEST(generate_demo_matches_diffusers_images) {
    static char out[65536];
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        char args[2048], png[512], ref[512];
        snprintf(png, sizeof png, "%s/%s.png", sdxl_test_tmpdir(), CASES[c].name);
        snprintf(ref, sizeof ref, "%s/demo/reference/%s.png", SDXL_SOURCE_DIR, CASES[c].name);
        snprintf(args, sizeof args,
                 "generate --model %s/demo/model --prompt '%s' --seed %d --steps 20 --cfg 6 --width 64 --height 64 "
                 "-q -o %s",
                 SDXL_SOURCE_DIR, CASES[c].prompt, CASES[c].seed, png);
        int rc = sdxl_test_run_cli(args, out, sizeof out);
        CHECK_MSG(rc == 0, "%s: exit %d: %s", CASES[c].name, rc, out);
        if (rc) continue;
        sdxl_error err = {0};
        uint8_t *a = NULL, *b = NULL;
        int w, h, w2, h2;
        if (sdxl_png_read(png, &a, &w, &h, &err) || sdxl_png_read(ref, &b, &w2, &h2, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "%s", err.msg);
            sdxl_free(a);
            continue;
        }
        CHECK(w == 64 && h == 64 && w2 == 64 && h2 == 64);
        int mx = 0;
        long sum = 0;
        for (int i = 0; i < 64 * 64 * 3; i++) {
            int d = abs((int)a[i] - (int)b[i]);
            mx = d > mx ? d : mx;
            sum += d;
        }
        CHECK_MSG(mx <= 2 && sum <= 0.02 * 64 * 64 * 3, "%s: max diff %d, mean %.4f", CASES[c].name, mx,
                  (double)sum / (64 * 64 * 3));
        sdxl_free(a);
        sdxl_free(b);
        if (c == 0) { /* A1111 infotext */
            char *p = NULL;
            REQUIRE_OK(sdxl_png_read_text(png, "parameters", &p, &err), &err);
            CHECK(strstr(p, "a red circle on a blue background\nSteps: 20, Sampler: Euler, CFG scale: 6, Seed: 2, "
                            "Size: 64x64") != NULL);
            sdxl_free(p);
        }
    }
}

TEST(generate_rejects_bad_arguments_and_writes_nothing) {
    static char out[65536];
    char args[2048], png[512];
    snprintf(png, sizeof png, "%s/never.png", sdxl_test_tmpdir());
    const char *bad[] = {"--width 65", "--steps 0", "--sampler nosuch", "--batch 0", "--cfg nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "generate --model %s/demo/model --prompt x %s -q -o %s", SDXL_SOURCE_DIR, bad[i],
                 png);
        int rc = sdxl_test_run_cli(args, out, sizeof out);
        CHECK_MSG(rc == 1 || rc == 2, "%s: exit %d", bad[i], rc);
        CHECK_MSG(strstr(out, "generate:") != NULL, "%s: no message", bad[i]);
        FILE *f = fopen(png, "rb");
        CHECK_MSG(f == NULL, "%s: wrote a file", bad[i]);
        if (f) fclose(f);
    }
    /* an unknown sampler lists the valid names */
    snprintf(args, sizeof args, "generate --model %s/demo/model --prompt x --sampler nosuch -o %s", SDXL_SOURCE_DIR, png);
    sdxl_test_run_cli(args, out, sizeof out);
    CHECK(strstr(out, "euler") != NULL || strstr(out, "Euler") != NULL);
}

/* --batch 2 gives two different images from one [2,...] draw; --n-iter rounds advance the seed by B;
 * --save-latents writes the final [B,4,h,w] latents. */
TEST(generate_batch_seeds_and_latents_files) {
    static char out[65536];
    char args[4096], png[512];
    snprintf(png, sizeof png, "%s/b.png", sdxl_test_tmpdir());
    snprintf(args, sizeof args,
             "generate --model %s/demo/model --prompt 'a blue star on a yellow background' --seed 5 --steps 4 "
             "--batch 2 --n-iter 2 -q -o %s",
             SDXL_SOURCE_DIR, png);
    REQUIRE(sdxl_test_run_cli(args, out, sizeof out) == 0);
    char p[4][512];
    for (int i = 0; i < 4; i++) snprintf(p[i], sizeof p[i], "%s/b-%d.png", sdxl_test_tmpdir(), i);
    CHECK(strstr(out, "seed 5") && strstr(out, "seed 7")); /* round 2 starts at seed + B */
    sdxl_error err = {0};
    uint8_t *img[4] = {0};
    int w, h;
    for (int i = 0; i < 4; i++) CHECK(sdxl_png_read(p[i], &img[i], &w, &h, &err) == SDXL_STATUS_OK);
    if (img[0] && img[1]) CHECK(memcmp(img[0], img[1], 64 * 64 * 3) != 0);
    for (int i = 0; i < 4; i++) sdxl_free(img[i]);
    char lat[512];
    snprintf(lat, sizeof lat, "%s/lat.safetensors", sdxl_test_tmpdir());
    snprintf(args, sizeof args,
             "generate --model %s/demo/model --prompt 'a blue star' --seed 5 --steps 2 --batch 2 -q -o %s "
             "--save-latents %s",
             SDXL_SOURCE_DIR, png, lat);
    REQUIRE(sdxl_test_run_cli(args, out, sizeof out) == 0);
    sdxl_st_file *f = NULL;
    REQUIRE_OK(sdxl_st_open(lat, &f, &err), &err);
    const sdxl_st_tensor *t = sdxl_st_find(f, "latents");
    CHECK(t && t->ndim == 4 && t->shape[0] == 2 && t->shape[1] == 4 && t->shape[2] == 16 && t->shape[3] == 16);
    CHECK(sdxl_st_metadata(f, "seed") && !strcmp(sdxl_st_metadata(f, "seed"), "5"));
    sdxl_st_close(f);
}
