/* cache.h - an LRU cache of parsed LoRA adapters, shared by concurrent requests.
 *
 *     sdxl_lora_cache *c;
 *     sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
 *     p.max_entries = cfg.cache_size;
 *     p.max_bytes = (size_t)cfg.memory_limit_mb << 20;
 *     if (sdxl_lora_cache_create(&p, naming, &c, &err)) ... err.msg ...
 *
 *     sdxl_lora_handle *h;
 *     sdxl_lora_load_info info;
 *     if (sdxl_lora_cache_get(c, path, &h, &info, &err)) ... report err.msg, go on without it ...
 *     ... use sdxl_lora_handle_adapter(h) (merge.h) ...
 *     sdxl_lora_cache_release(c, h);
 *     ...
 *     sdxl_lora_cache_free(c);
 *
 * ---- what is cached ----------------------------------------------------------
 *
 * Entries are keyed by the path string as given (pass the registry's resolved
 * path: two spellings of one file are two entries). Each entry remembers the
 * identity of the file it was loaded from, taken by stat(2) just before the
 * load: device, inode, size, mtime and ctime (nanoseconds). A get stats the
 * path again; a cached entry whose identity differs (the file was rewritten
 * in place, touched, or replaced by a rename) is dropped ("stale") and the
 * file loaded again, giving a new adapter (sdxl_lora_adapter_id differs).
 * A file changed while its load runs is caught by the next get (the identity
 * kept is the one from before the load).
 *
 * ---- bounds --------------------------------------------------------------------
 *
 * Bytes are sdxl_lora_adapter_bytes: what the adapter holds in memory
 * counted by the engine's allocation hook (core/alloc.h; its file bytes plus
 * its tables). The cache's own bookkeeping (a ~100-byte entry and the path
 * per adapter) is not counted.
 *
 * Both bounds are enforced after every load and every release: least-
 * recently-used entries that are not in use are evicted (freed) until the
 * entries kept number at most max_entries and their bytes sum to at most
 * max_bytes. An entry in use (handles out) is never evicted, so while
 * handles are out the cache may hold more than its bounds, by at most the
 * entries in use; the excess goes as soon as they are released. (Evicting an
 * entry in use would not free its memory, and a get of the same path would
 * then load a second copy.) An adapter larger than max_bytes on its own is
 * refused as too large: a file whose size already exceeds max_bytes without
 * reading it, else once loaded (then freed at once); status
 * SDXL_STATUS_OUT_OF_MEMORY, info->too_large, a message with both sizes.
 * This holds whether caching is enabled or not: max_bytes is the LoRA memory
 * limit.
 *
 * ---- concurrency ---------------------------------------------------------------
 *
 * Every function but sdxl_lora_cache_free is thread-safe. One mutex guards the index; loads run
 * outside it, so different files load in parallel and hits are never held
 * up by a load. One load per path at a time: a get for a path whose load is
 * in flight waits for that load and shares its result - the same adapter,
 * or the same error (info->waited). This holds with caching disabled too
 * (gets that overlap share one load; a finished load is never reused).
 * An adapter is immutable once loaded, so any number of threads may use one
 * handle's adapter at once.
 */
#ifndef SDXL_LORA_CACHE_H
#define SDXL_LORA_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "lora/adapter.h"
#include "model/naming.h"

/* ---- events (optional; for logs and metrics) ---------------------------------- */

typedef enum sdxl_lora_cache_event_type {
    SDXL_LORA_CACHE_EVENT_LOAD_BEGIN = 0, /* a load of `path` starts (none other in flight, none kept) */
    SDXL_LORA_CACHE_EVENT_LOADED,         /* it succeeded: bytes, load_ms; kept = entered the cache */
    SDXL_LORA_CACHE_EVENT_LOAD_FAILED,    /* it failed (status; too_large included) */
    SDXL_LORA_CACHE_EVENT_EVICTED,        /* an entry left the cache to meet a bound, or by clear */
    SDXL_LORA_CACHE_EVENT_STALE           /* an entry left the cache: its file changed */
} sdxl_lora_cache_event_type;

typedef struct sdxl_lora_cache_event {
    sdxl_lora_cache_event_type type;
    const char *path;   /* valid during the call */
    size_t bytes;       /* LOADED, EVICTED, STALE: the adapter's bytes */
    double load_ms;     /* LOADED, LOAD_FAILED */
    sdxl_status status; /* LOAD_FAILED */
    bool kept;          /* LOADED: the adapter entered the cache */
} sdxl_lora_cache_event;

/* Called with the cache's lock held, so the events of one cache are totally
 * ordered (a LOAD_BEGIN of a path never comes while an entry of that path is
 * kept or another load of it runs). Keep it short; it must not call into the
 * cache. */
typedef void (*sdxl_lora_cache_event_fn)(const sdxl_lora_cache_event *ev, void *user_data);

/* ---- the cache ----------------------------------------------------------------- */

typedef struct sdxl_lora_cache_params {
    bool enabled;       /* false: every get loads, nothing is kept (release frees) */
    size_t max_entries; /* cache_size; 0 = no entries kept */
    size_t max_bytes;   /* memory_limit_mb << 20; an adapter larger than this alone is refused as too
                         * large; 0 = no byte bound (and nothing is too large) */
    sdxl_lora_cache_event_fn on_event; /* may be NULL */
    void *user_data;                   /* passed to on_event */
} sdxl_lora_cache_params;

/* enabled, 32 entries, 2048 MiB (the seed's cache_size and memory_limit_mb
 * defaults: room for a handful of rank-128 SDXL LoRAs of ~200-900 MB), no
 * event callback. */
sdxl_lora_cache_params sdxl_lora_cache_default_params(void);

typedef struct sdxl_lora_cache sdxl_lora_cache;
typedef struct sdxl_lora_handle sdxl_lora_handle; /* a reference to a loaded adapter */

/* What one get did (for the request's per-adapter metrics). */
typedef struct sdxl_lora_load_info {
    bool hit;       /* served from the cache */
    bool waited;    /* another thread was loading it; we waited for its load */
    double load_ms; /* time of the load (0 on a hit; when waited: the shared load's time) */
    double wait_ms; /* when waited: how long this call waited for it */
    size_t bytes;   /* the adapter's bytes (on too_large: the size found to be too large) */
    bool too_large; /* refused: larger than max_bytes (status SDXL_STATUS_OUT_OF_MEMORY, message says so) */
} sdxl_lora_load_info;

/* `p` NULL: defaults. `naming` (required) is what every adapter is bound to;
 * it must outlive the cache. Errors: INVALID_ARG, OUT_OF_MEMORY. */
sdxl_status sdxl_lora_cache_create(const sdxl_lora_cache_params *p, const sdxl_naming *naming,
                                   sdxl_lora_cache **out, sdxl_error *err);

/* Frees every entry. All handles must have been released first (a programmer
 * error otherwise; asserted) and no other call may run on the cache.
 * NULL-safe. */
void sdxl_lora_cache_free(sdxl_lora_cache *c);

/* A handle to the adapter at `path`, from the cache or loaded now.
 * Identity of a file: path + device, inode, size, mtime_ns, ctime_ns (stat at
 * get time). Hit: same identity cached -> the entry, made most recently used.
 * Miss: load (one load per path at a time: a second thread asking for the
 * same path waits for the first's result and shares it - or its error),
 * insert, then evict least-recently-used entries not in use until both
 * bounds hold. A cached entry whose file changed is dropped (freed now, or
 * at its last release if in use) and the file reloaded. Too large: see
 * above. Errors of the load (NOT_FOUND, IO, BAD_INPUT, UNSUPPORTED,
 * OUT_OF_MEMORY) pass through with their message; INVALID_ARG for NULL
 * arguments. On success *out is a handle the caller owns until
 * sdxl_lora_cache_release; on failure *out is NULL. `info` may be NULL; it
 * is filled on success and failure. Thread-safe. */
sdxl_status sdxl_lora_cache_get(sdxl_lora_cache *c, const char *path, sdxl_lora_handle **out,
                                sdxl_lora_load_info *info, sdxl_error *err);

/* The adapter (owned by the cache; valid until the handle is released). */
const sdxl_lora_adapter *sdxl_lora_handle_adapter(const sdxl_lora_handle *h);

/* Give a handle back: once per successful get (gets of one cached entry may
 * return the same pointer; each counts). The adapter is freed now if nothing
 * else uses it and it is not kept (caching disabled, dropped as stale, or
 * over a bound). NULL-safe. Thread-safe. */
void sdxl_lora_cache_release(sdxl_lora_cache *c, sdxl_lora_handle *h);

typedef struct sdxl_lora_cache_stats {
    /* every get with valid arguments is exactly one of: a hit, or a miss. A
     * miss either ran a load (loads), shared another thread's load (waits),
     * was refused by the file's size (too_large without a load), or found no
     * memory for its bookkeeping before loading. */
    uint64_t hits, misses;
    uint64_t loads;         /* loads run */
    uint64_t load_failures; /* loads that failed (too large once loaded included) */
    uint64_t waits;         /* misses that waited for another thread's load of the same path */
    uint64_t evictions;     /* entries evicted to meet a bound, or by clear */
    uint64_t stale;         /* entries dropped because their file changed */
    uint64_t too_large;     /* gets refused as too large (by file size or by loaded bytes) */
    size_t entries, bytes;  /* kept now (entries in use included) */
    size_t in_use;          /* handles out (on kept entries or not) */
    double load_ms_total;   /* sum of the loads' times, failed ones included */
} sdxl_lora_cache_stats;

/* A consistent snapshot. Thread-safe. */
void sdxl_lora_cache_stats_get(const sdxl_lora_cache *c, sdxl_lora_cache_stats *out);

/* Drop (free) every kept entry not in use; entries in use stay. Thread-safe. */
void sdxl_lora_cache_clear(sdxl_lora_cache *c);

#endif
