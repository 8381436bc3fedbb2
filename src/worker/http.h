/* http.h - the HTTP front end: `sdxl serve`. libmicrohttpd's event loop
 * (a few I/O threads, epoll) parses requests and answers them; generation
 * goes through the bounded queue (queue.h) to the one compute thread. A
 * handler never waits on compute: after submitting a job it suspends its
 * connection (MHD_suspend_connection) and the job's end resumes it, so an
 * I/O thread is free for other clients the whole time.
 *
 *     sdxl_http_params p = sdxl_http_default_params();
 *     p.port = 0;                                   // pick a free port
 *     sdxl_http_server *s;
 *     sdxl_http_server_create(engine, queue, &p, &s, &err);
 *     printf("port %d\n", sdxl_http_server_port(s));
 *     ... SIGTERM ...
 *     sdxl_http_server_shutdown(s);   // stop accepting, finish the running job, answer everyone
 *     sdxl_http_server_free(s);
 *
 * ---- native API ------------------------------------------------------------
 *
 *   POST /v1/generate       body: the request JSON of worker/request.h. Answers
 *                           when the job ends: 200 with the engine's result JSON
 *                           (engine.h sdxl_engine_result_json; "output":
 *                           "base64" puts the PNGs inline); a job stopped by
 *                           POST /v1/cancel or /v1/interrupt answers 200 with
 *                           "status": "cancelled" and the images finished so far.
 *   POST /v1/cancel         {"request_id": "..."}: cancels that queued or running
 *                           job ({"status": "ok", "state": ...}; 404 when unknown).
 *   POST /v1/interrupt      cancels the running job (A1111's interrupt).
 *   GET  /v1/loras          {"status": "ok", "count", "loras": [{"name", "file_name",
 *                           "category", "path", "rel_path", "size", "container",
 *                           "type", "rank", "base_model", "network_module",
 *                           "network_dim", "network_alpha", "output_name",
 *                           "triggers": [...], "error"}]}
 *   POST /v1/loras/refresh  rescans the LoRA directories: {"status": "ok", "changes", "count"}
 *   GET  /v1/models         {"status": "ok", "default", "models": [{"name", "path", "loaded"}]}
 *   GET  /v1/health         {"status": "ok", "model", "queue_depth", "running",
 *                           "models_loaded"}; 503 {"status": "shutting_down", ...}
 *                           once shutdown has begun.
 *   GET  /metrics           Prometheus text format 0.0.4: sdxl_requests_total{endpoint,code},
 *                           sdxl_queue_depth, sdxl_queue_running, sdxl_jobs_total{state},
 *                           sdxl_stage_seconds{stage} histograms (queue, lora, encode,
 *                           denoise, decode, total), sdxl_lora_cache_{hits,misses,
 *                           evictions}_total, sdxl_lora_cache_{bytes,entries},
 *                           sdxl_engine_memory_bytes{kind=rss|live|peak|mapped|models},
 *                           sdxl_engine_runs_total{result}, sdxl_http_connections.
 *
 * Errors (native routes): {"status": "error", "request_id", "error": {"code",
 * "message"}} with 400 bad_request (the message names the field path: "lora.
 * models[1].weight: expected a number, got a string"; malformed JSON names the
 * byte), 404 not_found (route, unknown model), 405 method_not_allowed (+Allow),
 * 413 too_large (body over max_body_bytes, answered as soon as Content-Length
 * says so), 503 queue_full / shutting_down (+Retry-After), 504 timeout (the
 * job ran or waited past its timeout_s), 500 internal / out_of_memory.
 * A request's output_dir must be a relative path without ".." that stays
 * inside the engine's output_dir (symlinks included); anything else is 400.
 *
 * ---- A1111 API (a1111.h) -----------------------------------------------------
 *
 *   POST /sdapi/v1/txt2img, /sdapi/v1/img2img   {"images", "parameters", "info"}
 *   GET  /sdapi/v1/progress                     {"progress", "eta_relative", "state", ...}
 *   POST /sdapi/v1/interrupt                    {} ; the running job returns what it finished
 *   POST /sdapi/v1/skip                         {} (accepted, does nothing)
 *   GET  /sdapi/v1/loras, POST /sdapi/v1/refresh-loras
 *   GET  /sdapi/v1/samplers, /sdapi/v1/schedulers, /sdapi/v1/sd-models,
 *        /sdapi/v1/scripts, /sdapi/v1/upscalers, /sdapi/v1/sd-vae
 *   POST /sdapi/v1/refresh-checkpoints
 *   GET/POST /sdapi/v1/options
 * Their errors are A1111's shapes: 422 {"detail": [{"loc": ["body", field],
 * "msg", "type"}], "error": "RequestValidationError", ...} for wrong types
 * and out-of-range values, {"error", "detail", "body", "errors"} otherwise.
 *
 * ---- limits and hostile clients ------------------------------------------------
 *
 * Bodies are read up to max_body_bytes (413 beyond); a connection idle
 * for connection_timeout_s is closed by MHD, and one whose request (headers
 * and body) has not fully arrived request_read_timeout_s after it began is
 * cut off by the server's reaper (a slowloris sending one byte a second is
 * not idle, but is not served either). max_connections caps connections,
 * max_connections_per_ip those of one address. A full queue answers 503
 * with Retry-After: retry_after_s, immediately.
 *
 * Shutdown (sdxl_http_server_shutdown, what `sdxl serve` does on SIGTERM /
 * SIGINT): the listening socket is closed at once; new requests on open
 * connections get 503; queued jobs are cancelled (their clients get 503);
 * the running job finishes and its client gets the result; then the loop
 * stops (after at most drain_timeout_s for the last responses to go out).
 *
 * Thread-safety: create/shutdown/free from one thread; sdxl_http_server_port
 * and _stats from any. The engine and queue must outlive the server.
 */
#ifndef SDXL_WORKER_HTTP_H
#define SDXL_WORKER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "worker/engine.h"
#include "worker/queue.h"

typedef struct sdxl_http_params {
    char host[256];             /* address to bind: "127.0.0.1" (default), "0.0.0.0", "::1" ... */
    int port;                   /* 7860 (A1111's); 0 = any free port (see sdxl_http_server_port) */
    int threads;                /* I/O threads; 4. They never run compute. */
    size_t max_body_bytes;      /* 32 MiB */
    int connection_timeout_s;   /* idle connections closed after this; 30 */
    int request_read_timeout_s; /* a request must arrive whole within this; 0 = 2 x connection_timeout_s */
    int max_connections;        /* 1024 (`sdxl serve` raises RLIMIT_NOFILE to fit) */
    int max_connections_per_ip; /* 256; 0 = no limit */
    int retry_after_s;          /* Retry-After of 503; 5 */
    double drain_timeout_s;     /* shutdown waits this long for responses to go out; 10 */
    bool enable_a1111;          /* the /sdapi/v1 routes; true */
    bool quiet;                 /* no access log lines (debug level) */
} sdxl_http_params;

sdxl_http_params sdxl_http_default_params(void);

typedef struct sdxl_http_server sdxl_http_server;

/* Bind and start serving. Errors: INVALID_ARG (params), IO (cannot bind:
 * the message says host:port and why), OUT_OF_MEMORY. */
sdxl_status sdxl_http_server_create(sdxl_engine *engine, sdxl_queue *queue, const sdxl_http_params *p,
                                    sdxl_http_server **out, sdxl_error *err);

/* The port bound (the chosen one when params.port was 0). */
int sdxl_http_server_port(const sdxl_http_server *s);

/* Stop accepting, cancel queued jobs, let the running one finish and its
 * client get the answer, then stop the event loop. Shuts the queue down
 * (sdxl_queue_shutdown). Idempotent. */
void sdxl_http_server_shutdown(sdxl_http_server *s);

/* Shuts down if not yet, frees. NULL-safe. */
void sdxl_http_server_free(sdxl_http_server *s);

typedef struct sdxl_http_stats {
    uint64_t requests;      /* answered */
    uint64_t rejected_full; /* 503 because the queue was full */
    uint64_t too_large;     /* 413 */
    uint64_t reaped;        /* connections cut off by request_read_timeout_s */
    uint64_t connections;   /* open now */
} sdxl_http_stats;
void sdxl_http_server_stats(const sdxl_http_server *s, sdxl_http_stats *out);

/* ---- the "server" block of the worker config -------------------------------------
 *
 *   {"lora_config": {...},
 *    "server": {"host": "127.0.0.1", "port": 7860, "threads": 4, "queue_size": 16,
 *               "max_body_mb": 32, "timeout_s": 0, "connection_timeout_s": 30,
 *               "request_read_timeout_s": 60, "max_connections": 1024,
 *               "max_connections_per_ip": 256, "retry_after_s": 5,
 *               "output_dir": "outputs", "model": "path/to/default",
 *               "models": {"name": "path", ...}, "model_memory_mb": 0,
 *               "compute_threads": 0, "a1111": true}}
 * Every key optional; unknown keys are errors naming the path. Relative
 * paths (output_dir, model, models) are taken relative to base_dir (the
 * config file's folder). timeout_s is the default per-request timeout (0 =
 * none); a request's own timeout_s wins. */
typedef struct sdxl_http_server_config {
    sdxl_http_params http;
    size_t queue_size;
    double timeout_s;
    bool has_output_dir, has_model;
    char output_dir[1024];
    char model[4096];
    sdxl_engine_model_entry models[SDXL_ENGINE_MAX_MODELS];
    int n_models;
    size_t model_memory_mb;
    int compute_threads;
} sdxl_http_server_config;

/* Defaults: sdxl_http_default_params(), queue_size 16, the rest 0/"". */
sdxl_http_server_config sdxl_http_server_default_config(void);

/* Parse the "server" object (`server` is its JSON text, the block itself). */
sdxl_status sdxl_http_server_config_parse(const char *json, size_t len, const char *base_dir,
                                          sdxl_http_server_config *cfg, sdxl_error *err);

#endif
