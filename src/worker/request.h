/* request.h - the generation request in the seed's JSON format, the worker's
 * lora_config, and the result JSON. Shared by `sdxl generate --request` and
 * the worker service (one schema, one parser). The schema is published as
 * docs/request.schema.json (JSON Schema 2020-12) and explained with examples
 * in docs/api.md; a test keeps the schema's properties and this parser's
 * fields the same.
 *
 * Request (every field optional but `prompt`; unknown fields are errors;
 * an optional field given as JSON null is the same as leaving it out):
 *   {"request_id": "r1",                            string <= 127 bytes
 *    "prompt": "...", "negative_prompt": "...",     strings <= max_prompt bytes
 *    "prompt_2": "...", "negative_prompt_2": "...", the second text encoder's (default: the first's)
 *    "width": 1024, "height": 1024,                 multiples of 8 in 8..max_side (default: the model's)
 *    "steps": 30,                                   1..max_steps (20)
 *    "guidance_scale": 5.0,                         0..100 (5)
 *    "guidance_rescale": 0.0,                       0..1 (0)
 *    "scheduler": "euler",                          a name sdxl_sampler_parse_name takes, any case
 *    "seed": 42,                                    -1 (random) .. 2^53 (-1)
 *    "rng": "cpu" | "cuda",                         ("cpu")
 *    "batch_size": 1, "n_iter": 1,                  1..max_batch, 1..max_n_iter (1, 1)
 *    "init_image": "<base64>",                      img2img: a PNG or JPEG, base64, optionally as a
 *                                                   data URL (data:image/png;base64,... or
 *                                                   data:image/jpeg;base64,...); its size is the
 *                                                   image size: sides multiples of 8, <= max_side;
 *                                                   width/height, if given, must equal it; decoded
 *                                                   to RGB8 as diffusers' load_image does (alpha
 *                                                   dropped, JPEG EXIF orientation applied)
 *    "strength": 0.3,                               img2img, in (0, 1] (0.3)
 *    "prompt_syntax": "a1111" | "plain",            ("a1111": (emphasis:1.2), [de-emphasis], BREAK)
 *    "long_prompts": "chunk" | "truncate",          ("chunk": 75-token chunks, as A1111)
 *    "output": "path" | "base64",                   ("path": PNG files; "base64": PNGs in the response)
 *    "output_dir": "out",                           relative, no ".." (the service's own folder + this)
 *    "model": "name",                               letters, digits, '.', '_', '-' (<= 127; "" default)
 *    "timeout_s": 0,                                0..86400 (0: the service's default)
 *    "lora": {"enabled": true, "global_weight": 1.1,
 *             "models": [{"name": "anime_style_v2", "weight": 0.8, "category": "style"},
 *                        {"name": "x", "unet_weight": 1.0, "te_weight": 0.5},
 *                        "simple_lora_name"]}}
 * Defaults as in parentheses; output_dir "." ; lora.enabled false when absent
 * (the seed's rule: no adapters unless enabled), global_weight 1, weight 1
 * (weights in -100..100, at most SDXL_LORA_MAX_PER_REQUEST models).
 *
 * Validation happens before any work and stops at the first problem: the
 * status is SDXL_STATUS_BAD_INPUT, the message "<field path>: <why>"
 * ("lora.models[2].weight: expected a number, got a string"; "request: ..."
 * for the whole document), and sdxl_request_parse_ex also gives a code and
 * the path apart (sdxl_request_error):
 *   invalid_json   not JSON (the message has the byte offset), or a field given twice
 *   invalid_type   a value of the wrong JSON type (the request not an object, a string
 *                  where a number goes, a fraction where an integer goes)
 *   unknown_field  a field this schema does not have
 *   missing_field  "prompt" absent; a lora.models object without "name"
 *   out_of_range   a number outside its range, a string over its length cap, too many
 *                  lora models, an init_image over max_side or max_init_image_bytes
 *   invalid_value  the right type but not allowed: not one of an enum's words, an unknown
 *                  scheduler, width/height not a multiple of 8 (or not the init_image's
 *                  size), an empty LoRA name, an output_dir that is absolute or has "..",
 *                  a model name with other characters
 *   invalid_image  init_image is not base64, not a PNG or JPEG, or corrupt / truncated
 *   out_of_memory  (status SDXL_STATUS_OUT_OF_MEMORY) the service's fault, not the request's
 *   internal       (status SDXL_STATUS_INVALID_ARG) a NULL argument
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
    int max_side;      /* width/height: multiples of 8 in 8..max_side (4096); an init_image too
                          (and at most max_side² pixels are ever decoded) */
    int max_steps;     /* 1000 */
    int max_batch;     /* 64 */
    size_t max_prompt; /* bytes per prompt (65536) */
    int max_n_iter;    /* 100; <= 0: that default */
    size_t max_init_image_bytes; /* the decoded PNG/JPEG file (64 MiB); 0: that default */
    bool output_dir_any_path;    /* false (services): output_dir relative, no ".."; true (the command
                                    line, whose user wrote the file): any path */
} sdxl_request_limits;

sdxl_request_limits sdxl_request_default_limits(void);

/* The error codes (sdxl_request_error.code; see the list above). */
#define SDXL_REQUEST_ERR_INVALID_JSON "invalid_json"
#define SDXL_REQUEST_ERR_INVALID_TYPE "invalid_type"
#define SDXL_REQUEST_ERR_UNKNOWN_FIELD "unknown_field"
#define SDXL_REQUEST_ERR_MISSING_FIELD "missing_field"
#define SDXL_REQUEST_ERR_OUT_OF_RANGE "out_of_range"
#define SDXL_REQUEST_ERR_INVALID_VALUE "invalid_value"
#define SDXL_REQUEST_ERR_INVALID_IMAGE "invalid_image"
#define SDXL_REQUEST_ERR_OUT_OF_MEMORY "out_of_memory"
#define SDXL_REQUEST_ERR_INTERNAL "internal"

typedef struct sdxl_request_error {
    char code[32];   /* one of SDXL_REQUEST_ERR_*; "" when the parse succeeded */
    char field[256]; /* the field's path ("width", "lora.models[1].weight"); "" for the whole request */
} sdxl_request_error;

typedef enum sdxl_output_mode {
    SDXL_OUTPUT_PATH = 0, /* PNG files in output_dir; the response lists their paths */
    SDXL_OUTPUT_BASE64,   /* PNG bytes in the response, base64 */
} sdxl_output_mode;

typedef struct sdxl_request {
    char request_id[128];
    char *prompt, *negative_prompt; /* sdxl_malloc'd; negative NULL when absent */
    char *prompt_2, *negative_prompt_2; /* NULL when absent (then the first prompt is used) */
    int width, height, steps, batch_size, n_iter; /* width/height 0: the model's size; with an
                                                     init_image, its size */
    double guidance_scale, guidance_rescale;
    char scheduler[64];
    int64_t seed; /* -1: random */
    bool rng_cuda;
    bool prompt_plain;    /* prompt_syntax "plain" (else "a1111") */
    bool long_truncate;   /* long_prompts "truncate" (else "chunk") */
    uint8_t *init_rgb;    /* decoded init_image, [init_height, init_width, 3] RGB8, sdxl_malloc'd, or NULL */
    int init_width, init_height;
    double strength;      /* img2img; default 0.3 */
    sdxl_output_mode output;
    char model[128];      /* "" = the default model */
    double timeout_s;     /* 0 = the service's default */
    char output_dir[1024];
    sdxl_lora_spec lora;
} sdxl_request;

/* Parse and validate a request (len bytes, need not be NUL-terminated).
 * lim NULL: sdxl_request_default_limits(). On success *out owns its
 * prompts and init_rgb (sdxl_request_free). On failure *out is zeroed (no
 * leaks), err has "<path>: <why>", and *rerr (may be NULL) the code and the
 * path. Thread-safe: no state of its own (libcjson does write a global
 * error record on every parse, which this never reads). */
sdxl_status sdxl_request_parse_ex(const char *json, size_t len, const sdxl_request_limits *lim, sdxl_request *out,
                                  sdxl_request_error *rerr, sdxl_error *err);
/* sdxl_request_parse_ex without the code. */
sdxl_status sdxl_request_parse(const char *json, size_t len, const sdxl_request_limits *lim, sdxl_request *out,
                               sdxl_error *err);
void sdxl_request_free(sdxl_request *r); /* NULL-safe; leaves it zeroed */

/* The fields the parser accepts in one object, NULL-terminated (static):
 * object "" (or NULL) the request, "lora" its lora block, "lora.models[]"
 * an adapter given as an object. NULL for any other object. */
const char *const *sdxl_request_field_names(const char *object);

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

/* The same as a cJSON object (cJSON_Delete it), for callers that add to it
 * (engine.h); NULL on out of memory. */
struct cJSON;
struct cJSON *sdxl_result_cjson(const sdxl_request *req, const sdxl_result_image *images, size_t n_images,
                                const sdxl_lora_report *rep, const sdxl_result_timings *t,
                                const char *const *warnings, size_t n_warnings);

/* {"request_id", "status": "error", "error": {"code", "message"}} (malloc'd). */
char *sdxl_error_json(const char *request_id, const char *code, const char *message);

#endif
