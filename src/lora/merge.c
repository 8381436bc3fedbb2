/* merge.c - the current adapter set of a model, merged and restored exactly
 * (see merge.h). */
#include "lora/merge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/threadpool.h"

/* One adapter module's contribution to one weight. */
typedef struct contrib {
    uint64_t adapter; /* sdxl_lora_adapter_id */
    uint32_t module;  /* index in the adapter */
    uint32_t slot;    /* position in the apply set (for this call only) */
    float strength;
    uint32_t entry;   /* weight index (for sorting) */
    bool bias;        /* the module's bias delta (else its weight delta) */
} contrib;

typedef struct held {
    contrib *list; /* sorted: the current contributions */
    uint32_t n;
    void *buf; /* merged data installed in the store, or NULL */
    size_t bytes;
} held;

struct sdxl_lora_merger {
    sdxl_weights *w;
    sdxl_backend *be;
    sdxl_threadpool *pool; /* the f32 accumulation and the rounding */
    /* f32 scratch of the largest weight merged by the current apply (reused
     * from weight to weight: fresh pages cost more than the math) */
    float *acc, *tmp, *base;
    size_t scratch_n, base_n;
    size_t n_entries;
    held *h;
    size_t n_held;
    size_t bytes;
};

sdxl_status sdxl_lora_merger_create(sdxl_weights *w, sdxl_backend *be, sdxl_lora_merger **out, sdxl_error *err) {
    if (!out || !w || !be) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora merger: NULL argument");
    *out = NULL;
    sdxl_lora_merger *m = sdxl_calloc(1, sizeof *m);
    if (!m) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora merger: out of memory");
    m->w = w;
    m->be = be;
    m->n_entries = sdxl_weights_count(w);
    m->h = sdxl_calloc(m->n_entries ? m->n_entries : 1, sizeof *m->h);
    m->pool = sdxl_threadpool_create(be->n_threads);
    if (!m->h || !m->pool) {
        sdxl_threadpool_free(m->pool);
        sdxl_free(m->h);
        sdxl_free(m);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora merger: out of memory");
    }
    *out = m;
    return SDXL_STATUS_OK;
}

static void restore_entry(sdxl_lora_merger *m, size_t e) {
    held *h = &m->h[e];
    if (h->buf) {
        /* cannot fail: valid index, NULL data */
        sdxl_weights_set_data(m->w, e, NULL, NULL);
        sdxl_free(h->buf);
        m->bytes -= h->bytes;
        m->n_held--;
    }
    sdxl_free(h->list);
    memset(h, 0, sizeof *h);
}

void sdxl_lora_merger_restore(sdxl_lora_merger *m, sdxl_lora_merge_stats *stats) {
    double t0 = sdxl_now_s();
    size_t restored = 0;
    for (size_t e = 0; m && e < m->n_entries; e++) {
        if (m->h[e].buf) restored++;
        restore_entry(m, e);
    }
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->restored = restored;
        stats->ms = sdxl_ms_since(t0);
    }
}

void sdxl_lora_merger_free(sdxl_lora_merger *m) {
    if (!m) return;
    sdxl_lora_merger_restore(m, NULL);
    sdxl_threadpool_free(m->pool);
    sdxl_free(m->h);
    sdxl_free(m);
}

size_t sdxl_lora_merger_held(const sdxl_lora_merger *m) { return m ? m->n_held : 0; }
size_t sdxl_lora_merger_bytes(const sdxl_lora_merger *m) { return m ? m->bytes : 0; }

static int contrib_cmp(const void *a, const void *b) {
    const contrib *x = a, *y = b;
    if (x->entry != y->entry) return x->entry < y->entry ? -1 : 1;
    if (x->slot != y->slot) return x->slot < y->slot ? -1 : 1;
    if (x->module != y->module) return x->module < y->module ? -1 : 1;
    return 0;
}

static bool same_list(const contrib *a, uint32_t na, const contrib *b, uint32_t nb) {
    if (na != nb) return false;
    for (uint32_t i = 0; i < na; i++)
        if (a[i].adapter != b[i].adapter || a[i].module != b[i].module || a[i].bias != b[i].bias ||
            memcmp(&a[i].strength, &b[i].strength, sizeof(float)) != 0)
            return false;
    return true;
}

/* A computed replacement for entry e, not yet installed. */
typedef struct pending {
    size_t entry;
    contrib *list;
    uint32_t n;
    void *buf;
    size_t bytes;
} pending;

static void scratch_free(sdxl_lora_merger *m) {
    sdxl_free(m->acc);
    sdxl_free(m->tmp);
    sdxl_free(m->base);
    m->acc = m->tmp = m->base = NULL;
    m->scratch_n = m->base_n = 0;
}

/* acc and tmp for n floats (base, for DoRA, on demand). */
static bool scratch_reserve(sdxl_lora_merger *m, size_t n, bool base) {
    if (n > m->scratch_n) {
        sdxl_free(m->acc);
        sdxl_free(m->tmp);
        m->acc = sdxl_malloc(n * sizeof(float));
        m->tmp = sdxl_malloc(n * sizeof(float));
        m->scratch_n = m->acc && m->tmp ? n : 0;
        if (!m->scratch_n) return false;
    }
    if (base && n > m->base_n) {
        sdxl_free(m->base);
        m->base = sdxl_malloc(n * sizeof(float));
        m->base_n = m->base ? n : 0;
        if (!m->base) return false;
    }
    return true;
}

typedef struct axpy_ctx {
    float *acc;
    const float *x;
    float s;
} axpy_ctx;

static void axpy_chunk(void *ctx, size_t b, size_t e, int t) {
    (void)t;
    axpy_ctx *c = ctx;
    float *restrict acc = c->acc;
    const float *restrict x = c->x;
    const float s = c->s;
    for (size_t k = b; k < e; k++) acc[k] += s * x[k];
}

typedef struct round_ctx {
    const float *src;
    void *dst;
    sdxl_dtype dt;
} round_ctx;

static void round_chunk(void *ctx, size_t b, size_t e, int t) {
    (void)t;
    round_ctx *c = ctx;
    sdxl_convert_n(c->src + b, SDXL_DTYPE_F32, (char *)c->dst + b * sdxl_dtype_size(c->dt), c->dt, e - b);
}

#define LOOP_GRAIN ((size_t)1 << 16)

typedef struct read_ctx {
    const sdxl_weights *w;
    size_t entry;
    float *dst;
} read_ctx;

static void read_chunk(void *ctx, size_t b, size_t e, int t) {
    (void)t;
    read_ctx *c = ctx;
    /* cannot fail: valid entry and range */
    sdxl_weights_read_original_range(c->w, c->entry, b, e - b, c->dst + b, SDXL_DTYPE_F32, NULL);
}

/* Merge the contributions c[0..n) of entry e into `dst` (its held buffer,
 * overwritten only by the final rounding), or into a new buffer when dst is
 * NULL (out->buf). */
static sdxl_status merge_entry(sdxl_lora_merger *m, const sdxl_lora_apply *set, size_t e, const contrib *c,
                               uint32_t n, void *dst, pending *out, sdxl_error *err) {
    const sdxl_weight *wt = sdxl_weights_at(m->w, e);
    const sdxl_tensor *t = &wt->tensor;
    size_t ne = (size_t)sdxl_tensor_nelem(t);
    size_t esz = sdxl_dtype_size(t->dtype);
    bool need_base = false;
    for (uint32_t i = 0; i < n; i++) {
        const sdxl_lora_module *lm = sdxl_lora_adapter_module(set[c[i].slot].adapter, c[i].module);
        if (!c[i].bias && lm->dora) need_base = true;
    }
    void *buf = dst ? dst : sdxl_malloc(ne * esz);
    if (buf && !dst) sdxl_advise_huge(buf, ne * esz);
    if (!buf || !scratch_reserve(m, ne, need_base)) {
        if (!dst) sdxl_free(buf);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora merge: out of memory for %s (%zu elements)",
                              wt->entry->name, ne);
    }
    float *acc = m->acc, *tmp = m->tmp, *base = need_base ? m->base : NULL;
    sdxl_status st = SDXL_STATUS_OK;
    read_ctx rd = {m->w, e, acc}; /* the original, re-derived from the mapped file */
    sdxl_threadpool_parallel_for(m->pool, ne, LOOP_GRAIN, read_chunk, &rd);
    if (base) memcpy(base, acc, ne * sizeof *base);
    for (uint32_t i = 0; i < n; i++) {
        const sdxl_lora_adapter *a = set[c[i].slot].adapter;
        st = c[i].bias ? sdxl_lora_module_delta(m->be, a, c[i].module, NULL, NULL, tmp, err)
                       : sdxl_lora_module_delta(m->be, a, c[i].module, base, tmp, NULL, err);
        if (st) {
            sdxl_error_prefix(err, "%s (%s)", sdxl_lora_adapter_label(a), wt->entry->name);
            goto fail;
        }
        axpy_ctx ax = {acc, tmp, c[i].strength};
        sdxl_threadpool_parallel_for(m->pool, ne, LOOP_GRAIN, axpy_chunk, &ax);
    }
    round_ctx rc = {acc, buf, t->dtype};
    sdxl_threadpool_parallel_for(m->pool, ne, LOOP_GRAIN, round_chunk, &rc);
    out->entry = e;
    out->buf = buf;
    out->bytes = ne * esz;
    return SDXL_STATUS_OK;
fail:
    if (!dst) sdxl_free(buf);
    return st;
}

sdxl_status sdxl_lora_merger_apply(sdxl_lora_merger *m, const sdxl_lora_apply *set, size_t n, float global,
                                   sdxl_lora_merge_stats *stats, sdxl_error *err) {
    if (!m || (n && !set)) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora merge: NULL argument");
    if (!isfinite(global)) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora merge: global weight is not finite");
    double t0 = sdxl_now_s();
    const sdxl_naming *naming = sdxl_weights_naming(m->w);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!set[i].adapter) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora merge: entry %zu has no adapter", i);
        if (sdxl_lora_adapter_naming(set[i].adapter) != naming)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora merge: %s was loaded for another model",
                                  sdxl_lora_adapter_label(set[i].adapter));
        if (!isfinite(set[i].unet_weight) || !isfinite(set[i].te_weight))
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora merge: %s has a non-finite weight",
                                  sdxl_lora_adapter_label(set[i].adapter));
        total += 2 * sdxl_lora_adapter_module_count(set[i].adapter);
    }
    /* the desired contributions, sorted by entry */
    contrib *want = sdxl_malloc((total ? total : 1) * sizeof *want);
    if (!want) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora merge: out of memory");
    size_t nw = 0;
    for (size_t i = 0; i < n; i++) {
        const sdxl_lora_adapter *a = set[i].adapter;
        for (size_t j = 0; j < sdxl_lora_adapter_module_count(a); j++) {
            const sdxl_lora_module *lm = sdxl_lora_adapter_module(a, j);
            float s = (lm->module->comp == SDXL_COMP_UNET ? set[i].unet_weight : set[i].te_weight) * global;
            if (s == 0.0f) continue;
            contrib c = {sdxl_lora_adapter_id(a), (uint32_t)j, (uint32_t)i, s, 0, false};
            if (lm->weight_delta) {
                c.entry = (uint32_t)lm->module->weight;
                want[nw++] = c;
            }
            if (lm->bias_delta) {
                c.entry = (uint32_t)lm->module->bias;
                c.bias = true;
                want[nw++] = c;
            }
        }
    }
    qsort(want, nw, sizeof *want, contrib_cmp);

    /* scratch sized once, for the largest wanted weight */
    size_t mx = 0;
    for (size_t i = 0; i < nw; i++) {
        size_t ne = (size_t)sdxl_tensor_nelem(&sdxl_weights_at(m->w, want[i].entry)->tensor);
        if (ne > mx) mx = ne;
    }
    if (nw && !scratch_reserve(m, mx, false)) {
        sdxl_free(want);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora merge: out of memory (scratch of %zu floats)", mx);
    }
    /* phase 1 (all or nothing): weights not overridden yet get new buffers */
    pending *pend = NULL;
    size_t np = 0, cap = 0, kept = 0, extra = 0, peak = 0, inplace = 0;
    sdxl_status st = SDXL_STATUS_OK;
    for (size_t i = 0; i < nw && !st;) {
        size_t j = i;
        while (j < nw && want[j].entry == want[i].entry) j++;
        size_t e = want[i].entry;
        uint32_t cnt = (uint32_t)(j - i);
        const contrib *list = want + i;
        i = j;
        if (same_list(m->h[e].list, m->h[e].n, list, cnt)) {
            kept++;
            continue;
        }
        if (m->h[e].buf) { /* phase 2 */
            inplace++;
            continue;
        }
        if (np == cap) {
            size_t nc = cap ? 2 * cap : 64;
            pending *p2 = sdxl_realloc(pend, nc * sizeof *p2);
            if (!p2) {
                st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora merge: out of memory");
                break;
            }
            pend = p2;
            cap = nc;
        }
        pending *p = &pend[np];
        memset(p, 0, sizeof *p);
        if (!(p->list = sdxl_malloc(cnt * sizeof *p->list))) {
            st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora merge: out of memory");
            break;
        }
        memcpy(p->list, list, cnt * sizeof *p->list);
        p->n = cnt;
        if ((st = merge_entry(m, set, e, list, cnt, NULL, p, err))) {
            sdxl_free(p->list);
            break;
        }
        np++;
        extra += p->bytes;
        size_t scratch = (2 * m->scratch_n + m->base_n) * sizeof(float);
        if (extra + scratch > peak) peak = extra + scratch;
    }
    if (st) {
        scratch_free(m);
        for (size_t q = 0; q < np; q++) {
            sdxl_free(pend[q].list);
            sdxl_free(pend[q].buf);
        }
        sdxl_free(pend);
        sdxl_free(want);
        return st;
    }
    /* install phase 1 (cannot fail); restore what is no longer wanted */
    size_t restored = 0;
    for (size_t e = 0, wi = 0; e < m->n_entries; e++) {
        while (wi < nw && want[wi].entry < e) wi++;
        if (!(wi < nw && want[wi].entry == e) && m->h[e].buf) {
            restore_entry(m, e);
            restored++;
        }
    }
    for (size_t q = 0; q < np; q++) {
        pending *p = &pend[q];
        held *h = &m->h[p->entry];
        sdxl_free(h->list);
        /* valid index, aligned sdxl_malloc buffer: cannot fail */
        sdxl_weights_set_data(m->w, p->entry, p->buf, NULL);
        h->buf = p->buf;
        h->bytes = p->bytes;
        h->list = p->list;
        h->n = p->n;
        m->bytes += p->bytes;
        m->n_held++;
    }
    sdxl_free(pend);
    /* phase 2: weights already overridden are re-merged in place (no second
     * copy of every merged weight at once). A failure here (out of memory)
     * would leave a mix of the old and new sets, so it restores everything:
     * the model is back to its base weights, never half-applied. */
    size_t done2 = 0;
    for (size_t i = 0; i < nw && inplace;) {
        size_t j = i;
        while (j < nw && want[j].entry == want[i].entry) j++;
        size_t e = want[i].entry;
        uint32_t cnt = (uint32_t)(j - i);
        const contrib *list = want + i;
        i = j;
        held *h = &m->h[e];
        if (!h->buf || same_list(h->list, h->n, list, cnt)) continue;
        pending p = {0};
        contrib *nl = sdxl_malloc(cnt * sizeof *nl);
        if (!nl) st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora merge: out of memory");
        else st = merge_entry(m, set, e, list, cnt, h->buf, &p, err);
        if (st) {
            sdxl_free(nl);
            sdxl_lora_merger_restore(m, NULL);
            sdxl_error_prefix(err, "every adapter was removed, the model is back to its base weights");
            break;
        }
        memcpy(nl, list, cnt * sizeof *nl);
        sdxl_free(h->list);
        h->list = nl;
        h->n = cnt;
        done2++;
        size_t scratch = (2 * m->scratch_n + m->base_n) * sizeof(float);
        if (extra + scratch > peak) peak = extra + scratch;
    }
    scratch_free(m);
    sdxl_free(want);
    np += done2;
    if (stats) {
        stats->merged = np;
        stats->restored = restored;
        stats->kept = kept;
        stats->held = m->n_held;
        stats->bytes = m->bytes;
        stats->peak_extra_bytes = peak;
        stats->ms = sdxl_ms_since(t0);
    }
    SDXL_LOG_D("lora merge: %zu merged, %zu restored, %zu kept, %zu held (%.1f MiB)", np, restored, kept,
                   m->n_held, (double)m->bytes / 1048576.0);
    return st;
}
