/* STUB */
#include "core/arena.h"
sdxl_arena *sdxl_arena_create(size_t capacity) { return NULL; }
void sdxl_arena_free(sdxl_arena *a) {}
void *sdxl_arena_alloc(sdxl_arena *a, size_t size) { return NULL; }
size_t sdxl_arena_mark(const sdxl_arena *a) { return 0; }
void sdxl_arena_reset(sdxl_arena *a, size_t mark) {}
size_t sdxl_arena_used(const sdxl_arena *a) { return 0; }
size_t sdxl_arena_peak(const sdxl_arena *a) { return 0; }
size_t sdxl_arena_capacity(const sdxl_arena *a) { return 0; }
bool sdxl_arena_is_measuring(const sdxl_arena *a) { return false; }
