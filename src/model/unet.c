/* unet.c - SDXL UNet2DConditionModel forward pass (see unet.h).
 *
 * One function walks the network in diffusers' order. It runs in two modes:
 * for real (ops called, weights read) or "dry" on a measuring arena (only
 * the allocations happen), which is how sdxl_unet_arena_bytes sizes the
 * arena: the plan is the forward itself, so they cannot drift apart.
 *
 * Arena layout, bottom to top (a stack; marks free everything above them):
 *
 *   context [B,Tc,D] | act(temb) [B,Te] | hbuf | skip 0 | skip 1 | ... | transient scratch
 *
 * hbuf holds "the current hidden state" wherever it is not itself a skip:
 * the latent sample before conv_in, the mid block, and every up block (the
 * concatenation [hidden | skip] is copied out of it, so the resnet can write
 * its output back into it). Skips are pushed on the way down, each the
 * output of a resnet (+ transformer, applied in place) or a downsampler, and
 * popped on the way up in exactly the reverse order (diffusers pops
 * res_hidden_states from the end), which frees their memory for the higher-
 * resolution up blocks. Scratch of one module (resnet temporaries, the
 * transformer's token buffers) lives above the top skip and is released when
 * the module returns. On an error a function returns at once without
 * releasing its scratch; sdxl_unet_forward resets the arena to its entry mark.
 */
#include "model/unet.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* skip connections: conv_in + per level (layers_per_block resnets + a downsampler) */
#define MAX_SKIPS (1 + SDXL_MAX_LEVELS * (SDXL_CFG_MAX_LAYERS_PER_BLOCK + 1))
#define MODULE_MAX 160 /* "up_blocks.3.attentions.2.transformer_blocks.9.attn2.to_out.0" fits easily */

typedef struct {
    sdxl_tensor t; /* [B, C, H, W] */
    size_t mark;   /* arena mark before it was allocated: popping it resets to this */
} unet_skip;

typedef struct {
    sdxl_backend *be;
    const sdxl_backend_ops *ops;
    const sdxl_weights *w;
    const sdxl_unet_config *cfg;
    sdxl_arena *arena;
    bool dry; /* measuring: allocate only, call no op, read no weight */
    const sdxl_unet_hooks *hooks;
    sdxl_error *err;
    int B;
    sdxl_tensor ctx;  /* encoder_hidden_states [B, Tc, cross_attention_dim] */
    sdxl_tensor temb; /* act(temb) [B, time_embed_dim]: what every resnet's time_emb_proj reads */
    float *hbuf;      /* the current hidden state (see the layout above) */
    unet_skip skips[MAX_SKIPS];
    int n_skips;
} unet_ctx;

/* ---- errors, weights, allocation ------------------------------------------------------ */

static sdxl_status op_fail(unet_ctx *c, const char *where) {
    return sdxl_error_set(c->err, c->be->err.status ? c->be->err.status : SDXL_STATUS_INTERNAL,
                          "unet: %s: %s", where, sdxl_backend_last_error(c->be));
}

#define TRY(expr)                                                                                            \
    do {                                                                                                     \
        sdxl_status st_ = (expr);                                                                            \
        if (st_ != SDXL_STATUS_OK) return st_;                                                               \
    } while (0)

/* Call an op unless measuring; a failure names `where`. */
#define OP(call, where)                                                                                      \
    do {                                                                                                     \
        if (!c->dry && (call) != SDXL_STATUS_OK) return op_fail(c, where);                                   \
    } while (0)

/* "unet.<module>.<suffix>". Required weights are NOT_FOUND when absent; an
 * optional one (a bias) gives NULL. Nothing is looked up when measuring. */
static sdxl_status weight(unet_ctx *c, const char *module, const char *suffix, bool required,
                          const sdxl_tensor **out) {
    *out = NULL;
    if (c->dry) return SDXL_STATUS_OK;
    char name[MODULE_MAX + 32];
    snprintf(name, sizeof name, "unet.%s.%s", module, suffix);
    if (required) return sdxl_weights_require(c->w, name, out, c->err);
    *out = sdxl_weights_get(c->w, name);
    return SDXL_STATUS_OK;
}

static const char *fmt_path(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *fmt_path(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, MODULE_MAX, fmt, ap);
    va_end(ap);
    return buf;
}

/* A tensor of `nd` dims from the arena (f32). */
static sdxl_status alloc_t(unet_ctx *c, sdxl_tensor *t, int nd, int64_t d0, int64_t d1, int64_t d2,
                           int64_t d3, const char *what) {
    const int64_t shape[4] = {d0, d1, d2, d3};
    int64_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= shape[i]; /* each dim is capped: no overflow (see check_shape) */
    void *p = sdxl_arena_alloc(c->arena, (size_t)n * sizeof(float));
    if (!p) {
        if (sdxl_arena_is_measuring(c->arena))
            return sdxl_error_set(c->err, SDXL_STATUS_OUT_OF_MEMORY,
                                  "unet: %s: activations exceed the address space", what);
        return sdxl_error_set(
            c->err, SDXL_STATUS_OUT_OF_MEMORY,
            "unet: arena too small at %s (%zu of %zu bytes used, %lld more needed): size it "
            "with sdxl_unet_arena_bytes",
            what, sdxl_arena_used(c->arena), sdxl_arena_capacity(c->arena), (long long)n * 4);
    }
    *t = sdxl_tensor_make(p, SDXL_DTYPE_F32, nd, shape);
    return SDXL_STATUS_OK;
}

/* The same memory seen with another shape (element count must not grow). */
static sdxl_tensor view(const sdxl_tensor *t, int nd, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    const int64_t shape[4] = {d0, d1, d2, d3};
    return sdxl_tensor_make(t->data, SDXL_DTYPE_F32, nd, shape);
}

static void hook(unet_ctx *c, const sdxl_tensor *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void hook(unet_ctx *c, const sdxl_tensor *t, const char *fmt, ...) {
    if (c->dry || !c->hooks || !c->hooks->fn) return;
    char name[MODULE_MAX + 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    c->hooks->fn(c->hooks->user_data, name, t);
}

/* ---- module helpers ------------------------------------------------------------------- */

/* y = x·Wᵀ (+ b) for the Linear `module`. */
static sdxl_status linear(unet_ctx *c, const char *module, bool bias, const sdxl_tensor *x, sdxl_tensor *y) {
    const sdxl_tensor *w, *b;
    TRY(weight(c, module, "weight", true, &w));
    TRY(weight(c, module, "bias", bias, &b));
    OP(c->ops->linear(c->be, x, w, b, y), module);
    return SDXL_STATUS_OK;
}

/* Conv2d `module` (with bias), square kernel k, symmetric padding (k-1)/2. */
static sdxl_status conv(unet_ctx *c, const char *module, int k, int stride, const sdxl_tensor *x,
                        sdxl_tensor *y) {
    const sdxl_tensor *w, *b;
    TRY(weight(c, module, "weight", true, &w));
    TRY(weight(c, module, "bias", true, &b));
    const int p = (k - 1) / 2;
    sdxl_conv2d_params cp = {stride, stride, p, p, p, p};
    OP(c->ops->conv2d(c->be, x, w, b, &cp, y), module);
    return SDXL_STATUS_OK;
}

static sdxl_unary_op act_op(sdxl_act a) {
    switch (a) {
    case SDXL_ACT_QUICK_GELU: return SDXL_UNARY_QUICK_GELU;
    case SDXL_ACT_GELU_TANH: return SDXL_UNARY_GELU_TANH;
    case SDXL_ACT_GELU: return SDXL_UNARY_GELU_ERF;
    default: return SDXL_UNARY_SILU;
    }
}

/* The config's activation (act_fn), in place. */
static sdxl_status act(unet_ctx *c, sdxl_tensor *x, const char *where) {
    OP(c->ops->unary(c->be, act_op(c->cfg->act_fn), x, x), where);
    return SDXL_STATUS_OK;
}

/* GroupNorm `module` (norm_num_groups groups) then, if `with_act`, act_fn
 * (fused into the norm when it is SiLU, as in every SDXL config). */
static sdxl_status group_norm(unet_ctx *c, const char *module, float eps, bool with_act, const sdxl_tensor *x,
                              sdxl_tensor *y) {
    const sdxl_tensor *g, *b;
    TRY(weight(c, module, "weight", true, &g));
    TRY(weight(c, module, "bias", true, &b));
    const bool fuse = with_act && c->cfg->act_fn == SDXL_ACT_SILU;
    OP(c->ops->group_norm(c->be, x, g, b, c->cfg->norm_num_groups, eps, fuse, y), module);
    if (with_act && !fuse) TRY(act(c, y, module));
    return SDXL_STATUS_OK;
}

static sdxl_status layer_norm(unet_ctx *c, const char *module, const sdxl_tensor *x, sdxl_tensor *y) {
    const sdxl_tensor *g, *b;
    TRY(weight(c, module, "weight", true, &g));
    TRY(weight(c, module, "bias", true, &b));
    /* BasicTransformerBlock's LayerNorms keep torch's default eps (1e-5), whatever norm_eps says */
    OP(c->ops->layer_norm(c->be, x, g, b, 1e-5f, y), module);
    return SDXL_STATUS_OK;
}

static sdxl_status add_inplace(unet_ctx *c, sdxl_tensor *a, const sdxl_tensor *b, const char *where) {
    OP(c->ops->binary(c->be, SDXL_BINARY_ADD, a, b, a), where);
    return SDXL_STATUS_OK;
}

/* ---- ResnetBlock2D ------------------------------------------------------------------------
 * out = shortcut(x) + conv2(act(GN2(conv1(act(GN1(x))) + time_emb_proj(act(temb)))))
 * with shortcut a 1×1 conv when the channel count changes, else identity.
 * x [B,Cin,H,W], out [B,Cout,H,W] (allocated by the caller; may be x itself
 * when there is no shortcut). `x_scratch`: the caller no longer needs x, so it
 * is normalised in place and reused for conv2's output (the up blocks, whose
 * x is the concatenation [hidden | skip]); else x is left untouched. */
static sdxl_status resnet(unet_ctx *c, const char *mod, sdxl_tensor *x, bool x_scratch, sdxl_tensor *out) {
    const int64_t B = x->ne[0], Cin = x->ne[1], H = x->ne[2], W = x->ne[3], Cout = out->ne[1];
    const float eps = (float)c->cfg->norm_eps;
    const bool shortcut = Cin != Cout;
    char m[MODULE_MAX];
    const size_t mark = sdxl_arena_mark(c->arena);

    /* time_emb_proj(act(temb)) [B,Cout], added per channel as [B,Cout,1,1] */
    sdxl_tensor tp, c1, t2;
    TRY(alloc_t(c, &tp, 2, B, Cout, 1, 1, mod));
    TRY(linear(c, fmt_path(m, "%s.time_emb_proj", mod), true, &c->temb, &tp));
    const sdxl_tensor tp4 = view(&tp, 4, B, Cout, 1, 1);

    if (x_scratch && shortcut) {
        TRY(conv(c, fmt_path(m, "%s.conv_shortcut", mod), 1, 1, x, out));
        TRY(group_norm(c, fmt_path(m, "%s.norm1", mod), eps, true, x, x));
        TRY(alloc_t(c, &c1, 4, B, Cout, H, W, mod)); /* [B,Cout,H,W] */
        TRY(conv(c, fmt_path(m, "%s.conv1", mod), 3, 1, x, &c1));
        TRY(add_inplace(c, &c1, &tp4, mod));
        TRY(group_norm(c, fmt_path(m, "%s.norm2", mod), eps, true, &c1, &c1));
        if (Cout <= Cin) /* conv2's output fits in x's memory (always so in up blocks) */
            t2 = view(x, 4, B, Cout, H, W);
        else
            TRY(alloc_t(c, &t2, 4, B, Cout, H, W, mod));
        TRY(conv(c, fmt_path(m, "%s.conv2", mod), 3, 1, &c1, &t2));
        TRY(add_inplace(c, out, &t2, mod));
    } else {
        sdxl_tensor t1; /* [B,max(Cin,Cout),H,W]: act(GN1(x)), later conv2's output */
        TRY(alloc_t(c, &t1, 4, B, Cin > Cout ? Cin : Cout, H, W, mod));
        sdxl_tensor t1x = view(&t1, 4, B, Cin, H, W);
        t2 = view(&t1, 4, B, Cout, H, W);
        TRY(group_norm(c, fmt_path(m, "%s.norm1", mod), eps, true, x, &t1x));
        TRY(alloc_t(c, &c1, 4, B, Cout, H, W, mod)); /* [B,Cout,H,W] */
        TRY(conv(c, fmt_path(m, "%s.conv1", mod), 3, 1, &t1x, &c1));
        TRY(add_inplace(c, &c1, &tp4, mod));
        TRY(group_norm(c, fmt_path(m, "%s.norm2", mod), eps, true, &c1, &c1));
        TRY(conv(c, fmt_path(m, "%s.conv2", mod), 3, 1, &c1, &t2));
        if (shortcut) { /* c1 is free again: it takes the projected input */
            TRY(conv(c, fmt_path(m, "%s.conv_shortcut", mod), 1, 1, x, &c1));
            OP(c->ops->binary(c->be, SDXL_BINARY_ADD, &c1, &t2, out), mod);
        } else {
            OP(c->ops->binary(c->be, SDXL_BINARY_ADD, x, &t2, out), mod); /* out may be x */
        }
    }
    sdxl_arena_reset(c->arena, mark);
    return SDXL_STATUS_OK;
}

/* ---- BasicTransformerBlock -------------------------------------------------------------
 * x [B,T,C] (residual stream, updated in place); n [B,T,C] scratch.
 *   x += to_out(attn(LN1(x)))                      self-attention
 *   x += to_out(attn(LN2(x), context))             cross-attention
 *   x += ff.net.2(geglu(ff.net.0.proj(LN3(x))))    feed-forward
 * Attention scratch: q [B,T,C], k, v [B,Tk,C]; the attention output goes to
 * n, whose content q/k/v have already consumed, and to_out writes into q.
 * The feed-forward runs in row chunks whose [rows,2I] + [rows,I] buffers take
 * no more memory than q, k, v did (rows = B·T/ff_mult; at least 1024, which
 * can exceed that only at small sizes, where memory is plentiful). */
static sdxl_status transformer_block(unet_ctx *c, const char *mod, int heads, sdxl_tensor *x,
                                     sdxl_tensor *n) {
    const int64_t B = x->ne[0], T = x->ne[1], C = x->ne[2], BT = B * T;
    const int64_t Tc = c->ctx.ne[1], I = (int64_t)c->cfg->ff_mult * C;
    /* diffusers' dim_head**-0.5 is a Python double, rounded once to f32 */
    const sdxl_attention_params ap = {
        .heads = heads, .scale = (float)(1.0 / sqrt((double)(C / heads))), .causal = false};
    char m[MODULE_MAX];
    const size_t mark = sdxl_arena_mark(c->arena);

    for (int a = 1; a <= 2; a++) {
        const bool cross = a == 2;
        const sdxl_tensor *kv_in = cross ? &c->ctx : n;
        const int64_t Tk = cross ? Tc : T;
        sdxl_tensor q, k, v;
        TRY(layer_norm(c, fmt_path(m, "%s.norm%d", mod, a), x, n));
        TRY(alloc_t(c, &q, 3, B, T, C, 1, mod));  /* [B,T,C] */
        TRY(alloc_t(c, &k, 3, B, Tk, C, 1, mod)); /* [B,Tk,C] */
        TRY(alloc_t(c, &v, 3, B, Tk, C, 1, mod)); /* [B,Tk,C] */
        TRY(linear(c, fmt_path(m, "%s.attn%d.to_q", mod, a), false, n, &q));
        TRY(linear(c, fmt_path(m, "%s.attn%d.to_k", mod, a), false, kv_in, &k));
        TRY(linear(c, fmt_path(m, "%s.attn%d.to_v", mod, a), false, kv_in, &v));
        OP(c->ops->attention(c->be, &q, &k, &v, &ap, n), fmt_path(m, "%s.attn%d", mod, a));
        TRY(linear(c, fmt_path(m, "%s.attn%d.to_out.0", mod, a), true, n, &q));
        hook(c, &q, "%s.attn%d", mod, a);
        TRY(add_inplace(c, x, &q, mod));
        sdxl_arena_reset(c->arena, mark);
    }

    /* feed-forward on rows [r0, r0+nr) of n = LN3(x); each chunk's output goes
     * back into its own rows of n, which the chunk has already read. At least
     * FF_MIN_ROWS rows per chunk: every chunk widens and packs the whole
     * weight again, and GEMMs of 128 rows ran 40% slower than one of 512
     * (SDXL's level-2 FF, f16 weights); chunks stay B·T/ff_mult rows where
     * memory matters (SDXL 1024²: the plan is unchanged by the floor). */
    enum { FF_MIN_ROWS = 1024 };
    int64_t rows = BT * C / I;
    if (rows < FF_MIN_ROWS) rows = FF_MIN_ROWS;
    if (rows > BT) rows = BT;
    sdxl_tensor p, g;
    TRY(layer_norm(c, fmt_path(m, "%s.norm3", mod), x, n));
    TRY(alloc_t(c, &p, 2, rows, 2 * I, 1, 1, mod)); /* [rows, 2I] */
    TRY(alloc_t(c, &g, 2, rows, I, 1, 1, mod));     /* [rows, I] */
    char m0[MODULE_MAX], m2[MODULE_MAX];
    fmt_path(m0, "%s.ff.net.0.proj", mod);
    fmt_path(m2, "%s.ff.net.2", mod);
    for (int64_t r0 = 0; r0 < BT; r0 += rows) {
        const int64_t nr = BT - r0 < rows ? BT - r0 : rows;
        sdxl_tensor nc = sdxl_tensor_2d((float *)n->data + r0 * C, SDXL_DTYPE_F32, nr, C); /* [nr, C] */
        sdxl_tensor pc = view(&p, 2, nr, 2 * I, 1, 1);                                     /* [nr, 2I] */
        sdxl_tensor gc = view(&g, 2, nr, I, 1, 1);                                         /* [nr, I] */
        TRY(linear(c, m0, true, &nc, &pc));
        OP(c->ops->geglu(c->be, &pc, &gc), m0);
        TRY(linear(c, m2, true, &gc, &nc));
    }
    hook(c, n, "%s.ff", mod);
    TRY(add_inplace(c, x, n, mod));
    sdxl_arena_reset(c->arena, mark);
    return SDXL_STATUS_OK;
}

/* ---- Transformer2DModel ----------------------------------------------------------------
 * h [B,C,H,W] += proj_out(blocks(proj_in(GN(h)))), in place. Two token buffers
 * [B,T,C] (T = H·W) trade roles around the projections, so the transposes
 * between NCHW and tokens never need a third. */
static sdxl_status transformer(unet_ctx *c, const char *mod, int heads, int depth, sdxl_tensor *h) {
    const int64_t B = h->ne[0], C = h->ne[1], H = h->ne[2], W = h->ne[3], T = H * W;
    char m[MODULE_MAX];
    const size_t mark = sdxl_arena_mark(c->arena);
    sdxl_tensor a, b; /* [B,T,C] each */
    TRY(alloc_t(c, &a, 3, B, T, C, 1, mod));
    TRY(alloc_t(c, &b, 3, B, T, C, 1, mod));
    sdxl_tensor a_chw = view(&a, 3, B, C, T, 1), b_chw = view(&b, 3, B, C, T, 1);   /* [B,C,T] */
    sdxl_tensor a_nchw = view(&a, 4, B, C, H, W), b_nchw = view(&b, 4, B, C, H, W); /* [B,C,H,W] */

    /* Transformer2DModel's GroupNorm has eps 1e-6, not the UNet's norm_eps */
    TRY(group_norm(c, fmt_path(m, "%s.norm", mod), 1e-6f, false, h, &a_nchw));
    if (c->cfg->use_linear_projection) {
        OP(c->ops->transpose(c->be, &a_chw, &b), mod); /* [B,C,T] -> [B,T,C] */
        TRY(linear(c, fmt_path(m, "%s.proj_in", mod), true, &b, &a));
        hook(c, &a, "%s.proj_in", mod);
    } else {
        TRY(conv(c, fmt_path(m, "%s.proj_in", mod), 1, 1, &a_nchw, &b_nchw));
        hook(c, &b_nchw, "%s.proj_in", mod);
        OP(c->ops->transpose(c->be, &b_chw, &a), mod);
    }
    /* the token stream is in a; b is scratch */
    for (int k = 0; k < depth; k++)
        TRY(transformer_block(c, fmt_path(m, "%s.transformer_blocks.%d", mod, k), heads, &a, &b));
    if (c->cfg->use_linear_projection) {
        TRY(linear(c, fmt_path(m, "%s.proj_out", mod), true, &a, &b));
        OP(c->ops->transpose(c->be, &b, &a_chw), mod); /* [B,T,C] -> [B,C,T] */
        TRY(add_inplace(c, h, &a_nchw, mod));
    } else {
        OP(c->ops->transpose(c->be, &a, &b_chw), mod);
        TRY(conv(c, fmt_path(m, "%s.proj_out", mod), 1, 1, &b_nchw, &a_nchw));
        TRY(add_inplace(c, h, &a_nchw, mod));
    }
    sdxl_arena_reset(c->arena, mark);
    return SDXL_STATUS_OK;
}

/* ---- timestep embeddings ------------------------------------------------------------------ */

/* diffusers' get_timestep_embedding, in torch's f32 order of operations:
 * freq_k = exp(f32(-ln 1e4)·k / (half - shift)), arg = t·freq_k, then
 * [sin | cos] ([cos | sin] with flip_sin_to_cos), zero pad for an odd dim.
 * Rows for values[0..n) go to dst [n, dim] (back-end memory) through a
 * small host buffer, so nothing is allocated. */
static sdxl_status upload_sinusoids(unet_ctx *c, const float *values, int64_t n, int dim, float *dst,
                                    const char *where) {
    if (c->dry) return SDXL_STATUS_OK;
    const int half = dim / 2;
    const float shift = (float)c->cfg->freq_shift, denom = (float)half - shift;
    const float neg_log = (float)-log(10000.0);
    enum { CHUNK = 1024 };
    float buf[CHUNK];
    int64_t filled = 0, flushed = 0; /* elements of dst written into buf / uploaded */
    for (int64_t r = 0; r < n; r++) {
        for (int j = 0; j < dim; j++) {
            float v = 0.0f;
            if (j < 2 * half) {
                const int k = j < half ? j : j - half;
                const bool first = j < half; /* first half: sin, or cos when flipped */
                const float freq = expf(neg_log * (float)k / denom);
                const float arg = values[r] * freq;
                v = (first != c->cfg->flip_sin_to_cos) ? sinf(arg) : cosf(arg);
            }
            buf[filled++ - flushed] = v;
            if (filled - flushed == CHUNK) {
                OP(c->ops->upload(c->be, dst + flushed, buf, CHUNK * sizeof(float)), where);
                flushed = filled;
            }
        }
    }
    if (filled > flushed)
        OP(c->ops->upload(c->be, dst + flushed, buf, (size_t)(filled - flushed) * sizeof(float)), where);
    return SDXL_STATUS_OK;
}

/* c->temb = act(time_embedding(sinusoid(t)) + add_embedding([text_embeds | sinusoid(time_ids)])). */
static sdxl_status time_embedding(unet_ctx *c, const sdxl_unet_inputs *in) {
    const sdxl_unet_config *u = c->cfg;
    const int B = c->B, P = u->time_proj_dim, Te = u->time_embed_dim, A = u->addition_time_embed_dim;
    const int nid = u->num_time_ids, proj = u->projection_class_embeddings_input_dim - nid * A;
    const size_t mark = sdxl_arena_mark(c->arena);
    sdxl_tensor tp, t1, ap, te, ai, a1;
    float tsteps[SDXL_UNET_MAX_BATCH]; /* the timestep of each row */
    if (!c->dry)
        for (int b = 0; b < B; b++)
            tsteps[b] = in->timesteps[in->n_timesteps == 1 ? 0 : b];
    TRY(alloc_t(c, &tp, 2, B, P, 1, 1, "time_proj")); /* [B,P] */
    TRY(upload_sinusoids(c, tsteps, B, P, tp.data, "time_proj"));
    hook(c, &tp, "time_proj");
    TRY(alloc_t(c, &t1, 2, B, Te, 1, 1, "time_embedding")); /* [B,Te] */
    TRY(linear(c, "time_embedding.linear_1", true, &tp, &t1));
    TRY(act(c, &t1, "time_embedding"));
    TRY(linear(c, "time_embedding.linear_2", true, &t1, &c->temb));
    hook(c, &c->temb, "time_embedding");

    /* add_time_proj [B·nid, A]: a sinusoid of each time id, read as [B, nid·A] */
    TRY(alloc_t(c, &ap, 2, (int64_t)B * nid, A, 1, 1, "add_time_proj"));
    TRY(upload_sinusoids(c, in->time_ids, (int64_t)B * nid, A, ap.data, "add_time_proj"));
    hook(c, &ap, "add_time_proj");
    TRY(alloc_t(c, &te, 2, B, proj, 1, 1, "text_embeds"));                      /* [B,proj] */
    TRY(alloc_t(c, &ai, 2, B, proj + (int64_t)nid * A, 1, 1, "add_embedding")); /* [B,proj+nid·A] */
    OP(c->ops->upload(c->be, te.data, in->text_embeds, (size_t)B * (size_t)proj * sizeof(float)),
       "text_embeds");
    const sdxl_tensor ap2 = view(&ap, 2, B, (int64_t)nid * A, 1, 1);
    OP(c->ops->concat(c->be, &te, &ap2, 1, &ai), "add_embedding input");
    TRY(alloc_t(c, &a1, 2, B, Te, 1, 1, "add_embedding")); /* [B,Te] */
    TRY(linear(c, "add_embedding.linear_1", true, &ai, &a1));
    TRY(act(c, &a1, "add_embedding"));
    TRY(linear(c, "add_embedding.linear_2", true, &a1, &t1));
    hook(c, &t1, "add_embedding");
    TRY(add_inplace(c, &c->temb, &t1, "time embedding"));
    TRY(act(c, &c->temb, "time embedding")); /* every resnet applies act before time_emb_proj */
    sdxl_arena_reset(c->arena, mark);
    return SDXL_STATUS_OK;
}

/* ---- the network ---------------------------------------------------------------------------- */

static sdxl_status push_skip(unet_ctx *c, int64_t C, int64_t H, int64_t W, const char *what,
                             sdxl_tensor **out) {
    if (c->n_skips == MAX_SKIPS) return sdxl_error_set(c->err, SDXL_STATUS_INTERNAL, "unet: too many skips");
    unet_skip *s = &c->skips[c->n_skips];
    s->mark = sdxl_arena_mark(c->arena);
    TRY(alloc_t(c, &s->t, 4, c->B, C, H, W, what));
    c->n_skips++;
    *out = &s->t;
    return SDXL_STATUS_OK;
}

static sdxl_tensor hidden(unet_ctx *c, int64_t C, int64_t H, int64_t W) {
    return sdxl_tensor_4d(c->hbuf, SDXL_DTYPE_F32, c->B, C, H, W);
}

static sdxl_status run(unet_ctx *c, const sdxl_unet_inputs *in, float *noise_pred) {
    const sdxl_unet_config *u = c->cfg;
    const int B = c->B, L = u->num_levels, N = u->layers_per_block;
    const int64_t h = in->shape.height, w = in->shape.width, Tc = in->shape.context_tokens;
    const int64_t D = u->cross_attention_dim;
    char m[MODULE_MAX];
    sdxl_tensor *cur = NULL, *s = NULL;

    /* ---- persistent: context, act(temb), hbuf ---- */
    TRY(alloc_t(c, &c->ctx, 3, B, Tc, D, 1, "encoder_hidden_states"));
    OP(c->ops->upload(c->be, c->ctx.data, in->context, (size_t)(B * Tc * D) * sizeof(float)),
       "encoder_hidden_states");
    TRY(alloc_t(c, &c->temb, 2, B, u->time_embed_dim, 1, 1, "time embedding"));
    /* hbuf: the largest hidden state it ever holds (per batch row) */
    int64_t hb = (int64_t)u->in_channels * h * w; /* the sample, before conv_in */
    {
        const int64_t Hm = h >> (L - 1), Wm = w >> (L - 1);
        if ((int64_t)u->block_out_channels[L - 1] * Hm * Wm > hb)
            hb = (int64_t)u->block_out_channels[L - 1] * Hm * Wm;
        for (int i = 0; i < L; i++) { /* up block i: level L-1-i, then upsampled ×2 unless last */
            const int l = L - 1 - i;
            int64_t e = (int64_t)u->block_out_channels[l] * (h >> l) * (w >> l) * (i < L - 1 ? 4 : 1);
            if (e > hb) hb = e;
        }
    }
    sdxl_tensor hbt;
    TRY(alloc_t(c, &hbt, 2, B, hb, 1, 1, "hidden state"));
    c->hbuf = hbt.data;

    TRY(time_embedding(c, in));

    /* ---- conv_in: sample (in hbuf) -> skip 0 ---- */
    sdxl_tensor x = hidden(c, u->in_channels, h, w);
    OP(c->ops->upload(c->be, x.data, in->sample, (size_t)sdxl_tensor_nelem(&x) * sizeof(float)), "sample");
    TRY(push_skip(c, u->block_out_channels[0], h, w, "conv_in", &cur));
    TRY(conv(c, "conv_in", u->conv_in_kernel, 1, &x, cur));
    hook(c, cur, "conv_in");

    /* ---- down blocks: every resnet/attention output and downsample output is a skip ---- */
    for (int l = 0; l < L; l++) {
        const int64_t C = u->block_out_channels[l], H = h >> l, W = w >> l;
        const int first_skip = c->n_skips;
        for (int j = 0; j < N; j++) {
            TRY(push_skip(c, C, H, W, "down block", &s));
            TRY(resnet(c, fmt_path(m, "down_blocks.%d.resnets.%d", l, j), cur, false, s));
            hook(c, s, "down_blocks.%d.resnets.%d", l, j);
            if (u->down_has_attn[l]) {
                TRY(transformer(c, fmt_path(m, "down_blocks.%d.attentions.%d", l, j), u->down_num_heads[l],
                                u->down_transformer_layers[l], s));
                hook(c, s, "down_blocks.%d.attentions.%d", l, j);
            }
            cur = s;
        }
        if (l < L - 1) { /* Downsample2D: conv 3×3, stride 2, padding 1 */
            TRY(push_skip(c, C, H / 2, W / 2, "downsampler", &s));
            TRY(conv(c, fmt_path(m, "down_blocks.%d.downsamplers.0.conv", l), 3, 2, cur, s));
            hook(c, s, "down_blocks.%d.downsamplers.0", l);
            cur = s;
        }
        hook(c, cur, "down_blocks.%d", l);
        for (int j = first_skip; j < c->n_skips; j++)
            hook(c, &c->skips[j].t, "down_blocks.%d.res_samples.%d", l, j - first_skip);
    }

    /* ---- mid block: resnet, transformer, resnet, all in hbuf ---- */
    {
        const int64_t C = u->block_out_channels[L - 1], H = h >> (L - 1), W = w >> (L - 1);
        sdxl_tensor hm = hidden(c, C, H, W);
        TRY(resnet(c, "mid_block.resnets.0", cur, false, &hm));
        hook(c, &hm, "mid_block.resnets.0");
        TRY(transformer(c, "mid_block.attentions.0", u->mid_num_heads, u->mid_transformer_layers, &hm));
        hook(c, &hm, "mid_block.attentions.0");
        TRY(resnet(c, "mid_block.resnets.1", &hm, false, &hm));
        hook(c, &hm, "mid_block.resnets.1");
        hook(c, &hm, "mid_block");
    }

    /* ---- up blocks: concat [hidden | popped skip] -> resnet -> hbuf ---- */
    int64_t Ch = u->block_out_channels[L - 1];
    for (int i = 0; i < L; i++) {
        const int l = L - 1 - i;
        const int64_t C = u->block_out_channels[l], H = h >> l, W = w >> l;
        sdxl_tensor hv = hidden(c, C, H, W);
        for (int j = 0; j <= N; j++) {
            if (c->n_skips == 0)
                return sdxl_error_set(c->err, SDXL_STATUS_INTERNAL, "unet: skip stack empty");
            unet_skip *sk = &c->skips[c->n_skips - 1];
            const int64_t Cs = sk->t.ne[1];
            sdxl_tensor hin = hidden(c, Ch, H, W), X;
            TRY(alloc_t(c, &X, 4, B, Ch + Cs, H, W, "up block concat"));
            fmt_path(m, "up_blocks.%d.resnets.%d", i, j);
            OP(c->ops->concat(c->be, &hin, &sk->t, 1, &X), m);
            TRY(resnet(c, m, &X, true, &hv));
            sdxl_arena_reset(c->arena, sk->mark); /* frees X and the consumed skip */
            c->n_skips--;
            Ch = C;
            hook(c, &hv, "up_blocks.%d.resnets.%d", i, j);
            if (u->up_has_attn[i]) {
                TRY(transformer(c, fmt_path(m, "up_blocks.%d.attentions.%d", i, j), u->up_num_heads[i],
                                u->up_transformer_layers[i], &hv));
                hook(c, &hv, "up_blocks.%d.attentions.%d", i, j);
            }
        }
        if (i < L - 1) { /* Upsample2D: nearest ×2, conv 3×3 */
            const size_t mark = sdxl_arena_mark(c->arena);
            sdxl_tensor up, ho = hidden(c, C, 2 * H, 2 * W);
            TRY(alloc_t(c, &up, 4, B, C, 2 * H, 2 * W, "upsampler"));
            fmt_path(m, "up_blocks.%d.upsamplers.0.conv", i);
            OP(c->ops->upsample_nearest2x(c->be, &hv, &up), m);
            TRY(conv(c, m, 3, 1, &up, &ho));
            sdxl_arena_reset(c->arena, mark);
            hook(c, &ho, "up_blocks.%d.upsamplers.0", i);
            hv = ho;
        }
        hook(c, &hv, "up_blocks.%d", i);
    }

    /* ---- out: GN, act, conv_out ---- */
    sdxl_tensor ho = hidden(c, u->block_out_channels[0], h, w), o;
    /* not fused: diffusers' conv_norm_out is the GroupNorm alone (its hook sees the pre-activation values) */
    TRY(group_norm(c, "conv_norm_out", (float)u->norm_eps, false, &ho, &ho));
    hook(c, &ho, "conv_norm_out");
    TRY(act(c, &ho, "conv_act"));
    TRY(alloc_t(c, &o, 4, B, u->out_channels, h, w, "conv_out"));
    TRY(conv(c, "conv_out", u->conv_out_kernel, 1, &ho, &o));
    hook(c, &o, "conv_out");
    OP(c->ops->download(c->be, noise_pred, o.data, sdxl_tensor_nbytes(&o)), "noise_pred");
    OP(c->ops->synchronize(c->be), "synchronize");
    return SDXL_STATUS_OK;
}

/* ---- checks and entry points ------------------------------------------------------------------ */

static bool in_range(int64_t v, int64_t lo, int64_t hi) {
    return v >= lo && v <= hi;
}

/* What the forward relies on to be safe (sdxl_model_config_validate checks
 * more, for whole models; this covers hand-built UNet configs too). */
static sdxl_status check_config(const sdxl_unet_config *u, sdxl_error *err) {
#define BAD(...) sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, __VA_ARGS__)
    if (!in_range(u->num_levels, 1, SDXL_MAX_LEVELS)) return BAD("unet config: %d levels", u->num_levels);
    if (!in_range(u->layers_per_block, 1, SDXL_CFG_MAX_LAYERS_PER_BLOCK))
        return BAD("unet config: layers_per_block %d", u->layers_per_block);
    if (!in_range(u->in_channels, 1, SDXL_CFG_MAX_CHANNELS) ||
        !in_range(u->out_channels, 1, SDXL_CFG_MAX_CHANNELS))
        return BAD("unet config: in/out channels %d/%d", u->in_channels, u->out_channels);
    if (!in_range(u->norm_num_groups, 1, SDXL_CFG_MAX_CHANNELS))
        return BAD("unet config: norm_num_groups %d", u->norm_num_groups);
    for (int l = 0; l < u->num_levels; l++) {
        const int C = u->block_out_channels[l];
        if (!in_range(C, 1, SDXL_CFG_MAX_CHANNELS) || C % u->norm_num_groups)
            return BAD("unet config: block_out_channels[%d] = %d (1..%d, a multiple of norm_num_groups %d)",
                       l, C, SDXL_CFG_MAX_CHANNELS, u->norm_num_groups);
        if (u->down_has_attn[l] &&
            (!in_range(u->down_transformer_layers[l], 1, SDXL_CFG_MAX_TRANSFORMER_LAYERS) ||
             u->down_num_heads[l] < 1 || C % u->down_num_heads[l]))
            return BAD("unet config: down level %d: %d transformer layers, %d heads for %d channels", l,
                       u->down_transformer_layers[l], u->down_num_heads[l], C);
        const int Cu = u->block_out_channels[u->num_levels - 1 - l];
        if (u->up_has_attn[l] &&
            (!in_range(u->up_transformer_layers[l], 1, SDXL_CFG_MAX_TRANSFORMER_LAYERS) ||
             u->up_num_heads[l] < 1 || Cu % u->up_num_heads[l]))
            return BAD("unet config: up block %d: %d transformer layers, %d heads for %d channels", l,
                       u->up_transformer_layers[l], u->up_num_heads[l], Cu);
    }
    const int Cm = u->block_out_channels[u->num_levels - 1];
    if (!in_range(u->mid_transformer_layers, 1, SDXL_CFG_MAX_TRANSFORMER_LAYERS) || u->mid_num_heads < 1 ||
        Cm % u->mid_num_heads)
        return BAD("unet config: mid block: %d transformer layers, %d heads for %d channels",
                   u->mid_transformer_layers, u->mid_num_heads, Cm);
    if (!in_range(u->cross_attention_dim, 1, SDXL_CFG_MAX_CHANNELS) || !in_range(u->ff_mult, 1, 16))
        return BAD("unet config: cross_attention_dim %d, ff_mult %d", u->cross_attention_dim, u->ff_mult);
    if (!in_range(u->time_proj_dim, 1, SDXL_CFG_MAX_CHANNELS) ||
        !in_range(u->time_embed_dim, 1, 4 * SDXL_CFG_MAX_CHANNELS))
        return BAD("unet config: time embedding %d -> %d", u->time_proj_dim, u->time_embed_dim);
    if (!in_range(u->addition_time_embed_dim, 1, SDXL_CFG_MAX_CHANNELS) ||
        !in_range(u->num_time_ids, 1, 64) ||
        u->projection_class_embeddings_input_dim <= u->num_time_ids * u->addition_time_embed_dim ||
        u->projection_class_embeddings_input_dim > (1 << 20))
        return BAD("unet config: projection_class_embeddings_input_dim %d must exceed %d time ids x %d",
                   u->projection_class_embeddings_input_dim, u->num_time_ids, u->addition_time_embed_dim);
    if (!(u->norm_eps > 0 && u->norm_eps < 0.5)) return BAD("unet config: norm_eps %g", u->norm_eps);
    if (!in_range(u->conv_in_kernel, 1, 15) || u->conv_in_kernel % 2 == 0 ||
        !in_range(u->conv_out_kernel, 1, 15) || u->conv_out_kernel % 2 == 0)
        return BAD("unet config: conv kernels %d/%d (odd, 1..15)", u->conv_in_kernel, u->conv_out_kernel);
    if ((unsigned)u->act_fn >= SDXL_ACT_COUNT_) return BAD("unet config: act_fn %d", (int)u->act_fn);
    return SDXL_STATUS_OK;
#undef BAD
}

static sdxl_status check_shape(const sdxl_unet_config *u, const sdxl_unet_shape *s, sdxl_error *err) {
    if (!s) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "unet: no shape");
    if (!in_range(s->batch, 1, SDXL_UNET_MAX_BATCH) || !in_range(s->height, 1, SDXL_UNET_MAX_LATENT_SIDE) ||
        !in_range(s->width, 1, SDXL_UNET_MAX_LATENT_SIDE) ||
        !in_range(s->context_tokens, 1, SDXL_UNET_MAX_CONTEXT_TOKENS))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "unet: batch %d, latent %dx%d, %d context tokens: allowed 1..%d, 1..%d, 1..%d",
                              s->batch, s->height, s->width, s->context_tokens, SDXL_UNET_MAX_BATCH,
                              SDXL_UNET_MAX_LATENT_SIDE, SDXL_UNET_MAX_CONTEXT_TOKENS);
    const int f = 1 << (u->num_levels - 1);
    if (s->height % f || s->width % f)
        return sdxl_error_set(
            err, SDXL_STATUS_INVALID_ARG,
            "unet: latent %dx%d (h x w): both sides must be multiples of %d (this UNet halves "
            "them %d times)",
            s->height, s->width, f, u->num_levels - 1);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_unet_arena_bytes(const sdxl_unet_config *cfg, const sdxl_unet_shape *shape, size_t *bytes,
                                  sdxl_error *err) {
    if (!cfg || !bytes) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "unet: NULL config or output");
    *bytes = 0;
    TRY(check_config(cfg, err));
    TRY(check_shape(cfg, shape, err));
    sdxl_arena *a = sdxl_arena_create(0);
    if (!a) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "unet: no memory for a measuring arena");
    unet_ctx c = {.cfg = cfg, .arena = a, .dry = true, .err = err, .B = shape->batch};
    sdxl_unet_inputs in = {.shape = *shape, .n_timesteps = 1};
    sdxl_status st = run(&c, &in, NULL);
    if (st == SDXL_STATUS_OK) *bytes = sdxl_arena_peak(a);
    sdxl_arena_free(a);
    return st;
}

sdxl_status sdxl_unet_forward(sdxl_backend *be, const sdxl_weights *w, const sdxl_unet_inputs *in,
                              sdxl_arena *arena, float *noise_pred, const sdxl_unet_hooks *hooks,
                              sdxl_error *err) {
    if (!be || !w || !in || !arena)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "unet: NULL backend, weights, inputs or arena");
    const sdxl_unet_config *cfg = &sdxl_weights_config(w)->unet;
    TRY(check_config(cfg, err));
    TRY(check_shape(cfg, &in->shape, err));
    const bool dry = sdxl_arena_is_measuring(arena);
    if (!dry) {
        if (!in->sample || !in->timesteps || !in->context || !in->text_embeds || !in->time_ids || !noise_pred)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "unet: NULL input or output pointer");
        if (in->n_timesteps != 1 && in->n_timesteps != in->shape.batch)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                  "unet: %d timesteps for batch %d (give 1 or %d)", in->n_timesteps,
                                  in->shape.batch, in->shape.batch);
    }
    unet_ctx c = {.be = be,
                  .ops = sdxl_backend_ops_of(be),
                  .w = w,
                  .cfg = cfg,
                  .arena = arena,
                  .dry = dry,
                  .hooks = hooks,
                  .err = err,
                  .B = in->shape.batch};
    const size_t mark = sdxl_arena_mark(arena);
    sdxl_status st = run(&c, in, noise_pred);
    sdxl_arena_reset(arena, mark);
    return st;
}

/* ---- classifier-free guidance ------------------------------------------------------------------ */

/* Unbiased standard deviation of x[0..n) (torch.std), accumulated in double. */
static double std_unbiased(const float *x, int64_t n) {
    double mean = 0;
    for (int64_t i = 0; i < n; i++)
        mean += x[i];
    mean /= (double)n;
    double ss = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = x[i] - mean;
        ss += d * d;
    }
    return sqrt(ss / (double)(n - 1));
}

sdxl_status sdxl_unet_cfg_combine(const float *pred, int B, int64_t n, double guidance,
                                  double guidance_rescale, float *out, sdxl_error *err) {
    const bool rescale = guidance_rescale > 0;
    if (!pred || !out || B < 1 || n < 1 || (rescale && n < 2) || !isfinite(guidance) ||
        !isfinite(guidance_rescale))
        return sdxl_error_set(
            err, SDXL_STATUS_INVALID_ARG,
            "unet cfg: batch %d x %lld values, guidance %g, rescale %g (need B >= 1, n >= %d, "
            "finite factors, non-NULL buffers)",
            B, (long long)n, guidance, guidance_rescale, rescale ? 2 : 1);
    /* torch multiplies an f32 tensor by a Python float as f32 */
    const float g = (float)guidance, r = (float)guidance_rescale,
                one_minus_r = (float)(1.0 - guidance_rescale);
    for (int b = 0; b < B; b++) {
        const float *un = pred + (int64_t)b * n, *co = pred + (int64_t)(B + b) * n;
        float *o = out + (int64_t)b * n; /* may be `un`: each element is read before it is written */
        for (int64_t i = 0; i < n; i++) {
            const float d = co[i] - un[i];
            const float gd = g * d;
            o[i] = un[i] + gd;
        }
        if (!rescale) continue;
        const double s_cfg = std_unbiased(o, n);
        if (!(s_cfg > 0)) continue; /* a flat prediction: nothing to rescale */
        const float ratio = (float)std_unbiased(co, n) / (float)s_cfg;
        for (int64_t i = 0; i < n; i++) {
            const float rescaled = o[i] * ratio;
            o[i] = r * rescaled + one_minus_r * o[i];
        }
    }
    return SDXL_STATUS_OK;
}
