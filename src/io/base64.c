/* base64.c - RFC 4648 base64 (see base64.h for the decoding rules). */
#include "io/base64.h"

#include <stdbool.h>
#include <stdio.h>

#include "core/alloc.h"

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

enum { B64_BAD = -1, B64_SPACE = -2, B64_PAD = -3 };

/* value of a byte: 0..63, or one of the B64_* classes */
static int decode_char(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    switch (c) {
    case '+': return 62;
    case '/': return 63;
    case '=': return B64_PAD;
    case ' ': case '\t': case '\r': case '\n': case '\v': case '\f': return B64_SPACE;
    default: return B64_BAD;
    }
}

size_t sdxl_base64_encoded_len(size_t n) {
    size_t groups = n / 3 + (n % 3 != 0);
    return groups > SIZE_MAX / 4 ? SIZE_MAX : groups * 4;
}

size_t sdxl_base64_encode(const void *in, size_t n, char *out) {
    const uint8_t *p = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = ALPHABET[v >> 18];
        out[o++] = ALPHABET[(v >> 12) & 63];
        out[o++] = ALPHABET[(v >> 6) & 63];
        out[o++] = ALPHABET[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = ALPHABET[v >> 18];
        out[o++] = ALPHABET[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = ALPHABET[v >> 18];
        out[o++] = ALPHABET[(v >> 12) & 63];
        out[o++] = ALPHABET[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

char *sdxl_base64_encode_alloc(const void *in, size_t n, size_t *out_len) {
    size_t len = sdxl_base64_encoded_len(n);
    if (len == SIZE_MAX) return NULL;
    char *s = sdxl_malloc(len + 1);
    if (!s) return NULL;
    size_t w = sdxl_base64_encode(in, n, s);
    if (out_len) *out_len = w;
    return s;
}

size_t sdxl_base64_decoded_max(size_t n) { return n / 4 * 3 + (n % 4 ? 2 : 0); }

static sdxl_status bad_char(sdxl_error *err, const char *in, size_t at) {
    unsigned char c = (unsigned char)in[at];
    if (c == '-' || c == '_')
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                              "'%c' at offset %zu is base64url, not base64 (use '+' and '/')", c, at);
    if (c >= 0x21 && c < 0x7f)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "invalid base64 character '%c' at offset %zu", c, at);
    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "invalid base64 byte 0x%02x at offset %zu", c, at);
}

sdxl_status sdxl_base64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len,
                               sdxl_error *err) {
    size_t o = 0;
    if (out_len) *out_len = 0;
    if (!in && n) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "base64: NULL input");
    uint32_t acc = 0;
    int q = 0;          /* data characters in the current group of 4 */
    int pad = 0;        /* '=' seen */
    size_t pad_at = 0;  /* offset of the first '=' */
    for (size_t i = 0; i < n; i++) {
        int v = decode_char((unsigned char)in[i]);
        if (v == B64_SPACE) continue;
        if (v == B64_BAD) return bad_char(err, in, i);
        if (v == B64_PAD) {
            if (pad == 0) {
                if (q < 2)
                    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                          "'=' at offset %zu where base64 data was expected", i);
                pad_at = i;
            }
            if (++pad > 4 - q)
                return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "too much '=' padding at offset %zu", i);
            continue;
        }
        if (pad)
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                  "base64 data at offset %zu after the '=' padding at offset %zu", i, pad_at);
        acc = acc << 6 | (uint32_t)v;
        if (++q == 4) {
            if (cap - o < 3) goto too_long;
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
            q = 0;
        }
    }
    if (pad && pad != 4 - q)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "incomplete '=' padding at offset %zu", pad_at);
    if (q == 1)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "truncated base64: a final group of one character");
    if (q == 2) {
        if (acc & 0xF) goto non_canonical;
        if (cap - o < 1) goto too_long;
        out[o++] = (uint8_t)(acc >> 4);
    } else if (q == 3) {
        if (acc & 0x3) goto non_canonical;
        if (cap - o < 2) goto too_long;
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    if (out_len) *out_len = o;
    return SDXL_STATUS_OK;
too_long:
    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "base64 decodes to more than %zu bytes", cap);
non_canonical:
    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "non-canonical base64: the last character has stray low bits");
}

sdxl_status sdxl_base64_decode_alloc(const char *in, size_t n, size_t max_out, uint8_t **out, size_t *out_len,
                                     sdxl_error *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    size_t cap = sdxl_base64_decoded_max(n);
    if (cap > max_out) cap = max_out;
    uint8_t *buf = sdxl_malloc(cap);
    if (!buf) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "base64: %zu bytes", cap);
    size_t len = 0;
    sdxl_status st = sdxl_base64_decode(in, n, buf, cap, &len, err);
    if (st) {
        sdxl_free(buf);
        return st;
    }
    *out = buf;
    if (out_len) *out_len = len;
    return SDXL_STATUS_OK;
}
