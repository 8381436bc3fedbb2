/* Tests of io/torchfile and io/tensorfile on real torch.save output
 * (tests/data/torch/, made by tools/refs/make_torch_cases.py with torch
 * 2.2.2): every tensor of every file equals, byte for byte, the same tensor
 * in a .safetensors the same script wrote; zip and legacy containers,
 * protocols 2 to 5, views, transposes, expanded tensors, numbers and
 * strings, nested dicts. Then the hostile side: pickles that run os.system /
 * eval under torch.load (refused by name, and the command's marker file
 * never appears), every truncation of small files, corrupted archives,
 * storages that lie about their size, strides out of bounds, shared and
 * self-containing dicts, allocation failure at every allocation. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/status.h"
#include "io/safetensors.h"
#include "io/tensorfile.h"
#include "io/torchfile.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------ */

#define REQUIRE_ST(expr, errp)                                                                               \
    do {                                                                                                     \
        sdxl_error *ep_ = (errp);                                                                            \
        REQUIRE_OK(expr, ep_);                                                                               \
    } while (0)

static char *data_path(const char *name) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    char rel[256];
    snprintf(rel, sizeof rel, "torch/%s", name);
    snprintf(b, sizeof buf[0], "%s", sdxl_test_data(rel));
    return b;
}

/* The whole file in an exact-size malloc block (ASan sees reads past it). */
static uint8_t *read_all(const char *path, size_t *len) {
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) *len = (size_t)n;
    return b;
}

static int64_t live_bytes(void) {
    sdxl_mem_stats s;
    sdxl_mem_get_stats(&s);
    return s.live_bytes;
}

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Every tensor and metadata entry of `ref` is in `f` with the same dtype,
 * shape and bytes, and f has nothing more. */
static void compare_with_ref(const char *label, const sdxl_tensorfile *f, const char *ref_name) {
    sdxl_st_file *ref = NULL;
    sdxl_error err;
    REQUIRE_ST(sdxl_st_open(data_path(ref_name), &ref, &err), &err);
    CHECK_MSG(sdxl_tf_count(f) == sdxl_st_count(ref), "%s: %zu tensors, the reference has %zu", label,
              sdxl_tf_count(f), sdxl_st_count(ref));
    for (size_t i = 0; i < sdxl_st_count(ref); i++) {
        const sdxl_st_tensor *r = sdxl_st_at(ref, i);
        const sdxl_st_tensor *t = sdxl_tf_find(f, r->name);
        CHECK_MSG(t != NULL, "%s: tensor %s missing", label, r->name);
        if (!t) continue;
        CHECK_MSG(t->dtype == r->dtype, "%s: %s is %s, reference %s", label, r->name,
                  sdxl_st_dtype_name(t->dtype), sdxl_st_dtype_name(r->dtype));
        CHECK_MSG(t->ndim == r->ndim, "%s: %s has %d dims, reference %d", label, r->name, t->ndim, r->ndim);
        for (int d = 0; d < r->ndim && d < t->ndim; d++)
            CHECK_MSG(t->shape[d] == r->shape[d], "%s: %s dim %d is %lld, reference %lld", label, r->name, d,
                      (long long)t->shape[d], (long long)r->shape[d]);
        CHECK_MSG(t->nbytes == r->nbytes, "%s: %s has %zu bytes, reference %zu", label, r->name, t->nbytes,
                  r->nbytes);
        CHECK_MSG(t->nbytes != r->nbytes || !memcmp(t->data, r->data, r->nbytes), "%s: %s: values differ",
                  label, r->name);
        CHECK_MSG(t->data != NULL, "%s: %s: NULL data", label, r->name);
        if (sdxl_tf_format_of(f) != SDXL_TF_SAFETENSORS)
            CHECK_MSG((uintptr_t)t->data % 64 == 0, "%s: %s: data not 64-byte aligned", label, r->name);
    }
    for (size_t i = 0; i < sdxl_tf_count(f); i++)
        CHECK_MSG(sdxl_tf_find(f, sdxl_tf_at(f, i)->name) == sdxl_tf_at(f, i), "%s: find(at(%zu)) differs",
                  label, i);
    CHECK_EQ_INT(sdxl_tf_metadata_count(f), sdxl_st_metadata_count(ref));
    for (size_t i = 0; i < sdxl_st_metadata_count(ref); i++) {
        const char *k, *v;
        sdxl_st_metadata_at(ref, i, &k, &v);
        const char *got = sdxl_tf_metadata(f, k);
        CHECK_MSG(got && !strcmp(got, v), "%s: metadata %s is %s, reference %s", label, k,
                  got ? got : "(absent)", v);
    }
    sdxl_st_close(ref);
}

static void check_file(const char *name, const char *ref, sdxl_tf_format fmt, size_t ignored) {
    sdxl_tensorfile *f = NULL;
    sdxl_error err;
    int64_t live0 = live_bytes();
    REQUIRE_ST(sdxl_tf_open(data_path(name), &f, &err), &err);
    CHECK_MSG(sdxl_tf_format_of(f) == fmt, "%s: format %s", name, sdxl_tf_format_name(sdxl_tf_format_of(f)));
    compare_with_ref(name, f, ref);
    CHECK(sdxl_tf_bytes(f) > 0);
    sdxl_tf_close(f);
    CHECK_EQ_INT(live_bytes(), live0);

    /* the same from memory, through the torch API directly */
    size_t len;
    uint8_t *buf = read_all(data_path(name), &len);
    REQUIRE(buf);
    sdxl_torch_file *t = NULL;
    REQUIRE_ST(sdxl_torch_parse(buf, len, &t, &err), &err);
    free(buf); /* nothing may point into it */
    CHECK_EQ_INT(sdxl_torch_ignored_count(t), ignored);
    CHECK(sdxl_torch_is_legacy(t) == (fmt == SDXL_TF_TORCH_LEGACY));
    size_t sum = 0;
    for (size_t i = 0; i < sdxl_torch_count(t); i++) {
        const sdxl_st_tensor *x = sdxl_torch_at(t, i);
        uint8_t acc = 0;
        for (size_t k = 0; k < x->nbytes; k++) /* readable after the input is gone */
            acc ^= ((const uint8_t *)x->data)[k];
        (void)acc;
        sum += x->nbytes;
    }
    CHECK(sdxl_torch_bytes(t) >= sum);
    CHECK(sdxl_torch_at(t, sdxl_torch_count(t)) == NULL && sdxl_torch_find(t, "no such tensor") == NULL);
    CHECK(!sdxl_torch_metadata_at(t, sdxl_torch_metadata_count(t), NULL, NULL));
    sdxl_torch_close(t);
    CHECK_EQ_INT(live_bytes(), live0);
}

/* ---- real torch.save files ----------------------------------------------- */

TEST(torch_basic_zip) {
    check_file("basic_zip.pt", "basic.safetensors", SDXL_TF_TORCH_ZIP, 0);
}

TEST(torch_basic_zip_protocol5) {
    check_file("basic_zip_p5.pt", "basic.safetensors", SDXL_TF_TORCH_ZIP, 0);
}

TEST(torch_basic_legacy) {
    check_file("basic_legacy.pt", "basic.safetensors", SDXL_TF_TORCH_LEGACY, 0);
}

TEST(torch_basic_legacy_protocol4) {
    check_file("basic_legacy_p4.pt", "basic.safetensors", SDXL_TF_TORCH_LEGACY, 0);
}

TEST(torch_nested_zip) {
    /* 6 ignored leaves: a list, True, None, bytes, torch.float16, torch.Size */
    check_file("nested_zip.pt", "nested.safetensors", SDXL_TF_TORCH_ZIP, 6);
}

TEST(torch_nested_legacy) {
    check_file("nested_legacy.pt", "nested.safetensors", SDXL_TF_TORCH_LEGACY, 6);
}

TEST(torch_float8_zip) {
    check_file("float8_zip.pt", "float8.safetensors", SDXL_TF_TORCH_ZIP, 0);
}

TEST(torch_small) {
    check_file("small_zip.pt", "small.safetensors", SDXL_TF_TORCH_ZIP, 0);
    check_file("small_legacy.pt", "small.safetensors", SDXL_TF_TORCH_LEGACY, 0);
    check_file("small_deflate_zip.pt", "small.safetensors", SDXL_TF_TORCH_ZIP, 0);
}

/* The layouts the reference comparison covers, spelled out: these are the
 * cases a reader that ignores strides or offsets gets wrong. */
TEST(torch_views_and_strides) {
    sdxl_tensorfile *f = NULL;
    sdxl_error err;
    REQUIRE_ST(sdxl_tf_open(data_path("basic_zip.pt"), &f, &err), &err);
    const sdxl_st_tensor *base = sdxl_tf_find(f, "base"), *va = sdxl_tf_find(f, "view_a"),
                         *vb = sdxl_tf_find(f, "view_b"), *ex = sdxl_tf_find(f, "expanded"),
                         *tr = sdxl_tf_find(f, "transposed"), *sl = sdxl_tf_find(f, "sliced");
    REQUIRE(base && va && vb && ex && tr && sl);
    const float *b = base->data, *a = va->data, *v = vb->data, *e = ex->data;
    /* base = arange(12) * 0.5 - 2; view_a = base[2:5]; view_b = base[5:11].view(2, 3) */
    for (int i = 0; i < 12; i++)
        CHECK(b[i] == (float)i * 0.5f - 2.0f);
    for (int i = 0; i < 3; i++)
        CHECK(a[i] == b[2 + i]);
    for (int i = 0; i < 6; i++)
        CHECK(v[i] == b[5 + i]);
    CHECK_EQ_INT(va->offset, 8); /* bytes into the shared storage */
    CHECK_EQ_INT(vb->offset, 20);
    CHECK(a != b && v != b); /* each has its own copy */
    /* expanded = arange(3).expand(4, 3): stride (0, 1) */
    REQUIRE(ex->ndim == 2 && ex->shape[0] == 4 && ex->shape[1] == 3);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 3; c++)
            CHECK(e[3 * r + c] == (float)c);
    /* transposed = m.t() with m [3, 4]; sliced = m.t()[1:, ::2] */
    REQUIRE(tr->ndim == 2 && tr->shape[0] == 4 && tr->shape[1] == 3);
    REQUIRE(sl->ndim == 2 && sl->shape[0] == 3 && sl->shape[1] == 2);
    const float *t = tr->data, *s = sl->data;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            CHECK(s[2 * i + j] == t[3 * (i + 1) + 2 * j]);
    CHECK_EQ_INT(sl->offset, 4); /* m.t()[1:] starts at element 1 of m */
    /* numbers and strings */
    const sdxl_st_tensor *alpha = sdxl_tf_find(f, "alpha"), *rank = sdxl_tf_find(f, "rank"),
                         *big = sdxl_tf_find(f, "big"), *sc = sdxl_tf_find(f, "scalar");
    REQUIRE(alpha && rank && big && sc);
    CHECK(alpha->dtype == SDXL_ST_F64 && alpha->ndim == 0 && alpha->nbytes == 8);
    CHECK(rank->dtype == SDXL_ST_I64 && rank->ndim == 0);
    int64_t bigv;
    memcpy(&bigv, big->data, 8);
    CHECK(bigv == ((int64_t)1 << 40) + 3);
    CHECK(sc->dtype == SDXL_ST_F32 && sc->ndim == 0 && *(const float *)sc->data == 3.25f);
    CHECK(!strcmp(sdxl_tf_metadata(f, "note"), "trained with \xc3\xa9 \xe2\x9c\x93"));
    const sdxl_st_tensor *empty = sdxl_tf_find(f, "empty");
    CHECK(empty && empty->nbytes == 0 && empty->data != NULL && empty->ndim == 2 && empty->shape[0] == 0);
    /* file order: the pickle's dict order */
    CHECK(!strcmp(sdxl_tf_at(f, 0)->name, "f32"));
    sdxl_tf_close(f);
}

TEST(torch_to_f32) {
    sdxl_tensorfile *f = NULL;
    sdxl_error err;
    REQUIRE_ST(sdxl_tf_open(data_path("basic_legacy.pt"), &f, &err), &err);
    float v[64];
    const sdxl_st_tensor *alpha = sdxl_tf_find(f, "alpha"), *rank = sdxl_tf_find(f, "neg");
    REQUIRE_ST(sdxl_tf_to_f32(alpha, v, &err), &err);
    CHECK(v[0] == 8.0f);
    REQUIRE_ST(sdxl_tf_to_f32(rank, v, &err), &err);
    CHECK(v[0] == -7.0f);
    const sdxl_st_tensor *i32 = sdxl_tf_find(f, "i32");
    REQUIRE_ST(sdxl_tf_to_f32(i32, v, &err), &err);
    CHECK(v[0] == 1.0f && v[1] == -2.0f && v[2] == 3.0f);
    /* f16 / bf16 / f64, aligned and at an odd address */
    static const char *names[] = {"f16", "bf16", "f64", "f32"};
    for (int k = 0; k < 4; k++) {
        const sdxl_st_tensor *t = sdxl_tf_find(f, names[k]);
        REQUIRE(t && t->nbytes / sdxl_st_dtype_size(t->dtype) <= 32);
        size_t n = t->nbytes / sdxl_st_dtype_size(t->dtype);
        float want[32], got[32];
        for (size_t i = 0; i < n; i++) {
            const uint8_t *p = (const uint8_t *)t->data + i * sdxl_st_dtype_size(t->dtype);
            if (t->dtype == SDXL_ST_F16)
                want[i] = sdxl_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
            else if (t->dtype == SDXL_ST_BF16)
                want[i] = sdxl_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
            else if (t->dtype == SDXL_ST_F64) {
                double d;
                memcpy(&d, p, 8);
                want[i] = (float)d;
            } else
                memcpy(&want[i], p, 4);
        }
        REQUIRE_ST(sdxl_tf_to_f32(t, got, &err), &err);
        CHECK_MSG(!memcmp(got, want, n * 4), "%s: aligned conversion differs", names[k]);
        uint8_t *odd = malloc(t->nbytes + 1);
        memcpy(odd + 1, t->data, t->nbytes);
        sdxl_st_tensor u = *t;
        u.data = odd + 1;
        memset(got, 0, sizeof got);
        REQUIRE_ST(sdxl_tf_to_f32(&u, got, &err), &err);
        CHECK_MSG(!memcmp(got, want, n * 4), "%s: unaligned conversion differs", names[k]);
        free(odd);
    }
    const sdxl_st_tensor *u8 = sdxl_tf_find(f, "u8");
    CHECK_EQ_INT(sdxl_tf_to_f32(u8, v, &err), SDXL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "\"u8\"") && strstr(err.msg, "U8"));
    CHECK_EQ_INT(sdxl_tf_to_f32(NULL, v, &err), SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_tf_to_f32(alpha, NULL, &err), SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_tf_to_f32(sdxl_tf_find(f, "empty"), NULL, &err), SDXL_STATUS_OK);
    sdxl_tf_close(f);
}

/* ---- detection and the tensorfile layer ---------------------------------- */

TEST(torch_tensorfile_detection) {
    sdxl_tensorfile *f = NULL;
    sdxl_error err;
    REQUIRE_ST(sdxl_tf_open(data_path("basic.safetensors"), &f, &err), &err);
    CHECK(sdxl_tf_format_of(f) == SDXL_TF_SAFETENSORS);
    CHECK(sdxl_tf_count(f) == 24 && sdxl_tf_find(f, "transposed") != NULL);
    CHECK(!strcmp(sdxl_tf_metadata(f, "note"), "trained with \xc3\xa9 \xe2\x9c\x93"));
    CHECK(sdxl_tf_metadata(f, "nope") == NULL);
    const char *k = NULL, *v = NULL;
    CHECK(sdxl_tf_metadata_at(f, 0, &k, &v) && k && v);
    CHECK(sdxl_tf_bytes(f) > 0 && sdxl_tf_bytes(f) < 8192); /* bookkeeping only: the data stays mapped */
    sdxl_tf_close(f);

    /* from memory: safetensors zero-copy, torch copies */
    size_t len;
    uint8_t *buf = read_all(data_path("small.safetensors"), &len);
    REQUIRE(buf);
    REQUIRE_ST(sdxl_tf_parse(buf, len, &f, &err), &err);
    CHECK(sdxl_tf_format_of(f) == SDXL_TF_SAFETENSORS);
    const sdxl_st_tensor *w = sdxl_tf_find(f, "w");
    CHECK(w && (const uint8_t *)w->data >= buf && (const uint8_t *)w->data < buf + len);
    sdxl_tf_close(f);
    free(buf);

    CHECK(!strcmp(sdxl_tf_format_name(SDXL_TF_SAFETENSORS), "safetensors"));
    CHECK(!strcmp(sdxl_tf_format_name(SDXL_TF_TORCH_ZIP), "torch zip"));
    CHECK(!strcmp(sdxl_tf_format_name(SDXL_TF_TORCH_LEGACY), "torch legacy"));
    CHECK(!strcmp(sdxl_tf_format_name((sdxl_tf_format)42), "?"));

    /* not any of them: named, with the first bytes */
    static const char junk[] = "GIF89a, not weights";
    f = (sdxl_tensorfile *)1;
    CHECK_EQ_INT(sdxl_tf_parse(junk, sizeof junk - 1, &f, &err), SDXL_STATUS_BAD_INPUT);
    CHECK(f == NULL);
    CHECK(strstr(err.msg, "<memory>: not a safetensors file, a torch zip archive or a legacy torch pickle") &&
          strstr(err.msg, "[47 49 46 38"));
    CHECK_EQ_INT(sdxl_tf_parse("", 0, &f, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_EQ_INT(sdxl_tf_parse(NULL, 4, &f, &err), SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_tf_open(data_path("no_such_file.pt"), &f, &err), SDXL_STATUS_NOT_FOUND);
    CHECK_EQ_INT(sdxl_tf_open(sdxl_test_tmpdir(), &f, &err), SDXL_STATUS_IO);
    CHECK(strstr(err.msg, "not a regular file"));

    /* an empty file and a directory through the torch API */
    sdxl_torch_file *t = (sdxl_torch_file *)1;
    char path[1024];
    snprintf(path, sizeof path, "%s/empty.pt", sdxl_test_tmpdir());
    FILE *fp = fopen(path, "wb");
    REQUIRE(fp);
    fclose(fp);
    CHECK_EQ_INT(sdxl_torch_open(path, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK(t == NULL && strstr(err.msg, "empty"));
    CHECK_EQ_INT(sdxl_torch_open(sdxl_test_tmpdir(), &t, &err), SDXL_STATUS_IO);
    CHECK_EQ_INT(sdxl_torch_open(data_path("missing.pt"), &t, &err), SDXL_STATUS_NOT_FOUND);
    /* NULL-safe getters */
    sdxl_tf_close(NULL);
    sdxl_torch_close(NULL);
    CHECK(sdxl_tf_count(NULL) == 0 && sdxl_tf_at(NULL, 0) == NULL && sdxl_tf_bytes(NULL) == 0);
    CHECK(sdxl_torch_count(NULL) == 0 && sdxl_torch_find(NULL, "x") == NULL &&
          sdxl_torch_metadata(NULL, "x") == NULL);
}

/* ---- hostile files -------------------------------------------------------- */

static void expect_refused(const char *name, sdxl_status want, const char *kw1, const char *kw2) {
    sdxl_tensorfile *f = (sdxl_tensorfile *)1;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = sdxl_tf_open(data_path(name), &f, &err);
    CHECK_MSG(st == want, "%s: status %s, expected %s (%s)", name, sdxl_status_str(st), sdxl_status_str(want),
              err.msg);
    CHECK_MSG(f == NULL, "%s: out not NULL", name);
    CHECK_MSG(strstr(err.msg, kw1) != NULL, "%s: message lacks \"%s\": %s", name, kw1, err.msg);
    CHECK_MSG(!kw2 || strstr(err.msg, kw2) != NULL, "%s: message lacks \"%s\": %s", name, kw2, err.msg);
    CHECK_MSG(strstr(err.msg, name) != NULL, "%s: message does not name the file: %s", name, err.msg);
    if (st == SDXL_STATUS_OK) sdxl_tf_close(f);
    /* and from memory */
    size_t len;
    uint8_t *buf = read_all(data_path(name), &len);
    REQUIRE(buf);
    f = (sdxl_tensorfile *)1;
    st = sdxl_tf_parse(buf, len, &f, &err);
    CHECK_MSG(st == want && f == NULL && strstr(err.msg, kw1) && !strncmp(err.msg, "<memory>: ", 10),
              "%s from memory: %s: %s", name, sdxl_status_str(st), err.msg);
    if (st == SDXL_STATUS_OK) sdxl_tf_close(f);
    free(buf);
}

TEST(torch_malicious_pickles_are_refused_and_never_run) {
    static const struct {
        const char *file, *global, *opcode, *marker;
    } cases[] = {
        {"evil_os_system_zip.pt", "\"os.system\"", "GLOBAL (0x63)", "/tmp/sdxl_torch_pwned_os_system"},
        {"evil_os_system_legacy.pt", "\"os.system\"", "GLOBAL (0x63)", "/tmp/sdxl_torch_pwned_os_system"},
        {"evil_eval_zip.pt", "\"builtins.eval\"", "STACK_GLOBAL (0x93)", "/tmp/sdxl_torch_pwned_eval"},
        {"evil_eval_legacy.pt", "\"builtins.eval\"", "STACK_GLOBAL (0x93)", "/tmp/sdxl_torch_pwned_eval"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink(cases[i].marker);
        REQUIRE(!file_exists(cases[i].marker));
        expect_refused(cases[i].file, SDXL_STATUS_BAD_INPUT, cases[i].global, cases[i].opcode);
        expect_refused(cases[i].file, SDXL_STATUS_BAD_INPUT, "pickle byte ", "refusing global");
        CHECK_MSG(!file_exists(cases[i].marker), "%s: the payload ran: %s exists", cases[i].file,
                  cases[i].marker);
    }
}

TEST(torch_bad_files) {
    expect_refused("bad_storage_size_zip.pt", SDXL_STATUS_BAD_INPUT,
                   "entry \"crafted/data/0\" holds 24 bytes", "declares 400");
    expect_refused("bad_storage_size_legacy.pt", SDXL_STATUS_BAD_INPUT, "storage \"0\" holds 7 elements",
                   "declares 9");
    expect_refused("bad_stride_zip.pt", SDXL_STATUS_BAD_INPUT, "tensor \"t\"",
                   "stride [4, 1] of F32 reach up to byte 32");
    expect_refused("bad_stride_legacy.pt", SDXL_STATUS_BAD_INPUT, "tensor \"t\"", "which holds 28 bytes");
    expect_refused("bad_offset_overflow_zip.pt", SDXL_STATUS_BAD_INPUT, "tensor \"t\"", "past byte 2^64");
    expect_refused("bad_expand_zip.pt", SDXL_STATUS_BAD_INPUT, "tensor data", "4 x the file size");
    expect_refused("bad_missing_record_zip.pt", SDXL_STATUS_BAD_INPUT, "storage \"7\" has no archive entry",
                   "\"crafted/data/7\"");
    expect_refused("bad_big_endian_zip.pt", SDXL_STATUS_UNSUPPORTED, "big-endian", NULL);
    expect_refused("bad_dup_name_zip.pt", SDXL_STATUS_BAD_INPUT, "two values are named \"a.b\"", NULL);
    expect_refused("unsupported_complex_zip.pt", SDXL_STATUS_UNSUPPORTED, "torch.ComplexFloatStorage", NULL);
    expect_refused("root_list_zip.pt", SDXL_STATUS_BAD_INPUT, "the saved object is a list", NULL);

    /* the crafted files these differ from are fine */
    for (int k = 0; k < 2; k++) {
        sdxl_tensorfile *f = NULL;
        sdxl_error err;
        REQUIRE_ST(sdxl_tf_open(data_path(k ? "crafted_ok_legacy.pt" : "crafted_ok_zip.pt"), &f, &err), &err);
        const sdxl_st_tensor *t = sdxl_tf_find(f, "t");
        REQUIRE(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
        static const float want[6] = {-1.0f, 2.0f, 3.0f, -4.5f, 6.25f, 7.0f};
        CHECK(!memcmp(t->data, want, sizeof want));
        sdxl_tf_close(f);
    }
}

/* Every prefix of a small file is an error (BAD_INPUT with a message), never
 * a crash and never a success. Exact-size copies, so ASan sees any read
 * past the end. */
static void truncations(const char *name) {
    size_t len;
    uint8_t *full = read_all(data_path(name), &len);
    REQUIRE(full);
    int64_t live0 = live_bytes();
    for (size_t n = 0; n < len; n++) {
        uint8_t *b = malloc(n ? n : 1);
        memcpy(b, full, n);
        sdxl_tensorfile *f = (sdxl_tensorfile *)1;
        sdxl_error err;
        sdxl_error_clear(&err);
        sdxl_status st = sdxl_tf_parse(b, n, &f, &err);
        CHECK_MSG(st == SDXL_STATUS_BAD_INPUT && f == NULL && err.msg[0], "%s cut at %zu: %s %s", name, n,
                  sdxl_status_str(st), err.msg);
        if (st == SDXL_STATUS_OK) sdxl_tf_close(f);
        free(b);
    }
    CHECK_EQ_INT(live_bytes(), live0);
    free(full);
}

TEST(torch_truncated_files) {
    truncations("small_zip.pt");
    truncations("small_legacy.pt");
    truncations("crafted_ok_legacy.pt");
    truncations("nested_legacy.pt");
}

TEST(torch_corrupt_zip) {
    size_t len;
    uint8_t *orig = read_all(data_path("small_zip.pt"), &len);
    REQUIRE(orig && len > 200);
    uint8_t *b = malloc(len);
    sdxl_tensorfile *f = NULL;
    sdxl_error err;

    /* a flipped byte inside the data of w (1.0f = 00 00 80 3f): CRC mismatch */
    static const uint8_t w0[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0};
    uint8_t *at = memmem(orig, len, w0, sizeof w0);
    REQUIRE(at);
    memcpy(b, orig, len);
    b[(at - orig) + 2] ^= 0x01;
    CHECK_EQ_INT(sdxl_tf_parse(b, len, &f, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "data/") && (strstr(err.msg, "CRC") || strstr(err.msg, "crc")), "%s", err.msg);

    /* the end-of-central-directory record destroyed */
    static const uint8_t eocd[4] = {'P', 'K', 5, 6};
    memcpy(b, orig, len);
    uint8_t *e = NULL;
    for (uint8_t *p = b; (p = memmem(p, len - (size_t)(p - b), eocd, 4)); p++)
        e = p;
    REQUIRE(e);
    memset(e, 0, 4);
    CHECK_EQ_INT(sdxl_tf_parse(b, len, &f, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "not a valid zip archive"), "%s", err.msg);

    /* central directory entries that disagree with the local headers */
    static const uint8_t cdir[4] = {'P', 'K', 1, 2};
    memcpy(b, orig, len);
    uint8_t *cd = memmem(b, len, cdir, 4);
    REQUIRE(cd);
    cd[42] ^= 0x40; /* relative offset of the first local header */
    CHECK_EQ_INT(sdxl_tf_parse(b, len, &f, &err), SDXL_STATUS_BAD_INPUT);

    /* every single byte flipped in turn: an error or a correct result, nothing else */
    sdxl_torch_file *ref = NULL;
    REQUIRE_ST(sdxl_torch_parse(orig, len, &ref, &err), &err);
    int ok = 0;
    for (size_t i = 0; i < len; i++) {
        memcpy(b, orig, len);
        b[i] ^= 0x5a;
        sdxl_torch_file *t = NULL;
        sdxl_status st = sdxl_torch_parse(b, len, &t, &err);
        if (st == SDXL_STATUS_OK) {
            ok++;
            /* names or values may legitimately change only in bytes zip does not checksum: the
             * archive's headers; the data and the pickle are CRC-protected */
            CHECK_EQ_INT(sdxl_torch_count(t), sdxl_torch_count(ref));
            const sdxl_st_tensor *w = sdxl_torch_find(t, "w");
            CHECK_MSG(w && w->nbytes == 16 && !memcmp(w->data, sdxl_torch_find(ref, "w")->data, 16),
                      "flip at %zu: w changed", i);
            sdxl_torch_close(t);
        } else {
            CHECK_MSG(st == SDXL_STATUS_BAD_INPUT || st == SDXL_STATUS_UNSUPPORTED, "flip at %zu: %s", i,
                      err.msg);
        }
    }
    CHECK(ok < (int)len);
    sdxl_torch_close(ref);
    free(b);
    free(orig);
}

/* ---- hostile object graphs, through a legacy file built here ------------- */

typedef struct {
    uint8_t d[1 << 16];
    size_t n;
} bb;

static void bb_put(bb *b, const void *s, size_t n) {
    if (n > sizeof b->d - b->n) abort();
    memcpy(b->d + b->n, s, n);
    b->n += n;
}
#define BBS(b, lit) bb_put((b), (lit), sizeof(lit) - 1)

static void bb_key(bb *b, const char *s) {
    uint8_t n = (uint8_t)strlen(s);
    BBS(b, "\x8c");
    bb_put(b, &n, 1);
    bb_put(b, s, n);
}

/* magic, protocol, sys_info, <main>, [] (no storages) */
static void legacy_open(bb *b) {
    b->n = 0;
    BBS(b, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
    BBS(b, "\x80\x02M\xe9\x03.");
    BBS(b, "\x80\x02}.");
    BBS(b, "\x80\x04");
}

static void legacy_close(bb *b) {
    BBS(b, ".\x80\x02].");
}

static sdxl_status parse_bb(const bb *b, sdxl_torch_file **t, sdxl_error *err) {
    uint8_t *copy = malloc(b->n);
    memcpy(copy, b->d, b->n);
    sdxl_status st = sdxl_torch_parse(copy, b->n, t, err);
    free(copy);
    return st;
}

TEST(torch_hostile_object_graphs) {
    static bb b;
    sdxl_error err;
    sdxl_torch_file *t = NULL;

    /* flattening, keys and leaves */
    legacy_open(&b);
    BBS(&b, "}(");
    bb_key(&b, "a");
    BBS(&b, "}(K\x01G\x3f\xf8\x00\x00\x00\x00\x00\x00J\xff\xff\xff\x7f");
    bb_key(&b, "s");
    BBS(&b, "u");
    bb_key(&b, "nul");
    BBS(&b, "\x8c\x03x\x00y"); /* a string with a NUL: ignored */
    BBS(&b, "\x88\x8c\x01k");  /* key True: ignored */
    BBS(&b, "u");
    legacy_close(&b);
    REQUIRE_ST(parse_bb(&b, &t, &err), &err);
    CHECK_EQ_INT(sdxl_torch_count(t), 1);
    const sdxl_st_tensor *one = sdxl_torch_find(t, "a.1");
    REQUIRE(one && one->dtype == SDXL_ST_F64 && *(const double *)one->data == 1.5);
    CHECK(!strcmp(sdxl_torch_metadata(t, "a.2147483647"), "s"));
    CHECK_EQ_INT(sdxl_torch_ignored_count(t), 2);
    sdxl_torch_close(t);

    /* a dict that contains itself */
    legacy_open(&b);
    BBS(&b, "}\x94");
    bb_key(&b, "me");
    BBS(&b, "h\x00s");
    legacy_close(&b);
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "nested deeper than 64") && strstr(err.msg, "\"me.me.me"), "%s", err.msg);

    /* 40 levels of {"a": d, "b": d} with one shared d per level: 2^40 leaves if unfolded */
    legacy_open(&b);
    BBS(&b, "K\x07\x94"); /* memo 0: the leaf */
    for (int i = 0; i < 40; i++) {
        uint8_t idx = (uint8_t)i;
        BBS(&b, "}(");
        bb_key(&b, "a");
        BBS(&b, "h");
        bb_put(&b, &idx, 1);
        bb_key(&b, "b");
        BBS(&b, "h");
        bb_put(&b, &idx, 1);
        BBS(&b, "u\x94"); /* memo i + 1 */
    }
    legacy_close(&b);
    int64_t live0 = live_bytes();
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "shared or repeated too often"), "%s", err.msg);
    CHECK_EQ_INT(live_bytes(), live0);

    /* a key with a NUL byte; a name longer than the limit */
    legacy_open(&b);
    BBS(&b, "}\x8c\x03"
            "a\x00"
            "bK\x01s");
    legacy_close(&b);
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "NUL"), "%s", err.msg);
    legacy_open(&b);
    BBS(&b, "}\x94");
    for (int i = 0; i < 20; i++) { /* 20 levels of a 250-byte key: 5000 bytes */
        char key[251];
        memset(key, 'k', 250);
        key[250] = 0;
        bb_key(&b, key);
        BBS(&b, "}\x94");
    }
    BBS(&b, "K\x01\x8c\x01x");
    for (int i = 0; i < 20; i++)
        BBS(&b, "s");
    BBS(&b, "s");
    legacy_close(&b);
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "longer than 4096 bytes"), "%s", err.msg);

    /* the wrong kind of root; the wrong magic; big-endian sys_info; a storage key
     * list that names a storage no tensor uses */
    legacy_open(&b);
    BBS(&b, "K\x01");
    legacy_close(&b);
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "the saved object is a int"), "%s", err.msg);
    b.n = 0;
    BBS(&b, "\x80\x02K\x01.");
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "magic number"), "%s", err.msg);
    b.n = 0;
    BBS(&b, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xea\x03.");
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "protocol version 1002"), "%s", err.msg);
    b.n = 0;
    BBS(&b, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.");
    BBS(&b, "\x80\x02}\x8c\x0dlittle_endian\x89s.\x80\x02}.\x80\x02].");
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_UNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "big-endian"), "%s", err.msg);
    legacy_open(&b);
    BBS(&b, "}.\x80\x02]\x8c\x01"
            "0a.");
    CHECK_EQ_INT(parse_bb(&b, &t, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "storage key \"0\" is listed but no tensor uses it"), "%s", err.msg);
}

TEST(torch_alloc_failure) {
    static const char *files[] = {"small_zip.pt", "nested_legacy.pt"};
    for (int k = 0; k < 2; k++) {
        size_t len;
        uint8_t *buf = read_all(data_path(files[k]), &len);
        REQUIRE(buf);
        int64_t live0 = live_bytes();
        int failures = 0;
        for (int64_t n = 1; n < 2000; n++) {
            sdxl_error err;
            sdxl_tensorfile *f = (sdxl_tensorfile *)1;
            sdxl__alloc_fail_at(n);
            sdxl_status st = sdxl_tf_parse(buf, len, &f, &err);
            sdxl__alloc_fail_at(0);
            if (st == SDXL_STATUS_OK) {
                CHECK(sdxl_tf_count(f) > 0);
                sdxl_tf_close(f);
                break;
            }
            failures++;
            CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "%s, allocation %lld: %s: %s", files[k], (long long)n,
                      sdxl_status_str(st), err.msg);
            CHECK(f == NULL);
            CHECK_EQ_INT(live_bytes(), live0);
        }
        CHECK(failures >= 10);
        CHECK_EQ_INT(live_bytes(), live0);
        free(buf);
    }
}
