/* cmd_encode.c - `sdxl encode`: a prompt through the tokenizers and text
 * encoders, as generation will condition on it. Shows the token rows (ids
 * and emphasis weights per chunk) and writes the conditioning
 * (prompt_embeds, pooled, and the negative pair) as safetensors with -o, for
 * comparison with diffusers' encode_prompt. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "io/safetensors.h"
#include "model/conditioning.h"
#include "model/model.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: sdxl encode --model PATH --prompt TEXT [options]\n"
            "  --prompt-2 TEXT          prompt for text_encoder_2 (default: --prompt)\n"
            "  --negative TEXT          negative prompt (absent: zeros, as diffusers)\n"
            "  --negative-2 TEXT        negative for text_encoder_2 (default: --negative)\n"
            "  --prompt-syntax a1111|plain   A1111 emphasis (default) or the literal text (diffusers)\n"
            "  --long-prompts chunk|truncate 75-token chunks (default, A1111/ComfyUI) or one row of 77 (diffusers)\n"
            "  --tokenizer-dir DIR      single-file model: take tokenizer/ and tokenizer_2/ from DIR\n"
            "  --tokens                 print every token row (ids and weights)\n"
            "  -o FILE                  write prompt_embeds, pooled_prompt_embeds, negative_* as safetensors\n");
}

static void print_rows(const char *what, const sdxl_tokenizer *t, const sdxl_token_batch *b) {
    printf("%s: %d chunk(s), %d tokens%s\n", what, b->n_chunks, b->n_tokens,
           b->n_truncated ? " (truncated)" : "");
    for (int c = 0; c < b->n_chunks; c++) {
        printf("  chunk %d:", c);
        for (int i = 0; i < b->chunk_len; i++) {
            int32_t id = b->ids[c * b->chunk_len + i];
            float w = b->weights[c * b->chunk_len + i];
            if (w != 1.0f)
                printf(" %d(%.3g)", id, w);
            else
                printf(" %d", id);
            if (i > 0 && id == sdxl_tokenizer_eos(t)) break; /* the rest is padding */
        }
        printf("\n");
    }
}

static double rms(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return n ? sqrt(s / (double)n) : 0;
}

int sdxl_cmd_encode(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *tokdir = NULL;
    sdxl_cond_request req = {0};
    req.prompt_params = sdxl_prompt_default_params();
    bool show_tokens = false;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"prompt", required_argument, 0, 'p'},
        {"prompt-2", required_argument, 0, 'P'},  {"negative", required_argument, 0, 'n'},
        {"negative-2", required_argument, 0, 'N'}, {"prompt-syntax", required_argument, 0, 's'},
        {"long-prompts", required_argument, 0, 'l'}, {"tokenizer-dir", required_argument, 0, 't'},
        {"tokens", no_argument, 0, 'T'},          {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "m:p:o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 'p': req.prompt = optarg; break;
        case 'P': req.prompt_2 = optarg; break;
        case 'n': req.negative = optarg; break;
        case 'N': req.negative_2 = optarg; break;
        case 't': tokdir = optarg; break;
        case 'T': show_tokens = true; break;
        case 'o': out = optarg; break;
        case 's':
            if (!strcmp(optarg, "a1111")) req.prompt_params.syntax = SDXL_PROMPT_A1111;
            else if (!strcmp(optarg, "plain")) req.prompt_params.syntax = SDXL_PROMPT_PLAIN;
            else {
                fprintf(stderr, "encode: --prompt-syntax must be a1111 or plain, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'l':
            if (!strcmp(optarg, "chunk")) req.prompt_params.long_mode = SDXL_LONG_CHUNK;
            else if (!strcmp(optarg, "truncate")) req.prompt_params.long_mode = SDXL_LONG_TRUNCATE;
            else {
                fprintf(stderr, "encode: --long-prompts must be chunk or truncate, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model || !req.prompt) {
        fprintf(stderr, "encode: need --model and --prompt\n");
        usage(stderr);
        return 2;
    }
    sdxl_error err = {0};
    sdxl_model_params mp = sdxl_model_default_params();
    mp.tokenizer_dir = tokdir;
    sdxl_model *m = NULL;
    sdxl_backend *be = NULL;
    sdxl_cond pos = {0}, neg = {0};
    int rc = 1;
    if (sdxl_model_load(model, &mp, &m, &err)) goto fail;
    req.force_zeros_for_empty_prompt = sdxl_weights_config(m->weights)->pipeline.force_zeros_for_empty_prompt;
    if (show_tokens) {
        for (int e = 0; e < 2; e++) {
            sdxl_token_batch b;
            const char *p = e && req.prompt_2 ? req.prompt_2 : req.prompt;
            if (sdxl_tokenize_prompt(m->tok[e], p, &req.prompt_params, &b, &err)) goto fail;
            print_rows(e ? "tokenizer_2" : "tokenizer", m->tok[e], &b);
            sdxl_token_batch_free(&b);
        }
    }
    if (!(be = sdxl_backend_create(NULL, &err))) goto fail;
    if (sdxl_encode_prompts(be, m->weights, m->tok[0], m->tok[1], &req, &pos, &neg, &err)) goto fail;
    printf("prompt_embeds [1,%d,%d] rms %.6f; pooled [1,%d] rms %.6f\n", pos.n_tokens, pos.dim,
           rms(pos.embeds, (size_t)pos.n_tokens * pos.dim), pos.pooled_dim, rms(pos.pooled, (size_t)pos.pooled_dim));
    printf("negative      [1,%d,%d] rms %.6f%s\n", neg.n_tokens, neg.dim,
           rms(neg.embeds, (size_t)neg.n_tokens * neg.dim), req.negative ? "" : " (absent: zeros)");
    if (out) {
        int64_t se[3] = {1, pos.n_tokens, pos.dim}, sp[2] = {1, pos.pooled_dim};
        sdxl_st_write_entry e[4] = {
            {"prompt_embeds", SDXL_ST_F32, 3, se, pos.embeds},
            {"negative_prompt_embeds", SDXL_ST_F32, 3, se, neg.embeds},
            {"pooled_prompt_embeds", SDXL_ST_F32, 2, sp, pos.pooled},
            {"negative_pooled_prompt_embeds", SDXL_ST_F32, 2, sp, neg.pooled},
        };
        const char *meta[] = {"prompt", req.prompt, "prompt_syntax",
                              req.prompt_params.syntax == SDXL_PROMPT_PLAIN ? "plain" : "a1111", "long_prompts",
                              req.prompt_params.long_mode == SDXL_LONG_TRUNCATE ? "truncate" : "chunk", NULL};
        if (sdxl_st_write(out, e, 4, meta, &err)) goto fail;
        printf("wrote %s\n", out);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "encode: %s\n", err.msg);
done:
    sdxl_cond_free(&pos);
    sdxl_cond_free(&neg);
    sdxl_backend_free(be);
    sdxl_model_free(m);
    return rc;
}
