#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "core/alloc.h"
#include "image/jpeg.h"
#include "image/testimg.h"
#include "test.h"

static uint8_t *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

/* The files of tests/data/images (made by tools/refs/make_image_refs.py)
 * against the RGB diffusers' load_image gives (PIL: exif_transpose, then
 * convert("RGB")): the same libjpeg-turbo decoding (islow IDCT, fancy
 * upsampling), PIL's CMYK → RGB, and every EXIF orientation (both TIFF byte
 * orders) turned upright the same way. */
TEST(jpeg_decode_matches_pil) {
    static const char *const names[] = {"rgb_444",  "rgb_420",  "progressive", "gray",     "cmyk",    "orient_2",
                                        "orient_3", "orient_4", "orient_5",    "orient_6", "orient_7", "orient_8"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "images/%s.jpg", names[i]);
        size_t len = 0, rlen = 0;
        uint8_t *jpg = read_whole(sdxl_test_data(rel), &len);
        snprintf(rel, sizeof rel, "images/%s.rgb", names[i]);
        uint8_t *ref = read_whole(sdxl_test_data(rel), &rlen);
        REQUIRE(jpg && ref);
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        sdxl_error err = {0};
        REQUIRE_OK(sdxl_jpeg_decode(jpg, len, 1 << 20, &rgb, &w, &h, &err), &err);
        bool swapped = !strncmp(names[i], "orient_", 7) && names[i][7] >= '5';
        CHECK_MSG(w == (swapped ? 16 : 24) && h == (swapped ? 24 : 16), "%s: %dx%d", names[i], w, h);
        CHECK(rlen == (size_t)w * h * 3);
        int maxd = 0;
        for (size_t k = 0; k < rlen && k < (size_t)w * h * 3; k++) {
            int d = abs((int)rgb[k] - (int)ref[k]);
            maxd = d > maxd ? d : maxd;
        }
        /* exact but for the CMYK product's rounding (PIL: (c·k)/255 with its own rounding) */
        CHECK_MSG(maxd <= (strcmp(names[i], "cmyk") ? 0 : 1), "%s: max difference %d from PIL", names[i], maxd);
        sdxl_free(rgb);
        free(jpg);
        free(ref);
    }
}

TEST(jpeg_decode_color_spaces) {
    enum { W = 32, H = 16 };
    uint8_t px[W * H * 4];
    for (int i = 0; i < W * H * 4; i++) px[i] = (uint8_t)(128 + 60 * ((i / 4 % W) > W / 2) - 30 * ((i / 4 / W) > H / 2));
    for (int comps = 1; comps <= 4; comps++) {
        if (comps == 2) continue;
        for (int prog = 0; prog < 2; prog++) {
            size_t len = 0;
            uint8_t *jpg = sdxl_test_jpeg(px, W, H, comps, 95, prog, &len);
            REQUIRE(jpg);
            uint8_t *rgb = NULL;
            int w = 0, h = 0;
            sdxl_error err = {0};
            sdxl_status st = sdxl_jpeg_decode(jpg, len, W * H, &rgb, &w, &h, &err);
            CHECK_MSG(st == SDXL_STATUS_OK, "%d components, progressive %d: %s", comps, prog, err.msg);
            if (!st) {
                CHECK(w == W && h == H);
                /* flat areas: the colour as sent (the first pixel) */
                int want0 = px[0], got = rgb[0];
                if (comps == 4) want0 = px[0] * px[3] / 255; /* Adobe: inks stored inverted */
                CHECK_MSG(abs(got - want0) <= 3, "%d components: %d, want %d", comps, got, want0);
                if (comps == 1) CHECK(rgb[0] == rgb[1] && rgb[1] == rgb[2]);
            }
            sdxl_free(rgb);
            /* the pixel cap: one pixel short is refused, the size reported */
            CHECK(sdxl_jpeg_decode(jpg, len, W * H - 1, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT);
            CHECK(rgb == NULL && w == W && h == H && strstr(err.msg, "too large"));
            free(jpg);
        }
    }
}

TEST(jpeg_decode_rejects_corrupt_and_truncated) {
    enum { W = 32, H = 24 };
    uint8_t px[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) px[i] = (uint8_t)(i * 7 + i / 97);
    size_t len = 0;
    uint8_t *jpg = sdxl_test_jpeg(px, W, H, 3, 90, false, &len);
    REQUIRE(jpg);
    sdxl_error err = {0};
    uint8_t *rgb = (uint8_t *)1;
    int w, h;
    CHECK(sdxl_jpeg_decode("\x89PNG", 4, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT && rgb == NULL);
    CHECK(strstr(err.msg, "not a JPEG"));
    /* cut anywhere (libjpeg alone would pad with grey and call it a warning) */
    for (size_t cut = 0; cut + 2 < len; cut++) {
        sdxl_status st = sdxl_jpeg_decode(jpg, cut, 0, &rgb, &w, &h, &err);
        CHECK_MSG(st == SDXL_STATUS_BAD_INPUT && rgb == NULL && err.msg[0], "cut at %zu of %zu -> %d", cut, len, st);
    }
    /* the last two bytes are EOI: libjpeg tolerates a missing EOI with a
     * warning we count as truncation too */
    CHECK(sdxl_jpeg_decode(jpg, len - 2, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT);
    /* garbage in the entropy-coded data */
    uint8_t *bad = malloc(len);
    memcpy(bad, jpg, len);
    for (size_t i = len / 2; i < len / 2 + 40; i++) bad[i] = 0xFF;
    CHECK(sdxl_jpeg_decode(bad, len, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT && rgb == NULL);
    /* a header claiming 60000 x 60000: refused from the header (no buffer) */
    memcpy(bad, jpg, len);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < len; i++)
        if (bad[i] == 0xFF && bad[i + 1] == 0xC0) sof = i;
    REQUIRE(sof);
    bad[sof + 5] = 60000 >> 8, bad[sof + 6] = 60000 & 255, bad[sof + 7] = 60000 >> 8, bad[sof + 8] = 60000 & 255;
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    sdxl_mem_reset_peak();
    CHECK(sdxl_jpeg_decode(bad, len, 4096 * 4096, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(w == 60000 && h == 60000 && rgb == NULL && strstr(err.msg, "too large"));
    sdxl_mem_get_stats(&s1);
    CHECK(s1.peak_bytes - s0.live_bytes < 65536);
    free(bad);
    free(jpg);
}

/* A progressive JPEG of `bands` spectral bands per component, each sent
 * first at Al=2 and refined twice: 1 + 3·bands·3 scans. */
static uint8_t *many_scans_jpeg(const uint8_t *px, int w, int h, int bands, int *n_scans, size_t *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &out, &n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    static jpeg_scan_info scans[1 + 3 * 63 * 3];
    int k = 0;
    scans[k++] = (jpeg_scan_info){3, {0, 1, 2, 0}, 0, 0, 0, 0};
    for (int comp = 0; comp < 3; comp++)
        for (int b = 0; b < bands; b++) {
            int ss = 1 + b * 63 / bands, se = (b + 1) * 63 / bands;
            scans[k++] = (jpeg_scan_info){1, {comp, 0, 0, 0}, ss, se, 0, 2};
            scans[k++] = (jpeg_scan_info){1, {comp, 0, 0, 0}, ss, se, 2, 1};
            scans[k++] = (jpeg_scan_info){1, {comp, 0, 0, 0}, ss, se, 1, 0};
        }
    c.scan_info = scans;
    c.num_scans = k;
    *n_scans = k;
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *len = n;
    return out;
}

TEST(jpeg_decode_scan_limit) {
    enum { W = 16, H = 16 };
    uint8_t px[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) px[i] = (uint8_t)(i * 5);
    int ns = 0;
    size_t len = 0;
    uint8_t *few = many_scans_jpeg(px, W, H, 10, &ns, &len), *rgb = NULL;
    REQUIRE(few);
    CHECK(ns < 500);
    int w, h;
    sdxl_error err = {0};
    CHECK_MSG(sdxl_jpeg_decode(few, len, 0, &rgb, &w, &h, &err) == SDXL_STATUS_OK, "%d scans: %s", ns, err.msg);
    sdxl_free(rgb);
    free(few);
    uint8_t *many = many_scans_jpeg(px, W, H, 63, &ns, &len);
    REQUIRE(many);
    CHECK(ns > 500);
    CHECK(sdxl_jpeg_decode(many, len, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT && rgb == NULL);
    CHECK_MSG(strstr(err.msg, "progressive scans"), "%s", err.msg);
    free(many);
}
