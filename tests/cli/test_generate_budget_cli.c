/* `sdxl generate` with --memory-budget (a batch split into 1-row UNet passes
 * gives the same pixels as the unsplit run, and says so on stderr) and the
 * A1111 `Model hash` (AutoV2: first 10 hex digits of the file's SHA-256) for
 * a single-file model, none for a diffusers folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "image/png.h"
#include "io/sha256.h"
#include "model/model.h"
#include "model/unet.h"
#include "test.h"

#ifndef SDXL_SOURCE_DIR
#define SDXL_SOURCE_DIR "."
#endif

static char *file_sha256_hex(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    sdxl_sha256 h;
    sdxl_sha256_init(&h);
    static unsigned char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) sdxl_sha256_update(&h, buf, k);
    fclose(f);
    uint8_t d[32];
    sdxl_sha256_final(&h, d);
    sdxl_sha256_hex(d, hex);
    return hex;
}

TEST(generate_memory_budget_split_and_model_hash) {
    static char out[65536];
    char model[1024], args[4096], png_a[1024], png_b[1024];
    snprintf(model, sizeof model, "%s/budget_tiny.safetensors", sdxl_test_tmpdir());
    remove(model);
    snprintf(args, sizeof args, "make-model --config tiny --layout single -o %s", model);
    int rc = sdxl_test_run_cli(args, out, sizeof out);
    CHECK_MSG(rc == 0, "make-model: exit %d: %s", rc, out);
    if (rc) return;

    /* a budget of exactly one row's UNet arena at 256x256 (latent 32x32, 77 tokens) */
    sdxl_error err = {0};
    sdxl_model *m = NULL;
    size_t one = 0;
    REQUIRE_OK(sdxl_model_load(model, NULL, &m, &err), &err);
    const sdxl_model_config *mc = sdxl_weights_config(m->weights);
    int lat = 256 >> (mc->vae.num_levels - 1);
    sdxl_unet_shape shape = {.batch = 1, .height = lat, .width = lat, .context_tokens = 77};
    sdxl_status st = sdxl_unet_arena_bytes(&mc->unet, &shape, &one, &err);
    sdxl_model_free(m);
    REQUIRE_OK(st, &err);

    const char *common = "--prompt 'a red circle' --negative 'blurry' --steps 2 --batch 2 --seed 5 "
                         "--width 256 --height 256 --sampler euler_a";
    snprintf(png_a, sizeof png_a, "%s/budget_a.png", sdxl_test_tmpdir());
    snprintf(png_b, sizeof png_b, "%s/budget_b.png", sdxl_test_tmpdir());
    snprintf(args, sizeof args, "generate --model %s %s --memory-budget 0 -o %s", model, common, png_a);
    rc = sdxl_test_run_cli(args, out, sizeof out);
    CHECK_MSG(rc == 0, "unsplit: exit %d: %s", rc, out);
    CHECK_MSG(!strstr(out, "rows per pass"), "unsplit run reports a split: %s", out);
    snprintf(args, sizeof args, "generate --model %s %s --memory-budget %.6f -o %s", model, common,
             (double)one / 1048576.0 + 1e-6, png_b);
    rc = sdxl_test_run_cli(args, out, sizeof out);
    CHECK_MSG(rc == 0, "split: exit %d: %s", rc, out);
    CHECK_MSG(strstr(out, "running 1 rows per pass") != NULL, "no split reported: %s", out);
    for (int i = 0; i < 2; i++) {
        char a[1100], b[1100];
        snprintf(a, sizeof a, "%s/budget_a-%d.png", sdxl_test_tmpdir(), i);
        snprintf(b, sizeof b, "%s/budget_b-%d.png", sdxl_test_tmpdir(), i);
        uint8_t *ra = NULL, *rb = NULL;
        int wa, ha, wb, hb;
        if (sdxl_png_read(a, &ra, &wa, &ha, &err) || sdxl_png_read(b, &rb, &wb, &hb, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "%s", err.msg);
            sdxl_free(ra);
            continue;
        }
        CHECK(wa == 256 && ha == 256 && wb == 256 && hb == 256);
        CHECK_MSG(!memcmp(ra, rb, (size_t)256 * 256 * 3), "image %d: split run differs from unsplit", i);
        sdxl_free(ra);
        sdxl_free(rb);
    }
    /* below one row: a clear error */
    snprintf(args, sizeof args, "generate --model %s %s --memory-budget %.6f -o %s", model, common,
             (double)one / 1048576.0 * 0.5, png_b);
    rc = sdxl_test_run_cli(args, out, sizeof out);
    CHECK_MSG(rc != 0 && strstr(out, "memory budget"), "exit %d: %s", rc, out);

    /* Model hash: the file's sha256, first 10 hex digits */
    char hex[65], a0[1100], expect[64];
    snprintf(a0, sizeof a0, "%s/budget_a-0.png", sdxl_test_tmpdir());
    char *text = NULL;
    if (file_sha256_hex(model, hex) && !sdxl_png_read_text(a0, "parameters", &text, &err)) {
        snprintf(expect, sizeof expect, "Model hash: %.10s, Model: budget_tiny.safetensors", hex);
        CHECK_MSG(strstr(text, expect) != NULL, "infotext '%s' lacks '%s'", text, expect);
    } else {
        sdxl_test_fail(__FILE__, __LINE__, "hash / infotext: %s", err.msg);
    }
    sdxl_free(text);
    text = NULL;

    /* a diffusers folder has no one file to hash: no Model hash */
    snprintf(args, sizeof args,
             "generate --model %s/demo/model --prompt 'a red circle' --steps 1 --seed 1 --width 64 --height 64 -q "
             "-o %s",
             SDXL_SOURCE_DIR, png_a);
    rc = sdxl_test_run_cli(args, out, sizeof out);
    CHECK_MSG(rc == 0, "demo: exit %d: %s", rc, out);
    if (!rc && !sdxl_png_read_text(png_a, "parameters", &text, &err)) {
        CHECK_MSG(!strstr(text, "Model hash:") && strstr(text, "Model: model"), "infotext: %s", text);
    }
    sdxl_free(text);
    remove(model);
}
