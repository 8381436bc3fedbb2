/* fuzz_prompt.c - libFuzzer target for prompt parsing and tokenization
 * (prompts are untrusted request text). The tiny reference tokenizer is
 * loaded once from tests/data (SDXL_FUZZ_DATA overrides the folder). Checks
 * what the tokenizer promises: every row is bos ... eos pad..., every id is
 * inside the vocabulary, weights are finite; a rejected input
 * must say BAD_INPUT. Both syntaxes and both long-prompt modes run.
 *
 *   build-fuzz/fuzz_prompt -max_total_time=60 CORPUS_DIR
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "model/prompt.h"
#include "model/tokenizer.h"

#ifndef SDXL_FUZZ_DATA_DIR
#define SDXL_FUZZ_DATA_DIR "tests/data"
#endif

#define ENSURE(cond)                                                                                         \
    do {                                                                                                     \
        if (!(cond)) abort();                                                                                \
    } while (0)

static sdxl_tokenizer *tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok) {
        char dir[1024];
        const char *root = getenv("SDXL_FUZZ_DATA");
        snprintf(dir, sizeof dir, "%s/refs/tiny-sdxl/tokenizer_2", root ? root : SDXL_FUZZ_DATA_DIR);
        sdxl_error err = {0};
        if (sdxl_tokenizer_load_dir(dir, &tok, &err)) {
            fprintf(stderr, "fuzz_prompt: %s\n", err.msg);
            abort();
        }
    }
    if (size > 8192) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0; /* embedded NULs just end the prompt early */
    for (int mode = 0; mode < 4; mode++) {
        sdxl_prompt_params p = sdxl_prompt_default_params();
        p.syntax = (mode & 1) ? SDXL_PROMPT_PLAIN : SDXL_PROMPT_A1111;
        p.long_mode = (mode & 2) ? SDXL_LONG_TRUNCATE : SDXL_LONG_CHUNK;
        sdxl_token_batch b;
        sdxl_error err = {0};
        sdxl_status st = sdxl_tokenize_prompt(tok, text, &p, &b, &err);
        if (st) {
            ENSURE(st == SDXL_STATUS_BAD_INPUT && err.msg[0]);
            continue;
        }
        ENSURE(b.n_chunks >= 1 && b.chunk_len == 77);
        ENSURE(p.long_mode == SDXL_LONG_CHUNK || b.n_chunks == 1);
        for (int c = 0; c < b.n_chunks; c++) {
            const int32_t *ids = b.ids + c * 77;
            const float *w = b.weights + c * 77;
            ENSURE(ids[0] == sdxl_tokenizer_bos(tok));
            /* the row's own eos is the LAST eos (a literal <|endoftext|> in the prompt is an eos
             * id among the tokens); this tokenizer pads with "!" (0), not with eos */
            int eos = -1;
            for (int i = 1; i < 77; i++)
                if (ids[i] == sdxl_tokenizer_eos(tok)) eos = i;
            ENSURE(eos > 0);
            for (int i = 0; i < 77; i++) {
                ENSURE(ids[i] >= 0 && ids[i] < sdxl_tokenizer_vocab_size(tok));
                ENSURE(isfinite(w[i])); /* A1111 allows zero and negative weights */
                if (i > eos) ENSURE(ids[i] == sdxl_tokenizer_pad_id(tok) && w[i] == 1.0f);
            }
        }
        sdxl_token_batch_free(&b);
    }
    free(text);
    return 0;
}
