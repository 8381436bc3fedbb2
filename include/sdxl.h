/* sdxl.h - public C API of sdxl-worker.
 *
 * sdxl-worker generates SDXL images with LoRA adapters on CPU and CUDA.
 * This header grows with the library; today it holds the pieces every
 * layer shares: status codes, version, logging and memory statistics.
 *
 * Conventions (see also the layer headers under src/):
 *   - every fallible call returns sdxl_status; SDXL_STATUS_OK is 0;
 *   - objects come in sdxl_<noun>_create / sdxl_<noun>_free pairs, and
 *     every *_free(NULL) is a no-op;
 *   - the caller owns what a *_create returns.
 */
#ifndef SDXL_H
#define SDXL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SDXL_VERSION_STRING "0.1.0"

typedef enum sdxl_status {
    SDXL_STATUS_OK = 0,
    SDXL_STATUS_INVALID_ARG,   /* the caller broke an API contract (shape, NULL, ...) */
    SDXL_STATUS_BAD_INPUT,     /* untrusted data (file, request) is malformed */
    SDXL_STATUS_NOT_FOUND,     /* a file, tensor or name does not exist */
    SDXL_STATUS_IO,            /* the operating system refused (open, read, mmap, write) */
    SDXL_STATUS_OUT_OF_MEMORY, /* an allocation failed or a memory budget was exceeded */
    SDXL_STATUS_UNSUPPORTED,   /* valid but not implemented here (dtype, back end, device) */
    SDXL_STATUS_CANCELLED,     /* stopped by a cancel callback or a signal */
    SDXL_STATUS_INTERNAL,      /* a bug: an invariant did not hold */
    SDXL_STATUS_COUNT_
} sdxl_status;

/* Short constant name of a status ("bad input"). Never NULL. */
const char *sdxl_status_str(sdxl_status st);

/* ---- logging -------------------------------------------------------------- */
typedef enum sdxl_log_level {
    SDXL_LOG_ERROR = 0,
    SDXL_LOG_WARN,
    SDXL_LOG_INFO,
    SDXL_LOG_DEBUG,
    SDXL_LOG_TRACE
} sdxl_log_level;

typedef void (*sdxl_log_fn)(sdxl_log_level level, const char *msg, void *user_data);

/* Messages above `level` are dropped. Default SDXL_LOG_INFO, or the value of
 * the environment variable SDXL_LOG (error|warn|info|debug|trace) read once. */
void sdxl_log_set_level(sdxl_log_level level);
sdxl_log_level sdxl_log_get_level(void);
/* Route messages to `fn` (NULL restores the default: stderr). Thread-safe. */
void sdxl_log_set_callback(sdxl_log_fn fn, void *user_data);

/* ---- memory statistics ---------------------------------------------------- */
typedef struct sdxl_mem_stats {
    int64_t live_bytes;   /* heap bytes allocated through the engine and not yet freed */
    int64_t peak_bytes;   /* high-water mark of live_bytes since start or last reset */
    int64_t mapped_bytes; /* bytes of files currently memory-mapped by the engine */
    int64_t n_allocs;     /* allocations made so far */
    int64_t n_frees;      /* frees made so far */
} sdxl_mem_stats;

/* Snapshot of the engine's allocation counters. Thread-safe. */
void sdxl_mem_get_stats(sdxl_mem_stats *out);
/* Set peak_bytes to the current live_bytes. */
void sdxl_mem_reset_peak(void);

#ifdef __cplusplus
}
#endif
#endif
