/* fuzz_image.c - libFuzzer target for the in-memory image decoders
 * (init images arrive base64 in requests: untrusted bytes). The same input
 * goes to sdxl_png_decode and sdxl_jpeg_decode (each refuses the other's
 * signature at once; both are reached from the seeds). Checks what they
 * promise: on success the pixels are w·h·3 readable bytes (ASan checks the
 * range) and w·h is within the cap; on failure the status is BAD_INPUT with
 * a message and no buffer, and the size, when the header was read, is what
 * tells "too large" apart. A broken promise aborts.
 *
 *   build-fuzz/fuzz_image -max_total_time=60 -max_len=65536 fuzz/corpus/fuzz_image
 * Seeds: fuzz/corpus/fuzz_image/ (PNGs of several colour types, interlaced,
 * baseline/progressive/grey/CMYK JPEGs).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "image/jpeg.h"
#include "image/png.h"

#define MAX_INPUT (1u << 20)
#define MAX_PIXELS (1 << 20) /* 1024x1024: big enough for every path, small enough to stay fast */

#define ENSURE(cond)                                                                                         \
    do {                                                                                                     \
        if (!(cond)) abort();                                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef sdxl_status (*decode_fn)(const void *, size_t, int, uint8_t **, int *, int *, sdxl_error *);

static void run(decode_fn fn, const uint8_t *data, size_t size) {
    uint8_t *rgb = (uint8_t *)1;
    int w = -1, h = -1;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = fn(data, size, MAX_PIXELS, &rgb, &w, &h, &err);
    if (st != SDXL_STATUS_OK) {
        ENSURE(st == SDXL_STATUS_BAD_INPUT && rgb == NULL && err.msg[0] != '\0');
        ENSURE(w >= 0 && h >= 0);
        return;
    }
    ENSURE(rgb != NULL && w > 0 && h > 0 && (int64_t)w * h <= MAX_PIXELS);
    size_t n = (size_t)w * (size_t)h * 3;
    ENSURE(sdxl_alloc_size(rgb) >= n);
    volatile uint8_t sink = 0;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++) x ^= rgb[i];
    sink ^= x;
    (void)sink;
    sdxl_free(rgb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    run(sdxl_png_decode, data, size);
    run(sdxl_jpeg_decode, data, size);
    return 0;
}
