/* status.h - status codes and per-call error text.
 *
 * Every fallible function returns an sdxl_status. Functions that can fail
 * because of their input also take an `sdxl_error *err` (may be NULL) and,
 * on failure, write a message saying what, where and why into it. Handles
 * (model, backend, ...) keep the last error text of their own.
 *
 * Thread-safety: all functions here are thread-safe (no global state).
 */
#ifndef SDXL_CORE_STATUS_H
#define SDXL_CORE_STATUS_H

#include <stdarg.h>

#include "sdxl.h" /* sdxl_status */

#define SDXL_ERROR_MSG_MAX 512

typedef struct sdxl_error {
    sdxl_status status;
    char msg[SDXL_ERROR_MSG_MAX];
} sdxl_error;

/* Record a failure in `err` (if non-NULL) with a printf-style message and
 * return `st`, so callers can write `return sdxl_error_set(err, ...)`.
 * The message is truncated to SDXL_ERROR_MSG_MAX-1 bytes. */
sdxl_status sdxl_error_set(sdxl_error *err, sdxl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
sdxl_status sdxl_error_vset(sdxl_error *err, sdxl_status st, const char *fmt, va_list ap);

/* Prefix an existing message with context ("loading unet: <old msg>"). */
sdxl_status sdxl_error_prefix(sdxl_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reset to SDXL_STATUS_OK and an empty message. NULL-safe. */
void sdxl_error_clear(sdxl_error *err);

#endif
