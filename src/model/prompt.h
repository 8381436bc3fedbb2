/* prompt.h - from a prompt string to the token rows the text encoders read.
 *
 * Two syntaxes:
 *   SDXL_PROMPT_PLAIN  the text is read literally, as diffusers does.
 *   SDXL_PROMPT_A1111  (default) AUTOMATIC1111's emphasis syntax, as its
 *                      prompt_parser.parse_prompt_attention reads it:
 *     (text)       weight x1.1          ((text)) x1.21, and so on
 *     [text]       weight x(1/1.1)
 *     (text:1.3)   weight x1.3 (spaces allowed around the number, sign
 *                  allowed; "1.2.3" or "." is BAD_INPUT, where A1111 raises)
 *     \( \) \[ \] \\   the literal character; a backslash before anything
 *                  else is dropped (A1111's "\" alternative)
 *     ) or ] with nothing open: literal; ( or [ never closed: applies to the
 *                  end of the prompt (round ones first, then square, in
 *                  opening order, as A1111 multiplies them)
 *     :            not followed by "number)" (or with no open "("): literal
 *     BREAK        uppercase, as a whole word (\bBREAK\b; the whitespace
 *                  around it is consumed): ends the current chunk
 *   Weights are computed in double exactly as A1111 does (products in the
 *   same order, 1/1.1 multiplied, not divided), adjacent runs of identical
 *   weight merged before tokenizing (so "a(b)" and "a b" tokenize the
 *   same way as there), then rounded to float per token.
 *   Deliberate differences: BREAK always breaks, also inside brackets (A1111
 *   then multiplies its -1 marker and tokenizes the word "BREAK"); more than
 *   SDXL_PROMPT_MAX_DEPTH brackets open at once is BAD_INPUT; a weight that
 *   overflows float is BAD_INPUT. <lora:name:w> tags are not special here:
 *   they are ordinary text (and "(x:1.2)" rules apply inside them), so the
 *   caller strips them before tokenizing.
 *
 * Two ways to handle more than max_length - 2 (75) tokens:
 *   SDXL_LONG_CHUNK    (default, A1111/ComfyUI) the ids are cut into chunks
 *     of 75; each chunk becomes one 77-token row: bos, its ids, eos, then pad
 *     up to 77 (pad = the tokenizer's pad id). A1111 builds bos+ids+eos-pads
 *     +eos and then overwrites everything after the first eos with its pad id,
 *     which gives this same row; for a prompt of at most 75 tokens the row is
 *     exactly diffusers' row. BREAK ends a chunk early (the rest padded);
 *     A1111's comma rule: when a chunk is full and a comma (the ",</w>"
 *     token) is among its last `comma_backtrack` (default 20, A1111's
 *     comma_padding_backtrack) tokens, the tokens after that comma move to
 *     the next chunk. An empty prompt (or one that is only "BREAK") is one
 *     chunk: bos, eos, pad...
 *   SDXL_LONG_TRUNCATE (diffusers) one row: bos, the first 75 ids, eos, pad.
 *     BREAK is dropped (it still separates words).
 *
 * The contract with the text encoder (what the weights mean):
 *   - Each row is encoded on its own (a [n_chunks, 77] batch), by each of the
 *     two encoders with its own tokenizer's rows; the per-chunk hidden states
 *     are concatenated along the token axis: [1, 77*n_chunks, C].
 *   - Emphasis, A1111 "Original": for each row r and encoder, with z the
 *     [77, C] hidden states the UNet will read (SDXL: the penultimate layer),
 *       m0 = mean(z); z[i,:] *= w[r,i]; z *= m0 / mean(z)
 *     Skip it when every weight of the row is 1.0 (the result would differ
 *     from diffusers only by rounding). bos/eos/pad weights are always 1.0.
 *   - The pooled embedding (TE2's text_embeds) comes from the first chunk
 *     only and is never weighted (A1111 and ComfyUI do the same).
 *   - The two tokenizers can give different chunk counts (tokenizer_2 splits
 *     "!" out, see tokenizer.h), and a prompt and its negative usually do:
 *     sdxl_token_batch_pad_chunks appends empty chunks (the encoding of "",
 *     as A1111's empty_chunk) to equalise them.
 *
 * Untrusted input: the prompt must be valid UTF-8 of at most
 * SDXL_TOKENIZER_MAX_TEXT bytes (BAD_INPUT with the byte offset otherwise);
 * the chunk count is capped by params.max_chunks. Nothing recurses: nesting
 * depth is a bounded stack.
 *
 * Thread-safety: every function is reentrant; the tokenizer is only read.
 */
#ifndef SDXL_MODEL_PROMPT_H
#define SDXL_MODEL_PROMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/tokenizer.h"

/* Brackets open at the same time, round and square together. */
#define SDXL_PROMPT_MAX_DEPTH 100

typedef enum sdxl_prompt_syntax {
    SDXL_PROMPT_A1111 = 0,
    SDXL_PROMPT_PLAIN,
} sdxl_prompt_syntax;

typedef enum sdxl_long_prompts {
    SDXL_LONG_CHUNK = 0,
    SDXL_LONG_TRUNCATE,
} sdxl_long_prompts;

typedef struct sdxl_prompt_params {
    sdxl_prompt_syntax syntax;   /* default SDXL_PROMPT_A1111 */
    sdxl_long_prompts long_mode; /* default SDXL_LONG_CHUNK */
    int comma_backtrack;         /* CHUNK: default 20; 0 disables the comma rule; < 0 is INVALID_ARG */
    int max_chunks;              /* CHUNK: more chunks is BAD_INPUT; default 32 (2400 tokens) */
} sdxl_prompt_params;

/* {A1111, CHUNK, 20, 32}. */
sdxl_prompt_params sdxl_prompt_default_params(void);

/* ---- parsed emphasis ------------------------------------------------------ */

typedef struct sdxl_prompt_segment {
    const char *text; /* NUL-terminated, owned by the segments object; "" for a BREAK */
    size_t len;
    double weight; /* 1.0 for a BREAK */
    bool is_break;
} sdxl_prompt_segment;

typedef struct sdxl_prompt_segments {
    size_t n;                 /* >= 1 */
    sdxl_prompt_segment *seg; /* [n] */
    char *pool;               /* the texts */
} sdxl_prompt_segments;

/* Parse `prompt` (NUL-terminated) into runs of text with their weights, as
 * A1111's parse_prompt_attention returns them (adjacent equal weights merged;
 * empty text runs kept where A1111 keeps them). PLAIN gives one segment, the
 * whole prompt, weight 1. On success *out owns its memory
 * (sdxl_prompt_segments_free); on failure *out is empty. Errors:
 * INVALID_ARG, BAD_INPUT (invalid UTF-8, too long, too deep, bad weight,
 * weight overflow: the message gives the byte offset), OUT_OF_MEMORY. */
sdxl_status sdxl_prompt_parse(const char *prompt, sdxl_prompt_syntax syntax, sdxl_prompt_segments *out,
                              sdxl_error *err);

/* Free what sdxl_prompt_parse made and zero *s. NULL-safe, idempotent. */
void sdxl_prompt_segments_free(sdxl_prompt_segments *s);

/* ---- token rows ------------------------------------------------------------ */

typedef struct sdxl_token_batch {
    int n_chunks;    /* rows, >= 1 */
    int chunk_len;   /* = sdxl_tokenizer_max_length (77) */
    int32_t *ids;    /* [n_chunks, chunk_len] row-major */
    float *weights;  /* [n_chunks, chunk_len]; 1.0 at bos/eos/pad */
    int n_tokens;    /* ids the prompt produced (no bos/eos/pad), before truncation */
    int n_truncated; /* TRUNCATE: ids dropped (n_tokens - 75, or 0); CHUNK: 0 */
} sdxl_token_batch;

/* Tokenize a prompt for one encoder. `params` may be NULL (defaults). On
 * success *out owns two sdxl_malloc'd arrays (sdxl_token_batch_free); on
 * failure *out is zeroed. Errors: INVALID_ARG, BAD_INPUT (see
 * sdxl_prompt_parse; more than max_chunks chunks), OUT_OF_MEMORY.
 * With PLAIN + TRUNCATE (or PLAIN + CHUNK and <= 75 tokens) the row is
 * exactly diffusers' tokenizer(prompt, padding="max_length",
 * max_length=77, truncation=True).input_ids. */
sdxl_status sdxl_tokenize_prompt(const sdxl_tokenizer *t, const char *prompt,
                                 const sdxl_prompt_params *params, sdxl_token_batch *out, sdxl_error *err);

/* Append empty chunks (bos, eos, pad..., weights 1) until b has n_chunks
 * rows; nothing to do if it already has that many. Errors: INVALID_ARG,
 * OUT_OF_MEMORY (b unchanged). */
sdxl_status sdxl_token_batch_pad_chunks(const sdxl_tokenizer *t, sdxl_token_batch *b, int n_chunks,
                                        sdxl_error *err);

/* Free the arrays and zero *b. NULL-safe, idempotent. */
void sdxl_token_batch_free(sdxl_token_batch *b);

#endif
