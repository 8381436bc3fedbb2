/* base64.h - RFC 4648 base64 (the standard alphabet A-Z a-z 0-9 + /), for
 * images carried inside JSON (a request's init_image, a response's PNGs).
 *
 * Encoding always pads with '=' and never wraps lines.
 *
 * Decoding is strict about the data and lenient about layout:
 *   - ASCII whitespace (space, \t, \r, \n, \v, \f) is skipped anywhere
 *     (MIME-wrapped lines, pretty-printed JSON);
 *   - any other byte outside the alphabet is an error naming its offset
 *     (the URL-safe '-' and '_' too: a different alphabet, said so);
 *   - padding is optional, but when present it is one or two '=' that end
 *     the data (nothing but whitespace after them) and make the count of
 *     data characters a multiple of 4;
 *   - a final group of a single character (6 bits: not a byte) is an error;
 *   - the unused low bits of the last group must be zero (the one canonical
 *     spelling; what every encoder writes).
 * Output is bounded: the caller says how many bytes it accepts, and the
 * decoder stops with an error before writing past that.
 *
 * Errors are SDXL_STATUS_BAD_INPUT with a message ("invalid character '%' at
 * offset 12"), OUT_OF_MEMORY for the allocating variant. All functions are
 * thread-safe (no state). */
#ifndef SDXL_IO_BASE64_H
#define SDXL_IO_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* Characters sdxl_base64_encode writes for n bytes (4·ceil(n/3)), without
 * the NUL; SIZE_MAX when that does not fit a size_t. */
size_t sdxl_base64_encoded_len(size_t n);

/* Encode n bytes into out, which must hold sdxl_base64_encoded_len(n) + 1
 * bytes (NUL-terminated). Returns the characters written (without the NUL). */
size_t sdxl_base64_encode(const void *in, size_t n, char *out);

/* Encode into a new NUL-terminated string (sdxl_malloc'd; sdxl_free it).
 * *out_len (may be NULL) gets its length. NULL on out of memory. */
char *sdxl_base64_encode_alloc(const void *in, size_t n, size_t *out_len);

/* An upper bound of the bytes `n` characters of base64 decode to. */
size_t sdxl_base64_decoded_max(size_t n);

/* Decode in[0..n) into out[0..cap). *out_len gets the bytes written. A
 * result longer than cap is BAD_INPUT ("decodes to more than N bytes") and
 * nothing past cap is written. */
sdxl_status sdxl_base64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len, sdxl_error *err);

/* Decode into a new buffer (sdxl_malloc'd; sdxl_free it) of at most
 * max_out bytes; *out is NULL on failure. */
sdxl_status sdxl_base64_decode_alloc(const char *in, size_t n, size_t max_out, uint8_t **out, size_t *out_len,
                                     sdxl_error *err);

#endif
