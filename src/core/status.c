#include "core/status.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[SDXL_STATUS_COUNT_] = {
    [SDXL_STATUS_OK] = "ok",
    [SDXL_STATUS_INVALID_ARG] = "invalid argument",
    [SDXL_STATUS_BAD_INPUT] = "bad input",
    [SDXL_STATUS_NOT_FOUND] = "not found",
    [SDXL_STATUS_IO] = "I/O error",
    [SDXL_STATUS_OUT_OF_MEMORY] = "out of memory",
    [SDXL_STATUS_UNSUPPORTED] = "unsupported",
    [SDXL_STATUS_CANCELLED] = "cancelled",
    [SDXL_STATUS_INTERNAL] = "internal error",
};

const char *sdxl_status_str(sdxl_status st) {
    if ((unsigned)st >= SDXL_STATUS_COUNT_) return "unknown status";
    return status_names[st];
}

sdxl_status sdxl_error_vset(sdxl_error *err, sdxl_status st, const char *fmt, va_list ap) {
    if (err) {
        err->status = st;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return st;
}

sdxl_status sdxl_error_set(sdxl_error *err, sdxl_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sdxl_error_vset(err, st, fmt, ap);
    va_end(ap);
    return st;
}

sdxl_status sdxl_error_prefix(sdxl_error *err, const char *fmt, ...) {
    if (!err) return SDXL_STATUS_OK;
    char old[SDXL_ERROR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    /* append ": old", truncated (memcpy: no format-truncation diagnostics) */
    size_t at = n < 0 ? 0 : (size_t)n, cap = sizeof err->msg;
    if (at + 2 < cap) {
        memcpy(err->msg + at, ": ", 2);
        at += 2;
        size_t len = strnlen(old, sizeof old - 1);
        if (len > cap - 1 - at) len = cap - 1 - at;
        memcpy(err->msg + at, old, len);
        err->msg[at + len] = '\0';
    }
    return err->status;
}

void sdxl_error_clear(sdxl_error *err) {
    if (!err) return;
    err->status = SDXL_STATUS_OK;
    err->msg[0] = '\0';
}
