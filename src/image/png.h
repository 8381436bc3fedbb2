/* png.h - PNG files (libpng): write RGB8 images with text chunks (A1111's
 * "parameters"), read PNG/grey/alpha/16-bit into RGB8 (init images); the
 * same in memory (images carried in requests and responses).
 *
 * Writes are atomic: <path>.tmp, fsync, rename — an interrupted or failed
 * write never leaves a partial file under `path`. Reading is defensive:
 * dimensions are capped (SDXL_PNG_MAX_SIDE) before any allocation and libpng's
 * errors come back as BAD_INPUT naming the file. Thread-safe (libpng state is
 * per call). */
#ifndef SDXL_IMAGE_PNG_H
#define SDXL_IMAGE_PNG_H

#include <stdint.h>

#include "core/status.h"

#define SDXL_PNG_MAX_SIDE 16384

/* rgb: [h, w, 3] bytes. text: "key", "value", ..., NULL (may be NULL); values
 * are UTF-8 (written as iTXt when not Latin-1-safe ASCII, else tEXt). */
sdxl_status sdxl_png_write(const char *path, const uint8_t *rgb, int w, int h, const char *const *text,
                           sdxl_error *err);

/* Read any PNG into RGB8 (palette and grey expanded, alpha discarded, 16-bit
 * reduced). *rgb is sdxl_malloc'd [h, w, 3]. */
sdxl_status sdxl_png_read(const char *path, uint8_t **rgb, int *w, int *h, sdxl_error *err);

/* The text chunk `key` of a PNG file, sdxl_malloc'd; NOT_FOUND if absent. */
sdxl_status sdxl_png_read_text(const char *path, const char *key, char **value, sdxl_error *err);

/* ---- in memory ------------------------------------------------------------- */

/* Encode rgb ([h, w, 3] bytes) as a PNG in memory, with the same chunks as
 * sdxl_png_write (`text` as there). *out is sdxl_malloc'd (sdxl_free it),
 * *len its size. INVALID_ARG for a size outside 1..SDXL_PNG_MAX_SIDE,
 * OUT_OF_MEMORY. */
sdxl_status sdxl_png_encode(const uint8_t *rgb, int w, int h, const char *const *text, uint8_t **out, size_t *len,
                            sdxl_error *err);

/* Decode a PNG held in memory (untrusted bytes) into RGB8 as sdxl_png_read
 * does (palette, grey, alpha, 16-bit and interlaced all end as [h, w, 3]).
 * The size is checked against max_pixels (w·h) and SDXL_PNG_MAX_SIDE after
 * the header and before any pixel buffer is allocated. *rgb is sdxl_malloc'd
 * [h, w, 3] (NULL on failure). *w and *h are set as soon as the header is
 * read, on failure too (0 before it): a caller can tell "too large" (their
 * product over max_pixels) from "corrupt". Errors: BAD_INPUT (not a PNG,
 * corrupt, truncated, too large), OUT_OF_MEMORY. */
sdxl_status sdxl_png_decode(const void *buf, size_t len, int max_pixels, uint8_t **rgb, int *w, int *h,
                            sdxl_error *err);

#endif
