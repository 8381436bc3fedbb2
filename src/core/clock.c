#include "core/clock.h"

#include <time.h>

double sdxl_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double sdxl_ms_since(double start) { return 1e3 * (sdxl_now_s() - start); }
