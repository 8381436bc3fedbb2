/* utf8.h - strict UTF-8 validation (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), shared by every parser of untrusted
 * text (safetensors headers, pickles, tokenizer files and prompts, LoRA
 * names). Thread-safe, no allocation. */
#ifndef SDXL_CORE_UTF8_H
#define SDXL_CORE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of the valid UTF-8 sequence at s (1 for ASCII, including NUL), or 0
 * when s[0..n) does not start with one. Reads no further than the first
 * byte that is not a continuation byte, so a NUL-terminated string may be
 * passed with n = 4. */
size_t sdxl_utf8_seq_len(const uint8_t *s, size_t n);

/* Index of the first byte of s[0..n) that is not part of valid UTF-8, or n
 * when all of it is. */
size_t sdxl_utf8_invalid_at(const void *s, size_t n);

#endif
