#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

TEST(arena_blocks_are_aligned_distinct_and_usable) {
    sdxl_arena *a = sdxl_arena_create(4096);
    REQUIRE(a);
    CHECK(!sdxl_arena_is_measuring(a));
    CHECK_EQ_INT(sdxl_arena_capacity(a), 4096);
    static const size_t sizes[] = {1, 63, 64, 65, 0, 1000, 7};
    unsigned char *p[7];
    size_t used = 0;
    for (int i = 0; i < 7; i++) {
        p[i] = sdxl_arena_alloc(a, sizes[i]);
        REQUIRE(p[i]);
        CHECK(((uintptr_t)p[i] & 63) == 0);
        size_t take = sizes[i] ? (sizes[i] + 63) / 64 * 64 : 64;
        used += take;
        CHECK_EQ_INT(sdxl_arena_used(a), used);
        memset(p[i], i + 1, sizes[i]);
    }
    /* later blocks start past the end of earlier ones, and no write spilled */
    for (int i = 1; i < 7; i++) CHECK(p[i] >= p[i - 1] + (sizes[i - 1] ? sizes[i - 1] : 1));
    for (int i = 0; i < 7; i++)
        for (size_t k = 0; k < sizes[i]; k++) CHECK(p[i][k] == i + 1);
    CHECK_EQ_INT(sdxl_arena_peak(a), used);
    sdxl_arena_free(a);
}

TEST(arena_full_returns_null_and_keeps_state) {
    sdxl_arena *a = sdxl_arena_create(256);
    REQUIRE(a);
    CHECK(sdxl_arena_alloc(a, 200) != NULL); /* takes 256 */
    CHECK(sdxl_arena_alloc(a, 1) == NULL);
    CHECK(sdxl_arena_alloc(a, 0) == NULL);
    CHECK_EQ_INT(sdxl_arena_used(a), 256);
    CHECK(sdxl_arena_alloc(a, SIZE_MAX) == NULL);
    CHECK(sdxl_arena_alloc(a, SIZE_MAX - 10) == NULL);
    CHECK_EQ_INT(sdxl_arena_used(a), 256);
    sdxl_arena_free(a);

    /* a capacity that is not a whole number of lines: sizes round up */
    a = sdxl_arena_create(100);
    REQUIRE(a);
    CHECK(sdxl_arena_alloc(a, 101) == NULL);
    CHECK(sdxl_arena_alloc(a, 64) != NULL);
    CHECK(sdxl_arena_alloc(a, 1) == NULL);
    sdxl_arena_free(a);
}

TEST(arena_mark_and_reset) {
    sdxl_arena *a = sdxl_arena_create(1024);
    REQUIRE(a);
    CHECK(sdxl_arena_alloc(a, 100));
    size_t m = sdxl_arena_mark(a);
    CHECK_EQ_INT(m, 128);
    void *x = sdxl_arena_alloc(a, 300);
    void *y = sdxl_arena_alloc(a, 300);
    REQUIRE(x && y);
    CHECK(sdxl_arena_alloc(a, 300) == NULL); /* 128 + 320 + 320 + 320 > 1024 */
    sdxl_arena_reset(a, m);
    CHECK_EQ_INT(sdxl_arena_used(a), 128);
    CHECK_EQ_INT(sdxl_arena_peak(a), 768); /* peak survives a reset */
    CHECK(sdxl_arena_alloc(a, 300) == x);  /* the space is handed out again */
    /* marks that cannot be from this arena's present state are ignored */
    sdxl_arena_reset(a, 4096);
    CHECK_EQ_INT(sdxl_arena_used(a), 448);
    sdxl_arena_reset(a, 65);
    CHECK_EQ_INT(sdxl_arena_used(a), 448);
    sdxl_arena_reset(a, 0);
    CHECK_EQ_INT(sdxl_arena_used(a), 0);
    CHECK_EQ_INT(sdxl_arena_peak(a), 768);
    sdxl_arena_free(a);
}

/* A plan-like sequence of allocations and resets; returns how many
 * allocations failed. The sizes come from a fixed generator. */
static int run_plan(sdxl_arena *a) {
    uint64_t s = 12345;
    int failed = 0;
    size_t marks[8];
    int depth = 0;
    for (int i = 0; i < 400; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(s >> 33);
        if (r % 5 == 0 && depth < 8) {
            marks[depth++] = sdxl_arena_mark(a);
        } else if (r % 5 == 1 && depth > 0) {
            sdxl_arena_reset(a, marks[--depth]);
        } else {
            size_t size = (r >> 4) % 5000;
            void *p = sdxl_arena_alloc(a, size);
            if (!p) failed++;
            else if (!sdxl_arena_is_measuring(a) && size) memset(p, 0x5A, size);
        }
    }
    return failed;
}

TEST(arena_measuring_peak_is_exactly_what_a_real_arena_needs) {
    sdxl_arena *m = sdxl_arena_create(0);
    REQUIRE(m);
    CHECK(sdxl_arena_is_measuring(m));
    CHECK_EQ_INT(sdxl_arena_capacity(m), 0);
    void *d1 = sdxl_arena_alloc(m, 10), *d2 = sdxl_arena_alloc(m, 0);
    CHECK(d1 && d2 && d1 != d2);
    CHECK(((uintptr_t)d1 & 63) == 0 && ((uintptr_t)d2 & 63) == 0);
    sdxl_arena_reset(m, 0);
    CHECK_EQ_INT(run_plan(m), 0);
    size_t peak = sdxl_arena_peak(m);
    CHECK(peak > 0 && peak % 64 == 0);
    CHECK(sdxl_arena_alloc(m, SIZE_MAX) == NULL);
    sdxl_arena_free(m);

    sdxl_arena *exact = sdxl_arena_create(peak);
    REQUIRE(exact);
    CHECK_EQ_INT(run_plan(exact), 0);
    CHECK_EQ_INT(sdxl_arena_peak(exact), peak);
    sdxl_arena_free(exact);

    sdxl_arena *small = sdxl_arena_create(peak - 1);
    REQUIRE(small);
    CHECK(run_plan(small) > 0);
    sdxl_arena_free(small);
}

TEST(arena_null_safe) {
    sdxl_arena_free(NULL);
    CHECK(sdxl_arena_alloc(NULL, 8) == NULL);
    CHECK_EQ_INT(sdxl_arena_mark(NULL), 0);
    sdxl_arena_reset(NULL, 0);
    CHECK_EQ_INT(sdxl_arena_used(NULL), 0);
    CHECK_EQ_INT(sdxl_arena_peak(NULL), 0);
    CHECK_EQ_INT(sdxl_arena_capacity(NULL), 0);
    CHECK(!sdxl_arena_is_measuring(NULL));
}

TEST(arena_memory_is_counted_and_creation_fails_cleanly) {
    sdxl_mem_stats s0, s1, s2;
    sdxl_mem_get_stats(&s0);
    sdxl_arena *a = sdxl_arena_create(1 << 20);
    REQUIRE(a);
    sdxl_mem_get_stats(&s1);
    CHECK(s1.live_bytes - s0.live_bytes >= (1 << 20)); /* through sdxl_malloc */
    sdxl_arena_free(a);
    sdxl_mem_get_stats(&s2);
    CHECK_EQ_INT(s2.live_bytes, s0.live_bytes);

    for (int k = 1; k <= 2; k++) { /* the struct, then the buffer */
        sdxl__alloc_fail_at(k);
        a = sdxl_arena_create(4096);
        sdxl__alloc_fail_at(0);
        CHECK_MSG(a == NULL, "allocation %d failed but create succeeded", k);
        sdxl_arena_free(a);
    }
    sdxl__alloc_fail_at(1);
    a = sdxl_arena_create(0);
    sdxl__alloc_fail_at(0);
    CHECK(a == NULL);
    sdxl_mem_get_stats(&s2);
    CHECK_EQ_INT(s2.live_bytes, s0.live_bytes);
    CHECK(sdxl_arena_create(SIZE_MAX) == NULL);
}

#ifdef TEST_ASAN
TEST(arena_poisons_bytes_outside_live_blocks) {
    sdxl_arena *a = sdxl_arena_create(1024);
    REQUIRE(a);
    unsigned char *p = sdxl_arena_alloc(a, 10);
    REQUIRE(p);
    CHECK(!__asan_address_is_poisoned(p + 9));
    CHECK(__asan_address_is_poisoned(p + 10));  /* padding of the block */
    CHECK(__asan_address_is_poisoned(p + 64));  /* not handed out yet */
    size_t m = sdxl_arena_mark(a);
    unsigned char *q = sdxl_arena_alloc(a, 128);
    REQUIRE(q);
    CHECK(!__asan_address_is_poisoned(q + 127));
    sdxl_arena_reset(a, m);
    CHECK(__asan_address_is_poisoned(q)); /* released by the reset */
    sdxl_arena_free(a);
}
#endif
