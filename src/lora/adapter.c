/* adapter.c - LoRA-family adapter files: key layouts, part shapes, deltas.
 * The formulas and the layouts are documented in adapter.h. */
#include "lora/adapter.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "io/file.h"
#include "io/tensorfile.h"

/* ---- parts ----------------------------------------------------------------- */

typedef enum part {
    P_DOWN = 0, P_UP, P_MID, P_ALPHA,
    P_HW1A, P_HW1B, P_HW2A, P_HW2B, P_HT1, P_HT2,
    P_KW1, P_KW1A, P_KW1B, P_KW2, P_KW2A, P_KW2B, P_KT2,
    P_DORA, P_DIFF, P_DIFF_B, P_WNORM, P_BNORM,
    P_MAG, /* PEFT's lora_magnitude_vector: DoRA, always per output row */
    P_COUNT_
} part;

static const char *const part_names[P_COUNT_] = {
    "lora_down", "lora_up", "lora_mid", "alpha",
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
    "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
    "dora_scale", "diff", "diff_b", "w_norm", "b_norm", "lora_magnitude_vector",
};

/* Suffixes after the module key, longest match wins (checked in order). */
static const struct { const char *suffix; part p; } suffixes[] = {
    {".lora_linear_layer.down.weight", P_DOWN},
    {".lora_linear_layer.up.weight", P_UP},
    {".lora_magnitude_vector.weight", P_MAG},
    {".lora_down.weight", P_DOWN},
    {".lora_up.weight", P_UP},
    {".lora_mid.weight", P_MID},
    {".lora.down.weight", P_DOWN},
    {".lora.up.weight", P_UP},
    {".lora_A.weight", P_DOWN},
    {".lora_B.weight", P_UP},
    {".lora_magnitude_vector", P_MAG},
    {".dora_scale", P_DORA},
    {".hada_w1_a", P_HW1A}, {".hada_w1_b", P_HW1B}, {".hada_w2_a", P_HW2A}, {".hada_w2_b", P_HW2B},
    {".hada_t1", P_HT1}, {".hada_t2", P_HT2},
    {".lokr_w1_a", P_KW1A}, {".lokr_w1_b", P_KW1B}, {".lokr_w2_a", P_KW2A}, {".lokr_w2_b", P_KW2B},
    {".lokr_w1", P_KW1}, {".lokr_w2", P_KW2}, {".lokr_t2", P_KT2},
    {".diff_b", P_DIFF_B}, {".diff", P_DIFF},
    {".w_norm", P_WNORM}, {".b_norm", P_BNORM},
    {".alpha", P_ALPHA},
};

static bool ends_with(const char *s, size_t n, const char *suf) {
    size_t m = strlen(suf);
    return n >= m && memcmp(s + n - m, suf, m) == 0;
}

/* Split `key` into a module key (written to mod, NUL-terminated) and a part.
 * false: not an adapter key we know. */
static bool split_key(const char *key, char *mod, size_t modn, part *p) {
    size_t n = strlen(key);
    if (n == 0 || n >= modn) return false;
    /* Old diffusers attention processors: <path>.processor.to_q_lora.down.weight */
    const char *proc = strstr(key, ".processor.");
    if (proc) {
        const char *rest = proc + strlen(".processor.");
        static const struct { const char *s; const char *name; part p; } procs[] = {
            {"to_q_lora.down.weight", "to_q", P_DOWN},     {"to_q_lora.up.weight", "to_q", P_UP},
            {"to_k_lora.down.weight", "to_k", P_DOWN},     {"to_k_lora.up.weight", "to_k", P_UP},
            {"to_v_lora.down.weight", "to_v", P_DOWN},     {"to_v_lora.up.weight", "to_v", P_UP},
            {"to_out_lora.down.weight", "to_out.0", P_DOWN}, {"to_out_lora.up.weight", "to_out.0", P_UP},
        };
        for (size_t i = 0; i < sizeof procs / sizeof procs[0]; i++) {
            if (strcmp(rest, procs[i].s) == 0) {
                int w = snprintf(mod, modn, "%.*s.%s", (int)(proc - key), key, procs[i].name);
                if (w < 0 || (size_t)w >= modn) return false;
                *p = procs[i].p;
                return true;
            }
        }
        return false;
    }
    /* PEFT with a named adapter: <module>.lora_A.<adapter>.weight */
    static const struct { const char *mid; part p; } peft[] = {
        {".lora_A.", P_DOWN}, {".lora_B.", P_UP}, {".lora_magnitude_vector.", P_MAG}};
    for (size_t i = 0; i < 3; i++) {
        const char *at = strstr(key, peft[i].mid);
        if (!at) continue;
        const char *seg = at + strlen(peft[i].mid);
        const char *dot = strchr(seg, '.');
        if (dot && dot > seg && strcmp(dot, ".weight") == 0 && strcmp(seg, "weight") != 0) {
            memcpy(mod, key, (size_t)(at - key));
            mod[at - key] = 0;
            *p = peft[i].p;
            return at > key;
        }
    }
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        if (ends_with(key, n, suffixes[i].suffix)) {
            size_t m = n - strlen(suffixes[i].suffix);
            if (m == 0) return false;
            memcpy(mod, key, m);
            mod[m] = 0;
            *p = suffixes[i].p;
            return true;
        }
    }
    return false;
}

/* ---- the adapter ------------------------------------------------------------- */

typedef struct mod_parts {
    const sdxl_st_tensor *t[P_COUNT_];
    bool dora_per_in; /* DoRA norm per input channel (else per output row) */
} mod_parts;

typedef struct unmatched {
    char *key;
    char *why;
} unmatched;

struct sdxl_lora_adapter {
    uint64_t id;
    char *label;
    const sdxl_naming *naming;
    void *buf; /* the file's bytes while the container needs them (safetensors) */
    size_t buf_len;
    sdxl_tensorfile *tf;
    sdxl_lora_module *mods;
    mod_parts *parts;
    size_t n_mods;
    unmatched *um;
    size_t n_um, cap_um;
    size_t bytes;
};

static atomic_uint_fast64_t next_id = 1;

const char *sdxl_lora_type_name(sdxl_lora_type t) {
    switch (t) {
    case SDXL_LORA_TYPE_LORA: return "lora";
    case SDXL_LORA_TYPE_LORA_TUCKER: return "locon-tucker";
    case SDXL_LORA_TYPE_LOHA: return "loha";
    case SDXL_LORA_TYPE_LOKR: return "lokr";
    case SDXL_LORA_TYPE_FULL: return "full";
    default: return "?";
    }
}

static sdxl_status add_unmatched(sdxl_lora_adapter *a, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static sdxl_status add_unmatched(sdxl_lora_adapter *a, const char *key, const char *fmt, ...) {
    if (a->n_um == a->cap_um) {
        size_t cap = a->cap_um ? a->cap_um * 2 : 16;
        unmatched *u = sdxl_realloc(a->um, cap * sizeof *u);
        if (!u) return SDXL_STATUS_OUT_OF_MEMORY;
        a->um = u;
        a->cap_um = cap;
    }
    char why[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    unmatched *u = &a->um[a->n_um];
    u->key = sdxl_strdup(key);
    u->why = sdxl_strdup(why);
    if (!u->key || !u->why) {
        sdxl_free(u->key);
        sdxl_free(u->why);
        return SDXL_STATUS_OUT_OF_MEMORY;
    }
    a->n_um++;
    return SDXL_STATUS_OK;
}

void sdxl_lora_adapter_free(sdxl_lora_adapter *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_mods; i++) sdxl_free((char *)a->mods[i].key);
    for (size_t i = 0; i < a->n_um; i++) {
        sdxl_free(a->um[i].key);
        sdxl_free(a->um[i].why);
    }
    sdxl_free(a->um);
    sdxl_free(a->mods);
    sdxl_free(a->parts);
    sdxl_tf_close(a->tf);
    sdxl_free(a->buf);
    sdxl_free(a->label);
    sdxl_free(a);
}

/* ---- shapes ------------------------------------------------------------------ */

static int64_t nelem(const sdxl_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static const char *shape_str(const sdxl_st_tensor *t, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

/* The geometry of a module's weight: out, in, k = kh*kw. */
typedef struct geom {
    int64_t out, in, k, n;   /* n = nelem(weight) */
    int64_t bias;            /* nelem(bias), 0 if none */
    const sdxl_name_entry *w;
} geom;

static geom module_geom(const sdxl_naming *naming, const sdxl_name_module *m) {
    geom g = {0};
    g.w = sdxl_naming_at(naming, (size_t)m->weight);
    const sdxl_name_entry *e = g.w;
    g.n = 1;
    for (int i = 0; i < e->ndim; i++) g.n *= e->shape[i];
    g.out = e->shape[0];
    g.in = e->ndim >= 2 ? e->shape[1] : 1;
    g.k = e->ndim == 4 ? e->shape[2] * e->shape[3] : 1;
    if (m->bias >= 0) {
        const sdxl_name_entry *b = sdxl_naming_at(naming, (size_t)m->bias);
        g.bias = 1;
        for (int i = 0; i < b->ndim; i++) g.bias *= b->shape[i];
    }
    return g;
}

/* t is [d0, rest...] with prod(rest) == inner (ndim 2 or 4); when want4 is
 * given (ndim 4), shape[1] must be d1. */
static bool is_mat(const sdxl_st_tensor *t, int64_t d0, int64_t inner) {
    if (!t || (t->ndim != 2 && t->ndim != 4)) return false;
    if (d0 >= 0 && t->shape[0] != d0) return false;
    int64_t r = 1;
    for (int i = 1; i < t->ndim; i++) r *= t->shape[i];
    return r == inner;
}

/* [out, r] or [out, r, 1, 1] */
static bool is_up(const sdxl_st_tensor *t, int64_t out, int64_t r) {
    if (!t) return false;
    if (t->ndim == 2) return t->shape[0] == out && t->shape[1] == r;
    if (t->ndim == 4) return t->shape[0] == out && t->shape[1] == r && t->shape[2] == 1 && t->shape[3] == 1;
    return false;
}

/* Validate the parts of one module against its weight; set the module's
 * type/rank/flags. Returns NULL when usable, else why not (in buf). */
static const char *check_module(const sdxl_naming *naming, mod_parts *p, sdxl_lora_module *m,
                                float alpha_val, bool has_alpha, char *buf, size_t bn) {
    const sdxl_name_module *nm = m->module;
    geom g = module_geom(naming, nm);
    char s1[96];
    if (p->t[P_MAG] && p->t[P_DORA]) {
        snprintf(buf, bn, "both dora_scale and lora_magnitude_vector");
        return buf;
    }
    const sdxl_st_tensor *const *t = p->t;
    bool lora = t[P_DOWN] || t[P_UP] || t[P_MID];
    bool loha = t[P_HW1A] || t[P_HW1B] || t[P_HW2A] || t[P_HW2B] || t[P_HT1] || t[P_HT2];
    bool lokr = t[P_KW1] || t[P_KW1A] || t[P_KW1B] || t[P_KW2] || t[P_KW2A] || t[P_KW2B] || t[P_KT2];
    bool full = t[P_DIFF] || t[P_WNORM];
    int families = lora + loha + lokr + full;
    if (families > 1) {
        snprintf(buf, bn, "parts of different adapter types on one module");
        return buf;
    }
    for (int i = 0; i < P_COUNT_; i++) {
        if (!t[i]) continue;
        sdxl_st_dtype d = t[i]->dtype;
        if (d != SDXL_ST_F32 && d != SDXL_ST_F16 && d != SDXL_ST_BF16 && d != SDXL_ST_F64 &&
            !(i == P_ALPHA && (d == SDXL_ST_I64 || d == SDXL_ST_I32))) {
            snprintf(buf, bn, "%s has dtype %s (a float type is needed)", part_names[i], sdxl_st_dtype_name(d));
            return buf;
        }
    }
    m->has_alpha = has_alpha;
    m->dora = t[P_DORA] || t[P_MAG];
    m->bias_delta = t[P_DIFF_B] || t[P_BNORM];
    m->weight_delta = families == 1;
    if (!m->weight_delta && m->dora) {
        snprintf(buf, bn, "dora_scale without a delta");
        return buf;
    }
    if (!m->weight_delta && !m->bias_delta) {
        snprintf(buf, bn, "alpha without any adapter part");
        return buf;
    }
    if (m->bias_delta) {
        const sdxl_st_tensor *b = t[P_DIFF_B] ? t[P_DIFF_B] : t[P_BNORM];
        if (t[P_DIFF_B] && t[P_BNORM]) {
            snprintf(buf, bn, "both diff_b and b_norm");
            return buf;
        }
        if (g.bias == 0) {
            snprintf(buf, bn, "a bias delta for %s, which has no bias", nm->path);
            return buf;
        }
        if (nelem(b) != g.bias) {
            snprintf(buf, bn, "bias delta %s does not fit %s.bias [%lld]", shape_str(b, s1, sizeof s1), nm->path,
                     (long long)g.bias);
            return buf;
        }
    }
    if (!m->weight_delta) {
        m->type = SDXL_LORA_TYPE_FULL;
        return NULL;
    }
    bool matrix = nm->kind == SDXL_MODULE_LINEAR || nm->kind == SDXL_MODULE_CONV;
    char ws[96];
    {
        size_t o = (size_t)snprintf(ws, sizeof ws, "%s [", g.w->name);
        for (int i = 0; i < g.w->ndim && o < sizeof ws; i++)
            o += (size_t)snprintf(ws + o, sizeof ws - o, "%s%lld", i ? "," : "", (long long)g.w->shape[i]);
        if (o < sizeof ws) snprintf(ws + o, sizeof ws - o, "]");
    }
    if (full) {
        const sdxl_st_tensor *d = t[P_DIFF] ? t[P_DIFF] : t[P_WNORM];
        if (t[P_DIFF] && t[P_WNORM]) {
            snprintf(buf, bn, "both diff and w_norm");
            return buf;
        }
        if (nelem(d) != g.n) {
            snprintf(buf, bn, "%s %s does not fit %s", t[P_DIFF] ? "diff" : "w_norm", shape_str(d, s1, sizeof s1),
                     ws);
            return buf;
        }
        if (m->dora) {
            snprintf(buf, bn, "dora_scale on a full diff");
            return buf;
        }
        m->type = SDXL_LORA_TYPE_FULL;
        m->rank = 0;
        m->alpha = 1.0f;
        return NULL;
    }
    if (!matrix) {
        snprintf(buf, bn, "a low-rank adapter on %s, which is not a linear or conv layer", nm->path);
        return buf;
    }
    int64_t out = g.out, in = g.in, k = g.k;
    if (lora) {
        if (!t[P_DOWN] || !t[P_UP]) {
            snprintf(buf, bn, "%s without %s", t[P_DOWN] ? "lora_down" : "lora_up", t[P_DOWN] ? "lora_up" : "lora_down");
            return buf;
        }
        int64_t r = t[P_DOWN]->shape[0];
        if (t[P_DOWN]->ndim < 2 || r <= 0) {
            snprintf(buf, bn, "lora_down %s is not a matrix", shape_str(t[P_DOWN], s1, sizeof s1));
            return buf;
        }
        if (t[P_MID]) {
            const sdxl_st_tensor *mid = t[P_MID];
            if (mid->ndim != 4 || mid->shape[1] != r || mid->shape[2] * mid->shape[3] != k ||
                !is_mat(t[P_DOWN], r, in) || !is_up(t[P_UP], out, mid->shape[0])) {
                snprintf(buf, bn, "Tucker parts down %s, mid %s, up %s do not fit %s", shape_str(t[P_DOWN], s1, 32),
                         shape_str(mid, s1 + 32, 32), shape_str(t[P_UP], s1 + 64, 32), ws);
                return buf;
            }
            if (g.w->ndim == 4 && (mid->shape[2] != g.w->shape[2] || mid->shape[3] != g.w->shape[3])) {
                snprintf(buf, bn, "lora_mid kernel does not match %s", ws);
                return buf;
            }
            m->type = SDXL_LORA_TYPE_LORA_TUCKER;
        } else {
            bool ok = is_mat(t[P_DOWN], r, in * k) && is_up(t[P_UP], out, r);
            if (ok && t[P_DOWN]->ndim == 4 && g.w->ndim == 4)
                ok = t[P_DOWN]->shape[1] == in && t[P_DOWN]->shape[2] == g.w->shape[2] &&
                     t[P_DOWN]->shape[3] == g.w->shape[3];
            else if (ok && t[P_DOWN]->ndim == 2) ok = k == 1;
            if (!ok) {
                snprintf(buf, bn, "lora_down %s / lora_up %s do not fit %s", shape_str(t[P_DOWN], s1, 48),
                         shape_str(t[P_UP], s1 + 48, 48), ws);
                return buf;
            }
            m->type = SDXL_LORA_TYPE_LORA;
        }
        m->rank = (int)r;
    } else if (loha) {
        const sdxl_st_tensor *w1a = t[P_HW1A], *w1b = t[P_HW1B], *w2a = t[P_HW2A], *w2b = t[P_HW2B];
        if (!w1a || !w1b || !w2a || !w2b) {
            snprintf(buf, bn, "LoHa needs hada_w1_a, hada_w1_b, hada_w2_a and hada_w2_b");
            return buf;
        }
        const sdxl_st_tensor *ts[2] = {t[P_HT1], t[P_HT2]};
        const sdxl_st_tensor *as[2] = {w1a, w2a}, *bs[2] = {w1b, w2b};
        for (int s = 0; s < 2; s++) {
            bool ok;
            if (ts[s]) {
                int64_t ra = as[s]->shape[0], rb = bs[s]->shape[0];
                ok = ts[s]->ndim == 4 && ts[s]->shape[0] == ra && ts[s]->shape[1] == rb &&
                     ts[s]->shape[2] * ts[s]->shape[3] == k && as[s]->ndim == 2 && as[s]->shape[1] == out &&
                     is_mat(bs[s], rb, in) && (g.w->ndim != 4 || (ts[s]->shape[2] == g.w->shape[2] &&
                                                                 ts[s]->shape[3] == g.w->shape[3]));
            } else {
                ok = as[s]->ndim == 2 && as[s]->shape[0] == out && is_mat(bs[s], as[s]->shape[1], in * k);
            }
            if (!ok) {
                snprintf(buf, bn, "LoHa w%d_a %s / w%d_b %s%s do not fit %s", s + 1, shape_str(as[s], s1, 32), s + 1,
                         shape_str(bs[s], s1 + 32, 32), ts[s] ? " (Tucker)" : "", ws);
                return buf;
            }
        }
        m->type = SDXL_LORA_TYPE_LOHA;
        m->rank = (int)w1b->shape[0];
    } else { /* lokr */
        const sdxl_st_tensor *w1 = t[P_KW1], *w1a = t[P_KW1A], *w1b = t[P_KW1B];
        const sdxl_st_tensor *w2 = t[P_KW2], *w2a = t[P_KW2A], *w2b = t[P_KW2B], *t2 = t[P_KT2];
        int64_t a, b, c, d, ks;
        if (w1) {
            if (w1->ndim != 2 && !(w1->ndim == 4 && w1->shape[2] == 1 && w1->shape[3] == 1)) goto bad_lokr;
            a = w1->shape[0];
            b = w1->shape[1];
        } else if (w1a && w1b && w1a->ndim == 2 && w1b->ndim == 2 && w1a->shape[1] == w1b->shape[0]) {
            a = w1a->shape[0];
            b = w1b->shape[1];
        } else goto bad_lokr;
        if (w2) {
            if (w2->ndim != 2 && w2->ndim != 4) goto bad_lokr;
            c = w2->shape[0];
            d = w2->shape[1];
            ks = w2->ndim == 4 ? w2->shape[2] * w2->shape[3] : 1;
        } else if (w2a && w2b && t2) {
            if (t2->ndim != 4 || w2a->ndim != 2 || w2b->ndim != 2 || t2->shape[0] != w2a->shape[0] ||
                t2->shape[1] != w2b->shape[0])
                goto bad_lokr;
            c = w2a->shape[1];
            d = w2b->shape[1];
            ks = t2->shape[2] * t2->shape[3];
        } else if (w2a && w2b && w2a->ndim == 2 && (w2b->ndim == 2 || w2b->ndim == 4) &&
                   w2a->shape[1] == w2b->shape[0]) {
            c = w2a->shape[0];
            d = w2b->ndim == 4 ? w2b->shape[1] : w2b->shape[1] / (k ? k : 1);
            ks = w2b->ndim == 4 ? w2b->shape[2] * w2b->shape[3] : (w2b->shape[1] % k == 0 ? k : -1);
        } else goto bad_lokr;
        if (a <= 0 || c <= 0 || a * c != out || b * d != in || ks != k) goto bad_lokr;
        if ((w1 && (w1a || w1b)) || (w2 && (w2a || w2b || t2))) goto bad_lokr;
        m->type = SDXL_LORA_TYPE_LOKR;
        /* the factorized half's rank; w2's when both are (A1111, ComfyUI) */
        m->rank = !w2 ? (int)w2b->shape[0] : !w1 ? (int)w1b->shape[0] : 0;
        goto lokr_ok;
    bad_lokr:
        snprintf(buf, bn, "LoKr parts do not fit %s (need kron(w1 [a,b], w2 [c,d,...]) with a*c = out, b*d = in)",
                 ws);
        return buf;
    lokr_ok:;
    }
    if (m->dora) {
        /* PEFT's magnitude is per output row whatever its shape ([out] for
         * Linear, [1,out,1,1] for Conv2d); a kohya/LyCORIS dora_scale says
         * its axis by its shape */
        const sdxl_st_tensor *ds = t[P_DORA] ? t[P_DORA] : t[P_MAG];
        int64_t dn = nelem(ds);
        bool per_out = (t[P_MAG] && dn == out) || (ds->ndim == 1 && dn == out) ||
                       (ds->ndim >= 2 && ds->shape[0] == out && dn == out && (out != 1 || ds->shape[1] == 1));
        bool per_in = !t[P_MAG] && ds->ndim >= 2 && ds->shape[0] == 1 && ds->shape[1] == in && dn == in;
        if (!per_out && !per_in) {
            snprintf(buf, bn, "dora_scale %s fits neither [1,%lld,...] nor [%lld,1,...] of %s",
                     shape_str(ds, s1, sizeof s1), (long long)in, (long long)out, ws);
            return buf;
        }
        p->dora_per_in = !per_out;
    }
    /* alpha: LoKr with both factors full ignores it (scale 1). */
    if (m->type == SDXL_LORA_TYPE_LOKR && m->rank == 0) {
        m->alpha = 1.0f;
    } else {
        m->alpha = has_alpha ? alpha_val : (float)m->rank;
    }
    return NULL;
}

/* ---- key -> module ---------------------------------------------------------- */

static bool starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Does module m's weight admit these parts (cheap test used to break ties
 * between text encoders for prefix-less PEFT keys)? */
static bool fits(const sdxl_naming *naming, const sdxl_name_module *m, const mod_parts *p) {
    sdxl_lora_module tmp = {.module = m};
    mod_parts copy = *p;
    char why[400];
    return check_module(naming, &copy, &tmp, 1.0f, false, why, sizeof why) == NULL;
}

static const sdxl_name_module *resolve_module(const sdxl_naming *naming, const char *key, const mod_parts *p) {
    char tmp[1024];
    const sdxl_name_module *m;
    if (starts(key, "lora_unet_") || starts(key, "lora_te1_") || starts(key, "lora_te2_"))
        return sdxl_naming_module_by_kohya(naming, key);
    if (starts(key, "lora_te_")) return NULL; /* SD 1.x single text encoder: not this model */
    const char *k = key;
    bool bare = false;
    if (starts(k, "base_model.model.")) {
        k += strlen("base_model.model.");
        bare = true;
    }
    struct { const char *prefix; const char *internal; } comps[] = {
        {"unet.", "unet."}, {"text_encoder_2.", "te2."}, {"text_encoder.", "te1."},
        {"te1.", "te1."}, {"te2.", "te2."},
    };
    for (size_t i = 0; i < sizeof comps / sizeof comps[0]; i++) {
        if (!starts(k, comps[i].prefix)) continue;
        const char *rest = k + strlen(comps[i].prefix);
        if (starts(rest, "base_model.model.")) rest += strlen("base_model.model.");
        if (snprintf(tmp, sizeof tmp, "%s%s", comps[i].internal, rest) >= (int)sizeof tmp) return NULL;
        m = sdxl_naming_module(naming, tmp);
        if (m) return m;
        if (strcmp(comps[i].internal, "unet.") == 0) return sdxl_naming_module_by_sgm(naming, rest);
        return NULL;
    }
    if (starts(k, "model.diffusion_model.") || starts(k, "diffusion_model.")) {
        const char *rest = k + (starts(k, "model.") ? strlen("model.diffusion_model.") : strlen("diffusion_model."));
        return sdxl_naming_module_by_sgm(naming, rest);
    }
    m = sdxl_naming_module_by_sgm(naming, k);
    if (m) return m;
    if (!bare && strchr(k, '.') == NULL) return NULL;
    /* No component prefix (a PEFT save of one model): the UNet, else the
     * text encoder whose module fits the parts (TE1 first). */
    const char *order[] = {"unet.", "te1.", "te2."};
    const sdxl_name_module *first = NULL;
    for (int i = 0; i < 3; i++) {
        if (snprintf(tmp, sizeof tmp, "%s%s", order[i], k) >= (int)sizeof tmp) return NULL;
        m = sdxl_naming_module(naming, tmp);
        if (!m) continue;
        if (fits(naming, m, p)) return m;
        if (!first) first = m;
    }
    return first;
}

/* ---- loading ------------------------------------------------------------------ */

typedef struct keyrec {
    char *mod;
    part p;
    const sdxl_st_tensor *t;
} keyrec;

static int keyrec_cmp(const void *a, const void *b) {
    const keyrec *x = a, *y = b;
    int c = strcmp(x->mod, y->mod);
    if (c) return c;
    return (int)x->p - (int)y->p;
}

static sdxl_status read_alpha(const sdxl_st_tensor *t, float *out, const char *label, const char *key,
                              sdxl_error *err) {
    if (nelem(t) != 1)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %s.alpha has %lld elements (a scalar is expected)",
                              label, key, (long long)nelem(t));
    double v = 0;
    switch (t->dtype) {
    case SDXL_ST_I64: { int64_t x; memcpy(&x, t->data, 8); v = (double)x; break; }
    case SDXL_ST_I32: { int32_t x; memcpy(&x, t->data, 4); v = x; break; }
    default: {
        float f;
        sdxl_status st = sdxl_tf_to_f32(t, &f, err);
        if (st) return st;
        v = f;
    }
    }
    if (!(v == v) || v > 1e30 || v < -1e30)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %s.alpha is not a finite number", label, key);
    *out = (float)v;
    return SDXL_STATUS_OK;
}

static sdxl_status bind(sdxl_lora_adapter *a, sdxl_error *err) {
    size_t n = sdxl_tf_count(a->tf);
    keyrec *recs = sdxl_calloc(n ? n : 1, sizeof *recs);
    if (!recs) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", a->label);
    sdxl_status st = SDXL_STATUS_OK;
    size_t nr = 0;
    char mod[1024];
    for (size_t i = 0; i < n; i++) {
        const sdxl_st_tensor *t = sdxl_tf_at(a->tf, i);
        part p;
        if (!split_key(t->name, mod, sizeof mod, &p)) {
            if (add_unmatched(a, t->name, "not an adapter key")) goto oom;
            continue;
        }
        recs[nr].mod = sdxl_strdup(mod);
        if (!recs[nr].mod) goto oom;
        recs[nr].p = p;
        recs[nr].t = t;
        nr++;
    }
    qsort(recs, nr, sizeof *recs, keyrec_cmp);
    a->mods = sdxl_calloc(nr ? nr : 1, sizeof *a->mods);
    a->parts = sdxl_calloc(nr ? nr : 1, sizeof *a->parts);
    if (!a->mods || !a->parts) goto oom;
    for (size_t i = 0; i < nr;) {
        size_t j = i;
        mod_parts mp = {{0}, false};
        bool dup = false;
        for (; j < nr && strcmp(recs[j].mod, recs[i].mod) == 0; j++) {
            if (mp.t[recs[j].p]) dup = true;
            mp.t[recs[j].p] = recs[j].t;
        }
        const char *key = recs[i].mod;
        size_t first = i;
        i = j;
        if (dup) {
            if (add_unmatched(a, key, "a part appears twice (two spellings of one key)")) goto oom;
            continue;
        }
        float alpha = 0;
        bool has_alpha = mp.t[P_ALPHA] != NULL;
        if (has_alpha && (st = read_alpha(mp.t[P_ALPHA], &alpha, a->label, key, err))) goto fail;
        const sdxl_name_module *m = resolve_module(a->naming, key, &mp);
        if (!m) {
            if (add_unmatched(a, key, "no such module in this model")) goto oom;
            continue;
        }
        sdxl_lora_module lm = {.module = m};
        char why[400];
        const char *bad = check_module(a->naming, &mp, &lm, alpha, has_alpha, why, sizeof why);
        if (bad) {
            if (add_unmatched(a, key, "%s", bad)) goto oom;
            continue;
        }
        /* one entry per model module: a second spelling of the same module is a conflict */
        bool clash = false;
        for (size_t q = 0; q < a->n_mods; q++)
            if (a->mods[q].module == m) clash = true;
        if (clash) {
            if (add_unmatched(a, key, "%s is already changed by another key of this file", m->path)) goto oom;
            continue;
        }
        lm.key = recs[first].mod;
        recs[first].mod = NULL; /* moved */
        a->mods[a->n_mods] = lm;
        a->parts[a->n_mods] = mp;
        a->n_mods++;
    }
    for (size_t i = 0; i < nr; i++) sdxl_free(recs[i].mod);
    sdxl_free(recs);
    return SDXL_STATUS_OK;
oom:
    st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", a->label);
fail:
    for (size_t i = 0; i < nr; i++) sdxl_free(recs[i].mod);
    sdxl_free(recs);
    return st;
}

static sdxl_status finish_load(sdxl_lora_adapter *a, sdxl_error *err) {
    sdxl_status st = bind(a, err);
    if (st) return st;
    if (sdxl_tf_format_of(a->tf) != SDXL_TF_SAFETENSORS) { /* the container copied what it keeps */
        sdxl_free(a->buf);
        a->buf = NULL;
        a->buf_len = 0;
    }
    /* tables sized to what was kept */
    if (a->n_mods) {
        sdxl_lora_module *m2 = sdxl_realloc(a->mods, a->n_mods * sizeof *m2);
        mod_parts *p2 = m2 ? sdxl_realloc(a->parts, a->n_mods * sizeof *p2) : NULL;
        if (m2) a->mods = m2;
        if (p2) a->parts = p2;
    }
    /* every block the adapter holds, as the allocation hook counts them */
    size_t b = sdxl_alloc_size(a) + sdxl_alloc_size(a->label) + (a->buf ? sdxl_alloc_size(a->buf) : 0) +
               sdxl_tf_bytes(a->tf) + sdxl_alloc_size(a->mods) + sdxl_alloc_size(a->parts) +
               (a->um ? sdxl_alloc_size(a->um) : 0);
    for (size_t i = 0; i < a->n_mods; i++) b += sdxl_alloc_size(a->mods[i].key);
    for (size_t i = 0; i < a->n_um; i++) b += sdxl_alloc_size(a->um[i].key) + sdxl_alloc_size(a->um[i].why);
    a->bytes = b;
    a->id = atomic_fetch_add(&next_id, 1);
    SDXL_LOG_D("lora %s: %zu modules, %zu keys unused", a->label, a->n_mods, a->n_um);
    return SDXL_STATUS_OK;
}

static sdxl_status start(const char *label, const sdxl_naming *naming, sdxl_lora_adapter **out, sdxl_error *err) {
    if (!naming) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora: no naming given");
    sdxl_lora_adapter *a = sdxl_calloc(1, sizeof *a);
    if (!a) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", label);
    a->label = sdxl_strdup(label);
    if (!a->label) {
        sdxl_free(a);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", label);
    }
    a->naming = naming;
    *out = a;
    return SDXL_STATUS_OK;
}

/* Adapter files larger than this are refused (a full-weight diff of SDXL in
 * f32 is ~10 GB; anything beyond is not an adapter). */
#define LORA_MAX_FILE ((size_t)16 << 30)

sdxl_status sdxl_lora_adapter_load(const char *path, const sdxl_naming *naming, sdxl_lora_adapter **out,
                                   sdxl_error *err) {
    if (!out || !path) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora: NULL argument");
    *out = NULL;
    sdxl_lora_adapter *a = NULL;
    sdxl_status st = start(path, naming, &a, err);
    if (st) return st;
    char *buf = NULL;
    size_t len = 0;
    st = sdxl_read_file(path, LORA_MAX_FILE, &buf, &len, err);
    if (st) {
        sdxl_lora_adapter_free(a);
        return st;
    }
    a->buf = buf;
    a->buf_len = len;
    st = sdxl_tf_parse(buf, len, &a->tf, err);
    if (st) {
        sdxl_error_prefix(err, "%s", path);
    } else {
        st = finish_load(a, err);
    }
    if (st) {
        sdxl_lora_adapter_free(a);
        return st;
    }
    *out = a;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_lora_adapter_parse(const void *data, size_t len, const char *label, const sdxl_naming *naming,
                                    sdxl_lora_adapter **out, sdxl_error *err) {
    if (!out || (!data && len)) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora: NULL argument");
    *out = NULL;
    if (!label) label = "<memory>";
    sdxl_lora_adapter *a = NULL;
    sdxl_status st = start(label, naming, &a, err);
    if (st) return st;
    a->buf = sdxl_malloc(len ? len : 1);
    if (!a->buf) {
        sdxl_lora_adapter_free(a);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", label);
    }
    if (len) memcpy(a->buf, data, len);
    a->buf_len = len;
    st = sdxl_tf_parse(a->buf, len, &a->tf, err);
    if (st) sdxl_error_prefix(err, "%s", label);
    else st = finish_load(a, err);
    if (st) {
        sdxl_lora_adapter_free(a);
        return st;
    }
    *out = a;
    return SDXL_STATUS_OK;
}

/* ---- accessors ------------------------------------------------------------------ */

uint64_t sdxl_lora_adapter_id(const sdxl_lora_adapter *a) { return a ? a->id : 0; }
const char *sdxl_lora_adapter_label(const sdxl_lora_adapter *a) { return a ? a->label : NULL; }
const sdxl_naming *sdxl_lora_adapter_naming(const sdxl_lora_adapter *a) { return a ? a->naming : NULL; }
const char *sdxl_lora_adapter_format(const sdxl_lora_adapter *a) {
    return a ? sdxl_tf_format_name(sdxl_tf_format_of(a->tf)) : NULL;
}
size_t sdxl_lora_adapter_bytes(const sdxl_lora_adapter *a) { return a ? a->bytes : 0; }
const char *sdxl_lora_adapter_metadata(const sdxl_lora_adapter *a, const char *key) {
    return a && key ? sdxl_tf_metadata(a->tf, key) : NULL;
}
size_t sdxl_lora_adapter_module_count(const sdxl_lora_adapter *a) { return a ? a->n_mods : 0; }
const sdxl_lora_module *sdxl_lora_adapter_module(const sdxl_lora_adapter *a, size_t i) {
    return a && i < a->n_mods ? &a->mods[i] : NULL;
}
size_t sdxl_lora_adapter_component_count(const sdxl_lora_adapter *a, sdxl_component c) {
    size_t n = 0;
    for (size_t i = 0; a && i < a->n_mods; i++) n += a->mods[i].module->comp == c;
    return n;
}
sdxl_lora_type sdxl_lora_adapter_main_type(const sdxl_lora_adapter *a) {
    size_t cnt[SDXL_LORA_TYPE_COUNT_] = {0};
    for (size_t i = 0; a && i < a->n_mods; i++) cnt[a->mods[i].type]++;
    int best = 0;
    for (int t = 1; t < SDXL_LORA_TYPE_COUNT_; t++)
        if (cnt[t] > cnt[best]) best = t;
    /* LoRA with some Tucker convs is a LoCon: report "lora" unless Tucker dominates */
    return (sdxl_lora_type)best;
}
int sdxl_lora_adapter_max_rank(const sdxl_lora_adapter *a) {
    int r = 0;
    for (size_t i = 0; a && i < a->n_mods; i++)
        if (a->mods[i].rank > r) r = a->mods[i].rank;
    return r;
}
size_t sdxl_lora_adapter_unmatched_count(const sdxl_lora_adapter *a) { return a ? a->n_um : 0; }
bool sdxl_lora_adapter_unmatched_at(const sdxl_lora_adapter *a, size_t i, const char **key, const char **why) {
    if (!a || i >= a->n_um) return false;
    if (key) *key = a->um[i].key;
    if (why) *why = a->um[i].why;
    return true;
}

/* ---- deltas -------------------------------------------------------------------- */

/* f32 copy of a part (sdxl_malloc'd). */
static float *to_f32(const sdxl_st_tensor *t, sdxl_error *err) {
    size_t n = (size_t)nelem(t);
    float *f = sdxl_malloc((n ? n : 1) * sizeof *f);
    if (!f) {
        sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora: out of memory (%zu floats)", n);
        return NULL;
    }
    if (sdxl_tf_to_f32(t, f, err)) {
        sdxl_free(f);
        return NULL;
    }
    return f;
}

static void scale_n(float *x, size_t n, float s) {
    if (s != 1.0f)
        for (size_t i = 0; i < n; i++) x[i] *= s;
}

/* C[M,N] = A[M,K] @ B[K,N] through the back end's linear (which wants B as
 * [N,K]). */
static sdxl_status matmul(sdxl_backend *be, const float *A, const float *B, int64_t M, int64_t K, int64_t N,
                          float *C, sdxl_error *err) {
    float *bt = sdxl_malloc((size_t)(N * K) * sizeof *bt);
    if (!bt) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora: out of memory");
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++) bt[n * K + k] = B[k * N + n];
    sdxl_tensor x = sdxl_tensor_2d((void *)A, SDXL_DTYPE_F32, M, K);
    sdxl_tensor w = sdxl_tensor_2d(bt, SDXL_DTYPE_F32, N, K);
    sdxl_tensor y = sdxl_tensor_2d(C, SDXL_DTYPE_F32, M, N);
    sdxl_status st = be->ops->linear(be, &x, &w, NULL, &y);
    if (!st) st = be->ops->synchronize(be);
    sdxl_free(bt);
    if (st) return sdxl_error_set(err, st, "lora: low-rank product failed: %s", be->err.msg);
    return SDXL_STATUS_OK;
}

/* Tucker: W[p, q, hw] = Σ_i Σ_j t[i, j, hw] · A[i, p] · B[j, q]
 * (t [ra, rb, k], A [ra, P], B [rb, Q]) into W [P, Q*k]. */
static sdxl_status tucker(sdxl_backend *be, const float *t, const float *A, const float *B, int64_t ra, int64_t rb,
                          int64_t k, int64_t P, int64_t Q, float *W, sdxl_error *err) {
    /* T[i, q, hw] = Σ_j t[i, j, hw] B[j, q]; then W = Aᵀ @ T */
    float *T = sdxl_calloc((size_t)(ra * Q * k), sizeof *T);
    float *At = sdxl_malloc((size_t)(P * ra) * sizeof *At);
    if (!T || !At) {
        sdxl_free(T);
        sdxl_free(At);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora: out of memory");
    }
    for (int64_t i = 0; i < ra; i++)
        for (int64_t j = 0; j < rb; j++)
            for (int64_t q = 0; q < Q; q++) {
                float bq = B[j * Q + q];
                const float *tij = t + (i * rb + j) * k;
                float *Tiq = T + (i * Q + q) * k;
                for (int64_t h = 0; h < k; h++) Tiq[h] += tij[h] * bq;
            }
    for (int64_t i = 0; i < ra; i++)
        for (int64_t p = 0; p < P; p++) At[p * ra + i] = A[i * P + p];
    sdxl_status st = matmul(be, At, T, P, ra, Q * k, W, err);
    sdxl_free(T);
    sdxl_free(At);
    return st;
}

sdxl_status sdxl_lora_module_delta(sdxl_backend *be, const sdxl_lora_adapter *a, size_t i, const float *base,
                                   float *dw, float *db, sdxl_error *err) {
    if (!be || !a || i >= a->n_mods) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora: bad module index");
    const sdxl_lora_module *m = &a->mods[i];
    const sdxl_st_tensor *const *t = a->parts[i].t;
    geom g = module_geom(a->naming, m->module);
    sdxl_status st = SDXL_STATUS_OK;
    float *f[8] = {0};
    enum { NF = 8 };
    if (m->bias_delta && db) {
        if (sdxl_tf_to_f32(t[P_DIFF_B] ? t[P_DIFF_B] : t[P_BNORM], db, err)) return err ? err->status : SDXL_STATUS_BAD_INPUT;
    }
    if (!m->weight_delta || !dw) return SDXL_STATUS_OK;
    if (m->dora && !base) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora: DoRA needs the base weight");
    float scale = m->rank > 0 ? m->alpha / (float)m->rank : 1.0f;
    int64_t out = g.out, in = g.in, k = g.k;
    switch (m->type) {
    case SDXL_LORA_TYPE_FULL:
        st = sdxl_tf_to_f32(t[P_DIFF] ? t[P_DIFF] : t[P_WNORM], dw, err);
        if (st) return st;
        scale = 1.0f;
        break;
    case SDXL_LORA_TYPE_LORA: {
        int64_t r = t[P_DOWN]->shape[0];
        if (!(f[0] = to_f32(t[P_UP], err)) || !(f[1] = to_f32(t[P_DOWN], err))) goto oom_or_err;
        scale_n(f[0], (size_t)(out * r), scale); /* on the small factor, not the product */
        st = matmul(be, f[0], f[1], out, r, in * k, dw, err);
        break;
    }
    case SDXL_LORA_TYPE_LORA_TUCKER: {
        /* Δ[o, i, hw] = Σ_p up[o,p] Σ_q mid[p,q,hw] down[q,i]: Tucker with A = upᵀ */
        const sdxl_st_tensor *mid = t[P_MID];
        int64_t rp = mid->shape[0], rq = mid->shape[1];
        if (!(f[0] = to_f32(t[P_UP], err)) || !(f[1] = to_f32(mid, err)) || !(f[2] = to_f32(t[P_DOWN], err)))
            goto oom_or_err;
        f[3] = sdxl_malloc((size_t)(rp * out) * sizeof(float));
        if (!f[3]) goto oom;
        for (int64_t o = 0; o < out; o++)
            for (int64_t p = 0; p < rp; p++) f[3][p * out + o] = scale * f[0][o * rp + p];
        st = tucker(be, f[1], f[3], f[2], rp, rq, k, out, in, dw, err);
        break;
    }
    case SDXL_LORA_TYPE_LOHA: {
        float *w2 = sdxl_malloc((size_t)g.n * sizeof *w2);
        if (!w2) goto oom;
        f[7] = w2;
        const part ap[2] = {P_HW1A, P_HW2A}, bp[2] = {P_HW1B, P_HW2B}, tp[2] = {P_HT1, P_HT2};
        float *dst[2] = {dw, w2};
        for (int s = 0; s < 2 && !st; s++) {
            float *A = to_f32(t[ap[s]], err), *B = A ? to_f32(t[bp[s]], err) : NULL, *T = NULL;
            if (A && B && t[tp[s]]) T = to_f32(t[tp[s]], err);
            if (A && s == 0) scale_n(A, (size_t)nelem(t[ap[s]]), scale);
            if (!A || !B || (t[tp[s]] && !T)) {
                st = err ? err->status : SDXL_STATUS_OUT_OF_MEMORY;
            } else if (T) {
                st = tucker(be, T, A, B, t[tp[s]]->shape[0], t[tp[s]]->shape[1], k, out, in, dst[s], err);
            } else {
                int64_t r = t[bp[s]]->shape[0];
                st = matmul(be, A, B, out, r, in * k, dst[s], err);
            }
            sdxl_free(A);
            sdxl_free(B);
            sdxl_free(T);
        }
        if (!st)
            for (int64_t e = 0; e < g.n; e++) dw[e] *= w2[e];
        break;
    }
    case SDXL_LORA_TYPE_LOKR: {
        /* w1 [a, b]; w2 [c, d, k] */
        int64_t a1, b1, c2, d2;
        float *w1 = NULL, *w2 = NULL;
        if (t[P_KW1]) {
            a1 = t[P_KW1]->shape[0];
            b1 = t[P_KW1]->shape[1];
            if (!(w1 = f[0] = to_f32(t[P_KW1], err))) goto oom_or_err;
        } else {
            a1 = t[P_KW1A]->shape[0];
            b1 = t[P_KW1B]->shape[1];
            int64_t r = t[P_KW1B]->shape[0];
            if (!(f[1] = to_f32(t[P_KW1A], err)) || !(f[2] = to_f32(t[P_KW1B], err))) goto oom_or_err;
            if (!(w1 = f[0] = sdxl_malloc((size_t)(a1 * b1) * sizeof(float)))) goto oom;
            if ((st = matmul(be, f[1], f[2], a1, r, b1, w1, err))) break;
        }
        scale_n(w1, (size_t)(a1 * b1), scale);
        c2 = out / a1;
        d2 = in / b1;
        if (t[P_KW2]) {
            if (!(w2 = f[3] = to_f32(t[P_KW2], err))) goto oom_or_err;
        } else {
            if (!(f[4] = to_f32(t[P_KW2A], err)) || !(f[5] = to_f32(t[P_KW2B], err))) goto oom_or_err;
            if (!(w2 = f[3] = sdxl_malloc((size_t)(c2 * d2 * k) * sizeof(float)))) goto oom;
            if (t[P_KT2]) {
                if (!(f[6] = to_f32(t[P_KT2], err))) goto oom_or_err;
                st = tucker(be, f[6], f[4], f[5], t[P_KT2]->shape[0], t[P_KT2]->shape[1], k, c2, d2, w2, err);
            } else {
                st = matmul(be, f[4], f[5], c2, t[P_KW2B]->shape[0], d2 * k, w2, err);
            }
            if (st) break;
        }
        /* Δ[(i1 c2 + i2), (j1 d2 + j2), hw] = w1[i1, j1] · w2[i2, j2, hw] */
        for (int64_t i1 = 0; i1 < a1; i1++)
            for (int64_t i2 = 0; i2 < c2; i2++) {
                float *row = dw + ((i1 * c2 + i2) * in) * k;
                for (int64_t j1 = 0; j1 < b1; j1++) {
                    float x = w1[i1 * b1 + j1];
                    const float *src = w2 + (i2 * d2) * k;
                    float *dst = row + (j1 * d2) * k;
                    for (int64_t e = 0; e < d2 * k; e++) dst[e] = x * src[e];
                }
            }
        break;
    }
    default:
        return sdxl_error_set(err, SDXL_STATUS_INTERNAL, "lora: unknown module type");
    }
    for (int q = 0; q < NF; q++) sdxl_free(f[q]);
    if (st) return st;
    if (m->dora) {
        /* Wc = W + Δ0; Δ = Wc · s / (‖Wc‖ + ε) − W */
        const float eps = 1.1920928955078125e-07f;
        const sdxl_st_tensor *ds = t[P_DORA] ? t[P_DORA] : t[P_MAG];
        float *sc = to_f32(ds, err);
        if (!sc) return err ? err->status : SDXL_STATUS_OUT_OF_MEMORY;
        bool per_in = a->parts[i].dora_per_in;
        for (int64_t e = 0; e < g.n; e++) dw[e] += base[e];
        if (per_in) {
            double *nrm = sdxl_calloc((size_t)in, sizeof *nrm);
            if (!nrm) {
                sdxl_free(sc);
                return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora: out of memory");
            }
            for (int64_t o = 0; o < out; o++)
                for (int64_t c = 0; c < in; c++)
                    for (int64_t h = 0; h < k; h++) {
                        double v = dw[(o * in + c) * k + h];
                        nrm[c] += v * v;
                    }
            for (int64_t c = 0; c < in; c++) nrm[c] = (double)sc[c] / ((float)__builtin_sqrt(nrm[c]) + eps);
            for (int64_t o = 0; o < out; o++)
                for (int64_t c = 0; c < in; c++)
                    for (int64_t h = 0; h < k; h++) {
                        int64_t e = (o * in + c) * k + h;
                        dw[e] = (float)(dw[e] * nrm[c]) - base[e];
                    }
            sdxl_free(nrm);
        } else {
            int64_t row = in * k;
            for (int64_t o = 0; o < out; o++) {
                double s = 0;
                for (int64_t e = 0; e < row; e++) s += (double)dw[o * row + e] * dw[o * row + e];
                double f2 = (double)sc[o] / ((float)__builtin_sqrt(s) + eps);
                for (int64_t e = 0; e < row; e++) dw[o * row + e] = (float)(dw[o * row + e] * f2) - base[o * row + e];
            }
        }
        sdxl_free(sc);
    }
    return SDXL_STATUS_OK;
oom:
    sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora: out of memory");
oom_or_err:
    for (int q = 0; q < NF; q++) sdxl_free(f[q]);
    return err && err->status ? err->status : SDXL_STATUS_OUT_OF_MEMORY;
}
