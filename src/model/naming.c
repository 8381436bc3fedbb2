/* naming.c - the expected tensor set of a config and its layout mappings.
 *
 * Built by walking the architecture once, in diffusers' construction order,
 * and emitting each tensor with its internal name and its SGM key side by
 * side: the structure (which block index holds what) is written once, here,
 * and both directions (loading, LoRA lookup, writing a single file) read the
 * resulting tables. */
#include "model/naming.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

#define K_UNET "model.diffusion_model"
#define K_VAE "first_stage_model"
#define K_TE1 "conditioner.embedders.0.transformer.text_model"
#define K_TE2 "conditioner.embedders.1.model"

/* ---- string pool: every name lives until the naming is freed --------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
} chunk;

#define CHUNK_BYTES (64 * 1024)

/* ---- string -> index hash (open addressing, keys owned elsewhere) ----------- */

typedef struct {
    const char **key;
    int32_t *val;
    size_t cap, n;
} shash;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static bool shash_grow(shash *h) {
    size_t cap = h->cap ? h->cap * 2 : 256;
    const char **k = sdxl_calloc(cap, sizeof *k);
    int32_t *v = sdxl_malloc(cap * sizeof *v);
    if (!k || !v) {
        sdxl_free(k);
        sdxl_free(v);
        return false;
    }
    for (size_t i = 0; i < h->cap; i++) {
        if (!h->key[i]) continue;
        size_t j = fnv1a(h->key[i]) & (cap - 1);
        while (k[j])
            j = (j + 1) & (cap - 1);
        k[j] = h->key[i];
        v[j] = h->val[i];
    }
    sdxl_free(h->key);
    sdxl_free(h->val);
    h->key = k;
    h->val = v;
    h->cap = cap;
    return true;
}

/* 0 inserted, 1 already present (*existing set), -1 out of memory. */
static int shash_put(shash *h, const char *key, int32_t val, int32_t *existing) {
    if ((h->n + 1) * 2 > h->cap && !shash_grow(h)) return -1;
    size_t j = fnv1a(key) & (h->cap - 1);
    while (h->key[j]) {
        if (strcmp(h->key[j], key) == 0) {
            if (existing) *existing = h->val[j];
            return 1;
        }
        j = (j + 1) & (h->cap - 1);
    }
    h->key[j] = key;
    h->val[j] = val;
    h->n++;
    return 0;
}

static int32_t shash_get(const shash *h, const char *key) {
    if (!h->cap || !key) return -1;
    size_t j = fnv1a(key) & (h->cap - 1);
    while (h->key[j]) {
        if (strcmp(h->key[j], key) == 0) return h->val[j];
        j = (j + 1) & (h->cap - 1);
    }
    return -1;
}

static void shash_free(shash *h) {
    sdxl_free(h->key);
    sdxl_free(h->val);
}

/* ---- the object ---------------------------------------------------------- */

struct sdxl_naming {
    sdxl_name_entry *e;
    size_t n, cap;
    sdxl_name_module *m;
    size_t nm, capm;
    size_t comp_count[SDXL_COMP_COUNT_];
    chunk *pool;
    shash by_name, by_sgm_key, mod_by_path, mod_by_sgm, mod_by_kohya;
    sdxl_status st; /* first failure while building */
};

static const char *const comp_prefix[SDXL_COMP_COUNT_] = {"unet", "vae", "te1", "te2"};
static const char *const comp_folder[SDXL_COMP_COUNT_] = {"unet", "vae", "text_encoder", "text_encoder_2"};

const char *sdxl_component_prefix(sdxl_component c) {
    return (unsigned)c < SDXL_COMP_COUNT_ ? comp_prefix[c] : "?";
}
const char *sdxl_component_folder(sdxl_component c) {
    return (unsigned)c < SDXL_COMP_COUNT_ ? comp_folder[c] : "?";
}
const char *sdxl_layout_name(sdxl_layout l) {
    return l == SDXL_LAYOUT_DIFFUSERS ? "diffusers" : l == SDXL_LAYOUT_SGM ? "sgm" : "?";
}
const char *sdxl_xform_name(sdxl_xform x) {
    switch (x) {
    case SDXL_XFORM_NONE: return "none";
    case SDXL_XFORM_RESHAPE: return "reshape";
    case SDXL_XFORM_ROWS: return "rows";
    case SDXL_XFORM_TRANSPOSE: return "transpose";
    }
    return "?";
}

static char *pool_dup(sdxl_naming *b, const char *s, size_t n) {
    if (b->st) return NULL;
    if (!b->pool || b->pool->cap - b->pool->used < n + 1) {
        size_t cap = n + 1 > CHUNK_BYTES ? n + 1 : CHUNK_BYTES;
        chunk *c = sdxl_malloc(sizeof *c + cap);
        if (!c) {
            b->st = SDXL_STATUS_OUT_OF_MEMORY;
            return NULL;
        }
        c->next = b->pool;
        c->used = 0;
        c->cap = cap;
        b->pool = c;
    }
    char *p = b->pool->data + b->pool->used;
    memcpy(p, s, n);
    p[n] = 0;
    b->pool->used += n + 1;
    return p;
}

/* kohya flattening: prefix + path with '.' -> '_' */
static const char *kohya_name(sdxl_naming *b, const char *prefix, const char *path) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s%s", prefix, path);
    if (n < 0 || (size_t)n >= sizeof buf) {
        b->st = SDXL_STATUS_INTERNAL;
        return NULL;
    }
    for (char *p = buf; *p; p++)
        if (*p == '.') *p = '_';
    return pool_dup(b, buf, (size_t)n);
}

static void put(sdxl_naming *b, shash *h, const char *key, int32_t val) {
    if (b->st || !key) return;
    int r = shash_put(h, key, val, NULL);
    if (r < 0)
        b->st = SDXL_STATUS_OUT_OF_MEMORY;
    else if (r > 0)
        b->st = SDXL_STATUS_INTERNAL; /* two tensors/modules with one name: a bug here */
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

static int module_for(sdxl_naming *b, sdxl_component comp, const char *name, const sdxl_name_source *sgm,
                      int ndim, bool is_bias) {
    const char *dot = strrchr(name, '.');
    char path[512];
    size_t pl = (size_t)(dot - name);
    if (pl >= sizeof path) {
        b->st = SDXL_STATUS_INTERNAL;
        return -1;
    }
    memcpy(path, name, pl);
    path[pl] = 0;
    int32_t idx = shash_get(&b->mod_by_path, path);
    if (idx < 0) {
        if (b->nm == b->capm) {
            size_t cap = b->capm ? b->capm * 2 : 256;
            sdxl_name_module *nm = sdxl_realloc(b->m, cap * sizeof *nm);
            if (!nm) {
                b->st = SDXL_STATUS_OUT_OF_MEMORY;
                return -1;
            }
            b->m = nm;
            b->capm = cap;
        }
        sdxl_name_module *m = &b->m[b->nm];
        memset(m, 0, sizeof *m);
        m->comp = comp;
        m->weight = m->bias = -1;
        m->path = pool_dup(b, path, pl);
        if (sgm->xform != SDXL_XFORM_ROWS) {
            const char *k = sgm->key;
            size_t kl = strlen(k);
            if (ends_with(k, ".weight"))
                kl -= 7;
            else if (ends_with(k, ".bias"))
                kl -= 5;
            m->sgm_path = pool_dup(b, k, kl);
        }
        if (comp == SDXL_COMP_UNET) {
            m->kohya = kohya_name(b, "lora_unet_", path + 5);
            if (m->sgm_path) m->kohya_sgm = kohya_name(b, "lora_unet_", m->sgm_path + sizeof K_UNET);
        } else if (comp == SDXL_COMP_TE1 || comp == SDXL_COMP_TE2) {
            m->kohya = kohya_name(b, comp == SDXL_COMP_TE1 ? "lora_te1_" : "lora_te2_", path + 4);
        }
        if (b->st) return -1;
        idx = (int32_t)b->nm++;
        put(b, &b->mod_by_path, m->path, idx);
        put(b, &b->mod_by_sgm, m->sgm_path, idx);
        put(b, &b->mod_by_kohya, m->kohya, idx);
        put(b, &b->mod_by_kohya, m->kohya_sgm, idx);
    }
    sdxl_name_module *m = &b->m[idx];
    if (is_bias) {
        m->bias = (int)b->n;
    } else {
        m->weight = (int)b->n;
        m->kind = ndim == 4                         ? SDXL_MODULE_CONV
                  : ndim == 1                       ? SDXL_MODULE_NORM
                  : ends_with(m->path, "embedding") ? SDXL_MODULE_EMBEDDING
                                                    : SDXL_MODULE_LINEAR;
    }
    return idx;
}

/* ---- emitting tensors ------------------------------------------------------ */

typedef struct {
    char in[256]; /* internal prefix, e.g. "unet.down_blocks.0.resnets.1" */
    char sg[256]; /* SGM prefix, e.g. "model.diffusion_model.input_blocks.2.0" */
} scope;

/* snprintf into a fixed buffer; a name that does not fit becomes "" and
 * then collides, which sdxl_naming_create reports as an internal error
 * (real names are far shorter than the buffers). */
static void setf(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void setf(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) buf[0] = 0;
}
#define SET(buf, ...) setf((buf), sizeof(buf), __VA_ARGS__)

typedef struct {
    sdxl_naming *b;
    sdxl_component comp;
} emitter;

/* One tensor: "<s.in>.<in_leaf>" <-> "<s.sg>.<sg_leaf>". src_shape NULL:
 * same as the internal shape. */
static void param(emitter *em, const scope *s, const char *in_leaf, const char *sg_leaf, sdxl_xform x,
                  int ndim, const int64_t *shape, int src_ndim, const int64_t *src_shape, int64_t r0,
                  int64_t r1) {
    sdxl_naming *b = em->b;
    if (b->st) return;
    char name[512], key[512];
    int n1 = snprintf(name, sizeof name, "%s.%s", s->in, in_leaf);
    int n2 = snprintf(key, sizeof key, "%s.%s", s->sg, sg_leaf);
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof name || (size_t)n2 >= sizeof key) {
        b->st = SDXL_STATUS_INTERNAL;
        return;
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        sdxl_name_entry *ne = sdxl_realloc(b->e, cap * sizeof *ne);
        if (!ne) {
            b->st = SDXL_STATUS_OUT_OF_MEMORY;
            return;
        }
        b->e = ne;
        b->cap = cap;
    }
    sdxl_name_entry *e = &b->e[b->n];
    memset(e, 0, sizeof *e);
    e->name = pool_dup(b, name, (size_t)n1);
    e->comp = em->comp;
    e->ndim = ndim;
    for (int i = 0; i < SDXL_MAX_DIMS; i++)
        e->shape[i] = i < ndim ? shape[i] : 1;
    sdxl_name_source *d = &e->src[SDXL_LAYOUT_DIFFUSERS];
    d->key = e->name ? e->name + strlen(comp_prefix[em->comp]) + 1 : NULL;
    d->xform = SDXL_XFORM_NONE;
    d->ndim = ndim;
    memcpy(d->shape, e->shape, sizeof d->shape);
    sdxl_name_source *g = &e->src[SDXL_LAYOUT_SGM];
    g->key = pool_dup(b, key, (size_t)n2);
    g->xform = x;
    if (!src_shape) src_ndim = ndim, src_shape = shape;
    g->ndim = src_ndim;
    for (int i = 0; i < SDXL_MAX_DIMS; i++)
        g->shape[i] = i < src_ndim ? src_shape[i] : 1;
    g->row_begin = r0;
    g->row_end = r1;
    if (b->st) return;
    e->module = module_for(b, em->comp, e->name, g, ndim, ends_with(e->name, ".bias"));
    if (b->st) return;
    put(b, &b->by_name, e->name, (int32_t)b->n);
    /* several entries may share one SGM key (in_proj): keep the first */
    if (!b->st && shash_put(&b->by_sgm_key, g->key, (int32_t)b->n, NULL) < 0)
        b->st = SDXL_STATUS_OUT_OF_MEMORY;
    if (b->st) return;
    b->n++;
    b->comp_count[em->comp]++;
}

static void plain(emitter *em, const scope *s, const char *in_leaf, const char *sg_leaf, int ndim, int64_t d0,
                  int64_t d1, int64_t d2, int64_t d3) {
    int64_t sh[4] = {d0, d1, d2, d3};
    param(em, s, in_leaf, sg_leaf, SDXL_XFORM_NONE, ndim, sh, 0, NULL, 0, 0);
}

static void linear(emitter *em, const scope *s, const char *in, const char *sg, int64_t out, int64_t inp,
                   bool bias) {
    char a[128], c[128];
    SET(a, "%s.weight", in);
    SET(c, "%s.weight", sg);
    plain(em, s, a, c, 2, out, inp, 1, 1);
    if (bias) {
        SET(a, "%s.bias", in);
        SET(c, "%s.bias", sg);
        plain(em, s, a, c, 1, out, 1, 1, 1);
    }
}

static void conv(emitter *em, const scope *s, const char *in, const char *sg, int64_t out, int64_t inp,
                 int64_t k) {
    char a[128], c[128];
    SET(a, "%s.weight", in);
    SET(c, "%s.weight", sg);
    plain(em, s, a, c, 4, out, inp, k, k);
    SET(a, "%s.bias", in);
    SET(c, "%s.bias", sg);
    plain(em, s, a, c, 1, out, 1, 1, 1);
}

static void norm(emitter *em, const scope *s, const char *in, const char *sg, int64_t ch) {
    char a[128], c[128];
    SET(a, "%s.weight", in);
    SET(c, "%s.weight", sg);
    plain(em, s, a, c, 1, ch, 1, 1, 1);
    SET(a, "%s.bias", in);
    SET(c, "%s.bias", sg);
    plain(em, s, a, c, 1, ch, 1, 1, 1);
}

/* ---- UNet ------------------------------------------------------------------- */

static void unet_resnet(emitter *em, const scope *s, int cin, int cout, int temb) {
    norm(em, s, "norm1", "in_layers.0", cin);
    conv(em, s, "conv1", "in_layers.2", cout, cin, 3);
    linear(em, s, "time_emb_proj", "emb_layers.1", cout, temb, true);
    norm(em, s, "norm2", "out_layers.0", cout);
    conv(em, s, "conv2", "out_layers.3", cout, cout, 3);
    if (cin != cout) conv(em, s, "conv_shortcut", "skip_connection", cout, cin, 1);
}

/* Transformer2DModel: the names inside are the same in both layouts. */
static void unet_transformer(emitter *em, const scope *s, const sdxl_unet_config *u, int ch, int depth) {
    int64_t cx = u->cross_attention_dim, ff = (int64_t)u->ff_mult * ch;
    norm(em, s, "norm", "norm", ch);
    if (u->use_linear_projection)
        linear(em, s, "proj_in", "proj_in", ch, ch, true);
    else
        conv(em, s, "proj_in", "proj_in", ch, ch, 1);
    for (int d = 0; d < depth; d++) {
        scope t;
        SET(t.in, "%s.transformer_blocks.%d", s->in, d);
        SET(t.sg, "%s.transformer_blocks.%d", s->sg, d);
        linear(em, &t, "attn1.to_q", "attn1.to_q", ch, ch, false);
        linear(em, &t, "attn1.to_k", "attn1.to_k", ch, ch, false);
        linear(em, &t, "attn1.to_v", "attn1.to_v", ch, ch, false);
        linear(em, &t, "attn1.to_out.0", "attn1.to_out.0", ch, ch, true);
        linear(em, &t, "attn2.to_q", "attn2.to_q", ch, ch, false);
        linear(em, &t, "attn2.to_k", "attn2.to_k", ch, cx, false);
        linear(em, &t, "attn2.to_v", "attn2.to_v", ch, cx, false);
        linear(em, &t, "attn2.to_out.0", "attn2.to_out.0", ch, ch, true);
        linear(em, &t, "ff.net.0.proj", "ff.net.0.proj", 2 * ff, ch, true); /* GEGLU: value and gate */
        linear(em, &t, "ff.net.2", "ff.net.2", ch, ff, true);
        norm(em, &t, "norm1", "norm1", ch);
        norm(em, &t, "norm2", "norm2", ch);
        norm(em, &t, "norm3", "norm3", ch);
    }
    if (u->use_linear_projection)
        linear(em, s, "proj_out", "proj_out", ch, ch, true);
    else
        conv(em, s, "proj_out", "proj_out", ch, ch, 1);
}

static void emit_unet(sdxl_naming *b, const sdxl_unet_config *u) {
    emitter em = {b, SDXL_COMP_UNET};
    int L = u->num_levels, N = u->layers_per_block, T = u->time_embed_dim, c0 = u->block_out_channels[0];
    scope s;
    SET(s.in, "unet.time_embedding");
    SET(s.sg, K_UNET ".time_embed");
    linear(&em, &s, "linear_1", "0", T, u->time_proj_dim, true);
    linear(&em, &s, "linear_2", "2", T, T, true);
    SET(s.in, "unet.add_embedding");
    SET(s.sg, K_UNET ".label_emb.0");
    linear(&em, &s, "linear_1", "0", T, u->projection_class_embeddings_input_dim, true);
    linear(&em, &s, "linear_2", "2", T, T, true);
    SET(s.in, "unet");
    SET(s.sg, K_UNET);
    conv(&em, &s, "conv_in", "input_blocks.0.0", c0, u->in_channels, u->conv_in_kernel);

    int out = c0;
    for (int l = 0; l < L; l++) {
        int in = out;
        out = u->block_out_channels[l];
        for (int j = 0; j < N; j++) {
            int k = 1 + l * (N + 1) + j;
            SET(s.in, "unet.down_blocks.%d.resnets.%d", l, j);
            SET(s.sg, K_UNET ".input_blocks.%d.0", k);
            unet_resnet(&em, &s, j ? out : in, out, T);
            if (u->down_has_attn[l]) {
                SET(s.in, "unet.down_blocks.%d.attentions.%d", l, j);
                SET(s.sg, K_UNET ".input_blocks.%d.1", k);
                unet_transformer(&em, &s, u, out, u->down_transformer_layers[l]);
            }
        }
        if (l < L - 1) {
            SET(s.in, "unet.down_blocks.%d.downsamplers.0", l);
            SET(s.sg, K_UNET ".input_blocks.%d.0", 1 + l * (N + 1) + N);
            conv(&em, &s, "conv", "op", out, out, 3);
        }
    }
    int cl = u->block_out_channels[L - 1];
    SET(s.in, "unet.mid_block.resnets.0");
    SET(s.sg, K_UNET ".middle_block.0");
    unet_resnet(&em, &s, cl, cl, T);
    SET(s.in, "unet.mid_block.attentions.0");
    SET(s.sg, K_UNET ".middle_block.1");
    unet_transformer(&em, &s, u, cl, u->mid_transformer_layers);
    SET(s.in, "unet.mid_block.resnets.1");
    SET(s.sg, K_UNET ".middle_block.2");
    unet_resnet(&em, &s, cl, cl, T);

    out = cl;
    for (int i = 0; i < L; i++) {
        int prev = out;
        out = u->block_out_channels[L - 1 - i];
        int in = u->block_out_channels[L - 2 - i < 0 ? 0 : L - 2 - i];
        for (int j = 0; j <= N; j++) {
            int k = i * (N + 1) + j;
            int skip = j == N ? in : out;
            SET(s.in, "unet.up_blocks.%d.resnets.%d", i, j);
            SET(s.sg, K_UNET ".output_blocks.%d.0", k);
            unet_resnet(&em, &s, (j ? out : prev) + skip, out, T);
            if (u->up_has_attn[i]) {
                SET(s.in, "unet.up_blocks.%d.attentions.%d", i, j);
                SET(s.sg, K_UNET ".output_blocks.%d.1", k);
                unet_transformer(&em, &s, u, out, u->up_transformer_layers[i]);
            }
        }
        if (i < L - 1) {
            SET(s.in, "unet.up_blocks.%d.upsamplers.0", i);
            SET(s.sg, K_UNET ".output_blocks.%d.%d", i * (N + 1) + N, u->up_has_attn[i] ? 2 : 1);
            conv(&em, &s, "conv", "conv", out, out, 3);
        }
    }
    SET(s.in, "unet");
    SET(s.sg, K_UNET);
    norm(&em, &s, "conv_norm_out", "out.0", c0);
    conv(&em, &s, "conv_out", "out.2", u->out_channels, c0, u->conv_out_kernel);
}

/* ---- VAE ---------------------------------------------------------------------- */

static void vae_resnet(emitter *em, const scope *s, int cin, int cout) {
    norm(em, s, "norm1", "norm1", cin);
    conv(em, s, "conv1", "conv1", cout, cin, 3);
    norm(em, s, "norm2", "norm2", cout);
    conv(em, s, "conv2", "conv2", cout, cout, 3);
    if (cin != cout) conv(em, s, "conv_shortcut", "nin_shortcut", cout, cin, 1);
}

/* mid block: resnet, attention (Linear inside, 1x1 conv in SGM), resnet */
static void vae_mid(emitter *em, const char *in_prefix, const char *sg_prefix, int ch) {
    scope s;
    SET(s.in, "%s.mid_block.resnets.0", in_prefix);
    SET(s.sg, "%s.mid.block_1", sg_prefix);
    vae_resnet(em, &s, ch, ch);
    SET(s.in, "%s.mid_block.attentions.0", in_prefix);
    SET(s.sg, "%s.mid.attn_1", sg_prefix);
    norm(em, &s, "group_norm", "norm", ch);
    static const char *const in_names[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    static const char *const sg_names[4] = {"q", "k", "v", "proj_out"};
    for (int i = 0; i < 4; i++) {
        char a[64], c[64];
        int64_t w[2] = {ch, ch}, w4[4] = {ch, ch, 1, 1}, bsh[1] = {ch};
        SET(a, "%s.weight", in_names[i]);
        SET(c, "%s.weight", sg_names[i]);
        param(em, &s, a, c, SDXL_XFORM_RESHAPE, 2, w, 4, w4, 0, 0);
        SET(a, "%s.bias", in_names[i]);
        SET(c, "%s.bias", sg_names[i]);
        param(em, &s, a, c, SDXL_XFORM_NONE, 1, bsh, 0, NULL, 0, 0);
    }
    SET(s.in, "%s.mid_block.resnets.1", in_prefix);
    SET(s.sg, "%s.mid.block_2", sg_prefix);
    vae_resnet(em, &s, ch, ch);
}

static void emit_vae(sdxl_naming *b, const sdxl_vae_config *v) {
    emitter em = {b, SDXL_COMP_VAE};
    int L = v->num_levels, N = v->layers_per_block, lat = v->latent_channels;
    int c0 = v->block_out_channels[0], cl = v->block_out_channels[L - 1];
    scope s;
    SET(s.in, "vae.encoder");
    SET(s.sg, K_VAE ".encoder");
    conv(&em, &s, "conv_in", "conv_in", c0, v->in_channels, 3);
    int out = c0;
    for (int i = 0; i < L; i++) {
        int in = out;
        out = v->block_out_channels[i];
        for (int j = 0; j < N; j++) {
            SET(s.in, "vae.encoder.down_blocks.%d.resnets.%d", i, j);
            SET(s.sg, K_VAE ".encoder.down.%d.block.%d", i, j);
            vae_resnet(&em, &s, j ? out : in, out);
        }
        if (i < L - 1) {
            SET(s.in, "vae.encoder.down_blocks.%d.downsamplers.0", i);
            SET(s.sg, K_VAE ".encoder.down.%d.downsample", i);
            conv(&em, &s, "conv", "conv", out, out, 3);
        }
    }
    vae_mid(&em, "vae.encoder", K_VAE ".encoder", cl);
    SET(s.in, "vae.encoder");
    SET(s.sg, K_VAE ".encoder");
    norm(&em, &s, "conv_norm_out", "norm_out", cl);
    conv(&em, &s, "conv_out", "conv_out", 2 * lat, cl, 3); /* mean and logvar */
    SET(s.in, "vae");
    SET(s.sg, K_VAE);
    conv(&em, &s, "quant_conv", "quant_conv", 2 * lat, 2 * lat, 1);
    conv(&em, &s, "post_quant_conv", "post_quant_conv", lat, lat, 1);

    SET(s.in, "vae.decoder");
    SET(s.sg, K_VAE ".decoder");
    conv(&em, &s, "conv_in", "conv_in", cl, lat, 3);
    vae_mid(&em, "vae.decoder", K_VAE ".decoder", cl);
    out = cl;
    for (int i = 0; i < L; i++) {
        int prev = out;
        out = v->block_out_channels[L - 1 - i];
        for (int j = 0; j <= N; j++) {
            SET(s.in, "vae.decoder.up_blocks.%d.resnets.%d", i, j);
            SET(s.sg, K_VAE ".decoder.up.%d.block.%d", L - 1 - i, j);
            vae_resnet(&em, &s, j ? out : prev, out);
        }
        if (i < L - 1) {
            SET(s.in, "vae.decoder.up_blocks.%d.upsamplers.0", i);
            SET(s.sg, K_VAE ".decoder.up.%d.upsample", L - 1 - i);
            conv(&em, &s, "conv", "conv", out, out, 3);
        }
    }
    SET(s.in, "vae.decoder");
    SET(s.sg, K_VAE ".decoder");
    norm(&em, &s, "conv_norm_out", "norm_out", c0);
    conv(&em, &s, "conv_out", "conv_out", v->out_channels, c0, 3);
}

/* ---- text encoders ------------------------------------------------------------- */

static void emit_te1(sdxl_naming *b, const sdxl_te_config *t) {
    emitter em = {b, SDXL_COMP_TE1};
    int H = t->hidden_size, I = t->intermediate_size;
    scope s;
    SET(s.in, "te1.text_model");
    SET(s.sg, K_TE1);
    plain(&em, &s, "embeddings.token_embedding.weight", "embeddings.token_embedding.weight", 2, t->vocab_size,
          H, 1, 1);
    plain(&em, &s, "embeddings.position_embedding.weight", "embeddings.position_embedding.weight", 2,
          t->max_position_embeddings, H, 1, 1);
    for (int l = 0; l < t->num_layers; l++) {
        SET(s.in, "te1.text_model.encoder.layers.%d", l);
        SET(s.sg, K_TE1 ".encoder.layers.%d", l);
        linear(&em, &s, "self_attn.k_proj", "self_attn.k_proj", H, H, true);
        linear(&em, &s, "self_attn.v_proj", "self_attn.v_proj", H, H, true);
        linear(&em, &s, "self_attn.q_proj", "self_attn.q_proj", H, H, true);
        linear(&em, &s, "self_attn.out_proj", "self_attn.out_proj", H, H, true);
        norm(&em, &s, "layer_norm1", "layer_norm1", H);
        linear(&em, &s, "mlp.fc1", "mlp.fc1", I, H, true);
        linear(&em, &s, "mlp.fc2", "mlp.fc2", H, I, true);
        norm(&em, &s, "layer_norm2", "layer_norm2", H);
    }
    SET(s.in, "te1.text_model");
    SET(s.sg, K_TE1);
    norm(&em, &s, "final_layer_norm", "final_layer_norm", H);
}

static void emit_te2(sdxl_naming *b, const sdxl_te_config *t) {
    emitter em = {b, SDXL_COMP_TE2};
    int64_t H = t->hidden_size, I = t->intermediate_size;
    scope s;
    SET(s.in, "te2.text_model");
    SET(s.sg, K_TE2);
    plain(&em, &s, "embeddings.token_embedding.weight", "token_embedding.weight", 2, t->vocab_size, H, 1, 1);
    plain(&em, &s, "embeddings.position_embedding.weight", "positional_embedding", 2,
          t->max_position_embeddings, H, 1, 1);
    for (int l = 0; l < t->num_layers; l++) {
        SET(s.in, "te2.text_model.encoder.layers.%d", l);
        SET(s.sg, K_TE2 ".transformer.resblocks.%d", l);
        /* OpenCLIP's nn.MultiheadAttention keeps q;k;v stacked on dim 0 */
        static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
        for (int k = 0; k < 3; k++) {
            char a[64];
            int64_t w[2] = {H, H}, ws[2] = {3 * H, H}, bb[1] = {H}, bs[1] = {3 * H};
            SET(a, "self_attn.%s.weight", qkv[k]);
            param(&em, &s, a, "attn.in_proj_weight", SDXL_XFORM_ROWS, 2, w, 2, ws, k * H, (k + 1) * H);
            SET(a, "self_attn.%s.bias", qkv[k]);
            param(&em, &s, a, "attn.in_proj_bias", SDXL_XFORM_ROWS, 1, bb, 1, bs, k * H, (k + 1) * H);
        }
        linear(&em, &s, "self_attn.out_proj", "attn.out_proj", H, H, true);
        norm(&em, &s, "layer_norm1", "ln_1", H);
        linear(&em, &s, "mlp.fc1", "mlp.c_fc", I, H, true);
        linear(&em, &s, "mlp.fc2", "mlp.c_proj", H, I, true);
        norm(&em, &s, "layer_norm2", "ln_2", H);
    }
    SET(s.in, "te2.text_model");
    SET(s.sg, K_TE2);
    norm(&em, &s, "final_layer_norm", "ln_final", H);
    SET(s.in, "te2");
    int64_t P = t->projection_dim, w[2] = {P, H}, ws[2] = {H, P};
    param(&em, &s, "text_projection.weight", "text_projection", SDXL_XFORM_TRANSPOSE, 2, w, 2, ws, 0, 0);
}

/* ---- public ------------------------------------------------------------------------ */

sdxl_status sdxl_naming_create(const sdxl_model_config *cfg, sdxl_naming **out, sdxl_error *err) {
    if (!cfg || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_naming_create: NULL argument");
    *out = NULL;
    sdxl_error verr;
    if (sdxl_model_config_validate(cfg, "config", &verr))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_naming_create: invalid config: %s",
                              verr.msg);
    sdxl_naming *b = sdxl_calloc(1, sizeof *b);
    if (!b)
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "building the weight naming: out of memory");
    emit_unet(b, &cfg->unet);
    emit_vae(b, &cfg->vae);
    emit_te1(b, &cfg->te[0]);
    emit_te2(b, &cfg->te[1]);
    for (size_t i = 0; i < b->nm && !b->st; i++)
        if (b->m[i].weight < 0) b->st = SDXL_STATUS_INTERNAL;
    if (b->st) {
        sdxl_status st = b->st;
        sdxl_naming_free(b);
        return sdxl_error_set(err, st, "building the weight naming: %s",
                              st == SDXL_STATUS_OUT_OF_MEMORY ? "out of memory"
                                                              : "inconsistent tables (a bug)");
    }
    *out = b;
    return SDXL_STATUS_OK;
}

void sdxl_naming_free(sdxl_naming *n) {
    if (!n) return;
    for (chunk *c = n->pool; c;) {
        chunk *next = c->next;
        sdxl_free(c);
        c = next;
    }
    shash_free(&n->by_name);
    shash_free(&n->by_sgm_key);
    shash_free(&n->mod_by_path);
    shash_free(&n->mod_by_sgm);
    shash_free(&n->mod_by_kohya);
    sdxl_free(n->e);
    sdxl_free(n->m);
    sdxl_free(n);
}

size_t sdxl_naming_count(const sdxl_naming *n) {
    return n ? n->n : 0;
}

size_t sdxl_naming_count_component(const sdxl_naming *n, sdxl_component c) {
    return n && (unsigned)c < SDXL_COMP_COUNT_ ? n->comp_count[c] : 0;
}

const sdxl_name_entry *sdxl_naming_at(const sdxl_naming *n, size_t i) {
    return n && i < n->n ? &n->e[i] : NULL;
}

long sdxl_naming_index(const sdxl_naming *n, const sdxl_name_entry *e) {
    if (!n || !e || e < n->e || e >= n->e + n->n) return -1;
    return (long)(e - n->e);
}

const sdxl_name_entry *sdxl_naming_find(const sdxl_naming *n, const char *name) {
    if (!n) return NULL;
    int32_t i = shash_get(&n->by_name, name);
    return i < 0 ? NULL : &n->e[i];
}

const sdxl_name_entry *sdxl_naming_find_source(const sdxl_naming *n, sdxl_layout layout, sdxl_component comp,
                                               const char *key) {
    if (!n || !key) return NULL;
    if (layout == SDXL_LAYOUT_SGM) {
        int32_t i = shash_get(&n->by_sgm_key, key);
        return i < 0 ? NULL : &n->e[i];
    }
    if (layout != SDXL_LAYOUT_DIFFUSERS || (unsigned)comp >= SDXL_COMP_COUNT_) return NULL;
    char name[512];
    int k = snprintf(name, sizeof name, "%s.%s", comp_prefix[comp], key);
    if (k < 0 || (size_t)k >= sizeof name) return NULL;
    return sdxl_naming_find(n, name);
}

size_t sdxl_naming_module_count(const sdxl_naming *n) {
    return n ? n->nm : 0;
}

const sdxl_name_module *sdxl_naming_module_at(const sdxl_naming *n, size_t i) {
    return n && i < n->nm ? &n->m[i] : NULL;
}

const sdxl_name_module *sdxl_naming_module(const sdxl_naming *n, const char *path) {
    if (!n) return NULL;
    int32_t i = shash_get(&n->mod_by_path, path);
    return i < 0 ? NULL : &n->m[i];
}

const sdxl_name_module *sdxl_naming_module_by_sgm(const sdxl_naming *n, const char *path) {
    if (!n || !path) return NULL;
    int32_t i = shash_get(&n->mod_by_sgm, path);
    if (i < 0 && strncmp(path, K_UNET ".", sizeof K_UNET) != 0) {
        char full[512];
        int k = snprintf(full, sizeof full, K_UNET ".%s", path);
        if (k > 0 && (size_t)k < sizeof full) i = shash_get(&n->mod_by_sgm, full);
    }
    return i < 0 ? NULL : &n->m[i];
}

const sdxl_name_module *sdxl_naming_module_by_kohya(const sdxl_naming *n, const char *name) {
    if (!n) return NULL;
    int32_t i = shash_get(&n->mod_by_kohya, name);
    return i < 0 ? NULL : &n->m[i];
}
