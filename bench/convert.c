/* convert - bulk dtype conversion throughput per ISA level next to memcpy,
 * and the fixed cost of a parallel_for on a 2-thread pool.
 *
 *   build/bench/sdxl_bench_convert [MiB]     (f32 buffer size, default 64)
 *
 * GB/s counts bytes read plus bytes written (f16 -> f32 over n elements moves
 * 6n bytes, a memcpy of b bytes moves 2b), so the ratio to memcpy says how
 * close a conversion gets to what the memory system allows. Each figure is
 * the best of several runs over buffers far larger than the caches. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/threadpool.h"

#define REPS 7

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    float *f32, *f32b;
    uint16_t *h16;
    size_t n;
} bufs;

enum { OP_MEMCPY, OP_F16_F32, OP_BF16_F32, OP_F32_F16, OP_F32_BF16 };
static const char *const op_names[] = {"memcpy", "f16->f32", "bf16->f32", "f32->f16", "f32->bf16"};

static void run_op(int op, bufs *b) {
    switch (op) {
    case OP_MEMCPY: memcpy(b->f32b, b->f32, b->n * 4); break;
    case OP_F16_F32: sdxl_f16_to_f32_n(b->h16, b->f32, b->n); break;
    case OP_BF16_F32: sdxl_bf16_to_f32_n(b->h16, b->f32, b->n); break;
    case OP_F32_F16: sdxl_f32_to_f16_n(b->f32, b->h16, b->n); break;
    case OP_F32_BF16: sdxl_f32_to_bf16_n(b->f32, b->h16, b->n); break;
    }
}

static double seconds(int op, bufs *b) {
    double t0 = now();
    run_op(op, b);
    return now() - t0;
}

static double bytes_moved(int op, const bufs *b) { return (op == OP_MEMCPY ? 8.0 : 6.0) * (double)b->n; }

/* Best-of-REPS GB/s of `op` and of memcpy, runs interleaved so that both see
 * the same machine: on a shared 2-core host the load changes by the second. */
static void measure(int op, bufs *b, double *op_gbps, double *memcpy_gbps) {
    double best_op = 1e30, best_mc = 1e30;
    for (int r = 0; r < REPS; r++) {
        double t = seconds(OP_MEMCPY, b);
        if (t < best_mc) best_mc = t;
        t = seconds(op, b);
        if (t < best_op) best_op = t;
    }
    *op_gbps = bytes_moved(op, b) / best_op / 1e9;
    *memcpy_gbps = bytes_moved(OP_MEMCPY, b) / best_mc / 1e9;
}

static void empty_fn(void *ctx, size_t begin, size_t end, int t) {
    (void)ctx, (void)begin, (void)end, (void)t;
}

static void bench_pool(void) {
    sdxl_threadpool *p = sdxl_threadpool_create(2);
    if (!p) {
        fprintf(stderr, "threadpool_create failed\n");
        return;
    }
    for (int i = 0; i < 1000; i++) sdxl_threadpool_parallel_for(p, 1024, 1, empty_fn, NULL);
    enum { HOT = 200000, COLD = 200 };
    double t0 = now();
    for (int i = 0; i < HOT; i++) sdxl_threadpool_parallel_for(p, 1024, 1, empty_fn, NULL);
    double hot = (now() - t0) / HOT * 1e6;
    t0 = now();
    for (int i = 0; i < HOT; i++) sdxl_threadpool_parallel_for(p, 1, 1, empty_fn, NULL);
    double single = (now() - t0) / HOT * 1e6;
    double cold = 0, worst = 0;
    for (int i = 0; i < COLD; i++) {
        usleep(1000); /* past the spin window: the worker is asleep */
        double t = now();
        sdxl_threadpool_parallel_for(p, 1024, 1, empty_fn, NULL);
        t = now() - t;
        cold += t;
        if (t > worst) worst = t;
    }
    printf("\nempty parallel_for, 2-thread pool (n=1024, 8 chunks):\n");
    printf("  back to back (worker spinning)   %7.2f us\n", hot);
    printf("  after 1 ms idle (worker asleep)  %7.2f us  (worst %.1f us)\n", cold / COLD * 1e6, worst * 1e6);
    printf("  single chunk (runs inline)       %7.2f us\n", single);
    sdxl_threadpool_free(p);
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 64;
    if (mib == 0) mib = 64;
    bufs b = {.n = mib * (1u << 20) / 4};
    b.f32 = sdxl_malloc(b.n * 4);
    b.f32b = sdxl_malloc(b.n * 4);
    b.h16 = sdxl_malloc(b.n * 2);
    if (!b.f32 || !b.f32b || !b.h16) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    /* realistic values (weights-like, within f16 range), and every page
     * touched before timing */
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < b.n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        b.f32[i] = ((float)(s >> 40) / (float)(1 << 24) - 0.5f) * 0.2f;
    }
    memset(b.f32b, 0, b.n * 4);
    sdxl_f32_to_f16_n(b.f32, b.h16, b.n);

    const sdxl_cpu_features *f = sdxl_cpu_get();
    sdxl_isa_level saved = sdxl_cpu_max_isa();
    sdxl_cpu_set_max_isa(SDXL_ISA_AVX512);
    sdxl_isa_level top = sdxl_cpu_isa();
    printf("bulk conversion, %zu MiB f32 buffer (%zu elements), %d cores, best of %d\n", mib, b.n, f->n_cores, REPS);
    printf("%-8s %-10s %8s %13s %9s\n", "isa", "op", "GB/s", "memcpy GB/s", "ratio");
    for (int l = SDXL_ISA_GENERIC; l <= (int)top; l++) {
        sdxl_cpu_set_max_isa((sdxl_isa_level)l);
        for (int op = OP_F16_F32; op <= OP_F32_BF16; op++) {
            double g, mc;
            measure(op, &b, &g, &mc);
            printf("%-8s %-10s %8.2f %13.2f %9.2f\n", sdxl_isa_name((sdxl_isa_level)l), op_names[op], g, mc,
                   g / mc);
        }
    }
    sdxl_cpu_set_max_isa(saved);

    /* keep the results observable */
    unsigned sum = 0;
    for (size_t i = 0; i < b.n; i += 4096) {
        uint32_t u;
        memcpy(&u, &b.f32b[i], 4);
        sum += b.h16[i] + u;
    }
    printf("(checksum %u)\n", sum);

    bench_pool();
    sdxl_free(b.f32);
    sdxl_free(b.f32b);
    sdxl_free(b.h16);
    return 0;
}
