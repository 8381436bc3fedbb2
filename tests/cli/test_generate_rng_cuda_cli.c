/* `sdxl generate --rng cuda` on the demo model: torch's CUDA-generator noise
 * (sample/rng_philox.h), image i of a batch drawn on its own with seed + i as
 * A1111 does, so it equals a --batch 1 run with that seed; the PNG says
 * "RNG: NV" and that image's seed; the images differ from --rng cpu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "image/png.h"
#include "test.h"

#ifndef SDXL_SOURCE_DIR
#define SDXL_SOURCE_DIR "."
#endif

static int gen(const char *extra, const char *png, char *out, size_t cap) {
    char args[2048];
    snprintf(args, sizeof args,
             "generate --model %s/demo/model --prompt 'a red circle on a blue background' --steps 4 --cfg 6 "
             "--width 64 --height 64 -q %s -o %s",
             SDXL_SOURCE_DIR, extra, png);
    return sdxl_test_run_cli(args, out, cap);
}

static int maxdiff(const char *pa, const char *pb, int *mx) {
    sdxl_error err = {0};
    uint8_t *a = NULL, *b = NULL;
    int w, h, w2, h2;
    if (sdxl_png_read(pa, &a, &w, &h, &err) || sdxl_png_read(pb, &b, &w2, &h2, &err) || w != w2 || h != h2) {
        sdxl_free(a);
        sdxl_free(b);
        return -1;
    }
    *mx = 0;
    for (int i = 0; i < w * h * 3; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        *mx = d > *mx ? d : *mx;
    }
    sdxl_free(a);
    sdxl_free(b);
    return 0;
}

TEST(generate_rng_cuda_batch_is_seed_plus_i) {
    static char out[65536];
    char pat[512], b0[512], b1[512], s6[512], c5[512];
    const char *tmp = sdxl_test_tmpdir();
    snprintf(pat, sizeof pat, "%s/nv-b-%%d.png", tmp);
    snprintf(b0, sizeof b0, "%s/nv-b-0.png", tmp);
    snprintf(b1, sizeof b1, "%s/nv-b-1.png", tmp);
    snprintf(s6, sizeof s6, "%s/nv-s6.png", tmp);
    snprintf(c5, sizeof c5, "%s/cpu-s5.png", tmp);
    int rc = gen("--rng cuda --seed 5 --batch 2", pat, out, sizeof out);
    CHECK_MSG(rc == 0, "batch: exit %d: %s", rc, out);
    if (rc) return;
    rc = gen("--rng cuda --seed 6", s6, out, sizeof out);
    CHECK_MSG(rc == 0, "seed 6: exit %d: %s", rc, out);
    if (rc) return;
    rc = gen("--rng cpu --seed 5", c5, out, sizeof out);
    CHECK_MSG(rc == 0, "cpu: exit %d: %s", rc, out);
    if (rc) return;
    int mx = -1;
    REQUIRE(maxdiff(b1, s6, &mx) == 0);
    CHECK_MSG(mx == 0, "batch image 1 vs --seed 6: max diff %d", mx);
    REQUIRE(maxdiff(b0, c5, &mx) == 0);
    CHECK_MSG(mx > 16, "--rng cuda vs cpu, seed 5: max diff only %d", mx);
    REQUIRE(maxdiff(b0, b1, &mx) == 0);
    CHECK_MSG(mx > 16, "batch images 0 and 1: max diff only %d", mx);
    sdxl_error err = {0};
    char *p = NULL;
    REQUIRE_OK(sdxl_png_read_text(b1, "parameters", &p, &err), &err);
    CHECK_MSG(strstr(p, "Seed: 6,") && strstr(p, "RNG: NV") && !strstr(p, "Batch pos"), "%s", p);
    sdxl_free(p);
    REQUIRE_OK(sdxl_png_read_text(c5, "parameters", &p, &err), &err);
    CHECK_MSG(strstr(p, "RNG: CPU") != NULL, "%s", p);
    sdxl_free(p);
}

TEST(generate_rng_rejects_unknown) {
    static char out[65536];
    char png[512];
    snprintf(png, sizeof png, "%s/never-rng.png", sdxl_test_tmpdir());
    int rc = gen("--rng tpu --seed 1", png, out, sizeof out);
    CHECK(rc == 2);
    CHECK(strstr(out, "--rng") != NULL);
}

/* With a stochastic sampler the per-step noise also comes from each image's own CUDA-generator
 * stream (A1111's ImageRNG), so image 1 of a seed-5 batch still equals the seed-6 single run; with
 * the samplers drawing from one shared generator it would not. */
TEST(generate_rng_cuda_ancestral_noise_per_image) {
    static char out[65536];
    char pat[512], b1[512], s6[512];
    const char *tmp = sdxl_test_tmpdir();
    snprintf(pat, sizeof pat, "%s/nva-b-%%d.png", tmp);
    snprintf(b1, sizeof b1, "%s/nva-b-1.png", tmp);
    snprintf(s6, sizeof s6, "%s/nva-s6.png", tmp);
    int rc = gen("--rng cuda --sampler euler_a --seed 5 --batch 2", pat, out, sizeof out);
    CHECK_MSG(rc == 0, "batch: exit %d: %s", rc, out);
    if (rc) return;
    rc = gen("--rng cuda --sampler euler_a --seed 6", s6, out, sizeof out);
    CHECK_MSG(rc == 0, "seed 6: exit %d: %s", rc, out);
    if (rc) return;
    int mx = -1;
    REQUIRE(maxdiff(b1, s6, &mx) == 0);
    CHECK_MSG(mx == 0, "euler_a batch image 1 vs --seed 6: max diff %d", mx);
}
