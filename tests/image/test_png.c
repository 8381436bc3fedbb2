#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/alloc.h"
#include "image/png.h"
#include "image/testimg.h"
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

/* ---- in memory ---------------------------------------------------------------- */

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

TEST(png_encode_decode_round_trip_with_text) {
    enum { W = 40, H = 24 };
    uint8_t img[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) img[i] = (uint8_t)(i * 13 + i / 7);
    const char *params = "a cat, h\xc3\xa9llo\nSteps: 20, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 40x24";
    const char *text[] = {"parameters", params, NULL};
    sdxl_error err = {0};
    uint8_t *png = NULL;
    size_t len = 0;
    REQUIRE_OK(sdxl_png_encode(img, W, H, text, &png, &len, &err), &err);
    CHECK(len > 8 && !memcmp(png, "\x89PNG\r\n\x1a\n", 8));
    uint8_t *back = NULL;
    int w = 0, h = 0;
    REQUIRE_OK(sdxl_png_decode(png, len, W * H, &back, &w, &h, &err), &err);
    CHECK(w == W && h == H && !memcmp(back, img, sizeof img));
    sdxl_free(back);
    /* the same bytes as sdxl_png_write puts in a file; the text chunk reads back */
    char path[512];
    snprintf(path, sizeof path, "%s/mem.png", sdxl_test_tmpdir());
    REQUIRE_OK(sdxl_png_write(path, img, W, H, text, &err), &err);
    size_t flen = 0;
    uint8_t *file = read_whole(path, &flen);
    REQUIRE(file);
    CHECK(flen == len && !memcmp(file, png, len));
    free(file);
    char *v = NULL;
    REQUIRE_OK(sdxl_png_read_text(path, "parameters", &v, &err), &err);
    CHECK(v && !strcmp(v, params));
    sdxl_free(v);
    sdxl_free(png);
    /* no text; bad sizes */
    REQUIRE_OK(sdxl_png_encode(img, 8, 8, NULL, &png, &len, &err), &err);
    sdxl_free(png);
    CHECK(sdxl_png_encode(img, 0, 8, NULL, &png, &len, &err) == SDXL_STATUS_INVALID_ARG && png == NULL);
    CHECK(sdxl_png_encode(img, 8, SDXL_PNG_MAX_SIDE + 1, NULL, &png, &len, &err) == SDXL_STATUS_INVALID_ARG);
}

/* Every colour type and depth, interlaced or not, ends as RGB8 with the
 * values libpng's (and PIL's) expansion gives. */
TEST(png_decode_every_color_type_to_rgb8) {
    enum { W = 13, H = 9 }; /* odd sizes: partial bytes at low depths, every Adam7 pass */
    static const struct { int ct, depth; } kinds[] = {
        {PNG_COLOR_TYPE_GRAY, 1},      {PNG_COLOR_TYPE_GRAY, 2},      {PNG_COLOR_TYPE_GRAY, 4},
        {PNG_COLOR_TYPE_GRAY, 8},      {PNG_COLOR_TYPE_GRAY, 16},     {PNG_COLOR_TYPE_GRAY_ALPHA, 8},
        {PNG_COLOR_TYPE_GRAY_ALPHA, 16}, {PNG_COLOR_TYPE_RGB, 8},     {PNG_COLOR_TYPE_RGB, 16},
        {PNG_COLOR_TYPE_RGB_ALPHA, 8}, {PNG_COLOR_TYPE_RGB_ALPHA, 16}, {PNG_COLOR_TYPE_PALETTE, 1},
        {PNG_COLOR_TYPE_PALETTE, 2},   {PNG_COLOR_TYPE_PALETTE, 4},   {PNG_COLOR_TYPE_PALETTE, 8},
    };
    uint8_t pal[256 * 3], trns[256];
    for (int i = 0; i < 256; i++) {
        pal[3 * i] = (uint8_t)(i * 37), pal[3 * i + 1] = (uint8_t)(255 - i), pal[3 * i + 2] = (uint8_t)(i * 5 + 1);
        trns[i] = (uint8_t)i;
    }
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (int il = 0; il < 2; il++) {
            const int ct = kinds[k].ct, d = kinds[k].depth;
            const int ch = ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_PALETTE ? 1
                           : ct == PNG_COLOR_TYPE_GRAY_ALPHA                          ? 2
                           : ct == PNG_COLOR_TYPE_RGB                                 ? 3
                                                                                      : 4;
            const int maxv = (1 << (d > 8 ? 16 : d)) - 1;
            size_t rb = ((size_t)W * ch * d + 7) / 8;
            uint8_t rows[H * 16 * 8] = {0}, want[W * H * 3];
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    for (int c = 0; c < ch; c++) {
                        int v = (x * 7 + y * 3 + c * 11) * 2654435761u % (unsigned)(maxv + 1);
                        uint8_t *r = rows + (size_t)y * rb;
                        int bit = (x * ch + c) * d;
                        if (d == 16) {
                            r[bit / 8] = (uint8_t)(v >> 8), r[bit / 8 + 1] = (uint8_t)v;
                        } else {
                            r[bit / 8] |= (uint8_t)(v << (8 - d - bit % 8));
                        }
                        uint8_t v8 = d == 16 ? (uint8_t)(v >> 8) : (uint8_t)(v * 255 / maxv);
                        uint8_t *o = want + ((size_t)y * W + x) * 3;
                        if (ct == PNG_COLOR_TYPE_PALETTE) memcpy(o, pal + 3 * v, 3);
                        else if (ct == PNG_COLOR_TYPE_RGB || ct == PNG_COLOR_TYPE_RGB_ALPHA) {
                            if (c < 3) o[c] = v8;
                        } else if (c == 0) o[0] = o[1] = o[2] = v8;
                    }
            int npal = ct == PNG_COLOR_TYPE_PALETTE ? 1 << d : 0;
            size_t len = 0;
            uint8_t *png = sdxl_test_png(rows, W, H, ct, d, il, pal, npal, npal ? trns : NULL, npal, &len);
            REQUIRE(png);
            uint8_t *rgb = NULL;
            int w = 0, h = 0;
            sdxl_error err = {0};
            sdxl_status st = sdxl_png_decode(png, len, 1 << 20, &rgb, &w, &h, &err);
            CHECK_MSG(st == SDXL_STATUS_OK, "type %d depth %d interlace %d: %s", ct, d, il, err.msg);
            if (!st) {
                CHECK(w == W && h == H);
                CHECK_MSG(!memcmp(rgb, want, sizeof want), "type %d depth %d interlace %d: pixels differ", ct, d, il);
            }
            sdxl_free(rgb);
            free(png);
        }
}

/* The files of tests/data/images (made by tools/refs/make_image_refs.py)
 * decode to exactly the RGB PIL's convert("RGB") gives (what
 * diffusers.utils.load_image hands a pipeline). */
TEST(png_decode_matches_pil) {
    static const char *const names[] = {"palette_trns", "gray1", "gray_alpha", "rgba"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "images/%s.png", names[i]);
        size_t len = 0, rlen = 0;
        uint8_t *png = read_whole(sdxl_test_data(rel), &len);
        snprintf(rel, sizeof rel, "images/%s.rgb", names[i]);
        uint8_t *ref = read_whole(sdxl_test_data(rel), &rlen);
        REQUIRE(png && ref);
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        sdxl_error err = {0};
        REQUIRE_OK(sdxl_png_decode(png, len, 1 << 20, &rgb, &w, &h, &err), &err);
        CHECK(w == 24 && h == 16 && rlen == (size_t)w * h * 3);
        CHECK_MSG(rlen == (size_t)w * h * 3 && !memcmp(rgb, ref, rlen), "%s differs from PIL", names[i]);
        sdxl_free(rgb);
        free(png);
        free(ref);
    }
}

/* A PNG signature + IHDR claiming w x h, then nothing. */
static size_t png_header(uint8_t *b, uint32_t w, uint32_t h) {
    memcpy(b, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
    for (int i = 0; i < 4; i++) b[16 + i] = (uint8_t)(w >> (24 - 8 * i)), b[20 + i] = (uint8_t)(h >> (24 - 8 * i));
    b[24] = 8, b[25] = 2, b[26] = b[27] = b[28] = 0;
    uint32_t crc = (uint32_t)crc32(0, b + 12, 17);
    for (int i = 0; i < 4; i++) b[29 + i] = (uint8_t)(crc >> (24 - 8 * i));
    return 33;
}

TEST(png_decode_rejects_bad_and_huge) {
    sdxl_error err = {0};
    uint8_t *rgb = (uint8_t *)1;
    int w = -1, h = -1;
    CHECK(sdxl_png_decode("GIF89a", 6, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT && rgb == NULL);
    CHECK(w == 0 && h == 0 && strstr(err.msg, "not a PNG"));
    CHECK(sdxl_png_decode("", 0, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT);
    /* huge: refused from the header, before any pixel buffer (peak memory stays put) */
    uint8_t hdr[64];
    size_t n = png_header(hdr, 100000, 100000);
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    sdxl_mem_reset_peak();
    CHECK(sdxl_png_decode(hdr, n, 4096 * 4096, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(w == 100000 && h == 100000 && strstr(err.msg, "too large"));
    n = png_header(hdr, 4096, 4097);
    CHECK(sdxl_png_decode(hdr, n, 4096 * 4096, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(w == 4096 && h == 4097 && strstr(err.msg, "too large"));
    sdxl_mem_get_stats(&s1);
    CHECK_MSG(s1.peak_bytes - s0.live_bytes < 65536, "peak grew by %lld bytes",
              (long long)(s1.peak_bytes - s0.live_bytes));
    /* a header alone within the cap: corrupt (no IDAT), size still reported */
    n = png_header(hdr, 16, 8);
    CHECK(sdxl_png_decode(hdr, n, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT && w == 16 && h == 8);
    CHECK(rgb == NULL);
    /* a real PNG, truncated at every length, and with a flipped byte in IDAT */
    uint8_t img[16 * 8 * 3];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)(i * 31);
    uint8_t *png = NULL;
    size_t len = 0;
    REQUIRE_OK(sdxl_png_encode(img, 16, 8, NULL, &png, &len, &err), &err);
    for (size_t cut = 0; cut < len; cut++) {
        CHECK_MSG(sdxl_png_decode(png, cut, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT, "cut at %zu", cut);
        CHECK(rgb == NULL);
    }
    size_t idat = 0;
    for (size_t i = 8; i + 4 < len; i++)
        if (!memcmp(png + i, "IDAT", 4)) idat = i;
    REQUIRE(idat);
    png[idat + 8] ^= 0x40;
    CHECK(sdxl_png_decode(png, len, 0, &rgb, &w, &h, &err) == SDXL_STATUS_BAD_INPUT && rgb == NULL);
    sdxl_free(png);
}
