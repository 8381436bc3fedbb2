/* testimg.c - see testimg.h. Independent of src/: libpng, libjpeg and a
 * base64 encoder of its own (the code under test is not its own oracle). */
#include "image/testimg.h"

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} membuf;

static void mem_write(png_structp png, png_bytep data, size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
        if (!m->buf) png_error(png, "oom");
    }
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}
static void mem_flush(png_structp png) { (void)png; }

uint8_t *sdxl_test_png(const uint8_t *rows, int w, int h, int color_type, int bit_depth, bool interlace,
                       const uint8_t *palette, int npal, const uint8_t *trns, int ntrns, size_t *len) {
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(m.buf);
        return NULL;
    }
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, bit_depth, color_type,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_color pal[256];
    for (int i = 0; i < npal && i < 256; i++) pal[i] = (png_color){palette[3 * i], palette[3 * i + 1], palette[3 * i + 2]};
    if (npal) png_set_PLTE(png, info, pal, npal);
    if (trns && ntrns) png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    size_t rb = png_get_rowbytes(png, info);
    png_bytep *rp = malloc((size_t)h * sizeof *rp);
    for (int y = 0; y < h; y++) rp[y] = (png_bytep)(rows + (size_t)y * rb);
    png_write_image(png, rp);
    png_write_end(png, info);
    free(rp);
    png_destroy_write_struct(&png, &info);
    *len = m.len;
    return m.buf;
}

uint8_t *sdxl_test_jpeg(const uint8_t *px, int w, int h, int components, int quality, bool progressive,
                        size_t *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &out, &n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = components;
    c.in_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    if (components == 4) c.write_Adobe_marker = TRUE;
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * components);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    uint8_t *copy = malloc(n); /* libjpeg's buffer is malloc'd by it: hand back our own */
    memcpy(copy, out, n);
    free(out);
    *len = n;
    return copy;
}

char *sdxl_test_base64(const uint8_t *buf, size_t len, const char *prefix) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t pl = prefix ? strlen(prefix) : 0;
    char *s = malloc(pl + (len + 2) / 3 * 4 + 1), *o = s + pl;
    if (pl) memcpy(s, prefix, pl);
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)buf[i] << 16 | (i + 1 < len ? (uint32_t)buf[i + 1] << 8 : 0) |
                     (i + 2 < len ? buf[i + 2] : 0);
        *o++ = A[v >> 18];
        *o++ = A[(v >> 12) & 63];
        *o++ = i + 1 < len ? A[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? A[v & 63] : '=';
    }
    *o = 0;
    return s;
}
