/* linear.c - the GEMM engine (gemm.h) and the linear op.
 *
 * Why our own GEMM rather than OpenBLAS's sgemm (bench/ops.c, 2-core Xeon
 * with AVX-512, 2 threads, FMA peak ~350 GFLOP/s): Debian's OpenBLAS 0.3.21
 * does not recognise this CPU and runs its "Prescott" (SSE3) kernels, 64
 * GFLOP/s on 4096x1280x5120 (18% of peak); the AVX-512 micro-kernel here
 * does 304 GFLOP/s (87%), 4.7x faster. With OPENBLAS_CORETYPE=SkylakeX forced,
 * OpenBLAS and this engine are level (307 vs 303 GFLOP/s on 4096x640x640), so
 * nothing is gained by calling it even when it detects the CPU right. Owning
 * the loops also lets f16/bf16 weights be widened while they are packed: no
 * f32 copy of the weight and the same speed as f32 (widen-into-scratch +
 * sgemm costs a pass over the weight; 1.3-1.5x slower at M = 154), lets
 * conv2d generate its im2col panels on the fly, and keeps every kernel
 * variant testable on one machine.
 *
 * Blocking: B blocks of KC x NC are packed once (in parallel) and shared.
 * Each task packs MC rows of A (in L2) and walks chunks of ~384 KiB of B
 * slivers (L2): one A sliver ([KC][MR], 28 KiB) stays in L1 while the tile
 * moves along a row of C, so each C row segment is walked left to right
 * (a convolution's C rows lie 64 KiB apart: going down a column instead cost
 * TLB misses: 136 -> 142 GFLOP/s per core for conv, 147 -> 156 for linear).
 * With M <= 8 rows (time embeddings, batch-sized inputs) packing w would
 * cost more than the product: a GEMV kernel reads each weight row once. */
#include <stdint.h>
#include <string.h>

#include "backend/cpu/gemm.h"
#include "core/dtype.h"

/* Measured on the 2-core AVX-512 machine (single thread, GFLOP per CPU second,
 * 4096x1280x5120 / 4096x640x640 / conv 320->320 at 128x128): KC 256: 155/156/141,
 * KC 512: 156/155/142, KC 1024 (MC 252): 158/157/128. */
#define KC_MAX 512  /* depth of a packed block */
#define NC_MAX 4096 /* columns of a packed B block: KC_MAX x NC_MAX floats = 8 MiB */
#define MC_TARGET 336 /* rows of A per task: 336 x 512 floats = 672 KiB, in L2 */

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round_up(int64_t a, int64_t b) { return cdiv(a, b) * b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- generic C pieces ----------------------------------------------------- */

void sdxl__gemm_pack_t_generic(const float *src, int64_t ld, int64_t kc, int64_t nr, int NR,
                               float *dst) {
    /* src [nr rows, stride ld][kc] -> dst [kc][NR] */
    for (int64_t j = 0; j < nr; j++) {
        const float *s = src + j * ld;
        for (int64_t k = 0; k < kc; k++) dst[k * NR + j] = s[k];
    }
    for (int64_t j = nr; j < NR; j++)
        for (int64_t k = 0; k < kc; k++) dst[k * NR + j] = 0.0f;
}

#define G_MR 4
#define G_NR 8

/* 4 x 8 tile; plain C the baseline compiler (SSE2) vectorises along j. */
static void ukernel_generic(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                            const float *bias_n, const float *bias_m, int accumulate) {
    float acc[G_MR][G_NR]; /* (MR, NR) */
    for (int i = 0; i < G_MR; i++)
        for (int j = 0; j < G_NR; j++)
            acc[i][j] = accumulate ? c[i * ldc + j]
                                   : (bias_n ? bias_n[j] : 0.0f) + (bias_m ? bias_m[i] : 0.0f);
    for (int64_t k = 0; k < kc; k++) {
        const float *a = ap + k * G_MR, *b = bp + k * G_NR;
        for (int i = 0; i < G_MR; i++)
            for (int j = 0; j < G_NR; j++) acc[i][j] += a[i] * b[j];
    }
    for (int i = 0; i < G_MR; i++)
        for (int j = 0; j < G_NR; j++) c[i * ldc + j] = acc[i][j];
}

/* One weight row at a time, widened in chunks through a stack buffer. */
static void gemv_generic(int64_t M, int64_t K, const float *x, const void *w, sdxl_dtype wt, int64_t n0,
                         int64_t n1, const float *bias, float *y, int64_t ldy) {
    float tmp[256]; /* (256) widened slice of a weight row */
    float acc[SDXL__GEMV_MAX_M];
    const size_t es = sdxl_dtype_size(wt);
    for (int64_t n = n0; n < n1; n++) {
        const char *wr = (const char *)w + (size_t)n * (size_t)K * es;
        for (int64_t m = 0; m < M; m++) acc[m] = 0.0f;
        for (int64_t k0 = 0; k0 < K; k0 += 256) {
            int64_t kn = min64(256, K - k0);
            sdxl_convert_n(wr + (size_t)k0 * es, wt, tmp, SDXL_DTYPE_F32, (size_t)kn);
            for (int64_t m = 0; m < M; m++) {
                const float *xm = x + m * K + k0;
                float s = 0.0f;
                for (int64_t k = 0; k < kn; k++) s += xm[k] * tmp[k];
                acc[m] += s;
            }
        }
        for (int64_t m = 0; m < M; m++) y[m * ldy + n] = acc[m] + (bias ? bias[n] : 0.0f);
    }
}

const sdxl__gemm_isa sdxl__gemm_isa_generic = {G_MR, G_NR, ukernel_generic, sdxl__gemm_pack_t_generic,
                                               gemv_generic};

const sdxl__gemm_isa *sdxl__gemm_isa_for(sdxl_isa_level level) {
    if (level >= SDXL_ISA_AVX512) return &sdxl__gemm_isa_avx512;
    if (level >= SDXL_ISA_AVX2) return &sdxl__gemm_isa_avx2;
    return &sdxl__gemm_isa_generic;
}

/* ---- packers -------------------------------------------------------------- */

/* Like isa->pack_t but from any float dtype: src [nr rows, stride ld][kc] ->
 * dst [kc][NR]. Non-f32 rows are widened through a stack buffer in chunks
 * of WIDEN_K columns. */
#define WIDEN_K 64
static void pack_t_any(const sdxl__gemm_isa *isa, const void *src, sdxl_dtype dt, int64_t ld,
                       int64_t kc, int64_t nr, int NR, float *dst) {
    if (dt == SDXL_DTYPE_F32) {
        isa->pack_t(src, ld, kc, nr, NR, dst);
        return;
    }
    float tmp[32 * WIDEN_K] __attribute__((aligned(64))); /* (nr <= 32, WIDEN_K) */
    const size_t es = sdxl_dtype_size(dt);
    for (int64_t k0 = 0; k0 < kc; k0 += WIDEN_K) {
        int64_t kn = min64(WIDEN_K, kc - k0);
        for (int64_t j = 0; j < nr; j++)
            sdxl_convert_n((const char *)src + (size_t)(j * ld + k0) * es, dt, tmp + j * WIDEN_K,
                           SDXL_DTYPE_F32, (size_t)kn);
        isa->pack_t(tmp, WIDEN_K, kn, nr, NR, dst + k0 * NR);
    }
}

void sdxl__gemm_pack_b_rows(const sdxl__gemm_isa *isa, const void *ctx, int64_t k0, int64_t kc,
                            int64_t n0, int64_t nr, int NR, float *dst) {
    const sdxl__gemm_b_rows *b = ctx;
    for (int64_t k = 0; k < kc; k++) {
        const float *s = b->p + (k0 + k) * b->ld + n0;
        float *d = dst + k * NR;
        memcpy(d, s, (size_t)nr * sizeof(float));
        for (int64_t j = nr; j < NR; j++) d[j] = 0.0f;
    }
}

void sdxl__gemm_pack_b_trans(const sdxl__gemm_isa *isa, const void *ctx, int64_t k0, int64_t kc,
                             int64_t n0, int64_t nr, int NR, float *dst) {
    const sdxl__gemm_b_trans *b = ctx;
    const size_t es = sdxl_dtype_size(b->dtype);
    pack_t_any(isa, (const char *)b->w + (size_t)(n0 * b->ld + k0) * es, b->dtype, b->ld, kc, nr, NR,
               dst);
}

/* ---- the engine ----------------------------------------------------------- */

typedef struct gemm_job {
    const sdxl__gemm *g;
    const sdxl__gemm_isa *isa;
    int64_t mr, nr, mc;
    float *bp;           /* packed B block: n_sl slivers of [kc][nr] */
    float *ap;           /* per thread: mc/mr slivers of [KC_MAX][mr]; stride ap_stride */
    int64_t ap_stride;
    float *tmp;          /* per thread: one (mr, nr) edge tile */
    int64_t *packed_ic;  /* per thread: which A block its ap holds (-1: none) */
    const float *bias_n; /* [round_up(N, nr)] f32 or NULL */
    const float *bias_m; /* [round_up(M, mr)] f32 or NULL */
    /* current (jc, pc) block */
    int64_t jc, ncur, pc, kc;
    int64_t n_sl, n_jg, sl_per_g;
} gemm_job;

static void job_pack_b(void *ctx, size_t begin, size_t end, int thread_index) {
    gemm_job *j = ctx;
    const sdxl__gemm *g = j->g;
    for (size_t s = begin; s < end; s++) {
        int64_t n0 = j->jc + (int64_t)s * j->nr;
        g->pack_b(j->isa, g->b_ctx, j->pc, j->kc, n0, min64(j->nr, g->N - n0), (int)j->nr,
                  j->bp + (int64_t)s * j->kc * j->nr);
    }
}

static void job_compute(void *ctx, size_t begin, size_t end, int ti) {
    gemm_job *j = ctx;
    const sdxl__gemm *g = j->g;
    const int64_t mr = j->mr, nr = j->nr, kc = j->kc;
    const size_t es = sdxl_dtype_size(g->a_dtype);
    float *ap = j->ap + (int64_t)ti * j->ap_stride; /* (mc/mr, kc, mr) */
    float *tmp = j->tmp + (int64_t)ti * mr * nr;    /* (mr, nr) */
    const int accumulate = j->pc > 0;
    for (size_t t = begin; t < end; t++) {
        const int64_t ic = (int64_t)t / j->n_jg, jg = (int64_t)t % j->n_jg;
        const int64_t m0 = ic * j->mc, mcur = min64(j->mc, g->M - m0);
        const int64_t n_ms = cdiv(mcur, mr);
        if (j->packed_ic[ti] != ic) {
            for (int64_t r = 0; r < n_ms; r++) {
                int64_t m = m0 + r * mr;
                pack_t_any(j->isa, (const char *)g->a + (size_t)(m * g->lda + j->pc) * es, g->a_dtype,
                           g->lda, kc, min64(mr, g->M - m), (int)mr, ap + r * kc * mr);
            }
            j->packed_ic[ti] = ic;
        }
        /* Chunks of `sb` B slivers (~384 KiB, in L2); over a chunk one A sliver stays in
         * L1 and each C row segment is walked left to right (one 4 KiB page serves 32
         * tiles: C rows of a convolution lie 64 KiB apart). */
        const int64_t s_beg = jg * j->sl_per_g, s_end = min64(j->n_sl, (jg + 1) * j->sl_per_g);
        const int64_t sb = 393216 / (kc * nr * 4) > 0 ? 393216 / (kc * nr * 4) : 1;
        for (int64_t s0 = s_beg; s0 < s_end; s0 += sb) {
            const int64_t s1 = min64(s_end, s0 + sb);
            for (int64_t r = 0; r < n_ms; r++) {
                const int64_t m = m0 + r * mr, mm = min64(mr, g->M - m);
                const float *as = ap + r * kc * mr;
                const float *bm = j->bias_m ? j->bias_m + m : NULL;
                for (int64_t s = s0; s < s1; s++) {
                    const int64_t n0 = j->jc + s * nr, nn = min64(nr, g->N - n0);
                    const float *bs = j->bp + s * kc * nr;
                    const float *bn = j->bias_n ? j->bias_n + n0 : NULL;
                    float *c = g->c + m * g->ldc + n0;
                    if (mm == mr && nn == nr) {
                        j->isa->kernel(kc, as, bs, c, g->ldc, bn, bm, accumulate);
                        continue;
                    }
                    /* edge tile through tmp (mr, nr) */
                    if (accumulate)
                        for (int64_t i = 0; i < mm; i++) memcpy(tmp + i * nr, c + i * g->ldc, (size_t)nn * 4);
                    j->isa->kernel(kc, as, bs, tmp, nr, bn, bm, accumulate);
                    for (int64_t i = 0; i < mm; i++) memcpy(c + i * g->ldc, tmp + i * nr, (size_t)nn * 4);
                }
            }
        }
    }
}

static float *align16(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

sdxl_status sdxl__gemm_run(sdxl_cpu_backend *be, const char *op, const sdxl__gemm *g) {
    if (g->M <= 0 || g->N <= 0) return SDXL_STATUS_OK;
    const sdxl__gemm_isa *isa = sdxl__gemm_isa_for(sdxl_cpu_isa());
    const int T = be->n_threads > 0 ? be->n_threads : 1;
    gemm_job j = {.g = g, .isa = isa, .mr = isa->mr, .nr = isa->nr};
    j.mc = min64(round_up(MC_TARGET, j.mr), round_up(g->M, j.mr));

    /* K == 0: C = bias (the loops below never run a micro-kernel). */
    const int64_t n_kb = g->K > 0 ? cdiv(g->K, KC_MAX) : 0;
    const int64_t kc_nom = n_kb ? cdiv(g->K, n_kb) : 0; /* balanced blocks, <= KC_MAX */
    const int64_t n_jb = cdiv(g->N, NC_MAX);
    const int64_t nc_nom = round_up(cdiv(g->N, n_jb), j.nr);

    /* scratch layout, floats, each region 64-byte aligned */
    const int64_t n_bp = KC_MAX * nc_nom + 16;
    j.ap_stride = round_up(j.mc * KC_MAX, 16);
    const int64_t n_ap = T * j.ap_stride + 16;
    const int64_t n_tmp = T * j.mr * j.nr + 16;
    const int64_t n_bias = g->bias ? (g->bias_per_row ? round_up(g->M, j.mr) : round_up(g->N, j.nr)) + 16 : 0;
    const int64_t n_ic64 = T + 16; /* int64 slots */
    size_t bytes = (size_t)(n_bp + n_ap + n_tmp + n_bias) * sizeof(float) + (size_t)n_ic64 * 8 + 64;
    float *s = sdxl__cpu_scratch(be, bytes);
    if (!s)
        return sdxl__cpu_fail(&be->base, SDXL_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes of scratch",
                              op, bytes);
    s = align16(s);
    j.bp = s;
    j.ap = align16(s + n_bp);
    j.tmp = align16(j.ap + n_ap);
    float *bias = align16(j.tmp + n_tmp);
    j.packed_ic = (int64_t *)align16(bias + n_bias);
    if (g->bias) {
        int64_t nb = g->bias_per_row ? g->M : g->N;
        sdxl_convert_n(g->bias, g->bias_dtype, bias, SDXL_DTYPE_F32, (size_t)nb);
        for (int64_t i = nb; i < n_bias - 16; i++) bias[i] = 0.0f;
        if (g->bias_per_row)
            j.bias_m = bias;
        else
            j.bias_n = bias;
    }

    if (n_kb == 0) {
        for (int64_t m = 0; m < g->M; m++)
            for (int64_t n = 0; n < g->N; n++)
                g->c[m * g->ldc + n] = (j.bias_n ? j.bias_n[n] : 0.0f) + (j.bias_m ? j.bias_m[m] : 0.0f);
        return SDXL_STATUS_OK;
    }

    const double flops = 2.0 * (double)g->M * (double)g->N * (double)g->K;
    const int serial = T == 1 || flops < 2.0 * 64 * 64 * 64;
    const int64_t n_ic = cdiv(g->M, j.mc);
    for (j.jc = 0; j.jc < g->N; j.jc += nc_nom) {
        j.ncur = min64(nc_nom, g->N - j.jc);
        j.n_sl = cdiv(j.ncur, j.nr);
        /* split the slivers too when there are fewer A blocks than ~4 per thread */
        j.n_jg = serial ? 1 : min64(j.n_sl, cdiv(4 * T, n_ic));
        j.sl_per_g = cdiv(j.n_sl, j.n_jg);
        j.n_jg = cdiv(j.n_sl, j.sl_per_g);
        for (j.pc = 0; j.pc < g->K; j.pc += kc_nom) {
            j.kc = min64(kc_nom, g->K - j.pc);
            for (int t = 0; t < T; t++) j.packed_ic[t] = -1;
            size_t n_tasks = (size_t)(n_ic * j.n_jg);
            sdxl_threadpool_parallel_for(be->pool, (size_t)j.n_sl, serial ? (size_t)j.n_sl : 1,
                                         job_pack_b, &j);
            sdxl_threadpool_parallel_for(be->pool, n_tasks, serial ? n_tasks : 1, job_compute, &j);
        }
    }
    return SDXL_STATUS_OK;
}

/* ---- the op --------------------------------------------------------------- */

static int is_float(sdxl_dtype t) {
    return t == SDXL_DTYPE_F32 || t == SDXL_DTYPE_F16 || t == SDXL_DTYPE_BF16;
}

static int overlaps(const sdxl_tensor *a, const sdxl_tensor *b) {
    uintptr_t a0 = (uintptr_t)a->data, a1 = a0 + sdxl_tensor_nbytes(a);
    uintptr_t b0 = (uintptr_t)b->data, b1 = b0 + sdxl_tensor_nbytes(b);
    return a0 < b1 && b0 < a1;
}

typedef struct gemv_job {
    const sdxl__gemm_isa *isa;
    int64_t M, K;
    const float *x, *bias;
    const void *w;
    sdxl_dtype wt;
    float *y;
    int64_t N;
} gemv_job;

static void gemv_chunk(void *ctx, size_t begin, size_t end, int ti) {
    const gemv_job *j = ctx;
    j->isa->gemv(j->M, j->K, j->x, j->w, j->wt, (int64_t)begin, (int64_t)end, j->bias, j->y, j->N);
}

/* M <= SDXL__GEMV_MAX_M rows: packing w would cost more than the product. */
static sdxl_status linear_gemv(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w,
                               const sdxl_tensor *b, sdxl_tensor *y, int64_t M, int64_t N, int64_t K) {
    sdxl_cpu_backend *c = sdxl__cpu(be);
    float *bias = NULL; /* [N] f32 */
    if (b) {
        bias = sdxl__cpu_scratch(c, (size_t)N * sizeof(float));
        if (!bias)
            return sdxl__cpu_fail(be, SDXL_STATUS_OUT_OF_MEMORY, "linear: cannot allocate %zu bytes of scratch",
                                  (size_t)N * sizeof(float));
        sdxl_convert_n(b->data, b->dtype, bias, SDXL_DTYPE_F32, (size_t)N);
    }
    gemv_job j = {sdxl__gemm_isa_for(sdxl_cpu_isa()), M, K, x->data, bias, w->data, w->dtype, y->data, N};
    /* chunks of >= 64 KiB of weights */
    size_t grain = (size_t)(65536 / (K * (int64_t)sdxl_dtype_size(w->dtype)) + 1);
    sdxl_threadpool_parallel_for(c->pool, (size_t)N, grain, gemv_chunk, &j);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl__cpu_linear(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *w,
                             const sdxl_tensor *b, sdxl_tensor *y) {
    char dx[96], dw[96], db[96], dy[96];
    if (!x || !w || !y)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "linear: x, w and y must not be NULL");
    sdxl_tensor_describe(x, dx, sizeof dx);
    sdxl_tensor_describe(w, dw, sizeof dw);
    sdxl_tensor_describe(y, dy, sizeof dy);
    if (x->dtype != SDXL_DTYPE_F32 || y->dtype != SDXL_DTYPE_F32)
        return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "linear: x %s and y %s must be f32", dx, dy);
    if (!is_float(w->dtype))
        return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "linear: w %s must be f32, f16 or bf16", dw);
    if (x->ndim < 1 || w->ndim != 2)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "linear: x %s must be [..., K] and w %s [N, K]",
                              dx, dw);
    const int64_t K = x->ne[x->ndim - 1], N = w->ne[0];
    if (w->ne[1] != K)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "linear: x %s and w %s: inner dims differ", dx, dw);
    int64_t M = 1; /* rows: all leading dims of x */
    for (int i = 0; i < x->ndim - 1; i++) M *= x->ne[i];
    int y_ok = y->ndim == x->ndim && y->ne[y->ndim - 1] == N;
    for (int i = 0; y_ok && i < x->ndim - 1; i++) y_ok = y->ne[i] == x->ne[i];
    if (!y_ok)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "linear: y %s does not match x %s and w %s (expected [..., %lld])", dy, dx, dw,
                              (long long)N);
    if (b) {
        sdxl_tensor_describe(b, db, sizeof db);
        if (!is_float(b->dtype))
            return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "linear: bias %s must be f32, f16 or bf16", db);
        if (b->ndim != 1 || b->ne[0] != N)
            return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "linear: bias %s does not match w %s (expected [%lld])",
                                  db, dw, (long long)N);
    }
    if (x->device != SDXL_DEVICE_CPU || w->device != SDXL_DEVICE_CPU || y->device != SDXL_DEVICE_CPU ||
        (b && b->device != SDXL_DEVICE_CPU))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "linear: tensors must be in CPU memory");
    if (M * N > 0 && (overlaps(y, x) || overlaps(y, w) || (b && overlaps(y, b))))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "linear: y %s must not overlap its inputs", dy);

    if (M <= SDXL__GEMV_MAX_M && M > 0 && N > 0 && K > 0) return linear_gemv(be, x, w, b, y, M, N, K);

    sdxl__gemm_b_trans bt = {.w = w->data, .dtype = w->dtype, .ld = K};
    sdxl__gemm g = {
        .M = M, .N = N, .K = K,
        .a = x->data, .a_dtype = SDXL_DTYPE_F32, .lda = K,
        .pack_b = sdxl__gemm_pack_b_trans, .b_ctx = &bt,
        .bias = b ? b->data : NULL, .bias_dtype = b ? b->dtype : SDXL_DTYPE_F32, .bias_per_row = 0,
        .c = y->data, .ldc = N,
    };
    return sdxl__gemm_run(sdxl__cpu(be), "linear", &g);
}
