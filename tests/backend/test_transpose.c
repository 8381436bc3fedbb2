#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "test.h"

/* Every element lands at its transposed place, for sizes around the tile
 * (32) edges and both element sizes. */
TEST(transpose_places_every_element) {
    sdxl_error err;
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    const int64_t dims[][3] = {{1, 1, 1}, {2, 3, 5}, {1, 32, 32}, {3, 33, 65}, {2, 100, 7}, {1, 1, 70}};
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
        int64_t B = dims[k][0], R = dims[k][1], C = dims[k][2];
        float *x = sdxl_malloc((size_t)(B * R * C) * 4), *y = sdxl_malloc((size_t)(B * R * C) * 4);
        uint16_t *xh = sdxl_malloc((size_t)(B * R * C) * 2), *yh = sdxl_malloc((size_t)(B * R * C) * 2);
        for (int64_t i = 0; i < B * R * C; i++) x[i] = (float)i, xh[i] = (uint16_t)(i * 7);
        sdxl_tensor tx = sdxl_tensor_3d(x, SDXL_DTYPE_F32, B, R, C), ty = sdxl_tensor_3d(y, SDXL_DTYPE_F32, B, C, R);
        sdxl_tensor hx = sdxl_tensor_3d(xh, SDXL_DTYPE_F16, B, R, C), hy = sdxl_tensor_3d(yh, SDXL_DTYPE_F16, B, C, R);
        CHECK(be->ops->transpose(be, &tx, &ty) == SDXL_STATUS_OK);
        CHECK(be->ops->transpose(be, &hx, &hy) == SDXL_STATUS_OK);
        int bad = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) {
                    bad += y[(b * C + c) * R + r] != x[(b * R + r) * C + c];
                    bad += yh[(b * C + c) * R + r] != xh[(b * R + r) * C + c];
                }
        CHECK_MSG(bad == 0, "case %zu: %d misplaced elements", k, bad);
        sdxl_free(x), sdxl_free(y), sdxl_free(xh), sdxl_free(yh);
    }
    sdxl_backend_free(be);
}

TEST(transpose_rejects_bad_shapes) {
    sdxl_error err;
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    REQUIRE(be);
    float x[24], y[24];
    sdxl_tensor tx = sdxl_tensor_3d(x, SDXL_DTYPE_F32, 1, 4, 6), ty = sdxl_tensor_3d(y, SDXL_DTYPE_F32, 1, 4, 6);
    CHECK(be->ops->transpose(be, &tx, &ty) == SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(sdxl_backend_last_error(be), "transpose") != NULL);
    CHECK(be->ops->transpose(be, &tx, &tx) == SDXL_STATUS_INVALID_ARG);
    sdxl_backend_free(be);
}
