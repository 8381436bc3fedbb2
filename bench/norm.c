/* bench/norm.c - throughput of the CPU norm and elementwise ops at SDXL sizes,
 * each next to memcpy of the same traffic measured in the same run.
 *
 *   sdxl_bench_norm [reps]        (default 5; the best rep is reported)
 *
 * GB/s counts the op's compulsory traffic: every input byte read once plus every
 * output byte written once (group norm reads x twice, but the second pass hits
 * L2 and is not counted). memcpy moves the same bytes (half read, half written)
 * with the same number of threads, so `ratio` = op GB/s / memcpy GB/s says how
 * close to memory speed the op runs: ~1 means memory-bound and done.
 * Every op runs at each ISA level (sdxl_cpu_set_max_isa) and with 1 and all
 * threads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/threadpool.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef enum { OP_GN_SILU, OP_LN, OP_SILU, OP_GELU, OP_GEGLU, OP_ADD } op_kind;

typedef struct {
    const char *name;
    op_kind kind;
    int nd;
    int64_t shape[4]; /* of x (geglu: of x = [..., 2N]) */
} bench_case;

static const bench_case CASES[] = {
    {"group_norm+silu", OP_GN_SILU, 4, {1, 320, 128, 128}},
    {"group_norm+silu", OP_GN_SILU, 4, {2, 640, 64, 64}},
    {"layer_norm", OP_LN, 3, {2, 4096, 640}},
    {"silu", OP_SILU, 3, {2, 4096, 5120}},
    {"gelu_erf", OP_GELU, 3, {2, 4096, 5120}},
    {"geglu", OP_GEGLU, 3, {2, 4096, 5120}},
    {"add same-shape", OP_ADD, 4, {2, 320, 128, 128}},
};

/* memcpy split over a pool, as the ops split their work. */
typedef struct {
    char *dst;
    const char *src;
    size_t bytes;
} copy_ctx;
static void copy_task(void *vc, size_t b0, size_t b1, int tid) {
    copy_ctx *c = vc;
    const size_t blk = (size_t)1 << 20;
    size_t s = b0 * blk, e = b1 * blk < c->bytes ? b1 * blk : c->bytes;
    memcpy(c->dst + s, c->src + s, e - s);
}

static double run_op(sdxl_backend *be, const bench_case *bc, float *x, float *b, float *y,
                     const float *g, const float *bt) {
    const sdxl_backend_ops *o = sdxl_backend_ops_of(be);
    sdxl_tensor tx = sdxl_tensor_make(x, SDXL_DTYPE_F32, bc->nd, bc->shape);
    sdxl_tensor ty = sdxl_tensor_make(y, SDXL_DTYPE_F32, bc->nd, bc->shape);
    int64_t c1 = bc->shape[1], cl = bc->shape[bc->nd - 1];
    sdxl_tensor tg = sdxl_tensor_1d((void *)g, SDXL_DTYPE_F32, bc->kind == OP_GN_SILU ? c1 : cl);
    sdxl_tensor tb = sdxl_tensor_1d((void *)bt, SDXL_DTYPE_F32, bc->kind == OP_GN_SILU ? c1 : cl);
    sdxl_tensor tbb = tx;
    tbb.data = b;
    double t0 = now_s();
    sdxl_status st = SDXL_STATUS_OK;
    switch (bc->kind) {
    case OP_GN_SILU: st = o->group_norm(be, &tx, &tg, &tb, 32, 1e-5f, true, &ty); break;
    case OP_LN: st = o->layer_norm(be, &tx, &tg, &tb, 1e-5f, &ty); break;
    case OP_SILU: st = o->unary(be, SDXL_UNARY_SILU, &tx, &ty); break;
    case OP_GELU: st = o->unary(be, SDXL_UNARY_GELU_ERF, &tx, &ty); break;
    case OP_GEGLU: {
        int64_t ys[4];
        memcpy(ys, bc->shape, sizeof ys);
        ys[bc->nd - 1] /= 2;
        sdxl_tensor t2 = sdxl_tensor_make(y, SDXL_DTYPE_F32, bc->nd, ys);
        st = o->geglu(be, &tx, &t2);
        break;
    }
    case OP_ADD: st = o->binary(be, SDXL_BINARY_ADD, &tx, &tbb, &ty); break;
    }
    double t = now_s() - t0;
    if (st != SDXL_STATUS_OK) {
        fprintf(stderr, "%s failed: %s\n", bc->name, sdxl_backend_last_error(be));
        exit(1);
    }
    return t;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1) reps = 1;
    const int n_all = sdxl_cpu_get()->n_cores;
    const sdxl_isa_level top = sdxl_cpu_isa();

    size_t max_elems = 0;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        sdxl_tensor t = sdxl_tensor_make(NULL, SDXL_DTYPE_F32, CASES[i].nd, CASES[i].shape);
        if ((size_t)sdxl_tensor_nelem(&t) > max_elems) max_elems = (size_t)sdxl_tensor_nelem(&t);
    }
    float *x = sdxl_malloc(max_elems * 4), *b = sdxl_malloc(max_elems * 4), *y = sdxl_malloc(max_elems * 4);
    float *g = sdxl_malloc(8192 * 4), *bt = sdxl_malloc(8192 * 4);
    if (!x || !b || !y || !g || !bt) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    /* realistic activations: spread over [-6, 6), no denormals */
    uint32_t s = 1;
    for (size_t i = 0; i < max_elems; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) * (12.0f / 16777216.0f) - 6.0f;
        b[i] = 0.5f;
        y[i] = 0.0f;
    }
    for (int i = 0; i < 8192; i++) g[i] = 1.0f + 0.001f * (float)i, bt[i] = 0.01f * (float)(i % 7);

    printf("%-16s %-18s %-7s %3s %9s %8s %11s %6s\n", "op", "shape", "isa", "thr", "ms", "GB/s",
           "memcpy GB/s", "ratio");
    const int thread_counts[2] = {1, n_all};
    for (int ti = 0; ti < (n_all > 1 ? 2 : 1); ti++) {
        int nt = thread_counts[ti];
        sdxl_backend_params bp = sdxl_backend_default_params();
        bp.n_threads = nt;
        sdxl_error err;
        sdxl_backend *be = sdxl_backend_create(&bp, &err);
        sdxl_threadpool *pool = sdxl_threadpool_create(nt);
        if (!be || !pool) {
            fprintf(stderr, "cannot create the back end: %s\n", err.msg);
            return 1;
        }
        for (size_t ci = 0; ci < sizeof CASES / sizeof CASES[0]; ci++) {
            const bench_case *bc = &CASES[ci];
            sdxl_tensor t = sdxl_tensor_make(NULL, SDXL_DTYPE_F32, bc->nd, bc->shape);
            size_t n = (size_t)sdxl_tensor_nelem(&t);
            /* bytes read + written */
            size_t traffic = bc->kind == OP_GEGLU ? n * 4 + n * 2 : bc->kind == OP_ADD ? 3 * n * 4 : 2 * n * 4;
            /* memcpy of the same traffic: traffic/2 bytes read, traffic/2 written */
            copy_ctx cc = {(char *)y, (const char *)x, traffic / 2};
            size_t blocks = (cc.bytes + ((size_t)1 << 20) - 1) >> 20;
            double best_copy = 1e9;
            for (int r = 0; r < reps; r++) {
                double t0 = now_s();
                sdxl_threadpool_parallel_for(pool, blocks, 1, copy_task, &cc);
                double dt = now_s() - t0;
                if (dt < best_copy) best_copy = dt;
            }
            double copy_gbs = (double)traffic / best_copy * 1e-9;
            char shape[40];
            snprintf(shape, sizeof shape, "%s", sdxl_tensor_describe(&t, (char[40]){0}, 40) + 3);
            for (int isa = SDXL_ISA_GENERIC; isa <= (int)top; isa++) {
                sdxl_cpu_set_max_isa((sdxl_isa_level)isa);
                run_op(be, bc, x, b, y, g, bt); /* warm-up: page faults, caches */
                double best = 1e9;
                for (int r = 0; r < reps; r++) {
                    double dt = run_op(be, bc, x, b, y, g, bt);
                    if (dt < best) best = dt;
                }
                double gbs = (double)traffic / best * 1e-9;
                printf("%-16s %-18s %-7s %3d %9.2f %8.2f %11.2f %6.2f\n", bc->name, shape,
                       sdxl_isa_name((sdxl_isa_level)isa), nt, best * 1e3, gbs, copy_gbs, gbs / copy_gbs);
                fflush(stdout);
            }
            sdxl_cpu_set_max_isa(top);
        }
        sdxl_threadpool_free(pool);
        sdxl_backend_free(be);
    }
    sdxl_free(x), sdxl_free(b), sdxl_free(y), sdxl_free(g), sdxl_free(bt);
    return 0;
}
