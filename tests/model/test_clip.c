/* CLIP text encoders against transformers (tests/data/refs/tiny-sdxl-ref/
 * text_encoders.safetensors: CPU fp32, see shared refs README §2).
 * Tolerance: atol 1e-5 as the refs README suggests; activations are O(1)
 * and five layers of f32 math differ from torch's by ~1e-6. */
#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "io/safetensors.h"
#include "model/clip.h"
#include "test.h"

#define TOL 1e-5

typedef struct {
    sdxl_backend *be;
    sdxl_weights *w;
    sdxl_st_file *ref;
    sdxl_arena *arena;
    int32_t ids[2][4 * 77];
} clip_fixture;

static bool fixture(clip_fixture *f, const char *const *hints) {
    sdxl_error err = {0};
    memset(f, 0, sizeof *f);
    f->be = sdxl_backend_create(NULL, &err);
    sdxl_weights_params p = sdxl_weights_default_params();
    p.hints = hints;
    if (!f->be || sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), &p, &f->w, &err) ||
        sdxl_st_open(sdxl_test_data("refs/tiny-sdxl-ref/text_encoders.safetensors"), &f->ref, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "fixture: %s", err.msg);
        return false;
    }
    for (int e = 0; e < 2; e++) {
        const sdxl_st_tensor *t = sdxl_st_find(f->ref, e ? "te2.input_ids" : "te1.input_ids");
        if (!t || t->dtype != SDXL_ST_I64 || t->nbytes != 4 * 77 * 8) return false;
        for (int i = 0; i < 4 * 77; i++) {
            int64_t v;
            memcpy(&v, (const char *)t->data + 8 * i, 8);
            f->ids[e][i] = (int32_t)v;
        }
    }
    const sdxl_model_config *cfg = sdxl_weights_config(f->w);
    size_t need = sdxl_clip_arena_bytes(&cfg->te[0], 4, 77);
    size_t need2 = sdxl_clip_arena_bytes(&cfg->te[1], 4, 77);
    f->arena = sdxl_arena_create(need > need2 ? need : need2);
    return f->arena != NULL;
}

static void fixture_free(clip_fixture *f) {
    sdxl_arena_free(f->arena);
    sdxl_st_close(f->ref);
    sdxl_weights_free(f->w);
    sdxl_backend_free(f->be);
}

static double diff_ref(const sdxl_st_file *ref, const char *name, const float *got, size_t n) {
    const sdxl_st_tensor *t = sdxl_st_find(ref, name);
    if (!t || t->dtype != SDXL_ST_F32 || t->nbytes != n * 4) return 1e30;
    return sdxl_test_max_abs_diff(got, (const float *)t->data, (long)n);
}

TEST(clip_te1_te2_match_transformers) {
    clip_fixture f;
    if (!fixture(&f, NULL)) return fixture_free(&f);
    sdxl_error err = {0};
    float hid[4 * 77 * 32], pooled[4 * 32];
    REQUIRE_OK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_TE1, f.ids[0], 4, 77, f.arena, hid, pooled, &err), &err);
    double d1 = diff_ref(f.ref, "te1.penultimate", hid, sizeof hid / 4);
    double d2 = diff_ref(f.ref, "te1.pooler_output", pooled, sizeof pooled / 4);
    CHECK_MSG(d1 <= TOL, "te1 penultimate max diff %.3g", d1);
    CHECK_MSG(d2 <= TOL, "te1 pooler max diff %.3g", d2);
    REQUIRE_OK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_TE2, f.ids[1], 4, 77, f.arena, hid, pooled, &err), &err);
    d1 = diff_ref(f.ref, "te2.penultimate", hid, sizeof hid / 4);
    d2 = diff_ref(f.ref, "te2.text_embeds", pooled, sizeof pooled / 4);
    CHECK_MSG(d1 <= TOL, "te2 penultimate max diff %.3g", d1);
    CHECK_MSG(d2 <= TOL, "te2 text_embeds max diff %.3g", d2);
    /* hidden only: stops early, same numbers */
    float hid2[4 * 77 * 32];
    REQUIRE_OK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_TE2, f.ids[1], 4, 77, f.arena, hid2, NULL, &err), &err);
    CHECK(memcmp(hid, hid2, sizeof hid) == 0);
    fixture_free(&f);
}

/* Every hidden state (0 = embeddings ... 5 = last layer, no final LN), picked through the
 * config's hidden_state_index, so a mismatch says which layer went wrong. */
TEST(clip_every_hidden_state_matches) {
    for (int idx = 0; idx <= 5; idx++) {
        char v[8];
        snprintf(v, sizeof v, "%d", idx);
        const char *hints[] = {"te1.hidden_state_index", v, "te2.hidden_state_index", v, NULL};
        clip_fixture f;
        if (!fixture(&f, hints)) return fixture_free(&f);
        sdxl_error err = {0};
        float hid[4 * 77 * 32];
        for (int e = 0; e < 2; e++) {
            REQUIRE_OK(sdxl_clip_encode(f.be, f.w, e ? SDXL_COMP_TE2 : SDXL_COMP_TE1, f.ids[e], 4, 77, f.arena, hid,
                                        NULL, &err),
                       &err);
            char name[64];
            snprintf(name, sizeof name, "te%d.hidden_states.%d", e + 1, idx);
            double d = diff_ref(f.ref, name, hid, sizeof hid / 4);
            CHECK_MSG(d <= TOL, "%s max diff %.3g", name, d);
        }
        fixture_free(&f);
    }
}

/* The activation comes from the config: the same TE1 weights with quick_gelu (real CLIP-L). */
TEST(clip_quick_gelu_from_config) {
    const char *hints[] = {"te1.hidden_act", "quick_gelu", NULL};
    clip_fixture f;
    if (!fixture(&f, hints)) return fixture_free(&f);
    sdxl_error err = {0};
    float hid[4 * 77 * 32], pooled[4 * 32];
    REQUIRE_OK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_TE1, f.ids[0], 4, 77, f.arena, hid, pooled, &err), &err);
    double d1 = diff_ref(f.ref, "te1_quickgelu.penultimate", hid, sizeof hid / 4);
    double d2 = diff_ref(f.ref, "te1_quickgelu.pooler_output", pooled, sizeof pooled / 4);
    CHECK_MSG(d1 <= TOL, "quick_gelu penultimate max diff %.3g", d1);
    CHECK_MSG(d2 <= TOL, "quick_gelu pooler max diff %.3g", d2);
    /* and it is really different from the gelu run */
    CHECK(diff_ref(f.ref, "te1.penultimate", hid, sizeof hid / 4) > 1e-4);
    fixture_free(&f);
}

TEST(clip_rejects_bad_ids_and_sizes) {
    clip_fixture f;
    if (!fixture(&f, NULL)) return fixture_free(&f);
    sdxl_error err = {0};
    float hid[77 * 32];
    int32_t ids[77];
    memcpy(ids, f.ids[0], sizeof ids);
    ids[5] = 1000; /* vocab is 1000 */
    CHECK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_TE1, ids, 1, 77, f.arena, hid, NULL, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "1000") != NULL);
    ids[5] = -1;
    CHECK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_TE1, ids, 1, 77, f.arena, hid, NULL, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_TE1, f.ids[0], 1, 78, f.arena, hid, NULL, &err) ==
          SDXL_STATUS_INVALID_ARG);
    CHECK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_UNET, f.ids[0], 1, 77, f.arena, hid, NULL, &err) ==
          SDXL_STATUS_INVALID_ARG);
    sdxl_arena *tiny = sdxl_arena_create(1024);
    CHECK(sdxl_clip_encode(f.be, f.w, SDXL_COMP_TE1, f.ids[0], 1, 77, tiny, hid, NULL, &err) ==
          SDXL_STATUS_OUT_OF_MEMORY);
    sdxl_arena_free(tiny);
    fixture_free(&f);
}
