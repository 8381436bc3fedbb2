#include <string.h>

#include "core/tensor.h"
#include "test.h"

TEST(tensor_make_nelem_nbytes) {
    float buf[1];
    sdxl_tensor t = sdxl_tensor_4d(buf, SDXL_DTYPE_F32, 2, 4, 64, 64);
    CHECK_EQ_INT(t.ndim, 4);
    CHECK(t.data == buf && t.dtype == SDXL_DTYPE_F32 && t.device == SDXL_DEVICE_CPU);
    CHECK_EQ_INT(sdxl_tensor_nelem(&t), 2 * 4 * 64 * 64);
    CHECK_EQ_INT(sdxl_tensor_nbytes(&t), 2 * 4 * 64 * 64 * 4);
    t.dtype = SDXL_DTYPE_F16;
    CHECK_EQ_INT(sdxl_tensor_nbytes(&t), 2 * 4 * 64 * 64 * 2);
    t.dtype = SDXL_DTYPE_BF16;
    CHECK_EQ_INT(sdxl_tensor_nbytes(&t), 2 * 4 * 64 * 64 * 2);
    t.dtype = SDXL_DTYPE_I32;
    CHECK_EQ_INT(sdxl_tensor_nbytes(&t), 2 * 4 * 64 * 64 * 4);

    sdxl_tensor v = sdxl_tensor_2d(buf, SDXL_DTYPE_F16, 77, 2048);
    CHECK_EQ_INT(v.ndim, 2);
    CHECK(v.ne[0] == 77 && v.ne[1] == 2048 && v.ne[2] == 1 && v.ne[3] == 1); /* unused dims are 1 */
    CHECK_EQ_INT(sdxl_tensor_nelem(&v), 77 * 2048);
    sdxl_tensor s = sdxl_tensor_make(buf, SDXL_DTYPE_F32, 0, NULL); /* a scalar */
    CHECK_EQ_INT(s.ndim, 0);
    CHECK_EQ_INT(sdxl_tensor_nelem(&s), 1);
    CHECK_EQ_INT(sdxl_tensor_nbytes(&s), 4);
    sdxl_tensor e = sdxl_tensor_3d(buf, SDXL_DTYPE_F32, 2, 0, 5); /* empty */
    CHECK_EQ_INT(sdxl_tensor_nelem(&e), 0);
    CHECK_EQ_INT(sdxl_tensor_nbytes(&e), 0);
    sdxl_tensor o = sdxl_tensor_1d(buf, SDXL_DTYPE_BF16, 5);
    CHECK_EQ_INT(sdxl_tensor_nbytes(&o), 10);
}

TEST(tensor_same_shape_and_inner) {
    sdxl_tensor a = sdxl_tensor_3d(NULL, SDXL_DTYPE_F32, 2, 3, 4);
    sdxl_tensor b = sdxl_tensor_3d(NULL, SDXL_DTYPE_F16, 2, 3, 4);
    sdxl_tensor c = sdxl_tensor_4d(NULL, SDXL_DTYPE_F32, 2, 3, 4, 1);
    sdxl_tensor d = sdxl_tensor_3d(NULL, SDXL_DTYPE_F32, 2, 4, 3);
    CHECK(sdxl_tensor_same_shape(&a, &b)); /* dtype is not part of the shape */
    CHECK(!sdxl_tensor_same_shape(&a, &c)); /* rank is */
    CHECK(!sdxl_tensor_same_shape(&a, &d));
    CHECK_EQ_INT(sdxl_tensor_inner(&a, 0), 24);
    CHECK_EQ_INT(sdxl_tensor_inner(&a, 1), 12);
    CHECK_EQ_INT(sdxl_tensor_inner(&a, 2), 4);
    CHECK_EQ_INT(sdxl_tensor_inner(&a, 3), 1);
    CHECK_EQ_INT(sdxl_tensor_inner(&a, -1), 24);
}

TEST(tensor_reshape) {
    float buf[1];
    sdxl_tensor t = sdxl_tensor_4d(buf, SDXL_DTYPE_BF16, 2, 4, 8, 8);
    t.device = SDXL_DEVICE_CUDA;
    sdxl_tensor r;
    CHECK(sdxl_tensor_reshape(&t, 3, (int64_t[]){2, 4, 64}, &r));
    CHECK(r.data == buf && r.dtype == SDXL_DTYPE_BF16 && r.device == SDXL_DEVICE_CUDA);
    CHECK(r.ndim == 3 && r.ne[0] == 2 && r.ne[1] == 4 && r.ne[2] == 64 && r.ne[3] == 1);
    CHECK_EQ_INT(sdxl_tensor_nbytes(&r), sdxl_tensor_nbytes(&t));
    CHECK(sdxl_tensor_reshape(&t, 1, (int64_t[]){512}, &r) && r.ne[0] == 512);

    sdxl_tensor untouched = sdxl_tensor_1d(NULL, SDXL_DTYPE_F32, 7), keep = untouched;
    CHECK(!sdxl_tensor_reshape(&t, 2, (int64_t[]){2, 255}, &untouched)); /* count differs */
    CHECK(!sdxl_tensor_reshape(&t, 2, (int64_t[]){-2, -256}, &untouched)); /* product matches, signs do not */
    CHECK(!sdxl_tensor_reshape(&t, 5, (int64_t[]){1, 2, 4, 8, 8}, &untouched));
    CHECK(!sdxl_tensor_reshape(&t, -1, (int64_t[]){512}, &untouched));
    CHECK(memcmp(&untouched, &keep, sizeof keep) == 0);

    sdxl_tensor one = sdxl_tensor_1d(buf, SDXL_DTYPE_F32, 1);
    CHECK(sdxl_tensor_reshape(&one, 0, NULL, &r) && r.ndim == 0 && sdxl_tensor_nelem(&r) == 1);
}

TEST(tensor_slice0_is_a_view_of_rows) {
    uint16_t buf[3 * 4 * 5];
    for (int i = 0; i < 60; i++) buf[i] = (uint16_t)i;
    sdxl_tensor t = sdxl_tensor_3d(buf, SDXL_DTYPE_F16, 3, 4, 5);
    sdxl_tensor s = sdxl_tensor_slice0(&t, 1, 3);
    CHECK(s.data == buf + 20);
    CHECK(s.ndim == 3 && s.ne[0] == 2 && s.ne[1] == 4 && s.ne[2] == 5);
    CHECK(s.dtype == SDXL_DTYPE_F16);
    CHECK_EQ_INT(sdxl_tensor_nelem(&s), 40);
    CHECK_EQ_INT(((uint16_t *)s.data)[0], 20);
    CHECK_EQ_INT(((uint16_t *)s.data)[39], 59);
    sdxl_tensor e = sdxl_tensor_slice0(&t, 3, 3); /* empty, one past the end */
    CHECK(e.data == buf + 60 && sdxl_tensor_nelem(&e) == 0);
    float fb[6];
    sdxl_tensor v = sdxl_tensor_1d(fb, SDXL_DTYPE_F32, 6);
    sdxl_tensor vs = sdxl_tensor_slice0(&v, 4, 6);
    CHECK(vs.data == fb + 4 && vs.ne[0] == 2);
}

TEST(tensor_describe) {
    char buf[64];
    sdxl_tensor t = sdxl_tensor_4d(NULL, SDXL_DTYPE_F32, 2, 4, 64, 64);
    CHECK(strcmp(sdxl_tensor_describe(&t, buf, sizeof buf), "f32[2,4,64,64]") == 0);
    sdxl_tensor b = sdxl_tensor_2d(NULL, SDXL_DTYPE_BF16, 77, 2048);
    CHECK(strcmp(sdxl_tensor_describe(&b, buf, sizeof buf), "bf16[77,2048]") == 0);
    sdxl_tensor s = sdxl_tensor_make(NULL, SDXL_DTYPE_I32, 0, NULL);
    CHECK(strcmp(sdxl_tensor_describe(&s, buf, sizeof buf), "i32[]") == 0);
    sdxl_tensor big = sdxl_tensor_1d(NULL, SDXL_DTYPE_F16, 10000000000LL);
    CHECK(strcmp(sdxl_tensor_describe(&big, buf, sizeof buf), "f16[10000000000]") == 0);
    /* a short buffer gets a terminated prefix, never an overflow */
    char small[8];
    memset(small, 'x', sizeof small);
    const char *r = sdxl_tensor_describe(&t, small, sizeof small);
    CHECK(r == small);
    CHECK(strcmp(small, "f32[2,4") == 0);
    memset(small, 'x', sizeof small);
    sdxl_tensor_describe(&t, small, 3);
    CHECK(strcmp(small, "f3") == 0 && small[3] == 'x');
}
