/* http.c - the HTTP server (see http.h): libmicrohttpd's epoll loop with a
 * small pool of I/O threads, requests routed to the native API or the
 * A1111 mapping (a1111.h), generation through the queue with the
 * connection suspended until the job's end resumes it. */
#include "worker/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/log.h"
#include "io/json.h"
#include "worker/a1111.h"

sdxl_http_params sdxl_http_default_params(void) {
    sdxl_http_params p;
    memset(&p, 0, sizeof p);
    snprintf(p.host, sizeof p.host, "127.0.0.1");
    p.port = 7860;
    p.threads = 4;
    p.max_body_bytes = (size_t)32 << 20;
    p.connection_timeout_s = 30;
    p.request_read_timeout_s = 0;
    p.max_connections = 1024;
    p.max_connections_per_ip = 256;
    p.retry_after_s = 5;
    p.drain_timeout_s = 10;
    p.enable_a1111 = true;
    return p;
}

/* ---- routes ------------------------------------------------------------------------- */

enum { M_GET = 1, M_POST = 2 };

typedef enum {
    R_UNKNOWN = 0,
    R_HEALTH,
    R_METRICS,
    R_GENERATE,
    R_CANCEL,
    R_INTERRUPT,
    R_LORAS,
    R_LORAS_REFRESH,
    R_MODELS,
    A_TXT2IMG,
    A_IMG2IMG,
    A_PROGRESS,
    A_INTERRUPT,
    A_SKIP,
    A_LORAS,
    A_REFRESH_LORAS,
    A_SAMPLERS,
    A_SCHEDULERS,
    A_SD_MODELS,
    A_REFRESH_CKPT,
    A_OPTIONS,
    A_SCRIPTS,
    A_UPSCALERS,
    A_SD_VAE,
    R_COUNT_
} route_id;

static const struct {
    const char *path;
    route_id id;
    int methods;
} ROUTES[] = {
    {"/v1/health", R_HEALTH, M_GET},
    {"/health", R_HEALTH, M_GET},
    {"/metrics", R_METRICS, M_GET},
    {"/v1/generate", R_GENERATE, M_POST},
    {"/v1/cancel", R_CANCEL, M_POST},
    {"/v1/interrupt", R_INTERRUPT, M_POST},
    {"/v1/loras", R_LORAS, M_GET},
    {"/v1/loras/refresh", R_LORAS_REFRESH, M_POST},
    {"/v1/models", R_MODELS, M_GET},
    {"/sdapi/v1/txt2img", A_TXT2IMG, M_POST},
    {"/sdapi/v1/img2img", A_IMG2IMG, M_POST},
    {"/sdapi/v1/progress", A_PROGRESS, M_GET},
    {"/sdapi/v1/interrupt", A_INTERRUPT, M_POST},
    {"/sdapi/v1/skip", A_SKIP, M_POST},
    {"/sdapi/v1/loras", A_LORAS, M_GET},
    {"/sdapi/v1/refresh-loras", A_REFRESH_LORAS, M_POST},
    {"/sdapi/v1/samplers", A_SAMPLERS, M_GET},
    {"/sdapi/v1/schedulers", A_SCHEDULERS, M_GET},
    {"/sdapi/v1/sd-models", A_SD_MODELS, M_GET},
    {"/sdapi/v1/refresh-checkpoints", A_REFRESH_CKPT, M_POST},
    {"/sdapi/v1/options", A_OPTIONS, M_GET | M_POST},
    {"/sdapi/v1/scripts", A_SCRIPTS, M_GET},
    {"/sdapi/v1/upscalers", A_UPSCALERS, M_GET},
    {"/sdapi/v1/sd-vae", A_SD_VAE, M_GET},
};
#define N_ROUTES (sizeof ROUTES / sizeof ROUTES[0])

/* the endpoint label of the metrics (first path of each route id) */
static const char *route_label(route_id id) {
    for (size_t i = 0; i < N_ROUTES; i++)
        if (ROUTES[i].id == id) return ROUTES[i].path;
    return "other";
}

static bool is_a1111(route_id id) {
    return id >= A_TXT2IMG;
}

static const unsigned CODES[] = {200, 400, 404, 405, 413, 422, 500, 503, 504};
#define N_CODES (sizeof CODES / sizeof CODES[0])

/* ---- state ---------------------------------------------------------------------------- */

typedef struct conn_track conn_track;
typedef struct req_ctx req_ctx;

struct conn_track {
    int fd;
    double since; /* when the current request began to arrive */
    bool reading; /* headers or body still arriving */
    bool reaped;
    req_ctx *cur;
    conn_track *prev, *next;
};

struct sdxl_http_server {
    sdxl_engine *engine;
    sdxl_queue *queue;
    sdxl_http_params p;
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu; /* the lists below, the A1111 options and state */
    req_ctx *waiting;   /* requests with a job */
    conn_track *conns;
    sdxl_a1111_options opts;
    bool a1111_interrupted;
    const sdxl_job *last_started;
    atomic_bool shutting_down;
    bool shut_done;
    pthread_t reaper;
    bool reaper_started, reaper_stop;
    pthread_cond_t reaper_cv;
    atomic_long active; /* requests between their first call and their completion */
    atomic_long body_bytes;
    atomic_ullong ids;
    atomic_ullong counts[R_COUNT_][N_CODES + 1];
    atomic_ullong n_requests, n_full, n_too_large, n_reaped, n_conns;
};

struct req_ctx {
    sdxl_http_server *srv;
    struct MHD_Connection *conn;
    conn_track *ct;
    route_id route;
    int method;
    char *body;
    size_t len, cap;
    bool too_large, responded, body_done;
    unsigned code;
    double t0;
    /* a job */
    pthread_mutex_t mu;
    atomic_int refs;
    bool has_job, suspended, finished;
    bool user_cancelled; /* srv->mu */
    sdxl_job *job;
    bool has_call;
    sdxl_a1111_call call;
    char job_timestamp[16];
    req_ctx *prev, *next; /* srv->waiting */
};

static void ctx_unref(req_ctx *r) {
    if (atomic_fetch_sub(&r->refs, 1) != 1) return;
    if (r->cap) atomic_fetch_sub(&r->srv->body_bytes, (long)r->cap);
    free(r->body);
    sdxl_job_release(r->job);
    if (r->has_call) sdxl_a1111_call_free(&r->call);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void waiting_remove(sdxl_http_server *s, req_ctx *r) { /* s->mu held */
    if (!r->prev && s->waiting != r) return;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->waiting = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* ---- responses ---------------------------------------------------------------------- */

static enum MHD_Result respond(req_ctx *r, unsigned code, char *body, const char *ctype) {
    static const char oom[] =
        "{\"status\":\"error\",\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}";
    struct MHD_Response *resp;
    if (!body) {
        code = 500;
        resp = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        ctype = "application/json";
    } else {
        resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (!resp) free(body);
    }
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype ? ctype : "application/json");
    if (code == 503) {
        char ra[32];
        snprintf(ra, sizeof ra, "%d", r->srv->p.retry_after_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (code == 405) {
        char allow[32] = "";
        for (size_t i = 0; i < N_ROUTES; i++)
            if (ROUTES[i].id == r->route)
                snprintf(allow, sizeof allow, "%s%s%s", ROUTES[i].methods & M_GET ? "GET, HEAD" : "",
                         (ROUTES[i].methods & M_GET) && (ROUTES[i].methods & M_POST) ? ", " : "",
                         ROUTES[i].methods & M_POST ? "POST" : "");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    if (code == 413 || (atomic_load(&r->srv->shutting_down) && code == 503))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, code, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) {
        r->responded = true;
        r->code = code;
    }
    return ret;
}

static char *print_free(cJSON *j) {
    if (!j) return NULL;
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static char *native_error(const char *request_id, const char *code, const char *message, const char *field) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "status", "error");
    cJSON_AddStringToObject(o, "request_id", request_id ? request_id : "");
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", message);
    if (field && *field) cJSON_AddStringToObject(e, "field", field);
    return print_free(o);
}

/* An error in the shape of the route's API. */
static enum MHD_Result respond_error(req_ctx *r, unsigned code, const char *ecode, const char *msg) {
    if (!is_a1111(r->route)) return respond(r, code, native_error(NULL, ecode, msg, NULL), NULL);
    if (code == 422) return respond(r, code, sdxl_a1111_validation_error_json(msg), NULL);
    return respond(r, code, sdxl_a1111_error_json(code == 500 ? "RuntimeError" : "HTTPException", msg), NULL);
}

/* ---- small JSON bodies ------------------------------------------------------------------ */

static char *health_json(sdxl_http_server *s, bool shutting) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    sdxl_queue_stats qs;
    sdxl_queue_stats_get(s->queue, &qs);
    sdxl_engine_stats es;
    sdxl_engine_stats_get(s->engine, &es);
    cJSON_AddStringToObject(o, "status", shutting ? "shutting_down" : "ok");
    cJSON_AddStringToObject(o, "model", sdxl_engine_default_model_name(s->engine));
    cJSON_AddNumberToObject(o, "queue_depth", (double)qs.depth);
    cJSON_AddBoolToObject(o, "running", qs.running);
    cJSON_AddNumberToObject(o, "models_loaded", (double)es.models_loaded);
    cJSON_AddStringToObject(o, "version", SDXL_VERSION_STRING);
    return print_free(o);
}

static char *models_json(sdxl_http_server *s) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "default", sdxl_engine_default_model_name(s->engine));
    cJSON *arr = cJSON_AddArrayToObject(o, "models");
    int n = sdxl_engine_model_count(s->engine);
    for (int i = 0; i < n; i++) {
        sdxl_engine_model_entry m;
        bool loaded = false;
        if (!sdxl_engine_model_at(s->engine, i, &m, &loaded)) continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", m.name);
        cJSON_AddStringToObject(e, "path", m.path);
        cJSON_AddBoolToObject(e, "loaded", loaded);
        cJSON_AddItemToArray(arr, e);
    }
    return print_free(o);
}

static char *loras_json(sdxl_lora_registry *reg) {
    cJSON *o = cJSON_CreateObject();
    sdxl_lora_info *info = malloc(sizeof *info);
    if (!o || !info) {
        cJSON_Delete(o);
        free(info);
        return NULL;
    }
    cJSON_AddStringToObject(o, "status", "ok");
    size_t n = sdxl_lora_registry_count(reg);
    cJSON *arr = cJSON_CreateArray();
    size_t listed = 0;
    for (size_t i = 0; i < n; i++) {
        if (sdxl_lora_registry_get(reg, i, info, NULL)) continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", info->name);
        cJSON_AddStringToObject(e, "file_name", info->file_name);
        cJSON_AddStringToObject(e, "category", info->category);
        cJSON_AddStringToObject(e, "path", info->path);
        cJSON_AddStringToObject(e, "rel_path", info->rel_path);
        cJSON_AddNumberToObject(e, "size", (double)info->size);
        cJSON_AddStringToObject(e, "container", info->container);
        cJSON_AddStringToObject(e, "type", info->adapter);
        cJSON_AddNumberToObject(e, "rank", (double)info->rank);
        cJSON_AddStringToObject(e, "base_model", info->base_model);
        cJSON_AddStringToObject(e, "network_module", info->network_module);
        cJSON_AddNumberToObject(e, "network_dim", (double)info->network_dim);
        cJSON_AddNumberToObject(e, "network_alpha", info->network_alpha);
        cJSON_AddStringToObject(e, "output_name", info->output_name);
        cJSON *t = cJSON_AddArrayToObject(e, "triggers");
        for (int k = 0; k < info->n_triggers; k++)
            cJSON_AddItemToArray(t, cJSON_CreateString(info->triggers[k]));
        cJSON_AddStringToObject(e, "error", info->error);
        cJSON_AddItemToArray(arr, e);
        listed++;
    }
    free(info);
    cJSON_AddNumberToObject(o, "count", (double)listed);
    cJSON_AddItemToObject(o, "loras", arr);
    return print_free(o);
}

/* ---- metrics (Prometheus text format 0.0.4) ---------------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
}

static char *metrics_text(sdxl_http_server *s) {
    sbuf b = {0};
    sb_printf(&b, "# HELP sdxl_requests_total HTTP requests answered, by endpoint and status code.\n"
                  "# TYPE sdxl_requests_total counter\n");
    for (int r = 0; r < R_COUNT_; r++)
        for (size_t c = 0; c <= N_CODES; c++) {
            unsigned long long n = atomic_load(&s->counts[r][c]);
            if (!n) continue;
            char code[16];
            if (c < N_CODES)
                snprintf(code, sizeof code, "%u", CODES[c]);
            else
                snprintf(code, sizeof code, "other");
            sb_printf(&b, "sdxl_requests_total{endpoint=\"%s\",code=\"%s\"} %llu\n", route_label((route_id)r),
                      code, n);
        }
    sdxl_queue_stats q;
    sdxl_queue_stats_get(s->queue, &q);
    sb_printf(&b,
              "# HELP sdxl_queue_depth Jobs waiting in the queue (the running one not counted).\n"
              "# TYPE sdxl_queue_depth gauge\nsdxl_queue_depth %zu\n",
              q.depth);
    sb_printf(&b,
              "# HELP sdxl_queue_running Whether a job is running.\n"
              "# TYPE sdxl_queue_running gauge\nsdxl_queue_running %d\n",
              q.running ? 1 : 0);
    sb_printf(&b,
              "# HELP sdxl_jobs_total Jobs by outcome.\n# TYPE sdxl_jobs_total counter\n"
              "sdxl_jobs_total{state=\"submitted\"} %llu\nsdxl_jobs_total{state=\"rejected_full\"} %llu\n"
              "sdxl_jobs_total{state=\"done\"} %llu\nsdxl_jobs_total{state=\"failed\"} %llu\n"
              "sdxl_jobs_total{state=\"cancelled\"} %llu\n",
              (unsigned long long)q.submitted, (unsigned long long)q.rejected_full,
              (unsigned long long)q.done, (unsigned long long)q.failed, (unsigned long long)q.cancelled);
    sb_printf(&b, "# HELP sdxl_stage_seconds Time per stage of a job (queue wait, lora, encode, denoise, "
                  "decode, total).\n"
                  "# TYPE sdxl_stage_seconds histogram\n");
    for (int h = 0; h < 6; h++) {
        for (int k = 0; k < SDXL_QUEUE_HIST_BUCKETS; k++) {
            char le[32];
            if (k == SDXL_QUEUE_HIST_BUCKETS - 1)
                snprintf(le, sizeof le, "+Inf");
            else
                snprintf(le, sizeof le, "%g", sdxl_queue_hist_bounds[k]);
            sb_printf(&b, "sdxl_stage_seconds_bucket{stage=\"%s\",le=\"%s\"} %llu\n",
                      sdxl_queue_hist_names[h], le, (unsigned long long)q.hist[h][k]);
        }
        sb_printf(&b, "sdxl_stage_seconds_sum{stage=\"%s\"} %.6f\n", sdxl_queue_hist_names[h], q.hist_sum[h]);
        sb_printf(&b, "sdxl_stage_seconds_count{stage=\"%s\"} %llu\n", sdxl_queue_hist_names[h],
                  (unsigned long long)q.hist[h][SDXL_QUEUE_HIST_BUCKETS - 1]);
    }
    sdxl_engine_stats e;
    sdxl_engine_stats_get(s->engine, &e);
    sb_printf(&b,
              "# HELP sdxl_lora_cache_hits_total LoRA adapter cache hits.\n# TYPE sdxl_lora_cache_hits_total "
              "counter\n"
              "sdxl_lora_cache_hits_total %llu\n"
              "# HELP sdxl_lora_cache_misses_total LoRA adapter cache misses.\n# TYPE "
              "sdxl_lora_cache_misses_total counter\n"
              "sdxl_lora_cache_misses_total %llu\n"
              "# HELP sdxl_lora_cache_evictions_total LoRA adapters evicted from the cache.\n"
              "# TYPE sdxl_lora_cache_evictions_total counter\nsdxl_lora_cache_evictions_total %llu\n"
              "# HELP sdxl_lora_cache_bytes Bytes of LoRA adapters kept in the cache.\n"
              "# TYPE sdxl_lora_cache_bytes gauge\nsdxl_lora_cache_bytes %zu\n"
              "# HELP sdxl_lora_cache_entries LoRA adapters kept in the cache.\n"
              "# TYPE sdxl_lora_cache_entries gauge\nsdxl_lora_cache_entries %zu\n",
              (unsigned long long)e.lora_cache.hits, (unsigned long long)e.lora_cache.misses,
              (unsigned long long)e.lora_cache.evictions, e.lora_cache.bytes, e.lora_cache.entries);
    sb_printf(&b,
              "# HELP sdxl_engine_memory_bytes Memory of the engine by kind.\n# TYPE "
              "sdxl_engine_memory_bytes gauge\n"
              "sdxl_engine_memory_bytes{kind=\"rss\"} %lld\nsdxl_engine_memory_bytes{kind=\"live\"} %lld\n"
              "sdxl_engine_memory_bytes{kind=\"peak\"} %lld\nsdxl_engine_memory_bytes{kind=\"mapped\"} %lld\n"
              "sdxl_engine_memory_bytes{kind=\"models\"} %zu\n",
              (long long)e.rss_bytes, (long long)e.engine_live_bytes, (long long)e.engine_peak_bytes,
              (long long)e.mapped_bytes, e.model_bytes);
    sb_printf(&b,
              "# HELP sdxl_models_loaded Models loaded now.\n# TYPE sdxl_models_loaded "
              "gauge\nsdxl_models_loaded %zu\n",
              e.models_loaded);
    sb_printf(&b,
              "# HELP sdxl_engine_runs_total Engine runs by result.\n# TYPE sdxl_engine_runs_total counter\n"
              "sdxl_engine_runs_total{result=\"all\"} %llu\nsdxl_engine_runs_total{result=\"failed\"} %llu\n"
              "sdxl_engine_runs_total{result=\"cancelled\"} %llu\n",
              (unsigned long long)e.runs, (unsigned long long)e.failures, (unsigned long long)e.cancels);
    sb_printf(&b,
              "# HELP sdxl_http_connections Open HTTP connections.\n# TYPE sdxl_http_connections gauge\n"
              "sdxl_http_connections %llu\n"
              "# HELP sdxl_http_reaped_total Connections cut off for sending their request too slowly.\n"
              "# TYPE sdxl_http_reaped_total counter\nsdxl_http_reaped_total %llu\n",
              (unsigned long long)atomic_load(&s->n_conns), (unsigned long long)atomic_load(&s->n_reaped));
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---- jobs ----------------------------------------------------------------------------------- */

/* Compute thread (or any): a job event. Only the end matters here: the
 * connection waiting for it is resumed. */
static void on_job_event(void *ud, sdxl_job *job) {
    req_ctx *r = ud;
    sdxl_job_state st = sdxl_job_get_state(job);
    if (st == SDXL_JOB_RUNNING) {
        sdxl_http_server *s = r->srv;
        pthread_mutex_lock(&s->mu);
        if (s->last_started != job) {
            s->last_started = job;
            s->a1111_interrupted = false;
            time_t now = time(NULL);
            struct tm tmv;
            localtime_r(&now, &tmv);
            strftime(r->job_timestamp, sizeof r->job_timestamp, "%Y%m%d%H%M%S", &tmv);
        }
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (st == SDXL_JOB_QUEUED) return;
    pthread_mutex_lock(&r->mu);
    bool already = r->finished;
    r->finished = true;
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
    if (!already) ctx_unref(r); /* the job's reference */
}

/* The answer of a finished job. */
static enum MHD_Result respond_job(req_ctx *r) {
    sdxl_http_server *s = r->srv;
    sdxl_job *j = r->job;
    pthread_mutex_lock(&s->mu);
    bool user_cancelled = r->user_cancelled;
    waiting_remove(s, r);
    pthread_mutex_unlock(&s->mu);
    sdxl_job_state st = sdxl_job_get_state(j);
    const sdxl_engine_result *res = sdxl_job_result(j);
    const sdxl_error *e = sdxl_job_error(j);
    const sdxl_request *req = sdxl_job_request(j);
    const char *msg = e && e->msg[0] ? e->msg : "failed";
    if (st == SDXL_JOB_DONE || (st == SDXL_JOB_CANCELLED && res && user_cancelled)) {
        if (r->has_call) return respond(r, 200, sdxl_a1111_result_json(&r->call, req, res), NULL);
        return respond(r, 200, sdxl_engine_result_json(req, res), NULL);
    }
    if (st == SDXL_JOB_CANCELLED) {
        if (user_cancelled) { /* cancelled while queued: nothing ran */
            if (r->has_call) {
                sdxl_engine_result empty;
                memset(&empty, 0, sizeof empty);
                snprintf(empty.model, sizeof empty.model, "%s",
                         req->model[0] ? req->model : sdxl_engine_default_model_name(s->engine));
                empty.cancelled = true;
                return respond(r, 200, sdxl_a1111_result_json(&r->call, req, &empty), NULL);
            }
            cJSON *o = cJSON_CreateObject();
            if (o) {
                cJSON_AddStringToObject(o, "request_id", req->request_id);
                cJSON_AddStringToObject(o, "status", "cancelled");
                cJSON_AddArrayToObject(o, "images");
                cJSON_AddStringToObject(o, "message", msg);
            }
            return respond(r, 200, print_free(o), NULL);
        }
        bool shut = atomic_load(&s->shutting_down) && !res;
        unsigned code = shut ? 503 : 504;
        const char *ecode = shut ? "shutting_down" : "timeout";
        if (r->has_call) return respond_error(r, code, ecode, msg);
        return respond(r, code, native_error(req->request_id, ecode, msg, NULL), NULL);
    }
    unsigned code = 500;
    const char *ecode = "internal";
    if (e) switch (e->status) {
        case SDXL_STATUS_NOT_FOUND: code = 404, ecode = "not_found"; break;
        case SDXL_STATUS_BAD_INPUT:
        case SDXL_STATUS_INVALID_ARG: code = r->has_call ? 422 : 400, ecode = "invalid_value"; break;
        case SDXL_STATUS_OUT_OF_MEMORY: ecode = "out_of_memory"; break;
        case SDXL_STATUS_IO: ecode = "io"; break;
        default: break;
        }
    if (r->has_call) {
        if (code == 422) {
            char m[SDXL_ERROR_MSG_MAX + 16];
            snprintf(m, sizeof m, "request: %s", msg);
            return respond(r, 422, sdxl_a1111_validation_error_json(m), NULL);
        }
        return respond(r, code, sdxl_a1111_error_json(code == 404 ? "HTTPException" : "RuntimeError", msg),
                       NULL);
    }
    return respond(r, code, native_error(req->request_id, ecode, msg, NULL), NULL);
}

/* Submit and suspend until the job ends. Takes over *req. */
static enum MHD_Result submit(req_ctx *r, sdxl_request *req) {
    sdxl_http_server *s = r->srv;
    /* the body is parsed: do not keep it while the job waits */
    if (r->cap) atomic_fetch_sub(&s->body_bytes, (long)r->cap);
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    if (atomic_load(&s->shutting_down)) {
        sdxl_request_free(req);
        return respond_error(r, 503, "shutting_down", "the server is shutting down");
    }
    atomic_fetch_add(&r->refs, 1); /* the job's */
    pthread_mutex_lock(&s->mu);
    r->has_job = true;
    r->prev = NULL;
    r->next = s->waiting;
    if (s->waiting) s->waiting->prev = r;
    s->waiting = r;
    pthread_mutex_unlock(&s->mu);
    sdxl_job_callbacks cb = {on_job_event, r};
    sdxl_job *job = NULL;
    bool full = false;
    sdxl_error err = {0};
    char rid[128];
    snprintf(rid, sizeof rid, "%s", req->request_id);
    sdxl_status st = sdxl_queue_submit(s->queue, req, &cb, &job, &full, &err);
    if (st) {
        sdxl_request_free(req);
        pthread_mutex_lock(&s->mu);
        r->has_job = false;
        waiting_remove(s, r);
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_sub(&r->refs, 1);
        if (full) {
            atomic_fetch_add(&s->n_full, 1);
            return respond_error(r, 503, "queue_full", err.msg);
        }
        if (st == SDXL_STATUS_CANCELLED) return respond_error(r, 503, "shutting_down", err.msg);
        return respond_error(r, 500, st == SDXL_STATUS_OUT_OF_MEMORY ? "out_of_memory" : "internal", err.msg);
    }
    pthread_mutex_lock(&s->mu);
    r->job = job;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&r->mu);
    if (r->finished) {
        pthread_mutex_unlock(&r->mu);
        return respond_job(r);
    }
    MHD_suspend_connection(r->conn);
    r->suspended = true;
    pthread_mutex_unlock(&r->mu);
    SDXL_LOG_D("http: job %s queued", rid);
    return MHD_YES;
}

/* ---- output paths --------------------------------------------------------------------------- */

/* output_dir stays inside the engine's output folder, symlinks included. */
static bool output_dir_inside(const char *base, const char *rel, char *why, size_t n) {
    if (!rel[0] || !strcmp(rel, ".")) return true;
    if (rel[0] == '/') {
        snprintf(why, n, "must be a relative path");
        return false;
    }
    char comp[1024];
    snprintf(comp, sizeof comp, "%s", rel);
    for (char *t = strtok(comp, "/"); t; t = strtok(NULL, "/"))
        if (!strcmp(t, "..")) {
            snprintf(why, n, "must not contain \"..\"");
            return false;
        }
    char base_real[PATH_MAX];
    if (!realpath(base, base_real)) return true; /* nothing exists yet: nothing to escape through */
    char path[PATH_MAX + 1100];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    /* the deepest part that exists */
    for (;;) {
        char real[PATH_MAX];
        if (realpath(path, real)) {
            size_t bl = strlen(base_real);
            if (strncmp(real, base_real, bl) != 0 || (real[bl] != 0 && real[bl] != '/')) {
                snprintf(why, n, "leaves the server's output directory (through a link)");
                return false;
            }
            return true;
        }
        char *slash = strrchr(path, '/');
        if (!slash) return true;
        *slash = 0;
    }
}

/* ---- handlers -------------------------------------------------------------------------------- */

static enum MHD_Result handle_generate(req_ctx *r) {
    sdxl_http_server *s = r->srv;
    sdxl_request_limits lim = sdxl_engine_get_config(s->engine)->limits;
    lim.output_dir_any_path = false;
    sdxl_request req;
    sdxl_request_error rerr = {{0}, {0}};
    sdxl_error err = {0};
    sdxl_status st = sdxl_request_parse_ex(r->body ? r->body : "", r->len, &lim, &req, &rerr, &err);
    if (st) {
        if (st == SDXL_STATUS_OUT_OF_MEMORY)
            return respond(r, 500, native_error(NULL, "out_of_memory", err.msg, NULL), NULL);
        return respond(
            r, 400, native_error(NULL, rerr.code[0] ? rerr.code : "bad_request", err.msg, rerr.field), NULL);
    }
    char why[200];
    const sdxl_engine_config *ec = sdxl_engine_get_config(s->engine);
    if (req.output == SDXL_OUTPUT_PATH &&
        !output_dir_inside(ec->output_dir, req.output_dir, why, sizeof why)) {
        char m[1400];
        snprintf(m, sizeof m, "output_dir: %s", why);
        char *body = native_error(req.request_id, SDXL_REQUEST_ERR_INVALID_VALUE, m, "output_dir");
        sdxl_request_free(&req);
        return respond(r, 400, body, NULL);
    }
    if (req.output == SDXL_OUTPUT_PATH &&
        (strchr(req.request_id, '/') || !strcmp(req.request_id, "..") || !strcmp(req.request_id, "."))) {
        char *body = native_error(
            req.request_id, SDXL_REQUEST_ERR_INVALID_VALUE,
            "request_id: names the output files, so it must not contain '/' (or be \".\" / \"..\")",
            "request_id");
        sdxl_request_free(&req);
        return respond(r, 400, body, NULL);
    }
    if (!req.request_id[0])
        snprintf(req.request_id, sizeof req.request_id, "req-%lld-%llu", (long long)time(NULL),
                 (unsigned long long)atomic_fetch_add(&s->ids, 1));
    for (int i = 0; i < req.lora.n; i++)
        req.lora.entries[i].is_path = false; /* names only, from the network */
    return submit(r, &req);
}

static enum MHD_Result handle_a1111_gen(req_ctx *r, sdxl_a1111_kind kind) {
    sdxl_http_server *s = r->srv;
    sdxl_request_limits lim = sdxl_engine_get_config(s->engine)->limits;
    lim.output_dir_any_path = false;
    pthread_mutex_lock(&s->mu);
    sdxl_a1111_options opts = s->opts;
    pthread_mutex_unlock(&s->mu);
    char id[64];
    snprintf(id, sizeof id, "a1111-%lld-%llu", (long long)time(NULL),
             (unsigned long long)atomic_fetch_add(&s->ids, 1));
    sdxl_request req;
    sdxl_error err = {0};
    sdxl_status st = sdxl_a1111_call_parse(r->body ? r->body : "", r->len, kind, &opts, s->engine, &lim, id,
                                           &req, &r->call, &err);
    if (st == SDXL_STATUS_NOT_FOUND)
        return respond(r, 404, sdxl_a1111_error_json("HTTPException", err.msg), NULL);
    if (st == SDXL_STATUS_OUT_OF_MEMORY)
        return respond(r, 500, sdxl_a1111_error_json("RuntimeError", err.msg), NULL);
    if (st) return respond(r, 422, sdxl_a1111_validation_error_json(err.msg), NULL);
    r->has_call = true;
    for (int i = 0; i < r->call.n_warnings; i++)
        SDXL_LOG_I("a1111 %s: warning: %s", req.request_id, r->call.warnings[i]);
    if (strchr(req.request_id, '/')) { /* force_task_id names files when save_images */
        sdxl_request_free(&req);
        return respond(r, 422, sdxl_a1111_validation_error_json("force_task_id: must not contain '/'"), NULL);
    }
    for (int i = 0; i < req.lora.n; i++)
        req.lora.entries[i].is_path = false;
    return submit(r, &req);
}

/* cancel the job whose context is r (or any job) and remember who asked */
static void mark_cancelled(sdxl_http_server *s, const sdxl_job *job, bool a1111) {
    pthread_mutex_lock(&s->mu);
    for (req_ctx *w = s->waiting; w; w = w->next)
        if (w->job == job) w->user_cancelled = true;
    if (a1111) s->a1111_interrupted = true;
    pthread_mutex_unlock(&s->mu);
}

static enum MHD_Result handle_interrupt(req_ctx *r) {
    sdxl_http_server *s = r->srv;
    sdxl_job *job = sdxl_queue_running(s->queue);
    if (job) {
        mark_cancelled(s, job, true);
        sdxl_job_cancel(job);
    }
    char *body;
    if (r->route == A_INTERRUPT || r->route == A_SKIP) {
        body = malloc(3);
        if (body) memcpy(body, "{}", 3);
    } else {
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddStringToObject(o, "status", "ok");
            cJSON_AddBoolToObject(o, "interrupted", job != NULL);
            if (job) cJSON_AddStringToObject(o, "request_id", sdxl_job_request(job)->request_id);
        }
        body = print_free(o);
    }
    sdxl_job_release(job);
    return respond(r, 200, body, NULL);
}

static enum MHD_Result handle_cancel(req_ctx *r) {
    sdxl_http_server *s = r->srv;
    cJSON *root = cJSON_ParseWithLength(r->body ? r->body : "", r->len);
    const cJSON *id = root ? cJSON_GetObjectItemCaseSensitive(root, "request_id") : NULL;
    if (!root || !cJSON_IsObject(root) || !cJSON_IsString(id) || !id->valuestring[0]) {
        cJSON_Delete(root);
        return respond(r, 400,
                       native_error(NULL, "invalid_value", "request_id: expected {\"request_id\": \"...\"}",
                                    "request_id"),
                       NULL);
    }
    sdxl_job *job = sdxl_queue_find(s->queue, id->valuestring);
    if (!job) {
        char m[300];
        snprintf(m, sizeof m, "no job with request_id \"%.200s\"", id->valuestring);
        char *body = native_error(id->valuestring, "not_found", m, "request_id");
        cJSON_Delete(root);
        return respond(r, 404, body, NULL);
    }
    mark_cancelled(s, job, false);
    sdxl_job_cancel(job);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "status", "ok");
        cJSON_AddStringToObject(o, "request_id", id->valuestring);
        cJSON_AddStringToObject(o, "state", sdxl_job_state_name(sdxl_job_get_state(job)));
    }
    sdxl_job_release(job);
    cJSON_Delete(root);
    return respond(r, 200, print_free(o), NULL);
}

static enum MHD_Result handle_progress(req_ctx *r) {
    sdxl_http_server *s = r->srv;
    sdxl_a1111_progress p;
    memset(&p, 0, sizeof p);
    sdxl_job *job = sdxl_queue_running(s->queue);
    p.queued = (int)sdxl_queue_depth(s->queue);
    pthread_mutex_lock(&s->mu);
    p.interrupted = s->a1111_interrupted;
    p.job = "generate";
    for (req_ctx *w = job ? s->waiting : NULL; w; w = w->next)
        if (w->job == job) {
            p.job = !w->has_call                         ? "generate"
                    : w->call.kind == SDXL_A1111_TXT2IMG ? "scripts_txt2img"
                                                         : "scripts_img2img";
            memcpy(p.job_timestamp, w->job_timestamp, sizeof p.job_timestamp);
        }
    pthread_mutex_unlock(&s->mu);
    if (job) {
        int round = 0, rounds = 0, step = 0, total = 0;
        double its = 0, el = 0;
        sdxl_job_progress(job, &round, &rounds, &step, &total, &its, &el);
        p.active = true;
        p.job_no = round;
        p.job_count = rounds > 0                          ? rounds
                      : sdxl_job_request(job)->n_iter > 0 ? sdxl_job_request(job)->n_iter
                                                          : 1;
        p.sampling_step = step;
        p.sampling_steps = total > 0 ? total : sdxl_job_request(job)->steps;
        p.elapsed_s = el;
        sdxl_job_release(job);
    }
    return respond(r, 200, sdxl_a1111_progress_json(&p), NULL);
}

static enum MHD_Result handle_options_post(req_ctx *r) {
    sdxl_http_server *s = r->srv;
    pthread_mutex_lock(&s->mu);
    sdxl_a1111_options o = s->opts;
    pthread_mutex_unlock(&s->mu);
    char **w = NULL;
    int nw = 0;
    sdxl_error err = {0};
    sdxl_status st = sdxl_a1111_options_set(r->body ? r->body : "", r->len, s->engine, &o, &w, &nw, &err);
    if (st == SDXL_STATUS_NOT_FOUND)
        return respond(r, 404, sdxl_a1111_error_json("RuntimeError", err.msg), NULL);
    if (st == SDXL_STATUS_OUT_OF_MEMORY)
        return respond(r, 500, sdxl_a1111_error_json("RuntimeError", err.msg), NULL);
    if (st) return respond(r, 422, sdxl_a1111_validation_error_json(err.msg), NULL);
    pthread_mutex_lock(&s->mu);
    s->opts = o;
    pthread_mutex_unlock(&s->mu);
    cJSON *warr = cJSON_CreateArray();
    for (int i = 0; i < nw; i++) {
        SDXL_LOG_I("a1111 options: warning: %s", w[i]);
        cJSON_AddItemToArray(warr, cJSON_CreateString(w[i]));
    }
    sdxl_a1111_warnings_free(w, nw);
    char *wtext = print_free(warr);
    char *body = malloc(5);
    if (body) memcpy(body, "null", 5);
    /* A1111 answers null; the warnings go in a header */
    struct MHD_Response *resp = body ? MHD_create_response_from_buffer(4, body, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!resp) {
        free(body);
        free(wtext);
        return respond(r, 500, NULL, NULL);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (nw && wtext) MHD_add_response_header(resp, "X-SDXL-Warnings", wtext);
    free(wtext);
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) r->responded = true, r->code = 200;
    return ret;
}

static char *dup_text(const char *t) {
    size_t n = strlen(t) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, t, n);
    return d;
}

static enum MHD_Result handle_refresh(req_ctx *r) {
    sdxl_lora_registry *reg = sdxl_engine_lora_registry(r->srv->engine);
    size_t changes = 0;
    sdxl_error err = {0};
    if (reg && sdxl_lora_registry_refresh(reg, true, &changes, &err))
        return respond_error(r, 500, "internal", err.msg);
    if (r->route == A_REFRESH_LORAS) return respond(r, 200, dup_text("null"), NULL);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "status", "ok");
        cJSON_AddNumberToObject(o, "changes", (double)changes);
        cJSON_AddNumberToObject(o, "count", (double)sdxl_lora_registry_count(reg));
    }
    return respond(r, 200, print_free(o), NULL);
}

static enum MHD_Result dispatch(req_ctx *r) {
    sdxl_http_server *s = r->srv;
    bool shutting = atomic_load(&s->shutting_down);
    switch (r->route) {
    case R_HEALTH: return respond(r, shutting ? 503 : 200, health_json(s, shutting), NULL);
    case R_METRICS: return respond(r, 200, metrics_text(s), "text/plain; version=0.0.4; charset=utf-8");
    case R_GENERATE: return handle_generate(r);
    case R_CANCEL: return handle_cancel(r);
    case R_INTERRUPT:
    case A_INTERRUPT:
    case A_SKIP: return handle_interrupt(r);
    case R_LORAS: return respond(r, 200, loras_json(sdxl_engine_lora_registry(s->engine)), NULL);
    case R_LORAS_REFRESH:
    case A_REFRESH_LORAS: return handle_refresh(r);
    case R_MODELS: return respond(r, 200, models_json(s), NULL);
    case A_TXT2IMG: return handle_a1111_gen(r, SDXL_A1111_TXT2IMG);
    case A_IMG2IMG: return handle_a1111_gen(r, SDXL_A1111_IMG2IMG);
    case A_PROGRESS: return handle_progress(r);
    case A_LORAS: return respond(r, 200, sdxl_a1111_loras_json(sdxl_engine_lora_registry(s->engine)), NULL);
    case A_SAMPLERS: return respond(r, 200, sdxl_a1111_samplers_json(), NULL);
    case A_SCHEDULERS: return respond(r, 200, sdxl_a1111_schedulers_json(), NULL);
    case A_SD_MODELS: return respond(r, 200, sdxl_a1111_sd_models_json(s->engine), NULL);
    case A_REFRESH_CKPT: return respond(r, 200, dup_text("null"), NULL);
    case A_SCRIPTS: return respond(r, 200, dup_text("{\"txt2img\":[],\"img2img\":[]}"), NULL);
    case A_UPSCALERS:
    case A_SD_VAE: return respond(r, 200, dup_text("[]"), NULL);
    case A_OPTIONS:
        if (r->method == M_POST) return handle_options_post(r);
        {
            pthread_mutex_lock(&s->mu);
            sdxl_a1111_options o = s->opts;
            pthread_mutex_unlock(&s->mu);
            return respond(r, 200, sdxl_a1111_options_json(s->engine, &o), NULL);
        }
    default: return respond_error(r, 404, "not_found", "no such route");
    }
}

/* ---- libmicrohttpd callbacks ------------------------------------------------------------------- */

static route_id find_route(const sdxl_http_server *s, const char *url, int *methods) {
    char u[256];
    size_t n = strlen(url);
    if (n >= sizeof u) return R_UNKNOWN;
    memcpy(u, url, n + 1);
    if (n > 1 && u[n - 1] == '/') u[n - 1] = 0;
    for (size_t i = 0; i < N_ROUTES; i++)
        if (!strcmp(u, ROUTES[i].path)) {
            if (is_a1111(ROUTES[i].id) && !s->p.enable_a1111) return R_UNKNOWN;
            *methods = ROUTES[i].methods;
            return ROUTES[i].id;
        }
    return R_UNKNOWN;
}

static conn_track *track_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (conn_track *)ci->socket_context : NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size,
                                  void **con_cls) {
    sdxl_http_server *s = cls;
    req_ctx *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->srv = s;
        r->conn = c;
        r->t0 = sdxl_now_s();
        atomic_init(&r->refs, 1);
        pthread_mutex_init(&r->mu, NULL);
        atomic_fetch_add(&s->active, 1);
        *con_cls = r;
        pthread_mutex_lock(&s->mu);
        if ((r->ct = track_of(c))) r->ct->cur = r;
        pthread_mutex_unlock(&s->mu);
        int methods = 0;
        r->route = find_route(s, url, &methods);
        r->method = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD) ? M_GET
                    : !strcmp(method, MHD_HTTP_METHOD_POST)                                       ? M_POST
                                                                                                  : 0;
        if (r->route == R_UNKNOWN) {
            char m[300];
            snprintf(m, sizeof m, "no route %s %.200s", method, url);
            return respond(r, 404, native_error(NULL, "not_found", m, NULL), NULL);
        }
        if (!(r->method & methods)) {
            char m[100];
            snprintf(m, sizeof m, "method %.20s not allowed here", method);
            return respond_error(r, 405, "method_not_allowed", m);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || *end || v > s->p.max_body_bytes) {
                atomic_fetch_add(&s->n_too_large, 1);
                char m[120];
                snprintf(m, sizeof m, "the body is larger than %zu bytes", s->p.max_body_bytes);
                return respond_error(r, 413, "too_large", m);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->responded || r->too_large) return MHD_YES; /* discard */
        if (r->len + n > s->p.max_body_bytes) {
            r->too_large = true;
            atomic_fetch_add(&s->n_too_large, 1);
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t nc = r->cap ? r->cap : 16384;
            while (nc < r->len + n + 1)
                nc *= 2;
            if (nc > s->p.max_body_bytes + 1) nc = s->p.max_body_bytes + 1;
            /* all bodies together: 8 x the cap at most */
            long total = atomic_fetch_add(&s->body_bytes, (long)(nc - r->cap)) + (long)(nc - r->cap);
            char *nb = total <= (long)(8 * s->p.max_body_bytes) ? realloc(r->body, nc) : NULL;
            if (!nb) {
                atomic_fetch_sub(&s->body_bytes, (long)(nc - r->cap));
                r->too_large = true; /* answered 503 below */
                r->code = 503;
                return MHD_YES;
            }
            r->body = nb;
            r->cap = nc;
        }
        memcpy(r->body + r->len, upload, n);
        r->len += n;
        r->body[r->len] = 0;
        return MHD_YES;
    }
    if (r->responded) return MHD_YES;
    if (!r->body_done) {
        r->body_done = true;
        pthread_mutex_lock(&s->mu);
        if (r->ct) r->ct->reading = false;
        pthread_mutex_unlock(&s->mu);
    }
    if (r->has_job) {
        pthread_mutex_lock(&r->mu);
        bool fin = r->finished;
        pthread_mutex_unlock(&r->mu);
        if (!fin) return MHD_YES; /* cannot happen: resumed only at the end */
        return respond_job(r);
    }
    if (r->too_large) {
        if (r->code == 503) return respond_error(r, 503, "busy", "too many request bodies in flight");
        char m[120];
        snprintf(m, sizeof m, "the body is larger than %zu bytes", s->p.max_body_bytes);
        return respond_error(r, 413, "too_large", m);
    }
    return dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    sdxl_http_server *s = cls;
    req_ctx *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    unsigned code = r->responded ? r->code : 0;
    if (code) {
        size_t k = N_CODES;
        for (size_t i = 0; i < N_CODES; i++)
            if (CODES[i] == code) k = i;
        atomic_fetch_add(&s->counts[r->route][k], 1);
        atomic_fetch_add(&s->n_requests, 1);
    }
    if (!s->p.quiet)
        SDXL_LOG_D("http: %s -> %u (%.1f ms)%s", route_label(r->route), code, sdxl_ms_since(r->t0),
                   toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    pthread_mutex_lock(&s->mu);
    if (r->ct) {
        r->ct->cur = NULL;
        r->ct->reading = true; /* waiting for the next request */
        r->ct->since = sdxl_now_s();
    }
    waiting_remove(s, r);
    bool cancel = r->has_job && r->job;
    pthread_mutex_unlock(&s->mu);
    if (cancel) {
        /* the connection ended before its job (only when the loop stops with
         * jobs still out): the job's end must not resume it any more */
        pthread_mutex_lock(&r->mu);
        cancel = !r->finished;
        r->suspended = false;
        pthread_mutex_unlock(&r->mu);
        if (cancel) sdxl_job_cancel(r->job);
    }
    atomic_fetch_sub(&s->active, 1);
    ctx_unref(r);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode t) {
    sdxl_http_server *s = cls;
    if (t == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_track *ct = calloc(1, sizeof *ct);
        if (!ct) return;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        ct->fd = ci ? ci->connect_fd : -1;
        ct->since = sdxl_now_s();
        ct->reading = true;
        pthread_mutex_lock(&s->mu);
        ct->next = s->conns;
        if (s->conns) s->conns->prev = ct;
        s->conns = ct;
        pthread_mutex_unlock(&s->mu);
        *socket_context = ct;
        atomic_fetch_add(&s->n_conns, 1);
    } else if (t == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_track *ct = *socket_context;
        if (!ct) return;
        pthread_mutex_lock(&s->mu);
        if (ct->prev)
            ct->prev->next = ct->next;
        else
            s->conns = ct->next;
        if (ct->next) ct->next->prev = ct->prev;
        if (ct->cur) ct->cur->ct = NULL;
        pthread_mutex_unlock(&s->mu);
        free(ct);
        *socket_context = NULL;
        atomic_fetch_sub(&s->n_conns, 1);
    }
}

/* Cuts off connections whose request takes longer than request_read_timeout_s
 * to arrive (slowloris): shutdown() makes MHD see the end and close it. */
static void *reaper_main(void *arg) {
    sdxl_http_server *s = arg;
    double limit =
        s->p.request_read_timeout_s > 0 ? s->p.request_read_timeout_s : 2.0 * s->p.connection_timeout_s;
    pthread_mutex_lock(&s->mu);
    while (!s->reaper_stop) {
        double now = sdxl_now_s();
        for (conn_track *ct = s->conns; ct; ct = ct->next)
            if (ct->reading && !ct->reaped && now - ct->since > limit && ct->fd >= 0) {
                shutdown(ct->fd, SHUT_RDWR);
                ct->reaped = true;
                atomic_fetch_add(&s->n_reaped, 1);
                SDXL_LOG_I("http: a connection sent its request too slowly (over %.0f s), cut off", limit);
            }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->reaper_cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = 0;
    SDXL_LOG_D("http (libmicrohttpd): %s", buf);
}

/* ---- create / shutdown --------------------------------------------------------------------------- */

sdxl_status sdxl_http_server_create(sdxl_engine *engine, sdxl_queue *queue, const sdxl_http_params *p_in,
                                    sdxl_http_server **out, sdxl_error *err) {
    if (!engine || !queue || !out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "http: NULL argument");
    *out = NULL;
    sdxl_http_params p = p_in ? *p_in : sdxl_http_default_params();
    if (p.port < 0 || p.port > 65535)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "http: port %d", p.port);
    if (p.threads < 1) p.threads = 1;
    if (p.threads > 64) p.threads = 64;
    if (p.max_body_bytes < 1024) p.max_body_bytes = 1024;
    if (p.connection_timeout_s < 1) p.connection_timeout_s = 1;
    if (p.max_connections < 4) p.max_connections = 4;
    if (p.retry_after_s < 1) p.retry_after_s = 1;
    if (!p.host[0]) snprintf(p.host, sizeof p.host, "127.0.0.1");

    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", p.port);
    int gai = getaddrinfo(p.host, port, &hints, &ai);
    if (gai || !ai)
        return sdxl_error_set(err, SDXL_STATUS_IO, "http: cannot resolve %s: %s", p.host, gai_strerror(gai));

    sdxl_http_server *s = calloc(1, sizeof *s);
    if (!s) {
        freeaddrinfo(ai);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "http: out of memory");
    }
    s->engine = engine;
    s->queue = queue;
    s->p = p;
    s->opts = sdxl_a1111_default_options();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->reaper_cv, NULL);
    atomic_init(&s->shutting_down, false);

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_OptionItem ops[] = {
        {MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr},
        {MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)p.threads, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)p.connection_timeout_s, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)p.max_connections, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)p.max_connections_per_ip, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, s},
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, s},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->d = MHD_start_daemon(flags, (uint16_t)p.port, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, ops,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        int e = errno;
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->reaper_cv);
        free(s);
        return sdxl_error_set(err, SDXL_STATUS_IO, "http: cannot listen on %s:%d%s%s", p.host, p.port,
                              e ? ": " : "", e ? strerror(e) : "");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_LISTEN_FD);
    s->port = p.port;
    if (di) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(di->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
            s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    if (pthread_create(&s->reaper, NULL, reaper_main, s) == 0) s->reaper_started = true;
    *out = s;
    return SDXL_STATUS_OK;
}

int sdxl_http_server_port(const sdxl_http_server *s) {
    return s ? s->port : 0;
}

void sdxl_http_server_stats(const sdxl_http_server *s, sdxl_http_stats *out) {
    memset(out, 0, sizeof *out);
    if (!s) return;
    out->requests = atomic_load(&s->n_requests);
    out->rejected_full = atomic_load(&s->n_full);
    out->too_large = atomic_load(&s->n_too_large);
    out->reaped = atomic_load(&s->n_reaped);
    out->connections = atomic_load(&s->n_conns);
}

void sdxl_http_server_shutdown(sdxl_http_server *s) {
    if (!s || s->shut_done) return;
    s->shut_done = true;
    atomic_store(&s->shutting_down, true);
    /* no new connections */
    MHD_socket lfd = MHD_quiesce_daemon(s->d);
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
    SDXL_LOG_I("http: shutting down: no new connections; finishing the running job");
    /* queued jobs end cancelled, the running one finishes; every waiting
     * connection is resumed by its job's end */
    sdxl_queue_shutdown(s->queue);
    /* let the last answers go out */
    double t0 = sdxl_now_s();
    while (atomic_load(&s->active) > 0 && sdxl_now_s() - t0 < s->p.drain_timeout_s)
        usleep(10 * 1000);
    /* a request still arriving can no longer be served: cut it */
    pthread_mutex_lock(&s->mu);
    for (conn_track *ct = s->conns; ct; ct = ct->next)
        if (ct->fd >= 0 && !ct->reaped && (ct->reading || !ct->cur))
            shutdown(ct->fd, SHUT_RDWR), ct->reaped = true;
    s->reaper_stop = true;
    pthread_cond_broadcast(&s->reaper_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->reaper_started) pthread_join(s->reaper, NULL);
    s->reaper_started = false;
    MHD_stop_daemon(s->d);
    s->d = NULL;
}

void sdxl_http_server_free(sdxl_http_server *s) {
    if (!s) return;
    sdxl_http_server_shutdown(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->reaper_cv);
    free(s);
}

/* ---- the "server" config block --------------------------------------------------------------------- */

sdxl_http_server_config sdxl_http_server_default_config(void) {
    sdxl_http_server_config c;
    memset(&c, 0, sizeof c);
    c.http = sdxl_http_default_params();
    c.queue_size = 16;
    return c;
}

static sdxl_status cfg_num(const cJSON *o, const char *k, double lo, double hi, bool integer, double *out,
                           bool *has, sdxl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (has) *has = false;
    if (!v || cJSON_IsNull(v)) return SDXL_STATUS_OK;
    if (!cJSON_IsNumber(v))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server.%s: expected a number, got %s", k,
                              sdxl_json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || (integer && d != floor(d)) || d < lo || d > hi)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server.%s: %g is not %s in [%g, %g]", k, d,
                              integer ? "an integer" : "a number", lo, hi);
    *out = d;
    if (has) *has = true;
    return SDXL_STATUS_OK;
}

static sdxl_status cfg_path(const cJSON *v, const char *what, const char *base, char *out, size_t n,
                            sdxl_error *err) {
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server.%s: expected a non-empty string", what);
    int w = v->valuestring[0] != '/' && base && *base ? snprintf(out, n, "%s/%s", base, v->valuestring)
                                                      : snprintf(out, n, "%s", v->valuestring);
    if (w < 0 || (size_t)w >= n)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server.%s: path too long", what);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_http_server_config_parse(const char *json, size_t len, const char *base_dir,
                                          sdxl_http_server_config *cfg, sdxl_error *err) {
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!o) return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server: malformed JSON");
    sdxl_status st = SDXL_STATUS_OK;
    static const char *const known[] = {"host",
                                        "port",
                                        "threads",
                                        "queue_size",
                                        "max_body_mb",
                                        "timeout_s",
                                        "connection_timeout_s",
                                        "request_read_timeout_s",
                                        "max_connections",
                                        "max_connections_per_ip",
                                        "retry_after_s",
                                        "output_dir",
                                        "model",
                                        "models",
                                        "model_memory_mb",
                                        "compute_threads",
                                        "a1111",
                                        NULL};
    if (!cJSON_IsObject(o)) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server: expected an object, got %s",
                            sdxl_json_type_name(o));
        goto done;
    }
    for (const cJSON *it = o->child; it; it = it->next) {
        bool ok = false;
        for (int i = 0; known[i]; i++)
            ok = ok || (it->string && !strcmp(it->string, known[i]));
        if (!ok) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server.%.100s: unknown field",
                                it->string ? it->string : "?");
            goto done;
        }
    }
    double v;
    bool has;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "host");
    if (h && !cJSON_IsNull(h)) {
        if (!cJSON_IsString(h) || !h->valuestring[0] || strlen(h->valuestring) >= sizeof cfg->http.host) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server.host: expected an address");
            goto done;
        }
        snprintf(cfg->http.host, sizeof cfg->http.host, "%s", h->valuestring);
    }
#define NUM(key, lo, hi, integer, dst)                                                                       \
    do {                                                                                                     \
        if ((st = cfg_num(o, key, lo, hi, integer, &v, &has, err))) goto done;                               \
        if (has) dst;                                                                                        \
    } while (0)
    NUM("port", 0, 65535, true, cfg->http.port = (int)v);
    NUM("threads", 1, 64, true, cfg->http.threads = (int)v);
    NUM("queue_size", 1, 100000, true, cfg->queue_size = (size_t)v);
    NUM("max_body_mb", 1, 4096, false, cfg->http.max_body_bytes = (size_t)(v * 1048576.0));
    NUM("timeout_s", 0, 86400, false, cfg->timeout_s = v);
    NUM("connection_timeout_s", 1, 3600, true, cfg->http.connection_timeout_s = (int)v);
    NUM("request_read_timeout_s", 0, 86400, true, cfg->http.request_read_timeout_s = (int)v);
    NUM("max_connections", 4, 100000, true, cfg->http.max_connections = (int)v);
    NUM("max_connections_per_ip", 0, 100000, true, cfg->http.max_connections_per_ip = (int)v);
    NUM("retry_after_s", 1, 3600, true, cfg->http.retry_after_s = (int)v);
    NUM("model_memory_mb", 0, 1 << 24, true, cfg->model_memory_mb = (size_t)v);
    NUM("compute_threads", 0, 1024, true, cfg->compute_threads = (int)v);
#undef NUM
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "a1111");
    if (a && !cJSON_IsNull(a)) {
        if (!cJSON_IsBool(a)) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server.a1111: expected true or false");
            goto done;
        }
        cfg->http.enable_a1111 = cJSON_IsTrue(a);
    }
    const cJSON *od = cJSON_GetObjectItemCaseSensitive(o, "output_dir");
    if (od && !cJSON_IsNull(od)) {
        if ((st = cfg_path(od, "output_dir", base_dir, cfg->output_dir, sizeof cfg->output_dir, err)))
            goto done;
        cfg->has_output_dir = true;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (m && !cJSON_IsNull(m)) {
        if ((st = cfg_path(m, "model", base_dir, cfg->model, sizeof cfg->model, err))) goto done;
        cfg->has_model = true;
    }
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(o, "models");
    if (ms && !cJSON_IsNull(ms)) {
        if (!cJSON_IsObject(ms)) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                "server.models: expected an object {\"name\": \"path\"}");
            goto done;
        }
        for (const cJSON *e = ms->child; e; e = e->next) {
            if (cfg->n_models >= SDXL_ENGINE_MAX_MODELS) {
                st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "server.models: more than %d",
                                    SDXL_ENGINE_MAX_MODELS);
                goto done;
            }
            const char *name = e->string ? e->string : "";
            bool okname = *name && strlen(name) < sizeof cfg->models[0].name;
            for (const char *c = name; *c && okname; c++)
                okname = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                         *c == '.' || *c == '_' || *c == '-';
            if (!okname) {
                st = sdxl_error_set(
                    err, SDXL_STATUS_BAD_INPUT,
                    "server.models: \"%.60s\" is not a model name (letters, digits, '.', '_', '-')", name);
                goto done;
            }
            char what[200];
            snprintf(what, sizeof what, "models.%s", name);
            sdxl_engine_model_entry *me = &cfg->models[cfg->n_models];
            snprintf(me->name, sizeof me->name, "%s", name);
            if ((st = cfg_path(e, what, base_dir, me->path, sizeof me->path, err))) goto done;
            cfg->n_models++;
        }
    }
done:
    cJSON_Delete(o);
    return st;
}
