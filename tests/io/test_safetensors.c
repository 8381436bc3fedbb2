/* Tests of io/safetensors: writer -> reader round trips, zero-copy mapping,
 * lookups, atomic writes, a corpus of malformed files built here (each must
 * be BAD_INPUT with a message naming the problem), allocation failure at
 * every allocation of an open and a write, the real test-data files, and the
 * `sdxl inspect` command on good and bad files. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/status.h"
#include "io/safetensors.h"
#include "test.h"

#ifndef SDXL_BINARY_DIR
#define SDXL_BINARY_DIR "."
#endif

/* ---- helpers ------------------------------------------------------------ */

/* REQUIRE_OK(expr, &err) trips -Waddress ("always true") in test.h's
 * `(errp) ? ...`; going through a pointer variable avoids that. */
#define REQUIRE_ST(expr, errp)                                                                               \
    do {                                                                                                     \
        sdxl_error *ep_ = (errp);                                                                            \
        REQUIRE_OK(expr, ep_);                                                                               \
    } while (0)

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static const char *tmp_path(const char *name) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", sdxl_test_tmpdir(), name);
    return b;
}

static bool write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* A file image: u64 header length, `json` padded with spaces to a multiple
 * of 8 (so the data section is 8-aligned in an aligned buffer), then
 * data_len bytes of a pattern. Caller frees with free(). */
static uint8_t *image_n(const char *json, size_t json_len, size_t data_len, size_t *len) {
    *len = 0;
    size_t hl = (json_len + 7) & ~(size_t)7;
    uint8_t *b = aligned_alloc(64, (8 + hl + data_len + 63) & ~(size_t)63);
    if (!b) return NULL;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, json_len);
    memset(b + 8 + json_len, ' ', hl - json_len);
    for (size_t i = 0; i < data_len; i++)
        b[8 + hl + i] = (uint8_t)(i * 13 + 1);
    *len = 8 + hl + data_len;
    return b;
}

static uint8_t *image(const char *json, size_t data_len, size_t *len) {
    return image_n(json, strlen(json), data_len, len);
}

/* Parse must fail with BAD_INPUT, no object, and a message naming the file
 * ("<memory>") and containing `keyword`. */
static void expect_bad_buf(const char *label, const void *buf, size_t len, const char *keyword) {
    sdxl_st_file *f = (sdxl_st_file *)1;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = sdxl_st_parse(buf, len, &f, &err);
    CHECK_MSG(st == SDXL_STATUS_BAD_INPUT, "%s: status %s (%s)", label, sdxl_status_str(st), err.msg);
    CHECK_MSG(f == NULL, "%s: out not NULL on failure", label);
    CHECK_MSG(strstr(err.msg, keyword) != NULL, "%s: message lacks \"%s\": %s", label, keyword, err.msg);
    CHECK_MSG(strncmp(err.msg, "<memory>: ", 10) == 0, "%s: message does not name the file: %s", label,
              err.msg);
    if (st == SDXL_STATUS_OK) sdxl_st_close(f);
}

static void expect_bad(const char *label, const char *json, size_t data_len, const char *keyword) {
    size_t len;
    uint8_t *b = image(json, data_len, &len);
    expect_bad_buf(label, b, len, keyword);
    free(b);
}

static void expect_ok(const char *label, const char *json, size_t data_len, size_t n_tensors) {
    size_t len;
    uint8_t *b = image(json, data_len, &len);
    sdxl_st_file *f = NULL;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = sdxl_st_parse(b, len, &f, &err);
    CHECK_MSG(st == SDXL_STATUS_OK, "%s: %s", label, err.msg);
    CHECK_MSG(sdxl_st_count(f) == n_tensors, "%s: %zu tensors, expected %zu", label, sdxl_st_count(f),
              n_tensors);
    sdxl_st_close(f);
    free(b);
}

static int64_t live_bytes(void) {
    sdxl_mem_stats s;
    sdxl_mem_get_stats(&s);
    return s.live_bytes;
}

static int64_t mapped_bytes(void) {
    sdxl_mem_stats s;
    sdxl_mem_get_stats(&s);
    return s.mapped_bytes;
}

/* ---- round trip --------------------------------------------------------- */

#define RT_N (SDXL_ST_DTYPE_COUNT_ + 3)

typedef struct {
    sdxl_st_write_entry e[RT_N];
    int64_t shapes[RT_N][3];
    char names[RT_N][32];
    uint8_t data[RT_N][6 * 8];
} rt_set;

/* One [3, 2] tensor per dtype, a 0-d scalar, and two tensors with no
 * elements; entries in descending element size so the writer keeps them
 * aligned. */
static void rt_fill(rt_set *s) {
    memset(s, 0, sizeof *s);
    int k = 0;
    static const size_t sizes[] = {8, 4, 2, 1};
    for (int si = 0; si < 4; si++) {
        for (int d = 0; d < SDXL_ST_DTYPE_COUNT_; d++) {
            if (sdxl_st_dtype_size((sdxl_st_dtype)d) != sizes[si]) continue;
            snprintf(s->names[k], sizeof s->names[k], "t.%s", sdxl_st_dtype_name((sdxl_st_dtype)d));
            s->shapes[k][0] = 3;
            s->shapes[k][1] = 2;
            for (size_t i = 0; i < sizeof s->data[k]; i++)
                s->data[k][i] = (uint8_t)(i * 7 + (size_t)d * 31 + 1);
            s->e[k] = (sdxl_st_write_entry){s->names[k], (sdxl_st_dtype)d, 2, s->shapes[k], s->data[k]};
            k++;
        }
        if (si == 1) { /* after the 4-byte ones: a scalar */
            float v = 3.5f;
            snprintf(s->names[k], sizeof s->names[k], "scalar");
            memcpy(s->data[k], &v, 4);
            s->e[k] = (sdxl_st_write_entry){s->names[k], SDXL_ST_F32, 0, NULL, s->data[k]};
            k++;
        }
    }
    snprintf(s->names[k], sizeof s->names[k], "empty.f16");
    s->shapes[k][0] = 0;
    s->shapes[k][1] = 5;
    s->e[k] = (sdxl_st_write_entry){s->names[k], SDXL_ST_F16, 2, s->shapes[k], NULL};
    k++;
    snprintf(s->names[k], sizeof s->names[k], "empty.i64");
    s->shapes[k][0] = 4;
    s->shapes[k][1] = 0;
    s->shapes[k][2] = 2;
    s->e[k] = (sdxl_st_write_entry){s->names[k], SDXL_ST_I64, 3, s->shapes[k], s->data[k]};
    k++;
}

static const char *const rt_meta[] = {"format", "pt", "note", "with \"quotes\", \\, a\nnewline and \xc3\xbc",
                                      NULL};

TEST(safetensors_roundtrip_all_dtypes) {
    static rt_set s;
    rt_fill(&s);
    const char *path = tmp_path("rt.safetensors");
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    sdxl_error err;
    sdxl_error_clear(&err);
    REQUIRE_ST(sdxl_st_write(path, s.e, RT_N, rt_meta, &err), &err);
    CHECK(file_exists(path));
    CHECK(!file_exists(tmp));

    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    CHECK(strcmp(sdxl_st_path(f), path) == 0);
    CHECK_EQ_INT(sdxl_st_count(f), RT_N);
    CHECK(sdxl_st_header_size(f) % 8 == 0);
    struct stat sb;
    stat(path, &sb);
    CHECK_EQ_INT((uint64_t)sb.st_size, 8 + sdxl_st_header_size(f) + sdxl_st_data_size(f));

    uint64_t sum = 0;
    for (int k = 0; k < RT_N; k++) {
        const sdxl_st_write_entry *e = &s.e[k];
        const sdxl_st_tensor *t = sdxl_st_find(f, e->name);
        CHECK_MSG(t != NULL, "tensor %s not found", e->name);
        if (!t) continue;
        CHECK(strcmp(t->name, e->name) == 0);
        CHECK_EQ_INT(t->dtype, e->dtype);
        CHECK_EQ_INT(t->ndim, e->ndim);
        size_t nb = sdxl_st_dtype_size(e->dtype);
        for (int d = 0; d < e->ndim; d++) {
            CHECK_EQ_INT(t->shape[d], e->shape[d]);
            nb *= (size_t)e->shape[d];
        }
        CHECK_EQ_INT(t->nbytes, nb);
        CHECK_MSG(nb == 0 || memcmp(t->data, e->data, nb) == 0, "tensor %s: bytes differ", e->name);
        /* the writer keeps entries ordered by element size aligned */
        CHECK_MSG(nb == 0 || (uintptr_t)t->data % sdxl_st_dtype_size(e->dtype) == 0, "%s misaligned",
                  e->name);
        sum += nb;
    }
    CHECK_EQ_INT(sdxl_st_data_size(f), sum); /* packed, no gaps */

    /* at(): offset order, contiguous */
    uint64_t off = 0;
    for (size_t i = 0; i < sdxl_st_count(f); i++) {
        const sdxl_st_tensor *t = sdxl_st_at(f, i);
        CHECK_EQ_INT(t->offset, off);
        off += t->nbytes;
    }
    CHECK(sdxl_st_at(f, RT_N) == NULL);

    const sdxl_st_tensor *sc = sdxl_st_find(f, "scalar");
    REQUIRE(sc);
    CHECK_EQ_INT(sc->ndim, 0);
    CHECK_EQ_INT(sc->nbytes, 4);
    float v;
    memcpy(&v, sc->data, 4);
    CHECK(v == 3.5f);

    CHECK_EQ_INT(sdxl_st_metadata_count(f), 2);
    const char *k = NULL, *val = NULL;
    CHECK(sdxl_st_metadata_at(f, 0, &k, &val) && strcmp(k, "format") == 0 && strcmp(val, "pt") == 0);
    CHECK(sdxl_st_metadata_at(f, 1, &k, &val) && strcmp(k, "note") == 0);
    CHECK(!sdxl_st_metadata_at(f, 2, &k, &val));
    CHECK(sdxl_st_metadata(f, "note") && strcmp(sdxl_st_metadata(f, "note"), rt_meta[3]) == 0);
    CHECK(sdxl_st_metadata(f, "absent") == NULL);
    sdxl_st_close(f);

    /* overwrite in place: the new content replaces the old */
    REQUIRE_ST(sdxl_st_write(path, s.e, 1, NULL, &err), &err);
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    CHECK_EQ_INT(sdxl_st_count(f), 1);
    CHECK_EQ_INT(sdxl_st_metadata_count(f), 0);
    sdxl_st_close(f);
}

TEST(safetensors_dtype_names_and_sizes) {
    for (int d = 0; d < SDXL_ST_DTYPE_COUNT_; d++) {
        sdxl_st_dtype back;
        CHECK(sdxl_st_dtype_from_name(sdxl_st_dtype_name((sdxl_st_dtype)d), &back) &&
              back == (sdxl_st_dtype)d);
        CHECK(sdxl_st_dtype_size((sdxl_st_dtype)d) >= 1);
    }
    CHECK(strcmp(sdxl_st_dtype_name(SDXL_ST_BF16), "BF16") == 0);
    CHECK(strcmp(sdxl_st_dtype_name(SDXL_ST_F8_E4M3), "F8_E4M3") == 0);
    CHECK_EQ_INT(sdxl_st_dtype_size(SDXL_ST_F64), 8);
    CHECK_EQ_INT(sdxl_st_dtype_size(SDXL_ST_DTYPE_COUNT_), 0);
    CHECK(strcmp(sdxl_st_dtype_name(SDXL_ST_DTYPE_COUNT_), "?") == 0);
    CHECK(!sdxl_st_dtype_from_name("f32", NULL));
    /* NULL-safe getters */
    CHECK(sdxl_st_count(NULL) == 0 && sdxl_st_at(NULL, 0) == NULL && sdxl_st_find(NULL, "a") == NULL);
    CHECK(sdxl_st_metadata(NULL, "a") == NULL && sdxl_st_metadata_count(NULL) == 0);
    sdxl_st_close(NULL);
}

/* ---- zero copy ---------------------------------------------------------- */

/* Is `p` inside a mapping of the file `path` (per /proc/self/maps)? */
static bool mapped_from(const void *p, const char *path) {
    char real[4096];
    if (!realpath(path, real)) return false;
    FILE *m = fopen("/proc/self/maps", "r");
    if (!m) return false;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof line, m)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
        if ((uintptr_t)p < lo || (uintptr_t)p >= hi) continue;
        line[strcspn(line, "\n")] = 0;
        size_t ll = strlen(line), rl = strlen(real);
        found = ll >= rl && strcmp(line + ll - rl, real) == 0;
        break;
    }
    fclose(m);
    return found;
}

TEST(safetensors_open_is_zero_copy) {
    static rt_set s;
    rt_fill(&s);
    const char *path = tmp_path("zc.safetensors");
    sdxl_error err;
    REQUIRE_ST(sdxl_st_write(path, s.e, RT_N, NULL, &err), &err);
    struct stat sb;
    REQUIRE(stat(path, &sb) == 0);

    int64_t map0 = mapped_bytes();
    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    CHECK_EQ_INT(mapped_bytes() - map0, sb.st_size);
    const sdxl_st_tensor *t = sdxl_st_find(f, "t.F32");
    REQUIRE(t);
    CHECK(mapped_from(t->data, path));
    sdxl_st_close(f);
    CHECK_EQ_INT(mapped_bytes(), map0);

    /* parse over caller memory: data points into that memory */
    size_t len;
    uint8_t *b = image("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 12, &len);
    REQUIRE_ST(sdxl_st_parse(b, len, &f, &err), &err);
    t = sdxl_st_find(f, "w");
    REQUIRE(t);
    CHECK((const uint8_t *)t->data == b + len - 12 + 4);
    CHECK(strcmp(sdxl_st_path(f), "<memory>") == 0);
    CHECK_EQ_INT(mapped_bytes(), map0);
    sdxl_st_close(f);
    free(b);
}

/* ---- lookups ------------------------------------------------------------ */

TEST(safetensors_find_many_names) {
    enum { N = 3000 };
    static sdxl_st_write_entry e[N];
    static char names[N][24];
    static int64_t one = 1;
    static uint8_t byte[N];
    for (int i = 0; i < N; i++) {
        int j = (int)(((long)i * 1871) % N); /* a permutation: names not written in sorted order */
        snprintf(names[i], sizeof names[i], "blk.%d.w", j);
        byte[i] = (uint8_t)j;
        e[i] = (sdxl_st_write_entry){names[i], SDXL_ST_U8, 1, &one, &byte[i]};
    }
    const char *path = tmp_path("many.safetensors");
    sdxl_error err;
    REQUIRE_ST(sdxl_st_write(path, e, N, NULL, &err), &err);
    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    CHECK_EQ_INT(sdxl_st_count(f), N);
    int bad = 0;
    for (int j = 0; j < N; j++) {
        char name[24];
        snprintf(name, sizeof name, "blk.%d.w", j);
        const sdxl_st_tensor *t = sdxl_st_find(f, name);
        if (!t || strcmp(t->name, name) != 0 || *(const uint8_t *)t->data != (uint8_t)j) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(sdxl_st_find(f, "blk.3000.w") == NULL);
    CHECK(sdxl_st_find(f, "blk.1.") == NULL);
    CHECK(sdxl_st_find(f, "blk.1.ww") == NULL);
    CHECK(sdxl_st_find(f, "") == NULL);
    CHECK(sdxl_st_find(f, NULL) == NULL);
    sdxl_st_close(f);
}

TEST(safetensors_escaped_names_and_holes_are_accepted) {
    const char *json = "{ \"__metadata__\" : { \"k\\u00e9\" : \"v\\n\" },\n"
                       "  \"a\\\"b\": {\"shape\": [2], \"dtype\": \"U8\", \"data_offsets\": [0, 2]},\n"
                       "  \"\\u00e9\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [8, 12]},\n"
                       "  \"empty\": {\"dtype\": \"F16\", \"shape\": [0, 3], \"data_offsets\": [1, 1]} }\n";
    size_t len;
    uint8_t *b = image(json, 16, &len); /* gaps [2,8) and [12,16) */
    sdxl_st_file *f = NULL;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = sdxl_st_parse(b, len, &f, &err);
    CHECK_MSG(st == SDXL_STATUS_OK, "%s", err.msg);
    CHECK(sdxl_st_find(f, "a\"b") && sdxl_st_find(f, "a\"b")->nbytes == 2);
    CHECK(sdxl_st_find(f, "\xc3\xa9") && sdxl_st_find(f, "\xc3\xa9")->ndim == 0);
    CHECK(sdxl_st_find(f, "empty") && sdxl_st_find(f, "empty")->nbytes == 0);
    CHECK(sdxl_st_metadata(f, "k\xc3\xa9") && strcmp(sdxl_st_metadata(f, "k\xc3\xa9"), "v\n") == 0);
    /* offset order: a [0,2), empty [1,1), é [8,12) */
    CHECK(sdxl_st_at(f, 1) && strcmp(sdxl_st_at(f, 1)->name, "empty") == 0);
    sdxl_st_close(f);
    free(b);

    expect_ok("no tensors", "{}", 0, 0);
    expect_ok("empty metadata", "{\"__metadata__\":{}}", 5, 0);
    expect_ok("empty tensor at the end", "{\"e\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[4,4]}}",
              4, 1);
    expect_ok("big but exact numbers",
              "{\"e\":{\"dtype\":\"U8\",\"shape\":[9007199254740991,0],\"data_offsets\":[0,0]}}", 0, 1);
}

/* ---- the malformed corpus ----------------------------------------------- */

#define T_OK "{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}"

TEST(safetensors_rejects_malformed_headers) {
    /* framing */
    expect_bad_buf("empty file", "", 0, "too short");
    expect_bad_buf("truncated header length", "\x10\0\0\0\0", 5, "too short");
    uint8_t raw[64] = {0};
    expect_bad_buf("header length 0", raw, 16, "header length is 0");
    raw[7] = 0x80; /* 2^63 */
    expect_bad_buf("header length 2^63", raw, 64, "over the cap");
    memset(raw, 0, 8);
    raw[5] = 1; /* 2^40 */
    expect_bad_buf("header length 2^40", raw, 64, "over the cap");
    memset(raw, 0, 8);
    raw[0] = 200;
    memcpy(raw + 8, "{}", 2);
    expect_bad_buf("header length larger than the file", raw, 64, "larger than");
    {
        size_t len;
        uint8_t *b = image("{\"w\":" T_OK "}", 4, &len);
        expect_bad_buf("truncated header", b, 8 + 20, "larger than");
        free(b);
    }

    /* not a JSON object */
    expect_bad("not JSON", "hello, world", 0, "not a JSON object");
    expect_bad("truncated JSON", "{\"w\": {\"dtype\": \"U8\",", 0, "not valid JSON");
    expect_bad("JSON array", "[1, 2, 3]", 0, "not a JSON object");
    expect_bad("JSON string", "\"w\"", 0, "not a JSON object");
    expect_bad("only whitespace", "        ", 0, "whitespace");
    expect_bad("trailing garbage", "{} xyz", 0, "trailing");
    expect_bad("two objects", "{}{}", 0, "trailing");
    expect_bad("bad literal", "{\"w\": nul}", 0, "not valid JSON");
    expect_bad("unexpected byte", "{\"w\": @}", 0, "unexpected byte");
    expect_bad("non-UTF-8", "{\"\xff\":" T_OK "}", 4, "UTF-8");
    expect_bad("overlong UTF-8", "{\"\xc0\xaf\":" T_OK "}", 4, "UTF-8");
    expect_bad("UTF-8 surrogate", "{\"\xed\xa0\x80\":" T_OK "}", 4, "UTF-8");
    expect_bad("UTF-8 cut short", "{\"a\":" T_OK "}\xe2\x82", 4, "UTF-8");
    expect_bad("NUL escape in a name", "{\"a\\u0000b\":" T_OK "}", 4, "NUL");
    {
        size_t len;
        static const char nul_in_name[] = "{\"a\0b\":" T_OK "}";
        uint8_t *b = image_n(nul_in_name, sizeof nul_in_name - 1, 4, &len);
        expect_bad_buf("raw NUL byte in a name", b, len, "control character 0x00");
        free(b);
        static const char nul_pad[] = "{\"w\":" T_OK "}\0\0\0";
        b = image_n(nul_pad, sizeof nul_pad - 1, 4, &len);
        expect_bad_buf("NUL padding", b, len, "unexpected byte 0x00");
        free(b);
    }
    expect_bad("raw control character", "{\"a\tb\":" T_OK "}", 4, "control character");
    expect_bad("invalid escape", "{\"a\\xb\":" T_OK "}", 4, "invalid escape");
    expect_bad("bad \\u escape", "{\"a\\u12g4\":" T_OK "}", 4, "\\u escape");
    expect_bad("unterminated string", "{\"abc", 0, "not terminated");
    {
        /* deeper than cJSON's nesting limit */
        char deep[2600];
        size_t o = (size_t)snprintf(deep, sizeof deep, "{\"a\":");
        for (int i = 0; i < 1200; i++)
            deep[o++] = '[';
        for (int i = 0; i < 1200; i++)
            deep[o++] = ']';
        deep[o++] = '}';
        deep[o] = 0;
        expect_bad("deep nesting", deep, 0, "not valid JSON");
    }

    /* entries */
    expect_bad("duplicate names",
               "{\"a\":" T_OK ",\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8,
               "duplicate tensor name \"a\"");
    expect_bad("unknown dtype", "{\"w\":{\"dtype\":\"F33\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
               "unknown dtype \"F33\"");
    expect_bad("lower-case dtype", "{\"w\":{\"dtype\":\"u8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
               "unknown dtype");
    expect_bad("shape/size mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8,
               "needs 16 bytes");
    expect_bad("negative dim", "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 4,
               "negative");
    expect_bad("negative zero", "{\"w\":{\"dtype\":\"U8\",\"shape\":[-0],\"data_offsets\":[0,0]}}", 4,
               "negative");
    expect_bad("fractional offset", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4.5]}}", 8,
               "not a plain integer");
    expect_bad("integral fraction", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4.0]}}", 8,
               "not a plain integer");
    expect_bad("1e300 offset", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,1e300]}}", 8,
               "not a plain integer");
    expect_bad("exponent dim", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4E0],\"data_offsets\":[0,4]}}", 8,
               "not a plain integer");
    expect_bad("2^53 offset",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,9007199254740992]}}", 8,
               "too large");
    expect_bad("huge integer",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,123456789012345678901234567890]}}",
               8, "too large");
    expect_bad("leading zero", "{\"w\":{\"dtype\":\"U8\",\"shape\":[04],\"data_offsets\":[0,4]}}", 8,
               "leading zero");
    expect_bad("number names the tensor", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4.5]}}",
               8, "tensor \"w\"");
    expect_bad("offsets out of the file", "{\"w\":{\"dtype\":\"U8\",\"shape\":[32],\"data_offsets\":[0,32]}}",
               16, "past the end of the data section");
    expect_bad("empty tensor out of the file",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[17,17]}}", 16, "past the end");
    expect_bad("begin > end", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,4]}}", 16,
               "begin is after end");
    expect_bad("overlap",
               "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
               16, "overlap");
    expect_bad("same range twice",
               "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
               16, "overlap");
    expect_bad("nested overlap",
               "{\"a\":{\"dtype\":\"U8\",\"shape\":[12],\"data_offsets\":[0,12]},"
               "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
               "\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}",
               16, "overlap");
    expect_bad("ndim 9", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 4,
               "9 dimensions");
    expect_bad("shape overflow",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,0]}}", 4,
               "overflows");
    expect_bad("byte size overflow",
               "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,536870912],\"data_offsets\":[0,0]}}", 4,
               "overflows");
    expect_bad("missing field", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4]}}", 4,
               "missing field \"data_offsets\"");
    expect_bad("extra field", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4],\"x\":1}}", 4,
               "unexpected field \"x\"");
    expect_bad("field twice",
               "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
               "given twice");
    expect_bad("dtype not a string", "{\"w\":{\"dtype\":5,\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
               "dtype is a number");
    expect_bad("shape not an array", "{\"w\":{\"dtype\":\"U8\",\"shape\":\"4\",\"data_offsets\":[0,4]}}", 4,
               "shape is a string");
    expect_bad("dim not a number", "{\"w\":{\"dtype\":\"U8\",\"shape\":[\"4\"],\"data_offsets\":[0,4]}}", 4,
               "shape[0] is a string");
    expect_bad("one offset", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4]}}", 4,
               "expected two");
    expect_bad("offsets not numbers", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[null,4]}}", 4,
               "two integers");
    expect_bad("entry not an object", "{\"w\":5}", 4, "not an object");
    expect_bad("metadata with a number value", "{\"__metadata__\":{\"k\":1}}", 0,
               "metadata \"k\" is a number");
    expect_bad("metadata not an object", "{\"__metadata__\":[\"a\"]}", 0, "not an object of strings");
    expect_bad("metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
               "duplicate \"__metadata__\"");
    expect_bad("duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
               "duplicate metadata key");
}

TEST(safetensors_open_reports_path) {
    const char *p = tmp_path("short.safetensors");
    REQUIRE(write_bytes(p, "abc", 3));
    sdxl_st_file *f = NULL;
    sdxl_error err;
    CHECK_EQ_INT(sdxl_st_open(p, &f, &err), SDXL_STATUS_BAD_INPUT);
    CHECK(f == NULL);
    CHECK(strstr(err.msg, p) && strstr(err.msg, "too short"));

    p = tmp_path("empty.safetensors");
    REQUIRE(write_bytes(p, "", 0));
    CHECK_EQ_INT(sdxl_st_open(p, &f, &err), SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "too short") != NULL);

    CHECK_EQ_INT(sdxl_st_open(tmp_path("does-not-exist"), &f, &err), SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "does-not-exist") != NULL);
    CHECK_EQ_INT(sdxl_st_open(sdxl_test_tmpdir(), &f, &err), SDXL_STATUS_IO);
    CHECK(strstr(err.msg, "regular file") != NULL);
    CHECK(f == NULL);
}

/* ---- engine view -------------------------------------------------------- */

TEST(safetensors_view) {
    const char *json = "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                       "\"u\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[12,15]},"
                       "\"odd\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[15,19]},"
                       "\"five\":{\"dtype\":\"I32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[20,24]},"
                       "\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[24,26]}}";
    size_t len;
    uint8_t *b = image(json, 32, &len);
    sdxl_st_file *f = NULL;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = sdxl_st_parse(b, len, &f, &err);
    CHECK_MSG(st == SDXL_STATUS_OK, "%s", err.msg);
    if (st != SDXL_STATUS_OK) {
        free(b);
        return;
    }
    sdxl_tensor t;
    CHECK_EQ_INT(sdxl_st_view(f, sdxl_st_find(f, "h"), &t, &err), SDXL_STATUS_OK);
    CHECK(t.dtype == SDXL_DTYPE_F16 && t.ndim == 2 && t.ne[0] == 2 && t.ne[1] == 3 && t.ne[2] == 1);
    CHECK(t.data == sdxl_st_find(f, "h")->data);
    CHECK_EQ_INT(sdxl_st_view(f, sdxl_st_find(f, "s"), &t, &err), SDXL_STATUS_OK);
    CHECK(t.dtype == SDXL_DTYPE_BF16 && t.ndim == 0);

    CHECK_EQ_INT(sdxl_st_view(f, sdxl_st_find(f, "u"), &t, &err), SDXL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "\"u\"") && strstr(err.msg, "U8"));
    CHECK_EQ_INT(sdxl_st_view(f, sdxl_st_find(f, "five"), &t, &err), SDXL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "\"five\"") && strstr(err.msg, "5 dimensions"));
    CHECK_EQ_INT(sdxl_st_view(f, sdxl_st_find(f, "odd"), &t, &err), SDXL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "aligned") != NULL);
    CHECK_EQ_INT(sdxl_st_view(f, NULL, &t, &err), SDXL_STATUS_INVALID_ARG);
    sdxl_st_close(f);
    free(b);
}

/* ---- allocation failure ------------------------------------------------- */

TEST(safetensors_open_survives_every_allocation_failure) {
    static rt_set s;
    rt_fill(&s);
    const char *path = tmp_path("oom.safetensors");
    sdxl_error err;
    REQUIRE_ST(sdxl_st_write(path, s.e, RT_N, rt_meta, &err), &err);
    int64_t live0 = live_bytes(), map0 = mapped_bytes();
    int failures = 0;
    for (int64_t n = 1; n < 1000; n++) {
        sdxl__alloc_fail_at(n);
        sdxl_st_file *f = (sdxl_st_file *)1;
        sdxl_status st = sdxl_st_open(path, &f, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) {
            CHECK_EQ_INT(sdxl_st_count(f), RT_N);
            sdxl_st_close(f);
            break;
        }
        failures++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "allocation %lld: status %s: %s", (long long)n,
                  sdxl_status_str(st), err.msg);
        CHECK(f == NULL);
        CHECK_EQ_INT(live_bytes(), live0);
        CHECK_EQ_INT(mapped_bytes(), map0);
    }
    CHECK(failures >= 1); /* at least one allocation site was exercised */
    CHECK_EQ_INT(live_bytes(), live0);
}

/* ---- the writer never leaves a partial file ----------------------------- */

static void expect_no_files(const char *label, const char *path) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK_MSG(!file_exists(path), "%s: %s exists", label, path);
    CHECK_MSG(!file_exists(tmp), "%s: %s exists", label, tmp);
}

TEST(safetensors_writer_failures_leave_no_file) {
    static rt_set s;
    rt_fill(&s);
    sdxl_error err;

    const char *path = tmp_path("no/such/dir/x.safetensors");
    CHECK_EQ_INT(sdxl_st_write(path, s.e, RT_N, NULL, &err), SDXL_STATUS_IO);
    CHECK(strstr(err.msg, "x.safetensors.tmp") != NULL);
    expect_no_files("missing dir", path);

    /* rename fails (the target is a directory): the written .tmp must go */
    path = tmp_path("a-dir.safetensors");
    mkdir(path, 0700);
    CHECK_EQ_INT(sdxl_st_write(path, s.e, RT_N, NULL, &err), SDXL_STATUS_IO);
    CHECK(strstr(err.msg, "rename") != NULL);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(!file_exists(tmp));
    rmdir(path);

    /* a write error half way (file size limit): no partial file */
    path = tmp_path("big.safetensors");
    static uint8_t big[1 << 16];
    int64_t shape = sizeof big;
    sdxl_st_write_entry be = {"big", SDXL_ST_U8, 1, &shape, big};
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    struct rlimit lim = {4096, old.rlim_max};
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        sdxl_status st = sdxl_st_write(path, &be, 1, NULL, &err);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK_EQ_INT(st, SDXL_STATUS_IO);
        CHECK(strstr(err.msg, "write failed") != NULL);
        expect_no_files("file size limit", path);
    }
    signal(SIGXFSZ, old_sig);

    /* allocation failure at each allocation: OUT_OF_MEMORY, nothing on disk */
    path = tmp_path("oom-w.safetensors");
    int64_t live0 = live_bytes();
    int failures = 0;
    for (int64_t n = 1; n < 1000; n++) {
        sdxl__alloc_fail_at(n);
        sdxl_status st = sdxl_st_write(path, s.e, RT_N, rt_meta, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) break;
        failures++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "allocation %lld: %s", (long long)n, err.msg);
        expect_no_files("allocation failure", path);
        CHECK_EQ_INT(live_bytes(), live0);
    }
    CHECK(failures >= 2);
    CHECK(file_exists(path));
}

TEST(safetensors_writer_rejects_bad_entries) {
    static uint8_t d[16];
    int64_t four = 4, neg = -1;
    const char *path = tmp_path("inv.safetensors");
    sdxl_error err;
    sdxl_st_write_entry dup[2] = {{"a", SDXL_ST_U8, 1, &four, d}, {"a", SDXL_ST_U8, 1, &four, d + 4}};
    CHECK_EQ_INT(sdxl_st_write(path, dup, 2, NULL, &err), SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "duplicate") != NULL);
    sdxl_st_write_entry e = {"m", SDXL_ST_U8, 1, &neg, d};
    CHECK_EQ_INT(sdxl_st_write(path, &e, 1, NULL, &err), SDXL_STATUS_INVALID_ARG);
    e = (sdxl_st_write_entry){"__metadata__", SDXL_ST_U8, 1, &four, d};
    CHECK_EQ_INT(sdxl_st_write(path, &e, 1, NULL, &err), SDXL_STATUS_INVALID_ARG);
    e = (sdxl_st_write_entry){"\xff", SDXL_ST_U8, 1, &four, d};
    CHECK_EQ_INT(sdxl_st_write(path, &e, 1, NULL, &err), SDXL_STATUS_INVALID_ARG);
    e = (sdxl_st_write_entry){"x", SDXL_ST_DTYPE_COUNT_, 1, &four, d};
    CHECK_EQ_INT(sdxl_st_write(path, &e, 1, NULL, &err), SDXL_STATUS_INVALID_ARG);
    e = (sdxl_st_write_entry){"x", SDXL_ST_U8, 9, &four, d};
    CHECK_EQ_INT(sdxl_st_write(path, &e, 1, NULL, &err), SDXL_STATUS_INVALID_ARG);
    e = (sdxl_st_write_entry){"x", SDXL_ST_U8, 1, &four, NULL};
    CHECK_EQ_INT(sdxl_st_write(path, &e, 1, NULL, &err), SDXL_STATUS_INVALID_ARG);
    e = (sdxl_st_write_entry){"x", SDXL_ST_U8, 1, &four, d};
    const char *odd[] = {"k", NULL};
    CHECK_EQ_INT(sdxl_st_write(path, &e, 1, odd, &err), SDXL_STATUS_INVALID_ARG);
    const char *dupk[] = {"k", "1", "k", "2", NULL};
    CHECK_EQ_INT(sdxl_st_write(path, &e, 1, dupk, &err), SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "duplicate metadata key") != NULL);
    expect_no_files("invalid arguments", path);
    /* an empty file (no tensors, no metadata) is valid */
    REQUIRE_ST(sdxl_st_write(path, NULL, 0, NULL, &err), &err);
    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    CHECK_EQ_INT(sdxl_st_count(f), 0);
    sdxl_st_close(f);
}

/* ---- real files ---------------------------------------------------------- */

TEST(safetensors_reads_tiny_unet) {
    char path[4096];
    snprintf(path, sizeof path, "%s",
             sdxl_test_data("refs/tiny-sdxl/unet/diffusion_pytorch_model.safetensors"));
    sdxl_st_file *f = NULL;
    sdxl_error err;
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    CHECK_EQ_INT(sdxl_st_count(f), 428);
    CHECK(sdxl_st_metadata(f, "format") && strcmp(sdxl_st_metadata(f, "format"), "pt") == 0);
    const sdxl_st_tensor *t = sdxl_st_find(f, "conv_in.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->dtype, SDXL_ST_F32);
    CHECK_EQ_INT(t->ndim, 4);
    CHECK(t->shape[0] == 32 && t->shape[1] == 4 && t->shape[2] == 3 && t->shape[3] == 3);
    CHECK_EQ_INT(t->nbytes, 32 * 4 * 3 * 3 * 4);
    sdxl_tensor v;
    REQUIRE_ST(sdxl_st_view(f, t, &v, &err), &err);
    CHECK(v.dtype == SDXL_DTYPE_F32 && v.ndim == 4 && v.ne[0] == 32 && v.ne[3] == 3 && v.data == t->data);
    const float *w = v.data;
    bool finite = true;
    for (int i = 0; i < 32 * 4 * 9; i++)
        finite = finite && isfinite(w[i]);
    CHECK(finite);
    uint64_t sum = 0;
    for (size_t i = 0; i < sdxl_st_count(f); i++)
        sum += sdxl_st_at(f, i)->nbytes;
    CHECK_EQ_INT(sum, sdxl_st_data_size(f)); /* written by the reference: no gaps */
    sdxl_st_close(f);

    snprintf(path, sizeof path, "%s", sdxl_test_data("refs/tiny-sdxl-ref/unet_forward.safetensors"));
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    const char *d = sdxl_st_metadata(f, "description");
    CHECK(d && strstr(d, "UNet2DConditionModel") != NULL);
    CHECK(sdxl_st_find(f, "act.conv_out") != NULL);
    sdxl_st_close(f);
}

/* ---- `sdxl inspect` ----------------------------------------------------- */

/* Run the built `sdxl` with args; stdout and stderr go to files read back
 * into *out / *errtxt (free them). Returns the exit status, -1 if it did not
 * exit normally. */
static int run_sdxl(const char *const *args, char **out, char **errtxt) {
    const char *argv[64] = {"inspect"};
    int n = 1;
    for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    return sdxl_test_exec(argv, out, errtxt);
}

TEST(safetensors_inspect_command) {
    if (access(SDXL_BINARY_DIR "/sdxl", X_OK) != 0) {
        sdxl_test_fail(__FILE__, __LINE__, "%s/sdxl is not built", SDXL_BINARY_DIR);
        return;
    }
    char good[4096];
    snprintf(good, sizeof good, "%s",
             sdxl_test_data("refs/tiny-sdxl/unet/diffusion_pytorch_model.safetensors"));
    char *out = NULL, *errtxt = NULL;

    int rc = run_sdxl((const char *[]){good, NULL}, &out, &errtxt);
    CHECK_EQ_INT(rc, 0);
    CHECK(out && strstr(out, "conv_in.weight") && strstr(out, "[32, 4, 3, 3]") && strstr(out, "428 tensors"));
    CHECK(out && strstr(out, "format = pt") != NULL);
    free(out);
    free(errtxt);

    rc = run_sdxl((const char *[]){good, "--json", NULL}, &out, &errtxt);
    CHECK_EQ_INT(rc, 0);
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    CHECK(j != NULL);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "tensors")) == 428);
    cJSON *tot = cJSON_GetObjectItem(j, "total");
    CHECK(tot && cJSON_GetObjectItem(tot, "bytes") &&
          cJSON_GetObjectItem(tot, "bytes")->valuedouble == 7906064.0);
    cJSON_Delete(j);
    free(out);
    free(errtxt);

    /* long metadata is cut in the table and complete in JSON */
    char ref[4096];
    snprintf(ref, sizeof ref, "%s", sdxl_test_data("refs/tiny-sdxl-ref/unet_forward.safetensors"));
    rc = run_sdxl((const char *[]){ref, NULL}, &out, &errtxt);
    CHECK_EQ_INT(rc, 0);
    CHECK(out && strstr(out, "description = UNet2DConditionModel") && strstr(out, "--json shows all"));
    free(out);
    free(errtxt);

    const char *bad = tmp_path("bad-inspect.safetensors");
    REQUIRE(write_bytes(bad, "\x05\0\0\0\0\0\0\0[1,2]", 13));
    rc = run_sdxl((const char *[]){bad, NULL}, &out, &errtxt);
    CHECK_EQ_INT(rc, 1);
    CHECK(errtxt && strstr(errtxt, "bad-inspect.safetensors") && strstr(errtxt, "not a JSON object"));
    CHECK(out && out[0] == 0);
    free(out);
    free(errtxt);

    rc = run_sdxl((const char *[]){NULL}, &out, &errtxt);
    CHECK_EQ_INT(rc, 2);
    free(out);
    free(errtxt);
    rc = run_sdxl((const char *[]){good, "--bogus", NULL}, &out, &errtxt);
    CHECK_EQ_INT(rc, 2);
    CHECK(errtxt && strstr(errtxt, "--bogus"));
    free(out);
    free(errtxt);
    rc = run_sdxl((const char *[]){"--help", NULL}, &out, &errtxt);
    CHECK_EQ_INT(rc, 0);
    CHECK(out && strstr(out, "usage: sdxl inspect"));
    free(out);
    free(errtxt);
}

TEST(safetensors_writer_escapes_names) {
    static const char *const names[] = {"quote\"back\\slash", "ctl\x01\x1f\ttab\nnl",
                                        "\xe2\x82\xac/\xf0\x9f\x98\x80", ""};
    enum { N = sizeof names / sizeof names[0] };
    static uint8_t d[N] = {1, 2, 3, 4};
    int64_t one = 1;
    sdxl_st_write_entry e[N];
    for (int i = 0; i < N; i++)
        e[i] = (sdxl_st_write_entry){names[i], SDXL_ST_U8, 1, &one, &d[i]};
    const char *meta[] = {"k\x02", "v\x7f\"", NULL};
    const char *path = tmp_path("names.safetensors");
    sdxl_error err;
    REQUIRE_ST(sdxl_st_write(path, e, N, meta, &err), &err);
    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    for (int i = 0; i < N; i++) {
        const sdxl_st_tensor *t = sdxl_st_find(f, names[i]);
        CHECK_MSG(t && *(const uint8_t *)t->data == d[i], "name %d did not survive", i);
    }
    CHECK(sdxl_st_metadata(f, "k\x02") && strcmp(sdxl_st_metadata(f, "k\x02"), "v\x7f\"") == 0);
    sdxl_st_close(f);
}

/* ---- streaming writer (sdxl_st_write_cb) ---------------------------------- */

/* The tensors of a streamed file: their bytes are a function of (tensor,
 * byte offset), so the callback can produce any chunk, and the same bytes
 * can be given to sdxl_st_write in memory. */
#define CB_N 5
typedef struct {
    sdxl_st_write_entry e[CB_N];
    int64_t shapes[CB_N][2];
    uint8_t *data[CB_N];
    size_t nbytes[CB_N];
    /* what the callback saw */
    int calls, fail_at;
    size_t last_index;
    uint64_t next_offset;
    bool order_ok, size_ok;
} cb_set;

static uint8_t cb_byte(size_t i, uint64_t off) {
    return (uint8_t)((off * 2654435761u) >> 13 ^ (i * 131));
}

static void cb_fill_set(cb_set *s) {
    memset(s, 0, sizeof *s);
    /* F32 of 9 MiB (more than one chunk), a scalar, an empty tensor, F16, U8 */
    static const struct {
        const char *name;
        sdxl_st_dtype dt;
        int ndim;
        int64_t d0, d1;
    } spec[CB_N] = {{"big", SDXL_ST_F32, 2, 1536, 1536},
                    {"scalar", SDXL_ST_F32, 0, 0, 0},
                    {"empty", SDXL_ST_F16, 2, 0, 7},
                    {"half", SDXL_ST_F16, 1, 777, 0},
                    {"bytes", SDXL_ST_U8, 1, 13, 0}};
    for (int i = 0; i < CB_N; i++) {
        s->shapes[i][0] = spec[i].d0;
        s->shapes[i][1] = spec[i].d1;
        size_t n = sdxl_st_dtype_size(spec[i].dt);
        for (int d = 0; d < spec[i].ndim; d++)
            n *= (size_t)s->shapes[i][d];
        s->nbytes[i] = n;
        s->data[i] = malloc(n ? n : 1);
        for (size_t k = 0; k < n; k++)
            s->data[i][k] = cb_byte((size_t)i, k);
        s->e[i] = (sdxl_st_write_entry){spec[i].name, spec[i].dt, spec[i].ndim, s->shapes[i], s->data[i]};
    }
    s->order_ok = s->size_ok = true;
    s->fail_at = -1;
}

static void cb_free_set(cb_set *s) {
    for (int i = 0; i < CB_N; i++)
        free(s->data[i]);
}

static sdxl_status cb_fill(void *user, size_t index, uint64_t offset, void *buf, size_t len, sdxl_error *err) {
    cb_set *s = user;
    if (s->calls++ == s->fail_at) return sdxl_error_set(err, SDXL_STATUS_CANCELLED, "stopped by the test");
    /* in file order: a new tensor starts at offset 0, a tensor continues
     * where the last chunk ended */
    if (index == s->last_index && s->calls > 1) {
        if (offset != s->next_offset) s->order_ok = false;
    } else if (offset != 0 || (s->calls > 1 && index < s->last_index)) {
        s->order_ok = false;
    }
    size_t es = sdxl_st_dtype_size(s->e[index].dtype);
    if (len == 0 || len % es || len > SDXL_ST_WRITE_CHUNK || offset + len > s->nbytes[index] ||
        (uintptr_t)buf % 64)
        s->size_ok = false;
    for (size_t k = 0; k < len; k++)
        ((uint8_t *)buf)[k] = cb_byte(index, offset + k);
    s->last_index = index;
    s->next_offset = offset + len;
    return SDXL_STATUS_OK;
}

TEST(safetensors_write_cb_matches_write) {
    static cb_set s;
    cb_fill_set(&s);
    sdxl_error err = {0};
    const char *meta[] = {"format", "pt", NULL};
    char a[1100], b[1100];
    snprintf(a, sizeof a, "%s", tmp_path("cb-mem.safetensors"));
    snprintf(b, sizeof b, "%s", tmp_path("cb-stream.safetensors"));
    REQUIRE_ST(sdxl_st_write(a, s.e, CB_N, meta, &err), &err);
    sdxl_st_write_entry nodata[CB_N];
    memcpy(nodata, s.e, sizeof nodata);
    for (int i = 0; i < CB_N; i++)
        nodata[i].data = NULL; /* ignored by the streaming writer */
    REQUIRE_ST(sdxl_st_write_cb(b, nodata, CB_N, meta, cb_fill, &s, &err), &err);
    /* 9 MiB: two chunks; the empty tensor gets no call */
    CHECK_EQ_INT(s.calls, 2 + 1 + 1 + 1);
    CHECK(s.order_ok);
    CHECK(s.size_ok);
    sdxl_st_file *fa = NULL, *fb = NULL;
    REQUIRE_ST(sdxl_st_open(a, &fa, &err), &err);
    REQUIRE_ST(sdxl_st_open(b, &fb, &err), &err);
    CHECK_EQ_INT(sdxl_st_header_size(fa), sdxl_st_header_size(fb));
    CHECK_EQ_INT(sdxl_st_data_size(fa), sdxl_st_data_size(fb));
    for (size_t i = 0; i < CB_N; i++) {
        const sdxl_st_tensor *ta = sdxl_st_find(fa, s.e[i].name), *tb = sdxl_st_find(fb, s.e[i].name);
        REQUIRE(ta && tb);
        CHECK(ta->offset == tb->offset && ta->nbytes == tb->nbytes);
        CHECK(tb->nbytes == 0 || memcmp(tb->data, s.data[i], tb->nbytes) == 0);
    }
    sdxl_st_close(fa);
    sdxl_st_close(fb);
    /* byte-identical files */
    FILE *f1 = fopen(a, "rb"), *f2 = fopen(b, "rb");
    REQUIRE(f1 && f2);
    int c1, c2;
    bool same = true;
    do {
        c1 = fgetc(f1), c2 = fgetc(f2);
        same = same && c1 == c2;
    } while (same && c1 != EOF);
    fclose(f1);
    fclose(f2);
    CHECK(same);
    cb_free_set(&s);
}

TEST(safetensors_write_cb_failure_leaves_old_file) {
    static cb_set s;
    cb_fill_set(&s);
    sdxl_error err = {0};
    const char *path = tmp_path("cb-fail.safetensors");
    REQUIRE(write_bytes(path, "old", 3));
    /* the callback fails on its second call (inside the 9 MiB tensor) */
    s.fail_at = 1;
    CHECK_EQ_INT(sdxl_st_write_cb(path, s.e, CB_N, NULL, cb_fill, &s, &err), SDXL_STATUS_CANCELLED);
    CHECK(strstr(err.msg, "stopped by the test") != NULL);
    char *old = read_text(path);
    CHECK(old && strcmp(old, "old") == 0);
    free(old);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(!file_exists(tmp));
    /* a missing fill is an API error; bad entries are checked as in sdxl_st_write */
    CHECK_EQ_INT(sdxl_st_write_cb(path, s.e, CB_N, NULL, NULL, NULL, &err), SDXL_STATUS_INVALID_ARG);
    int64_t neg = -1;
    sdxl_st_write_entry bad = {"x", SDXL_ST_F32, 1, &neg, NULL};
    CHECK_EQ_INT(sdxl_st_write_cb(path, &bad, 1, NULL, cb_fill, &s, &err), SDXL_STATUS_INVALID_ARG);
    CHECK(!file_exists(tmp));
    /* allocation failure (the chunk buffer included): OUT_OF_MEMORY, nothing on disk */
    const char *p2 = tmp_path("cb-oom.safetensors");
    int failures = 0;
    for (int64_t n = 1; n < 100; n++) {
        s.fail_at = -1;
        s.calls = 0;
        sdxl__alloc_fail_at(n);
        sdxl_status st = sdxl_st_write_cb(p2, s.e, CB_N, NULL, cb_fill, &s, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) break;
        failures++;
        CHECK_EQ_INT(st, SDXL_STATUS_OUT_OF_MEMORY);
        expect_no_files("streaming allocation failure", p2);
    }
    CHECK(failures >= 3);
    CHECK(file_exists(p2));
    cb_free_set(&s);
}
