/* config_yaml.c - the YAML subset reader of config_yaml.h.
 *
 * One pass over the lines with a stack of open block containers. Every
 * frame's dotted path is a prefix of the next one's, so all frames share one
 * path buffer and remember only their length. A plain scalar stays open for
 * more-indented continuation lines (folded into its entry); a flow
 * collection or quoted scalar that does not close on its line is gathered
 * (bounded) until its brackets / quotes balance, then parsed by a small
 * recursive-descent flow parser (depth bounded with the block frames). */
#include "model/config_yaml.h"
#include "io/file.h"

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
    bool line_comment; /* the current line ended in a comment */
    /* a "key:" or "-" with nothing after it: its value is the next block */
    bool pending;
    bool pending_from_map;
    int pending_indent;
    size_t pending_path_len;
    int pending_line;
    /* inside a | or > block scalar: skip lines indented more than this */
    bool skipping;
    int skip_indent;
    /* the last value was a plain scalar that more-indented lines continue */
    bool cont;
    int cont_indent;
    size_t cont_entry;
    int cont_blank; /* empty lines since its last line */
    /* a flow collection or quoted scalar spanning lines, gathered in acc
     * (lines joined by '\n', one per source line, so line numbers can be
     * recovered) until its brackets / quotes close */
    bool acc_open;
    char *acc;
    size_t acc_n, acc_cap;
    int acc_line, acc_indent;
    size_t acc_path_len;
    char acc_path[PATH_MAX_LEN];
    /* incremental bracket / quote scan of acc */
    int sc_depth;
    char sc_q, sc_last;
    bool sc_esc, sc_closed1;
} parser;

#define TRY(x)                                                                                               \
    do {                                                                                                     \
        sdxl_status st_ = (x);                                                                               \
        if (st_) return st_;                                                                                 \
    } while (0)

static sdxl_status perr(parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static sdxl_status perr(parser *p, int line, const char *fmt, ...) {
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return sdxl_error_set(p->err, SDXL_STATUS_BAD_INPUT, "%s: line %d: %s", p->file, line, why);
}

static sdxl_status oom(parser *p) {
    return sdxl_error_set(p->err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->file);
}

static sdxl_status emit(parser *p, size_t path_len, const char *val, size_t vlen, int line) {
    sdxl__yaml *y = p->y;
    if (y->n >= SDXL__YAML_MAX_ENTRIES) return perr(p, line, "too many entries");
    if (vlen > SDXL__YAML_MAX_VALUE_BYTES)
        return perr(p, line, "value of %zu bytes is too long (cap %u)", vlen, SDXL__YAML_MAX_VALUE_BYTES);
    if (y->n == y->cap) {
        size_t cap = y->cap ? y->cap * 2 : 64;
        yentry *ne = sdxl_realloc(y->e, cap * sizeof *ne);
        if (!ne) return oom(p);
        y->e = ne;
        y->cap = cap;
    }
    char *b = sdxl_malloc(path_len + vlen + 2);
    if (!b) return oom(p);
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

/* Unquote a scalar into buf (at most cap-1 bytes; buf may be s: the output
 * never runs ahead of the input). Plain scalars are kept as they are;
 * quoted ones lose their quotes and simple escapes. */
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
        memmove(buf, s, o);
    }
    buf[o] = 0;
    return o;
}

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t trim_len(const char *s, size_t n) {
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    return n;
}

/* YAML line folding + unquoting of a raw scalar into a new sdxl_malloc'd
 * string: a run of blanks holding one line break becomes a space, one holding
 * k > 1 breaks (empty lines) becomes k-1 newlines; other blanks are kept. */
static sdxl_status scalar_text(parser *p, const char *s, size_t n, char **out, size_t *outn) {
    char *b = sdxl_malloc(n + 1);
    if (!b) return oom(p);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (!is_blank(s[i])) {
            b[o++] = s[i++];
            continue;
        }
        size_t j = i;
        int breaks = 0;
        while (j < n && is_blank(s[j]))
            breaks += s[j++] == '\n';
        if (!breaks) {
            memcpy(b + o, s + i, j - i);
            o += j - i;
        } else if (breaks == 1) {
            b[o++] = ' ';
        } else {
            for (int k = 1; k < breaks; k++)
                b[o++] = '\n';
        }
        i = j;
    }
    *outn = unquote(b, o, b, n + 1);
    *out = b;
    return SDXL_STATUS_OK;
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

/* ---- flow collections and quoted scalars (possibly over several lines) ---- */

typedef struct {
    parser *p;
    const char *s;
    size_t n, i;
    int line; /* source line of s[i] */
} fcur;

static void f_ws(fcur *f) {
    while (f->i < f->n && is_blank(f->s[f->i]))
        f->line += f->s[f->i++] == '\n';
}

static bool flow_ind(char c) {
    return c == ',' || c == '[' || c == ']' || c == '{' || c == '}';
}

/* The raw text of the scalar at f->i (quotes included); *len 0 for an empty
 * plain scalar. Moves past it. */
static sdxl_status f_scalar_raw(fcur *f, const char **b, size_t *len, int *line) {
    const char *s = f->s;
    size_t i = f->i, j;
    *line = f->line;
    char q = s[i];
    if (q == '"' || q == '\'') {
        for (j = i + 1; j < f->n; j++) {
            if (s[j] == '\n') f->line++;
            if (q == '"' && s[j] == '\\' && j + 1 < f->n) {
                f->line += s[++j] == '\n';
            } else if (s[j] == q) {
                if (q == '\'' && j + 1 < f->n && s[j + 1] == '\'')
                    j++;
                else
                    break;
            }
        }
        if (j >= f->n) return perr(f->p, *line, "unterminated quoted scalar");
        *b = s + i;
        *len = j + 1 - i;
        f->i = j + 1;
        return SDXL_STATUS_OK;
    }
    for (j = i; j < f->n; j++) {
        char c = s[j];
        if (flow_ind(c)) break;
        if (c == ':' && (j + 1 == f->n || is_blank(s[j + 1]) || flow_ind(s[j + 1]))) break;
        f->line += c == '\n';
    }
    size_t e = j;
    while (e > i && is_blank(s[e - 1]))
        e--;
    *b = s + i;
    *len = e - i;
    f->i = j;
    return SDXL_STATUS_OK;
}

static sdxl_status f_emit_scalar(fcur *f, size_t path_len, const char *b, size_t len, int line) {
    char *v;
    size_t vn;
    TRY(scalar_text(f->p, b, len, &v, &vn));
    sdxl_status st = emit(f->p, path_len, v, vn, line);
    sdxl_free(v);
    return st;
}

static sdxl_status f_node(fcur *f, size_t path_len, int depth);

/* After a key (raw text kb/kn): an optional ': value'; no value is null. */
static sdxl_status f_pair(fcur *f, size_t base, const char *kb, size_t kn, int kline, int depth) {
    parser *p = f->p;
    if (!kn) return perr(p, kline, "empty key in a flow mapping");
    char *key;
    size_t keyn, pl = 0;
    TRY(scalar_text(p, kb, kn, &key, &keyn));
    sdxl_status st = path_push(p, base, key, keyn, kline, &pl);
    sdxl_free(key);
    if (st) return st;
    f_ws(f);
    if (f->i < f->n && f->s[f->i] == ':') {
        f->i++;
        f_ws(f);
        if (f->i < f->n && !strchr(",]}", f->s[f->i])) return f_node(f, pl, depth);
    }
    return emit(p, pl, "", 0, kline);
}

static sdxl_status f_seq(fcur *f, size_t path_len, int depth) {
    parser *p = f->p;
    int open_line = f->line, idx = 0;
    if (depth >= SDXL__YAML_MAX_DEPTH) return perr(p, f->line, "nesting too deep");
    f->i++; /* '[' */
    for (;;) {
        f_ws(f);
        if (f->i >= f->n) return perr(p, open_line, "unterminated flow sequence: no closing ']'");
        char c = f->s[f->i];
        if (c == ']') break;
        if (c == ',') return perr(p, f->line, "empty entry in a flow sequence");
        char seg[24];
        int sn = snprintf(seg, sizeof seg, "%d", idx++);
        size_t pl = 0;
        TRY(path_push(p, path_len, seg, (size_t)sn, f->line, &pl));
        if (c == '[' || c == '{') {
            TRY(f_node(f, pl, depth + 1));
        } else {
            const char *b;
            size_t len;
            int line;
            TRY(f_scalar_raw(f, &b, &len, &line));
            f_ws(f);
            if (f->i < f->n && f->s[f->i] == ':') { /* "[k: v]": a single-pair mapping */
                TRY(f_pair(f, pl, b, len, line, depth + 1));
            } else {
                if (!len) return perr(p, line, "unexpected '%c' in a flow sequence", f->s[f->i]);
                TRY(f_emit_scalar(f, pl, b, len, line));
            }
        }
        f_ws(f);
        if (f->i >= f->n) return perr(p, open_line, "unterminated flow sequence: no closing ']'");
        if (f->s[f->i] == ']') break;
        if (f->s[f->i] != ',') return perr(p, f->line, "expected ',' or ']' in a flow sequence");
        f->i++;
    }
    f->i++; /* ']' */
    p->path[path_len] = 0;
    return SDXL_STATUS_OK;
}

static sdxl_status f_map(fcur *f, size_t path_len, int depth) {
    parser *p = f->p;
    int open_line = f->line;
    if (depth >= SDXL__YAML_MAX_DEPTH) return perr(p, f->line, "nesting too deep");
    f->i++; /* '{' */
    for (;;) {
        f_ws(f);
        if (f->i >= f->n) return perr(p, open_line, "unterminated flow mapping: no closing '}'");
        char c = f->s[f->i];
        if (c == '}') break;
        if (c == ',') return perr(p, f->line, "empty entry in a flow mapping");
        if (c == '[' || c == '{') return perr(p, f->line, "a collection as a mapping key is not supported");
        const char *b;
        size_t len;
        int line;
        TRY(f_scalar_raw(f, &b, &len, &line));
        TRY(f_pair(f, path_len, b, len, line, depth + 1));
        f_ws(f);
        if (f->i >= f->n) return perr(p, open_line, "unterminated flow mapping: no closing '}'");
        if (f->s[f->i] == '}') break;
        if (f->s[f->i] != ',') return perr(p, f->line, "expected ',' or '}' in a flow mapping");
        f->i++;
    }
    f->i++; /* '}' */
    p->path[path_len] = 0;
    return SDXL_STATUS_OK;
}

static sdxl_status f_node(fcur *f, size_t path_len, int depth) {
    f_ws(f);
    if (f->i >= f->n) return perr(f->p, f->line, "missing value");
    char c = f->s[f->i];
    if (c == '[') return f_seq(f, path_len, depth);
    if (c == '{') return f_map(f, path_len, depth);
    const char *b;
    size_t len;
    int line;
    TRY(f_scalar_raw(f, &b, &len, &line));
    return f_emit_scalar(f, path_len, b, len, line);
}

/* Parse a whole flow node (collection or quoted scalar) starting at `line`. */
static sdxl_status flow_parse(parser *p, const char *s, size_t n, size_t path_len, int line) {
    fcur f = {p, s, n, 0, line};
    TRY(f_node(&f, path_len, p->depth));
    f_ws(&f);
    if (f.i < n) return perr(p, f.line, "unexpected text after a flow collection or quoted scalar");
    p->path[path_len] = 0;
    return SDXL_STATUS_OK;
}

static void scan_reset(parser *p) {
    p->sc_depth = 0;
    p->sc_q = p->sc_last = 0;
    p->sc_esc = p->sc_closed1 = false;
}

/* Track brackets and quotes over more of the gathered text. */
static void scan_feed(parser *p, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (p->sc_q == '"') {
            if (p->sc_esc)
                p->sc_esc = false;
            else if (c == '\\')
                p->sc_esc = true;
            else if (c == '"')
                p->sc_q = 0, p->sc_last = c;
            continue;
        }
        if (p->sc_q == '\'') {
            if (c == '\'') p->sc_q = 0, p->sc_closed1 = true, p->sc_last = c;
            continue;
        }
        if (p->sc_closed1) { /* '' inside single quotes */
            p->sc_closed1 = false;
            if (c == '\'') {
                p->sc_q = '\'';
                continue;
            }
        }
        if (is_blank(c)) continue;
        if ((c == '"' || c == '\'') && (!p->sc_last || strchr("[{,:", p->sc_last))) {
            p->sc_q = c;
            continue;
        }
        if (c == '[' || c == '{')
            p->sc_depth++;
        else if (c == ']' || c == '}')
            p->sc_depth--;
        p->sc_last = c;
    }
}

static bool scan_done(const parser *p) {
    return p->sc_depth <= 0 && !p->sc_q;
}

static sdxl_status acc_add(parser *p, const char *s, size_t n, int line) {
    if (p->acc_n + n > SDXL__YAML_MAX_VALUE_BYTES)
        return perr(p, line, "flow collection or quoted scalar opened at line %d is longer than %u bytes",
                    p->acc_line, SDXL__YAML_MAX_VALUE_BYTES);
    if (p->acc_n + n + 1 > p->acc_cap) {
        size_t cap = p->acc_cap ? p->acc_cap : 256;
        while (cap < p->acc_n + n + 1)
            cap *= 2;
        char *a = sdxl_realloc(p->acc, cap);
        if (!a) return oom(p);
        p->acc = a;
        p->acc_cap = cap;
    }
    memcpy(p->acc + p->acc_n, s, n);
    p->acc_n += n;
    p->acc[p->acc_n] = 0;
    scan_feed(p, s, n);
    return SDXL_STATUS_OK;
}

static const char *acc_what(const parser *p) {
    char c = p->acc_n ? p->acc[0] : 0;
    return c == '[' ? "flow sequence" : c == '{' ? "flow mapping" : "quoted scalar";
}

/* One more source line of an open multi-line flow node. Continuation lines
 * must be indented more than the node's key (YAML 1.2); a closing bracket
 * at the key's own column is accepted too (as PyYAML does). */
static sdxl_status acc_line(parser *p, const char *c, size_t n, int ind, int line) {
    if (n && (ind < p->acc_indent || (ind == p->acc_indent && c[0] != ']' && c[0] != '}')))
        return perr(p, line,
                    "unterminated %s opened at line %d (its continuation lines must be indented more than "
                    "its key)",
                    acc_what(p), p->acc_line);
    TRY(acc_add(p, "\n", 1, line));
    TRY(acc_add(p, c, n, line));
    if (!scan_done(p)) return SDXL_STATUS_OK;
    p->acc_open = false;
    memcpy(p->path, p->acc_path, p->acc_path_len + 1);
    return flow_parse(p, p->acc, p->acc_n, p->acc_path_len, p->acc_line);
}

/* ---- block structure ---------------------------------------------------------- */

/* The value `v` of a key or item whose own column is `key_indent`. */
static sdxl_status emit_value(parser *p, size_t path_len, const char *v, size_t vn, int line,
                              int key_indent) {
    if (vn && (v[0] == '|' || v[0] == '>')) { /* block scalar: skip its lines */
        p->skipping = true;
        p->skip_indent = key_indent;
        return emit(p, path_len, "", 0, line);
    }
    if (vn && (v[0] == '[' || v[0] == '{' || v[0] == '"' || v[0] == '\'')) {
        scan_reset(p);
        p->acc_n = 0;
        p->acc_line = line;
        TRY(acc_add(p, v, vn, line));
        if (scan_done(p)) return flow_parse(p, p->acc, p->acc_n, path_len, line);
        p->acc_open = true; /* continues on the next lines */
        p->acc_indent = key_indent;
        p->acc_path_len = path_len;
        memcpy(p->acc_path, p->path, path_len);
        p->acc_path[path_len] = 0;
        return SDXL_STATUS_OK;
    }
    TRY(emit(p, path_len, v, vn, line));
    /* a plain scalar: more-indented lines may continue it, unless a comment ended it */
    p->cont = !p->line_comment;
    p->cont_indent = key_indent;
    p->cont_entry = p->y->n - 1;
    p->cont_blank = 0;
    return SDXL_STATUS_OK;
}

/* A more-indented line continuing the plain scalar of the last entry: the
 * line break folds into a space (empty lines in between into newlines). */
static sdxl_status cont_line(parser *p, const char *c, size_t n, int line) {
    for (size_t i = 0; i < n; i++) {
        if (c[i] == ':' && (i + 1 == n || c[i + 1] == ' ' || c[i + 1] == '\t'))
            return perr(p, line,
                        "bad indentation: a 'key: value' more indented than the line above (or ': ' inside a "
                        "multi-line plain scalar)");
    }
    yentry *e = &p->y->e[p->cont_entry];
    size_t pl = (size_t)(e->value - e->path), vl = strlen(e->value);
    size_t sep = p->cont_blank ? (size_t)p->cont_blank : 1;
    if (vl + sep + n > SDXL__YAML_MAX_VALUE_BYTES)
        return perr(p, line, "multi-line scalar of line %d is longer than %u bytes", e->line,
                    SDXL__YAML_MAX_VALUE_BYTES);
    char *b = sdxl_realloc(e->path, pl + vl + sep + n + 1);
    if (!b) return oom(p);
    e->path = b;
    e->value = b + pl;
    memset(e->value + vl, p->cont_blank ? '\n' : ' ', sep);
    memcpy(e->value + vl + sep, c, n);
    e->value[vl + sep + n] = 0;
    p->cont_blank = 0;
    if (p->line_comment) p->cont = false;
    return SDXL_STATUS_OK;
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
    if (p->cont) {
        if (ind > p->cont_indent) return cont_line(p, c, n, line);
        p->cont = false;
    }
    if (p->pending) {
        p->pending = false;
        if (ind > p->pending_indent && !is_item(c, n) && find_colon(c, n) < 0) {
            /* "key:" with its scalar / flow value on the next line */
            p->path[p->pending_path_len] = 0;
            return emit_value(p, p->pending_path_len, c, n, line, p->pending_indent);
        }
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
    if (!text && len) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl__yaml_parse: text is NULL");
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
        /* strip a comment: '#' at the start or after a blank, outside quotes
         * (which may have opened on an earlier line of a multi-line node) */
        size_t ce = k;
        char q = p->acc_open ? p->sc_q : 0;
        for (; ce < e; ce++) {
            char c = text[ce];
            if (q) {
                if (q == '\'' && c == '\'' && ce + 1 < e && text[ce + 1] == '\'')
                    ce++;
                else if (q == '"' && c == '\\')
                    ce++;
                else if (c == q)
                    q = 0;
            } else if (c == '"' || c == '\'') {
                if (ce == k || strchr(" \t[{,", text[ce - 1])) q = c;
            } else if (c == '#' && (ce == k || text[ce - 1] == ' ' || text[ce - 1] == '\t')) {
                break;
            }
        }
        size_t n = trim_len(text + k, ce > e ? e - k : ce - k);
        p->line_comment = ce < e;
        if (p->acc_open) {
            if (n && text[k] == '\t') {
                st = perr(p, line, "tab in indentation");
                break;
            }
            st = acc_line(p, text + k, n, ind, line);
            continue;
        }
        if (!n) {
            if (p->cont) { /* an empty line may sit inside a multi-line scalar; a comment ends it */
                if (p->line_comment)
                    p->cont = false;
                else
                    p->cont_blank++;
            }
            continue;
        }
        if (p->skipping) {
            if (ind > p->skip_indent) continue;
            p->skipping = false;
        }
        if (text[k] == '\t') {
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
    if (!st && p->acc_open)
        st = perr(p, p->acc_line, "unterminated %s (end of input; no closing %s)", acc_what(p),
                  p->acc[0] == '['   ? "']'"
                  : p->acc[0] == '{' ? "'}'"
                                     : "quote");
    if (!st && p->pending) st = emit(p, p->pending_path_len, "", 0, p->pending_line);
    sdxl_free(p->acc);
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
    char *buf = NULL;
    size_t n = 0;
    sdxl_status rs = sdxl_read_file(path, SDXL__YAML_MAX_BYTES, &buf, &n, err);
    if (rs) return rs;
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
