/* config_yaml.c - the block-YAML subset reader of config_yaml.h.
 *
 * One pass over the lines with a stack of open containers. Every frame's
 * dotted path is a prefix of the next one's, so all frames share one path
 * buffer and remember only their length. */
#include "model/config_yaml.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"

#define PATH_MAX_LEN 2048

typedef struct {
    char *path; /* "path\0value\0" in one block */
    char *value;
    int line;
} yentry;

struct sdxl__yaml {
    yentry *e;
    size_t n, cap;
    char *file;
};

typedef enum { FR_MAP, FR_SEQ } frame_kind;

typedef struct {
    frame_kind kind;
    int indent;
    size_t path_len; /* length of this frame's path in the shared buffer */
    int count;       /* items so far (sequences) */
} frame;

typedef struct {
    sdxl__yaml *y;
    const char *file;
    sdxl_error *err;
    frame st[SDXL__YAML_MAX_DEPTH];
    int depth;
    char path[PATH_MAX_LEN];
    size_t path_len;
    /* a "key:" or "-" with nothing after it: its value is the next block */
    bool pending;
    bool pending_from_map;
    int pending_indent;
    size_t pending_path_len;
    int pending_line;
    /* inside a | or > block scalar: skip lines indented more than this */
    bool skipping;
    int skip_indent;
} parser;

static sdxl_status perr(parser *p, int line, const char *why) {
    return sdxl_error_set(p->err, SDXL_STATUS_BAD_INPUT, "%s: line %d: %s", p->file, line, why);
}

static sdxl_status emit(parser *p, size_t path_len, const char *val, size_t vlen, int line) {
    sdxl__yaml *y = p->y;
    if (y->n >= SDXL__YAML_MAX_ENTRIES) return perr(p, line, "too many entries");
    if (y->n == y->cap) {
        size_t cap = y->cap ? y->cap * 2 : 64;
        yentry *ne = sdxl_realloc(y->e, cap * sizeof *ne);
        if (!ne) return sdxl_error_set(p->err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->file);
        y->e = ne;
        y->cap = cap;
    }
    char *b = sdxl_malloc(path_len + vlen + 2);
    if (!b) return sdxl_error_set(p->err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->file);
    memcpy(b, p->path, path_len);
    b[path_len] = 0;
    memcpy(b + path_len + 1, val, vlen);
    b[path_len + 1 + vlen] = 0;
    y->e[y->n++] = (yentry){b, b + path_len + 1, line};
    return SDXL_STATUS_OK;
}

/* Append ".<seg>" (or "<seg>" at the root) to the path; returns new length. */
static sdxl_status path_push(parser *p, size_t base, const char *seg, size_t n, int line, size_t *out) {
    size_t need = base + (base ? 1 : 0) + n;
    if (need >= PATH_MAX_LEN) return perr(p, line, "key path too long");
    if (base) p->path[base++] = '.';
    memcpy(p->path + base, seg, n);
    p->path[need] = 0;
    *out = need;
    return SDXL_STATUS_OK;
}

static sdxl_status push_frame(parser *p, frame_kind k, int indent, size_t path_len, int line) {
    if (p->depth >= SDXL__YAML_MAX_DEPTH) return perr(p, line, "nesting too deep");
    p->st[p->depth++] = (frame){k, indent, path_len, 0};
    return SDXL_STATUS_OK;
}

/* Unquote a scalar into buf (at most cap-1 bytes). Plain scalars are kept
 * as they are; quoted ones lose their quotes and simple escapes. */
static size_t unquote(const char *s, size_t n, char *buf, size_t cap) {
    size_t o = 0;
    if (n >= 2 && ((s[0] == '"' && s[n - 1] == '"') || (s[0] == '\'' && s[n - 1] == '\''))) {
        char q = s[0];
        for (size_t i = 1; i + 1 < n && o + 1 < cap; i++) {
            char c = s[i];
            if (q == '\'' && c == '\'' && i + 2 < n && s[i + 1] == '\'') {
                i++;
            } else if (q == '"' && c == '\\' && i + 2 < n) {
                char e = s[++i];
                c = e == 'n' ? '\n' : e == 't' ? '\t' : e;
            }
            buf[o++] = c;
        }
    } else {
        o = n < cap - 1 ? n : cap - 1;
        memcpy(buf, s, o);
    }
    buf[o] = 0;
    return o;
}

static size_t trim_len(const char *s, size_t n) {
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    return n;
}

/* Offset of the ':' separating a mapping key, or -1. The key must not start
 * with '[', '{' or '-' (those are values). */
static long find_colon(const char *s, size_t n) {
    if (!n || s[0] == '[' || s[0] == '{') return -1;
    char q = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (q) {
            if (c == q) q = 0;
            continue;
        }
        if ((c == '"' || c == '\'') && i == 0) {
            q = c;
            continue;
        }
        if (c == ':' && (i + 1 == n || s[i + 1] == ' ' || s[i + 1] == '\t')) return (long)i;
    }
    return -1;
}

static sdxl_status emit_value(parser *p, size_t path_len, const char *v, size_t vn, int line,
                              int key_indent) {
    char buf[1024];
    if (vn && (v[0] == '|' || v[0] == '>')) { /* block scalar: skip its lines */
        p->skipping = true;
        p->skip_indent = key_indent;
        return emit(p, path_len, "", 0, line);
    }
    if (vn >= 2 && v[0] == '[' && v[vn - 1] == ']' && !memchr(v + 1, '[', vn - 2) &&
        !memchr(v + 1, '{', vn - 2)) {
        /* flow sequence of scalars: one entry per item */
        size_t i = 1, idx = 0;
        while (i < vn - 1) {
            while (i < vn - 1 && (v[i] == ' ' || v[i] == '\t'))
                i++;
            size_t b = i;
            char q = 0;
            while (i < vn - 1 && (q || v[i] != ',')) {
                if (q && v[i] == q)
                    q = 0;
                else if (!q && (v[i] == '"' || v[i] == '\''))
                    q = v[i];
                i++;
            }
            size_t e = b + trim_len(v + b, i - b);
            if (e > b || i < vn - 1) {
                char seg[24];
                int sn = snprintf(seg, sizeof seg, "%zu", idx++);
                size_t pl = 0;
                sdxl_status st = path_push(p, path_len, seg, (size_t)sn, line, &pl);
                if (st) return st;
                size_t un = unquote(v + b, e - b, buf, sizeof buf);
                if ((st = emit(p, pl, buf, un, line))) return st;
            }
            if (i < vn - 1) i++; /* the comma */
        }
        p->path[path_len] = 0;
        return SDXL_STATUS_OK;
    }
    size_t un = unquote(v, vn, buf, sizeof buf);
    return emit(p, path_len, buf, un, line);
}

/* A "key: value" line at column `col` inside the map frame on top. */
static sdxl_status map_line(parser *p, const char *c, size_t n, int col, int line) {
    long ci = find_colon(c, n);
    if (ci < 0) return perr(p, line, "expected 'key: value'");
    char key[256];
    size_t kn = trim_len(c, (size_t)ci);
    if (!kn) return perr(p, line, "empty key");
    kn = unquote(c, kn, key, sizeof key);
    size_t base = p->st[p->depth - 1].path_len, pl = 0;
    sdxl_status st = path_push(p, base, key, kn, line, &pl);
    if (st) return st;
    const char *v = c + ci + 1;
    size_t vn = n - (size_t)ci - 1;
    while (vn && (*v == ' ' || *v == '\t'))
        v++, vn--;
    vn = trim_len(v, vn);
    if (!vn) {
        p->pending = true;
        p->pending_from_map = true;
        p->pending_indent = col;
        p->pending_path_len = pl;
        p->pending_line = line;
        return SDXL_STATUS_OK;
    }
    return emit_value(p, pl, v, vn, line, col);
}

/* A "- ..." line at column `col` inside the sequence frame on top. */
static sdxl_status seq_line(parser *p, const char *c, size_t n, int col, int line) {
    for (;;) {
        frame *f = &p->st[p->depth - 1];
        char seg[24];
        int sn = snprintf(seg, sizeof seg, "%d", f->count++);
        size_t pl = 0;
        sdxl_status st = path_push(p, f->path_len, seg, (size_t)sn, line, &pl);
        if (st) return st;
        size_t off = 1;
        while (off < n && c[off] == ' ')
            off++;
        const char *r = c + off;
        size_t rn = n - off;
        int rcol = col + (int)off;
        if (!rn) {
            p->pending = true;
            p->pending_from_map = false;
            p->pending_indent = col;
            p->pending_path_len = pl;
            p->pending_line = line;
            return SDXL_STATUS_OK;
        }
        if (r[0] == '-' && (rn == 1 || r[1] == ' ')) { /* "- - x": a nested sequence */
            if ((st = push_frame(p, FR_SEQ, rcol, pl, line))) return st;
            c = r, n = rn, col = rcol;
            continue;
        }
        if (find_colon(r, rn) >= 0) { /* "- key: v" opens a mapping item */
            if ((st = push_frame(p, FR_MAP, rcol, pl, line))) return st;
            return map_line(p, r, rn, rcol, line);
        }
        return emit_value(p, pl, r, rn, line, col);
    }
}

static bool is_item(const char *c, size_t n) {
    return n && c[0] == '-' && (n == 1 || c[1] == ' ');
}

static sdxl_status content_line(parser *p, const char *c, size_t n, int ind, int line) {
    sdxl_status st;
    if (p->pending) {
        p->pending = false;
        if (ind > p->pending_indent || (ind == p->pending_indent && p->pending_from_map && is_item(c, n))) {
            if ((st = push_frame(p, is_item(c, n) ? FR_SEQ : FR_MAP, ind, p->pending_path_len, line)))
                return st;
        } else {
            if ((st = emit(p, p->pending_path_len, "", 0, p->pending_line))) return st; /* null value */
        }
    }
    if (p->depth == 0) {
        if ((st = push_frame(p, is_item(c, n) ? FR_SEQ : FR_MAP, ind, 0, line))) return st;
    }
    while (p->depth > 0) {
        frame *f = &p->st[p->depth - 1];
        if (f->indent > ind || (f->indent == ind && f->kind == FR_SEQ && !is_item(c, n) && p->depth > 1))
            p->depth--;
        else
            break;
    }
    if (p->depth == 0 || p->st[p->depth - 1].indent != ind) return perr(p, line, "bad indentation");
    frame *f = &p->st[p->depth - 1];
    p->path[f->path_len] = 0;
    if (f->kind == FR_SEQ) {
        if (!is_item(c, n)) return perr(p, line, "expected a '- ' sequence item");
        return seq_line(p, c, n, ind, line);
    }
    if (is_item(c, n)) return perr(p, line, "a sequence item where a 'key: value' was expected");
    return map_line(p, c, n, ind, line);
}

sdxl_status sdxl__yaml_parse(const char *text, size_t len, const char *path, sdxl__yaml **out,
                             sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl__yaml_parse: out is NULL");
    *out = NULL;
    if (!path) path = "<memory>";
    if (len > SDXL__YAML_MAX_BYTES)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %zu bytes is too large for a config (cap %u)",
                              path, len, SDXL__YAML_MAX_BYTES);
    sdxl__yaml *y = sdxl_calloc(1, sizeof *y);
    if (!y) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    y->file = sdxl_strdup(path);
    if (!y->file) {
        sdxl_free(y);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    parser *p = sdxl_calloc(1, sizeof *p);
    if (!p) {
        sdxl__yaml_free(y);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    p->y = y;
    p->file = path;
    p->err = err;
    sdxl_status st = SDXL_STATUS_OK;
    size_t i = 0;
    int line = 0;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) i = 3; /* UTF-8 byte order mark */
    while (i < len && !st) {
        size_t b = i;
        while (i < len && text[i] != '\n')
            i++;
        size_t e = i;
        if (i < len) i++;
        line++;
        if (memchr(text + b, 0, e - b)) {
            st = perr(p, line, "NUL byte");
            break;
        }
        size_t k = b;
        while (k < e && text[k] == ' ')
            k++;
        int ind = (int)(k - b);
        /* strip a comment: '#' at the start or after a blank, outside quotes */
        size_t ce = k;
        char q = 0;
        for (; ce < e; ce++) {
            char c = text[ce];
            if (q) {
                if (c == q) q = 0;
            } else if (c == '"' || c == '\'') {
                if (ce == k || text[ce - 1] == ' ' || text[ce - 1] == '[' || text[ce - 1] == ',') q = c;
            } else if (c == '#' && (ce == k || text[ce - 1] == ' ' || text[ce - 1] == '\t')) {
                break;
            }
        }
        size_t n = trim_len(text + k, ce - k);
        if (!n) continue;
        if (p->skipping) {
            if (ind > p->skip_indent) continue;
            p->skipping = false;
        }
        if (k < e && text[k] == '\t') {
            st = perr(p, line, "tab in indentation");
            break;
        }
        if (ind == 0 && n >= 3 && (!memcmp(text + k, "---", 3) || !memcmp(text + k, "...", 3)) &&
            (n == 3 || text[k + 3] == ' ')) {
            if (y->n || p->depth) break; /* a second document: stop at the first */
            continue;
        }
        if (text[k] == '%') continue; /* directive */
        st = content_line(p, text + k, n, ind, line);
    }
    if (!st && p->pending) st = emit(p, p->pending_path_len, "", 0, p->pending_line);
    sdxl_free(p);
    if (st) {
        sdxl__yaml_free(y);
        return st;
    }
    *out = y;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl__yaml_load(const char *path, sdxl__yaml **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl__yaml_load: out is NULL");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sdxl_error_set(err, errno == ENOENT ? SDXL_STATUS_NOT_FOUND : SDXL_STATUS_IO,
                              "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return sdxl_error_set(err, SDXL_STATUS_IO, "%s: not a regular file", path);
    }
    if (sb.st_size > (off_t)SDXL__YAML_MAX_BYTES) {
        fclose(f);
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %lld bytes is too large for a config (cap %u)",
                              path, (long long)sb.st_size, SDXL__YAML_MAX_BYTES);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = sdxl_malloc(n + 1);
    if (!buf) {
        fclose(f);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        sdxl_free(buf);
        return sdxl_error_set(err, SDXL_STATUS_IO, "%s: short read", path);
    }
    buf[n] = 0;
    sdxl_status st = sdxl__yaml_parse(buf, n, path, out, err);
    sdxl_free(buf);
    return st;
}

void sdxl__yaml_free(sdxl__yaml *y) {
    if (!y) return;
    for (size_t i = 0; i < y->n; i++)
        sdxl_free(y->e[i].path);
    sdxl_free(y->e);
    sdxl_free(y->file);
    sdxl_free(y);
}

const char *sdxl__yaml_get(const sdxl__yaml *y, const char *path, int *line) {
    if (!y || !path) return NULL;
    for (size_t i = 0; i < y->n; i++) {
        if (strcmp(y->e[i].path, path) == 0) {
            if (line) *line = y->e[i].line;
            return y->e[i].value;
        }
    }
    return NULL;
}

const char *sdxl__yaml_getf(const sdxl__yaml *y, int *line, const char *fmt, ...) {
    char buf[PATH_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) return NULL;
    return sdxl__yaml_get(y, buf, line);
}

int sdxl__yaml_seq_len(const sdxl__yaml *y, const char *path) {
    if (!y || !path) return 0;
    size_t pl = strlen(path);
    int best = 0;
    for (size_t i = 0; i < y->n; i++) {
        const char *s = y->e[i].path;
        if (strncmp(s, path, pl) != 0 || s[pl] != '.') continue;
        const char *d = s + pl + 1;
        if (*d < '0' || *d > '9') continue;
        char *end;
        long v = strtol(d, &end, 10);
        if ((*end == 0 || *end == '.') && v >= 0 && v < SDXL__YAML_MAX_ENTRIES && v + 1 > best)
            best = (int)v + 1;
    }
    return best;
}

size_t sdxl__yaml_count(const sdxl__yaml *y) {
    return y ? y->n : 0;
}

bool sdxl__yaml_at(const sdxl__yaml *y, size_t i, const char **path, const char **value) {
    if (!y || i >= y->n) return false;
    if (path) *path = y->e[i].path;
    if (value) *value = y->e[i].value;
    return true;
}

const char *sdxl__yaml_path(const sdxl__yaml *y) {
    return y ? y->file : NULL;
}
