/* bench/ops.c - GFLOP/s of the compute-heavy CPU ops (linear, conv2d,
 * attention) at SDXL sizes, each beside the machine's FMA peak measured in
 * the same run, and beside OpenBLAS doing the same arithmetic.
 *
 *   cmake --build build --target sdxl_bench_ops
 *   build/bench/sdxl_bench_ops [--quick] [--no-peers] [--isa generic|avx2|avx512] [--threads N]
 *
 * Run it when the machine is otherwise idle (the numbers move with every
 * other process on the cores). Default: all CPUs, the best ISA level; ~30 s
 * on 2 idle cores, longer when they are shared (--quick:
 * one shape per op, ~10 s; --no-peers: without the OpenBLAS runs, ~8 s).
 * Each case runs once to warm up, then until it has run >= 3 times and
 * >= 0.5 s (2 times if those take > 2 s; at most 15); the best time is
 * reported (on a shared machine the least disturbed run) with the median.
 *
 * peak  = a register-resident loop of 24 independent FMAs on the widest
 *         vectors of the ISA level, run on all threads at once before, between
 *         and after the groups: the sum over threads of flops / thread CPU
 *         time (so other processes sharing the cores do not lower it; the wall
 *         figure is printed too). Each ratio uses the highest peak seen so
 *         far. On AVX-512 parts with two FMA units that is cores x clock x 64
 *         flops per cycle (here 2 x ~2.7 GHz x 64 = ~350 GFLOP/s).
 * FLOPs: linear 2·M·N·K; conv 2·Cout·Cin·KH·KW·Ho·Wo; attention 4·Tq·Tk·D·heads
 *        (q·kᵀ and p·v; the softmax is not counted).
 * Peers (OpenBLAS, as loaded: its core name is printed; Debian's 0.3.21 picks
 * "Prescott" (SSE3) kernels on CPUs newer than it knows, OPENBLAS_CORETYPE=
 * SkylakeX in the environment overrides that):
 *   linear f32     cblas_sgemm(x, wᵀ) with beta 0 (no bias);
 *   linear f16/bf16  widen w to f32 (sdxl_convert_n) + cblas_sgemm, timed together;
 *   conv           cblas_sgemm on the im2col GEMM shape, im2col itself NOT timed
 *                  (a lower bound for im2col + BLAS);
 *   attention      per head: S = q kᵀ (sgemm), row softmax (expf), o = S v (sgemm),
 *                  with the Tq x Tk matrix materialised (64 MiB per head at 4096).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <immintrin.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- FMA peak ----------------------------------------------------------------- */

#define R8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define R12(X) R8(X) X(8) X(9) X(10) X(11)
#define R24(X) R12(X) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)

typedef struct peak_arg {
    long iters;
    int isa;
} peak_arg;

/* 24 independent FMA chains (more than latency x ports), kept in registers by
 * empty asm statements the compiler cannot see through. Returns flops done. */
__attribute__((target("avx512f,fma"))) static double fma_loop_512(long n) {
    const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
#define D512(i) __m512 a##i = _mm512_set1_ps((float)(i));
    R24(D512)
    for (long k = 0; k < n; k++) {
#define F512(i) a##i = _mm512_fmadd_ps(a##i, b, c);
        R24(F512)
#define K512(i) __asm__ volatile("" : "+v"(a##i));
        R24(K512)
    }
    float s = 0;
#define S512(i) s += _mm512_reduce_add_ps(a##i);
    R24(S512)
    return n * 24.0 * 32.0 + (s == 12345.0f);
}

__attribute__((target("avx2,fma"))) static double fma_loop_256(long n) {
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
#define D256(i) __m256 a##i = _mm256_set1_ps((float)(i));
    R12(D256)
    for (long k = 0; k < n; k++) {
#define F256(i) a##i = _mm256_fmadd_ps(a##i, b, c);
        R12(F256)
#define K256(i) __asm__ volatile("" : "+x"(a##i));
        R12(K256)
    }
    float s = 0;
#define S256(i) s += a##i[0];
    R12(S256)
    return n * 12.0 * 16.0 + (s == 12345.0f);
}

/* SSE2 mul + add (the baseline has no FMA): 2 flops x 4 lanes per pair. */
static double fma_loop_128(long n) {
    __m128 b = _mm_set1_ps(0.999999f), c = _mm_set1_ps(1e-6f);
#define D128(i) __m128 a##i = _mm_set1_ps((float)(i));
    R12(D128)
    for (long k = 0; k < n; k++) {
#define F128(i) a##i = _mm_add_ps(_mm_mul_ps(a##i, b), c);
        R12(F128)
#define K128(i) __asm__ volatile("" : "+x"(a##i));
        R12(K128)
    }
    float s = 0;
#define S128(i) s += _mm_cvtss_f32(a##i);
    R12(S128)
    return n * 12.0 * 8.0 + (s == 12345.0f);
}

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct peak_result {
    double flops, cpu_s;
} peak_result;

static void *peak_thread(void *p) {
    peak_arg *a = p;
    peak_result *r = malloc(sizeof *r);
    if (!r) return NULL;
    double c0 = thread_cpu_s();
    r->flops = a->isa >= SDXL_ISA_AVX512 ? fma_loop_512(a->iters)
               : a->isa >= SDXL_ISA_AVX2 ? fma_loop_256(a->iters)
                                         : fma_loop_128(a->iters);
    r->cpu_s = thread_cpu_s() - c0;
    return r;
}

/* All threads run the loop at once; best of 5. *wall: flops / wall time of the
 * slowest thread. Returned: the sum over threads of flops / that thread's CPU
 * time, i.e. what the cores do while they run our threads, which other
 * processes on a shared machine do not lower (they do lower *wall). */
static double measure_peak(int threads, int isa, double *wall) {
    double best = 0, best_wall = 0;
    for (int r = 0; r < 5; r++) {
        pthread_t th[256];
        peak_arg a = {isa >= SDXL_ISA_AVX512 ? 6000000 : 12000000, isa};
        double t0 = now_s(), flops = 0, rate = 0;
        int started = 0;
        for (int i = 0; i < threads && i < 256; i++) started += pthread_create(&th[started], NULL, peak_thread, &a) == 0;
        for (int i = 0; i < started; i++) {
            void *ret = NULL;
            pthread_join(th[i], &ret);
            peak_result *pr = ret;
            if (pr && pr->cpu_s > 0) {
                flops += pr->flops;
                rate += pr->flops / pr->cpu_s;
            }
            free(pr);
        }
        double w = flops / (now_s() - t0) / 1e9;
        if (w > best_wall) best_wall = w;
        if (rate / 1e9 > best) best = rate / 1e9;
    }
    *wall = best_wall;
    return best;
}

static double g_peak;
static int g_threads, g_isa;

static void update_peak(const char *when) {
    double wall, p = measure_peak(g_threads, g_isa, &wall);
    printf("# FMA peak (%s, %d threads, %s): %.1f GFLOP/s per CPU time, %.1f GFLOP/s wall\n", when, g_threads,
           sdxl_isa_name(g_isa), p, wall);
    if (p > g_peak) g_peak = p;
}

/* ---- timing ------------------------------------------------------------------- */

typedef struct timing {
    double best, median;
    int reps;
} timing;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double g_min_time = 0.5;

static timing time_it(int (*fn)(void *), void *ctx) {
    double t[15];
    int n = 0;
    double total = 0;
    if (fn(ctx)) return (timing){-1, -1, 0}; /* warm-up: scratch grows, pages fault in */
    /* >= 3 runs and >= g_min_time, or 2 runs when they are slow (> 2 s together) */
    while (n < 15 && (n < 2 || (n < 3 && total <= 2.0) || total < g_min_time)) {
        double t0 = now_s();
        if (fn(ctx)) return (timing){-1, -1, 0};
        t[n] = now_s() - t0;
        total += t[n++];
    }
    qsort(t, (size_t)n, sizeof(double), cmp_d);
    return (timing){t[0], t[n / 2], n};
}

static void report(const char *op, const char *shape, const char *variant, double flops, timing own,
                   const char *peer_name, timing peer) {
    if (own.reps == 0) {
        printf("%-9s %-30s %-5s  FAILED\n", op, shape, variant);
        return;
    }
    double g = flops / own.best / 1e9;
    printf("%-9s %-30s %-5s %9.2f ms (med %8.2f) %7.1f GFLOP/s  %4.0f%% of peak", op, shape, variant,
           own.best * 1e3, own.median * 1e3, g, 100.0 * g / g_peak);
    if (peer.reps > 0) {
        double gp = flops / peer.best / 1e9;
        printf(" | %s %9.2f ms %7.1f GFLOP/s %4.0f%%  (own/peer %.2fx)", peer_name, peer.best * 1e3, gp,
               100.0 * gp / g_peak, peer.best / own.best);
    }
    printf("\n");
    fflush(stdout);
}

static void fill(float *p, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(seed >> 11) / 9007199254740992.0 - 0.5);
    }
}

static sdxl_backend *g_be;

/* ---- linear ------------------------------------------------------------------- */

typedef struct lin_ctx {
    sdxl_tensor x, w, b, y;
    const float *wf; /* f32 copy for the peer */
    float *wtmp;     /* peer's widened weights */
    int64_t M, K, N;
} lin_ctx;

static int run_linear(void *p) {
    lin_ctx *c = p;
    return g_be->ops->linear(g_be, &c->x, &c->w, &c->b, &c->y) != SDXL_STATUS_OK;
}

static int run_linear_blas(void *p) {
    lin_ctx *c = p;
    const float *w = c->wf;
    if (c->w.dtype != SDXL_DTYPE_F32) {
        sdxl_convert_n(c->w.data, c->w.dtype, c->wtmp, SDXL_DTYPE_F32, (size_t)(c->N * c->K));
        w = c->wtmp;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->M, (int)c->N, (int)c->K, 1.0f, c->x.data,
                (int)c->K, w, (int)c->K, 0.0f, c->y.data, (int)c->N);
    return 0;
}

static void bench_linear(int64_t M, int64_t K, int64_t N, bool peers) {
    float *x = sdxl_malloc((size_t)(M * K) * 4), *wf = sdxl_malloc((size_t)(N * K) * 4);
    float *b = sdxl_malloc((size_t)N * 4), *y = sdxl_malloc((size_t)(M * N) * 4);
    float *wtmp = sdxl_malloc((size_t)(N * K) * 4);
    uint16_t *wh = sdxl_malloc((size_t)(N * K) * 2);
    if (!x || !wf || !b || !y || !wtmp || !wh) {
        printf("linear: out of memory\n");
        goto done;
    }
    fill(x, (size_t)(M * K), 1);
    fill(wf, (size_t)(N * K), 2);
    fill(b, (size_t)N, 3);
    char shape[64];
    snprintf(shape, sizeof shape, "M=%lld K=%lld N=%lld", (long long)M, (long long)K, (long long)N);
    const sdxl_dtype dts[] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16};
    for (int d = 0; d < 3; d++) {
        void *w = wf;
        if (dts[d] != SDXL_DTYPE_F32) {
            sdxl_convert_n(wf, SDXL_DTYPE_F32, wh, dts[d], (size_t)(N * K));
            w = wh;
        }
        lin_ctx c = {sdxl_tensor_2d(x, SDXL_DTYPE_F32, M, K), sdxl_tensor_2d(w, dts[d], N, K),
                     sdxl_tensor_1d(b, SDXL_DTYPE_F32, N), sdxl_tensor_2d(y, SDXL_DTYPE_F32, M, N), wf, wtmp, M, K, N};
        timing own = time_it(run_linear, &c);
        timing peer = peers ? time_it(run_linear_blas, &c) : (timing){0};
        report("linear", shape, sdxl_dtype_name(dts[d]), 2.0 * M * N * K, own,
               d == 0 ? "openblas sgemm" : "widen+sgemm", peer);
    }
done:
    sdxl_free(x);
    sdxl_free(wf);
    sdxl_free(b);
    sdxl_free(y);
    sdxl_free(wtmp);
    sdxl_free(wh);
}

/* ---- conv2d ------------------------------------------------------------------- */

typedef struct conv_ctx {
    sdxl_tensor x, w, b, y;
    sdxl_conv2d_params p;
    const float *col; /* peer: im2col [Cin·9, H·W] */
    int64_t M, N, K;
} conv_ctx;

static int run_conv(void *p) {
    conv_ctx *c = p;
    return g_be->ops->conv2d(g_be, &c->x, &c->w, &c->b, &c->p, &c->y) != SDXL_STATUS_OK;
}

static int run_conv_blas(void *p) {
    conv_ctx *c = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c->M, (int)c->N, (int)c->K, 1.0f, c->w.data,
                (int)c->K, c->col, (int)c->N, 0.0f, c->y.data, (int)c->N);
    return 0;
}

static void bench_conv(int64_t Cin, int64_t Cout, int64_t H, bool peers) {
    const int64_t W = H, P = H * W, K = Cin * 9;
    float *x = sdxl_malloc((size_t)(Cin * P) * 4), *w = sdxl_malloc((size_t)(Cout * K) * 4);
    float *b = sdxl_malloc((size_t)Cout * 4), *y = sdxl_malloc((size_t)(Cout * P) * 4);
    float *col = peers ? sdxl_malloc((size_t)(K * P) * 4) : NULL;
    if (!x || !w || !b || !y || (peers && !col)) {
        printf("conv2d: out of memory\n");
        goto done;
    }
    fill(x, (size_t)(Cin * P), 4);
    fill(w, (size_t)(Cout * K), 5);
    fill(b, (size_t)Cout, 6);
    if (col) /* im2col for 3x3 pad 1 */
        for (int64_t ci = 0; ci < Cin; ci++)
            for (int64_t kh = 0; kh < 3; kh++)
                for (int64_t kw = 0; kw < 3; kw++) {
                    float *r = col + ((ci * 3 + kh) * 3 + kw) * P;
                    for (int64_t oh = 0; oh < H; oh++)
                        for (int64_t ow = 0; ow < W; ow++) {
                            int64_t ih = oh - 1 + kh, iw = ow - 1 + kw;
                            r[oh * W + ow] = ih >= 0 && ih < H && iw >= 0 && iw < W ? x[(ci * H + ih) * W + iw] : 0.0f;
                        }
                }
    conv_ctx c = {sdxl_tensor_4d(x, SDXL_DTYPE_F32, 1, Cin, H, W), sdxl_tensor_4d(w, SDXL_DTYPE_F32, Cout, Cin, 3, 3),
                  sdxl_tensor_1d(b, SDXL_DTYPE_F32, Cout), sdxl_tensor_4d(y, SDXL_DTYPE_F32, 1, Cout, H, W),
                  {1, 1, 1, 1, 1, 1}, col, Cout, P, K};
    char shape[64];
    snprintf(shape, sizeof shape, "3x3 %lld->%lld %lldx%lld", (long long)Cin, (long long)Cout, (long long)H,
             (long long)W);
    timing own = time_it(run_conv, &c);
    timing peer = peers ? time_it(run_conv_blas, &c) : (timing){0};
    report("conv2d", shape, "f32", 2.0 * Cout * K * P, own, "sgemm (no im2col)", peer);
done:
    sdxl_free(x);
    sdxl_free(w);
    sdxl_free(b);
    sdxl_free(y);
    sdxl_free(col);
}

/* ---- attention ---------------------------------------------------------------- */

typedef struct att_ctx {
    sdxl_tensor q, k, v, o;
    sdxl_attention_params p;
    int64_t Tq, Tk, H, D;
    float *s; /* peer: [Tq, Tk] */
} att_ctx;

static int run_att(void *p) {
    att_ctx *c = p;
    return g_be->ops->attention(g_be, &c->q, &c->k, &c->v, &c->p, &c->o) != SDXL_STATUS_OK;
}

static int run_att_blas(void *p) {
    att_ctx *c = p;
    const int64_t C = c->H * c->D;
    const float *q = c->q.data, *k = c->k.data, *v = c->v.data;
    float *o = c->o.data;
    for (int64_t h = 0; h < c->H; h++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->Tq, (int)c->Tk, (int)c->D, c->p.scale,
                    q + h * c->D, (int)C, k + h * c->D, (int)C, 0.0f, c->s, (int)c->Tk);
        for (int64_t i = 0; i < c->Tq; i++) {
            float *r = c->s + i * c->Tk, mx = r[0], sum = 0;
            for (int64_t j = 1; j < c->Tk; j++) mx = r[j] > mx ? r[j] : mx;
            for (int64_t j = 0; j < c->Tk; j++) sum += r[j] = expf(r[j] - mx);
            for (int64_t j = 0; j < c->Tk; j++) r[j] /= sum;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c->Tq, (int)c->D, (int)c->Tk, 1.0f, c->s,
                    (int)c->Tk, v + h * c->D, (int)C, 0.0f, o + h * c->D, (int)C);
    }
    return 0;
}

static void bench_attention(int64_t Tq, int64_t Tk, int64_t H, int64_t D, bool peers) {
    const int64_t C = H * D;
    float *q = sdxl_malloc((size_t)(Tq * C) * 4), *k = sdxl_malloc((size_t)(Tk * C) * 4);
    float *v = sdxl_malloc((size_t)(Tk * C) * 4), *o = sdxl_malloc((size_t)(Tq * C) * 4);
    float *s = peers ? sdxl_malloc((size_t)(Tq * Tk) * 4) : NULL;
    if (!q || !k || !v || !o || (peers && !s)) {
        printf("attention: out of memory\n");
        goto done;
    }
    fill(q, (size_t)(Tq * C), 7);
    fill(k, (size_t)(Tk * C), 8);
    fill(v, (size_t)(Tk * C), 9);
    att_ctx c = {sdxl_tensor_3d(q, SDXL_DTYPE_F32, 1, Tq, C), sdxl_tensor_3d(k, SDXL_DTYPE_F32, 1, Tk, C),
                 sdxl_tensor_3d(v, SDXL_DTYPE_F32, 1, Tk, C), sdxl_tensor_3d(o, SDXL_DTYPE_F32, 1, Tq, C),
                 {(int)H, 1.0f / sqrtf((float)D), false}, Tq, Tk, H, D, s};
    char shape[64];
    snprintf(shape, sizeof shape, "Tq=%lld Tk=%lld %lldx%lld", (long long)Tq, (long long)Tk, (long long)H,
             (long long)D);
    timing own = time_it(run_att, &c);
    timing peer = peers ? time_it(run_att_blas, &c) : (timing){0};
    report("attention", shape, "f32", 4.0 * Tq * Tk * D * H, own, "sgemm+softmax+sgemm", peer);
done:
    sdxl_free(q);
    sdxl_free(k);
    sdxl_free(v);
    sdxl_free(o);
    sdxl_free(s);
}

/* ---- main --------------------------------------------------------------------- */

int main(int argc, char **argv) {
    bool quick = false, peers = true;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = true;
        } else if (!strcmp(argv[i], "--no-peers")) {
            peers = false;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *s = argv[++i];
            sdxl_cpu_set_max_isa(!strcmp(s, "generic") ? SDXL_ISA_GENERIC
                                 : !strcmp(s, "avx2")  ? SDXL_ISA_AVX2
                                                       : SDXL_ISA_AVX512);
        } else {
            fprintf(stderr, "usage: %s [--quick] [--no-peers] [--isa generic|avx2|avx512] [--threads N]\n", argv[0]);
            return 2;
        }
    }
    if (quick) g_min_time = 0.2;
    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = threads;
    sdxl_error err;
    g_be = sdxl_backend_create(&bp, &err);
    if (!g_be) {
        fprintf(stderr, "backend: %s\n", err.msg);
        return 1;
    }
    g_threads = threads > 0 ? threads : sdxl_cpu_get()->n_cores;
    g_isa = sdxl_cpu_isa();
    printf("# sdxl_bench_ops: %d threads, isa %s; OpenBLAS core %s (%s)\n", g_threads, sdxl_isa_name(g_isa),
           openblas_get_corename(), openblas_get_config());
    const double t0 = now_s();
    update_peak("start");
    printf("# best of N (median); %% = achieved / peak; own/peer = peer time / own time\n");

    bench_linear(4096, 640, 640, peers);
    if (!quick) {
        bench_linear(4096, 1280, 5120, peers);
        bench_linear(154, 2048, 1280, peers); /* cross-attention k/v projection (batch 2 x 77 tokens) */
    }
    update_peak("after linear");
    bench_conv(320, 320, 128, peers);
    if (!quick) bench_conv(640, 640, 64, peers);
    update_peak("after conv2d");
    bench_attention(4096, 4096, 10, 64, peers);
    if (!quick) {
        bench_attention(1024, 1024, 20, 64, peers);
        bench_attention(4096, 77, 10, 64, peers);
    }
    update_peak("end");
    printf("# peak used for the ratios: %.1f GFLOP/s; total %.1f s\n", g_peak, now_s() - t0);
    sdxl_backend_free(g_be);
    return 0;
}
