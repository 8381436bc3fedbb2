#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "image/png.h"
#include "test.h"

TEST(png_roundtrip_pixels_and_parameters) {
    enum { W = 37, H = 21 };
    uint8_t img[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) img[i] = (uint8_t)(i * 7 + i / 3);
    char path[512];
    snprintf(path, sizeof path, "%s/a.png", sdxl_test_tmpdir());
    const char *params = "a red circle, h\xc3\xa9llo\nSteps: 20, Sampler: Euler, CFG scale: 6, Seed: 42, Size: 37x21";
    const char *text[] = {"parameters", params, NULL};
    sdxl_error err = {0};
    REQUIRE_OK(sdxl_png_write(path, img, W, H, text, &err), &err);
    uint8_t *back = NULL;
    int w = 0, h = 0;
    REQUIRE_OK(sdxl_png_read(path, &back, &w, &h, &err), &err);
    CHECK(w == W && h == H);
    CHECK(memcmp(back, img, sizeof img) == 0);
    sdxl_free(back);
    char *v = NULL;
    REQUIRE_OK(sdxl_png_read_text(path, "parameters", &v, &err), &err);
    CHECK(strcmp(v, params) == 0);
    sdxl_free(v);
    CHECK(sdxl_png_read_text(path, "nope", &v, &err) == SDXL_STATUS_NOT_FOUND);
}

TEST(png_bad_files_and_paths) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.png", sdxl_test_tmpdir());
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fputs("\x89PNG\r\n\x1a\nthis is not a png body", f);
    fclose(f);
    sdxl_error err = {0};
    uint8_t *px = NULL;
    int w, h;
    CHECK(sdxl_png_read(path, &px, &w, &h, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(px == NULL && strstr(err.msg, "bad.png"));
    /* truncated real PNG */
    uint8_t img[8 * 8 * 3] = {0};
    snprintf(path, sizeof path, "%s/t.png", sdxl_test_tmpdir());
    REQUIRE_OK(sdxl_png_write(path, img, 8, 8, NULL, &err), &err);
    REQUIRE(truncate(path, 40) == 0);
    CHECK(sdxl_png_read(path, &px, &w, &h, &err) == SDXL_STATUS_BAD_INPUT);
    /* unwritable destination: error, and no partial file or .tmp left */
    snprintf(path, sizeof path, "%s/no/such/dir/x.png", sdxl_test_tmpdir());
    CHECK(sdxl_png_write(path, img, 8, 8, NULL, &err) == SDXL_STATUS_IO);
    CHECK(access(path, F_OK) != 0);
    CHECK(sdxl_png_write(path, img, 0, 8, NULL, &err) == SDXL_STATUS_INVALID_ARG);
}
