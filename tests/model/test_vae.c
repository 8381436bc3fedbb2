/* VAE decoder/encoder against diffusers 0.27.2 (CPU fp32):
 *   tests/data/refs/tiny-sdxl-ref/vae.safetensors   the tiny model (2 levels, factor 2, 0.13025)
 *   tests/data/refs/variants/<v>/ref.safetensors    4 configs: 2-4 levels, 1-2 layers, groups 2-8,
 *                                                   scaling 0.18215-0.5, a 32x48 image
 * in both layouts (diffusers folder, SGM single file). Tolerance: max |diff|
 * <= 1e-4 · max |reference| (shared refs README: one VAE forward; two torch
 * runs differ by ~5e-7). The two layouts must give bit-identical outputs.
 * Tiling: tiled vs untiled differ by a bound stated below (not an accuracy
 * tolerance: tiles see local GroupNorm statistics and attention). */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "io/safetensors.h"
#include "model/vae.h"
#include "test.h"

#define REL_TOL 1e-4

static const char *const VARIANTS[] = {"v1_convproj", "v2_sdxl3lvl", "v3_nonsquare", "v4_midattn"};

/* A copy of an f32 reference tensor (the file promises no alignment); shape
 * into sh[4]. NULL if absent or not f32. */
static float *ref_copy(const sdxl_st_file *f, const char *name, int64_t sh[4]) {
    const sdxl_st_tensor *t = sdxl_st_find(f, name);
    if (!t || t->dtype != SDXL_ST_F32 || t->ndim != 4) return NULL;
    for (int i = 0; i < 4; i++)
        sh[i] = t->shape[i];
    float *p = sdxl_malloc(t->nbytes ? t->nbytes : 4);
    if (p) memcpy(p, t->data, t->nbytes);
    return p;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static double rel_diff(const float *got, const float *ref, size_t n) {
    double m = max_abs(ref, n);
    return sdxl_test_max_abs_diff(got, ref, (long)n) / (m > 0 ? m : 1);
}

/* Run decode/encode with params p into fresh buffers (caller frees). */
static sdxl_status run_decode(sdxl_backend *be, const sdxl_weights *w, const sdxl_vae_params *p,
                              const float *z, int B, int h, int wd, float **img, sdxl_error *err) {
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    int f = sdxl_vae_factor(v);
    sdxl_vae_plan plan;
    sdxl_status st = sdxl_vae_plan_decode(v, p, B, h * f, wd * f, &plan, err);
    if (st) return st;
    sdxl_arena *a = sdxl_arena_create(plan.arena_bytes);
    *img = sdxl_malloc((size_t)B * v->out_channels * h * f * wd * f * sizeof(float));
    if (!a || !*img) return SDXL_STATUS_OUT_OF_MEMORY;
    st = sdxl_vae_decode(be, w, p, z, B, h, wd, a, *img, err);
    sdxl_arena_free(a);
    return st;
}

static sdxl_status run_encode(sdxl_backend *be, const sdxl_weights *w, const sdxl_vae_params *p,
                              const float *x, int B, int H, int W, float **mean, float **logvar,
                              sdxl_error *err) {
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    int f = sdxl_vae_factor(v);
    sdxl_vae_plan plan;
    sdxl_status st = sdxl_vae_plan_encode(v, p, B, H, W, &plan, err);
    if (st) return st;
    sdxl_arena *a = sdxl_arena_create(plan.arena_bytes);
    size_t n = (size_t)B * v->latent_channels * (H / f) * (W / f);
    *mean = sdxl_malloc(n * sizeof(float));
    *logvar = sdxl_malloc(n * sizeof(float));
    if (!a || !*mean || !*logvar) return SDXL_STATUS_OUT_OF_MEMORY;
    st = sdxl_vae_encode(be, w, p, x, B, H, W, a, *mean, *logvar, err);
    sdxl_arena_free(a);
    return st;
}

typedef struct vae_result {
    float *img, *mean, *logvar;
    size_t n_img, n_lat;
    double e_dec, e_enc_mean, e_enc_logvar;
} vae_result;

static void result_free(vae_result *r) {
    sdxl_free(r->img);
    sdxl_free(r->mean);
    sdxl_free(r->logvar);
    memset(r, 0, sizeof *r);
}

/* Decode and encode the reference inputs of `ref_path` with the model at
 * `model`; fills the relative errors. */
static bool check_model(sdxl_backend *be, const char *model, const sdxl_weights_params *wp,
                        const char *ref_path, vae_result *r) {
    sdxl_error err = {0};
    sdxl_weights *w = NULL;
    sdxl_st_file *ref = NULL;
    memset(r, 0, sizeof *r);
    bool ok = false;
    float *z = NULL, *dec = NULL, *img = NULL, *mean = NULL, *logvar = NULL;
    if (sdxl_weights_load(model, wp, &w, &err) || sdxl_st_open(ref_path, &ref, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", model, err.msg);
        goto out;
    }
    int64_t zs[4], ds[4], is[4], ms[4], ls[4];
    z = ref_copy(ref, "decode.in.latents", zs);
    dec = ref_copy(ref, "decode.out.sample", ds);
    img = ref_copy(ref, "encode.in.image", is);
    mean = ref_copy(ref, "encode.out.mean", ms);
    logvar = ref_copy(ref, "encode.out.logvar", ls);
    if (!z || !dec || !img || !mean || !logvar) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: reference tensors missing", ref_path);
        goto out;
    }
    if (run_decode(be, w, NULL, z, (int)zs[0], (int)zs[2], (int)zs[3], &r->img, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: decode: %s", model, err.msg);
        goto out;
    }
    r->n_img = (size_t)(ds[0] * ds[1] * ds[2] * ds[3]);
    r->e_dec = rel_diff(r->img, dec, r->n_img);
    if (run_encode(be, w, NULL, img, (int)is[0], (int)is[2], (int)is[3], &r->mean, &r->logvar, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: encode: %s", model, err.msg);
        goto out;
    }
    r->n_lat = (size_t)(ms[0] * ms[1] * ms[2] * ms[3]);
    r->e_enc_mean = rel_diff(r->mean, mean, r->n_lat);
    r->e_enc_logvar = rel_diff(r->logvar, logvar, r->n_lat);
    ok = true;
out:
    sdxl_free(z);
    sdxl_free(dec);
    sdxl_free(img);
    sdxl_free(mean);
    sdxl_free(logvar);
    sdxl_st_close(ref);
    sdxl_weights_free(w);
    return ok;
}

static bool bit_equal(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* A single file of the tiny model in the per-run tmp dir. */
static const char *tiny_single_file(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/vae_tiny_sgm.safetensors", sdxl_test_tmpdir());
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return path;
    }
    sdxl_weights *w = NULL;
    if (sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, NULL)) return NULL;
    const char *meta[] = {"description", "written by test_vae.c", NULL};
    sdxl_status st = sdxl_weights_write_single_file(w, path, meta, NULL);
    sdxl_weights_free(w);
    return st ? NULL : path;
}

TEST(vae_tiny_matches_diffusers_both_layouts) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    char ref[1024];
    snprintf(ref, sizeof ref, "%s", sdxl_test_data("refs/tiny-sdxl-ref/vae.safetensors"));
    vae_result d, s;
    bool ok = check_model(be, sdxl_test_data("refs/tiny-sdxl"), NULL, ref, &d);
    const char *sf = tiny_single_file();
    CHECK(sf != NULL);
    bool ok2 = sf && check_model(be, sf, NULL, ref, &s);
    if (ok) {
        CHECK_MSG(d.e_dec <= REL_TOL, "decode rel diff %.3g", d.e_dec);
        CHECK_MSG(d.e_enc_mean <= REL_TOL, "encode mean rel diff %.3g", d.e_enc_mean);
        CHECK_MSG(d.e_enc_logvar <= REL_TOL, "encode logvar rel diff %.3g", d.e_enc_logvar);
        if (getenv("SDXL_TEST_VERBOSE"))
            printf("    tiny: decode %.3g, mean %.3g, logvar %.3g (rel)\n", d.e_dec, d.e_enc_mean,
                   d.e_enc_logvar);
    }
    if (ok && ok2) {
        CHECK(s.n_img == d.n_img && bit_equal(s.img, d.img, d.n_img));
        CHECK(s.n_lat == d.n_lat && bit_equal(s.mean, d.mean, d.n_lat) &&
              bit_equal(s.logvar, d.logvar, d.n_lat));
    }
    /* the rest of the reference: image01, std, mean_scaled */
    sdxl_st_file *rf = NULL;
    sdxl_weights *w = NULL;
    if (ok && !sdxl_st_open(ref, &rf, &err) &&
        !sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, &err)) {
        int64_t sh[4];
        float *im01 = ref_copy(rf, "decode.out.image01", sh), *sd = ref_copy(rf, "encode.out.std", sh);
        float *ms = ref_copy(rf, "encode.out.mean_scaled", sh);
        REQUIRE(im01 && sd && ms);
        double e01 = 0, esd = 0;
        for (size_t i = 0; i < d.n_img; i++) {
            float v = d.img[i] / 2.0f + 0.5f;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            e01 = fabs(v - im01[i]) > e01 ? fabs(v - im01[i]) : e01;
        }
        CHECK_MSG(e01 <= REL_TOL, "image01 diff %.3g", e01);
        esd = 0;
        for (size_t i = 0; i < d.n_lat; i++) {
            double e = fabs(exp(0.5 * d.logvar[i]) - sd[i]);
            esd = e > esd ? e : esd;
        }
        CHECK_MSG(esd <= REL_TOL * max_abs(sd, d.n_lat), "std diff %.3g", esd);
        float *scaled = sdxl_malloc(d.n_lat * sizeof(float));
        REQUIRE(scaled);
        sdxl_vae_scale_latents(&sdxl_weights_config(w)->vae, d.mean, 1, (int)sh[2], (int)sh[3], scaled);
        double es = rel_diff(scaled, ms, d.n_lat);
        CHECK_MSG(es <= REL_TOL, "mean_scaled rel diff %.3g", es);
        sdxl_free(scaled);
        sdxl_free(im01);
        sdxl_free(sd);
        sdxl_free(ms);
    }
    sdxl_weights_free(w);
    sdxl_st_close(rf);
    if (ok) result_free(&d);
    if (ok2) result_free(&s);
    sdxl_backend_free(be);
}

TEST(vae_variants_match_diffusers_both_layouts) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    for (size_t i = 0; i < sizeof VARIANTS / sizeof *VARIANTS; i++) {
        char dir[1024], sf[1200], ref[1200], model[1200];
        snprintf(dir, sizeof dir, "%s", sdxl_test_data("refs/variants"));
        snprintf(model, sizeof model, "%s/%s/model", dir, VARIANTS[i]);
        snprintf(sf, sizeof sf, "%s/%s/model-single-file/%s.safetensors", dir, VARIANTS[i], VARIANTS[i]);
        snprintf(ref, sizeof ref, "%s/%s/ref.safetensors", dir, VARIANTS[i]);
        vae_result d, s;
        /* the single file as users load it: config from shapes + sidecar yaml + metadata */
        bool ok = check_model(be, model, NULL, ref, &d), ok2 = check_model(be, sf, NULL, ref, &s);
        if (ok) {
            CHECK_MSG(d.e_dec <= REL_TOL && d.e_enc_mean <= REL_TOL && d.e_enc_logvar <= REL_TOL,
                      "%s: decode %.3g, mean %.3g, logvar %.3g", VARIANTS[i], d.e_dec, d.e_enc_mean,
                      d.e_enc_logvar);
            if (getenv("SDXL_TEST_VERBOSE"))
                printf("    %s: decode %.3g, mean %.3g, logvar %.3g (rel)\n", VARIANTS[i], d.e_dec,
                       d.e_enc_mean, d.e_enc_logvar);
        }
        if (ok && ok2) {
            CHECK_MSG(s.n_img == d.n_img && bit_equal(s.img, d.img, d.n_img), "%s: layouts differ (decode)",
                      VARIANTS[i]);
            CHECK_MSG(s.n_lat == d.n_lat && bit_equal(s.mean, d.mean, d.n_lat) &&
                          bit_equal(s.logvar, d.logvar, d.n_lat),
                      "%s: layouts differ (encode)", VARIANTS[i]);
        }
        if (ok) result_free(&d);
        if (ok2) result_free(&s);
    }
    sdxl_backend_free(be);
}

/* ---- tiling --------------------------------------------------------------------------------- */

/* Deterministic N(0,1) values (LCG + Box-Muller). */
static void randn(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (size_t i = 0; i < n; i += 2) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            u[k] = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        }
        double r = sqrt(-2 * log(u[0]));
        x[i] = (float)(r * cos(6.283185307179586 * u[1]));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(6.283185307179586 * u[1]));
    }
}

/* An analytic image like the references' (smooth, in [-1,1]). */
static void pattern(float *x, int B, int H, int W) {
    for (int b = 0; b < B; b++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                double u = -1 + 2.0 * xx / (W - 1), v = -1 + 2.0 * y / (H - 1);
                float *p = x + (size_t)b * 3 * H * W + (size_t)y * W + xx;
                p[0] = (float)sin(3 * u + v + b);
                p[(size_t)H * W] = (float)cos(2 * v - u);
                p[(size_t)2 * H * W] = (float)(u * v);
            }
}

/* Latent window [y0,y0+h) x [x0,x0+w) of z [C,H,W] into out [C,h,w]. */
static void crop(const float *z, int C, int H, int W, int y0, int x0, int h, int w, float *out) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < h; y++)
            memcpy(out + ((size_t)c * h + y) * w, z + ((size_t)c * H + y0 + y) * W + x0, (size_t)w * 4);
}

/* Two tiles along one axis: the tiled result must be tile 0's own decode
 * where only tile 0 covers, tile 1's where only tile 1 covers (bit for bit),
 * and the linear cross-fade w0·D0 + (1-w0)·D1 in the overlap. Checks the
 * crop, the placement, the ramp and the normalisation, on decode and encode,
 * along x and along y. Tiny model (factor 2), latent 32 x 8, tile 20,
 * overlap 8: tiles at 0 and 12, overlap [12,20) latent = [24,40) pixels. */
TEST(vae_tiling_blends_neighbour_tiles_exactly) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    sdxl_weights *w = NULL;
    REQUIRE(be);
    REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, &err), &err);
    const int C = 4, L = 32, S = 8, T = 20, O = 8, P1 = 12, f = 2;
    sdxl_vae_params tp = sdxl_vae_default_params(), up = sdxl_vae_default_params();
    tp.tiling = SDXL_VAE_TILING_ON;
    tp.tile = T;
    tp.overlap = O;
    up.tiling = SDXL_VAE_TILING_OFF;
    for (int axis = 0; axis < 2; axis++) { /* 0: tiles along x, 1: along y */
        const int h = axis ? L : S, wd = axis ? S : L, th = axis ? T : S, tw = axis ? S : T;
        float z[4 * 32 * 8], z0[4 * 20 * 8], z1[4 * 20 * 8];
        randn(z, sizeof z / 4, 11 + axis);
        crop(z, C, h, wd, 0, 0, th, tw, z0);
        crop(z, C, h, wd, axis ? P1 : 0, axis ? 0 : P1, th, tw, z1);
        float *full = NULL, *d0 = NULL, *d1 = NULL;
        REQUIRE_OK(run_decode(be, w, &tp, z, 1, h, wd, &full, &err), &err);
        REQUIRE_OK(run_decode(be, w, &up, z0, 1, th, tw, &d0, &err), &err);
        REQUIRE_OK(run_decode(be, w, &up, z1, 1, th, tw, &d1, &err), &err);
        int H = h * f, W = wd * f, TH = th * f, TW = tw * f, bad_excl = 0;
        double blend = 0, m = max_abs(full, (size_t)3 * H * W);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int u = axis ? y : x; /* pixel along the tiled axis */
                    float got = full[((size_t)c * H + y) * W + x];
                    int y1 = axis ? y - P1 * f : y, x1 = axis ? x : x - P1 * f;
                    float a = u < T * f ? d0[((size_t)c * TH + y) * TW + x] : 0;
                    float b = u >= P1 * f ? d1[((size_t)c * TH + y1) * TW + x1] : 0;
                    if (u < P1 * f)
                        bad_excl += got != a;
                    else if (u >= T * f)
                        bad_excl += got != b;
                    else {
                        double uc = (u + 0.5) / f, w0 = (T - uc) / O;
                        blend = fmax(blend, fabs(got - (w0 * a + (1 - w0) * b)));
                    }
                }
        CHECK_MSG(bad_excl == 0, "decode axis %d: %d pixels differ from their only tile", axis, bad_excl);
        CHECK_MSG(blend <= 1e-6 * m, "decode axis %d: cross-fade off by %.3g", axis, blend);
        sdxl_free(full), sdxl_free(d0), sdxl_free(d1);

        /* encode: the same grid in latent space on an image of 2x the size */
        float *img = sdxl_malloc((size_t)3 * H * W * 4), *i0 = sdxl_malloc((size_t)3 * TH * TW * 4),
              *i1 = sdxl_malloc((size_t)3 * TH * TW * 4);
        REQUIRE(img && i0 && i1);
        pattern(img, 1, H, W);
        crop(img, 3, H, W, 0, 0, TH, TW, i0);
        crop(img, 3, H, W, axis ? P1 * f : 0, axis ? 0 : P1 * f, TH, TW, i1);
        float *m_full = NULL, *l_full = NULL, *m0 = NULL, *l0 = NULL, *m1 = NULL, *l1 = NULL;
        REQUIRE_OK(run_encode(be, w, &tp, img, 1, H, W, &m_full, &l_full, &err), &err);
        REQUIRE_OK(run_encode(be, w, &up, i0, 1, TH, TW, &m0, &l0, &err), &err);
        REQUIRE_OK(run_encode(be, w, &up, i1, 1, TH, TW, &m1, &l1, &err), &err);
        bad_excl = 0;
        blend = 0;
        m = max_abs(m_full, (size_t)C * h * wd);
        for (int c = 0; c < C; c++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < wd; x++) {
                    int u = axis ? y : x;
                    float got = m_full[((size_t)c * h + y) * wd + x];
                    int y1 = axis ? y - P1 : y, x1 = axis ? x : x - P1;
                    float a = u < T ? m0[((size_t)c * th + y) * tw + x] : 0;
                    float b = u >= P1 ? m1[((size_t)c * th + y1) * tw + x1] : 0;
                    if (u < P1)
                        bad_excl += got != a;
                    else if (u >= T)
                        bad_excl += got != b;
                    else {
                        double w0 = (T - (u + 0.5)) / O;
                        blend = fmax(blend, fabs(got - (w0 * a + (1 - w0) * b)));
                    }
                }
        CHECK_MSG(bad_excl == 0, "encode axis %d: %d latents differ from their only tile", axis, bad_excl);
        CHECK_MSG(blend <= 1e-6 * m, "encode axis %d: cross-fade off by %.3g", axis, blend);
        sdxl_free(img), sdxl_free(i0), sdxl_free(i1), sdxl_free(m_full), sdxl_free(l_full), sdxl_free(m0),
            sdxl_free(l0), sdxl_free(m1), sdxl_free(l1);
    }
    sdxl_weights_free(w);
    sdxl_backend_free(be);
}

/* Tiled against untiled at sizes that need several tiles. The difference is
 * not a seam artefact (the test above shows the seams are exact cross-fades)
 * but the non-locality of the network: each tile's GroupNorm statistics and
 * mid-block attention see only the tile. These random-weight models are a
 * worst case: their attention is nearly uniform, i.e. a global average, so
 * every pixel depends on the whole image. Measured (same figures in the
 * Release and the sanitizer build), relative to max |untiled|:
 *   tiny (2 levels, 32 groups), latent 32x24, tile 12 / overlap 3 (4x3 tiles of 11x10):
 *       decode max 0.497, mean 0.069; encode mean: max 0.771
 *   v4_midattn (2 levels, 2 layers, 4 groups), latent 24x32, same tiling (3x4 tiles):
 *       decode max 0.657, mean 0.065; encode mean: max 0.590
 * The bounds below are those figures with ~30 % margin. They guard against
 * regressions; they are not what a trained VAE shows (no trained SDXL
 * weights are available here to measure that). */
typedef struct tile_case {
    const char *model;
    int lh, lw, tile, overlap;
    double dec_max, dec_mean, enc_max; /* bounds, relative to max |untiled| */
} tile_case;

TEST(vae_tiled_vs_untiled_within_stated_bound) {
    static const tile_case cases[] = {
        {"refs/tiny-sdxl", 32, 24, 12, 3, 0.65, 0.09, 1.0},
        {"refs/variants/v4_midattn/model", 24, 32, 12, 3, 0.85, 0.085, 0.77},

    };
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const tile_case *tc = &cases[i];
        sdxl_weights *w = NULL;
        REQUIRE_OK(sdxl_weights_load(sdxl_test_data(tc->model), NULL, &w, &err), &err);
        const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
        int f = sdxl_vae_factor(v), C = v->latent_channels, H = tc->lh * f, W = tc->lw * f;
        size_t nz = (size_t)C * tc->lh * tc->lw, ni = (size_t)3 * H * W;
        float *z = sdxl_malloc(nz * 4), *x = sdxl_malloc(ni * 4);
        REQUIRE(z && x);
        randn(z, nz, 7);
        for (size_t k = 0; k < nz; k++)
            z[k] *= (float)v->scaling_factor; /* z ~ N(0,1) inside */
        pattern(x, 1, H, W);
        sdxl_vae_params p = sdxl_vae_default_params();
        p.tiling = SDXL_VAE_TILING_ON;
        p.tile = tc->tile;
        p.overlap = tc->overlap;
        sdxl_vae_plan plan;
        REQUIRE_OK(sdxl_vae_plan_decode(v, &p, 1, H, W, &plan, &err), &err);
        CHECK(plan.tiled && plan.tiles_y * plan.tiles_x >= 6);
        float *a = NULL, *b = NULL, *m0 = NULL, *l0 = NULL, *m1 = NULL, *l1 = NULL;
        REQUIRE_OK(run_decode(be, w, &p, z, 1, tc->lh, tc->lw, &b, &err), &err);
        REQUIRE_OK(run_encode(be, w, &p, x, 1, H, W, &m1, &l1, &err), &err);
        p.tiling = SDXL_VAE_TILING_OFF;
        REQUIRE_OK(run_decode(be, w, &p, z, 1, tc->lh, tc->lw, &a, &err), &err);
        REQUIRE_OK(run_encode(be, w, &p, x, 1, H, W, &m0, &l0, &err), &err);
        double ma = max_abs(a, ni), sum = 0;
        for (size_t k = 0; k < ni; k++)
            sum += fabs(a[k] - b[k]);
        double dmax = sdxl_test_max_abs_diff(a, b, (long)ni) / ma, dmean = sum / ni / ma;
        double emax = sdxl_test_max_abs_diff(m0, m1, (long)nz) / max_abs(m0, nz);
        CHECK_MSG(dmax <= tc->dec_max && dmean <= tc->dec_mean && emax <= tc->enc_max,
                  "%s: decode max %.3g mean %.3g, encode %.3g (bounds %.3g %.3g %.3g)", tc->model, dmax,
                  dmean, emax, tc->dec_max, tc->dec_mean, tc->enc_max);
        if (getenv("SDXL_TEST_VERBOSE"))
            printf("    %s: tiled vs untiled: decode max %.3g mean %.3g, encode mean max %.3g (rel)\n",
                   tc->model, dmax, dmean, emax);
        for (size_t k = 0; k < ni; k++)
            CHECK(isfinite(b[k]));
        sdxl_free(z), sdxl_free(x), sdxl_free(a), sdxl_free(b), sdxl_free(m0), sdxl_free(l0), sdxl_free(m1),
            sdxl_free(l1);
        sdxl_weights_free(w);
    }
    sdxl_backend_free(be);
}

/* ---- memory plan ----------------------------------------------------------------------------- */

TEST(vae_arena_plan_is_exact) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    sdxl_weights *w = NULL;
    REQUIRE(be);
    REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, &err), &err);
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    float z[4 * 24 * 20], img[3 * 48 * 40], mean[4 * 24 * 20];
    randn(z, sizeof z / 4, 3);
    pattern(img, 1, 48, 40);
    for (int tiled = 0; tiled < 2; tiled++) {
        sdxl_vae_params p = sdxl_vae_default_params();
        p.tiling = tiled ? SDXL_VAE_TILING_ON : SDXL_VAE_TILING_OFF;
        p.tile = 12;
        p.overlap = 3;
        for (int enc = 0; enc < 2; enc++) {
            sdxl_vae_plan plan;
            REQUIRE_OK((enc ? sdxl_vae_plan_encode : sdxl_vae_plan_decode)(v, &p, 1, 48, 40, &plan, &err),
                       &err);
            CHECK(plan.tiled == (tiled == 1));
            CHECK(plan.arena_bytes > 0 && plan.arena_bytes % 64 == 0);
            CHECK(tiled ? plan.arena_bytes < plan.untiled_bytes : plan.arena_bytes == plan.untiled_bytes);
            /* a measuring arena records exactly the planned block and computes nothing */
            sdxl_arena *ms = sdxl_arena_create(0);
            float *out = enc ? mean : img;
            sdxl_status st = enc ? sdxl_vae_encode(be, w, &p, img, 1, 48, 40, ms, mean, NULL, &err)
                                 : sdxl_vae_decode(be, w, &p, z, 1, 24, 20, ms, out, &err);
            CHECK(st == SDXL_STATUS_OK);
            CHECK_EQ_INT(sdxl_arena_peak(ms), plan.arena_bytes);
            sdxl_arena_free(ms);
            /* the planned size runs; 64 bytes less is a clean OUT_OF_MEMORY */
            sdxl_arena *a = sdxl_arena_create(plan.arena_bytes),
                       *small = sdxl_arena_create(plan.arena_bytes - 64);
            REQUIRE(a && small);
            float *o = sdxl_malloc(3 * 48 * 40 * 4);
            REQUIRE(o);
            st = enc ? sdxl_vae_encode(be, w, &p, img, 1, 48, 40, a, o, NULL, &err)
                     : sdxl_vae_decode(be, w, &p, z, 1, 24, 20, a, o, &err);
            CHECK_MSG(st == SDXL_STATUS_OK, "%s", err.msg);
            CHECK_EQ_INT(sdxl_arena_used(a), 0); /* released */
            st = enc ? sdxl_vae_encode(be, w, &p, img, 1, 48, 40, small, o, NULL, &err)
                     : sdxl_vae_decode(be, w, &p, z, 1, 24, 20, small, o, &err);
            CHECK(st == SDXL_STATUS_OUT_OF_MEMORY);
            CHECK(strstr(err.msg, "arena") != NULL);
            sdxl_free(o);
            sdxl_arena_free(a);
            sdxl_arena_free(small);
        }
    }
    sdxl_weights_free(w);
    sdxl_backend_free(be);
}

/* Every size from the config: the planner's block against a hand count for
 * the SDXL VAE at 1024x1024. The decoder's peak is the last upsampler: the
 * nearest-x2 output and the conv output, both [256, 1024, 1024] f32 = 1 GiB,
 * alive together (the input was freed): 2 GiB, and nothing else is alive.
 * The encoder's peak is a resnet at full size: x, GN(x), conv1(x), each
 * [128, 1024, 1024] = 0.5 GiB. AUTO keeps 1024^2 untiled and tiles 2048^2. */
TEST(vae_plan_sdxl_config) {
    static const char json[] =
        "{\"block_out_channels\": [128, 256, 512, 512], \"layers_per_block\": 2, \"latent_channels\": 4,"
        " \"in_channels\": 3, \"out_channels\": 3, \"norm_num_groups\": 32, \"scaling_factor\": 0.13025,"
        " \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\","
        " \"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\","
        " \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"], \"_class_name\": \"AutoencoderKL\"}";
    sdxl_vae_config v;
    sdxl_error err = {0};
    REQUIRE_OK(sdxl_vae_config_parse_json(json, strlen(json), "sdxl", &v, &err), &err);
    CHECK_EQ_INT(sdxl_vae_factor(&v), 8);
    sdxl_vae_plan d, e, d2;
    REQUIRE_OK(sdxl_vae_plan_decode(&v, NULL, 1, 1024, 1024, &d, &err), &err);
    REQUIRE_OK(sdxl_vae_plan_encode(&v, NULL, 1, 1024, 1024, &e, &err), &err);
    CHECK(!d.tiled && !e.tiled);
    CHECK_EQ_INT(d.arena_bytes, (size_t)2 << 30);
    CHECK_EQ_INT(e.arena_bytes, (size_t)3 << 29);
    REQUIRE_OK(sdxl_vae_plan_decode(&v, NULL, 1, 2048, 2048, &d2, &err), &err);
    CHECK(d2.tiled && d2.untiled_bytes == (size_t)8 << 30 && d2.arena_bytes < d.arena_bytes);
    /* batch: one sample per pass by default, so B does not change the block */
    sdxl_vae_plan b4, b4all;
    sdxl_vae_params p = sdxl_vae_default_params();
    REQUIRE_OK(sdxl_vae_plan_decode(&v, &p, 4, 1024, 1024, &b4, &err), &err);
    CHECK(b4.arena_bytes == d.arena_bytes && b4.passes == 4);
    p.batch_per_pass = 0;
    p.tiling = SDXL_VAE_TILING_OFF;
    REQUIRE_OK(sdxl_vae_plan_decode(&v, &p, 4, 1024, 1024, &b4all, &err), &err);
    CHECK(b4all.arena_bytes == 4 * d.arena_bytes && b4all.passes == 1);
}

/* ---- batches, dtypes, scaling ---------------------------------------------------------------- */

TEST(vae_batch_slices_agree) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    sdxl_weights *w = NULL;
    REQUIRE(be);
    REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, &err), &err);
    enum { B = 3, h = 12, wd = 10, n1 = 4 * h * wd, i1 = 3 * 4 * h * wd };
    float z[B * n1];
    randn(z, B * n1, 5);
    sdxl_vae_params p = sdxl_vae_default_params();
    float *one = NULL, *all = NULL, *two = NULL, *single = NULL;
    REQUIRE_OK(run_decode(be, w, &p, z, B, h, wd, &one, &err), &err); /* 1 per pass */
    p.batch_per_pass = 0;
    REQUIRE_OK(run_decode(be, w, &p, z, B, h, wd, &all, &err), &err);
    p.batch_per_pass = 2; /* passes of 2 and 1 */
    REQUIRE_OK(run_decode(be, w, &p, z, B, h, wd, &two, &err), &err);
    REQUIRE_OK(run_decode(be, w, NULL, z + 2 * n1, 1, h, wd, &single, &err), &err);
    double m = max_abs(one, B * i1);
    CHECK(sdxl_test_max_abs_diff(one, all, B * i1) <= 1e-6 * m);
    CHECK(sdxl_test_max_abs_diff(one, two, B * i1) <= 1e-6 * m);
    CHECK(bit_equal(one + 2 * i1, single, i1));
    sdxl_free(one), sdxl_free(all), sdxl_free(two), sdxl_free(single);
    sdxl_weights_free(w);
    sdxl_backend_free(be);
}

/* f16 / bf16 weights: activations stay f32 (the ops widen the weights), so
 * the result is the f32 one up to the weights' rounding. */
TEST(vae_half_precision_weights) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    sdxl_weights *w32 = NULL;
    REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w32, &err), &err);
    float z[4 * 16 * 16];
    randn(z, sizeof z / 4, 9);
    float *ref = NULL;
    REQUIRE_OK(run_decode(be, w32, NULL, z, 1, 16, 16, &ref, &err), &err);
    static const sdxl_dtype dts[2] = {SDXL_DTYPE_F16, SDXL_DTYPE_BF16};
    static const double tol[2] = {5e-3, 4e-2};
    for (int k = 0; k < 2; k++) {
        sdxl_weights_params wp = sdxl_weights_default_params();
        wp.convert = true;
        wp.dtype = dts[k];
        sdxl_weights *w = NULL;
        REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), &wp, &w, &err), &err);
        REQUIRE(sdxl_weights_get(w, "vae.decoder.conv_in.weight")->dtype == dts[k]);
        float *img = NULL;
        REQUIRE_OK(run_decode(be, w, NULL, z, 1, 16, 16, &img, &err), &err);
        double d = rel_diff(img, ref, 3 * 32 * 32);
        CHECK_MSG(d > 0 && d <= tol[k], "dtype %d: rel diff %.3g", k, d);
        if (getenv("SDXL_TEST_VERBOSE"))
            printf("    %s weights: rel diff to f32 %.3g\n", k ? "bf16" : "f16", d);
        sdxl_free(img);
        sdxl_weights_free(w);
    }
    sdxl_free(ref);
    sdxl_weights_free(w32);
    sdxl_backend_free(be);
}

/* decode(latents) with shift_factor s is decode(latents + s·scaling) without;
 * scale_latents inverts the scaling. */
TEST(vae_scaling_and_shift) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    sdxl_weights *w = NULL, *ws = NULL;
    REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, &err), &err);
    sdxl_weights_params wp = sdxl_weights_default_params();
    const char *hints[] = {"shift_factor", "0.5", "scaling_factor", "0.25", NULL};
    wp.hints = hints;
    REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), &wp, &ws, &err), &err);
    const sdxl_vae_config *vs = &sdxl_weights_config(ws)->vae;
    CHECK(vs->has_shift_factor && vs->shift_factor == 0.5 && vs->scaling_factor == 0.25);
    float z[4 * 8 * 8], z2[4 * 8 * 8], back[4 * 8 * 8];
    randn(z, 256, 4);
    /* (z/0.25 + 0.5) = (z + 0.125)/0.25 ; for the plain model z2/0.13025 must equal that */
    for (int i = 0; i < 256; i++)
        z2[i] = (z[i] / 0.25f + 0.5f) * 0.13025f;
    float *a = NULL, *b = NULL;
    REQUIRE_OK(run_decode(be, ws, NULL, z, 1, 8, 8, &a, &err), &err);
    REQUIRE_OK(run_decode(be, w, NULL, z2, 1, 8, 8, &b, &err), &err);
    CHECK(rel_diff(a, b, 3 * 16 * 16) <= 1e-5);
    /* inverse: posterior x -> latents (x - 0.5)·0.25 */
    float x[4 * 8 * 8];
    for (int i = 0; i < 256; i++)
        x[i] = z[i] / 0.25f + 0.5f;
    sdxl_vae_scale_latents(vs, x, 1, 8, 8, back);
    CHECK(sdxl_test_max_abs_diff(back, z, 256) <= 1e-6);
    sdxl_vae_scale_latents(&sdxl_weights_config(w)->vae, x, 1, 8, 8, back);
    CHECK_NEAR(back[17], x[17] * 0.13025f, 1e-7);
    sdxl_free(a), sdxl_free(b);
    sdxl_weights_free(ws);
    sdxl_weights_free(w);
    sdxl_backend_free(be);
}

/* ---- conversions ----------------------------------------------------------------------------- */

TEST(vae_rgb8_rounds_like_numpy) {
    /* [x] -> expected byte: clamp(x/2+0.5)·255 in f32, round half to even */
    static const struct {
        float x;
        uint8_t v;
    } cases[] = {
        {-1.0f, 0},
        {1.0f, 255},
        {-3.0f, 0},
        {7.0f, 255},
        {0.0f, 128} /* 127.5 -> 128 (even) */,
        {-0.5f, 64} /* 63.75 */,
        {0.5f, 191} /* 191.25 */,
        {NAN, 0},
        {INFINITY, 255},
        {-INFINITY, 0},
    };
    enum { N = sizeof cases / sizeof *cases };
    float img[3 * N];
    uint8_t rgb[3 * N];
    for (int i = 0; i < N; i++)
        img[i] = img[N + i] = img[2 * N + i] = cases[i].x;
    sdxl_vae_image_to_rgb8(img, 1, 1, N, rgb);
    for (int i = 0; i < N; i++) {
        CHECK_MSG(rgb[3 * i] == cases[i].v, "x=%g -> %d, want %d", cases[i].x, rgb[3 * i], cases[i].v);
        CHECK(rgb[3 * i + 1] == rgb[3 * i] && rgb[3 * i + 2] == rgb[3 * i]);
    }
    /* ties n+0.5 go to the even neighbour (numpy's round), not up: look for f32
     * inputs x whose f32 steps give v·255 == n+0.5 exactly, for every n */
    int ties[2] = {0, 0}; /* found with n even, n odd */
    for (int n = 0; n < 255; n++) {
        float v = (n + 0.5f) / 255.0f;
        for (int k = 0; k < 64; k++)
            v = nextafterf(v, 0.0f);
        for (int k = 0; k < 128; k++, v = nextafterf(v, 1.0f)) {
            float x = (v - 0.5f) * 2.0f;
            if (x / 2.0f + 0.5f != v || v * 255.0f != n + 0.5f) continue;
            float im[3] = {x, x, x};
            uint8_t px[3];
            sdxl_vae_image_to_rgb8(im, 1, 1, 1, px);
            int want = n % 2 ? n + 1 : n;
            CHECK_MSG(px[0] == want, "tie %d.5 -> %d, want %d", n, px[0], want);
            ties[n % 2]++;
        }
    }
    CHECK(ties[0] > 0 && ties[1] > 0);
    /* layout: [B,3,H,W] -> [B,H,W,3]; and back */
    float im2[2 * 3 * 2 * 2];
    for (int i = 0; i < 24; i++)
        im2[i] = -1.0f + (float)i / 12.0f;
    uint8_t px[24];
    sdxl_vae_image_to_rgb8(im2, 2, 2, 2, px);
    CHECK(px[0] == 0);                                                               /* b0 (0,0) r: -1 */
    CHECK(px[1] == (uint8_t)rintf((-1.0f + 4.0f / 12.0f) / 2.0f * 255.0f + 127.5f)); /* b0 (0,0) g */
    CHECK(px[12 + 3 * 3 + 2] ==
          (uint8_t)rintf(((-1.0f + 23.0f / 12.0f) / 2.0f + 0.5f) * 255.0f)); /* b1 (1,1) b */
    float back[24];
    sdxl_vae_rgb8_to_image(px, 2, 2, 2, back);
    CHECK(sdxl_test_max_abs_diff(back, im2, 24) <= 1.0 / 255.0 + 1e-6);
    uint8_t full[3] = {0, 255, 128};
    float fi[3];
    sdxl_vae_rgb8_to_image(full, 1, 1, 1, fi);
    CHECK(fi[0] == -1.0f && fi[1] == 1.0f && fabsf(fi[2] - (128.0f / 255.0f * 2.0f - 1.0f)) == 0.0f);
}

/* ---- errors ---------------------------------------------------------------------------------- */

static bool cancel_after_two(void *user, int done, int total) {
    int *calls = user;
    (*calls)++;
    return done < 2 && total > 0;
}

TEST(vae_rejects_bad_arguments_and_cancels) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    sdxl_weights *w = NULL;
    REQUIRE(be);
    REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, &err), &err);
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    sdxl_arena *a = sdxl_arena_create(1 << 24);
    REQUIRE(a);
    float z[4 * 16 * 16], img[3 * 32 * 32], mean[4 * 16 * 16];
    randn(z, sizeof z / 4, 1);
    sdxl_vae_plan plan;
    CHECK(sdxl_vae_plan_encode(v, NULL, 1, 33, 32, &plan, &err) == SDXL_STATUS_INVALID_ARG); /* not /2 */
    CHECK(strstr(err.msg, "multiples of 2") != NULL);
    CHECK(sdxl_vae_plan_decode(v, NULL, 0, 32, 32, &plan, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_vae_plan_decode(v, NULL, 1, 65536, 32, &plan, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_vae_plan_decode(NULL, NULL, 1, 32, 32, &plan, &err) == SDXL_STATUS_INVALID_ARG);
    sdxl_vae_params p = sdxl_vae_default_params();
    p.tile = 8;
    p.overlap = 5; /* 2·overlap > tile */
    CHECK(sdxl_vae_plan_decode(v, &p, 1, 32, 32, &plan, &err) == SDXL_STATUS_INVALID_ARG);
    p = sdxl_vae_default_params();
    p.tiling = (sdxl_vae_tiling)7;
    CHECK(sdxl_vae_decode(be, w, &p, z, 1, 16, 16, a, img, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_vae_decode(be, w, NULL, NULL, 1, 16, 16, a, img, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_vae_decode(be, w, NULL, z, 1, 0, 16, a, img, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_vae_encode(be, w, NULL, img, 1, 32, 30, a, NULL, NULL, &err) == SDXL_STATUS_INVALID_ARG);
    /* AUTO: untiled while the block fits auto_max_bytes */
    p = sdxl_vae_default_params();
    p.tile = 8;
    p.overlap = 2;
    REQUIRE_OK(sdxl_vae_plan_decode(v, &p, 1, 32, 32, &plan, &err), &err);
    CHECK(!plan.tiled);
    p.auto_max_bytes = plan.arena_bytes - 1;
    REQUIRE_OK(sdxl_vae_plan_decode(v, &p, 1, 32, 32, &plan, &err), &err);
    CHECK(plan.tiled && plan.tiles_x == 3 && plan.tiles_y == 3 && plan.passes == 9);
    /* cancel after the second of nine passes */
    int calls = 0;
    p.progress = cancel_after_two;
    p.user_data = &calls;
    CHECK(sdxl_vae_decode(be, w, &p, z, 1, 16, 16, a, img, &err) == SDXL_STATUS_CANCELLED);
    CHECK_EQ_INT(calls, 2);
    CHECK_EQ_INT(sdxl_arena_used(a), 0);
    /* logvar is optional */
    pattern(img, 1, 32, 32);
    CHECK(sdxl_vae_encode(be, w, NULL, img, 1, 32, 32, a, mean, NULL, &err) == SDXL_STATUS_OK);
    sdxl_arena_free(a);
    sdxl_weights_free(w);
    sdxl_backend_free(be);
}
