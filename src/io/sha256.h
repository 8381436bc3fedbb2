/* sha256.h - SHA-256 (FIPS 180-4), streaming, for the A1111 "Model hash"
 * (AutoV2: the first 10 hex digits of the checkpoint file's SHA-256).
 *
 *   sdxl_sha256 h; sdxl_sha256_init(&h);
 *   sdxl_sha256_update(&h, data, n);  ... (any number of times, any sizes)
 *   uint8_t d[32]; sdxl_sha256_final(&h, d);
 *
 * Pure computation, no allocation; one context per thread. */
#ifndef SDXL_IO_SHA256_H
#define SDXL_IO_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sdxl_sha256 {
    uint32_t state[8];
    uint64_t bytes;     /* message length so far */
    uint8_t block[64];  /* pending partial block */
    size_t used;        /* bytes in block */
} sdxl_sha256;

void sdxl_sha256_init(sdxl_sha256 *h);
void sdxl_sha256_update(sdxl_sha256 *h, const void *data, size_t n);
/* Pad, write the 32-byte digest, and leave h re-initialized. */
void sdxl_sha256_final(sdxl_sha256 *h, uint8_t digest[32]);
/* One-shot digest of [data, data+n). */
void sdxl_sha256_buf(const void *data, size_t n, uint8_t digest[32]);
/* Lower-case hex of the digest: 64 characters + NUL. */
void sdxl_sha256_hex(const uint8_t digest[32], char hex[65]);

#endif
