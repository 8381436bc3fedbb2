/* stdio.c - the JSON-lines worker (see stdio.h). */
#include "worker/stdio.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

sdxl_stdio_params sdxl_stdio_default_params(void) {
    return (sdxl_stdio_params){.max_line = (size_t)64 << 20, .queue_capacity = 64, .progress_every = 1};
}

typedef struct {
    FILE *out;
    pthread_mutex_t mu;
    int progress_every;
    pthread_mutex_t done_mu;
    pthread_cond_t done_cv;
    size_t outstanding;
} ctx;

static void put_line(ctx *c, const char *s) {
    pthread_mutex_lock(&c->mu);
    fputs(s, c->out);
    fputc('\n', c->out);
    fflush(c->out);
    pthread_mutex_unlock(&c->mu);
}

static void put_json(ctx *c, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    if (s) put_line(c, s);
    free(s);
}

static void put_error(ctx *c, const char *id, const char *code, const char *msg) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "type", "error");
    cJSON_AddStringToObject(j, "request_id", id ? id : "");
    cJSON *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    put_json(c, j);
    cJSON_Delete(j);
}

typedef struct {
    ctx *c;
    int last_step, last_round;
} job_ctx;

static void on_event(void *ud, sdxl_job *j) {
    job_ctx *jc = ud;
    ctx *c = jc->c;
    const sdxl_request *req = sdxl_job_request(j);
    sdxl_job_state s = sdxl_job_get_state(j);
    if (s == SDXL_JOB_RUNNING) {
        int round, rounds, step, total;
        double its, el;
        sdxl_job_progress(j, &round, &rounds, &step, &total, &its, &el);
        if (step == 0 || (step == jc->last_step && round == jc->last_round)) return;
        if (step != total && c->progress_every > 1 && step % c->progress_every) return;
        jc->last_step = step;
        jc->last_round = round;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "progress");
        cJSON_AddStringToObject(o, "request_id", req->request_id);
        cJSON_AddNumberToObject(o, "round", round);
        cJSON_AddNumberToObject(o, "rounds", rounds);
        cJSON_AddNumberToObject(o, "step", step);
        cJSON_AddNumberToObject(o, "total", total);
        cJSON_AddNumberToObject(o, "it_per_s", (double)(int)(its * 100 + 0.5) / 100);
        put_json(c, o);
        cJSON_Delete(o);
        return;
    }
    if (s == SDXL_JOB_QUEUED) return;
    /* ended */
    const sdxl_engine_result *r = sdxl_job_result(j);
    const sdxl_error *e = sdxl_job_error(j);
    if (s == SDXL_JOB_DONE || (s == SDXL_JOB_CANCELLED && r && r->n_images)) {
        cJSON *o = sdxl_engine_result_cjson(req, r);
        if (o) {
            cJSON *t = cJSON_CreateString("result");
            /* "type" first */
            t->string = strdup("type");
            t->next = o->child;
            if (o->child) o->child->prev = t;
            o->child = t;
            if (e && s == SDXL_JOB_CANCELLED) cJSON_AddStringToObject(o, "message", e->msg);
            put_json(c, o);
            cJSON_Delete(o);
        } else {
            put_error(c, req->request_id, "internal", "out of memory writing the result");
        }
    } else {
        const char *code = s == SDXL_JOB_CANCELLED ? "cancelled"
                           : e && e->status == SDXL_STATUS_NOT_FOUND ? "not_found"
                           : e && e->status == SDXL_STATUS_INVALID_ARG ? "invalid_request"
                           : e && e->status == SDXL_STATUS_OUT_OF_MEMORY ? "out_of_memory"
                                                                         : "failed";
        put_error(c, req->request_id, code, e ? e->msg : "failed");
    }
    pthread_mutex_lock(&c->done_mu);
    c->outstanding--;
    pthread_cond_broadcast(&c->done_cv);
    pthread_mutex_unlock(&c->done_mu);
    free(jc);
}

/* The request_id of a line that failed validation, when it has one. */
static void id_of(const char *line, size_t len, char *id, size_t n) {
    id[0] = 0;
    cJSON *j = cJSON_ParseWithLength(line, len);
    const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, "request_id") : NULL;
    if (cJSON_IsString(v)) snprintf(id, n, "%s", v->valuestring);
    cJSON_Delete(j);
}

int sdxl_stdio_worker_run(sdxl_engine *e, FILE *in, FILE *out, const sdxl_stdio_params *p_in) {
    sdxl_stdio_params p = p_in ? *p_in : sdxl_stdio_default_params();
    ctx c = {.out = out, .progress_every = p.progress_every > 0 ? p.progress_every : 1};
    pthread_mutex_init(&c.mu, NULL);
    pthread_mutex_init(&c.done_mu, NULL);
    pthread_cond_init(&c.done_cv, NULL);
    sdxl_queue_params qp = sdxl_queue_default_params();
    qp.capacity = p.queue_capacity;
    qp.default_timeout_s = p.timeout_s;
    sdxl_error err = {0};
    sdxl_queue *q = NULL;
    if (sdxl_queue_create(e, &qp, &q, &err)) {
        put_error(&c, "", "internal", err.msg);
        return 1;
    }
    const sdxl_request_limits *lim = &sdxl_engine_get_config(e)->limits;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned long seq = 0;
    while ((len = getline(&line, &cap, in)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        seq++;
        if ((size_t)len > p.max_line) {
            put_error(&c, "", "too_large", "request line longer than the limit");
            continue;
        }
        sdxl_request req;
        sdxl_error perr = {0};
        sdxl_request_error rerr = {{0}, {0}};
        if (sdxl_request_parse_ex(line, (size_t)len, lim, &req, &rerr, &perr)) {
            char id[128];
            id_of(line, (size_t)len, id, sizeof id);
            put_error(&c, id, rerr.code[0] ? rerr.code : "invalid_request", perr.msg);
            continue;
        }
        if (!req.request_id[0]) snprintf(req.request_id, sizeof req.request_id, "req-%lu", seq);
        char id[128];
        snprintf(id, sizeof id, "%s", req.request_id);
        job_ctx *jc = calloc(1, sizeof *jc);
        if (!jc) {
            put_error(&c, id, "out_of_memory", "out of memory");
            sdxl_request_free(&req);
            continue;
        }
        jc->c = &c;
        jc->last_step = -1;
        sdxl_job_callbacks cb = {on_event, jc};
        pthread_mutex_lock(&c.done_mu);
        c.outstanding++;
        pthread_mutex_unlock(&c.done_mu);
        sdxl_job *j = NULL;
        bool full = false;
        /* the output lock is held across the submit, so that "queued" comes
         * before any progress line of the job */
        pthread_mutex_lock(&c.mu);
        size_t position = sdxl_queue_depth(q);
        sdxl_status sst = sdxl_queue_submit(q, &req, &cb, &j, &full, &err);
        if (!sst) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "queued");
            cJSON_AddStringToObject(o, "request_id", id);
            cJSON_AddNumberToObject(o, "position", (double)position);
            char *s = cJSON_PrintUnformatted(o);
            if (s) fprintf(c.out, "%s\n", s), fflush(c.out);
            free(s);
            cJSON_Delete(o);
        }
        pthread_mutex_unlock(&c.mu);
        if (sst) {
            pthread_mutex_lock(&c.done_mu);
            c.outstanding--;
            pthread_mutex_unlock(&c.done_mu);
            put_error(&c, id, full ? "queue_full" : "rejected", err.msg);
            sdxl_request_free(&req);
            free(jc);
            continue;
        }
        sdxl_job_release(j);
    }
    free(line);
    /* end of input: finish what was submitted */
    pthread_mutex_lock(&c.done_mu);
    while (c.outstanding) pthread_cond_wait(&c.done_cv, &c.done_mu);
    pthread_mutex_unlock(&c.done_mu);
    sdxl_queue_free(q);
    pthread_mutex_destroy(&c.mu);
    pthread_mutex_destroy(&c.done_mu);
    pthread_cond_destroy(&c.done_cv);
    return 0;
}
