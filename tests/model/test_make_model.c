/* Tests of model/presets and model/make_model (`sdxl make-model`):
 *   - the sdxl-base preset parses to SDXL base 1.0's sizes and its naming
 *     equals, key for key and shape for shape, both full-size key lists
 *     (tests/data/refs/sdxl-base-keys-{diffusers,sgm}.tsv): without writing
 *     7 GB;
 *   - tiny, and a copy of tests/data/refs/tiny-sdxl's config, in both
 *     layouts and every dtype: the output loads back (sdxl_model_load /
 *     sdxl_weights_load) with the same config, every weight present with its
 *     shape and dtype, and every value bit-identical to the generator's (so
 *     both layouts hold the same model through the SGM transforms);
 *   - deterministic: same seed (any thread count) -> same bytes, another
 *     seed -> other values; the values finite and at the intended scale;
 *   - generated tokenizer folders encode like the standard CLIP tokenizer;
 *   - failures (bad params, existing output, missing folder, cancel, a
 *     config a single file cannot carry, allocation failure) leave nothing
 *     behind; the CLI's usage errors exit 2 and run-time errors 1. */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "model/make_model.h"
#include "model/model.h"
#include "model/presets.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "test.h"

#ifndef SDXL_BINARY_DIR
#define SDXL_BINARY_DIR "."
#endif

#define REQUIRE_ST(expr, errp)                                                                               \
    do {                                                                                                     \
        sdxl_error *ep_ = (errp);                                                                            \
        REQUIRE_OK(expr, ep_);                                                                               \
    } while (0)

/* ---- helpers ----------------------------------------------------------------- */

/* Scratch folder of these tests: on tmpfs when there is one, because every
 * model written is fsync'd (the writer's durability promise) and on a busy
 * disk those waits were most of this file's run time; removed at exit. Else
 * the runner's scratch folder. */
static char scratch_dir[256];

static void scratch_remove(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", scratch_dir);
}

static const char *scratch(void) {
    if (!scratch_dir[0]) {
        snprintf(scratch_dir, sizeof scratch_dir, "/dev/shm/sdxl-tests-mk-%d", (int)getpid());
        if (mkdir(scratch_dir, 0700) == 0)
            atexit(scratch_remove);
        else
            snprintf(scratch_dir, sizeof scratch_dir, "%s", sdxl_test_tmpdir());
    }
    return scratch_dir;
}

static const char *tmp(const char *name) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/mk-%s", scratch(), name);
    return b;
}

static bool exists(const char *p) {
    struct stat sb;
    return lstat(p, &sb) == 0;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return s;
}

static bool same_file(const char *a, const char *b) {
    size_t la = 0, lb = 0;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    bool same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* Entries of the test's scratch folder whose name contains `part`. */
static int count_named(const char *part) {
    DIR *d = opendir(scratch());
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strstr(de->d_name, part) != NULL;
    if (d) closedir(d);
    return n;
}

static void rm_rf(const char *p) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", p);
}

static sdxl_make_model_params params(const char *preset, const char *dir, sdxl_layout layout, sdxl_dtype dt,
                                     uint64_t seed) {
    sdxl_make_model_params p = sdxl_make_model_default_params();
    p.preset = preset;
    p.config_dir = dir;
    p.layout = layout;
    p.dtype = dt;
    p.seed = seed;
    p.n_threads = 2;
    return p;
}

/* The generator's values of every weight of a naming, in f32 (the
 * reference the written files are compared with). */
typedef struct {
    size_t n;
    float **v;
    size_t *ne;
} refvals;

static void ref_make(refvals *r, const sdxl_naming *n, uint64_t seed) {
    r->n = sdxl_naming_count(n);
    r->v = calloc(r->n, sizeof *r->v);
    r->ne = calloc(r->n, sizeof *r->ne);
    for (size_t i = 0; i < r->n; i++) {
        const sdxl_name_entry *e = sdxl_naming_at(n, i);
        size_t ne = 1;
        for (int d = 0; d < e->ndim; d++)
            ne *= (size_t)e->shape[d];
        r->ne[i] = ne;
        r->v[i] = malloc(ne * sizeof(float));
        sdxl_make_model_values(seed, n, e, 0, ne, r->v[i]);
        /* finite, and so are their roundings to f16 / bf16 */
        size_t k = 0;
        while (k < ne && isfinite(r->v[i][k]) && fabsf(r->v[i][k]) < 60000.0f)
            k++;
        CHECK_MSG(k == ne, "%s: value %zu is %g", e->name, k, k < ne ? r->v[i][k] : 0.0f);
    }
}

static void ref_free(refvals *r) {
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i]);
    free(r->v);
    free(r->ne);
}

/* Every weight of w: internal shape, dtype, and bytes equal to the
 * reference values rounded to dt. Returns the number of mismatches. */
static int check_values(const sdxl_weights *w, const refvals *r, sdxl_dtype dt) {
    int bad = 0;
    CHECK_EQ_INT(sdxl_weights_count(w), r->n);
    if (sdxl_weights_count(w) != r->n) return 1;
    size_t most = 1;
    for (size_t i = 0; i < r->n; i++)
        if (r->ne[i] > most) most = r->ne[i];
    void *want = malloc(most * sdxl_dtype_size(dt));
    for (size_t i = 0; i < sdxl_weights_count(w); i++) {
        const sdxl_weight *wt = sdxl_weights_at(w, i);
        const sdxl_name_entry *e = wt->entry;
        size_t ne = r->ne[i];
        for (int d = 0; d < e->ndim; d++)
            if (wt->tensor.ne[d] != e->shape[d]) bad++;
        if (wt->tensor.dtype != dt) bad++;
        sdxl_convert_n(r->v[i], SDXL_DTYPE_F32, want, dt, ne);
        if (memcmp(want, wt->tensor.data, ne * sdxl_dtype_size(dt)) != 0) {
            if (bad < 5)
                sdxl_test_fail(__FILE__, __LINE__, "%s: values differ from the generator's", e->name);
            bad++;
        }
    }
    free(want);
    return bad;
}

static int check_values_seed(const sdxl_weights *w, uint64_t seed, sdxl_dtype dt) {
    refvals r;
    ref_make(&r, sdxl_weights_naming(w), seed);
    int bad = check_values(w, &r, dt);
    ref_free(&r);
    return bad;
}

/* ---- presets ------------------------------------------------------------------ */

TEST(make_model_presets_parse) {
    sdxl_error err = {0};
    CHECK(sdxl_model_preset_count() >= 2);
    CHECK(sdxl_model_preset_find("nope") == NULL);
    CHECK(sdxl_model_preset_at(sdxl_model_preset_count()) == NULL);
    for (size_t i = 0; i < sdxl_model_preset_count(); i++) {
        sdxl_model_config c;
        REQUIRE_ST(sdxl_model_preset_config(sdxl_model_preset_at(i), &c, &err), &err);
        CHECK(c.scheduler_json && strstr(c.scheduler_json, "EulerDiscreteScheduler"));
        sdxl_model_config_clear(&c);
    }
    sdxl_model_config c;
    REQUIRE_ST(sdxl_model_preset_config(sdxl_model_preset_find("sdxl-base"), &c, &err), &err);
    const sdxl_unet_config *u = &c.unet;
    CHECK_EQ_INT(u->num_levels, 3);
    CHECK_EQ_INT(u->block_out_channels[0], 320);
    CHECK_EQ_INT(u->block_out_channels[1], 640);
    CHECK_EQ_INT(u->block_out_channels[2], 1280);
    CHECK_EQ_INT(u->layers_per_block, 2);
    CHECK(!u->down_has_attn[0] && u->down_has_attn[1] && u->down_has_attn[2]);
    CHECK_EQ_INT(u->down_transformer_layers[1], 2);
    CHECK_EQ_INT(u->down_transformer_layers[2], 10);
    CHECK_EQ_INT(u->mid_transformer_layers, 10);
    CHECK_EQ_INT(u->up_transformer_layers[0], 10);
    CHECK_EQ_INT(u->up_transformer_layers[1], 2);
    CHECK(!u->up_has_attn[2]);
    CHECK_EQ_INT(u->down_num_heads[1], 10);
    CHECK_EQ_INT(u->down_num_heads[2], 20);
    CHECK_EQ_INT(u->mid_num_heads, 20);
    CHECK_EQ_INT(u->cross_attention_dim, 2048);
    CHECK_EQ_INT(u->addition_time_embed_dim, 256);
    CHECK_EQ_INT(u->projection_class_embeddings_input_dim, 2816);
    CHECK_EQ_INT(u->time_embed_dim, 1280);
    CHECK(u->use_linear_projection && !u->upcast_attention);
    CHECK_EQ_INT(u->sample_size, 128);
    const sdxl_vae_config *v = &c.vae;
    CHECK_EQ_INT(v->num_levels, 4);
    CHECK(v->block_out_channels[0] == 128 && v->block_out_channels[1] == 256 &&
          v->block_out_channels[2] == 512 && v->block_out_channels[3] == 512);
    CHECK_EQ_INT(v->layers_per_block, 2);
    CHECK_NEAR(v->scaling_factor, 0.13025, 0);
    CHECK(v->force_upcast);
    CHECK(c.te[0].hidden_size == 768 && c.te[0].num_layers == 12 && c.te[0].num_heads == 12 &&
          c.te[0].intermediate_size == 3072 && c.te[0].hidden_act == SDXL_ACT_QUICK_GELU);
    CHECK(c.te[1].hidden_size == 1280 && c.te[1].num_layers == 32 && c.te[1].num_heads == 20 &&
          c.te[1].intermediate_size == 5120 && c.te[1].hidden_act == SDXL_ACT_GELU &&
          c.te[1].projection_dim == 1280 && c.te[1].with_projection);
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(c.te[k].vocab_size, 49408);
        CHECK_EQ_INT(c.te[k].max_position_embeddings, 77);
        CHECK_EQ_INT(c.te[k].hidden_state_index, c.te[k].num_layers - 1); /* penultimate */
        CHECK(c.te[k].legacy_pooling);
    }
    CHECK(c.pipeline.force_zeros_for_empty_prompt);
    sdxl_model_config_clear(&c);
    CHECK_EQ_INT(sdxl_model_preset_config(NULL, &c, &err), SDXL_STATUS_INVALID_ARG);
}

/* tests/data/refs/sdxl-base-keys-*.tsv, one "key\tshape" pair per line
 * (diffusers: "file\tkey\tshape\tdtype"). */
typedef struct {
    char *buf;
    char *file[3000], *key[3000], *shape[3000];
    int n;
} keylist;

static bool keylist_load(const char *rel, bool with_file, keylist *k) {
    memset(k, 0, sizeof *k);
    k->buf = slurp(sdxl_test_data(rel), NULL);
    if (!k->buf) return false;
    char *save = NULL;
    bool header = true;
    for (char *line = strtok_r(k->buf, "\n", &save); line && k->n < 3000;
         line = strtok_r(NULL, "\n", &save)) {
        if (header) {
            header = false;
            continue;
        }
        char *f[4] = {line, NULL, NULL, NULL};
        int nf = 1;
        for (char *p = line; *p && nf < 4; p++)
            if (*p == '\t') *p = 0, f[nf++] = p + 1;
        k->file[k->n] = with_file ? f[0] : NULL;
        k->key[k->n] = f[with_file ? 1 : 0];
        k->shape[k->n] = f[with_file ? 2 : 1];
        if (k->key[k->n] && k->shape[k->n]) k->n++;
    }
    return true;
}

static bool shape_is(const char *txt, int ndim, const int64_t *shape) {
    char buf[128];
    size_t o = 0;
    o += (size_t)snprintf(buf + o, sizeof buf - o, "[");
    for (int d = 0; d < ndim; d++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%lld", d ? "," : "", (long long)shape[d]);
    snprintf(buf + o, sizeof buf - o, "]");
    return strcmp(buf, txt) == 0;
}

TEST(make_model_sdxl_base_matches_key_lists) {
    sdxl_error err = {0};
    sdxl_model_config c;
    REQUIRE_ST(sdxl_model_preset_config(sdxl_model_preset_find("sdxl-base"), &c, &err), &err);
    sdxl_naming *n = NULL;
    REQUIRE_ST(sdxl_naming_create(&c, &n, &err), &err);
    static keylist k;
    REQUIRE(keylist_load("refs/sdxl-base-keys-diffusers.tsv", true, &k));
    CHECK_EQ_INT(k.n, 2641);
    CHECK_EQ_INT(sdxl_naming_count(n), 2641);
    int ok = 0;
    uint64_t params = 0;
    for (int i = 0; i < k.n; i++) {
        sdxl_component comp = !strncmp(k.file[i], "unet/", 5)            ? SDXL_COMP_UNET
                              : !strncmp(k.file[i], "vae/", 4)           ? SDXL_COMP_VAE
                              : !strncmp(k.file[i], "text_encoder/", 13) ? SDXL_COMP_TE1
                                                                         : SDXL_COMP_TE2;
        const sdxl_name_entry *e = sdxl_naming_find_source(n, SDXL_LAYOUT_DIFFUSERS, comp, k.key[i]);
        CHECK_MSG(e != NULL, "%s %s: not in the preset's naming", k.file[i], k.key[i]);
        if (!e) continue;
        CHECK_MSG(shape_is(k.shape[i], e->ndim, e->shape), "%s: shape %s differs", e->name, k.shape[i]);
        uint64_t ne = 1;
        for (int d = 0; d < e->ndim; d++)
            ne *= (uint64_t)e->shape[d];
        params += ne;
        ok++;
    }
    CHECK_EQ_INT(ok, 2641);
    /* 2.567 B UNet + 83.7 M VAE + 123.1 M CLIP-L + 694.7 M bigG: 6.94 GB in f16 */
    CHECK_EQ_INT(params, 3468837867LL);
    free(k.buf);

    REQUIRE(keylist_load("refs/sdxl-base-keys-sgm.tsv", false, &k));
    CHECK_EQ_INT(k.n, 2513);
    ok = 0;
    for (int i = 0; i < k.n; i++) {
        const sdxl_name_entry *e = sdxl_naming_find_source(n, SDXL_LAYOUT_SGM, SDXL_COMP_UNET, k.key[i]);
        CHECK_MSG(e != NULL, "%s: not in the preset's SGM naming", k.key[i]);
        if (!e) continue;
        const sdxl_name_source *s = &e->src[SDXL_LAYOUT_SGM];
        CHECK_MSG(shape_is(k.shape[i], s->ndim, s->shape), "%s: shape %s differs", k.key[i], k.shape[i]);
        ok++;
    }
    CHECK_EQ_INT(ok, 2513);
    free(k.buf);

    /* the single-file metadata for it names SDXL's heads and activations */
    const char **kv = NULL;
    REQUIRE_ST(sdxl_weights_single_file_metadata(&c, NULL, &kv, &err), &err);
    bool heads = false, act = false;
    for (int i = 0; kv[i]; i += 2) {
        heads |= !strcmp(kv[i], "unet.num_heads") && !strcmp(kv[i + 1], "5,10,20");
        act |= !strcmp(kv[i], "te1.hidden_act") && !strcmp(kv[i + 1], "quick_gelu");
    }
    CHECK(heads && act);
    sdxl_free(kv);
    sdxl_naming_free(n);
    sdxl_model_config_clear(&c);
}

/* The init rule, stated independently of make_model.c from names and shapes,
 * for every weight of both presets. */
static sdxl_weight_init expected_init(const sdxl_name_entry *e) {
    sdxl_weight_init in = {0.0f, 0.02f};
    size_t l = strlen(e->name);
    bool is_weight = l > 7 && !strcmp(e->name + l - 7, ".weight");
    if (e->ndim == 1) { /* norm gains / biases */
        if (is_weight) in.mean = 1.0f;
        return in;
    }
    if (strstr(e->name, "token_embedding") || strstr(e->name, "position_embedding")) return in; /* tables */
    double fan_in = 1;
    for (int d = 1; d < e->ndim; d++)
        fan_in *= (double)e->shape[d];
    in.std = (float)(1.0 / sqrt(fan_in));
    return in;
}

TEST(make_model_init_rule) {
    sdxl_error err = {0};
    for (size_t pi = 0; pi < sdxl_model_preset_count(); pi++) {
        sdxl_model_config c;
        REQUIRE_ST(sdxl_model_preset_config(sdxl_model_preset_at(pi), &c, &err), &err);
        sdxl_naming *n = NULL;
        REQUIRE_ST(sdxl_naming_create(&c, &n, &err), &err);
        int bad = 0;
        for (size_t i = 0; i < sdxl_naming_count(n); i++) {
            const sdxl_name_entry *e = sdxl_naming_at(n, i);
            sdxl_weight_init a = sdxl_make_model_init(n, e), b = expected_init(e);
            if (a.mean != b.mean || a.std != b.std) {
                if (bad++ < 5)
                    sdxl_test_fail(__FILE__, __LINE__, "%s: init %g/%g, expected %g/%g", e->name, a.mean,
                                   a.std, b.mean, b.std);
            }
        }
        CHECK_EQ_INT(bad, 0);
        /* no UNet weight needs more than f16 can hold at its scale */
        const sdxl_name_entry *e = sdxl_naming_find(n, "unet.conv_in.weight");
        REQUIRE(e);
        CHECK(sdxl_make_model_init(n, e).std > 0.01f);
        sdxl_naming_free(n);
        sdxl_model_config_clear(&c);
    }
}

/* ---- tiny and a copied config, both layouts, every dtype --------------------------- */

static const sdxl_dtype dtypes[3] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16};

/* Write the model, load it back, compare config and every value. For the
 * single layout with a small vocabulary, tokenizer_dir supplies tokenizers. */
static void roundtrip(const char *label, const char *preset, const char *dir, const sdxl_model_config *want,
                      const char *tokenizer_dir) {
    sdxl_error err = {0};
    /* one seed for all six files: one reference */
    sdxl_naming *nm = NULL;
    REQUIRE_ST(sdxl_naming_create(want, &nm, &err), &err);
    refvals ref;
    ref_make(&ref, nm, 11);
    for (int l = 0; l < 2; l++) {
        for (int d = 0; d < 3; d++) {
            char name[128];
            snprintf(name, sizeof name, "%s-%s-%s%s", label, l ? "single" : "diffusers",
                     sdxl_dtype_name(dtypes[d]), l ? ".safetensors" : "");
            const char *out = tmp(name);
            sdxl_make_model_params p =
                params(preset, dir, l ? SDXL_LAYOUT_SGM : SDXL_LAYOUT_DIFFUSERS, dtypes[d], 11);
            /* loading tokenizers is the slow part: the built-in
             * verification (which loads them for a folder) once, a full
             * sdxl_model_load of the single file once; the checks below
             * every time */
            p.verify = l == 0 && d == 0;
            sdxl_make_model_report rep;
            REQUIRE_ST(sdxl_make_model(out, &p, &rep, &err), &err);
            CHECK_EQ_INT(rep.n_files, l ? 1 : 4);
            CHECK_EQ_INT(rep.bytes, rep.n_params * sdxl_dtype_size(dtypes[d]));
            sdxl_model *m = NULL;
            sdxl_weights *w = NULL;
            if (l == 1 && d == 0) { /* weights and tokenizers, as the pipeline will load them */
                sdxl_model_params mp = sdxl_model_default_params();
                if (l) mp.tokenizer_dir = tokenizer_dir;
                REQUIRE_ST(sdxl_model_load(out, &mp, &m, &err), &err);
            } else {
                REQUIRE_ST(sdxl_weights_load(out, NULL, &w, &err), &err);
            }
            const sdxl_weights *ws = m ? m->weights : w;
            char what[128];
            CHECK_MSG(sdxl_model_config_equal(want, sdxl_weights_config(ws), what, sizeof what),
                      "%s: config differs at %s", name, what);
            CHECK_EQ_INT(sdxl_weights_layout(ws), l ? SDXL_LAYOUT_SGM : SDXL_LAYOUT_DIFFUSERS);
            CHECK_EQ_INT(sdxl_weights_unknown_count(ws), 0);
            CHECK_EQ_INT(rep.n_tensors, sdxl_weights_count(ws));
            CHECK_MSG(check_values(ws, &ref, dtypes[d]) == 0, "%s: weights differ", name);
            sdxl_model_free(m);
            sdxl_weights_free(w);
            rm_rf(out);
        }
    }
    ref_free(&ref);
    sdxl_naming_free(nm);
}

TEST(make_model_tiny_both_layouts_every_dtype) {
    sdxl_error err = {0};
    sdxl_model_config want;
    REQUIRE_ST(sdxl_model_preset_config(sdxl_model_preset_find("tiny"), &want, &err), &err);
    /* full CLIP vocabulary: the single file loads with the standard tokenizers */
    roundtrip("tiny", "tiny", NULL, &want, NULL);
    sdxl_model_config_clear(&want);
}

TEST(make_model_copies_a_folder_config) {
    sdxl_error err = {0};
    const char *src = sdxl_test_data("refs/tiny-sdxl");
    char srcdir[1024];
    snprintf(srcdir, sizeof srcdir, "%s", src);
    sdxl_model_config want;
    REQUIRE_ST(sdxl_model_config_load_diffusers(srcdir, &want, &err), &err);
    /* vocab 1000: the single file needs the folder's tokenizers to load */
    roundtrip("copy", NULL, srcdir, &want, srcdir);

    /* the diffusers copy carries the source's files verbatim */
    const char *out = tmp("copy-verbatim");
    sdxl_make_model_params p = params(NULL, srcdir, SDXL_LAYOUT_DIFFUSERS, SDXL_DTYPE_F16, 1);
    p.fp16_variant = true;
    p.verify = false; /* loaded below */
    REQUIRE_ST(sdxl_make_model(out, &p, NULL, &err), &err);
    static const char *const same[] = {"model_index.json",
                                       "unet/config.json",
                                       "vae/config.json",
                                       "text_encoder/config.json",
                                       "text_encoder_2/config.json",
                                       "scheduler/scheduler_config.json",
                                       "tokenizer/vocab.json",
                                       "tokenizer/merges.txt",
                                       "tokenizer/tokenizer_config.json",
                                       "tokenizer/special_tokens_map.json",
                                       "tokenizer_2/vocab.json",
                                       "tokenizer_2/merges.txt",
                                       "tokenizer_2/tokenizer_config.json",
                                       "tokenizer_2/special_tokens_map.json"};
    char a[1200], b[1200];
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        snprintf(a, sizeof a, "%s/%s", srcdir, same[i]);
        snprintf(b, sizeof b, "%s/%s", out, same[i]);
        CHECK_MSG(same_file(a, b), "%s differs from the source", same[i]);
    }
    /* the fp16 variant names, loadable as such */
    snprintf(b, sizeof b, "%s/unet/diffusion_pytorch_model.fp16.safetensors", out);
    CHECK(exists(b));
    snprintf(b, sizeof b, "%s/text_encoder_2/model.fp16.safetensors", out);
    CHECK(exists(b));
    snprintf(b, sizeof b, "%s/unet/diffusion_pytorch_model.safetensors", out);
    CHECK(!exists(b));
    sdxl_weights_params wp = sdxl_weights_default_params();
    wp.variant = SDXL_VARIANT_FP16;
    sdxl_weights *w = NULL;
    REQUIRE_ST(sdxl_weights_load(out, &wp, &w, &err), &err);
    sdxl_weights_free(w);
    rm_rf(out);
    sdxl_model_config_clear(&want);
}

/* ---- determinism and scale ------------------------------------------------------------ */

TEST(make_model_is_deterministic) {
    sdxl_error err = {0};
    const char *a = tmp("det-a.safetensors"), *b = tmp("det-b.safetensors"), *c = tmp("det-c.safetensors");
    sdxl_make_model_params p = params("tiny", NULL, SDXL_LAYOUT_SGM, SDXL_DTYPE_BF16, 42);
    p.verify = false;
    p.n_threads = 1;
    REQUIRE_ST(sdxl_make_model(a, &p, NULL, &err), &err);
    p.n_threads = 3; /* other thread count, same bytes */
    REQUIRE_ST(sdxl_make_model(b, &p, NULL, &err), &err);
    CHECK(same_file(a, b));
    p.seed = 43;
    REQUIRE_ST(sdxl_make_model(c, &p, NULL, &err), &err);
    sdxl_st_file *fa = NULL, *fc = NULL;
    REQUIRE_ST(sdxl_st_open(a, &fa, &err), &err);
    REQUIRE_ST(sdxl_st_open(c, &fc, &err), &err);
    CHECK_EQ_INT(sdxl_st_count(fa), sdxl_st_count(fc));
    size_t differ = 0;
    for (size_t i = 0; i < sdxl_st_count(fa); i++) {
        const sdxl_st_tensor *x = sdxl_st_at(fa, i), *y = sdxl_st_find(fc, x->name);
        REQUIRE(y && y->nbytes == x->nbytes);
        differ += memcmp(x->data, y->data, x->nbytes) != 0;
    }
    CHECK_EQ_INT(differ, sdxl_st_count(fa)); /* every tensor, not just some */
    sdxl_st_close(fa);
    sdxl_st_close(fc);

    /* diffusers layout: byte-identical weight files on a rerun */
    const char *d1 = tmp("det-d1"), *d2 = tmp("det-d2");
    p = params("tiny", NULL, SDXL_LAYOUT_DIFFUSERS, SDXL_DTYPE_F16, 5);
    p.verify = false;
    REQUIRE_ST(sdxl_make_model(d1, &p, NULL, &err), &err);
    REQUIRE_ST(sdxl_make_model(d2, &p, NULL, &err), &err);
    static const char *const files[] = {
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors", "text_encoder_2/model.safetensors", "tokenizer_2/vocab.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char x[1200], y[1200];
        snprintf(x, sizeof x, "%s/%s", d1, files[i]);
        snprintf(y, sizeof y, "%s/%s", d2, files[i]);
        CHECK_MSG(same_file(x, y), "%s differs between two runs", files[i]);
    }
    rm_rf(d1);
    rm_rf(d2);
    unlink(a);
    unlink(b);
    unlink(c);

    /* the generator: any split of a range gives the same values */
    sdxl_model_config cfg;
    REQUIRE_ST(sdxl_model_preset_config(sdxl_model_preset_find("tiny"), &cfg, &err), &err);
    sdxl_naming *n = NULL;
    REQUIRE_ST(sdxl_naming_create(&cfg, &n, &err), &err);
    const sdxl_name_entry *e = sdxl_naming_find(n, "unet.conv_in.weight");
    REQUIRE(e);
    float whole[1152], part[1152];
    sdxl_make_model_values(9, n, e, 0, 1152, whole);
    sdxl_make_model_values(9, n, e, 0, 1, part);
    sdxl_make_model_values(9, n, e, 1, 6, part + 1);
    sdxl_make_model_values(9, n, e, 7, 1145, part + 7);
    CHECK(memcmp(whole, part, sizeof whole) == 0);

    /* Golden: FNV-1a of every f32 value of tiny for seed 123, so that a
     * change of the generator (which changes every benchmark model) is a
     * decision, not an accident. The same bits on any x86-64 CPU, any ISA
     * level, GCC or clang (no libm, no FMA contraction). */
    uint64_t h = 1469598103934665603ull;
    float *buf = malloc((size_t)4 << 22);
    REQUIRE(buf);
    for (size_t i = 0; i < sdxl_naming_count(n); i++) {
        const sdxl_name_entry *en = sdxl_naming_at(n, i);
        size_t ne = 1;
        for (int d = 0; d < en->ndim; d++)
            ne *= (size_t)en->shape[d];
        REQUIRE(ne <= ((size_t)1 << 22));
        sdxl_make_model_values(123, n, en, 0, ne, buf);
        const unsigned char *bytes = (const unsigned char *)buf;
        for (size_t k = 0; k < ne * 4; k++)
            h = (h ^ bytes[k]) * 1099511628211ull;
    }
    free(buf);
    CHECK_MSG(h == 0xcdbfd919d243ed78ull, "generator output changed: hash %016llx", (unsigned long long)h);
    sdxl_naming_free(n);
    sdxl_model_config_clear(&cfg);
}

TEST(make_model_values_have_the_intended_scale) {
    sdxl_error err = {0};
    const char *out = tmp("scale.safetensors");
    sdxl_make_model_params p = params("tiny", NULL, SDXL_LAYOUT_SGM, SDXL_DTYPE_F32, 3);
    REQUIRE_ST(sdxl_make_model(out, &p, NULL, &err), &err);
    sdxl_weights *w = NULL;
    REQUIRE_ST(sdxl_weights_load(out, NULL, &w, &err), &err);
    int checked = 0;
    for (size_t i = 0; i < sdxl_weights_count(w); i++) {
        const sdxl_weight *wt = sdxl_weights_at(w, i);
        sdxl_weight_init in = expected_init(wt->entry);
        size_t ne = (size_t)sdxl_tensor_nelem(&wt->tensor);
        const float *x = wt->tensor.data;
        double s = 0, s2 = 0, mx = 0;
        for (size_t k = 0; k < ne; k++) {
            double d = x[k] - in.mean;
            s += d;
            s2 += d * d;
            if (fabs(d) > mx) mx = fabs(d);
        }
        double mean = s / (double)ne, sd = sqrt(s2 / (double)ne);
        /* Box-Muller's radius is capped at 5.8 standard deviations */
        CHECK_MSG(mx <= 5.8 * in.std, "%s: max |x - mean| %g > 5.8 std %g", wt->entry->name, mx, in.std);
        if (ne < 4000) continue;
        CHECK_MSG(fabs(sd / in.std - 1) < 0.08, "%s: std %g, expected %g", wt->entry->name, sd, in.std);
        CHECK_MSG(fabs(mean) < 5 * in.std / sqrt((double)ne), "%s: mean %g off", wt->entry->name, mean);
        checked++;
    }
    CHECK(checked > 50);
    sdxl_weights_free(w);
    unlink(out);
}

/* ---- tokenizer files ---------------------------------------------------------------- */

TEST(make_model_clip_tokenizer_dir) {
    sdxl_error err = {0};
    char gz[1024];
    REQUIRE_ST(sdxl_model_find_clip_vocab(NULL, gz, sizeof gz, &err), &err);
    const char *d1 = tmp("tok1"), *d2 = tmp("tok2"), *d3 = tmp("tok3");
    REQUIRE_ST(sdxl_make_clip_tokenizer_dir(d1, gz, 49408, SDXL_TOKENIZER_PAD_EOS, &err), &err);
    REQUIRE_ST(sdxl_make_clip_tokenizer_dir(d2, gz, 49408, SDXL_TOKENIZER_PAD_BANG, &err), &err);
    sdxl_tokenizer *ref[2] = {0}, *got[2] = {0};
    REQUIRE_ST(sdxl_tokenizer_load_clip_default(gz, SDXL_TOKENIZER_PAD_EOS, &ref[0], &err), &err);
    REQUIRE_ST(sdxl_tokenizer_load_clip_default(gz, SDXL_TOKENIZER_PAD_BANG, &ref[1], &err), &err);
    REQUIRE_ST(sdxl_tokenizer_load_dir(d1, &got[0], &err), &err);
    REQUIRE_ST(sdxl_tokenizer_load_dir(d2, &got[1], &err), &err);
    static const char *const prompts[] = {
        "a photo of an astronaut riding a horse on mars",
        "!!! hello!!  Don't <|endoftext|>stop",
        "Ünïcödé — \xe4\xb8\xad\xe6\x96\x87 ok 1234567 (word:1.3) \"quoted\" back\\slash",
        "",
    };
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(sdxl_tokenizer_vocab_size(got[k]), 49408);
        CHECK_EQ_INT(sdxl_tokenizer_pad_id(got[k]), sdxl_tokenizer_pad_id(ref[k]));
        CHECK_EQ_INT(sdxl_tokenizer_bos(got[k]), 49406);
        CHECK_EQ_INT(sdxl_tokenizer_eos(got[k]), 49407);
        CHECK_EQ_INT(sdxl_tokenizer_max_length(got[k]), 77);
        int differ = 0;
        for (int32_t id = 0; id < 49408; id++) {
            const char *a = sdxl_tokenizer_token_str(ref[k], id), *b = sdxl_tokenizer_token_str(got[k], id);
            differ += !a || !b || strcmp(a, b) != 0;
        }
        CHECK_EQ_INT(differ, 0);
        for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++) {
            int32_t *x = NULL, *y = NULL;
            size_t nx = 0, ny = 0;
            REQUIRE_ST(sdxl_tokenizer_encode(ref[k], prompts[i], &x, &nx, &err), &err);
            REQUIRE_ST(sdxl_tokenizer_encode(got[k], prompts[i], &y, &ny, &err), &err);
            CHECK_MSG(nx == ny && memcmp(x, y, nx * sizeof *x) == 0,
                      "tokenizer %d: \"%s\" encodes differently", k, prompts[i]);
            sdxl_free(x);
            sdxl_free(y);
        }
    }
    CHECK_EQ_INT(sdxl_tokenizer_pad_id(got[0]), 49407);
    CHECK_EQ_INT(sdxl_tokenizer_pad_id(got[1]), 0);
    /* the SDXL quirk: "!" is an added token of tokenizer_2 only */
    int32_t *ids = NULL;
    size_t n = 0;
    REQUIRE_ST(sdxl_tokenizer_encode(got[1], "!!!", &ids, &n, &err), &err);
    CHECK(n == 3 && ids[0] == 0 && ids[1] == 0 && ids[2] == 0);
    sdxl_free(ids);
    for (int k = 0; k < 2; k++) {
        sdxl_tokenizer_free(ref[k]);
        sdxl_tokenizer_free(got[k]);
    }

    /* a smaller vocabulary: the first merges only, specials last */
    sdxl_tokenizer *t = NULL;
    REQUIRE_ST(sdxl_make_clip_tokenizer_dir(d3, gz, 1000, SDXL_TOKENIZER_PAD_BANG, &err), &err);
    REQUIRE_ST(sdxl_tokenizer_load_dir(d3, &t, &err), &err);
    CHECK_EQ_INT(sdxl_tokenizer_vocab_size(t), 1000);
    CHECK_EQ_INT(sdxl_tokenizer_eos(t), 999);
    REQUIRE_ST(sdxl_tokenizer_encode(t, "the photograph of a cat", &ids, &n, &err), &err);
    char joined[256] = "";
    for (size_t i = 0; i < n; i++) {
        CHECK(ids[i] >= 0 && ids[i] < 998);
        strncat(joined, sdxl_tokenizer_token_str(t, ids[i]), sizeof joined - strlen(joined) - 1);
    }
    CHECK(strcmp(joined, "the</w>photograph</w>of</w>a</w>cat</w>") == 0 || n > 5);
    CHECK(strstr(joined, "cat</w>") != NULL);
    sdxl_free(ids);
    sdxl_tokenizer_free(t);

    CHECK_EQ_INT(sdxl_make_clip_tokenizer_dir(d3, gz, 513, SDXL_TOKENIZER_PAD_EOS, &err),
                 SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_make_clip_tokenizer_dir(d3, gz, 49409, SDXL_TOKENIZER_PAD_EOS, &err),
                 SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_make_clip_tokenizer_dir(d3, tmp("no.gz"), 1000, SDXL_TOKENIZER_PAD_EOS, &err),
                 SDXL_STATUS_NOT_FOUND);
    rm_rf(d1);
    rm_rf(d2);
    rm_rf(d3);
}

/* ---- failures leave nothing behind -------------------------------------------------- */

static bool cancel_after_first(void *user, uint64_t done, uint64_t total) {
    int *calls = user;
    (void)done, (void)total;
    return ++*calls < 2;
}

TEST(make_model_failures_leave_nothing) {
    sdxl_error err = {0};
    sdxl_make_model_params p = params("tiny", NULL, SDXL_LAYOUT_SGM, SDXL_DTYPE_F16, 0);
    const char *out = tmp("fail.safetensors");

    /* bad parameters */
    p.preset = "nope";
    CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "nope") != NULL);
    p.preset = NULL;
    CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_INVALID_ARG);
    p.preset = "tiny";
    p.config_dir = "somewhere";
    CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_INVALID_ARG);
    p.config_dir = NULL;
    p.fp16_variant = true;
    CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_INVALID_ARG);
    p.fp16_variant = false;
    p.dtype = SDXL_DTYPE_I32;
    CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_INVALID_ARG);
    p.dtype = SDXL_DTYPE_F16;
    CHECK_EQ_INT(sdxl_make_model(NULL, &p, NULL, &err), SDXL_STATUS_INVALID_ARG);
    p.preset = NULL;
    p.config_dir = tmp("no-such-folder");
    CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_NOT_FOUND);
    p.preset = "tiny";
    p.config_dir = NULL;
    CHECK(!exists(out));

    /* an existing output is never replaced */
    FILE *f = fopen(out, "wb");
    REQUIRE(f);
    fputs("keep me", f);
    fclose(f);
    CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_IO);
    CHECK(strstr(err.msg, "already exists") != NULL);
    char *kept = slurp(out, NULL);
    CHECK(kept && !strcmp(kept, "keep me"));
    free(kept);
    unlink(out);
    /* ... except an empty folder for a diffusers model */
    const char *empty = tmp("empty-dir");
    mkdir(empty, 0755);
    p.layout = SDXL_LAYOUT_DIFFUSERS;
    p.verify = false;
    char slash[1100];
    snprintf(slash, sizeof slash, "%s/", empty); /* "dir/" is "dir" */
    REQUIRE_ST(sdxl_make_model(slash, &p, NULL, &err), &err);
    char mi[1200];
    snprintf(mi, sizeof mi, "%s/model_index.json", empty);
    CHECK(exists(mi));
    CHECK_EQ_INT(sdxl_make_model(empty, &p, NULL, &err), SDXL_STATUS_IO); /* now it is not empty */
    rm_rf(empty);

    /* a missing parent folder */
    const char *deep = tmp("missing/parent/model.safetensors");
    p.layout = SDXL_LAYOUT_SGM;
    sdxl_status st = sdxl_make_model(deep, &p, NULL, &err);
    CHECK(st == SDXL_STATUS_IO || st == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "missing/parent") != NULL);
    CHECK(!exists(tmp("missing")));

    /* cancel after the first chunk, in both layouts */
    for (int l = 0; l < 2; l++) {
        int calls = 0;
        p.layout = l ? SDXL_LAYOUT_SGM : SDXL_LAYOUT_DIFFUSERS;
        p.progress = cancel_after_first;
        p.user_data = &calls;
        CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_CANCELLED);
        CHECK_EQ_INT(calls, 2);
        CHECK(!exists(out));
    }
    p.progress = NULL;
    CHECK_EQ_INT(count_named("partial"), 0);
    CHECK_EQ_INT(count_named(".tmp"), 0);
}

/* A copy of tests/data/refs/tiny-sdxl's configs and tokenizers (no weights:
 * make-model reads only those) with `from` replaced by `to` in `file`. */
static bool edited_config_dir(const char *dir, const char *file, const char *from, const char *to) {
    char cmd[2400];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cd '%s' && cp -r model_index.json unet vae text_encoder text_encoder_2 "
             "scheduler tokenizer tokenizer_2 '%s/' && rm '%s'/*/*.safetensors",
             dir, sdxl_test_data("refs/tiny-sdxl"), dir, dir);
    if (system(cmd) != 0) return false;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *text = slurp(path, NULL);
    char *at = text ? strstr(text, from) : NULL;
    bool ok = at != NULL;
    FILE *f = ok ? fopen(path, "wb") : NULL;
    if (f) {
        fwrite(text, 1, (size_t)(at - text), f);
        fputs(to, f);
        fputs(at + strlen(from), f);
        ok = fclose(f) == 0;
    }
    free(text);
    return ok && f;
}

/* A config the single-file layout cannot express (SGM fixes the VAE's
 * force_upcast): refused with the field named, nothing written; the
 * diffusers layout keeps it. */
TEST(make_model_single_file_refuses_what_it_cannot_carry) {
    sdxl_error err = {0};
    const char *src = tmp("odd-config");
    REQUIRE(edited_config_dir(src, "vae/config.json", "\"force_upcast\": true", "\"force_upcast\": false"));
    const char *out = tmp("odd.safetensors");
    sdxl_make_model_params p = params(NULL, src, SDXL_LAYOUT_SGM, SDXL_DTYPE_F16, 0);
    CHECK_EQ_INT(sdxl_make_model(out, &p, NULL, &err), SDXL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "force_upcast") != NULL);
    CHECK(!exists(out));
    CHECK_EQ_INT(count_named("partial"), 0);
    const char *dout = tmp("odd-diffusers");
    p.layout = SDXL_LAYOUT_DIFFUSERS;
    p.verify = false;
    REQUIRE_ST(sdxl_make_model(dout, &p, NULL, &err), &err);
    sdxl_weights *w = NULL;
    REQUIRE_ST(sdxl_weights_load(dout, NULL, &w, &err), &err);
    CHECK(!sdxl_weights_config(w)->vae.force_upcast);
    sdxl_weights_free(w);
    rm_rf(dout);
    rm_rf(src);
}

/* A tensor larger than one write chunk (SDXL_ST_WRITE_CHUNK, 8 MiB) is
 * generated in pieces: a 70000 x 32 f32 token table is 8.96 MB. */
TEST(make_model_splits_large_tensors_across_chunks) {
    sdxl_error err = {0};
    const char *src = tmp("big-vocab");
    REQUIRE(edited_config_dir(src, "text_encoder_2/config.json", "\"vocab_size\": 1000",
                              "\"vocab_size\": 70000"));
    const char *out = tmp("big-vocab.safetensors");
    sdxl_make_model_params p = params(NULL, src, SDXL_LAYOUT_SGM, SDXL_DTYPE_F32, 4);
    p.verify = false;
    REQUIRE_ST(sdxl_make_model(out, &p, NULL, &err), &err);
    sdxl_weights *w = NULL;
    REQUIRE_ST(sdxl_weights_load(out, NULL, &w, &err), &err);
    const sdxl_tensor *t = sdxl_weights_get(w, "te2.text_model.embeddings.token_embedding.weight");
    REQUIRE(t);
    CHECK(sdxl_tensor_nelem(t) * 4 > (int64_t)SDXL_ST_WRITE_CHUNK);
    CHECK_EQ_INT(check_values_seed(w, 4, SDXL_DTYPE_F32), 0);
    sdxl_weights_free(w);
    unlink(out);
    rm_rf(src);
}

TEST(make_model_survives_allocation_failures) {
    sdxl_error err = {0};
    const char *out = tmp("oom.safetensors");
    sdxl_make_model_params p = params(NULL, NULL, SDXL_LAYOUT_SGM, SDXL_DTYPE_F16, 0);
    char srcdir[1024];
    snprintf(srcdir, sizeof srcdir, "%s", sdxl_test_data("refs/tiny-sdxl"));
    p.config_dir = srcdir;
    p.verify = false; /* the loader has its own allocation-failure test */
    int failures = 0;
    for (int64_t n = 1; n < 5000; n += 1 + n / 16) {
        sdxl__alloc_fail_at(n);
        sdxl_status st = sdxl_make_model(out, &p, NULL, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) break;
        failures++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "allocation %lld: status %d: %s", (long long)n, st,
                  err.msg);
        CHECK(!exists(out));
    }
    CHECK(failures >= 5);
    CHECK(exists(out));
    unlink(out);
    CHECK_EQ_INT(count_named("partial"), 0);
}

/* ---- the command --------------------------------------------------------------------- */

/* Run `sdxl make-model args...`; stdout/stderr into *out / *errtxt (free them).
 * Returns the exit status, -1 if it did not exit normally. */
static int run_make_model(const char *const *args, char **out, char **errtxt) {
    const char *argv[64] = {"make-model"};
    int n = 1;
    for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    return sdxl_test_exec(argv, out, errtxt);
}

TEST(make_model_command) {
    if (access(SDXL_BINARY_DIR "/sdxl", X_OK) != 0) {
        sdxl_test_fail(__FILE__, __LINE__, "%s/sdxl is not built", SDXL_BINARY_DIR);
        return;
    }
    char o1[1100], o2[1100], smoke[1100], existing[1100];
    snprintf(o1, sizeof o1, "%s", tmp("cli.safetensors"));
    snprintf(o2, sizeof o2, "%s", tmp("cli-missing/dir/x.safetensors"));
    snprintf(smoke, sizeof smoke, "%s", tmp("cli-smoke.safetensors"));
    snprintf(existing, sizeof existing, "%s", tmp("cli-existing.safetensors"));
    FILE *f = fopen(existing, "wb");
    REQUIRE(f);
    fputs("old", f);
    fclose(f);
    char srcdir[1024];
    snprintf(srcdir, sizeof srcdir, "%s", sdxl_test_data("refs/tiny-sdxl"));
    static const struct {
        const char *args[12];
        int rc;
        const char *stderr_has, *stdout_has;
    } cases[] = {
        {{"--config", "nosuch", "-o", "@1", NULL}, 2, "sdxl-base, tiny", NULL},
        {{"--config", "tiny", "--layout", "zip", "-o", "@1", NULL}, 2, "--layout zip", NULL},
        {{"--config", "tiny", "--dtype", "f8", "-o", "@1", NULL}, 2, "--dtype f8", NULL},
        {{"--config", "tiny", "--seed", "-1", "-o", "@1", NULL}, 2, "--seed", NULL},
        {{"--config", "tiny", "--seed", NULL}, 2, "needs a value", NULL},
        {{"--config", "tiny", "--variant", "fp16", "--dtype", "f32", "-o", "@1", NULL}, 2, "--variant", NULL},
        {{"--config", "tiny", "--bogus", "-o", "@1", NULL}, 2, "--bogus", NULL},
        {{"--config", "tiny", NULL}, 2, "-o PATH", NULL},
        {{"-o", "@1", NULL}, 2, "--config", NULL},
        {{"--smoke", "--config", "tiny", "-o", "@1", NULL}, 2, "--smoke", NULL},
        {{"--config", "tiny", "-o", "@1", "extra", NULL}, 2, "extra", NULL},
        {{"--config", "tiny", "--layout", "single", "-q", "-o", "@2", NULL}, 1, "cli-missing/dir", NULL},
        {{"--config", "tiny", "--layout", "single", "-q", "-o", "@3", NULL}, 1, "already exists", NULL},
        {{"--help", NULL}, 0, NULL, "sdxl-base"},
        {{"--config", "tiny", "--layout", "single", "--seed", "7", "-o", "@1", NULL}, 0, NULL, "loaded back"},
        {{"--config", "@4", "--layout", "single", "-q", "--dtype", "bf16", "-o", "@5", NULL},
         0,
         NULL,
         "wrote"},
        {{"--smoke", "-o", "@6", NULL}, 0, NULL, "wrote"},
    };
    char o5[1100];
    snprintf(o5, sizeof o5, "%s", tmp("cli-copy.safetensors"));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[12];
        for (int k = 0; k < 12; k++) {
            const char *a = cases[i].args[k];
            if (a && a[0] == '@') {
                switch (a[1]) {
                case '1': a = o1; break;
                case '2': a = o2; break;
                case '3': a = existing; break;
                case '4': a = srcdir; break;
                case '5': a = o5; break;
                default: a = smoke; break;
                }
            }
            args[k] = a;
            if (!a) break;
        }
        char *out = NULL, *errt = NULL;
        int rc = run_make_model(args, &out, &errt);
        CHECK_MSG(rc == cases[i].rc, "case %zu: exit %d, expected %d; stderr: %s", i, rc, cases[i].rc,
                  errt ? errt : "");
        if (cases[i].stderr_has)
            CHECK_MSG(errt && strstr(errt, cases[i].stderr_has), "case %zu: stderr lacks \"%s\": %s", i,
                      cases[i].stderr_has, errt ? errt : "");
        if (cases[i].stdout_has)
            CHECK_MSG(out && strstr(out, cases[i].stdout_has), "case %zu: stdout lacks \"%s\": %s", i,
                      cases[i].stdout_has, out ? out : "");
        if (cases[i].rc != 0 && i < 11) CHECK_MSG(!exists(o1), "case %zu left %s", i, o1);
        free(out);
        free(errt);
    }
    char *old = slurp(existing, NULL);
    CHECK(old && !strcmp(old, "old"));
    free(old);
    CHECK(!exists(tmp("cli-missing")));
    /* what the command wrote loads */
    sdxl_error err = {0};
    sdxl_model *m = NULL;
    REQUIRE_ST(sdxl_model_load(o1, NULL, &m, &err), &err);
    CHECK_EQ_INT(check_values_seed(m->weights, 7, SDXL_DTYPE_F16), 0);
    sdxl_model_free(m);
    sdxl_weights *w = NULL;
    REQUIRE_ST(sdxl_weights_load(o5, NULL, &w, &err), &err);
    CHECK_EQ_INT(sdxl_weights_at(w, 0)->tensor.dtype, SDXL_DTYPE_BF16);
    sdxl_weights_free(w);
    /* the smoke stage still runs */
    const char *sargv[] = {SDXL_BINARY_DIR "/sdxl", "smoke", "--model", smoke, "--size", "8", NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 1);
        execv(sargv[0], (char *const *)sargv);
        _exit(127);
    }
    int status = 0;
    REQUIRE(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(count_named("partial"), 0);
    unlink(o1);
    unlink(o5);
    unlink(smoke);
    unlink(existing);
}
