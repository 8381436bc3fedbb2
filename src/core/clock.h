/* clock.h - a monotonic clock for timings (load, merge, per-stage latency).
 * Thread-safe. */
#ifndef SDXL_CORE_CLOCK_H
#define SDXL_CORE_CLOCK_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double sdxl_now_s(void);

/* Milliseconds elapsed since `start` (a value of sdxl_now_s). */
double sdxl_ms_since(double start);

#endif
