/* clip.c - CLIP text encoder forward pass (see clip.h). */
#include "model/clip.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

/* Activation buffers, all [B*T, width] f32 except ffn [B*T, inter]. */
typedef struct {
    float *x, *h, *q, *k, *v, *a, *ffn, *pos;
    int32_t *pos_ids;
} clip_bufs;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t sdxl_clip_arena_bytes(const sdxl_te_config *cfg, int B, int T) {
    size_t bt = (size_t)B * (size_t)T, H = (size_t)cfg->hidden_size;
    return 6 * align64(bt * H * 4) + align64(bt * (size_t)cfg->intermediate_size * 4) +
           align64((size_t)T * H * 4) + align64((size_t)T * 4) + align64((size_t)B * H * 4);
}

typedef struct {
    sdxl_backend *be;
    const sdxl_weights *w;
    const char *prefix; /* "te1" / "te2" */
    sdxl_error *err;
} clip_ctx;

/* Weight lookup: prefix + "." + printf-formatted rest. */
static const sdxl_tensor *W(clip_ctx *c, const char *fmt, int layer) {
    char rest[160], name[192];
    snprintf(rest, sizeof rest, fmt, layer);
    snprintf(name, sizeof name, "%s.%s", c->prefix, rest);
    const sdxl_tensor *t = NULL;
    sdxl_weights_require(c->w, name, &t, c->err);
    return t;
}

static sdxl_status op_fail(clip_ctx *c, const char *what) {
    return sdxl_error_set(c->err, c->be->err.status ? c->be->err.status : SDXL_STATUS_INTERNAL,
                          "%s: %s: %s", c->prefix, what, sdxl_backend_last_error(c->be));
}

#define TRY(call, what)                                                                            \
    do {                                                                                           \
        if ((call) != SDXL_STATUS_OK) return op_fail(c, what);                                     \
    } while (0)
#define NEED(t)                                                                                    \
    do {                                                                                           \
        if (!(t)) return c->err ? c->err->status : SDXL_STATUS_NOT_FOUND;                          \
    } while (0)

/* out [M,N] = in [M,K] · Wᵀ + b for the module "<prefix>.<path>" (bias optional). */
static sdxl_status lin(clip_ctx *c, const char *path, int layer, const sdxl_tensor *in, sdxl_tensor *out) {
    char wn[160], bn[160];
    snprintf(wn, sizeof wn, "%s.weight", path);
    snprintf(bn, sizeof bn, "%s.bias", path);
    const sdxl_tensor *wt = W(c, wn, layer);
    NEED(wt);
    const sdxl_tensor *bt = W(c, bn, layer);
    NEED(bt);
    TRY(c->be->ops->linear(c->be, in, wt, bt, out), path);
    return SDXL_STATUS_OK;
}

static sdxl_status ln(clip_ctx *c, const char *path, int layer, float eps, const sdxl_tensor *in,
                      sdxl_tensor *out) {
    char wn[160], bn[160];
    snprintf(wn, sizeof wn, "%s.weight", path);
    snprintf(bn, sizeof bn, "%s.bias", path);
    const sdxl_tensor *g = W(c, wn, layer), *b = W(c, bn, layer);
    NEED(g);
    NEED(b);
    TRY(c->be->ops->layer_norm(c->be, in, g, b, eps, out), path);
    return SDXL_STATUS_OK;
}

static sdxl_unary_op act_op(sdxl_act a) {
    switch (a) {
    case SDXL_ACT_QUICK_GELU: return SDXL_UNARY_QUICK_GELU;
    case SDXL_ACT_GELU_TANH: return SDXL_UNARY_GELU_TANH;
    case SDXL_ACT_SILU: return SDXL_UNARY_SILU;
    default: return SDXL_UNARY_GELU_ERF;
    }
}

sdxl_status sdxl_clip_encode(sdxl_backend *be, const sdxl_weights *w, sdxl_component comp, const int32_t *ids,
                             int B, int T, sdxl_arena *arena, float *hidden, float *pooled, sdxl_error *err) {
    if (comp != SDXL_COMP_TE1 && comp != SDXL_COMP_TE2)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "clip: component %d is not a text encoder", (int)comp);
    const sdxl_te_config *cfg = &sdxl_weights_config(w)->te[comp == SDXL_COMP_TE1 ? 0 : 1];
    clip_ctx cc = {be, w, sdxl_component_prefix(comp), err}, *c = &cc;
    if (B < 1 || T < 1 || T > cfg->max_position_embeddings)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: %d sequences of %d tokens (1..%d allowed)",
                              c->prefix, B, T, cfg->max_position_embeddings);
    const int H = cfg->hidden_size, I = cfg->intermediate_size;
    const int64_t BT = (int64_t)B * T;
    const float eps = (float)cfg->layer_norm_eps;
    /* layers to run: through hidden_state_index for `hidden`, all of them for `pooled` */
    int run = pooled ? cfg->num_layers : cfg->hidden_state_index;
    if (cfg->hidden_state_index < 0 || cfg->hidden_state_index > cfg->num_layers)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: hidden_state_index %d outside 0..%d", c->prefix,
                              cfg->hidden_state_index, cfg->num_layers);

    size_t mark = sdxl_arena_mark(arena);
    clip_bufs b;
    b.x = sdxl_arena_alloc(arena, (size_t)(BT * H) * 4);
    b.h = sdxl_arena_alloc(arena, (size_t)(BT * H) * 4);
    b.q = sdxl_arena_alloc(arena, (size_t)(BT * H) * 4);
    b.k = sdxl_arena_alloc(arena, (size_t)(BT * H) * 4);
    b.v = sdxl_arena_alloc(arena, (size_t)(BT * H) * 4);
    b.a = sdxl_arena_alloc(arena, (size_t)(BT * H) * 4);
    b.ffn = sdxl_arena_alloc(arena, (size_t)(BT * I) * 4);
    b.pos = sdxl_arena_alloc(arena, (size_t)T * (size_t)H * 4);
    b.pos_ids = sdxl_arena_alloc(arena, (size_t)T * 4);
    if (!b.x || !b.h || !b.q || !b.k || !b.v || !b.a || !b.ffn || !b.pos || !b.pos_ids) {
        sdxl_arena_reset(arena, mark);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: arena too small for %d x %d tokens", c->prefix,
                              B, T);
    }
    sdxl_status st = SDXL_STATUS_OK;
    sdxl_tensor x = sdxl_tensor_3d(b.x, SDXL_DTYPE_F32, B, T, H);   /* residual stream [B,T,H] */
    sdxl_tensor hh = sdxl_tensor_3d(b.h, SDXL_DTYPE_F32, B, T, H);  /* normed input */
    sdxl_tensor q = sdxl_tensor_3d(b.q, SDXL_DTYPE_F32, B, T, H);
    sdxl_tensor k = sdxl_tensor_3d(b.k, SDXL_DTYPE_F32, B, T, H);
    sdxl_tensor v = sdxl_tensor_3d(b.v, SDXL_DTYPE_F32, B, T, H);
    sdxl_tensor a = sdxl_tensor_3d(b.a, SDXL_DTYPE_F32, B, T, H);
    sdxl_tensor ffn = sdxl_tensor_3d(b.ffn, SDXL_DTYPE_F32, B, T, I);

    /* ---- embeddings: x = tok[ids] + pos[0..T) ---- */
    {
        const sdxl_tensor *tok = W(c, "text_model.embeddings.token_embedding.weight", 0);
        const sdxl_tensor *pos = W(c, "text_model.embeddings.position_embedding.weight", 0);
        if (!tok || !pos) {
            st = err ? err->status : SDXL_STATUS_NOT_FOUND;
            goto out;
        }
        sdxl_tensor tid = sdxl_tensor_1d((void *)ids, SDXL_DTYPE_I32, BT);
        sdxl_tensor x2 = sdxl_tensor_2d(b.x, SDXL_DTYPE_F32, BT, H);
        if (be->ops->embedding(be, tok, &tid, &x2) != SDXL_STATUS_OK) {
            st = sdxl_error_set(err, be->err.status, "%s: token ids: %s", c->prefix, sdxl_backend_last_error(be));
            goto out;
        }
        for (int i = 0; i < T; i++) b.pos_ids[i] = i;
        sdxl_tensor pid = sdxl_tensor_1d(b.pos_ids, SDXL_DTYPE_I32, T);
        sdxl_tensor pe = sdxl_tensor_2d(b.pos, SDXL_DTYPE_F32, T, H); /* broadcast over B */
        if (be->ops->embedding(be, pos, &pid, &pe) || be->ops->binary(be, SDXL_BINARY_ADD, &x, &pe, &x)) {
            st = op_fail(c, "position embedding");
            goto out;
        }
    }

    /* ---- encoder layers ---- */
    sdxl_attention_params ap = {.heads = cfg->num_heads, .scale = 1.0f / sqrtf((float)(H / cfg->num_heads)),
                                .causal = true};
    for (int l = 0; l < run; l++) {
        if (l == cfg->hidden_state_index && hidden) memcpy(hidden, b.x, (size_t)(BT * H) * 4);
        if ((st = ln(c, "text_model.encoder.layers.%d.layer_norm1", l, eps, &x, &hh)) ||
            (st = lin(c, "text_model.encoder.layers.%d.self_attn.q_proj", l, &hh, &q)) ||
            (st = lin(c, "text_model.encoder.layers.%d.self_attn.k_proj", l, &hh, &k)) ||
            (st = lin(c, "text_model.encoder.layers.%d.self_attn.v_proj", l, &hh, &v)))
            goto out;
        if (be->ops->attention(be, &q, &k, &v, &ap, &a)) {
            st = op_fail(c, "self-attention");
            goto out;
        }
        if ((st = lin(c, "text_model.encoder.layers.%d.self_attn.out_proj", l, &a, &q))) goto out;
        if (be->ops->binary(be, SDXL_BINARY_ADD, &x, &q, &x)) {
            st = op_fail(c, "residual");
            goto out;
        }
        if ((st = ln(c, "text_model.encoder.layers.%d.layer_norm2", l, eps, &x, &hh)) ||
            (st = lin(c, "text_model.encoder.layers.%d.mlp.fc1", l, &hh, &ffn)))
            goto out;
        if (be->ops->unary(be, act_op(cfg->hidden_act), &ffn, &ffn)) {
            st = op_fail(c, "mlp activation");
            goto out;
        }
        if ((st = lin(c, "text_model.encoder.layers.%d.mlp.fc2", l, &ffn, &q))) goto out;
        if (be->ops->binary(be, SDXL_BINARY_ADD, &x, &q, &x)) {
            st = op_fail(c, "residual");
            goto out;
        }
    }
    if (run == cfg->hidden_state_index && hidden) memcpy(hidden, b.x, (size_t)(BT * H) * 4);

    /* ---- pooled: final LN on the eos row of each sequence, then the projection ---- */
    if (pooled) {
        float *rows = b.h; /* [B,H] gathered rows (b.h is free now) */
        for (int s = 0; s < B; s++) {
            const int32_t *id = ids + (int64_t)s * T;
            int at = T - 1;
            if (cfg->legacy_pooling) {
                at = 0;
                for (int i = 1; i < T; i++)
                    if (id[i] > id[at]) at = i;
            } else {
                for (int i = 0; i < T; i++)
                    if (id[i] == cfg->eos_token_id) {
                        at = i;
                        break;
                    }
            }
            memcpy(rows + (int64_t)s * H, b.x + ((int64_t)s * T + at) * H, (size_t)H * 4);
        }
        sdxl_tensor r = sdxl_tensor_2d(rows, SDXL_DTYPE_F32, B, H);
        sdxl_tensor rn = sdxl_tensor_2d(cfg->with_projection ? b.q : pooled, SDXL_DTYPE_F32, B, H);
        if ((st = ln(c, "text_model.final_layer_norm", 0, eps, &r, &rn))) goto out;
        if (cfg->with_projection) {
            const sdxl_tensor *proj = W(c, "text_projection.weight", 0);
            if (!proj) {
                st = err ? err->status : SDXL_STATUS_NOT_FOUND;
                goto out;
            }
            sdxl_tensor po = sdxl_tensor_2d(pooled, SDXL_DTYPE_F32, B, cfg->projection_dim);
            if (be->ops->linear(be, &rn, proj, NULL, &po)) {
                st = op_fail(c, "text_projection");
                goto out;
            }
        }
    }
out:
    sdxl_arena_reset(arena, mark);
    return st;
}
