/* Tests of model/weights (and single-file config inference):
 *   - the tiny diffusers folder: every expected tensor, zero-copy;
 *   - an SGM single file generated here from that folder through the naming
 *     in reverse (sdxl_weights_write_single_file): the same config and
 *     bit-identical tensors from both layouts; q/k/v views, the transposed
 *     projection, the VAE 1x1-conv reshape; sidecar yaml and hint
 *     precedence, the documented inference defaults;
 *   - the shared reference single files (tiny_sdxl_sgm and the demo model),
 *     only when ../shared exists next to the source tree;
 *   - the full-size SDXL base in both layouts from the key lists, as sparse
 *     header-only files (no data written; nothing large is created);
 *   - hostile inputs: missing / mis-shaped / I64 tensors, unknown extras,
 *     missing files, wrong variants, pickles, bad shards, yaml that disagrees;
 *   - misaligned sources, dtype conversion, sharded folders;
 *   - the LoRA hook (source, read_original, set_data);
 *   - allocation failure at every allocation of a load. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/naming.h"
#include "model/weights.h"
#include "test.h"

#define REQUIRE_ST(expr, errp)                                                                               \
    do {                                                                                                     \
        sdxl_error *ep_ = (errp);                                                                            \
        REQUIRE_OK(expr, ep_);                                                                               \
    } while (0)

#ifndef SDXL_TEST_DATA_DIR
#define SDXL_TEST_DATA_DIR "tests/data"
#endif

static const char *tmp_path(const char *name) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", sdxl_test_tmpdir(), name);
    return b;
}

static bool exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static bool spit(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static bool copy_file(const char *src, const char *dst) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    bool ok = a && b;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0)
        ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = false;
    return ok;
}

/* A path under ../shared next to the source tree, or NULL if absent. */
static const char *shared_path(const char *rel) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/../../../shared/%s", SDXL_TEST_DATA_DIR, rel);
    return exists(b) ? b : NULL;
}

static int cmp_tensors(const sdxl_tensor *a, const sdxl_tensor *b) {
    if (!a || !b || a->dtype != b->dtype || !sdxl_tensor_same_shape(a, b)) return -1;
    return memcmp(a->data, b->data, sdxl_tensor_nbytes(a)) ? 1 : 0;
}

/* Every weight of a equals (name, dtype, shape, bytes) the one of b. */
static int count_mismatches(const sdxl_weights *a, const sdxl_weights *b) {
    if (sdxl_weights_count(a) != sdxl_weights_count(b)) return -1;
    int bad = 0;
    for (size_t i = 0; i < sdxl_weights_count(a); i++) {
        const sdxl_weight *w = sdxl_weights_at(a, i);
        if (cmp_tensors(&w->tensor, sdxl_weights_get(b, w->entry->name))) {
            if (bad < 5) printf("    mismatch: %s\n", w->entry->name);
            bad++;
        }
    }
    return bad;
}

/* ---- rewriting safetensors files -------------------------------------------- */

typedef struct {
    sdxl_st_write_entry e[4096];
    int64_t shapes[4096][8];
    size_t n;
} entries;

static void entries_from(const sdxl_st_file *f, entries *x) {
    x->n = 0;
    for (size_t i = 0; i < sdxl_st_count(f) && i < 4096; i++) {
        const sdxl_st_tensor *t = sdxl_st_at(f, i);
        memcpy(x->shapes[x->n], t->shape, sizeof x->shapes[0]);
        x->e[x->n] = (sdxl_st_write_entry){t->name, t->dtype, t->ndim, x->shapes[x->n], t->data};
        x->n++;
    }
}

static sdxl_st_write_entry *entries_find(entries *x, const char *name) {
    for (size_t i = 0; i < x->n; i++)
        if (strcmp(x->e[i].name, name) == 0) return &x->e[i];
    return NULL;
}

static void entries_drop(entries *x, const char *name) {
    for (size_t i = 0; i < x->n; i++) {
        if (strcmp(x->e[i].name, name) == 0) {
            memmove(&x->e[i], &x->e[i + 1], (x->n - i - 1) * sizeof x->e[0]);
            memmove(x->shapes[i], x->shapes[i + 1], (x->n - i - 1) * sizeof x->shapes[0]);
            for (size_t k = i; k < x->n - 1; k++)
                x->e[k].shape = x->shapes[k];
            x->n--;
            return;
        }
    }
}

typedef void (*modify_fn)(entries *x);

/* tmp/<name>: a diffusers folder; component `comp` (or -1) gets config.json
 * copied and its weights rewritten through `mod` (file name `file`, NULL:
 * the standard one); the others are symlinks to the tiny reference. */
static const char *model_dir(const char *name, int comp, modify_fn mod, const char *file) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", sdxl_test_tmpdir(), name);
    mkdir(dir, 0700);
    char src[1200], dst[1200];
    snprintf(dst, sizeof dst, "%s/model_index.json", dir);
    if (!copy_file(sdxl_test_data("refs/tiny-sdxl/model_index.json"), dst)) return NULL;
    snprintf(dst, sizeof dst, "%s/scheduler", dir);
    snprintf(src, sizeof src, "%s", sdxl_test_data("refs/tiny-sdxl/scheduler"));
    if (symlink(src, dst) != 0) return NULL;
    for (int c = 0; c < SDXL_COMP_COUNT_; c++) {
        const char *folder = sdxl_component_folder((sdxl_component)c);
        char rel[256];
        snprintf(rel, sizeof rel, "refs/tiny-sdxl/%s", folder);
        snprintf(src, sizeof src, "%s", sdxl_test_data(rel));
        snprintf(dst, sizeof dst, "%s/%s", dir, folder);
        if (c != comp) {
            if (symlink(src, dst) != 0) return NULL;
            continue;
        }
        mkdir(dst, 0700);
        char a[1300], b[1300];
        snprintf(a, sizeof a, "%s/config.json", src);
        snprintf(b, sizeof b, "%s/config.json", dst);
        if (!copy_file(a, b)) return NULL;
        const char *base = c <= SDXL_COMP_VAE ? "diffusion_pytorch_model.safetensors" : "model.safetensors";
        snprintf(a, sizeof a, "%s/%s", src, base);
        snprintf(b, sizeof b, "%s/%s", dst, file ? file : base);
        sdxl_st_file *f = NULL;
        if (sdxl_st_open(a, &f, NULL)) return NULL;
        static entries x;
        entries_from(f, &x);
        if (mod) mod(&x);
        sdxl_status st = sdxl_st_write(b, x.e, x.n, NULL, NULL);
        sdxl_st_close(f);
        if (st) return NULL;
    }
    return dir;
}

/* ---- sparse header-only files ------------------------------------------------ */

typedef struct {
    const char *key;
    const char *dtype;
    int ndim;
    int64_t shape[8];
} sparse_t;

static size_t dsize(const char *d) {
    return !strcmp(d, "F32") || !strcmp(d, "I32") ? 4 : !strcmp(d, "I64") ? 8 : 2;
}

/* Write the header of a safetensors file holding `n` tensors back to back
 * and extend the file to its full size without writing data (a sparse file:
 * no disk blocks, reads give zeros). */
static bool write_sparse(const char *path, const sparse_t *t, size_t n) {
    size_t cap = 256 + n * 256, len = 0;
    char *h = malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = dsize(t[i].dtype);
        len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                                t[i].key, t[i].dtype);
        for (int k = 0; k < t[i].ndim; k++) {
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
            nb *= (uint64_t)t[i].shape[k];
        }
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8)
        h[len++] = ' ';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    bool ok = fd >= 0;
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)((uint64_t)len >> (8 * i));
    ok = ok && write(fd, hdr, 8) == 8 && write(fd, h, len) == (ssize_t)len;
    ok = ok && ftruncate(fd, (off_t)(8 + len + off)) == 0;
    if (fd >= 0) close(fd);
    free(h);
    return ok;
}

/* Rows of a key TSV: key column, shape column; dtype forced. */
static sparse_t *tsv_sparse(const char *rel, int key_col, int shape_col, const char *filter_prefix,
                            const char *dtype, size_t *n, char **keep) {
    FILE *f = fopen(sdxl_test_data(rel), "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) len = 0;
    buf[len] = 0;
    fclose(f);
    sparse_t *t = calloc(4096, sizeof *t);
    *n = 0;
    char *save = NULL;
    bool header = true;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (header) {
            header = false;
            continue;
        }
        char *cols[6] = {0};
        int nc = 0;
        cols[nc++] = line;
        for (char *p = line; *p && nc < 6; p++)
            if (*p == '\t') *p = 0, cols[nc++] = p + 1;
        if (filter_prefix && strncmp(cols[0], filter_prefix, strlen(filter_prefix)) != 0) continue;
        sparse_t *s = &t[(*n)++];
        s->key = cols[key_col];
        s->dtype = dtype;
        const char *p = cols[shape_col] + 1;
        while (*p && *p != ']') {
            s->shape[s->ndim++] = strtoll(p, (char **)&p, 10);
            while (*p == ',' || *p == ' ')
                p++;
        }
    }
    *keep = buf;
    return t;
}

/* ---- tests -------------------------------------------------------------------- */

TEST(weights_tiny_diffusers) {
    sdxl_error err = {0};
    sdxl_weights *w = NULL;
    REQUIRE_ST(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, &err), &err);
    CHECK(sdxl_weights_layout(w) == SDXL_LAYOUT_DIFFUSERS);
    CHECK_EQ_INT(sdxl_weights_count(w), 721);
    CHECK_EQ_INT(sdxl_weights_unknown_count(w), 0);
    CHECK_EQ_INT(sdxl_weights_owned_bytes(w), 0);
    CHECK_EQ_INT(sdxl_weights_file_count(w), 4);
    int per[4] = {0};
    for (size_t i = 0; i < sdxl_weights_count(w); i++) {
        const sdxl_weight *x = sdxl_weights_at(w, i);
        per[x->entry->comp]++;
        CHECK(x->tensor.ndim == x->entry->ndim);
        for (int k = 0; k < x->entry->ndim; k++)
            CHECK(x->tensor.ne[k] == x->entry->shape[k]);
        CHECK(x->tensor.dtype == SDXL_DTYPE_F32);
        CHECK(x->owned == NULL);
        /* zero-copy: the bytes of the mapped file */
        const sdxl_st_tensor *t = sdxl_st_find(sdxl_weights_file(w, (size_t)x->file), x->entry->src[0].key);
        CHECK(t && t == x->src && t->data == x->tensor.data);
    }
    CHECK_EQ_INT(per[0], 428);
    CHECK_EQ_INT(per[1], 124);
    CHECK_EQ_INT(per[2], 84);
    CHECK_EQ_INT(per[3], 85);
    const sdxl_tensor *t = sdxl_weights_get(w, "unet.down_blocks.1.attentions.0.proj_in.weight");
    REQUIRE(t);
    CHECK(t->ne[0] == 64 && t->ne[1] == 64);
    CHECK(sdxl_weights_get(w, "unet.nothing") == NULL);
    const sdxl_tensor *r = NULL;
    CHECK(sdxl_weights_require(w, "vae.decoder.conv_in.weight", &r, &err) == SDXL_STATUS_OK && r);
    CHECK(sdxl_weights_require(w, "vae.decoder.conv_in.wait", &r, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "vae.decoder.conv_in.wait") != NULL);
    const sdxl_model_config *c = sdxl_weights_config(w);
    CHECK_EQ_INT(c->unet.block_out_channels[1], 64);
    CHECK(sdxl_naming_count(sdxl_weights_naming(w)) == 721);
    sdxl_weights_free(w);
    sdxl_weights_free(NULL);
}

/* The tiny model as a generated SGM single file (shared by several tests). */
static const char *gen_sgm(void) {
    static char path[1024];
    if (path[0] && exists(path)) return path;
    snprintf(path, sizeof path, "%s", tmp_path("tiny_gen.safetensors"));
    sdxl_weights *w = NULL;
    if (sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &w, NULL)) return NULL;
    const char *meta[] = {"description", "generated by test_weights.c", NULL};
    sdxl_status st = sdxl_weights_write_single_file(w, path, meta, NULL);
    sdxl_weights_free(w);
    return st ? NULL : path;
}

TEST(weights_sgm_roundtrip) {
    sdxl_error err = {0};
    sdxl_weights *d = NULL, *s = NULL;
    REQUIRE_ST(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &d, &err), &err);
    const char *path = gen_sgm();
    REQUIRE(path);
    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(path, &f, &err), &err);
    CHECK_EQ_INT(sdxl_st_count(f), 701); /* as the reference converter writes it */
    CHECK(sdxl_st_metadata(f, "description") != NULL);
    CHECK(sdxl_st_metadata(f, "unet.num_heads") && strcmp(sdxl_st_metadata(f, "unet.num_heads"), "2,4") == 0);
    sdxl_st_close(f);
    REQUIRE_ST(sdxl_weights_load(path, NULL, &s, &err), &err);
    CHECK(sdxl_weights_layout(s) == SDXL_LAYOUT_SGM);
    char what[64] = "";
    CHECK_MSG(sdxl_model_config_equal(sdxl_weights_config(d), sdxl_weights_config(s), what, sizeof what),
              "configs differ in %s", what);
    CHECK(sdxl_weights_config(s)->scheduler_is_default);
    CHECK_EQ_INT(count_mismatches(d, s), 0);
    CHECK_EQ_INT(sdxl_weights_unknown_count(s), 0);
    /* zero-copy slices of in_proj; one materialized transpose */
    const sdxl_st_file *sf = sdxl_weights_file(s, 0);
    const sdxl_st_tensor *inp =
        sdxl_st_find(sf, "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight");
    REQUIRE(inp);
    static const char *const qkv[3] = {"q", "k", "v"};
    for (int k = 0; k < 3; k++) {
        char name[128];
        snprintf(name, sizeof name, "te2.text_model.encoder.layers.2.self_attn.%s_proj.weight", qkv[k]);
        const sdxl_weight *x =
            sdxl_weights_at(s, (size_t)sdxl_naming_index(sdxl_weights_naming(s),
                                                         sdxl_naming_find(sdxl_weights_naming(s), name)));
        REQUIRE(x);
        CHECK(x->owned == NULL && x->xform == SDXL_XFORM_ROWS);
        CHECK((const uint8_t *)x->tensor.data == (const uint8_t *)inp->data + (size_t)k * 32 * 32 * 4);
    }
    size_t owned = 0;
    for (size_t i = 0; i < sdxl_weights_count(s); i++) {
        const sdxl_weight *x = sdxl_weights_at(s, i);
        if (x->owned) {
            owned++;
            CHECK(strcmp(x->entry->name, "te2.text_projection.weight") == 0);
        }
    }
    CHECK_EQ_INT(owned, 1);
    CHECK_EQ_INT(sdxl_weights_owned_bytes(s), 32 * 32 * 4);
    /* the format facts, stated here independently of the naming: in_proj =
     * q;k;v rows; text_projection stored [hidden, proj] = transpose */
    for (int k = 0; k < 3; k++) {
        char name[128];
        snprintf(name, sizeof name, "te2.text_model.encoder.layers.2.self_attn.%s_proj.weight", qkv[k]);
        const sdxl_tensor *dq = sdxl_weights_get(d, name);
        REQUIRE(dq);
        CHECK(memcmp((const float *)inp->data + k * 32 * 32, dq->data, 32 * 32 * 4) == 0);
    }
    const sdxl_st_tensor *tp = sdxl_st_find(sf, "conditioner.embedders.1.model.text_projection");
    const sdxl_tensor *dp = sdxl_weights_get(d, "te2.text_projection.weight");
    REQUIRE(tp && dp);
    int tbad = 0;
    for (int r = 0; r < 32; r++)
        for (int c = 0; c < 32; c++)
            tbad += ((const float *)tp->data)[c * 32 + r] != ((const float *)dp->data)[r * 32 + c];
    CHECK_EQ_INT(tbad, 0);
    CHECK(((const float *)tp->data)[1] != ((const float *)dp->data)[1]); /* not symmetric by accident */
    const sdxl_tensor *q = sdxl_weights_get(s, "vae.encoder.mid_block.attentions.0.to_q.weight");
    REQUIRE(q);
    CHECK(q->ndim == 2 && q->ne[0] == 64 && q->ne[1] == 64);
    CHECK(q->data == sdxl_st_find(sf, "first_stage_model.encoder.mid.attn_1.q.weight")->data);
    sdxl_weights_free(s);
    sdxl_weights_free(d);
}

TEST(weights_sgm_linear_forms) {
    /* VAE attention as Linear [C,C] and text_projection.weight [proj,hidden]:
     * both occur in single files in the wild */
    sdxl_error err = {0};
    const char *gen = gen_sgm();
    REQUIRE(gen);
    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(gen, &f, &err), &err);
    static entries x;
    entries_from(f, &x);
    sdxl_st_write_entry *e = entries_find(&x, "first_stage_model.decoder.mid.attn_1.k.weight");
    REQUIRE(e);
    e->ndim = 2;
    sdxl_weights *d = NULL, *s = NULL;
    REQUIRE_ST(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &d, &err), &err);
    e = entries_find(&x, "conditioner.embedders.1.model.text_projection");
    REQUIRE(e);
    e->name = "conditioner.embedders.1.model.text_projection.weight";
    e->data = sdxl_weights_get(d, "te2.text_projection.weight")->data;
    const char *path = tmp_path("linear_forms.safetensors");
    REQUIRE_ST(sdxl_st_write(path, x.e, x.n, NULL, &err), &err);
    sdxl_st_close(f);
    REQUIRE_ST(sdxl_weights_load(path, NULL, &s, &err), &err);
    CHECK_EQ_INT(count_mismatches(d, s), 0);
    CHECK_EQ_INT(sdxl_weights_unknown_count(s), 0);
    CHECK_EQ_INT(sdxl_weights_owned_bytes(s), 0);
    sdxl_weights_free(s);
    sdxl_weights_free(d);
}

TEST(weights_sgm_inference_defaults_and_sidecar) {
    sdxl_error err = {0};
    const char *gen = gen_sgm();
    REQUIRE(gen);
    /* the same tensors without any metadata: the documented defaults */
    char plain[1024];
    snprintf(plain, sizeof plain, "%s", tmp_path("plain.safetensors"));
    {
        sdxl_st_file *f = NULL;
        REQUIRE_ST(sdxl_st_open(gen, &f, &err), &err);
        static entries x;
        entries_from(f, &x);
        REQUIRE_ST(sdxl_st_write(plain, x.e, x.n, NULL, &err), &err);
        sdxl_st_close(f);
    }
    sdxl_weights *w = NULL;
    REQUIRE_ST(sdxl_weights_load(plain, NULL, &w, &err), &err);
    const sdxl_model_config *c = sdxl_weights_config(w);
    CHECK_EQ_INT(c->unet.num_levels, 2);
    CHECK_EQ_INT(c->unet.layers_per_block, 2);
    CHECK_EQ_INT(c->unet.down_num_heads[1], 1); /* 64 channels / head width 64 */
    CHECK_EQ_INT(c->unet.up_transformer_layers[0], 2);
    CHECK_EQ_INT(c->unet.mid_transformer_layers, 2);
    CHECK_EQ_INT(c->unet.addition_time_embed_dim, 8); /* (80 - 32) / 6 */
    CHECK_EQ_INT(c->te[0].num_heads, 4);              /* tiny-CLIP rule */
    CHECK(c->te[0].hidden_act == SDXL_ACT_QUICK_GELU);
    CHECK(c->te[1].hidden_act == SDXL_ACT_GELU);
    CHECK_EQ_INT(c->te[0].hidden_state_index, 4);
    CHECK_EQ_INT(c->te[1].projection_dim, 32);
    CHECK_NEAR(c->vae.scaling_factor, 0.13025, 0);
    CHECK(c->vae.force_upcast);
    sdxl_weights_free(w);

    /* sidecar <stem>.yaml: beats metadata; hints beat it */
    char dir[1024], file[1100], yaml[1100];
    snprintf(dir, sizeof dir, "%s", tmp_path("side"));
    mkdir(dir, 0700);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    snprintf(yaml, sizeof yaml, "%s/model.yaml", dir);
    REQUIRE(copy_file(gen, file));
    REQUIRE(spit(yaml, "model:\n"
                       "  params:\n"
                       "    scale_factor: 0.5\n"
                       "    network_config:\n"
                       "      params:\n"
                       "        model_channels: 32\n"
                       "        channel_mult: [1, 2]\n"
                       "        num_res_blocks: 2\n"
                       "        num_head_channels: 32\n"
                       "        transformer_depth: [0, 2]\n"
                       "        transformer_depth_middle: 2\n"
                       "        context_dim: 64\n"
                       "        adm_in_channels: 80\n"
                       "    conditioner_config:\n"
                       "      params:\n"
                       "        emb_models:\n"
                       "        - target: sgm.modules.encoders.modules.FrozenCLIPEmbedder\n"
                       "          params:\n"
                       "            layer: hidden\n"
                       "            layer_idx: 3\n"
                       "            hidden_act: quick_gelu\n"
                       "        - target: sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2\n"
                       "          params:\n"
                       "            layer: penultimate\n"
                       "            num_attention_heads: 2\n"
                       "        - target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND\n"
                       "          params:\n"
                       "            outdim: 8\n"
                       "    first_stage_config:\n"
                       "      params:\n"
                       "        ddconfig:\n"
                       "          ch: 32\n"
                       "          ch_mult: [1, 2]\n"
                       "          num_res_blocks: 1\n"
                       "          z_channels: 4\n"));
    REQUIRE_ST(sdxl_weights_load(file, NULL, &w, &err), &err);
    c = sdxl_weights_config(w);
    CHECK_NEAR(c->vae.scaling_factor, 0.5, 0);
    CHECK_EQ_INT(c->unet.down_num_heads[1], 2);
    CHECK_EQ_INT(c->te[0].hidden_state_index, 3);
    CHECK(c->te[0].hidden_act == SDXL_ACT_QUICK_GELU);
    CHECK_EQ_INT(c->te[1].num_heads, 2);
    sdxl_weights_free(w);
    sdxl_weights_params p = sdxl_weights_default_params();
    const char *hints[] = {"scaling_factor", "0.25", "te2.hidden_act", "gelu_new", NULL};
    p.hints = hints;
    REQUIRE_ST(sdxl_weights_load(file, &p, &w, &err), &err);
    CHECK_NEAR(sdxl_weights_config(w)->vae.scaling_factor, 0.25, 0);
    CHECK(sdxl_weights_config(w)->te[1].hidden_act == SDXL_ACT_GELU_TANH);
    CHECK_EQ_INT(sdxl_weights_config(w)->unet.down_num_heads[1], 2);
    sdxl_weights_free(w);
    p = sdxl_weights_default_params();
    p.ignore_sidecar = true; /* back to the file's metadata */
    REQUIRE_ST(sdxl_weights_load(file, &p, &w, &err), &err);
    CHECK_NEAR(sdxl_weights_config(w)->vae.scaling_factor, 0.13025, 0);
    CHECK_EQ_INT(sdxl_weights_config(w)->unet.down_num_heads[1], 4);
    sdxl_weights_free(w);
    p.ignore_sidecar = false;
    p.yaml_path = yaml; /* explicit, for the plain file */
    REQUIRE_ST(sdxl_weights_load(plain, &p, &w, &err), &err);
    CHECK_NEAR(sdxl_weights_config(w)->vae.scaling_factor, 0.5, 0);
    sdxl_weights_free(w);
    /* config from a diffusers folder */
    p = sdxl_weights_default_params();
    p.config_dir = sdxl_test_data("refs/tiny-sdxl");
    REQUIRE_ST(sdxl_weights_load(plain, &p, &w, &err), &err);
    CHECK(sdxl_weights_config(w)->te[0].hidden_act == SDXL_ACT_GELU);
    CHECK_EQ_INT(sdxl_weights_config(w)->unet.down_num_heads[1], 4);
    CHECK(!sdxl_weights_config(w)->scheduler_is_default);
    sdxl_weights_free(w);

    /* a yaml that disagrees with the tensors */
    static const struct {
        const char *yaml, *msg;
    } bad[] = {
        {"model:\n  params:\n    network_config:\n      params:\n        transformer_depth: [0, 3]\n",
         "transformer_depth.1 is 3"},
        {"model:\n  params:\n    network_config:\n      params:\n        context_dim: 2048\n",
         "context_dim is 2048"},
        {"model:\n  params:\n    network_config:\n      params:\n        channel_mult: [1, 2, 4]\n",
         "channel_mult"},
        {"model:\n  params:\n    first_stage_config:\n      params:\n        ddconfig:\n          ch_mult: "
         "[1, 4]\n",
         "ch_mult.1"},
        {"model:\n  params:\n    scale_factor: zero\n", "scale_factor"},
        {"model:\n  params:\n    network_config:\n      params:\n        num_head_channels: 24\n",
         "not divisible"},
        {"model:\n  params:\n    network_config:\n      params:\n        num_res_blocks: two\n",
         "num_res_blocks"},
        {"model:\n\tparams: 1\n", "tab"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        REQUIRE(spit(yaml, bad[i].yaml));
        w = (sdxl_weights *)1;
        sdxl_status st = sdxl_weights_load(file, NULL, &w, &err);
        CHECK_MSG(st == SDXL_STATUS_BAD_INPUT, "case %zu: status %d: %s", i, st, err.msg);
        CHECK(w == NULL);
        CHECK_MSG(strstr(err.msg, bad[i].msg) &&
                      (strstr(err.msg, "model.yaml") || strstr(err.msg, "model.safetensors")),
                  "case %zu: %s", i, err.msg);
    }
}

TEST(weights_shared_reference_single_files) {
    sdxl_error err = {0};
    const char *sgm = shared_path("refs/tiny-sdxl-sgm/tiny_sdxl_sgm.safetensors");
    if (!sgm) {
        printf("    (../shared/refs not present: skipped)\n");
        return;
    }
    sdxl_weights *d = NULL, *s = NULL;
    REQUIRE_ST(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &d, &err), &err);
    /* its sidecar tiny_sdxl_sgm.yaml gives num_head_channels 16 and
     * layer_idx 4; nothing in the file says the tiny TEs use gelu */
    sdxl_weights_params p = sdxl_weights_default_params();
    const char *hints[] = {"te1.hidden_act", "gelu", NULL};
    p.hints = hints;
    REQUIRE_ST(sdxl_weights_load(sgm, &p, &s, &err), &err);
    char what[64] = "";
    CHECK_MSG(sdxl_model_config_equal(sdxl_weights_config(d), sdxl_weights_config(s), what, sizeof what),
              "configs differ in %s", what);
    CHECK_EQ_INT(count_mismatches(d, s), 0);
    CHECK_EQ_INT(sdxl_weights_unknown_count(s), 0);
    sdxl_weights_free(s);
    sdxl_weights_free(d);

    const char *demo = shared_path("demo/model-single-file/demo_sdxl.safetensors");
    const char *demo_dir = shared_path("demo/model");
    if (!demo || !demo_dir) return;
    REQUIRE_ST(sdxl_weights_load(demo_dir, NULL, &d, &err), &err);
    REQUIRE_ST(sdxl_weights_load(demo, NULL, &s, &err), &err); /* yaml + metadata say everything */
    CHECK_MSG(sdxl_model_config_equal(sdxl_weights_config(d), sdxl_weights_config(s), what, sizeof what),
              "demo configs differ in %s", what);
    CHECK_NEAR(sdxl_weights_config(s)->vae.scaling_factor, 0.26039, 0);
    CHECK_EQ_INT(sdxl_weights_config(s)->vae.num_levels, 3);
    CHECK_EQ_INT(sdxl_weights_count(s), 428 + 152 + 52 + 53);
    CHECK_EQ_INT(count_mismatches(d, s), 0);
    sdxl_weights_free(s);
    sdxl_weights_free(d);
}

static const char *const sdxl_base_configs[6][2] = {
    {"model_index.json",
     "{\"_class_name\": \"StableDiffusionXLPipeline\", \"_diffusers_version\": \"0.19.0.dev0\","
     "\"force_zeros_for_empty_prompt\": true, \"scheduler\": [\"diffusers\", \"EulerDiscreteScheduler\"],"
     "\"text_encoder\": [\"transformers\", \"CLIPTextModel\"],"
     "\"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"],"
     "\"tokenizer\": [\"transformers\", \"CLIPTokenizer\"], \"tokenizer_2\": [\"transformers\", "
     "\"CLIPTokenizer\"],"
     "\"unet\": [\"diffusers\", \"UNet2DConditionModel\"], \"vae\": [\"diffusers\", \"AutoencoderKL\"]}"},
    {"unet/config.json",
     "{\"_class_name\": \"UNet2DConditionModel\", \"act_fn\": \"silu\", \"addition_embed_type\": "
     "\"text_time\","
     "\"addition_embed_type_num_heads\": 64, \"addition_time_embed_dim\": 256, \"attention_head_dim\": [5, "
     "10, 20],"
     "\"block_out_channels\": [320, 640, 1280], \"center_input_sample\": false, \"class_embed_type\": null,"
     "\"class_embeddings_concat\": false, \"conv_in_kernel\": 3, \"conv_out_kernel\": 3, "
     "\"cross_attention_dim\": 2048,"
     "\"cross_attention_norm\": null, \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\","
     "\"CrossAttnDownBlock2D\"], \"downsample_padding\": 1, \"dual_cross_attention\": false, "
     "\"encoder_hid_dim\": null,"
     "\"encoder_hid_dim_type\": null, \"flip_sin_to_cos\": true, \"freq_shift\": 0, \"in_channels\": 4,"
     "\"layers_per_block\": 2, \"mid_block_only_cross_attention\": null, \"mid_block_scale_factor\": 1,"
     "\"mid_block_type\": \"UNetMidBlock2DCrossAttn\", \"norm_eps\": 1e-05, \"norm_num_groups\": 32,"
     "\"num_attention_heads\": null, \"num_class_embeds\": null, \"only_cross_attention\": false, "
     "\"out_channels\": 4,"
     "\"projection_class_embeddings_input_dim\": 2816, \"resnet_out_scale_factor\": 1.0,"
     "\"resnet_skip_time_act\": false, \"resnet_time_scale_shift\": \"default\", \"sample_size\": 128,"
     "\"time_cond_proj_dim\": null, \"time_embedding_act_fn\": null, \"time_embedding_dim\": null,"
     "\"time_embedding_type\": \"positional\", \"timestep_post_act\": null, "
     "\"transformer_layers_per_block\": [1, 2, 10],"
     "\"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"], "
     "\"upcast_attention\": null,"
     "\"use_linear_projection\": true}"},
    {"vae/config.json",
     "{\"_class_name\": \"AutoencoderKL\", \"act_fn\": \"silu\", \"block_out_channels\": [128, 256, 512, "
     "512],"
     "\"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\","
     "\"DownEncoderBlock2D\"], \"force_upcast\": true, \"in_channels\": 3, \"latent_channels\": 4,"
     "\"layers_per_block\": 2, \"norm_num_groups\": 32, \"out_channels\": 3, \"sample_size\": 1024,"
     "\"scaling_factor\": 0.13025, \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\","
     "\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}"},
    {"text_encoder/config.json",
     "{\"architectures\": [\"CLIPTextModel\"], \"bos_token_id\": 0, \"eos_token_id\": 2, \"hidden_act\": "
     "\"quick_gelu\","
     "\"hidden_size\": 768, \"intermediate_size\": 3072, \"layer_norm_eps\": 1e-05, "
     "\"max_position_embeddings\": 77,"
     "\"model_type\": \"clip_text_model\", \"num_attention_heads\": 12, \"num_hidden_layers\": 12,"
     "\"pad_token_id\": 1, \"projection_dim\": 768, \"vocab_size\": 49408}"},
    {"text_encoder_2/config.json",
     "{\"architectures\": [\"CLIPTextModelWithProjection\"], \"bos_token_id\": 0, \"eos_token_id\": 2,"
     "\"hidden_act\": \"gelu\", \"hidden_size\": 1280, \"intermediate_size\": 5120, \"layer_norm_eps\": "
     "1e-05,"
     "\"max_position_embeddings\": 77, \"model_type\": \"clip_text_model\", \"num_attention_heads\": 20,"
     "\"num_hidden_layers\": 32, \"pad_token_id\": 1, \"projection_dim\": 1280, \"vocab_size\": 49408}"},
    {"scheduler/scheduler_config.json", NULL},
};

static const char sd_xl_base_yaml[] =
    "model:\n"
    "  target: sgm.models.diffusion.DiffusionEngine\n"
    "  params:\n"
    "    scale_factor: 0.13025\n"
    "    disable_first_stage_autocast: True\n"
    "\n"
    "    denoiser_config:\n"
    "      target: sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser\n"
    "      params:\n"
    "        num_idx: 1000\n"
    "\n"
    "        scaling_config:\n"
    "          target: sgm.modules.diffusionmodules.denoiser_scaling.EpsScaling\n"
    "        discretization_config:\n"
    "          target: sgm.modules.diffusionmodules.discretizer.LegacyDDPMDiscretization\n"
    "\n"
    "    network_config:\n"
    "      target: sgm.modules.diffusionmodules.openaimodel.UNetModel\n"
    "      params:\n"
    "        adm_in_channels: 2816\n"
    "        num_classes: sequential\n"
    "        use_checkpoint: True\n"
    "        in_channels: 4\n"
    "        out_channels: 4\n"
    "        model_channels: 320\n"
    "        attention_resolutions: [4, 2]\n"
    "        num_res_blocks: 2\n"
    "        channel_mult: [1, 2, 4]\n"
    "        num_head_channels: 64\n"
    "        use_spatial_transformer: True\n"
    "        use_linear_in_transformer: True\n"
    "        transformer_depth: [1, 2, 10]  # note: the first is unused (no attn at level 0)\n"
    "        context_dim: 2048\n"
    "        spatial_transformer_attn_type: softmax-xformers\n"
    "        legacy: False\n"
    "\n"
    "    conditioner_config:\n"
    "      target: sgm.modules.GeneralConditioner\n"
    "      params:\n"
    "        emb_models:\n"
    "          # crossattn cond\n"
    "          - is_trainable: False\n"
    "            input_key: txt\n"
    "            target: sgm.modules.encoders.modules.FrozenCLIPEmbedder\n"
    "            params:\n"
    "              layer: hidden\n"
    "              layer_idx: 11\n"
    "          # crossattn and vector cond\n"
    "          - is_trainable: False\n"
    "            input_key: txt\n"
    "            target: sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2\n"
    "            params:\n"
    "              arch: ViT-bigG-14\n"
    "              version: laion2b_s39b_b160k\n"
    "              freeze: True\n"
    "              layer: penultimate\n"
    "              always_return_pooled: True\n"
    "              legacy: False\n"
    "          # vector cond\n"
    "          - is_trainable: False\n"
    "            input_key: original_size_as_tuple\n"
    "            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND\n"
    "            params:\n"
    "              outdim: 256  # multiplied by two\n"
    "          - is_trainable: False\n"
    "            input_key: crop_coords_top_left\n"
    "            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND\n"
    "            params:\n"
    "              outdim: 256\n"
    "\n"
    "    first_stage_config:\n"
    "      target: sgm.models.autoencoder.AutoencoderKLInferenceWrapper\n"
    "      params:\n"
    "        embed_dim: 4\n"
    "        monitor: val/rec_loss\n"
    "        ddconfig:\n"
    "          attn_type: vanilla-xformers\n"
    "          double_z: true\n"
    "          z_channels: 4\n"
    "          resolution: 256\n"
    "          in_channels: 3\n"
    "          out_ch: 3\n"
    "          ch: 128\n"
    "          ch_mult: [1, 2, 4, 4]\n"
    "          num_res_blocks: 2\n"
    "          attn_resolutions: []\n"
    "          dropout: 0.0\n"
    "        lossconfig:\n"
    "          target: torch.nn.Identity\n";

static void check_sdxl_base(const sdxl_model_config *c) {
    const sdxl_unet_config *u = &c->unet;
    CHECK_EQ_INT(u->num_levels, 3);
    CHECK(u->block_out_channels[0] == 320 && u->block_out_channels[1] == 640 &&
          u->block_out_channels[2] == 1280);
    CHECK(u->down_transformer_layers[0] == 0 && u->down_transformer_layers[1] == 2 &&
          u->down_transformer_layers[2] == 10);
    CHECK(u->up_transformer_layers[0] == 10 && u->up_transformer_layers[1] == 2 &&
          u->up_transformer_layers[2] == 0);
    CHECK_EQ_INT(u->mid_transformer_layers, 10);
    CHECK(u->down_num_heads[1] == 10 && u->down_num_heads[2] == 20 && u->mid_num_heads == 20);
    CHECK(u->up_num_heads[0] == 20 && u->up_num_heads[1] == 10);
    CHECK_EQ_INT(u->cross_attention_dim, 2048);
    CHECK_EQ_INT(u->projection_class_embeddings_input_dim, 2816);
    CHECK_EQ_INT(u->addition_time_embed_dim, 256);
    CHECK_EQ_INT(u->time_embed_dim, 1280);
    CHECK(u->use_linear_projection);
    const sdxl_vae_config *v = &c->vae;
    CHECK_EQ_INT(v->num_levels, 4);
    CHECK(v->block_out_channels[0] == 128 && v->block_out_channels[1] == 256 &&
          v->block_out_channels[2] == 512 && v->block_out_channels[3] == 512);
    CHECK_EQ_INT(v->layers_per_block, 2);
    CHECK_NEAR(v->scaling_factor, 0.13025, 0);
    CHECK(c->te[0].hidden_size == 768 && c->te[0].num_layers == 12 && c->te[0].num_heads == 12);
    CHECK(c->te[0].hidden_act == SDXL_ACT_QUICK_GELU && c->te[0].hidden_state_index == 11);
    CHECK(c->te[1].hidden_size == 1280 && c->te[1].num_layers == 32 && c->te[1].num_heads == 20);
    CHECK(c->te[1].hidden_act == SDXL_ACT_GELU && c->te[1].projection_dim == 1280);
    CHECK(c->te[1].intermediate_size == 5120 && c->te[0].vocab_size == 49408);
}

TEST(weights_sdxl_base_full_size_sparse) {
    sdxl_error err = {0};
    /* SGM single file, f16, + the position_ids buffer official files carry */
    size_t n = 0;
    char *keep = NULL;
    sparse_t *t = tsv_sparse("refs/sdxl-base-keys-sgm.tsv", 0, 1, NULL, "F16", &n, &keep);
    REQUIRE(t);
    CHECK_EQ_INT(n, 2513);
    t[n++] = (sparse_t){
        "conditioner.embedders.0.transformer.text_model.embeddings.position_ids", "I64", 2, {1, 77}};
    const char *sgm = tmp_path("sdxl_base_sparse.safetensors");
    REQUIRE(write_sparse(sgm, t, n));
    /* with a sidecar shaped like Stability's sd_xl_base.yaml */
    REQUIRE(spit(tmp_path("sdxl_base_sparse.yaml"), sd_xl_base_yaml));
    free(t);
    free(keep);
    sdxl_weights *s = NULL, *d = NULL;
    REQUIRE_ST(sdxl_weights_load(sgm, NULL, &s, &err), &err);
    check_sdxl_base(sdxl_weights_config(s));
    CHECK_EQ_INT(sdxl_weights_count(s), 2641);
    CHECK_EQ_INT(sdxl_weights_unknown_count(s), 1);
    CHECK_EQ_INT(sdxl_weights_owned_bytes(s), 1280 * 1280 * 2); /* text_projection */
    { /* the sidecar was read: a wrong depth in it is caught */
        char *y = strdup(sd_xl_base_yaml);
        char *at = strstr(y, "[1, 2, 10]");
        REQUIRE(at);
        memcpy(at, "[1, 2,  9]", 10);
        REQUIRE(spit(tmp_path("sdxl_base_sparse.yaml"), y));
        free(y);
        sdxl_weights *bad = NULL;
        CHECK(sdxl_weights_load(sgm, NULL, &bad, &err) == SDXL_STATUS_BAD_INPUT);
        CHECK_MSG(strstr(err.msg, "transformer_depth.2 is 9") && strstr(err.msg, "line 32"), "%s", err.msg);
        unlink(tmp_path("sdxl_base_sparse.yaml"));
    }
    for (size_t i = 0; i < sdxl_weights_count(s); i++) {
        const sdxl_weight *x = sdxl_weights_at(s, i);
        CHECK(x->tensor.dtype == SDXL_DTYPE_F16 && x->tensor.ndim == x->entry->ndim);
        for (int k = 0; k < SDXL_MAX_DIMS; k++)
            CHECK(x->tensor.ne[k] == x->entry->shape[k]);
    }

    /* diffusers folder of fp16 variant files (the only ones there: AUTO takes them) */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tmp_path("sdxl_base_diffusers"));
    mkdir(dir, 0700);
    static const char *const subs[5] = {"unet", "vae", "text_encoder", "text_encoder_2", "scheduler"};
    for (int i = 0; i < 5; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, subs[i]);
        mkdir(p, 0700);
    }
    for (int i = 0; i < 6; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, sdxl_base_configs[i][0]);
        REQUIRE(spit(p, sdxl_base_configs[i][1] ? sdxl_base_configs[i][1]
                                                : sdxl_model_config_default_scheduler_json()));
    }
    static const char *const files[4][2] = {{"unet/", "unet/diffusion_pytorch_model.fp16.safetensors"},
                                            {"vae/", "vae/diffusion_pytorch_model.fp16.safetensors"},
                                            {"text_encoder/", "text_encoder/model.fp16.safetensors"},
                                            {"text_encoder_2/", "text_encoder_2/model.fp16.safetensors"}};
    size_t total = 0;
    for (int c = 0; c < 4; c++) {
        t = tsv_sparse("refs/sdxl-base-keys-diffusers.tsv", 1, 2, files[c][0], "F16", &n, &keep);
        REQUIRE(t);
        total += n;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, files[c][1]);
        REQUIRE(write_sparse(p, t, n));
        free(t);
        free(keep);
    }
    CHECK_EQ_INT(total, 2641);
    REQUIRE_ST(sdxl_weights_load(dir, NULL, &d, &err), &err);
    check_sdxl_base(sdxl_weights_config(d));
    char what[64] = "";
    CHECK_MSG(sdxl_model_config_equal(sdxl_weights_config(d), sdxl_weights_config(s), what, sizeof what),
              "inferred SDXL config differs from the diffusers one in %s", what);
    CHECK_EQ_INT(sdxl_weights_count(d), 2641);
    CHECK_EQ_INT(sdxl_weights_unknown_count(d), 0);
    CHECK_EQ_INT(sdxl_weights_owned_bytes(d), 0);
    for (size_t i = 0; i < sdxl_weights_count(d); i++) {
        const sdxl_weight *x = sdxl_weights_at(d, i);
        const sdxl_tensor *y = sdxl_weights_get(s, x->entry->name);
        CHECK(y && sdxl_tensor_same_shape(&x->tensor, y));
    }
    sdxl_weights_params p = sdxl_weights_default_params();
    p.variant = SDXL_VARIANT_DEFAULT;
    sdxl_weights *none = NULL;
    CHECK(sdxl_weights_load(dir, &p, &none, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "fp16 variant is there") != NULL);
    sdxl_weights_free(d);
    sdxl_weights_free(s);
    unlink(sgm);
}

/* ---- hostile inputs ------------------------------------------------------------- */

static void drop_fc1_bias(entries *x) {
    entries_drop(x, "text_model.encoder.layers.2.mlp.fc1.bias");
}
static void transpose_fc1(entries *x) {
    sdxl_st_write_entry *e = entries_find(x, "text_model.encoder.layers.1.mlp.fc1.weight");
    int64_t *s = (int64_t *)e->shape;
    int64_t a = s[0];
    s[0] = s[1];
    s[1] = a;
}
static int64_t i64_zeros[32];
static void make_i64(entries *x) {
    sdxl_st_write_entry *e = entries_find(x, "text_model.final_layer_norm.bias");
    e->dtype = SDXL_ST_I64;
    e->data = i64_zeros;
}
static const float extra_vals[77];
static void add_extra(entries *x) {
    static int64_t sh[2] = {1, 77};
    x->e[x->n++] =
        (sdxl_st_write_entry){"text_model.embeddings.position_ids", SDXL_ST_F32, 2, sh, extra_vals};
}

TEST(weights_hostile_inputs) {
    sdxl_error err = {0};
    sdxl_weights *w = NULL;
    const char *dir = model_dir("h_missing", SDXL_COMP_TE1, drop_fc1_bias, NULL);
    REQUIRE(dir);
    CHECK(sdxl_weights_load(dir, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT && w == NULL);
    CHECK_MSG(strstr(err.msg, "te1.text_model.encoder.layers.2.mlp.fc1.bias") &&
                  strstr(err.msg, "\"text_model.encoder.layers.2.mlp.fc1.bias\"") &&
                  strstr(err.msg, "[37]") && strstr(err.msg, "h_missing/text_encoder/model.safetensors") &&
                  strstr(err.msg, "missing"),
              "%s", err.msg);
    dir = model_dir("h_shape", SDXL_COMP_TE1, transpose_fc1, NULL);
    REQUIRE(dir);
    CHECK(sdxl_weights_load(dir, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "te1.text_model.encoder.layers.1.mlp.fc1.weight") &&
                  strstr(err.msg, "[32, 37]") && strstr(err.msg, "expects [37, 32]") &&
                  strstr(err.msg, "h_shape/text_encoder"),
              "%s", err.msg);
    dir = model_dir("h_i64", SDXL_COMP_TE1, make_i64, NULL);
    REQUIRE(dir);
    CHECK(sdxl_weights_load(dir, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "te1.text_model.final_layer_norm.bias") && strstr(err.msg, "I64"), "%s",
              err.msg);
    dir = model_dir("h_extra", SDXL_COMP_TE1, add_extra, NULL);
    REQUIRE(dir);
    REQUIRE_ST(sdxl_weights_load(dir, NULL, &w, &err), &err);
    CHECK_EQ_INT(sdxl_weights_unknown_count(w), 1);
    sdxl_weights_free(w);
    /* variant asked for but absent; only a .bin */
    sdxl_weights_params p = sdxl_weights_default_params();
    p.variant = SDXL_VARIANT_FP16;
    CHECK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), &p, &w, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "fp16") && strstr(err.msg, "unet"));
    dir = model_dir("h_bin", SDXL_COMP_VAE, NULL, "diffusion_pytorch_model.bin");
    REQUIRE(dir);
    CHECK(sdxl_weights_load(dir, NULL, &w, &err) == SDXL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, ".bin") && strstr(err.msg, "safetensors"));
    /* bad params, paths */
    p = sdxl_weights_default_params();
    p.convert = true;
    p.dtype = SDXL_DTYPE_I32;
    CHECK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), &p, &w, &err) == SDXL_STATUS_INVALID_ARG);
    p = sdxl_weights_default_params();
    const char *badhint[] = {"unet.heads", "3", NULL};
    p.hints = badhint;
    CHECK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), &p, &w, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "unet.heads") != NULL);
    CHECK(sdxl_weights_load(tmp_path("no_such_model"), NULL, &w, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(sdxl_weights_load(NULL, NULL, &w, &err) == SDXL_STATUS_INVALID_ARG);
    const char *ckpt = tmp_path("model.ckpt");
    REQUIRE(spit(ckpt, "PK"));
    CHECK(sdxl_weights_load(ckpt, NULL, &w, &err) == SDXL_STATUS_UNSUPPORTED);
    const char *junk = tmp_path("junk.safetensors");
    REQUIRE(spit(junk, "this is not a safetensors file"));
    CHECK(sdxl_weights_load(junk, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT);
    /* a diffusers component file given as a single file */
    CHECK(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl/text_encoder/model.safetensors"), NULL, &w,
                            &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(
        strstr(err.msg, "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight") &&
            strstr(err.msg, "missing"),
        "%s", err.msg);

    /* single files with a missing / mis-shaped tensor */
    const char *gen = gen_sgm();
    REQUIRE(gen);
    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(gen, &f, &err), &err);
    static entries x;
    entries_from(f, &x);
    entries_drop(&x, "first_stage_model.decoder.up.0.block.1.conv2.bias");
    const char *bad = tmp_path("bad_sgm.safetensors");
    REQUIRE_ST(sdxl_st_write(bad, x.e, x.n, NULL, &err), &err);
    CHECK(sdxl_weights_load(bad, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "vae.decoder.up_blocks.1.resnets.1.conv2.bias") &&
                  strstr(err.msg, "first_stage_model.decoder.up.0.block.1.conv2.bias") &&
                  strstr(err.msg, "bad_sgm"),
              "%s", err.msg);
    entries_from(f, &x);
    sdxl_st_write_entry *e =
        entries_find(&x, "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_bias");
    REQUIRE(e);
    ((int64_t *)e->shape)[0] = 48;
    e->data = extra_vals; /* 48 floats fit in it */
    REQUIRE_ST(sdxl_st_write(bad, x.e, x.n, NULL, &err), &err);
    CHECK(sdxl_weights_load(bad, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "te2.text_model.encoder.layers.0.self_attn.q_proj.bias") &&
                  strstr(err.msg, "[48]") && strstr(err.msg, "[96]"),
              "%s", err.msg);
    /* the UNet structure inference rejects inconsistent block lists */
    entries_from(f, &x);
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.in_layers.0.weight");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.in_layers.0.bias");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.in_layers.2.weight");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.in_layers.2.bias");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.emb_layers.1.weight");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.emb_layers.1.bias");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.out_layers.0.weight");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.out_layers.0.bias");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.out_layers.3.weight");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.out_layers.3.bias");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.skip_connection.weight");
    entries_drop(&x, "model.diffusion_model.output_blocks.5.0.skip_connection.bias");
    REQUIRE_ST(sdxl_st_write(bad, x.e, x.n, NULL, &err), &err);
    CHECK(sdxl_weights_load(bad, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "5 output_blocks") != NULL, "%s", err.msg);
    entries_from(f, &x);
    entries_drop(&x, "model.diffusion_model.label_emb.0.0.weight");
    REQUIRE_ST(sdxl_st_write(bad, x.e, x.n, NULL, &err), &err);
    CHECK(sdxl_weights_load(bad, NULL, &w, &err) == SDXL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "label_emb") && strstr(err.msg, "not an SDXL"));
    sdxl_st_close(f);
}

static void fp16_first(entries *x) {
    /* an odd-length f16 tensor first: every f32 tensor after it is at an
     * offset = 2 (mod 4) */
    sdxl_st_write_entry *e = entries_find(x, "text_model.encoder.layers.0.mlp.fc1.bias");
    static uint16_t h[37];
    sdxl_f32_to_f16_n(e->data, h, 37);
    sdxl_st_write_entry copy = *e;
    copy.dtype = SDXL_ST_F16;
    copy.data = h;
    size_t i = (size_t)(e - x->e);
    int64_t sh[8];
    memcpy(sh, x->shapes[i], sizeof sh);
    memmove(&x->e[1], &x->e[0], i * sizeof x->e[0]);
    memmove(x->shapes[1], x->shapes[0], i * sizeof x->shapes[0]);
    memcpy(x->shapes[0], sh, sizeof sh);
    x->e[0] = copy;
    for (size_t k = 0; k < x->n; k++)
        x->e[k].shape = x->shapes[k];
}

TEST(weights_misaligned_and_convert) {
    sdxl_error err = {0};
    sdxl_weights *ref = NULL, *w = NULL;
    REQUIRE_ST(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &ref, &err), &err);
    const char *dir = model_dir("misaligned", SDXL_COMP_TE1, fp16_first, NULL);
    REQUIRE(dir);
    REQUIRE_ST(sdxl_weights_load(dir, NULL, &w, &err), &err);
    int copies = 0, same = 0;
    for (size_t i = 0; i < sdxl_weights_count(w); i++) {
        const sdxl_weight *x = sdxl_weights_at(w, i);
        if (x->entry->comp != SDXL_COMP_TE1) continue;
        if (!strcmp(x->entry->name, "te1.text_model.encoder.layers.0.mlp.fc1.bias")) {
            CHECK(x->tensor.dtype == SDXL_DTYPE_F16);
            continue;
        }
        CHECK(((uintptr_t)x->tensor.data & 3) == 0);
        if (x->owned) copies++;
        same += cmp_tensors(&x->tensor, sdxl_weights_get(ref, x->entry->name)) == 0;
    }
    CHECK_EQ_INT(copies, 83);
    CHECK_EQ_INT(same, 83);
    sdxl_weights_free(w);

    /* convert everything to f16, and the f16 tensor back to f32 */
    sdxl_weights_params p = sdxl_weights_default_params();
    p.convert = true;
    p.dtype = SDXL_DTYPE_F16;
    REQUIRE_ST(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), &p, &w, &err), &err);
    int bad = 0;
    size_t bytes = 0;
    for (size_t i = 0; i < sdxl_weights_count(w); i++) {
        const sdxl_weight *x = sdxl_weights_at(w, i);
        const sdxl_tensor *r = sdxl_weights_get(ref, x->entry->name);
        bytes += sdxl_tensor_nbytes(&x->tensor);
        if (x->tensor.dtype != SDXL_DTYPE_F16 || !x->owned) {
            bad++;
            continue;
        }
        const float *rf = r->data;
        const uint16_t *h = x->tensor.data;
        for (int64_t k = 0; k < sdxl_tensor_nelem(r); k++)
            bad += h[k] != sdxl_f32_to_f16(rf[k]);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(sdxl_weights_owned_bytes(w), bytes);
    /* the original (f32) values are still derivable */
    size_t idx = (size_t)sdxl_naming_index(sdxl_weights_naming(w),
                                           sdxl_naming_find(sdxl_weights_naming(w), "unet.conv_in.weight"));
    float orig[32 * 4 * 9];
    REQUIRE_ST(sdxl_weights_read_original(w, idx, orig, SDXL_DTYPE_F32, &err), &err);
    CHECK(memcmp(orig, sdxl_weights_get(ref, "unet.conv_in.weight")->data, sizeof orig) == 0);
    sdxl_weights_free(w);
    p.dtype = SDXL_DTYPE_F32;
    REQUIRE_ST(sdxl_weights_load(dir, &p, &w, &err), &err);
    const sdxl_tensor *b = sdxl_weights_get(w, "te1.text_model.encoder.layers.0.mlp.fc1.bias");
    REQUIRE(b);
    CHECK(b->dtype == SDXL_DTYPE_F32);
    const float *rb = sdxl_weights_get(ref, "te1.text_model.encoder.layers.0.mlp.fc1.bias")->data;
    bad = 0;
    for (int k = 0; k < 37; k++)
        bad += ((const float *)b->data)[k] != sdxl_f16_to_f32(sdxl_f32_to_f16(rb[k]));
    CHECK_EQ_INT(bad, 0);
    sdxl_weights_free(w);
    sdxl_weights_free(ref);
}

TEST(weights_sharded_folder) {
    sdxl_error err = {0};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", model_dir("sharded", SDXL_COMP_TE2, NULL, "unused.safetensors"));
    REQUIRE(dir[0]);
    char p1[1200], p2[1200], idx[1200], plain[1200];
    snprintf(p1, sizeof p1, "%s/text_encoder_2/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/text_encoder_2/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/text_encoder_2/model.safetensors.index.json", dir);
    snprintf(plain, sizeof plain, "%s/text_encoder_2/unused.safetensors", dir);
    sdxl_st_file *f = NULL;
    REQUIRE_ST(sdxl_st_open(plain, &f, &err), &err);
    static entries x;
    entries_from(f, &x);
    size_t half = x.n / 2;
    REQUIRE_ST(sdxl_st_write(p1, x.e, half, NULL, &err), &err);
    REQUIRE_ST(sdxl_st_write(p2, x.e + half, x.n - half, NULL, &err), &err);
    char *json = malloc(65536);
    size_t o = (size_t)snprintf(json, 65536, "{\"metadata\": {}, \"weight_map\": {");
    for (size_t i = 0; i < x.n; i++)
        o += (size_t)snprintf(json + o, 65536 - o, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                              i ? "," : "", x.e[i].name, i < half ? 1 : 2);
    snprintf(json + o, 65536 - o, "}}");
    REQUIRE(spit(idx, json));
    sdxl_st_close(f);
    unlink(plain);
    sdxl_weights *w = NULL, *ref = NULL;
    REQUIRE_ST(sdxl_weights_load(dir, NULL, &w, &err), &err);
    REQUIRE_ST(sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &ref, &err), &err);
    CHECK_EQ_INT(sdxl_weights_file_count(w), 5);
    CHECK_EQ_INT(count_mismatches(ref, w), 0);
    sdxl_weights_free(w);
    sdxl_weights_free(ref);
    REQUIRE(spit(idx, "{\"weight_map\": {\"a\": \"../../escape.safetensors\"}}"));
    CHECK(sdxl_weights_load(dir, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "index.json") && strstr(err.msg, "plain *.safetensors file name"));
    REQUIRE(spit(idx, "{\"weight_map\": []}"));
    CHECK(sdxl_weights_load(dir, NULL, &w, &err) == SDXL_STATUS_BAD_INPUT);
    free(json);
}

TEST(weights_lora_hook) {
    sdxl_error err = {0};
    const char *gen = gen_sgm();
    REQUIRE(gen);
    sdxl_weights *w = NULL;
    REQUIRE_ST(sdxl_weights_load(gen, NULL, &w, &err), &err);
    static const char *const names[] = {
        "te2.text_model.encoder.layers.1.self_attn.v_proj.weight", "te2.text_projection.weight",
        "vae.decoder.mid_block.attentions.0.to_v.weight", "unet.conv_in.weight",
        "te2.text_model.encoder.layers.4.self_attn.k_proj.bias"};
    static const sdxl_xform xf[] = {SDXL_XFORM_ROWS, SDXL_XFORM_TRANSPOSE, SDXL_XFORM_RESHAPE,
                                    SDXL_XFORM_NONE, SDXL_XFORM_ROWS};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const sdxl_naming *nm = sdxl_weights_naming(w);
        long i = sdxl_naming_index(nm, sdxl_naming_find(nm, names[k]));
        REQUIRE(i >= 0);
        const sdxl_weight *x = sdxl_weights_at(w, (size_t)i);
        sdxl_weight_source src;
        REQUIRE(sdxl_weights_source(w, (size_t)i, &src) == SDXL_STATUS_OK);
        CHECK(src.xform == xf[k] && strcmp(src.path, gen) == 0 && src.tensor == x->src);
        CHECK(strcmp(src.key, x->entry->src[SDXL_LAYOUT_SGM].key) == 0);
        size_t nb = sdxl_tensor_nbytes(&x->tensor);
        float *orig = sdxl_malloc(nb), *over = sdxl_malloc(nb), *again = sdxl_malloc(nb);
        REQUIRE(orig && over && again);
        REQUIRE_ST(sdxl_weights_read_original(w, (size_t)i, orig, SDXL_DTYPE_F32, &err), &err);
        CHECK(memcmp(orig, x->tensor.data, nb) == 0);
        for (size_t e = 0; e < nb / 4; e++)
            over[e] = orig[e] + 1.0f;
        const sdxl_tensor *t = sdxl_weights_get(w, names[k]);
        REQUIRE_ST(sdxl_weights_set_data(w, (size_t)i, over, &err), &err);
        CHECK(sdxl_weights_get(w, names[k]) == t && t->data == over); /* same struct, new data */
        REQUIRE_ST(sdxl_weights_read_original(w, (size_t)i, again, SDXL_DTYPE_F32, &err), &err);
        CHECK(memcmp(orig, again, nb) == 0);
        REQUIRE_ST(sdxl_weights_set_data(w, (size_t)i, NULL, &err), &err);
        CHECK(t->data == x->base_data && memcmp(t->data, orig, nb) == 0);
        CHECK(sdxl_weights_set_data(w, (size_t)i, (char *)over + 2, &err) == SDXL_STATUS_INVALID_ARG);
        sdxl_free(orig);
        sdxl_free(over);
        sdxl_free(again);
    }
    float dummy[4];
    CHECK(sdxl_weights_read_original(w, 100000, dummy, SDXL_DTYPE_F32, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_weights_read_original(w, 0, dummy, SDXL_DTYPE_I32, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_weights_set_data(w, 100000, NULL, &err) == SDXL_STATUS_INVALID_ARG);
    sdxl_weight_source src;
    CHECK(sdxl_weights_source(w, 100000, &src) == SDXL_STATUS_INVALID_ARG);
    /* f16 read of an f32 weight rounds like dtype.h */
    uint16_t h[64];
    long i = sdxl_naming_index(sdxl_weights_naming(w),
                               sdxl_naming_find(sdxl_weights_naming(w), "unet.conv_in.bias"));
    REQUIRE_ST(sdxl_weights_read_original(w, (size_t)i, h, SDXL_DTYPE_F16, &err), &err);
    const float *b = sdxl_weights_get(w, "unet.conv_in.bias")->data;
    int bad = 0;
    for (int k = 0; k < 32; k++)
        bad += h[k] != sdxl_f32_to_f16(b[k]);
    CHECK_EQ_INT(bad, 0);
    sdxl_weights_free(w);
}

/* Fail allocation k of a load for k = 1, 2, ... (after the first 100, every
 * `stride`-th, to bound the time of loads that allocate per tensor). */
static void alloc_fail_loop(const char *path, const sdxl_weights_params *p, int min_fails, int stride) {
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    int fails = 0;
    for (int64_t k = 1; k < 100000; k += k < 100 ? 1 : stride) {
        sdxl__alloc_fail_at(k);
        sdxl_weights *w = NULL;
        sdxl_error err = {0};
        sdxl_status st = sdxl_weights_load(path, p, &w, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) {
            sdxl_weights_free(w);
            break;
        }
        fails++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "%s: alloc %lld: status %d: %s", path, (long long)k, st,
                  err.msg);
        CHECK(w == NULL);
        sdxl_mem_get_stats(&s1);
        CHECK_MSG(s1.live_bytes == s0.live_bytes && s1.mapped_bytes == s0.mapped_bytes,
                  "%s: alloc %lld: leaked %lld bytes / %lld mapped", path, (long long)k,
                  (long long)(s1.live_bytes - s0.live_bytes), (long long)(s1.mapped_bytes - s0.mapped_bytes));
    }
    CHECK_MSG(fails >= min_fails, "%s: only %d allocations failed", path, fails);
}

TEST(weights_alloc_failures) {
    alloc_fail_loop(sdxl_test_data("refs/tiny-sdxl"), NULL, 40, 1);
    const char *gen = gen_sgm();
    REQUIRE(gen);
    /* single file + sidecar + hints; then with a conversion (one owned
     * buffer per tensor) */
    char dir[1024], file[1100], yaml[1100];
    snprintf(dir, sizeof dir, "%s", tmp_path("oom"));
    mkdir(dir, 0700);
    snprintf(file, sizeof file, "%s/m.safetensors", dir);
    snprintf(yaml, sizeof yaml, "%s/m.yaml", dir);
    REQUIRE(copy_file(gen, file));
    REQUIRE(spit(yaml, "model:\n  params:\n    scale_factor: 0.2\n    network_config:\n      params:\n"
                       "        num_head_channels: 16\n"));
    sdxl_weights_params p = sdxl_weights_default_params();
    const char *hints[] = {"te1.hidden_act", "gelu", NULL};
    p.hints = hints;
    alloc_fail_loop(file, &p, 40, 1);
    p.convert = true;
    p.dtype = SDXL_DTYPE_BF16;
    alloc_fail_loop(file, &p, 100, 61);
}
