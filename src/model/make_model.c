/* make_model.c - seeded random-weight SDXL models of any config, in either
 * layout, streamed to disk tensor by tensor. See make_model.h. */
#include "model/make_model.h"
#include "io/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "core/alloc.h"
#include "core/log.h"
#include "core/threadpool.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "model/presets.h"
#include "model/weights.h"

#define PATH_CAP 4096
#define CONFIG_TEXT_MAX ((size_t)4 << 20) /* a config.json; real ones are ~2 KB */
#define GZ_TEXT_MAX ((size_t)64 << 20)    /* the CLIP merges inflate to ~1.7 MB */
#define CLIP_VOCAB_SIZE 49408             /* 512 byte symbols + 48894 merges + 2 specials */
#define CLIP_BASE_SYMBOLS 512
#define GEN_GRAIN 16384 /* elements per parallel work item */

sdxl_make_model_params sdxl_make_model_default_params(void) {
    sdxl_make_model_params p = {0};
    p.layout = SDXL_LAYOUT_DIFFUSERS;
    p.dtype = SDXL_DTYPE_F16;
    p.verify = true;
    return p;
}

/* ---- random numbers ---------------------------------------------------------------
 *
 * Counter-based, so any element can be computed on its own: chunks and
 * threads split a tensor anywhere and still produce the same bytes, and the
 * transposed text_projection is generated in its stored order directly. */

#define GOLDEN 0x9E3779B97F4A7C15ull

static uint64_t mix64(uint64_t z) { /* splitmix64's finalizer */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001B3ull;
    return h;
}

/* The stream of one tensor: its values depend on the seed and the internal
 * name only (not on the layout, the config or the order of tensors). */
static uint64_t stream_key(uint64_t seed, const char *name) {
    return mix64(fnv1a64(name) ^ mix64(seed + GOLDEN));
}

/* Box-Muller over blocks of pairs, in two passes so the heavy one
 * vectorizes:
 *   1. scalar: the 64-bit hash of the pair index, split into 23 bits for the
 *      radius and 24 for the angle, and reduced EXACTLY in integers: the
 *      radius uniform u = k 2^-24 (k odd, so u in (0, 1) and |n| < 5.8)
 *      becomes m 2^e with m in [sqrt(1/2), sqrt(2)); the angle 2 pi v becomes
 *      the nearest quarter turn q and a remainder x in [-pi/4, pi/4].
 *   2. floats, no branches: ln m = 2 atanh(s), s = (m-1)/(m+1), series to
 *      s^9 (|s| <= 0.172: error < 1e-9); sin x and cos x by their series to
 *      x^9 / x^10 (error < 3e-8); the quarter turn applied as a 2x2 rotation
 *      from a table; r = sqrt(-2 ln u).
 * The logarithm, sine and cosine are this file's polynomials, not libm's:
 * with only + - * / and IEEE sqrt (correctly rounded) every x86-64 CPU,
 * scalar or SIMD, computes the same bits (libm picks FMA variants per CPU,
 * and C11 mode keeps GCC from contracting a*b+c into FMAs). */

#define PAIR_BLOCK 256

/* a*b + c must stay two roundings everywhere (an FMA would change the
 * bits): GCC contracts in GNU C mode when the target has FMA (-march=native),
 * clang within expressions, unless told */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static const float rot[4][4] = {
    /* sin(q pi/2 + x), cos(q pi/2 + x) = (a s + b c, d s + e c): a, b, d, e */
    {1, 0, 0, 1},
    {0, 1, -1, 0},
    {-1, 0, 0, -1},
    {0, -1, 1, 0},
};

/* Not instrumented by the sanitizers: every access is to this frame's
 * fixed arrays at i < nb <= PAIR_BLOCK or to out[0, 2 np) (what the callers
 * pass), the integer arithmetic cannot overflow (q <= 4, 24-bit fields), and
 * the checks stop GCC from vectorizing it: 4x slower, which was most of the
 * sanitizer test run (~100 M values). Its output is checked value for value
 * by the tests in every build. */
__attribute__((no_sanitize("address", "undefined"))) static void
normal_pairs(uint64_t key, uint64_t p0, size_t np, float mean, float std, float *out) {
    float w[PAIR_BLOCK], x[PAIR_BLOCK], ra[PAIR_BLOCK], rb[PAIR_BLOCK], rd[PAIR_BLOCK], re[PAIR_BLOCK];
    while (np) {
        size_t nb = np < PAIR_BLOCK ? np : PAIR_BLOCK;
        /* pass 1, integers */
        for (size_t i = 0; i < nb; i++) {
            uint64_t z = mix64(key + (p0 + i + 1) * GOLDEN);
            w[i] = (float)((uint32_t)(z >> 41) * 2u + 1u); /* k: odd, < 2^24, exact; u = k 2^-24 */
            int32_t lo = (int32_t)(z & 0xFFFFFF);          /* angle = 2 pi lo / 2^24 */
            int32_t q = (lo + (1 << 21)) >> 22;            /* nearest quarter turn, 0..4 */
            x[i] = (float)(lo - (q << 22)) * (1.5707963267948966f / 4194304.0f);
            const float *r = rot[q & 3];
            ra[i] = r[0], rb[i] = r[1], rd[i] = r[2], re[i] = r[3];
        }
        /* pass 2: -2 ln u, from the float k = m 2^e read off its bits */
        for (size_t i = 0; i < nb; i++) {
            uint32_t b;
            memcpy(&b, &w[i], sizeof b);
            float mm, e = (float)((int32_t)(b >> 23) - 127 - 24); /* u = m 2^(e-24) */
            uint32_t mb = (b & 0x7FFFFFu) | 0x3F800000u;
            memcpy(&mm, &mb, sizeof mm);
            /* m to [sqrt(1/2), sqrt(2)); compared as bits (positive floats
             * order like their bits), which keeps the loop branch-free */
            float big = (float)(int32_t)(mb > 0x3FB504F3u);
            mm *= 1.0f - 0.5f * big;
            e += big;
            float s = (mm - 1.0f) / (mm + 1.0f), s2 = s * s;
            float lnm =
                2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9)))));
            w[i] = -2.0f * (e * 0.693147182f + lnm); /* >= 0 */
        }
        /* sqrtf in a loop is not vectorized without -fno-math-errno (its
         * errno check is a branch): SSE's sqrtps, the same IEEE sqrt */
        size_t i0 = 0;
#ifdef __SSE2__
        for (; i0 + 4 <= nb; i0 += 4)
            _mm_storeu_ps(w + i0, _mm_sqrt_ps(_mm_loadu_ps(w + i0)));
#endif
        for (; i0 < nb; i0++)
            w[i0] = sqrtf(w[i0]);
        /* pass 3: r (cos, sin) */
        for (size_t i = 0; i < nb; i++) {
            float r = w[i], xx = x[i], x2 = xx * xx;
            float sv =
                xx *
                (1.0f + x2 * (-1.0f / 6 + x2 * (1.0f / 120 + x2 * (-1.0f / 5040 + x2 * (1.0f / 362880)))));
            float cv =
                1.0f + x2 * (-0.5f + x2 * (1.0f / 24 + x2 * (-1.0f / 720 +
                                                             x2 * (1.0f / 40320 + x2 * (-1.0f / 3628800)))));
            out[2 * i] = mean + std * (r * (rd[i] * sv + re[i] * cv));     /* r cos */
            out[2 * i + 1] = mean + std * (r * (ra[i] * sv + rb[i] * cv)); /* r sin */
        }
        out += 2 * nb;
        p0 += nb;
        np -= nb;
    }
}

/* ---- initialisation rules ---------------------------------------------------------- */

sdxl_weight_init sdxl_make_model_init(const sdxl_naming *n, const sdxl_name_entry *e) {
    sdxl_weight_init in = {0.0f, 0.02f};
    const sdxl_name_module *m = e ? sdxl_naming_module_at(n, (size_t)e->module) : NULL;
    if (!m) return in;
    bool is_weight = sdxl_naming_at(n, (size_t)m->weight) == e;
    switch (m->kind) {
    case SDXL_MODULE_NORM:
        if (is_weight) in.mean = 1.0f; /* gain ~ 1: the norm keeps unit scale */
        break;
    case SDXL_MODULE_EMBEDDING: break;
    case SDXL_MODULE_LINEAR:
    case SDXL_MODULE_CONV:
        if (is_weight) {
            /* internal shape [out, in(, kh, kw)]: 1/fan_in variance keeps the
             * output's scale equal to the input's */
            double fan_in = 1;
            for (int d = 1; d < e->ndim; d++)
                fan_in *= (double)e->shape[d];
            in.std = (float)(1.0 / __builtin_sqrt(fan_in));
        }
        break;
    }
    return in;
}

typedef struct {
    uint64_t key;
    float mean, std;
} stream;

static stream stream_of(uint64_t seed, const sdxl_naming *n, const sdxl_name_entry *e) {
    sdxl_weight_init in = sdxl_make_model_init(n, e);
    return (stream){stream_key(seed, e->name), in.mean, in.std};
}

static float value_at(const stream *s, uint64_t i) {
    float two[2];
    normal_pairs(s->key, i >> 1, 1, s->mean, s->std, two);
    return two[i & 1];
}

/* Elements [begin, begin + count) of a stream; element i is half of pair i/2. */
static void stream_fill(const stream *s, uint64_t begin, size_t count, float *dst) {
    if (count && (begin & 1)) {
        *dst++ = value_at(s, begin++);
        count--;
    }
    normal_pairs(s->key, begin >> 1, count / 2, s->mean, s->std, dst);
    if (count & 1) dst[count - 1] = value_at(s, begin + count - 1);
}

void sdxl_make_model_values(uint64_t seed, const sdxl_naming *n, const sdxl_name_entry *e, uint64_t begin,
                            size_t count, float *dst) {
    stream s = stream_of(seed, n, e);
    stream_fill(&s, begin, count, dst);
}

/* ---- small file helpers -------------------------------------------------------------- */

static sdxl_status io_err(sdxl_error *err, const char *what, const char *path) {
    return sdxl_error_set(err, errno == ENOENT ? SDXL_STATUS_NOT_FOUND : SDXL_STATUS_IO, "%s: %s: %s", path,
                          what, strerror(errno));
}

static sdxl_status join(char *buf, const char *a, const char *b, sdxl_error *err) {
    int n = snprintf(buf, PATH_CAP, "%s/%s", a, b);
    if (n < 0 || n >= PATH_CAP)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s/%s: path too long", a, b);
    return SDXL_STATUS_OK;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Whole (small) file into an sdxl_malloc'd NUL-terminated buffer. */
static sdxl_status read_text(const char *path, char **out, sdxl_error *err) {
    return sdxl_read_file(path, CONFIG_TEXT_MAX, out, NULL, err);
}

/* Write and fsync a file (inside the staging folder, so not atomic itself:
 * the folder's rename is). */
static sdxl_status write_bytes(const char *path, const void *data, size_t len, sdxl_error *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return io_err(err, "cannot create", path);
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            sdxl_status st = io_err(err, "write failed", path);
            close(fd);
            return st;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) return io_err(err, "fsync/close failed", path);
    return SDXL_STATUS_OK;
}

static sdxl_status write_text(const char *path, const char *text, sdxl_error *err) {
    return write_bytes(path, text, strlen(text), err);
}

static sdxl_status copy_file(const char *from, const char *to, sdxl_error *err) {
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) return io_err(err, "cannot open", from);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        sdxl_status st = io_err(err, "cannot create", to);
        close(in);
        return st;
    }
    sdxl_status st = SDXL_STATUS_OK;
    char buf[1 << 16];
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = io_err(err, "read failed", from);
            break;
        }
        if (r == 0) break;
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                st = io_err(err, "write failed", to);
                break;
            }
            off += w;
        }
        if (st) break;
    }
    if (!st && fsync(out) != 0) st = io_err(err, "fsync failed", to);
    close(out);
    close(in);
    return st;
}

static sdxl_status make_dir(const char *path, sdxl_error *err) {
    if (mkdir(path, 0755) != 0 && !(errno == EEXIST && is_dir(path)))
        return io_err(err, "cannot create folder", path);
    return SDXL_STATUS_OK;
}

/* Remove the staging output of this run (a file or a folder tree this code
 * made; symbolic links are removed, never followed). */
static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            char sub[PATH_CAP];
            while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                if (snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) < (int)sizeof sub) remove_tree(sub);
            }
            closedir(d);
        }
        if (rmdir(path) != 0) SDXL_LOG_W("%s: could not remove: %s", path, strerror(errno));
    } else if (unlink(path) != 0) {
        SDXL_LOG_W("%s: could not remove: %s", path, strerror(errno));
    }
}

static void fsync_dir_of(const char *path) {
    char tmp[PATH_CAP];
    snprintf(tmp, sizeof tmp, "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        if (fsync(fd) != 0) SDXL_LOG_W("%s: could not fsync its folder: %s", path, strerror(errno));
        close(fd);
    }
}

/* ---- CLIP tokenizer files ------------------------------------------------------------ */

/* The .gz inflated (zlib's gz* reader); NOT_FOUND if absent. */
static sdxl_status gunzip(const char *path, char **out, size_t *len, sdxl_error *err) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return io_err(err, "cannot open", path);
    gzFile g = gzopen(path, "rb");
    if (!g) return io_err(err, "cannot open", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    sdxl_status st = SDXL_STATUS_OK;
    for (;;) {
        if (cap - n < 65536) {
            if (cap >= GZ_TEXT_MAX) {
                st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: inflates to more than %zu MiB", path,
                                    GZ_TEXT_MAX >> 20);
                break;
            }
            char *nb = sdxl_realloc(buf, cap ? 2 * cap : (size_t)1 << 21);
            if (!nb) {
                st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
                break;
            }
            buf = nb;
            cap = cap ? 2 * cap : (size_t)1 << 21;
        }
        int r = gzread(g, buf + n, (unsigned)(cap - n - 1));
        if (r < 0) {
            int code;
            const char *m = gzerror(g, &code);
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: not a valid gzip file (%s)", path, m);
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(g);
    if (st) {
        sdxl_free(buf);
        return st;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return SDXL_STATUS_OK;
}

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (n + 1 > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n + 1)
            cap *= 2;
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
    b->p[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

static const char special_json[] = "{\n"
                                   "  \"bos_token\": {\n"
                                   "    \"content\": \"<|startoftext|>\",\n"
                                   "    \"lstrip\": false,\n"
                                   "    \"normalized\": true,\n"
                                   "    \"rstrip\": false,\n"
                                   "    \"single_word\": false\n"
                                   "  },\n"
                                   "  \"eos_token\": {\n"
                                   "    \"content\": \"<|endoftext|>\",\n"
                                   "    \"lstrip\": false,\n"
                                   "    \"normalized\": true,\n"
                                   "    \"rstrip\": false,\n"
                                   "    \"single_word\": false\n"
                                   "  },\n"
                                   "  \"pad_token\": \"%s\",\n"
                                   "  \"unk_token\": {\n"
                                   "    \"content\": \"<|endoftext|>\",\n"
                                   "    \"lstrip\": false,\n"
                                   "    \"normalized\": true,\n"
                                   "    \"rstrip\": false,\n"
                                   "    \"single_word\": false\n"
                                   "  }\n"
                                   "}\n";

#define ADDED_TOKEN_JSON                                                                                     \
    "    \"%d\": {\n"                                                                                        \
    "      \"content\": \"%s\",\n"                                                                           \
    "      \"lstrip\": false,\n"                                                                             \
    "      \"normalized\": %s,\n"                                                                            \
    "      \"rstrip\": false,\n"                                                                             \
    "      \"single_word\": false,\n"                                                                        \
    "      \"special\": true\n"                                                                              \
    "    }"

/* tokenizer_config.json as transformers 4.38 saves a CLIPTokenizer. The "!"
 * of tokenizer_2 is an added special token (not normalized), which is what
 * makes "!!!" encode as three pad ids there: the SDXL quirk tokenizer.h
 * reproduces. */
static void tokenizer_config(sbuf *b, int vocab_size, bool bang) {
    char tmp[512];
    sb_puts(b, "{\n  \"add_prefix_space\": false,\n  \"added_tokens_decoder\": {\n");
    if (bang) {
        snprintf(tmp, sizeof tmp, ADDED_TOKEN_JSON ",\n", 0, "!", "false");
        sb_puts(b, tmp);
    }
    snprintf(tmp, sizeof tmp, ADDED_TOKEN_JSON ",\n", vocab_size - 2, "<|startoftext|>", "true");
    sb_puts(b, tmp);
    snprintf(tmp, sizeof tmp, ADDED_TOKEN_JSON "\n", vocab_size - 1, "<|endoftext|>", "true");
    sb_puts(b, tmp);
    snprintf(tmp, sizeof tmp,
             "  },\n"
             "  \"bos_token\": \"<|startoftext|>\",\n"
             "  \"clean_up_tokenization_spaces\": true,\n"
             "  \"do_lower_case\": true,\n"
             "  \"eos_token\": \"<|endoftext|>\",\n"
             "  \"errors\": \"replace\",\n"
             "  \"model_max_length\": 77,\n"
             "  \"pad_token\": \"%s\",\n"
             "  \"tokenizer_class\": \"CLIPTokenizer\",\n"
             "  \"unk_token\": \"<|endoftext|>\"\n"
             "}\n",
             bang ? "!" : "<|endoftext|>");
    sb_puts(b, tmp);
}

/* CLIP's bytes_to_unicode: byte b is shown as code point cp[b] (printable
 * Latin-1 as itself, the rest from U+0100 up). Vocabulary ids 0..255 are
 * these symbols in the order of the printable bytes first, then the rest. */
static void clip_byte_symbols(uint32_t sym[256]) {
    int order[256], n = 0;
    bool printable[256] = {0};
    for (int b = 0; b < 256; b++)
        printable[b] = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    for (int b = 0; b < 256; b++)
        if (printable[b]) order[n++] = b;
    int extra = 0;
    for (int b = 0; b < 256; b++)
        if (!printable[b]) order[n++] = b;
    for (int i = 0; i < 256; i++) {
        int b = order[i];
        sym[i] = printable[b] ? (uint32_t)b : 256u + (uint32_t)extra++;
    }
}

static void sb_utf8(sbuf *b, uint32_t cp) {
    char u[4];
    if (cp < 0x80) {
        u[0] = (char)cp;
        sb_put(b, u, 1);
    } else { /* all symbols are below U+0800 */
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, u, 2);
    }
}

/* vocab.json and merges.txt of the first vocab_size tokens of the standard
 * CLIP vocabulary: the 512 byte symbols (bare, then with "</w>"), one token
 * per merge (line k + 2 of the .gz joined), then the two specials. */
typedef struct {
    int vocab_size;
    sbuf vocab, merges;
} clip_text;

static void clip_text_free(clip_text *c) {
    sdxl_free(c->vocab.p);
    sdxl_free(c->merges.p);
    memset(c, 0, sizeof *c);
}

static sdxl_status clip_text_make(const char *gz_path, int vocab_size, clip_text *c, sdxl_error *err) {
    memset(c, 0, sizeof *c);
    c->vocab_size = vocab_size;
    int n_merges = vocab_size - CLIP_BASE_SYMBOLS - 2;
    char *text = NULL;
    size_t len = 0;
    sdxl_status st = gunzip(gz_path, &text, &len, err);
    if (st) return st;
    uint32_t sym[256];
    clip_byte_symbols(sym);
    sbuf *v = &c->vocab, *m = &c->merges;
    char num[64];
    sb_puts(v, "{");
    for (int w = 0; w < 2; w++) {
        for (int i = 0; i < 256; i++) {
            sb_puts(v, w || i ? ",\n  \"" : "\n  \"");
            if (sym[i] == '"' || sym[i] == '\\') sb_put(v, "\\", 1);
            sb_utf8(v, sym[i]);
            snprintf(num, sizeof num, "%s\": %d", w ? "</w>" : "", 256 * w + i);
            sb_puts(v, num);
        }
    }
    sb_puts(m, "#version: 0.2\n");
    const char *p = memchr(text, '\n', len);
    for (int k = 0; k < n_merges; k++) {
        const char *line = p ? p + 1 : NULL, *end = text + len;
        const char *nl = line ? memchr(line, '\n', (size_t)(end - line)) : NULL;
        if (nl) end = nl;
        const char *sp = line ? memchr(line, ' ', (size_t)(end - line)) : NULL;
        if (!sp || sp == line || sp + 1 == end || memchr(sp + 1, ' ', (size_t)(end - sp - 1))) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: line %d is not a merge (\"a b\")", gz_path,
                                k + 2);
            goto done;
        }
        sb_put(m, line, (size_t)(end - line));
        sb_put(m, "\n", 1);
        /* the token: both halves joined, JSON-escaped */
        sb_puts(v, ",\n  \"");
        for (const char *q = line; q < end; q++) {
            if (q == sp) continue;
            if (*q == '"' || *q == '\\') sb_put(v, "\\", 1);
            sb_put(v, q, 1);
        }
        snprintf(num, sizeof num, "\": %d", CLIP_BASE_SYMBOLS + k);
        sb_puts(v, num);
        p = nl;
    }
    snprintf(num, sizeof num, ",\n  \"<|startoftext|>\": %d", vocab_size - 2);
    sb_puts(v, num);
    snprintf(num, sizeof num, ",\n  \"<|endoftext|>\": %d\n}\n", vocab_size - 1);
    sb_puts(v, num);
    if (v->oom || m->oom) st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", gz_path);
done:
    sdxl_free(text);
    if (st) clip_text_free(c);
    return st;
}

static sdxl_status clip_dir_write(const char *dir, const clip_text *c, sdxl_tokenizer_pad pad,
                                  sdxl_error *err) {
    char path[PATH_CAP];
    sbuf b = {0};
    sdxl_status st = make_dir(dir, err);
    if (st) return st;
    if ((st = join(path, dir, "vocab.json", err)) || (st = write_bytes(path, c->vocab.p, c->vocab.len, err)))
        return st;
    if ((st = join(path, dir, "merges.txt", err)) ||
        (st = write_bytes(path, c->merges.p, c->merges.len, err)))
        return st;
    tokenizer_config(&b, c->vocab_size, pad == SDXL_TOKENIZER_PAD_BANG);
    if (b.oom) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", dir);
    if (!(st = join(path, dir, "tokenizer_config.json", err))) st = write_bytes(path, b.p, b.len, err);
    sdxl_free(b.p);
    if (st) return st;
    char sj[sizeof special_json + 16];
    snprintf(sj, sizeof sj, special_json, pad == SDXL_TOKENIZER_PAD_BANG ? "!" : "<|endoftext|>");
    if ((st = join(path, dir, "special_tokens_map.json", err))) return st;
    return write_text(path, sj, err);
}

sdxl_status sdxl_make_clip_tokenizer_dir(const char *dir, const char *gz_path, int vocab_size,
                                         sdxl_tokenizer_pad pad, sdxl_error *err) {
    if (!dir || !gz_path)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_make_clip_tokenizer_dir: NULL argument");
    if (vocab_size < CLIP_BASE_SYMBOLS + 2 || vocab_size > CLIP_VOCAB_SIZE)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: a CLIP vocabulary has %d..%d tokens, not %d",
                              dir, CLIP_BASE_SYMBOLS + 2, CLIP_VOCAB_SIZE, vocab_size);
    if (pad != SDXL_TOKENIZER_PAD_EOS && pad != SDXL_TOKENIZER_PAD_BANG)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: unknown pad kind %d", dir, (int)pad);
    clip_text c;
    sdxl_status st = clip_text_make(gz_path, vocab_size, &c, err);
    if (st) return st;
    st = clip_dir_write(dir, &c, pad, err);
    clip_text_free(&c);
    return st;
}

/* ---- config source ------------------------------------------------------------------- */

enum { TXT_INDEX, TXT_UNET, TXT_VAE, TXT_TE1, TXT_TE2, TXT_SCHED, TXT_N };
static const char *const txt_file[TXT_N] = {
    "model_index.json",         "unet/config.json",           "vae/config.json",
    "text_encoder/config.json", "text_encoder_2/config.json", "scheduler/scheduler_config.json"};

typedef struct {
    char *text[TXT_N]; /* what goes into the diffusers folder, verbatim */
    sdxl_model_config cfg;
    const char *tok_src[2]; /* folder to copy tokenizer/ / tokenizer_2/ from, or NULL: generate */
    char tok_path[2][PATH_CAP];
    const char *name; /* for messages and metadata */
} source;

static void source_free(source *s) {
    for (int i = 0; i < TXT_N; i++)
        sdxl_free(s->text[i]);
    sdxl_model_config_clear(&s->cfg);
    memset(s, 0, sizeof *s);
}

static sdxl_status source_open(const sdxl_make_model_params *p, source *s, sdxl_error *err) {
    memset(s, 0, sizeof *s);
    sdxl_status st;
    if (p->preset) {
        const sdxl_model_preset *pr = sdxl_model_preset_find(p->preset);
        if (!pr) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "unknown preset \"%.60s\"", p->preset);
        s->name = pr->name;
        if ((st = sdxl_model_preset_config(pr, &s->cfg, err))) return st;
        const char *t[TXT_N] = {pr->model_index_json, pr->unet_json, pr->vae_json,
                                pr->te1_json,         pr->te2_json,  s->cfg.scheduler_json};
        for (int i = 0; i < TXT_N; i++)
            if (!(s->text[i] = sdxl_strdup(t[i]))) goto oom;
        return SDXL_STATUS_OK;
    }
    const char *dir = p->config_dir;
    s->name = dir;
    if (!is_dir(dir))
        return sdxl_error_set(err, access(dir, F_OK) ? SDXL_STATUS_NOT_FOUND : SDXL_STATUS_INVALID_ARG,
                              "%s: not a diffusers model folder", dir);
    if ((st = sdxl_model_config_load_diffusers(dir, &s->cfg, err))) return st;
    char path[PATH_CAP];
    for (int i = 0; i < TXT_N; i++) {
        if ((st = join(path, dir, txt_file[i], err))) goto fail;
        if (i == TXT_SCHED && access(path, F_OK) != 0) {
            /* the loader fell back to SDXL base's scheduler: write that */
            if (!(s->text[i] = sdxl_strdup(s->cfg.scheduler_json))) goto oom;
            continue;
        }
        if ((st = read_text(path, &s->text[i], err))) goto fail;
    }
    for (int k = 0; k < 2; k++) {
        if ((st = join(s->tok_path[k], dir, k ? "tokenizer_2" : "tokenizer", err))) goto fail;
        if (is_dir(s->tok_path[k])) s->tok_src[k] = s->tok_path[k];
    }
    return SDXL_STATUS_OK;
oom:
    st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "reading the config: out of memory");
fail:
    source_free(s);
    return st;
}

/* ---- output tensors -------------------------------------------------------------------- */

/* One tensor of a file: up to three internal tensors stacked on dim 0 (TE2's
 * in_proj = q;k;v), or one internal [a,b] stored transposed [b,a]. */
typedef struct {
    const sdxl_name_entry *e;
    uint64_t start; /* first element of this part in the stored tensor */
    uint64_t count;
} part;

typedef struct {
    const char *key;
    int ndim;
    int64_t shape[SDXL_MAX_DIMS];
    bool transpose;
    int nparts;
    part parts[3];
} out_tensor;

static int cmp_out_key(const void *a, const void *b) {
    return strcmp(((const out_tensor *)a)->key, ((const out_tensor *)b)->key);
}

static uint64_t nelem(int ndim, const int64_t *shape) {
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (uint64_t)shape[d];
    return n;
}

/* The tensors of one file: layout DIFFUSERS and component `comp`, or the
 * whole SGM single file (comp ignored). Sorted by key, as Python's
 * safetensors writer orders a file of one dtype. */
static sdxl_status out_tensors(const sdxl_naming *nm, sdxl_layout layout, sdxl_component comp,
                               out_tensor **out, size_t *n_out, sdxl_error *err) {
    size_t n = sdxl_naming_count(nm), k = 0;
    out_tensor *t = sdxl_calloc(n ? n : 1, sizeof *t);
    if (!t) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "tensor table: out of memory");
    for (size_t i = 0; i < n; i++) {
        const sdxl_name_entry *e = sdxl_naming_at(nm, i);
        const sdxl_name_source *s = &e->src[layout];
        if (layout == SDXL_LAYOUT_DIFFUSERS && e->comp != comp) continue;
        if (s->xform == SDXL_XFORM_ROWS && sdxl_naming_find_source(nm, layout, e->comp, s->key) != e)
            continue; /* a later slice of a stacked tensor: added with the first */
        out_tensor *o = &t[k++];
        o->key = s->key;
        o->ndim = s->ndim;
        memcpy(o->shape, s->shape, sizeof o->shape);
        o->transpose = s->xform == SDXL_XFORM_TRANSPOSE;
        if (s->xform != SDXL_XFORM_ROWS) {
            o->nparts = 1;
            o->parts[0] = (part){e, 0, nelem(e->ndim, e->shape)};
            continue;
        }
        uint64_t row = nelem(s->ndim - 1, s->shape + 1);
        for (size_t j = i; j < n; j++) {
            const sdxl_name_entry *ej = sdxl_naming_at(nm, j);
            const sdxl_name_source *sj = &ej->src[layout];
            if (sj->xform != SDXL_XFORM_ROWS || strcmp(sj->key, s->key) != 0) continue;
            if (o->nparts == 3) {
                sdxl_free(t);
                return sdxl_error_set(err, SDXL_STATUS_INTERNAL, "%s: more than three stacked tensors",
                                      s->key);
            }
            o->parts[o->nparts++] =
                (part){ej, (uint64_t)sj->row_begin * row, (uint64_t)(sj->row_end - sj->row_begin) * row};
        }
    }
    qsort(t, k, sizeof *t, cmp_out_key);
    *out = t;
    *n_out = k;
    return SDXL_STATUS_OK;
}

/* ---- streaming one file ---------------------------------------------------------------- */

typedef struct {
    /* fixed for the run */
    const sdxl_naming *nm;
    uint64_t seed;
    sdxl_dtype dtype;
    size_t es;
    sdxl_threadpool *pool;
    float *scratch; /* f32 staging of one chunk, for f16/bf16 output */
    size_t scratch_n;
    uint64_t done, total;
    const sdxl_make_model_params *p;
    /* the file being written */
    const out_tensor *t;
    /* the chunk being filled */
    const out_tensor *cur;
    uint64_t first; /* element of cur at buf[0] */
    void *buf;
} gen;

/* Stored elements [first, first + count) of tensor o into dst. */
static void gen_range(const gen *g, const out_tensor *o, uint64_t first, size_t count, float *dst) {
    if (o->transpose) {
        /* stored [b, a] = internal [a, b] transposed: stored (i, j) is
         * internal (j, i) */
        const sdxl_name_entry *e = o->parts[0].e;
        stream s = stream_of(g->seed, g->nm, e);
        uint64_t a = (uint64_t)o->shape[1], b = (uint64_t)o->shape[0];
        for (size_t k = 0; k < count; k++) {
            uint64_t idx = first + k, i = idx / a, j = idx % a;
            dst[k] = value_at(&s, j * b + i);
        }
        return;
    }
    for (int q = 0; q < o->nparts; q++) {
        const part *pt = &o->parts[q];
        uint64_t lo = first > pt->start ? first : pt->start;
        uint64_t hi = first + count < pt->start + pt->count ? first + count : pt->start + pt->count;
        if (lo >= hi) continue;
        stream s = stream_of(g->seed, g->nm, pt->e);
        stream_fill(&s, lo - pt->start, (size_t)(hi - lo), dst + (lo - first));
    }
}

static void gen_task(void *ctx, size_t begin, size_t end, int thread_index) {
    (void)thread_index;
    gen *g = ctx;
    if (g->dtype == SDXL_DTYPE_F32) {
        gen_range(g, g->cur, g->first + begin, end - begin, (float *)g->buf + begin);
        return;
    }
    gen_range(g, g->cur, g->first + begin, end - begin, g->scratch + begin);
    sdxl_convert_n(g->scratch + begin, SDXL_DTYPE_F32, (char *)g->buf + begin * g->es, g->dtype, end - begin);
}

static sdxl_status gen_fill(void *user, size_t index, uint64_t offset, void *buf, size_t len,
                            sdxl_error *err) {
    gen *g = user;
    g->cur = &g->t[index];
    g->first = offset / g->es;
    g->buf = buf;
    sdxl_threadpool_parallel_for(g->pool, len / g->es, GEN_GRAIN, gen_task, g);
    g->done += len;
    if (g->p->progress && !g->p->progress(g->p->user_data, g->done, g->total))
        return sdxl_error_set(err, SDXL_STATUS_CANCELLED, "cancelled");
    return SDXL_STATUS_OK;
}

static sdxl_st_dtype st_dtype(sdxl_dtype d) {
    return d == SDXL_DTYPE_F32 ? SDXL_ST_F32 : d == SDXL_DTYPE_F16 ? SDXL_ST_F16 : SDXL_ST_BF16;
}

/* Write one safetensors file of the model. */
static sdxl_status write_file(gen *g, const char *path, sdxl_layout layout, sdxl_component comp,
                              const char *const *meta, sdxl_error *err) {
    out_tensor *t = NULL;
    size_t n = 0;
    sdxl_status st = out_tensors(g->nm, layout, comp, &t, &n, err);
    if (st) return st;
    sdxl_st_write_entry *e = sdxl_malloc((n ? n : 1) * sizeof *e);
    if (!e) {
        sdxl_free(t);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    size_t most = 0; /* elements of the largest chunk: what the f32 staging must hold */
    for (size_t i = 0; i < n; i++) {
        e[i] = (sdxl_st_write_entry){t[i].key, st_dtype(g->dtype), t[i].ndim, t[i].shape, NULL};
        uint64_t ne = nelem(t[i].ndim, t[i].shape);
        if (ne > most) most = (size_t)(ne < SDXL_ST_WRITE_CHUNK / g->es ? ne : SDXL_ST_WRITE_CHUNK / g->es);
    }
    if (g->dtype != SDXL_DTYPE_F32 && most > g->scratch_n) {
        sdxl_free(g->scratch);
        g->scratch_n = 0;
        if (!(g->scratch = sdxl_malloc(most * sizeof(float)))) {
            sdxl_free(e);
            sdxl_free(t);
            return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
        }
        g->scratch_n = most;
    }
    g->t = t;
    st = sdxl_st_write_cb(path, e, n, meta, gen_fill, g, err);
    g->t = NULL;
    sdxl_free(e);
    sdxl_free(t);
    return st;
}

/* ---- the whole model ---------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *const weight_base[SDXL_COMP_COUNT_] = {"diffusion_pytorch_model",
                                                          "diffusion_pytorch_model", "model", "model"};

static sdxl_status write_tokenizer(const source *s, const sdxl_make_model_params *p, const char *staging,
                                   int k, clip_text *cache, sdxl_error *err) {
    char dir[PATH_CAP], from[PATH_CAP], to[PATH_CAP];
    sdxl_status st = join(dir, staging, k ? "tokenizer_2" : "tokenizer", err);
    if (st) return st;
    if (s->tok_src[k]) {
        /* copy the source folder's tokenizer, regular files only */
        if ((st = make_dir(dir, err))) return st;
        DIR *d = opendir(s->tok_src[k]);
        if (!d) return io_err(err, "cannot read folder", s->tok_src[k]);
        struct dirent *de;
        while (!st && (de = readdir(d))) {
            struct stat sb;
            if (de->d_name[0] == '.') continue;
            if ((st = join(from, s->tok_src[k], de->d_name, err)) || (st = join(to, dir, de->d_name, err)))
                break;
            if (stat(from, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
            st = copy_file(from, to, err);
        }
        closedir(d);
        return st;
    }
    /* generate the standard CLIP vocabulary, cut to what the encoder holds */
    int v = s->cfg.te[k].vocab_size < CLIP_VOCAB_SIZE ? s->cfg.te[k].vocab_size : CLIP_VOCAB_SIZE;
    if (v < CLIP_BASE_SYMBOLS + 2)
        return sdxl_error_set(
            err, SDXL_STATUS_BAD_INPUT,
            "%s: text_encoder%s has %d token embeddings, too few for a CLIP tokenizer (%d); "
            "give a folder with tokenizer%s/",
            s->name, k ? "_2" : "", s->cfg.te[k].vocab_size, CLIP_BASE_SYMBOLS + 2, k ? "_2" : "");
    if (cache->vocab_size != v) { /* both tokenizers usually share one vocabulary: made once */
        clip_text_free(cache);
        char gz[PATH_CAP];
        if ((st = sdxl_model_find_clip_vocab(p->data_dir, gz, sizeof gz, err))) return st;
        if ((st = clip_text_make(gz, v, cache, err))) return st;
    }
    return clip_dir_write(dir, cache, k ? SDXL_TOKENIZER_PAD_BANG : SDXL_TOKENIZER_PAD_EOS, err);
}

static sdxl_status write_diffusers(const source *s, gen *g, const char *staging, const char *provenance,
                                   sdxl_error *err) {
    const sdxl_make_model_params *p = g->p;
    char path[PATH_CAP], sub[PATH_CAP];
    sdxl_status st = make_dir(staging, err);
    if (st) return st;
    static const char *const dirs[] = {"unet", "vae", "text_encoder", "text_encoder_2", "scheduler"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if ((st = join(path, staging, dirs[i], err)) || (st = make_dir(path, err))) return st;
    for (int i = 0; i < TXT_N; i++)
        if ((st = join(path, staging, txt_file[i], err)) || (st = write_text(path, s->text[i], err)))
            return st;
    clip_text cache = {0};
    for (int k = 0; k < 2 && !st; k++)
        st = write_tokenizer(s, p, staging, k, &cache, err);
    clip_text_free(&cache);
    if (st) return st;
    /* "format": "pt" is what transformers' loader insists on */
    const char *meta[] = {"format", "pt", "sdxl_worker.make_model", provenance, NULL};
    for (int c = 0; c < SDXL_COMP_COUNT_; c++) {
        snprintf(sub, sizeof sub, "%s/%s%s.safetensors", sdxl_component_folder((sdxl_component)c),
                 weight_base[c], p->fp16_variant ? ".fp16" : "");
        if ((st = join(path, staging, sub, err))) return st;
        if ((st = write_file(g, path, SDXL_LAYOUT_DIFFUSERS, (sdxl_component)c, meta, err))) return st;
    }
    return SDXL_STATUS_OK;
}

/* Load what was written and compare its config with the source's. */
static sdxl_status verify(const source *s, const sdxl_make_model_params *p, const char *staging,
                          sdxl_error *err) {
    sdxl_model *m = NULL;
    sdxl_weights *w = NULL;
    sdxl_status st;
    const sdxl_weights *ws;
    if (p->layout == SDXL_LAYOUT_DIFFUSERS) {
        sdxl_model_params mp = sdxl_model_default_params();
        mp.weights.variant = p->fp16_variant ? SDXL_VARIANT_FP16 : SDXL_VARIANT_DEFAULT;
        mp.data_dir = p->data_dir;
        st = sdxl_model_load(staging, &mp, &m, err);
        ws = m ? m->weights : NULL;
    } else {
        sdxl_weights_params wp = sdxl_weights_default_params();
        wp.ignore_sidecar = true; /* judge the file alone */
        st = sdxl_weights_load(staging, &wp, &w, err);
        ws = w;
    }
    if (st) {
        sdxl_error_prefix(err, "the written model does not load back: ");
        return st == SDXL_STATUS_OUT_OF_MEMORY ? st : SDXL_STATUS_INTERNAL;
    }
    char what[128];
    if (!sdxl_model_config_equal(&s->cfg, sdxl_weights_config(ws), what, sizeof what)) {
        st =
            p->layout == SDXL_LAYOUT_SGM
                ? sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED,
                                 "%s: a single file cannot carry this config: %s reads back differently (the "
                                 "single-file layout fixes it, see model/config.h); use the diffusers layout",
                                 s->name, what)
                : sdxl_error_set(err, SDXL_STATUS_INTERNAL,
                                 "%s: the written folder reads back with another %s", s->name, what);
    } else if (sdxl_weights_count(ws) == 0 || sdxl_weights_at(ws, 0)->tensor.dtype != p->dtype) {
        st = sdxl_error_set(err, SDXL_STATUS_INTERNAL, "the written model reads back with another dtype");
    }
    sdxl_model_free(m);
    sdxl_weights_free(w);
    return st;
}

static sdxl_status check_params(const char *out, const sdxl_make_model_params *p, sdxl_error *err) {
    if (!out || !*out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "make-model: no output path");
    if (!p->preset == !p->config_dir)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "make-model: give either a preset or a config folder (one of the two)");
    if (p->layout != SDXL_LAYOUT_DIFFUSERS && p->layout != SDXL_LAYOUT_SGM)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "make-model: unknown layout %d", (int)p->layout);
    if (p->dtype != SDXL_DTYPE_F32 && p->dtype != SDXL_DTYPE_F16 && p->dtype != SDXL_DTYPE_BF16)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "make-model: dtype %s is not f32, f16 or bf16",
                              sdxl_dtype_name(p->dtype));
    if (p->fp16_variant && (p->layout != SDXL_LAYOUT_DIFFUSERS || p->dtype != SDXL_DTYPE_F16))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "make-model: the fp16 variant names are for a diffusers folder of f16 weights");
    if (strlen(out) + 32 >= PATH_CAP)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: path too long", out);
    return SDXL_STATUS_OK;
}

/* `out` must not exist, except as an empty folder for the diffusers layout
 * (rename() replaces an empty directory). */
static sdxl_status check_out(const char *out, sdxl_layout layout, sdxl_error *err) {
    struct stat st;
    if (lstat(out, &st) != 0) {
        if (errno == ENOENT) return SDXL_STATUS_OK;
        return io_err(err, "cannot check", out);
    }
    if (layout == SDXL_LAYOUT_DIFFUSERS && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(out);
        bool empty = d != NULL;
        struct dirent *de;
        while (d && (de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = false;
        if (d) closedir(d);
        if (empty) return SDXL_STATUS_OK;
    }
    return sdxl_error_set(err, SDXL_STATUS_IO,
                          "%s: already exists; make-model does not replace files (remove it "
                          "or choose another path)",
                          out);
}

sdxl_status sdxl_make_model(const char *out_arg, const sdxl_make_model_params *params,
                            sdxl_make_model_report *rep, sdxl_error *err) {
    sdxl_make_model_params p = params ? *params : sdxl_make_model_default_params();
    if (rep) memset(rep, 0, sizeof *rep);
    sdxl_status st = check_params(out_arg, &p, err);
    if (st) return st;
    /* "dir/" and "dir" are the same output */
    char out[PATH_CAP], staging[PATH_CAP];
    snprintf(out, sizeof out, "%s", out_arg);
    for (size_t l = strlen(out); l > 1 && out[l - 1] == '/'; l--)
        out[l - 1] = 0;
    snprintf(staging, sizeof staging, "%s.partial-%ld", out, (long)getpid());
    if ((st = check_out(out, p.layout, err))) return st;

    source src;
    if ((st = source_open(&p, &src, err))) return st;
    sdxl_naming *nm = NULL;
    gen g = {0};
    bool staged = false;
    if ((st = sdxl_naming_create(&src.cfg, &nm, err))) goto done;
    g.nm = nm;
    g.seed = p.seed;
    g.dtype = p.dtype;
    g.es = sdxl_dtype_size(p.dtype);
    g.p = &p;
    for (size_t i = 0; i < sdxl_naming_count(nm); i++)
        g.total += nelem(sdxl_naming_at(nm, i)->ndim, sdxl_naming_at(nm, i)->shape) * g.es;
    g.pool = sdxl_threadpool_create(p.n_threads);
    if (!g.pool) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "make-model: out of memory");
        goto done;
    }

    char provenance[256];
    snprintf(provenance, sizeof provenance, "random weights: config %.120s, seed %llu, %s", src.name,
             (unsigned long long)p.seed, sdxl_dtype_name(p.dtype));
    double t0 = now_s();
    staged = true;
    if (p.layout == SDXL_LAYOUT_DIFFUSERS) {
        st = write_diffusers(&src, &g, staging, provenance, err);
    } else {
        const char *extra[] = {"sdxl_worker.make_model", provenance, NULL};
        const char **meta = NULL;
        st = sdxl_weights_single_file_metadata(&src.cfg, extra, &meta, err);
        if (!st) st = write_file(&g, staging, SDXL_LAYOUT_SGM, SDXL_COMP_UNET, meta, err);
        sdxl_free(meta);
    }
    double t1 = now_s();
    if (!st && p.verify) st = verify(&src, &p, staging, err);
    double t2 = now_s();
    if (!st && rename(staging, out) != 0)
        st = io_err(err, "cannot rename the finished model into place", out);
    if (!st) {
        staged = false;
        fsync_dir_of(out);
        if (rep) {
            rep->n_tensors = sdxl_naming_count(nm);
            rep->n_files = p.layout == SDXL_LAYOUT_DIFFUSERS ? SDXL_COMP_COUNT_ : 1;
            rep->bytes = g.total;
            rep->n_params = g.total / g.es;
            rep->seconds = t1 - t0;
            rep->seconds_verify = t2 - t1;
        }
    }
done:
    if (staged) remove_tree(staging);
    sdxl_free(g.scratch);
    sdxl_threadpool_free(g.pool);
    sdxl_naming_free(nm);
    source_free(&src);
    return st;
}
