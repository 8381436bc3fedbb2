/* test.h - the test framework of sdxl-worker (no dependency).
 *
 *   TEST(f16_roundtrip) { CHECK(x == y); CHECK_NEAR(a, b, 1e-6); }
 *
 * Each TEST registers itself at start-up; tests/runner.c runs them all (or
 * those whose name contains argv[1]) and ends with "N passed, N failed".
 * CHECK* records a failure and continues; REQUIRE* returns from the test.
 * Paths: sdxl_test_data(rel) gives tests/data/<rel> (SDXL_TEST_DATA, else the
 * source tree's path baked in at build time); sdxl_test_tmpdir() a per-run
 * scratch folder.
 */
#ifndef SDXL_TESTS_TEST_H
#define SDXL_TESTS_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/status.h"

typedef void (*sdxl_test_fn)(void);
void sdxl_test_register(const char *name, const char *file, sdxl_test_fn fn);
void sdxl_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *sdxl_test_data(const char *rel);  /* static buffer per call: copy if kept */
const char *sdxl_test_tmpdir(void);
/* Run the built `sdxl` binary with `args` (a shell-quoted string) and capture
 * stdout+stderr into buf (NUL-terminated, truncated to n-1). Returns the exit
 * status, or -1 if it could not run or died from a signal. */
int sdxl_test_run_cli(const char *args, char *buf, size_t n);
/* Run the built `sdxl` binary with argv[1..] = `args` (NULL-terminated, no
 * shell), capturing stdout and stderr separately into malloc'd strings
 * (*out, *err; free() them). Returns the exit status, -1 if it did not exit. */
int sdxl_test_exec(const char *const *args, char **out, char **err);
/* The seed's request JSON, verbatim (tests of the request schema and the
 * LoRA worker). */
extern const char sdxl_test_seed_request[];
/* Max abs difference / max |ref|, for reporting. */
double sdxl_test_max_abs_diff(const float *a, const float *b, long n);

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void test_register_##name(void) {                          \
        sdxl_test_register(#name, __FILE__, test_##name);                                          \
    }                                                                                              \
    static void test_##name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) sdxl_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                       \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) sdxl_test_fail(__FILE__, __LINE__, __VA_ARGS__);                              \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            sdxl_test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);                              \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) sdxl_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_); \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                             \
        if (!(fabs(a_ - b_) <= t_))                                                                \
            sdxl_test_fail(__FILE__, __LINE__, "|%s - %s| = |%.9g - %.9g| = %.3g > %.3g", #a, #b,   \
                           a_, b_, fabs(a_ - b_), t_);                                             \
    } while (0)

/* Status must be SDXL_STATUS_OK; prints the error text otherwise. */
#define REQUIRE_OK(expr, errp)                                                                     \
    do {                                                                                           \
        int st_ = (int)(expr);                                                                     \
        if (st_ != 0) {                                                                            \
            const sdxl_error *e_ = (errp);                                                         \
            sdxl_test_fail(__FILE__, __LINE__, "%s -> status %d: %s", #expr, st_,                  \
                           e_ ? e_->msg : "");                                                     \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#endif
