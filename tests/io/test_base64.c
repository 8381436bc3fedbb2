#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "image/testimg.h"
#include "io/base64.h"
#include "test.h"

/* RFC 4648 section 10 */
TEST(base64_rfc4648_vectors) {
    static const char *const v[][2] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                       {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                       {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char enc[32];
        size_t n = sdxl_base64_encode(v[i][0], strlen(v[i][0]), enc);
        CHECK_MSG(n == strlen(v[i][1]) && !strcmp(enc, v[i][1]), "'%s' -> '%s'", v[i][0], enc);
        CHECK(sdxl_base64_encoded_len(strlen(v[i][0])) == strlen(v[i][1]));
        uint8_t dec[32];
        size_t dn = 99;
        sdxl_error err = {0};
        CHECK_MSG(sdxl_base64_decode(v[i][1], strlen(v[i][1]), dec, sizeof dec, &dn, &err) == SDXL_STATUS_OK, "%s: %s",
                  v[i][1], err.msg);
        CHECK(dn == strlen(v[i][0]) && !memcmp(dec, v[i][0], dn));
    }
}

TEST(base64_round_trips_all_lengths_and_bytes) {
    uint8_t src[300];
    for (int i = 0; i < 300; i++) src[i] = (uint8_t)(i * 151 + 7);
    src[0] = 0, src[1] = 0xff, src[2] = 0xfb, src[3] = 0xef; /* '+' and '/' */
    for (size_t n = 0; n <= sizeof src; n++) {
        size_t elen = 0;
        char *enc = sdxl_base64_encode_alloc(src, n, &elen);
        REQUIRE(enc);
        char *ref = sdxl_test_base64(src, n, NULL); /* an independent encoder */
        CHECK_MSG(!strcmp(enc, ref) && elen == strlen(ref), "n=%zu", n);
        free(ref);
        uint8_t *dec = NULL;
        size_t dn = 0;
        sdxl_error err = {0};
        CHECK(sdxl_base64_decode_alloc(enc, elen, n, &dec, &dn, &err) == SDXL_STATUS_OK); /* exact cap */
        CHECK(dn == n && dec && !memcmp(dec, src, n));
        sdxl_free(dec);
        if (n % 3) { /* unpadded is accepted too */
            size_t k = elen;
            while (enc[k - 1] == '=') k--;
            CHECK(sdxl_base64_decode_alloc(enc, k, n, &dec, &dn, &err) == SDXL_STATUS_OK && dn == n &&
                  !memcmp(dec, src, n));
            sdxl_free(dec);
        }
        if (n) { /* one byte too little room: refused, nothing past the cap written */
            uint8_t small[300];
            memset(small, 0xAA, sizeof small);
            CHECK(sdxl_base64_decode(enc, elen, small, n - 1, &dn, &err) == SDXL_STATUS_BAD_INPUT);
            CHECK(small[n - 1] == 0xAA && strstr(err.msg, "more than"));
        }
        sdxl_free(enc);
    }
}

TEST(base64_whitespace_and_layout) {
    const char *wrapped = "Zm9v\r\nYmFy\n  Zg\t=\n= \n";
    uint8_t out[16];
    size_t n = 0;
    sdxl_error err = {0};
    REQUIRE_OK(sdxl_base64_decode(wrapped, strlen(wrapped), out, sizeof out, &n, &err), &err);
    CHECK(n == 7 && !memcmp(out, "foobarf", 7));
    CHECK(sdxl_base64_decode("  \n", 3, out, sizeof out, &n, &err) == SDXL_STATUS_OK && n == 0);
}

TEST(base64_strict_rejections) {
    static const struct { const char *in, *want; } bad[] = {
        {"Zm9v!mFy", "invalid base64 character '!' at offset 4"},
        {"Zm9v-_Fy", "base64url"},
        {"Zm9v\x01", "byte 0x01 at offset 4"},
        {"Zm9vY", "a final group of one character"},
        {"Z===", "'=' at offset 1"},
        {"=Zm9", "'=' at offset 0"},
        {"Zg=", "incomplete '=' padding"},
        {"Zg===", "too much '=' padding"},
        {"Zm8==", "too much '=' padding"},
        {"Zg==Zm9v", "after the '=' padding"},
        {"Zg= =x", "after the '=' padding"},
        {"Zh==", "non-canonical"}, /* 'h' leaves low bits set */
        {"Zm9=", "non-canonical"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t out[16];
        size_t n = 99;
        sdxl_error err = {0};
        sdxl_status st = sdxl_base64_decode(bad[i].in, strlen(bad[i].in), out, sizeof out, &n, &err);
        CHECK_MSG(st == SDXL_STATUS_BAD_INPUT && strstr(err.msg, bad[i].want), "'%s' -> %d '%s' (want '%s')",
                  bad[i].in, st, err.msg, bad[i].want);
        CHECK(n == 0);
        uint8_t *p = (uint8_t *)1;
        CHECK(sdxl_base64_decode_alloc(bad[i].in, strlen(bad[i].in), 100, &p, &n, &err) == SDXL_STATUS_BAD_INPUT &&
              p == NULL);
    }
}
