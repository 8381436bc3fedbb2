#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "io/file.h"
#include "test.h"

TEST(read_file_contents_limits_and_errors) {
    char path[512];
    snprintf(path, sizeof path, "%s/small.txt", sdxl_test_tmpdir());
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fputs("hello\nworld", f);
    fclose(f);
    sdxl_error err = {0};
    char *buf = NULL;
    size_t len = 0;
    REQUIRE_OK(sdxl_read_file(path, 100, &buf, &len, &err), &err);
    CHECK(len == 11 && strcmp(buf, "hello\nworld") == 0 && buf[len] == 0);
    sdxl_free(buf);
    CHECK(sdxl_read_file(path, 10, &buf, NULL, &err) == SDXL_STATUS_BAD_INPUT); /* 11 > 10 */
    CHECK(buf == NULL && strstr(err.msg, "too large") && strstr(err.msg, "small.txt"));
    CHECK(sdxl_read_file(sdxl_test_tmpdir(), 100, &buf, NULL, &err) == SDXL_STATUS_IO); /* a folder */
    CHECK(strstr(err.msg, "not a regular file") != NULL);
    snprintf(path, sizeof path, "%s/absent.txt", sdxl_test_tmpdir());
    CHECK(sdxl_read_file(path, 100, &buf, NULL, &err) == SDXL_STATUS_NOT_FOUND);
    snprintf(path, sizeof path, "%s/small.txt", sdxl_test_tmpdir());
    sdxl__alloc_fail_at(1);
    CHECK(sdxl_read_file(path, 100, &buf, NULL, &err) == SDXL_STATUS_OUT_OF_MEMORY);
    sdxl__alloc_fail_at(0);
    CHECK(buf == NULL);
}
