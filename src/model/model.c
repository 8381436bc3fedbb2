#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "io/sha256.h"

#ifndef SDXL_SOURCE_DATA_DIR
#define SDXL_SOURCE_DATA_DIR "data"
#endif
#ifndef SDXL_INSTALL_DATA_DIR
#define SDXL_INSTALL_DATA_DIR "/usr/local/share/sdxl-worker"
#endif

#define CLIP_VOCAB "clip_bpe_simple_vocab_16e6.txt.gz"

sdxl_model_params sdxl_model_default_params(void) {
    sdxl_model_params p = {.weights = sdxl_weights_default_params()};
    return p;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

sdxl_status sdxl_model_find_clip_vocab(const char *data_dir, char *buf, size_t n, sdxl_error *err) {
    if (!buf || n == 0) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "find_clip_vocab: no buffer");
    const char *dirs[] = {data_dir, getenv("SDXL_DATA_DIR"), SDXL_SOURCE_DATA_DIR, SDXL_INSTALL_DATA_DIR};
    char tried[400] = "";
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        if (!dirs[i] || !*dirs[i]) continue;
        snprintf(buf, n, "%s/%s", dirs[i], CLIP_VOCAB);
        if (is_file(buf)) return SDXL_STATUS_OK;
        size_t k = strlen(tried);
        snprintf(tried + k, sizeof tried - k, "%s%s", k ? ", " : "", dirs[i]);
    }
    return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND,
                          "%s not found (looked in: %s); set SDXL_DATA_DIR to the project's data/ folder",
                          CLIP_VOCAB, tried);
}

sdxl_status sdxl_model_load(const char *path, const sdxl_model_params *params, sdxl_model **out, sdxl_error *err) {
    sdxl_model_params p = params ? *params : sdxl_model_default_params();
    *out = NULL;
    sdxl_model *m = sdxl_calloc(1, sizeof *m);
    if (!m) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "allocating the model");
    sdxl_status st = sdxl_weights_load(path, &p.weights, &m->weights, err);
    if (st) goto fail;
    const char *tokdir = is_dir(path) ? path : p.tokenizer_dir;
    for (int i = 0; i < 2; i++) {
        if (tokdir) {
            char d[4096];
            snprintf(d, sizeof d, "%s/%s", tokdir, i ? "tokenizer_2" : "tokenizer");
            st = sdxl_tokenizer_load_dir(d, &m->tok[i], err);
        } else {
            char vocab[4096];
            st = sdxl_model_find_clip_vocab(p.data_dir, vocab, sizeof vocab, err);
            if (!st)
                st = sdxl_tokenizer_load_clip_default(vocab, i ? SDXL_TOKENIZER_PAD_BANG : SDXL_TOKENIZER_PAD_EOS,
                                                      &m->tok[i], err);
        }
        if (st) goto fail;
        /* every id the tokenizer can produce must index the encoder's table */
        int vocab_n = sdxl_weights_config(m->weights)->te[i].vocab_size;
        if (sdxl_tokenizer_vocab_size(m->tok[i]) > vocab_n) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                "%s: tokenizer%s has %d tokens but text_encoder%s has only %d embeddings", path,
                                i ? "_2" : "", sdxl_tokenizer_vocab_size(m->tok[i]), i ? "_2" : "", vocab_n);
            goto fail;
        }
    }
    *out = m;
    return SDXL_STATUS_OK;
fail:
    sdxl_model_free(m);
    return st;
}

void sdxl_model_free(sdxl_model *m) {
    if (!m) return;
    sdxl_tokenizer_free(m->tok[0]);
    sdxl_tokenizer_free(m->tok[1]);
    sdxl_weights_free(m->weights);
    sdxl_free(m);
}

/* A1111's "Model hash" (AutoV2): the first 10 hex digits of the SHA-256 of
 * the checkpoint file. Single-file models only (a diffusers folder has no
 * one file to hash, so the field is left out, as A1111 has no hash for it
 * either). The bytes are read through the weights' own mapping (the whole
 * file is mapped: 8-byte header length, JSON header, data section), so the
 * file is not read a second time. false when there is nothing to hash. */
bool sdxl_model_autov2_hash(const char *path, const sdxl_weights *w, char out[11]) {
    struct stat sb;
    if (stat(path, &sb) || !S_ISREG(sb.st_mode) || sdxl_weights_file_count(w) != 1) return false;
    const sdxl_st_file *f = sdxl_weights_file(w, 0);
    const sdxl_st_tensor *t = NULL;
    for (size_t i = 0; i < sdxl_st_count(f) && !t; i++)
        if (sdxl_st_at(f, i)->nbytes) t = sdxl_st_at(f, i);
    if (!t) return false;
    uint64_t hlen = sdxl_st_header_size(f), len = 8 + hlen + sdxl_st_data_size(f);
    if (len != (uint64_t)sb.st_size) return false; /* not the mapping we think it is */
    const uint8_t *base = (const uint8_t *)t->data - t->offset - hlen - 8;
    sdxl_sha256 h;
    sdxl_sha256_init(&h);
    for (uint64_t off = 0; off < len;) { /* in 64 MiB pieces: the pages stream through once */
        size_t k = len - off < ((uint64_t)1 << 26) ? (size_t)(len - off) : (size_t)1 << 26;
        sdxl_sha256_update(&h, base + off, k);
        off += k;
    }
    uint8_t d[32];
    char hex[65];
    sdxl_sha256_final(&h, d);
    sdxl_sha256_hex(d, hex);
    memcpy(out, hex, 10);
    out[10] = 0;
    return true;
}
