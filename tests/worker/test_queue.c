/* The job queue and the engine on the demo model: order, queue full,
 * cancel of queued and running jobs (interrupt keeps finished rounds),
 * timeouts, shutdown, identical requests giving identical images whatever
 * else is queued, and submitters on several threads (TSan stage). */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "io/file.h"
#include "io/sha256.h"
#include "model/model.h"
#include "model/weights.h"
#include "test.h"
#include "worker/engine.h"
#include "worker/queue.h"

#define DEMO SDXL_SOURCE_DIR "/demo"

static sdxl_engine *engine(void) {
    sdxl_engine *e = NULL;
    sdxl_error err = {0};
    sdxl_engine_config cfg = sdxl_engine_default_config();
    snprintf(cfg.default_model, sizeof cfg.default_model, DEMO "/model");
    snprintf(cfg.output_dir, sizeof cfg.output_dir, "%s/queue-out", sdxl_test_tmpdir());
    sdxl_lora_worker_config_add_dir(&cfg.lora, DEMO "/loras", NULL, &err);
    if (sdxl_engine_create(&cfg, &e, &err)) sdxl_test_fail(__FILE__, __LINE__, "engine: %s", err.msg);
    return e;
}

static bool req(sdxl_request *r, const char *id, const char *prompt, int seed, int steps, int n_iter) {
    char js[1024];
    snprintf(js, sizeof js,
             "{\"request_id\": \"%s\", \"prompt\": \"%s\", \"seed\": %d, \"steps\": %d, \"n_iter\": %d,"
             " \"width\": 64, \"height\": 64, \"output\": \"base64\"}",
             id, prompt, seed, steps, n_iter);
    sdxl_error err = {0};
    if (sdxl_request_parse(js, strlen(js), NULL, r, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return false;
    }
    return true;
}

static sdxl_job *submit(sdxl_queue *q, const char *id, const char *prompt, int seed, int steps, int n_iter, bool *full) {
    sdxl_request r;
    if (!req(&r, id, prompt, seed, steps, n_iter)) return NULL;
    sdxl_job *j = NULL;
    sdxl_error err = {0};
    bool f = false;
    if (sdxl_queue_submit(q, &r, NULL, &j, &f, &err)) {
        sdxl_request_free(&r);
        if (full) *full = f;
        return NULL;
    }
    return j;
}

static bool same_pixels(const sdxl_engine_result *a, const sdxl_engine_result *b) {
    if (!a || !b || a->n_images != b->n_images || !a->n_images) return false;
    for (size_t i = 0; i < a->n_images; i++)
        if (a->images[i].png_len != b->images[i].png_len ||
            memcmp(a->images[i].png, b->images[i].png, a->images[i].png_len))
            return false;
    return true;
}

TEST(queue_order_full_cancel_and_determinism) {
    sdxl_engine *e = engine();
    if (!e) return;
    sdxl_error err = {0};
    sdxl_queue_params qp = sdxl_queue_default_params();
    qp.capacity = 3;
    sdxl_queue *q = NULL;
    REQUIRE_OK(sdxl_queue_create(e, &qp, &q, &err), &err);
    /* alone: the reference images of request X */
    sdxl_job *x0 = submit(q, "x0", "a blue star on a yellow background", 7, 3, 1, NULL);
    REQUIRE(x0 && sdxl_job_wait(x0, 0));
    CHECK_EQ_INT(sdxl_job_get_state(x0), SDXL_JOB_DONE);
    /* a long job running, then three queued, then one too many */
    sdxl_job *lng = submit(q, "long", "a red circle", 1, 40, 3, NULL);
    REQUIRE(lng != NULL);
    for (int k = 0; k < 20000 && sdxl_job_get_state(lng) == SDXL_JOB_QUEUED; k++) usleep(500);
    REQUIRE(sdxl_job_get_state(lng) == SDXL_JOB_RUNNING);
    sdxl_job *a = submit(q, "a", "a green triangle", 3, 2, 1, NULL);
    sdxl_job *c = submit(q, "c", "an orange circle", 4, 2, 1, NULL);
    sdxl_job *x1 = submit(q, "x1", "a blue star on a yellow background", 7, 3, 1, NULL);
    bool full = false;
    sdxl_job *over = submit(q, "over", "x", 1, 2, 1, &full);
    REQUIRE(a && c && x1);
    CHECK(over == NULL && full); /* one running, three queued: full */
    sdxl_job_release(over);
    /* find by id; cancel a queued job: it never runs */
    sdxl_job *fa = sdxl_queue_find(q, "a");
    CHECK(fa == a);
    sdxl_job_release(fa);
    sdxl_job_cancel(a);
    CHECK_EQ_INT(sdxl_job_get_state(a), SDXL_JOB_CANCELLED); /* taken out of the queue at once */
    CHECK_EQ_INT((int)sdxl_queue_depth(q), 2);
    /* interrupt the long job once it has finished a round: finished rounds are kept */
    int round = 0; /* up to 5 minutes: slow under the sanitizers */
    for (int k = 0; k < 300000 && round < 1; k++) {
        sdxl_job_progress(lng, &round, NULL, NULL, NULL, NULL, NULL);
        usleep(1000);
    }
    CHECK(round == 1);
    sdxl_job_cancel(lng);
    REQUIRE(sdxl_job_wait(lng, 0) && sdxl_job_wait(a, 0) && sdxl_job_wait(c, 0) && sdxl_job_wait(x1, 0));
    CHECK_EQ_INT(sdxl_job_get_state(lng), SDXL_JOB_CANCELLED);
    const sdxl_engine_result *rl = sdxl_job_result(lng);
    CHECK(rl && rl->cancelled && rl->n_images >= 1 && rl->n_images < 3);
    CHECK_EQ_INT(sdxl_job_get_state(a), SDXL_JOB_CANCELLED);
    CHECK(sdxl_job_result(a) == NULL);
    CHECK_EQ_INT(sdxl_job_get_state(c), SDXL_JOB_DONE);
    /* the same request with other jobs around it: the same bytes */
    CHECK(same_pixels(sdxl_job_result(x0), sdxl_job_result(x1)));
    sdxl_queue_stats st;
    sdxl_queue_stats_get(q, &st);
    CHECK(st.done >= 3 && st.cancelled >= 2);
    CHECK(st.hist[5][SDXL_QUEUE_HIST_BUCKETS - 1] == st.done + st.cancelled - 1 ||
          st.hist[5][SDXL_QUEUE_HIST_BUCKETS - 1] >= st.done); /* every run lands in +Inf */
    sdxl_job_release(x0);
    sdxl_job_release(lng);
    sdxl_job_release(a);
    sdxl_job_release(c);
    sdxl_job_release(x1);
    sdxl_queue_free(q);
    sdxl_engine_free(e);
}

TEST(queue_timeout_and_shutdown) {
    sdxl_engine *e = engine();
    if (!e) return;
    sdxl_error err = {0};
    sdxl_queue *q = NULL;
    REQUIRE_OK(sdxl_queue_create(e, NULL, &q, &err), &err);
    sdxl_request r;
    REQUIRE(req(&r, "slow", "a red circle", 1, 200, 1));
    r.timeout_s = 0.2;
    sdxl_job *j = NULL;
    bool full;
    REQUIRE_OK(sdxl_queue_submit(q, &r, NULL, &j, &full, &err), &err);
    sdxl_job *k = submit(q, "after", "x", 1, 2, 1, NULL);
    REQUIRE(sdxl_job_wait(j, 0));
    CHECK_EQ_INT(sdxl_job_get_state(j), SDXL_JOB_CANCELLED);
    CHECK(strstr(sdxl_job_error(j)->msg, "timed out") != NULL);
    /* shutdown: queued jobs end cancelled, the running one finishes, submit refused */
    sdxl_job *m1 = submit(q, "m1", "x", 1, 30, 1, NULL), *m2 = submit(q, "m2", "x", 2, 2, 1, NULL);
    sdxl_queue_shutdown(q);
    REQUIRE(k && m1 && m2);
    CHECK(sdxl_job_wait(k, 0) && sdxl_job_wait(m1, 0) && sdxl_job_wait(m2, 0));
    CHECK_EQ_INT(sdxl_job_get_state(m2), SDXL_JOB_CANCELLED);
    sdxl_request r2;
    REQUIRE(req(&r2, "late", "x", 1, 2, 1));
    sdxl_job *late = NULL;
    CHECK(sdxl_queue_submit(q, &r2, NULL, &late, &full, &err) == SDXL_STATUS_CANCELLED);
    sdxl_request_free(&r2);
    sdxl_job_release(j);
    sdxl_job_release(k);
    sdxl_job_release(m1);
    sdxl_job_release(m2);
    sdxl_queue_free(q);
    sdxl_engine_free(e);
}

typedef struct {
    sdxl_queue *q;
    int id;
    int ok;
} sub_arg;

static void *submitter(void *p) {
    sub_arg *s = p;
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "t%d-%d", s->id, i);
        sdxl_job *j = submit(s->q, id, "a red circle", s->id * 10 + i, 1, 1, NULL);
        if (!j) continue;
        int step;
        sdxl_job_progress(j, NULL, NULL, &step, NULL, NULL, NULL);
        if (sdxl_job_wait(j, 0) && sdxl_job_get_state(j) == SDXL_JOB_DONE) s->ok++;
        sdxl_job_release(j);
    }
    return NULL;
}

/* Named for the TSan stage of test.sh. */
TEST(queue_concurrent_submitters) {
    sdxl_engine *e = engine();
    if (!e) return;
    sdxl_error err = {0};
    sdxl_queue_params qp = sdxl_queue_default_params();
    qp.capacity = 64;
    sdxl_queue *q = NULL;
    REQUIRE_OK(sdxl_queue_create(e, &qp, &q, &err), &err);
    pthread_t th[4];
    sub_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (sub_arg){q, i, 0};
        pthread_create(&th[i], NULL, submitter, &a[i]);
    }
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += a[i].ok;
    }
    CHECK_EQ_INT(ok, 12); /* nothing lost */
    sdxl_queue_free(q);
    sdxl_engine_free(e);
}

/* Per-request models: a second configured model is loaded for the request
 * that names it, and the LRU bound (here: room for one model) evicts the
 * other; an unknown name is NOT_FOUND before any work. */
TEST(engine_models_lru_by_memory) {
    sdxl_error err = {0};
    sdxl_engine_config cfg = sdxl_engine_default_config();
    snprintf(cfg.default_model, sizeof cfg.default_model, DEMO "/model");
    snprintf(cfg.models[0].name, sizeof cfg.models[0].name, "tiny");
    snprintf(cfg.models[0].path, sizeof cfg.models[0].path, "%s", sdxl_test_data("refs/tiny-sdxl"));
    cfg.n_models = 1;
    cfg.model_memory_mb = 20; /* demo ~12 MB, tiny ~12 MB: one at a time */
    snprintf(cfg.output_dir, sizeof cfg.output_dir, "%s/models-out", sdxl_test_tmpdir());
    sdxl_engine *e = NULL;
    REQUIRE_OK(sdxl_engine_create(&cfg, &e, &err), &err);
    CHECK_EQ_INT(sdxl_engine_model_count(e), 2);
    bool loaded[2];
    sdxl_engine_model_entry me;
    sdxl_engine_model_at(e, 0, &me, &loaded[0]);
    sdxl_engine_model_at(e, 1, NULL, &loaded[1]);
    CHECK(!strcmp(me.name, "model") && loaded[0] && !loaded[1]);
    sdxl_request r;
    REQUIRE(req(&r, "m", "a cat", 1, 2, 1));
    snprintf(r.model, sizeof r.model, "tiny");
    sdxl_engine_result res;
    REQUIRE_OK(sdxl_engine_run(e, &r, NULL, &res, &err), &err);
    CHECK(!strcmp(res.model, "tiny") && res.n_images == 1);
    sdxl_engine_result_free(&res);
    sdxl_engine_model_at(e, 0, NULL, &loaded[0]);
    sdxl_engine_model_at(e, 1, NULL, &loaded[1]);
    CHECK_MSG(!loaded[0] && loaded[1], "LRU: the default model should have been evicted (loaded %d %d)", loaded[0],
              loaded[1]);
    sdxl_engine_stats st;
    sdxl_engine_stats_get(e, &st);
    CHECK_EQ_INT((int)st.models_loaded, 1);
    /* back to the default: reloaded, tiny evicted */
    r.model[0] = 0;
    REQUIRE_OK(sdxl_engine_run(e, &r, NULL, &res, &err), &err);
    CHECK(!strcmp(res.model, "model"));
    sdxl_engine_result_free(&res);
    sdxl_engine_model_at(e, 1, NULL, &loaded[1]);
    CHECK(!loaded[1]);
    snprintf(r.model, sizeof r.model, "nosuch");
    CHECK(sdxl_engine_run(e, &r, NULL, &res, &err) == SDXL_STATUS_NOT_FOUND);
    sdxl_engine_result_free(&res);
    sdxl_request_free(&r);
    sdxl_engine_free(e);
}

/* A request's output_dir may not leave the engine's output folder, not even
 * through a symlink inside it. */
TEST(engine_output_dir_symlink_escape_refused) {
    sdxl_engine *e = engine();
    if (!e) return;
    char link[2048], cmd[4200];
    snprintf(link, sizeof link, "%s/queue-out/escape", sdxl_test_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s/queue-out %s/outside && ln -sfn %s/outside %s", sdxl_test_tmpdir(),
             sdxl_test_tmpdir(), sdxl_test_tmpdir(), link);
    REQUIRE(system(cmd) == 0);
    sdxl_request r;
    REQUIRE(req(&r, "esc", "x", 1, 1, 1));
    r.output = SDXL_OUTPUT_PATH;
    snprintf(r.output_dir, sizeof r.output_dir, "escape");
    sdxl_engine_result res;
    sdxl_error err = {0};
    CHECK(sdxl_engine_run(e, &r, NULL, &res, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "leaves the output folder") != NULL);
    CHECK_EQ_INT((int)res.n_images, 0);
    sdxl_engine_result_free(&res);
    snprintf(r.output_dir, sizeof r.output_dir, "inside/sub");
    REQUIRE_OK(sdxl_engine_run(e, &r, NULL, &res, &err), &err);
    CHECK(res.n_images == 1 && strstr(res.images[0].path, "/queue-out/inside/sub/esc-0.png"));
    sdxl_engine_result_free(&res);
    sdxl_request_free(&r);
    sdxl_engine_free(e);
}

/* A single-file model has A1111's AutoV2 hash (first 10 hex of the file's
 * SHA-256); a folder has none. */
TEST(engine_model_hash_of_single_file) {
    sdxl_error err = {0};
    sdxl_weights *w = NULL;
    char path[2048];
    snprintf(path, sizeof path, "%s/engine-single.safetensors", sdxl_test_tmpdir());
    REQUIRE_OK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, &err), &err);
    REQUIRE_OK(sdxl_weights_write_single_file(w, path, NULL, &err), &err);
    sdxl_weights_free(w);
    char *buf = NULL;
    size_t len = 0;
    REQUIRE_OK(sdxl_read_file(path, (size_t)1 << 30, &buf, &len, &err), &err);
    uint8_t d[32];
    char hex[65];
    sdxl_sha256_buf(buf, len, d);
    sdxl_sha256_hex(d, hex);
    sdxl_free(buf);
    /* the hash the engine stores per loaded model (model.h); the tiny single
     * file has no tokenizer of its own, so the engine cannot load it here */
    sdxl_weights *w1 = NULL;
    REQUIRE_OK(sdxl_weights_load(path, NULL, &w1, &err), &err);
    char h[11];
    CHECK(sdxl_model_autov2_hash(path, w1, h) && !strncmp(h, hex, 10) && strlen(h) == 10);
    sdxl_weights_free(w1);
    sdxl_engine *e = engine(); /* the demo model: a folder, no hash */
    REQUIRE(e != NULL);
    CHECK(!sdxl_engine_model_hash(e, 0, h));
    sdxl_engine_free(e);
}
