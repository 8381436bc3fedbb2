/* request.h - the generation request in the seed's JSON format, the worker's
 * lora_config, and the result JSON. Shared by `sdxl generate --request` and
 * the worker service (one schema, one parser).
 *
 * Request (every field optional but `prompt`; unknown fields are errors):
 *   {"request_id": "r1",
 *    "prompt": "...", "negative_prompt": "...",
 *    "width": 1024, "height": 1024, "steps": 30, "guidance_scale": 5.0,
 *    "scheduler": "euler", "seed": 42, "rng": "cpu" | "cuda", "batch_size": 1,
 *    "output_dir": "out",
 *    "lora": {"enabled": true, "global_weight": 1.1,
 *             "models": [{"name": "anime_style_v2", "weight": 0.8, "category": "style"},
 *                        {"name": "x", "unet_weight": 1.0, "te_weight": 0.5},
 *                        "simple_lora_name"]}}
 * Defaults: width/height 0 (the model's size), steps 20, guidance_scale 5,
 * scheduler "euler", seed -1 (random), rng "cpu", batch_size 1, output_dir
 * "." ; lora.enabled false when absent (the seed's rule: no adapters unless
 * enabled), global_weight 1, weight 1.
 * Validation happens before any work: wrong types, out-of-range values (caps
 * in sdxl_request_limits) and unknown fields are SDXL_STATUS_BAD_INPUT with
 * the field's path ("lora.models[2].weight: expected a number, got a
 * string").
 *
 * Worker config: {"lora_config": {"lora_directories": ["models/lora/styles",
 * {"path": "more", "category": "style"}], "memory_limit_mb": 2048,
 * "enable_caching": true, "cache_size": 8, "enable_memory_monitoring": true}}
 * (or the inner object alone). */
#ifndef SDXL_WORKER_REQUEST_H
#define SDXL_WORKER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "lora/worker.h"

typedef struct sdxl_request_limits {
    int max_side;      /* width/height: multiples of 8 in 8..max_side (4096) */
    int max_steps;     /* 1000 */
    int max_batch;     /* 64 */
    size_t max_prompt; /* bytes per prompt (65536) */
} sdxl_request_limits;

sdxl_request_limits sdxl_request_default_limits(void);

typedef struct sdxl_request {
    char request_id[128];
    char *prompt, *negative_prompt; /* sdxl_malloc'd; negative NULL when absent */
    int width, height, steps, batch_size;
    double guidance_scale;
    char scheduler[64];
    int64_t seed; /* -1: random */
    bool rng_cuda;
    char output_dir[1024];
    sdxl_lora_spec lora;
} sdxl_request;

sdxl_status sdxl_request_parse(const char *json, size_t len, const sdxl_request_limits *lim, sdxl_request *out,
                               sdxl_error *err);
void sdxl_request_free(sdxl_request *r); /* NULL-safe; leaves it zeroed */

/* The worker config (see above) onto `cfg` (start from
 * sdxl_lora_worker_default_config()); relative directories are taken
 * relative to `base_dir` (the config file's folder; NULL: as given). */
sdxl_status sdxl_worker_config_parse(const char *json, size_t len, const char *base_dir, sdxl_lora_worker_config *cfg,
                                     sdxl_error *err);

/* ---- result ------------------------------------------------------------------ */

typedef struct sdxl_result_image {
    char path[4096];
    uint64_t seed;
} sdxl_result_image;

typedef struct sdxl_result_timings {
    double lora_ms, encode_ms, denoise_ms, decode_ms, total_ms;
} sdxl_result_timings;

/* The result JSON (malloc'd, NUL-terminated; NULL on out of memory):
 *   {"request_id", "status": "ok", "images": [{"path", "seed"}],
 *    "lora": {"enabled", "global_weight", "applied", "adapters": [
 *        {"name", "status", "message", "category", "path", "unet_weight", "te_weight",
 *         "hash", "type", "modules", "unmatched_keys", "cache_hit", "load_ms", "bytes",
 *         "suggestions": [...]}]},
 *    "timings": {"lora_ms", "encode_ms", "denoise_ms", "decode_ms", "total_ms"},
 *    "metrics": {"lora": {"resolve_ms", "load_ms", "merge_ms", "weights_merged",
 *        "weights_restored", "weights_kept", "merged_bytes"},
 *      "cache": {"entries", "bytes", "hits", "misses", "evictions", "too_large", "load_ms_total"},
 *      "memory": {"rss_bytes", "engine_live_bytes", "engine_peak_bytes", "mapped_bytes"}},
 *    "warnings": [...]} */
char *sdxl_result_json(const sdxl_request *req, const sdxl_result_image *images, size_t n_images,
                       const sdxl_lora_report *rep, const sdxl_result_timings *t, const char *const *warnings,
                       size_t n_warnings);

/* {"request_id", "status": "error", "error": {"code", "message"}} (malloc'd). */
char *sdxl_error_json(const char *request_id, const char *code, const char *message);

#endif
