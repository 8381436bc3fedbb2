/* jpeg.c - JPEG decoding from memory (see jpeg.h). */
#include "image/jpeg.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h> /* before jpeglib.h: it uses FILE and size_t */
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "core/alloc.h"

#define MAX_SCANS 500

typedef struct {
    struct jpeg_error_mgr pub; /* first: libjpeg hands us a jpeg_error_mgr * */
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
    bool oom;
} err_mgr;

static void on_error_exit(j_common_ptr c) {
    err_mgr *e = (err_mgr *)c->err;
    c->err->format_message(c, e->msg);
    e->oom = c->err->msg_code == JERR_OUT_OF_MEMORY;
    longjmp(e->jmp, 1);
}

/* libjpeg's warnings (level -1): those that mean the data is damaged become
 * errors; the rest (extraneous bytes, an odd JFIF revision, a bad ICC
 * profile) are harmless and ignored. Trace messages (level >= 0) too. */
static void on_emit(j_common_ptr c, int level) {
    if (level >= 0) return;
    c->err->num_warnings++;
    switch (c->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL: on_error_exit(c); break;
    default: break;
    }
}

static void on_output(j_common_ptr c) { (void)c; /* never print */ }

static void on_progress(j_common_ptr c) {
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (d->progressive_mode && d->input_scan_number > MAX_SCANS) {
        err_mgr *e = (err_mgr *)c->err;
        snprintf(e->msg, sizeof e->msg, "more than %d progressive scans", MAX_SCANS);
        e->oom = false;
        longjmp(e->jmp, 1);
    }
}

/* ---- EXIF orientation ------------------------------------------------------------ */

static uint32_t rd(const uint8_t *p, int bytes, bool le) {
    uint32_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint32_t)p[le ? i : bytes - 1 - i] << (8 * i);
    return v;
}

/* Tag 0x0112 of IFD0 in the first APP1 "Exif" marker (the one PIL reads);
 * 1 when absent, unreadable or out of 1..8. Every offset is checked against
 * the marker's length. */
static int exif_orientation(j_decompress_ptr d) {
    for (jpeg_saved_marker_ptr m = d->marker_list; m; m = m->next) {
        if (m->marker != JPEG_APP0 + 1 || m->data_length < 6 || memcmp(m->data, "Exif\0\0", 6) != 0) continue;
        const uint8_t *t = m->data + 6; /* the TIFF structure */
        size_t n = m->data_length - 6;
        if (n < 8) return 1;
        bool le;
        if (!memcmp(t, "II*\0", 4))
            le = true;
        else if (!memcmp(t, "MM\0*", 4))
            le = false;
        else
            return 1;
        size_t ifd = rd(t + 4, 4, le);
        if (ifd > n - 2) return 1;
        size_t count = rd(t + ifd, 2, le);
        for (size_t i = 0; i < count && ifd + 2 + 12 * (i + 1) <= n; i++) {
            const uint8_t *e = t + ifd + 2 + 12 * i;
            if (rd(e, 2, le) != 0x0112) continue;
            uint32_t type = rd(e + 2, 2, le), v = type == 3 ? rd(e + 8, 2, le) : type == 4 ? rd(e + 8, 4, le) : 0;
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
        return 1;
    }
    return 1;
}

/* dst = src (w x h) turned upright for EXIF orientation o (2..8), as PIL's
 * ImageOps.exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
 * 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise. dst
 * is w x h for 2..4, h x w for 5..8. */
static void orient(const uint8_t *src, int w, int h, int o, uint8_t *dst) {
    const bool swap = o >= 5;
    const int dw = swap ? h : w, dh = swap ? w : h;
    for (int y2 = 0; y2 < dh; y2++)
        for (int x2 = 0; x2 < dw; x2++) {
            int x, y;
            switch (o) {
            case 2: x = w - 1 - x2, y = y2; break;
            case 3: x = w - 1 - x2, y = h - 1 - y2; break;
            case 4: x = x2, y = h - 1 - y2; break;
            case 5: x = y2, y = x2; break;
            case 6: x = y2, y = h - 1 - x2; break;
            case 7: x = w - 1 - y2, y = h - 1 - x2; break;
            default: x = w - 1 - y2, y = x2; break; /* 8 */
            }
            memcpy(dst + ((size_t)y2 * dw + x2) * 3, src + ((size_t)y * w + x) * 3, 3);
        }
}

/* Everything that must survive a longjmp lives here, in decode's frame. */
typedef struct {
    struct jpeg_decompress_struct d;
    err_mgr e;
    struct jpeg_progress_mgr prog;
    bool created;
    uint8_t *buf; /* [h, w, 3] */
    uint8_t *row; /* [w, 4]: CMYK scanline */
} decode_state;

static sdxl_status decode_run(decode_state *s, const uint8_t *p, size_t len, int max_pixels, int *w, int *h,
                              sdxl_error *err) {
    s->d.err = jpeg_std_error(&s->e.pub);
    s->e.pub.error_exit = on_error_exit;
    s->e.pub.emit_message = on_emit;
    s->e.pub.output_message = on_output;
    if (setjmp(s->e.jmp))
        return sdxl_error_set(err, s->e.oom ? SDXL_STATUS_OUT_OF_MEMORY : SDXL_STATUS_BAD_INPUT,
                              "not a valid JPEG: %s", s->e.msg);
    s->created = true;
    jpeg_create_decompress(&s->d);
    s->prog.progress_monitor = on_progress;
    s->d.progress = &s->prog;
    jpeg_mem_src(&s->d, p, (unsigned long)len);
    jpeg_save_markers(&s->d, JPEG_APP0 + 1, 0xFFFF); /* EXIF, for the orientation */
    jpeg_read_header(&s->d, TRUE);
    JDIMENSION W = s->d.image_width, H = s->d.image_height;
    *w = (int)W; /* JDIMENSION: at most 65500 */
    *h = (int)H;
    if (W == 0 || H == 0)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "not a valid JPEG: image size %ux%u", (unsigned)W,
                              (unsigned)H);
    if (W > SDXL_JPEG_MAX_SIDE || H > SDXL_JPEG_MAX_SIDE ||
        (max_pixels > 0 && (uint64_t)W * H > (uint64_t)max_pixels))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "JPEG of %ux%u is too large (at most %d pixels, %d a side)",
                              (unsigned)W, (unsigned)H,
                              max_pixels > 0 ? max_pixels : SDXL_JPEG_MAX_SIDE * SDXL_JPEG_MAX_SIDE,
                              SDXL_JPEG_MAX_SIDE);
    /* libjpeg's own working memory (progressive coefficient buffers are
     * ~2 bytes per sample): bounded too */
    s->d.mem->max_memory_to_use = (long)((uint64_t)W * H * 8 + ((uint64_t)64 << 20));
    bool cmyk = s->d.jpeg_color_space == JCS_CMYK || s->d.jpeg_color_space == JCS_YCCK;
    s->d.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&s->d);
    if (s->d.output_width != W || s->d.output_height != H || s->d.output_components != (cmyk ? 4 : 3))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "not a valid JPEG: unexpected output layout");
    s->buf = sdxl_malloc((size_t)W * H * 3);
    if (cmyk) s->row = sdxl_malloc((size_t)W * 4);
    if (!s->buf || (cmyk && !s->row))
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "JPEG decode: %ux%u image", (unsigned)W, (unsigned)H);
    /* Adobe CMYK files store the inks inverted (Photoshop's habit) */
    bool inverted = s->d.saw_Adobe_marker;
    while (s->d.output_scanline < H) {
        uint8_t *dst = s->buf + (size_t)s->d.output_scanline * W * 3;
        JSAMPROW row = cmyk ? s->row : dst;
        if (jpeg_read_scanlines(&s->d, &row, 1) != 1)
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "not a valid JPEG: truncated");
        if (cmyk)
            for (JDIMENSION x = 0; x < W; x++) {
                unsigned c = s->row[4 * x], m = s->row[4 * x + 1], y = s->row[4 * x + 2], k = s->row[4 * x + 3];
                if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
                dst[3 * x] = (uint8_t)((c * k + 127) / 255);
                dst[3 * x + 1] = (uint8_t)((m * k + 127) / 255);
                dst[3 * x + 2] = (uint8_t)((y * k + 127) / 255);
            }
    }
    int o = exif_orientation(&s->d);
    jpeg_finish_decompress(&s->d);
    if (o > 1) { /* upright, as diffusers' load_image (ImageOps.exif_transpose) shows it */
        uint8_t *up = sdxl_malloc((size_t)W * H * 3);
        if (!up) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "JPEG decode: %ux%u image", (unsigned)W,
                                       (unsigned)H);
        orient(s->buf, (int)W, (int)H, o, up);
        sdxl_free(s->buf);
        s->buf = up;
        if (o >= 5) *w = (int)H, *h = (int)W;
    }
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_jpeg_decode(const void *buf, size_t len, int max_pixels, uint8_t **rgb, int *w, int *h,
                             sdxl_error *err) {
    *rgb = NULL;
    *w = *h = 0;
    const uint8_t *p = buf;
    if (!p || len < 3 || p[0] != 0xFF || p[1] != 0xD8 || p[2] != 0xFF)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "not a JPEG (no SOI marker)");
    decode_state s;
    memset(&s, 0, sizeof s);
    sdxl_status st = decode_run(&s, p, len, max_pixels, w, h, err);
    if (s.created) jpeg_destroy_decompress(&s.d);
    sdxl_free(s.row);
    if (st) {
        sdxl_free(s.buf);
        return st;
    }
    *rgb = s.buf;
    return SDXL_STATUS_OK;
}
