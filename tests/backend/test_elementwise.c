/* Tests of the CPU back end's elementwise ops (src/backend/cpu/elementwise.c):
 * hand-worked values, double-precision references on random data of odd sizes
 * (tails, block edges), broadcasting cases, in-place calls, every ISA level
 * (and bit-identical results across them), and shape / dtype errors. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "test.h"

/* ---- helpers -------------------------------------------------------------------- */

static sdxl_backend *make_backend(void) {
    sdxl_backend_params p = sdxl_backend_default_params();
    p.n_threads = 2; /* exercise the pool split even on small machines */
    sdxl_error err;
    return sdxl_backend_create(&p, &err);
}

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static double rng_uniform(void) { /* [0, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}
static float rng_range(double lo, double hi) { return (float)(lo + (hi - lo) * rng_uniform()); }

static float *falloc(size_t n) { return sdxl_malloc(n ? n * sizeof(float) : 1); }

static bool contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static const sdxl_isa_level ISAS[] = {SDXL_ISA_GENERIC, SDXL_ISA_AVX2, SDXL_ISA_AVX512};
#define N_ISAS 3

/* ---- references ----------------------------------------------------------------- */

static double silu_d(double x) { return x / (1.0 + exp(-x)); }
/* Exact gelu, written with erfc on the negative side so the reference itself
 * does not cancel. */
static double gelu_d(double x) {
    return x >= 0 ? 0.5 * x * (1.0 + erf(x / sqrt(2.0))) : 0.5 * x * erfc(-x / sqrt(2.0));
}
/* 0.5x(1 + tanh u) = x / (1 + e^{-2u}) (an identity; this form stays exact in
 * double where 1 + tanh u would cancel). */
static double gelu_tanh_arg(double x) { return 2.0 * sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x); }
static double gelu_tanh_d(double x) { return x / (1.0 + exp(-gelu_tanh_arg(x))); }
static double quick_gelu_d(double x) { return x / (1.0 + exp(-1.702 * x)); }

/* Allowed error of each activation at x, relative to |ref|. Measured maxima
 * over a dense grid of [-30, 30] are in brackets; limits leave ~2x margin.
 *   silu        5e-7        [2.4e-7]  sigmoid via our exp (~2 ulp) + divide + multiply
 *   gelu (erf)  1e-6        [4.5e-7]  erfc fit 2e-7 + exp + t rounding; the brief's ~1e-6
 *   gelu tanh   4e-7(1+|a|) [1.9e-7]  a = 2u: the f32 rounding of u (x³ term) is an
 *   quick gelu  4e-7(1+|a|) [1.6e-7]  a = 1.702x: absolute error in the exponent a, i.e.
 *                                     relative a·2^-24 in the result; torch's f32 has it too.
 * Plus 1e-37 absolute: results below FLT_MIN are subnormal and coarse. */
static double act_tol(sdxl_unary_op op, double x, double ref) {
    double r;
    switch (op) {
    case SDXL_UNARY_SILU: r = 5e-7; break;
    case SDXL_UNARY_GELU_ERF: r = 1e-6; break;
    case SDXL_UNARY_GELU_TANH: r = 4e-7 * (1.0 + fabs(gelu_tanh_arg(x))); break;
    default: r = 4e-7 * (1.0 + 1.702 * fabs(x)); break;
    }
    return r * fabs(ref) + 1e-37;
}

static double act_d(sdxl_unary_op op, double x) {
    switch (op) {
    case SDXL_UNARY_SILU: return silu_d(x);
    case SDXL_UNARY_GELU_ERF: return gelu_d(x);
    case SDXL_UNARY_GELU_TANH: return gelu_tanh_d(x);
    default: return quick_gelu_d(x);
    }
}

static const char *act_name(sdxl_unary_op op) {
    static const char *n[] = {"silu", "gelu_erf", "gelu_tanh", "quick_gelu"};
    return n[op];
}

/* ---- unary ------------------------------------------------------------------------ */

/* Values torch prints (float64 math, checked with Python's math module). */
TEST(ew_unary_known_values) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    static const struct {
        sdxl_unary_op op;
        float x;
        double y;
    } cases[] = {
        {SDXL_UNARY_SILU, 0.0f, 0.0},
        {SDXL_UNARY_SILU, 1.0f, 0.7310585786300049},
        {SDXL_UNARY_SILU, -1.0f, -0.2689414213699951},
        {SDXL_UNARY_SILU, 5.0f, 4.966535745378576},
        {SDXL_UNARY_GELU_ERF, 0.0f, 0.0},
        {SDXL_UNARY_GELU_ERF, 1.0f, 0.8413447460685429},
        {SDXL_UNARY_GELU_ERF, -1.0f, -0.15865525393145707},
        {SDXL_UNARY_GELU_ERF, 2.0f, 1.9544997361036416},
        {SDXL_UNARY_GELU_ERF, -3.0f, -0.004049694094890287},
        {SDXL_UNARY_GELU_TANH, 0.0f, 0.0},
        {SDXL_UNARY_GELU_TANH, 1.0f, 0.8411919906082768},
        {SDXL_UNARY_GELU_TANH, -1.0f, -0.15880800939172324},
        {SDXL_UNARY_QUICK_GELU, 0.0f, 0.0},
        {SDXL_UNARY_QUICK_GELU, 1.0f, 0.8457957659328212}, /* 1/(1+e^-1.702) */
        {SDXL_UNARY_QUICK_GELU, -1.0f, -0.1542042340671787},
    };
    for (int k = 0; k < N_ISAS; k++) {
        sdxl_cpu_set_max_isa(ISAS[k]);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            float x = cases[i].x, y = -99.0f;
            sdxl_tensor tx = sdxl_tensor_1d(&x, SDXL_DTYPE_F32, 1), ty = sdxl_tensor_1d(&y, SDXL_DTYPE_F32, 1);
            REQUIRE_OK(be->ops->unary(be, cases[i].op, &tx, &ty), &be->err);
            /* 1e-6 relative: a few f32 ulps, the precision torch's own fp32 has. */
            CHECK_MSG(fabs(y - cases[i].y) <= 1e-6 * fabs(cases[i].y),
                      "%s(%g) = %.9g, want %.16g (isa %s)", act_name(cases[i].op), (double)x,
                      (double)y, cases[i].y, sdxl_isa_name(ISAS[k]));
        }
    }
    sdxl_cpu_set_max_isa(isa0); /* restore */
    sdxl_backend_free(be);
}

/* Random values over the whole useful range on sizes with tails and several
 * pool blocks; in-place gives the same bits; every ISA gives the same bits. */
TEST(ew_unary_matches_double_reference) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    const size_t sizes[] = {1, 7, 33, 1000, 16384 + 17, 50001};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *x = falloc(n), *y = falloc(n), *y0 = falloc(n), *yi = falloc(n);
        rng_seed(n);
        for (size_t i = 0; i < n; i++) x[i] = i % 3 ? rng_range(-6, 6) : rng_range(-30, 30);
        sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 1, (int64_t)n);
        sdxl_tensor ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 1, (int64_t)n);
        sdxl_tensor ti = sdxl_tensor_2d(yi, SDXL_DTYPE_F32, 1, (int64_t)n);
        for (int op = 0; op < SDXL_UNARY_COUNT_; op++) {
            for (int k = 0; k < N_ISAS; k++) {
                sdxl_cpu_set_max_isa(ISAS[k]);
                REQUIRE_OK(be->ops->unary(be, (sdxl_unary_op)op, &tx, &ty), &be->err);
                memcpy(yi, x, n * sizeof *x);
                REQUIRE_OK(be->ops->unary(be, (sdxl_unary_op)op, &ti, &ti), &be->err);
                CHECK_MSG(memcmp(y, yi, n * sizeof *y) == 0, "%s n=%zu isa %s: in-place differs",
                          act_name(op), n, sdxl_isa_name(ISAS[k]));
                if (k == 0) memcpy(y0, y, n * sizeof *y);
                else
                    CHECK_MSG(memcmp(y, y0, n * sizeof *y) == 0, "%s n=%zu: isa %s differs from generic",
                              act_name(op), n, sdxl_isa_name(ISAS[k]));
            }
            int bad = 0;
            for (size_t i = 0; i < n; i++) {
                double r = act_d((sdxl_unary_op)op, x[i]);
                if (!(fabs(y[i] - r) <= act_tol((sdxl_unary_op)op, x[i], r)) && bad++ < 3)
                    sdxl_test_fail(__FILE__, __LINE__, "%s(%.9g) = %.9g, ref %.12g", act_name(op),
                                   (double)x[i], (double)y[i], r);
            }
        }
        sdxl_free(x), sdxl_free(y), sdxl_free(y0), sdxl_free(yi);
    }
    sdxl_cpu_set_max_isa(isa0); /* restore */
    sdxl_backend_free(be);
}

/* NaN stays NaN, infinities and deep tails behave, at every ISA (the vector
 * code and the scalar tail both see them: 20 values = one 16-lane vector + 4). */
TEST(ew_unary_special_values) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    float x[20], y[20];
    for (int i = 0; i < 20; i++) x[i] = 0.5f;
    const int pos[] = {0, 17}; /* one in the vector body, one in the tail */
    sdxl_tensor tx = sdxl_tensor_1d(x, SDXL_DTYPE_F32, 20), ty = sdxl_tensor_1d(y, SDXL_DTYPE_F32, 20);
    for (int k = 0; k < N_ISAS; k++) {
        sdxl_cpu_set_max_isa(ISAS[k]);
        for (int p = 0; p < 2; p++) {
            int j = pos[p];
            for (int op = 0; op < SDXL_UNARY_COUNT_; op++) {
                x[j] = NAN;
                REQUIRE_OK(be->ops->unary(be, (sdxl_unary_op)op, &tx, &ty), &be->err);
                CHECK_MSG(isnan(y[j]), "%s(NaN) = %g", act_name(op), (double)y[j]);
                x[j] = INFINITY;
                REQUIRE_OK(be->ops->unary(be, (sdxl_unary_op)op, &tx, &ty), &be->err);
                CHECK_MSG(isinf(y[j]) && y[j] > 0, "%s(inf) = %g", act_name(op), (double)y[j]);
                x[j] = 1e30f; /* x³ overflows inside gelu_tanh: still x */
                REQUIRE_OK(be->ops->unary(be, (sdxl_unary_op)op, &tx, &ty), &be->err);
                CHECK_MSG(y[j] == 1e30f, "%s(1e30) = %g", act_name(op), (double)y[j]);
                x[j] = -200.0f; /* every activation is ~0 (and <= 0) there */
                REQUIRE_OK(be->ops->unary(be, (sdxl_unary_op)op, &tx, &ty), &be->err);
                CHECK_MSG(y[j] <= 0.0f && y[j] > -1e-37f, "%s(-200) = %g", act_name(op), (double)y[j]);
                x[j] = 0.5f;
            }
        }
    }
    /* silu(-90) = -90 e^-90 = -7.4e-38 sits just below FLT_MIN: gradual underflow
     * keeps it. e^-90 = 8e-40 is subnormal, exact to 2^-149 = 1.4e-45 absolute;
     * the factor 90 scales that to 1.3e-43. */
    x[0] = -90.0f;
    REQUIRE_OK(be->ops->unary(be, SDXL_UNARY_SILU, &tx, &ty), &be->err);
    CHECK_NEAR(y[0], -90.0 * exp(-90.0), 2.6e-43);
    sdxl_cpu_set_max_isa(isa0); /* restore */
    sdxl_backend_free(be);
}

/* ---- GEGLU ------------------------------------------------------------------------ */

TEST(ew_geglu_hand_and_reference) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    /* x [1, 4] = [h0 h1 | g0 g1] = [2 3 | 1 0] -> [2·gelu(1), 3·gelu(0)] */
    float x[4] = {2, 3, 1, 0}, y[2];
    sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 1, 4), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 1, 2);
    REQUIRE_OK(be->ops->geglu(be, &tx, &ty), &be->err);
    CHECK_NEAR(y[0], 2 * 0.8413447460685429, 2e-6);
    CHECK(y[1] == 0.0f);

    /* [rows, 2N] with N not a multiple of the vector width, and rows that start
     * mid pool-block (N = 1283: blocks of 16384 cut rows). */
    const int64_t shapes[][3] = {{1, 1, 1}, {2, 3, 5}, {1, 77, 17}, {2, 13, 1283}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t B = shapes[s][0], T = shapes[s][1], N = shapes[s][2];
        size_t nx = (size_t)(B * T * 2 * N), ny = nx / 2;
        float *xs = falloc(nx), *ys = falloc(ny), *y0 = falloc(ny);
        rng_seed(7 + s);
        for (size_t i = 0; i < nx; i++) xs[i] = rng_range(-8, 8);
        sdxl_tensor a = sdxl_tensor_3d(xs, SDXL_DTYPE_F32, B, T, 2 * N);
        sdxl_tensor b = sdxl_tensor_3d(ys, SDXL_DTYPE_F32, B, T, N);
        for (int k = 0; k < N_ISAS; k++) {
            sdxl_cpu_set_max_isa(ISAS[k]);
            REQUIRE_OK(be->ops->geglu(be, &a, &b), &be->err);
            if (k == 0) memcpy(y0, ys, ny * sizeof *ys);
            else CHECK(memcmp(y0, ys, ny * sizeof *ys) == 0);
        }
        int bad = 0;
        for (int64_t r = 0; r < B * T; r++)
            for (int64_t j = 0; j < N; j++) {
                double h = xs[r * 2 * N + j], g = xs[r * 2 * N + N + j];
                double ref = h * gelu_d(g);
                /* gelu's 1e-6 relative plus the product's half ulp */
                double tol = 1.1e-6 * fabs(ref) + 1e-37;
                if (!(fabs(ys[r * N + j] - ref) <= tol) && bad++ < 3)
                    sdxl_test_fail(__FILE__, __LINE__, "geglu row %lld col %lld: %.9g vs %.12g",
                                   (long long)r, (long long)j, (double)ys[r * N + j], ref);
            }
        sdxl_free(xs), sdxl_free(ys), sdxl_free(y0);
    }
    sdxl_cpu_set_max_isa(isa0); /* restore */

    /* odd last dim, wrong y, aliasing */
    float x3[6], y3[3];
    sdxl_tensor odd = sdxl_tensor_2d(x3, SDXL_DTYPE_F32, 2, 3), y1 = sdxl_tensor_2d(y3, SDXL_DTYPE_F32, 2, 1);
    CHECK(be->ops->geglu(be, &odd, &y1) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "geglu"));
    CHECK(contains(sdxl_backend_last_error(be), "f32[2,3]"));
    sdxl_tensor x6 = sdxl_tensor_2d(x3, SDXL_DTYPE_F32, 1, 6), y3t = sdxl_tensor_2d(x3, SDXL_DTYPE_F32, 1, 3);
    CHECK(be->ops->geglu(be, &x6, &y3t) == SDXL_STATUS_INVALID_ARG); /* y inside x */
    sdxl_backend_free(be);
}

/* ---- softmax ---------------------------------------------------------------------- */

TEST(ew_softmax_hand_values) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    /* equal values: uniform, exactly representable 1/4 */
    float e[4] = {3, 3, 3, 3}, y[4];
    sdxl_tensor te = sdxl_tensor_1d(e, SDXL_DTYPE_F32, 4), ty = sdxl_tensor_1d(y, SDXL_DTYPE_F32, 4);
    REQUIRE_OK(be->ops->softmax(be, &te, &ty), &be->err);
    for (int i = 0; i < 4; i++) CHECK(y[i] == 0.25f);
    /* [1,2,3] and the same shifted by 1000 (naive exp would overflow to inf/inf) */
    const double want[3] = {0.09003057317038046, 0.24472847105479767, 0.6652409557748219};
    float a[2][3] = {{1, 2, 3}, {1001, 1002, 1003}}, b[2][3];
    sdxl_tensor ta = sdxl_tensor_2d(a, SDXL_DTYPE_F32, 2, 3), tb = sdxl_tensor_2d(b, SDXL_DTYPE_F32, 2, 3);
    REQUIRE_OK(be->ops->softmax(be, &ta, &tb), &be->err);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 3; i++) CHECK_NEAR(b[r][i], want[i], 4e-7 * want[i]); /* few ulp */
    /* huge spread: the small ones underflow to 0, no NaN */
    float h[3] = {-1e30f, 0, 1e30f};
    sdxl_tensor th = sdxl_tensor_1d(h, SDXL_DTYPE_F32, 3);
    REQUIRE_OK(be->ops->softmax(be, &th, &th), &be->err);
    CHECK(h[0] == 0.0f && h[1] == 0.0f && h[2] == 1.0f);
    /* a masked entry: -inf -> exactly 0 */
    float m[2] = {-INFINITY, 0.5f};
    sdxl_tensor tm = sdxl_tensor_1d(m, SDXL_DTYPE_F32, 2);
    REQUIRE_OK(be->ops->softmax(be, &tm, &tm), &be->err);
    CHECK(m[0] == 0.0f && m[1] == 1.0f);
    /* NaN poisons its row only (as torch), in the vector body and in the tail */
    float nr[2][20];
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 20; i++) nr[r][i] = (float)i;
    nr[0][18] = NAN;
    nr[1][3] = -NAN;
    float nn[20] = {0};
    sdxl_tensor tn = sdxl_tensor_2d(nr, SDXL_DTYPE_F32, 2, 20);
    memcpy(nn, nr[0], sizeof nn);
    REQUIRE_OK(be->ops->softmax(be, &tn, &tn), &be->err);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 20; i++) CHECK_MSG(isnan(nr[r][i]), "row %d col %d = %g", r, i, (double)nr[r][i]);
    sdxl_tensor t1 = sdxl_tensor_2d(nn, SDXL_DTYPE_F32, 1, 20);
    nn[18] = 5.0f;
    REQUIRE_OK(be->ops->softmax(be, &t1, &t1), &be->err);
    CHECK(!isnan(nn[0]));
    /* ndim 0 is not a row */
    sdxl_tensor s0 = sdxl_tensor_make(e, SDXL_DTYPE_F32, 0, NULL);
    CHECK(be->ops->softmax(be, &s0, &s0) == SDXL_STATUS_INVALID_ARG);
    sdxl_backend_free(be);
}

TEST(ew_softmax_matches_double_reference) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 77}, {33, 1000}, {4, 4096}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t R = shapes[s][0], C = shapes[s][1];
        size_t n = (size_t)(R * C);
        float *x = falloc(n), *y = falloc(n), *y0 = falloc(n), *yi = falloc(n);
        rng_seed(100 + s);
        for (size_t i = 0; i < n; i++) x[i] = rng_range(-20, 20);
        sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, R, C), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, R, C);
        sdxl_tensor ti = sdxl_tensor_2d(yi, SDXL_DTYPE_F32, R, C);
        for (int k = 0; k < N_ISAS; k++) {
            sdxl_cpu_set_max_isa(ISAS[k]);
            REQUIRE_OK(be->ops->softmax(be, &tx, &ty), &be->err);
            memcpy(yi, x, n * sizeof *x);
            REQUIRE_OK(be->ops->softmax(be, &ti, &ti), &be->err);
            CHECK(memcmp(y, yi, n * sizeof *y) == 0);
            if (k == 0) memcpy(y0, y, n * sizeof *y);
            else CHECK(memcmp(y, y0, n * sizeof *y) == 0);
        }
        int bad = 0;
        for (int64_t r = 0; r < R; r++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < C; j++) mx = fmax(mx, x[r * C + j]);
            for (int64_t j = 0; j < C; j++) sum += exp((double)x[r * C + j] - mx);
            for (int64_t j = 0; j < C; j++) {
                double ref = exp((double)x[r * C + j] - mx) / sum;
                /* exp ~2 ulp, the rounded reciprocal and the product: 5e-7 relative;
                 * the sum is in double, so no growth with C. Plus the f32 rounding of
                 * d = x - max (|d|·2^-24 absolute in the exponent, so relative in the
                 * result; torch's f32 has it too). Subnormal results (ref < FLT_MIN)
                 * are compared absolutely. */
                double d = fabs((double)x[r * C + j] - mx);
                if (!(fabs(y[r * C + j] - ref) <= (5e-7 + 6e-8 * d) * ref + 1e-37) && bad++ < 3)
                    sdxl_test_fail(__FILE__, __LINE__, "softmax [%lld,%lld] row %lld col %lld: %.9g vs %.12g",
                                   (long long)R, (long long)C, (long long)r, (long long)j,
                                   (double)y[r * C + j], ref);
            }
        }
        sdxl_free(x), sdxl_free(y), sdxl_free(y0), sdxl_free(yi);
    }
    sdxl_cpu_set_max_isa(isa0); /* restore */
    sdxl_backend_free(be);
}

/* ---- binary ------------------------------------------------------------------------ */

/* Naive broadcast reference: index b by a's multi-index, clamping to b's dims. */
static void binary_ref(sdxl_binary_op op, const sdxl_tensor *a, const sdxl_tensor *b, float *y) {
    int nd = a->ndim;
    int64_t an[4] = {1, 1, 1, 1}, bn[4] = {1, 1, 1, 1};
    for (int i = 0; i < nd; i++) an[4 - nd + i] = a->ne[i];
    for (int i = 0; i < b->ndim; i++) bn[4 - b->ndim + i] = b->ne[i];
    const float *pa = a->data, *pb = b->data;
    int64_t n = 0;
    for (int64_t i0 = 0; i0 < an[0]; i0++)
        for (int64_t i1 = 0; i1 < an[1]; i1++)
            for (int64_t i2 = 0; i2 < an[2]; i2++)
                for (int64_t i3 = 0; i3 < an[3]; i3++, n++) {
                    int64_t j0 = bn[0] == 1 ? 0 : i0, j1 = bn[1] == 1 ? 0 : i1;
                    int64_t j2 = bn[2] == 1 ? 0 : i2, j3 = bn[3] == 1 ? 0 : i3;
                    float vb = pb[((j0 * bn[1] + j1) * bn[2] + j2) * bn[3] + j3];
                    y[n] = op == SDXL_BINARY_ADD ? pa[n] + vb : pa[n] * vb;
                }
}

TEST(ew_binary_broadcast_cases) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    static const struct {
        const char *what;
        int na, nb;
        int64_t a[4], b[4];
    } cases[] = {
        {"same shape", 4, 4, {2, 320, 8, 9}, {2, 320, 8, 9}},
        {"per-channel bias [1,C,1,1]", 4, 4, {2, 320, 8, 9}, {1, 320, 1, 1}},
        {"per-channel bias [C,1,1]", 4, 3, {2, 320, 8, 9}, {320, 1, 1}},
        {"time embedding [B,C,1,1]", 4, 4, {2, 320, 8, 9}, {2, 320, 1, 1}},
        {"per-row [B,1,C]", 3, 3, {2, 77, 640}, {2, 1, 640}},
        {"row vector [C]", 3, 1, {2, 77, 640}, {640}},
        {"scalar [1]", 4, 1, {2, 3, 40, 70}, {1}},
        {"scalar ndim 0", 2, 0, {300, 70}, {0}},
        {"middle broadcast [B,1,H,W]", 4, 4, {2, 5, 30, 31}, {2, 1, 30, 31}},
        {"outer broadcast [1,T,C]", 3, 3, {3, 50, 129}, {1, 50, 129}},
        {"a with unit dims", 4, 3, {1, 7, 1, 300}, {7, 1, 1}},
        {"tiny", 1, 1, {1}, {1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sdxl_tensor a = sdxl_tensor_make(NULL, SDXL_DTYPE_F32, cases[c].na, cases[c].a);
        sdxl_tensor b = sdxl_tensor_make(NULL, SDXL_DTYPE_F32, cases[c].nb, cases[c].b);
        size_t na = (size_t)sdxl_tensor_nelem(&a), nb = (size_t)sdxl_tensor_nelem(&b);
        float *pa = falloc(na), *pb = falloc(nb), *py = falloc(na), *pr = falloc(na), *pi = falloc(na);
        rng_seed(c);
        for (size_t i = 0; i < na; i++) pa[i] = rng_range(-4, 4);
        for (size_t i = 0; i < nb; i++) pb[i] = rng_range(-4, 4);
        a.data = pa, b.data = pb;
        sdxl_tensor y = a, yi = a;
        y.data = py, yi.data = pi;
        for (int op = 0; op < SDXL_BINARY_COUNT_; op++) {
            binary_ref((sdxl_binary_op)op, &a, &b, pr);
            REQUIRE_OK(be->ops->binary(be, (sdxl_binary_op)op, &a, &b, &y), &be->err);
            /* one f32 operation per element: exact equality with the same op in C */
            CHECK_MSG(memcmp(py, pr, na * sizeof *py) == 0, "%s op %d: wrong result", cases[c].what, op);
            memcpy(pi, pa, na * sizeof *pa); /* y == a */
            sdxl_tensor ai = yi;
            REQUIRE_OK(be->ops->binary(be, (sdxl_binary_op)op, &ai, &b, &yi), &be->err);
            CHECK_MSG(memcmp(pi, pr, na * sizeof *pi) == 0, "%s op %d: in-place differs", cases[c].what, op);
        }
        sdxl_free(pa), sdxl_free(pb), sdxl_free(py), sdxl_free(pr), sdxl_free(pi);
    }
    /* y == b is allowed when b has a's shape */
    float a4[5] = {1, 2, 3, 4, 5}, b4[5] = {10, 20, 30, 40, 50};
    sdxl_tensor ta = sdxl_tensor_1d(a4, SDXL_DTYPE_F32, 5), tb = sdxl_tensor_1d(b4, SDXL_DTYPE_F32, 5);
    REQUIRE_OK(be->ops->binary(be, SDXL_BINARY_ADD, &ta, &tb, &tb), &be->err);
    CHECK(b4[0] == 11 && b4[4] == 55);
    sdxl_backend_free(be);
}

TEST(ew_binary_rejects_bad_shapes) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    float a[2 * 320 * 4], b[321 * 2], y[2 * 320 * 4];
    sdxl_tensor ta = sdxl_tensor_4d(a, SDXL_DTYPE_F32, 2, 320, 2, 2);
    sdxl_tensor ty = sdxl_tensor_4d(y, SDXL_DTYPE_F32, 2, 320, 2, 2);
    sdxl_tensor bad = sdxl_tensor_4d(b, SDXL_DTYPE_F32, 1, 321, 1, 1);
    CHECK(be->ops->binary(be, SDXL_BINARY_ADD, &ta, &bad, &ty) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "binary"));
    CHECK(contains(sdxl_backend_last_error(be), "f32[1,321,1,1]"));
    CHECK(contains(sdxl_backend_last_error(be), "f32[2,320,2,2]"));
    sdxl_tensor c2 = sdxl_tensor_2d(b, SDXL_DTYPE_F32, 2, 320); /* [B,C] needs reshaping to [B,C,1,1] */
    CHECK(be->ops->binary(be, SDXL_BINARY_ADD, &ta, &c2, &ty) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor more = sdxl_tensor_3d(b, SDXL_DTYPE_F32, 2, 1, 320);
    sdxl_tensor a2 = sdxl_tensor_2d(a, SDXL_DTYPE_F32, 1, 320), y2 = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 1, 320);
    CHECK(be->ops->binary(be, SDXL_BINARY_MUL, &a2, &more, &y2) == SDXL_STATUS_INVALID_ARG); /* b more dims */
    sdxl_tensor yw = sdxl_tensor_4d(y, SDXL_DTYPE_F32, 2, 320, 4, 1);
    sdxl_tensor b1 = sdxl_tensor_1d(b, SDXL_DTYPE_F32, 1);
    CHECK(be->ops->binary(be, SDXL_BINARY_ADD, &ta, &b1, &yw) == SDXL_STATUS_INVALID_ARG); /* y shape */
    CHECK(be->ops->binary(be, (sdxl_binary_op)7, &ta, &b1, &ty) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor h = ta;
    h.dtype = SDXL_DTYPE_F16;
    CHECK(be->ops->binary(be, SDXL_BINARY_ADD, &ta, &b1, &h) == SDXL_STATUS_UNSUPPORTED);
    /* y overlapping b (a broadcast b) */
    sdxl_tensor ya = sdxl_tensor_4d(a, SDXL_DTYPE_F32, 2, 320, 2, 2), bb = sdxl_tensor_1d(a, SDXL_DTYPE_F32, 2);
    CHECK(be->ops->binary(be, SDXL_BINARY_ADD, &ta, &bb, &ya) == SDXL_STATUS_INVALID_ARG);
    sdxl_backend_free(be);
}

/* ---- scale ------------------------------------------------------------------------- */

TEST(ew_scale_exact) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    size_t n = 40000;
    float *x = falloc(n), *y = falloc(n);
    rng_seed(5);
    for (size_t i = 0; i < n; i++) x[i] = rng_range(-10, 10);
    sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 8, 5000), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 8, 5000);
    const float s = 0.18215f, t = -0.5f;
    REQUIRE_OK(be->ops->scale(be, &tx, s, t, &ty), &be->err);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float want = x[i] * s + t; /* the same two roundings (no contraction in C11) */
        bad += y[i] != want;
    }
    CHECK_EQ_INT(bad, 0);
    REQUIRE_OK(be->ops->scale(be, &tx, s, t, &tx), &be->err); /* in place */
    CHECK(memcmp(x, y, n * sizeof *x) == 0);
    sdxl_tensor tw = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 5000, 8);
    CHECK(be->ops->scale(be, &tx, s, t, &tw) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "scale"));
    sdxl_free(x), sdxl_free(y);
    sdxl_backend_free(be);
}

/* ---- concat ------------------------------------------------------------------------ */

TEST(ew_concat_every_dim_and_dtype) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    const sdxl_dtype dts[] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16, SDXL_DTYPE_I32};
    const int64_t base[4] = {2, 3, 4, 5};
    for (size_t di = 0; di < 4; di++) {
        size_t es = sdxl_dtype_size(dts[di]);
        for (int dim = 0; dim < 4; dim++) {
            int64_t as[4], bs[4], ys[4];
            memcpy(as, base, sizeof as), memcpy(bs, base, sizeof bs), memcpy(ys, base, sizeof ys);
            bs[dim] = 3 + dim; /* b differs along dim only */
            ys[dim] = as[dim] + bs[dim];
            sdxl_tensor a = sdxl_tensor_make(NULL, dts[di], 4, as), b = sdxl_tensor_make(NULL, dts[di], 4, bs);
            sdxl_tensor y = sdxl_tensor_make(NULL, dts[di], 4, ys);
            size_t na = (size_t)sdxl_tensor_nelem(&a), nb = (size_t)sdxl_tensor_nelem(&b);
            size_t ny = (size_t)sdxl_tensor_nelem(&y);
            uint8_t *pa = sdxl_malloc(na * es), *pb = sdxl_malloc(nb * es), *py = sdxl_malloc(ny * es);
            /* element i of a holds the bytes of i, of b 10000 + i (tagged by source) */
            for (size_t i = 0; i < na; i++) {
                uint32_t v = (uint32_t)i;
                memcpy(pa + i * es, &v, es);
            }
            for (size_t i = 0; i < nb; i++) {
                uint32_t v = 10000u + (uint32_t)i;
                memcpy(pb + i * es, &v, es);
            }
            a.data = pa, b.data = pb, y.data = py;
            REQUIRE_OK(be->ops->concat(be, &a, &b, dim, &y), &be->err);
            int bad = 0;
            int64_t idx[4];
            for (idx[0] = 0; idx[0] < ys[0]; idx[0]++)
                for (idx[1] = 0; idx[1] < ys[1]; idx[1]++)
                    for (idx[2] = 0; idx[2] < ys[2]; idx[2]++)
                        for (idx[3] = 0; idx[3] < ys[3]; idx[3]++) {
                            bool from_a = idx[dim] < as[dim];
                            const int64_t *sh = from_a ? as : bs;
                            int64_t j[4] = {idx[0], idx[1], idx[2], idx[3]};
                            if (!from_a) j[dim] -= as[dim];
                            int64_t src = ((j[0] * sh[1] + j[1]) * sh[2] + j[2]) * sh[3] + j[3];
                            int64_t dst = ((idx[0] * ys[1] + idx[1]) * ys[2] + idx[2]) * ys[3] + idx[3];
                            uint32_t want = (from_a ? 0u : 10000u) + (uint32_t)src, got = 0;
                            memcpy(&got, py + (size_t)dst * es, es);
                            if (es == 2) want &= 0xFFFF;
                            bad += got != want;
                        }
            CHECK_MSG(bad == 0, "concat %s dim %d: %d wrong", sdxl_dtype_name(dts[di]), dim, bad);
            sdxl_free(pa), sdxl_free(pb), sdxl_free(py);
        }
    }
    /* errors: dtype mismatch, dim range, other dims differ, y wrong */
    float fa[6], fb[6], fy[12];
    uint16_t hb[6];
    sdxl_tensor a = sdxl_tensor_2d(fa, SDXL_DTYPE_F32, 2, 3), b = sdxl_tensor_2d(fb, SDXL_DTYPE_F32, 2, 3);
    sdxl_tensor y = sdxl_tensor_2d(fy, SDXL_DTYPE_F32, 4, 3), h = sdxl_tensor_2d(hb, SDXL_DTYPE_F16, 2, 3);
    CHECK(be->ops->concat(be, &a, &b, 0, &y) == SDXL_STATUS_OK);
    CHECK(be->ops->concat(be, &a, &h, 0, &y) == SDXL_STATUS_INVALID_ARG);
    CHECK(be->ops->concat(be, &a, &b, 2, &y) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "dim 2"));
    CHECK(be->ops->concat(be, &a, &b, -1, &y) == SDXL_STATUS_INVALID_ARG);
    CHECK(be->ops->concat(be, &a, &b, 1, &y) == SDXL_STATUS_INVALID_ARG); /* y must be [2,6] */
    sdxl_tensor b2 = sdxl_tensor_2d(fb, SDXL_DTYPE_F32, 3, 2);
    CHECK(be->ops->concat(be, &a, &b2, 0, &y) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "f32[3,2]"));
    sdxl_backend_free(be);
}

/* ---- upsample ----------------------------------------------------------------------- */

TEST(ew_upsample_nearest2x_pattern) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    /* x [1,1,2,3] = [[1,2,3],[4,5,6]] -> every value becomes a 2x2 block */
    float x[6] = {1, 2, 3, 4, 5, 6}, y[24];
    const float want[24] = {1, 1, 2, 2, 3, 3, /**/ 1, 1, 2, 2, 3, 3,
                            4, 4, 5, 5, 6, 6, /**/ 4, 4, 5, 5, 6, 6};
    sdxl_tensor tx = sdxl_tensor_4d(x, SDXL_DTYPE_F32, 1, 1, 2, 3), ty = sdxl_tensor_4d(y, SDXL_DTYPE_F32, 1, 1, 4, 6);
    REQUIRE_OK(be->ops->upsample_nearest2x(be, &tx, &ty), &be->err);
    CHECK(memcmp(y, want, sizeof want) == 0);
    /* odd sizes, many planes: y[b,c,i,j] = x[b,c,i/2,j/2] */
    int64_t B = 2, C = 37, H = 5, W = 7;
    size_t nx = (size_t)(B * C * H * W);
    float *xs = falloc(nx), *ys = falloc(nx * 4);
    for (size_t i = 0; i < nx; i++) xs[i] = (float)i;
    sdxl_tensor a = sdxl_tensor_4d(xs, SDXL_DTYPE_F32, B, C, H, W), b = sdxl_tensor_4d(ys, SDXL_DTYPE_F32, B, C, 2 * H, 2 * W);
    REQUIRE_OK(be->ops->upsample_nearest2x(be, &a, &b), &be->err);
    int bad = 0;
    for (int64_t p = 0; p < B * C; p++)
        for (int64_t i = 0; i < 2 * H; i++)
            for (int64_t j = 0; j < 2 * W; j++)
                bad += ys[(p * 2 * H + i) * 2 * W + j] != xs[(p * H + i / 2) * W + j / 2];
    CHECK_EQ_INT(bad, 0);
    sdxl_tensor wrong = sdxl_tensor_4d(ys, SDXL_DTYPE_F32, B, C, 2 * H, 2 * W + 1);
    CHECK(be->ops->upsample_nearest2x(be, &a, &wrong) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "upsample_nearest2x"));
    sdxl_tensor three = sdxl_tensor_3d(xs, SDXL_DTYPE_F32, B * C, H, W);
    CHECK(be->ops->upsample_nearest2x(be, &three, &b) == SDXL_STATUS_INVALID_ARG);
    sdxl_free(xs), sdxl_free(ys);
    sdxl_backend_free(be);
}

/* ---- embedding ---------------------------------------------------------------------- */

TEST(ew_embedding_rows_and_bad_ids) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    enum { V = 10, D = 7, N = 6 };
    float tf[V * D];
    uint16_t th[V * D], tb[V * D];
    rng_seed(11);
    for (int i = 0; i < V * D; i++) {
        tf[i] = rng_range(-2, 2);
        th[i] = sdxl_f32_to_f16(tf[i]);
        tb[i] = sdxl_f32_to_bf16(tf[i]);
    }
    int32_t ids[N] = {3, 0, 9, 3, 5, 1};
    float y[N * D];
    const sdxl_dtype dts[] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16};
    void *tabs[] = {tf, th, tb};
    sdxl_tensor ti = sdxl_tensor_1d(ids, SDXL_DTYPE_I32, N), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, N, D);
    for (int d = 0; d < 3; d++) {
        sdxl_tensor tt = sdxl_tensor_2d(tabs[d], dts[d], V, D);
        REQUIRE_OK(be->ops->embedding(be, &tt, &ti, &ty), &be->err);
        int bad = 0;
        for (int r = 0; r < N; r++)
            for (int j = 0; j < D; j++) {
                int k = ids[r] * D + j;
                float want = d == 0 ? tf[k] : d == 1 ? sdxl_f16_to_f32(th[k]) : sdxl_bf16_to_f32(tb[k]);
                bad += y[r * D + j] != want; /* widening is exact */
            }
        CHECK_MSG(bad == 0, "embedding %s: %d wrong", sdxl_dtype_name(dts[d]), bad);
    }
    /* ids [2,3] -> y [2,3,D] */
    sdxl_tensor ti2 = sdxl_tensor_2d(ids, SDXL_DTYPE_I32, 2, 3), ty3 = sdxl_tensor_3d(y, SDXL_DTYPE_F32, 2, 3, D);
    sdxl_tensor tt = sdxl_tensor_2d(tf, SDXL_DTYPE_F32, V, D);
    REQUIRE_OK(be->ops->embedding(be, &tt, &ti2, &ty3), &be->err);
    CHECK(y[5 * D + 2] == tf[1 * D + 2]);
    /* out of range: position and value named, BAD_INPUT (ids are untrusted) */
    ids[2] = V;
    CHECK(be->ops->embedding(be, &tt, &ti, &ty) == SDXL_STATUS_BAD_INPUT);
    CHECK(contains(sdxl_backend_last_error(be), "ids[2] = 10"));
    ids[2] = 9;
    ids[4] = -1;
    CHECK(be->ops->embedding(be, &tt, &ti, &ty) == SDXL_STATUS_BAD_INPUT);
    CHECK(contains(sdxl_backend_last_error(be), "ids[4] = -1"));
    ids[4] = 5;
    /* shape / dtype errors */
    sdxl_tensor tyw = sdxl_tensor_2d(y, SDXL_DTYPE_F32, N, D - 1);
    CHECK(be->ops->embedding(be, &tt, &ti, &tyw) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor tif = sdxl_tensor_1d(ids, SDXL_DTYPE_F32, N);
    CHECK(be->ops->embedding(be, &tt, &tif, &ty) == SDXL_STATUS_UNSUPPORTED);
    sdxl_backend_free(be);
}

/* ---- cast ------------------------------------------------------------------------- */

TEST(ew_cast_between_float_dtypes) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    size_t n = 40000 + 3;
    float *x = falloc(n), *back = falloc(n);
    uint16_t *h = sdxl_malloc(n * 2), *b = sdxl_malloc(n * 2), *hb = sdxl_malloc(n * 2);
    rng_seed(3);
    for (size_t i = 0; i < n; i++) x[i] = rng_range(-70000, 70000) * (i % 2 ? 1e-4f : 1.0f);
    sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 1, (int64_t)n);
    sdxl_tensor th = sdxl_tensor_2d(h, SDXL_DTYPE_F16, 1, (int64_t)n);
    sdxl_tensor tb = sdxl_tensor_2d(b, SDXL_DTYPE_BF16, 1, (int64_t)n);
    sdxl_tensor thb = sdxl_tensor_2d(hb, SDXL_DTYPE_BF16, 1, (int64_t)n);
    sdxl_tensor tback = sdxl_tensor_2d(back, SDXL_DTYPE_F32, 1, (int64_t)n);
    REQUIRE_OK(be->ops->cast(be, &tx, &th), &be->err);
    REQUIRE_OK(be->ops->cast(be, &tx, &tb), &be->err);
    REQUIRE_OK(be->ops->cast(be, &th, &thb), &be->err);
    REQUIRE_OK(be->ops->cast(be, &th, &tback), &be->err);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad += h[i] != sdxl_f32_to_f16(x[i]);
        bad += b[i] != sdxl_f32_to_bf16(x[i]);
        bad += hb[i] != sdxl_f32_to_bf16(sdxl_f16_to_f32(h[i]));
        bad += back[i] != sdxl_f16_to_f32(h[i]);
    }
    CHECK_EQ_INT(bad, 0);
    /* same dtype copies; in place is a no-op; i32 only to i32 */
    REQUIRE_OK(be->ops->cast(be, &tx, &tback), &be->err);
    CHECK(memcmp(x, back, n * sizeof *x) == 0);
    REQUIRE_OK(be->ops->cast(be, &tx, &tx), &be->err);
    int32_t iv[4] = {1, -2, 3, 1 << 30}, io[4];
    sdxl_tensor ti = sdxl_tensor_1d(iv, SDXL_DTYPE_I32, 4), tio = sdxl_tensor_1d(io, SDXL_DTYPE_I32, 4);
    REQUIRE_OK(be->ops->cast(be, &ti, &tio), &be->err);
    CHECK(memcmp(iv, io, sizeof iv) == 0);
    sdxl_tensor tf4 = sdxl_tensor_1d(back, SDXL_DTYPE_F32, 4);
    CHECK(be->ops->cast(be, &ti, &tf4) == SDXL_STATUS_UNSUPPORTED);
    CHECK(contains(sdxl_backend_last_error(be), "i32"));
    sdxl_tensor tw = sdxl_tensor_2d(h, SDXL_DTYPE_F16, (int64_t)n, 1);
    CHECK(be->ops->cast(be, &tx, &tw) == SDXL_STATUS_INVALID_ARG);
    sdxl_free(x), sdxl_free(back), sdxl_free(h), sdxl_free(b), sdxl_free(hb);
    sdxl_backend_free(be);
}

/* ---- contract checks shared by the ops ------------------------------------------------ */

TEST(ew_rejects_bad_operands) {
    sdxl_backend *be = make_backend();
    REQUIRE(be);
    float x[64], y[64];
    sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 4, 16), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 4, 16);
    sdxl_tensor tw = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 16, 4);
    CHECK(be->ops->unary(be, SDXL_UNARY_SILU, &tx, &tw) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "unary"));
    CHECK(contains(sdxl_backend_last_error(be), "f32[16,4]"));
    CHECK(contains(sdxl_backend_last_error(be), "f32[4,16]"));
    CHECK(be->ops->unary(be, SDXL_UNARY_SILU, NULL, &ty) == SDXL_STATUS_INVALID_ARG);
    CHECK(be->ops->unary(be, (sdxl_unary_op)9, &tx, &ty) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor th = tx;
    th.dtype = SDXL_DTYPE_F16;
    CHECK(be->ops->unary(be, SDXL_UNARY_SILU, &th, &ty) == SDXL_STATUS_UNSUPPORTED);
    CHECK(contains(sdxl_backend_last_error(be), "f16"));
    sdxl_tensor tc = tx;
    tc.device = SDXL_DEVICE_CUDA;
    CHECK(be->ops->unary(be, SDXL_UNARY_SILU, &tc, &ty) == SDXL_STATUS_INVALID_ARG);
    sdxl_tensor tn = tx;
    tn.data = NULL;
    CHECK(be->ops->unary(be, SDXL_UNARY_SILU, &tn, &ty) == SDXL_STATUS_INVALID_ARG);
    /* partial overlap (shifted by one element) is refused; y == x is fine */
    sdxl_tensor ts = sdxl_tensor_2d(x + 1, SDXL_DTYPE_F32, 3, 16);
    sdxl_tensor tx3 = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 3, 16);
    CHECK(be->ops->unary(be, SDXL_UNARY_SILU, &tx3, &ts) == SDXL_STATUS_INVALID_ARG);
    CHECK(contains(sdxl_backend_last_error(be), "overlaps"));
    CHECK(be->ops->softmax(be, &tx3, &ts) == SDXL_STATUS_INVALID_ARG);
    CHECK(be->ops->scale(be, &tx3, 2, 0, &ts) == SDXL_STATUS_INVALID_ARG);
    /* empty tensors are a no-op */
    sdxl_tensor e = sdxl_tensor_2d(NULL, SDXL_DTYPE_F32, 0, 16);
    CHECK(be->ops->unary(be, SDXL_UNARY_GELU_ERF, &e, &e) == SDXL_STATUS_OK);
    CHECK(be->ops->softmax(be, &e, &e) == SDXL_STATUS_OK);
    sdxl_backend_free(be);
}
