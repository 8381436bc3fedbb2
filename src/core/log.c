#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static atomic_int log_level = SDXL_LOG_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static sdxl_log_fn log_fn;
static void *log_ud;

static void log_init(void) {
    const char *env = getenv("SDXL_LOG");
    if (!env) return;
    static const char *const names[] = {"error", "warn", "info", "debug", "trace"};
    for (int i = 0; i < 5; i++)
        if (strcasecmp(env, names[i]) == 0) atomic_store(&log_level, i);
}

void sdxl_log_set_level(sdxl_log_level level) {
    pthread_once(&log_once, log_init);
    atomic_store(&log_level, (int)level);
}

sdxl_log_level sdxl_log_get_level(void) {
    pthread_once(&log_once, log_init);
    return (sdxl_log_level)atomic_load(&log_level);
}

void sdxl_log_set_callback(sdxl_log_fn fn, void *user_data) {
    pthread_mutex_lock(&log_mu);
    log_fn = fn;
    log_ud = user_data;
    pthread_mutex_unlock(&log_mu);
}

void sdxl__log(sdxl_log_level level, const char *fmt, ...) {
    if ((int)level > (int)sdxl_log_get_level()) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    static const char *const tags[] = {"error", "warn", "info", "debug", "trace"};
    pthread_mutex_lock(&log_mu);
    if (log_fn)
        log_fn(level, buf, log_ud);
    else
        fprintf(stderr, "sdxl %s: %s\n", tags[level], buf);
    pthread_mutex_unlock(&log_mu);
}
