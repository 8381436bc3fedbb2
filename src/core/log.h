/* log.h - leveled logging for the engine's own code.
 * Level and sink are set through the public API in sdxl.h. Thread-safe. */
#ifndef SDXL_CORE_LOG_H
#define SDXL_CORE_LOG_H

#include "sdxl.h"

void sdxl__log(sdxl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SDXL_LOG_E(...) sdxl__log(SDXL_LOG_ERROR, __VA_ARGS__)
#define SDXL_LOG_W(...) sdxl__log(SDXL_LOG_WARN, __VA_ARGS__)
#define SDXL_LOG_I(...) sdxl__log(SDXL_LOG_INFO, __VA_ARGS__)
#define SDXL_LOG_D(...)                                                                            \
    do {                                                                                           \
        if (sdxl_log_get_level() >= SDXL_LOG_DEBUG) sdxl__log(SDXL_LOG_DEBUG, __VA_ARGS__);       \
    } while (0)
#define SDXL_LOG_T(...)                                                                            \
    do {                                                                                           \
        if (sdxl_log_get_level() >= SDXL_LOG_TRACE) sdxl__log(SDXL_LOG_TRACE, __VA_ARGS__);       \
    } while (0)

#endif
