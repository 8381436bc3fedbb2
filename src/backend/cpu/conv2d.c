/* conv2d.c - 2-D convolution (NCHW) as a GEMM with implicit im2col.
 *
 * Per image:  y[Cout, Ho·Wo] = w[Cout, Cin·KH·KW] · col[Cin·KH·KW, Ho·Wo] + b
 * where col(k = (ci·KH + kh)·KW + kw, p = oh·Wo + ow) = x[ci, oh·sh - pt + kh, ow·sw - pl + kw]
 * (zero outside the image). The GEMM engine (gemm.h) asks for col one packed
 * sliver at a time ([KC][NR] values, ~32 KiB), and the packer below builds
 * it straight from x; so no im2col matrix exists (at 128x128 with Cin 320 it
 * would be 188 MB) and the scratch stays at the engine's KC x NC block.
 * A 1x1 stride-1 unpadded convolution is a plain GEMM over x [Cin, H·W]:
 * its packer copies rows. Weights of any float dtype are widened while the
 * engine packs them.
 */
#include <string.h>

#include "backend/cpu/gemm.h"

typedef struct im2col_ctx {
    const float *x; /* one image [Cin, H, W] */
    int64_t H, W, KH, KW, Wo;
    int64_t sh, sw, pt, pl;
} im2col_ctx;

/* dst[k][j] = col(k0 + k, n0 + j) for k < kc, j < nr; zero for j >= nr (row stride ldd).
 * The sliver's pixels split into runs within one output row; they are found once
 * (no division per k) and then copied for each k from the input row they read. */
static void pack_b_im2col(const sdxl__gemm_isa *isa, const void *ctxp, int64_t k0, int64_t kc, int64_t n0,
                          int64_t nr, int ldd, float *dst) {
    const im2col_ctx *c = ctxp;
    enum { MAX_RUNS = 64 };
    int64_t run_oh[MAX_RUNS], run_ow[MAX_RUNS], run_j[MAX_RUNS], run_len[MAX_RUNS];
    int n_runs = 0;
    for (int64_t j = 0, oh = n0 / c->Wo, ow = n0 % c->Wo; j < nr && n_runs < MAX_RUNS; n_runs++) {
        int64_t len = c->Wo - ow < nr - j ? c->Wo - ow : nr - j;
        run_oh[n_runs] = oh;
        run_ow[n_runs] = ow;
        run_j[n_runs] = j;
        run_len[n_runs] = len;
        j += len;
        ow = 0;
        oh++;
    }
    const int64_t KHW = c->KH * c->KW;
    int64_t ci = k0 / KHW, kh = (k0 % KHW) / c->KW, kw = k0 % c->KW;
    for (int64_t k = 0; k < kc; k++) {
        float *d = dst + k * ldd; /* (ldd) */
        const float *xc = c->x + ci * c->H * c->W; /* channel ci [H, W] */
        for (int r = 0; r < n_runs; r++) {
            float *dr = d + run_j[r];
            const int64_t run = run_len[r];
            const int64_t ih = run_oh[r] * c->sh - c->pt + kh;
            if (ih < 0 || ih >= c->H) {
                for (int64_t t = 0; t < run; t++) dr[t] = 0.0f;
                continue;
            }
            const float *xr = xc + ih * c->W; /* input row [W] */
            const int64_t iw0 = run_ow[r] * c->sw - c->pl + kw;
            if (c->sw == 1) {
                /* iw = iw0 + t for t < run; valid where 0 <= iw < W */
                int64_t t0 = iw0 < 0 ? -iw0 : 0, t1 = c->W - iw0;
                if (t0 > run) t0 = run;
                if (t1 > run) t1 = run;
                if (t1 < t0) t1 = t0;
                if (run == 32 && t0 == 0 && t1 == 32) { /* the common case: an inlined 128-byte copy */
                    memcpy(dr, xr + iw0, 32 * sizeof(float));
                    continue;
                }
                for (int64_t t = 0; t < t0; t++) dr[t] = 0.0f;
                for (int64_t t = t0; t < t1; t++) dr[t] = xr[iw0 + t];
                for (int64_t t = t1; t < run; t++) dr[t] = 0.0f;
            } else {
                for (int64_t t = 0; t < run; t++) {
                    const int64_t iw = iw0 + t * c->sw;
                    dr[t] = iw >= 0 && iw < c->W ? xr[iw] : 0.0f;
                }
            }
        }
        for (int64_t j = nr; j < ldd; j++) d[j] = 0.0f;
        if (++kw == c->KW) {
            kw = 0;
            if (++kh == c->KH) {
                kh = 0;
                ci++;
            }
        }
    }
}

static int is_float(sdxl_dtype t) {
    return t == SDXL_DTYPE_F32 || t == SDXL_DTYPE_F16 || t == SDXL_DTYPE_BF16;
}

static int overlaps(const sdxl_tensor *a, const sdxl_tensor *b) {
    uintptr_t a0 = (uintptr_t)a->data, a1 = a0 + sdxl_tensor_nbytes(a);
    uintptr_t b0 = (uintptr_t)b->data, b1 = b0 + sdxl_tensor_nbytes(b);
    return a0 < b1 && b0 < a1;
}

sdxl_status sdxl__cpu_conv2d(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w,
                             const sdxl_tensor *b, const sdxl_conv2d_params *p, sdxl_tensor *y) {
    char dx[96], dw[96], db[96], dy[96];
    if (!x || !w || !y || !p)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "conv2d: x, w, params and y must not be NULL");
    sdxl_tensor_describe(x, dx, sizeof dx);
    sdxl_tensor_describe(w, dw, sizeof dw);
    sdxl_tensor_describe(y, dy, sizeof dy);
    if (x->dtype != SDXL_DTYPE_F32 || y->dtype != SDXL_DTYPE_F32)
        return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "conv2d: x %s and y %s must be f32", dx, dy);
    if (!is_float(w->dtype))
        return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "conv2d: w %s must be f32, f16 or bf16", dw);
    if (x->ndim != 4 || w->ndim != 4 || y->ndim != 4)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "conv2d: x %s, w %s and y %s must be 4-D (NCHW, [Cout,Cin,KH,KW])", dx, dw, dy);
    const int64_t B = x->ne[0], Cin = x->ne[1], H = x->ne[2], W = x->ne[3];
    const int64_t Cout = w->ne[0], KH = w->ne[2], KW = w->ne[3];
    if (w->ne[1] != Cin)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "conv2d: x %s has %lld channels but w %s expects %lld",
                              dx, (long long)Cin, dw, (long long)w->ne[1]);
    if (p->stride_h < 1 || p->stride_w < 1 || p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 ||
        p->pad_right < 0)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "conv2d: stride (%d,%d) must be >= 1 and padding (%d,%d,%d,%d) >= 0", p->stride_h,
                              p->stride_w, p->pad_top, p->pad_bottom, p->pad_left, p->pad_right);
    const int64_t Hp = H + p->pad_top + p->pad_bottom, Wp = W + p->pad_left + p->pad_right;
    if (KH < 1 || KW < 1 || Hp < KH || Wp < KW)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "conv2d: kernel of w %s does not fit x %s padded by (%d,%d,%d,%d)", dw, dx,
                              p->pad_top, p->pad_bottom, p->pad_left, p->pad_right);
    const int64_t Ho = (Hp - KH) / p->stride_h + 1, Wo = (Wp - KW) / p->stride_w + 1;
    if (y->ne[0] != B || y->ne[1] != Cout || y->ne[2] != Ho || y->ne[3] != Wo)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "conv2d: y %s should be [%lld,%lld,%lld,%lld] for x %s, w %s, stride (%d,%d), "
                              "padding (%d,%d,%d,%d)",
                              dy, (long long)B, (long long)Cout, (long long)Ho, (long long)Wo, dx, dw, p->stride_h,
                              p->stride_w, p->pad_top, p->pad_bottom, p->pad_left, p->pad_right);
    if (b) {
        sdxl_tensor_describe(b, db, sizeof db);
        if (!is_float(b->dtype))
            return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "conv2d: bias %s must be f32, f16 or bf16", db);
        if (b->ndim != 1 || b->ne[0] != Cout)
            return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "conv2d: bias %s does not match w %s (expected [%lld])",
                                  db, dw, (long long)Cout);
    }
    if (x->device != SDXL_DEVICE_CPU || w->device != SDXL_DEVICE_CPU || y->device != SDXL_DEVICE_CPU ||
        (b && b->device != SDXL_DEVICE_CPU))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "conv2d: tensors must be in CPU memory");
    if (sdxl_tensor_nelem(y) > 0 && (overlaps(y, x) || overlaps(y, w) || (b && overlaps(y, b))))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "conv2d: y %s must not overlap its inputs", dy);

    const int64_t K = Cin * KH * KW, P = Ho * Wo;
    const int direct = KH == 1 && KW == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 &&
                       p->pad_bottom == 0 && p->pad_left == 0 && p->pad_right == 0;
    for (int64_t n = 0; n < B; n++) {
        const float *xn = (const float *)x->data + n * Cin * H * W; /* [Cin, H, W] */
        float *yn = (float *)y->data + n * Cout * P;                /* [Cout, Ho, Wo] */
        im2col_ctx ic = {xn, H, W, KH, KW, Wo, p->stride_h, p->stride_w, p->pad_top, p->pad_left};
        sdxl__gemm_b_rows rows = {xn, H * W};
        sdxl__gemm g = {
            .M = Cout, .N = P, .K = K,
            .a = w->data, .a_dtype = w->dtype, .lda = K,
            .pack_b = direct ? sdxl__gemm_pack_b_rows : pack_b_im2col,
            .b_ctx = direct ? (const void *)&rows : (const void *)&ic,
            .bias = b ? b->data : NULL, .bias_dtype = b ? b->dtype : SDXL_DTYPE_F32, .bias_per_row = 1,
            .c = yn, .ldc = P,
        };
        sdxl_status st = sdxl__gemm_run(sdxl__cpu(be), "conv2d", &g);
        if (st != SDXL_STATUS_OK) return st;
    }
    return SDXL_STATUS_OK;
}
