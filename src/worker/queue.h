/* queue.h - a bounded FIFO of generation jobs and the one compute thread
 * that runs them through the engine. Front ends (stdio worker, HTTP server)
 * submit and never wait on compute unless they choose to (sdxl_job_wait).
 *
 *     sdxl_queue *q;
 *     sdxl_queue_create(engine, 16, &q, &err);
 *     sdxl_job *j;
 *     bool full;
 *     if (sdxl_queue_submit(q, &req, NULL, &j, &full, &err)) ... full → 503 ...
 *     sdxl_job_wait(j, 0);                     // 0 = no timeout
 *     const sdxl_engine_result *r = sdxl_job_result(j);
 *     sdxl_job_release(j);
 *
 * Jobs are reference counted: the queue holds one reference until the job
 * is finished; every sdxl_queue_submit caller gets one (release it).
 * Identical requests give identical images whatever else is queued (the
 * engine is deterministic per request; seeds never come from shared
 * state).
 *
 * Cancel: sdxl_job_cancel on a queued job takes it out of the queue at
 * once (state CANCELLED, no work); on the running job the engine stops at
 * the next step (images of finished rounds are kept; A1111's interrupt). Timeout: a job whose
 * request has timeout_s (or the queue's default) is cancelled when it runs
 * longer, or has waited longer in the queue.
 *
 * Shutdown: sdxl_queue_shutdown stops accepting (submit → SHUTTING_DOWN),
 * cancels what is queued, lets the running job finish, joins the thread.
 *
 * Thread-safety: every function may be called from any thread. */
#ifndef SDXL_WORKER_QUEUE_H
#define SDXL_WORKER_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "worker/engine.h"
#include "worker/request.h"

typedef enum sdxl_job_state {
    SDXL_JOB_QUEUED = 0,
    SDXL_JOB_RUNNING,
    SDXL_JOB_DONE,      /* result available (possibly with failed adapters) */
    SDXL_JOB_FAILED,    /* error available */
    SDXL_JOB_CANCELLED, /* by cancel, timeout or shutdown; partial result available when it was running */
} sdxl_job_state;

const char *sdxl_job_state_name(sdxl_job_state s); /* "queued", "running", ... */

typedef struct sdxl_job sdxl_job;

typedef struct sdxl_job_callbacks {
    /* called on the compute thread: started, each step, finished (any end
     * state). Must not block long, must not call sdxl_job_wait. */
    void (*on_event)(void *user_data, sdxl_job *job);
    void *user_data;
} sdxl_job_callbacks;

typedef struct sdxl_queue_params {
    size_t capacity;          /* queued jobs (the running one not counted); default 16 */
    double default_timeout_s; /* 0 = none */
} sdxl_queue_params;

sdxl_queue_params sdxl_queue_default_params(void);

typedef struct sdxl_queue sdxl_queue;

/* Starts the compute thread. `e` must outlive the queue. */
sdxl_status sdxl_queue_create(sdxl_engine *e, const sdxl_queue_params *p, sdxl_queue **out, sdxl_error *err);
/* Shuts down (if not yet) and frees; outstanding job references stay valid
 * until released. NULL-safe. */
void sdxl_queue_free(sdxl_queue *q);
void sdxl_queue_shutdown(sdxl_queue *q);

/* Submit: takes over *req (zeroed on success; on failure the caller keeps
 * it). Errors: OUT_OF_MEMORY; a full queue is SDXL_STATUS_UNSUPPORTED with
 * *full set (the HTTP layer answers 503 + Retry-After); after shutdown
 * CANCELLED. cb may be NULL. */
sdxl_status sdxl_queue_submit(sdxl_queue *q, sdxl_request *req, const sdxl_job_callbacks *cb, sdxl_job **out,
                              bool *full, sdxl_error *err);

size_t sdxl_queue_depth(const sdxl_queue *q);      /* queued, not running */
sdxl_job *sdxl_queue_running(sdxl_queue *q);       /* a new reference to the running job, or NULL */
/* The job with this request_id among queued/running/recently finished ones (a new reference), or NULL. */
sdxl_job *sdxl_queue_find(sdxl_queue *q, const char *request_id);

typedef struct sdxl_queue_stats {
    uint64_t submitted, rejected_full, done, failed, cancelled;
    size_t depth;
    bool running;
    /* latency histograms (Prometheus style, cumulative counts per bucket,
     * seconds): queue wait, lora, encode, denoise, decode, total */
    uint64_t hist[6][12];
    double hist_sum[6];
} sdxl_queue_stats;
#define SDXL_QUEUE_HIST_BUCKETS 12
extern const double sdxl_queue_hist_bounds[SDXL_QUEUE_HIST_BUCKETS]; /* upper bounds, last = +Inf */
extern const char *const sdxl_queue_hist_names[6]; /* "queue", "lora", "encode", "denoise", "decode", "total" */
void sdxl_queue_stats_get(const sdxl_queue *q, sdxl_queue_stats *out);

/* ---- jobs ------------------------------------------------------------------------ */

void sdxl_job_retain(sdxl_job *j);
void sdxl_job_release(sdxl_job *j); /* NULL-safe */

sdxl_job_state sdxl_job_get_state(const sdxl_job *j);
const sdxl_request *sdxl_job_request(const sdxl_job *j);
/* Progress of a running job: round, rounds, step, total, it/s, seconds elapsed. */
void sdxl_job_progress(const sdxl_job *j, int *round, int *rounds, int *step, int *total, double *it_per_s,
                       double *elapsed_s);
/* Wait until the job ends; timeout_s <= 0 waits forever. true when ended. */
bool sdxl_job_wait(sdxl_job *j, double timeout_s);
/* Cancel (queued: removed at once, never runs; running: stops at the next
 * step). Not after the queue was freed. */
void sdxl_job_cancel(sdxl_job *j);
/* After the job ended: the result (DONE, or CANCELLED while running), or
 * NULL; the error (FAILED / CANCELLED). Owned by the job. */
const sdxl_engine_result *sdxl_job_result(const sdxl_job *j);
const sdxl_error *sdxl_job_error(const sdxl_job *j);

#endif
