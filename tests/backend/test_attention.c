/* Tests of the CPU fused attention (src/backend/cpu/attention*.c): a double-
 * precision reference of softmax(q kᵀ scale) v per head on B > 1, several
 * heads, Tq != Tk (cross-attention with 77 keys), causal, head dims
 * 8/16/32/40/64 (40: not a multiple of 16), Tq = Tk = 1 and 300 tokens (over
 * the 48-query and 192-key blocks), at every ISA level this CPU has;
 * hand-worked cases; the vectorised exp2 against libm; errors and OOM.
 *
 * Tolerance, |o - ref| <= 1e-4 · max|v|, from the error budget for |q|, |k|,
 * |v| <= 1 and scale = 1/sqrt(D): a score sums D products, |s| <= sqrt(D) and
 * its f32 error is at most gamma_D·D·scale ~ D^1.5·2^-24 <= 3.1e-5 (D = 64)
 * plus ~1e-7 for the log2(e) prescale; the exponential adds < 1e-6 relative.
 * An absolute error e in the scores is a relative error e in each weight p,
 * which moves o = sum p v / sum p by at most 2e·max|v|; the value sum adds
 * gamma_Tk relative (Tk = 300: 1.8e-5). Worst case ~8e-5 of max|v|; measured
 * errors are ~1e-7. A lost rescale, a dropped block or a masking slip moves o
 * by O(max|v|). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/attention.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "test.h"

static sdxl_backend *att_backend(void) {
    sdxl_backend_params p = sdxl_backend_default_params();
    p.n_threads = 2;
    sdxl_error err;
    return sdxl_backend_create(&p, &err);
}

static uint64_t att_rng;
static float att_rand(void) { /* uniform [-1, 1) */
    att_rng = att_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(att_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static const sdxl_isa_level ATT_ISAS[] = {SDXL_ISA_GENERIC, SDXL_ISA_AVX2, SDXL_ISA_AVX512};

static bool att_use_isa(sdxl_isa_level l) {
    sdxl_cpu_set_max_isa(l);
    return sdxl_cpu_isa() == l;
}

/* Reference o [B, Tq, H·D] in double. */
static void att_ref(const float *q, const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                    int64_t D, double scale, bool causal, double *o) {
    const int64_t C = H * D;
    double *s = sdxl_malloc((size_t)Tk * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Tq; i++) {
                const int64_t nk = causal ? i + 1 : Tk;
                double mx = -INFINITY, l = 0;
                for (int64_t j = 0; j < nk; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < D; e++)
                        d += (double)q[(b * Tq + i) * C + h * D + e] * k[(b * Tk + j) * C + h * D + e];
                    s[j] = d * scale;
                    mx = fmax(mx, s[j]);
                }
                for (int64_t j = 0; j < nk; j++) l += s[j] = exp(s[j] - mx);
                for (int64_t e = 0; e < D; e++) {
                    double a = 0;
                    for (int64_t j = 0; j < nk; j++) a += s[j] * v[(b * Tk + j) * C + h * D + e];
                    o[(b * Tq + i) * C + h * D + e] = a / l;
                }
            }
    sdxl_free(s);
}

typedef struct att_case {
    int64_t B, Tq, Tk, H, D;
    bool causal;
} att_case;

static void att_check(sdxl_backend *be, const att_case *c, const char *isa) {
    const int64_t C = c->H * c->D, nq = c->B * c->Tq * C, nk = c->B * c->Tk * C;
    float *q = sdxl_malloc((size_t)nq * 4), *k = sdxl_malloc((size_t)nk * 4), *v = sdxl_malloc((size_t)nk * 4);
    float *o = sdxl_malloc((size_t)nq * 4);
    double *ref = sdxl_malloc((size_t)nq * sizeof(double));
    for (int64_t i = 0; i < nq; i++) q[i] = att_rand();
    for (int64_t i = 0; i < nk; i++) {
        k[i] = att_rand();
        v[i] = att_rand();
    }
    for (int64_t i = 0; i < nq; i++) o[i] = NAN;
    const float scale = 1.0f / sqrtf((float)c->D);
    sdxl_attention_params p = {(int)c->H, scale, c->causal};
    sdxl_tensor tq = sdxl_tensor_3d(q, SDXL_DTYPE_F32, c->B, c->Tq, C), to = sdxl_tensor_3d(o, SDXL_DTYPE_F32, c->B, c->Tq, C);
    sdxl_tensor tk = sdxl_tensor_3d(k, SDXL_DTYPE_F32, c->B, c->Tk, C), tv = sdxl_tensor_3d(v, SDXL_DTYPE_F32, c->B, c->Tk, C);
    sdxl_status st = be->ops->attention(be, &tq, &tk, &tv, &p, &to);
    CHECK_MSG(st == SDXL_STATUS_OK, "attention: %s", sdxl_backend_last_error(be));
    if (st == SDXL_STATUS_OK) {
        att_ref(q, k, v, c->B, c->Tq, c->Tk, c->H, c->D, scale, c->causal, ref);
        double worst = 0;
        int64_t at = 0;
        for (int64_t i = 0; i < nq; i++) {
            double d = fabs(o[i] - ref[i]);
            if (!(d <= worst)) { /* NaN counts as worst */
                worst = isnan(d) ? INFINITY : d;
                at = i;
            }
        }
        CHECK_MSG(worst <= 1e-4, "attention isa %s B=%lld Tq=%lld Tk=%lld H=%lld D=%lld causal=%d: o[%lld] = %.9g, want %.9g",
                  isa, (long long)c->B, (long long)c->Tq, (long long)c->Tk, (long long)c->H, (long long)c->D,
                  (int)c->causal, (long long)at, (double)o[at], ref[at]);
    }
    sdxl_free(q);
    sdxl_free(k);
    sdxl_free(v);
    sdxl_free(o);
    sdxl_free(ref);
}

TEST(attention_matches_double_reference_all_isas) {
    sdxl_backend *be = att_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    static const att_case cases[] = {
        /* B  Tq   Tk  H   D  causal */
        {1, 1, 1, 1, 8, false},
        {2, 5, 7, 2, 16, false},
        {2, 50, 77, 2, 32, false},   /* cross-attention, Tq over one query block */
        {1, 70, 77, 3, 40, false},   /* D not a multiple of 16 */
        {1, 97, 200, 2, 64, false},  /* keys over two blocks, uneven */
        {1, 300, 300, 1, 64, false}, /* long-ish self-attention */
        {2, 33, 33, 2, 8, true},     /* causal */
        {1, 300, 300, 2, 16, true},  /* causal over several query and key blocks */
        {1, 1, 1, 4, 16, true},
    };
    for (size_t k = 0; k < sizeof ATT_ISAS / sizeof ATT_ISAS[0]; k++) {
        if (!att_use_isa(ATT_ISAS[k])) continue;
        att_rng = 5;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) att_check(be, &cases[i], sdxl_isa_name(ATT_ISAS[k]));
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
}

/* Hand-worked: identical keys give the mean of v; a dominant key picks its v;
 * the first causal query sees only key 0; one key gives v. */
TEST(attention_hand_worked) {
    sdxl_backend *be = att_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    enum { T = 250, H = 2, D = 16, C = H * D };
    static float q[T * C], k[T * C], v[T * C], o[T * C];
    for (size_t ik = 0; ik < sizeof ATT_ISAS / sizeof ATT_ISAS[0]; ik++) {
        if (!att_use_isa(ATT_ISAS[ik])) continue;
        const char *isa = sdxl_isa_name(ATT_ISAS[ik]);
        sdxl_tensor tq = sdxl_tensor_3d(q, SDXL_DTYPE_F32, 1, T, C), to = sdxl_tensor_3d(o, SDXL_DTYPE_F32, 1, T, C);
        sdxl_tensor tk = sdxl_tensor_3d(k, SDXL_DTYPE_F32, 1, T, C), tv = sdxl_tensor_3d(v, SDXL_DTYPE_F32, 1, T, C);

        /* identical keys: uniform weights, o = mean over j of v[j] (per head, per dim) */
        att_rng = 9;
        for (int i = 0; i < T * C; i++) {
            q[i] = att_rand();
            k[i] = (float)((i % C) % 5) * 0.25f; /* same for every token */
            v[i] = att_rand();
        }
        sdxl_attention_params p = {H, 0.25f, false};
        REQUIRE_OK(be->ops->attention(be, &tq, &tk, &tv, &p, &to), &be->err);
        double worst = 0;
        for (int c = 0; c < C; c++) {
            double mean = 0;
            for (int j = 0; j < T; j++) mean += v[j * C + c];
            mean /= T;
            for (int i = 0; i < T; i++) worst = fmax(worst, fabs(o[i * C + c] - mean));
        }
        /* weights are exactly equal (same score), so only the f32 sum of 250 values errs */
        CHECK_MSG(worst <= 1e-5, "identical keys: |o - mean v| = %.3g (isa %s)", worst, isa);

        /* dominant key: key 123 of head h equals 20·q_i direction for all queries →
         * exp(s - max) of the others is < e^-80: o = v[123] */
        for (int i = 0; i < T * C; i++) {
            q[i] = 1.0f;
            k[i] = (i / C == 123) ? 10.0f : 0.0f;
        }
        sdxl_attention_params p2 = {H, 0.5f, false}; /* s = 0.5·D·10 = 80 vs 0 */
        REQUIRE_OK(be->ops->attention(be, &tq, &tk, &tv, &p2, &to), &be->err);
        worst = 0;
        for (int i = 0; i < T; i++)
            for (int c = 0; c < C; c++) worst = fmax(worst, fabs(o[i * C + c] - v[123 * C + c]));
        CHECK_MSG(worst <= 1e-6, "dominant key: |o - v[123]| = %.3g (isa %s)", worst, isa);

        /* causal: query 0 sees key 0 only, so o[0] = v[0] exactly, whatever the scores */
        att_rng = 10;
        for (int i = 0; i < T * C; i++) {
            q[i] = att_rand() * 4;
            k[i] = att_rand() * 4;
        }
        sdxl_attention_params p3 = {H, 1.0f, true};
        REQUIRE_OK(be->ops->attention(be, &tq, &tk, &tv, &p3, &to), &be->err);
        CHECK_MSG(memcmp(o, v, C * sizeof(float)) == 0, "causal query 0 must copy v[0] (isa %s)", isa);
        /* and query 1 is a convex combination of v[0], v[1] */
        int outside = 0;
        for (int c = 0; c < C; c++)
            outside += o[C + c] < fminf(v[c], v[C + c]) - 1e-6f || o[C + c] > fmaxf(v[c], v[C + c]) + 1e-6f;
        CHECK_MSG(outside == 0, "causal query 1 leaves the hull of v[0], v[1] (isa %s)", isa);

        /* one key: o = v (for every query), exactly */
        sdxl_tensor tk1 = sdxl_tensor_3d(k, SDXL_DTYPE_F32, 1, 1, C), tv1 = sdxl_tensor_3d(v, SDXL_DTYPE_F32, 1, 1, C);
        REQUIRE_OK(be->ops->attention(be, &tq, &tk1, &tv1, &p, &to), &be->err);
        int bad = 0;
        for (int i = 0; i < T; i++) bad += memcmp(o + i * C, v, C * sizeof(float)) != 0;
        CHECK_MSG(bad == 0, "one key: %d queries differ from v[0] (isa %s)", bad, isa);
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
}

/* The kernels' exp2 (used on s - max <= 0) against libm in double: relative
 * error below 1e-6 over [-126, 0], including block tails. */
TEST(attention_exp2_accuracy) {
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    enum { N = 20011 };
    static float x[N], y[N];
    for (int i = 0; i < N; i++) x[i] = -126.0f * (float)i / (N - 1);
    x[1] = -1e-7f;
    x[2] = -0.5f;
    x[3] = -0.49999997f;
    for (size_t k = 0; k < sizeof ATT_ISAS / sizeof ATT_ISAS[0]; k++) {
        if (!att_use_isa(ATT_ISAS[k])) continue;
        const sdxl__attn_isa *ai = sdxl__attn_isa_for(ATT_ISAS[k]);
        for (int64_t n = 1; n <= N; n += n < 40 ? 1 : 9973) { /* tails of every length */
            for (int i = 0; i < N; i++) y[i] = -1.0f;
            ai->exp2_n(x, y, n);
            double worst = 0;
            for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(y[i] - exp2((double)x[i])) / exp2((double)x[i]));
            CHECK_MSG(worst < 1e-6, "exp2 isa %s n=%lld: max rel error %.3g", sdxl_isa_name(ATT_ISAS[k]), (long long)n,
                      worst);
            CHECK_MSG(n == N || y[n] == -1.0f, "exp2 isa %s wrote past n=%lld", sdxl_isa_name(ATT_ISAS[k]), (long long)n);
        }
    }
    sdxl_cpu_set_max_isa(isa0);
}

TEST(attention_rejects_bad_shapes) {
    sdxl_backend *be = att_backend();
    REQUIRE(be);
    static float buf[16384];
    sdxl_tensor q = sdxl_tensor_3d(buf, SDXL_DTYPE_F32, 2, 10, 64);
    sdxl_tensor k = sdxl_tensor_3d(buf + 2000, SDXL_DTYPE_F32, 2, 7, 64);
    sdxl_tensor v = sdxl_tensor_3d(buf + 4000, SDXL_DTYPE_F32, 2, 7, 64);
    sdxl_tensor o = sdxl_tensor_3d(buf + 6000, SDXL_DTYPE_F32, 2, 10, 64);
    sdxl_attention_params p = {4, 0.25f, false};
    REQUIRE_OK(be->ops->attention(be, &q, &k, &v, &p, &o), &be->err);

    sdxl_tensor kbad = sdxl_tensor_3d(buf + 2000, SDXL_DTYPE_F32, 2, 7, 32);
    CHECK_EQ_INT(be->ops->attention(be, &q, &kbad, &v, &p, &o), SDXL_STATUS_INVALID_ARG);
    const char *msg = sdxl_backend_last_error(be);
    CHECK_MSG(strstr(msg, "attention") && strstr(msg, "f32[2,7,32]") && strstr(msg, "f32[2,10,64]"), "message: %s", msg);

    sdxl_tensor vbad = sdxl_tensor_3d(buf + 4000, SDXL_DTYPE_F32, 2, 8, 64);
    CHECK_EQ_INT(be->ops->attention(be, &q, &k, &vbad, &p, &o), SDXL_STATUS_INVALID_ARG);
    sdxl_tensor obad = sdxl_tensor_3d(buf + 6000, SDXL_DTYPE_F32, 2, 7, 64);
    CHECK_EQ_INT(be->ops->attention(be, &q, &k, &v, &p, &obad), SDXL_STATUS_INVALID_ARG);
    sdxl_attention_params p3 = {3, 0.25f, false}; /* 3 does not divide 64 */
    CHECK_EQ_INT(be->ops->attention(be, &q, &k, &v, &p3, &o), SDXL_STATUS_INVALID_ARG);
    CHECK_MSG(strstr(sdxl_backend_last_error(be), "heads") != NULL, "message: %s", sdxl_backend_last_error(be));
    sdxl_attention_params p0 = {0, 0.25f, false};
    CHECK_EQ_INT(be->ops->attention(be, &q, &k, &v, &p0, &o), SDXL_STATUS_INVALID_ARG);
    sdxl_attention_params pc = {4, 0.25f, true}; /* causal needs Tq == Tk */
    CHECK_EQ_INT(be->ops->attention(be, &q, &k, &v, &pc, &o), SDXL_STATUS_INVALID_ARG);
    sdxl_tensor k0 = sdxl_tensor_3d(buf + 2000, SDXL_DTYPE_F32, 2, 0, 64);
    CHECK_EQ_INT(be->ops->attention(be, &q, &k0, &k0, &p, &o), SDXL_STATUS_INVALID_ARG);
    sdxl_tensor q2 = sdxl_tensor_2d(buf, SDXL_DTYPE_F32, 10, 64);
    CHECK_EQ_INT(be->ops->attention(be, &q2, &k, &v, &p, &o), SDXL_STATUS_INVALID_ARG);
    sdxl_tensor qh = sdxl_tensor_3d(buf, SDXL_DTYPE_F16, 2, 10, 64);
    CHECK_EQ_INT(be->ops->attention(be, &qh, &k, &v, &p, &o), SDXL_STATUS_UNSUPPORTED);
    sdxl_tensor oq = sdxl_tensor_3d(buf + 100, SDXL_DTYPE_F32, 2, 10, 64); /* overlaps q */
    CHECK_EQ_INT(be->ops->attention(be, &q, &k, &v, &p, &oq), SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(be->ops->attention(be, &q, &k, &v, NULL, &o), SDXL_STATUS_INVALID_ARG);
    sdxl_backend_free(be);
}

TEST(attention_scratch_oom) {
    sdxl_backend *be = att_backend();
    REQUIRE(be);
    static float q[20 * 32], k[9 * 32], v[9 * 32], o[20 * 32];
    sdxl_tensor tq = sdxl_tensor_3d(q, SDXL_DTYPE_F32, 1, 20, 32), to = sdxl_tensor_3d(o, SDXL_DTYPE_F32, 1, 20, 32);
    sdxl_tensor tk = sdxl_tensor_3d(k, SDXL_DTYPE_F32, 1, 9, 32), tv = sdxl_tensor_3d(v, SDXL_DTYPE_F32, 1, 9, 32);
    sdxl_attention_params p = {2, 0.25f, false};
    sdxl__alloc_fail_at(1);
    sdxl_status st = be->ops->attention(be, &tq, &tk, &tv, &p, &to);
    sdxl__alloc_fail_at(0);
    CHECK_EQ_INT(st, SDXL_STATUS_OUT_OF_MEMORY);
    CHECK_MSG(strstr(sdxl_backend_last_error(be), "attention") != NULL, "message: %s", sdxl_backend_last_error(be));
    REQUIRE_OK(be->ops->attention(be, &tq, &tk, &tv, &p, &to), &be->err);
    sdxl_backend_free(be);
}
