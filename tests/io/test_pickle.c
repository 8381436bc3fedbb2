/* Tests of io/pickle: the restricted interpreter on pickles written by
 * CPython (protocols 0 and 2, byte strings copied from pickle.dumps), on
 * torch's tensor-rebuilding forms built here piece by piece, on every class
 * of refusal (dangerous globals named with byte offset and opcode, malformed
 * programs, caps) and on allocation failure at every allocation. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "io/pickle.h"
#include "test.h"

#define P(lit) (lit), (sizeof(lit) - 1)

/* ---- helpers ------------------------------------------------------------ */

static sdxl_pickle *load(const char *label, const void *b, size_t n) {
    sdxl_pickle *p = NULL;
    sdxl_error err;
    sdxl_error_clear(&err);
    /* an exact-size heap copy, so that ASan sees any read past the end */
    void *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, b, n);
    sdxl_status st = sdxl_pickle_load(copy, n, NULL, &p, NULL, &err);
    free(copy);
    CHECK_MSG(st == SDXL_STATUS_OK, "%s: %s", label, err.msg);
    return st == SDXL_STATUS_OK ? p : NULL;
}

static void expect_fail_p(const char *label, const void *b, size_t n, const sdxl_pk_params *prm,
                          sdxl_status want, const char *keyword) {
    sdxl_pickle *p = (sdxl_pickle *)1;
    sdxl_error err;
    sdxl_error_clear(&err);
    void *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, b, n);
    sdxl_status st = sdxl_pickle_load(copy, n, prm, &p, NULL, &err);
    free(copy);
    CHECK_MSG(st == want, "%s: status %s, expected %s (%s)", label, sdxl_status_str(st),
              sdxl_status_str(want), err.msg);
    CHECK_MSG(p == NULL, "%s: out not NULL on failure", label);
    CHECK_MSG(strstr(err.msg, keyword) != NULL, "%s: message lacks \"%s\": %s", label, keyword, err.msg);
    CHECK_MSG(strncmp(err.msg, "pickle byte ", 12) == 0, "%s: message does not start with the offset: %s",
              label, err.msg);
    if (st == SDXL_STATUS_OK) sdxl_pickle_free(p);
}

static void expect_fail(const char *label, const void *b, size_t n, sdxl_status want, const char *keyword) {
    expect_fail_p(label, b, n, NULL, want, keyword);
}

static sdxl_pk_ref dict_get(const sdxl_pickle *p, sdxl_pk_ref d, const char *key) {
    for (size_t i = 0; i < sdxl_pickle_len(p, d); i++) {
        sdxl_pk_ref k, v;
        if (!sdxl_pickle_dict_entry(p, d, i, &k, &v)) break;
        const char *s = sdxl_pickle_str(p, k, NULL);
        if (sdxl_pickle_kind(p, k) == SDXL_PK_STR && s && !strcmp(s, key)) return v;
    }
    return SDXL_PK_REF_NONE;
}

/* A byte builder for pickles with binary arguments. */
typedef struct {
    uint8_t d[8192];
    size_t n;
} bb;

static void bb_put(bb *b, const void *s, size_t n) {
    if (n > sizeof b->d - b->n) abort();
    memcpy(b->d + b->n, s, n);
    b->n += n;
}
#define BBS(b, lit) bb_put((b), (lit), sizeof(lit) - 1)

static void bb_u32(bb *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    bb_put(b, x, 4);
}

static void bb_str(bb *b, const char *s) {
    BBS(b, "X");
    bb_u32(b, (uint32_t)strlen(s));
    bb_put(b, s, strlen(s));
}

static void bb_int(bb *b, long long v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
        BBS(b, "J");
        bb_u32(b, (uint32_t)(int32_t)v);
        return;
    }
    BBS(b, "\x8a\x08");
    for (int i = 0; i < 8; i++) {
        uint8_t x = (uint8_t)((unsigned long long)v >> (8 * i));
        bb_put(b, &x, 1);
    }
}

static void bb_global(bb *b, const char *mod, const char *name) {
    BBS(b, "c");
    bb_put(b, mod, strlen(mod));
    BBS(b, "\n");
    bb_put(b, name, strlen(name));
    BBS(b, "\n");
}

static void bb_ints(bb *b, int n, const long long *v) {
    BBS(b, "(");
    for (int i = 0; i < n; i++)
        bb_int(b, v[i]);
    BBS(b, "t");
}

/* persistent id ('storage', <mod.stype>, key, 'cpu', numel) + BINPERSID */
static void bb_storage(bb *b, const char *mod, const char *stype, const char *key, long long numel) {
    BBS(b, "((");
    bb_str(b, "storage");
    bb_global(b, mod, stype);
    bb_str(b, key);
    bb_str(b, "cpu");
    bb_int(b, numel);
    BBS(b, "tQ");
}

/* torch._utils.<fn>(<storage>, offset, size, stride, False, OrderedDict()) as
 * torch writes it; the storage's persistent id is already on b (bb_storage
 * leaves it inside an open MARK: the argument tuple's). */
static void bb_tensor_tail(bb *b, long long offset, int ndim, const long long *size,
                           const long long *stride) {
    bb_int(b, offset);
    bb_ints(b, ndim, size);
    bb_ints(b, ndim, stride);
    BBS(b, "\x89");
    bb_global(b, "collections", "OrderedDict");
    BBS(b, ")R");
}

static void bb_v2(bb *b, const char *stype, long long numel, long long offset, int ndim,
                  const long long *size, const long long *stride) {
    bb_global(b, "torch._utils", "_rebuild_tensor_v2");
    bb_storage(b, "torch", stype, "0", numel);
    bb_tensor_tail(b, offset, ndim, size, stride);
    BBS(b, "tR");
}

/* ---- values as CPython writes them --------------------------------------- */

/* pickle.dumps({"a": 1, "neg": -5, "big": 2**40, "huge": 2**70, "mneg": -2**63, "f": 1.5,
 *               "s": "x\u00e9\u2713", "b": [1.5, None, True, False], "t": (1, 2, 3),
 *               "t4": (1, 2, 3, 4), "e": ()}, protocol=N) */
static const char proto0[] =
    "(dp0\nVa\np1\nI1\nsVneg\np2\nI-5\nsVbig\np3\nL1099511627776L\nsVhuge\np4\nL1180591620717411303424L\ns"
    "Vmneg\np5\nL-9223372036854775808L\nsVf\np6\nF1.5\nsVs\np7\nVx\xe9\\u2713\np8\nsVb\np9\n(lp10\nF1.5\na"
    "NaI01\naI00\nasVt\np11\n(I1\nI2\nI3\ntp12\nsVt4\np13\n(I1\nI2\nI3\nI4\ntp14\nsVe\np15\n(ts.";
static const char proto2[] =
    "\x80\x02}q\x00(X\x01\x00\x00\x00"
    "aq\x01K\x01X\x03\x00\x00\x00negq\x02J\xfb\xff\xff\xffX\x03\x00\x00\x00"
    "b"
    "igq\x03\x8a\x06\x00\x00\x00\x00\x00\x01X\x04\x00\x00\x00hugeq\x04\x8a\x09\x00\x00\x00\x00\x00\x00\x00"
    "\x00@"
    "X\x04\x00\x00\x00mnegq\x05\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80X\x01\x00\x00\x00"
    "fq\x06G\x3f\xf8\x00\x00\x00\x00\x00\x00X"
    "\x01\x00\x00\x00sq\x07X\x06\x00\x00\x00x\xc3\xa9\xe2\x9c\x93q\x08X\x01\x00\x00\x00"
    "bq\x09]q\n(G\x3f\xf8\x00\x00\x00\x00\x00\x00N"
    "\x88\x89"
    "eX\x01\x00\x00\x00tq\x0bK\x01K\x02K\x03\x87q\x0cX\x02\x00\x00\x00t4q\x0d(K\x01K\x02K\x03K\x04t"
    "q\x0eX\x01\x00\x00\x00"
    "eq\x0f)u.";

static void check_values(const char *label, const sdxl_pickle *p) {
    sdxl_pk_ref d = sdxl_pickle_root(p);
    REQUIRE(sdxl_pickle_kind(p, d) == SDXL_PK_DICT);
    CHECK_EQ_INT(sdxl_pickle_len(p, d), 11);
    CHECK_EQ_INT(sdxl_pickle_int(p, dict_get(p, d, "a")), 1);
    CHECK_EQ_INT(sdxl_pickle_int(p, dict_get(p, d, "neg")), -5);
    CHECK_EQ_INT(sdxl_pickle_int(p, dict_get(p, d, "big")), 1099511627776LL);
    CHECK(sdxl_pickle_kind(p, dict_get(p, d, "mneg")) == SDXL_PK_INT);
    CHECK(sdxl_pickle_int(p, dict_get(p, d, "mneg")) == INT64_MIN);
    sdxl_pk_ref huge = dict_get(p, d, "huge");
    CHECK_MSG(sdxl_pickle_kind(p, huge) == SDXL_PK_BIGINT, "%s: 2**70 is a %s", label,
              sdxl_pickle_kind_name(sdxl_pickle_kind(p, huge)));
    size_t hl = 0;
    const uint8_t *hb = (const uint8_t *)sdxl_pickle_str(p, huge, &hl);
    REQUIRE(hb && hl >= 9);
    for (size_t i = 0; i < hl; i++) /* 2^70: bit 6 of byte 8 */
        CHECK_MSG(hb[i] == (i == 8 ? 0x40 : 0), "%s: 2**70 byte %zu is 0x%02x", label, i, hb[i]);
    CHECK(sdxl_pickle_float(p, dict_get(p, d, "f")) == 1.5);
    size_t sl = 0;
    const char *s = sdxl_pickle_str(p, dict_get(p, d, "s"), &sl);
    CHECK(s && sl == 6 && !memcmp(s, "x\xc3\xa9\xe2\x9c\x93", 6));
    sdxl_pk_ref b = dict_get(p, d, "b");
    REQUIRE(sdxl_pickle_kind(p, b) == SDXL_PK_LIST && sdxl_pickle_len(p, b) == 4);
    CHECK(sdxl_pickle_float(p, sdxl_pickle_item(p, b, 0)) == 1.5);
    CHECK(sdxl_pickle_kind(p, sdxl_pickle_item(p, b, 1)) == SDXL_PK_NONE);
    CHECK(sdxl_pickle_kind(p, sdxl_pickle_item(p, b, 2)) == SDXL_PK_BOOL &&
          sdxl_pickle_bool(p, sdxl_pickle_item(p, b, 2)));
    CHECK(sdxl_pickle_kind(p, sdxl_pickle_item(p, b, 3)) == SDXL_PK_BOOL &&
          !sdxl_pickle_bool(p, sdxl_pickle_item(p, b, 3)));
    CHECK(sdxl_pickle_item(p, b, 4) == SDXL_PK_REF_NONE);
    sdxl_pk_ref t = dict_get(p, d, "t"), t4 = dict_get(p, d, "t4"), e = dict_get(p, d, "e");
    CHECK(sdxl_pickle_kind(p, t) == SDXL_PK_TUPLE && sdxl_pickle_len(p, t) == 3);
    CHECK_EQ_INT(sdxl_pickle_int(p, sdxl_pickle_item(p, t, 2)), 3);
    CHECK(sdxl_pickle_kind(p, t4) == SDXL_PK_TUPLE && sdxl_pickle_len(p, t4) == 4);
    CHECK_EQ_INT(sdxl_pickle_int(p, sdxl_pickle_item(p, t4, 3)), 4);
    CHECK(sdxl_pickle_kind(p, e) == SDXL_PK_TUPLE && sdxl_pickle_len(p, e) == 0);
}

TEST(pickle_protocol2_values) {
    sdxl_pickle *p = load("proto2", P(proto2));
    REQUIRE(p);
    check_values("proto2", p);
    CHECK(sdxl_pickle_item_count(p) >= 22 + 4 + 7);
    sdxl_pickle_free(p);
}

TEST(pickle_protocol0_values) {
    sdxl_pickle *p = load("proto0", P(proto0));
    REQUIRE(p);
    check_values("proto0", p);
    sdxl_pickle_free(p);
}

TEST(pickle_bytes_and_text_strings) {
    /* pickle.dumps(b"ab\x00\xff", protocol=0): _codecs.encode("ab\x00\xff", "latin1") */
    sdxl_pickle *p = load("codecs", P("c_codecs\nencode\np0\n(Vab\\u0000\xff\np1\nVlatin1\np2\ntp3\nRp4\n."));
    REQUIRE(p);
    size_t n = 0;
    const char *s = sdxl_pickle_str(p, sdxl_pickle_root(p), &n);
    CHECK(sdxl_pickle_kind(p, sdxl_pickle_root(p)) == SDXL_PK_BYTES);
    CHECK(s && n == 4 && !memcmp(s, "ab\0\xff", 4));
    sdxl_pickle_free(p);
    /* protocol 3: SHORT_BINBYTES */
    p = load("binbytes", P("\x80\x03"
                           "C\x04"
                           "ab\x00\xffq\x00."));
    REQUIRE(p);
    s = sdxl_pickle_str(p, sdxl_pickle_root(p), &n);
    CHECK(s && n == 4 && !memcmp(s, "ab\0\xff", 4));
    sdxl_pickle_free(p);
    /* STRING with escapes; UNICODE with an even backslash run (no escape) and \U */
    p = load("string", P("S'a\\x41\\n\\'b\\\\'\n."));
    REQUIRE(p);
    s = sdxl_pickle_str(p, sdxl_pickle_root(p), &n);
    CHECK(s && n == 6 && !memcmp(s, "aA\n'b\\", 6));
    sdxl_pickle_free(p);
    p = load("unicode", P("V\\\\u0041\\U0001F600\n."));
    REQUIRE(p);
    s = sdxl_pickle_str(p, sdxl_pickle_root(p), &n);
    CHECK(s && n == 11 && !memcmp(s, "\\\\u0041\xf0\x9f\x98\x80", 11));
    sdxl_pickle_free(p);
    /* BINUNICODE8, SHORT_BINUNICODE, BINSTRING, SHORT_BINSTRING, BINBYTES8 */
    p = load("wide", P("\x80\x04(\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi\x8c\x01xT\x01\x00\x00\x00yU\x01z"
                       "\x8e\x01\x00\x00\x00\x00\x00\x00\x00wt."));
    REQUIRE(p);
    sdxl_pk_ref t = sdxl_pickle_root(p);
    REQUIRE(sdxl_pickle_len(p, t) == 5);
    CHECK(!strcmp(sdxl_pickle_str(p, sdxl_pickle_item(p, t, 0), NULL), "hi"));
    CHECK(!strcmp(sdxl_pickle_str(p, sdxl_pickle_item(p, t, 3), NULL), "z"));
    CHECK(sdxl_pickle_kind(p, sdxl_pickle_item(p, t, 4)) == SDXL_PK_BYTES);
    sdxl_pickle_free(p);
}

TEST(pickle_memo_dup_and_sharing) {
    /* a list that contains itself: [l] with l = that list */
    sdxl_pickle *p = load("self", P("\x80\x02]q\x00h\x00"
                                    "a."));
    REQUIRE(p);
    sdxl_pk_ref l = sdxl_pickle_root(p);
    CHECK(sdxl_pickle_kind(p, l) == SDXL_PK_LIST && sdxl_pickle_len(p, l) == 1 &&
          sdxl_pickle_item(p, l, 0) == l);
    sdxl_pickle_free(p);
    /* MEMOIZE + BINGET share one object; DUP too; POP and POP_MARK discard */
    p = load("memoize", P("\x80\x04\x8c\x01"
                          "a\x94h\x00\x86(K\x09K\x08"
                          "1K\x05"
                          "2K\x07"
                          "0\x86\x86."));
    REQUIRE(p);
    sdxl_pk_ref t = sdxl_pickle_root(p);
    REQUIRE(sdxl_pickle_len(p, t) == 2);
    sdxl_pk_ref ab = sdxl_pickle_item(p, t, 0), fives = sdxl_pickle_item(p, t, 1);
    CHECK(sdxl_pickle_item(p, ab, 0) == sdxl_pickle_item(p, ab, 1));
    CHECK_EQ_INT(sdxl_pickle_int(p, sdxl_pickle_item(p, fives, 0)), 5);
    CHECK_EQ_INT(sdxl_pickle_int(p, sdxl_pickle_item(p, fives, 1)), 5);
    sdxl_pickle_free(p);
    /* text PUT / GET */
    p = load("put", P("I7\np3\n0g3\n."));
    REQUIRE(p);
    CHECK_EQ_INT(sdxl_pickle_int(p, sdxl_pickle_root(p)), 7);
    sdxl_pickle_free(p);
}

TEST(pickle_empty_mark_frames) {
    /* TUPLE / LIST / DICT of nothing, as the very first values (found by fuzzing: the
     * empty frame's address was computed from a stack not yet allocated) */
    static const struct {
        const char *b;
        size_t n;
        sdxl_pk_kind kind;
    } cases[] = {{P("(t."), SDXL_PK_TUPLE}, {P("(l."), SDXL_PK_LIST}, {P("(d."), SDXL_PK_DICT}};
    for (int i = 0; i < 3; i++) {
        sdxl_pickle *p = load("empty frame", cases[i].b, cases[i].n);
        REQUIRE(p);
        CHECK(sdxl_pickle_kind(p, sdxl_pickle_root(p)) == cases[i].kind &&
              sdxl_pickle_len(p, sdxl_pickle_root(p)) == 0);
        sdxl_pickle_free(p);
    }
}

TEST(pickle_back_to_back) {
    static const char two[] = "\x80\x02K\x01.\x80\x02M\xe9\x03.";
    sdxl_pickle *p = NULL;
    sdxl_error err;
    size_t used = 0;
    REQUIRE_OK(sdxl_pickle_load(two, sizeof two - 1, NULL, &p, &used, &err), &err);
    CHECK_EQ_INT(used, 5);
    CHECK_EQ_INT(sdxl_pickle_int(p, sdxl_pickle_root(p)), 1);
    sdxl_pickle_free(p);
    REQUIRE_OK(sdxl_pickle_load(two + used, sizeof two - 1 - used, NULL, &p, &used, &err), &err);
    CHECK_EQ_INT(used, 6);
    CHECK_EQ_INT(sdxl_pickle_int(p, sdxl_pickle_root(p)), 1001);
    sdxl_pickle_free(p);
}

/* ---- tensors ------------------------------------------------------------- */

TEST(pickle_tensor_rebuild_v2) {
    bb b = {.n = 0};
    BBS(&b, "\x80\x02");
    long long size[2] = {2, 3}, stride[2] = {3, 1};
    bb_v2(&b, "HalfStorage", 12, 2, 2, size, stride);
    BBS(&b, ".");
    sdxl_pickle *p = load("v2", b.d, b.n);
    REQUIRE(p);
    const sdxl_pk_tensor *t = sdxl_pickle_tensor(p, sdxl_pickle_root(p));
    REQUIRE(t);
    CHECK(t->dtype == SDXL_ST_F16 && t->ndim == 2 && t->offset == 2 && !t->parameter);
    CHECK(t->size[0] == 2 && t->size[1] == 3 && t->stride[0] == 3 && t->stride[1] == 1);
    const sdxl_pk_storage *s = sdxl_pickle_storage(p, t->storage);
    REQUIRE(s);
    CHECK(!strcmp(s->key, "0") && !strcmp(s->location, "cpu") && s->numel == 12 && s->dtype == SDXL_ST_F16 &&
          !s->untyped);
    CHECK_EQ_INT(sdxl_pickle_storage_count(p), 1);
    CHECK(sdxl_pickle_storage_at(p, 0) == s && sdxl_pickle_storage_at(p, 1) == NULL);
    sdxl_pickle_free(p);
}

TEST(pickle_tensor_rebuild_v3_and_parameter) {
    /* _rebuild_parameter(_rebuild_tensor_v3(UntypedStorage, 0, (4,), (1,), False, OrderedDict(),
     * torch.float8_e5m2), True, OrderedDict()) */
    bb b = {.n = 0};
    BBS(&b, "\x80\x02");
    bb_global(&b, "torch._utils", "_rebuild_parameter");
    BBS(&b, "(");
    bb_global(&b, "torch._utils", "_rebuild_tensor_v3");
    bb_storage(&b, "torch.storage", "UntypedStorage", "k", 4);
    long long size[1] = {4}, stride[1] = {1};
    bb_tensor_tail(&b, 0, 1, size, stride);
    bb_global(&b, "torch", "float8_e5m2");
    BBS(&b, "tR\x88");
    bb_global(&b, "collections", "OrderedDict");
    BBS(&b, ")RtR.");
    sdxl_pickle *p = load("v3", b.d, b.n);
    REQUIRE(p);
    const sdxl_pk_tensor *t = sdxl_pickle_tensor(p, sdxl_pickle_root(p));
    REQUIRE(t);
    CHECK(t->dtype == SDXL_ST_F8_E5M2 && t->ndim == 1 && t->size[0] == 4 && t->parameter);
    const sdxl_pk_storage *s = sdxl_pickle_storage(p, t->storage);
    CHECK(s && s->untyped && s->dtype == SDXL_ST_U8 && s->numel == 4);
    sdxl_pickle_free(p);

    /* dtype values and torch.Size are plain values */
    b.n = 0;
    BBS(&b, "\x80\x02(");
    bb_global(&b, "torch", "bfloat16");
    bb_global(&b, "torch", "complex64");
    bb_global(&b, "torch", "Size");
    BBS(&b, "K\x02K\x03\x86\x85Rt.");
    p = load("dtype values", b.d, b.n);
    REQUIRE(p);
    sdxl_pk_ref r = sdxl_pickle_root(p);
    sdxl_st_dtype dt;
    CHECK(sdxl_pickle_global_dtype(p, sdxl_pickle_item(p, r, 0), &dt) && dt == SDXL_ST_BF16);
    CHECK(!strcmp(sdxl_pickle_global_name(p, sdxl_pickle_item(p, r, 1)), "torch.complex64"));
    CHECK(!sdxl_pickle_global_dtype(p, sdxl_pickle_item(p, r, 1), &dt));
    sdxl_pk_ref sz = sdxl_pickle_item(p, r, 2);
    CHECK(sdxl_pickle_kind(p, sz) == SDXL_PK_TUPLE && sdxl_pickle_len(p, sz) == 2);
    sdxl_pickle_free(p);
}

TEST(pickle_tensor_rebuild_errors) {
    long long size9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, neg[2] = {3, -1}, s2[2] = {2, 3}, s1[1] = {6};
    bb b;
    b.n = 0;
    BBS(&b, "\x80\x02");
    bb_v2(&b, "FloatStorage", 6, 0, 9, size9, size9);
    BBS(&b, ".");
    expect_fail("9 dims", b.d, b.n, SDXL_STATUS_UNSUPPORTED, "at most 8");

    b.n = 0;
    BBS(&b, "\x80\x02");
    bb_v2(&b, "FloatStorage", 6, 0, 2, s2, neg);
    BBS(&b, ".");
    expect_fail("negative stride", b.d, b.n, SDXL_STATUS_BAD_INPUT, "stride[1] is not a non-negative");

    b.n = 0;
    BBS(&b, "\x80\x02");
    bb_v2(&b, "FloatStorage", 6, -1, 1, s1, s1);
    BBS(&b, ".");
    expect_fail("negative offset", b.d, b.n, SDXL_STATUS_BAD_INPUT, "storage_offset");

    b.n = 0;
    BBS(&b, "\x80\x02");
    bb_v2(&b, "ComplexFloatStorage", 6, 0, 1, s1, s1);
    BBS(&b, ".");
    expect_fail("complex", b.d, b.n, SDXL_STATUS_UNSUPPORTED, "torch.ComplexFloatStorage");

    b.n = 0; /* size and stride of different lengths */
    BBS(&b, "\x80\x02");
    bb_global(&b, "torch._utils", "_rebuild_tensor");
    bb_storage(&b, "torch", "FloatStorage", "0", 6);
    bb_int(&b, 0);
    bb_ints(&b, 2, s2);
    bb_ints(&b, 1, s1);
    BBS(&b, "tR.");
    expect_fail("dims mismatch", b.d, b.n, SDXL_STATUS_BAD_INPUT, "size has 2 dims but stride 1");

    b.n = 0; /* v2 with 4 arguments */
    BBS(&b, "\x80\x02");
    bb_global(&b, "torch._utils", "_rebuild_tensor_v2");
    bb_storage(&b, "torch", "FloatStorage", "0", 6);
    bb_int(&b, 0);
    bb_ints(&b, 1, s1);
    bb_ints(&b, 1, s1);
    BBS(&b, "tR.");
    expect_fail("arg count", b.d, b.n, SDXL_STATUS_BAD_INPUT, "called with 4 arguments");

    b.n = 0; /* the storage argument is an int */
    BBS(&b, "\x80\x02");
    bb_global(&b, "torch._utils", "_rebuild_tensor");
    BBS(&b, "(K\x01");
    bb_int(&b, 0);
    bb_ints(&b, 1, s1);
    bb_ints(&b, 1, s1);
    BBS(&b, "tR.");
    expect_fail("not a storage", b.d, b.n, SDXL_STATUS_BAD_INPUT, "storage argument is a int");

    b.n = 0; /* v3 with a complex dtype */
    BBS(&b, "\x80\x02");
    bb_global(&b, "torch._utils", "_rebuild_tensor_v3");
    bb_storage(&b, "torch", "UntypedStorage", "0", 8);
    bb_tensor_tail(&b, 0, 1, s1, s1);
    bb_global(&b, "torch", "complex64");
    BBS(&b, "tR.");
    expect_fail("v3 complex", b.d, b.n, SDXL_STATUS_UNSUPPORTED, "torch.complex64");

    /* persistent ids */
    expect_fail("pid int", P("\x80\x02K\x01Q."), SDXL_STATUS_BAD_INPUT, "persistent id is a int");
    expect_fail("pid text", P("Pfoo\n."), SDXL_STATUS_BAD_INPUT, "persistent id is a str");
    b.n = 0;
    BBS(&b, "\x80\x02(");
    bb_str(&b, "module");
    BBS(&b, "K\x01K\x02K\x03K\x04tQ.");
    expect_fail("pid module", b.d, b.n, SDXL_STATUS_BAD_INPUT, "type name is \"module\"");
    b.n = 0;
    BBS(&b, "\x80\x02(");
    bb_str(&b, "storage");
    bb_global(&b, "collections", "OrderedDict");
    bb_str(&b, "0");
    bb_str(&b, "cpu");
    BBS(&b, "K\x01tQ.");
    expect_fail("pid type", b.d, b.n, SDXL_STATUS_BAD_INPUT, "collections.OrderedDict, not a torch storage");
    b.n = 0;
    BBS(&b, "\x80\x02(");
    bb_str(&b, "storage");
    bb_global(&b, "torch", "FloatStorage");
    bb_str(&b, "0");
    bb_str(&b, "cpu");
    bb_int(&b, -4);
    BBS(&b, "tQ.");
    expect_fail("pid numel", b.d, b.n, SDXL_STATUS_BAD_INPUT, "numel");
    b.n = 0; /* legacy storage view */
    BBS(&b, "\x80\x02(");
    bb_str(&b, "storage");
    bb_global(&b, "torch", "FloatStorage");
    bb_str(&b, "0");
    bb_str(&b, "cpu");
    BBS(&b, "K\x04(");
    bb_str(&b, "1");
    BBS(&b, "K\x01K\x02ttQ.");
    expect_fail("pid view", b.d, b.n, SDXL_STATUS_UNSUPPORTED, "storage views");
}

/* ---- refusals ------------------------------------------------------------ */

TEST(pickle_refuses_dangerous_globals) {
    static const struct {
        const char *bytes;
        size_t n;
        const char *name, *where;
    } cases[] = {
        {P("\x80\x02"
           "cos\nsystem\nX\x04\x00\x00\x00true\x85R."),
         "\"os.system\"", "pickle byte 2, GLOBAL (0x63)"},
        {P("cposix\nsystem\n(S'echo pwned'\ntR."), "\"posix.system\"", "pickle byte 0, GLOBAL"},
        {P("c__builtin__\neval\n."), "\"__builtin__.eval\"", "GLOBAL"},
        {P("\x80\x04\x8c\x08"
           "builtins\x8c\x04"
           "eval\x93."),
         "\"builtins.eval\"", "pickle byte 18, STACK_GLOBAL"},
        {P("\x80\x04\x8c\x08"
           "builtins\x8c\x04"
           "exec\x93."),
         "\"builtins.exec\"", "STACK_GLOBAL"},
        {P("csubprocess\nPopen\n."), "\"subprocess.Popen\"", "GLOBAL"},
        {P("cbuiltins\ngetattr\n."), "\"builtins.getattr\"", "GLOBAL"},
        {P("ctorch\nload\n."), "\"torch.load\"", "GLOBAL"},
        {P("ctorch._tensor\n_rebuild_from_type_v2\n."), "\"torch._tensor._rebuild_from_type_v2\"", "GLOBAL"},
        {P("ctorch.nn.modules.linear\nLinear\n."), "\"torch.nn.modules.linear.Linear\"", "GLOBAL"},
        {P("ccollections\nOrderedDict \n."), "\"collections.OrderedDict \"", "GLOBAL"},
        {P("(ios\nsystem\n."), "\"os.system\"", "pickle byte 1, INST (0x69)"},
        {P("cos\x1b[31m\nsystem\n."), "\"os\\x1b[31m.system\"", "GLOBAL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char label[64];
        snprintf(label, sizeof label, "case %zu", i);
        expect_fail(label, cases[i].bytes, cases[i].n, SDXL_STATUS_BAD_INPUT, cases[i].name);
        expect_fail(label, cases[i].bytes, cases[i].n, SDXL_STATUS_BAD_INPUT, cases[i].where);
    }
    /* deep inside a structure the offset still points at the opcode */
    expect_fail("nested",
                P("\x80\x02}q\x00X\x01\x00\x00\x00"
                  "acos\nsystem\n."),
                SDXL_STATUS_BAD_INPUT, "pickle byte 11, GLOBAL (0x63): refusing global \"os.system\"");
}

TEST(pickle_rejects_malformed) {
    static const struct {
        const char *bytes;
        size_t n;
        const char *keyword;
    } cases[] = {
        {P(""), "ends before STOP"},
        {P("\x80\x02"), "ends before STOP"},
        {P("\x80\x06."), "protocol 6"},
        {P("."), "stack is empty"},
        {P("(."), "empty above the last MARK"},
        {P("0."), "no MARK is open"},
        {P("K"), "needs 1 bytes"},
        {P("X\x05\x00\x00\x00"
           "ab."),
         "length 5 is more than"},
        {P("T\xff\xff\xff\xff."), "negative length"},
        {P("\x8a\x02\x01"), "length 2 is more than"},
        {P("\x8b\x00\x00\x00\x80."), "negative length"},
        {P("\xff"), "unknown opcode"},
        {P("Ia\n."), "not a decimal"},
        {P("I12"), "no terminating newline"},
        {P("h\x05."), "memo index 5 was never set"},
        {P("g-1\n."), "memo index -1"},
        {P("K\x01r\x00\x00\x01\x00."), "memo index 65536 is out of range"},
        {P("]K\x01K\x02s."), "SETITEM on a list"},
        {P("}K\x01"
           "a."),
         "APPEND to a dict"},
        {P("}(K\x01u."), "odd number"},
        {P("(K\x01"
           "d."),
         "odd number"},
        {P("}]K\x01s."), "list used as a dict key"},
        {P("(K\x01"
           "e."),
         "no list below the MARK"},
        {P("\x8f."), "sets are not supported"},
        {P("\x82\x01."), "extension registry"},
        {P("\x97."), "out-of-band"},
        {P("K\x01)R."), "cannot call a int"},
        {P("]K\x01"
           "b."),
         "BUILD on a list"},
        {P("X\x02\x00\x00\x00\xc3\x28."), "not valid UTF-8"},
        {P("X\x03\x00\x00\x00\xed\xa0\x80."), "not valid UTF-8"},
        {P("\x95\xff\x00\x00\x00\x00\x00\x00\x00."), "frame of 255 bytes"},
        {P("ccollections\nOrderedDict\nK\x01\x85R."), "OrderedDict called with 1"},
        {P("(ccollections\nOrderedDict\no."), "class instances (OBJ)"},
        {P("\x80\x02"
           "ctorch\nSize\n]\x85R."),
         "torch.Size expects"},
        {P("c_codecs\nencode\nV\\u0100\nVlatin1\n\x86R."), "above U+00FF"},
        {P("c_codecs\nencode\nVa\nVcp1252\n\x86R."), "\"cp1252\" is not supported"},
        {P("S'abc\n."), "not quoted"},
        {P("Vab\\u12\n."), "truncated \\u escape"},
        {P("V\\U00110000\n."), "not a Unicode scalar value"},
        {P("F1.5x\n."), "not a float"},
        {P("\x85."), "needs 1 items"},
        {P("\x81."), "stack is empty"},
        {P("K\x01)\x81."), "cannot instantiate a int"},
        {P("ccollections\nOrderedDict\n)}K\x01K\x01s\x92."), "keyword arguments"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char label[64];
        snprintf(label, sizeof label, "case %zu (%s)", i, cases[i].keyword);
        expect_fail(label, cases[i].bytes, cases[i].n, SDXL_STATUS_BAD_INPUT, cases[i].keyword);
    }
    /* a 300-digit LONG is refused; 200 digits are read */
    char big[512];
    memcpy(big, "L", 1);
    memset(big + 1, '9', 300);
    memcpy(big + 301, "L\n.", 3);
    expect_fail("301 digits", big, 304, SDXL_STATUS_BAD_INPUT, "at most 200 digits");
    memcpy(big + 201, "L\n.", 3);
    sdxl_pickle *p = load("200 digits", big, 204);
    CHECK(p && sdxl_pickle_kind(p, sdxl_pickle_root(p)) == SDXL_PK_BIGINT);
    sdxl_pickle_free(p);
    p = load("negative big", P("L-18446744073709551616L\n."));
    size_t n = 0;
    const uint8_t *mag = p ? (const uint8_t *)sdxl_pickle_str(p, sdxl_pickle_root(p), &n) : NULL;
    CHECK(mag && n == 9 && mag[0] == 0 && mag[7] == 0 && mag[8] == 0xff); /* -2^64, two's complement */
    sdxl_pickle_free(p);
}

TEST(pickle_caps) {
    sdxl_pk_params prm = {.max_stack = 4};
    expect_fail_p("stack", P("K\x01K\x01K\x01K\x01K\x01."), &prm, SDXL_STATUS_BAD_INPUT,
                  "more than 4 values");
    prm = (sdxl_pk_params){.max_marks = 2};
    expect_fail_p("marks", P("(((."), &prm, SDXL_STATUS_BAD_INPUT, "more than 2 nested MARKs");
    prm = (sdxl_pk_params){.max_memo = 2};
    expect_fail_p("memo", P("K\x01q\x02."), &prm, SDXL_STATUS_BAD_INPUT, "out of range (limit 2)");
    prm = (sdxl_pk_params){.max_objects = 6};
    expect_fail_p("objects", P("K\x01K\x01K\x01K\x01."), &prm, SDXL_STATUS_BAD_INPUT, "more than 6 objects");
    prm = (sdxl_pk_params){.max_bytes = 100000};
    static char big[200020];
    big[0] = 'X';
    uint32_t n = 200000;
    memcpy(big + 1, &n, 4); /* little-endian host */
    memset(big + 5, 'a', n);
    big[5 + n] = '.';
    expect_fail_p("bytes", big, 6 + n, &prm, SDXL_STATUS_BAD_INPUT, "more than 100000 bytes");
    /* the same string many times through _codecs.encode: every copy counts */
    bb b = {.n = 0};
    BBS(&b, "c_codecs\nencode\nq\x00(X");
    uint32_t sl = 4000;
    bb_u32(&b, sl);
    for (uint32_t i = 0; i < sl; i++)
        BBS(&b, "a");
    BBS(&b, "\x85q\x01"
            "0(");
    for (int i = 0; i < 60; i++)
        BBS(&b, "h\x00h\x01R");
    BBS(&b, "t.");
    expect_fail_p("encode copies", b.d, b.n, &prm, SDXL_STATUS_BAD_INPUT, "bytes of objects");
}

TEST(pickle_alloc_failure) {
    int64_t live0;
    sdxl_mem_stats ms;
    sdxl_mem_get_stats(&ms);
    live0 = ms.live_bytes;
    int failures = 0;
    for (int64_t n = 1; n < 1000; n++) {
        sdxl_error err;
        sdxl_pickle *p = (sdxl_pickle *)1;
        sdxl__alloc_fail_at(n);
        sdxl_status st = sdxl_pickle_load(proto0, sizeof proto0 - 1, NULL, &p, NULL, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) {
            check_values("after failures", p);
            sdxl_pickle_free(p);
            break;
        }
        failures++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "allocation %lld: %s: %s", (long long)n,
                  sdxl_status_str(st), err.msg);
        CHECK(p == NULL);
        sdxl_mem_get_stats(&ms);
        CHECK_EQ_INT(ms.live_bytes, live0);
    }
    CHECK(failures >= 3);
    sdxl_mem_get_stats(&ms);
    CHECK_EQ_INT(ms.live_bytes, live0);
}

TEST(pickle_getters_are_null_safe) {
    CHECK(sdxl_pickle_root(NULL) == SDXL_PK_REF_NONE);
    CHECK(sdxl_pickle_kind(NULL, 0) == SDXL_PK_KIND_COUNT_);
    CHECK(sdxl_pickle_len(NULL, 0) == 0 && sdxl_pickle_str(NULL, 0, NULL) == NULL);
    CHECK(sdxl_pickle_tensor(NULL, 0) == NULL && sdxl_pickle_storage_at(NULL, 0) == NULL);
    CHECK(!strcmp(sdxl_pickle_kind_name(SDXL_PK_KIND_COUNT_), "?"));
    sdxl_pickle_free(NULL);
    sdxl_pickle *p = load("int", P("K\x07."));
    REQUIRE(p);
    CHECK(sdxl_pickle_kind(p, 12345) == SDXL_PK_KIND_COUNT_);
    CHECK(sdxl_pickle_item(p, sdxl_pickle_root(p), 0) == SDXL_PK_REF_NONE);
    CHECK(!sdxl_pickle_dict_entry(p, sdxl_pickle_root(p), 0, NULL, NULL));
    CHECK(sdxl_pickle_float(p, sdxl_pickle_root(p)) == 0.0 && sdxl_pickle_global_name(p, 0) == NULL);
    CHECK(sdxl_pickle_bytes(p) > 0 && sdxl_pickle_object_count(p) == 4);
    sdxl_pickle_free(p);
    sdxl_error err;
    CHECK_EQ_INT(sdxl_pickle_load("x", 1, NULL, NULL, NULL, &err), SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_pickle_load(NULL, 1, NULL, &p, NULL, &err), SDXL_STATUS_INVALID_ARG);
}
