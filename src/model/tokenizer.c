/* tokenizer.c - CLIP byte-level BPE, id for id with transformers' slow
 * CLIPTokenizer (no ftfy). See tokenizer.h for the pipeline; this file
 * explains the places where the reference's Python semantics are subtle.
 *
 * Layout:
 *   - UTF-8 and Python character classes
 *   - string table (every token string interned once) and merge table
 *   - loading: vocab.json, merges.txt, the two configs, the CLIP .gz
 *   - encoding: added-token split, BasicTokenizer cleanup, CLIP pattern, BPE
 */
#include "model/tokenizer.h"
#include "io/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>
#include <zlib.h>

#include "core/utf8.h"
#include "core/alloc.h"
#include "core/log.h"

#define MAX_FILE_BYTES ((size_t)64 << 20)   /* vocab.json, merges.txt, configs, the .gz */
#define MAX_GZ_OUT_BYTES ((size_t)16 << 20) /* the CLIP merges file inflates to 1.7 MB */
#define MAX_ADDED 4096                      /* added tokens per tokenizer */
#define MAX_TOKEN_BYTES 4096                /* one vocabulary string */
#define DEFAULT_MAX_LENGTH 77
#define DEAD UINT32_MAX
#define NONE UINT32_MAX

static const char SOT[] = "<|startoftext|>";
static const char EOT[] = "<|endoftext|>";

/* ---- UTF-8 -------------------------------------------------------------- */

/* Decode one code point of VALID UTF-8 at s[*i], advancing *i. */
static uint32_t u8_next(const char *str, size_t *i) {
    const uint8_t *s = (const uint8_t *)str + *i;
    if (s[0] < 0x80) {
        *i += 1;
        return s[0];
    }
    if (s[0] < 0xE0) {
        *i += 2;
        return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (s[0] < 0xF0) {
        *i += 3;
        return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *i += 4;
    return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
           ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

/* Start of the code point that ends at s[end-1] (valid UTF-8, end > 0). */
static size_t u8_prev(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

static size_t u8_put(uint32_t cp, char *out) {
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- Python's character classes --------------------------------------- */

/* str.isspace(): what str.split()/strip() cut on (Unicode 14). */
static bool py_isspace(uint32_t c) {
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The regex module's \s (Unicode White_Space): py_isspace minus U+001C..1F. */
static bool re_isspace(uint32_t c) {
    return py_isspace(c) && !(c >= 0x1C && c <= 0x1F);
}

static bool is_letter(uint32_t c) {
    if (c < 0x80) return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static bool is_number(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/* BERT's _is_chinese_char: the CJK ideograph blocks, not Hangul/kana. */
static bool is_cjk(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) ||
           (c >= 0x2B820 && c <= 0x2CEAF) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Cased / Case_Ignorable as CPython's final-sigma rule reads them. */
static bool is_cased(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT) return true;
    /* Other_Lowercase / Other_Uppercase outside Lu/Ll/Lt */
    return c == 0xAA || c == 0xBA || (c >= 0x2B0 && c <= 0x2B8) || (c >= 0x2C0 && c <= 0x2C1) ||
           (c >= 0x2E0 && c <= 0x2E4) || c == 0x345 || c == 0x37A || (c >= 0x1D2C && c <= 0x1D6A) ||
           c == 0x1D78 || (c >= 0x1D9B && c <= 0x1DBF) || c == 0x2071 || c == 0x207F ||
           (c >= 0x2090 && c <= 0x209C) || (c >= 0x2160 && c <= 0x217F) || (c >= 0x24B6 && c <= 0x24E9) ||
           (c >= 0x2C7C && c <= 0x2C7D) || (c >= 0xA69C && c <= 0xA69D) || c == 0xA770 ||
           (c >= 0xA7F8 && c <= 0xA7F9) || (c >= 0xAB5C && c <= 0xAB5F) || (c >= 0x1F130 && c <= 0x1F149) ||
           (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

static bool is_case_ignorable(uint32_t c) {
    switch (c) {
    case 0x27:
    case 0x2E:
    case 0x3A:
    case 0xB7:
    case 0x387:
    case 0x55F:
    case 0x5F4:
    case 0x2018:
    case 0x2019:
    case 0x2024:
    case 0x2027:
    case 0xFE13:
    case 0xFE52:
    case 0xFE55:
    case 0xFF07:
    case 0xFF0E:
    case 0xFF1A: return true;
    default: break;
    }
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK;
}

/* ---- growable arrays ---------------------------------------------------- */

/* Make *p hold at least `need` elements of `elem` bytes (amortised doubling). */
static bool grow(void *pp, size_t *cap, size_t need, size_t elem) {
    void **p = (void **)pp;
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) return false;
        nc *= 2;
    }
    if (nc > SIZE_MAX / elem) return false;
    void *q = sdxl_realloc(*p, nc * elem);
    if (!q) return false;
    *p = q;
    *cap = nc;
    return true;
}

/* ---- string table -------------------------------------------------------- */

/* Every string the tokenizer knows (vocabulary keys, merge operands and
 * results, byte symbols, added tokens) gets one index ("symbol"). BPE works
 * on symbol indices; a symbol's vocab id and added-token slot hang off it. */
typedef struct strtab {
    char *pool; /* NUL-terminated strings back to back */
    size_t pool_len, pool_cap;
    uint32_t *off, *len;
    int32_t *vocab; /* vocab id or -1 */
    int32_t *added; /* index into the added-token table or -1 */
    size_t n, cap;
    uint32_t *slots; /* open addressing, symbol + 1, 0 = empty */
    size_t nslots;   /* power of two */
} strtab;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static const char *st_str(const strtab *st, uint32_t s) {
    return st->pool + st->off[s];
}

static int64_t st_find(const strtab *st, const char *s, size_t n) {
    if (!st->nslots) return -1;
    size_t mask = st->nslots - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        uint32_t v = st->slots[i];
        if (!v) return -1;
        uint32_t k = v - 1;
        if (st->len[k] == n && memcmp(st->pool + st->off[k], s, n) == 0) return k;
    }
}

static bool st_rehash(strtab *st, size_t nslots) {
    uint32_t *slots = sdxl_calloc(nslots, sizeof *slots);
    if (!slots) return false;
    size_t mask = nslots - 1;
    for (size_t k = 0; k < st->n; k++) {
        size_t i = hash_bytes(st->pool + st->off[k], st->len[k]) & mask;
        while (slots[i])
            i = (i + 1) & mask;
        slots[i] = (uint32_t)k + 1;
    }
    sdxl_free(st->slots);
    st->slots = slots;
    st->nslots = nslots;
    return true;
}

/* Index of s[0,n), adding it if new. false only on OUT_OF_MEMORY/limits. */
static bool st_intern(strtab *st, const char *s, size_t n, uint32_t *out) {
    int64_t f = st_find(st, s, n);
    if (f >= 0) {
        *out = (uint32_t)f;
        return true;
    }
    if (st->n >= UINT32_MAX / 2 || st->pool_len + n + 1 > UINT32_MAX) return false;
    if ((st->n + 1) * 2 > st->nslots && !st_rehash(st, st->nslots ? st->nslots * 2 : 1024)) return false;
    size_t cap = st->cap;
    if (st->n + 1 > cap) {
        size_t c1 = cap, c2 = cap, c3 = cap, c4 = cap;
        if (!grow(&st->off, &c1, st->n + 1, sizeof *st->off) ||
            !grow(&st->len, &c2, st->n + 1, sizeof *st->len) ||
            !grow(&st->vocab, &c3, st->n + 1, sizeof *st->vocab) ||
            !grow(&st->added, &c4, st->n + 1, sizeof *st->added))
            return false;
        st->cap = c1;
    }
    if (!grow(&st->pool, &st->pool_cap, st->pool_len + n + 1, 1)) return false;
    memcpy(st->pool + st->pool_len, s, n);
    st->pool[st->pool_len + n] = 0;
    size_t k = st->n++;
    st->off[k] = (uint32_t)st->pool_len;
    st->len[k] = (uint32_t)n;
    st->vocab[k] = -1;
    st->added[k] = -1;
    st->pool_len += n + 1;
    size_t mask = st->nslots - 1;
    size_t i = hash_bytes(s, n) & mask;
    while (st->slots[i])
        i = (i + 1) & mask;
    st->slots[i] = (uint32_t)k + 1;
    *out = (uint32_t)k;
    return true;
}

static void st_free(strtab *st) {
    sdxl_free(st->pool);
    sdxl_free(st->off);
    sdxl_free(st->len);
    sdxl_free(st->vocab);
    sdxl_free(st->added);
    sdxl_free(st->slots);
}

/* ---- merge table: (left symbol, right symbol) -> (rank, merged symbol) ---- */

typedef struct mtab {
    uint64_t *key;
    uint32_t *rank, *res; /* res == NONE: empty slot */
    size_t nslots, n;
} mtab;

static size_t mt_slot(uint64_t key, size_t mask) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & mask;
}

static bool mt_find(const mtab *mt, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *res) {
    if (!mt->nslots) return false;
    uint64_t key = ((uint64_t)a << 32) | b;
    size_t mask = mt->nslots - 1;
    for (size_t i = mt_slot(key, mask);; i = (i + 1) & mask) {
        if (mt->res[i] == NONE) return false;
        if (mt->key[i] == key) {
            *rank = mt->rank[i];
            *res = mt->res[i];
            return true;
        }
    }
}

static bool mt_alloc(mtab *mt, size_t nslots) {
    mt->key = sdxl_malloc(nslots * sizeof *mt->key);
    mt->rank = sdxl_malloc(nslots * sizeof *mt->rank);
    mt->res = sdxl_malloc(nslots * sizeof *mt->res);
    if (!mt->key || !mt->rank || !mt->res) return false;
    memset(mt->res, 0xFF, nslots * sizeof *mt->res);
    mt->nslots = nslots;
    return true;
}

/* Insert or overwrite (the reference builds a dict: a repeated pair keeps its
 * LAST rank). The table is sized once for the number of merge lines. */
static void mt_put(mtab *mt, uint32_t a, uint32_t b, uint32_t rank, uint32_t res) {
    uint64_t key = ((uint64_t)a << 32) | b;
    size_t mask = mt->nslots - 1;
    size_t i = mt_slot(key, mask);
    while (mt->res[i] != NONE && mt->key[i] != key)
        i = (i + 1) & mask;
    if (mt->res[i] == NONE) mt->n++;
    mt->key[i] = key;
    mt->rank[i] = rank;
    mt->res[i] = res;
}

static void mt_free(mtab *mt) {
    sdxl_free(mt->key);
    sdxl_free(mt->rank);
    sdxl_free(mt->res);
}

/* ---- the tokenizer -------------------------------------------------------- */

typedef struct added_tok {
    uint32_t sym; /* content */
    int32_t id;
    bool lstrip, rstrip, single_word;
} added_tok;

struct sdxl_tokenizer {
    strtab st;
    mtab mt;
    int32_t *final;     /* [st.n] the id each symbol encodes to (added, vocab, else unk) */
    uint32_t *id_sym;   /* [n_ids] id -> symbol, NONE if no token has the id */
    int32_t n_ids;      /* vocab size: max id + 1 */
    int32_t n_distinct; /* distinct strings in vocab ∪ added: transformers' len(get_vocab()) */
    uint32_t byte_sym[256], byte_sym_w[256]; /* bytes_to_unicode(b), same + "</w>" */
    uint32_t sym_sot, sym_eot;
    added_tok *added; /* [n_added] sorted by (first byte, length desc) once finalized */
    size_t n_added, added_cap;
    uint32_t bucket[257]; /* added tokens starting with byte b: [bucket[b], bucket[b+1]) */
    int32_t bos, eos, pad, unk, comma;
    int max_length;
};

/* CLIP's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. */
static uint32_t byte_to_unicode(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return 256u + (uint32_t)n;
}

/* The 256 byte symbols in bytes_to_unicode's dict order (printable first). */
static void byte_order(int order[256]) {
    int k = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) order[k++] = b;
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) order[k++] = b;
}

void sdxl_tokenizer_free(sdxl_tokenizer *t) {
    if (!t) return;
    st_free(&t->st);
    mt_free(&t->mt);
    sdxl_free(t->final);
    sdxl_free(t->id_sym);
    sdxl_free(t->added);
    sdxl_free(t);
}

int32_t sdxl_tokenizer_bos(const sdxl_tokenizer *t) {
    return t ? t->bos : -1;
}
int32_t sdxl_tokenizer_eos(const sdxl_tokenizer *t) {
    return t ? t->eos : -1;
}
int32_t sdxl_tokenizer_pad_id(const sdxl_tokenizer *t) {
    return t ? t->pad : -1;
}
int32_t sdxl_tokenizer_unk(const sdxl_tokenizer *t) {
    return t ? t->unk : -1;
}
int sdxl_tokenizer_max_length(const sdxl_tokenizer *t) {
    return t ? t->max_length : 0;
}
int32_t sdxl_tokenizer_vocab_size(const sdxl_tokenizer *t) {
    return t ? t->n_ids : 0;
}
int32_t sdxl__tokenizer_comma(const sdxl_tokenizer *t) {
    return t ? t->comma : -1;
}

int32_t sdxl_tokenizer_token_id(const sdxl_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    int64_t s = st_find(&t->st, token, strlen(token));
    if (s < 0) return -1;
    if (t->st.added[s] >= 0) return t->added[t->st.added[s]].id;
    return t->st.vocab[s];
}

const char *sdxl_tokenizer_token_str(const sdxl_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids || t->id_sym[id] == NONE) return NULL;
    return st_str(&t->st, t->id_sym[id]);
}

static sdxl_status oom(sdxl_error *err, const char *what) {
    return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "tokenizer: out of memory (%s)", what);
}

/* Interns the 512 byte symbols and the two CLIP literals every BPE needs. */
static bool intern_base(sdxl_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char buf[8];
        size_t n = u8_put(byte_to_unicode(b), buf);
        if (!st_intern(&t->st, buf, n, &t->byte_sym[b])) return false;
        memcpy(buf + n, "</w>", 4);
        if (!st_intern(&t->st, buf, n + 4, &t->byte_sym_w[b])) return false;
    }
    return st_intern(&t->st, SOT, strlen(SOT), &t->sym_sot) &&
           st_intern(&t->st, EOT, strlen(EOT), &t->sym_eot);
}

/* ---- files ------------------------------------------------------------------ */

/* Whole file into a NUL-terminated sdxl_malloc buffer. */
static sdxl_status read_file(const char *path, char **out, size_t *len, sdxl_error *err) {
    sdxl_status st = sdxl_read_file(path, MAX_FILE_BYTES, out, len, err);
    return st ? sdxl_error_prefix(err, "tokenizer") : st;
}

static size_t line_of(const char *buf, size_t off) {
    size_t line = 1;
    for (size_t i = 0; i < off; i++)
        line += buf[i] == '\n';
    return line;
}

static sdxl_status check_text_file(const char *path, const char *buf, size_t len, sdxl_error *err) {
    size_t bad = sdxl_utf8_invalid_at(buf, len);
    if (bad != len)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s line %zu: invalid UTF-8 at byte %zu",
                              path, line_of(buf, bad), bad);
    if (memchr(buf, 0, len))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: contains a NUL byte", path);
    return SDXL_STATUS_OK;
}

/* Parse a JSON text file into a cJSON tree (caller cJSON_Delete's it). */
static sdxl_status parse_json(const char *path, const char *buf, size_t len, cJSON **out, sdxl_error *err) {
    sdxl_status st = check_text_file(path, buf, len, err);
    if (st) return st;
    /* cJSON would cut a key at an escaped NUL and silently merge entries. */
    for (const char *p = buf; (p = strstr(p, "\\u0000")) != NULL; p++) {
        if (p > buf && p[-1] == '\\') continue;
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s line %zu: \\u0000 in a string", path,
                              line_of(buf, (size_t)(p - buf)));
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(buf, len, &end, false);
    if (!j) {
        size_t off = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s line %zu: malformed JSON", path,
                              line_of(buf, off));
    }
    *out = j;
    return SDXL_STATUS_OK;
}

static sdxl_status path_join(const char *dir, const char *name, char *out, size_t cap, sdxl_error *err) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenizer: path too long: %s/%s", dir, name);
    return SDXL_STATUS_OK;
}

/* ---- vocab.json ---------------------------------------------------------------- */

static sdxl_status load_vocab(sdxl_tokenizer *t, const char *path, sdxl_error *err) {
    char *buf;
    size_t len;
    sdxl_status st = read_file(path, &buf, &len, err);
    if (st) return st;
    cJSON *root = NULL;
    st = parse_json(path, buf, len, &root, err);
    sdxl_free(buf);
    if (st) return st;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                              "tokenizer: %s: expected a JSON object of token -> id", path);
    }
    int32_t max_id = -1;
    size_t count = 0;
    for (cJSON *it = root->child; it; it = it->next)
        count++;
    uint32_t *order = sdxl_malloc((count ? count : 1) * sizeof *order);
    int32_t *ids = sdxl_malloc((count ? count : 1) * sizeof *ids);
    if (!order || !ids) {
        st = oom(err, "vocab");
        goto done;
    }
    size_t k = 0;
    for (cJSON *it = root->child; it; it = it->next, k++) {
        const char *key = it->string;
        size_t kl = strlen(key);
        double v = it->valuedouble;
        if (!cJSON_IsNumber(it) || !(v >= 0) || v >= SDXL_TOKENIZER_MAX_ID || v != floor(v)) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                "tokenizer: %s: token \"%.64s\": id must be an integer in [0, %d)", path, key,
                                SDXL_TOKENIZER_MAX_ID);
            goto done;
        }
        if (kl == 0 || kl > MAX_TOKEN_BYTES) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: token with id %d has length %zu",
                                path, (int)v, kl);
            goto done;
        }
        uint32_t s;
        if (!st_intern(&t->st, key, kl, &s)) {
            st = oom(err, "vocab");
            goto done;
        }
        if (t->st.vocab[s] >= 0) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: token \"%.64s\" appears twice",
                                path, key);
            goto done;
        }
        t->st.vocab[s] = (int32_t)v;
        order[k] = s;
        ids[k] = (int32_t)v;
        if ((int32_t)v > max_id) max_id = (int32_t)v;
    }
    if (count == 0) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: empty vocabulary", path);
        goto done;
    }
    t->n_ids = max_id + 1;
    t->id_sym = sdxl_malloc((size_t)t->n_ids * sizeof *t->id_sym);
    if (!t->id_sym) {
        st = oom(err, "vocab");
        goto done;
    }
    memset(t->id_sym, 0xFF, (size_t)t->n_ids * sizeof *t->id_sym);
    /* the reference's decoder is {id: token}: for a repeated id the last token wins */
    for (size_t i = 0; i < count; i++)
        t->id_sym[ids[i]] = order[i];
done:
    sdxl_free(order);
    sdxl_free(ids);
    cJSON_Delete(root);
    return st;
}

/* ---- merges ------------------------------------------------------------------ */

/* Python: text.strip().split("\n")[1 : 48895], each line .split(), ranks by
 * position (a repeated pair keeps its last rank). Empty lines are kept as
 * harmless never-matching entries, as there; a line with one or three
 * fields is an error here (the reference would silently ignore it). */
static sdxl_status parse_merges(sdxl_tokenizer *t, const char *path, const char *buf, size_t len,
                                sdxl_error *err) {
    /* strip (Unicode whitespace) at both ends, remembering the line number */
    size_t b = 0, e = len, line = 1;
    while (b < e) {
        size_t i = b;
        uint32_t c = u8_next(buf, &i);
        if (!py_isspace(c)) break;
        line += c == '\n';
        b = i;
    }
    while (e > b) {
        size_t i = u8_prev(buf, e), j = i;
        if (!py_isspace(u8_next(buf, &j))) break;
        e = i;
    }
    size_t n_lines = 1;
    for (size_t i = b; i < e; i++)
        n_lines += buf[i] == '\n';
    size_t n_merges = n_lines > 1 ? n_lines - 1 : 0;
    if (n_merges > SDXL_TOKENIZER_MAX_MERGES) n_merges = SDXL_TOKENIZER_MAX_MERGES;
    size_t nslots = 1024;
    while (nslots < n_merges * 2)
        nslots *= 2;
    if (!mt_alloc(&t->mt, nslots)) return oom(err, "merges");

    char *joined = NULL;
    size_t joined_cap = 0;
    size_t p = b;
    for (size_t k = 0; k <= n_merges && p <= e; k++, line++) {
        const char *nl = memchr(buf + p, '\n', e - p);
        size_t le = nl ? (size_t)(nl - buf) : e;
        if (k > 0) {
            /* split on whitespace */
            size_t fs[3], fe[3];
            int nf = 0;
            size_t i = p;
            while (i < le) {
                size_t j = i;
                if (py_isspace(u8_next(buf, &j))) {
                    i = j;
                    continue;
                }
                size_t start = i;
                while (i < le) {
                    j = i;
                    if (py_isspace(u8_next(buf, &j))) break;
                    i = j;
                }
                if (nf < 3) fs[nf] = start, fe[nf] = i;
                nf++;
            }
            if (nf != 0 && nf != 2) {
                sdxl_free(joined);
                return sdxl_error_set(
                    err, SDXL_STATUS_BAD_INPUT,
                    "tokenizer: %s line %zu: expected two symbols separated by a space, found %d", path, line,
                    nf);
            }
            if (nf == 2) {
                size_t l0 = fe[0] - fs[0], l1 = fe[1] - fs[1];
                if (l0 + l1 > MAX_TOKEN_BYTES) {
                    sdxl_free(joined);
                    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                          "tokenizer: %s line %zu: merge too long", path, line);
                }
                uint32_t a, c, r;
                if (!grow(&joined, &joined_cap, l0 + l1, 1) || !st_intern(&t->st, buf + fs[0], l0, &a) ||
                    !st_intern(&t->st, buf + fs[1], l1, &c)) {
                    sdxl_free(joined);
                    return oom(err, "merges");
                }
                memcpy(joined, buf + fs[0], l0);
                memcpy(joined + l0, buf + fs[1], l1);
                if (!st_intern(&t->st, joined, l0 + l1, &r)) {
                    sdxl_free(joined);
                    return oom(err, "merges");
                }
                mt_put(&t->mt, a, c, (uint32_t)(k - 1), r);
            }
        }
        p = le + 1;
    }
    sdxl_free(joined);
    return SDXL_STATUS_OK;
}

/* ---- special and added tokens ---------------------------------------------------- */

typedef struct spec {
    char *content; /* sdxl_strdup'd; NULL = None */
    bool present;  /* named by a file (else CLIPTokenizer's default applies) */
    bool lstrip, rstrip, single_word;
} spec;

enum { SP_BOS, SP_EOS, SP_UNK, SP_PAD, SP_N };
static const char *const spec_key[SP_N] = {"bos_token", "eos_token", "unk_token", "pad_token"};

typedef struct specs {
    spec s[SP_N];
    spec *extra; /* additional_special_tokens */
    size_t n_extra;
    bool extra_present;
} specs;

static void specs_free(specs *sp) {
    for (int i = 0; i < SP_N; i++)
        sdxl_free(sp->s[i].content);
    for (size_t i = 0; i < sp->n_extra; i++)
        sdxl_free(sp->extra[i].content);
    sdxl_free(sp->extra);
}

static bool json_flag(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsTrue(f);
}

/* A token value: "text", {"content": "text", "lstrip": ..}, or null. */
static sdxl_status read_spec(const char *path, const char *key, const cJSON *v, spec *out, sdxl_error *err) {
    sdxl_free(out->content);
    memset(out, 0, sizeof *out);
    out->present = true;
    if (cJSON_IsNull(v)) return SDXL_STATUS_OK;
    const char *s = NULL;
    if (cJSON_IsString(v)) {
        s = v->valuestring;
    } else if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) s = c->valuestring;
        out->lstrip = json_flag(v, "lstrip");
        out->rstrip = json_flag(v, "rstrip");
        out->single_word = json_flag(v, "single_word");
    }
    if (!s)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                              "tokenizer: %s: \"%s\" must be a string, an object with \"content\", or null",
                              path, key);
    if (strlen(s) > MAX_TOKEN_BYTES)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: \"%s\" is too long", path, key);
    out->content = sdxl_strdup(s);
    return out->content ? SDXL_STATUS_OK : oom(err, "special tokens");
}

static sdxl_status read_specs(const char *path, const cJSON *root, specs *sp, sdxl_error *err) {
    for (int i = 0; i < SP_N; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, spec_key[i]);
        if (!v) continue;
        sdxl_status st = read_spec(path, spec_key[i], v, &sp->s[i], err);
        if (st) return st;
    }
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "additional_special_tokens");
    if (ex && !cJSON_IsNull(ex)) {
        if (!cJSON_IsArray(ex))
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                  "tokenizer: %s: \"additional_special_tokens\" must be a list", path);
        for (size_t i = 0; i < sp->n_extra; i++)
            sdxl_free(sp->extra[i].content);
        sdxl_free(sp->extra);
        sp->extra = NULL;
        sp->n_extra = 0;
        size_t n = (size_t)cJSON_GetArraySize(ex);
        if (n > MAX_ADDED)
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                  "tokenizer: %s: more than %d additional special tokens", path, MAX_ADDED);
        sp->extra = sdxl_calloc(n ? n : 1, sizeof *sp->extra);
        if (!sp->extra) return oom(err, "special tokens");
        sp->n_extra = n;
        size_t i = 0;
        for (const cJSON *v = ex->child; v; v = v->next, i++) {
            sdxl_status st = read_spec(path, "additional_special_tokens", v, &sp->extra[i], err);
            if (st) return st;
        }
    }
    return SDXL_STATUS_OK;
}

static sdxl_status add_added(sdxl_tokenizer *t, uint32_t sym, int32_t id, bool lstrip, bool rstrip,
                             bool single_word, sdxl_error *err) {
    if (t->n_added >= MAX_ADDED)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: more than %d added tokens", MAX_ADDED);
    if (!grow(&t->added, &t->added_cap, t->n_added + 1, sizeof *t->added)) return oom(err, "added tokens");
    t->st.added[sym] = (int32_t)t->n_added;
    t->added[t->n_added++] = (added_tok){sym, id, lstrip, rstrip, single_word};
    return SDXL_STATUS_OK;
}

/* tokenizer_config.json "added_tokens_decoder": {"<id>": {"content": ..}}. */
static sdxl_status read_added_decoder(sdxl_tokenizer *t, const char *path, const cJSON *root,
                                      sdxl_error *err) {
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder");
    if (!dec || cJSON_IsNull(dec)) return SDXL_STATUS_OK;
    if (!cJSON_IsObject(dec))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                              "tokenizer: %s: \"added_tokens_decoder\" must be an object", path);
    for (const cJSON *it = dec->child; it; it = it->next) {
        const char *k = it->string;
        char *endp = NULL;
        errno = 0;
        long id = strtol(k, &endp, 10);
        if (!*k || *endp || errno || id < 0 || id >= SDXL_TOKENIZER_MAX_ID || k[0] == '+' || k[0] == ' ')
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                  "tokenizer: %s: added_tokens_decoder key \"%.32s\" is not a token id", path,
                                  k);
        spec sp = {0};
        sdxl_status st = read_spec(path, "added_tokens_decoder entry", it, &sp, err);
        if (st) {
            sdxl_free(sp.content);
            return st;
        }
        if (!sp.content || !sp.content[0]) { /* the reference skips empty tokens */
            sdxl_free(sp.content);
            continue;
        }
        uint32_t sym;
        if (!st_intern(&t->st, sp.content, strlen(sp.content), &sym)) {
            sdxl_free(sp.content);
            return oom(err, "added tokens");
        }
        if (t->st.added[sym] >= 0) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                "tokenizer: %s: added token \"%.64s\" is declared twice", path, sp.content);
            sdxl_free(sp.content);
            return st;
        }
        sdxl_free(sp.content);
        st = add_added(t, sym, (int32_t)id, sp.lstrip, sp.rstrip, sp.single_word, err);
        if (st) return st;
    }
    return SDXL_STATUS_OK;
}

/* Make every special token an added token (transformers does this at the end
 * of PreTrainedTokenizer.__init__, in the order bos, eos, unk, pad,
 * additional), resolve the special ids, compute each symbol's final id, and
 * bucket the added tokens for the split. */
static sdxl_status finalize(sdxl_tokenizer *t, specs *sp, const char *where, sdxl_error *err) {
    static const char *const dflt[SP_N] = {SOT, EOT, EOT, EOT}; /* CLIPTokenizer.__init__ */
    for (int i = 0; i < SP_N; i++) {
        if (!sp->s[i].present) {
            sp->s[i].content = sdxl_strdup(dflt[i]);
            if (!sp->s[i].content) return oom(err, "special tokens");
            sp->s[i].present = true;
        }
        if (!sp->s[i].content || !sp->s[i].content[0])
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: no %s", where, spec_key[i]);
        if (sdxl_utf8_invalid_at(sp->s[i].content, strlen(sp->s[i].content)) != strlen(sp->s[i].content))
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: %s is not UTF-8", where,
                                  spec_key[i]);
    }
    /* transformers' new ids start at len(get_vocab()): distinct strings */
    int32_t n_distinct = 0;
    for (size_t s = 0; s < t->st.n; s++)
        n_distinct += t->st.vocab[s] >= 0 || t->st.added[s] >= 0;
    int32_t next_new = n_distinct;
    size_t n_sp = SP_N + sp->n_extra;
    for (size_t i = 0; i < n_sp; i++) {
        spec *p = i < SP_N ? &sp->s[i] : &sp->extra[i - SP_N];
        if (!p->content || !p->content[0]) continue;
        uint32_t sym;
        if (!st_intern(&t->st, p->content, strlen(p->content), &sym)) return oom(err, "special tokens");
        if (t->st.added[sym] >= 0) continue;
        int32_t id = t->st.vocab[sym] >= 0 ? t->st.vocab[sym] : next_new++;
        if (id >= SDXL_TOKENIZER_MAX_ID)
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: too many ids");
        sdxl_status st = add_added(t, sym, id, p->lstrip, p->rstrip, p->single_word, err);
        if (st) return st;
    }
    /* the id table grows to cover added ids; an added id names its token */
    int32_t n_ids = t->n_ids;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id + 1 > n_ids) n_ids = t->added[i].id + 1;
    if (n_ids > t->n_ids) {
        uint32_t *ids = sdxl_realloc(t->id_sym, (size_t)n_ids * sizeof *ids);
        if (!ids) return oom(err, "vocab");
        for (int32_t i = t->n_ids; i < n_ids; i++)
            ids[i] = NONE;
        t->id_sym = ids;
        t->n_ids = n_ids;
    }
    for (size_t i = 0; i < t->n_added; i++)
        t->id_sym[t->added[i].id] = t->added[i].sym;
    n_distinct = 0;
    for (size_t s = 0; s < t->st.n; s++)
        n_distinct += t->st.vocab[s] >= 0 || t->st.added[s] >= 0;
    t->n_distinct = n_distinct;

    int32_t special[SP_N];
    for (int i = 0; i < SP_N; i++) {
        int64_t s = st_find(&t->st, sp->s[i].content, strlen(sp->s[i].content));
        special[i] = t->added[t->st.added[s]].id; /* every special token is now added */
    }
    t->bos = special[SP_BOS];
    t->eos = special[SP_EOS];
    t->unk = special[SP_UNK];
    t->pad = special[SP_PAD];
    int64_t comma = st_find(&t->st, ",</w>", 5);
    t->comma = comma >= 0 ? t->st.vocab[comma] : -1;

    t->final = sdxl_malloc(t->st.n * sizeof *t->final);
    if (!t->final) return oom(err, "vocab");
    for (size_t s = 0; s < t->st.n; s++) {
        if (t->st.added[s] >= 0)
            t->final[s] = t->added[t->st.added[s]].id;
        else if (t->st.vocab[s] >= 0)
            t->final[s] = t->st.vocab[s];
        else
            t->final[s] = t->unk;
    }

    /* sort added tokens by (first byte, length descending): the first hit in a
     * bucket is the longest match at that position */
    for (size_t i = 1; i < t->n_added; i++) {
        added_tok a = t->added[i];
        uint8_t fa = (uint8_t)st_str(&t->st, a.sym)[0];
        size_t j = i;
        while (j > 0) {
            added_tok *b = &t->added[j - 1];
            uint8_t fb = (uint8_t)st_str(&t->st, b->sym)[0];
            if (fb < fa || (fb == fa && t->st.len[b->sym] >= t->st.len[a.sym])) break;
            t->added[j] = *b;
            j--;
        }
        t->added[j] = a;
    }
    for (size_t i = 0; i < t->n_added; i++)
        t->st.added[t->added[i].sym] = (int32_t)i;
    size_t k = 0;
    for (int b = 0; b < 256; b++) {
        t->bucket[b] = (uint32_t)k;
        while (k < t->n_added && (uint8_t)st_str(&t->st, t->added[k].sym)[0] == b)
            k++;
    }
    t->bucket[256] = (uint32_t)k;
    return SDXL_STATUS_OK;
}

/* ---- loaders -------------------------------------------------------------------- */

static sdxl_tokenizer *tok_new(void) {
    sdxl_tokenizer *t = sdxl_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->max_length = DEFAULT_MAX_LENGTH;
    t->bos = t->eos = t->pad = t->unk = t->comma = -1;
    return t;
}

/* Optional JSON config: NOT_FOUND leaves *root NULL and is not an error. */
static sdxl_status load_optional_json(const char *path, cJSON **root, sdxl_error *err) {
    *root = NULL;
    char *buf;
    size_t len;
    sdxl_status st = read_file(path, &buf, &len, err);
    if (st == SDXL_STATUS_NOT_FOUND) {
        sdxl_error_clear(err);
        return SDXL_STATUS_OK;
    }
    if (st) return st;
    st = parse_json(path, buf, len, root, err);
    sdxl_free(buf);
    if (!st && !cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: expected a JSON object", path);
    }
    return st;
}

sdxl_status sdxl_tokenizer_load_dir(const char *dir, sdxl_tokenizer **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenizer: out is NULL");
    *out = NULL;
    if (!dir) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenizer: dir is NULL");
    char path[4096];
    sdxl_tokenizer *t = tok_new();
    if (!t) return oom(err, "tokenizer");
    specs sp = {0};
    cJSON *cfg = NULL, *map = NULL;
    char *buf = NULL;
    size_t len = 0;
    sdxl_status st;

    if ((st = path_join(dir, "vocab.json", path, sizeof path, err)) || (st = load_vocab(t, path, err)))
        goto fail;
    if (!intern_base(t)) {
        st = oom(err, "vocab");
        goto fail;
    }
    if ((st = path_join(dir, "merges.txt", path, sizeof path, err)) ||
        (st = read_file(path, &buf, &len, err)) || (st = check_text_file(path, buf, len, err)) ||
        (st = parse_merges(t, path, buf, len, err)))
        goto fail;
    sdxl_free(buf);
    buf = NULL;

    if ((st = path_join(dir, "tokenizer_config.json", path, sizeof path, err)) ||
        (st = load_optional_json(path, &cfg, err)))
        goto fail;
    if (cfg) {
        if ((st = read_added_decoder(t, path, cfg, err)) || (st = read_specs(path, cfg, &sp, err))) goto fail;
        const cJSON *ml = cJSON_GetObjectItemCaseSensitive(cfg, "model_max_length");
        if (ml && !cJSON_IsNull(ml)) {
            double v = ml->valuedouble;
            if (!cJSON_IsNumber(ml) || v != floor(v) || v < 3) {
                st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                    "tokenizer: %s: model_max_length must be an integer >= 3", path);
                goto fail;
            }
            if (v > 1024) /* transformers' "unbounded" 1e30: CLIP's positions are 77 */
                SDXL_LOG_W("tokenizer: %s: model_max_length %g taken as %d", path, v, DEFAULT_MAX_LENGTH);
            else
                t->max_length = (int)v;
        }
    }
    if ((st = path_join(dir, "special_tokens_map.json", path, sizeof path, err)) ||
        (st = load_optional_json(path, &map, err)))
        goto fail;
    if (map && (st = read_specs(path, map, &sp, err))) goto fail; /* overrides tokenizer_config.json */
    if ((st = finalize(t, &sp, dir, err))) goto fail;
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    specs_free(&sp);
    *out = t;
    return SDXL_STATUS_OK;
fail:
    sdxl_free(buf);
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    specs_free(&sp);
    sdxl_tokenizer_free(t);
    return st;
}

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
    (void)opaque;
    if (size && items > SIZE_MAX / size) return NULL;
    return sdxl_malloc((size_t)items * size);
}

static void z_free(voidpf opaque, voidpf p) {
    (void)opaque;
    sdxl_free(p);
}

/* gunzip a whole file (zlib with our allocator) into a NUL-terminated buffer. */
static sdxl_status gunzip_file(const char *path, char **out, size_t *out_len, sdxl_error *err) {
    *out = NULL;
    char *in;
    size_t in_len;
    sdxl_status st = read_file(path, &in, &in_len, err);
    if (st) return st;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    zs.zalloc = z_alloc;
    zs.zfree = z_free;
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        sdxl_free(in);
        return oom(err, "inflate");
    }
    char *buf = NULL;
    size_t cap = 0, n = 0;
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)in_len;
    int zr = Z_OK;
    while (zr != Z_STREAM_END) {
        if (n + 1 >= cap) {
            if (cap >= MAX_GZ_OUT_BYTES) {
                st =
                    sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: inflates to more than %zu MiB",
                                   path, MAX_GZ_OUT_BYTES >> 20);
                goto done;
            }
            if (!grow(&buf, &cap, cap ? cap * 2 : (size_t)1 << 21, 1)) {
                st = oom(err, path);
                goto done;
            }
        }
        zs.next_out = (Bytef *)buf + n;
        zs.avail_out = (uInt)(cap - n - 1);
        zr = inflate(&zs, Z_NO_FLUSH);
        n = cap - 1 - zs.avail_out;
        if (zr == Z_STREAM_END) break;
        if (zr != Z_OK && !(zr == Z_BUF_ERROR && zs.avail_out == 0)) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "tokenizer: %s: not a valid gzip file (%s)", path,
                                zs.msg ? zs.msg : (zr == Z_BUF_ERROR ? "truncated" : "inflate error"));
            goto done;
        }
    }
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    buf = NULL;
done:
    inflateEnd(&zs);
    sdxl_free(buf);
    sdxl_free(in);
    return st;
}

sdxl_status sdxl_tokenizer_load_clip_default(const char *bpe_gz_path, sdxl_tokenizer_pad pad,
                                             sdxl_tokenizer **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenizer: out is NULL");
    *out = NULL;
    if (!bpe_gz_path) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenizer: path is NULL");
    if (pad != SDXL_TOKENIZER_PAD_EOS && pad != SDXL_TOKENIZER_PAD_BANG)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenizer: unknown pad kind %d", (int)pad);
    const char *path = bpe_gz_path;
    char *text = NULL;
    size_t len = 0;
    sdxl_status st = gunzip_file(path, &text, &len, err);
    if (st) return st;
    sdxl_tokenizer *t = tok_new();
    specs sp = {0};
    uint32_t *order = NULL;
    if (!t) {
        sdxl_free(text);
        return oom(err, "tokenizer");
    }
    if ((st = check_text_file(path, text, len, err))) goto fail;
    if (!intern_base(t)) {
        st = oom(err, "vocab");
        goto fail;
    }
    /* open_clip: text.split('\n')[1:48895], no strip. A merges.txt with the
     * same lines gives the same ranks, so the folder parser serves here: the
     * header line is kept as line 0 and the tail is cut at the cap. */
    if ((st = parse_merges(t, path, text, len, err))) goto fail;
    /* vocabulary: bytes, bytes + </w>, each merge joined, the two literals */
    size_t cap_ids = 512 + SDXL_TOKENIZER_MAX_MERGES + 2;
    order = sdxl_malloc(cap_ids * sizeof *order);
    if (!order) {
        st = oom(err, "vocab");
        goto fail;
    }
    int bo[256];
    byte_order(bo);
    int32_t id = 0;
    for (int i = 0; i < 256; i++)
        order[id++] = t->byte_sym[bo[i]];
    for (int i = 0; i < 256; i++)
        order[id++] = t->byte_sym_w[bo[i]];
    size_t p = 0, line = 0;
    char *joined = NULL;
    size_t jcap = 0;
    while (p <= len && line <= SDXL_TOKENIZER_MAX_MERGES) {
        const char *nl = memchr(text + p, '\n', len - p);
        size_t le = nl ? (size_t)(nl - text) : len;
        if (line > 0) {
            /* join the (whitespace-separated) fields */
            size_t jn = 0;
            for (size_t i = p; i < le;) {
                size_t j = i;
                uint32_t c = u8_next(text, &j);
                if (!py_isspace(c)) {
                    if (!grow(&joined, &jcap, jn + (j - i), 1)) {
                        sdxl_free(joined);
                        st = oom(err, "vocab");
                        goto fail;
                    }
                    memcpy(joined + jn, text + i, j - i);
                    jn += j - i;
                }
                i = j;
            }
            uint32_t s;
            if (jn == 0 || !st_intern(&t->st, joined, jn, &s)) {
                sdxl_free(joined);
                st = jn == 0 ? sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                              "tokenizer: %s line %zu: empty merge", path, line + 1)
                             : oom(err, "vocab");
                goto fail;
            }
            order[id++] = s;
        }
        line++;
        if (!nl) break;
        p = le + 1;
    }
    sdxl_free(joined);
    order[id++] = t->sym_sot;
    order[id++] = t->sym_eot;
    /* the encoder is a dict over this list: a repeated string keeps its last id */
    for (int32_t i = 0; i < id; i++)
        t->st.vocab[order[i]] = i;
    t->n_ids = id;
    t->id_sym = order;
    order = NULL;

    sp.s[SP_BOS] = (spec){sdxl_strdup(SOT), true, false, false, false};
    sp.s[SP_EOS] = (spec){sdxl_strdup(EOT), true, false, false, false};
    sp.s[SP_UNK] = (spec){sdxl_strdup(EOT), true, false, false, false};
    sp.s[SP_PAD] = (spec){sdxl_strdup(pad == SDXL_TOKENIZER_PAD_BANG ? "!" : EOT), true, false, false, false};
    for (int i = 0; i < SP_N; i++)
        if (!sp.s[i].content) {
            st = oom(err, "special tokens");
            goto fail;
        }
    if ((st = finalize(t, &sp, path, err))) goto fail;
    specs_free(&sp);
    sdxl_free(text);
    *out = t;
    return SDXL_STATUS_OK;
fail:
    sdxl_free(order);
    specs_free(&sp);
    sdxl_free(text);
    sdxl_tokenizer_free(t);
    return st;
}

/* ---- encoding ------------------------------------------------------------------- */

typedef struct piece {
    const char *s;
    size_t len;
} piece;

/* Per-call scratch; every buffer grows on demand and dies with the call. */
typedef struct enc {
    const sdxl_tokenizer *t;
    int32_t **ids;
    size_t *n, *cap;
    uint32_t *cp; /* cleaned code points of a piece */
    size_t cp_cap;
    char *u8; /* the same in UTF-8, for utf8proc */
    size_t u8_cap;
    utf8proc_int32_t *nfc;
    size_t nfc_cap;
    uint32_t *low; /* one lowercased word */
    size_t low_cap;
    char *wb; /* one pattern match in UTF-8 */
    size_t wb_cap;
    uint32_t *sym; /* BPE nodes */
    int32_t *prev, *next;
    uint32_t *batch;
    size_t node_cap;
    uint64_t *heap;
    size_t heap_cap, heap_n;
    piece *pc;
    size_t pc_cap;
    char **owned; /* strings made by single_word merges */
    size_t n_owned, owned_cap;
} enc;

static void enc_free(enc *e) {
    sdxl_free(e->cp);
    sdxl_free(e->u8);
    sdxl_free(e->nfc);
    sdxl_free(e->low);
    sdxl_free(e->wb);
    sdxl_free(e->sym);
    sdxl_free(e->prev);
    sdxl_free(e->next);
    sdxl_free(e->batch);
    sdxl_free(e->heap);
    sdxl_free(e->pc);
    for (size_t i = 0; i < e->n_owned; i++)
        sdxl_free(e->owned[i]);
    sdxl_free(e->owned);
}

static bool push_id(enc *e, int32_t id) {
    if (!grow(e->ids, e->cap, *e->n + 1, sizeof **e->ids)) return false;
    (*e->ids)[(*e->n)++] = id;
    return true;
}

/* -- BPE -- */

static void heap_push(enc *e, uint64_t v) {
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e->heap[p] <= v) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = v;
}

static uint64_t heap_pop(enc *e) {
    uint64_t top = e->heap[0], v = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && e->heap[c + 1] < e->heap[c]) c++;
        if (e->heap[c] >= v) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = v;
    return top;
}

static void push_pair(enc *e, int32_t left) {
    const mtab *mt = &e->t->mt;
    int32_t right = e->next[left];
    uint32_t rank, res;
    if (right >= 0 && mt_find(mt, e->sym[left], e->sym[right], &rank, &res))
        heap_push(e, ((uint64_t)rank << 32) | (uint32_t)left);
}

/* The reference merges, while any pair has a rank, every occurrence of the
 * lowest-ranked pair, left to right, then looks again. Here: a heap of
 * (rank, position); all entries of the lowest rank are taken as one batch
 * and merged in position order, stale entries skipped. A merge never creates
 * a pair of its own rank (AB != B), so the batch is exactly the reference's
 * pass, and new lower-ranked pairs wait for the next batch as they do there. */
static sdxl_status bpe(enc *e, const char *w, size_t m, sdxl_error *err) {
    const sdxl_tokenizer *t = e->t;
    if (m == (sizeof SOT - 1) && memcmp(w, SOT, m) == 0)
        return push_id(e, t->final[t->sym_sot]) ? 0 : oom(err, "ids");
    if (m == (sizeof EOT - 1) && memcmp(w, EOT, m) == 0)
        return push_id(e, t->final[t->sym_eot]) ? 0 : oom(err, "ids");
    if (m > e->node_cap) {
        size_t c1 = e->node_cap, c2 = c1, c3 = c1, c4 = c1;
        if (!grow(&e->sym, &c1, m, sizeof *e->sym) || !grow(&e->prev, &c2, m, sizeof *e->prev) ||
            !grow(&e->next, &c3, m, sizeof *e->next) || !grow(&e->batch, &c4, m, sizeof *e->batch))
            return oom(err, "bpe");
        e->node_cap = m;
        if (!grow(&e->heap, &e->heap_cap, 3 * m + 3, sizeof *e->heap)) return oom(err, "bpe");
    }
    for (size_t i = 0; i < m; i++) {
        e->sym[i] = t->byte_sym[(uint8_t)w[i]];
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
    }
    e->sym[m - 1] = t->byte_sym_w[(uint8_t)w[m - 1]];
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < m; i++)
        push_pair(e, (int32_t)i);
    while (e->heap_n) {
        uint64_t top = heap_pop(e);
        uint32_t rank = (uint32_t)(top >> 32);
        size_t nb = 0;
        e->batch[nb++] = (uint32_t)top;
        while (e->heap_n && (uint32_t)(e->heap[0] >> 32) == rank)
            e->batch[nb++] = (uint32_t)heap_pop(e);
        for (size_t b = 0; b < nb; b++) {
            int32_t p = (int32_t)e->batch[b], q;
            uint32_t r, res;
            if (e->sym[p] == DEAD || (q = e->next[p]) < 0) continue;
            if (!mt_find(&t->mt, e->sym[p], e->sym[q], &r, &res) || r != rank) continue;
            e->sym[p] = res;
            e->sym[q] = DEAD;
            e->next[p] = e->next[q];
            if (e->next[q] >= 0) e->prev[e->next[q]] = p;
            if (e->prev[p] >= 0) push_pair(e, e->prev[p]);
            push_pair(e, p);
        }
    }
    for (int32_t i = 0; i >= 0; i = e->next[i])
        if (!push_id(e, t->final[e->sym[i]])) return oom(err, "ids");
    return SDXL_STATUS_OK;
}

/* -- the CLIP pattern over one lowercased word (no whitespace inside) -- */

/* IGNORECASE letter test for the ASCII letters of the pattern: the regex
 * module also folds U+017F (long s) to s and U+212A (Kelvin) to k. */
static bool ci(uint32_t c, char a) {
    return c == (uint32_t)a || c == (uint32_t)(a - 32) || (a == 's' && c == 0x17F) ||
           (a == 'k' && c == 0x212A);
}

static size_t match_literal(const uint32_t *w, size_t n, const char *lit) {
    size_t k = strlen(lit);
    if (n < k) return 0;
    for (size_t i = 0; i < k; i++) {
        char a = lit[i];
        if (a >= 'a' && a <= 'z' ? !ci(w[i], a) : w[i] != (uint32_t)a) return 0;
    }
    return k;
}

/* U+0345 (combining ypogegrammeni) folds to a letter, so under IGNORECASE
 * it matches neither [\p{L}] nor the negated class: findall skips it. */
static bool is_other(uint32_t c) {
    return !is_letter(c) && !is_number(c) && !re_isspace(c) && c != 0x345;
}

static sdxl_status emit_match(enc *e, const uint32_t *w, size_t n, sdxl_error *err) {
    if (!grow(&e->wb, &e->wb_cap, 4 * n, 1)) return oom(err, "text");
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += u8_put(w[i], e->wb + m);
    return bpe(e, e->wb, m, err);
}

static sdxl_status pattern_word(enc *e, const uint32_t *w, size_t n, sdxl_error *err) {
    size_t i = 0;
    while (i < n) {
        uint32_t c = w[i];
        size_t m = 0;
        if (c == '<') {
            m = match_literal(w + i, n - i, SOT);
            if (!m) m = match_literal(w + i, n - i, EOT);
        } else if (c == '\'' && i + 1 < n) {
            uint32_t d = w[i + 1];
            if (ci(d, 's') || ci(d, 't') || ci(d, 'm') || ci(d, 'd'))
                m = 2;
            else if (i + 2 < n && ((ci(d, 'r') && ci(w[i + 2], 'e')) || (ci(d, 'v') && ci(w[i + 2], 'e')) ||
                                   (ci(d, 'l') && ci(w[i + 2], 'l'))))
                m = 3;
        }
        if (!m) {
            if (is_letter(c)) {
                m = 1;
                while (i + m < n && is_letter(w[i + m]))
                    m++;
            } else if (is_number(c)) {
                m = 1;
            } else if (is_other(c)) {
                m = 1;
                while (i + m < n && is_other(w[i + m]))
                    m++;
            } else {
                i++; /* \s or U+0345: no branch matches */
                continue;
            }
        }
        sdxl_status st = emit_match(e, w + i, m, err);
        if (st) return st;
        i += m;
    }
    return SDXL_STATUS_OK;
}

/* Python's str.lower() of one word: full mapping (U+0130 -> i + U+0307) and
 * the final-sigma rule; everything else is the simple lowercase mapping. */
static sdxl_status lower_word(enc *e, const utf8proc_int32_t *w, size_t n, size_t *out_n, sdxl_error *err) {
    if (!grow(&e->low, &e->low_cap, 2 * n, sizeof *e->low)) return oom(err, "text");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = (uint32_t)w[i];
        if (c < 0x80) {
            e->low[k++] = c >= 'A' && c <= 'Z' ? c + 32 : c;
        } else if (c == 0x130) {
            e->low[k++] = 'i';
            e->low[k++] = 0x307;
        } else if (c == 0x3A3) {
            size_t j = i;
            while (j > 0 && is_case_ignorable((uint32_t)w[j - 1]))
                j--;
            bool fin = j > 0 && is_cased((uint32_t)w[j - 1]);
            if (fin) {
                j = i + 1;
                while (j < n && is_case_ignorable((uint32_t)w[j]))
                    j++;
                fin = j == n || !is_cased((uint32_t)w[j]);
            }
            e->low[k++] = fin ? 0x3C2 : 0x3C3;
        } else {
            e->low[k++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
        }
    }
    *out_n = k;
    return SDXL_STATUS_OK;
}

/* One text piece (no added tokens inside): BasicTokenizer, then the pattern. */
static sdxl_status encode_text(enc *e, const char *s, size_t len, sdxl_error *err) {
    /* _clean_text + _tokenize_chinese_chars */
    if (!grow(&e->cp, &e->cp_cap, 3 * len + 1, sizeof *e->cp)) return oom(err, "text");
    size_t n = 0;
    bool simple = true; /* all below U+0300: NFC cannot change anything */
    for (size_t i = 0; i < len;) {
        uint32_t c = u8_next(s, &i);
        if (c == 0 || c == 0xFFFD) continue;
        if (c == '\t' || c == '\n' || c == '\r') {
            e->cp[n++] = ' ';
            continue;
        }
        if (c >= 0x80 || c < 0x20 || c == 0x7F) {
            utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
            if (k == UTF8PROC_CATEGORY_CN || k >= UTF8PROC_CATEGORY_CC) continue;
            if (k == UTF8PROC_CATEGORY_ZS) {
                e->cp[n++] = ' ';
                continue;
            }
        }
        if (c >= 0x300) simple = false;
        if (is_cjk(c)) {
            e->cp[n++] = ' ';
            e->cp[n++] = c;
            e->cp[n++] = ' ';
        } else {
            e->cp[n++] = c;
        }
    }
    const utf8proc_int32_t *text;
    size_t tn;
    if (simple) {
        if (!grow(&e->nfc, &e->nfc_cap, n + 1, sizeof *e->nfc)) return oom(err, "text");
        for (size_t i = 0; i < n; i++)
            e->nfc[i] = (utf8proc_int32_t)e->cp[i];
        text = e->nfc;
        tn = n;
    } else {
        if (!grow(&e->u8, &e->u8_cap, 4 * n + 1, 1)) return oom(err, "text");
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            m += u8_put(e->cp[i], e->u8 + m);
        utf8proc_option_t opt = (utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        utf8proc_ssize_t r;
        for (;;) {
            r = utf8proc_decompose((const utf8proc_uint8_t *)e->u8, (utf8proc_ssize_t)m, e->nfc,
                                   (utf8proc_ssize_t)e->nfc_cap, opt);
            if (r < 0)
                return sdxl_error_set(err, SDXL_STATUS_INTERNAL, "tokenizer: NFC failed: %s",
                                      utf8proc_errmsg(r));
            if ((size_t)r <= e->nfc_cap) break;
            if (!grow(&e->nfc, &e->nfc_cap, (size_t)r, sizeof *e->nfc)) return oom(err, "text");
        }
        r = utf8proc_normalize_utf32(e->nfc, r, opt);
        if (r < 0)
            return sdxl_error_set(err, SDXL_STATUS_INTERNAL, "tokenizer: NFC failed: %s", utf8proc_errmsg(r));
        text = e->nfc;
        tn = (size_t)r;
    }
    /* whitespace_tokenize, lower each word, then the pattern */
    for (size_t i = 0; i < tn;) {
        if (py_isspace((uint32_t)text[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < tn && !py_isspace((uint32_t)text[j]))
            j++;
        size_t ln = 0;
        sdxl_status st = lower_word(e, text + i, j - i, &ln, err);
        if (st) return st;
        if ((st = pattern_word(e, e->low, ln, err))) return st;
        i = j;
    }
    return SDXL_STATUS_OK;
}

/* -- added-token split (PreTrainedTokenizer.tokenize) -- */

static bool add_piece(enc *e, size_t *np, const char *s, size_t len) {
    if (!grow(&e->pc, &e->pc_cap, *np + 1, sizeof *e->pc)) return false;
    e->pc[(*np)++] = (piece){s, len};
    return true;
}

static void lstrip_piece(piece *p) {
    while (p->len) {
        size_t i = 0;
        if (!py_isspace(u8_next(p->s, &i))) break;
        p->s += i;
        p->len -= i;
    }
}

static void rstrip_piece(piece *p) {
    while (p->len) {
        size_t i = u8_prev(p->s, p->len), j = i;
        if (!py_isspace(u8_next(p->s, &j))) break;
        p->len = i;
    }
}

static int32_t added_of(const sdxl_tokenizer *t, const char *s, size_t len) {
    int64_t f = st_find(&t->st, s, len);
    return f >= 0 ? t->st.added[f] : -1;
}

/* single_word: the token is glued to its neighbour and stops being special. */
static bool concat_piece(enc *e, piece *dst, const char *a, size_t al, const char *b, size_t bl) {
    if (!grow(&e->owned, &e->owned_cap, e->n_owned + 1, sizeof *e->owned)) return false;
    char *s = sdxl_malloc(al + bl + 1);
    if (!s) return false;
    memcpy(s, a, al);
    memcpy(s + al, b, bl);
    s[al + bl] = 0;
    e->owned[e->n_owned++] = s;
    dst->s = s;
    dst->len = al + bl;
    return true;
}

static sdxl_status encode_span(enc *e, const char *s, size_t len, sdxl_error *err) {
    const sdxl_tokenizer *t = e->t;
    size_t np = 0, start = 0;
    for (size_t i = 0; i < len;) {
        uint8_t c = (uint8_t)s[i];
        int32_t hit = -1;
        for (uint32_t k = t->bucket[c]; k < t->bucket[c + 1]; k++) {
            uint32_t sym = t->added[k].sym;
            size_t l = t->st.len[sym];
            if (l <= len - i && memcmp(s + i, st_str(&t->st, sym), l) == 0) {
                hit = (int32_t)k;
                break;
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        size_t l = t->st.len[t->added[hit].sym];
        if ((i > start && !add_piece(e, &np, s + start, i - start)) || !add_piece(e, &np, s + i, l))
            return oom(err, "text");
        i += l;
        start = i;
    }
    if (len > start && !add_piece(e, &np, s + start, len - start)) return oom(err, "text");

    /* the reference's stripping / single_word pass, in its order */
    /* the reference tests "is an added token" by value at each step: a
     * single_word merge followed by a strip can make a piece one again */
    for (size_t i = 0; i < np; i++) {
        int32_t ai = e->pc[i].len ? added_of(t, e->pc[i].s, e->pc[i].len) : -1;
        if (ai < 0) continue;
        const added_tok *a = &t->added[ai];
        piece left = i > 0 ? e->pc[i - 1] : (piece){NULL, 0};
        piece right = i + 1 < np ? e->pc[i + 1] : (piece){NULL, 0};
        piece tok = e->pc[i];
        if (a->rstrip && right.len) lstrip_piece(&e->pc[i + 1]);
        if (a->lstrip && left.len) rstrip_piece(&e->pc[i - 1]);
        if (a->single_word && left.len && left.s[left.len - 1] != ' ') {
            piece *l = &e->pc[i - 1];
            if (!concat_piece(e, l, l->s, l->len, tok.s, tok.len)) return oom(err, "text");
            e->pc[i] = (piece){tok.s, 0};
        } else if (a->single_word && right.len && right.s[0] != ' ') {
            piece *r = &e->pc[i + 1];
            if (!concat_piece(e, r, tok.s, tok.len, r->s, r->len)) return oom(err, "text");
            e->pc[i] = (piece){tok.s, 0};
        }
    }
    for (size_t i = 0; i < np; i++) {
        const piece *p = &e->pc[i];
        if (!p->len) continue;
        int32_t ai = added_of(t, p->s, p->len);
        sdxl_status st;
        if (ai >= 0)
            st = push_id(e, t->added[ai].id) ? SDXL_STATUS_OK : oom(err, "ids");
        else
            st = encode_text(e, p->s, p->len, err);
        if (st) return st;
    }
    return SDXL_STATUS_OK;
}

sdxl_status sdxl__tokenizer_encode_append(const sdxl_tokenizer *t, const char *text, size_t len,
                                          int32_t **ids, size_t *n, size_t *cap, sdxl_error *err) {
    size_t n0 = *n;
    enc e;
    memset(&e, 0, sizeof e);
    e.t = t;
    e.ids = ids;
    e.n = n;
    e.cap = cap;
    sdxl_status st = encode_span(&e, text, len, err);
    enc_free(&e);
    if (st) *n = n0;
    return st;
}

sdxl_status sdxl_tokenizer_encode(const sdxl_tokenizer *t, const char *text, int32_t **ids, size_t *n,
                                  sdxl_error *err) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!t || !text || !ids || !n)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "tokenizer_encode: NULL argument");
    size_t len = strnlen(text, SDXL_TOKENIZER_MAX_TEXT + 1);
    if (len > SDXL_TOKENIZER_MAX_TEXT)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "text: longer than %d bytes",
                              SDXL_TOKENIZER_MAX_TEXT);
    size_t bad = sdxl_utf8_invalid_at(text, len);
    if (bad != len) return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "text: invalid UTF-8 at byte %zu", bad);
    int32_t *out = NULL;
    size_t cnt = 0, cap = 0;
    if (!grow(&out, &cap, 16, sizeof *out)) return oom(err, "ids");
    sdxl_status st = sdxl__tokenizer_encode_append(t, text, len, &out, &cnt, &cap, err);
    if (st) {
        sdxl_free(out);
        return st;
    }
    *ids = out;
    *n = cnt;
    return SDXL_STATUS_OK;
}
