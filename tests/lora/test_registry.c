/* Tests of lora/registry: discovery over a tree built here (the seed's
 * styles/characters/lighting folders, nested folders, hidden files, a second
 * root with a configured category, name collisions, a symlink leaving the
 * tree, symlink loops, a broken file), metadata and adapter-kind picks, the
 * resolution rules and their refusals, suggestions on a miss, the
 * miss -> rescan path and its rate limit, in-place modification and removal,
 * hashes against an independent SHA-256 of the file bytes and a known
 * constant, allocation failures, and concurrent resolution during refreshes
 * and file drops (run it under ThreadSanitizer: -DSDXL_TSAN=ON). */
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
#include "io/safetensors.h"
#include "io/sha256.h"
#include "lora/registry.h"
#include "test.h"

/* REQUIRE_OK(expr, &err) trips -Waddress in test.h; go through a pointer. */
#define REQUIRE_ST(expr, errp)                                                                               \
    do {                                                                                                     \
        sdxl_error *ep_ = (errp);                                                                            \
        REQUIRE_OK(expr, ep_);                                                                               \
    } while (0)

/* ---- building trees ------------------------------------------------------- */

static void path_join(char *out, size_t n, const char *a, const char *b) {
    /* a/b, truncated (memcpy: no format-truncation diagnostics) */
    size_t la = strnlen(a, n - 1), lb;
    memcpy(out, a, la);
    if (la + 1 < n) out[la++] = '/';
    lb = strnlen(b, n - 1 - la);
    memcpy(out + la, b, lb);
    out[la + lb] = 0;
}

/* mkdir -p of base/rel's folders (rel's last component is a file). */
static void mkdirs_for(const char *base, const char *rel) {
    char p[1024];
    path_join(p, sizeof p, base, rel);
    for (char *s = p + strlen(base) + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
}

static bool write_bytes(const char *base, const char *rel, const void *data, size_t n) {
    mkdirs_for(base, rel);
    char p[1024];
    path_join(p, sizeof p, base, rel);
    FILE *f = fopen(p, "wb");
    if (!f) return false;
    bool ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return s;
}

/* A small adapter file of the given kind, rank 4 unless said, data varied by
 * `salt`; meta: NULL or "k", "v", ..., NULL. */
static bool write_lora(const char *base, const char *rel, const char *kind, int64_t rank, float salt,
                       const char *const *meta) {
    static float d[2][8 * 8 * 9];
    for (int i = 0; i < 8 * 8 * 9; i++)
        d[0][i] = d[1][i] = (float)i * 0.01f + salt;
    int64_t down2[2] = {rank, 8}, up2[2] = {8, rank}, down4[4] = {rank, 8, 3, 3};
    sdxl_st_write_entry e[3];
    size_t n = 0;
    if (strcmp(kind, "lora") == 0 || strcmp(kind, "locon") == 0) {
        bool conv = kind[2] == 'c';
        e[n++] = (sdxl_st_write_entry){"lora_unet_a.lora_down.weight", SDXL_ST_F32, conv ? 4 : 2,
                                       conv ? down4 : down2, d[0]};
        e[n++] = (sdxl_st_write_entry){"lora_unet_a.lora_up.weight", SDXL_ST_F32, 2, up2, d[1]};
        e[n++] = (sdxl_st_write_entry){"lora_unet_a.alpha", SDXL_ST_F32, 0, NULL, d[1]};
    } else if (strcmp(kind, "loha") == 0) {
        e[n++] = (sdxl_st_write_entry){"lora_unet_a.hada_w1_a", SDXL_ST_F32, 2, up2, d[0]};
    } else if (strcmp(kind, "peft") == 0) {
        e[n++] = (sdxl_st_write_entry){"unet.a.lora_A.weight", SDXL_ST_F32, 2, down2, d[0]};
        e[n++] = (sdxl_st_write_entry){"unet.a.lora_B.weight", SDXL_ST_F32, 2, up2, d[1]};
    } else {
        e[n++] = (sdxl_st_write_entry){"lora_unet_a.diff", SDXL_ST_F32, 2, up2, d[0]};
    }
    mkdirs_for(base, rel);
    char p[1024];
    path_join(p, sizeof p, base, rel);
    sdxl_error err;
    return sdxl_st_write(p, e, n, meta, &err) == SDXL_STATUS_OK;
}

/* clang-format off */
static const char *k_meta_anime[] = {
    "ss_output_name", "AnimeStyle",
    "ss_base_model_version", "sdxl_base_v1-0",
    "ss_network_module", "networks.lora",
    "ss_network_dim", "4",
    "ss_network_alpha", "2.0",
    "ss_tag_frequency", "{\"ds1\": {\" anime\": 10, \"girl\": 5, \"1girl\": 1}, \"ds2\": {\"anime\": 3, \"sky\": 5}}",
    NULL};
/* clang-format on */

typedef struct tree {
    char base[512];    /* holds root/, root2/, outside/ */
    char root[600];    /* categories from sub-folders */
    char root2[600];   /* configured category "Concepts" */
    char outside[600]; /* not configured */
} tree;

/* The layout every test starts from:
 *   root/styles/anime_style_v2.safetensors    (kohya metadata, lora)
 *   root/styles/watercolor.pt                 ("abc": a pickle by extension)
 *   root/styles/nested/deep/ink_wash.safetensors
 *   root/styles/readme.txt, root/styles/.hidden.safetensors, root/.hidden/secret.safetensors  (skipped)
 *   root/styles/escape.safetensors -> outside/evil.safetensors   (leaves the tree)
 *   root/styles/outside_dir -> outside/                          (folder leaving the tree)
 *   root/styles/alias.safetensors -> ../lighting/dramatic_lighting.safetensors (inside: accepted)
 *   root/loop -> .   root/styles/back -> ..                      (loops)
 *   root/styles/cyc1.safetensors <-> cyc2.safetensors            (a link cycle)
 *   root/characters/girl_character_lora.safetensors (locon), shared_name.safetensors (loha)
 *   root/lighting/dramatic_lighting.safetensors, shared_name.safetensors (peft), Golden_Hour.safetensors
 *   root/broken.safetensors (garbage), root/UPPER.SAFETENSORS, root/full.SafeTensors
 *   root2/concept_a.safetensors, root2/shared_name.safetensors
 *   outside/evil.safetensors, outside/x.safetensors */
static bool make_tree(tree *t, const char *label) {
    snprintf(t->base, sizeof t->base, "%s/lora_registry_%s", sdxl_test_tmpdir(), label);
    snprintf(t->root, sizeof t->root, "%s/root", t->base);
    snprintf(t->root2, sizeof t->root2, "%s/root2", t->base);
    snprintf(t->outside, sizeof t->outside, "%s/outside", t->base);
    mkdir(t->base, 0755);
    mkdir(t->root, 0755);
    mkdir(t->root2, 0755);
    mkdir(t->outside, 0755);
    bool ok = true;
    ok &= write_lora(t->root, "styles/anime_style_v2.safetensors", "lora", 4, 0, k_meta_anime);
    ok &= write_bytes(t->root, "styles/watercolor.pt", "abc", 3);
    ok &= write_lora(t->root, "styles/nested/deep/ink_wash.safetensors", "lora", 8, 1, NULL);
    ok &= write_bytes(t->root, "styles/readme.txt", "hello", 5);
    ok &= write_lora(t->root, "styles/.hidden.safetensors", "lora", 4, 2, NULL);
    ok &= write_lora(t->root, ".hidden/secret.safetensors", "lora", 4, 3, NULL);
    ok &= write_lora(t->root, "characters/girl_character_lora.safetensors", "locon", 16, 4, NULL);
    ok &= write_lora(t->root, "characters/shared_name.safetensors", "loha", 4, 5, NULL);
    ok &= write_lora(t->root, "lighting/dramatic_lighting.safetensors", "lora", 4, 6, NULL);
    ok &= write_lora(t->root, "lighting/shared_name.safetensors", "peft", 4, 7, NULL);
    ok &= write_lora(t->root, "lighting/Golden_Hour.safetensors", "lora", 4, 8, NULL);
    ok &= write_bytes(t->root, "broken.safetensors", "\xff\xff\xff\xff\xff\xff\xff\x7f garbage", 16);
    ok &= write_lora(t->root, "UPPER.SAFETENSORS", "lora", 4, 9, NULL);
    ok &= write_lora(t->root, "full.SafeTensors", "full", 4, 10, NULL);
    ok &= write_lora(t->root2, "concept_a.safetensors", "lora", 4, 11, NULL);
    ok &= write_lora(t->root2, "shared_name.safetensors", "lora", 4, 12, NULL);
    ok &= write_lora(t->outside, "evil.safetensors", "lora", 4, 13, NULL);
    ok &= write_lora(t->outside, "x.safetensors", "lora", 4, 14, NULL);
    char p[1024], q[1024];
    snprintf(p, sizeof p, "%s/styles/escape.safetensors", t->root);
    snprintf(q, sizeof q, "%s/evil.safetensors", t->outside);
    ok &= symlink(q, p) == 0;
    snprintf(p, sizeof p, "%s/styles/outside_dir", t->root);
    ok &= symlink(t->outside, p) == 0;
    snprintf(p, sizeof p, "%s/styles/alias.safetensors", t->root);
    ok &= symlink("../lighting/dramatic_lighting.safetensors", p) == 0;
    snprintf(p, sizeof p, "%s/loop", t->root);
    ok &= symlink(".", p) == 0;
    snprintf(p, sizeof p, "%s/styles/back", t->root);
    ok &= symlink("..", p) == 0;
    snprintf(p, sizeof p, "%s/styles/cyc1.safetensors", t->root);
    ok &= symlink("cyc2.safetensors", p) == 0;
    snprintf(p, sizeof p, "%s/styles/cyc2.safetensors", t->root);
    ok &= symlink("cyc1.safetensors", p) == 0;
    return ok;
}

static sdxl_status open_tree(const tree *t, int64_t interval_ms, sdxl_lora_registry **reg, sdxl_error *err) {
    sdxl_lora_dir dirs[2] = {{t->root, NULL}, {t->root2, "Concepts"}};
    sdxl_lora_registry_params p = sdxl_lora_registry_default_params();
    p.min_rescan_interval_ms = interval_ms;
    return sdxl_lora_registry_create(dirs, 2, &p, reg, err);
}

/* Entry by relative path and root; false if absent. */
static bool find_rel(sdxl_lora_registry *reg, size_t root, const char *rel, sdxl_lora_info *out) {
    size_t n = sdxl_lora_registry_count(reg);
    for (size_t i = 0; i < n; i++) {
        sdxl_error err;
        if (sdxl_lora_registry_get(reg, i, out, &err) != SDXL_STATUS_OK) return false;
        if (out->root == root && strcmp(out->rel_path, rel) == 0) return true;
    }
    return false;
}

static bool has_name(sdxl_lora_registry *reg, const char *name) {
    size_t n = sdxl_lora_registry_count(reg);
    static sdxl_lora_info info;
    for (size_t i = 0; i < n; i++) {
        sdxl_error err;
        if (sdxl_lora_registry_get(reg, i, &info, &err) == SDXL_STATUS_OK && strcmp(info.name, name) == 0)
            return true;
    }
    return false;
}

/* Resolve and return the status; *res filled. */
static sdxl_status res(sdxl_lora_registry *reg, const char *name, const char *cat, sdxl_lora_resolution *r,
                       sdxl_error *err) {
    return sdxl_lora_registry_resolve(reg, name, cat, r, err);
}

static void bump_mtime(const char *path, int64_t seconds) {
    struct stat sb;
    if (stat(path, &sb) != 0) return;
    struct timespec ts[2] = {sb.st_atim, sb.st_mtim};
    ts[1].tv_sec += seconds;
    utimensat(AT_FDCWD, path, ts, 0);
}

/* ---- discovery ------------------------------------------------------------- */

TEST(lora_registry_category_rule) {
    char b[64];
    CHECK(strcmp(sdxl_lora_category_normalize("styles", b, sizeof b), "style") == 0);
    CHECK(strcmp(sdxl_lora_category_normalize("Characters", b, sizeof b), "character") == 0);
    CHECK(strcmp(sdxl_lora_category_normalize("lighting", b, sizeof b), "lighting") == 0);
    CHECK(strcmp(sdxl_lora_category_normalize("concepts", b, sizeof b), "concept") == 0);
    CHECK(strcmp(sdxl_lora_category_normalize("Class", b, sizeof b), "class") == 0); /* "ss" stays */
    CHECK(strcmp(sdxl_lora_category_normalize("s", b, sizeof b), "s") == 0);
    CHECK(strcmp(sdxl_lora_category_normalize("style", b, sizeof b), "style") == 0);
    CHECK(strcmp(sdxl_lora_category_normalize(NULL, b, sizeof b), "") == 0);
}

TEST(lora_registry_discovery) {
    tree t;
    REQUIRE(make_tree(&t, "discovery"));
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(open_tree(&t, 1000, &reg, &err), &err);
    static sdxl_lora_info in;

    /* what is in, what is out */
    const struct {
        size_t root;
        const char *rel, *name, *category;
    } want[] = {
        {0, "UPPER.SAFETENSORS", "UPPER", ""},
        {0, "broken.safetensors", "broken", ""},
        {0, "characters/girl_character_lora.safetensors", "girl_character_lora", "character"},
        {0, "characters/shared_name.safetensors", "shared_name", "character"},
        {0, "full.SafeTensors", "full", ""},
        {0, "lighting/Golden_Hour.safetensors", "Golden_Hour", "lighting"},
        {0, "lighting/dramatic_lighting.safetensors", "dramatic_lighting", "lighting"},
        {0, "lighting/shared_name.safetensors", "shared_name", "lighting"},
        {0, "styles/alias.safetensors", "alias", "style"},
        {0, "styles/anime_style_v2.safetensors", "anime_style_v2", "style"},
        {0, "styles/nested/deep/ink_wash.safetensors", "ink_wash", "style"},
        {0, "styles/watercolor.pt", "watercolor", "style"},
        {1, "concept_a.safetensors", "concept_a", "concept"},
        {1, "shared_name.safetensors", "shared_name", "concept"},
    };
    size_t nw = sizeof want / sizeof *want;
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), nw);
    for (size_t i = 0; i < nw; i++) {
        CHECK_MSG(find_rel(reg, want[i].root, want[i].rel, &in), "%s not indexed", want[i].rel);
        CHECK_MSG(strcmp(in.name, want[i].name) == 0, "%s: name %s", want[i].rel, in.name);
        CHECK_MSG(strcmp(in.category, want[i].category) == 0, "%s: category '%s'", want[i].rel, in.category);
        CHECK(in.path[0] == '/');
    }
    /* ordered by root, then relative path */
    static sdxl_lora_info prev;
    for (size_t i = 0; i < sdxl_lora_registry_count(reg); i++) {
        REQUIRE_ST(sdxl_lora_registry_get(reg, i, &in, &err), &err);
        if (i) CHECK(prev.root < in.root || (prev.root == in.root && strcmp(prev.rel_path, in.rel_path) < 0));
        prev = in;
    }
    CHECK_EQ_INT(sdxl_lora_registry_get(reg, 999, &in, &err), SDXL_STATUS_NOT_FOUND);
    CHECK(!has_name(reg, "readme") && !has_name(reg, ".hidden") && !has_name(reg, "secret"));
    CHECK(!has_name(reg, "escape") && !has_name(reg, "evil") && !has_name(reg, "x"));
    CHECK(!has_name(reg, "cyc1") && !has_name(reg, "cyc2"));

    /* metadata picks */
    REQUIRE(find_rel(reg, 0, "styles/anime_style_v2.safetensors", &in));
    CHECK(strcmp(in.container, "safetensors") == 0);
    CHECK(strcmp(in.output_name, "AnimeStyle") == 0);
    CHECK(strcmp(in.base_model, "sdxl_base_v1-0") == 0);
    CHECK(strcmp(in.network_module, "networks.lora") == 0);
    CHECK_EQ_INT(in.network_dim, 4);
    CHECK_NEAR(in.network_alpha, 2.0, 0);
    CHECK(strcmp(in.adapter, "lora") == 0);
    CHECK_EQ_INT(in.rank, 4);
    CHECK(in.error[0] == 0);
    CHECK(in.short_hash[0] == 0 && in.sha256[0] == 0); /* lazily computed */
    /* " anime" 10 + "anime" 3 = 13; girl 5 and sky 5 by name; 1girl 1 */
    REQUIRE(in.n_triggers == 4);
    CHECK(strcmp(in.triggers[0], "anime") == 0);
    CHECK(strcmp(in.triggers[1], "girl") == 0);
    CHECK(strcmp(in.triggers[2], "sky") == 0);
    CHECK(strcmp(in.triggers[3], "1girl") == 0);
    struct stat sb;
    REQUIRE(stat(in.path, &sb) == 0);
    CHECK_EQ_INT(in.size, sb.st_size);
    CHECK_EQ_INT(in.mtime_ns, (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec);

    /* adapter kinds and ranks */
    REQUIRE(find_rel(reg, 0, "characters/girl_character_lora.safetensors", &in));
    CHECK(strcmp(in.adapter, "locon") == 0);
    CHECK_EQ_INT(in.rank, 16);
    REQUIRE(find_rel(reg, 0, "characters/shared_name.safetensors", &in));
    CHECK(strcmp(in.adapter, "loha") == 0);
    REQUIRE(find_rel(reg, 0, "lighting/shared_name.safetensors", &in));
    CHECK(strcmp(in.adapter, "lora (peft)") == 0);
    CHECK_EQ_INT(in.rank, 4);
    REQUIRE(find_rel(reg, 0, "full.SafeTensors", &in));
    CHECK(strcmp(in.adapter, "full") == 0);
    CHECK(strcmp(in.container, "safetensors") == 0);
    REQUIRE(find_rel(reg, 0, "styles/nested/deep/ink_wash.safetensors", &in));
    CHECK_EQ_INT(in.rank, 8);
    CHECK(in.n_triggers == 0 && in.output_name[0] == 0);
    REQUIRE(find_rel(reg, 0, "styles/watercolor.pt", &in));
    CHECK(strcmp(in.container, "pytorch") == 0);
    CHECK(strcmp(in.adapter, "?") == 0);
    CHECK_EQ_INT(in.size, 3);

    /* a broken file is listed, with the reason */
    REQUIRE(find_rel(reg, 0, "broken.safetensors", &in));
    CHECK(strstr(in.error, "header length") == in.error); /* the reason, without the path again */
    CHECK(strcmp(in.adapter, "unknown") == 0);

    /* a link inside the tree: its own name, the target's canonical path */
    static sdxl_lora_info tgt;
    REQUIRE(find_rel(reg, 0, "styles/alias.safetensors", &in));
    REQUIRE(find_rel(reg, 0, "lighting/dramatic_lighting.safetensors", &tgt));
    CHECK(strcmp(in.path, tgt.path) == 0);
    CHECK(strstr(in.path, "/root/lighting/dramatic_lighting.safetensors") != NULL);

    /* nothing changed: a refresh reports 0 changes and keeps the generation */
    uint64_t g = sdxl_lora_registry_generation(reg);
    size_t changes = 99;
    REQUIRE_ST(sdxl_lora_registry_refresh(reg, true, &changes, &err), &err);
    CHECK_EQ_INT(changes, 0);
    CHECK_EQ_INT(sdxl_lora_registry_generation(reg), g);
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), nw);
    sdxl_lora_registry_free(reg);
    sdxl_lora_registry_free(NULL);
}

TEST(lora_registry_missing_root_appears_later) {
    char base[512], later[600];
    snprintf(base, sizeof base, "%s/lora_registry_missing", sdxl_test_tmpdir());
    mkdir(base, 0755);
    snprintf(later, sizeof later, "%s/later", base);
    sdxl_lora_dir d = {later, "style"};
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(sdxl_lora_registry_create(&d, 1, NULL, &reg, &err), &err);
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), 0);
    mkdir(later, 0755);
    REQUIRE(write_lora(later, "sub/late.safetensors", "lora", 4, 0, NULL));
    size_t changes = 0;
    REQUIRE_ST(sdxl_lora_registry_refresh(reg, true, &changes, &err), &err);
    CHECK_EQ_INT(changes, 1);
    static sdxl_lora_info in;
    REQUIRE(find_rel(reg, 0, "sub/late.safetensors", &in));
    CHECK(strcmp(in.category, "style") == 0); /* configured category wins over the folder */
    sdxl_lora_registry_free(reg);

    /* argument checks */
    CHECK_EQ_INT(sdxl_lora_registry_create(&d, 1, NULL, NULL, &err), SDXL_STATUS_INVALID_ARG);
    sdxl_lora_dir empty = {"", NULL};
    reg = (sdxl_lora_registry *)1;
    CHECK_EQ_INT(sdxl_lora_registry_create(&empty, 1, NULL, &reg, &err), SDXL_STATUS_INVALID_ARG);
    CHECK(reg == NULL);
    sdxl_lora_registry_params p = {.min_rescan_interval_ms = -1};
    CHECK_EQ_INT(sdxl_lora_registry_create(&d, 1, &p, &reg, &err), SDXL_STATUS_INVALID_ARG);
    REQUIRE_ST(sdxl_lora_registry_create(NULL, 0, NULL, &reg, &err), &err);
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), 0);
    sdxl_lora_resolution *r = malloc(sizeof *r);
    CHECK_EQ_INT(res(reg, "anything", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    free(r);
    sdxl_lora_registry_free(reg);
}

/* An unreadable file is listed with the reason (meaningless as root, who
 * reads anything: then only the listing is checked). */
TEST(lora_registry_unreadable_file_listed) {
    char base[512];
    snprintf(base, sizeof base, "%s/lora_registry_unreadable", sdxl_test_tmpdir());
    mkdir(base, 0755);
    REQUIRE(write_bytes(base, "styles/locked.pt", "abc", 3));
    REQUIRE(write_lora(base, "styles/locked2.safetensors", "lora", 4, 0, NULL));
    char p1[1024], p2[1024];
    path_join(p1, sizeof p1, base, "styles/locked.pt");
    path_join(p2, sizeof p2, base, "styles/locked2.safetensors");
    chmod(p1, 0);
    chmod(p2, 0);
    sdxl_lora_dir d = {base, NULL};
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(sdxl_lora_registry_create(&d, 1, NULL, &reg, &err), &err);
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), 2);
    static sdxl_lora_info in;
    REQUIRE(find_rel(reg, 0, "styles/locked.pt", &in));
    if (geteuid() != 0) CHECK(strstr(in.error, "cannot open") != NULL);
    REQUIRE(find_rel(reg, 0, "styles/locked2.safetensors", &in));
    if (geteuid() != 0) CHECK(in.error[0] != 0);
    sdxl_lora_registry_free(reg);
    chmod(p1, 0644);
    chmod(p2, 0644);
}

/* Folders deeper than SDXL_LORA_MAX_DEPTH below a root are not walked. */
TEST(lora_registry_depth_cap) {
    char base[512], rel[1024] = "";
    snprintf(base, sizeof base, "%s/lora_registry_depth", sdxl_test_tmpdir());
    mkdir(base, 0755);
    for (int k = 1; k <= SDXL_LORA_MAX_DEPTH + 1; k++) {
        snprintf(rel + strlen(rel), sizeof rel - strlen(rel), "d%d/", k);
        char f[1100];
        snprintf(f, sizeof f, "%sat_%d.pt", rel, k);
        REQUIRE(write_bytes(base, f, "abc", 3));
    }
    sdxl_lora_dir d = {base, NULL};
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    sdxl_log_level lvl = sdxl_log_get_level();
    sdxl_log_set_level(SDXL_LOG_ERROR); /* the cap's warning */
    REQUIRE_ST(sdxl_lora_registry_create(&d, 1, NULL, &reg, &err), &err);
    sdxl_log_set_level(lvl);
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), SDXL_LORA_MAX_DEPTH);
    CHECK(has_name(reg, "at_32") && !has_name(reg, "at_33"));
    sdxl_lora_registry_free(reg);
}

/* ---- resolution -------------------------------------------------------------- */

TEST(lora_registry_resolve_rules) {
    tree t;
    REQUIRE(make_tree(&t, "rules"));
    char lp[1024];
    snprintf(lp, sizeof lp, "%s/characters/dramatic_lighting.safetensors", t.root);
    REQUIRE(symlink("../lighting/dramatic_lighting.safetensors", lp) == 0);
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(open_tree(&t, 1000, &reg, &err), &err);
    sdxl_lora_resolution *r = malloc(sizeof *r);
    REQUIRE(r);

    /* 1. exact stem; the file name with its extension */
    REQUIRE_ST(res(reg, "anime_style_v2", NULL, r, &err), &err);
    CHECK_EQ_INT(r->match, SDXL_LORA_MATCH_EXACT);
    CHECK(strcmp(r->entry.rel_path, "styles/anime_style_v2.safetensors") == 0);
    CHECK(r->warning[0] == 0 && r->n_candidates == 1 && !r->rescanned);
    REQUIRE_ST(res(reg, "watercolor.pt", NULL, r, &err), &err);
    CHECK_EQ_INT(r->match, SDXL_LORA_MATCH_EXACT);
    CHECK(strcmp(r->entry.name, "watercolor") == 0);
    /* 2. case-insensitive */
    REQUIRE_ST(res(reg, "golden_hour", NULL, r, &err), &err);
    CHECK_EQ_INT(r->match, SDXL_LORA_MATCH_CASE_INSENSITIVE);
    CHECK(strcmp(r->entry.name, "Golden_Hour") == 0);
    REQUIRE_ST(res(reg, "upper", NULL, r, &err), &err);
    CHECK(strcmp(r->entry.rel_path, "UPPER.SAFETENSORS") == 0);
    /* 3. category/name: folder spelling or category spelling */
    REQUIRE_ST(res(reg, "styles/anime_style_v2", NULL, r, &err), &err);
    CHECK_EQ_INT(r->match, SDXL_LORA_MATCH_CATEGORY_NAME);
    REQUIRE_ST(res(reg, "style/anime_style_v2", NULL, r, &err), &err);
    CHECK_EQ_INT(r->match, SDXL_LORA_MATCH_CATEGORY_NAME);
    REQUIRE_ST(res(reg, "style/ink_wash", NULL, r, &err), &err); /* nested: category from the first folder */
    CHECK(strcmp(r->entry.rel_path, "styles/nested/deep/ink_wash.safetensors") == 0);
    REQUIRE_ST(res(reg, "concept/shared_name", NULL, r, &err), &err);
    CHECK_EQ_INT(r->entry.root, 1);
    CHECK(r->warning[0] == 0);
    /* 4. relative path, with or without extension, any case; "." and "//" ignored */
    REQUIRE_ST(res(reg, "styles/nested/deep/ink_wash", NULL, r, &err), &err);
    CHECK_EQ_INT(r->match, SDXL_LORA_MATCH_REL_PATH);
    REQUIRE_ST(res(reg, "styles/nested/deep/ink_wash.safetensors", NULL, r, &err), &err);
    CHECK_EQ_INT(r->match, SDXL_LORA_MATCH_REL_PATH);
    REQUIRE_ST(res(reg, "Styles/Nested/deep/INK_WASH", NULL, r, &err), &err);
    CHECK_EQ_INT(r->match, SDXL_LORA_MATCH_REL_PATH);
    REQUIRE_ST(res(reg, "./styles//./nested/deep/ink_wash", NULL, r, &err), &err);
    CHECK(strcmp(r->entry.name, "ink_wash") == 0);

    /* collisions: the category decides */
    REQUIRE_ST(res(reg, "shared_name", "lighting", r, &err), &err);
    CHECK(strcmp(r->entry.rel_path, "lighting/shared_name.safetensors") == 0);
    CHECK(r->warning[0] == 0);
    REQUIRE_ST(res(reg, "shared_name", "Characters", r, &err), &err);
    CHECK(strcmp(r->entry.rel_path, "characters/shared_name.safetensors") == 0);
    REQUIRE_ST(res(reg, "shared_name", "concept", r, &err), &err);
    CHECK_EQ_INT(r->entry.root, 1);
    /* without one: earliest root, fewest folders, safetensors, path order; a warning names them all */
    REQUIRE_ST(res(reg, "shared_name", NULL, r, &err), &err);
    CHECK_EQ_INT(r->entry.root, 0);
    CHECK(strcmp(r->entry.rel_path, "characters/shared_name.safetensors") == 0);
    CHECK_EQ_INT(r->n_candidates, 3);
    CHECK(strstr(r->warning, "matches 3 files") != NULL);
    CHECK(strstr(r->warning, "characters/shared_name.safetensors") != NULL);
    CHECK(strstr(r->warning, "lighting/shared_name.safetensors") != NULL);
    CHECK(strstr(r->warning, "concept") != NULL);
    /* a category the name is not in: found anyway, with a warning */
    REQUIRE_ST(res(reg, "anime_style_v2", "lighting", r, &err), &err);
    CHECK(strcmp(r->entry.category, "style") == 0);
    CHECK(strstr(r->warning, "no match in category \"lighting\"") != NULL);
    /* the name's category overrides the request's, with a warning */
    REQUIRE_ST(res(reg, "lighting/shared_name", "character", r, &err), &err);
    CHECK(strcmp(r->entry.rel_path, "lighting/shared_name.safetensors") == 0);
    CHECK(strstr(r->warning, "the name's category \"lighting\" overrides \"character\"") != NULL);
    CHECK(strstr(r->warning, "no match in category") == NULL); /* one warning, not two */
    /* a link and its target are the same file: no collision warning */
    REQUIRE_ST(res(reg, "dramatic_lighting", NULL, r, &err), &err);
    CHECK_EQ_INT(r->n_candidates, 2);
    CHECK(strcmp(r->entry.rel_path, "characters/dramatic_lighting.safetensors") == 0); /* path order */
    CHECK(r->warning[0] == 0);
    /* a broken file resolves (the loader reports it), with its error */
    REQUIRE_ST(res(reg, "broken", NULL, r, &err), &err);
    CHECK(r->entry.error[0] != 0);

    free(r);
    sdxl_lora_registry_free(reg);
}

TEST(lora_registry_refusals) {
    tree t;
    REQUIRE(make_tree(&t, "refusals"));
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(open_tree(&t, 1000, &reg, &err), &err);
    sdxl_lora_resolution *r = malloc(sizeof *r);
    REQUIRE(r);
    const struct {
        const char *name, *why;
    } bad[] = {
        {"../../etc/passwd", "\"..\""},
        {"/etc/passwd", "absolute"},
        {"styles/../../x", "\"..\""},
        {"styles/..", "\"..\""},
        {"..", "\"..\""},
        {"a\x01"
         "b",
         "control character"},
        {"tab\tname", "control character"},
        {"del\x7f", "control character"},
        {"bad\xff"
         "utf8",
         "UTF-8"},
        {"over\xc0\xaf"
         "long",
         "UTF-8"},
        {"", "empty"},
        {"./.", "names no file"},
        {"styles/escape", "outside the LoRA directories"},
        {"escape.safetensors", "outside the LoRA directories"},
        {"styles/outside_dir/x", "outside the LoRA directories"},
        {"styles/cyc1", "dangling"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sdxl_status st = res(reg, bad[i].name, NULL, r, &err);
        CHECK_MSG(st == SDXL_STATUS_INVALID_ARG, "\"%s\": status %s: %s", bad[i].name, sdxl_status_str(st),
                  err.msg);
        CHECK_MSG(strstr(err.msg, bad[i].why) != NULL, "\"%s\": message \"%s\" lacks \"%s\"", bad[i].name,
                  err.msg, bad[i].why);
        CHECK(r->entry.path[0] == 0);
        /* the raw control bytes never reach the message */
        for (const char *p = err.msg; *p; p++)
            CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    }
    char *longname = malloc(2000);
    memset(longname, 'a', 1999);
    longname[1999] = 0;
    CHECK_EQ_INT(res(reg, longname, NULL, r, &err), SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "bytes long") != NULL);
    free(longname);
    CHECK_EQ_INT(res(reg, "anime_style_v2", "sty\nle", r, &err), SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(res(reg, NULL, NULL, r, &err), SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(res(reg, "x", NULL, NULL, &err), SDXL_STATUS_INVALID_ARG);
    /* a name that exists outside the tree is just not found */
    CHECK_EQ_INT(res(reg, "evil", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    CHECK_EQ_INT(res(reg, "outside/x", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    free(r);
    sdxl_lora_registry_free(reg);
}

TEST(lora_registry_suggestions) {
    tree t;
    REQUIRE(make_tree(&t, "suggest"));
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(open_tree(&t, 1000, &reg, &err), &err);
    sdxl_lora_resolution *r = malloc(sizeof *r);
    REQUIRE(r);
    CHECK_EQ_INT(res(reg, "anime_style", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    REQUIRE(r->n_suggestions >= 1);
    CHECK(strcmp(r->suggestions[0], "anime_style_v2") == 0);
    CHECK(strstr(err.msg, "did you mean: anime_style_v2") != NULL);
    CHECK(strstr(err.msg, "not found in 2 LoRA directories") != NULL);
    CHECK(r->entry.path[0] == 0);

    CHECK_EQ_INT(res(reg, "dramatc_lightng", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    REQUIRE(r->n_suggestions >= 1);
    CHECK(strcmp(r->suggestions[0], "dramatic_lighting") == 0);

    CHECK_EQ_INT(res(reg, "styles/girl_character", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    REQUIRE(r->n_suggestions >= 1);
    CHECK(strcmp(r->suggestions[0], "girl_character_lora") == 0);

    /* the alias (ss_output_name) helps too */
    CHECK_EQ_INT(res(reg, "animestyle", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    REQUIRE(r->n_suggestions >= 1);
    CHECK(strcmp(r->suggestions[0], "anime_style_v2") == 0);

    /* a stem in several categories is suggested with its category */
    CHECK_EQ_INT(res(reg, "shared_nam", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    CHECK(r->n_suggestions == 3);
    int with_cat = 0;
    for (int i = 0; i < r->n_suggestions; i++)
        with_cat += strchr(r->suggestions[i], '/') != NULL;
    CHECK_EQ_INT(with_cat, 3);

    CHECK_EQ_INT(res(reg, "zzqqxxjj", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    CHECK_EQ_INT(r->n_suggestions, 0);
    CHECK(strstr(err.msg, "did you mean") == NULL);
    free(r);
    sdxl_lora_registry_free(reg);
}

/* ---- keeping current ------------------------------------------------------------ */

TEST(lora_registry_file_added_later) {
    tree t;
    REQUIRE(make_tree(&t, "added"));
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(open_tree(&t, 0, &reg, &err), &err);
    sdxl_lora_resolution *r = malloc(sizeof *r);
    REQUIRE(r);
    CHECK_EQ_INT(res(reg, "new_style", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    CHECK(r->rescanned);
    REQUIRE(write_lora(t.root, "styles/new_style.safetensors", "lora", 4, 20, NULL));
    uint64_t g = sdxl_lora_registry_generation(reg);
    REQUIRE_ST(res(reg, "new_style", "style", r, &err), &err);
    CHECK(r->rescanned); /* found through the miss -> rescan path */
    CHECK(strcmp(r->entry.category, "style") == 0);
    CHECK(sdxl_lora_registry_generation(reg) > g);
    /* found now without a rescan */
    REQUIRE_ST(res(reg, "new_style", NULL, r, &err), &err);
    CHECK(!r->rescanned);
    sdxl_lora_registry_free(reg);

    /* rate limit: a second miss within the interval does not walk */
    REQUIRE_ST(open_tree(&t, 60000, &reg, &err), &err);
    REQUIRE(write_lora(t.root, "lighting/late_light.safetensors", "lora", 4, 21, NULL));
    CHECK_EQ_INT(res(reg, "late_light", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    CHECK(!r->rescanned);
    size_t changes = 0;
    REQUIRE_ST(sdxl_lora_registry_refresh(reg, false, &changes, &err), &err); /* also rate-limited */
    CHECK_EQ_INT(changes, 0);
    REQUIRE_ST(sdxl_lora_registry_refresh(reg, true, &changes, &err), &err);
    CHECK_EQ_INT(changes, 1);
    REQUIRE_ST(res(reg, "late_light", NULL, r, &err), &err);
    free(r);
    sdxl_lora_registry_free(reg);
}

/* Independent short hash: SHA-256 of the bytes after 8 + N (safetensors) or
 * of the whole file, first 12 hex. */
static void expect_hash(const char *path, bool safetensors, char short_hex[13], char full_hex[65]) {
    size_t n = 0;
    char *b = read_all(path, &n);
    short_hex[0] = full_hex[0] = 0;
    if (!b) return;
    uint8_t d[32];
    char hex[65];
    size_t off = 0;
    if (safetensors && n >= 8) {
        uint64_t h = 0;
        for (int i = 0; i < 8; i++)
            h |= (uint64_t)(uint8_t)b[i] << (8 * i);
        off = 8 + (size_t)h;
    }
    sdxl_sha256_buf(b + off, n - off, d);
    sdxl_sha256_hex(d, hex);
    memcpy(short_hex, hex, 12);
    short_hex[12] = 0;
    sdxl_sha256_buf(b, n, d);
    sdxl_sha256_hex(d, full_hex);
    free(b);
}

TEST(lora_registry_hashes) {
    tree t;
    REQUIRE(make_tree(&t, "hashes"));
    /* a hand-made safetensors file whose data section is "abc": its short hash
     * is the first 12 hex of sha256("abc") (python: hashlib.sha256(b"abc")) */
    REQUIRE(write_bytes(t.root, "lighting/abc.safetensors", "\x08\0\0\0\0\0\0\0{}      abc", 19));
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(open_tree(&t, 1000, &reg, &err), &err);
    sdxl_lora_resolution *r = malloc(sizeof *r);
    REQUIRE(r);
    char h[65], want_short[13], want_full[65];

    REQUIRE_ST(res(reg, "abc", NULL, r, &err), &err);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h, 13, &err), &err);
    CHECK(strcmp(h, "ba7816bf8f01") == 0);

    /* the pickle "abc": whole-file sha256 */
    REQUIRE_ST(res(reg, "watercolor", NULL, r, &err), &err);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h, 13, &err), &err);
    CHECK(strcmp(h, "ba7816bf8f01") == 0);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHA256, h, sizeof h, &err), &err);
    CHECK(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);

    /* a written adapter: against an independent computation */
    REQUIRE_ST(res(reg, "anime_style_v2", NULL, r, &err), &err);
    expect_hash(r->entry.path, true, want_short, want_full);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h, 13, &err), &err);
    CHECK(strcmp(h, want_short) == 0);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHA256, h, sizeof h, &err), &err);
    CHECK(strcmp(h, want_full) == 0);
    CHECK(strncmp(want_full, want_short, 12) != 0); /* the two rules differ for safetensors */
    /* now cached: visible in the entry, kept over a refresh of unchanged files */
    REQUIRE_ST(res(reg, "anime_style_v2", NULL, r, &err), &err);
    CHECK(strcmp(r->entry.short_hash, want_short) == 0);
    CHECK(strcmp(r->entry.sha256, want_full) == 0);
    REQUIRE_ST(sdxl_lora_registry_refresh(reg, true, NULL, &err), &err);
    REQUIRE_ST(res(reg, "anime_style_v2", NULL, r, &err), &err);
    CHECK(strcmp(r->entry.short_hash, want_short) == 0);

    /* errors */
    CHECK_EQ_INT(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h, 12, &err),
                 SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHA256, h, 64, &err),
                 SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_lora_registry_hash(reg, "/etc/passwd", SDXL_LORA_HASH_SHA256, h, sizeof h, &err),
                 SDXL_STATUS_NOT_FOUND);
    char outside[1024];
    snprintf(outside, sizeof outside, "%s/evil.safetensors", t.outside);
    CHECK_EQ_INT(sdxl_lora_registry_hash(reg, outside, SDXL_LORA_HASH_SHORT, h, 13, &err),
                 SDXL_STATUS_NOT_FOUND);
    REQUIRE_ST(res(reg, "broken", NULL, r, &err), &err);
    CHECK_EQ_INT(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h, 13, &err),
                 SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "header length") != NULL);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHA256, h, sizeof h, &err), &err);
    free(r);
    sdxl_lora_registry_free(reg);
}

TEST(lora_registry_modified_and_removed) {
    tree t;
    REQUIRE(make_tree(&t, "modified"));
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(open_tree(&t, 60000, &reg, &err), &err); /* no rescans: the per-hit stat must notice */
    sdxl_lora_resolution *r = malloc(sizeof *r);
    REQUIRE(r);
    char h0[13], h1[13], ws[13], wf[65];

    /* replaced (write + rename, as trainers and sdxl_st_write do) */
    REQUIRE_ST(res(reg, "ink_wash", NULL, r, &err), &err);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h0, sizeof h0, &err), &err);
    uint64_t size0 = r->entry.size;
    REQUIRE(write_lora(t.root, "styles/nested/deep/ink_wash.safetensors", "locon", 2, 99, k_meta_anime));
    REQUIRE_ST(res(reg, "ink_wash", NULL, r, &err), &err);
    CHECK(r->entry.size != size0);
    CHECK(strcmp(r->entry.adapter, "locon") == 0);
    CHECK(strcmp(r->entry.output_name, "AnimeStyle") == 0);
    CHECK(r->entry.short_hash[0] == 0); /* the cached hash went with the old file */
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h1, sizeof h1, &err), &err);
    expect_hash(r->entry.path, true, ws, wf);
    CHECK(strcmp(h1, ws) == 0);
    CHECK(strcmp(h0, h1) != 0);

    /* modified in place: same inode, same size, new bytes and mtime */
    REQUIRE_ST(res(reg, "watercolor", NULL, r, &err), &err);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h0, sizeof h0, &err), &err);
    int64_t mt0 = r->entry.mtime_ns;
    char path[SDXL_LORA_PATH_MAX];
    snprintf(path, sizeof path, "%s", r->entry.path);
    int fd = open(path, O_WRONLY);
    REQUIRE(fd >= 0);
    CHECK(write(fd, "xyz", 3) == 3);
    close(fd);
    bump_mtime(path, 10); /* timestamps are coarse: make the change visible */
    REQUIRE_ST(res(reg, "watercolor", NULL, r, &err), &err);
    CHECK(r->entry.mtime_ns != mt0);
    CHECK_EQ_INT(r->entry.size, 3);
    REQUIRE_ST(sdxl_lora_registry_hash(reg, r->entry.path, SDXL_LORA_HASH_SHORT, h1, sizeof h1, &err), &err);
    uint8_t d[32];
    char hex[65];
    sdxl_sha256_buf("xyz", 3, d);
    sdxl_sha256_hex(d, hex);
    CHECK(strncmp(h1, hex, 12) == 0);
    CHECK(strcmp(h0, h1) != 0);

    /* a refresh counts the in-place change of a file no request touched */
    REQUIRE(write_lora(t.root, "lighting/Golden_Hour.safetensors", "lora", 4, 55, NULL));
    size_t changes = 0;
    REQUIRE_ST(sdxl_lora_registry_refresh(reg, true, &changes, &err), &err);
    CHECK_EQ_INT(changes, 1);

    /* removed: the hit's stat notices, the name is gone */
    REQUIRE_ST(res(reg, "concept_a", NULL, r, &err), &err);
    snprintf(path, sizeof path, "%s", r->entry.path);
    size_t n0 = sdxl_lora_registry_count(reg);
    REQUIRE(unlink(path) == 0);
    CHECK_EQ_INT(res(reg, "concept_a", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), n0 - 1);
    /* a link that now points outside: its entry is dropped, the name refused after a rescan */
    char lp[1024], tgt[1024];
    snprintf(lp, sizeof lp, "%s/styles/alias.safetensors", t.root);
    snprintf(tgt, sizeof tgt, "%s/x.safetensors", t.outside);
    REQUIRE(unlink(lp) == 0 && symlink(tgt, lp) == 0);
    CHECK_EQ_INT(res(reg, "alias", NULL, r, &err), SDXL_STATUS_NOT_FOUND);
    REQUIRE_ST(sdxl_lora_registry_refresh(reg, true, NULL, &err), &err);
    CHECK_EQ_INT(res(reg, "alias", NULL, r, &err), SDXL_STATUS_INVALID_ARG);
    free(r);
    sdxl_lora_registry_free(reg);
}

/* ---- failure paths --------------------------------------------------------------- */

static int64_t live_bytes(void) {
    sdxl_mem_stats s;
    sdxl_mem_get_stats(&s);
    return s.live_bytes;
}

TEST(lora_registry_allocation_failures) {
    tree t;
    REQUIRE(make_tree(&t, "oom"));
    sdxl_error err;
    sdxl_log_level lvl = sdxl_log_get_level();
    sdxl_log_set_level(SDXL_LOG_ERROR); /* the broken file's warning, once per try */
    int64_t live0 = live_bytes();
    int failures = 0;
    sdxl_lora_registry *reg = NULL;
    for (int64_t n = 1; n < 100000; n++) {
        sdxl__alloc_fail_at(n);
        sdxl_status st = open_tree(&t, 0, &reg, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) break;
        failures++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "create, allocation %lld: %s", (long long)n, err.msg);
        CHECK(reg == NULL);
        CHECK_EQ_INT(live_bytes(), live0);
    }
    CHECK(failures >= 10);
    REQUIRE(reg);
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), 14);
    sdxl_lora_resolution *r = malloc(sizeof *r);
    REQUIRE(r);
    /* a miss (rescan + suggestions) and a changed file (re-read) under failures:
     * the index stays whole */
    REQUIRE(write_lora(t.root, "styles/oom_new.safetensors", "lora", 4, 30, k_meta_anime));
    failures = 0;
    for (int64_t n = 1; n < 100000; n++) {
        sdxl__alloc_fail_at(n);
        sdxl_status st = res(reg, "oom_new", NULL, r, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) break;
        failures++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "resolve, allocation %lld: %s", (long long)n, err.msg);
        CHECK_EQ_INT(sdxl_lora_registry_count(reg), 14);
    }
    CHECK(failures >= 3);
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), 15);
    sdxl_lora_registry_free(reg);
    free(r);
    CHECK_EQ_INT(live_bytes(), live0);
    sdxl_log_set_level(lvl);
}

/* ---- concurrency ------------------------------------------------------------------ */

typedef struct conc {
    sdxl_lora_registry *reg;
    int id;
    volatile int *stop; /* read through __atomic */
    int bad;            /* statuses other than OK / NOT_FOUND, or wrong hits */
    char why[1024];
} conc;

#define CONC_NEW 12

static void *resolver(void *arg) {
    conc *c = arg;
    sdxl_lora_resolution *r = malloc(sizeof *r);
    if (!r) return NULL;
    static const char *const fixed[] = {"anime_style_v2",
                                        "shared_name",
                                        "style/ink_wash",
                                        "Golden_Hour",
                                        "watercolor",
                                        "nope",
                                        "characters/girl_character_lora"};
    /* until the file drops are over (bounded: ThreadSanitizer is slow) */
    for (int it = 0; it < 3000 && !__atomic_load_n(c->stop, __ATOMIC_ACQUIRE); it++) {
        char name[64];
        if (it % 3 == 0)
            snprintf(name, sizeof name, "conc_%d", (it / 3 + c->id) % CONC_NEW);
        else
            snprintf(name, sizeof name, "%s", fixed[(it + c->id) % 7]);
        sdxl_error err;
        sdxl_status st = sdxl_lora_registry_resolve(c->reg, name, (it & 1) ? "style" : NULL, r, &err);
        if (st == SDXL_STATUS_OK) {
            const char *last = strrchr(name, '/');
            last = last ? last + 1 : name;
            if (strcmp(r->entry.name, last) != 0) {
                c->bad++;
                snprintf(c->why, sizeof c->why, "%s resolved to %s", name, r->entry.name);
            }
            char h[13];
            if (it % 5 == 0 && sdxl_lora_registry_hash(c->reg, r->entry.path, SDXL_LORA_HASH_SHORT, h,
                                                       sizeof h, &err) == SDXL_STATUS_INTERNAL)
                c->bad++;
        } else if (st != SDXL_STATUS_NOT_FOUND) {
            c->bad++;
            snprintf(c->why, sizeof c->why, "%s: %s", name, err.msg);
        }
        size_t n = sdxl_lora_registry_count(c->reg);
        static __thread sdxl_lora_info info;
        if (n) sdxl_lora_registry_get(c->reg, (size_t)it % n, &info, &err);
    }
    free(r);
    return NULL;
}

static void *refresher(void *arg) {
    conc *c = arg;
    while (!__atomic_load_n(c->stop, __ATOMIC_ACQUIRE)) {
        sdxl_error err;
        if (sdxl_lora_registry_refresh(c->reg, true, NULL, &err) != SDXL_STATUS_OK) c->bad++;
        usleep(2000);
    }
    return NULL;
}

TEST(lora_registry_concurrent_resolve) {
    tree t;
    REQUIRE(make_tree(&t, "concurrent"));
    sdxl_error err;
    sdxl_lora_registry *reg = NULL;
    REQUIRE_ST(open_tree(&t, 5, &reg, &err), &err);
    volatile int stop = 0;
    conc c[9];
    pthread_t th[9];
    for (int i = 0; i < 9; i++) {
        c[i] = (conc){.reg = reg, .id = i, .stop = &stop};
        REQUIRE(pthread_create(&th[i], NULL, i < 8 ? resolver : refresher, &c[i]) == 0);
    }
    /* files dropped in and rewritten while they run */
    for (int k = 0; k < CONC_NEW; k++) {
        char rel[64];
        snprintf(rel, sizeof rel, "styles/conc/conc_%d.safetensors", k);
        CHECK(write_lora(t.root, rel, "lora", 4, (float)k, NULL));
        CHECK(write_lora(t.root, "styles/anime_style_v2.safetensors", "lora", 4, (float)k, k_meta_anime));
        usleep(1000);
    }
    usleep(20000);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 9; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 9; i++)
        CHECK_MSG(c[i].bad == 0, "thread %d: %d bad results (%s)", i, c[i].bad, c[i].why);

    /* everything dropped in is found now (the last drop may be younger than
     * the last walk and the rescan interval: one forced refresh first) */
    REQUIRE_ST(sdxl_lora_registry_refresh(reg, true, NULL, &err), &err);
    sdxl_lora_resolution *r = malloc(sizeof *r);
    REQUIRE(r);
    for (int k = 0; k < CONC_NEW; k++) {
        char name[64];
        snprintf(name, sizeof name, "conc_%d", k);
        sdxl_status st = res(reg, name, "style", r, &err);
        CHECK_MSG(st == SDXL_STATUS_OK, "%s: %s", name, err.msg);
    }
    CHECK_EQ_INT(sdxl_lora_registry_count(reg), 14 + CONC_NEW);
    free(r);
    sdxl_lora_registry_free(reg);
}
