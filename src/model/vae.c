/* vae.c - AutoencoderKL decoder and encoder through the op table (see vae.h).
 *
 * Reading order: the buffer planner, op helpers, the blocks (resnet,
 * attention, up/down blocks), the two passes, tiling and host transfers,
 * then the public calls.
 */
#include "model/vae.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- defaults, and why ------------------------------------------------------
 * Measured with bench/vae.c on the SDXL VAE config (128/256/512/512, 2 layers
 * per block, f32; the plan figures are exact, the times are from a shared
 * 2-core host and good to ~20 %):
 *   untiled block: 1024x1024 decode 2.00 GiB, encode 1.50 GiB; 2048x2048
 *   decode 8.00 GiB, 4096x4096 32 GiB (it grows with the pixel count: the
 *   decoder's peak is the last upsampler, whose x2 output and conv output,
 *   [256,H,W] f32 each, are alive together).
 *   time follows the pixels the passes cover, not the tile size: decode
 *   1024x1024 untiled 52 s; in 2x2 tiles of 72 (x1.27 the pixels) 57 s;
 *   2048x2048 in 3x3 tiles of 96 (x1.27) 256 s; encode 1024x1024 22-28 s
 *   (2 threads, AVX-512). So a tiling costs about its overlap, no more.
 * Hence:
 *   auto_max_bytes 3 GiB: every SDXL training resolution (~1 MP, at most the
 *   2 GiB of 1024x1024) and up to ~1.3 MP decode untiled, i.e. exactly as
 *   diffusers does; larger images tile instead of asking for 8+ GiB.
 *   tile 128 latent px: the largest tile whose block (2.00 GiB) does not
 *   exceed what a 1024x1024 untiled decode already needs; larger tiles give
 *   the GroupNorm statistics and the attention more context, i.e. output
 *   closer to untiled. The grid shrinks tiles to fit, so they are often
 *   smaller (2048x2048: 3x3 tiles of 96, 1.13 GiB).
 *   overlap 16 latent px (a 128-pixel cross-fade for SDXL): work over the
 *   image is x1.17..x1.28 at 1536..4096 px; overlap 32 would cost
 *   x1.36..x1.57 (25 % more time) for a wider ramp. */
#define VAE_DEFAULT_TILE 128
#define VAE_DEFAULT_OVERLAP 16
#define VAE_DEFAULT_AUTO_MAX_BYTES ((size_t)3 << 30)

sdxl_vae_params sdxl_vae_default_params(void) {
    sdxl_vae_params p;
    memset(&p, 0, sizeof p);
    p.tiling = SDXL_VAE_TILING_AUTO;
    p.tile = VAE_DEFAULT_TILE;
    p.overlap = VAE_DEFAULT_OVERLAP;
    p.auto_max_bytes = VAE_DEFAULT_AUTO_MAX_BYTES;
    p.batch_per_pass = 1;
    return p;
}

int sdxl_vae_factor(const sdxl_vae_config *cfg) {
    int L = cfg->num_levels;
    return L >= 1 && L <= SDXL_MAX_LEVELS ? 1 << (L - 1) : 0;
}

/* ---- buffer planner -----------------------------------------------------------
 * A pass is first run with `planning` set: no op runs, every buffer request
 * is recorded with its size and lifetime (clock ticks at each alloc and
 * free). mem_place then gives each buffer an offset: largest first, at the
 * lowest offset that overlaps no already placed buffer alive at the same
 * time. The real pass makes the same requests in the same order (a pass's
 * sequence depends only on shapes) and gets those offsets inside one arena
 * block; a request may be smaller than planned (a last, smaller batch slice).
 * Why not a bump/LIFO arena: activation lifetimes interleave (a resnet's
 * input outlives its first conv's output), and at the top level the tensors
 * are 0.5-1 GiB each, so reuse by lifetime is what keeps 1024x1024 at 2 GiB
 * (the floor for these ops: see vae_plan_sdxl_config in the tests). */

#define VAE_MAX_BUFS 1024 /* SDXL: ~50 per decoder pass; the config caps allow ~450 */

typedef struct vae_buf {
    size_t off, size;
    int t0, t1; /* alive from tick t0 to t1 (exclusive); t1 = INT_MAX: never freed */
} vae_buf;

typedef struct vae_mem {
    bool planning;
    int n;      /* requests so far in this pass */
    int n_plan; /* requests of the planned pass */
    int clock;
    char *base; /* the arena block (real passes) */
    size_t total;
    vae_buf b[VAE_MAX_BUFS];
} vae_mem;

static size_t align64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

/* Offsets for the recorded requests; returns the block size. */
static size_t mem_place(vae_mem *m) {
    int order[VAE_MAX_BUFS];
    struct {
        size_t lo, hi;
    } busy[VAE_MAX_BUFS];
    for (int i = 0; i < m->n; i++)
        order[i] = i;
    /* insertion sort: size descending, then request order (deterministic) */
    for (int i = 1; i < m->n; i++) {
        int v = order[i], j = i;
        while (j > 0 && (m->b[order[j - 1]].size < m->b[v].size ||
                         (m->b[order[j - 1]].size == m->b[v].size && order[j - 1] > v))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
    size_t total = 0;
    for (int i = 0; i < m->n; i++) {
        vae_buf *b = &m->b[order[i]];
        int nb = 0;
        for (int j = 0; j < i; j++) { /* placed buffers alive at the same time, by offset */
            const vae_buf *o = &m->b[order[j]];
            if (!(o->t0 < b->t1 && b->t0 < o->t1)) continue;
            int k = nb++;
            while (k > 0 && busy[k - 1].lo > o->off) {
                busy[k] = busy[k - 1];
                k--;
            }
            busy[k].lo = o->off;
            busy[k].hi = o->off + o->size;
        }
        size_t off = 0;
        for (int k = 0; k < nb; k++) {
            if (off + b->size <= busy[k].lo) break;
            if (busy[k].hi > off) off = busy[k].hi;
        }
        b->off = off;
        if (off + b->size > total) total = off + b->size;
    }
    return total;
}

/* ---- context, errors, weights -------------------------------------------------- */

typedef struct vae_ctx {
    sdxl_backend *be;
    const sdxl_weights *w;
    const sdxl_vae_config *cfg;
    sdxl_error *err;
    vae_mem *mem;
} vae_ctx;

/* An activation: a tensor living in planner buffer `id`. */
typedef struct act {
    sdxl_tensor t;
    int id;
} act;

static sdxl_status op_fail(vae_ctx *c, const char *what) {
    return sdxl_error_set(c->err, c->be->err.status ? c->be->err.status : SDXL_STATUS_INTERNAL, "vae: %s: %s",
                          what, sdxl_backend_last_error(c->be));
}

#define TRY(expr)                                                                                            \
    do {                                                                                                     \
        sdxl_status st_ = (expr);                                                                            \
        if (st_ != SDXL_STATUS_OK) return st_;                                                               \
    } while (0)

/* [B,C,H,W] f32 activation from the planner. */
static sdxl_status act_new(vae_ctx *c, act *a, int64_t B, int64_t C, int64_t H, int64_t W) {
    vae_mem *m = c->mem;
    size_t size = align64((size_t)(B * C * H * W) * sizeof(float));
    if (m->planning) {
        if (m->n == VAE_MAX_BUFS)
            return sdxl_error_set(c->err, SDXL_STATUS_UNSUPPORTED,
                                  "vae: the network needs more than %d activation buffers per pass",
                                  VAE_MAX_BUFS);
        m->b[m->n] = (vae_buf){0, size, m->clock++, INT_MAX};
        a->id = m->n++;
        a->t = sdxl_tensor_4d(NULL, SDXL_DTYPE_F32, B, C, H, W);
        return SDXL_STATUS_OK;
    }
    if (m->n >= m->n_plan || size > m->b[m->n].size)
        return sdxl_error_set(c->err, SDXL_STATUS_INTERNAL,
                              "vae: buffer request %d (%zu bytes) is not the plan's", m->n, size);
    a->id = m->n++;
    a->t = sdxl_tensor_4d(m->base + m->b[a->id].off, SDXL_DTYPE_F32, B, C, H, W);
    return SDXL_STATUS_OK;
}

static void act_free(vae_ctx *c, act *a) {
    if (c->mem->planning) c->mem->b[a->id].t1 = c->mem->clock++;
    a->t.data = NULL;
}

/* The weight "<mod>.<leaf>". */
static sdxl_status weight(vae_ctx *c, const char *mod, const char *leaf, const sdxl_tensor **out) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", mod, leaf);
    return sdxl_weights_require(c->w, name, out, c->err);
}

/* ---- ops ------------------------------------------------------------------------
 * Every helper does nothing while planning (shapes are all the planner needs,
 * and a plan can be made from a config without weights). */

/* y = conv(x) with the module's weight and bias; stride 1 with "same" zero
 * padding k/2 (every VAE conv but the downsampler), or the downsampler's
 * stride 2 after a zero pad of one column right and one row bottom (diffusers
 * Downsample2D with padding 0: F.pad(x, (0,1,0,1))). */
static sdxl_status conv(vae_ctx *c, const char *mod, const act *x, act *y, bool down) {
    if (c->mem->planning) return SDXL_STATUS_OK;
    const sdxl_tensor *wt, *bt;
    TRY(weight(c, mod, "weight", &wt));
    TRY(weight(c, mod, "bias", &bt));
    int kh = (int)wt->ne[2], kw = (int)wt->ne[3];
    sdxl_conv2d_params p = {1, 1, kh / 2, kh / 2, kw / 2, kw / 2};
    if (down) p = (sdxl_conv2d_params){2, 2, 0, 1, 0, 1};
    if (c->be->ops->conv2d(c->be, &x->t, wt, bt, &p, &y->t)) return op_fail(c, mod);
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

/* y = GroupNorm(x) (then the config's activation if `activate`); y may be x. */
static sdxl_status norm(vae_ctx *c, const char *mod, const act *x, act *y, bool activate) {
    if (c->mem->planning) return SDXL_STATUS_OK;
    const sdxl_tensor *g, *b;
    TRY(weight(c, mod, "weight", &g));
    TRY(weight(c, mod, "bias", &b));
    bool fused = activate && c->cfg->act_fn == SDXL_ACT_SILU;
    if (c->be->ops->group_norm(c->be, &x->t, g, b, c->cfg->norm_num_groups, (float)c->cfg->norm_eps, fused,
                               &y->t))
        return op_fail(c, mod);
    if (activate && !fused && c->be->ops->unary(c->be, act_op(c->cfg->act_fn), &y->t, &y->t))
        return op_fail(c, mod);
    return SDXL_STATUS_OK;
}

/* acc += x */
static sdxl_status add(vae_ctx *c, act *acc, const act *x, const char *what) {
    if (c->mem->planning) return SDXL_STATUS_OK;
    if (c->be->ops->binary(c->be, SDXL_BINARY_ADD, &acc->t, &x->t, &acc->t)) return op_fail(c, what);
    return SDXL_STATUS_OK;
}

/* ---- blocks ------------------------------------------------------------------------ */

/* ResnetBlock2D (no time embedding). Takes x [B,cin,H,W] (consumed) and
 * leaves the result [B,cout,H,W] in *x. Peak: 3 tensors of C channels when
 * cin == cout; cin + 2·cout when they differ (the shortcut runs first so x
 * can then be normalised in place). */
static sdxl_status resnet(vae_ctx *c, const char *mod, act *x, int cout) {
    const int64_t B = x->t.ne[0], cin = x->t.ne[1], H = x->t.ne[2], W = x->t.ne[3];
    char n1[224], n2[224], c1[224], c2[224], sc[224];
    snprintf(n1, sizeof n1, "%s.norm1", mod);
    snprintf(n2, sizeof n2, "%s.norm2", mod);
    snprintf(c1, sizeof c1, "%s.conv1", mod);
    snprintf(c2, sizeof c2, "%s.conv2", mod);
    snprintf(sc, sizeof sc, "%s.conv_shortcut", mod);
    act t, u;
    if (cin == cout) {
        TRY(act_new(c, &t, B, cin, H, W)); /* (B, C, H, W) act(GN1(x)), later conv2's output */
        TRY(norm(c, n1, x, &t, true));
        TRY(act_new(c, &u, B, cout, H, W)); /* (B, C, H, W) conv1 */
        TRY(conv(c, c1, &t, &u, false));
        TRY(norm(c, n2, &u, &u, true));
        TRY(conv(c, c2, &u, &t, false));
        act_free(c, &u);
        TRY(add(c, x, &t, mod));
        act_free(c, &t);
        return SDXL_STATUS_OK;
    }
    act s;
    TRY(act_new(c, &s, B, cout, H, W)); /* (B, cout, H, W) shortcut, then the sum */
    TRY(conv(c, sc, x, &s, false));
    TRY(norm(c, n1, x, x, true));       /* x is not needed raw any more */
    TRY(act_new(c, &u, B, cout, H, W)); /* (B, cout, H, W) conv1 */
    TRY(conv(c, c1, x, &u, false));
    act_free(c, x);
    TRY(norm(c, n2, &u, &u, true));
    TRY(act_new(c, &t, B, cout, H, W)); /* (B, cout, H, W) conv2 */
    TRY(conv(c, c2, &u, &t, false));
    act_free(c, &u);
    TRY(add(c, &s, &t, mod));
    act_free(c, &t);
    *x = s;
    return SDXL_STATUS_OK;
}

/* Linear y = x·Wᵀ + b on tokens; x, y viewed [B, N, C]. */
static sdxl_status linear(vae_ctx *c, const char *mod, const char *sub, const sdxl_tensor *x,
                          sdxl_tensor *y) {
    if (c->mem->planning) return SDXL_STATUS_OK;
    char m[224];
    snprintf(m, sizeof m, "%s.%s", mod, sub);
    const sdxl_tensor *wt, *bt;
    TRY(weight(c, m, "weight", &wt));
    TRY(weight(c, m, "bias", &bt));
    if (c->be->ops->linear(c->be, x, wt, bt, y)) return op_fail(c, m);
    return SDXL_STATUS_OK;
}

/* The mid block's single-head self-attention with residual, on x [B,C,H,W]
 * in place. Tokens are the H·W positions of one sample. */
static sdxl_status attention(vae_ctx *c, const char *mod, act *x) {
    const int64_t B = x->t.ne[0], C = x->t.ne[1], H = x->t.ne[2], W = x->t.ne[3], N = H * W;
    char gn[224];
    snprintf(gn, sizeof gn, "%s.group_norm", mod);
    act n, tok, q, k, v, o;
    TRY(act_new(c, &n, B, C, H, W)); /* (B, C, H, W) GN(x) */
    TRY(norm(c, gn, x, &n, false));
    TRY(act_new(c, &tok, B, N, C, 1)); /* (B, N, C) tokens */
    sdxl_tensor n3 = sdxl_tensor_3d(n.t.data, SDXL_DTYPE_F32, B, C, N);
    sdxl_tensor tok3 = sdxl_tensor_3d(tok.t.data, SDXL_DTYPE_F32, B, N, C);
    if (!c->mem->planning && c->be->ops->transpose(c->be, &n3, &tok3))
        return op_fail(c, "attention: to tokens");
    act_free(c, &n);
    TRY(act_new(c, &q, B, N, C, 1)); /* (B, N, C) each */
    TRY(act_new(c, &k, B, N, C, 1));
    TRY(act_new(c, &v, B, N, C, 1));
    sdxl_tensor q3 = sdxl_tensor_3d(q.t.data, SDXL_DTYPE_F32, B, N, C);
    sdxl_tensor k3 = sdxl_tensor_3d(k.t.data, SDXL_DTYPE_F32, B, N, C);
    sdxl_tensor v3 = sdxl_tensor_3d(v.t.data, SDXL_DTYPE_F32, B, N, C);
    TRY(linear(c, mod, "to_q", &tok3, &q3));
    TRY(linear(c, mod, "to_k", &tok3, &k3));
    TRY(linear(c, mod, "to_v", &tok3, &v3));
    act_free(c, &tok);
    TRY(act_new(c, &o, B, N, C, 1)); /* (B, N, C) attention output */
    sdxl_tensor o3 = sdxl_tensor_3d(o.t.data, SDXL_DTYPE_F32, B, N, C);
    sdxl_attention_params ap = {.heads = 1, .scale = (float)(1.0 / sqrt((double)C)), .causal = false};
    if (!c->mem->planning && c->be->ops->attention(c->be, &q3, &k3, &v3, &ap, &o3))
        return op_fail(c, "mid-block attention");
    act_free(c, &v);
    act_free(c, &k);
    act_free(c, &q);
    act p;
    TRY(act_new(c, &p, B, N, C, 1)); /* (B, N, C) to_out */
    sdxl_tensor p3 = sdxl_tensor_3d(p.t.data, SDXL_DTYPE_F32, B, N, C);
    TRY(linear(c, mod, "to_out.0", &o3, &p3));
    act_free(c, &o);
    act back;
    TRY(act_new(c, &back, B, C, H, W)); /* (B, C, H, W) */
    sdxl_tensor back3 = sdxl_tensor_3d(back.t.data, SDXL_DTYPE_F32, B, C, N);
    if (!c->mem->planning && c->be->ops->transpose(c->be, &p3, &back3))
        return op_fail(c, "attention: from tokens");
    act_free(c, &p);
    TRY(add(c, x, &back, mod));
    act_free(c, &back);
    return SDXL_STATUS_OK;
}

/* UNetMidBlock2D: resnet, attention (unless the config drops it), resnet. */
static sdxl_status mid_block(vae_ctx *c, const char *part, act *x) {
    char m[160];
    int C = (int)x->t.ne[1];
    snprintf(m, sizeof m, "vae.%s.mid_block.resnets.0", part);
    TRY(resnet(c, m, x, C));
    if (c->cfg->mid_block_add_attention) {
        snprintf(m, sizeof m, "vae.%s.mid_block.attentions.0", part);
        TRY(attention(c, m, x));
    }
    snprintf(m, sizeof m, "vae.%s.mid_block.resnets.1", part);
    return resnet(c, m, x, C);
}

/* ---- the two passes --------------------------------------------------------------- */

/* z [B,lat,h,w] (consumed) -> *img [B,out,h·f,w·f]. */
static sdxl_status decoder_pass(vae_ctx *c, act *z, act *img) {
    const sdxl_vae_config *v = c->cfg;
    const int L = v->num_levels, N = v->layers_per_block;
    int64_t B = z->t.ne[0], H = z->t.ne[2], W = z->t.ne[3];
    act zq, x;
    TRY(act_new(c, &zq, B, v->latent_channels, H, W)); /* (B, lat, h, w) */
    TRY(conv(c, "vae.post_quant_conv", z, &zq, false));
    act_free(c, z);
    TRY(act_new(c, &x, B, v->block_out_channels[L - 1], H, W)); /* (B, C_L-1, h, w) */
    TRY(conv(c, "vae.decoder.conv_in", &zq, &x, false));
    act_free(c, &zq);
    TRY(mid_block(c, "decoder", &x));
    char m[160];
    for (int i = 0; i < L; i++) {
        int out = v->block_out_channels[L - 1 - i];
        for (int j = 0; j <= N; j++) {
            snprintf(m, sizeof m, "vae.decoder.up_blocks.%d.resnets.%d", i, j);
            TRY(resnet(c, m, &x, out));
        }
        if (i == L - 1) break;
        /* Upsample2D: nearest x2, then a 3x3 conv; x is freed before the conv's
         * output exists, so the peak here is two tensors of the doubled size. */
        act up, y;
        TRY(act_new(c, &up, B, out, 2 * H, 2 * W)); /* (B, C, 2H, 2W) */
        if (!c->mem->planning && c->be->ops->upsample_nearest2x(c->be, &x.t, &up.t))
            return op_fail(c, "upsample");
        act_free(c, &x);
        H *= 2;
        W *= 2;
        TRY(act_new(c, &y, B, out, H, W)); /* (B, C, 2H, 2W) */
        snprintf(m, sizeof m, "vae.decoder.up_blocks.%d.upsamplers.0.conv", i);
        TRY(conv(c, m, &up, &y, false));
        act_free(c, &up);
        x = y;
    }
    TRY(norm(c, "vae.decoder.conv_norm_out", &x, &x, true));
    TRY(act_new(c, img, B, v->out_channels, H, W)); /* (B, out, H, W) */
    TRY(conv(c, "vae.decoder.conv_out", &x, img, false));
    act_free(c, &x);
    return SDXL_STATUS_OK;
}

/* img [B,in,H,W] (consumed) -> *mom [B,2·lat,H/f,W/f] (quant_conv output). */
static sdxl_status encoder_pass(vae_ctx *c, act *img, act *mom) {
    const sdxl_vae_config *v = c->cfg;
    const int L = v->num_levels, N = v->layers_per_block;
    int64_t B = img->t.ne[0], H = img->t.ne[2], W = img->t.ne[3];
    act x;
    TRY(act_new(c, &x, B, v->block_out_channels[0], H, W)); /* (B, C0, H, W) */
    TRY(conv(c, "vae.encoder.conv_in", img, &x, false));
    act_free(c, img);
    char m[160];
    for (int i = 0; i < L; i++) {
        int out = v->block_out_channels[i];
        for (int j = 0; j < N; j++) {
            snprintf(m, sizeof m, "vae.encoder.down_blocks.%d.resnets.%d", i, j);
            TRY(resnet(c, m, &x, out));
        }
        if (i == L - 1) break;
        act y;
        TRY(act_new(c, &y, B, out, H / 2, W / 2)); /* (B, C, H/2, W/2); H, W even here */
        snprintf(m, sizeof m, "vae.encoder.down_blocks.%d.downsamplers.0.conv", i);
        TRY(conv(c, m, &x, &y, true));
        act_free(c, &x);
        H /= 2;
        W /= 2;
        x = y;
    }
    TRY(mid_block(c, "encoder", &x));
    TRY(norm(c, "vae.encoder.conv_norm_out", &x, &x, true));
    act h;
    TRY(act_new(c, &h, B, 2 * v->latent_channels, H, W)); /* (B, 2·lat, h, w) */
    TRY(conv(c, "vae.encoder.conv_out", &x, &h, false));
    act_free(c, &x);
    TRY(act_new(c, mom, B, 2 * v->latent_channels, H, W)); /* (B, 2·lat, h, w) mean | logvar */
    TRY(conv(c, "vae.quant_conv", &h, mom, false));
    act_free(c, &h);
    return SDXL_STATUS_OK;
}

/* ---- tiling -------------------------------------------------------------------------
 * One axis of the grid, in latent pixels. n is the least tile count with
 * (n-1)·(tile-overlap) >= len - tile; then the tiles shrink to the least
 * size that still gives every neighbour pair `overlap` px at that count,
 * ceil((len + (n-1)·overlap) / n) <= tile, which keeps the work close to
 * len (at 256 latent px, tile 128 and overlap 32: three tiles of 107, not of
 * 128). Tile 0 sits at 0, tile n-1 at len - tile, the rest evenly between
 * (rounded). */
typedef struct tile_axis {
    int len, tile, overlap, n;
    int reach; /* tiles k±reach are the only ones that can overlap tile k */
} tile_axis;

static tile_axis axis_make(int len, int tile, int overlap) {
    tile_axis a = {len, len, 0, 1, 0};
    if (len <= tile) return a;
    int step = tile - overlap; /* >= 1 (params checked) */
    a.n = 1 + (len - tile + step - 1) / step;
    a.tile = (len + (a.n - 1) * overlap + a.n - 1) / a.n;
    a.overlap = overlap;
    int smin = (len - a.tile) / (a.n - 1); /* the least distance between neighbours, >= 1 */
    a.reach = (a.tile - 1) / smin;
    return a;
}

static int axis_pos(const tile_axis *a, int k) {
    if (a->n == 1) return 0;
    int64_t span = a->len - a->tile, d = a->n - 1;
    return (int)((2 * (int64_t)k * span + d) / (2 * d)); /* k·span/d rounded */
}

/* Unnormalised weight of tile k at latent coordinate u (a pixel centre):
 * 1 inside, falling linearly to 0 at the tile's inner edges over `overlap`
 * (edges on the image border do not fade). */
static double axis_ramp(const tile_axis *a, int k, double u) {
    double P = axis_pos(a, k), E = P + a->tile;
    if (u < P || u >= E) return 0.0;
    if (a->overlap == 0) return 1.0;
    double d = INFINITY;
    if (k > 0) d = u - P;
    if (k < a->n - 1 && E - u < d) d = E - u;
    return d < a->overlap ? d / a->overlap : 1.0;
}

/* Normalised weight of tile k at pixel px of an axis f times finer than the
 * latent (f = 1: latent space). The weights of all tiles sum to 1. */
static float axis_weight(const tile_axis *a, int k, int64_t px, int f) {
    if (a->n == 1) return 1.0f;
    double u = ((double)px + 0.5) / f, s = 0.0;
    int k0 = k - a->reach < 0 ? 0 : k - a->reach, k1 = k + a->reach >= a->n ? a->n - 1 : k + a->reach;
    for (int j = k0; j <= k1; j++)
        s += axis_ramp(a, j, u);
    return (float)(axis_ramp(a, k, u) / s);
}

/* ---- host <-> back end ---------------------------------------------------------------
 * Inputs and outputs are host memory; the arena belongs to the back end. Data
 * moves through a fixed stack buffer with the back end's upload/download
 * (memcpy on the CPU), so no host copy of a tile is ever allocated. */

#define STAGE_FLOATS 4096

/* dev [nb, C, th, tw] = window (y0, x0) of host src [.., C, Hs, Ws] starting
 * at sample b0, each value v -> v·mul[c]/div + add[c] (all floats, the order
 * diffusers computes in; mul, add NULL: 1 and 0). */
static sdxl_status upload_window(vae_ctx *c, const float *src, int64_t b0, int64_t nb, int64_t C, int64_t Hs,
                                 int64_t Ws, int64_t y0, int64_t x0, int64_t th, int64_t tw, const float *mul,
                                 float div, const float *addv, float *dev) {
    float stage[STAGE_FLOATS];
    size_t fill = 0, done = 0;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t ch = 0; ch < C; ch++) {
            const float m = mul ? mul[ch] : 1.0f, ad = addv ? addv[ch] : 0.0f;
            for (int64_t y = 0; y < th; y++) {
                const float *row = src + (((b0 + b) * C + ch) * Hs + y0 + y) * Ws + x0; /* [tw] */
                for (int64_t x = 0; x < tw; x++) {
                    stage[fill++] = row[x] * m / div + ad;
                    if (fill == STAGE_FLOATS) {
                        if (c->be->ops->upload(c->be, dev + done, stage, fill * sizeof(float)))
                            return op_fail(c, "upload");
                        done += fill;
                        fill = 0;
                    }
                }
            }
        }
    if (fill && c->be->ops->upload(c->be, dev + done, stage, fill * sizeof(float)))
        return op_fail(c, "upload");
    return SDXL_STATUS_OK;
}

/* Where a pass's output channels go: channels [0, split) to dst0 [B, split,
 * Hd, Wd], the rest to dst1 [B, C - split, Hd, Wd] (NULL: dropped). */
typedef struct host_out {
    float *dst0, *dst1;
    int64_t split, Hd, Wd;
} host_out;

/* host += weight(tile) · dev, for dev [nb, C, th, tw] placed at latent tile
 * (ky, kx) of the grid and sample b0; f = output pixels per latent pixel. */
static sdxl_status download_blend(vae_ctx *c, const float *dev, int64_t b0, int64_t nb, int64_t C, int64_t th,
                                  int64_t tw, const tile_axis *ay, int ky, const tile_axis *ax, int kx, int f,
                                  const host_out *o) {
    float stage[STAGE_FLOATS];
    const int64_t Y0 = (int64_t)axis_pos(ay, ky) * f, X0 = (int64_t)axis_pos(ax, kx) * f;
    const int64_t total = nb * C * th * tw;
    const bool single = ay->n == 1 && ax->n == 1;
    int64_t i = 0;
    while (i < total) {
        int64_t cnt = total - i < STAGE_FLOATS ? total - i : STAGE_FLOATS;
        if (c->be->ops->download(c->be, stage, dev + i, (size_t)cnt * sizeof(float)))
            return op_fail(c, "download");
        int64_t x = i % tw, y = (i / tw) % th, ch = (i / (tw * th)) % C, b = i / (tw * th * C);
        float wy = axis_weight(ay, ky, Y0 + y, f);
        for (int64_t j = 0; j < cnt; j++) {
            float *dst = ch < o->split ? o->dst0 : o->dst1;
            if (dst) {
                int64_t cc = ch < o->split ? ch : ch - o->split, cn = ch < o->split ? o->split : C - o->split;
                float *p = dst + (((b0 + b) * cn + cc) * o->Hd + Y0 + y) * o->Wd + X0 + x;
                *p += single ? stage[j] : wy * axis_weight(ax, kx, X0 + x, f) * stage[j];
            }
            if (++x == tw) {
                x = 0;
                if (++y == th) {
                    y = 0;
                    if (++ch == C) ch = 0, b++;
                }
                wy = axis_weight(ay, ky, Y0 + y, f);
            }
        }
        i += cnt;
    }
    return SDXL_STATUS_OK;
}

/* ---- planning and running ----------------------------------------------------------- */

typedef enum { VAE_DECODE, VAE_ENCODE } vae_dir;

typedef struct vae_job {
    vae_dir dir;
    int f;
    int B, nb;        /* samples, samples per pass */
    int lh, lw;       /* latent size */
    tile_axis ay, ax; /* grid */
} vae_job;

static sdxl_status check_params(const sdxl_vae_params *p, sdxl_error *err) {
    if (p->tiling != SDXL_VAE_TILING_AUTO && p->tiling != SDXL_VAE_TILING_OFF &&
        p->tiling != SDXL_VAE_TILING_ON)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "vae: tiling mode %d", (int)p->tiling);
    if (p->tile < 1 || p->tile > SDXL_VAE_MAX_SIDE || p->overlap < 0 || 2 * p->overlap > p->tile)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "vae: tile %d, overlap %d (need tile >= 1 and 0 <= 2·overlap <= tile)", p->tile,
                              p->overlap);
    if (p->batch_per_pass < 0)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "vae: batch_per_pass %d", p->batch_per_pass);
    return SDXL_STATUS_OK;
}

/* Record one pass of the job's tile shape into mem and place it. */
static sdxl_status plan_pass(vae_ctx *c, const vae_job *j, size_t *bytes) {
    vae_mem *m = c->mem;
    m->planning = true;
    m->n = 0;
    m->clock = 0;
    const sdxl_vae_config *v = c->cfg;
    int th = j->ay.tile, tw = j->ax.tile;
    act in, out;
    if (j->dir == VAE_DECODE) {
        TRY(act_new(c, &in, j->nb, v->latent_channels, th, tw)); /* (nb, lat, th, tw) */
        TRY(decoder_pass(c, &in, &out));
    } else {
        TRY(act_new(c, &in, j->nb, v->in_channels, (int64_t)th * j->f, (int64_t)tw * j->f)); /* image tile */
        TRY(encoder_pass(c, &in, &out));
    }
    act_free(c, &out); /* downloaded, then released */
    m->n_plan = m->n;
    m->total = mem_place(m);
    *bytes = m->total;
    return SDXL_STATUS_OK;
}

static sdxl_status make_job(vae_ctx *c, vae_dir dir, const sdxl_vae_params *p, int B, int H, int W,
                            vae_job *j, sdxl_vae_plan *plan) {
    sdxl_error *err = c->err;
    const sdxl_vae_config *v = c->cfg;
    TRY(check_params(p, err));
    int f = sdxl_vae_factor(v);
    if (!f || v->latent_channels < 1 || v->latent_channels > SDXL_MAX_LATENT_CHANNELS ||
        v->norm_num_groups < 1)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "vae: config not valid (%d levels, %d latent channels)", v->num_levels,
                              v->latent_channels);
    if (B < 1 || H < 1 || W < 1 || H > SDXL_VAE_MAX_SIDE || W > SDXL_VAE_MAX_SIDE || H % f || W % f)
        return sdxl_error_set(
            err, SDXL_STATUS_INVALID_ARG,
            "vae: %d images of %dx%d: sides must be multiples of %d in 1..%d, at least 1 image", B, W, H, f,
            SDXL_VAE_MAX_SIDE);
    memset(j, 0, sizeof *j);
    j->dir = dir;
    j->f = f;
    j->B = B;
    j->nb = p->batch_per_pass == 0 || p->batch_per_pass > B ? B : p->batch_per_pass;
    j->lh = H / f;
    j->lw = W / f;
    /* the untiled plan first: AUTO decides by its size, and reports show it */
    j->ay = axis_make(j->lh, j->lh, 0);
    j->ax = axis_make(j->lw, j->lw, 0);
    size_t untiled = 0, bytes = 0;
    TRY(plan_pass(c, j, &untiled));
    bool tile =
        p->tiling == SDXL_VAE_TILING_ON || (p->tiling == SDXL_VAE_TILING_AUTO && untiled > p->auto_max_bytes);
    tile = tile && (j->lh > p->tile || j->lw > p->tile);
    bytes = untiled;
    if (tile) {
        j->ay = axis_make(j->lh, p->tile, p->overlap);
        j->ax = axis_make(j->lw, p->tile, p->overlap);
        TRY(plan_pass(c, j, &bytes));
    }
    if (plan) {
        plan->arena_bytes = bytes;
        plan->untiled_bytes = untiled;
        plan->tiled = tile;
        plan->tile_h = j->ay.tile;
        plan->tile_w = j->ax.tile;
        plan->tiles_y = j->ay.n;
        plan->tiles_x = j->ax.n;
        plan->batch_per_pass = j->nb;
        plan->passes = j->ay.n * j->ax.n * ((B + j->nb - 1) / j->nb);
    }
    return SDXL_STATUS_OK;
}

static sdxl_status plan_common(vae_dir dir, const sdxl_vae_config *cfg, const sdxl_vae_params *params, int B,
                               int H, int W, sdxl_vae_plan *out, sdxl_error *err) {
    if (!cfg || !out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "vae plan: NULL argument");
    sdxl_vae_params dp = sdxl_vae_default_params();
    vae_mem mem;
    vae_ctx c = {NULL, NULL, cfg, err, &mem};
    vae_job j;
    memset(out, 0, sizeof *out);
    return make_job(&c, dir, params ? params : &dp, B, H, W, &j, out);
}

sdxl_status sdxl_vae_plan_decode(const sdxl_vae_config *cfg, const sdxl_vae_params *params, int B, int H,
                                 int W, sdxl_vae_plan *out, sdxl_error *err) {
    return plan_common(VAE_DECODE, cfg, params, B, H, W, out, err);
}

sdxl_status sdxl_vae_plan_encode(const sdxl_vae_config *cfg, const sdxl_vae_params *params, int B, int H,
                                 int W, sdxl_vae_plan *out, sdxl_error *err) {
    return plan_common(VAE_ENCODE, cfg, params, B, H, W, out, err);
}

/* Runs every pass of a planned job. in: host latents (decode) or image
 * (encode); o: where the outputs are blended (zeroed here first). */
static sdxl_status run_job(vae_ctx *c, const vae_job *j, const sdxl_vae_params *p, const float *in,
                           const host_out *o, const float *mul, float div, const float *addv) {
    const sdxl_vae_config *v = c->cfg;
    vae_mem *m = c->mem;
    const int f = j->f, Cin = j->dir == VAE_DECODE ? v->latent_channels : v->in_channels;
    const int sin_ = j->dir == VAE_DECODE ? 1 : f; /* input pixels per latent pixel */
    const int sout = j->dir == VAE_DECODE ? f : 1; /* output pixels per latent pixel */
    const int64_t Cout = j->dir == VAE_DECODE ? v->out_channels : 2 * v->latent_channels;
    size_t n0 = (size_t)j->B * (size_t)(o->split) * (size_t)(o->Hd * o->Wd);
    memset(o->dst0, 0, n0 * sizeof(float));
    if (o->dst1)
        memset(o->dst1, 0,
               (size_t)j->B * (size_t)(Cout - o->split) * (size_t)(o->Hd * o->Wd) * sizeof(float));
    const int slices = (j->B + j->nb - 1) / j->nb, total = slices * j->ay.n * j->ax.n;
    int done = 0;
    for (int s = 0; s < slices; s++) {
        int b0 = s * j->nb, nb = j->B - b0 < j->nb ? j->B - b0 : j->nb;
        for (int ky = 0; ky < j->ay.n; ky++)
            for (int kx = 0; kx < j->ax.n; kx++) {
                m->planning = false;
                m->n = 0;
                const int64_t th = j->ay.tile, tw = j->ax.tile;
                act x, out;
                TRY(act_new(c, &x, nb, Cin, th * sin_, tw * sin_)); /* this pass's input */
                TRY(upload_window(c, in, b0, nb, Cin, (int64_t)j->lh * sin_, (int64_t)j->lw * sin_,
                                  (int64_t)axis_pos(&j->ay, ky) * sin_, (int64_t)axis_pos(&j->ax, kx) * sin_,
                                  th * sin_, tw * sin_, mul, div, addv, x.t.data));
                TRY(j->dir == VAE_DECODE ? decoder_pass(c, &x, &out) : encoder_pass(c, &x, &out));
                if (c->be->ops->synchronize(c->be)) return op_fail(c, "synchronize");
                TRY(download_blend(c, out.t.data, b0, nb, Cout, th * sout, tw * sout, &j->ay, ky, &j->ax, kx,
                                   sout, o));
                act_free(c, &out);
                if (m->n != m->n_plan)
                    return sdxl_error_set(c->err, SDXL_STATUS_INTERNAL,
                                          "vae: pass made %d buffer requests, plan %d", m->n, m->n_plan);
                done++;
                if (p->progress && !p->progress(p->user_data, done, total))
                    return sdxl_error_set(c->err, SDXL_STATUS_CANCELLED,
                                          "vae: cancelled after %d of %d passes", done, total);
            }
    }
    return SDXL_STATUS_OK;
}

/* Shared by decode and encode: plan, take the block, run. */
static sdxl_status vae_call(vae_dir dir, sdxl_backend *be, const sdxl_weights *w,
                            const sdxl_vae_params *params, const float *in, int B, int H, int W,
                            sdxl_arena *arena, const host_out *o_in, sdxl_error *err) {
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    sdxl_vae_params dp = sdxl_vae_default_params();
    const sdxl_vae_params *p = params ? params : &dp;
    vae_mem mem;
    vae_ctx c = {be, w, v, err, &mem};
    vae_job j;
    TRY(make_job(&c, dir, p, B, H, W, &j, NULL));
    host_out o = *o_in;
    o.Hd = dir == VAE_DECODE ? H : H / j.f;
    o.Wd = dir == VAE_DECODE ? W : W / j.f;
    size_t mark = sdxl_arena_mark(arena);
    void *block = sdxl_arena_alloc(arena, mem.total);
    if (!block)
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY,
                              "vae: %s of %d x %dx%d needs %zu arena bytes, %zu free",
                              dir == VAE_DECODE ? "decode" : "encode", B, W, H, mem.total,
                              sdxl_arena_capacity(arena) - sdxl_arena_used(arena));
    if (sdxl_arena_is_measuring(arena)) { /* a dry run: the block is recorded, nothing computed */
        sdxl_arena_reset(arena, mark);
        return SDXL_STATUS_OK;
    }
    mem.base = block;
    /* input scaling: decode maps pipeline latents to z; encode takes the image as is */
    float mul[SDXL_MAX_LATENT_CHANNELS], addv[SDXL_MAX_LATENT_CHANNELS];
    float div = 1.0f;
    bool affine = dir == VAE_DECODE;
    if (affine) {
        div = (float)v->scaling_factor;
        for (int ch = 0; ch < v->latent_channels; ch++) {
            mul[ch] = v->has_latents_mean_std ? (float)v->latents_std[ch] : 1.0f;
            addv[ch] = v->has_latents_mean_std ? (float)v->latents_mean[ch]
                       : v->has_shift_factor   ? (float)v->shift_factor
                                               : 0.0f;
        }
    }
    sdxl_status st = run_job(&c, &j, p, in, &o, affine ? mul : NULL, div, affine ? addv : NULL);
    sdxl_arena_reset(arena, mark);
    return st;
}

/* ---- public calls ---------------------------------------------------------------------- */

sdxl_status sdxl_vae_decode(sdxl_backend *be, const sdxl_weights *w, const sdxl_vae_params *params,
                            const float *latents, int B, int h, int wd, sdxl_arena *arena, float *image,
                            sdxl_error *err) {
    if (!be || !w || !latents || !arena || !image)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "vae decode: NULL argument");
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    int f = sdxl_vae_factor(v);
    if (!f || h < 1 || wd < 1 || h > SDXL_VAE_MAX_SIDE / f || wd > SDXL_VAE_MAX_SIDE / f)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "vae decode: latent %dx%d (1..%d per side)", wd,
                              h, f ? SDXL_VAE_MAX_SIDE / f : 0);
    host_out o = {image, NULL, v->out_channels, 0, 0};
    return vae_call(VAE_DECODE, be, w, params, latents, B, h * f, wd * f, arena, &o, err);
}

sdxl_status sdxl_vae_encode(sdxl_backend *be, const sdxl_weights *w, const sdxl_vae_params *params,
                            const float *image, int B, int H, int W, sdxl_arena *arena, float *mean,
                            float *logvar, sdxl_error *err) {
    if (!be || !w || !image || !arena || !mean)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "vae encode: NULL argument");
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    host_out o = {mean, logvar, v->latent_channels, 0, 0};
    TRY(vae_call(VAE_ENCODE, be, w, params, image, B, H, W, arena, &o, err));
    if (logvar) {
        /* DiagonalGaussianDistribution clamps after the (tile) blend */
        int f = sdxl_vae_factor(v);
        size_t n = (size_t)B * (size_t)v->latent_channels * (size_t)(H / f) * (size_t)(W / f);
        for (size_t i = 0; i < n; i++)
            logvar[i] = logvar[i] < -30.0f ? -30.0f : logvar[i] > 20.0f ? 20.0f : logvar[i];
    }
    return SDXL_STATUS_OK;
}

void sdxl_vae_scale_latents(const sdxl_vae_config *cfg, const float *x, int B, int h, int w, float *out) {
    const int C = cfg->latent_channels;
    const float s = (float)cfg->scaling_factor;
    const size_t plane = (size_t)h * (size_t)w;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            const float *src = x + ((size_t)b * C + c) * plane;
            float *dst = out + ((size_t)b * C + c) * plane;
            if (cfg->has_latents_mean_std) {
                const float mu = (float)cfg->latents_mean[c], sd = (float)cfg->latents_std[c];
                for (size_t i = 0; i < plane; i++)
                    dst[i] = (src[i] - mu) * s / sd;
            } else if (cfg->has_shift_factor) {
                const float sh = (float)cfg->shift_factor;
                for (size_t i = 0; i < plane; i++)
                    dst[i] = (src[i] - sh) * s;
            } else {
                for (size_t i = 0; i < plane; i++)
                    dst[i] = src[i] * s;
            }
        }
}

void sdxl_vae_image_to_rgb8(const float *image, int B, int H, int W, uint8_t *rgb) {
    const size_t plane = (size_t)H * (size_t)W;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < 3; c++) {
            const float *src = image + ((size_t)b * 3 + c) * plane; /* [H, W] */
            uint8_t *dst = rgb + (size_t)b * plane * 3 + c;         /* [H, W, 3] */
            for (size_t i = 0; i < plane; i++) {
                /* f32 steps as torch then numpy take them: x/2 + 0.5, clamp, ·255, rint
                 * (round half to even in the default rounding mode) */
                float v = src[i] / 2.0f + 0.5f;
                v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f; /* NaN -> 0 */
                float s = v * 255.0f;
                dst[3 * i] = (uint8_t)rintf(s);
            }
        }
}

void sdxl_vae_rgb8_to_image(const uint8_t *rgb, int B, int H, int W, float *image) {
    const size_t plane = (size_t)H * (size_t)W;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < 3; c++) {
            const uint8_t *src = rgb + (size_t)b * plane * 3 + c;
            float *dst = image + ((size_t)b * 3 + c) * plane;
            for (size_t i = 0; i < plane; i++)
                dst[i] = (float)src[3 * i] / 255.0f * 2.0f - 1.0f;
        }
}
