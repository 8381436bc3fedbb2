/* The pool is tuned for many small loops (thousands per image): publishing a
 * loop is one atomic store, and a worker that finished a loop recently is
 * still spinning and picks the next one up within a few hundred nanoseconds.
 * After SPIN_NS without work it sleeps on a condition variable, so an idle
 * engine costs no CPU (the host may have only two cores, shared with
 * OpenBLAS's threads).
 *
 * One 64-bit word, `claim`, carries both the loop's generation (high half)
 * and the number of chunks still unclaimed (low half). A worker takes a chunk
 * by compare-and-swap on the whole word, so a worker that wakes up late, with
 * an old generation in mind, can never take a chunk of a newer loop: its CAS
 * fails. That lets the caller return as soon as every chunk is done, without
 * waiting for sleeping or descheduled workers to check in, which matters when
 * the machine is oversubscribed.
 *
 * The loop description (fn, ctx, n, chunk, n_chunks) is plain data: it is
 * written before the release store that publishes the generation, read only
 * after an acquiring CAS that claimed a chunk of it, and not rewritten before
 * every claimed chunk was reported done. */
#include "core/threadpool.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "core/alloc.h"
#include "core/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax(void) { _mm_pause(); }
#else
static inline void cpu_relax(void) {}
#endif

/* How long a thread spins before sleeping: longer than the gap between two
 * small ops of a forward pass, short enough not to matter when idle. */
#define SPIN_NS 50000
#define MAX_THREADS 4096

typedef struct worker {
    struct sdxl_threadpool *pool;
    int index;
    pthread_t thread;
} worker;

struct sdxl_threadpool {
    int n_threads; /* the caller counts as thread 0 */
    int n_started; /* workers actually running */
    worker *workers;

    pthread_mutex_t call_mu; /* one loop at a time */
    pthread_mutex_t mu;      /* only for sleeping on the two condvars */
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;

    /* the current loop; see the top of the file for who may touch it when */
    sdxl_parallel_fn fn;
    void *ctx;
    size_t n, chunk, n_chunks;
    uint32_t gen; /* caller side only, under call_mu */

    _Alignas(64) _Atomic uint64_t claim; /* gen << 32 | chunks not yet claimed */
    _Alignas(64) atomic_size_t done;     /* chunks finished */
    atomic_int n_sleeping;               /* workers asleep or about to be */
    atomic_int caller_waiting;           /* the caller sleeps on done_cv */
    atomic_bool stop;
};

/* The pool (and this thread's index in it) whose loop this thread is running
 * a chunk of: a nested parallel_for on the same pool would deadlock on
 * call_mu, so it runs inline instead. */
static _Thread_local const sdxl_threadpool *tls_pool;
static _Thread_local int tls_index;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint32_t gen_of(uint64_t c) { return (uint32_t)(c >> 32); }

/* Take chunks of loop `g` until none is left, then report how many were run. */
static void run_chunks(sdxl_threadpool *p, uint32_t g, int index) {
    size_t did = 0, n_chunks = 0;
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_relaxed);
    for (;;) {
        if (gen_of(c) != g || (uint32_t)c == 0) break;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c - 1, memory_order_acquire,
                                                   memory_order_relaxed))
            continue; /* c was reloaded */
        /* Claimed a chunk of loop g: its description is now stable. */
        n_chunks = p->n_chunks;
        size_t k = n_chunks - (uint32_t)c; /* chunks are handed out from 0 up */
        size_t begin = k * p->chunk;
        size_t end = p->n - begin < p->chunk ? p->n : begin + p->chunk;
        p->fn(p->ctx, begin, end, index);
        did++;
        c = atomic_load_explicit(&p->claim, memory_order_relaxed);
    }
    if (!did) return;
    /* Reading n_chunks again here would race with the next loop's setup once
     * our add completes this one; the local copy is from before. */
    size_t total = atomic_fetch_add(&p->done, did) + did;
    if (total == n_chunks && atomic_load(&p->caller_waiting)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Wait for a generation other than `seen`; false when the pool stops. */
static bool wait_for_loop(sdxl_threadpool *p, uint32_t seen, uint32_t *g) {
    uint64_t t0 = 0;
    for (unsigned k = 0;; k++) {
        uint64_t c = atomic_load_explicit(&p->claim, memory_order_relaxed);
        if (gen_of(c) != seen) {
            *g = gen_of(c);
            return true;
        }
        if (atomic_load_explicit(&p->stop, memory_order_relaxed)) return false;
        cpu_relax();
        if ((k & 63) == 63) {
            uint64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) break;
        }
    }
    pthread_mutex_lock(&p->mu);
    /* seq_cst pairs with the caller's store of claim and load of n_sleeping:
     * either it sees us counted here, or we see its new generation below. */
    atomic_fetch_add(&p->n_sleeping, 1);
    uint64_t c;
    while (gen_of(c = atomic_load(&p->claim)) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->work_cv, &p->mu);
    atomic_fetch_sub(&p->n_sleeping, 1);
    pthread_mutex_unlock(&p->mu);
    if (gen_of(c) == seen) return false;
    *g = gen_of(c);
    return true;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    sdxl_threadpool *p = w->pool;
    tls_pool = p;
    tls_index = w->index;
    /* Named from inside: for the calling thread this is one prctl, for
     * another thread it is a write to /proc, hundreds of microseconds. */
    char name[16];
    snprintf(name, sizeof name, "sdxl-pool-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    uint32_t seen = 0, g;
    while (wait_for_loop(p, seen, &g)) {
        seen = g;
        run_chunks(p, g, w->index);
    }
    return NULL;
}

static void stop_workers(sdxl_threadpool *p) {
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->workers[i].thread, NULL);
    p->n_started = 0;
}

void sdxl_threadpool_free(sdxl_threadpool *p) {
    if (!p) return;
    stop_workers(p);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->call_mu);
    sdxl_free(p->workers);
    sdxl_free(p);
}

sdxl_threadpool *sdxl_threadpool_create(int n_threads) {
    if (n_threads <= 0) n_threads = sdxl_cpu_get()->n_cores;
    if (n_threads < 1) n_threads = 1;
    if (n_threads > MAX_THREADS) return NULL;
    sdxl_threadpool *p = sdxl_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    p->workers = sdxl_calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        sdxl_free(p);
        return NULL;
    }
    pthread_mutex_init(&p->call_mu, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->claim, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->caller_waiting, 0);
    atomic_init(&p->stop, false);

    /* Workers start with every signal blocked, so asynchronous signals (a
     * server's SIGINT/SIGTERM handling) go to the application's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    bool ok = true;
    for (int i = 1; i < n_threads && ok; i++) {
        worker *w = &p->workers[p->n_started];
        w->pool = p;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            ok = false;
            break;
        }
        p->n_started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!ok) {
        sdxl_threadpool_free(p);
        return NULL;
    }
    return p;
}

int sdxl_threadpool_size(const sdxl_threadpool *p) { return p ? p->n_threads : 1; }

static void wait_done(sdxl_threadpool *p, size_t n_chunks) {
    uint64_t t0 = 0;
    for (unsigned k = 0;; k++) {
        if (atomic_load_explicit(&p->done, memory_order_acquire) == n_chunks) return;
        cpu_relax();
        if ((k & 63) == 63) {
            uint64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) break;
        }
    }
    /* A worker holding the last chunk was descheduled or runs a long chunk. */
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_waiting, 1);
    while (atomic_load(&p->done) != n_chunks) pthread_cond_wait(&p->done_cv, &p->mu);
    atomic_store(&p->caller_waiting, 0);
    pthread_mutex_unlock(&p->mu);
}

void sdxl_threadpool_parallel_for(sdxl_threadpool *p, size_t n, size_t grain, sdxl_parallel_fn fn,
                                  void *ctx) {
    if (n == 0) return;
    if (!p) {
        fn(ctx, 0, n, 0);
        return;
    }
    if (tls_pool == p) { /* nested inside one of this pool's chunks */
        fn(ctx, 0, n, tls_index);
        return;
    }
    if (grain == 0) grain = 1;
    size_t chunk = n / ((size_t)p->n_threads * 4);
    if (chunk < grain) chunk = grain;
    size_t n_chunks = n / chunk + (n % chunk != 0);

    pthread_mutex_lock(&p->call_mu);
    const sdxl_threadpool *saved_pool = tls_pool;
    int saved_index = tls_index;
    tls_pool = p;
    tls_index = 0;
    if (p->n_started == 0 || n_chunks == 1) {
        fn(ctx, 0, n, 0);
    } else {
        p->fn = fn;
        p->ctx = ctx;
        p->n = n;
        p->chunk = chunk;
        p->n_chunks = n_chunks;
        atomic_store_explicit(&p->done, 0, memory_order_relaxed);
        uint32_t g = ++p->gen;
        /* seq_cst: pairs with the worker's n_sleeping increment (see there). */
        atomic_store(&p->claim, (uint64_t)g << 32 | (uint32_t)n_chunks);
        if (atomic_load(&p->n_sleeping) > 0) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->work_cv);
            pthread_mutex_unlock(&p->mu);
        }
        run_chunks(p, g, 0);
        wait_done(p, n_chunks);
    }
    tls_pool = saved_pool;
    tls_index = saved_index;
    pthread_mutex_unlock(&p->call_mu);
}
