/* conditioning.c - encode_prompt (see conditioning.h). */
#include "model/conditioning.h"

#include <string.h>

#include "core/alloc.h"
#include "model/clip.h"

void sdxl_cond_free(sdxl_cond *c) {
    if (!c) return;
    sdxl_free(c->embeds);
    sdxl_free(c->pooled);
    memset(c, 0, sizeof *c);
}

/* A1111 "Original" emphasis on one row z [T, C]: scale token i by w[i], then
 * restore the row's mean. Rows whose weights are all 1 are left untouched. */
static void emphasize(float *z, const float *w, int T, int C) {
    bool any = false;
    for (int i = 0; i < T; i++) any |= w[i] != 1.0f;
    if (!any) return;
    double m0 = 0, m1 = 0;
    for (int64_t i = 0; i < (int64_t)T * C; i++) m0 += z[i];
    for (int i = 0; i < T; i++)
        for (int c = 0; c < C; c++) z[(int64_t)i * C + c] *= w[i];
    for (int64_t i = 0; i < (int64_t)T * C; i++) m1 += z[i];
    if (m1 == 0) return;
    float r = (float)(m0 / m1); /* means over the same count: the ratio of sums */
    for (int64_t i = 0; i < (int64_t)T * C; i++) z[i] *= r;
}

typedef struct {
    sdxl_token_batch b[2]; /* per tokenizer */
} side_tokens;

static void side_free(side_tokens *s) {
    sdxl_token_batch_free(&s->b[0]);
    sdxl_token_batch_free(&s->b[1]);
}

static sdxl_status tokenize_side(const sdxl_tokenizer *tok1, const sdxl_tokenizer *tok2, const char *p1,
                                 const char *p2, const sdxl_prompt_params *pp, side_tokens *s, sdxl_error *err) {
    sdxl_status st = sdxl_tokenize_prompt(tok1, p1, pp, &s->b[0], err);
    if (!st) st = sdxl_tokenize_prompt(tok2, p2, pp, &s->b[1], err);
    return st;
}

/* Run both encoders once over the rows of every side (positive and negative
 * stacked into one batch: twice the rows per GEMM, one pass over the
 * weights), apply emphasis per row, and assemble each side's output. */
static sdxl_status encode_sides(sdxl_backend *be, const sdxl_weights *w, side_tokens *const *sides, int nsides,
                                int n, sdxl_arena *arena, sdxl_cond *const *outs, sdxl_error *err) {
    const sdxl_model_config *cfg = sdxl_weights_config(w);
    const int C1 = cfg->te[0].hidden_size, C2 = cfg->te[1].hidden_size, T = sides[0]->b[0].chunk_len;
    const int P = cfg->te[1].with_projection ? cfg->te[1].projection_dim : C2;
    const int rows = nsides * n;
    const size_t side_ids = (size_t)n * T;
    int32_t *ids1 = sdxl_malloc((size_t)rows * T * 4), *ids2 = sdxl_malloc((size_t)rows * T * 4);
    float *h1 = sdxl_malloc((size_t)rows * T * C1 * 4), *h2 = sdxl_malloc((size_t)rows * T * C2 * 4);
    float *pooled = sdxl_malloc((size_t)rows * P * 4);
    sdxl_status st = SDXL_STATUS_OK;
    if (!ids1 || !ids2 || !h1 || !h2 || !pooled) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "encode_prompt: %d chunks", rows);
        goto done;
    }
    for (int k = 0; k < nsides; k++) { /* ids [side][chunk][77] */
        memcpy(ids1 + k * side_ids, sides[k]->b[0].ids, side_ids * 4);
        memcpy(ids2 + k * side_ids, sides[k]->b[1].ids, side_ids * 4);
    }
    if ((st = sdxl_clip_encode(be, w, SDXL_COMP_TE1, ids1, rows, T, arena, h1, NULL, err)) ||
        (st = sdxl_clip_encode(be, w, SDXL_COMP_TE2, ids2, rows, T, arena, h2, pooled, err)))
        goto done;
    for (int k = 0; k < nsides; k++) {
        sdxl_cond *out = outs[k];
        float *s1 = h1 + (int64_t)k * side_ids * C1, *s2 = h2 + (int64_t)k * side_ids * C2;
        for (int r = 0; r < n; r++) {
            emphasize(s1 + (int64_t)r * T * C1, sides[k]->b[0].weights + (int64_t)r * T, T, C1);
            emphasize(s2 + (int64_t)r * T * C2, sides[k]->b[1].weights + (int64_t)r * T, T, C2);
        }
        out->n_tokens = n * T;
        out->dim = C1 + C2;
        out->pooled_dim = P;
        out->embeds = sdxl_malloc((size_t)out->n_tokens * (size_t)out->dim * 4);
        out->pooled = sdxl_malloc((size_t)P * 4);
        if (!out->embeds || !out->pooled) {
            st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "encode_prompt: %d chunks", n);
            goto done;
        }
        for (int64_t i = 0; i < (int64_t)n * T; i++) { /* [TE1 | TE2] per token */
            memcpy(out->embeds + i * out->dim, s1 + i * C1, (size_t)C1 * 4);
            memcpy(out->embeds + i * out->dim + C1, s2 + i * C2, (size_t)C2 * 4);
        }
        /* the side's first chunk only, never weighted */
        memcpy(out->pooled, pooled + (int64_t)k * n * P, (size_t)P * 4);
    }
done:
    sdxl_free(ids1);
    sdxl_free(ids2);
    sdxl_free(h1);
    sdxl_free(h2);
    sdxl_free(pooled);
    return st;
}

sdxl_status sdxl_encode_prompts(sdxl_backend *be, const sdxl_weights *w, const sdxl_tokenizer *tok1,
                                const sdxl_tokenizer *tok2, const sdxl_cond_request *req, sdxl_cond *pos,
                                sdxl_cond *neg, sdxl_error *err) {
    memset(pos, 0, sizeof *pos);
    memset(neg, 0, sizeof *neg);
    if (!req || !req->prompt)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "encode_prompt: no prompt");
    const char *p2 = req->prompt_2 ? req->prompt_2 : req->prompt;
    bool zero_neg = !req->negative && req->force_zeros_for_empty_prompt;
    const char *n1 = req->negative ? req->negative : "";
    const char *n2 = req->negative_2 ? req->negative_2 : n1;
    side_tokens sp = {0}, sn = {0};
    sdxl_arena *arena = NULL;
    sdxl_status st = tokenize_side(tok1, tok2, req->prompt, p2, &req->prompt_params, &sp, err);
    if (!st && !zero_neg) st = tokenize_side(tok1, tok2, n1, n2, &req->prompt_params, &sn, err);
    if (st) goto done;
    /* one chunk count for all four token sets, so everything stacks */
    int n = sp.b[0].n_chunks > sp.b[1].n_chunks ? sp.b[0].n_chunks : sp.b[1].n_chunks;
    if (!zero_neg) {
        if (sn.b[0].n_chunks > n) n = sn.b[0].n_chunks;
        if (sn.b[1].n_chunks > n) n = sn.b[1].n_chunks;
    }
    if ((st = sdxl_token_batch_pad_chunks(tok1, &sp.b[0], n, err)) ||
        (st = sdxl_token_batch_pad_chunks(tok2, &sp.b[1], n, err)))
        goto done;
    if (!zero_neg && ((st = sdxl_token_batch_pad_chunks(tok1, &sn.b[0], n, err)) ||
                      (st = sdxl_token_batch_pad_chunks(tok2, &sn.b[1], n, err))))
        goto done;
    const sdxl_model_config *cfg = sdxl_weights_config(w);
    int nsides = zero_neg ? 1 : 2;
    size_t a1 = sdxl_clip_arena_bytes(&cfg->te[0], nsides * n, sp.b[0].chunk_len);
    size_t a2 = sdxl_clip_arena_bytes(&cfg->te[1], nsides * n, sp.b[0].chunk_len);
    arena = sdxl_arena_create(a1 > a2 ? a1 : a2);
    if (!arena) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "encode_prompt: text encoder scratch");
        goto done;
    }
    side_tokens *sides[2] = {&sp, &sn};
    sdxl_cond *outs[2] = {pos, neg};
    if ((st = encode_sides(be, w, sides, nsides, n, arena, outs, err))) goto done;
    if (zero_neg) {
        neg->n_tokens = pos->n_tokens;
        neg->dim = pos->dim;
        neg->pooled_dim = pos->pooled_dim;
        neg->embeds = sdxl_calloc((size_t)pos->n_tokens * (size_t)pos->dim, 4);
        neg->pooled = sdxl_calloc((size_t)pos->pooled_dim, 4);
        if (!neg->embeds || !neg->pooled)
            st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "encode_prompt: negative");
    }
done:
    side_free(&sp);
    side_free(&sn);
    sdxl_arena_free(arena);
    if (st) {
        sdxl_cond_free(pos);
        sdxl_cond_free(neg);
    }
    return st;
}
