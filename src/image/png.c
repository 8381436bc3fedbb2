#include "image/png.h"

#include <errno.h>
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
    while (text && text[2 * nt] && text[2 * nt + 1]) nt++;
    if (nt && !(chunks = sdxl_calloc((size_t)nt, sizeof *chunks))) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: text chunks", path);
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        st = sdxl_error_set(err, SDXL_STATUS_IO, "%s: writing PNG: %s", path, ctx.msg);
        goto done;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int i = 0; i < nt; i++) {
        chunks[i].key = (char *)text[2 * i];
        chunks[i].text = (char *)text[2 * i + 1];
        chunks[i].compression = ascii_only(text[2 * i + 1]) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    }
    if (nt) png_set_text(png, info, chunks, nt);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)w * 3));
    png_write_end(png, info);
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
    int ct = png_get_color_type(png, info);
    if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (png_get_bit_depth(png, info) < 8) png_set_expand(png);
    if (ct & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png), png_set_strip_alpha(png);
    png_read_update_info(png, info);
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
