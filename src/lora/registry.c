/* registry.c - LoRA discovery and name resolution. See registry.h for the
 * rules; this file explains the how and the why.
 *
 * The index is an array of entry pointers sorted by (root, relative path),
 * guarded by `lock` (read-write). Entries are immutable once published,
 * except their two hash strings, which are written under the write lock.
 * Only a refresher changes the array, and refreshers are serialized by
 * `refresh_mu`; so a refresher may read the current array without `lock`
 * (nobody else writes it) and needs the write lock only to swap. A refresh
 * runs in three phases, none holding `lock`:
 *   1. walk: collect candidate files (stat only) and left-out symlinks;
 *   2. de-duplicate files reachable from two roots (first root wins);
 *   3. build the new array: unchanged files move their old entry over (the
 *      cached metadata and hashes come along), others are read again.
 * Entries not moved over are freed after the swap, outside the lock: once
 * the array is swapped no reader can reach them (readers copy out under the
 * read lock and keep no pointers).
 */
#include "lora/registry.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/utf8.h"
#include "core/alloc.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "io/sha256.h"

#define HASH_CHUNK ((size_t)1 << 20)
#define MAX_TAGS 100000 /* tags read from one ss_tag_frequency: bounds a hostile header's cost */
#define MAX_REJECTED 4096
#define LEV_MAX 64 /* edit distance is computed on at most this many bytes */

_Static_assert(PATH_MAX <= SDXL_LORA_PATH_MAX, "realpath() output must fit sdxl_lora_info.path");

static const char *const k_exts[] = {".safetensors", ".pt", ".bin", ".ckpt", ".pth"};

/* ---- entries ------------------------------------------------------------ */

/* What resolution matches on; shared by entries and left-out symlinks. */
typedef struct lkey {
    char *name;      /* stem */
    char *file_name; /* with extension */
    char *category;  /* normalized, "" for none */
    char *rel_path;  /* below the root, '/'-separated */
    size_t root;
} lkey;

typedef struct entry {
    lkey k;
    char *path;      /* canonical */
    char *walk_path; /* root's canonical path + "/" + rel_path (may go through links) */
    uint64_t dev, ino, size;
    int64_t mtime_ns;
    bool safetensors;
    char adapter[16];
    int64_t rank;
    char *output_name, *base_model, *network_module, *error; /* NULL when absent */
    int64_t network_dim;
    double network_alpha;
    int n_triggers;
    char *triggers[SDXL_LORA_MAX_TRIGGERS];
    char short_hash[13], sha256[65]; /* written under the write lock */
} entry;

typedef struct rejected {
    lkey k;
    bool is_dir;
    char *why; /* "is a symlink to /x, outside the LoRA directories" */
} rejected;

typedef struct root_cfg {
    char *path;     /* as configured */
    char *category; /* normalized; NULL = derive from the first sub-folder */
    char *canon;    /* realpath at the last refresh; NULL when missing. Guarded by refresh_mu */
    bool warned_missing;
} root_cfg;

struct sdxl_lora_registry {
    pthread_rwlock_t lock;      /* guards tab, n, rej, nrej, generation, the entries' hash strings */
    pthread_mutex_t refresh_mu; /* serializes refreshers; guards roots[].canon, last_refresh_ns */
    root_cfg *roots;
    size_t n_roots;
    sdxl_lora_registry_params params;
    entry **tab;
    size_t n;
    rejected *rej;
    size_t nrej;
    uint64_t generation;
    int64_t last_refresh_ns; /* monotonic; end of the last walk */
};

static void lkey_free(lkey *k) {
    sdxl_free(k->name);
    sdxl_free(k->file_name);
    sdxl_free(k->category);
    sdxl_free(k->rel_path);
}

static void entry_free(entry *e) {
    if (!e) return;
    lkey_free(&e->k);
    sdxl_free(e->path);
    sdxl_free(e->walk_path);
    sdxl_free(e->output_name);
    sdxl_free(e->base_model);
    sdxl_free(e->network_module);
    sdxl_free(e->error);
    for (int i = 0; i < e->n_triggers; i++)
        sdxl_free(e->triggers[i]);
    sdxl_free(e);
}

static void rejected_free_all(rejected *r, size_t n) {
    for (size_t i = 0; i < n; i++) {
        lkey_free(&r[i].k);
        sdxl_free(r[i].why);
    }
    sdxl_free(r);
}

/* ---- small string helpers ---------------------------------------------- */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int lower(int c) {
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* ASCII-only case folding: deterministic whatever the locale. */
static int ci_cmp(const char *a, const char *b) {
    for (;; a++, b++) {
        int x = lower((unsigned char)*a), y = lower((unsigned char)*b);
        if (x != y || !x) return x - y;
    }
}

static bool eq(const char *a, const char *b, bool ci) {
    return ci ? ci_cmp(a, b) == 0 : strcmp(a, b) == 0;
}

static bool eqn(const char *a, size_t an, const char *b, bool ci) {
    if (strlen(b) != an) return false;
    for (size_t i = 0; i < an; i++) {
        int x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (ci) x = lower(x), y = lower(y);
        if (x != y) return false;
    }
    return true;
}

/* Length of the longest prefix of s (at most max bytes) that does not cut a
 * UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n <= max) return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* Copy into a fixed buffer of size n, cut at a UTF-8 boundary. */
static void copy_str(char *dst, size_t n, const char *src) {
    if (!n) return;
    if (!src) src = "";
    size_t k = utf8_cut(src, n - 1);
    memcpy(dst, src, k);
    dst[k] = 0;
}

static char *dup_cut(const char *s, size_t max) {
    size_t k = utf8_cut(s, max);
    char *d = sdxl_malloc(k + 1);
    if (d) {
        memcpy(d, s, k);
        d[k] = 0;
    }
    return d;
}

/* Strict UTF-8 without control characters (C0 and DEL). */
static bool clean_utf8(const char *s, const char **why) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x20 || *p == 0x7F) {
            *why = "contains a control character";
            return false;
        }
        int len = (int)sdxl_utf8_seq_len(p, 4); /* stops at the NUL */
        if (!len) {
            *why = "is not valid UTF-8";
            return false;
        }
        p += len;
    }
    return true;
}

/* A printable rendering of an untrusted name for messages: control bytes and
 * bytes of invalid UTF-8 escaped as \xNN, long names cut with "...". */
static const char *quote(const char *s, char *buf, size_t n) {
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (o + 8 >= n) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        int len = (int)sdxl_utf8_seq_len(p, 4); /* stops at the NUL */
        if (*p < 0x20 || *p == 0x7F || !len) {
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", *p);
            p++;
        } else {
            memcpy(buf + o, p, (size_t)len);
            o += (size_t)len;
            p += len;
        }
    }
    buf[o] = 0;
    return buf;
}

static size_t ext_len(const char *file_name) {
    size_t n = strlen(file_name);
    for (size_t i = 0; i < sizeof k_exts / sizeof *k_exts; i++) {
        size_t m = strlen(k_exts[i]);
        if (n > m && ci_cmp(file_name + n - m, k_exts[i]) == 0) return m;
    }
    return 0;
}

char *sdxl_lora_category_normalize(const char *folder, char *out, size_t n) {
    if (!out || !n) return out;
    out[0] = 0;
    if (!folder) return out;
    size_t k = utf8_cut(folder, n - 1);
    for (size_t i = 0; i < k; i++)
        out[i] = (char)lower((unsigned char)folder[i]);
    out[k] = 0;
    if (k >= 2 && out[k - 1] == 's' && out[k - 2] != 's') out[k - 1] = 0;
    return out;
}

static char *category_dup(const char *folder, size_t len) {
    char tmp[SDXL_LORA_NAME_MAX], src[SDXL_LORA_NAME_MAX];
    size_t k = len;
    if (k > sizeof src - 1) {
        k = sizeof src - 1;
        while (k > 0 && ((unsigned char)folder[k] & 0xC0) == 0x80)
            k--;
    }
    memcpy(src, folder, k);
    src[k] = 0;
    return sdxl_strdup(sdxl_lora_category_normalize(src, tmp, sizeof tmp));
}

/* Fill k from (root, rel_path); the category comes from the root or the
 * first folder of rel_path. False on out of memory (k half-filled: free it). */
static bool lkey_fill(lkey *k, size_t root, const char *root_category, const char *rel) {
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    size_t el = ext_len(base);
    k->root = root;
    k->rel_path = sdxl_strdup(rel);
    k->file_name = sdxl_strdup(base);
    k->name = sdxl_malloc(strlen(base) - el + 1);
    if (k->name) {
        memcpy(k->name, base, strlen(base) - el);
        k->name[strlen(base) - el] = 0;
    }
    const char *slash = strchr(rel, '/');
    if (root_category)
        k->category = sdxl_strdup(root_category);
    else if (slash)
        k->category = category_dup(rel, (size_t)(slash - rel));
    else
        k->category = sdxl_strdup("");
    return k->rel_path && k->file_name && k->name && k->category;
}

static int depth_of(const char *rel) {
    int d = 0;
    for (; *rel; rel++)
        d += *rel == '/';
    return d;
}

/* ---- reading one file's header ------------------------------------------ */

typedef struct tag_count {
    char *tag;
    double count;
} tag_count;

static int cmp_tag_name(const void *a, const void *b) {
    return strcmp(((const tag_count *)a)->tag, ((const tag_count *)b)->tag);
}

static int cmp_tag_rank(const void *a, const void *b) {
    const tag_count *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->tag, y->tag);
}

/* Trigger words from ss_tag_frequency. Malformed JSON just gives none;
 * only running out of memory is an error. */
static sdxl_status read_triggers(entry *e, const char *json) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return SDXL_STATUS_OK;
    sdxl_status st = SDXL_STATUS_OK;
    tag_count *t = NULL;
    size_t nt = 0, cap = 0;
    const cJSON *ds;
    cJSON_ArrayForEach(ds, root) {
        if (!cJSON_IsObject(ds)) continue;
        const cJSON *tg;
        cJSON_ArrayForEach(tg, ds) {
            if (!cJSON_IsNumber(tg) || !tg->string || nt >= MAX_TAGS) continue;
            double c = tg->valuedouble;
            if (!(c > 0) || !isfinite(c)) continue;
            const char *s = tg->string;
            size_t a = 0, b = strlen(s);
            while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\n' || s[a] == '\r'))
                a++;
            while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\n' || s[b - 1] == '\r'))
                b--;
            if (a == b) continue;
            if (nt == cap) {
                size_t nc = cap ? cap * 2 : 64;
                tag_count *g = sdxl_realloc(t, nc * sizeof *t);
                if (!g) goto oom;
                t = g, cap = nc;
            }
            char *dup = sdxl_malloc(b - a + 1);
            if (!dup) goto oom;
            memcpy(dup, s + a, b - a);
            dup[b - a] = 0;
            t[nt].tag = dup;
            t[nt++].count = c;
        }
    }
    if (nt) {
        /* merge equal tags (across datasets, or equal after trimming) */
        qsort(t, nt, sizeof *t, cmp_tag_name);
        size_t m = 0;
        for (size_t i = 0; i < nt; i++) {
            if (m && strcmp(t[m - 1].tag, t[i].tag) == 0) {
                t[m - 1].count += t[i].count;
                sdxl_free(t[i].tag);
            } else {
                t[m++] = t[i];
            }
        }
        nt = m;
        qsort(t, nt, sizeof *t, cmp_tag_rank);
        for (size_t i = 0; i < nt && e->n_triggers < SDXL_LORA_MAX_TRIGGERS; i++) {
            char *d = dup_cut(t[i].tag, SDXL_LORA_TRIGGER_MAX - 1);
            if (!d) goto oom;
            e->triggers[e->n_triggers++] = d;
        }
    }
    goto done;
oom:
    st = SDXL_STATUS_OUT_OF_MEMORY;
done:
    for (size_t i = 0; i < nt; i++)
        sdxl_free(t[i].tag);
    sdxl_free(t);
    cJSON_Delete(root);
    return st;
}

static void guess_adapter(entry *e, const sdxl_st_file *f) {
    bool hada = false, lokr = false, dora = false, mid = false, conv = false, down = false, peft = false,
         diff = false;
    int64_t rank = 0;
    size_t n = sdxl_st_count(f);
    for (size_t i = 0; i < n; i++) {
        const sdxl_st_tensor *t = sdxl_st_at(f, i);
        const char *k = t->name;
        if (strstr(k, "hada_")) hada = true;
        if (strstr(k, "lokr_")) lokr = true;
        if (strstr(k, "dora_scale") || strstr(k, "lora_magnitude_vector")) dora = true;
        if (strstr(k, "lora_mid")) mid = true;
        if (strstr(k, ".diff")) diff = true;
        bool d = strstr(k, "lora_down") || strstr(k, "lora.down");
        bool a = strstr(k, "lora_A") != NULL;
        if (d) down = true;
        if (a) peft = true;
        if (d && t->ndim == 4 && (t->shape[2] > 1 || t->shape[3] > 1)) conv = true;
        if ((d || a) && t->ndim >= 1 && t->shape[0] > rank) rank = t->shape[0];
    }
    const char *kind = hada          ? "loha"
                       : lokr        ? "lokr"
                       : dora        ? "dora"
                       : mid || conv ? "locon"
                       : down        ? "lora"
                       : peft        ? "lora (peft)"
                       : diff        ? "full"
                                     : "unknown";
    copy_str(e->adapter, sizeof e->adapter, kind);
    e->rank = rank;
}

static char *meta_dup(const sdxl_st_file *f, const char *key) {
    const char *v = sdxl_st_metadata(f, key);
    return v ? dup_cut(v, SDXL_LORA_META_MAX - 1) : NULL;
}

static bool meta_missing(const sdxl_st_file *f, const char *key, const char *got) {
    return sdxl_st_metadata(f, key) && !got;
}

/* Read what the index keeps from a safetensors header. File problems end
 * up in e->error; only OUT_OF_MEMORY is returned. */
static sdxl_status read_safetensors(entry *e) {
    sdxl_error ferr = {0};
    sdxl_st_file *f = NULL;
    sdxl_status st = sdxl_st_open(e->path, &f, &ferr);
    if (st == SDXL_STATUS_OUT_OF_MEMORY) return st;
    if (st != SDXL_STATUS_OK) {
        /* the message starts with the path, which the entry already has */
        const char *m = ferr.msg;
        size_t pl = strlen(e->path);
        if (strncmp(m, e->path, pl) == 0 && m[pl] == ':' && m[pl + 1] == ' ') m += pl + 2;
        e->error = dup_cut(m, SDXL_LORA_META_MAX - 1);
        copy_str(e->adapter, sizeof e->adapter, "unknown");
        return e->error ? SDXL_STATUS_OK : SDXL_STATUS_OUT_OF_MEMORY;
    }
    guess_adapter(e, f);
    e->output_name = meta_dup(f, "ss_output_name");
    e->base_model = meta_dup(f, "ss_base_model_version");
    e->network_module = meta_dup(f, "ss_network_module");
    if (meta_missing(f, "ss_output_name", e->output_name) ||
        meta_missing(f, "ss_base_model_version", e->base_model) ||
        meta_missing(f, "ss_network_module", e->network_module)) {
        sdxl_st_close(f);
        return SDXL_STATUS_OUT_OF_MEMORY;
    }
    const char *v = sdxl_st_metadata(f, "ss_network_dim");
    if (v) {
        char *end;
        errno = 0;
        long long d = strtoll(v, &end, 10);
        if (!errno && end != v && !*end && d > 0 && d <= (1 << 20)) e->network_dim = d;
    }
    v = sdxl_st_metadata(f, "ss_network_alpha");
    if (v) {
        char *end;
        double a = strtod(v, &end);
        if (end != v && !*end && isfinite(a) && a > 0) e->network_alpha = a;
    }
    if (!e->rank) e->rank = e->network_dim;
    v = sdxl_st_metadata(f, "ss_tag_frequency");
    st = v ? read_triggers(e, v) : SDXL_STATUS_OK;
    sdxl_st_close(f);
    return st;
}

/* ---- walking ------------------------------------------------------------- */

typedef struct cand {
    size_t root;
    char *rel, *walk, *canon;
    struct stat st; /* of the file itself (links followed) */
    bool dropped;
} cand;

typedef struct dev_ino {
    dev_t dev;
    ino_t ino;
} dev_ino;

typedef struct walker {
    sdxl_lora_registry *reg;
    size_t root;
    cand *c;
    size_t nc, capc;
    rejected *rj;
    size_t nrj, caprj;
    dev_ino anc[SDXL_LORA_MAX_DEPTH + 2]; /* folders from the root down to the current one */
    int nanc;
    dev_ino *linked; /* folders entered through a link during this refresh */
    size_t nlinked, caplinked;
    bool warned_files, warned_rejected;
    bool loud; /* the first walk warns about skipped folders and files; later walks log them at debug level */
    sdxl_status st;
} walker;

/* A problem found by the walk: a warning the first time, debug after (a
 * rescan may run every second; the same skipped folder need not be). */
#define WALK_LOG(w, ...)                                                                                     \
    do {                                                                                                     \
        if ((w)->loud)                                                                                       \
            SDXL_LOG_W(__VA_ARGS__);                                                                         \
        else                                                                                                 \
            SDXL_LOG_D(__VA_ARGS__);                                                                         \
    } while (0)

/* Room for `need` elements: returns p or its replacement (and updates
 * *cap), or NULL with p untouched. */
static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *q = sdxl_realloc(p, nc * elem);
    if (q) *cap = nc;
    return q;
}

static bool inside(const char *canon, const char *root) {
    if (!root) return false;
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return canon[0] == '/';
    return strncmp(canon, root, n) == 0 && (canon[n] == '/' || canon[n] == 0);
}

static bool inside_any(const sdxl_lora_registry *reg, const char *canon) {
    for (size_t i = 0; i < reg->n_roots; i++)
        if (inside(canon, reg->roots[i].canon)) return true;
    return false;
}

/* Remember a symlink left out: `target` is its real path, NULL when it
 * dangles or loops. */
static void reject(walker *w, const char *rel, bool is_dir, const char *target) {
    if (w->nrj >= MAX_REJECTED) {
        if (!w->warned_rejected)
            WALK_LOG(w, "lora registry: more than %d symlinks left out; not remembering more", MAX_REJECTED);
        w->warned_rejected = true;
        return;
    }
    rejected *g = grow(w->rj, &w->caprj, w->nrj + 1, sizeof *w->rj);
    if (!g) {
        w->st = SDXL_STATUS_OUT_OF_MEMORY;
        return;
    }
    w->rj = g;
    rejected *r = &w->rj[w->nrj];
    memset(r, 0, sizeof *r);
    r->is_dir = is_dir;
    size_t wl = (target ? strlen(target) : 0) + 64;
    if ((r->why = sdxl_malloc(wl))) {
        if (target)
            snprintf(r->why, wl, "is a symlink to %s, outside the LoRA directories", target);
        else
            snprintf(r->why, wl, "is a dangling or looping symlink");
    }
    bool ok = lkey_fill(&r->k, w->root, w->reg->roots[w->root].category, rel) && r->why;
    if (!ok) {
        lkey_free(&r->k);
        sdxl_free(r->why);
        w->st = SDXL_STATUS_OUT_OF_MEMORY;
        return;
    }
    w->nrj++;
    SDXL_LOG_D("lora registry: %s/%s %s: left out", w->reg->roots[w->root].canon, rel, r->why);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool seen_di(const dev_ino *v, size_t n, const struct stat *st) {
    for (size_t i = 0; i < n; i++)
        if (v[i].dev == st->st_dev && v[i].ino == st->st_ino) return true;
    return false;
}

static void walk_dir(walker *w, const char *walk, const char *canon_dir, const char *rel, int depth) {
    DIR *d = opendir(walk);
    if (!d) {
        WALK_LOG(w, "lora registry: cannot read folder %s: %s (skipped)", walk, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t nn = 0, capn = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue; /* hidden, and "." / ".." */
        /* a regular file of another type (previews, notes) costs no stat */
        if (de->d_type == DT_REG && !ext_len(de->d_name)) continue;
        const char *why;
        if (!clean_utf8(de->d_name, &why)) {
            char q[160];
            WALK_LOG(w, "lora registry: %s/%s: file name %s (skipped)", walk, quote(de->d_name, q, sizeof q),
                     why);
            continue;
        }
        char **g = grow(names, &capn, nn + 1, sizeof *names);
        char *s = g ? sdxl_strdup(de->d_name) : NULL;
        if (g) names = g;
        if (!s) {
            w->st = SDXL_STATUS_OUT_OF_MEMORY;
            break;
        }
        names[nn++] = s;
    }
    closedir(d);
    if (nn) qsort(names, nn, sizeof *names, cmp_str_ptr);
    char *walkp = sdxl_malloc(3 * (size_t)SDXL_LORA_PATH_MAX);
    if (!walkp) w->st = SDXL_STATUS_OUT_OF_MEMORY;
    for (size_t i = 0; i < nn && w->st == SDXL_STATUS_OK; i++) {
        const char *name = names[i];
        char *canon = walkp + SDXL_LORA_PATH_MAX, *relp = walkp + 2 * SDXL_LORA_PATH_MAX;
        int a = snprintf(walkp, SDXL_LORA_PATH_MAX, "%s/%s", walk, name);
        int b = *rel ? snprintf(relp, SDXL_LORA_PATH_MAX, "%s/%s", rel, name)
                     : snprintf(relp, SDXL_LORA_PATH_MAX, "%s", name);
        if (a < 0 || a >= SDXL_LORA_PATH_MAX || b < 0 || b >= SDXL_LORA_PATH_MAX) {
            WALK_LOG(w, "lora registry: %s/%s: path too long (skipped)", walk, name);
            continue;
        }
        struct stat lst, st;
        if (lstat(walkp, &lst) != 0) continue; /* vanished meanwhile */
        bool link = S_ISLNK(lst.st_mode), want_file = ext_len(name) > 0;
        if (link) {
            if (!realpath(walkp, canon)) {
                if (want_file) reject(w, relp, false, NULL);
                continue;
            }
            if (stat(canon, &st) != 0) continue;
            if (!inside_any(w->reg, canon)) {
                if (S_ISDIR(st.st_mode) || (S_ISREG(st.st_mode) && want_file))
                    reject(w, relp, S_ISDIR(st.st_mode), canon);
                continue;
            }
        } else {
            st = lst;
            int c = strcmp(canon_dir, "/") == 0
                        ? snprintf(canon, SDXL_LORA_PATH_MAX, "/%s", name)
                        : snprintf(canon, SDXL_LORA_PATH_MAX, "%s/%s", canon_dir, name);
            if (c < 0 || c >= SDXL_LORA_PATH_MAX) continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (depth + 1 > SDXL_LORA_MAX_DEPTH) {
                WALK_LOG(w, "lora registry: %s: deeper than %d folders below its root (skipped)", walkp,
                         SDXL_LORA_MAX_DEPTH);
                continue;
            }
            if (seen_di(w->anc, (size_t)w->nanc, &st)) {
                SDXL_LOG_D("lora registry: %s: link back into its own ancestry (skipped)", walkp);
                continue;
            }
            if (link) {
                if (seen_di(w->linked, w->nlinked, &st)) continue; /* already walked through a link */
                dev_ino *g = grow(w->linked, &w->caplinked, w->nlinked + 1, sizeof *w->linked);
                if (!g) {
                    w->st = SDXL_STATUS_OUT_OF_MEMORY;
                    break;
                }
                w->linked = g;
                w->linked[w->nlinked++] = (dev_ino){st.st_dev, st.st_ino};
            }
            /* (the recursion has buffers of its own: ours stay intact) */
            w->anc[w->nanc++] = (dev_ino){st.st_dev, st.st_ino};
            walk_dir(w, walkp, canon, relp, depth + 1);
            w->nanc--;
        } else if (S_ISREG(st.st_mode) && want_file) {
            if (w->nc >= SDXL_LORA_MAX_FILES) {
                if (!w->warned_files)
                    WALK_LOG(w, "lora registry: more than %d LoRA files; the rest is not indexed",
                             SDXL_LORA_MAX_FILES);
                w->warned_files = true;
                continue;
            }
            cand *g = grow(w->c, &w->capc, w->nc + 1, sizeof *w->c);
            if (!g) {
                w->st = SDXL_STATUS_OUT_OF_MEMORY;
                break;
            }
            w->c = g;
            cand *c = &w->c[w->nc];
            memset(c, 0, sizeof *c);
            c->root = w->root;
            c->st = st;
            c->rel = sdxl_strdup(relp);
            c->walk = sdxl_strdup(walkp);
            c->canon = sdxl_strdup(canon);
            w->nc++;
            if (!c->rel || !c->walk || !c->canon) w->st = SDXL_STATUS_OUT_OF_MEMORY;
        }
    }
    sdxl_free(walkp);
    for (size_t i = 0; i < nn; i++)
        sdxl_free(names[i]);
    sdxl_free(names);
}

static void walker_free(walker *w) {
    for (size_t i = 0; i < w->nc; i++) {
        sdxl_free(w->c[i].rel);
        sdxl_free(w->c[i].walk);
        sdxl_free(w->c[i].canon);
    }
    sdxl_free(w->c);
    rejected_free_all(w->rj, w->nrj);
    sdxl_free(w->linked);
}

static int64_t mtime_ns_of(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static bool same_file(const entry *e, const char *canon, const struct stat *st) {
    return e->dev == (uint64_t)st->st_dev && e->ino == (uint64_t)st->st_ino &&
           e->size == (uint64_t)st->st_size && e->mtime_ns == mtime_ns_of(st) && strcmp(e->path, canon) == 0;
}

/* A new entry for a candidate: header read for safetensors, readability
 * checked for pickles. Only OUT_OF_MEMORY fails. */
static sdxl_status build_entry(const sdxl_lora_registry *reg, size_t root, const char *rel, const char *walk,
                               const char *canon, const struct stat *st, entry **out) {
    *out = NULL;
    entry *e = sdxl_calloc(1, sizeof *e);
    if (!e) return SDXL_STATUS_OUT_OF_MEMORY;
    if (!lkey_fill(&e->k, root, reg->roots[root].category, rel) || !(e->path = sdxl_strdup(canon)) ||
        !(e->walk_path = sdxl_strdup(walk))) {
        entry_free(e);
        return SDXL_STATUS_OUT_OF_MEMORY;
    }
    e->dev = (uint64_t)st->st_dev;
    e->ino = (uint64_t)st->st_ino;
    e->size = (uint64_t)st->st_size;
    e->mtime_ns = mtime_ns_of(st);
    e->safetensors = ci_cmp(e->k.file_name + strlen(e->k.name), ".safetensors") == 0;
    sdxl_status s = SDXL_STATUS_OK;
    if (e->safetensors) {
        s = read_safetensors(e);
    } else {
        copy_str(e->adapter, sizeof e->adapter, "?");
        int fd = open(canon, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            char msg[SDXL_LORA_META_MAX];
            snprintf(msg, sizeof msg, "cannot open: %s", strerror(errno));
            if (!(e->error = dup_cut(msg, SDXL_LORA_META_MAX - 1))) s = SDXL_STATUS_OUT_OF_MEMORY;
        } else {
            close(fd);
        }
    }
    if (s != SDXL_STATUS_OK) {
        entry_free(e);
        return s;
    }
    if (e->error) SDXL_LOG_W("lora registry: %s: listed, but unusable: %s", canon, e->error);
    *out = e;
    return SDXL_STATUS_OK;
}

static int cmp_key(size_t ra, const char *a, size_t rb, const char *b) {
    if (ra != rb) return ra < rb ? -1 : 1;
    return strcmp(a, b);
}

static int cmp_cand_canon(const void *a, const void *b) {
    const cand *x = a, *y = b;
    int c = strcmp(x->canon, y->canon);
    return c ? c : (x->root < y->root ? -1 : x->root > y->root);
}

static int cmp_cand_key(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return cmp_key(x->root, x->rel, y->root, y->rel);
}

/* Index of the entry (root, rel) in the sorted table, or -1. */
static ptrdiff_t find_key(entry *const *tab, size_t n, size_t root, const char *rel) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_key(tab[mid]->k.root, tab[mid]->k.rel_path, root, rel);
        if (c == 0) return (ptrdiff_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Re-canonicalize the roots (under refresh_mu). */
static sdxl_status update_roots(sdxl_lora_registry *reg) {
    for (size_t i = 0; i < reg->n_roots; i++) {
        root_cfg *r = &reg->roots[i];
        char buf[SDXL_LORA_PATH_MAX];
        struct stat st;
        char *c = NULL;
        const char *why = NULL;
        if (!realpath(r->path, buf))
            why = strerror(errno);
        else if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
            why = "not a folder";
        else if (!(c = sdxl_strdup(buf)))
            return SDXL_STATUS_OUT_OF_MEMORY;
        if (!c && !r->warned_missing) {
            SDXL_LOG_W("lora registry: LoRA directory %s: %s (indexed once it exists)", r->path, why);
            r->warned_missing = true;
        } else if (c && r->warned_missing) {
            SDXL_LOG_I("lora registry: LoRA directory %s now exists", r->path);
            r->warned_missing = false;
        }
        sdxl_free(r->canon);
        r->canon = c;
    }
    return SDXL_STATUS_OK;
}

static sdxl_status refresh_locked(sdxl_lora_registry *reg, bool loud, size_t *changes, sdxl_error *err) {
    if (update_roots(reg) != SDXL_STATUS_OK)
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY,
                              "lora registry: out of memory canonicalizing the roots");
    walker w = {.reg = reg, .loud = loud};
    /* 1. walk */
    for (size_t i = 0; i < reg->n_roots && w.st == SDXL_STATUS_OK; i++) {
        if (!reg->roots[i].canon) continue;
        struct stat st;
        if (stat(reg->roots[i].canon, &st) != 0) continue;
        w.root = i;
        w.nanc = 1;
        w.anc[0] = (dev_ino){st.st_dev, st.st_ino};
        walk_dir(&w, reg->roots[i].canon, reg->roots[i].canon, "", 0);
    }
    if (w.st != SDXL_STATUS_OK) {
        walker_free(&w);
        return sdxl_error_set(err, w.st, "lora registry: out of memory while walking the LoRA directories");
    }
    /* 2. a file reachable from several roots stays with the first */
    if (w.nc) qsort(w.c, w.nc, sizeof *w.c, cmp_cand_canon);
    /* (within a run of one canonical path, the first root's candidates sort
     * first; links within that root stay: they are aliases) */
    for (size_t i = 0, j; i < w.nc; i = j)
        for (j = i; j < w.nc && strcmp(w.c[j].canon, w.c[i].canon) == 0; j++)
            if (w.c[j].root != w.c[i].root) w.c[j].dropped = true;
    if (w.nc) qsort(w.c, w.nc, sizeof *w.c, cmp_cand_key);

    /* 3. build */
    entry **old = reg->tab; /* stable: only refreshers change it, and we hold refresh_mu */
    size_t nold = reg->n;
    entry **tab = sdxl_malloc((w.nc ? w.nc : 1) * sizeof *tab);
    bool *kept = sdxl_calloc(nold ? nold : 1, 1);    /* old entry moved over unchanged */
    bool *matched = sdxl_calloc(nold ? nold : 1, 1); /* old entry's key still present */
    bool *fresh = sdxl_calloc(w.nc ? w.nc : 1, 1);   /* tab[i] newly built */
    size_t n = 0, added = 0, changed = 0;
    sdxl_status st = tab && kept && matched && fresh ? SDXL_STATUS_OK : SDXL_STATUS_OUT_OF_MEMORY;
    for (size_t i = 0; i < w.nc && st == SDXL_STATUS_OK; i++) {
        cand *c = &w.c[i];
        if (c->dropped) continue;
        ptrdiff_t j = find_key(old, nold, c->root, c->rel);
        if (j >= 0) matched[j] = true;
        if (j >= 0 && same_file(old[j], c->canon, &c->st)) {
            kept[j] = true;
            tab[n++] = old[j];
            continue;
        }
        entry *e;
        st = build_entry(reg, c->root, c->rel, c->walk, c->canon, &c->st, &e);
        if (st != SDXL_STATUS_OK) break;
        fresh[n] = true;
        tab[n++] = e;
        if (j >= 0)
            changed++;
        else
            added++;
    }
    if (st != SDXL_STATUS_OK) {
        for (size_t i = 0; i < n; i++)
            if (fresh && fresh[i]) entry_free(tab[i]);
        sdxl_free(tab);
        sdxl_free(kept);
        sdxl_free(matched);
        sdxl_free(fresh);
        walker_free(&w);
        return sdxl_error_set(err, st, "lora registry: out of memory while indexing the LoRA files");
    }
    size_t removed = 0;
    for (size_t j = 0; j < nold; j++)
        removed += !matched[j];
    size_t total = added + changed + removed;

    rejected *old_rej;
    size_t old_nrej;
    pthread_rwlock_wrlock(&reg->lock);
    reg->tab = tab;
    reg->n = n;
    old_rej = reg->rej;
    old_nrej = reg->nrej;
    reg->rej = w.rj;
    reg->nrej = w.nrj;
    if (total) reg->generation++;
    pthread_rwlock_unlock(&reg->lock);

    w.rj = NULL;
    w.nrj = 0;
    for (size_t j = 0; j < nold; j++)
        if (!kept[j]) entry_free(old[j]);
    sdxl_free(old);
    rejected_free_all(old_rej, old_nrej);
    sdxl_free(kept);
    sdxl_free(matched);
    sdxl_free(fresh);
    walker_free(&w);
    if (total)
        SDXL_LOG_D("lora registry: %zu files indexed (%zu added, %zu changed, %zu removed)", n, added,
                   changed, removed);
    if (changes) *changes = total;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_lora_registry_refresh(sdxl_lora_registry *reg, bool force, size_t *changes,
                                       sdxl_error *err) {
    if (changes) *changes = 0;
    if (!reg)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_lora_registry_refresh: registry is NULL");
    pthread_mutex_lock(&reg->refresh_mu);
    sdxl_status st = SDXL_STATUS_OK;
    if (force || now_ns() - reg->last_refresh_ns >= reg->params.min_rescan_interval_ms * 1000000) {
        st = refresh_locked(reg, false, changes, err);
        reg->last_refresh_ns = now_ns();
    }
    pthread_mutex_unlock(&reg->refresh_mu);
    return st;
}

/* Bring one entry (found stale by resolve) up to date: re-read it, or drop
 * it if it is gone or no longer acceptable. */
static sdxl_status update_one(sdxl_lora_registry *reg, size_t root, const char *rel, sdxl_error *err) {
    pthread_mutex_lock(&reg->refresh_mu);
    sdxl_status st = SDXL_STATUS_OK;
    ptrdiff_t j = find_key(reg->tab, reg->n, root, rel);
    if (j < 0) goto out; /* a refresh got there first */
    entry *old = reg->tab[j], *e = NULL;
    struct stat lst, sb;
    char canon[SDXL_LORA_PATH_MAX];
    bool ok = lstat(old->walk_path, &lst) == 0 && realpath(old->walk_path, canon) && stat(canon, &sb) == 0 &&
              S_ISREG(sb.st_mode) && inside_any(reg, canon);
    if (ok && same_file(old, canon, &sb)) goto out;
    if (ok) {
        st = build_entry(reg, root, old->k.rel_path, old->walk_path, canon, &sb, &e);
        if (st != SDXL_STATUS_OK) {
            sdxl_error_set(err, st, "lora registry: out of memory re-reading %s", old->walk_path);
            goto out;
        }
    }
    pthread_rwlock_wrlock(&reg->lock);
    if (e) {
        reg->tab[j] = e;
    } else {
        memmove(reg->tab + j, reg->tab + j + 1, (reg->n - (size_t)j - 1) * sizeof *reg->tab);
        reg->n--;
    }
    reg->generation++;
    pthread_rwlock_unlock(&reg->lock);
    SDXL_LOG_D("lora registry: %s %s since the last scan", old->walk_path, e ? "changed" : "vanished");
    entry_free(old);
out:
    pthread_mutex_unlock(&reg->refresh_mu);
    return st;
}

/* ---- create / free / getters ------------------------------------------------ */

sdxl_lora_registry_params sdxl_lora_registry_default_params(void) {
    return (sdxl_lora_registry_params){.min_rescan_interval_ms = 1000};
}

void sdxl_lora_registry_free(sdxl_lora_registry *reg) {
    if (!reg) return;
    for (size_t i = 0; i < reg->n; i++)
        entry_free(reg->tab[i]);
    sdxl_free(reg->tab);
    rejected_free_all(reg->rej, reg->nrej);
    for (size_t i = 0; i < reg->n_roots; i++) {
        sdxl_free(reg->roots[i].path);
        sdxl_free(reg->roots[i].category);
        sdxl_free(reg->roots[i].canon);
    }
    sdxl_free(reg->roots);
    pthread_rwlock_destroy(&reg->lock);
    pthread_mutex_destroy(&reg->refresh_mu);
    sdxl_free(reg);
}

sdxl_status sdxl_lora_registry_create(const sdxl_lora_dir *dirs, size_t n,
                                      const sdxl_lora_registry_params *params, sdxl_lora_registry **out,
                                      sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_lora_registry_create: out is NULL");
    *out = NULL;
    if (n && !dirs)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_lora_registry_create: dirs is NULL");
    sdxl_lora_registry_params p = params ? *params : sdxl_lora_registry_default_params();
    if (p.min_rescan_interval_ms < 0 || p.min_rescan_interval_ms > INT64_MAX / 1000000)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_lora_registry_create: min_rescan_interval_ms %lld out of range",
                              (long long)p.min_rescan_interval_ms);
    for (size_t i = 0; i < n; i++) {
        if (!dirs[i].path || !dirs[i].path[0])
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "LoRA directory %zu: empty path", i);
        if (strlen(dirs[i].path) >= SDXL_LORA_PATH_MAX)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                  "LoRA directory %zu: path longer than %d bytes", i, SDXL_LORA_PATH_MAX - 1);
        const char *why;
        if (dirs[i].category && !clean_utf8(dirs[i].category, &why))
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "LoRA directory %s: category %s",
                                  dirs[i].path, why);
    }
    sdxl_lora_registry *reg = sdxl_calloc(1, sizeof *reg);
    if (!reg) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora registry: out of memory");
    if (pthread_rwlock_init(&reg->lock, NULL) != 0) {
        sdxl_free(reg);
        return sdxl_error_set(err, SDXL_STATUS_INTERNAL, "lora registry: cannot create a lock");
    }
    if (pthread_mutex_init(&reg->refresh_mu, NULL) != 0) {
        pthread_rwlock_destroy(&reg->lock);
        sdxl_free(reg);
        return sdxl_error_set(err, SDXL_STATUS_INTERNAL, "lora registry: cannot create a lock");
    }
    reg->params = p;
    reg->roots = sdxl_calloc(n ? n : 1, sizeof *reg->roots);
    if (!reg->roots) goto oom;
    reg->n_roots = n;
    for (size_t i = 0; i < n; i++) {
        if (!(reg->roots[i].path = sdxl_strdup(dirs[i].path))) goto oom;
        if (dirs[i].category && dirs[i].category[0] &&
            !(reg->roots[i].category = category_dup(dirs[i].category, strlen(dirs[i].category))))
            goto oom;
    }
    pthread_mutex_lock(&reg->refresh_mu);
    sdxl_status st = refresh_locked(reg, true, NULL, err);
    reg->last_refresh_ns = now_ns();
    pthread_mutex_unlock(&reg->refresh_mu);
    if (st != SDXL_STATUS_OK) {
        sdxl_lora_registry_free(reg);
        return st;
    }
    *out = reg;
    return SDXL_STATUS_OK;
oom:
    sdxl_lora_registry_free(reg);
    return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora registry: out of memory");
}

size_t sdxl_lora_registry_count(const sdxl_lora_registry *creg) {
    if (!creg) return 0;
    sdxl_lora_registry *reg = (sdxl_lora_registry *)creg; /* the lock is not part of the value */
    pthread_rwlock_rdlock(&reg->lock);
    size_t n = reg->n;
    pthread_rwlock_unlock(&reg->lock);
    return n;
}

uint64_t sdxl_lora_registry_generation(const sdxl_lora_registry *creg) {
    if (!creg) return 0;
    sdxl_lora_registry *reg = (sdxl_lora_registry *)creg;
    pthread_rwlock_rdlock(&reg->lock);
    uint64_t g = reg->generation;
    pthread_rwlock_unlock(&reg->lock);
    return g;
}

/* Under the read lock. */
static void entry_copy(const entry *e, sdxl_lora_info *o) {
    memset(o, 0, sizeof *o);
    copy_str(o->name, sizeof o->name, e->k.name);
    copy_str(o->file_name, sizeof o->file_name, e->k.file_name);
    copy_str(o->category, sizeof o->category, e->k.category);
    copy_str(o->path, sizeof o->path, e->path);
    copy_str(o->rel_path, sizeof o->rel_path, e->k.rel_path);
    o->root = e->k.root;
    o->size = e->size;
    o->mtime_ns = e->mtime_ns;
    copy_str(o->container, sizeof o->container, e->safetensors ? "safetensors" : "pytorch");
    copy_str(o->adapter, sizeof o->adapter, e->adapter);
    o->rank = e->rank;
    copy_str(o->output_name, sizeof o->output_name, e->output_name);
    copy_str(o->base_model, sizeof o->base_model, e->base_model);
    copy_str(o->network_module, sizeof o->network_module, e->network_module);
    o->network_dim = e->network_dim;
    o->network_alpha = e->network_alpha;
    o->n_triggers = e->n_triggers;
    for (int i = 0; i < e->n_triggers; i++)
        copy_str(o->triggers[i], sizeof o->triggers[i], e->triggers[i]);
    memcpy(o->short_hash, e->short_hash, sizeof o->short_hash);
    memcpy(o->sha256, e->sha256, sizeof o->sha256);
    copy_str(o->error, sizeof o->error, e->error);
}

sdxl_status sdxl_lora_registry_get(const sdxl_lora_registry *creg, size_t i, sdxl_lora_info *out,
                                   sdxl_error *err) {
    if (!creg || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_lora_registry_get: NULL argument");
    sdxl_lora_registry *reg = (sdxl_lora_registry *)creg;
    pthread_rwlock_rdlock(&reg->lock);
    size_t n = reg->n;
    if (i < n) entry_copy(reg->tab[i], out);
    pthread_rwlock_unlock(&reg->lock);
    if (i >= n)
        return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "LoRA index entry %zu: only %zu entries", i, n);
    return SDXL_STATUS_OK;
}

/* ---- hashes ------------------------------------------------------------------ */

sdxl_status sdxl_lora_registry_hash(sdxl_lora_registry *reg, const char *path, sdxl_lora_hash_kind kind,
                                    char *out, size_t out_size, sdxl_error *err) {
    if (!reg || !path || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_lora_registry_hash: NULL argument");
    bool shrt = kind == SDXL_LORA_HASH_SHORT;
    if (!shrt && kind != SDXL_LORA_HASH_SHA256)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_lora_registry_hash: unknown kind %d",
                              (int)kind);
    size_t need = shrt ? 13 : 65;
    if (out_size < need)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_lora_registry_hash: out holds %zu bytes, needs %zu", out_size, need);
    out[0] = 0;
    bool found = false, safet = false;
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t mtime = 0;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->n && !found; i++) {
        const entry *e = reg->tab[i];
        if (strcmp(e->path, path) != 0) continue;
        found = true;
        safet = e->safetensors;
        dev = e->dev, ino = e->ino, size = e->size, mtime = e->mtime_ns;
        const char *cached = shrt ? e->short_hash : e->sha256;
        if (cached[0]) memcpy(out, cached, need);
    }
    pthread_rwlock_unlock(&reg->lock);
    if (!found) {
        char q[200];
        return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "lora registry: %s is not an indexed LoRA file",
                              quote(path, q, sizeof q));
    }
    if (out[0]) return SDXL_STATUS_OK;

    /* O_NOFOLLOW: the canonical path has no link as its last component; if
     * one appeared since, it is not ours to follow. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return sdxl_error_set(err, SDXL_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat a, b;
    sdxl_status st = SDXL_STATUS_OK;
    uint8_t *buf = NULL;
    if (fstat(fd, &a) != 0 || !S_ISREG(a.st_mode)) {
        st = sdxl_error_set(err, SDXL_STATUS_IO, "%s: not a regular file", path);
        goto done;
    }
    uint64_t skip = 0; /* bytes not hashed at the start */
    if (shrt && safet) {
        uint8_t h[8];
        ssize_t r = a.st_size >= 8 ? pread(fd, h, 8, 0) : 0;
        uint64_t hn = 0;
        for (int i = 0; i < 8 && r == 8; i++)
            hn |= (uint64_t)h[i] << (8 * i);
        if (r != 8 || hn > (uint64_t)a.st_size - 8) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                "%s: safetensors header length %llu does not fit the %lld-byte file", path,
                                (unsigned long long)hn, (long long)a.st_size);
            goto done;
        }
        skip = 8 + hn;
    }
    buf = sdxl_malloc(HASH_CHUNK);
    if (!buf) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory for the hash buffer", path);
        goto done;
    }
    sdxl_sha256 h;
    sdxl_sha256_init(&h);
    uint64_t off = skip;
    for (;;) {
        ssize_t r = pread(fd, buf, HASH_CHUNK, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = sdxl_error_set(err, SDXL_STATUS_IO, "%s: read failed at byte %llu: %s", path,
                                (unsigned long long)off, strerror(errno));
            goto done;
        }
        if (r == 0) break;
        sdxl_sha256_update(&h, buf, (size_t)r);
        off += (uint64_t)r;
    }
    uint8_t dg[32];
    char hex[65];
    sdxl_sha256_final(&h, dg);
    sdxl_sha256_hex(dg, hex);
    memcpy(out, hex, need - 1);
    out[need - 1] = 0;
    /* cache only if the bytes hashed are the file the index describes */
    bool stable = fstat(fd, &b) == 0 && b.st_size == a.st_size && mtime_ns_of(&b) == mtime_ns_of(&a) &&
                  off == (uint64_t)a.st_size;
    if (stable && (uint64_t)a.st_dev == dev && (uint64_t)a.st_ino == ino && (uint64_t)a.st_size == size &&
        mtime_ns_of(&a) == mtime) {
        pthread_rwlock_wrlock(&reg->lock);
        for (size_t i = 0; i < reg->n; i++) {
            entry *e = reg->tab[i];
            if (e->dev == dev && e->ino == ino && e->size == size && e->mtime_ns == mtime &&
                strcmp(e->path, path) == 0)
                memcpy(shrt ? e->short_hash : e->sha256, out, need);
        }
        pthread_rwlock_unlock(&reg->lock);
    }
done:
    sdxl_free(buf);
    close(fd);
    return st;
}

/* ---- resolution ----------------------------------------------------------------- */

typedef struct req {
    char norm[SDXL_LORA_REQUEST_MAX + 1]; /* components joined by '/', no "" / "." */
    bool slash;
    const char *first; /* first component (in first_buf) when slash */
    char first_buf[SDXL_LORA_REQUEST_MAX + 1];
    const char *rest;             /* after the first '/' of norm */
    char cat[SDXL_LORA_NAME_MAX]; /* normalized request category, "" for none */
    char path_cat[SDXL_LORA_NAME_MAX];
} req;

/* Check and normalize the request name; INVALID_ARG says why. */
static sdxl_status parse_request(const char *name, const char *category, req *r, sdxl_error *err) {
    char q[160], q2[160];
    const char *why = NULL;
    size_t len = strlen(name);
    if (!len) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "LoRA name is empty");
    if (len > SDXL_LORA_REQUEST_MAX)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "LoRA name \"%s\" is %zu bytes long (limit %d)",
                              quote(name, q, sizeof q), len, SDXL_LORA_REQUEST_MAX);
    if (!clean_utf8(name, &why))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "LoRA name \"%s\" %s", quote(name, q, sizeof q),
                              why);
    if (name[0] == '/')
        return sdxl_error_set(
            err, SDXL_STATUS_INVALID_ARG,
            "LoRA name \"%s\" is an absolute path; names are resolved inside the LoRA directories only",
            quote(name, q, sizeof q));
    size_t o = 0;
    for (const char *p = name; *p;) {
        const char *s = strchr(p, '/');
        size_t n = s ? (size_t)(s - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return sdxl_error_set(
                err, SDXL_STATUS_INVALID_ARG,
                "LoRA name \"%s\" contains a \"..\" component; names cannot leave the LoRA directories",
                quote(name, q, sizeof q));
        if (n && !(n == 1 && p[0] == '.')) {
            if (o) r->norm[o++] = '/';
            memcpy(r->norm + o, p, n);
            o += n;
        }
        p += n + (s != NULL);
    }
    r->norm[o] = 0;
    if (!o)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "LoRA name \"%s\" names no file",
                              quote(name, q, sizeof q));
    const char *s = strchr(r->norm, '/');
    r->slash = s != NULL;
    if (s) {
        memcpy(r->first_buf, r->norm, (size_t)(s - r->norm));
        r->first_buf[s - r->norm] = 0;
        r->first = r->first_buf;
        r->rest = s + 1;
        sdxl_lora_category_normalize(r->first, r->path_cat, sizeof r->path_cat);
    }
    r->cat[0] = 0;
    if (category && category[0]) {
        if (!clean_utf8(category, &why))
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "LoRA \"%s\": category \"%s\" %s",
                                  quote(name, q, sizeof q), quote(category, q2, sizeof q2), why);
        if (strlen(category) >= SDXL_LORA_NAME_MAX)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                  "LoRA \"%s\": category is longer than %d bytes", quote(name, q, sizeof q),
                                  SDXL_LORA_NAME_MAX - 1);
        sdxl_lora_category_normalize(category, r->cat, sizeof r->cat);
    }
    return SDXL_STATUS_OK;
}

static bool name_match(const lkey *k, const char *s, bool ci) {
    return eq(k->name, s, ci) || eq(k->file_name, s, ci);
}

static bool rel_match(const lkey *k, const char *s, bool ci) {
    if (eq(k->rel_path, s, ci)) return true;
    size_t el = strlen(k->file_name) - strlen(k->name);
    return el && eqn(k->rel_path, strlen(k->rel_path) - el, s, ci);
}

/* Does key k match the request under rule `m` (case-insensitively if ci)? */
static bool rule_match(const lkey *k, const req *r, sdxl_lora_match m, bool ci) {
    switch (m) {
    case SDXL_LORA_MATCH_EXACT: return !r->slash && name_match(k, r->norm, false);
    case SDXL_LORA_MATCH_CASE_INSENSITIVE: return !r->slash && name_match(k, r->norm, true);
    case SDXL_LORA_MATCH_CATEGORY_NAME:
        return r->slash && !strchr(r->rest, '/') && strcmp(k->category, r->path_cat) == 0 &&
               name_match(k, r->rest, ci);
    case SDXL_LORA_MATCH_REL_PATH: return r->slash && rel_match(k, r->norm, ci);
    default: return false;
    }
}

static int cmp_pref(const entry *a, const entry *b) {
    if (a->k.root != b->k.root) return a->k.root < b->k.root ? -1 : 1;
    int da = depth_of(a->k.rel_path), db = depth_of(b->k.rel_path);
    if (da != db) return da < db ? -1 : 1;
    if (a->safetensors != b->safetensors) return a->safetensors ? -1 : 1;
    return strcmp(a->k.rel_path, b->k.rel_path);
}

static const char *match_name(sdxl_lora_match m) {
    switch (m) {
    case SDXL_LORA_MATCH_EXACT: return "exact name";
    case SDXL_LORA_MATCH_CASE_INSENSITIVE: return "case-insensitive name";
    case SDXL_LORA_MATCH_CATEGORY_NAME: return "category/name";
    case SDXL_LORA_MATCH_REL_PATH: return "relative path";
    default: return "none";
    }
}

static void appendf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t n, const char *fmt, ...) {
    size_t o = strlen(buf);
    if (o + 1 >= n) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + o, n - o, fmt, ap);
    va_end(ap);
    if (w >= 0 && (size_t)w >= n - o && n > 4) memcpy(buf + n - 4, "...", 4); /* show it was cut */
}

/* Look the request up under the read lock. Returns the chosen entry (its
 * copy is in out->entry) or NULL. The stale check needs the walk path and
 * identity: copied into *chosen_key. */
typedef struct chosen {
    size_t root;
    char rel[SDXL_LORA_PATH_MAX];
    char walk[SDXL_LORA_PATH_MAX];
    uint64_t dev, ino, size;
    int64_t mtime_ns;
} chosen;

static bool lookup(sdxl_lora_registry *reg, const req *r, sdxl_lora_resolution *out, chosen *ch) {
    static const struct {
        sdxl_lora_match m;
        bool ci;
    } rules[] = {{SDXL_LORA_MATCH_EXACT, false},         {SDXL_LORA_MATCH_CASE_INSENSITIVE, true},
                 {SDXL_LORA_MATCH_CATEGORY_NAME, false}, {SDXL_LORA_MATCH_CATEGORY_NAME, true},
                 {SDXL_LORA_MATCH_REL_PATH, false},      {SDXL_LORA_MATCH_REL_PATH, true}};
    char q[160];
    for (int pass = r->cat[0] ? 0 : 1; pass < 2; pass++) { /* pass 0: within the requested category */
        for (size_t ri = 0; ri < sizeof rules / sizeof *rules; ri++) {
            const entry *best = NULL;
            int nc = 0;
            bool same = true;
            for (size_t i = 0; i < reg->n; i++) {
                const entry *e = reg->tab[i];
                if (pass == 0 && strcmp(e->k.category, r->cat) != 0) continue;
                if (!rule_match(&e->k, r, rules[ri].m, rules[ri].ci)) continue;
                nc++;
                if (best && strcmp(best->path, e->path) != 0) same = false;
                if (!best || cmp_pref(e, best) < 0) best = e;
            }
            if (!best) continue;
            entry_copy(best, &out->entry);
            out->match = rules[ri].m;
            out->n_candidates = nc;
            out->warning[0] = 0;
            bool overridden =
                rules[ri].m == SDXL_LORA_MATCH_CATEGORY_NAME && r->cat[0] && strcmp(r->cat, r->path_cat) != 0;
            if (pass == 1 && r->cat[0] && !overridden)
                appendf(out->warning, sizeof out->warning,
                        "LoRA \"%s\": no match in category \"%s\"; using %s (category \"%s\"). ",
                        quote(r->norm, q, sizeof q), r->cat, best->k.rel_path, best->k.category);
            if (overridden)
                appendf(out->warning, sizeof out->warning,
                        "LoRA \"%s\": the name's category \"%s\" overrides \"%s\". ",
                        quote(r->norm, q, sizeof q), r->path_cat, r->cat);
            if (nc > 1 && !same) {
                appendf(out->warning, sizeof out->warning,
                        "LoRA \"%s\" matches %d files (%s); chose %s in directory %zu (rule: earliest "
                        "directory, fewest "
                        "folders, safetensors first, path order); candidates:",
                        quote(r->norm, q, sizeof q), nc, match_name(rules[ri].m), best->k.rel_path,
                        best->k.root);
                for (size_t i = 0; i < reg->n; i++) {
                    const entry *e = reg->tab[i];
                    if (pass == 0 && strcmp(e->k.category, r->cat) != 0) continue;
                    if (rule_match(&e->k, r, rules[ri].m, rules[ri].ci))
                        appendf(out->warning, sizeof out->warning, " %s [%s, dir %zu]", e->k.rel_path,
                                e->k.category[0] ? e->k.category : "no category", e->k.root);
                }
            }
            size_t wl = strlen(out->warning);
            if (wl && out->warning[wl - 1] == ' ') out->warning[wl - 1] = 0;
            ch->root = best->k.root;
            copy_str(ch->rel, sizeof ch->rel, best->k.rel_path);
            copy_str(ch->walk, sizeof ch->walk, best->walk_path);
            ch->dev = best->dev, ch->ino = best->ino, ch->size = best->size, ch->mtime_ns = best->mtime_ns;
            return true;
        }
    }
    return false;
}

/* A left-out symlink the request names (files by the same rules; a folder
 * by a path prefix). Under the read lock. */
static const rejected *lookup_rejected(const sdxl_lora_registry *reg, const req *r) {
    for (int ci = 0; ci < 2; ci++) {
        for (size_t i = 0; i < reg->nrej; i++) {
            const rejected *x = &reg->rej[i];
            if (x->is_dir) {
                size_t n = strlen(x->k.rel_path);
                if (r->slash && strlen(r->norm) > n && r->norm[n] == '/' &&
                    eqn(r->norm, n, x->k.rel_path, ci))
                    return x;
                continue;
            }
            for (int m = SDXL_LORA_MATCH_EXACT; m <= SDXL_LORA_MATCH_REL_PATH; m++)
                if (rule_match(&x->k, r, (sdxl_lora_match)m, ci)) return x;
        }
    }
    return NULL;
}

static size_t lev(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > LEV_MAX) na = LEV_MAX;
    if (nb > LEV_MAX) nb = LEV_MAX;
    size_t row[LEV_MAX + 1];
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t c = diag + (lower((unsigned char)a[i - 1]) != lower((unsigned char)b[j - 1]));
            if (up + 1 < c) c = up + 1;
            if (row[j - 1] + 1 < c) c = row[j - 1] + 1;
            row[j] = c;
            diag = up;
        }
    }
    return row[nb];
}

static bool ci_contains(const char *hay, const char *needle) {
    size_t n = strlen(needle), h = strlen(hay);
    if (!n || n > h) return false;
    for (size_t i = 0; i + n <= h; i++)
        if (eqn(hay + i, n, needle, true)) return true;
    return false;
}

/* Suggestion score of a stem/alias against the key: lower is better;
 * SIZE_MAX = not similar. Substrings first (by length difference), then
 * small edit distances. */
static size_t similarity(const char *stem, const char *key) {
    if (!stem || !stem[0]) return SIZE_MAX;
    size_t lc = strlen(stem), lk = strlen(key);
    if ((lk >= 3 && ci_contains(stem, key)) || (lc >= 3 && ci_contains(key, stem)))
        return lc > lk ? lc - lk : lk - lc;
    size_t d = lev(stem, key), lim = lk / 3 > 2 ? lk / 3 : 2;
    return d <= lim ? 1000 + d : SIZE_MAX;
}

/* Fill out->suggestions (under the read lock). */
static void suggest(const sdxl_lora_registry *reg, const req *r, sdxl_lora_resolution *out) {
    const char *last = strrchr(r->norm, '/');
    last = last ? last + 1 : r->norm;
    char key[LEV_MAX + 1];
    size_t el = ext_len(last), kl = strlen(last) - el;
    if (kl > LEV_MAX) kl = LEV_MAX;
    memcpy(key, last, kl);
    key[kl] = 0;
    size_t best_s[SDXL_LORA_MAX_SUGGESTIONS];
    const entry *best_e[SDXL_LORA_MAX_SUGGESTIONS];
    int nb = 0;
    for (size_t i = 0; i < reg->n; i++) {
        const entry *e = reg->tab[i];
        size_t s = similarity(e->k.name, key), sa = similarity(e->output_name, key);
        if (sa != SIZE_MAX && (s == SIZE_MAX || sa + 1 < s))
            s = sa + 1; /* an alias hit ranks just after a stem hit */
        if (s == SIZE_MAX) continue;
        bool dup = false; /* one line per stem + category */
        for (int j = 0; j < nb && !dup; j++)
            dup = strcmp(best_e[j]->k.name, e->k.name) == 0 &&
                  strcmp(best_e[j]->k.category, e->k.category) == 0;
        if (dup) continue;
        int pos = nb;
        while (pos > 0 && (best_s[pos - 1] > s ||
                           (best_s[pos - 1] == s && strcmp(best_e[pos - 1]->k.name, e->k.name) > 0)))
            pos--;
        if (pos >= SDXL_LORA_MAX_SUGGESTIONS) continue;
        int last_i = nb < SDXL_LORA_MAX_SUGGESTIONS ? nb : SDXL_LORA_MAX_SUGGESTIONS - 1;
        for (int j = last_i; j > pos; j--)
            best_s[j] = best_s[j - 1], best_e[j] = best_e[j - 1];
        best_s[pos] = s;
        best_e[pos] = e;
        if (nb < SDXL_LORA_MAX_SUGGESTIONS) nb++;
    }
    for (int j = 0; j < nb; j++) {
        const entry *e = best_e[j];
        bool unique = true; /* is the bare stem enough to name it? */
        for (size_t i = 0; i < reg->n && unique; i++)
            unique = reg->tab[i] == e || ci_cmp(reg->tab[i]->k.name, e->k.name) != 0;
        char *o = out->suggestions[j];
        size_t n = sizeof out->suggestions[j];
        if (unique || !e->k.category[0])
            copy_str(o, n, e->k.name);
        else
            snprintf(o, n, "%s/%s", e->k.category, e->k.name);
    }
    out->n_suggestions = nb;
}

static bool still_same(const chosen *ch) {
    struct stat sb;
    return stat(ch->walk, &sb) == 0 && (uint64_t)sb.st_dev == ch->dev && (uint64_t)sb.st_ino == ch->ino &&
           (uint64_t)sb.st_size == ch->size && mtime_ns_of(&sb) == ch->mtime_ns;
}

sdxl_status sdxl_lora_registry_resolve(sdxl_lora_registry *reg, const char *name, const char *category,
                                       sdxl_lora_resolution *out, sdxl_error *err) {
    if (out) memset(out, 0, sizeof *out);
    if (!reg || !name || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_lora_registry_resolve: NULL argument");
    /* ~10 KB of scratch: kept off the caller's stack */
    req *r = sdxl_calloc(1, sizeof *r);
    chosen *ch = sdxl_malloc(sizeof *ch);
    sdxl_status st;
    if (!r || !ch) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora registry: out of memory resolving a name");
        goto done;
    }
    st = parse_request(name, category, r, err);
    if (st != SDXL_STATUS_OK) goto done;

    bool updated = false, rescan_tried = false;
    for (;;) {
        pthread_rwlock_rdlock(&reg->lock);
        bool hit = lookup(reg, r, out, ch);
        uint64_t gen = reg->generation;
        pthread_rwlock_unlock(&reg->lock);
        if (hit) {
            if (updated || still_same(ch)) goto done; /* st is OK */
            /* changed or removed since the last scan: fix that entry, look again */
            st = update_one(reg, ch->root, ch->rel, err);
            if (st != SDXL_STATUS_OK) goto done;
            updated = true;
            continue;
        }
        if (rescan_tried) break;
        rescan_tried = true;
        pthread_mutex_lock(&reg->refresh_mu);
        if (now_ns() - reg->last_refresh_ns >= reg->params.min_rescan_interval_ms * 1000000) {
            st = refresh_locked(reg, false, NULL, err);
            reg->last_refresh_ns = now_ns();
            out->rescanned = true;
        }
        pthread_mutex_unlock(&reg->refresh_mu);
        if (st != SDXL_STATUS_OK) goto done;
        /* look again if this rescan, or one that ran since our look-up, changed the index */
        if (sdxl_lora_registry_generation(reg) == gen) break;
    }

    char q[160];
    pthread_rwlock_rdlock(&reg->lock);
    const rejected *x = lookup_rejected(reg, r);
    if (x) {
        st = sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "LoRA \"%s\": %s/%s %s; refused",
                            quote(r->norm, q, sizeof q), reg->roots[x->k.root].path, x->k.rel_path, x->why);
        pthread_rwlock_unlock(&reg->lock);
        goto done;
    }
    suggest(reg, r, out);
    size_t n_idx = reg->n;
    pthread_rwlock_unlock(&reg->lock);
    char msg[SDXL_ERROR_MSG_MAX];
    msg[0] = 0;
    appendf(msg, sizeof msg, "LoRA \"%s\"", quote(r->norm, q, sizeof q));
    if (r->cat[0]) appendf(msg, sizeof msg, " (category \"%s\")", r->cat);
    appendf(msg, sizeof msg, " not found in %zu LoRA director%s (%zu files indexed)", reg->n_roots,
            reg->n_roots == 1 ? "y" : "ies", n_idx);
    for (int j = 0; j < out->n_suggestions; j++)
        appendf(msg, sizeof msg, "%s%s", j ? ", " : "; did you mean: ", out->suggestions[j]);
    if (out->n_suggestions) appendf(msg, sizeof msg, "?");
    st = sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "%s", msg);
done:
    if (st != SDXL_STATUS_OK) { /* no half-filled entry on failure */
        memset(&out->entry, 0, sizeof out->entry);
        out->match = SDXL_LORA_MATCH_NONE;
        out->n_candidates = 0;
        out->warning[0] = 0;
    }
    sdxl_free(r);
    sdxl_free(ch);
    return st;
}
