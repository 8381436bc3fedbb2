/* STUB: serial fallback until the real pool lands. */
#include "core/threadpool.h"
sdxl_threadpool *sdxl_threadpool_create(int n_threads) { return (sdxl_threadpool *)1; }
void sdxl_threadpool_free(sdxl_threadpool *p) {}
int sdxl_threadpool_size(const sdxl_threadpool *p) { return 1; }
void sdxl_threadpool_parallel_for(sdxl_threadpool *p, size_t n, size_t grain, sdxl_parallel_fn fn, void *ctx) {
    if (n) fn(ctx, 0, n, 0);
}
