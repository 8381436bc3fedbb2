/* Thread pool: coverage of [0, n) exactly once for many shapes, chunking
 * rules, concurrency between callers, nesting, lifecycle, failure, and that
 * idle workers really go to sleep. Indices are counted with plain stores on
 * purpose: overlapping chunks or a missing happens-before edge then shows up
 * as a wrong count here and as a race under ThreadSanitizer. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/cpu.h"
#include "core/threadpool.h"
#include "test.h"

typedef struct {
    unsigned char *seen; /* per index: times visited */
    size_t n, grain;
    int n_threads;
    atomic_int calls, bad_range, bad_thread, short_chunk;
    atomic_int used_thread[8];
} cover_ctx;

static void cover_fn(void *vctx, size_t begin, size_t end, int t) {
    cover_ctx *c = vctx;
    atomic_fetch_add(&c->calls, 1);
    if (!(begin < end && end <= c->n)) {
        atomic_fetch_add(&c->bad_range, 1);
        return;
    }
    if (t < 0 || t >= c->n_threads) atomic_fetch_add(&c->bad_thread, 1);
    else if (t < 8) atomic_store(&c->used_thread[t], 1);
    size_t g = c->grain ? c->grain : 1;
    if (end - begin < g && end != c->n) atomic_fetch_add(&c->short_chunk, 1);
    for (size_t i = begin; i < end; i++) c->seen[i]++;
}

/* Runs one loop and returns the number of failed properties (0 = good). */
static int run_cover(sdxl_threadpool *p, size_t n, size_t grain, unsigned char *buf) {
    cover_ctx c = {.seen = buf, .n = n, .grain = grain, .n_threads = sdxl_threadpool_size(p)};
    memset(buf, 0, n);
    sdxl_threadpool_parallel_for(p, n, grain, cover_fn, &c);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += buf[i] != 1;
    bad += atomic_load(&c.bad_range) + atomic_load(&c.bad_thread) + atomic_load(&c.short_chunk);
    if (n == 0) bad += atomic_load(&c.calls) != 0;
    /* the promised chunk count: ceil(n / max(grain, n / (4 * threads))),
     * or a single call on a one-thread pool */
    size_t g = grain ? grain : 1, chunk = n / (4 * (size_t)c.n_threads);
    if (chunk < g) chunk = g;
    int want_calls = c.n_threads == 1 ? 1 : (int)((n + chunk - 1) / chunk);
    if (n && atomic_load(&c.calls) != want_calls) bad++;
    return bad;
}

TEST(threadpool_visits_every_index_once) {
    static const int threads[] = {1, 2, 3, 4, 7};
    static const size_t ns[] = {0, 1, 2, 3, 5, 7, 8, 9, 31, 63, 64, 65, 1000, 4097, 100003};
    static const size_t grains[] = {0, 1, 3, 64, 1000, 200000};
    unsigned char *buf = sdxl_malloc(100003);
    REQUIRE(buf);
    for (size_t ti = 0; ti < sizeof threads / sizeof *threads; ti++) {
        sdxl_threadpool *p = sdxl_threadpool_create(threads[ti]);
        REQUIRE(p);
        CHECK_EQ_INT(sdxl_threadpool_size(p), threads[ti]);
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
            for (size_t gi = 0; gi < sizeof grains / sizeof *grains; gi++) {
                int bad = run_cover(p, ns[ni], grains[gi], buf);
                CHECK_MSG(bad == 0, "threads %d n %zu grain %zu: %d problems", threads[ti], ns[ni], grains[gi], bad);
            }
        sdxl_threadpool_free(p);
    }
    sdxl_free(buf);
}

TEST(threadpool_null_pool_runs_once_on_caller) {
    unsigned char buf[100];
    CHECK_EQ_INT(sdxl_threadpool_size(NULL), 1);
    cover_ctx c = {.seen = buf, .n = 100, .grain = 1, .n_threads = 1};
    memset(buf, 0, sizeof buf);
    sdxl_threadpool_parallel_for(NULL, 100, 1, cover_fn, &c);
    CHECK_EQ_INT(atomic_load(&c.calls), 1);
    CHECK(atomic_load(&c.used_thread[0]) == 1);
    for (int i = 0; i < 100; i++) CHECK(buf[i] == 1);
    CHECK(run_cover(NULL, 0, 1, buf) == 0);
    sdxl_threadpool_free(NULL);
}

TEST(threadpool_default_size_is_core_count) {
    sdxl_threadpool *p = sdxl_threadpool_create(0);
    REQUIRE(p);
    CHECK_EQ_INT(sdxl_threadpool_size(p), sdxl_cpu_get()->n_cores);
    sdxl_threadpool_free(p);
    p = sdxl_threadpool_create(-3);
    REQUIRE(p);
    CHECK_EQ_INT(sdxl_threadpool_size(p), sdxl_cpu_get()->n_cores);
    sdxl_threadpool_free(p);
}

/* Chunk 0 waits until some other thread has started a chunk: passes only if
 * the pool really runs chunks concurrently. Chunks on a worker are slow and
 * write their results late, so a caller that returned before every chunk had
 * finished would see them missing (and a caller that went to sleep waiting
 * must be woken). The wait is bounded, so a broken pool
 * fails instead of hanging. */
typedef struct {
    atomic_int started;
    atomic_int indices;
    atomic_int timed_out;
    bool fast; /* workers do not dawdle */
    unsigned char seen[16];
} concur_ctx;

static void concur_fn(void *vctx, size_t begin, size_t end, int t) {
    concur_ctx *c = vctx;
    atomic_fetch_or(&c->indices, 1 << t);
    if (begin != 0) {
        atomic_fetch_add(&c->started, 1);
        if (t != 0 && !c->fast) usleep(20000); /* the caller runs through its chunks meanwhile */
    } else {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&c->started) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (t1.tv_sec - t0.tv_sec > 5) {
                atomic_store(&c->timed_out, 1);
                break;
            }
            sched_yield();
        }
    }
    for (size_t i = begin; i < end; i++) c->seen[i]++;
}

TEST(threadpool_runs_chunks_concurrently_and_waits_for_all) {
    sdxl_threadpool *p = sdxl_threadpool_create(2);
    REQUIRE(p);
    for (int rep = 0; rep < 3; rep++) {
        concur_ctx c = {0};
        sdxl_threadpool_parallel_for(p, 16, 1, concur_fn, &c);
        int missing = 0;
        for (int i = 0; i < 16; i++) missing += c.seen[i] != 1;
        CHECK_EQ_INT(missing, 0);
        CHECK(atomic_load(&c.timed_out) == 0);
        CHECK_EQ_INT(atomic_load(&c.indices), 3); /* both thread indices 0 and 1 */
        CHECK_EQ_INT(atomic_load(&c.started), 7); /* 8 chunks of 2 */
    }
    sdxl_threadpool_free(p);
}

/* Loops separated by gaps around the spin window, so workers are caught in
 * every state (spinning, about to sleep, asleep). A lost wake-up would leave
 * chunk 0 waiting for a worker that never comes. */
TEST(threadpool_wakes_workers_from_every_state) {
    sdxl_threadpool *p = sdxl_threadpool_create(2);
    REQUIRE(p);
    static const int gaps_us[] = {0, 10, 30, 45, 55, 70, 120, 1000};
    int failures = 0;
    for (int i = 0; i < 240 && failures < 3; i++) {
        usleep((useconds_t)gaps_us[i % 8]);
        concur_ctx c = {.fast = true};
        sdxl_threadpool_parallel_for(p, 16, 1, concur_fn, &c);
        int missing = 0;
        for (int k = 0; k < 16; k++) missing += c.seen[k] != 1;
        failures += missing != 0 || atomic_load(&c.timed_out) || atomic_load(&c.indices) != 3;
    }
    CHECK_EQ_INT(failures, 0);
    sdxl_threadpool_free(p);
}

typedef struct {
    sdxl_threadpool *pool;
    int failures;
    int salt;
} caller_arg;

static void *caller_main(void *varg) {
    caller_arg *a = varg;
    unsigned char *buf = sdxl_malloc(5000);
    if (!buf) {
        a->failures = 1;
        return NULL;
    }
    for (int i = 0; i < 400; i++) {
        size_t n = (size_t)((i * 37 + a->salt * 101) % 5000);
        a->failures += run_cover(a->pool, n, (size_t)(i % 5), buf) != 0;
    }
    sdxl_free(buf);
    return NULL;
}

TEST(threadpool_concurrent_callers_are_serialized) {
    sdxl_threadpool *p = sdxl_threadpool_create(3);
    REQUIRE(p);
    caller_arg args[2] = {{p, 0, 1}, {p, 0, 2}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) REQUIRE(pthread_create(&th[i], NULL, caller_main, &args[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK_EQ_INT(args[0].failures, 0);
    CHECK_EQ_INT(args[1].failures, 0);
    sdxl_threadpool_free(p);
}

typedef struct {
    sdxl_threadpool *pool;
    atomic_int inner_items;
    atomic_int bad_index;
} nest_ctx;

typedef struct {
    nest_ctx *outer;
    int thread;
} nest_inner_ctx;

static void nest_inner(void *vctx, size_t begin, size_t end, int t) {
    nest_inner_ctx *c = vctx;
    if (t != c->thread) atomic_fetch_add(&c->outer->bad_index, 1);
    atomic_fetch_add(&c->outer->inner_items, (int)(end - begin));
}

static void nest_outer(void *vctx, size_t begin, size_t end, int t) {
    nest_ctx *c = vctx;
    for (size_t i = begin; i < end; i++) {
        nest_inner_ctx ic = {c, t};
        sdxl_threadpool_parallel_for(c->pool, 10, 1, nest_inner, &ic);
    }
}

TEST(threadpool_nested_loop_runs_inline) {
    sdxl_threadpool *p = sdxl_threadpool_create(2);
    REQUIRE(p);
    nest_ctx c = {.pool = p};
    sdxl_threadpool_parallel_for(p, 50, 1, nest_outer, &c); /* would deadlock if not inline */
    CHECK_EQ_INT(atomic_load(&c.inner_items), 500);
    CHECK_EQ_INT(atomic_load(&c.bad_index), 0);
    sdxl_threadpool_free(p);
}

TEST(threadpool_create_free_cycles) {
    unsigned char buf[300];
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    for (int i = 0; i < 150; i++) {
        sdxl_threadpool *p = sdxl_threadpool_create(1 + i % 4);
        REQUIRE(p);
        if (i % 2) CHECK(run_cover(p, (size_t)(i * 2), 1, buf) == 0); /* and sometimes never used */
        sdxl_threadpool_free(p);
    }
    sdxl_mem_get_stats(&s1);
    CHECK_EQ_INT(s1.live_bytes, s0.live_bytes);
}

TEST(threadpool_create_fails_cleanly_without_memory) {
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    sdxl__alloc_fail_at(0);
    sdxl_threadpool *p = sdxl_threadpool_create(3);
    int64_t n_allocs = sdxl__alloc_fail_at(0);
    REQUIRE(p);
    sdxl_threadpool_free(p);
    CHECK(n_allocs >= 1);
    for (int64_t k = 1; k <= n_allocs; k++) {
        sdxl__alloc_fail_at(k);
        p = sdxl_threadpool_create(3);
        sdxl__alloc_fail_at(0);
        CHECK_MSG(p == NULL, "allocation %lld of %lld failed, yet create succeeded", (long long)k,
                  (long long)n_allocs);
        sdxl_threadpool_free(p);
    }
    sdxl_mem_get_stats(&s1);
    CHECK_EQ_INT(s1.live_bytes, s0.live_bytes);
    CHECK(sdxl_threadpool_create(1 << 20) == NULL); /* absurd size: refused */
}

static void empty_fn(void *ctx, size_t begin, size_t end, int t) {}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

TEST(threadpool_idle_workers_sleep) {
    sdxl_threadpool *p = sdxl_threadpool_create(3);
    REQUIRE(p);
    for (int i = 0; i < 100; i++) sdxl_threadpool_parallel_for(p, 64, 1, empty_fn, NULL);
    usleep(20000); /* past the spin window */
    double c0 = cpu_seconds();
    usleep(200000);
    double used = cpu_seconds() - c0;
    /* two spinning workers would burn ~0.4 s of CPU here */
    CHECK_MSG(used < 0.05, "idle pool used %.3f s of CPU in 0.2 s", used);
    CHECK(run_cover(p, 1000, 1, (unsigned char[1000]){0}) == 0); /* and wakes up again */
    sdxl_threadpool_free(p);
}
