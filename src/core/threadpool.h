/* threadpool.h - a persistent pool of worker threads for parallel loops.
 *
 * parallel_for splits [0, n) into contiguous chunks, runs them on the pool
 * (the calling thread takes part) and returns when all are done. Workers
 * sleep on a condition variable between loops. One loop at a time per pool:
 * calls from several threads are serialized by a mutex. A pool of 1 thread
 * runs everything on the caller.
 */
#ifndef SDXL_CORE_THREADPOOL_H
#define SDXL_CORE_THREADPOOL_H

#include <stddef.h>

typedef struct sdxl_threadpool sdxl_threadpool;

/* fn(ctx, begin, end, thread_index) with 0 <= thread_index < n_threads. */
typedef void (*sdxl_parallel_fn)(void *ctx, size_t begin, size_t end, int thread_index);

/* n_threads <= 0: one per online CPU. NULL on failure. */
sdxl_threadpool *sdxl_threadpool_create(int n_threads);
void sdxl_threadpool_free(sdxl_threadpool *p);
int sdxl_threadpool_size(const sdxl_threadpool *p); /* 1 for NULL */

/* Run fn over [0, n) in chunks of at least `grain` items (grain 0 = 1).
 * Every index is in exactly one chunk; chunks are contiguous and handed out
 * dynamically, each of max(grain, n / (4 * n_threads)) items (the last may
 * be shorter). n == 0 calls nothing. p == NULL, a pool of 1 thread and a
 * loop of a single chunk run fn(ctx, 0, n, 0) once on the caller. Writes
 * made by fn are visible to the caller when this returns. A parallel_for
 * issued from inside fn on the same pool runs inline on that thread (same
 * thread_index) instead of deadlocking. Idle workers spin ~50 us, then
 * sleep. Thread-safe (callers are serialized per pool). */
void sdxl_threadpool_parallel_for(sdxl_threadpool *p, size_t n, size_t grain, sdxl_parallel_fn fn,
                                  void *ctx);

#endif
