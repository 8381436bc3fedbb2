/* Tests of lora/cache: hit/miss accounting, LRU eviction by count and by
 * bytes, too-large refusals (by file size, unread, and by loaded bytes),
 * files changed in place (size, same size with a new mtime, a touch) while
 * cached and while in use, caching disabled, entries in use surviving
 * eviction until their release, load errors passing through, allocation
 * failures at every allocation of a get, the adapter's bytes against the
 * allocation hook, and concurrent gets/releases of overlapping paths with a
 * small cache and a thread touching files (run under ThreadSanitizer:
 * -DSDXL_TSAN=ON, and AddressSanitizer: -DSDXL_SANITIZE=ON).
 *
 * Adapter files are copies of tests/data/lora/ files under names of our own
 * in sdxl_test_tmpdir()/lora_cache/<test>/, so they can be rewritten. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/status.h"
#include "lora/adapter.h"
#include "lora/cache.h"
#include "model/weights.h"
#include "test.h"

/* REQUIRE_OK(expr, &err) trips -Waddress in test.h; go through a pointer. */
#define REQUIRE_ST(expr, errp)                                                                               \
    do {                                                                                                     \
        sdxl_error *ep_ = (errp);                                                                            \
        REQUIRE_OK(expr, ep_);                                                                               \
    } while (0)

/* out = a/b; false (and a failure) if it does not fit. */
static bool join(char *out, size_t n, const char *a, const char *b) {
    int k = snprintf(out, n, "%s/%s", a, b);
    if (k < 0 || (size_t)k >= n) {
        sdxl_test_fail(__FILE__, __LINE__, "path too long: %s/%s", a, b);
        return false;
    }
    return true;
}

/* ---- fixture ------------------------------------------------------------------------ */

typedef struct fixture {
    sdxl_weights *w;
    const sdxl_naming *naming;
    char dir[1024];
} fixture;

static bool fx_open(fixture *f, const char *test) {
    memset(f, 0, sizeof *f);
    sdxl_error err = {0};
    char model[1024];
    snprintf(model, sizeof model, "%s", sdxl_test_data("refs/tiny-sdxl"));
    if (sdxl_weights_load(model, NULL, &f->w, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "fixture: %s", err.msg);
        return false;
    }
    f->naming = sdxl_weights_naming(f->w);
    char base[512];
    snprintf(base, sizeof base, "%s/lora_cache", sdxl_test_tmpdir());
    mkdir(base, 0700);
    if (!join(f->dir, sizeof f->dir, base, test)) return false;
    mkdir(f->dir, 0700);
    return true;
}

static void fx_close(fixture *f) {
    sdxl_weights_free(f->w);
}

static char *read_all(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, fp) != (size_t)n) n = 0;
    fclose(fp);
    *len = (size_t)n;
    return s;
}

/* Write in place: an existing file keeps its inode (O_TRUNC, not a rename). */
static bool write_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return false;
    bool ok = fwrite(data, 1, n, fp) == n;
    return fclose(fp) == 0 && ok;
}

/* Copy tests/data/lora/<rel> to <dir>/<name>; `out` gets the path. */
static bool copy_in(const fixture *f, const char *rel, const char *name, char *out, size_t n) {
    char src[1024];
    if (!join(src, sizeof src, sdxl_test_data("lora"), rel) || !join(out, n, f->dir, name)) return false;
    size_t len = 0;
    char *data = read_all(src, &len);
    bool ok = data && len > 0 && write_file(out, data, len);
    free(data);
    if (!ok) sdxl_test_fail(__FILE__, __LINE__, "cannot copy %s to %s", src, out);
    return ok;
}

static long long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* Set the file's mtime `sec` seconds away from what it is. */
static void shift_mtime(const char *path, int sec) {
    struct stat sb;
    if (stat(path, &sb) != 0) return;
    struct timespec ts[2] = {sb.st_atim, sb.st_mtim};
    ts[1].tv_sec += sec;
    utimensat(AT_FDCWD, path, ts, 0);
}

/* sdxl_lora_adapter_bytes of a direct load of `path`. */
static size_t adapter_bytes_of(const fixture *f, const char *path) {
    sdxl_error err = {0};
    sdxl_lora_adapter *a = NULL;
    if (sdxl_lora_adapter_load(path, f->naming, &a, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", path, err.msg);
        return 0;
    }
    size_t b = sdxl_lora_adapter_bytes(a);
    sdxl_lora_adapter_free(a);
    return b;
}

static sdxl_lora_cache_params params(size_t entries, size_t bytes) {
    sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
    p.max_entries = entries;
    p.max_bytes = bytes;
    return p;
}

static sdxl_lora_cache_stats stats_of(const sdxl_lora_cache *c) {
    sdxl_lora_cache_stats s;
    sdxl_lora_cache_stats_get(c, &s);
    return s;
}

/* get + release, returning the info; false on failure. */
static bool touch_get(sdxl_lora_cache *c, const char *path, sdxl_lora_load_info *info, uint64_t *id) {
    sdxl_error err = {0};
    sdxl_lora_handle *h = NULL;
    if (sdxl_lora_cache_get(c, path, &h, info, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "get %s: %s", path, err.msg);
        return false;
    }
    if (id) *id = sdxl_lora_adapter_id(sdxl_lora_handle_adapter(h));
    sdxl_lora_cache_release(c, h);
    return true;
}

/* Records the event stream (single-threaded tests): "E:name" per eviction, etc. */
typedef struct event_log {
    char text[2048];
} event_log;

static void log_event(const sdxl_lora_cache_event *ev, void *user) {
    event_log *l = user;
    static const char *k[] = {"B", "L", "F", "E", "S"};
    const char *base = strrchr(ev->path, '/');
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s%s:%s", n ? " " : "", k[ev->type],
             base ? base + 1 : ev->path);
}

/* ---- tests ---------------------------------------------------------------------------- */

TEST(lora_cache_params_and_args) {
    sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
    CHECK(p.enabled);
    CHECK_EQ_INT(p.max_entries, 32);
    CHECK_EQ_INT(p.max_bytes, (size_t)2048 << 20);
    CHECK(p.on_event == NULL);

    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    CHECK_EQ_INT(sdxl_lora_cache_create(&p, NULL, &c, &err), SDXL_STATUS_INVALID_ARG);
    CHECK(c == NULL);
    sdxl_lora_cache_free(NULL);
    sdxl_lora_cache_release(NULL, NULL);
    sdxl_lora_cache_clear(NULL);
    CHECK(sdxl_lora_handle_adapter(NULL) == NULL);

    fixture f;
    if (!fx_open(&f, "args")) return;
    REQUIRE_ST(sdxl_lora_cache_create(NULL, f.naming, &c, &err), &err); /* NULL params: defaults */
    sdxl_lora_handle *h = (sdxl_lora_handle *)&err;                     /* must be reset to NULL */
    sdxl_lora_load_info info;
    CHECK_EQ_INT(sdxl_lora_cache_get(c, NULL, &h, &info, &err), SDXL_STATUS_INVALID_ARG);
    CHECK(h == NULL);
    CHECK_EQ_INT(sdxl_lora_cache_get(c, "x", NULL, &info, &err), SDXL_STATUS_INVALID_ARG);
    sdxl_lora_cache_release(c, NULL);
    sdxl_lora_cache_free(c);
    fx_close(&f);
}

TEST(lora_cache_hit_miss) {
    fixture f;
    if (!fx_open(&f, "hit_miss")) return;
    char pa[1024], pb[1024];
    if (!copy_in(&f, "lora_a_kohya.safetensors", "a.safetensors", pa, sizeof pa) ||
        !copy_in(&f, "loha_kohya.safetensors", "b.safetensors", pb, sizeof pb))
        goto out;
    size_t bytes_a = adapter_bytes_of(&f, pa), bytes_b = adapter_bytes_of(&f, pb);

    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);

    sdxl_lora_handle *h1 = NULL, *h2 = NULL, *h3 = NULL;
    sdxl_lora_load_info i1, i2, i3;
    REQUIRE_ST(sdxl_lora_cache_get(c, pa, &h1, &i1, &err), &err);
    CHECK(!i1.hit && !i1.waited && !i1.too_large);
    CHECK(i1.load_ms > 0);
    CHECK_EQ_INT(i1.bytes, bytes_a);
    const sdxl_lora_adapter *a1 = sdxl_lora_handle_adapter(h1);
    REQUIRE(a1 != NULL);
    CHECK(strcmp(sdxl_lora_adapter_label(a1), pa) == 0);
    CHECK(sdxl_lora_adapter_module_count(a1) > 0);

    /* a second get while the first is held: the same adapter */
    REQUIRE_ST(sdxl_lora_cache_get(c, pa, &h2, &i2, &err), &err);
    CHECK(i2.hit && !i2.waited);
    CHECK(i2.load_ms == 0);
    CHECK_EQ_INT(i2.bytes, bytes_a);
    CHECK(sdxl_lora_handle_adapter(h2) == a1);
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.in_use, 2);
    CHECK_EQ_INT(s.entries, 1);
    sdxl_lora_cache_release(c, h1);
    sdxl_lora_cache_release(c, h2);

    /* released: still kept, a hit */
    REQUIRE_ST(sdxl_lora_cache_get(c, pa, &h3, &i3, &err), &err);
    CHECK(i3.hit);
    CHECK(sdxl_lora_handle_adapter(h3) == a1);
    sdxl_lora_cache_release(c, h3);

    sdxl_lora_load_info ib;
    if (touch_get(c, pb, &ib, NULL)) {
        CHECK(!ib.hit);
        CHECK_EQ_INT(ib.bytes, bytes_b);
    }
    s = stats_of(c);
    CHECK_EQ_INT(s.hits, 2);
    CHECK_EQ_INT(s.misses, 2);
    CHECK_EQ_INT(s.loads, 2);
    CHECK_EQ_INT(s.load_failures, 0);
    CHECK_EQ_INT(s.waits, 0);
    CHECK_EQ_INT(s.evictions, 0);
    CHECK_EQ_INT(s.entries, 2);
    CHECK_EQ_INT(s.bytes, bytes_a + bytes_b);
    CHECK_EQ_INT(s.in_use, 0);
    CHECK_NEAR(s.load_ms_total, i1.load_ms + ib.load_ms, 1e-9);

    /* clear drops what is not in use */
    REQUIRE_ST(sdxl_lora_cache_get(c, pa, &h1, NULL, &err), &err);
    sdxl_lora_cache_clear(c);
    s = stats_of(c);
    CHECK_EQ_INT(s.entries, 1);
    CHECK_EQ_INT(s.bytes, bytes_a);
    CHECK_EQ_INT(s.evictions, 1);
    sdxl_lora_cache_release(c, h1);
    sdxl_lora_cache_clear(c);
    s = stats_of(c);
    CHECK_EQ_INT(s.entries, 0);
    CHECK_EQ_INT(s.bytes, 0);
    sdxl_lora_cache_free(c);
out:
    fx_close(&f);
}

TEST(lora_cache_lru_by_count) {
    fixture f;
    if (!fx_open(&f, "lru_count")) return;
    char pa[1024], pb[1024], pc[1024];
    if (!copy_in(&f, "lora_a_kohya.safetensors", "A.safetensors", pa, sizeof pa) ||
        !copy_in(&f, "lora_c_kohya_sgm_fp16.safetensors", "B.safetensors", pb, sizeof pb) ||
        !copy_in(&f, "lokr_sgm_fp16.safetensors", "C.safetensors", pc, sizeof pc))
        goto out;
    event_log ev = {{0}};
    sdxl_lora_cache_params p = params(2, 0);
    p.on_event = log_event;
    p.user_data = &ev;
    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);

    sdxl_lora_load_info i;
    uint64_t id_a = 0, id = 0;
    /* A B A C -> B is the least recently used: evicted */
    touch_get(c, pa, &i, &id_a);
    touch_get(c, pb, &i, NULL);
    touch_get(c, pa, &i, &id);
    CHECK(i.hit && id == id_a);
    touch_get(c, pc, &i, NULL);
    CHECK(!i.hit);
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.evictions, 1);
    CHECK_EQ_INT(s.entries, 2);
    CHECK_MSG(strcmp(ev.text, "B:A.safetensors L:A.safetensors B:B.safetensors L:B.safetensors "
                              "B:C.safetensors L:C.safetensors E:B.safetensors") == 0,
              "events: %s", ev.text);
    /* MRU -> LRU now C, A. A, C hits (order A... then C); B misses and evicts A. */
    touch_get(c, pa, &i, &id);
    CHECK(i.hit && id == id_a);
    touch_get(c, pc, &i, NULL);
    CHECK(i.hit);
    touch_get(c, pb, &i, NULL);
    CHECK(!i.hit);
    touch_get(c, pa, &i, &id);
    CHECK(!i.hit && id != id_a); /* reloaded: a new instance */
    s = stats_of(c);
    CHECK_EQ_INT(s.hits, 3);
    CHECK_EQ_INT(s.misses, 5);
    CHECK_EQ_INT(s.loads, 5);
    CHECK_EQ_INT(s.evictions, 3);
    CHECK_EQ_INT(s.entries, 2);
    const char *tail = strstr(ev.text, "E:B.safetensors");
    CHECK_MSG(tail && strcmp(tail, "E:B.safetensors B:B.safetensors L:B.safetensors E:A.safetensors "
                                   "B:A.safetensors L:A.safetensors E:C.safetensors") == 0,
              "events: %s", ev.text);
    sdxl_lora_cache_free(c);

    /* max_entries 0: nothing kept, every get loads */
    p = params(0, 0);
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    touch_get(c, pa, &i, NULL);
    touch_get(c, pa, &i, NULL);
    CHECK(!i.hit);
    s = stats_of(c);
    CHECK_EQ_INT(s.loads, 2);
    CHECK_EQ_INT(s.entries, 0);
    CHECK_EQ_INT(s.evictions, 0);
    sdxl_lora_cache_free(c);
out:
    fx_close(&f);
}

TEST(lora_cache_lru_by_bytes) {
    fixture f;
    if (!fx_open(&f, "lru_bytes")) return;
    char pa[1024], pb[1024], pc[1024];
    if (!copy_in(&f, "lora_a_kohya.safetensors", "A.safetensors", pa, sizeof pa) ||
        !copy_in(&f, "lora_a_kohya.safetensors", "B.safetensors", pb, sizeof pb) ||
        !copy_in(&f, "lora_a_kohya.safetensors", "C.safetensors", pc, sizeof pc))
        goto out;
    size_t b = adapter_bytes_of(&f, pa);
    REQUIRE(b > 0);
    CHECK_EQ_INT(adapter_bytes_of(&f, pb), b); /* the same content: the same bytes */

    event_log ev = {{0}};
    sdxl_lora_cache_params p = params(100, 2 * b + 1); /* just above two adapters */
    p.on_event = log_event;
    p.user_data = &ev;
    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    sdxl_lora_load_info i;
    touch_get(c, pa, &i, NULL);
    touch_get(c, pb, &i, NULL);
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.entries, 2);
    CHECK_EQ_INT(s.bytes, 2 * b);
    CHECK_EQ_INT(s.evictions, 0);
    touch_get(c, pa, &i, NULL); /* A most recent: B goes for C */
    CHECK(i.hit);
    touch_get(c, pc, &i, NULL);
    s = stats_of(c);
    CHECK_EQ_INT(s.entries, 2);
    CHECK_EQ_INT(s.bytes, 2 * b);
    CHECK_EQ_INT(s.evictions, 1);
    CHECK_MSG(strstr(ev.text, "E:B.safetensors") && !strstr(ev.text, "E:A.safetensors"), "events: %s",
              ev.text);
    touch_get(c, pa, &i, NULL);
    CHECK(i.hit);
    sdxl_lora_cache_free(c);

    /* exactly two adapters' bytes fit (the bound is inclusive) */
    p = params(100, 2 * b);
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    touch_get(c, pa, &i, NULL);
    touch_get(c, pb, &i, NULL);
    CHECK_EQ_INT(stats_of(c).evictions, 0);
    sdxl_lora_cache_free(c);

    /* one byte short of two: each new one evicts the other */
    p = params(100, 2 * b - 1);
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    touch_get(c, pa, &i, NULL);
    touch_get(c, pb, &i, NULL);
    s = stats_of(c);
    CHECK_EQ_INT(s.evictions, 1);
    CHECK_EQ_INT(s.entries, 1);
    CHECK_EQ_INT(s.bytes, b);
    touch_get(c, pb, &i, NULL);
    CHECK(i.hit);
    sdxl_lora_cache_free(c);
out:
    fx_close(&f);
}

TEST(lora_cache_too_large) {
    fixture f;
    if (!fx_open(&f, "too_large")) return;
    char pa[1024], pb[1024];
    if (!copy_in(&f, "lora_a_kohya.safetensors", "a.safetensors", pa, sizeof pa) ||
        !copy_in(&f, "lokr_sgm_fp16.safetensors", "small.safetensors", pb, sizeof pb))
        goto out;
    long long fsize = file_size(pa);
    size_t b = adapter_bytes_of(&f, pa);
    REQUIRE(fsize > 0 && b > (size_t)fsize); /* the adapter holds its file bytes plus tables */

    /* by file size: refused without reading it */
    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    sdxl_lora_cache_params p = params(8, (size_t)fsize - 1);
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    sdxl_lora_handle *h = NULL;
    sdxl_lora_load_info i;
    CHECK_EQ_INT(sdxl_lora_cache_get(c, pa, &h, &i, &err), SDXL_STATUS_OUT_OF_MEMORY);
    CHECK(h == NULL);
    CHECK(i.too_large && !i.hit);
    CHECK_EQ_INT(i.bytes, fsize);
    CHECK_MSG(strstr(err.msg, pa) && strstr(err.msg, "memory limit") && strstr(err.msg, "not loaded"), "%s",
              err.msg);
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.loads, 0);
    CHECK_EQ_INT(s.too_large, 1);
    CHECK_EQ_INT(s.misses, 1);
    CHECK_EQ_INT(s.entries, 0);
    /* a smaller adapter still loads */
    CHECK(touch_get(c, pb, &i, NULL) && !i.too_large);
    sdxl_lora_cache_free(c);

    /* by loaded bytes: the file fits, the adapter does not; loaded, freed, refused */
    p = params(8, b - 1);
    REQUIRE((size_t)fsize <= p.max_bytes);
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    sdxl_mem_stats m0, m1;
    sdxl_mem_get_stats(&m0);
    CHECK_EQ_INT(sdxl_lora_cache_get(c, pa, &h, &i, &err), SDXL_STATUS_OUT_OF_MEMORY);
    sdxl_mem_get_stats(&m1);
    CHECK_EQ_INT(m1.live_bytes, m0.live_bytes); /* nothing of it stays */
    CHECK(h == NULL);
    CHECK(i.too_large);
    CHECK_EQ_INT(i.bytes, b);
    CHECK(i.load_ms > 0);
    CHECK_MSG(strstr(err.msg, pa) && strstr(err.msg, "in memory") && strstr(err.msg, "memory limit"), "%s",
              err.msg);
    s = stats_of(c);
    CHECK_EQ_INT(s.loads, 1);
    CHECK_EQ_INT(s.load_failures, 1);
    CHECK_EQ_INT(s.too_large, 1);
    CHECK_EQ_INT(s.entries, 0);
    CHECK_EQ_INT(s.in_use, 0);
    sdxl_lora_cache_free(c);

    /* exactly the bytes: fits */
    p = params(8, b);
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    CHECK(touch_get(c, pa, &i, NULL) && !i.too_large);
    CHECK_EQ_INT(stats_of(c).entries, 1);
    sdxl_lora_cache_free(c);

    /* refused also with caching disabled: max_bytes is the memory limit */
    p = params(8, (size_t)fsize - 1);
    p.enabled = false;
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    CHECK_EQ_INT(sdxl_lora_cache_get(c, pa, &h, &i, &err), SDXL_STATUS_OUT_OF_MEMORY);
    CHECK(i.too_large);
    sdxl_lora_cache_free(c);
out:
    fx_close(&f);
}

TEST(lora_cache_file_changed) {
    fixture f;
    if (!fx_open(&f, "changed")) return;
    char px[1024], tmp[1024];
    if (!copy_in(&f, "lora_a_kohya.safetensors", "x.safetensors", px, sizeof px) ||
        !copy_in(&f, "loha_kohya.safetensors", "loha.tmp", tmp, sizeof tmp))
        goto out;
    size_t len_loha = 0, len_a = 0;
    char *loha = read_all(tmp, &len_loha);
    char *orig = read_all(px, &len_a);
    REQUIRE(loha && orig && len_loha != len_a);

    event_log ev = {{0}};
    sdxl_lora_cache_params p = params(8, 0);
    p.on_event = log_event;
    p.user_data = &ev;
    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    sdxl_lora_cache_create(&p, f.naming, &c, &err);
    if (!c) {
        free(loha);
        free(orig);
        goto out;
    }
    sdxl_lora_load_info i;
    uint64_t id1 = 0, id2 = 0, id3 = 0, id4 = 0, id = 0;
    touch_get(c, px, &i, &id1);
    touch_get(c, px, &i, &id);
    CHECK(i.hit && id == id1);

    /* rewritten in place with other content (another size): reloaded */
    struct stat s0, s1;
    stat(px, &s0);
    CHECK(write_file(px, loha, len_loha));
    stat(px, &s1);
    CHECK(s0.st_ino == s1.st_ino); /* in place */
    touch_get(c, px, &i, &id2);
    CHECK(!i.hit);
    CHECK(id2 != id1);
    size_t loha_bytes = i.bytes;
    touch_get(c, px, &i, &id);
    CHECK(i.hit && id == id2);
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.stale, 1);
    CHECK_EQ_INT(s.entries, 1);
    CHECK_EQ_INT(s.bytes, loha_bytes);
    CHECK_MSG(strstr(ev.text, "S:x.safetensors"), "events: %s", ev.text);

    /* the same size, different bytes (one byte of tensor data), mtime moved: reloaded */
    loha[len_loha - 1] ^= 0x55;
    CHECK(write_file(px, loha, len_loha));
    shift_mtime(px, 7);
    touch_get(c, px, &i, &id3);
    CHECK(!i.hit && id3 != id2);

    /* only touched (mtime): reloaded as well (we cannot tell a touch from a same-size rewrite) */
    shift_mtime(px, 3);
    touch_get(c, px, &i, &id4);
    CHECK(!i.hit && id4 != id3);

    /* changed while in use: the user's adapter stays valid until released, the next get reloads */
    sdxl_lora_handle *held = NULL, *fresh = NULL;
    REQUIRE_ST(sdxl_lora_cache_get(c, px, &held, &i, &err), &err);
    CHECK(i.hit);
    CHECK(write_file(px, orig, len_a));
    REQUIRE_ST(sdxl_lora_cache_get(c, px, &fresh, &i, &err), &err);
    CHECK(!i.hit);
    CHECK(sdxl_lora_handle_adapter(fresh) != sdxl_lora_handle_adapter(held));
    CHECK_EQ_INT(sdxl_lora_adapter_main_type(sdxl_lora_handle_adapter(held)), SDXL_LORA_TYPE_LOHA);
    CHECK_EQ_INT(sdxl_lora_adapter_main_type(sdxl_lora_handle_adapter(fresh)), SDXL_LORA_TYPE_LORA);
    s = stats_of(c);
    CHECK_EQ_INT(s.entries, 1); /* the stale one is out of the count, still alive */
    CHECK_EQ_INT(s.in_use, 2);
    sdxl_mem_stats m0, m1;
    sdxl_mem_get_stats(&m0);
    sdxl_lora_cache_release(c, held); /* freed now */
    sdxl_mem_get_stats(&m1);
    CHECK_EQ_INT(m0.live_bytes - m1.live_bytes + 8192 >= (int64_t)loha_bytes, 1); /* see bytes_match_alloc_hook */
    sdxl_lora_cache_release(c, fresh);
    s = stats_of(c);
    CHECK_EQ_INT(s.stale, 4);
    CHECK_EQ_INT(s.loads, 5);
    CHECK_EQ_INT(s.entries, 1);

    /* removed: the kept entry is dropped and NOT_FOUND passes through */
    unlink(px);
    sdxl_lora_handle *h = NULL;
    CHECK_EQ_INT(sdxl_lora_cache_get(c, px, &h, &i, &err), SDXL_STATUS_NOT_FOUND);
    s = stats_of(c);
    CHECK_EQ_INT(s.entries, 0);
    CHECK_EQ_INT(s.stale, 5);
    free(loha);
    free(orig);
    sdxl_lora_cache_free(c);
out:
    fx_close(&f);
}

TEST(lora_cache_disabled) {
    fixture f;
    if (!fx_open(&f, "disabled")) return;
    char pa[1024];
    if (!copy_in(&f, "lora_a_kohya.safetensors", "a.safetensors", pa, sizeof pa)) goto out;
    sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
    p.enabled = false;
    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);

    sdxl_mem_stats m0, m1, m2;
    sdxl_mem_get_stats(&m0);
    sdxl_lora_handle *h1 = NULL, *h2 = NULL;
    sdxl_lora_load_info i1, i2;
    REQUIRE_ST(sdxl_lora_cache_get(c, pa, &h1, &i1, &err), &err);
    REQUIRE_ST(sdxl_lora_cache_get(c, pa, &h2, &i2, &err), &err);
    CHECK(!i1.hit && !i2.hit && i1.load_ms > 0 && i2.load_ms > 0);
    CHECK(sdxl_lora_handle_adapter(h1) != sdxl_lora_handle_adapter(h2));
    CHECK(sdxl_lora_adapter_id(sdxl_lora_handle_adapter(h1)) !=
          sdxl_lora_adapter_id(sdxl_lora_handle_adapter(h2)));
    sdxl_mem_get_stats(&m1);
    /* two copies held (adapter bytes may exceed the live delta by the few
     * hundred bytes sdxl_tf_bytes estimates for its tables) */
    CHECK(m1.live_bytes - m0.live_bytes + 8192 >= (int64_t)(i1.bytes + i2.bytes));
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.loads, 2);
    CHECK_EQ_INT(s.misses, 2);
    CHECK_EQ_INT(s.hits, 0);
    CHECK_EQ_INT(s.entries, 0);
    CHECK_EQ_INT(s.bytes, 0);
    CHECK_EQ_INT(s.in_use, 2);
    sdxl_lora_cache_release(c, h1);
    sdxl_lora_cache_release(c, h2);
    sdxl_mem_get_stats(&m2);
    CHECK_EQ_INT(m2.live_bytes, m0.live_bytes); /* release freed everything */
    CHECK_EQ_INT(stats_of(c).in_use, 0);
    sdxl_lora_cache_clear(c);
    sdxl_lora_cache_free(c);
out:
    fx_close(&f);
}

TEST(lora_cache_in_use_survives_eviction) {
    fixture f;
    if (!fx_open(&f, "in_use")) return;
    char pa[1024], pb[1024], pc[1024];
    if (!copy_in(&f, "lora_a_kohya.safetensors", "A.safetensors", pa, sizeof pa) ||
        !copy_in(&f, "loha_kohya.safetensors", "B.safetensors", pb, sizeof pb) ||
        !copy_in(&f, "lokr_sgm_fp16.safetensors", "C.safetensors", pc, sizeof pc))
        goto out;
    event_log ev = {{0}};
    sdxl_lora_cache_params p = params(1, 0);
    p.on_event = log_event;
    p.user_data = &ev;
    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    sdxl_lora_handle *ha = NULL, *hb = NULL, *hc = NULL, *ha2 = NULL;
    sdxl_lora_load_info i;
    REQUIRE_ST(sdxl_lora_cache_get(c, pa, &ha, &i, &err), &err);
    REQUIRE_ST(sdxl_lora_cache_get(c, pb, &hb, &i, &err), &err);
    REQUIRE_ST(sdxl_lora_cache_get(c, pc, &hc, &i, &err), &err);
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.entries, 3); /* over the bound while all are in use */
    CHECK_EQ_INT(s.evictions, 0);
    /* still usable, still shared */
    size_t na = sdxl_lora_adapter_module_count(sdxl_lora_handle_adapter(ha));
    CHECK(na > 0);
    REQUIRE_ST(sdxl_lora_cache_get(c, pa, &ha2, &i, &err), &err);
    CHECK(i.hit && ha2 == ha);
    sdxl_lora_cache_clear(c); /* nothing to drop: all in use */
    CHECK_EQ_INT(stats_of(c).entries, 3);

    sdxl_lora_cache_release(c, ha);
    CHECK_EQ_INT(stats_of(c).evictions, 0); /* A still held through ha2 */
    CHECK_EQ_INT(sdxl_lora_adapter_module_count(sdxl_lora_handle_adapter(ha2)), na);
    sdxl_lora_cache_release(c, hb); /* B is LRU and free: goes */
    s = stats_of(c);
    CHECK_EQ_INT(s.evictions, 1);
    CHECK_EQ_INT(s.entries, 2);
    sdxl_lora_cache_release(c, ha2); /* A goes; C stays (the bound is 1) */
    s = stats_of(c);
    CHECK_EQ_INT(s.evictions, 2);
    CHECK_EQ_INT(s.entries, 1);
    CHECK_MSG(strstr(ev.text, "E:B.safetensors E:A.safetensors") != NULL, "events: %s", ev.text);
    CHECK(sdxl_lora_adapter_module_count(sdxl_lora_handle_adapter(hc)) > 0);
    sdxl_lora_cache_release(c, hc);
    s = stats_of(c);
    CHECK_EQ_INT(s.entries, 1);
    CHECK_EQ_INT(s.in_use, 0);
    touch_get(c, pc, &i, NULL);
    CHECK(i.hit);
    sdxl_lora_cache_free(c); /* frees C */
out:
    fx_close(&f);
}

TEST(lora_cache_errors_pass_through) {
    fixture f;
    if (!fx_open(&f, "errors")) return;
    char missing[1024], bad[1024];
    if (!join(missing, sizeof missing, f.dir, "nope.safetensors") ||
        !join(bad, sizeof bad, f.dir, "bad.safetensors"))
        goto out;
    const char garbage[] = "\x10\x00\x00\x00\x00\x00\x00\x00{not json at all";
    CHECK(write_file(bad, garbage, sizeof garbage - 1));
    sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
    sdxl_error err = {0}, direct = {0};
    sdxl_lora_cache *c = NULL;
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);

    sdxl_lora_adapter *a = NULL;
    sdxl_lora_handle *h = NULL;
    sdxl_lora_load_info i;
    CHECK_EQ_INT(sdxl_lora_adapter_load(missing, f.naming, &a, &direct), SDXL_STATUS_NOT_FOUND);
    CHECK_EQ_INT(sdxl_lora_cache_get(c, missing, &h, &i, &err), SDXL_STATUS_NOT_FOUND);
    CHECK(h == NULL && !i.too_large);
    CHECK_MSG(strcmp(err.msg, direct.msg) == 0, "'%s' vs '%s'", err.msg, direct.msg);

    sdxl_status st = sdxl_lora_adapter_load(bad, f.naming, &a, &direct);
    CHECK_EQ_INT(st, SDXL_STATUS_BAD_INPUT);
    for (int k = 0; k < 2; k++) { /* failures are not cached */
        memset(&err, 0, sizeof err);
        CHECK_EQ_INT(sdxl_lora_cache_get(c, bad, &h, &i, &err), st);
        CHECK_MSG(strcmp(err.msg, direct.msg) == 0, "'%s' vs '%s'", err.msg, direct.msg);
    }
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.misses, 3);
    CHECK_EQ_INT(s.loads, 3);
    CHECK_EQ_INT(s.load_failures, 3);
    CHECK_EQ_INT(s.entries, 0);
    CHECK_EQ_INT(s.in_use, 0);
    sdxl_lora_cache_free(c);
out:
    fx_close(&f);
}

/* Fail each allocation of a get in turn: a clean OUT_OF_MEMORY (or success
 * where the failing allocation was optional), no leak, the cache still works. */
TEST(lora_cache_alloc_failures) {
    fixture f;
    if (!fx_open(&f, "alloc")) return;
    char pa[1024];
    if (!copy_in(&f, "lora_c_kohya_sgm_fp16.safetensors", "a.safetensors", pa, sizeof pa)) goto out;
    sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    int failed = 0;
    for (int64_t n = 1; n < 100000; n++) {
        sdxl_lora_cache_clear(c);
        sdxl_mem_stats m0, m1;
        sdxl_mem_get_stats(&m0);
        sdxl__alloc_fail_at(n);
        sdxl_lora_handle *h = NULL;
        sdxl_status st = sdxl_lora_cache_get(c, pa, &h, NULL, &err);
        int64_t used = sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) {
            sdxl_lora_cache_release(c, h);
            if (used < n) break; /* the failure point was beyond the last allocation */
            continue;
        }
        failed++;
        CHECK_EQ_INT(st, SDXL_STATUS_OUT_OF_MEMORY);
        CHECK(h == NULL);
        sdxl_mem_get_stats(&m1);
        CHECK_MSG(m1.live_bytes == m0.live_bytes, "allocation %lld failed: %lld bytes left", (long long)n,
                  (long long)(m1.live_bytes - m0.live_bytes));
    }
    CHECK(failed > 3);
    sdxl_lora_cache_stats s = stats_of(c);
    CHECK_EQ_INT(s.in_use, 0);
    CHECK_EQ_INT(s.entries, 1);
    sdxl_lora_load_info i;
    CHECK(touch_get(c, pa, &i, NULL) && i.hit);
    sdxl_lora_cache_free(c);
out:
    fx_close(&f);
}

/* sdxl_lora_adapter_bytes sums sdxl_alloc_size of every block the adapter
 * keeps (file bytes, tables sized to the modules kept, key strings, the
 * unmatched list), so it should equal the allocation hook's live delta of a
 * single-threaded load up to what the load frees again and allocator
 * rounding: checked to 2% + 4 KiB, and never an over-count. */
#define BYTES_UNDER_TOL 0.02
TEST(lora_cache_bytes_match_alloc_hook) {
    fixture f;
    if (!fx_open(&f, "bytes")) return;
    static const char *files[] = {"lora_a_kohya.safetensors", "lora_c_kohya_sgm_fp16.safetensors",
                                  "loha_kohya.safetensors",   "lokr_sgm_fp16.safetensors",
                                  "lora_a_peft.safetensors",  "lora_a_kohya.pt",
                                  "lora_a_legacy.pt",         "full_diff.safetensors"};
    sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
    sdxl_error err = {0};
    sdxl_lora_cache *c = NULL;
    REQUIRE_ST(sdxl_lora_cache_create(&p, f.naming, &c, &err), &err);
    for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
        char path[1024];
        if (!join(path, sizeof path, sdxl_test_data("lora"), files[k])) continue;
        sdxl_mem_stats m0, m1, m2;
        sdxl_lora_adapter *a = NULL;
        sdxl_mem_get_stats(&m0);
        if (sdxl_lora_adapter_load(path, f.naming, &a, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "%s: %s", files[k], err.msg);
            continue;
        }
        sdxl_mem_get_stats(&m1);
        int64_t live = m1.live_bytes - m0.live_bytes;
        int64_t bytes = (int64_t)sdxl_lora_adapter_bytes(a);
        sdxl_lora_adapter_free(a);
        printf("    %-36s file %9lld  adapter_bytes %9lld  live delta %9lld  (%+.2f%%)\n", files[k],
               file_size(path), (long long)bytes, (long long)live,
               100.0 * (double)(bytes - live) / (double)live);
        CHECK_MSG(live >= bytes - 4096, "%s: adapter_bytes %lld over-counts the live delta %lld", files[k],
                  (long long)bytes, (long long)live);
        CHECK_MSG((double)(live - bytes) <= BYTES_UNDER_TOL * (double)live + 4096,
                  "%s: adapter_bytes %lld under-counts the live delta %lld", files[k], (long long)bytes,
                  (long long)live);

        /* through the cache: the same, plus the entry's bookkeeping (< 1 KiB) */
        sdxl_lora_handle *h = NULL;
        sdxl_lora_load_info i;
        sdxl_mem_get_stats(&m0);
        if (sdxl_lora_cache_get(c, path, &h, &i, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "%s: %s", files[k], err.msg);
            continue;
        }
        sdxl_mem_get_stats(&m2);
        CHECK_EQ_INT(i.bytes, bytes);
        int64_t extra = (m2.live_bytes - m0.live_bytes) - live;
        CHECK_MSG(extra >= 0 && extra < 1024 + (int64_t)strlen(path), "%s: cache overhead %lld bytes",
                  files[k], (long long)extra);
        sdxl_lora_cache_release(c, h);
    }
    sdxl_lora_cache_free(c);
    fx_close(&f);
}

/* ---- concurrency ------------------------------------------------------------------------ */

#define N_PATHS 6
#define N_THREADS 8

typedef struct conc {
    sdxl_lora_cache *c;
    char paths[N_PATHS][1024];
    size_t bytes[N_PATHS];
    int iters;
    bool toucher_on;
    /* written by the event callback only, i.e. under the cache's lock */
    int resident[N_PATHS], loading[N_PATHS], loads[N_PATHS], kept_loads, violations;
    char first_violation[256];
    /* per thread results, joined */
    uint64_t gets[N_THREADS], errors[N_THREADS];
    pthread_barrier_t start;
    int stop_toucher; /* atomic */
} conc;

static int path_index(const conc *x, const char *path) {
    for (int i = 0; i < N_PATHS; i++)
        if (strcmp(x->paths[i], path) == 0) return i;
    return -1;
}

static void violation(conc *x, const char *what, const char *path) {
    if (x->violations++ == 0) snprintf(x->first_violation, sizeof x->first_violation, "%s: %s", what, path);
}

static void conc_event(const sdxl_lora_cache_event *ev, void *user) {
    conc *x = user;
    int k = path_index(x, ev->path);
    if (k < 0) {
        violation(x, "unknown path", ev->path);
        return;
    }
    switch (ev->type) {
    case SDXL_LORA_CACHE_EVENT_LOAD_BEGIN:
        if (x->resident[k]) violation(x, "load while cached", ev->path);
        if (x->loading[k]) violation(x, "two loads at once", ev->path);
        x->loading[k] = 1;
        x->loads[k]++;
        break;
    case SDXL_LORA_CACHE_EVENT_LOADED:
        x->loading[k] = 0;
        x->resident[k] = ev->kept;
        x->kept_loads += ev->kept;
        if (ev->bytes != x->bytes[k] && !x->toucher_on) violation(x, "bytes differ", ev->path);
        break;
    case SDXL_LORA_CACHE_EVENT_LOAD_FAILED:
        x->loading[k] = 0;
        violation(x, "load failed", ev->path);
        break;
    case SDXL_LORA_CACHE_EVENT_EVICTED:
    case SDXL_LORA_CACHE_EVENT_STALE:
        if (!x->resident[k]) violation(x, "dropped twice", ev->path);
        x->resident[k] = 0;
        break;
    }
}

typedef struct worker_arg {
    conc *x;
    int t;
} worker_arg;

static void *conc_worker(void *p) {
    worker_arg *wa = p;
    conc *x = wa->x;
    int t = wa->t;
    unsigned seed = 0x9e3779b9u * (unsigned)(t + 1);
    sdxl_lora_handle *held[3] = {0};
    pthread_barrier_wait(&x->start);
    for (int it = 0; it < x->iters; it++) {
        seed = seed * 1103515245u + 12345u;
        /* a hot pair most of the time, the others now and then: overlap and eviction */
        int k = (seed >> 16) % 4 == 0 ? (int)((seed >> 8) % N_PATHS) : (int)((seed >> 20) % 2);
        if (it == 0) k = 0; /* everyone at once on one path: the first gets wait for one load */
        sdxl_error err = {0};
        sdxl_lora_handle *h = NULL;
        sdxl_lora_load_info info;
        x->gets[t]++;
        if (sdxl_lora_cache_get(x->c, x->paths[k], &h, &info, &err)) {
            x->errors[t]++;
            continue;
        }
        const sdxl_lora_adapter *a = sdxl_lora_handle_adapter(h);
        if (!a || strcmp(sdxl_lora_adapter_label(a), x->paths[k]) != 0 ||
            sdxl_lora_adapter_module_count(a) == 0)
            x->errors[t]++;
        /* hold up to 3 handles at a time, release the oldest */
        int slot = it % 3;
        sdxl_lora_cache_release(x->c, held[slot]);
        held[slot] = h;
    }
    for (int s = 0; s < 3; s++)
        sdxl_lora_cache_release(x->c, held[s]);
    return NULL;
}

static void *toucher(void *p) {
    conc *x = p;
    while (!__atomic_load_n(&x->stop_toucher, __ATOMIC_ACQUIRE)) {
        shift_mtime(x->paths[N_PATHS - 1], 1);
        usleep(2000);
    }
    return NULL;
}

static void run_concurrent(const char *name, size_t max_entries, int iters, bool touch) {
    fixture f;
    if (!fx_open(&f, name)) return;
    static const char *src[N_PATHS] = {"lora_a_kohya.safetensors",          "lokr_sgm_fp16.safetensors",
                                       "lora_c_kohya_sgm_fp16.safetensors", "dora_kohya.safetensors",
                                       "locon_mid_bf16.safetensors",        "peft_prefixed.safetensors"};
    conc *x = calloc(1, sizeof *x);
    REQUIRE(x);
    for (int i = 0; i < N_PATHS; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "p%d.safetensors", i);
        if (!copy_in(&f, src[i], nm, x->paths[i], sizeof x->paths[i])) goto out;
        x->bytes[i] = adapter_bytes_of(&f, x->paths[i]);
    }
    x->iters = iters;
    x->toucher_on = touch;
    sdxl_lora_cache_params p = params(max_entries, 0);
    p.on_event = conc_event;
    p.user_data = x;
    sdxl_error err = {0};
    if (sdxl_lora_cache_create(&p, f.naming, &x->c, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s", err.msg);
        goto out;
    }
    pthread_barrier_init(&x->start, NULL, N_THREADS);
    pthread_t th[N_THREADS], tt;
    worker_arg wa[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        wa[t] = (worker_arg){x, t};
        pthread_create(&th[t], NULL, conc_worker, &wa[t]);
    }
    if (touch) pthread_create(&tt, NULL, toucher, x);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    if (touch) {
        __atomic_store_n(&x->stop_toucher, 1, __ATOMIC_RELEASE);
        pthread_join(tt, NULL);
    }
    pthread_barrier_destroy(&x->start);

    uint64_t gets = 0, errors = 0;
    for (int t = 0; t < N_THREADS; t++)
        gets += x->gets[t], errors += x->errors[t];
    sdxl_lora_cache_stats s = stats_of(x->c);
    int loads = 0;
    for (int i = 0; i < N_PATHS; i++)
        loads += x->loads[i];
    printf("    %s: %llu gets: %llu hits, %llu loads, %llu waits, %llu evictions, %llu stale; per path:",
           name, (unsigned long long)gets, (unsigned long long)s.hits, (unsigned long long)s.loads,
           (unsigned long long)s.waits, (unsigned long long)s.evictions, (unsigned long long)s.stale);
    for (int i = 0; i < N_PATHS; i++)
        printf(" %d", x->loads[i]);
    printf("\n");
    CHECK_EQ_INT(errors, 0);
    CHECK_MSG(x->violations == 0, "%d violations, first: %s", x->violations, x->first_violation);
    CHECK_EQ_INT(s.hits + s.misses, gets);
    CHECK_EQ_INT(s.misses, s.loads + s.waits);
    CHECK_EQ_INT(s.loads, loads);
    CHECK_EQ_INT(s.load_failures, 0);
    /* every load entered the cache and left it by eviction or staleness, or is still there */
    CHECK_EQ_INT(s.loads, s.evictions + s.stale + s.entries);
    CHECK_EQ_INT(s.in_use, 0);
    CHECK(s.entries <= max_entries);
    if (!touch) CHECK_EQ_INT(s.stale, 0);
    if (max_entries >= N_PATHS && !touch) /* nothing ever evicted: each path loaded exactly once */
        for (int i = 0; i < N_PATHS; i++)
            CHECK_EQ_INT(x->loads[i], 1);
    size_t sum = 0;
    for (int i = 0; i < N_PATHS; i++)
        if (x->resident[i]) sum += x->bytes[i];
    if (!touch) CHECK_EQ_INT(s.bytes, sum);
    sdxl_lora_cache_free(x->c);
out:
    free(x);
    fx_close(&f);
}

TEST(lora_cache_concurrent_small_cache) {
    run_concurrent("conc_small", 2, 300, false);
}
TEST(lora_cache_concurrent_all_fit) {
    run_concurrent("conc_fit", N_PATHS, 200, false);
}
TEST(lora_cache_concurrent_files_touched) {
    run_concurrent("conc_touch", 3, 200, true);
}

/* 8 threads ask at once for a file that fails (malformed; then one whose
 * loaded bytes are too large): every one gets the error and its message,
 * whether it ran the load or waited for another's. */
typedef struct shared_err {
    sdxl_lora_cache *c;
    const char *path;
    pthread_barrier_t start;
    sdxl_status st[N_THREADS];
    sdxl_error err[N_THREADS];
    sdxl_lora_load_info info[N_THREADS];
    sdxl_lora_handle *h[N_THREADS];
    int t_next; /* atomic */
} shared_err;

static void *shared_err_worker(void *p) {
    shared_err *x = p;
    int t = __atomic_fetch_add(&x->t_next, 1, __ATOMIC_RELAXED);
    pthread_barrier_wait(&x->start);
    x->st[t] = sdxl_lora_cache_get(x->c, x->path, &x->h[t], &x->info[t], &x->err[t]);
    return NULL;
}

static void run_shared(shared_err *x) {
    x->t_next = 0;
    memset(x->h, 0, sizeof x->h);
    pthread_barrier_init(&x->start, NULL, N_THREADS);
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        pthread_create(&th[t], NULL, shared_err_worker, x);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&x->start);
}

TEST(lora_cache_concurrent_shared_error) {
    fixture f;
    if (!fx_open(&f, "conc_err")) return;
    char bad[1024], big[1024];
    const char garbage[] = "\x10\x00\x00\x00\x00\x00\x00\x00{not json at all";
    if (!join(bad, sizeof bad, f.dir, "bad.safetensors") ||
        !copy_in(&f, "loha_kohya.safetensors", "big.safetensors", big, sizeof big))
        goto out;
    CHECK(write_file(bad, garbage, sizeof garbage - 1));
    size_t b = adapter_bytes_of(&f, big);
    sdxl_lora_cache_params p = params(4, b - 1); /* the file fits, the adapter does not */
    shared_err *x = calloc(1, sizeof *x);
    sdxl_error err = {0};
    if (!x || sdxl_lora_cache_create(&p, f.naming, &x->c, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "create: %s", err.msg);
        free(x);
        goto out;
    }
    sdxl_mem_stats m0, m1;
    sdxl_mem_get_stats(&m0);
    const char *paths[2] = {bad, big};
    for (int k = 0; k < 2; k++) {
        x->path = paths[k];
        run_shared(x);
        int waited = 0;
        for (int t = 0; t < N_THREADS; t++) {
            CHECK_EQ_INT(x->st[t], k == 0 ? SDXL_STATUS_BAD_INPUT : SDXL_STATUS_OUT_OF_MEMORY);
            CHECK(x->h[t] == NULL);
            CHECK_MSG(strcmp(x->err[t].msg, x->err[0].msg) == 0 && strstr(x->err[t].msg, paths[k]),
                      "'%s' vs '%s'", x->err[t].msg, x->err[0].msg);
            CHECK(x->info[t].too_large == (k == 1));
            waited += x->info[t].waited;
        }
        sdxl_lora_cache_stats s = stats_of(x->c);
        printf("    %s: %llu loads, %llu waits\n", k ? "too large" : "malformed", (unsigned long long)s.loads,
               (unsigned long long)s.waits);
        CHECK_EQ_INT(s.loads + s.waits, (uint64_t)N_THREADS * (k + 1));
        CHECK_EQ_INT(s.load_failures, s.loads);
        CHECK_EQ_INT(s.entries, 0);
        CHECK_EQ_INT(s.in_use, 0);
        if (k == 1) CHECK_EQ_INT(s.too_large, N_THREADS);
        (void)waited;
    }
    sdxl_mem_get_stats(&m1);
    CHECK_EQ_INT(m1.live_bytes, m0.live_bytes);
    sdxl_lora_cache_free(x->c);
    free(x);
out:
    fx_close(&f);
}

/* Caching disabled, 8 threads at once on one path: overlapping gets share a
 * load (one load per file at a time), nothing is kept, the last release of
 * each load frees it. */
TEST(lora_cache_concurrent_disabled) {
    fixture f;
    if (!fx_open(&f, "conc_off")) return;
    char pa[1024];
    if (!copy_in(&f, "lora_a_kohya.safetensors", "a.safetensors", pa, sizeof pa)) goto out;
    sdxl_lora_cache_params p = sdxl_lora_cache_default_params();
    p.enabled = false;
    shared_err *x = calloc(1, sizeof *x);
    sdxl_error err = {0};
    if (!x || sdxl_lora_cache_create(&p, f.naming, &x->c, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "create: %s", err.msg);
        free(x);
        goto out;
    }
    sdxl_mem_stats m0, m1;
    sdxl_mem_get_stats(&m0);
    x->path = pa;
    for (int round = 0; round < 4; round++) {
        run_shared(x);
        for (int t = 0; t < N_THREADS; t++) {
            CHECK_EQ_INT(x->st[t], SDXL_STATUS_OK);
            CHECK(!x->info[t].hit);
            /* handles that share an adapter come from one load: one loader, the rest waited */
        }
        for (int t = 0; t < N_THREADS; t++) {
            int same = 0;
            for (int u = 0; u < N_THREADS; u++)
                same += x->h[u] && x->h[u] == x->h[t];
            if (x->h[t] && same > 1) {
                int waited = 0;
                for (int u = 0; u < N_THREADS; u++)
                    waited += x->h[u] == x->h[t] && x->info[u].waited;
                CHECK_EQ_INT(waited, same - 1);
            }
        }
        for (int t = 0; t < N_THREADS; t++)
            sdxl_lora_cache_release(x->c, x->h[t]);
    }
    sdxl_lora_cache_stats s = stats_of(x->c);
    printf("    disabled: %llu gets, %llu loads, %llu waits\n", (unsigned long long)(s.hits + s.misses),
           (unsigned long long)s.loads, (unsigned long long)s.waits);
    CHECK_EQ_INT(s.hits, 0);
    CHECK_EQ_INT(s.loads + s.waits, 4 * N_THREADS);
    CHECK_EQ_INT(s.entries, 0);
    CHECK_EQ_INT(s.in_use, 0);
    sdxl_mem_get_stats(&m1);
    CHECK_EQ_INT(m1.live_bytes, m0.live_bytes);
    sdxl_lora_cache_free(x->c);
    free(x);
out:
    fx_close(&f);
}
