/* alloc.h - the one allocation path of the engine.
 *
 * All heap memory of the engine goes through these functions, so that
 * (1) live and peak bytes are counted (the seed's memory monitoring reads
 * sdxl_mem_get_stats), (2) tests can make the Nth allocation fail and check
 * that every caller returns a clean SDXL_STATUS_OUT_OF_MEMORY, and (3) every
 * block is 64-byte aligned (one cache line, one AVX-512 vector).
 *
 * Thread-safe: counters are atomics. sdxl_free(NULL) is a no-op.
 */
#ifndef SDXL_CORE_ALLOC_H
#define SDXL_CORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "sdxl.h"

#define SDXL_ALIGN 64

/* Returns a 64-byte-aligned block or NULL (size 0 returns a valid unique block). */
void *sdxl_malloc(size_t size);
void *sdxl_calloc(size_t n, size_t size); /* NULL also on n*size overflow */
void *sdxl_realloc(void *p, size_t size); /* keeps p on failure, like realloc */
void sdxl_free(void *p);
char *sdxl_strdup(const char *s);
/* Size the block was allocated with (p from sdxl_malloc & co). */
size_t sdxl_alloc_size(const void *p);
/* Ask the kernel to back [p, p+n) with transparent huge pages where it can
 * (the 2 MiB-aligned interior; a no-op for small blocks or without THP).
 * For large buffers written once right after allocation (merged weights):
 * one fault per 2 MiB instead of per 4 KiB. */
void sdxl_advise_huge(void *p, size_t n);

/* Count memory the engine maps (mmap of weight files): +bytes on map,
 * -bytes on unmap. Shown as mapped_bytes, not live_bytes. */
void sdxl__mem_track_mapped(int64_t delta);

/* Fault injection for tests: the `n`th allocation from now (1 = the next)
 * fails, and every later one succeeds again. n <= 0 disables. Returns how many
 * allocations happened since the last call (lets a test enumerate every
 * allocation site of an operation). */
int64_t sdxl__alloc_fail_at(int64_t n);

#endif
