/* prompt.c - A1111 emphasis parsing and 75-token chunking (see prompt.h).
 *
 * The parser is a hand-written scanner equivalent to A1111's re_attention
 * alternation (tried in its order at each position) followed by its
 * re_break split of every plain-text run; weights are products of doubles in
 * A1111's order, so the merge of equal-weight runs happens where it does
 * there. The chunker is A1111's tokenize_line loop on token indices.
 */
#include "model/prompt.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/utf8.h"
#include "core/alloc.h"

#define ROUND_MULT 1.1
#define SQUARE_MULT (1 / 1.1) /* multiplied, as A1111 does: x * (1/1.1) != x / 1.1 in general */

sdxl_prompt_params sdxl_prompt_default_params(void) {
    return (sdxl_prompt_params){SDXL_PROMPT_A1111, SDXL_LONG_CHUNK, 20, 32};
}

/* ---- characters as Python's re sees them ------------------------------- */

static uint32_t next_cp(const char *str, size_t *i) {
    const uint8_t *s = (const uint8_t *)str + *i;
    if (s[0] < 0x80) return *i += 1, s[0];
    if (s[0] < 0xE0) return *i += 2, ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    if (s[0] < 0xF0)
        return *i += 3, ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    return *i += 4, ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                        ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

static uint32_t prev_cp(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80)
        i--;
    return next_cp(s, &i);
}

/* \s of str patterns = str.isspace() */
static int re_space(uint32_t c) {
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* \d = category Nd */
static int re_digit(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    return utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ND;
}

/* Value of an Nd digit: Unicode encodes them in runs of 0..9. */
static int digit_value(uint32_t c) {
    if (c < 0x80) return (int)(c - '0');
    int k = 0;
    while (k < 100 && c - (uint32_t)k > 0 &&
           utf8proc_category((utf8proc_int32_t)(c - (uint32_t)k - 1)) == UTF8PROC_CATEGORY_ND)
        k++;
    return k % 10;
}

/* \w = str.isalnum() or "_" */
static int re_word(uint32_t c) {
    if (c < 0x80) return (c | 0x20) - 'a' < 26 || c - '0' < 10 || c == '_';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* ---- Python float() of [+-]?[.\d]+ ------------------------------------------ */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) {
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* s[0,n): the matched number. 1: *out set; 0: Python's float() would raise;
 * -1: out of memory. */
static int py_float(const char *s, size_t n, double *out) {
    char buf[128];
    char *a = n < sizeof buf / 2 ? buf : sdxl_malloc(2 * n + 2);
    if (!a) return -1;
    size_t k = 0, digits = 0, dots = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c = next_cp(s, &i);
        if (c == '+' || c == '-')
            a[k++] = (char)c;
        else if (c == '.')
            a[k++] = '.', dots++;
        else
            a[k++] = (char)('0' + digit_value(c)), digits++;
    }
    a[k] = 0;
    bool ok = digits > 0 && dots <= 1;
    if (ok) {
        pthread_once(&c_locale_once, make_c_locale);
        char *end = NULL;
        *out = c_locale ? strtod_l(a, &end, c_locale) : strtod(a, &end);
        ok = end == a + k;
    }
    if (a != buf) sdxl_free(a);
    return ok ? 1 : 0;
}

/* ---- segments under construction ------------------------------------------------ */

typedef struct rseg {
    const char *s; /* into the prompt */
    size_t len;
    double w;
    bool brk;
} rseg;

typedef struct parser {
    rseg *seg;
    size_t n, cap;
    size_t round[SDXL_PROMPT_MAX_DEPTH], square[SDXL_PROMPT_MAX_DEPTH];
    size_t n_round, n_square;
} parser;

static bool add_seg(parser *ps, const char *s, size_t len, bool brk) {
    if (ps->n == ps->cap) {
        size_t nc = ps->cap ? ps->cap * 2 : 16;
        rseg *q = sdxl_realloc(ps->seg, nc * sizeof *q);
        if (!q) return false;
        ps->seg = q;
        ps->cap = nc;
    }
    ps->seg[ps->n++] = (rseg){s, len, 1.0, brk};
    return true;
}

static void multiply_range(parser *ps, size_t from, double m) {
    for (size_t i = from; i < ps->n; i++)
        if (!ps->seg[i].brk) ps->seg[i].w *= m;
}

/* re.split(r"\s*\bBREAK\b\s*", text): \b judged inside the text run. */
static bool split_breaks(parser *ps, const char *s, size_t len) {
    size_t cur = 0, q = 0;
    while (q + 5 <= len) {
        const char *f = memmem(s + q, len - q, "BREAK", 5);
        if (!f) break;
        size_t at = (size_t)(f - s), end = at + 5;
        bool left_ok = at == 0 || !re_word(prev_cp(s, at));
        bool right_ok = true;
        if (end < len) {
            size_t i = end;
            right_ok = !re_word(next_cp(s, &i));
        }
        if (!left_ok || !right_ok) {
            q = at + 1;
            continue;
        }
        size_t ms = at;
        while (ms > cur) {
            size_t pi = ms - 1;
            while (pi > 0 && ((uint8_t)s[pi] & 0xC0) == 0x80)
                pi--;
            size_t t = pi;
            if (!re_space(next_cp(s, &t))) break;
            ms = pi;
        }
        size_t me = end;
        while (me < len) {
            size_t t = me;
            if (!re_space(next_cp(s, &t))) break;
            me = t;
        }
        if (!add_seg(ps, s + cur, ms - cur, false) || !add_seg(ps, "", 0, true)) return false;
        cur = q = me;
    }
    return add_seg(ps, s + cur, len - cur, false);
}

/* At p[i] == ':', the alternative :\s*([+-]?[.\d]+)\s*\) . On a match,
 * [*ns, *ne) is the number and *end is past the ')'. */
static bool match_weight(const char *p, size_t len, size_t i, size_t *ns, size_t *ne, size_t *end) {
    size_t j = i + 1, t;
    while (j < len && (t = j, re_space(next_cp(p, &t))))
        j = t;
    size_t s = j;
    if (j < len && (p[j] == '+' || p[j] == '-')) j++;
    size_t d = j;
    while (j < len) {
        t = j;
        uint32_t c = next_cp(p, &t);
        if (c != '.' && !re_digit(c)) break;
        j = t;
    }
    if (j == d) return false;
    size_t e = j;
    while (j < len && (t = j, re_space(next_cp(p, &t))))
        j = t;
    if (j >= len || p[j] != ')') return false;
    *ns = s;
    *ne = e;
    *end = j + 1;
    return true;
}

static sdxl_status parse_a1111(parser *ps, const char *p, size_t len, sdxl_error *err) {
    size_t i = 0;
    while (i < len) {
        char c = p[i];
        bool ok = true;
        if (c == '\\') {
            if (i + 1 < len && strchr("()[]\\", p[i + 1])) {
                ok = add_seg(ps, p + i + 1, 1, false);
                i += 2;
            } else { /* a lone backslash: A1111 appends text[1:] == "" */
                ok = add_seg(ps, p + i, 0, false);
                i += 1;
            }
        } else if (c == '(' || c == '[') {
            if (ps->n_round + ps->n_square >= SDXL_PROMPT_MAX_DEPTH)
                return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                      "prompt: more than %d brackets open at byte %zu", SDXL_PROMPT_MAX_DEPTH,
                                      i);
            if (c == '(')
                ps->round[ps->n_round++] = ps->n;
            else
                ps->square[ps->n_square++] = ps->n;
            i++;
        } else if (c == ':') {
            size_t ns, ne, end;
            if (match_weight(p, len, i, &ns, &ne, &end)) {
                if (ps->n_round) {
                    double w;
                    int r = py_float(p + ns, ne - ns, &w);
                    if (r < 0) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
                    if (r == 0)
                        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                              "prompt: emphasis weight \"%.*s\" at byte %zu is not a number",
                                              (int)(ne - ns < 40 ? ne - ns : 40), p + ns, ns);
                    if (!isfinite(w))
                        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                              "prompt: emphasis weight at byte %zu is too large", ns);
                    multiply_range(ps, ps->round[--ps->n_round], w);
                } else {
                    ok = add_seg(ps, p + i, end - i, false); /* no "(" open: literal text */
                }
                i = end;
            } else {
                ok = add_seg(ps, p + i, 1, false);
                i++;
            }
        } else if (c == ')') {
            if (ps->n_round)
                multiply_range(ps, ps->round[--ps->n_round], ROUND_MULT);
            else
                ok = add_seg(ps, p + i, 1, false);
            i++;
        } else if (c == ']') {
            if (ps->n_square)
                multiply_range(ps, ps->square[--ps->n_square], SQUARE_MULT);
            else
                ok = add_seg(ps, p + i, 1, false);
            i++;
        } else {
            size_t j = i;
            while (j < len && !strchr("\\()[]:", p[j]))
                j++;
            ok = split_breaks(ps, p + i, j - i);
            i = j;
        }
        if (!ok) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
    }
    for (size_t k = 0; k < ps->n_round; k++)
        multiply_range(ps, ps->round[k], ROUND_MULT);
    for (size_t k = 0; k < ps->n_square; k++)
        multiply_range(ps, ps->square[k], SQUARE_MULT);
    return SDXL_STATUS_OK;
}

void sdxl_prompt_segments_free(sdxl_prompt_segments *s) {
    if (!s) return;
    sdxl_free(s->seg);
    sdxl_free(s->pool);
    memset(s, 0, sizeof *s);
}

static sdxl_status check_text(const char *prompt, size_t *len, sdxl_error *err) {
    *len = strnlen(prompt, SDXL_TOKENIZER_MAX_TEXT + 1);
    if (*len > SDXL_TOKENIZER_MAX_TEXT)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "prompt: longer than %d bytes",
                              SDXL_TOKENIZER_MAX_TEXT);
    size_t bad = sdxl_utf8_invalid_at(prompt, *len);
    if (bad != *len)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "prompt: invalid UTF-8 at byte %zu", bad);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_prompt_parse(const char *prompt, sdxl_prompt_syntax syntax, sdxl_prompt_segments *out,
                              sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "prompt_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if (!prompt) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "prompt_parse: prompt is NULL");
    if (syntax != SDXL_PROMPT_A1111 && syntax != SDXL_PROMPT_PLAIN)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "prompt_parse: unknown syntax %d", (int)syntax);
    size_t len;
    sdxl_status st = check_text(prompt, &len, err);
    if (st) return st;
    parser ps;
    memset(&ps, 0, sizeof ps);
    if (syntax == SDXL_PROMPT_PLAIN) {
        if (!add_seg(&ps, prompt, len, false))
            st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
    } else {
        st = parse_a1111(&ps, prompt, len, err);
        if (!st && ps.n == 0 && !add_seg(&ps, prompt, 0, false))
            st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
    }
    if (st) {
        sdxl_free(ps.seg);
        return st;
    }
    /* merge runs of identical weight (BREAK markers never merge), copying the
     * texts into one pool */
    size_t n = 0;
    for (size_t i = 0; i < ps.n; i++)
        if (!i || ps.seg[i].brk || ps.seg[i - 1].brk || ps.seg[i].w != ps.seg[i - 1].w) n++;
    out->seg = sdxl_calloc(n, sizeof *out->seg);
    out->pool = sdxl_malloc(len + n + 1);
    if (!out->seg || !out->pool) {
        sdxl_free(ps.seg);
        sdxl_prompt_segments_free(out);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
    }
    size_t k = 0, used = 0;
    for (size_t i = 0; i < ps.n; i++) {
        const rseg *r = &ps.seg[i];
        bool start = !i || r->brk || ps.seg[i - 1].brk || r->w != ps.seg[i - 1].w;
        if (start) {
            if (k) out->pool[used++] = 0;
            out->seg[k++] = (sdxl_prompt_segment){out->pool + used, 0, r->w, r->brk};
        }
        sdxl_prompt_segment *o = &out->seg[k - 1];
        memcpy(out->pool + used, r->s, r->len);
        used += r->len;
        o->len += r->len;
    }
    out->pool[used] = 0;
    out->n = n;
    sdxl_free(ps.seg);
    for (size_t i = 0; i < n; i++) {
        double w = out->seg[i].weight;
        if (!isfinite(w) || !isfinite((float)w)) {
            sdxl_prompt_segments_free(out);
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "prompt: emphasis weight overflows (%g)", w);
        }
    }
    return SDXL_STATUS_OK;
}

/* ---- chunks -------------------------------------------------------------------- */

void sdxl_token_batch_free(sdxl_token_batch *b) {
    if (!b) return;
    sdxl_free(b->ids);
    sdxl_free(b->weights);
    memset(b, 0, sizeof *b);
}

typedef struct span {
    size_t start, len;
} span;

typedef struct chunker {
    span *c;
    size_t n, cap;
    int max;
} chunker;

static sdxl_status emit(chunker *ck, size_t start, size_t len, sdxl_error *err) {
    if (ck->n >= (size_t)ck->max)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                              "prompt: needs more than %d chunks of tokens (the limit)", ck->max);
    if (ck->n == ck->cap) {
        size_t nc = ck->cap ? ck->cap * 2 : 8;
        span *q = sdxl_realloc(ck->c, nc * sizeof *q);
        if (!q) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
        ck->c = q;
        ck->cap = nc;
    }
    ck->c[ck->n++] = (span){start, len};
    return SDXL_STATUS_OK;
}

static void fill_row(const sdxl_tokenizer *t, int32_t *ids, float *w, int row_len, const int32_t *tok,
                     const float *tw, size_t n) {
    ids[0] = sdxl_tokenizer_bos(t);
    w[0] = 1.0f;
    for (size_t i = 0; i < n; i++) {
        ids[1 + i] = tok[i];
        w[1 + i] = tw[i];
    }
    ids[1 + n] = sdxl_tokenizer_eos(t);
    w[1 + n] = 1.0f;
    for (size_t i = n + 2; i < (size_t)row_len; i++) {
        ids[i] = sdxl_tokenizer_pad_id(t);
        w[i] = 1.0f;
    }
}

sdxl_status sdxl_tokenize_prompt(const sdxl_tokenizer *t, const char *prompt,
                                 const sdxl_prompt_params *params, sdxl_token_batch *out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenize_prompt: out is NULL");
    memset(out, 0, sizeof *out);
    if (!t || !prompt) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenize_prompt: NULL argument");
    sdxl_prompt_params p = params ? *params : sdxl_prompt_default_params();
    if ((p.long_mode != SDXL_LONG_CHUNK && p.long_mode != SDXL_LONG_TRUNCATE) || p.comma_backtrack < 0 ||
        p.max_chunks < 1)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "tokenize_prompt: bad params (long_mode %d, comma_backtrack %d, max_chunks %d)",
                              (int)p.long_mode, p.comma_backtrack, p.max_chunks);
    sdxl_prompt_segments segs;
    sdxl_status st = sdxl_prompt_parse(prompt, p.syntax, &segs, err);
    if (st) return st;

    const int row = sdxl_tokenizer_max_length(t);
    const size_t L = (size_t)row - 2;
    int32_t *tok = NULL;
    float *tw = NULL;
    size_t n = 0, cap = 0, tw_cap = 0;
    size_t *brk = NULL; /* token index of each BREAK */
    size_t n_brk = 0;
    chunker ck = {NULL, 0, 0, p.long_mode == SDXL_LONG_CHUNK ? p.max_chunks : 1};
    int32_t *ids = NULL;
    float *w = NULL;

    for (size_t s = 0; s < segs.n; s++) {
        const sdxl_prompt_segment *g = &segs.seg[s];
        if (g->is_break) {
            size_t *q = sdxl_realloc(brk, (n_brk + 1) * sizeof *q);
            if (!q) goto oom;
            brk = q;
            brk[n_brk++] = n;
            continue;
        }
        size_t n0 = n;
        if ((st = sdxl__tokenizer_encode_append(t, g->text, g->len, &tok, &n, &cap, err))) goto done;
        if (n > tw_cap) {
            float *q = sdxl_realloc(tw, cap * sizeof *q);
            if (!q) goto oom;
            tw = q;
            tw_cap = cap;
        }
        for (size_t i = n0; i < n; i++)
            tw[i] = (float)g->weight;
    }

    if (p.long_mode == SDXL_LONG_TRUNCATE) {
        if ((st = emit(&ck, 0, n < L ? n : L, err))) goto done;
    } else {
        const int32_t comma = sdxl__tokenizer_comma(t);
        const size_t bt = (size_t)p.comma_backtrack;
        size_t cs = 0, cl = 0, b = 0;
        long last_comma = -1;
        for (size_t k = 0; k <= n; k++) {
            for (; b < n_brk && brk[b] == k; b++) {
                if ((st = emit(&ck, cs, cl, err))) goto done;
                cs = k;
                cl = 0;
                last_comma = -1;
            }
            if (k == n) break;
            if (tok[k] == comma) {
                last_comma = (long)cl;
            } else if (bt && cl == L && last_comma >= 0 && cl - (size_t)last_comma <= bt) {
                size_t loc = (size_t)last_comma + 1; /* the tokens after the comma move on */
                if ((st = emit(&ck, cs, loc, err))) goto done;
                cs += loc;
                cl -= loc;
                last_comma = -1;
            }
            if (cl == L) {
                if ((st = emit(&ck, cs, L, err))) goto done;
                cs += L;
                cl = 0;
                last_comma = -1;
            }
            cl++;
        }
        if (cl > 0 || ck.n == 0)
            if ((st = emit(&ck, cs, cl, err))) goto done;
    }

    ids = sdxl_malloc(ck.n * (size_t)row * sizeof *ids);
    w = sdxl_malloc(ck.n * (size_t)row * sizeof *w);
    if (!ids || !w) goto oom;
    for (size_t c = 0; c < ck.n; c++)
        fill_row(t, ids + c * (size_t)row, w + c * (size_t)row, row, tok + ck.c[c].start, tw + ck.c[c].start,
                 ck.c[c].len);
    out->n_chunks = (int)ck.n;
    out->chunk_len = row;
    out->ids = ids;
    out->weights = w;
    out->n_tokens = (int)n;
    out->n_truncated = p.long_mode == SDXL_LONG_TRUNCATE && n > L ? (int)(n - L) : 0;
    ids = NULL;
    w = NULL;
    st = SDXL_STATUS_OK;
    goto done;
oom:
    st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
done:
    sdxl_free(ids);
    sdxl_free(w);
    sdxl_free(tok);
    sdxl_free(tw);
    sdxl_free(brk);
    sdxl_free(ck.c);
    sdxl_prompt_segments_free(&segs);
    return st;
}

sdxl_status sdxl_token_batch_pad_chunks(const sdxl_tokenizer *t, sdxl_token_batch *b, int n_chunks,
                                        sdxl_error *err) {
    if (!t || !b || !b->ids || !b->weights || b->chunk_len != sdxl_tokenizer_max_length(t) || n_chunks < 1)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "token_batch_pad_chunks: bad arguments");
    if (n_chunks <= b->n_chunks) return SDXL_STATUS_OK;
    size_t row = (size_t)b->chunk_len;
    int32_t *ids = sdxl_realloc(b->ids, (size_t)n_chunks * row * sizeof *ids);
    if (!ids) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
    b->ids = ids;
    float *w = sdxl_realloc(b->weights, (size_t)n_chunks * row * sizeof *w);
    if (!w) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "prompt: out of memory");
    b->weights = w;
    for (int c = b->n_chunks; c < n_chunks; c++)
        fill_row(t, ids + (size_t)c * row, w + (size_t)c * row, (int)row, NULL, NULL, 0);
    b->n_chunks = n_chunks;
    return SDXL_STATUS_OK;
}
