#include "image/png.h"

#include <errno.h>
#include <limits.h>
#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"

typedef struct {
    const char *path;
    char msg[256];
} png_ctx;

static void on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static bool ascii_only(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return false;
    return true;
}

/* Chunks from the "key", "value", ..., NULL list (sdxl_calloc'd; NULL when
 * there are none). *n gets their count; -1 on out of memory. */
static png_text *make_text(const char *const *text, int *n) {
    int nt = 0;
    while (text && text[2 * nt] && text[2 * nt + 1]) nt++;
    *n = nt;
    if (!nt) return NULL;
    png_text *chunks = sdxl_calloc((size_t)nt, sizeof *chunks);
    if (!chunks) {
        *n = -1;
        return NULL;
    }
    for (int i = 0; i < nt; i++) {
        chunks[i].key = (char *)text[2 * i];
        chunks[i].text = (char *)text[2 * i + 1];
        chunks[i].compression = ascii_only(text[2 * i + 1]) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    }
    return chunks;
}

/* Everything after the output is set: IHDR, text, rows, IEND. libpng errors
 * longjmp out of here to the caller's setjmp. */
static void write_image(png_structp png, png_infop info, const uint8_t *rgb, int w, int h, png_text *chunks, int nt) {
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (nt > 0) png_set_text(png, info, chunks, nt);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)w * 3));
    png_write_end(png, info);
}

/* What every reader does after png_read_info: any PNG to RGB8 (palette and
 * grey expanded, alpha and tRNS dropped, 16-bit reduced, interlace undone). */
static void set_rgb8(png_structp png, png_infop info) {
    int ct = png_get_color_type(png, info);
    if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (png_get_bit_depth(png, info) < 8) png_set_expand(png);
    if (ct & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png), png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
}

sdxl_status sdxl_png_write(const char *path, const uint8_t *rgb, int w, int h, const char *const *text,
                           sdxl_error *err) {
    if (w < 1 || h < 1 || w > SDXL_PNG_MAX_SIDE || h > SDXL_PNG_MAX_SIDE)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: image size %dx%d", path, w, h);
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return sdxl_error_set(err, SDXL_STATUS_IO, "%s: cannot create: %s", tmp, strerror(errno));
    png_ctx ctx = {.path = path};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_text *chunks = NULL;
    sdxl_status st = SDXL_STATUS_OK;
    if (!png || !info) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: libpng setup", path);
        goto done;
    }
    int nt = 0;
    chunks = make_text(text, &nt);
    if (nt < 0) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: text chunks", path);
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        st = sdxl_error_set(err, SDXL_STATUS_IO, "%s: writing PNG: %s", path, ctx.msg);
        goto done;
    }
    png_init_io(png, f);
    write_image(png, info, rgb, w, h, chunks, nt);
done:
    if (png) png_destroy_write_struct(&png, info ? &info : NULL);
    sdxl_free(chunks);
    if (!st && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        st = sdxl_error_set(err, SDXL_STATUS_IO, "%s: flush: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && !st) st = sdxl_error_set(err, SDXL_STATUS_IO, "%s: close: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0)
        st = sdxl_error_set(err, SDXL_STATUS_IO, "%s: rename: %s", path, strerror(errno));
    if (st) unlink(tmp);
    return st;
}

sdxl_status sdxl_png_read(const char *path, uint8_t **rgb, int *w, int *h, sdxl_error *err) {
    *rgb = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sdxl_error_set(err, errno == ENOENT ? SDXL_STATUS_NOT_FOUND : SDXL_STATUS_IO, "%s: cannot open: %s",
                              path, strerror(errno));
    png_ctx ctx = {.path = path};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile buf = NULL;
    png_bytep *volatile rows = NULL;
    sdxl_status st = SDXL_STATUS_OK;
    if (!png || !info) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: libpng setup", path);
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: not a valid PNG: %s", path, ctx.msg);
        goto done;
    }
    png_set_user_limits(png, SDXL_PNG_MAX_SIDE, SDXL_PNG_MAX_SIDE);
    png_init_io(png, f);
    png_read_info(png, info);
    png_uint_32 W = png_get_image_width(png, info), H = png_get_image_height(png, info);
    set_rgb8(png, info);
    if (png_get_rowbytes(png, info) != (size_t)W * 3) {
        st = sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "%s: unexpected PNG layout", path);
        goto done;
    }
    buf = sdxl_malloc((size_t)W * H * 3);
    rows = sdxl_malloc((size_t)H * sizeof *rows);
    if (!buf || !rows) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: %ux%u image", path, (unsigned)W, (unsigned)H);
        goto done;
    }
    for (png_uint_32 y = 0; y < H; y++) rows[y] = buf + (size_t)y * W * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    *w = (int)W;
    *h = (int)H;
done:
    if (png) png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    fclose(f);
    sdxl_free(rows);
    if (st)
        sdxl_free(buf);
    else
        *rgb = buf;
    return st;
}

sdxl_status sdxl_png_read_text(const char *path, const char *key, char **value, sdxl_error *err) {
    *value = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "%s: cannot open: %s", path, strerror(errno));
    png_ctx ctx = {.path = path};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    sdxl_status st = SDXL_STATUS_NOT_FOUND;
    if (!png || !info) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: libpng setup", path);
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: not a valid PNG: %s", path, ctx.msg);
        goto done;
    }
    png_init_io(png, f);
    png_read_info(png, info);
    png_textp t = NULL;
    int n = png_get_text(png, info, &t, NULL);
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].key, key)) {
            *value = sdxl_strdup(t[i].text);
            st = *value ? SDXL_STATUS_OK : sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "text chunk");
            break;
        }
    if (st == SDXL_STATUS_NOT_FOUND) sdxl_error_set(err, st, "%s: no '%s' text chunk", path, key);
done:
    if (png) png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    fclose(f);
    return st;
}

/* ---- in memory ---------------------------------------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    bool oom;
} mem_out;

static void mem_write(png_structp png, png_bytep data, size_t n) {
    mem_out *m = png_get_io_ptr(png);
    if (n > m->cap - m->len) {
        size_t cap = m->cap ? m->cap : 8192;
        while (cap - m->len < n) {
            if (cap > SIZE_MAX / 2) {
                m->oom = true;
                png_error(png, "output too large");
            }
            cap *= 2;
        }
        uint8_t *nb = sdxl_realloc(m->buf, cap);
        if (!nb) {
            m->oom = true;
            png_error(png, "out of memory");
        }
        m->buf = nb;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}

static void mem_flush(png_structp png) { (void)png; }

/* The setjmp lives here, and everything it must see after a longjmp lives
 * in the caller's frame (*m, ctx): no local of this frame changes after it. */
static sdxl_status encode_run(png_structp png, png_infop info, png_ctx *ctx, mem_out *m, const uint8_t *rgb, int w,
                              int h, png_text *chunks, int nt, sdxl_error *err) {
    if (setjmp(png_jmpbuf(png)))
        return sdxl_error_set(err, m->oom ? SDXL_STATUS_OUT_OF_MEMORY : SDXL_STATUS_INTERNAL, "encoding PNG: %s",
                              ctx->msg);
    png_set_write_fn(png, m, mem_write, mem_flush);
    write_image(png, info, rgb, w, h, chunks, nt);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_png_encode(const uint8_t *rgb, int w, int h, const char *const *text, uint8_t **out, size_t *len,
                            sdxl_error *err) {
    *out = NULL;
    *len = 0;
    if (!rgb || w < 1 || h < 1 || w > SDXL_PNG_MAX_SIDE || h > SDXL_PNG_MAX_SIDE)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "PNG encode: image size %dx%d", w, h);
    png_ctx ctx = {.path = "(memory)"};
    mem_out m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    int nt = 0;
    png_text *chunks = make_text(text, &nt);
    sdxl_status st;
    if (!png || !info || nt < 0)
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "PNG encode: libpng setup");
    else
        st = encode_run(png, info, &ctx, &m, rgb, w, h, chunks, nt, err);
    if (png) png_destroy_write_struct(&png, info ? &info : NULL);
    sdxl_free(chunks);
    if (st) {
        sdxl_free(m.buf);
        return st;
    }
    *out = m.buf;
    *len = m.len;
    return SDXL_STATUS_OK;
}

typedef struct {
    const uint8_t *p;
    size_t len, pos;
} mem_in;

static void mem_read(png_structp png, png_bytep data, size_t n) {
    mem_in *m = png_get_io_ptr(png);
    if (n > m->len - m->pos) png_error(png, "truncated");
    memcpy(data, m->p + m->pos, n);
    m->pos += n;
}

typedef struct {
    png_ctx ctx;
    mem_in in;
    uint8_t *buf;     /* [h, w, 3] */
    png_bytep *rows;  /* [h] into buf */
} decode_state;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* As encode_run: state that outlives a longjmp is in *s. */
static sdxl_status decode_run(png_structp png, png_infop info, decode_state *s, sdxl_error *err) {
    if (setjmp(png_jmpbuf(png)))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "not a valid PNG: %s", s->ctx.msg);
    png_set_read_fn(png, &s->in, mem_read);
    png_set_user_limits(png, SDXL_PNG_MAX_SIDE, SDXL_PNG_MAX_SIDE);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)8 << 20);
    png_read_info(png, info);
    png_uint_32 W = png_get_image_width(png, info), H = png_get_image_height(png, info);
    set_rgb8(png, info);
    if (png_get_rowbytes(png, info) != (size_t)W * 3)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "unexpected PNG layout");
    s->buf = sdxl_malloc((size_t)W * H * 3);
    s->rows = sdxl_malloc((size_t)H * sizeof *s->rows);
    if (!s->buf || !s->rows)
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "PNG decode: %ux%u image", (unsigned)W, (unsigned)H);
    for (png_uint_32 y = 0; y < H; y++) s->rows[y] = s->buf + (size_t)y * W * 3;
    png_read_image(png, s->rows);
    png_read_end(png, NULL);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_png_decode(const void *buf, size_t len, int max_pixels, uint8_t **rgb, int *w, int *h,
                            sdxl_error *err) {
    *rgb = NULL;
    *w = *h = 0;
    const uint8_t *p = buf;
    if (!p || len < 8 || png_sig_cmp(p, 0, 8) != 0)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "not a PNG (no PNG signature)");
    /* IHDR is the first chunk: its size decides whether anything is allocated */
    if (len < 33 || be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "not a valid PNG: no IHDR chunk first");
    uint32_t W = be32(p + 16), H = be32(p + 20);
    *w = W > INT_MAX ? INT_MAX : (int)W;
    *h = H > INT_MAX ? INT_MAX : (int)H;
    if (W == 0 || H == 0) return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "not a valid PNG: image size %ux%u",
                                                (unsigned)W, (unsigned)H);
    if (W > SDXL_PNG_MAX_SIDE || H > SDXL_PNG_MAX_SIDE ||
        (max_pixels > 0 && (uint64_t)W * H > (uint64_t)max_pixels))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "PNG of %ux%u is too large (at most %d pixels, %d a side)",
                              (unsigned)W, (unsigned)H, max_pixels > 0 ? max_pixels : SDXL_PNG_MAX_SIDE * SDXL_PNG_MAX_SIDE,
                              SDXL_PNG_MAX_SIDE);
    decode_state s = {.ctx = {.path = "(memory)"}, .in = {.p = p, .len = len}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s.ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    sdxl_status st;
    if (!png || !info)
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "PNG decode: libpng setup");
    else
        st = decode_run(png, info, &s, err);
    if (png) png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    sdxl_free(s.rows);
    if (st) {
        sdxl_free(s.buf);
        return st;
    }
    *rgb = s.buf;
    return SDXL_STATUS_OK;
}
