/* queue.c - the bounded job queue and its compute thread (see queue.h). */
#include "worker/queue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

const double sdxl_queue_hist_bounds[SDXL_QUEUE_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                 0.5,   1,    2.5,   5,    10,  1e300};
const char *const sdxl_queue_hist_names[6] = {"queue", "lora", "encode", "denoise", "decode", "total"};

#define RECENT 64 /* finished jobs kept findable by request_id */

struct sdxl_queue;

struct sdxl_job {
    atomic_int refs;
    _Atomic(struct sdxl_queue *) queue; /* while the job waits in the FIFO, else NULL */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sdxl_job_state state;
    sdxl_request req;
    sdxl_job_callbacks cb;
    atomic_bool cancel;
    double submitted, started, finished;
    double timeout_s;
    int round, rounds, step, total;
    double it_per_s;
    bool has_result;
    sdxl_engine_result result;
    sdxl_error err;
};

struct sdxl_queue {
    sdxl_engine *engine;
    sdxl_queue_params p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sdxl_job **fifo; /* ring of capacity */
    size_t head, count;
    sdxl_job *running;
    sdxl_job *recent[RECENT];
    size_t recent_next;
    bool shutdown, thread_started;
    pthread_t thread;
    sdxl_queue_stats stats;
};

const char *sdxl_job_state_name(sdxl_job_state s) {
    static const char *const n[] = {"queued", "running", "done", "failed", "cancelled"};
    return (unsigned)s <= SDXL_JOB_CANCELLED ? n[s] : "?";
}

sdxl_queue_params sdxl_queue_default_params(void) { return (sdxl_queue_params){.capacity = 16}; }

/* ---- jobs ------------------------------------------------------------------------ */

void sdxl_job_retain(sdxl_job *j) {
    if (j) atomic_fetch_add(&j->refs, 1);
}

void sdxl_job_release(sdxl_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    sdxl_request_free(&j->req);
    if (j->has_result) sdxl_engine_result_free(&j->result);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    sdxl_free(j);
}

sdxl_job_state sdxl_job_get_state(const sdxl_job *j) {
    pthread_mutex_lock((pthread_mutex_t *)&j->mu);
    sdxl_job_state s = j->state;
    pthread_mutex_unlock((pthread_mutex_t *)&j->mu);
    return s;
}

const sdxl_request *sdxl_job_request(const sdxl_job *j) { return &j->req; }

void sdxl_job_progress(const sdxl_job *j, int *round, int *rounds, int *step, int *total, double *it_per_s,
                       double *elapsed_s) {
    pthread_mutex_lock((pthread_mutex_t *)&j->mu);
    if (round) *round = j->round;
    if (rounds) *rounds = j->rounds;
    if (step) *step = j->step;
    if (total) *total = j->total;
    if (it_per_s) *it_per_s = j->it_per_s;
    if (elapsed_s) {
        double end = j->finished > 0 ? j->finished : sdxl_now_s();
        *elapsed_s = j->started > 0 ? end - j->started : 0;
    }
    pthread_mutex_unlock((pthread_mutex_t *)&j->mu);
}

static bool ended(sdxl_job_state s) { return s == SDXL_JOB_DONE || s == SDXL_JOB_FAILED || s == SDXL_JOB_CANCELLED; }

bool sdxl_job_wait(sdxl_job *j, double timeout_s) {
    pthread_mutex_lock(&j->mu);
    if (timeout_s <= 0) {
        while (!ended(j->state)) pthread_cond_wait(&j->cv, &j->mu);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec + timeout_s;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        while (!ended(j->state))
            if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) != 0) break;
    }
    bool e = ended(j->state);
    pthread_mutex_unlock(&j->mu);
    return e;
}

const sdxl_engine_result *sdxl_job_result(const sdxl_job *j) {
    sdxl_job_state s = sdxl_job_get_state(j);
    return ended(s) && j->has_result ? &j->result : NULL;
}

const sdxl_error *sdxl_job_error(const sdxl_job *j) {
    sdxl_job_state s = sdxl_job_get_state(j);
    return (s == SDXL_JOB_FAILED || s == SDXL_JOB_CANCELLED) ? &j->err : NULL;
}

static void notify(sdxl_job *j) {
    if (j->cb.on_event) j->cb.on_event(j->cb.user_data, j);
}

/* Set a final state (job mutex not held), wake waiters, tell the front end. */
static void finish(sdxl_job *j, sdxl_job_state s) {
    pthread_mutex_lock(&j->mu);
    j->state = s;
    j->finished = sdxl_now_s();
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    notify(j);
}

/* ---- the queue -------------------------------------------------------------------- */

static void remember(sdxl_queue *q, sdxl_job *j) { /* q->mu held */
    sdxl_job *old = q->recent[q->recent_next];
    sdxl_job_retain(j);
    q->recent[q->recent_next] = j;
    q->recent_next = (q->recent_next + 1) % RECENT;
    sdxl_job_release(old);
}

static void observe(sdxl_queue *q, int h, double seconds) { /* q->mu held */
    if (seconds < 0) seconds = 0;
    for (int b = 0; b < SDXL_QUEUE_HIST_BUCKETS; b++)
        if (seconds <= sdxl_queue_hist_bounds[b]) q->stats.hist[h][b]++;
    q->stats.hist_sum[h] += seconds;
}

typedef struct {
    sdxl_queue *q;
    sdxl_job *j;
} run_ctx;

static bool on_progress(void *ud, int round, int rounds, int step, int total, double it_per_s) {
    run_ctx *c = ud;
    sdxl_job *j = c->j;
    pthread_mutex_lock(&j->mu);
    j->round = round;
    j->rounds = rounds;
    j->step = step;
    j->total = total;
    j->it_per_s = it_per_s;
    double el = sdxl_now_s() - j->started;
    pthread_mutex_unlock(&j->mu);
    notify(j);
    if (j->timeout_s > 0 && el > j->timeout_s) {
        SDXL_LOG_W("job %s: timed out after %.1f s", j->req.request_id, el);
        atomic_store(&j->cancel, true);
    }
    return !atomic_load(&j->cancel);
}

static void *compute(void *arg) {
    sdxl_queue *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->shutdown && q->count == 0) pthread_cond_wait(&q->cv, &q->mu);
        if (q->count == 0) { /* shut down, nothing left */
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        sdxl_job *j = q->fifo[q->head];
        q->head = (q->head + 1) % q->p.capacity;
        q->count--;
        atomic_store(&j->queue, NULL);
        q->running = j;
        q->stats.running = true;
        double now = sdxl_now_s();
        observe(q, 0, now - j->submitted);
        bool shut = q->shutdown;
        pthread_mutex_unlock(&q->mu);

        bool timed_out = j->timeout_s > 0 && now - j->submitted > j->timeout_s;
        sdxl_job_state end;
        if (shut || timed_out || atomic_load(&j->cancel)) {
            sdxl_error_set(&j->err, SDXL_STATUS_CANCELLED, "%s",
                           shut ? "the service is shutting down" : timed_out ? "timed out in the queue" : "cancelled");
            end = SDXL_JOB_CANCELLED;
        } else {
            pthread_mutex_lock(&j->mu);
            j->state = SDXL_JOB_RUNNING;
            j->started = now;
            pthread_mutex_unlock(&j->mu);
            notify(j);
            run_ctx rc = {q, j};
            sdxl_engine_callbacks cb = {on_progress, &rc};
            sdxl_status st = sdxl_engine_run(q->engine, &j->req, &cb, &j->result, &j->err);
            j->has_result = true;
            pthread_mutex_lock(&q->mu);
            const sdxl_result_timings *t = &j->result.timings;
            observe(q, 1, t->lora_ms / 1e3);
            observe(q, 2, t->encode_ms / 1e3);
            observe(q, 3, t->denoise_ms / 1e3);
            observe(q, 4, t->decode_ms / 1e3);
            observe(q, 5, sdxl_now_s() - j->submitted);
            pthread_mutex_unlock(&q->mu);
            if (st == SDXL_STATUS_CANCELLED) {
                if (j->timeout_s > 0 && sdxl_now_s() - j->started > j->timeout_s)
                    sdxl_error_set(&j->err, SDXL_STATUS_CANCELLED, "timed out after %.0f s (%zu images finished)",
                                   j->timeout_s, j->result.n_images);
                end = SDXL_JOB_CANCELLED;
            } else {
                end = st ? SDXL_JOB_FAILED : SDXL_JOB_DONE;
            }
        }
        /* the queue's books first, so that a waiter woken by finish() sees them */
        pthread_mutex_lock(&q->mu);
        if (end == SDXL_JOB_DONE) q->stats.done++;
        else if (end == SDXL_JOB_FAILED) q->stats.failed++;
        else q->stats.cancelled++;
        q->running = NULL;
        q->stats.running = false;
        remember(q, j);
        pthread_mutex_unlock(&q->mu);
        finish(j, end);
        sdxl_job_release(j); /* the queue's reference */
    }
}

sdxl_status sdxl_queue_create(sdxl_engine *e, const sdxl_queue_params *p, sdxl_queue **out, sdxl_error *err) {
    if (!e || !out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "queue: NULL argument");
    *out = NULL;
    sdxl_queue *q = sdxl_calloc(1, sizeof *q);
    if (!q) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "queue: out of memory");
    q->engine = e;
    q->p = p ? *p : sdxl_queue_default_params();
    if (q->p.capacity == 0) q->p.capacity = 1;
    if (q->p.capacity > 100000) q->p.capacity = 100000;
    q->fifo = sdxl_calloc(q->p.capacity, sizeof *q->fifo);
    if (!q->fifo) {
        sdxl_free(q);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "queue: out of memory");
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    if (pthread_create(&q->thread, NULL, compute, q) != 0) {
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv);
        sdxl_free(q->fifo);
        sdxl_free(q);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "queue: cannot start the compute thread");
    }
    q->thread_started = true;
    *out = q;
    return SDXL_STATUS_OK;
}

void sdxl_queue_shutdown(sdxl_queue *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    bool was = q->shutdown;
    q->shutdown = true;
    /* queued jobs are cancelled as the thread pops them; wake it */
    for (size_t i = 0; i < q->count; i++) atomic_store(&q->fifo[(q->head + i) % q->p.capacity]->cancel, true);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    if (!was && q->thread_started) {
        pthread_join(q->thread, NULL);
        q->thread_started = false;
    }
}

void sdxl_queue_free(sdxl_queue *q) {
    if (!q) return;
    sdxl_queue_shutdown(q);
    for (int i = 0; i < RECENT; i++) sdxl_job_release(q->recent[i]);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    sdxl_free(q->fifo);
    sdxl_free(q);
}

sdxl_status sdxl_queue_submit(sdxl_queue *q, sdxl_request *req, const sdxl_job_callbacks *cb, sdxl_job **out,
                              bool *full, sdxl_error *err) {
    if (full) *full = false;
    if (!q || !req || !out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "queue: NULL argument");
    *out = NULL;
    sdxl_job *j = sdxl_calloc(1, sizeof *j);
    if (!j) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "queue: out of memory");
    atomic_init(&j->refs, 2); /* the queue's and the caller's */
    atomic_init(&j->queue, NULL);
    atomic_init(&j->cancel, false);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (cb) j->cb = *cb;
    j->submitted = sdxl_now_s();
    pthread_mutex_lock(&q->mu);
    q->stats.submitted++;
    if (q->shutdown || q->count == q->p.capacity) {
        bool shut = q->shutdown;
        if (!shut) q->stats.rejected_full++;
        pthread_mutex_unlock(&q->mu);
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        sdxl_free(j);
        if (shut) return sdxl_error_set(err, SDXL_STATUS_CANCELLED, "the service is shutting down");
        if (full) *full = true;
        return sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "the queue is full (%zu jobs waiting)", q->p.capacity);
    }
    j->req = *req; /* moved */
    memset(req, 0, sizeof *req);
    j->timeout_s = j->req.timeout_s > 0 ? j->req.timeout_s : q->p.default_timeout_s;
    q->fifo[(q->head + q->count) % q->p.capacity] = j;
    q->count++;
    atomic_store(&j->queue, q);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    *out = j;
    return SDXL_STATUS_OK;
}

size_t sdxl_queue_depth(const sdxl_queue *q) {
    pthread_mutex_lock((pthread_mutex_t *)&q->mu);
    size_t n = q->count;
    pthread_mutex_unlock((pthread_mutex_t *)&q->mu);
    return n;
}

sdxl_job *sdxl_queue_running(sdxl_queue *q) {
    pthread_mutex_lock(&q->mu);
    sdxl_job *j = q->running;
    sdxl_job_retain(j);
    pthread_mutex_unlock(&q->mu);
    return j;
}

sdxl_job *sdxl_queue_find(sdxl_queue *q, const char *id) {
    if (!q || !id || !*id) return NULL;
    sdxl_job *found = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->running && !strcmp(q->running->req.request_id, id)) found = q->running;
    for (size_t i = 0; !found && i < q->count; i++) {
        sdxl_job *j = q->fifo[(q->head + i) % q->p.capacity];
        if (!strcmp(j->req.request_id, id)) found = j;
    }
    for (int i = 0; !found && i < RECENT; i++)
        if (q->recent[i] && !strcmp(q->recent[i]->req.request_id, id)) found = q->recent[i];
    sdxl_job_retain(found);
    pthread_mutex_unlock(&q->mu);
    return found;
}

void sdxl_job_cancel(sdxl_job *j) {
    if (!j) return;
    atomic_store(&j->cancel, true);
    /* still queued: take it out now, so its client hears at once */
    struct sdxl_queue *q = atomic_load(&j->queue);
    if (!q) return;
    bool removed = false;
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < q->count && !removed; i++) {
        size_t at = (q->head + i) % q->p.capacity;
        if (q->fifo[at] != j) continue;
        for (size_t k = i; k + 1 < q->count; k++)
            q->fifo[(q->head + k) % q->p.capacity] = q->fifo[(q->head + k + 1) % q->p.capacity];
        q->count--;
        atomic_store(&j->queue, NULL);
        q->stats.cancelled++;
        remember(q, j);
        removed = true;
    }
    pthread_mutex_unlock(&q->mu);
    if (!removed) return; /* the compute thread took it meanwhile: it sees the flag */
    sdxl_error_set(&j->err, SDXL_STATUS_CANCELLED, "cancelled before it ran");
    finish(j, SDXL_JOB_CANCELLED);
    sdxl_job_release(j); /* the queue's reference */
}

void sdxl_queue_stats_get(const sdxl_queue *q, sdxl_queue_stats *out) {
    pthread_mutex_lock((pthread_mutex_t *)&q->mu);
    *out = q->stats;
    out->depth = q->count;
    pthread_mutex_unlock((pthread_mutex_t *)&q->mu);
}
