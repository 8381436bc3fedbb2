/* safetensors.c - defensive safetensors reader (mmap, zero-copy) and an
 * atomic writer. See safetensors.h for what is accepted and why.
 *
 * Reading happens in four steps, each trusting only what the previous one
 * proved:
 *   1. framing: header length against the file size and the cap;
 *   2. a lexical pass over the raw JSON text: strict UTF-8, strings without
 *      raw control characters or \u0000, and every number a plain integer
 *      below 2^53. cJSON stores numbers as doubles, so "1.5", "1e300",
 *      "-0" or 2^53+1 would otherwise arrive rounded or clamped; checking the
 *      text means every double cJSON gives us afterwards is exact;
 *   3. cJSON builds the tree (structure and escapes);
 *   4. the tree is checked entry by entry and copied into one allocation
 *      (tensor table, name index, metadata, strings), sorted by offset to
 *      find overlaps, and by name to find duplicates and serve lookups.
 */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/utf8.h"
#include "core/alloc.h"
#include "core/log.h"

#define MAX_EXACT ((uint64_t)1 << 53) /* doubles hold every integer below this */
#define MEMORY_PATH "<memory>"

typedef sdxl_st_kv st_kv;

struct sdxl_st_file {
    const uint8_t *map; /* mapping base; NULL for sdxl_st_parse */
    size_t map_len;
    const uint8_t *data; /* data section */
    uint64_t header_len, data_len;
    size_t n_tensors, n_meta;
    sdxl_st_tensor *tensors;        /* [n_tensors] by data offset */
    const sdxl_st_tensor **by_name; /* [n_tensors] by strcmp(name) */
    st_kv *meta;                    /* [n_meta] in file order */
    const st_kv **meta_by_key;      /* [n_meta] by strcmp(key) */
    const char *path;
    /* the arrays and strings follow in the same block */
};

/* ---- dtypes ------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_info[SDXL_ST_DTYPE_COUNT_] = {
    [SDXL_ST_BOOL] = {"BOOL", 1}, [SDXL_ST_U8] = {"U8", 1},           [SDXL_ST_I8] = {"I8", 1},
    [SDXL_ST_I16] = {"I16", 2},   [SDXL_ST_U16] = {"U16", 2},         [SDXL_ST_I32] = {"I32", 4},
    [SDXL_ST_U32] = {"U32", 4},   [SDXL_ST_I64] = {"I64", 8},         [SDXL_ST_U64] = {"U64", 8},
    [SDXL_ST_F16] = {"F16", 2},   [SDXL_ST_BF16] = {"BF16", 2},       [SDXL_ST_F32] = {"F32", 4},
    [SDXL_ST_F64] = {"F64", 8},   [SDXL_ST_F8_E4M3] = {"F8_E4M3", 1}, [SDXL_ST_F8_E5M2] = {"F8_E5M2", 1},
};

size_t sdxl_st_dtype_size(sdxl_st_dtype t) {
    return (unsigned)t < SDXL_ST_DTYPE_COUNT_ ? dtype_info[t].size : 0;
}

const char *sdxl_st_dtype_name(sdxl_st_dtype t) {
    return (unsigned)t < SDXL_ST_DTYPE_COUNT_ ? dtype_info[t].name : "?";
}

bool sdxl_st_dtype_from_name(const char *name, sdxl_st_dtype *out) {
    if (!name) return false;
    for (int i = 0; i < SDXL_ST_DTYPE_COUNT_; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            if (out) *out = (sdxl_st_dtype)i;
            return true;
        }
    }
    return false;
}

/* ---- message helpers ---------------------------------------------------- */

/* Names and keys come from the file: quote them, escape control bytes and
 * cut them short, so that one hostile string can neither fill the 512-byte
 * message nor put escape sequences on a terminal. Returned by value so it can
 * be used inline in a printf argument list (C11 temporary lifetime). */
typedef struct {
    char s[88];
} qstr;

static qstr quote_n(const char *s, size_t n) {
    qstr q;
    size_t o = 0;
    q.s[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 8 >= sizeof q.s) {
            memcpy(q.s + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(q.s + o, sizeof q.s - o, "\\x%02x", c);
        else if (c == '"' || c == '\\') {
            q.s[o++] = '\\';
            q.s[o++] = (char)c;
        } else
            q.s[o++] = (char)c;
    }
    q.s[o++] = '"';
    q.s[o] = '\0';
    return q;
}

static qstr quote(const char *s) {
    return quote_n(s, strlen(s));
}

static const char *json_type_name(const cJSON *j) {
    if (cJSON_IsObject(j)) return "object";
    if (cJSON_IsArray(j)) return "array";
    if (cJSON_IsString(j)) return "string";
    if (cJSON_IsNumber(j)) return "number";
    if (cJSON_IsBool(j)) return "boolean";
    if (cJSON_IsNull(j)) return "null";
    return "invalid value";
}

__attribute__((format(printf, 3, 4))) static sdxl_status bad(sdxl_error *err, const char *path,
                                                             const char *fmt, ...) {
    char msg[SDXL_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %s", path, msg);
}

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* ---- step 2: the lexical pass ------------------------------------------- */

static bool is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
static bool is_number_char(unsigned char c) {
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}
static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Why a number token is not a valid dim/offset, or NULL if it is one. */
static const char *number_problem(const char *tok, size_t len) {
    if (tok[0] == '-') return "is negative";
    for (size_t i = 0; i < len; i++)
        if (tok[i] < '0' || tok[i] > '9') return "is not a plain integer (fraction, exponent or sign)";
    if (len > 1 && tok[0] == '0') return "has a leading zero";
    if (len > 16) return "is too large (the limit is 2^53 - 1)";
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (uint64_t)(tok[i] - '0');
    if (v >= MAX_EXACT) return "is too large (the limit is 2^53 - 1)";
    return NULL;
}

static sdxl_status scan_header(const char *h, size_t n, const char *path, sdxl_error *err) {
    size_t at = sdxl_utf8_invalid_at(h, n);
    if (at != n)
        return bad(err, path, "header is not valid UTF-8 (byte 0x%02x at header byte %zu)",
                   (unsigned char)h[at], at);

    size_t i = 0;
    while (i < n && is_ws((unsigned char)h[i]))
        i++;
    if (i == n) return bad(err, path, "header is only whitespace; expected a JSON object");
    if (h[i] != '{')
        return bad(err, path, "header is not a JSON object (it starts with '%c')",
                   (unsigned char)h[i] >= 0x20 && (unsigned char)h[i] < 0x7f ? h[i] : '?');

    /* The key of the current top-level entry, for messages. */
    const char *key = NULL;
    size_t key_len = 0;
    int depth = 0;
    bool expect_key = false;
    while (i < n) {
        unsigned char c = (unsigned char)h[i];
        if (is_ws(c)) {
            i++;
        } else if (c == '{' || c == '[') {
            if (++depth == 1) expect_key = (c == '{');
            i++;
        } else if (c == '}' || c == ']') {
            depth--;
            i++;
        } else if (c == ',') {
            if (depth == 1) expect_key = true;
            i++;
        } else if (c == ':') {
            i++;
        } else if (c == '"') {
            size_t j = i + 1;
            for (;;) {
                if (j >= n) return bad(err, path, "header: string at header byte %zu is not terminated", i);
                unsigned char b = (unsigned char)h[j];
                if (b == '"') break;
                if (b < 0x20)
                    return bad(err, path,
                               "header: raw control character 0x%02x in a string at header byte %zu", b, j);
                if (b != '\\') {
                    j++;
                    continue;
                }
                if (j + 1 >= n)
                    return bad(err, path, "header: string at header byte %zu is not terminated", i);
                unsigned char e = (unsigned char)h[j + 1];
                if (e == 'u') {
                    int v = 0;
                    for (size_t k = 2; k < 6; k++) {
                        int d = j + k < n ? hex_value((unsigned char)h[j + k]) : -1;
                        if (d < 0) return bad(err, path, "header: invalid \\u escape at header byte %zu", j);
                        v = v * 16 + d;
                    }
                    /* A NUL would silently cut the C string short: "a\u0000b"
                     * and "a" would then name the same tensor. */
                    if (v == 0)
                        return bad(err, path, "header: string at header byte %zu contains \\u0000 (NUL)", i);
                    j += 6;
                } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                           e == 'r' || e == 't') {
                    j += 2;
                } else {
                    return bad(err, path, "header: invalid escape at header byte %zu", j);
                }
            }
            if (depth == 1 && expect_key) {
                key = h + i + 1;
                key_len = j - i - 1;
                expect_key = false;
            }
            i = j + 1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i;
            while (j < n && is_number_char((unsigned char)h[j]))
                j++;
            const char *why = number_problem(h + i, j - i);
            if (why) {
                const char *what = !key                                                  ? "header"
                                   : (key_len == 12 && !memcmp(key, "__metadata__", 12)) ? "metadata"
                                                                                         : "tensor";
                return bad(err, path,
                           "%s%s%s: number %.*s%s at header byte %zu %s; shape dims and data offsets must be "
                           "integers "
                           "in [0, 2^53)",
                           what, key ? " " : "", key ? quote_n(key, key_len).s : "",
                           (int)(j - i > 24 ? 24 : j - i), h + i, j - i > 24 ? "..." : "", i, why);
            }
            i = j;
        } else if (c >= 'a' && c <= 'z') {
            i++; /* true / false / null: cJSON checks the spelling */
        } else {
            return bad(err, path, "header: unexpected byte 0x%02x at header byte %zu", c, i);
        }
    }
    return SDXL_STATUS_OK;
}

/* ---- step 4: entries ---------------------------------------------------- */

/* An integer the lexical pass already proved exact; checked again because a
 * wrong answer here would be an out-of-bounds read later. */
static bool exact_u53(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d < (double)MAX_EXACT) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

static sdxl_status check_tensor(const cJSON *e, sdxl_st_tensor *t, const uint8_t *data, uint64_t data_len,
                                const char *path, sdxl_error *err) {
    qstr name = quote(e->string);
    if (!cJSON_IsObject(e))
        return bad(err, path, "tensor %s: entry is a %s, not an object with dtype, shape and data_offsets",
                   name.s, json_type_name(e));

    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *f = e->child; f; f = f->next) {
        const cJSON **slot = !strcmp(f->string, "dtype")          ? &dtype
                             : !strcmp(f->string, "shape")        ? &shape
                             : !strcmp(f->string, "data_offsets") ? &offsets
                                                                  : NULL;
        if (!slot)
            return bad(err, path, "tensor %s: unexpected field %s (expected dtype, shape, data_offsets)",
                       name.s, quote(f->string).s);
        if (*slot) return bad(err, path, "tensor %s: field %s given twice", name.s, quote(f->string).s);
        *slot = f;
    }
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offsets ? "data_offsets" : NULL;
    if (missing) return bad(err, path, "tensor %s: missing field \"%s\"", name.s, missing);

    if (!cJSON_IsString(dtype))
        return bad(err, path, "tensor %s: dtype is a %s, not a string", name.s, json_type_name(dtype));
    if (!sdxl_st_dtype_from_name(dtype->valuestring, &t->dtype))
        return bad(err, path, "tensor %s: unknown dtype %s", name.s, quote(dtype->valuestring).s);

    if (!cJSON_IsArray(shape))
        return bad(err, path, "tensor %s: shape is a %s, not an array", name.s, json_type_name(shape));
    int ndim = 0;
    for (const cJSON *d = shape->child; d; d = d->next) {
        if (ndim == SDXL_ST_MAX_DIMS)
            return bad(err, path, "tensor %s: shape has %d dimensions, more than the limit of %d", name.s,
                       cJSON_GetArraySize(shape), SDXL_ST_MAX_DIMS);
        uint64_t v;
        if (!exact_u53(d, &v))
            return bad(err, path, "tensor %s: shape[%d] is a %s, not an integer in [0, 2^53)", name.s, ndim,
                       json_type_name(d));
        t->shape[ndim++] = (int64_t)v;
    }
    t->ndim = ndim;

    if (!cJSON_IsArray(offsets))
        return bad(err, path, "tensor %s: data_offsets is a %s, not an array", name.s,
                   json_type_name(offsets));
    int n_off = cJSON_GetArraySize(offsets);
    if (n_off != 2)
        return bad(err, path, "tensor %s: data_offsets has %d elements, expected two: [begin, end]", name.s,
                   n_off);
    uint64_t begin, end;
    if (!exact_u53(offsets->child, &begin) || !exact_u53(offsets->child->next, &end))
        return bad(err, path, "tensor %s: data_offsets must be two integers in [0, 2^53)", name.s);
    if (begin > end)
        return bad(err, path, "tensor %s: data_offsets [%llu, %llu]: begin is after end", name.s,
                   (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return bad(err, path,
                   "tensor %s: data_offsets [%llu, %llu] reach past the end of the data section (%llu bytes)",
                   name.s, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_len);

    char sh[160];
    format_shape(sh, sizeof sh, ndim, t->shape);
    uint64_t nelem = 1, need;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(nelem, (uint64_t)t->shape[i], &nelem))
            return bad(err, path, "tensor %s: shape %s: element count overflows 64 bits", name.s, sh);
    if (__builtin_mul_overflow(nelem, sdxl_st_dtype_size(t->dtype), &need))
        return bad(err, path, "tensor %s: shape %s of %s: byte size overflows 64 bits", name.s, sh,
                   sdxl_st_dtype_name(t->dtype));
    if (need != end - begin)
        return bad(err, path,
                   "tensor %s: shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] hold %llu",
                   name.s, sh, sdxl_st_dtype_name(t->dtype), (unsigned long long)need,
                   (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin));
    t->offset = begin;
    t->nbytes = (size_t)(end - begin); /* <= data_len, which is a size_t */
    t->data = data + begin;
    return SDXL_STATUS_OK;
}

static int cmp_by_offset(const void *pa, const void *pb) {
    const sdxl_st_tensor *a = pa, *b = pb;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes) return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int cmp_by_name(const void *pa, const void *pb) {
    return strcmp((*(const sdxl_st_tensor *const *)pa)->name, (*(const sdxl_st_tensor *const *)pb)->name);
}

static int cmp_by_key(const void *pa, const void *pb) {
    return strcmp((*(const st_kv *const *)pa)->key, (*(const st_kv *const *)pb)->key);
}

static char *copy_str(char **cursor, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = *cursor;
    memcpy(d, s, n);
    *cursor += n;
    return d;
}

/* Checked size arithmetic for the block layout. */
static bool add_size(size_t *acc, size_t n, size_t each) {
    size_t bytes;
    if (__builtin_mul_overflow(n, each, &bytes)) return false;
    bytes = (bytes + 7) & ~(size_t)7;
    return !__builtin_add_overflow(*acc, bytes, acc);
}

/* The whole reader over [base, base+len). `map` is what close must unmap
 * (NULL for caller memory); it is recorded only on success. */
static sdxl_status parse_impl(const uint8_t *base, size_t len, const char *path, bool mapped,
                              sdxl_st_file **out, sdxl_error *err) {
    /* ---- step 1: framing */
    if (len < 8) return bad(err, path, "file is %zu bytes, too short for the 8-byte header length", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | base[i];
    if (hlen == 0) return bad(err, path, "header length is 0; expected a JSON object");
    if (hlen > SDXL_ST_MAX_HEADER)
        return bad(err, path,
                   "header length %llu is over the cap of %u bytes (corrupt or not a safetensors file)",
                   (unsigned long long)hlen, SDXL_ST_MAX_HEADER);
    if (hlen > len - 8)
        return bad(err, path, "header length %llu is larger than the %zu bytes after it (truncated file?)",
                   (unsigned long long)hlen, len - 8);
    const char *h = (const char *)base + 8;
    const uint8_t *data = base + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;

    /* ---- step 2 */
    sdxl_status st = scan_header(h, (size_t)hlen, path, err);
    if (st != SDXL_STATUS_OK) return st;

    /* ---- step 3 */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, (size_t)hlen, &end, 0);
    if (!root) {
        size_t pos = end && end >= h && end <= h + hlen ? (size_t)(end - h) : 0;
        return bad(err, path, "header is not valid JSON (error near header byte %zu)", pos);
    }
    sdxl_st_file *f = NULL;
    for (const char *p = end; p < h + hlen; p++) {
        if (!is_ws((unsigned char)*p)) {
            st = bad(err, path, "trailing bytes after the JSON object at header byte %zu", (size_t)(p - h));
            goto fail;
        }
    }
    if (!cJSON_IsObject(root)) { /* the lexical pass saw '{'; kept as a guard */
        st = bad(err, path, "header is a %s, not a JSON object", json_type_name(root));
        goto fail;
    }

    /* ---- step 4a: count and validate metadata shape, to size one block */
    size_t n_tensors = 0, n_meta = 0, str_bytes = strlen(path) + 1;
    const cJSON *meta = NULL;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") != 0) {
            if (++n_tensors > SDXL_ST_MAX_TENSORS) {
                st = bad(err, path, "more than %u tensors", SDXL_ST_MAX_TENSORS);
                goto fail;
            }
            str_bytes += strlen(e->string) + 1;
            continue;
        }
        if (meta) {
            st = bad(err, path, "duplicate \"__metadata__\" entry");
            goto fail;
        }
        meta = e;
        if (!cJSON_IsObject(e)) {
            st = bad(err, path, "\"__metadata__\" is a %s, not an object of strings", json_type_name(e));
            goto fail;
        }
        for (const cJSON *kv = e->child; kv; kv = kv->next) {
            if (!cJSON_IsString(kv)) {
                st = bad(err, path, "metadata %s is a %s, not a string", quote(kv->string).s,
                         json_type_name(kv));
                goto fail;
            }
            n_meta++;
            str_bytes += strlen(kv->string) + strlen(kv->valuestring) + 2;
        }
    }

    size_t size = 0, o_tensors, o_by_name, o_meta, o_meta_by_key, o_str;
    bool ok = add_size(&size, 1, sizeof(sdxl_st_file));
    o_tensors = size;
    ok = ok && add_size(&size, n_tensors, sizeof(sdxl_st_tensor));
    o_by_name = size;
    ok = ok && add_size(&size, n_tensors, sizeof(sdxl_st_tensor *));
    o_meta = size;
    ok = ok && add_size(&size, n_meta, sizeof(st_kv));
    o_meta_by_key = size;
    ok = ok && add_size(&size, n_meta, sizeof(st_kv *));
    o_str = size;
    ok = ok && add_size(&size, str_bytes, 1);
    uint8_t *block = ok ? sdxl_malloc(size) : NULL;
    if (!block) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY,
                            "%s: out of memory for the tensor table (%zu bytes)", path, size);
        goto fail;
    }
    memset(block, 0, o_str);
    f = (sdxl_st_file *)block;
    f->data = data;
    f->header_len = hlen;
    f->data_len = data_len;
    f->n_tensors = n_tensors;
    f->n_meta = n_meta;
    f->tensors = (sdxl_st_tensor *)(block + o_tensors);
    f->by_name = (const sdxl_st_tensor **)(block + o_by_name);
    f->meta = (st_kv *)(block + o_meta);
    f->meta_by_key = (const st_kv **)(block + o_meta_by_key);
    char *cursor = (char *)block + o_str;
    f->path = copy_str(&cursor, path);

    /* ---- step 4b: fill */
    size_t ti = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == meta) continue;
        sdxl_st_tensor *t = &f->tensors[ti++];
        t->name = copy_str(&cursor, e->string);
        st = check_tensor(e, t, data, data_len, path, err);
        if (st != SDXL_STATUS_OK) goto fail;
    }
    size_t mi = 0;
    for (const cJSON *kv = meta ? meta->child : NULL; kv; kv = kv->next, mi++) {
        f->meta[mi].key = copy_str(&cursor, kv->string);
        f->meta[mi].value = copy_str(&cursor, kv->valuestring);
        f->meta_by_key[mi] = &f->meta[mi];
    }
    cJSON_Delete(root);
    root = NULL;

    /* ---- step 4c: layout. Sorted by begin, a tensor overlaps an earlier one
     * exactly when it starts before the furthest end seen so far. Tensors
     * with no bytes overlap nothing, wherever they point. */
    qsort(f->tensors, n_tensors, sizeof *f->tensors, cmp_by_offset);
    uint64_t covered = 0, unused = 0;
    const sdxl_st_tensor *last = NULL;
    for (size_t i = 0; i < n_tensors; i++) {
        const sdxl_st_tensor *t = &f->tensors[i];
        if (t->nbytes == 0) continue;
        if (t->offset < covered) {
            st = bad(err, path, "tensors %s [%llu, %llu) and %s [%llu, %llu) overlap", quote(last->name).s,
                     (unsigned long long)last->offset, (unsigned long long)(last->offset + last->nbytes),
                     quote(t->name).s, (unsigned long long)t->offset,
                     (unsigned long long)(t->offset + t->nbytes));
            goto fail;
        }
        unused += t->offset - covered;
        covered = t->offset + t->nbytes;
        last = t;
    }
    unused += data_len - covered;
    if (unused)
        SDXL_LOG_D("%s: %llu of %llu data bytes belong to no tensor (gaps are allowed)", path,
                   (unsigned long long)unused, (unsigned long long)data_len);

    for (size_t i = 0; i < n_tensors; i++)
        f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, n_tensors, sizeof *f->by_name, cmp_by_name);
    for (size_t i = 1; i < n_tensors; i++) {
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
            st = bad(err, path, "duplicate tensor name %s", quote(f->by_name[i]->name).s);
            goto fail;
        }
    }
    qsort(f->meta_by_key, n_meta, sizeof *f->meta_by_key, cmp_by_key);
    for (size_t i = 1; i < n_meta; i++) {
        if (strcmp(f->meta_by_key[i - 1]->key, f->meta_by_key[i]->key) == 0) {
            st = bad(err, path, "duplicate metadata key %s", quote(f->meta_by_key[i]->key).s);
            goto fail;
        }
    }

    if (mapped) {
        f->map = base;
        f->map_len = len;
    }
    *out = f;
    return SDXL_STATUS_OK;

fail:
    cJSON_Delete(root);
    sdxl_free(f);
    return st;
}

/* ---- public reader API -------------------------------------------------- */

sdxl_status sdxl_st_parse(const void *buf, size_t len, sdxl_st_file **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_st_parse: out is NULL");
    *out = NULL;
    if (!buf && len) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_st_parse: buf is NULL");
    return parse_impl(buf ? buf : "", len, MEMORY_PATH, false, out, err);
}

sdxl_status sdxl_st_open(const char *path, sdxl_st_file **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_st_open: out is NULL");
    *out = NULL;
    if (!path) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_st_open: path is NULL");
    /* O_NONBLOCK: a FIFO given by mistake must not hang the open; it is
     * rejected below as not a regular file. No effect on regular files. */
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
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return sdxl_error_set(err, SDXL_STATUS_IO, "%s: too large to map", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) { /* also avoids mmap of length 0, which fails */
        close(fd);
        return bad(err, path, "file is %zu bytes, too short for the 8-byte header length", len);
    }
    void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file */
    if (m == MAP_FAILED)
        return sdxl_error_set(err, SDXL_STATUS_IO, "%s: cannot map %zu bytes: %s", path, len, strerror(e));
    sdxl__mem_track_mapped((int64_t)len);
    sdxl_status st = parse_impl(m, len, path, true, out, err);
    if (st != SDXL_STATUS_OK) {
        munmap(m, len);
        sdxl__mem_track_mapped(-(int64_t)len);
    }
    return st;
}

void sdxl_st_close(sdxl_st_file *f) {
    if (!f) return;
    if (f->map) {
        munmap((void *)f->map, f->map_len);
        sdxl__mem_track_mapped(-(int64_t)f->map_len);
    }
    sdxl_free(f);
}

size_t sdxl_st_count(const sdxl_st_file *f) {
    return f ? f->n_tensors : 0;
}

const sdxl_st_tensor *sdxl_st_at(const sdxl_st_file *f, size_t i) {
    return f && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const sdxl_st_tensor *sdxl__st_find_sorted(const sdxl_st_tensor *const *by_name, size_t n, const char *name) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, by_name[mid]->name);
        if (c == 0) return by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *sdxl__st_kv_find_sorted(const sdxl_st_kv *const *by_key, size_t n, const char *key) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, by_key[mid]->key);
        if (c == 0) return by_key[mid]->value;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const sdxl_st_tensor *sdxl_st_find(const sdxl_st_file *f, const char *name) {
    return f && name ? sdxl__st_find_sorted(f->by_name, f->n_tensors, name) : NULL;
}

size_t sdxl_st_metadata_count(const sdxl_st_file *f) {
    return f ? f->n_meta : 0;
}

bool sdxl_st_metadata_at(const sdxl_st_file *f, size_t i, const char **key, const char **value) {
    if (!f || i >= f->n_meta) return false;
    if (key) *key = f->meta[i].key;
    if (value) *value = f->meta[i].value;
    return true;
}

const char *sdxl_st_metadata(const sdxl_st_file *f, const char *key) {
    return f && key ? sdxl__st_kv_find_sorted(f->meta_by_key, f->n_meta, key) : NULL;
}

const char *sdxl_st_path(const sdxl_st_file *f) {
    return f ? f->path : MEMORY_PATH;
}
uint64_t sdxl_st_header_size(const sdxl_st_file *f) {
    return f ? f->header_len : 0;
}
uint64_t sdxl_st_data_size(const sdxl_st_file *f) {
    return f ? f->data_len : 0;
}

sdxl_status sdxl_st_view(const sdxl_st_file *f, const sdxl_st_tensor *t, sdxl_tensor *out, sdxl_error *err) {
    if (!t || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_st_view: tensor or out is NULL");
    const char *path = sdxl_st_path(f);
    sdxl_dtype dt;
    switch (t->dtype) {
    case SDXL_ST_F32: dt = SDXL_DTYPE_F32; break;
    case SDXL_ST_F16: dt = SDXL_DTYPE_F16; break;
    case SDXL_ST_BF16: dt = SDXL_DTYPE_BF16; break;
    case SDXL_ST_I32: dt = SDXL_DTYPE_I32; break;
    default:
        return sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED,
                              "%s: tensor %s has dtype %s; engine tensors are F32, F16, BF16 or I32", path,
                              quote(t->name).s, sdxl_st_dtype_name(t->dtype));
    }
    if (t->ndim < 0 || t->ndim > SDXL_MAX_DIMS)
        return sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED,
                              "%s: tensor %s has %d dimensions; engine tensors have at most %d", path,
                              quote(t->name).s, t->ndim, SDXL_MAX_DIMS);
    size_t es = sdxl_st_dtype_size(t->dtype);
    if (t->nbytes && (uintptr_t)t->data % es)
        return sdxl_error_set(
            err, SDXL_STATUS_UNSUPPORTED,
            "%s: tensor %s: data at offset %llu is not aligned to its %zu-byte elements (copy it "
            "to aligned memory first)",
            path, quote(t->name).s, (unsigned long long)t->offset, es);
    *out = sdxl_tensor_make((void *)(uintptr_t)t->data, dt, t->ndim, t->shape);
    return SDXL_STATUS_OK;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *q = sdxl_realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_puts(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static bool valid_utf8(const char *s) {
    size_t n = strlen(s);
    return sdxl_utf8_invalid_at(s, n) == n;
}

static int cmp_entry_name(const void *pa, const void *pb) {
    return strcmp((*(const sdxl_st_write_entry *const *)pa)->name,
                  (*(const sdxl_st_write_entry *const *)pb)->name);
}

static int cmp_cstr(const void *pa, const void *pb) {
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

static sdxl_status write_all(int fd, const void *buf, size_t n, const char *tmp, sdxl_error *err) {
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return sdxl_error_set(err, SDXL_STATUS_IO, "%s: write failed: %s", tmp,
                                  w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return SDXL_STATUS_OK;
}

/* Make the rename durable; failure is only logged, the file is complete.
 * `scratch` is a writable copy of path (dirname modifies it), allocated with
 * everything else before the file was created. */
static void fsync_parent_dir(const char *path, char *scratch) {
    int fd = open(dirname(scratch), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) SDXL_LOG_W("%s: could not fsync its directory: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
}

static sdxl_status validate_entries(const sdxl_st_write_entry *entries, size_t n, bool need_data,
                                    const char *path, sdxl_error *err) {
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const sdxl_st_write_entry *e = &entries[i];
        if (!e->name)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: entry %zu has no name", path, i);
        qstr name = quote(e->name);
        if (!valid_utf8(e->name) || !strcmp(e->name, "__metadata__"))
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: entry %zu: invalid tensor name %s", path,
                                  i, name.s);
        if ((unsigned)e->dtype >= SDXL_ST_DTYPE_COUNT_)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: tensor %s: invalid dtype %d", path,
                                  name.s, (int)e->dtype);
        if (e->ndim < 0 || e->ndim > SDXL_ST_MAX_DIMS || (e->ndim > 0 && !e->shape))
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: tensor %s: invalid ndim %d or no shape",
                                  path, name.s, e->ndim);
        uint64_t nbytes = sdxl_st_dtype_size(e->dtype);
        for (int d = 0; d < e->ndim; d++) {
            if (e->shape[d] < 0 || (uint64_t)e->shape[d] >= MAX_EXACT ||
                __builtin_mul_overflow(nbytes, (uint64_t)e->shape[d], &nbytes))
                return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                      "%s: tensor %s: invalid or too large shape", path, name.s);
        }
        if (need_data && nbytes && !e->data)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: tensor %s: data is NULL", path, name.s);
        if (__builtin_add_overflow(off, nbytes, &off) || off >= MAX_EXACT)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: data section too large at tensor %s",
                                  path, name.s);
    }
    return SDXL_STATUS_OK;
}

/* Both writers: data from entries[i].data (fill == NULL), or streamed
 * through `fill` in chunks of at most SDXL_ST_WRITE_CHUNK bytes. */
static sdxl_status write_impl(const char *path, const sdxl_st_write_entry *entries, size_t n,
                              const char *const *metadata_kv, sdxl_st_fill_fn fill, void *user_data,
                              sdxl_error *err) {
    if (!path || (n && !entries))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_st_write: path or entries is NULL");
    if (n > SDXL_ST_MAX_TENSORS)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: %zu tensors, over the limit of %u", path, n,
                              SDXL_ST_MAX_TENSORS);
    sdxl_status st = validate_entries(entries, n, fill == NULL, path, err);
    if (st != SDXL_STATUS_OK) return st;
    size_t n_meta = 0;
    if (metadata_kv) {
        for (; metadata_kv[2 * n_meta]; n_meta++) {
            const char *k = metadata_kv[2 * n_meta], *v = metadata_kv[2 * n_meta + 1];
            if (!v || !valid_utf8(k) || !valid_utf8(v))
                return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                      "%s: metadata key %s has no value or is not UTF-8", path, quote(k).s);
        }
    }

    /* All allocations happen before the temporary file exists, so running out
     * of memory never leaves anything on disk. */
    sdxl_status ret = SDXL_STATUS_OUT_OF_MEMORY;
    sbuf hb = {0};
    int fd = -1;
    size_t path_len = strlen(path);
    char *tmp = sdxl_malloc(2 * (path_len + 5)); /* "<path>.tmp", then a scratch copy of path */
    size_t n_sort = n > n_meta ? n : n_meta;
    const void **sorted = sdxl_malloc((n_sort ? n_sort : 1) * sizeof *sorted);
    /* the streaming buffer: no larger than the largest tensor */
    size_t chunk = 0;
    void *chunk_buf = NULL;
    if (fill) {
        for (size_t i = 0; i < n; i++) {
            size_t nbytes = sdxl_st_dtype_size(entries[i].dtype);
            for (int d = 0; d < entries[i].ndim; d++)
                nbytes *= (size_t)entries[i].shape[d]; /* checked in validate_entries */
            if (nbytes > chunk) chunk = nbytes;
        }
        if (chunk > SDXL_ST_WRITE_CHUNK) chunk = SDXL_ST_WRITE_CHUNK;
        chunk_buf = sdxl_malloc(chunk ? chunk : 1);
        if (!chunk_buf) goto oom;
    }
    if (!tmp || !sorted) goto oom;
    memcpy(tmp, path, path_len);
    memcpy(tmp + path_len, ".tmp", 5);
    char *scratch = tmp + path_len + 5;
    memcpy(scratch, path, path_len + 1);

    for (size_t i = 0; i < n; i++)
        sorted[i] = &entries[i];
    qsort(sorted, n, sizeof *sorted, cmp_entry_name);
    for (size_t i = 1; i < n; i++) {
        const char *a = ((const sdxl_st_write_entry *)sorted[i - 1])->name;
        if (!strcmp(a, ((const sdxl_st_write_entry *)sorted[i])->name)) {
            ret = sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: duplicate tensor name %s", path,
                                 quote(a).s);
            goto done;
        }
    }
    for (size_t i = 0; i < n_meta; i++)
        sorted[i] = metadata_kv[2 * i];
    qsort(sorted, n_meta, sizeof *sorted, cmp_cstr);
    for (size_t i = 1; i < n_meta; i++) {
        if (!strcmp(sorted[i - 1], sorted[i])) {
            ret = sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: duplicate metadata key %s", path,
                                 quote(sorted[i]).s);
            goto done;
        }
    }

    /* ---- header */
    sb_put(&hb, "{", 1);
    bool first = true;
    if (n_meta) {
        sb_puts(&hb, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) sb_put(&hb, ",", 1);
            sb_json_string(&hb, metadata_kv[2 * i]);
            sb_put(&hb, ":", 1);
            sb_json_string(&hb, metadata_kv[2 * i + 1]);
        }
        sb_put(&hb, "}", 1);
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const sdxl_st_write_entry *e = &entries[i];
        uint64_t nbytes = sdxl_st_dtype_size(e->dtype);
        for (int d = 0; d < e->ndim; d++)
            nbytes *= (uint64_t)e->shape[d]; /* checked in validate_entries */
        char num[64];
        if (!first) sb_put(&hb, ",", 1);
        first = false;
        sb_json_string(&hb, e->name);
        sb_puts(&hb, ":{\"dtype\":\"");
        sb_puts(&hb, sdxl_st_dtype_name(e->dtype));
        sb_puts(&hb, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)e->shape[d]);
            sb_puts(&hb, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nbytes));
        sb_puts(&hb, num);
        off += nbytes;
    }
    sb_put(&hb, "}", 1);
    while (!hb.oom && hb.len % 8)
        sb_put(&hb, " ", 1);
    if (hb.oom) goto oom;
    if (hb.len > SDXL_ST_MAX_HEADER) {
        ret = sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                             "%s: header of %zu bytes is over the cap of %u bytes", path, hb.len,
                             SDXL_ST_MAX_HEADER);
        goto done;
    }

    /* ---- file */
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        ret = sdxl_error_set(err, SDXL_STATUS_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)((uint64_t)hb.len >> (8 * i));
    ret = write_all(fd, lenbuf, 8, tmp, err);
    if (ret == SDXL_STATUS_OK) ret = write_all(fd, hb.p, hb.len, tmp, err);
    for (size_t i = 0; i < n && ret == SDXL_STATUS_OK; i++) {
        size_t nbytes = sdxl_st_dtype_size(entries[i].dtype);
        for (int d = 0; d < entries[i].ndim; d++)
            nbytes *= (size_t)entries[i].shape[d];
        if (!fill) {
            if (nbytes) ret = write_all(fd, entries[i].data, nbytes, tmp, err);
            continue;
        }
        /* SDXL_ST_WRITE_CHUNK is a multiple of every element size, so each
         * chunk holds whole elements */
        for (size_t pos = 0; pos < nbytes && ret == SDXL_STATUS_OK; pos += chunk) {
            size_t len = nbytes - pos < chunk ? nbytes - pos : chunk;
            ret = fill(user_data, i, (uint64_t)pos, chunk_buf, len, err);
            if (ret == SDXL_STATUS_OK) ret = write_all(fd, chunk_buf, len, tmp, err);
        }
    }
    if (ret == SDXL_STATUS_OK && fsync(fd) != 0)
        ret = sdxl_error_set(err, SDXL_STATUS_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && ret == SDXL_STATUS_OK)
        ret = sdxl_error_set(err, SDXL_STATUS_IO, "%s: close failed: %s", tmp, strerror(errno));
    fd = -1;
    if (ret == SDXL_STATUS_OK && rename(tmp, path) != 0)
        ret = sdxl_error_set(err, SDXL_STATUS_IO, "%s: cannot rename %s over it: %s", path, tmp,
                             strerror(errno));
    if (ret != SDXL_STATUS_OK)
        unlink(tmp);
    else
        fsync_parent_dir(path, scratch);
    goto done;

oom:
    ret = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory building the header", path);
done:
    sdxl_free(chunk_buf);
    sdxl_free(hb.p);
    sdxl_free(sorted);
    sdxl_free(tmp);
    return ret;
}

sdxl_status sdxl_st_write(const char *path, const sdxl_st_write_entry *entries, size_t n,
                          const char *const *metadata_kv, sdxl_error *err) {
    return write_impl(path, entries, n, metadata_kv, NULL, NULL, err);
}

sdxl_status sdxl_st_write_cb(const char *path, const sdxl_st_write_entry *entries, size_t n,
                             const char *const *metadata_kv, sdxl_st_fill_fn fill, void *user_data,
                             sdxl_error *err) {
    if (!fill) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_st_write_cb: fill is NULL");
    return write_impl(path, entries, n, metadata_kv, fill, user_data, err);
}
