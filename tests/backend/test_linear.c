/* Tests of the CPU linear op (src/backend/cpu/linear.c and the GEMM engine
 * behind it): double-precision references of the naive formula on odd shapes
 * (M = 1, N = 1, K not a multiple of 16, shapes crossing the engine's block
 * sizes), f32/f16/bf16 weights and biases, every ISA level this CPU has,
 * hand-worked cases, shape/dtype errors, scratch OOM, and diffusers' time
 * embedding of the tiny SDXL UNet.
 *
 * Tolerance. The reference uses the same widened weights (f16/bf16 -> f32 is
 * exact), so the only error is f32 rounding in the sum of K products plus the
 * bias: |y - ref| <= gamma_{K+1} * sum_k |x_k w_k| + |b|·2^-24 with
 * gamma_n = n·2^-24 / (1 - n·2^-24) (Higham, worst case for any summation
 * order). We check exactly that bound (with (K + 2)·2^-24), which is rigorous
 * for every kernel yet tight enough to catch a dropped or doubled term
 * (about sum|x w| / K). */
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

static sdxl_backend *lin_backend(void) {
    sdxl_backend_params p = sdxl_backend_default_params();
    p.n_threads = 2; /* exercise the task split even on one core */
    sdxl_error err;
    return sdxl_backend_create(&p, &err);
}

static uint64_t lin_rng;
static float lin_rand(void) { /* uniform [-1, 1) */
    lin_rng = lin_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(lin_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static const sdxl_isa_level LIN_ISAS[] = {SDXL_ISA_GENERIC, SDXL_ISA_AVX2, SDXL_ISA_AVX512};

/* Set the cap to `l`; false if this CPU does not have that level. */
static bool lin_use_isa(sdxl_isa_level l) {
    sdxl_cpu_set_max_isa(l);
    return sdxl_cpu_isa() == l;
}

/* Weights [n] in dtype dt from f32 values; `wf` is overwritten with the values
 * actually stored (rounded to dt), so the reference sees what the kernel sees. */
static void *lin_weights(float *wf, size_t n, sdxl_dtype dt) {
    void *w = sdxl_malloc(n * sdxl_dtype_size(dt) + 1);
    sdxl_convert_n(wf, SDXL_DTYPE_F32, w, dt, n);
    sdxl_convert_n(w, dt, wf, SDXL_DTYPE_F32, n);
    return w;
}

/* y = x·wᵀ + b on random data; checks every element against the bound above. */
static void lin_check(sdxl_backend *be, int64_t M, int64_t K, int64_t N, sdxl_dtype wt, bool bias,
                      sdxl_dtype bt, const char *isa) {
    float *x = sdxl_malloc((size_t)(M * K) * 4 + 4), *wf = sdxl_malloc((size_t)(N * K) * 4 + 4);
    float *bf = sdxl_malloc((size_t)N * 4), *y = sdxl_malloc((size_t)(M * N) * 4 + 4);
    for (int64_t i = 0; i < M * K; i++) x[i] = lin_rand();
    for (int64_t i = 0; i < N * K; i++) wf[i] = lin_rand();
    for (int64_t i = 0; i < N; i++) bf[i] = lin_rand();
    void *w = lin_weights(wf, (size_t)(N * K), wt);
    void *b = lin_weights(bf, (size_t)N, bt);
    for (int64_t i = 0; i < M * N; i++) y[i] = NAN;
    /* x as [2, M/2, K] when M is even, to exercise the flattening of leading dims */
    sdxl_tensor tx = M % 2 == 0 && M > 0 ? sdxl_tensor_3d(x, SDXL_DTYPE_F32, 2, M / 2, K)
                                         : sdxl_tensor_2d(x, SDXL_DTYPE_F32, M, K);
    sdxl_tensor ty = M % 2 == 0 && M > 0 ? sdxl_tensor_3d(y, SDXL_DTYPE_F32, 2, M / 2, N)
                                         : sdxl_tensor_2d(y, SDXL_DTYPE_F32, M, N);
    sdxl_tensor tw = sdxl_tensor_2d(w, wt, N, K), tb = sdxl_tensor_1d(b, bt, N);
    sdxl_status st = be->ops->linear(be, &tx, &tw, bias ? &tb : NULL, &ty);
    CHECK_MSG(st == SDXL_STATUS_OK, "linear M=%lld K=%lld N=%lld: %s", (long long)M, (long long)K,
              (long long)N, sdxl_backend_last_error(be));
    int bad = 0;
    for (int64_t m = 0; m < M && st == SDXL_STATUS_OK; m++)
        for (int64_t n = 0; n < N; n++) {
            double ref = bias ? bf[n] : 0.0, mag = bias ? fabs(bf[n]) : 0.0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)x[m * K + k] * wf[n * K + k];
                ref += p;
                mag += fabs(p);
            }
            double tol = (double)(K + 2) * ldexp(1.0, -24) * mag + 1e-30;
            double got = y[m * N + n];
            if (!(fabs(got - ref) <= tol) && bad++ < 3)
                sdxl_test_fail(__FILE__, __LINE__,
                               "linear isa %s M=%lld K=%lld N=%lld w %s b %s: y[%lld,%lld] = %.9g, want %.9g (tol %.3g)",
                               isa, (long long)M, (long long)K, (long long)N, sdxl_dtype_name(wt),
                               bias ? sdxl_dtype_name(bt) : "none", (long long)m, (long long)n, got, ref, tol);
        }
    sdxl_free(x);
    sdxl_free(wf);
    sdxl_free(bf);
    sdxl_free(y);
    sdxl_free(w);
    sdxl_free(b);
}

/* ---- random shapes against the reference ----------------------------------------- */

TEST(linear_matches_double_reference_all_isas) {
    sdxl_backend *be = lin_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    static const int64_t shapes[][3] = {
        /* M, K, N */
        {1, 1, 1},     {1, 37, 5},    {3, 17, 1},    {2, 320, 33},  {8, 65, 40},    /* few rows: gemv path */
        {9, 1, 7},     {13, 31, 29},  {15, 16, 32},  {29, 100, 47}, {77, 64, 320}, /* gemm edges */
        {50, 769, 35}, /* K over several KC blocks, uneven */
        {400, 24, 70}, /* M over several MC blocks */
        {10, 12, 4133}, /* N over two NC blocks */
        {9, 530, 4100}, /* N over two NC blocks x K over two KC blocks (f32 only: big) */
    };
    const size_t n_all_dtypes = sizeof shapes / sizeof shapes[0] - 1;
    for (size_t k = 0; k < sizeof LIN_ISAS / sizeof LIN_ISAS[0]; k++) {
        if (!lin_use_isa(LIN_ISAS[k])) continue;
        const char *isa = sdxl_isa_name(LIN_ISAS[k]);
        lin_rng = 42;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const sdxl_dtype wts[] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16};
            for (int t = 0; t < (s < n_all_dtypes ? 3 : 1); t++)
                lin_check(be, shapes[s][0], shapes[s][1], shapes[s][2], wts[t], s % 2 == 0, wts[(t + s) % 3], isa);
        }
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
}

/* One thread: the same engine with no task split. */
TEST(linear_single_thread) {
    sdxl_backend_params p = sdxl_backend_default_params();
    p.n_threads = 1;
    sdxl_error err;
    sdxl_backend *be = sdxl_backend_create(&p, &err);
    REQUIRE(be);
    lin_rng = 7;
    lin_check(be, 45, 130, 70, SDXL_DTYPE_F16, true, SDXL_DTYPE_F32, "default");
    lin_check(be, 3, 130, 70, SDXL_DTYPE_BF16, true, SDXL_DTYPE_F32, "default");
    sdxl_backend_free(be);
}

/* ---- hand-worked ----------------------------------------------------------------- */

/* Identity weights give x + b exactly; a 2x2 by hand. */
TEST(linear_hand_worked) {
    sdxl_backend *be = lin_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    for (size_t k = 0; k < sizeof LIN_ISAS / sizeof LIN_ISAS[0]; k++) {
        if (!lin_use_isa(LIN_ISAS[k])) continue;
        /* [[1,2],[3,4]] · [[5,6],[7,8]]ᵀ + [0.5, -1] = [[17.5, 22], [39.5, 52]] */
        float x[4] = {1, 2, 3, 4}, w[4] = {5, 6, 7, 8}, b[2] = {0.5f, -1.0f}, y[4];
        sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 2, 2), tw = sdxl_tensor_2d(w, SDXL_DTYPE_F32, 2, 2);
        sdxl_tensor tb = sdxl_tensor_1d(b, SDXL_DTYPE_F32, 2), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 2, 2);
        REQUIRE_OK(be->ops->linear(be, &tx, &tw, &tb, &ty), &be->err);
        CHECK(y[0] == 17.5f && y[1] == 22.0f && y[2] == 39.5f && y[3] == 52.0f);

        /* identity 40x40 in f16, 20 rows: y = x + b exactly */
        enum { D = 40, R = 20 };
        static float xi[R * D], wi[D * D], bi[D], yi[R * D];
        uint16_t wh[D * D];
        lin_rng = 3;
        for (int i = 0; i < R * D; i++) xi[i] = lin_rand();
        for (int i = 0; i < D * D; i++) wi[i] = i / D == i % D ? 1.0f : 0.0f;
        for (int i = 0; i < D; i++) bi[i] = (float)i;
        sdxl_convert_n(wi, SDXL_DTYPE_F32, wh, SDXL_DTYPE_F16, D * D);
        sdxl_tensor ax = sdxl_tensor_2d(xi, SDXL_DTYPE_F32, R, D), aw = sdxl_tensor_2d(wh, SDXL_DTYPE_F16, D, D);
        sdxl_tensor ab = sdxl_tensor_1d(bi, SDXL_DTYPE_F32, D), ay = sdxl_tensor_2d(yi, SDXL_DTYPE_F32, R, D);
        REQUIRE_OK(be->ops->linear(be, &ax, &aw, &ab, &ay), &be->err);
        int bad = 0;
        for (int i = 0; i < R * D; i++) bad += yi[i] != xi[i] + bi[i % D];
        CHECK_MSG(bad == 0, "identity linear: %d of %d differ (isa %s)", bad, R * D, sdxl_isa_name(LIN_ISAS[k]));
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
}

/* K = 0: an empty sum, y = b. */
TEST(linear_empty_inner_dim) {
    sdxl_backend *be = lin_backend();
    REQUIRE(be);
    float x[1], w[1], b[3] = {1, 2, 3}, y[6];
    sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, 2, 0), tw = sdxl_tensor_2d(w, SDXL_DTYPE_F32, 3, 0);
    sdxl_tensor tb = sdxl_tensor_1d(b, SDXL_DTYPE_F32, 3), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, 2, 3);
    REQUIRE_OK(be->ops->linear(be, &tx, &tw, &tb, &ty), &be->err);
    CHECK(y[0] == 1 && y[1] == 2 && y[2] == 3 && y[3] == 1 && y[4] == 2 && y[5] == 3);
    sdxl_backend_free(be);
}

/* ---- errors ---------------------------------------------------------------------- */

TEST(linear_rejects_bad_shapes_and_dtypes) {
    sdxl_backend *be = lin_backend();
    REQUIRE(be);
    static float buf[4096];
    static uint16_t hbuf[4096];
    sdxl_tensor x = sdxl_tensor_3d(buf, SDXL_DTYPE_F32, 2, 7, 64);
    sdxl_tensor w = sdxl_tensor_2d(hbuf, SDXL_DTYPE_F16, 32, 32); /* K 32 != 64 */
    sdxl_tensor y = sdxl_tensor_3d(buf + 2048, SDXL_DTYPE_F32, 2, 7, 32);
    CHECK_EQ_INT(be->ops->linear(be, &x, &w, NULL, &y), SDXL_STATUS_INVALID_ARG);
    const char *msg = sdxl_backend_last_error(be);
    CHECK_MSG(strstr(msg, "linear") && strstr(msg, "f32[2,7,64]") && strstr(msg, "f16[32,32]") &&
                  strstr(msg, "inner dims differ"),
              "message: %s", msg);

    sdxl_tensor w2 = sdxl_tensor_2d(hbuf, SDXL_DTYPE_F16, 32, 64);
    sdxl_tensor ybad = sdxl_tensor_3d(buf + 2048, SDXL_DTYPE_F32, 2, 7, 31);
    CHECK_EQ_INT(be->ops->linear(be, &x, &w2, NULL, &ybad), SDXL_STATUS_INVALID_ARG);
    msg = sdxl_backend_last_error(be);
    CHECK_MSG(strstr(msg, "y f32[2,7,31]") != NULL, "message: %s", msg);
    sdxl_tensor yflat = sdxl_tensor_2d(buf + 2048, SDXL_DTYPE_F32, 14, 32); /* leading dims must match */
    CHECK_EQ_INT(be->ops->linear(be, &x, &w2, NULL, &yflat), SDXL_STATUS_INVALID_ARG);

    sdxl_tensor bbad = sdxl_tensor_1d(buf + 3000, SDXL_DTYPE_F32, 33);
    CHECK_EQ_INT(be->ops->linear(be, &x, &w2, &bbad, &y), SDXL_STATUS_INVALID_ARG);
    CHECK_MSG(strstr(sdxl_backend_last_error(be), "bias") != NULL, "message: %s", sdxl_backend_last_error(be));

    sdxl_tensor w3 = sdxl_tensor_3d(hbuf, SDXL_DTYPE_F16, 1, 32, 64);
    CHECK_EQ_INT(be->ops->linear(be, &x, &w3, NULL, &y), SDXL_STATUS_INVALID_ARG);

    /* unsupported dtypes */
    sdxl_tensor xh = sdxl_tensor_3d(hbuf, SDXL_DTYPE_F16, 2, 7, 64);
    CHECK_EQ_INT(be->ops->linear(be, &xh, &w2, NULL, &y), SDXL_STATUS_UNSUPPORTED);
    sdxl_tensor wi = sdxl_tensor_2d(buf, SDXL_DTYPE_I32, 32, 64);
    CHECK_EQ_INT(be->ops->linear(be, &x, &wi, NULL, &y), SDXL_STATUS_UNSUPPORTED);
    sdxl_tensor bi = sdxl_tensor_1d(buf, SDXL_DTYPE_I32, 32);
    CHECK_EQ_INT(be->ops->linear(be, &x, &w2, &bi, &y), SDXL_STATUS_UNSUPPORTED);

    /* y overlapping x */
    sdxl_tensor yx = sdxl_tensor_3d(buf + 100, SDXL_DTYPE_F32, 2, 7, 32);
    CHECK_EQ_INT(be->ops->linear(be, &x, &w2, NULL, &yx), SDXL_STATUS_INVALID_ARG);
    sdxl_backend_free(be);
}

/* A fresh back end has no scratch: failing its allocation is a clean OOM. */
TEST(linear_scratch_oom) {
    sdxl_backend *be = lin_backend();
    REQUIRE(be);
    enum { M = 40, K = 50, N = 30 };
    static float x[M * K], w[N * K], y[M * N];
    sdxl_tensor tx = sdxl_tensor_2d(x, SDXL_DTYPE_F32, M, K), tw = sdxl_tensor_2d(w, SDXL_DTYPE_F32, N, K);
    sdxl_tensor ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, M, N);
    sdxl__alloc_fail_at(1);
    sdxl_status st = be->ops->linear(be, &tx, &tw, NULL, &ty);
    sdxl__alloc_fail_at(0);
    CHECK_EQ_INT(st, SDXL_STATUS_OUT_OF_MEMORY);
    CHECK_MSG(strstr(sdxl_backend_last_error(be), "linear") != NULL, "message: %s", sdxl_backend_last_error(be));
    REQUIRE_OK(be->ops->linear(be, &tx, &tw, NULL, &ty), &be->err); /* and works afterwards */
    sdxl_backend_free(be);
}

/* ---- diffusers reference ---------------------------------------------------------- */

/* Tensor `name` of f as an engine view (element-aligned: sdxl_st_view checks). */
static bool lin_view(const sdxl_st_file *f, const char *name, sdxl_tensor *out) {
    sdxl_error err = {0};
    const sdxl_st_tensor *e = sdxl_st_find(f, name);
    bool ok = e && sdxl_st_view(f, e, out, &err) == SDXL_STATUS_OK;
    CHECK_MSG(ok, "tensor %s: %s", name, e ? err.msg : "missing");
    return ok;
}

/* ref ?= linear_2(SiLU(linear_1(x))) with the weights `<prefix>.linear_{1,2}.{weight,bias}`,
 * at every ISA level. */
static void lin_check_mlp(sdxl_backend *be, const sdxl_st_file *wf, const char *prefix, const sdxl_tensor *x,
                          const sdxl_tensor *ref) {
    char names[4][128];
    sdxl_tensor t[4];
    for (int i = 0; i < 4; i++) {
        snprintf(names[i], sizeof names[i], "%s.linear_%d.%s", prefix, 1 + i / 2, i % 2 ? "bias" : "weight");
        if (!lin_view(wf, names[i], &t[i])) return;
    }
    const int64_t B = x->ne[0], H = t[0].ne[0], E = t[2].ne[0];
    CHECK_EQ_INT(ref->ne[0], B);
    CHECK_EQ_INT(ref->ne[1], E);
    if (ref->ne[0] != B || ref->ne[1] != E) return;
    float *h = sdxl_malloc((size_t)(B * H) * 4), *y = sdxl_malloc((size_t)(B * E) * 4);
    sdxl_tensor th = sdxl_tensor_2d(h, SDXL_DTYPE_F32, B, H), ty = sdxl_tensor_2d(y, SDXL_DTYPE_F32, B, E);
    const float *r = ref->data;
    float rmax = 0;
    for (int64_t i = 0; i < B * E; i++) rmax = fmaxf(rmax, fabsf(r[i]));
    for (size_t k = 0; k < sizeof LIN_ISAS / sizeof LIN_ISAS[0]; k++) {
        if (!lin_use_isa(LIN_ISAS[k])) continue;
        sdxl_status st = be->ops->linear(be, x, &t[0], &t[1], &th);
        for (int64_t i = 0; i < B * H; i++) h[i] = h[i] / (1.0f + expf(-h[i])); /* SiLU, by hand */
        if (st == SDXL_STATUS_OK) st = be->ops->linear(be, &th, &t[2], &t[3], &ty);
        CHECK_MSG(st == SDXL_STATUS_OK, "%s: %s", prefix, sdxl_backend_last_error(be));
        double d = sdxl_test_max_abs_diff(y, r, (long)(B * E));
        CHECK_MSG(st != SDXL_STATUS_OK || d <= fmax(1e-4, 1e-4 * rmax), "%s isa %s: max |diff| %.3g (max|ref| %.3g)",
                  prefix, sdxl_isa_name(LIN_ISAS[k]), d, (double)rmax);
    }
    sdxl_free(h);
    sdxl_free(y);
}

/* The tiny SDXL UNet's two embedding MLPs against diffusers (torch fp32):
 *   act.time_embedding = time_embedding(act.time_proj)
 *   act.add_embedding  = add_embedding(concat(in.text_embeds, act.add_time_proj as [B, 48]))
 * Tolerance: 1e-4 absolute or 1e-4 of max|ref| (torch sums in another order;
 * both f32; measured ~1e-7). */
TEST(linear_tiny_unet_embeddings_diffusers) {
    sdxl_error err_ = {0}, *err = &err_;
    sdxl_st_file *wf = NULL, *af = NULL;
    REQUIRE_OK(sdxl_st_open(sdxl_test_data("refs/tiny-sdxl/unet/diffusion_pytorch_model.safetensors"), &wf, err), err);
    sdxl_status st = sdxl_st_open(sdxl_test_data("refs/tiny-sdxl-ref/unet_forward.safetensors"), &af, err);
    if (st != SDXL_STATUS_OK) sdxl_st_close(wf);
    REQUIRE_OK(st, err);
    sdxl_backend *be = lin_backend();
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    sdxl_tensor tp, te, txt, atp, ae;
    if (be && lin_view(af, "act.time_proj", &tp) && lin_view(af, "act.time_embedding", &te))
        lin_check_mlp(be, wf, "time_embedding", &tp, &te);
    if (be && lin_view(af, "in.text_embeds", &txt) && lin_view(af, "act.add_time_proj", &atp) &&
        lin_view(af, "act.add_embedding", &ae)) {
        const int64_t B = txt.ne[0], nt = txt.ne[1], na = sdxl_tensor_nelem(&atp) / B;
        float *cat = sdxl_malloc((size_t)(B * (nt + na)) * 4); /* [B, nt + na] */
        for (int64_t b = 0; b < B; b++) {
            memcpy(cat + b * (nt + na), (const float *)txt.data + b * nt, (size_t)nt * 4);
            memcpy(cat + b * (nt + na) + nt, (const float *)atp.data + b * na, (size_t)na * 4);
        }
        sdxl_tensor tc = sdxl_tensor_2d(cat, SDXL_DTYPE_F32, B, nt + na);
        lin_check_mlp(be, wf, "add_embedding", &tc, &ae);
        sdxl_free(cat);
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
    sdxl_st_close(wf);
    sdxl_st_close(af);
}
