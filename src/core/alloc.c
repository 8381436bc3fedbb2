/* Every block carries a 64-byte header in front of it holding its size, so
 * frees can be counted exactly and the user pointer stays 64-byte aligned. */
#include "core/alloc.h"

#include <sys/mman.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define HDR SDXL_ALIGN
#define MAGIC 0x5344584C414C4C43ull /* "SDXLALLC" */

typedef struct {
    size_t size;
    uint64_t magic;
} block_hdr;

static atomic_llong live_bytes, peak_bytes, mapped_bytes, n_allocs, n_frees;
static atomic_llong fail_countdown; /* 0 = off */
static atomic_llong since_mark;

static int should_fail(void) {
    atomic_fetch_add(&since_mark, 1);
    long long c = atomic_load(&fail_countdown);
    while (c > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) return c == 1;
    }
    return 0;
}

static void count_alloc(size_t size) {
    long long now = atomic_fetch_add(&live_bytes, (long long)size) + (long long)size;
    long long peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {
    }
    atomic_fetch_add(&n_allocs, 1);
}

void *sdxl_malloc(size_t size) {
    if (size > SIZE_MAX - 2 * HDR || should_fail()) return NULL;
    size_t total = HDR + ((size + HDR - 1) / HDR) * HDR;
    unsigned char *raw = aligned_alloc(HDR, total);
    if (!raw) return NULL;
    block_hdr *h = (block_hdr *)raw;
    h->size = size;
    h->magic = MAGIC;
    count_alloc(size);
    return raw + HDR;
}

void *sdxl_calloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) return NULL;
    void *p = sdxl_malloc(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

size_t sdxl_alloc_size(const void *p) {
    if (!p) return 0;
    const block_hdr *h = (const block_hdr *)((const unsigned char *)p - HDR);
    return h->size;
}

void sdxl_free(void *p) {
    if (!p) return;
    unsigned char *raw = (unsigned char *)p - HDR;
    block_hdr *h = (block_hdr *)raw;
    if (h->magic != MAGIC) abort(); /* programmer error: not ours, or freed twice */
    h->magic = 0;
    atomic_fetch_sub(&live_bytes, (long long)h->size);
    atomic_fetch_add(&n_frees, 1);
    free(raw);
}

void *sdxl_realloc(void *p, size_t size) {
    if (!p) return sdxl_malloc(size);
    void *q = sdxl_malloc(size);
    if (!q) return NULL;
    size_t old = sdxl_alloc_size(p);
    memcpy(q, p, old < size ? old : size);
    sdxl_free(p);
    return q;
}

char *sdxl_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = sdxl_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void sdxl__mem_track_mapped(int64_t delta) { atomic_fetch_add(&mapped_bytes, (long long)delta); }

int64_t sdxl__alloc_fail_at(int64_t n) {
    atomic_store(&fail_countdown, n > 0 ? (long long)n : 0);
    return (int64_t)atomic_exchange(&since_mark, 0);
}

void sdxl_mem_get_stats(sdxl_mem_stats *out) {
    out->live_bytes = atomic_load(&live_bytes);
    out->peak_bytes = atomic_load(&peak_bytes);
    out->mapped_bytes = atomic_load(&mapped_bytes);
    out->n_allocs = atomic_load(&n_allocs);
    out->n_frees = atomic_load(&n_frees);
}

void sdxl_mem_reset_peak(void) { atomic_store(&peak_bytes, atomic_load(&live_bytes)); }

void sdxl_advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t b = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + n) & ~(huge - 1);
    if (p && e > b) (void)madvise((void *)b, e - b, MADV_HUGEPAGE);
#else
    (void)p, (void)n;
#endif
}
