/* conditioning.h - prompts to the UNet's conditioning, as diffusers'
 * StableDiffusionXLPipeline.encode_prompt makes it (plus A1111 emphasis and
 * long prompts, see prompt.h).
 *
 *   prompt   ─tok1─► rows [n,77] ─TE1─► penultimate [n,77,C1] ┐ emphasis per row,
 *   prompt_2 ─tok2─► rows [n,77] ─TE2─► penultimate [n,77,C2] ┘ concat on features
 *                                                          → embeds [n·77, C1+C2]
 *                                  TE2 text_embeds of row 0 → pooled [P]
 *
 * prompt_2 defaults to prompt, negative_2 to negative. An ABSENT negative
 * (NULL) with force_zeros_for_empty_prompt gives all-zero embeds and pooled,
 * as diffusers does; an explicit "" is encoded like any prompt. The positive
 * and negative results always have the same token count (chunks are padded
 * with empty ones), so they stack into one CFG batch.
 *
 * Memory: the results are sdxl_malloc'd (sdxl_cond_free); scratch for the
 * encoders is one arena per call, freed before returning.
 */
#ifndef SDXL_MODEL_CONDITIONING_H
#define SDXL_MODEL_CONDITIONING_H

#include <stdbool.h>

#include "backend/backend.h"
#include "model/prompt.h"
#include "model/tokenizer.h"
#include "model/weights.h"

typedef struct sdxl_cond {
    int n_tokens;  /* 77 × chunks */
    int dim;       /* cross_attention_dim = TE1 hidden + TE2 hidden */
    int pooled_dim;
    float *embeds; /* [n_tokens, dim] */
    float *pooled; /* [pooled_dim] */
} sdxl_cond;

typedef struct sdxl_cond_request {
    const char *prompt;     /* required */
    const char *prompt_2;   /* NULL: prompt */
    const char *negative;   /* NULL: absent */
    const char *negative_2; /* NULL: negative */
    sdxl_prompt_params prompt_params;
    bool force_zeros_for_empty_prompt; /* usually the pipeline config's */
} sdxl_cond_request;

/* Encode positive and negative conditioning. On success both outputs own
 * their arrays; on failure both are zeroed. Errors: BAD_INPUT (prompt
 * syntax, invalid UTF-8, too many chunks), OUT_OF_MEMORY, and op errors. */
sdxl_status sdxl_encode_prompts(sdxl_backend *be, const sdxl_weights *w, const sdxl_tokenizer *tok1,
                                const sdxl_tokenizer *tok2, const sdxl_cond_request *req, sdxl_cond *pos,
                                sdxl_cond *neg, sdxl_error *err);

void sdxl_cond_free(sdxl_cond *c); /* NULL-safe; zeroes *c */

#endif
