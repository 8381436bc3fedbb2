/* worker.h - the LoRA worker: a request's adapter list → resolved files →
 * cached adapters → one merged set on the model, with a status for every
 * entry. The seed's LoRAWorker, in C:
 *
 *     sdxl_lora_worker_config cfg = sdxl_lora_worker_default_config();
 *     sdxl_lora_worker_config_add_dir(&cfg, "models/lora/styles", NULL);   // category "style"
 *     sdxl_lora_worker *lw;
 *     sdxl_lora_worker_create(&cfg, model->weights, cpu_backend, &lw, &err);
 *     sdxl_lora_spec spec = {.enabled = true, .global_weight = 1.1f};
 *     sdxl_lora_spec_add(&spec, "anime_style_v2", "style", 0.8f);
 *     sdxl_lora_report rep;
 *     sdxl_lora_worker_apply(lw, &spec, &rep, &err);   // OK even when some adapters fail
 *     for (i < rep.n) rep.items[i].status / .message / .load_ms / .cache_hit ...
 *     ... generate ...
 *     sdxl_lora_report_free(&rep);
 *     sdxl_lora_worker_free(lw);                       // restores the weights
 *
 * Request semantics (the seed's): `enabled` false → no adapters (the
 * current set is removed); entries are names (a plain string = weight 1);
 * effective strength = weight × global_weight, with optional unet_weight /
 * te_weight replacing `weight` for that part; the same file listed twice is
 * merged into one entry (weights added) with a warning. Up to
 * SDXL_LORA_MAX_PER_REQUEST entries.
 *
 * Never blocking: each entry ends in a status — applied, not_found (with the
 * closest names as suggestions), invalid_name (a name that leaves the
 * configured directories: `..`, absolute, an escaping symlink), invalid_file
 * (malformed or unsupported container), too_large (over memory_limit_mb
 * alone), no_matching_keys (nothing in the file fits this model),
 * load_failed (I/O, out of memory), skipped (strength 0) — with a message;
 * the others apply. sdxl_lora_worker_apply fails only when the merge itself
 * runs out of memory (the model is then never half-applied, see merge.h).
 *
 * The merged set stays on the model after apply: the next request with the
 * same set costs nothing, one that changes a strength re-merges only what
 * changed (merge.h). Loaded adapters live in the cache (cache.h), files are
 * found by the registry (registry.h).
 *
 * Thread-safety: resolving and loading are thread-safe (registry, cache),
 * but apply changes the model: one apply at a time, and not while the model
 * runs (the worker service runs requests one after another on the compute
 * thread).
 */
#ifndef SDXL_LORA_WORKER_H
#define SDXL_LORA_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"
#include "lora/cache.h"
#include "lora/merge.h"
#include "lora/registry.h"
#include "model/weights.h"

#define SDXL_LORA_WORKER_MAX_DIRS 32
#define SDXL_LORA_MAX_PER_REQUEST 64

/* The seed's lora_config. Defaults (the seed's example): no directories,
 * memory_limit_mb 2048, enable_caching true, cache_size 8,
 * enable_memory_monitoring true. */
typedef struct sdxl_lora_worker_config {
    size_t n_dirs;
    char dir_path[SDXL_LORA_WORKER_MAX_DIRS][SDXL_LORA_PATH_MAX];
    /* "" → the category of each file comes from its first sub-folder; the
     * seed lists category folders themselves ("models/lora/styles"):
     * sdxl_lora_worker_config_add_dir then takes the folder's own name */
    char dir_category[SDXL_LORA_WORKER_MAX_DIRS][SDXL_LORA_NAME_MAX];
    size_t memory_limit_mb;
    bool enable_caching;
    size_t cache_size;
    bool enable_memory_monitoring;
} sdxl_lora_worker_config;

sdxl_lora_worker_config sdxl_lora_worker_default_config(void);
/* Add a directory. category NULL: when the folder's own name is a known
 * category folder (styles, characters, lighting, concepts, poses, clothing,
 * backgrounds — any plural/singular spelling) that is its category, else
 * files take their first sub-folder's name. INVALID_ARG when full or the
 * path is too long. */
sdxl_status sdxl_lora_worker_config_add_dir(sdxl_lora_worker_config *cfg, const char *path, const char *category,
                                            sdxl_error *err);

/* One request entry. */
typedef struct sdxl_lora_entry {
    char name[SDXL_LORA_REQUEST_MAX];
    char category[SDXL_LORA_NAME_MAX]; /* "" = none */
    float weight;
    bool has_unet_weight, has_te_weight;
    float unet_weight, te_weight;
    /* the name is a file path given by a trusted caller (the command line),
     * not resolved through the directories */
    bool is_path;
} sdxl_lora_entry;

typedef struct sdxl_lora_spec {
    bool enabled;
    float global_weight;
    int n;
    sdxl_lora_entry entries[SDXL_LORA_MAX_PER_REQUEST];
} sdxl_lora_spec;

/* Append an entry (weight for both parts). INVALID_ARG when full or a
 * string is too long. */
sdxl_status sdxl_lora_spec_add(sdxl_lora_spec *spec, const char *name, const char *category, float weight,
                               sdxl_error *err);

typedef enum sdxl_lora_status {
    SDXL_LORA_APPLIED = 0,
    SDXL_LORA_NOT_FOUND,
    SDXL_LORA_INVALID_NAME,
    SDXL_LORA_INVALID_FILE,
    SDXL_LORA_TOO_LARGE,
    SDXL_LORA_NO_MATCHING_KEYS,
    SDXL_LORA_LOAD_FAILED,
    SDXL_LORA_SKIPPED,
    SDXL_LORA_STATUS_COUNT_
} sdxl_lora_status;

const char *sdxl_lora_status_name(sdxl_lora_status s); /* "applied", "not_found", ... */

/* The outcome of one request entry. */
typedef struct sdxl_lora_outcome {
    char name[SDXL_LORA_REQUEST_MAX];  /* as requested */
    char category[SDXL_LORA_NAME_MAX]; /* the file's category ("" if none / not found) */
    char path[SDXL_LORA_PATH_MAX];     /* the file ("" if not found) */
    char stem[SDXL_LORA_NAME_MAX];     /* the file's name without extension (A1111's Lora name) */
    sdxl_lora_status status;
    char message[640];                 /* why, for anything but applied; warnings otherwise */
    float unet_weight, te_weight;      /* effective (× global_weight) */
    char short_hash[13];               /* A1111/addnet hash of an applied file */
    bool cache_hit;
    double load_ms;                    /* 0 on a cache hit */
    size_t bytes;                      /* the adapter in memory */
    size_t modules, unmatched_keys;
    char adapter_type[16];             /* "lora", "loha", ... */
    int n_suggestions;                 /* not_found */
    char suggestions[SDXL_LORA_MAX_SUGGESTIONS][2 * SDXL_LORA_NAME_MAX];
} sdxl_lora_outcome;

typedef struct sdxl_lora_report {
    size_t n;
    sdxl_lora_outcome *items; /* one per distinct request entry, in request order */
    size_t applied;
    double resolve_ms, load_ms, merge_ms;
    sdxl_lora_merge_stats merge;
    sdxl_lora_cache_stats cache;
    /* memory monitoring (when enabled): process RSS, engine heap */
    bool memory_monitored;
    int64_t rss_bytes, engine_live_bytes, engine_peak_bytes, mapped_bytes;
} sdxl_lora_report;

void sdxl_lora_report_free(sdxl_lora_report *rep); /* NULL-safe; leaves it empty */

typedef struct sdxl_lora_worker sdxl_lora_worker;

/* `w` (the model) and `be` (a CPU back end) must outlive the worker. Roots
 * that do not exist yet are warnings (they are picked up when they appear).
 * Errors: INVALID_ARG (config), OUT_OF_MEMORY. */
sdxl_status sdxl_lora_worker_create(const sdxl_lora_worker_config *cfg, sdxl_weights *w, sdxl_backend *be,
                                    sdxl_lora_worker **out, sdxl_error *err);
/* Restores the model's weights, frees everything. NULL-safe. */
void sdxl_lora_worker_free(sdxl_lora_worker *lw);

/* Make `spec` the model's adapter set and report every entry (rep is
 * filled in any case; free it). Errors: OUT_OF_MEMORY from the merge only. */
sdxl_status sdxl_lora_worker_apply(sdxl_lora_worker *lw, const sdxl_lora_spec *spec, sdxl_lora_report *rep,
                                   sdxl_error *err);

/* Remove every adapter from the model (bit-identical base weights). */
void sdxl_lora_worker_restore(sdxl_lora_worker *lw);

sdxl_lora_registry *sdxl_lora_worker_registry(sdxl_lora_worker *lw);
sdxl_lora_cache *sdxl_lora_worker_cache(sdxl_lora_worker *lw);
const sdxl_lora_worker_config *sdxl_lora_worker_get_config(const sdxl_lora_worker *lw);

/* A1111's `Lora hashes: "name: hash, …"` value (without the quotes) for the
 * applied entries of rep, into buf; "" when none. */
void sdxl_lora_report_hashes(const sdxl_lora_report *rep, char *buf, size_t n);

/* ---- A1111 prompt tags -------------------------------------------------------
 * `<lora:NAME>`, `<lora:NAME:W>`, `<lora:NAME:TE:UNET>` (A1111's positional
 * form: text-encoder then UNet multiplier), `<lora:NAME:unet=X:te=Y>`, and the
 * same with `lyco:`. Each tag is removed from the prompt and appended to
 * spec as an entry (spec->enabled becomes true). A malformed tag (bad
 * number, empty name) is left in the text and reported in `warning`.
 * `clean` gets the prompt without the tags (at most n bytes with the NUL;
 * INVALID_ARG if it does not fit or spec is full). */
sdxl_status sdxl_lora_extract_prompt_tags(const char *prompt, char *clean, size_t n, sdxl_lora_spec *spec,
                                          char *warning, size_t warning_n, sdxl_error *err);

#endif
