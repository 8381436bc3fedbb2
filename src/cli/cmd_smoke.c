/* cmd_smoke.c - `sdxl make-model --smoke` and `sdxl smoke`: the engine end to
 * end on a small model the project makes itself.
 *
 * make-model --smoke writes one SDXL UNet stage in diffusers naming, with seeded
 * random weights, as a safetensors file: conv_in, a ResNet block with its
 * time embedding, a Transformer2D block (GroupNorm, proj_in, self-attention,
 * cross-attention over a 77-token context, GEGLU feed-forward, proj_out) and
 * conv_out. smoke maps that file and runs the stage through the op table:
 *
 *   latent [1,4,S,S] ─conv_in─► x [1,C,S,S] ─resnet(temb)─► x ─transformer(ctx)─► x ─GN,SiLU,conv_out─► [1,4,S,S]
 *
 * and reports per-op-family time, the output's statistics, and two checks:
 * the output is finite, and a second run gives bit-identical output (the CPU
 * kernels are deterministic for a fixed thread count).
 * Until image generation lands this is the README's main command.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "backend/backend.h"
#include "cli/commands.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "io/safetensors.h"

/* ---- model shape ------------------------------------------------------- */
typedef struct {
    int channels;  /* C: UNet stage width */
    int groups;    /* GroupNorm groups */
    int heads;     /* attention heads, head dim C/heads */
    int ctx_dim;   /* text context width (SDXL: 2048) */
    int ctx_len;   /* text tokens (77) */
    int temb_dim;  /* timestep embedding width */
} smoke_cfg;

static const smoke_cfg default_cfg = {64, 32, 2, 96, 77, 128};

/* ---- deterministic weights ---------------------------------------------- */
static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return ((double)(splitmix(s) >> 11) + 0.5) / 9007199254740992.0; }

static float normal(uint64_t *s) {
    double u = uniform01(s), v = uniform01(s);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    int kind; /* 0 weight ~ N(0, 1/fan_in), 1 norm gain ~ 1 + small, 2 bias ~ small */
} wspec;

#define MAXW 64

static int model_specs(const smoke_cfg *c, wspec *w) {
    int64_t C = c->channels, X = c->ctx_dim, F = 4 * C;
    int n = 0;
#define W(nm, nd, a, b, cc, d, k) w[n++] = (wspec){nm, nd, {a, b, cc, d}, k}
    W("conv_in.weight", 4, C, 4, 3, 3, 0);             W("conv_in.bias", 1, C, 0, 0, 0, 2);
    W("resnet.norm1.weight", 1, C, 0, 0, 0, 1);        W("resnet.norm1.bias", 1, C, 0, 0, 0, 2);
    W("resnet.conv1.weight", 4, C, C, 3, 3, 0);        W("resnet.conv1.bias", 1, C, 0, 0, 0, 2);
    W("resnet.time_emb_proj.weight", 2, C, c->temb_dim, 0, 0, 0);
    W("resnet.time_emb_proj.bias", 1, C, 0, 0, 0, 2);
    W("resnet.norm2.weight", 1, C, 0, 0, 0, 1);        W("resnet.norm2.bias", 1, C, 0, 0, 0, 2);
    W("resnet.conv2.weight", 4, C, C, 3, 3, 0);        W("resnet.conv2.bias", 1, C, 0, 0, 0, 2);
    W("attn.norm.weight", 1, C, 0, 0, 0, 1);           W("attn.norm.bias", 1, C, 0, 0, 0, 2);
    W("attn.proj_in.weight", 2, C, C, 0, 0, 0);        W("attn.proj_in.bias", 1, C, 0, 0, 0, 2);
    W("attn.tb.norm1.weight", 1, C, 0, 0, 0, 1);       W("attn.tb.norm1.bias", 1, C, 0, 0, 0, 2);
    W("attn.tb.attn1.to_q.weight", 2, C, C, 0, 0, 0);  W("attn.tb.attn1.to_k.weight", 2, C, C, 0, 0, 0);
    W("attn.tb.attn1.to_v.weight", 2, C, C, 0, 0, 0);  W("attn.tb.attn1.to_out.0.weight", 2, C, C, 0, 0, 0);
    W("attn.tb.attn1.to_out.0.bias", 1, C, 0, 0, 0, 2);
    W("attn.tb.norm2.weight", 1, C, 0, 0, 0, 1);       W("attn.tb.norm2.bias", 1, C, 0, 0, 0, 2);
    W("attn.tb.attn2.to_q.weight", 2, C, C, 0, 0, 0);  W("attn.tb.attn2.to_k.weight", 2, C, X, 0, 0, 0);
    W("attn.tb.attn2.to_v.weight", 2, C, X, 0, 0, 0);  W("attn.tb.attn2.to_out.0.weight", 2, C, C, 0, 0, 0);
    W("attn.tb.attn2.to_out.0.bias", 1, C, 0, 0, 0, 2);
    W("attn.tb.norm3.weight", 1, C, 0, 0, 0, 1);       W("attn.tb.norm3.bias", 1, C, 0, 0, 0, 2);
    W("attn.tb.ff.net.0.proj.weight", 2, 2 * F, C, 0, 0, 0);
    W("attn.tb.ff.net.0.proj.bias", 1, 2 * F, 0, 0, 0, 2);
    W("attn.tb.ff.net.2.weight", 2, C, F, 0, 0, 0);    W("attn.tb.ff.net.2.bias", 1, C, 0, 0, 0, 2);
    W("attn.proj_out.weight", 2, C, C, 0, 0, 0);       W("attn.proj_out.bias", 1, C, 0, 0, 0, 2);
    W("conv_norm_out.weight", 1, C, 0, 0, 0, 1);       W("conv_norm_out.bias", 1, C, 0, 0, 0, 2);
    W("conv_out.weight", 4, 4, C, 3, 3, 0);            W("conv_out.bias", 1, 4, 0, 0, 0, 2);
#undef W
    return n;
}

static int64_t spec_nelem(const wspec *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->shape[i];
    return n;
}

static int parse_dtype(const char *s, sdxl_st_dtype *st, sdxl_dtype *dt) {
    if (!strcmp(s, "f32")) return *st = SDXL_ST_F32, *dt = SDXL_DTYPE_F32, 0;
    if (!strcmp(s, "f16")) return *st = SDXL_ST_F16, *dt = SDXL_DTYPE_F16, 0;
    if (!strcmp(s, "bf16")) return *st = SDXL_ST_BF16, *dt = SDXL_DTYPE_BF16, 0;
    return -1;
}

/* `sdxl make-model --smoke` (cmd_make_model.c parses the options). */
int sdxl__smoke_make_model(const char *out, unsigned long long seed, const char *dtype) {
    sdxl_st_dtype st_t;
    sdxl_dtype dt;
    if (!out || parse_dtype(dtype, &st_t, &dt)) {
        fprintf(stderr, "make-model: --smoke needs -o FILE and --dtype f32|f16|bf16 (see --help)\n");
        return 2;
    }
    const smoke_cfg *c = &default_cfg;
    wspec specs[MAXW];
    int n = model_specs(c, specs);
    sdxl_st_write_entry entries[MAXW];
    void *bufs[MAXW] = {0};
    uint64_t rng = seed;
    int rc = 1;
    for (int i = 0; i < n; i++) {
        int64_t ne = spec_nelem(&specs[i]);
        float *f = sdxl_malloc((size_t)ne * sizeof(float));
        bufs[i] = sdxl_malloc((size_t)ne * sdxl_dtype_size(dt));
        if (!f || !bufs[i]) {
            sdxl_free(f);
            fprintf(stderr, "make-model: out of memory\n");
            goto done;
        }
        int64_t fan_in = specs[i].ndim > 1 ? ne / specs[i].shape[0] : 1;
        for (int64_t j = 0; j < ne; j++) {
            float g = normal(&rng);
            f[j] = specs[i].kind == 0 ? g / sqrtf((float)fan_in) : specs[i].kind == 1 ? 1.0f + 0.1f * g : 0.05f * g;
        }
        sdxl_convert_n(f, SDXL_DTYPE_F32, bufs[i], dt, (size_t)ne);
        sdxl_free(f);
        entries[i] = (sdxl_st_write_entry){specs[i].name, st_t, specs[i].ndim, specs[i].shape, bufs[i]};
    }
    char cfgtext[256], seedtext[32];
    snprintf(cfgtext, sizeof cfgtext,
             "{\"channels\":%d,\"groups\":%d,\"heads\":%d,\"ctx_dim\":%d,\"ctx_len\":%d,\"temb_dim\":%d}",
             c->channels, c->groups, c->heads, c->ctx_dim, c->ctx_len, c->temb_dim);
    snprintf(seedtext, sizeof seedtext, "%llu", seed);
    const char *meta[] = {"format", "sdxl-worker smoke model", "config", cfgtext, "seed", seedtext, NULL};
    sdxl_error err = {0};
    if (sdxl_st_write(out, entries, (size_t)n, meta, &err) != SDXL_STATUS_OK) {
        fprintf(stderr, "make-model: %s\n", err.msg);
        goto done;
    }
    printf("wrote %s: %d tensors, %s weights, seed %llu\n", out, n, dtype, seed);
    rc = 0;
done:
    for (int i = 0; i < n; i++) sdxl_free(bufs[i]);
    return rc;
}

/* ---- smoke run ---------------------------------------------------------- */
enum { T_CONV, T_NORM, T_LINEAR, T_ATTN, T_OTHER, T_COUNT };
static const char *const tnames[T_COUNT] = {"conv2d", "norm", "linear", "attention", "other"};

typedef struct {
    sdxl_backend *be;
    const sdxl_backend_ops *ops;
    const sdxl_st_file *file;
    double t[T_COUNT];
    sdxl_error err;
} smoke;


/* Look up a weight; any problem ends the run with the name in the message. */
static int wt(smoke *s, const char *name, sdxl_tensor *out) {
    const sdxl_st_tensor *t = sdxl_st_find(s->file, name);
    if (!t) {
        sdxl_error_set(&s->err, SDXL_STATUS_NOT_FOUND, "%s: tensor '%s' missing", sdxl_st_path(s->file), name);
        return -1;
    }
    return sdxl_st_view(s->file, t, out, &s->err) == SDXL_STATUS_OK ? 0 : -1;
}

/* Run one op, timing it into bucket `k`; on failure copy the back end's message. */
#define OP(s, k, call)                                                                             \
    do {                                                                                           \
        double t0_ = sdxl_now_s();                                                                      \
        if ((call) != SDXL_STATUS_OK) {                                                            \
            sdxl_error_set(&(s)->err, SDXL_STATUS_INTERNAL, "%s", sdxl_backend_last_error((s)->be)); \
            return -1;                                                                             \
        }                                                                                          \
        (s)->t[k] += sdxl_now_s() - t0_;                                                                \
    } while (0)

static int conv3(smoke *s, const char *prefix, const sdxl_tensor *x, sdxl_tensor *y) {
    char n1[96], n2[96];
    sdxl_tensor w, b;
    snprintf(n1, sizeof n1, "%s.weight", prefix);
    snprintf(n2, sizeof n2, "%s.bias", prefix);
    if (wt(s, n1, &w) || wt(s, n2, &b)) return -1;
    sdxl_conv2d_params p = {1, 1, 1, 1, 1, 1};
    OP(s, T_CONV, s->ops->conv2d(s->be, x, &w, &b, &p, y));
    return 0;
}

static int linear(smoke *s, const char *prefix, bool bias, const sdxl_tensor *x, sdxl_tensor *y) {
    char n1[96], n2[96];
    sdxl_tensor w, b;
    snprintf(n1, sizeof n1, "%s.weight", prefix);
    snprintf(n2, sizeof n2, "%s.bias", prefix);
    if (wt(s, n1, &w) || (bias && wt(s, n2, &b))) return -1;
    OP(s, T_LINEAR, s->ops->linear(s->be, x, &w, bias ? &b : NULL, y));
    return 0;
}

static int norm(smoke *s, const char *prefix, bool group, int groups, bool silu, const sdxl_tensor *x,
                sdxl_tensor *y) {
    char n1[96], n2[96];
    sdxl_tensor g, b;
    snprintf(n1, sizeof n1, "%s.weight", prefix);
    snprintf(n2, sizeof n2, "%s.bias", prefix);
    if (wt(s, n1, &g) || wt(s, n2, &b)) return -1;
    if (group)
        OP(s, T_NORM, s->ops->group_norm(s->be, x, &g, &b, groups, 1e-5f, silu, y));
    else
        OP(s, T_NORM, s->ops->layer_norm(s->be, x, &g, &b, 1e-5f, y));
    return 0;
}

/* One attention sub-block: y += to_out(attn(to_q(h), to_k(ctx), to_v(ctx))). */
static int attn_block(smoke *s, const char *prefix, const smoke_cfg *c, const sdxl_tensor *h,
                      const sdxl_tensor *ctx, float *buf_q, float *buf_k, float *buf_v, float *buf_o,
                      sdxl_tensor *resid) {
    int64_t T = h->ne[1], Tk = ctx->ne[1], C = c->channels;
    char n[96];
    sdxl_tensor q = sdxl_tensor_3d(buf_q, SDXL_DTYPE_F32, 1, T, C);
    sdxl_tensor k = sdxl_tensor_3d(buf_k, SDXL_DTYPE_F32, 1, Tk, C);
    sdxl_tensor v = sdxl_tensor_3d(buf_v, SDXL_DTYPE_F32, 1, Tk, C);
    sdxl_tensor o = sdxl_tensor_3d(buf_o, SDXL_DTYPE_F32, 1, T, C);
    snprintf(n, sizeof n, "%s.to_q", prefix);
    if (linear(s, n, false, h, &q)) return -1;
    snprintf(n, sizeof n, "%s.to_k", prefix);
    if (linear(s, n, false, ctx, &k)) return -1;
    snprintf(n, sizeof n, "%s.to_v", prefix);
    if (linear(s, n, false, ctx, &v)) return -1;
    sdxl_attention_params ap = {.heads = c->heads, .scale = 1.0f / sqrtf((float)(C / c->heads)), .causal = false};
    OP(s, T_ATTN, s->ops->attention(s->be, &q, &k, &v, &ap, &o));
    snprintf(n, sizeof n, "%s.to_out.0", prefix);
    if (linear(s, n, true, &o, &q)) return -1; /* q's buffer reused for the projection */
    OP(s, T_OTHER, s->ops->binary(s->be, SDXL_BINARY_ADD, resid, &q, resid));
    return 0;
}

/* The whole stage; buffers come from one allocation sized up front (no
 * allocation inside, as in the denoising loop). out [1,4,S,S]. */
static int run_stage(smoke *s, const smoke_cfg *c, int S, const float *latent, const float *ctxbuf,
                     const float *tsin, float *work, float *out) {
    int64_t C = c->channels, T = (int64_t)S * S, F = 4 * C, Tm = T > c->ctx_len ? T : c->ctx_len;
    float *x = work, *h = x + C * T, *h2 = h + C * T, *tok = h2 + C * T, *tn = tok + C * T;
    float *q = tn + C * T, *k = q + C * Tm, *v = k + C * Tm, *o = v + C * Tm; /* each [<=Tm, C] */
    float *ff = o + C * Tm, *ffg = ff + 2 * F * T, *temb = ffg + F * T;
    sdxl_tensor tl = sdxl_tensor_4d((void *)latent, SDXL_DTYPE_F32, 1, 4, S, S);
    sdxl_tensor tx = sdxl_tensor_4d(x, SDXL_DTYPE_F32, 1, C, S, S);  /* residual stream, NCHW */
    sdxl_tensor th = sdxl_tensor_4d(h, SDXL_DTYPE_F32, 1, C, S, S);
    sdxl_tensor th2 = sdxl_tensor_4d(h2, SDXL_DTYPE_F32, 1, C, S, S);
    sdxl_tensor tctx = sdxl_tensor_3d((void *)ctxbuf, SDXL_DTYPE_F32, 1, c->ctx_len, c->ctx_dim);

    if (conv3(s, "conv_in", &tl, &tx)) return -1;

    /* ResNet: x += conv2(GN·SiLU(conv1(GN·SiLU(x)) + temb)) */
    sdxl_tensor tsn = sdxl_tensor_2d((void *)tsin, SDXL_DTYPE_F32, 1, c->temb_dim);
    sdxl_tensor tsa = sdxl_tensor_2d(tok, SDXL_DTYPE_F32, 1, c->temb_dim);
    sdxl_tensor te = sdxl_tensor_4d(temb, SDXL_DTYPE_F32, 1, C, 1, 1);
    sdxl_tensor te2 = sdxl_tensor_2d(temb, SDXL_DTYPE_F32, 1, C);
    OP(s, T_OTHER, s->ops->unary(s->be, SDXL_UNARY_SILU, &tsn, &tsa));
    if (linear(s, "resnet.time_emb_proj", true, &tsa, &te2)) return -1;
    if (norm(s, "resnet.norm1", true, c->groups, true, &tx, &th)) return -1;
    if (conv3(s, "resnet.conv1", &th, &th2)) return -1;
    OP(s, T_OTHER, s->ops->binary(s->be, SDXL_BINARY_ADD, &th2, &te, &th2));
    if (norm(s, "resnet.norm2", true, c->groups, true, &th2, &th2)) return -1;
    if (conv3(s, "resnet.conv2", &th2, &th)) return -1;
    OP(s, T_OTHER, s->ops->binary(s->be, SDXL_BINARY_ADD, &tx, &th, &tx));

    /* Transformer2D: tokens = proj_in(GN(x) as [1,T,C]); one basic block; x += proj_out(tokens)ᵀ */
    sdxl_tensor hc = sdxl_tensor_3d(h, SDXL_DTYPE_F32, 1, C, T);
    sdxl_tensor ht = sdxl_tensor_3d(h2, SDXL_DTYPE_F32, 1, T, C);
    sdxl_tensor ttok = sdxl_tensor_3d(tok, SDXL_DTYPE_F32, 1, T, C);
    sdxl_tensor ttn = sdxl_tensor_3d(tn, SDXL_DTYPE_F32, 1, T, C);
    if (norm(s, "attn.norm", true, c->groups, false, &tx, &th)) return -1;
    OP(s, T_OTHER, s->ops->transpose(s->be, &hc, &ht));
    if (linear(s, "attn.proj_in", true, &ht, &ttok)) return -1;
    if (norm(s, "attn.tb.norm1", false, 0, false, &ttok, &ttn)) return -1;
    if (attn_block(s, "attn.tb.attn1", c, &ttn, &ttn, q, k, v, o, &ttok)) return -1;
    if (norm(s, "attn.tb.norm2", false, 0, false, &ttok, &ttn)) return -1;
    if (attn_block(s, "attn.tb.attn2", c, &ttn, &tctx, q, k, v, o, &ttok)) return -1;
    if (norm(s, "attn.tb.norm3", false, 0, false, &ttok, &ttn)) return -1;
    sdxl_tensor tff = sdxl_tensor_3d(ff, SDXL_DTYPE_F32, 1, T, 2 * F);
    sdxl_tensor tffg = sdxl_tensor_3d(ffg, SDXL_DTYPE_F32, 1, T, F);
    sdxl_tensor tq = sdxl_tensor_3d(q, SDXL_DTYPE_F32, 1, T, C);
    if (linear(s, "attn.tb.ff.net.0.proj", true, &ttn, &tff)) return -1;
    OP(s, T_OTHER, s->ops->geglu(s->be, &tff, &tffg));
    if (linear(s, "attn.tb.ff.net.2", true, &tffg, &tq)) return -1;
    OP(s, T_OTHER, s->ops->binary(s->be, SDXL_BINARY_ADD, &ttok, &tq, &ttok));
    if (linear(s, "attn.proj_out", true, &ttok, &ht)) return -1;
    OP(s, T_OTHER, s->ops->transpose(s->be, &ht, &hc));
    OP(s, T_OTHER, s->ops->binary(s->be, SDXL_BINARY_ADD, &tx, &th, &tx));

    /* out = conv_out(GN·SiLU(x)) */
    sdxl_tensor tout = sdxl_tensor_4d(out, SDXL_DTYPE_F32, 1, 4, S, S);
    if (norm(s, "conv_norm_out", true, c->groups, true, &tx, &th)) return -1;
    if (conv3(s, "conv_out", &th, &tout)) return -1;
    return 0;
}

static size_t work_floats(const smoke_cfg *c, int S) {
    size_t C = (size_t)c->channels, T = (size_t)S * S, F = 4 * C;
    size_t Tm = T > (size_t)c->ctx_len ? T : (size_t)c->ctx_len;
    return 5 * C * T + 4 * C * Tm + 2 * F * T + F * T + C;
}

int sdxl_cmd_smoke(int argc, char **argv) {
    const char *model = NULL;
    int size = 32, threads = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"size", required_argument, 0, 's'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "m:s:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 's': size = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'h':
            printf("usage: sdxl smoke --model FILE [--size S] [--threads N]\n"
                   "Runs the stage written by `sdxl make-model --smoke` on a [1,4,S,S] latent (S*S tokens of\n"
                   "self-attention, 77 of cross-attention) and reports timings and checks.\n");
            return 0;
        default: return 2;
        }
    }
    if (!model || size < 1 || size > 256) {
        fprintf(stderr, "smoke: need --model FILE and 1 <= --size <= 256 (see --help)\n");
        return 2;
    }
    const smoke_cfg *c = &default_cfg;
    smoke s = {0};
    sdxl_st_file *f = NULL;
    if (sdxl_st_open(model, &f, &s.err) != SDXL_STATUS_OK) {
        fprintf(stderr, "smoke: %s\n", s.err.msg);
        return 1;
    }
    s.file = f;
    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = threads;
    s.be = sdxl_backend_create(&bp, &s.err);
    if (!s.be) {
        fprintf(stderr, "smoke: %s\n", s.err.msg);
        sdxl_st_close(f);
        return 1;
    }
    s.ops = sdxl_backend_ops_of(s.be);

    int64_t T = (int64_t)size * size;
    size_t nwork = work_floats(c, size);
    float *latent = sdxl_malloc((size_t)(4 * T) * 4), *ctx = sdxl_malloc((size_t)(c->ctx_len * c->ctx_dim) * 4);
    float *tsin = sdxl_malloc((size_t)c->temb_dim * 4), *work = sdxl_malloc(nwork * 4);
    float *out1 = sdxl_malloc((size_t)(4 * T) * 4), *out2 = sdxl_malloc((size_t)(4 * T) * 4);
    int rc = 1;
    if (!latent || !ctx || !tsin || !work || !out1 || !out2) {
        fprintf(stderr, "smoke: out of memory\n");
        goto done;
    }
    uint64_t rng = 2024;
    for (int64_t i = 0; i < 4 * T; i++) latent[i] = normal(&rng);
    for (int64_t i = 0; i < (int64_t)c->ctx_len * c->ctx_dim; i++) ctx[i] = normal(&rng);
    /* sinusoidal embedding of timestep 500, [cos | sin] as SDXL's flip_sin_to_cos */
    for (int i = 0; i < c->temb_dim / 2; i++) {
        double fr = exp(-log(10000.0) * i / (c->temb_dim / 2));
        tsin[i] = (float)cos(500.0 * fr);
        tsin[i + c->temb_dim / 2] = (float)sin(500.0 * fr);
    }
    double t0 = sdxl_now_s();
    if (run_stage(&s, c, size, latent, ctx, tsin, work, out1)) goto fail;
    double t1 = sdxl_now_s();
    double first[T_COUNT];
    memcpy(first, s.t, sizeof first);
    if (run_stage(&s, c, size, latent, ctx, tsin, work, out2)) goto fail;
    double t2 = sdxl_now_s();

    double sum = 0, sq = 0, mx = 0;
    int64_t nonfinite = 0;
    for (int64_t i = 0; i < 4 * T; i++) {
        if (!isfinite(out1[i])) nonfinite++;
        sum += out1[i];
        sq += (double)out1[i] * out1[i];
        if (fabs(out1[i]) > mx) mx = fabs(out1[i]);
    }
    double mean = sum / (double)(4 * T), sd = sqrt(sq / (double)(4 * T) - mean * mean);
    bool same = memcmp(out1, out2, (size_t)(4 * T) * 4) == 0;
    const sdxl_st_tensor *w0 = sdxl_st_at(f, 0);
    printf("model     %s (%zu tensors, %s weights, seed %s)\n", model, sdxl_st_count(f),
           w0 ? sdxl_st_dtype_name(w0->dtype) : "?", sdxl_st_metadata(f, "seed") ? sdxl_st_metadata(f, "seed") : "?");
    printf("backend   %s, %d threads, kernels %s\n", s.ops->name, sdxl_backend_threads(s.be),
           sdxl_isa_name(sdxl_cpu_isa()));
    printf("stage     latent [1,4,%d,%d] -> %d channels, %lld tokens self-attention, %d tokens cross\n", size,
           size, c->channels, (long long)T, c->ctx_len);
    printf("time      first run %.1f ms, second %.1f ms\n", (t1 - t0) * 1e3, (t2 - t1) * 1e3);
    for (int k = 0; k < T_COUNT; k++) printf("  %-10s %7.2f ms\n", tnames[k], (s.t[k] - first[k]) * 1e3);
    printf("output    mean %.6f  std %.6f  max|x| %.4f\n", mean, sd, mx);
    sdxl_mem_stats ms;
    sdxl_mem_get_stats(&ms);
    printf("memory    heap peak %.2f MiB, mapped %.2f MiB\n", (double)ms.peak_bytes / 1048576.0,
           (double)ms.mapped_bytes / 1048576.0);
    printf("check     finite: %s; repeat run bit-identical: %s\n", nonfinite ? "NO" : "yes", same ? "yes" : "NO");
    rc = (nonfinite == 0 && same && sd > 0) ? 0 : 1;
    if (rc) fprintf(stderr, "smoke: FAILED checks\n");
    goto done;
fail:
    fprintf(stderr, "smoke: %s\n", s.err.msg);
done:
    sdxl_free(latent), sdxl_free(ctx), sdxl_free(tsin), sdxl_free(work), sdxl_free(out1), sdxl_free(out2);
    sdxl_backend_free(s.be);
    sdxl_st_close(f);
    return rc;
}
