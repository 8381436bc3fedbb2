/* Tests of the CPU conv2d op (src/backend/cpu/conv2d.c: implicit-im2col GEMM):
 * double-precision references of the naive formula for 3x3 stride 1 pad 1,
 * 3x3 stride 2 pad 1, 3x3 stride 2 pad (0,1,0,1) (VAE downsampler), 1x1
 * (the direct GEMM path), a general rectangular kernel with asymmetric
 * strides and padding, and shapes crossing the GEMM's block sizes; f32/f16/
 * bf16 weights; every ISA level this CPU has; hand-worked cases (a delta
 * kernel shifts the image); errors; and diffusers' conv_in, conv_out and
 * downsampler of the tiny SDXL UNet.
 *
 * Tolerance: as for linear (test_linear.c), the sum of K = Cin·KH·KW products
 * plus the bias in f32: |y - ref| <= (K + 2)·2^-24·(sum|x w| + |b|), the
 * worst-case bound for any summation order. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "io/safetensors.h"
#include "test.h"

static sdxl_backend *conv_backend(void) {
    sdxl_backend_params p = sdxl_backend_default_params();
    p.n_threads = 2;
    sdxl_error err;
    return sdxl_backend_create(&p, &err);
}

static uint64_t conv_rng;
static float conv_rand(void) { /* uniform [-1, 1) */
    conv_rng = conv_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(conv_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static const sdxl_isa_level CONV_ISAS[] = {SDXL_ISA_GENERIC, SDXL_ISA_AVX2, SDXL_ISA_AVX512};

static bool conv_use_isa(sdxl_isa_level l) {
    sdxl_cpu_set_max_isa(l);
    return sdxl_cpu_isa() == l;
}

typedef struct conv_case {
    int64_t B, Cin, H, W, Cout, KH, KW;
    sdxl_conv2d_params p;
} conv_case;

static int64_t conv_out_dim(int64_t n, int pa, int pb, int64_t k, int s) { return (n + pa + pb - k) / s + 1; }

static void conv_check(sdxl_backend *be, const conv_case *c, sdxl_dtype wt, bool bias, const char *isa) {
    const int64_t Ho = conv_out_dim(c->H, c->p.pad_top, c->p.pad_bottom, c->KH, c->p.stride_h);
    const int64_t Wo = conv_out_dim(c->W, c->p.pad_left, c->p.pad_right, c->KW, c->p.stride_w);
    const int64_t nx = c->B * c->Cin * c->H * c->W, nw = c->Cout * c->Cin * c->KH * c->KW;
    const int64_t ny = c->B * c->Cout * Ho * Wo;
    float *x = sdxl_malloc((size_t)nx * 4), *wf = sdxl_malloc((size_t)nw * 4), *bf = sdxl_malloc((size_t)c->Cout * 4);
    float *y = sdxl_malloc((size_t)ny * 4);
    for (int64_t i = 0; i < nx; i++) x[i] = conv_rand();
    for (int64_t i = 0; i < nw; i++) wf[i] = conv_rand();
    for (int64_t i = 0; i < c->Cout; i++) bf[i] = conv_rand();
    void *w = sdxl_malloc((size_t)nw * sdxl_dtype_size(wt));
    sdxl_convert_n(wf, SDXL_DTYPE_F32, w, wt, (size_t)nw);
    sdxl_convert_n(w, wt, wf, SDXL_DTYPE_F32, (size_t)nw); /* the values the kernel sees */
    for (int64_t i = 0; i < ny; i++) y[i] = NAN;
    sdxl_tensor tx = sdxl_tensor_4d(x, SDXL_DTYPE_F32, c->B, c->Cin, c->H, c->W);
    sdxl_tensor tw = sdxl_tensor_4d(w, wt, c->Cout, c->Cin, c->KH, c->KW);
    sdxl_tensor tb = sdxl_tensor_1d(bf, SDXL_DTYPE_F32, c->Cout);
    sdxl_tensor ty = sdxl_tensor_4d(y, SDXL_DTYPE_F32, c->B, c->Cout, Ho, Wo);
    sdxl_status st = be->ops->conv2d(be, &tx, &tw, bias ? &tb : NULL, &c->p, &ty);
    CHECK_MSG(st == SDXL_STATUS_OK, "conv2d: %s", sdxl_backend_last_error(be));
    int bad = 0;
    const double K = (double)(c->Cin * c->KH * c->KW);
    for (int64_t n = 0; n < c->B && st == SDXL_STATUS_OK; n++)
        for (int64_t co = 0; co < c->Cout; co++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    double ref = bias ? bf[co] : 0.0, mag = fabs(ref);
                    for (int64_t ci = 0; ci < c->Cin; ci++)
                        for (int64_t kh = 0; kh < c->KH; kh++)
                            for (int64_t kw = 0; kw < c->KW; kw++) {
                                int64_t ih = oh * c->p.stride_h - c->p.pad_top + kh;
                                int64_t iw = ow * c->p.stride_w - c->p.pad_left + kw;
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                double pr = (double)x[((n * c->Cin + ci) * c->H + ih) * c->W + iw] *
                                            wf[((co * c->Cin + ci) * c->KH + kh) * c->KW + kw];
                                ref += pr;
                                mag += fabs(pr);
                            }
                    double got = y[((n * c->Cout + co) * Ho + oh) * Wo + ow];
                    double tol = (K + 2) * ldexp(1.0, -24) * mag + 1e-30;
                    if (!(fabs(got - ref) <= tol) && bad++ < 3)
                        sdxl_test_fail(__FILE__, __LINE__,
                                       "conv isa %s x[%lld,%lld,%lld,%lld] w %s[%lld,%lld,%lld,%lld] s(%d,%d) "
                                       "p(%d,%d,%d,%d): y[%lld,%lld,%lld,%lld] = %.9g, want %.9g",
                                       isa, (long long)c->B, (long long)c->Cin, (long long)c->H, (long long)c->W,
                                       sdxl_dtype_name(wt), (long long)c->Cout, (long long)c->Cin, (long long)c->KH,
                                       (long long)c->KW, c->p.stride_h, c->p.stride_w, c->p.pad_top,
                                       c->p.pad_bottom, c->p.pad_left, c->p.pad_right, (long long)n, (long long)co,
                                       (long long)oh, (long long)ow, got, ref);
                }
    sdxl_free(x);
    sdxl_free(wf);
    sdxl_free(bf);
    sdxl_free(y);
    sdxl_free(w);
}

TEST(conv2d_matches_double_reference_all_isas) {
    sdxl_backend *be = conv_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    static const conv_case cases[] = {
        /* B Cin H  W Cout KH KW  {sh sw pt pb pl pr} */
        {2, 3, 7, 9, 5, 3, 3, {1, 1, 1, 1, 1, 1}},   /* 3x3 same */
        {1, 4, 9, 8, 6, 3, 3, {2, 2, 1, 1, 1, 1}},   /* 3x3 stride 2 pad 1 (UNet downsampler) */
        {1, 3, 8, 8, 5, 3, 3, {2, 2, 0, 1, 0, 1}},   /* VAE downsampler: pad (0,1,0,1) */
        {1, 3, 7, 7, 4, 3, 3, {2, 2, 0, 1, 0, 1}},   /* same, odd size */
        {2, 17, 5, 6, 9, 1, 1, {1, 1, 0, 0, 0, 0}},  /* 1x1: direct GEMM */
        {1, 5, 6, 7, 3, 1, 1, {2, 2, 0, 0, 0, 0}},   /* 1x1 stride 2 */
        {1, 2, 11, 10, 3, 5, 3, {2, 1, 2, 0, 1, 3}}, /* general */
        {1, 1, 1, 1, 1, 3, 3, {1, 1, 1, 1, 1, 1}},   /* one pixel */
        {1, 20, 9, 10, 30, 3, 3, {1, 1, 1, 1, 1, 1}}, /* Cout over micro-tile rows */
        {1, 48, 5, 6, 16, 3, 3, {1, 1, 1, 1, 1, 1}},  /* K = 432: two KC blocks */
        {1, 2, 65, 65, 3, 3, 3, {1, 1, 1, 1, 1, 1}},  /* 4225 pixels: two NC blocks */
        {1, 64, 65, 65, 3, 3, 3, {1, 1, 1, 1, 1, 1}}, /* two NC blocks x two KC blocks (K = 576) */
    };
    const sdxl_dtype wts[] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16};
    for (size_t k = 0; k < sizeof CONV_ISAS / sizeof CONV_ISAS[0]; k++) {
        if (!conv_use_isa(CONV_ISAS[k])) continue;
        conv_rng = 11;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            for (int t = 0; t < 3; t++)
                if (t == 0 || i < 8) conv_check(be, &cases[i], wts[t], (i + t) % 2 == 0, sdxl_isa_name(CONV_ISAS[k]));
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
}

/* A 3x3 kernel that is 1 at (kh, kw) = (2, 0), pad 1: y[oh][ow] = x[oh+1][ow-1]
 * (zero where that falls outside), exactly; per channel pair (c -> c). */
TEST(conv2d_delta_kernel_shifts_image) {
    sdxl_backend *be = conv_backend();
    REQUIRE(be);
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    enum { C = 3, H = 6, W = 7 };
    float x[C * H * W], w[C * C * 9] = {0}, y[C * H * W];
    for (int i = 0; i < C * H * W; i++) x[i] = (float)(i + 1);
    for (int c = 0; c < C; c++) w[((c * C + c) * 3 + 2) * 3 + 0] = 1.0f;
    sdxl_conv2d_params p = {1, 1, 1, 1, 1, 1};
    sdxl_tensor tx = sdxl_tensor_4d(x, SDXL_DTYPE_F32, 1, C, H, W), tw = sdxl_tensor_4d(w, SDXL_DTYPE_F32, C, C, 3, 3);
    sdxl_tensor ty = sdxl_tensor_4d(y, SDXL_DTYPE_F32, 1, C, H, W);
    for (size_t k = 0; k < sizeof CONV_ISAS / sizeof CONV_ISAS[0]; k++) {
        if (!conv_use_isa(CONV_ISAS[k])) continue;
        REQUIRE_OK(be->ops->conv2d(be, &tx, &tw, NULL, &p, &ty), &be->err);
        int bad = 0;
        for (int c = 0; c < C; c++)
            for (int h = 0; h < H; h++)
                for (int ww = 0; ww < W; ww++) {
                    float want = h + 1 < H && ww - 1 >= 0 ? x[(c * H + h + 1) * W + ww - 1] : 0.0f;
                    bad += y[(c * H + h) * W + ww] != want;
                }
        CHECK_MSG(bad == 0, "delta conv: %d pixels wrong (isa %s)", bad, sdxl_isa_name(CONV_ISAS[k]));
    }
    /* 1x1 identity with a bias: y = x + b */
    float w1[C * C] = {0}, b[C] = {10, 20, 30};
    for (int c = 0; c < C; c++) w1[c * C + c] = 1.0f;
    sdxl_conv2d_params p1 = {1, 1, 0, 0, 0, 0};
    sdxl_tensor tw1 = sdxl_tensor_4d(w1, SDXL_DTYPE_F32, C, C, 1, 1), tb = sdxl_tensor_1d(b, SDXL_DTYPE_F32, C);
    REQUIRE_OK(be->ops->conv2d(be, &tx, &tw1, &tb, &p1, &ty), &be->err);
    int bad = 0;
    for (int i = 0; i < C * H * W; i++) bad += y[i] != x[i] + b[i / (H * W)];
    CHECK_MSG(bad == 0, "1x1 identity conv: %d values wrong", bad);
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
}

TEST(conv2d_rejects_bad_shapes_and_dtypes) {
    sdxl_backend *be = conv_backend();
    REQUIRE(be);
    static float buf[8192];
    sdxl_conv2d_params p = {1, 1, 1, 1, 1, 1};
    sdxl_tensor x = sdxl_tensor_4d(buf, SDXL_DTYPE_F32, 1, 4, 8, 8);
    sdxl_tensor w = sdxl_tensor_4d(buf + 1000, SDXL_DTYPE_F32, 6, 5, 3, 3); /* Cin 5 != 4 */
    sdxl_tensor y = sdxl_tensor_4d(buf + 2000, SDXL_DTYPE_F32, 1, 6, 8, 8);
    CHECK_EQ_INT(be->ops->conv2d(be, &x, &w, NULL, &p, &y), SDXL_STATUS_INVALID_ARG);
    const char *msg = sdxl_backend_last_error(be);
    CHECK_MSG(strstr(msg, "conv2d") && strstr(msg, "f32[1,4,8,8]") && strstr(msg, "f32[6,5,3,3]"), "message: %s", msg);

    sdxl_tensor w4 = sdxl_tensor_4d(buf + 1000, SDXL_DTYPE_F32, 6, 4, 3, 3);
    sdxl_tensor ybad = sdxl_tensor_4d(buf + 2000, SDXL_DTYPE_F32, 1, 6, 4, 4); /* stride 1 keeps 8x8 */
    CHECK_EQ_INT(be->ops->conv2d(be, &x, &w4, NULL, &p, &ybad), SDXL_STATUS_INVALID_ARG);
    msg = sdxl_backend_last_error(be);
    CHECK_MSG(strstr(msg, "[1,6,8,8]") != NULL, "message: %s", msg);

    sdxl_conv2d_params p2 = {2, 2, 0, 1, 0, 1}; /* (8 + 1 - 3) / 2 + 1 = 4 */
    REQUIRE_OK(be->ops->conv2d(be, &x, &w4, NULL, &p2, &ybad), &be->err);

    sdxl_conv2d_params p0 = {0, 1, 1, 1, 1, 1};
    CHECK_EQ_INT(be->ops->conv2d(be, &x, &w4, NULL, &p0, &y), SDXL_STATUS_INVALID_ARG);
    sdxl_conv2d_params pn = {1, 1, -1, 1, 1, 1};
    CHECK_EQ_INT(be->ops->conv2d(be, &x, &w4, NULL, &pn, &y), SDXL_STATUS_INVALID_ARG);

    sdxl_tensor wbig = sdxl_tensor_4d(buf + 1000, SDXL_DTYPE_F32, 6, 4, 11, 11); /* 11 > 8 + 2 */
    CHECK_EQ_INT(be->ops->conv2d(be, &x, &wbig, NULL, &p, &y), SDXL_STATUS_INVALID_ARG);

    sdxl_tensor bbad = sdxl_tensor_1d(buf + 5000, SDXL_DTYPE_F32, 5);
    CHECK_EQ_INT(be->ops->conv2d(be, &x, &w4, &bbad, &p, &y), SDXL_STATUS_INVALID_ARG);

    sdxl_tensor x3 = sdxl_tensor_3d(buf, SDXL_DTYPE_F32, 4, 8, 8);
    CHECK_EQ_INT(be->ops->conv2d(be, &x3, &w4, NULL, &p, &y), SDXL_STATUS_INVALID_ARG);

    sdxl_tensor xh = sdxl_tensor_4d(buf, SDXL_DTYPE_F16, 1, 4, 8, 8);
    CHECK_EQ_INT(be->ops->conv2d(be, &xh, &w4, NULL, &p, &y), SDXL_STATUS_UNSUPPORTED);
    sdxl_tensor wi = sdxl_tensor_4d(buf + 1000, SDXL_DTYPE_I32, 6, 4, 3, 3);
    CHECK_EQ_INT(be->ops->conv2d(be, &x, &wi, NULL, &p, &y), SDXL_STATUS_UNSUPPORTED);

    CHECK_EQ_INT(be->ops->conv2d(be, &x, &w4, NULL, NULL, &y), SDXL_STATUS_INVALID_ARG);
    sdxl_tensor yx = sdxl_tensor_4d(buf + 100, SDXL_DTYPE_F32, 1, 6, 8, 8); /* overlaps x */
    CHECK_EQ_INT(be->ops->conv2d(be, &x, &w4, NULL, &p, &yx), SDXL_STATUS_INVALID_ARG);
    sdxl_backend_free(be);
}

TEST(conv2d_scratch_oom) {
    sdxl_backend *be = conv_backend();
    REQUIRE(be);
    static float x[4 * 10 * 10], w[8 * 4 * 9], y[8 * 10 * 10];
    sdxl_conv2d_params p = {1, 1, 1, 1, 1, 1};
    sdxl_tensor tx = sdxl_tensor_4d(x, SDXL_DTYPE_F32, 1, 4, 10, 10), tw = sdxl_tensor_4d(w, SDXL_DTYPE_F32, 8, 4, 3, 3);
    sdxl_tensor ty = sdxl_tensor_4d(y, SDXL_DTYPE_F32, 1, 8, 10, 10);
    sdxl__alloc_fail_at(1);
    sdxl_status st = be->ops->conv2d(be, &tx, &tw, NULL, &p, &ty);
    sdxl__alloc_fail_at(0);
    CHECK_EQ_INT(st, SDXL_STATUS_OUT_OF_MEMORY);
    CHECK_MSG(strstr(sdxl_backend_last_error(be), "conv2d") != NULL, "message: %s", sdxl_backend_last_error(be));
    REQUIRE_OK(be->ops->conv2d(be, &tx, &tw, NULL, &p, &ty), &be->err);
    sdxl_backend_free(be);
}

/* ---- diffusers reference ---------------------------------------------------------- */

/* Look up `name` in f as an engine tensor; NULL-safe failure reporting. */
static bool conv_view(const sdxl_st_file *f, const char *name, sdxl_tensor *out) {
    sdxl_error err = {0};
    const sdxl_st_tensor *e = sdxl_st_find(f, name);
    bool ok = e && sdxl_st_view(f, e, out, &err) == SDXL_STATUS_OK;
    CHECK_MSG(ok, "tensor %s: %s", name, e ? err.msg : "missing");
    return ok;
}

/* conv_in(in.sample) = act.conv_in; conv_out(SiLU(act.conv_norm_out)) = act.conv_out;
 * down_blocks.0.downsamplers.0.conv(act.down_blocks.0.res_samples.1) = act.down_blocks.0
 * (3x3 stride 2 pad 1). Tolerance: 1e-4 absolute or 1e-4 of max|ref| (torch fp32
 * accumulates in another order). */
TEST(conv2d_tiny_unet_diffusers) {
    sdxl_error err_ = {0}, *err = &err_;
    sdxl_st_file *wf = NULL, *af = NULL;
    REQUIRE_OK(sdxl_st_open(sdxl_test_data("refs/tiny-sdxl/unet/diffusion_pytorch_model.safetensors"), &wf, err), err);
    sdxl_status st = sdxl_st_open(sdxl_test_data("refs/tiny-sdxl-ref/unet_forward.safetensors"), &af, err);
    if (st != SDXL_STATUS_OK) sdxl_st_close(wf);
    REQUIRE_OK(st, err);
    sdxl_backend *be = conv_backend();
    const sdxl_isa_level isa0 = sdxl_cpu_max_isa();
    static const struct {
        const char *in, *w, *b, *ref;
        bool silu;
        int stride;
    } cases[] = {
        {"in.sample", "conv_in.weight", "conv_in.bias", "act.conv_in", false, 1},
        {"act.conv_norm_out", "conv_out.weight", "conv_out.bias", "act.conv_out", true, 1},
        {"act.down_blocks.0.res_samples.1", "down_blocks.0.downsamplers.0.conv.weight",
         "down_blocks.0.downsamplers.0.conv.bias", "act.down_blocks.0", false, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] && be; i++) {
        sdxl_tensor tin, tw, tb, tref;
        if (!conv_view(af, cases[i].in, &tin) || !conv_view(wf, cases[i].w, &tw) || !conv_view(wf, cases[i].b, &tb) ||
            !conv_view(af, cases[i].ref, &tref))
            continue;
        const int64_t nin = sdxl_tensor_nelem(&tin), nref = sdxl_tensor_nelem(&tref);
        float *x = sdxl_malloc((size_t)nin * 4), *y = sdxl_malloc((size_t)nref * 4);
        memcpy(x, tin.data, (size_t)nin * 4);
        if (cases[i].silu)
            for (int64_t j = 0; j < nin; j++) x[j] = x[j] / (1.0f + expf(-x[j]));
        sdxl_tensor tx = tin, ty = tref;
        tx.data = x;
        ty.data = y;
        sdxl_conv2d_params p = {cases[i].stride, cases[i].stride, 1, 1, 1, 1};
        const float *ref = tref.data;
        float rmax = 0;
        for (int64_t j = 0; j < nref; j++) rmax = fmaxf(rmax, fabsf(ref[j]));
        for (size_t k = 0; k < sizeof CONV_ISAS / sizeof CONV_ISAS[0]; k++) {
            if (!conv_use_isa(CONV_ISAS[k])) continue;
            for (int64_t j = 0; j < nref; j++) y[j] = NAN;
            st = be->ops->conv2d(be, &tx, &tw, &tb, &p, &ty);
            CHECK_MSG(st == SDXL_STATUS_OK, "%s: %s", cases[i].ref, sdxl_backend_last_error(be));
            double d = sdxl_test_max_abs_diff(y, ref, (long)nref);
            CHECK_MSG(d <= fmax(1e-4, 1e-4 * rmax), "%s isa %s: max |diff| %.3g (max|ref| %.3g)", cases[i].ref,
                      sdxl_isa_name(CONV_ISAS[k]), d, (double)rmax);
        }
        sdxl_free(x);
        sdxl_free(y);
    }
    sdxl_cpu_set_max_isa(isa0);
    sdxl_backend_free(be);
    sdxl_st_close(wf);
    sdxl_st_close(af);
}
