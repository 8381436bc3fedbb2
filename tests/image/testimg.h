/* testimg.h - image files made in memory by the tests, with libpng and
 * libjpeg directly (not through the code under test): PNGs of every colour
 * type and depth, JPEGs of every colour space. Buffers are malloc'd (free()). */
#ifndef SDXL_TESTS_TESTIMG_H
#define SDXL_TESTS_TESTIMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A PNG of `color_type` (PNG_COLOR_TYPE_*) and `bit_depth`: `rows` holds
 * h rows of png_get_rowbytes bytes (16-bit samples big-endian). palette:
 * npal RGB triples (palette type), trns: ntrns bytes (or NULL). */
uint8_t *sdxl_test_png(const uint8_t *rows, int w, int h, int color_type, int bit_depth, bool interlace,
                       const uint8_t *palette, int npal, const uint8_t *trns, int ntrns, size_t *len);

/* A JPEG of `components` 1 (grey), 3 (RGB in, YCbCr coded) or 4 (CMYK,
 * Adobe marker, stored as given). */
uint8_t *sdxl_test_jpeg(const uint8_t *px, int w, int h, int components, int quality, bool progressive,
                        size_t *len);

/* The base64 of buf (malloc'd, NUL-terminated), optionally after `prefix`. */
char *sdxl_test_base64(const uint8_t *buf, size_t len, const char *prefix);

#endif
