/* Every block is rounded up to a whole number of 64-byte lines, so `used`
 * is always a multiple of 64 and each block starts aligned (the buffer from
 * sdxl_malloc is). A measuring arena runs the same arithmetic without a
 * buffer, which is why its peak is exactly the capacity a real arena needs
 * for the same sequence of calls. */
#include "core/arena.h"

#include <stdint.h>

#include "core/alloc.h"

/* Under AddressSanitizer the bytes of the buffer no live block covers are
 * poisoned, so a kernel that writes past its block (into padding, free space
 * or space released by a reset) is reported instead of corrupting a
 * neighbour silently. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif
#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define LINE ((size_t)SDXL_ALIGN)

struct sdxl_arena {
    unsigned char *base; /* NULL when measuring */
    size_t capacity;
    size_t used;
    size_t peak;
};

/* Measuring arenas hand out addresses in the non-canonical x86-64 range
 * (bit 47 clear, bits 48..63 not all equal): touching one faults at once
 * instead of quietly scribbling over real memory. */
#if UINTPTR_MAX > 0xFFFFFFFFu
#define DUMMY_BASE ((uintptr_t)0xDEAD000000000000ull)
#else
#define DUMMY_BASE ((uintptr_t)0x40000000u)
#endif

sdxl_arena *sdxl_arena_create(size_t capacity) {
    sdxl_arena *a = sdxl_calloc(1, sizeof *a);
    if (!a) return NULL;
    if (capacity > 0) {
        a->base = sdxl_malloc(capacity);
        if (!a->base) {
            sdxl_free(a);
            return NULL;
        }
        a->capacity = capacity;
        POISON(a->base, capacity);
    }
    return a;
}

void sdxl_arena_free(sdxl_arena *a) {
    if (!a) return;
    if (a->base) UNPOISON(a->base, a->capacity);
    sdxl_free(a->base);
    sdxl_free(a);
}

void *sdxl_arena_alloc(sdxl_arena *a, size_t size) {
    if (!a) return NULL;
    /* size 0 still takes a line, so distinct calls give distinct blocks */
    if (size > SIZE_MAX - LINE) return NULL;
    size_t bytes = size == 0 ? LINE : (size + LINE - 1) / LINE * LINE;
    size_t off = a->used;
    if (a->base) {
        if (bytes > a->capacity - off) return NULL; /* off <= capacity always */
    } else if (bytes > SIZE_MAX - off) {
        return NULL;
    }
    a->used = off + bytes;
    if (a->used > a->peak) a->peak = a->used;
    if (!a->base) return (void *)(DUMMY_BASE + off);
    UNPOISON(a->base + off, size);
    return a->base + off;
}

size_t sdxl_arena_mark(const sdxl_arena *a) { return a ? a->used : 0; }

void sdxl_arena_reset(sdxl_arena *a, size_t mark) {
    /* A mark past `used` cannot come from sdxl_arena_mark on this arena's
     * current state; ignoring it keeps `used` aligned and in range. */
    if (!a || mark > a->used || mark % LINE) return;
    if (a->base) POISON(a->base + mark, a->used - mark);
    a->used = mark;
}

size_t sdxl_arena_used(const sdxl_arena *a) { return a ? a->used : 0; }
size_t sdxl_arena_peak(const sdxl_arena *a) { return a ? a->peak : 0; }
size_t sdxl_arena_capacity(const sdxl_arena *a) { return a ? a->capacity : 0; }
bool sdxl_arena_is_measuring(const sdxl_arena *a) { return a && !a->base; }
