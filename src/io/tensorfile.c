/* tensorfile.c - container detection and a thin dispatch onto the
 * safetensors and torch readers (see tensorfile.h). */
#include "io/tensorfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "io/torchfile.h"

#define MEMORY_PATH "<memory>"
#define SNIFF_BYTES 16

struct sdxl_tensorfile {
    sdxl_tf_format fmt;
    sdxl_st_file *st;
    sdxl_torch_file *pt;
    size_t st_bytes; /* safetensors bookkeeping estimate */
};

const char *sdxl_tf_format_name(sdxl_tf_format fmt) {
    switch (fmt) {
    case SDXL_TF_SAFETENSORS: return "safetensors";
    case SDXL_TF_TORCH_ZIP: return "torch zip";
    case SDXL_TF_TORCH_LEGACY: return "torch legacy";
    }
    return "?";
}

/* The container of a file whose first `n` bytes (n <= SNIFF_BYTES) are `b`
 * and whose whole size is `size`. */
static sdxl_status detect(const uint8_t *b, size_t n, uint64_t size, const char *path, sdxl_tf_format *fmt,
                          sdxl_error *err) {
    if (n >= 4 && !memcmp(b, "PK\x03\x04", 4)) {
        *fmt = SDXL_TF_TORCH_ZIP;
        return SDXL_STATUS_OK;
    }
    if (n >= 9) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = (hlen << 8) | b[i];
        unsigned char c = b[8];
        /* '{' marks it even when the length is wrong: the safetensors reader
         * then says what is wrong with it */
        if (c == '{' ||
            ((c == ' ' || c == '\t' || c == '\n' || c == '\r') && hlen >= 1 && hlen <= size - 8)) {
            *fmt = SDXL_TF_SAFETENSORS;
            return SDXL_STATUS_OK;
        }
    }
    if (n >= 1 && b[0] == 0x80) {
        *fmt = SDXL_TF_TORCH_LEGACY;
        return SDXL_STATUS_OK;
    }
    char hex[3 * 8 + 1] = "";
    for (size_t i = 0, o = 0; i < n && i < 8; i++)
        o += (size_t)snprintf(hex + o, sizeof hex - o, "%s%02x", i ? " " : "", b[i]);
    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                          "%s: not a safetensors file, a torch zip archive or a legacy torch pickle "
                          "(%llu bytes, starting with [%s])",
                          path, (unsigned long long)size, hex);
}

static size_t st_bookkeeping(const sdxl_st_file *st) {
    size_t b = 256;
    for (size_t i = 0; i < sdxl_st_count(st); i++)
        b += sizeof(sdxl_st_tensor) + sizeof(void *) + strlen(sdxl_st_at(st, i)->name) + 1;
    for (size_t i = 0; i < sdxl_st_metadata_count(st); i++) {
        const char *k, *v;
        sdxl_st_metadata_at(st, i, &k, &v);
        b += 4 * sizeof(void *) + strlen(k) + strlen(v) + 2;
    }
    return b;
}

static sdxl_status wrap(sdxl_tf_format fmt, sdxl_st_file *st, sdxl_torch_file *pt, sdxl_tensorfile **out,
                        sdxl_error *err) {
    sdxl_tensorfile *f = sdxl_malloc(sizeof *f);
    if (!f) {
        sdxl_st_close(st);
        sdxl_torch_close(pt);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "tensor file: out of memory");
    }
    f->fmt = fmt;
    f->st = st;
    f->pt = pt;
    f->st_bytes = st ? st_bookkeeping(st) : 0;
    *out = f;
    return SDXL_STATUS_OK;
}

static sdxl_status open_as(sdxl_tf_format fmt, const char *path, const void *buf, size_t len,
                           sdxl_tensorfile **out, sdxl_error *err) {
    sdxl_status s;
    if (fmt == SDXL_TF_SAFETENSORS) {
        sdxl_st_file *st = NULL;
        s = path ? sdxl_st_open(path, &st, err) : sdxl_st_parse(buf, len, &st, err);
        return s == SDXL_STATUS_OK ? wrap(fmt, st, NULL, out, err) : s;
    }
    sdxl_torch_file *pt = NULL;
    s = path ? sdxl_torch_open(path, &pt, err) : sdxl_torch_parse(buf, len, &pt, err);
    if (s != SDXL_STATUS_OK) return s;
    /* the torch reader decides zip vs legacy itself; agree with it */
    fmt = sdxl_torch_is_legacy(pt) ? SDXL_TF_TORCH_LEGACY : SDXL_TF_TORCH_ZIP;
    return wrap(fmt, NULL, pt, out, err);
}

sdxl_status sdxl_tf_parse(const void *buf, size_t len, sdxl_tensorfile **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_tf_parse: out is NULL");
    *out = NULL;
    if (!buf && len) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_tf_parse: buf is NULL");
    sdxl_tf_format fmt;
    sdxl_status s = detect(buf, len < SNIFF_BYTES ? len : SNIFF_BYTES, len, MEMORY_PATH, &fmt, err);
    if (s != SDXL_STATUS_OK) return s;
    return open_as(fmt, NULL, buf, len, out, err);
}

sdxl_status sdxl_tf_open(const char *path, sdxl_tensorfile **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_tf_open: out is NULL");
    *out = NULL;
    if (!path) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_tf_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return sdxl_error_set(err, e == ENOENT ? SDXL_STATUS_NOT_FOUND : SDXL_STATUS_IO,
                              "%s: cannot open: %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return sdxl_error_set(err, SDXL_STATUS_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sdxl_error_set(err, SDXL_STATUS_IO, "%s: not a regular file", path);
    }
    uint8_t head[SNIFF_BYTES];
    size_t n = 0;
    while (n < sizeof head) {
        ssize_t r = read(fd, head + n, sizeof head - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return sdxl_error_set(err, SDXL_STATUS_IO, "%s: cannot read: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    sdxl_tf_format fmt;
    sdxl_status s = detect(head, n, (uint64_t)sb.st_size, path, &fmt, err);
    if (s != SDXL_STATUS_OK) return s;
    return open_as(fmt, path, NULL, 0, out, err);
}

void sdxl_tf_close(sdxl_tensorfile *f) {
    if (!f) return;
    sdxl_st_close(f->st);
    sdxl_torch_close(f->pt);
    sdxl_free(f);
}

sdxl_tf_format sdxl_tf_format_of(const sdxl_tensorfile *f) {
    return f ? f->fmt : SDXL_TF_SAFETENSORS;
}

size_t sdxl_tf_count(const sdxl_tensorfile *f) {
    if (!f) return 0;
    return f->st ? sdxl_st_count(f->st) : sdxl_torch_count(f->pt);
}

const sdxl_st_tensor *sdxl_tf_at(const sdxl_tensorfile *f, size_t i) {
    if (!f) return NULL;
    return f->st ? sdxl_st_at(f->st, i) : sdxl_torch_at(f->pt, i);
}

const sdxl_st_tensor *sdxl_tf_find(const sdxl_tensorfile *f, const char *name) {
    if (!f) return NULL;
    return f->st ? sdxl_st_find(f->st, name) : sdxl_torch_find(f->pt, name);
}

size_t sdxl_tf_metadata_count(const sdxl_tensorfile *f) {
    if (!f) return 0;
    return f->st ? sdxl_st_metadata_count(f->st) : sdxl_torch_metadata_count(f->pt);
}

bool sdxl_tf_metadata_at(const sdxl_tensorfile *f, size_t i, const char **key, const char **value) {
    if (!f) return false;
    return f->st ? sdxl_st_metadata_at(f->st, i, key, value) : sdxl_torch_metadata_at(f->pt, i, key, value);
}

const char *sdxl_tf_metadata(const sdxl_tensorfile *f, const char *key) {
    if (!f) return NULL;
    return f->st ? sdxl_st_metadata(f->st, key) : sdxl_torch_metadata(f->pt, key);
}

size_t sdxl_tf_bytes(const sdxl_tensorfile *f) {
    if (!f) return 0;
    return sizeof *f + (f->st ? f->st_bytes : sdxl_torch_bytes(f->pt));
}

/* ---- conversion --------------------------------------------------------- */

#define CONV_CHUNK 1024

sdxl_status sdxl_tf_to_f32(const sdxl_st_tensor *t, float *dst, sdxl_error *err) {
    if (!t) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_tf_to_f32: tensor is NULL");
    size_t es = sdxl_st_dtype_size(t->dtype);
    const char *name = t->name ? t->name : "?";
    switch (t->dtype) {
    case SDXL_ST_F32:
    case SDXL_ST_F16:
    case SDXL_ST_BF16:
    case SDXL_ST_F64:
    case SDXL_ST_I64:
    case SDXL_ST_I32: break;
    default:
        return sdxl_error_set(
            err, SDXL_STATUS_UNSUPPORTED,
            "tensor \"%.200s\" has dtype %s; only F32, F16, BF16, F64, I64 and I32 convert to f32", name,
            sdxl_st_dtype_name(t->dtype));
    }
    if (t->nbytes % es)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "tensor \"%.200s\": %zu bytes is not a whole number of %s elements", name,
                              t->nbytes, sdxl_st_dtype_name(t->dtype));
    size_t n = t->nbytes / es;
    if (!n) return SDXL_STATUS_OK;
    if (!dst || !t->data)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_tf_to_f32: data or dst is NULL (tensor \"%.200s\")", name);
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case SDXL_ST_F32: memcpy(dst, src, n * 4); break;
    case SDXL_ST_F16:
    case SDXL_ST_BF16: {
        void (*conv)(const uint16_t *, float *, size_t) =
            t->dtype == SDXL_ST_F16 ? sdxl_f16_to_f32_n : sdxl_bf16_to_f32_n;
        if ((uintptr_t)src % 2 == 0) {
            conv((const uint16_t *)(const void *)src, dst, n);
            break;
        }
        uint16_t tmp[CONV_CHUNK];
        for (size_t i = 0; i < n; i += CONV_CHUNK) {
            size_t k = n - i < CONV_CHUNK ? n - i : CONV_CHUNK;
            memcpy(tmp, src + 2 * i, 2 * k);
            conv(tmp, dst + i, k);
        }
        break;
    }
    case SDXL_ST_F64:
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    case SDXL_ST_I64:
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    default: /* I32 */
        for (size_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, src + 4 * i, 4);
            dst[i] = (float)v;
        }
    }
    return SDXL_STATUS_OK;
}
