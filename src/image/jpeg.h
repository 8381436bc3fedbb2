/* jpeg.h - JPEG images in memory (libjpeg-turbo), decoded into RGB8 (init
 * images sent base64 in requests).
 *
 * Decoding is defensive, for untrusted bytes: the size is checked against a
 * pixel cap after the header and before any pixel buffer is allocated;
 * libjpeg's fatal errors come back as BAD_INPUT through a setjmp/longjmp
 * error manager (never exit()); warnings that mean the data is corrupt or
 * cut short (premature end of file, bad Huffman code, missing restart
 * markers) are errors too, where libjpeg alone would fill the rest with
 * grey; progressive files are limited to 500 scans (a file of endless tiny
 * scans costs minutes of CPU otherwise). Greyscale becomes RGB; CMYK/YCCK
 * (Adobe, inverted) is converted naively to RGB, as PIL does. An EXIF
 * orientation (2..8) is applied, so the image comes out upright as
 * diffusers' load_image (PIL's ImageOps.exif_transpose) shows it: for 5..8
 * width and height swap. Thread-safe (libjpeg state is per call). */
#ifndef SDXL_IMAGE_JPEG_H
#define SDXL_IMAGE_JPEG_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define SDXL_JPEG_MAX_SIDE 16384

/* Decode a JPEG held in memory into RGB8. The size is checked against
 * max_pixels (w·h; <= 0: only SDXL_JPEG_MAX_SIDE a side). *rgb is
 * sdxl_malloc'd [h, w, 3] (NULL on failure), upright (*w, *h are the size
 * after the EXIF orientation). *w and *h are set as soon as the header is
 * read, on failure too (0 before it; the stored size then): a caller can
 * tell "too large" (their product over max_pixels) from "corrupt". Errors: BAD_INPUT
 * (not a JPEG, corrupt, truncated, too large, unsupported variant such as
 * 12-bit), OUT_OF_MEMORY. */
sdxl_status sdxl_jpeg_decode(const void *buf, size_t len, int max_pixels, uint8_t **rgb, int *w, int *h,
                             sdxl_error *err);

#endif
