#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "test.h"

TEST(status_strings_cover_every_code) {
    for (int s = 0; s < SDXL_STATUS_COUNT_; s++) CHECK(strcmp(sdxl_status_str((sdxl_status)s), "unknown status") != 0);
    CHECK(strcmp(sdxl_status_str(SDXL_STATUS_COUNT_), "unknown status") == 0);
    CHECK(strcmp(sdxl_status_str((sdxl_status)-1), "unknown status") == 0);
}

TEST(error_set_and_prefix) {
    sdxl_error e;
    sdxl_error_clear(&e);
    CHECK(sdxl_error_set(&e, SDXL_STATUS_BAD_INPUT, "tensor %s: %d bytes", "w", 12) == SDXL_STATUS_BAD_INPUT);
    CHECK(strcmp(e.msg, "tensor w: 12 bytes") == 0);
    sdxl_error_prefix(&e, "file %s", "a.safetensors");
    CHECK(strcmp(e.msg, "file a.safetensors: tensor w: 12 bytes") == 0);
    CHECK(e.status == SDXL_STATUS_BAD_INPUT);
    CHECK(sdxl_error_set(NULL, SDXL_STATUS_IO, "x") == SDXL_STATUS_IO);
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    sdxl_error_set(&e, SDXL_STATUS_IO, "%s", big);
    CHECK(strlen(e.msg) == SDXL_ERROR_MSG_MAX - 1);
}

TEST(alloc_counts_live_bytes_and_aligns) {
    sdxl_mem_stats s0, s1, s2;
    sdxl_mem_get_stats(&s0);
    void *p = sdxl_malloc(1000);
    REQUIRE(p);
    CHECK(((uintptr_t)p % 64) == 0);
    CHECK(sdxl_alloc_size(p) == 1000);
    sdxl_mem_get_stats(&s1);
    CHECK(s1.live_bytes - s0.live_bytes == 1000);
    CHECK(s1.peak_bytes >= s1.live_bytes);
    sdxl_free(p);
    sdxl_mem_get_stats(&s2);
    CHECK(s2.live_bytes == s0.live_bytes);
    sdxl_free(NULL);
    CHECK(sdxl_calloc((size_t)1 << 62, 16) == NULL); /* overflow */
}

TEST(alloc_fault_injection_fails_exactly_the_nth) {
    sdxl__alloc_fail_at(2);
    void *a = sdxl_malloc(8), *b = sdxl_malloc(8), *c = sdxl_malloc(8);
    CHECK(a != NULL);
    CHECK(b == NULL);
    CHECK(c != NULL);
    sdxl_free(a);
    sdxl_free(c);
    sdxl__alloc_fail_at(0);
    void *r = sdxl_malloc(4);
    REQUIRE(r);
    memcpy(r, "abc", 4);
    sdxl__alloc_fail_at(1);
    CHECK(sdxl_realloc(r, 100) == NULL); /* failed realloc keeps the block */
    CHECK(memcmp(r, "abc", 4) == 0);
    sdxl__alloc_fail_at(0);
    sdxl_free(r);
}
