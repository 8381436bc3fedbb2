/* Tests of the CPU back end's group norm and layer norm (src/backend/cpu/norm.c):
 * hand-worked values, double-precision references on random data (odd sizes,
 * gamma/beta in every float dtype or NULL, SiLU on and off), a large offset
 * (|mean| >> std) that a float-accumulated variance would get wrong, in-place
 * calls, every ISA level with bit-identical results across them, shape/dtype
 * errors, and diffusers' own GroupNorm output on the tiny SDXL UNet. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "io/safetensors.h"
#include "test.h"

/* ---- helpers -------------------------------------------------------------------- */

static sdxl_backend *make_backend(void) {
    sdxl_backend_params p = sdxl_backend_default_params();
    p.n_threads = 2;
    sdxl_error err;
    return sdxl_backend_create(&p, &err);
}

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static double rng_uniform(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}
static float rng_normal(double mean, double sd) { /* Box-Muller */
    double u = rng_uniform() + 1e-300, v = rng_uniform();
    return (float)(mean + sd * sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static float *falloc(size_t n) { return sdxl_malloc(n ? n * sizeof(float) : 1); }
static bool contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static const sdxl_isa_level ISAS[] = {SDXL_ISA_GENERIC, SDXL_ISA_AVX2, SDXL_ISA_AVX512};
#define N_ISAS 3

static double silu_d(double v) { return v / (1.0 + exp(-v)); }

/* gamma/beta in one dtype: `vals` [c] f32 are rounded to that dtype in `store`
 * and `eff` receives the values the kernel will really see (the widened ones),
 * so the reference uses exactly those. */
static sdxl_tensor make_affine(sdxl_dtype dt, const float *vals, size_t c, void *store, float *eff) {
    for (size_t i = 0; i < c; i++) {
        if (dt == SDXL_DTYPE_F32) {
            ((float *)store)[i] = vals[i];
            eff[i] = vals[i];
        } else if (dt == SDXL_DTYPE_F16) {
            ((uint16_t *)store)[i] = sdxl_f32_to_f16(vals[i]);
            eff[i] = sdxl_f16_to_f32(((uint16_t *)store)[i]);
        } else {
            ((uint16_t *)store)[i] = sdxl_f32_to_bf16(vals[i]);
            eff[i] = sdxl_bf16_to_f32(((uint16_t *)store)[i]);
        }
    }
    return sdxl_tensor_1d(store, dt, (int64_t)c);
}

/* Reference group norm in double: x [B, C, S] -> out [B, C, S]; also returns
 * |normalized·gamma| + |beta| per element in `scale_out` for the tolerance. */
static void group_norm_ref(const float *x, int64_t B, int64_t C, int64_t S, int G, double eps,
                           const float *gamma, const float *beta, bool silu, double *out,
                           double *mag) {
    int64_t cpg = C / G, n = cpg * S;
    for (int64_t b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            const float *p = x + (b * C + g * cpg) * S;
            double m = 0, v = 0;
            for (int64_t i = 0; i < n; i++) m += p[i];
            m /= (double)n;
            for (int64_t i = 0; i < n; i++) v += (p[i] - m) * (p[i] - m);
            v /= (double)n;
            double rstd = 1.0 / sqrt(v + eps);
            for (int64_t i = 0; i < n; i++) {
                int64_t c = g * cpg + i / S;
                double ga = gamma ? gamma[c] : 1.0, be = beta ? beta[c] : 0.0;
                double z = (p[i] - m) * rstd * ga + be;
                int64_t o = (b * C + g * cpg) * S + i;
                mag[o] = fabs((p[i] - m) * rstd * ga) + fabs(be);
                out[o] = silu ? silu_d(z) : z;
            }
        }
}

/* ---- layer norm ------------------------------------------------------------------- */

TEST(norm_layer_norm_hand_values) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    /* [1,2,3,4]: mean 2.5, biased var 1.25 */
    float x[4] = {1, 2, 3, 4}, y[4];
    sdxl_tensor tx = sdxl_tensor_1d(x, SDXL_DTYPE_F32, 4), ty = sdxl_tensor_1d(y, SDXL_DTYPE_F32, 4);
    const double w0[4] = {-1.3416407864998738, -0.4472135954999579, 0.4472135954999579, 1.3416407864998738};
    REQUIRE_OK(be->ops->layer_norm(be, &tx, NULL, NULL, 0.0f, &ty), &be->err);
    for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], w0[i], 2e-7); /* ~1 ulp of 1.34 */
    /* eps 1e-5: (x - 2.5) / sqrt(1.25 + 1e-5) */
    const double w5[4] = {-1.3416354199689269, -0.447211806656309, 0.447211806656309, 1.3416354199689269};
    REQUIRE_OK(be->ops->layer_norm(be, &tx, NULL, NULL, 1e-5f, &ty), &be->err);
    for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], w5[i], 2e-7);
    /* gamma 2, beta 1 -> 2y + 1; bf16 gamma (2 is exact in every dtype) */
    uint16_t g[4], b[4];
    for (int i = 0; i < 4; i++) g[i] = sdxl_f32_to_bf16(2.0f), b[i] = sdxl_f32_to_f16(1.0f);
    sdxl_tensor tg = sdxl_tensor_1d(g, SDXL_DTYPE_BF16, 4), tb = sdxl_tensor_1d(b, SDXL_DTYPE_F16, 4);
    REQUIRE_OK(be->ops->layer_norm(be, &tx, &tg, &tb, 0.0f, &ty), &be->err);
    for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], 2 * w0[i] + 1, 4e-7);
    /* in place; a constant row normalizes to 0 (var 0, not NaN) */
    float c[3] = {7, 7, 7};
    sdxl_tensor tc = sdxl_tensor_1d(c, SDXL_DTYPE_F32, 3);
    REQUIRE_OK(be->ops->layer_norm(be, &tc, NULL, NULL, 1e-5f, &tc), &be->err);
    CHECK(c[0] == 0.0f && c[1] == 0.0f && c[2] == 0.0f);
    sdxl_backend_free(be);
}

TEST(norm_layer_norm_matches_double_reference) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    const int64_t shapes[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 77, 768}, {2, 300, 640}, {1, 5, 1283}};
    const sdxl_dtype dts[] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t R = shapes[s][0] * shapes[s][1], C = shapes[s][2];
        size_t n = (size_t)(R * C);
        float *x = falloc(n), *y = falloc(n), *y0 = falloc(n), *yi = falloc(n);
        float *gv = falloc((size_t)C), *bv = falloc((size_t)C), *ge = falloc((size_t)C), *bE = falloc((size_t)C);
        float *gs = falloc((size_t)C), *bs = falloc((size_t)C);
        rng_seed(20 + s);
        /* rows with their own offset and spread; the last shape has |mean| >> std */
        for (int64_t r = 0; r < R; r++) {
            double off = s == 4 ? 1000.0 : 3.0 * (rng_uniform() - 0.5), sd = 0.1 + 2.0 * rng_uniform();
            for (int64_t j = 0; j < C; j++) x[r * C + j] = rng_normal(off, sd);
        }
        for (int64_t j = 0; j < C; j++) gv[j] = rng_normal(1.0, 0.3), bv[j] = rng_normal(0.0, 0.5);
        for (int variant = 0; variant < 5; variant++) {
            /* 0..2: gamma and beta in f32/f16/bf16 (beta in the next dtype); 3: gamma only; 4: none */
            const sdxl_tensor *pg = NULL, *pb = NULL;
            sdxl_tensor tg, tb;
            if (variant < 4) {
                tg = make_affine(dts[variant % 3], gv, (size_t)C, gs, ge);
                pg = &tg;
            }
            if (variant < 3) {
                tb = make_affine(dts[(variant + 1) % 3], bv, (size_t)C, bs, bE);
                pb = &tb;
            }
            const float eps = variant % 2 ? 1e-6f : 1e-5f;
            sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, R, C), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, R, C);
            sdxl_tensor ti = sdxl_tensor_2d(yi, SDXL_DTYPE_F32, R, C);
            for (int k = 0; k < N_ISAS; k++) {
                sdxl_cpu_set_max_isa(ISAS[k]);
                REQUIRE_OK(be->ops->layer_norm(be, &tx, pg, pb, eps, &ty), &be->err);
                memcpy(yi, x, n * sizeof *x);
                REQUIRE_OK(be->ops->layer_norm(be, &ti, pg, pb, eps, &ti), &be->err);
                CHECK(memcmp(y, yi, n * sizeof *y) == 0);
                if (k == 0) memcpy(y0, y, n * sizeof *y);
                else CHECK(memcmp(y, y0, n * sizeof *y) == 0);
            }
            int bad = 0;
            for (int64_t r = 0; r < R; r++) {
                const float *p = x + r * C;
                double m = 0, v = 0;
                for (int64_t j = 0; j < C; j++) m += p[j];
                m /= (double)C;
                for (int64_t j = 0; j < C; j++) v += (p[j] - m) * (p[j] - m);
                double rstd = 1.0 / sqrt(v / (double)C + eps);
                for (int64_t j = 0; j < C; j++) {
                    double ga = pg ? ge[j] : 1.0, bb = pb ? bE[j] : 0.0;
                    double zg = (p[j] - m) * rstd * ga, ref = zg + bb;
                    /* (x - mean)·rstd·gamma + beta in f32: the mean is exact to 2^-48
                     * (two floats), rstd rounded once, then three roundings: <= 4 ulp of
                     * the terms, 2.4e-7·(|z·gamma| + |beta|); 3e-7 leaves margin. The
                     * last shape (mean 1000, std ~1) would fail this with a float mean. */
                    double tol = 3e-7 * (fabs(zg) + fabs(bb)) + 1e-30;
                    if (!(fabs(y[r * C + j] - ref) <= tol) && bad++ < 3)
                        sdxl_test_fail(__FILE__, __LINE__,
                                       "layer_norm shape %zu variant %d row %lld col %lld: %.9g vs %.12g",
                                       s, variant, (long long)r, (long long)j, (double)y[r * C + j], ref);
                }
            }
        }
        sdxl_free(x), sdxl_free(y), sdxl_free(y0), sdxl_free(yi), sdxl_free(gv), sdxl_free(bv);
        sdxl_free(ge), sdxl_free(bE), sdxl_free(gs), sdxl_free(bs);
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
}

/* ---- group norm ------------------------------------------------------------------- */

TEST(norm_group_norm_hand_values) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    /* x [1, 4, 1, 2], 2 groups: group 0 = channels 0-1 = [1,2,3,4], group 1 = [5,6,7,8];
     * both normalize to layer_norm([1,2,3,4]) (a shift does not change it). */
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8];
    const double z[4] = {-1.3416407864998738, -0.4472135954999579, 0.4472135954999579, 1.3416407864998738};
    const double sz[4] = {-0.2780421213449778, -0.17442379501975522, 0.2727898004802027, 1.063598665154896};
    sdxl_tensor tx = sdxl_tensor_4d(x, SDXL_DTYPE_F32, 1, 4, 1, 2), ty = sdxl_tensor_4d(y, SDXL_DTYPE_F32, 1, 4, 1, 2);
    REQUIRE_OK(be->ops->group_norm(be, &tx, NULL, NULL, 2, 0.0f, false, &ty), &be->err);
    for (int i = 0; i < 8; i++) CHECK_NEAR(y[i], z[i % 4], 2e-7);
    REQUIRE_OK(be->ops->group_norm(be, &tx, NULL, NULL, 2, 0.0f, true, &ty), &be->err); /* + SiLU */
    for (int i = 0; i < 8; i++) CHECK_NEAR(y[i], sz[i % 4], 2e-7);
    /* per-channel affine: channel c gets gamma c+1, beta -c */
    float g[4] = {1, 2, 3, 4}, b[4] = {0, -1, -2, -3};
    sdxl_tensor tg = sdxl_tensor_1d(g, SDXL_DTYPE_F32, 4), tb = sdxl_tensor_1d(b, SDXL_DTYPE_F32, 4);
    REQUIRE_OK(be->ops->group_norm(be, &tx, &tg, &tb, 2, 0.0f, false, &tx), &be->err); /* in place */
    for (int i = 0; i < 8; i++) CHECK_NEAR(x[i], z[i % 4] * g[i / 2] + b[i / 2], 1e-6);
    /* 1 group = layer norm over C·S; C groups = instance norm */
    float u[6] = {1, 2, 3, 4, 5, 6}, v[6];
    sdxl_tensor tu = sdxl_tensor_3d(u, SDXL_DTYPE_F32, 1, 3, 2), tv = sdxl_tensor_3d(v, SDXL_DTYPE_F32, 1, 3, 2);
    REQUIRE_OK(be->ops->group_norm(be, &tu, NULL, NULL, 3, 0.0f, false, &tv), &be->err);
    for (int i = 0; i < 6; i++) CHECK_NEAR(v[i], i % 2 ? 1.0 : -1.0, 1e-7); /* pairs -> ±1 */
    sdxl_backend_free(be);
}

/* Random data over SDXL-like and odd shapes; every ISA bit-identical; in place. */
TEST(norm_group_norm_matches_double_reference) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    static const struct {
        int nd;
        int64_t sh[4];
        int groups;
    } cases[] = {
        {4, {1, 32, 5, 7}, 8},    {4, {2, 64, 9, 11}, 32}, {4, {1, 320, 16, 16}, 32},
        {3, {2, 6, 13}, 3},       {2, {3, 8}, 4},          {4, {2, 4, 1, 1}, 1},
        {4, {1, 30, 17, 3}, 30},
    };
    const sdxl_dtype dts[] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16};
    for (size_t cs = 0; cs < sizeof cases / sizeof cases[0]; cs++) {
        sdxl_tensor shape = sdxl_tensor_make(NULL, SDXL_DTYPE_F32, cases[cs].nd, cases[cs].sh);
        int64_t B = shape.ne[0], C = shape.ne[1], S = sdxl_tensor_inner(&shape, 2);
        size_t n = (size_t)sdxl_tensor_nelem(&shape);
        float *x = falloc(n), *y = falloc(n), *y0 = falloc(n), *yi = falloc(n);
        double *ref = sdxl_malloc(n * sizeof(double)), *mag = sdxl_malloc(n * sizeof(double));
        float *gv = falloc((size_t)C), *bv = falloc((size_t)C), *ge = falloc((size_t)C), *bE = falloc((size_t)C);
        float *gs = falloc((size_t)C), *bs = falloc((size_t)C);
        rng_seed(40 + cs);
        for (int64_t c = 0; c < B * C; c++) { /* channels with their own offset and spread */
            double off = 2.0 * (rng_uniform() - 0.5), sd = 0.2 + 3.0 * rng_uniform();
            for (int64_t i = 0; i < S; i++) x[c * S + i] = rng_normal(off, sd);
        }
        for (int64_t c = 0; c < C; c++) gv[c] = rng_normal(1.0, 0.5), bv[c] = rng_normal(0.0, 1.0);
        for (int variant = 0; variant < 4; variant++) {
            const sdxl_tensor *pg = NULL, *pb = NULL;
            sdxl_tensor tg, tb;
            if (variant < 3) { /* gamma f32/f16/bf16, beta the next dtype; 3: no affine */
                tg = make_affine(dts[variant], gv, (size_t)C, gs, ge);
                tb = make_affine(dts[(variant + 1) % 3], bv, (size_t)C, bs, bE);
                pg = &tg, pb = &tb;
            }
            for (int silu = 0; silu < 2; silu++) {
                const float eps = silu ? 1e-6f : 1e-5f;
                sdxl_tensor tx = shape, ty = shape, ti = shape;
                tx.data = x, ty.data = y, ti.data = yi;
                for (int k = 0; k < N_ISAS; k++) {
                    sdxl_cpu_set_max_isa(ISAS[k]);
                    REQUIRE_OK(be->ops->group_norm(be, &tx, pg, pb, cases[cs].groups, eps, silu, &ty), &be->err);
                    memcpy(yi, x, n * sizeof *x);
                    REQUIRE_OK(be->ops->group_norm(be, &ti, pg, pb, cases[cs].groups, eps, silu, &ti), &be->err);
                    CHECK(memcmp(y, yi, n * sizeof *y) == 0);
                    if (k == 0) memcpy(y0, y, n * sizeof *y);
                    else CHECK_MSG(memcmp(y, y0, n * sizeof *y) == 0, "case %zu: isa %s differs", cs,
                                   sdxl_isa_name(ISAS[k]));
                }
                group_norm_ref(x, B, C, S, cases[cs].groups, eps, pg ? ge : NULL, pb ? bE : NULL,
                               silu, ref, mag);
                int bad = 0;
                for (size_t i = 0; i < n; i++) {
                    /* (x - mean)·(gamma·rstd) + beta: mean exact to 2^-48, gamma·rstd
                     * rounded once, then sub, mul, add: ~3 ulp of the terms,
                     * 1.8e-7·(|z·gamma| + |beta|). SiLU adds its 2.4e-7 relative and
                     * passes the input error through with slope <= 1.1. 5e-7 covers both. */
                    double tol = 5e-7 * mag[i] + 1e-30;
                    if (!(fabs(y[i] - ref[i]) <= tol) && bad++ < 3)
                        sdxl_test_fail(__FILE__, __LINE__, "group_norm case %zu var %d silu %d [%zu]: %.9g vs %.12g",
                                       cs, variant, silu, i, (double)y[i], ref[i]);
                }
            }
        }
        sdxl_free(x), sdxl_free(y), sdxl_free(y0), sdxl_free(yi), sdxl_free(ref), sdxl_free(mag);
        sdxl_free(gv), sdxl_free(bv), sdxl_free(ge), sdxl_free(bE), sdxl_free(gs), sdxl_free(bs);
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
}

/* SDXL's largest groups are 128×128×10 = 163 840 values. With an offset of 100
 * standard deviations, a float running sum and E[x²] - E[x]² in float would be
 * off by far more than 1e-3; the double accumulation stays at f32 precision. */
TEST(norm_group_norm_large_groups_with_offset) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const int64_t B = 1, C = 20, H = 128, W = 128;
    const int G = 2; /* 10 channels of 128×128 per group */
    size_t n = (size_t)(B * C * H * W);
    float *x = falloc(n), *y = falloc(n);
    double *ref = sdxl_malloc(n * sizeof(double)), *mag = sdxl_malloc(n * sizeof(double));
    rng_seed(99);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(i < n / 2 ? 100.0 : -3.0, i < n / 2 ? 1.0 : 0.01);
    sdxl_tensor tx = sdxl_tensor_4d(x, SDXL_DTYPE_F32, B, C, H, W), ty = sdxl_tensor_4d(y, SDXL_DTYPE_F32, B, C, H, W);
    REQUIRE_OK(be->ops->group_norm(be, &tx, NULL, NULL, G, 1e-5f, true, &ty), &be->err);
    group_norm_ref(x, B, C, H * W, G, 1e-5f, NULL, NULL, true, ref, mag);
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(y[i] - ref[i]) / (mag[i] + 1e-30));
    /* as in the random test; here |mean|/std = 100 and 300 would cost a float mean
     * 100·2^-24 = 6e-6 of the normalized value */
    CHECK_MSG(worst <= 5e-7, "worst relative error %.3g", worst);
    sdxl_free(x), sdxl_free(y), sdxl_free(ref), sdxl_free(mag);
    sdxl_backend_free(be);
}

TEST(norm_rejects_bad_arguments) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    static float x[2 * 320 * 4], y[2 * 320 * 4], g[321];
    sdxl_tensor tx = sdxl_tensor_4d(x, SDXL_DTYPE_F32, 2, 320, 2, 2), ty = sdxl_tensor_4d(y, SDXL_DTYPE_F32, 2, 320, 2, 2);
    CHECK(be->ops->group_norm(be, &tx, NULL, NULL, 33, 1e-5f, false, &ty) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "group_norm: C=320 not divisible by groups=33"));
    CHECK(contains(sdxl_backend_last_error(be), "f32[2,320,2,2]"));
    CHECK(be->ops->group_norm(be, &tx, NULL, NULL, 0, 1e-5f, false, &ty) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor tg = sdxl_tensor_1d(g, SDXL_DTYPE_F32, 321);
    CHECK(be->ops->group_norm(be, &tx, &tg, NULL, 32, 1e-5f, false, &ty) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "gamma"));
    CHECK(contains(sdxl_backend_last_error(be), "f32[321]"));
    sdxl_tensor tgi = sdxl_tensor_1d(g, SDXL_DTYPE_I32, 320);
    CHECK(be->ops->group_norm(be, &tx, NULL, &tgi, 32, 1e-5f, false, &ty) == SDXL_STATUS_UNSUPPORTED);
    CHECK(contains(sdxl_backend_last_error(be), "beta"));
    sdxl_tensor tyw = sdxl_tensor_4d(y, SDXL_DTYPE_F32, 2, 320, 4, 1);
    CHECK(be->ops->group_norm(be, &tx, NULL, NULL, 32, 1e-5f, false, &tyw) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor th = tx;
    th.dtype = SDXL_DTYPE_F16;
    CHECK(be->ops->group_norm(be, &th, NULL, NULL, 32, 1e-5f, false, &ty) == SDXL_STATUS_UNSUPPORTED);
    CHECK(be->ops->group_norm(be, &tx, NULL, NULL, 32, -1.0f, false, &ty) == SDXL_STATUS_INVALID_ARG);
    CHECK(be->ops->group_norm(be, &tx, NULL, NULL, 32, NAN, false, &ty) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor t1 = sdxl_tensor_1d(x, SDXL_DTYPE_F32, 320), t1y = sdxl_tensor_1d(y, SDXL_DTYPE_F32, 320);
    CHECK(be->ops->group_norm(be, &t1, NULL, NULL, 32, 1e-5f, false, &t1y) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor shifted = sdxl_tensor_4d(x + 4, SDXL_DTYPE_F32, 2, 320, 2, 2);
    sdxl_tensor xs = sdxl_tensor_4d(x, SDXL_DTYPE_F32, 2, 320, 2, 2);
    CHECK(be->ops->group_norm(be, &xs, NULL, NULL, 32, 1e-5f, false, &shifted) == SDXL_STATUS_INVALID_ARG);

    sdxl_tensor lx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 4, 320), ly = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 4, 320);
    CHECK(be->ops->layer_norm(be, &lx, &tg, NULL, 1e-5f, &ly) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "layer_norm"));
    CHECK(contains(sdxl_backend_last_error(be), "[320]"));
    sdxl_tensor lyw = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 320, 4);
    CHECK(be->ops->layer_norm(be, &lx, NULL, NULL, 1e-5f, &lyw) == SDXL_STATUS_INVALID_ARG);
    CHECK(be->ops->layer_norm(be, &lx, NULL, NULL, INFINITY, &ly) == SDXL_STATUS_INVALID_ARG);
    CHECK(be->ops->layer_norm(be, NULL, NULL, NULL, 1e-5f, &ly) == SDXL_STATUS_INVALID_ARG);
    sdxl_backend_free(be);
}

/* diffusers' GroupNorm on the tiny SDXL UNet: act.conv_norm_out = conv_norm_out
 * (GroupNorm(32 groups, eps 1e-5, affine)) of act.up_blocks.1, torch fp32 on CPU
 * (tests/data/README.md). Independent of our reference code entirely. */
TEST(norm_group_norm_matches_diffusers_conv_norm_out) {
    sdxl_error err_, *err = &err_;
    sdxl_error_clear(err);
    sdxl_st_file *acts = NULL, *unet = NULL;
    REQUIRE_OK(sdxl_st_open(sdxl_test_data("refs/tiny-sdxl-ref/unet_forward.safetensors"), &acts, err), err);
    sdxl_status st = sdxl_st_open(sdxl_test_data("refs/tiny-sdxl/unet/diffusion_pytorch_model.safetensors"),
                                  &unet, err);
    if (st != SDXL_STATUS_OK) {
        sdxl_st_close(acts);
        REQUIRE_OK(st, err);
    }
    sdxl_backend *be = make_backend();
    const sdxl_st_tensor *sx = sdxl_st_find(acts, "act.up_blocks.1");
    const sdxl_st_tensor *sy = sdxl_st_find(acts, "act.conv_norm_out");
    const sdxl_st_tensor *sg = sdxl_st_find(unet, "conv_norm_out.weight");
    const sdxl_st_tensor *sb = sdxl_st_find(unet, "conv_norm_out.bias");
    sdxl_tensor x, want, g, b;
    bool ok = be && sx && sy && sg && sb && sdxl_st_view(acts, sx, &x, err) == SDXL_STATUS_OK &&
              sdxl_st_view(acts, sy, &want, err) == SDXL_STATUS_OK &&
              sdxl_st_view(unet, sg, &g, err) == SDXL_STATUS_OK &&
              sdxl_st_view(unet, sb, &b, err) == SDXL_STATUS_OK;
    CHECK_MSG(ok, "reference tensors missing or unreadable: %s", err->msg);
    if (ok) {
        CHECK(sdxl_tensor_same_shape(&x, &want));
        size_t n = (size_t)sdxl_tensor_nelem(&x);
        float *y = falloc(n);
        sdxl_tensor ty = x;
        ty.data = y;
        const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
        for (int k = 0; k < N_ISAS; k++) {
            sdxl_cpu_set_max_isa(ISAS[k]);
            CHECK(be->ops->group_norm(be, &x, &g, &b, 32, 1e-5f, false, &ty) == SDXL_STATUS_OK);
            const float *w = want.data;
            double amax = 0, xmax = 0;
            for (size_t i = 0; i < n; i++) {
                amax = fmax(amax, fabs((double)y[i] - w[i]));
                xmax = fmax(xmax, fabs(w[i]));
            }
            /* Both are f32 computations of the same formula; they differ by the
             * roundings of each: measured 4.8e-7 with max|y| = 4.81, i.e. one ulp of
             * the largest value. The bound, 1e-6·max|y| (8 ulp there), is 100x
             * tighter than the 1e-4 the plan asked for and still far from flaky. */
            CHECK_MSG(amax <= 1e-6 * xmax, "isa %s: max |ours - diffusers| = %.3g (max|y| %.3g)",
                      sdxl_isa_name(ISAS[k]), amax, xmax);
        }
        sdxl_cpu_set_max_isa(isa0);
        sdxl_free(y);
    }
    sdxl_backend_free(be);
    sdxl_st_close(acts);
    sdxl_st_close(unet);
}
