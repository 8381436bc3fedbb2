/* runner.c - runs every registered TEST and prints "N passed, N failed".
 * Usage: sdxl_tests [substring]   (only tests whose name contains it)
 *        sdxl_tests --list        */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#ifndef SDXL_TEST_DATA_DIR
#define SDXL_TEST_DATA_DIR "tests/data"
#endif

#define MAX_TESTS 4096

typedef struct {
    const char *name, *file;
    sdxl_test_fn fn;
} test_entry;

static test_entry tests[MAX_TESTS];
static int n_tests;
static int cur_failures;
static const char *cur_name;

void sdxl_test_register(const char *name, const char *file, sdxl_test_fn fn) {
    if (n_tests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    tests[n_tests++] = (test_entry){name, file, fn};
}

void sdxl_test_fail(const char *file, int line, const char *fmt, ...) {
    if (cur_failures < 20) {
        fprintf(stdout, "    %s:%d: ", file, line);
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stdout, fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
    } else if (cur_failures == 20) {
        fprintf(stdout, "    (further failures of %s not shown)\n", cur_name);
    }
    cur_failures++;
}

const char *sdxl_test_data(const char *rel) {
    static _Thread_local char buf[4096];
    const char *root = getenv("SDXL_TEST_DATA");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : SDXL_TEST_DATA_DIR, rel);
    return buf;
}

#ifndef SDXL_BINARY_DIR
#define SDXL_BINARY_DIR "build"
#endif

int sdxl_test_run_cli(const char *args, char *buf, size_t n) {
    char cmd[16384];
    if ((size_t)snprintf(cmd, sizeof cmd, "%s/sdxl %s 2>&1", SDXL_BINARY_DIR, args) >= sizeof cmd) return -1;
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t k = fread(buf, 1, n - 1, p);
    buf[k] = 0;
    while (fgetc(p) != EOF) {
    } /* drain, so the child never blocks on a full pipe */
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

const char *sdxl_test_tmpdir(void);

int sdxl_test_exec(const char *const *args, char **out, char **err) {
    char ob[600], eb[600];
    snprintf(ob, sizeof ob, "%s/exec.out", sdxl_test_tmpdir());
    snprintf(eb, sizeof eb, "%s/exec.err", sdxl_test_tmpdir());
    const char *argv[64] = {SDXL_BINARY_DIR "/sdxl"};
    int n = 1;
    for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fo = open(ob, O_WRONLY | O_CREAT | O_TRUNC, 0600), fe = open(eb, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0) _exit(126);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    *out = read_all(ob);
    *err = read_all(eb);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char tmpdir[256];

const char *sdxl_test_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/sdxl-tests-%d", (int)getpid());
        mkdir(tmpdir, 0700);
    }
    return tmpdir;
}

double sdxl_test_max_abs_diff(const float *a, const float *b, long n) {
    double m = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) return INFINITY; /* NaN */
        if (d > m) m = d;
    }
    return m;
}

static int cmp_entry(const void *a, const void *b) {
    const test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *filter = argc > 1 ? argv[1] : NULL;
    qsort(tests, (size_t)n_tests, sizeof tests[0], cmp_entry);
    if (filter && strcmp(filter, "--list") == 0) {
        for (int i = 0; i < n_tests; i++) printf("%s\t%s\n", tests[i].name, tests[i].file);
        return 0;
    }
    int passed = 0, failed = 0;
    for (int i = 0; i < n_tests; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        cur_failures = 0;
        cur_name = tests[i].name;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (cur_failures) {
            failed++;
            printf("FAIL %s (%d failed checks, %.0f ms)\n", tests[i].name, cur_failures, ms);
        } else {
            passed++;
            printf("ok   %s (%.0f ms)\n", tests[i].name, ms);
        }
    }
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

/* The seed's request, verbatim (its Python dict as JSON; docs/api.md shows it first). */
const char sdxl_test_seed_request[] = "{\n"
                                   "    \"prompt\": \"A beautiful anime girl warrior in golden hour lighting\",\n"
                                   "    \"lora\": {\n"
                                   "        \"enabled\": true,\n"
                                   "        \"global_weight\": 1.1,\n"
                                   "        \"models\": [\n"
                                   "            {\n"
                                   "                \"name\": \"anime_style_v2\",\n"
                                   "                \"weight\": 0.8,\n"
                                   "                \"category\": \"style\"\n"
                                   "            },\n"
                                   "            {\n"
                                   "                \"name\": \"girl_character_lora\",\n"
                                   "                \"weight\": 0.7,\n"
                                   "                \"category\": \"character\"\n"
                                   "            },\n"
                                   "            \"simple_lora_name\"\n"
                                   "        ]\n"
                                   "    }\n"
                                   "}\n";
