/* model.h - one loaded SDXL model: weights (weights.h) plus both tokenizers.
 *
 * Tokenizers come from the diffusers folder (tokenizer/, tokenizer_2/), or,
 * for a single-file checkpoint (which carries none), from `tokenizer_dir`
 * (a folder holding tokenizer/ and tokenizer_2/) when given, else the
 * standard CLIP vocabulary built from clip_bpe_simple_vocab_16e6.txt.gz
 * (tokenizer pads with <|endoftext|>, tokenizer_2 with "!", as SDXL base).
 * That file is looked up in `data_dir`, then $SDXL_DATA_DIR, then the
 * directories the build recorded (the source tree's data/ and the install
 * prefix's share/sdxl-worker).
 *
 * The model is read-only after loading and may be shared by threads (each
 * job brings its own back end and arenas).
 */
#ifndef SDXL_MODEL_MODEL_H
#define SDXL_MODEL_MODEL_H

#include <stdbool.h>

#include "model/tokenizer.h"
#include "model/weights.h"

typedef struct sdxl_model_params {
    sdxl_weights_params weights;
    const char *tokenizer_dir; /* single file: take tokenizer/ and tokenizer_2/ from here */
    const char *data_dir;      /* where clip_bpe_simple_vocab_16e6.txt.gz lives */
} sdxl_model_params;

typedef struct sdxl_model {
    sdxl_weights *weights;
    sdxl_tokenizer *tok[2];
} sdxl_model;

sdxl_model_params sdxl_model_default_params(void);

/* Load weights and tokenizers; errors as sdxl_weights_load, plus NOT_FOUND
 * for a missing tokenizer folder or vocabulary file. */
sdxl_status sdxl_model_load(const char *path, const sdxl_model_params *params, sdxl_model **out, sdxl_error *err);
void sdxl_model_free(sdxl_model *m); /* NULL-safe */

/* A1111's "Model hash" (AutoV2): the first 10 hex digits of the SHA-256 of
 * the checkpoint file at `path`, read through the weights' own mapping (no
 * second read). Single-file models only: false for a diffusers folder (A1111
 * has no hash for one either) or when the mapping is not that file. About
 * 20 s for a 7 GB file. */
bool sdxl_model_autov2_hash(const char *path, const sdxl_weights *w, char out[11]);

/* Path of the standard CLIP merges file, found as described above, into buf.
 * NOT_FOUND lists where it looked. */
sdxl_status sdxl_model_find_clip_vocab(const char *data_dir, char *buf, size_t n, sdxl_error *err);

#endif
