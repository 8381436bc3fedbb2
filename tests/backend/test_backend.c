#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "test.h"

/* The CPU back end is the reference: every entry of its table is filled. */
TEST(backend_cpu_table_is_complete) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    const sdxl_backend_ops *o = sdxl_backend_ops_of(be);
    CHECK(strcmp(o->name, "cpu") == 0);
    const void *const entries[] = {
        (const void *)o->destroy,     (const void *)o->buffer_alloc, (const void *)o->buffer_free,
        (const void *)o->upload,      (const void *)o->download,     (const void *)o->synchronize,
        (const void *)o->linear,      (const void *)o->conv2d,       (const void *)o->group_norm,
        (const void *)o->layer_norm,  (const void *)o->attention,    (const void *)o->softmax,
        (const void *)o->unary,       (const void *)o->geglu,        (const void *)o->binary,
        (const void *)o->scale,       (const void *)o->concat,       (const void *)o->transpose,
        (const void *)o->upsample_nearest2x, (const void *)o->embedding, (const void *)o->cast,
    };
    /* the list above must name every member: a new op added to the struct breaks this */
    CHECK(sizeof entries / sizeof entries[0] == (sizeof *o - sizeof o->name) / sizeof(void (*)(void)));
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) CHECK_MSG(entries[i] != NULL, "entry %zu", i);
    CHECK(sdxl_backend_threads(be) >= 1);
    sdxl_backend_free(be);
    sdxl_backend_free(NULL);
}

TEST(backend_cpu_buffers_roundtrip) {
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    void *buf = NULL;
    REQUIRE_OK(be->ops->buffer_alloc(be, 4096, &buf), &be->err);
    char src[4096], dst[4096];
    for (int i = 0; i < 4096; i++) src[i] = (char)(i * 31);
    CHECK(be->ops->upload(be, buf, src, sizeof src) == SDXL_STATUS_OK);
    CHECK(be->ops->download(be, dst, buf, sizeof dst) == SDXL_STATUS_OK);
    CHECK(memcmp(src, dst, sizeof src) == 0);
    be->ops->buffer_free(be, buf);
    sdxl_backend_free(be);
}

/* Without a device (or without a CUDA build) asking for CUDA is a clean
 * UNSUPPORTED with a message; with a device the buffers round-trip. */
TEST(backend_cuda_slot_reports_or_works) {
    sdxl_error err = {0};
    sdxl_backend_params p = sdxl_backend_default_params();
    p.kind = SDXL_BACKEND_CUDA;
    sdxl_backend *be = sdxl_backend_create(&p, &err);
    if (!be) {
        CHECK(err.status == SDXL_STATUS_UNSUPPORTED);
        CHECK(strlen(err.msg) > 0);
        return;
    }
    CHECK(strcmp(be->ops->name, "cuda") == 0);
    void *buf = NULL;
    REQUIRE_OK(be->ops->buffer_alloc(be, 1 << 20, &buf), &be->err);
    static float src[1 << 18], dst[1 << 18];
    for (int i = 0; i < 1 << 18; i++) src[i] = (float)i * 0.5f;
    CHECK(be->ops->upload(be, buf, src, sizeof src) == SDXL_STATUS_OK);
    CHECK(be->ops->synchronize(be) == SDXL_STATUS_OK);
    CHECK(be->ops->download(be, dst, buf, sizeof dst) == SDXL_STATUS_OK);
    CHECK(memcmp(src, dst, sizeof src) == 0);
    be->ops->buffer_free(be, buf);
    sdxl_backend_free(be);
}

TEST(backend_create_fails_cleanly_without_memory) {
    /* Every allocation of creation, failed in turn, gives NULL + OUT_OF_MEMORY and leaks nothing. */
    sdxl_mem_stats before, after;
    sdxl_mem_get_stats(&before);
    for (int n = 1; n < 64; n++) {
        sdxl_error err = {0};
        sdxl__alloc_fail_at(n);
        sdxl_backend *be = sdxl_backend_create(NULL, &err);
        int64_t used = sdxl__alloc_fail_at(0);
        if (be) {
            sdxl_backend_free(be);
            CHECK(used < n); /* succeeded only because it made fewer than n allocations */
            break;
        }
        CHECK(err.status == SDXL_STATUS_OUT_OF_MEMORY);
    }
    sdxl_mem_get_stats(&after);
    CHECK(after.live_bytes == before.live_bytes);
}
