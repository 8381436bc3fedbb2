/* engine.h - runs validated requests: the loaded model(s), one CPU back end,
 * a LoRA worker per model, and pipeline/generate.h. One request at a time
 * (the queue's compute thread calls it); the front ends (command line,
 * stdio worker, HTTP server) only parse and answer.
 *
 *     sdxl_engine_config cfg = sdxl_engine_default_config();
 *     snprintf(cfg.default_model, sizeof cfg.default_model, "demo/model");
 *     sdxl_engine *e;
 *     sdxl_engine_create(&cfg, &e, &err);               // loads the default model
 *     sdxl_engine_result res;
 *     sdxl_engine_run(e, &request, NULL, &res, &err);   // images + statuses + timings
 *     char *json = sdxl_engine_result_json(&request, &res);
 *     sdxl_engine_result_free(&res);
 *
 * Models: the default one is loaded at create; a request may name another
 * of cfg.models (by name); loaded models are kept in an LRU bounded by
 * cfg.model_memory_mb (bytes of their weight files), the default included;
 * the model a request needs is loaded before it runs (and others evicted
 * as needed). Each loaded model has its own LoRA worker (same config).
 *
 * Thread-safety: sdxl_engine_run calls must not overlap (one compute
 * thread). The read-only queries (models, LoRA listing, stats) may be
 * called from other threads at any time. */
#ifndef SDXL_WORKER_ENGINE_H
#define SDXL_WORKER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "lora/worker.h"
#include "worker/request.h"

#define SDXL_ENGINE_MAX_MODELS 32

typedef struct sdxl_engine_model_entry {
    char name[128];  /* what requests say ("model": "name") */
    char path[4096]; /* diffusers folder or single file */
} sdxl_engine_model_entry;

typedef struct sdxl_engine_config {
    char default_model[4096];   /* path; its name is the file/folder name */
    sdxl_engine_model_entry models[SDXL_ENGINE_MAX_MODELS];
    int n_models;
    size_t model_memory_mb;     /* LRU bound over loaded models' file bytes; 0 = keep every one loaded */
    sdxl_lora_worker_config lora;
    sdxl_request_limits limits;
    int threads;                /* 0 = one per CPU */
    size_t memory_budget;       /* UNet activations per run; 0 = no limit */
    char output_dir[1024];      /* base for requests' output_dir (paths are kept inside it) */
} sdxl_engine_config;

sdxl_engine_config sdxl_engine_default_config(void);

typedef struct sdxl_engine sdxl_engine;

sdxl_status sdxl_engine_create(const sdxl_engine_config *cfg, sdxl_engine **out, sdxl_error *err);
void sdxl_engine_free(sdxl_engine *e); /* NULL-safe */

typedef struct sdxl_engine_callbacks {
    /* each denoising step; false cancels (the run ends CANCELLED, images of
     * finished rounds are kept in the result) */
    bool (*on_progress)(void *user_data, int round, int rounds, int step, int total, double it_per_s);
    void *user_data;
} sdxl_engine_callbacks;

typedef struct sdxl_engine_image {
    uint8_t *png;        /* the PNG with its `parameters` chunk (sdxl_malloc'd) */
    size_t png_len;
    char path[4096];     /* where it was written (output "path"), else "" */
    uint64_t seed;
    int width, height;
    char *infotext;      /* A1111's parameters text (sdxl_malloc'd) */
} sdxl_engine_image;

typedef struct sdxl_engine_result {
    sdxl_engine_image *images;
    size_t n_images;
    sdxl_lora_report lora;
    sdxl_result_timings timings;
    char model[128];
    uint64_t seed;       /* the base seed used */
    int width, height;   /* the size used */
    bool cancelled;      /* stopped by on_progress (images of finished rounds kept) */
    int64_t rss_bytes, engine_live_bytes, engine_peak_bytes;
    char warnings[8][256];
    int n_warnings;
} sdxl_engine_result;

/* Run one request. OK also when some adapters failed (their statuses are in
 * res->lora) and when cancelled (res->cancelled; status CANCELLED).
 * Errors: NOT_FOUND (unknown model), INVALID_ARG (a request the model cannot
 * run: size not a multiple of its factor...), CANCELLED, OUT_OF_MEMORY, IO.
 * res is filled in any case (free it). */
sdxl_status sdxl_engine_run(sdxl_engine *e, const sdxl_request *req, const sdxl_engine_callbacks *cb,
                            sdxl_engine_result *res, sdxl_error *err);
void sdxl_engine_result_free(sdxl_engine_result *res); /* NULL-safe */

/* The native response JSON (malloc'd; free()): as sdxl_result_json, plus
 * "images": [{"seed", "path"} or {"seed", "image": base64 PNG}], "model",
 * "parameters" (the first image's infotext). */
char *sdxl_engine_result_json(const sdxl_request *req, const sdxl_engine_result *res);
/* The same as a cJSON object (cJSON_Delete it), for front ends that wrap it. */
struct cJSON *sdxl_engine_result_cjson(const sdxl_request *req, const sdxl_engine_result *res);

/* ---- queries (any thread) ------------------------------------------------------ */

/* Configured models: name, path, loaded or not. i in [0, count). */
int sdxl_engine_model_count(const sdxl_engine *e);
bool sdxl_engine_model_at(const sdxl_engine *e, int i, sdxl_engine_model_entry *out, bool *loaded);
const char *sdxl_engine_default_model_name(const sdxl_engine *e);
/* Model i's A1111 "Model hash" (AutoV2, 10 hex) when it is loaded and is a
 * single file; false otherwise (folders have none; unloaded models are not
 * read just to be listed). */
bool sdxl_engine_model_hash(const sdxl_engine *e, int i, char out[11]);
/* The LoRA registry the engine resolves names with (shared by all models). */
sdxl_lora_registry *sdxl_engine_lora_registry(sdxl_engine *e);
const sdxl_engine_config *sdxl_engine_get_config(const sdxl_engine *e);

typedef struct sdxl_engine_stats {
    uint64_t runs, failures, cancels;
    sdxl_lora_cache_stats lora_cache; /* summed over loaded models */
    size_t models_loaded;
    size_t model_bytes;               /* file bytes of loaded models */
    int64_t rss_bytes, engine_live_bytes, engine_peak_bytes, mapped_bytes;
} sdxl_engine_stats;
void sdxl_engine_stats_get(sdxl_engine *e, sdxl_engine_stats *out);

#endif
