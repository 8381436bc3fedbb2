/* torchfile.c - torch.save reader: container (zip or legacy), restricted
 * unpickling, flattening, and materialization of every tensor into its own
 * contiguous buffer. See torchfile.h for what is accepted.
 *
 * Steps, each trusting only what the previous ones proved:
 *   1. container: the pickle's bytes (and, for the legacy format, where each
 *      storage's bytes are);
 *   2. io/pickle.c runs the pickle into an object graph (refusing any global
 *      that is not a tensor builder);
 *   3. the root dict is walked depth first into flat names; the walk is
 *      bounded in depth, in visits (a memo can make a DAG whose unfolding is
 *      exponential) and in bytes;
 *   4. storages are grouped by key (one persistent id per reference, so one
 *      key usually appears many times) and checked for agreement; each
 *      group's bytes are read once and every tensor over them is checked
 *      against them and gathered into a fresh buffer.
 * Everything the result holds is charged to one budget (4 x the input +
 * 64 MiB): tensor data can legitimately be larger than the file (expanded
 * views), but not without limit.
 */
#include "io/torchfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "core/alloc.h"
#include "core/log.h"
#include "io/pickle.h"

#define MEMORY_PATH "<memory>"
#define MAX_PICKLE ((size_t)256 << 20) /* bytes of data.pkl; real ones are well under 10 MB */
#define MAX_PREFIX 1024

/* 0x1950a86a20f9469cfc6c, the legacy format's magic number, as the LONG1
 * bytes pickle writes it (little-endian two's complement). */
static const unsigned char legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
#define LEGACY_PROTOCOL 1001

/* data of tensors with no elements: a valid, aligned, never-written address */
static const uint8_t empty_data[64] __attribute__((aligned(64)));

typedef sdxl_st_kv tf_kv;

struct sdxl_torch_file {
    size_t n_tensors, n_meta, n_ignored;
    sdxl_st_tensor *tensors;        /* [n_tensors] in file order */
    const sdxl_st_tensor **by_name; /* [n_tensors] by strcmp(name) */
    tf_kv *meta;                    /* [n_meta] in file order */
    const tf_kv **meta_by_key;      /* [n_meta] by strcmp(key) */
    char *names;                    /* every name and metadata value */
    void **blocks;                  /* [n_tensors] each tensor's own data block, or NULL */
    uint8_t *scalars;               /* 64-byte slots for the number leaves */
    size_t bytes;
    bool legacy;
};

/* ---- context and messages ----------------------------------------------- */

enum { E_TENSOR, E_FLOAT, E_INT, E_STR };

typedef struct tf_entry {
    size_t name;  /* offset in ctx.names */
    size_t value; /* E_STR: offset of the value in ctx.names */
    sdxl_pk_ref ref;
    uint8_t kind;
} tf_entry;

typedef struct tf_storage { /* one per distinct key */
    const char *key;
    sdxl_st_dtype dtype;
    bool untyped;
    uint64_t numel, nbytes;
    const uint8_t *data; /* legacy: inside the input */
    bool has_data;
} tf_storage;

typedef struct tf_zent { /* a <prefix>/data/<key> entry */
    const char *key;
    zip_uint64_t index;
} tf_zent;

typedef struct tf_ctx {
    const char *path;
    const uint8_t *buf;
    size_t len;
    sdxl_error *err;
    size_t budget; /* bytes the result may still take */
    bool legacy;
    sdxl_pickle *pk;
    /* zip */
    zip_t *za;
    char *entry; /* scratch for entry names: prefix + "/..." */
    size_t entry_cap, prefix_len;
    tf_zent *zents;
    size_t n_zents;
    /* walk */
    tf_entry *entries;
    size_t n_entries, cap_entries;
    char *names;
    size_t names_len, names_cap;
    size_t visits, max_visits, n_ignored;
    char path_buf[SDXL_TORCH_MAX_NAME + 1];
    /* storages */
    tf_storage *st;
    size_t n_st;
} tf_ctx;

/* Text from the file, quoted for a message (control and non-ASCII bytes
 * escaped, cut short). By value so it can sit in an argument list. */
typedef struct {
    char s[96];
} qstr;

static qstr quote(const char *s) {
    qstr q;
    size_t o = 0;
    q.s[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
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

__attribute__((format(printf, 3, 4))) static sdxl_status fail(tf_ctx *c, sdxl_status st, const char *fmt,
                                                              ...) {
    char msg[SDXL_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sdxl_error_set(c->err, st, "%s: %s", c->path, msg);
}

#define BAD(...) fail(c, SDXL_STATUS_BAD_INPUT, __VA_ARGS__)
#define TRY(expr)                                                                                            \
    do {                                                                                                     \
        sdxl_status st_ = (expr);                                                                            \
        if (st_ != SDXL_STATUS_OK) return st_;                                                               \
    } while (0)

static sdxl_status oom(tf_ctx *c, size_t n) {
    return fail(c, SDXL_STATUS_OUT_OF_MEMORY, "out of memory (%zu bytes)", n);
}

static sdxl_status charge(tf_ctx *c, size_t n, const char *what) {
    if (n > c->budget)
        return BAD("%s would take the result past %zu more bytes (the limit is %d x the file size + %zu MiB: "
                   "expanded views or shared storages?)",
                   what, c->budget, SDXL_TORCH_EXPANSION_FACTOR, SDXL_TORCH_EXPANSION_SLACK >> 20);
    c->budget -= n;
    return SDXL_STATUS_OK;
}

static void format_dims(char *buf, size_t n, int ndim, const int64_t *d) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Run one pickle of the input; errors get "<path>: <what>: " in front. */
static sdxl_status run_pickle(tf_ctx *c, const void *buf, size_t len, size_t base, const char *what,
                              sdxl_pickle **out, size_t *consumed) {
    sdxl_pk_params prm = sdxl_pickle_default_params();
    prm.base_offset = base;
    if (c->budget < prm.max_bytes) prm.max_bytes = c->budget ? c->budget : 1;
    sdxl_status st = sdxl_pickle_load(buf, len, &prm, out, consumed, c->err);
    if (st != SDXL_STATUS_OK) sdxl_error_prefix(c->err, "%s: %s", c->path, what);
    return st;
}

/* ---- step 3: the walk ---------------------------------------------------- */

static sdxl_status names_put(tf_ctx *c, const char *s, size_t n, size_t *off) {
    TRY(charge(c, n + 1, "names and strings"));
    if (n + 1 > c->names_cap - c->names_len) {
        size_t cap = c->names_cap ? c->names_cap : 256;
        while (n + 1 > cap - c->names_len) {
            if (cap > SIZE_MAX / 2) return oom(c, SIZE_MAX);
            cap *= 2;
        }
        char *q = sdxl_realloc(c->names, cap);
        if (!q) return oom(c, cap);
        c->names = q;
        c->names_cap = cap;
    }
    memcpy(c->names + c->names_len, s, n);
    c->names[c->names_len + n] = '\0';
    *off = c->names_len;
    c->names_len += n + 1;
    return SDXL_STATUS_OK;
}

static sdxl_status add_entry(tf_ctx *c, uint8_t kind, sdxl_pk_ref ref, size_t name_len) {
    if (c->n_entries == c->cap_entries) {
        size_t cap = c->cap_entries ? 2 * c->cap_entries : 64;
        if (cap > SIZE_MAX / sizeof(tf_entry)) return oom(c, SIZE_MAX);
        TRY(charge(c, (cap - c->cap_entries) * sizeof(tf_entry), "the tensor table"));
        tf_entry *q = sdxl_realloc(c->entries, cap * sizeof *q);
        if (!q) return oom(c, cap * sizeof *q);
        c->entries = q;
        c->cap_entries = cap;
    }
    tf_entry *e = &c->entries[c->n_entries];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->ref = ref;
    TRY(names_put(c, c->path_buf, name_len, &e->name));
    if (kind == E_STR) {
        size_t vl;
        const char *v = sdxl_pickle_str(c->pk, ref, &vl);
        TRY(names_put(c, v, vl, &e->value));
    }
    c->n_entries++;
    return SDXL_STATUS_OK;
}

/* Flatten dict `d`, whose own name is path_buf[0, plen). */
static sdxl_status walk(tf_ctx *c, sdxl_pk_ref d, size_t plen, int depth) {
    const sdxl_pickle *pk = c->pk;
    size_t n = sdxl_pickle_len(pk, d);
    for (size_t i = 0; i < n; i++) {
        sdxl_pk_ref k, v;
        sdxl_pickle_dict_entry(pk, d, i, &k, &v);
        if (++c->visits > c->max_visits)
            return BAD(
                "the dicts are shared or repeated too often (more than %zu entries visited for %zu items "
                "pickled)",
                c->max_visits, sdxl_pickle_item_count(pk));
        char num[24];
        const char *ks;
        size_t kl;
        sdxl_pk_kind kk = sdxl_pickle_kind(pk, k);
        if (kk == SDXL_PK_STR) {
            ks = sdxl_pickle_str(pk, k, &kl);
            if (memchr(ks, 0, kl)) {
                c->path_buf[plen] = '\0';
                return BAD("a key under %s contains a NUL byte", quote(c->path_buf).s);
            }
        } else if (kk == SDXL_PK_INT) {
            kl = (size_t)snprintf(num, sizeof num, "%lld", (long long)sdxl_pickle_int(pk, k));
            ks = num;
        } else {
            c->n_ignored++;
            continue;
        }
        size_t sep = depth > 0 ? 1 : 0;
        if (kl > SDXL_TORCH_MAX_NAME - plen - sep) {
            c->path_buf[plen] = '\0';
            return BAD("a name under %s is longer than %d bytes", quote(c->path_buf).s, SDXL_TORCH_MAX_NAME);
        }
        if (sep) c->path_buf[plen] = '.';
        memcpy(c->path_buf + plen + sep, ks, kl);
        size_t nl = plen + sep + kl;
        c->path_buf[nl] = '\0';

        switch (sdxl_pickle_kind(pk, v)) {
        case SDXL_PK_DICT:
            if (depth + 1 >= SDXL_TORCH_MAX_DEPTH)
                return BAD("dicts nested deeper than %d (or a dict that contains itself) at %s",
                           SDXL_TORCH_MAX_DEPTH, quote(c->path_buf).s);
            TRY(walk(c, v, nl, depth + 1));
            break;
        case SDXL_PK_TENSOR: TRY(add_entry(c, E_TENSOR, v, nl)); break;
        case SDXL_PK_FLOAT: TRY(add_entry(c, E_FLOAT, v, nl)); break;
        case SDXL_PK_INT: TRY(add_entry(c, E_INT, v, nl)); break;
        case SDXL_PK_STR: {
            size_t vl;
            const char *s = sdxl_pickle_str(pk, v, &vl);
            if (memchr(s, 0, vl))
                c->n_ignored++; /* not representable as a C string */
            else
                TRY(add_entry(c, E_STR, v, nl));
            break;
        }
        default: c->n_ignored++;
        }
    }
    return SDXL_STATUS_OK;
}

/* ---- step 4: storages and tensors ---------------------------------------- */

static int cmp_storage_ptr(const void *pa, const void *pb) {
    return strcmp((*(const sdxl_pk_storage *const *)pa)->key, (*(const sdxl_pk_storage *const *)pb)->key);
}

/* One tf_storage per distinct key; every persistent id with that key must
 * declare the same type and size. */
static sdxl_status build_storages(tf_ctx *c) {
    size_t n = sdxl_pickle_storage_count(c->pk);
    if (!n) return SDXL_STATUS_OK;
    const sdxl_pk_storage **all = sdxl_malloc(n * sizeof *all);
    c->st = sdxl_malloc(n * sizeof *c->st);
    if (!all || !c->st) {
        sdxl_free(all);
        return oom(c, n * sizeof *c->st);
    }
    for (size_t i = 0; i < n; i++)
        all[i] = sdxl_pickle_storage_at(c->pk, i);
    qsort(all, n, sizeof *all, cmp_storage_ptr);
    sdxl_status st = SDXL_STATUS_OK;
    for (size_t i = 0; i < n; i++) {
        const sdxl_pk_storage *s = all[i];
        if (c->n_st && !strcmp(c->st[c->n_st - 1].key, s->key)) {
            const tf_storage *t = &c->st[c->n_st - 1];
            if (t->dtype != s->dtype || t->untyped != s->untyped || t->numel != s->numel) {
                st = BAD("storage %s is declared twice, as %llu x %s and as %llu x %s", quote(s->key).s,
                         (unsigned long long)t->numel, sdxl_st_dtype_name(t->dtype),
                         (unsigned long long)s->numel, sdxl_st_dtype_name(s->dtype));
                break;
            }
            continue;
        }
        tf_storage *t = &c->st[c->n_st++];
        memset(t, 0, sizeof *t);
        t->key = s->key;
        t->dtype = s->dtype;
        t->untyped = s->untyped;
        t->numel = s->numel;
        if (__builtin_mul_overflow(s->numel, (uint64_t)sdxl_st_dtype_size(s->dtype), &t->nbytes)) {
            st = BAD("storage %s: %llu elements of %s overflow 64 bits", quote(s->key).s,
                     (unsigned long long)s->numel, sdxl_st_dtype_name(s->dtype));
            break;
        }
    }
    sdxl_free(all);
    return st;
}

static tf_storage *find_storage(tf_ctx *c, const char *key) {
    size_t lo = 0, hi = c->n_st;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(key, c->st[mid].key);
        if (r == 0) return &c->st[mid];
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static bool is_contiguous(const sdxl_pk_tensor *t) {
    uint64_t expect = 1; /* <= the element count, which fits in 64 bits (unsigned: it may pass 2^63) */
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && (uint64_t)t->stride[d] != expect) return false;
        expect *= (uint64_t)t->size[d];
    }
    return true;
}

/* Copy the (already bounds-checked) strided tensor into dst, row-major. */
static void gather(uint8_t *dst, const uint8_t *src, size_t es, const sdxl_pk_tensor *t) {
    int nd = t->ndim;
    uint64_t pos = (uint64_t)t->offset; /* element index into src */
    if (nd == 0) {
        memcpy(dst, src + pos * es, es);
        return;
    }
    uint64_t row = (uint64_t)t->size[nd - 1], inner = (uint64_t)t->stride[nd - 1];
    int64_t idx[SDXL_ST_MAX_DIMS] = {0};
    for (;;) {
        if (inner == 1 || row == 1) {
            memcpy(dst, src + pos * es, row * es);
            dst += row * es;
        } else {
            const uint8_t *s = src + pos * es;
            size_t step = (size_t)(inner * es);
            switch (es) {
            case 1:
                for (uint64_t k = 0; k < row; k++, s += step)
                    *dst++ = *s;
                break;
            case 2:
                for (uint64_t k = 0; k < row; k++, s += step, dst += 2)
                    memcpy(dst, s, 2);
                break;
            case 4:
                for (uint64_t k = 0; k < row; k++, s += step, dst += 4)
                    memcpy(dst, s, 4);
                break;
            default:
                for (uint64_t k = 0; k < row; k++, s += step, dst += es)
                    memcpy(dst, s, es);
            }
        }
        /* next row: an odometer over the outer dims. Unsigned arithmetic:
         * a stride of a size-1 dim may be anything, and the wrap-around of
         * += then -= is exact. */
        int d = nd - 2;
        for (; d >= 0; d--) {
            pos += (uint64_t)t->stride[d];
            if (++idx[d] < t->size[d]) break;
            pos -= (uint64_t)t->stride[d] * (uint64_t)t->size[d];
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

/* Check tensor `ti` (from pickle tensor pt) against its storage's bytes and
 * copy it out. *adopt, if non-NULL and set, is the storage's own buffer,
 * which a tensor that is exactly the whole storage takes over. */
static sdxl_status materialize(tf_ctx *c, sdxl_torch_file *f, size_t ti, const sdxl_pk_tensor *pt,
                               const tf_storage *s, const uint8_t *sdata, void **adopt) {
    sdxl_st_tensor *t = &f->tensors[ti];
    size_t es = sdxl_st_dtype_size(pt->dtype);
    t->dtype = pt->dtype;
    t->ndim = pt->ndim;
    for (int d = 0; d < pt->ndim; d++)
        t->shape[d] = pt->size[d];
    char sz[160], sd[160];
    format_dims(sz, sizeof sz, pt->ndim, pt->size);
    format_dims(sd, sizeof sd, pt->ndim, pt->stride);

    uint64_t nelem = 1, nbytes;
    for (int d = 0; d < pt->ndim; d++)
        if (__builtin_mul_overflow(nelem, (uint64_t)pt->size[d], &nelem))
            return BAD("tensor %s: size %s: element count overflows 64 bits", quote(t->name).s, sz);
    if (__builtin_mul_overflow(nelem, (uint64_t)es, &nbytes) || nbytes > SIZE_MAX)
        return BAD("tensor %s: size %s of %s: byte size overflows", quote(t->name).s, sz,
                   sdxl_st_dtype_name(t->dtype));
    if (nelem) {
        /* the last element read: offset + sum((size_i - 1) * stride_i) */
        uint64_t last = (uint64_t)pt->offset, end = 0;
        bool over = false;
        for (int d = 0; d < pt->ndim && !over; d++) {
            uint64_t span;
            over = __builtin_mul_overflow((uint64_t)(pt->size[d] - 1), (uint64_t)pt->stride[d], &span) ||
                   __builtin_add_overflow(last, span, &last);
        }
        over =
            over || __builtin_add_overflow(last, 1, &end) || __builtin_mul_overflow(end, (uint64_t)es, &end);
        if (over || end > s->nbytes) {
            char reach[48];
            if (over)
                snprintf(reach, sizeof reach, "past byte 2^64");
            else
                snprintf(reach, sizeof reach, "up to byte %llu", (unsigned long long)end);
            return BAD(
                "tensor %s: storage_offset %lld, size %s, stride %s of %s reach %s of storage %s, which "
                "holds %llu bytes",
                quote(t->name).s, (long long)pt->offset, sz, sd, sdxl_st_dtype_name(t->dtype), reach,
                quote(s->key).s, (unsigned long long)s->nbytes);
        }
        t->offset = (uint64_t)pt->offset * es; /* <= end */
    } else {
        t->offset = 0;
    }
    t->nbytes = (size_t)nbytes;
    if (!nbytes) {
        t->data = empty_data;
        return SDXL_STATUS_OK;
    }
    bool contiguous = is_contiguous(pt);
    if (adopt && *adopt && contiguous && pt->offset == 0 && nbytes == s->nbytes) {
        t->data = *adopt; /* already charged when it was read */
        f->blocks[ti] = *adopt;
        *adopt = NULL;
        return SDXL_STATUS_OK;
    }
    TRY(charge(c, (size_t)nbytes, "tensor data"));
    uint8_t *blk = sdxl_malloc((size_t)nbytes);
    if (!blk) return oom(c, (size_t)nbytes);
    f->blocks[ti] = blk;
    f->bytes += (size_t)nbytes;
    if (contiguous)
        memcpy(blk, sdata + (size_t)pt->offset * es, (size_t)nbytes);
    else
        gather(blk, sdata, es, pt);
    t->data = blk;
    return SDXL_STATUS_OK;
}

/* ---- zip ---------------------------------------------------------------- */

static int cmp_zent(const void *pa, const void *pb) {
    return strcmp(((const tf_zent *)pa)->key, ((const tf_zent *)pb)->key);
}

/* Read entry `idx` whole into a fresh buffer. want: the exact size it must
 * have (UINT64_MAX: any size up to cap). Charges the budget. */
static sdxl_status zip_read(tf_ctx *c, zip_uint64_t idx, const char *name, uint64_t want, uint64_t cap,
                            uint8_t **out, size_t *out_len) {
    *out = NULL;
    zip_stat_t sb;
    zip_stat_init(&sb);
    if (zip_stat_index(c->za, idx, 0, &sb) != 0 || !(sb.valid & ZIP_STAT_SIZE))
        return BAD("entry %s: cannot read its size: %s", quote(name).s, zip_strerror(c->za));
    if (want != UINT64_MAX && sb.size != want)
        return BAD("entry %s holds %llu bytes, but the pickle declares %llu", quote(name).s,
                   (unsigned long long)sb.size, (unsigned long long)want);
    if (sb.size > cap || sb.size > SIZE_MAX - 1)
        return BAD("entry %s of %llu bytes is larger than the limit of %llu", quote(name).s,
                   (unsigned long long)sb.size, (unsigned long long)cap);
    size_t n = (size_t)sb.size;
    TRY(charge(c, n, "a storage record"));
    uint8_t *b = sdxl_malloc(n);
    if (!b) {
        c->budget += n;
        return oom(c, n);
    }
    sdxl_status st = SDXL_STATUS_OK;
    zip_file_t *zf = zip_fopen_index(c->za, idx, 0);
    if (!zf) {
        st = BAD("entry %s: cannot open: %s", quote(name).s, zip_strerror(c->za));
        goto fail;
    }
    size_t got = 0;
    while (got < n) {
        zip_int64_t r = zip_fread(zf, b + got, n - got);
        if (r < 0) {
            st = BAD("entry %s: %s", quote(name).s, zip_file_strerror(zf));
            break;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (st == SDXL_STATUS_OK && got < n)
        st = BAD("entry %s: only %zu of its %zu bytes could be read", quote(name).s, got, n);
    if (st == SDXL_STATUS_OK) {
        /* read on to the end: that is where libzip checks the CRC */
        uint8_t extra;
        zip_int64_t r = zip_fread(zf, &extra, 1);
        if (r < 0)
            st = BAD("entry %s: %s", quote(name).s, zip_file_strerror(zf));
        else if (r > 0)
            st = BAD("entry %s is longer than its declared %zu bytes", quote(name).s, n);
    }
    if (zf) zip_fclose(zf);
    if (st != SDXL_STATUS_OK) goto fail;
    *out = b;
    if (out_len) *out_len = n;
    return SDXL_STATUS_OK;
fail:
    sdxl_free(b);
    c->budget += n;
    return st;
}

/* c->entry = prefix + "/" + a + b, cut short if too long (it names entries
 * in messages and for zip_name_locate of fixed names; storages are found
 * through c->zents, never by a cut name). */
static const char *entry_name(tf_ctx *c, const char *a, const char *b) {
    snprintf(c->entry + c->prefix_len, c->entry_cap - c->prefix_len, "/%s%s", a, b);
    return c->entry;
}

static sdxl_status zip_open_archive(tf_ctx *c, uint8_t **pkl, size_t *pkl_len) {
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(c->buf, c->len, 0, &ze);
    if (!src) {
        sdxl_status st = oom(c, c->len);
        zip_error_fini(&ze);
        return st;
    }
    c->za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!c->za) {
        zip_source_free(src);
        sdxl_status st = BAD("not a valid zip archive: %s", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return st;
    }
    zip_error_fini(&ze);

    /* the pickle: the one entry <prefix>/data.pkl directly inside a top folder */
    zip_int64_t n = zip_get_num_entries(c->za, 0);
    const char *pkl_name = NULL;
    zip_uint64_t pkl_idx = 0;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *nm = zip_get_name(c->za, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        if (!nm) continue;
        size_t l = strlen(nm);
        if (l <= 9 || strcmp(nm + l - 9, "/data.pkl") != 0 || strchr(nm, '/') != nm + l - 9) continue;
        if (pkl_name) return BAD("two pickles in the archive: %s and %s", quote(pkl_name).s, quote(nm).s);
        pkl_name = nm;
        pkl_idx = (zip_uint64_t)i;
    }
    if (!pkl_name) return BAD("zip archive without a <folder>/data.pkl entry: not a torch.save file");
    c->prefix_len = strlen(pkl_name) - 9;
    if (c->prefix_len > MAX_PREFIX) return BAD("archive folder name longer than %d bytes", MAX_PREFIX);
    c->entry_cap = c->prefix_len + 256;
    c->entry = sdxl_malloc(c->entry_cap);
    if (!c->entry) return oom(c, c->entry_cap);
    memcpy(c->entry, pkl_name, c->prefix_len);
    c->entry[c->prefix_len] = '\0';

    /* byte order: absent means little (files before it existed) */
    entry_name(c, "byteorder", "");
    zip_int64_t bo = zip_name_locate(c->za, c->entry, ZIP_FL_ENC_RAW);
    if (bo >= 0) {
        uint8_t *b;
        size_t bl;
        TRY(zip_read(c, (zip_uint64_t)bo, c->entry, UINT64_MAX, 16, &b, &bl));
        bool little = bl == 6 && !memcmp(b, "little", 6), big = bl == 3 && !memcmp(b, "big", 3);
        sdxl_free(b);
        c->budget += bl;
        if (big) return fail(c, SDXL_STATUS_UNSUPPORTED, "big-endian torch files are not supported");
        if (!little) return BAD("entry %s is neither \"little\" nor \"big\"", quote(c->entry).s);
    }

    /* index the data entries by key */
    size_t cap = 0;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *nm = zip_get_name(c->za, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        if (!nm || strncmp(nm, pkl_name, c->prefix_len) || strncmp(nm + c->prefix_len, "/data/", 6) ||
            !nm[c->prefix_len + 6])
            continue;
        if (c->n_zents == cap) {
            cap = cap ? 2 * cap : 256;
            tf_zent *q = sdxl_realloc(c->zents, cap * sizeof *q);
            if (!q) return oom(c, cap * sizeof *q);
            c->zents = q;
        }
        c->zents[c->n_zents].key = nm + c->prefix_len + 6;
        c->zents[c->n_zents].index = (zip_uint64_t)i;
        c->n_zents++;
    }
    if (c->n_zents) qsort(c->zents, c->n_zents, sizeof *c->zents, cmp_zent);
    for (size_t i = 1; i < c->n_zents; i++)
        if (!strcmp(c->zents[i - 1].key, c->zents[i].key))
            return BAD("two archive entries for storage %s", quote(c->zents[i].key).s);

    size_t cap_pkl = c->budget < MAX_PICKLE ? c->budget : MAX_PICKLE;
    return zip_read(c, pkl_idx, pkl_name, UINT64_MAX, cap_pkl, pkl, pkl_len);
}

static const tf_zent *find_zent(tf_ctx *c, const char *key) {
    size_t lo = 0, hi = c->n_zents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(key, c->zents[mid].key);
        if (r == 0) return &c->zents[mid];
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- legacy ------------------------------------------------------------- */

/* The four pickles before the storages' bytes; *root gets the object's
 * pickle, c->pk the key list's. Sets c->st[].data. */
static sdxl_status legacy_read(tf_ctx *c, sdxl_pickle **main) {
    size_t pos = 0, used;
    sdxl_pickle *p = NULL;

    /* magic number */
    sdxl_status st = run_pickle(c, c->buf, c->len, 0, "magic number", &p, &used);
    if (st != SDXL_STATUS_OK) {
        sdxl_error_prefix(c->err, "%s: neither a zip archive nor a legacy torch.save file", c->path);
        return st;
    }
    size_t ml;
    const char *m = sdxl_pickle_str(p, sdxl_pickle_root(p), &ml);
    bool magic_ok = sdxl_pickle_kind(p, sdxl_pickle_root(p)) == SDXL_PK_BIGINT && ml == sizeof legacy_magic &&
                    !memcmp(m, legacy_magic, ml);
    sdxl_pickle_free(p);
    if (!magic_ok) return BAD("the first pickle is not torch's magic number: not a torch.save file");
    pos += used;

    /* protocol version */
    TRY(run_pickle(c, c->buf + pos, c->len - pos, pos, "protocol version", &p, &used));
    bool proto_ok = sdxl_pickle_kind(p, sdxl_pickle_root(p)) == SDXL_PK_INT &&
                    sdxl_pickle_int(p, sdxl_pickle_root(p)) == LEGACY_PROTOCOL;
    long long proto = sdxl_pickle_int(p, sdxl_pickle_root(p));
    sdxl_pickle_free(p);
    if (!proto_ok) return BAD("legacy protocol version %lld, expected %d", proto, LEGACY_PROTOCOL);
    pos += used;

    /* sys_info: only the byte order matters (sizes of C types do not: the
     * storages' counts are int64) */
    TRY(run_pickle(c, c->buf + pos, c->len - pos, pos, "sys_info", &p, &used));
    sdxl_pk_ref info = sdxl_pickle_root(p);
    bool big = false;
    for (size_t i = 0; i < sdxl_pickle_len(p, info); i++) {
        sdxl_pk_ref k, v;
        if (sdxl_pickle_dict_entry(p, info, i, &k, &v) && sdxl_pickle_kind(p, k) == SDXL_PK_STR &&
            !strcmp(sdxl_pickle_str(p, k, NULL), "little_endian") && sdxl_pickle_kind(p, v) == SDXL_PK_BOOL &&
            !sdxl_pickle_bool(p, v))
            big = true;
    }
    sdxl_pickle_free(p);
    if (big) return fail(c, SDXL_STATUS_UNSUPPORTED, "big-endian torch files are not supported");
    pos += used;

    /* the object */
    TRY(run_pickle(c, c->buf + pos, c->len - pos, pos, "main pickle", main, &used));
    pos += used;

    /* storage keys, in the order of their bytes */
    TRY(run_pickle(c, c->buf + pos, c->len - pos, pos, "storage keys", &p, &used));
    pos += used;
    c->pk = *main; /* build_storages reads the object's pickle */
    st = build_storages(c);
    sdxl_pk_ref keys = sdxl_pickle_root(p);
    sdxl_pk_kind kk = sdxl_pickle_kind(p, keys);
    if (st == SDXL_STATUS_OK && kk != SDXL_PK_LIST && kk != SDXL_PK_TUPLE)
        st = BAD("the storage key list is a %s", sdxl_pickle_kind_name(kk));
    for (size_t i = 0; st == SDXL_STATUS_OK && i < sdxl_pickle_len(p, keys); i++) {
        sdxl_pk_ref kr = sdxl_pickle_item(p, keys, i);
        if (sdxl_pickle_kind(p, kr) != SDXL_PK_STR) {
            st = BAD("storage key %zu is a %s, not a string", i,
                     sdxl_pickle_kind_name(sdxl_pickle_kind(p, kr)));
            break;
        }
        const char *key = sdxl_pickle_str(p, kr, NULL);
        tf_storage *s = find_storage(c, key);
        if (!s) {
            st = BAD("storage key %s is listed but no tensor uses it", quote(key).s);
            break;
        }
        if (s->has_data) {
            st = BAD("storage key %s is listed twice", quote(key).s);
            break;
        }
        if (c->len - pos < 8) {
            st = BAD("file byte %zu: storage %s: the element count is cut off (truncated file?)", pos,
                     quote(key).s);
            break;
        }
        uint64_t numel = 0;
        for (int b = 7; b >= 0; b--)
            numel = (numel << 8) | c->buf[pos + (size_t)b];
        if (numel != s->numel) {
            st = BAD("file byte %zu: storage %s holds %llu elements but the pickle declares %llu", pos,
                     quote(key).s, (unsigned long long)numel, (unsigned long long)s->numel);
            break;
        }
        pos += 8;
        if (s->nbytes > c->len - pos) {
            st = BAD("file byte %zu: storage %s needs %llu bytes but only %zu remain (truncated file?)", pos,
                     quote(key).s, (unsigned long long)s->nbytes, c->len - pos);
            break;
        }
        s->data = c->buf + pos;
        s->has_data = true;
        pos += (size_t)s->nbytes;
    }
    sdxl_pickle_free(p);
    if (st == SDXL_STATUS_OK && pos < c->len)
        SDXL_LOG_D("%s: %zu bytes after the last storage are ignored", c->path, c->len - pos);
    return st;
}

/* ---- assembling the result ---------------------------------------------- */

static int cmp_tensor_name(const void *pa, const void *pb) {
    return strcmp((*(const sdxl_st_tensor *const *)pa)->name, (*(const sdxl_st_tensor *const *)pb)->name);
}

static int cmp_kv_key(const void *pa, const void *pb) {
    return strcmp((*(const tf_kv *const *)pa)->key, (*(const tf_kv *const *)pb)->key);
}

typedef struct tf_job {
    size_t tensor;  /* index into f->tensors */
    size_t storage; /* index into c->st */
    sdxl_pk_ref ref;
} tf_job;

static int cmp_job(const void *pa, const void *pb) {
    const tf_job *a = pa, *b = pb;
    if (a->storage != b->storage) return a->storage < b->storage ? -1 : 1;
    return a->tensor < b->tensor ? -1 : a->tensor > b->tensor;
}

static void *alloc_table(tf_ctx *c, sdxl_torch_file *f, size_t n, size_t each, sdxl_status *st) {
    size_t bytes;
    if (__builtin_mul_overflow(n ? n : 1, each, &bytes)) {
        *st = oom(c, SIZE_MAX);
        return NULL;
    }
    void *p = sdxl_malloc(bytes);
    if (!p) {
        *st = oom(c, bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    f->bytes += bytes;
    return p;
}

static sdxl_status assemble(tf_ctx *c, sdxl_torch_file *f) {
    sdxl_status st = SDXL_STATUS_OK;
    size_t nt = 0, nm = 0, nnum = 0, njobs = 0;
    for (size_t i = 0; i < c->n_entries; i++) {
        uint8_t k = c->entries[i].kind;
        if (k == E_STR)
            nm++;
        else
            nt++;
        if (k == E_FLOAT || k == E_INT) nnum++;
        if (k == E_TENSOR) njobs++;
    }
    f->n_ignored = c->n_ignored;
    /* names: the file keeps the walk's buffer, trimmed */
    if (c->names && c->names_len < c->names_cap) {
        char *q = sdxl_realloc(c->names, c->names_len);
        if (!q) return oom(c, c->names_len);
        c->names = q;
        c->names_cap = c->names_len;
    }
    f->names = c->names;
    c->names = NULL;
    f->bytes += c->names_cap;
    if (!(f->tensors = alloc_table(c, f, nt, sizeof *f->tensors, &st))) return st;
    if (!(f->by_name = alloc_table(c, f, nt, sizeof *f->by_name, &st))) return st;
    if (!(f->blocks = alloc_table(c, f, nt, sizeof *f->blocks, &st))) return st;
    if (!(f->meta = alloc_table(c, f, nm, sizeof *f->meta, &st))) return st;
    if (!(f->meta_by_key = alloc_table(c, f, nm, sizeof *f->meta_by_key, &st))) return st;
    f->n_tensors = nt;
    f->n_meta = nm;
    if (nnum) {
        TRY(charge(c, nnum * 64, "numbers"));
        if (!(f->scalars = alloc_table(c, f, nnum, 64, &st))) return st;
    }
    tf_job *jobs = njobs ? sdxl_malloc(njobs * sizeof *jobs) : NULL;
    if (njobs && !jobs) return oom(c, njobs * sizeof *jobs);

    size_t ti = 0, mi = 0, si = 0, ji = 0;
    for (size_t i = 0; i < c->n_entries && st == SDXL_STATUS_OK; i++) {
        const tf_entry *e = &c->entries[i];
        if (e->kind == E_STR) {
            f->meta[mi].key = f->names + e->name;
            f->meta[mi].value = f->names + e->value;
            f->meta_by_key[mi] = &f->meta[mi];
            mi++;
            continue;
        }
        sdxl_st_tensor *t = &f->tensors[ti];
        t->name = f->names + e->name;
        f->by_name[ti] = t;
        if (e->kind == E_TENSOR) {
            const sdxl_pk_tensor *pt = sdxl_pickle_tensor(c->pk, e->ref);
            const char *key = sdxl_pickle_storage(c->pk, pt->storage)->key;
            tf_storage *s = find_storage(c, key);
            jobs[ji++] = (tf_job){ti, (size_t)(s - c->st), e->ref};
        } else {
            uint8_t *slot = f->scalars + 64 * si++;
            if (e->kind == E_FLOAT) {
                double v = sdxl_pickle_float(c->pk, e->ref);
                memcpy(slot, &v, 8);
                t->dtype = SDXL_ST_F64;
            } else {
                int64_t v = sdxl_pickle_int(c->pk, e->ref);
                memcpy(slot, &v, 8);
                t->dtype = SDXL_ST_I64;
            }
            t->ndim = 0;
            t->data = slot;
            t->nbytes = 8;
        }
        ti++;
    }

    /* tensors, one storage at a time */
    if (njobs) qsort(jobs, njobs, sizeof *jobs, cmp_job);
    for (size_t g = 0; g < njobs && st == SDXL_STATUS_OK;) {
        size_t end = g;
        while (end < njobs && jobs[end].storage == jobs[g].storage)
            end++;
        const tf_storage *s = &c->st[jobs[g].storage];
        const uint8_t *sdata = NULL;
        uint8_t *own = NULL;
        if (c->legacy) {
            if (!s->has_data)
                st = BAD("storage %s is not in the storage key list: its bytes are missing", quote(s->key).s);
            sdata = s->data;
        } else {
            const tf_zent *z = find_zent(c, s->key);
            entry_name(c, "data/", s->key);
            if (!z) {
                st = BAD("storage %s has no archive entry %s", quote(s->key).s, quote(c->entry).s);
            } else {
                st = zip_read(c, z->index, c->entry, s->nbytes, SIZE_MAX, &own, NULL);
                sdata = own;
            }
        }
        void *adopt = own;
        for (size_t j = g; j < end && st == SDXL_STATUS_OK; j++)
            st = materialize(c, f, jobs[j].tensor, sdxl_pickle_tensor(c->pk, jobs[j].ref), s, sdata,
                             end - g == 1 ? &adopt : NULL);
        if (own) {
            if (adopt) { /* not taken over: give its bytes back to the budget */
                sdxl_free(own);
                c->budget += (size_t)s->nbytes;
            } else {
                f->bytes += (size_t)s->nbytes;
            }
        }
        g = end;
    }
    sdxl_free(jobs);
    if (st != SDXL_STATUS_OK) return st;

    qsort(f->by_name, nt, sizeof *f->by_name, cmp_tensor_name);
    for (size_t i = 1; i < nt; i++)
        if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name))
            return BAD("two values are named %s after flattening", quote(f->by_name[i]->name).s);
    qsort(f->meta_by_key, nm, sizeof *f->meta_by_key, cmp_kv_key);
    for (size_t i = 1; i < nm; i++)
        if (!strcmp(f->meta_by_key[i - 1]->key, f->meta_by_key[i]->key))
            return BAD("two strings are named %s after flattening", quote(f->meta_by_key[i]->key).s);
    return SDXL_STATUS_OK;
}

/* ---- the whole reader ---------------------------------------------------- */

static sdxl_status parse_impl(const uint8_t *buf, size_t len, const char *path, sdxl_torch_file **out,
                              sdxl_error *err) {
    tf_ctx c_ = {.path = path, .buf = buf, .len = len, .err = err};
    tf_ctx *c = &c_;
    size_t budget;
    if (__builtin_mul_overflow(len, (size_t)SDXL_TORCH_EXPANSION_FACTOR, &budget) ||
        __builtin_add_overflow(budget, SDXL_TORCH_EXPANSION_SLACK, &budget))
        budget = SIZE_MAX;
    c->budget = budget;

    sdxl_status st;
    sdxl_torch_file *f = sdxl_malloc(sizeof *f);
    if (!f) return oom(c, sizeof *f);
    memset(f, 0, sizeof *f);
    f->bytes = sizeof *f;
    sdxl_pickle *main_pk = NULL;
    uint8_t *pkl = NULL;
    size_t pkl_len = 0;

    if (len == 0) {
        st = BAD("the file is empty");
        goto done;
    }
    c->legacy = !(len >= 4 && !memcmp(buf, "PK\x03\x04", 4));
    f->legacy = c->legacy;
    if (c->legacy) {
        st = legacy_read(c, &main_pk);
        c->pk = main_pk;
    } else {
        st = zip_open_archive(c, &pkl, &pkl_len);
        if (st == SDXL_STATUS_OK) {
            entry_name(c, "data.pkl", "");
            st = run_pickle(c, pkl, pkl_len, 0, c->entry, &main_pk, NULL);
        }
        if (pkl) { /* the pickle's bytes are not kept */
            sdxl_free(pkl);
            c->budget += pkl_len;
        }
        c->pk = main_pk;
        if (st == SDXL_STATUS_OK) st = build_storages(c);
    }
    if (st != SDXL_STATUS_OK) goto done;

    sdxl_pk_ref root = sdxl_pickle_root(main_pk);
    sdxl_pk_kind rk = sdxl_pickle_kind(main_pk, root);
    if (rk != SDXL_PK_DICT) {
        st = BAD("the saved object is a %s, not a dict of tensors", sdxl_pickle_kind_name(rk));
        goto done;
    }
    size_t items = sdxl_pickle_item_count(main_pk);
    c->max_visits = items > (SIZE_MAX - 4096) / 8 ? SIZE_MAX : 8 * items + 4096;
    st = walk(c, root, 0, 0);
    if (st == SDXL_STATUS_OK) st = assemble(c, f);

done:
    if (c->za) zip_discard(c->za);
    sdxl_pickle_free(main_pk);
    sdxl_free(c->entry);
    sdxl_free(c->zents);
    sdxl_free(c->entries);
    sdxl_free(c->names);
    sdxl_free(c->st);
    if (st != SDXL_STATUS_OK) {
        sdxl_torch_close(f);
        return st;
    }
    *out = f;
    return SDXL_STATUS_OK;
}

/* ---- public API --------------------------------------------------------- */

sdxl_status sdxl_torch_parse(const void *buf, size_t len, sdxl_torch_file **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_torch_parse: out is NULL");
    *out = NULL;
    if (!buf && len) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_torch_parse: buf is NULL");
    return parse_impl(buf ? buf : (const uint8_t *)"", len, MEMORY_PATH, out, err);
}

sdxl_status sdxl_torch_open(const char *path, sdxl_torch_file **out, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_torch_open: out is NULL");
    *out = NULL;
    if (!path) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_torch_open: path is NULL");
    /* O_NONBLOCK: a FIFO must not hang the open; it is refused below */
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
    if (len == 0) {
        close(fd);
        return parse_impl((const uint8_t *)"", 0, path, out, err);
    }
    void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return sdxl_error_set(err, SDXL_STATUS_IO, "%s: cannot map %zu bytes: %s", path, len, strerror(e));
    sdxl__mem_track_mapped((int64_t)len);
    sdxl_status st = parse_impl(m, len, path, out, err);
    munmap(m, len);
    sdxl__mem_track_mapped(-(int64_t)len);
    return st;
}

void sdxl_torch_close(sdxl_torch_file *f) {
    if (!f) return;
    if (f->blocks)
        for (size_t i = 0; i < f->n_tensors; i++)
            sdxl_free(f->blocks[i]);
    sdxl_free(f->blocks);
    sdxl_free(f->tensors);
    sdxl_free(f->by_name);
    sdxl_free(f->meta);
    sdxl_free(f->meta_by_key);
    sdxl_free(f->names);
    sdxl_free(f->scalars);
    sdxl_free(f);
}

size_t sdxl_torch_count(const sdxl_torch_file *f) {
    return f ? f->n_tensors : 0;
}

const sdxl_st_tensor *sdxl_torch_at(const sdxl_torch_file *f, size_t i) {
    return f && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const sdxl_st_tensor *sdxl_torch_find(const sdxl_torch_file *f, const char *name) {
    return f && name ? sdxl__st_find_sorted(f->by_name, f->n_tensors, name) : NULL;
}

size_t sdxl_torch_metadata_count(const sdxl_torch_file *f) {
    return f ? f->n_meta : 0;
}

bool sdxl_torch_metadata_at(const sdxl_torch_file *f, size_t i, const char **key, const char **value) {
    if (!f || i >= f->n_meta) return false;
    if (key) *key = f->meta[i].key;
    if (value) *value = f->meta[i].value;
    return true;
}

const char *sdxl_torch_metadata(const sdxl_torch_file *f, const char *key) {
    return f && key ? sdxl__st_kv_find_sorted(f->meta_by_key, f->n_meta, key) : NULL;
}

size_t sdxl_torch_ignored_count(const sdxl_torch_file *f) {
    return f ? f->n_ignored : 0;
}

bool sdxl_torch_is_legacy(const sdxl_torch_file *f) {
    return f && f->legacy;
}

size_t sdxl_torch_bytes(const sdxl_torch_file *f) {
    return f ? f->bytes : 0;
}
