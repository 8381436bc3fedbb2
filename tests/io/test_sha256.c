/* SHA-256 against the FIPS 180-4 / NIST example vectors, chunked updates at
 * every split, and a file against the system's sha256sum. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/sha256.h"
#include "test.h"

static void hex_of(const void *p, size_t n, char hex[65]) {
    uint8_t d[32];
    sdxl_sha256_buf(p, n, d);
    sdxl_sha256_hex(d, hex);
}

TEST(sha256_fips_vectors) {
    char hex[65];
    hex_of("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    hex_of("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 448 bits */
    hex_of(m2, strlen(m2), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    const char *m3 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                     "mnopqrstnopqrstu"; /* 896 bits */
    hex_of(m3, strlen(m3), hex);
    CHECK(!strcmp(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"));
    /* one million 'a', fed in uneven pieces */
    static char a[1000];
    memset(a, 'a', sizeof a);
    sdxl_sha256 h;
    sdxl_sha256_init(&h);
    size_t left = 1000000, piece = 1;
    while (left) {
        size_t k = piece < left ? piece : left;
        if (k > sizeof a) k = sizeof a;
        sdxl_sha256_update(&h, a, k);
        left -= k;
        piece = piece * 7 % 997 + 1;
    }
    uint8_t d[32];
    sdxl_sha256_final(&h, d);
    sdxl_sha256_hex(d, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

TEST(sha256_split_updates_match_one_shot) {
    uint8_t buf[300];
    for (int i = 0; i < 300; i++) buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t n = 0; n <= 300; n += 1 + n / 8) {
        uint8_t ref[32], d[32];
        sdxl_sha256_buf(buf, n, ref);
        for (size_t cut = 0; cut <= n; cut++) {
            sdxl_sha256 h;
            sdxl_sha256_init(&h);
            sdxl_sha256_update(&h, buf, cut);
            sdxl_sha256_update(&h, buf + cut, n - cut);
            sdxl_sha256_final(&h, d);
            if (memcmp(d, ref, 32)) {
                sdxl_test_fail(__FILE__, __LINE__, "length %zu split at %zu differs", n, cut);
                return;
            }
        }
    }
}

TEST(sha256_file_matches_sha256sum) {
    char path[1024], cmd[1200], line[256];
    snprintf(path, sizeof path, "%s/sha256_test.bin", sdxl_test_tmpdir());
    size_t n = 200003; /* not a multiple of the block */
    uint8_t *buf = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) x = x * 1103515245u + 12345u, buf[i] = (uint8_t)(x >> 16);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(buf, 1, n, f) == n);
    if (f) fclose(f);
    char hex[65];
    hex_of(buf, n, hex);
    free(buf);
    snprintf(cmd, sizeof cmd, "sha256sum '%s' 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(line, sizeof line, p)) {
        if (p) pclose(p);
        printf("    (sha256sum not available; skipped)\n");
        return;
    }
    pclose(p);
    CHECK_MSG(!strncmp(line, hex, 64), "sha256sum %.64s vs ours %s", line, hex);
    remove(path);
}
