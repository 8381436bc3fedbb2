/* arena.h - bump allocator for activations (ARCHITECTURE rule 5).
 *
 * An arena is sized once for the largest plan; inside the denoising loop
 * nothing else allocates. Blocks are 64-byte aligned. A measuring arena
 * (capacity 0 at create) hands out no memory but records the high-water
 * mark a plan would need, so a dry run sizes the real arena exactly.
 * Not thread-safe: one arena per job.
 *
 * Each block takes its size rounded up to a multiple of 64 bytes (size 0
 * takes 64, so blocks are always distinct); used, peak and marks are
 * multiples of 64. A real arena created with a measuring arena's peak as its
 * capacity serves the same sequence of calls exactly. Under AddressSanitizer
 * the bytes outside live blocks are poisoned. All functions accept NULL
 * (alloc returns NULL, the getters 0/false, free and reset do nothing).
 */
#ifndef SDXL_CORE_ARENA_H
#define SDXL_CORE_ARENA_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

typedef struct sdxl_arena sdxl_arena;

/* capacity > 0: one sdxl_malloc of that size (NULL on failure).
 * capacity == 0: a measuring arena. */
sdxl_arena *sdxl_arena_create(size_t capacity);
void sdxl_arena_free(sdxl_arena *a);

/* A 64-byte-aligned block of `size` bytes, or NULL when the arena is full
 * (for a measuring arena: a non-NULL dummy pointer that must not be touched). */
void *sdxl_arena_alloc(sdxl_arena *a, size_t size);
/* Offset marks: free everything allocated after `mark` at once. A mark
 * beyond the current `used` (not from this arena's present state) is
 * ignored. */
size_t sdxl_arena_mark(const sdxl_arena *a);
void sdxl_arena_reset(sdxl_arena *a, size_t mark);

size_t sdxl_arena_used(const sdxl_arena *a);
size_t sdxl_arena_peak(const sdxl_arena *a);     /* high-water mark since create */
size_t sdxl_arena_capacity(const sdxl_arena *a); /* 0 for a measuring arena */
bool sdxl_arena_is_measuring(const sdxl_arena *a);

#endif
