#include "core/utf8.h"

size_t sdxl_utf8_seq_len(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    for (size_t k = 1; k < len; k++) {
        if (k >= n || (s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

size_t sdxl_utf8_invalid_at(const void *s, size_t n) {
    const uint8_t *p = s;
    size_t i = 0;
    while (i < n) {
        size_t len = sdxl_utf8_seq_len(p + i, n - i);
        if (!len) return i;
        i += len;
    }
    return n;
}
