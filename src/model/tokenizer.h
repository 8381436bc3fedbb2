/* tokenizer.h - the CLIP byte-level BPE tokenizer of SDXL's two text encoders.
 *
 * What it reproduces, id for id: transformers' slow `CLIPTokenizer` (v4.38,
 * the tokenizer diffusers' StableDiffusionXLPipeline loads) when ftfy is not
 * installed, called as `tokenizer(text, add_special_tokens=False)`:
 *
 *   1. added-token split: every added token of the tokenizer (the contents of
 *      tokenizer_config.json "added_tokens_decoder" plus the special tokens
 *      bos/eos/unk/pad/additional_special_tokens) is cut out of the text
 *      first, leftmost-longest, case-sensitive, and becomes its own id. This
 *      is the SDXL quirk: tokenizer_2's pad token "!" is such a token, so
 *      "!!!" is [0,0,0] there but [0,0,256] ("!","!","!</w>") in tokenizer 1.
 *      The lstrip/rstrip/single_word flags of an added token are honoured.
 *   2. per remaining piece, BERT's BasicTokenizer without punctuation split:
 *      U+0000, U+FFFD and control characters (general category C*, except
 *      \t \n \r) removed; \t \n \r and Zs turned into spaces; CJK ideographs
 *      surrounded by spaces; NFC; split on whitespace; each word lowercased
 *      as Python's str.lower() does (full mapping: U+0130 -> "i\u0307", final
 *      sigma); accents kept.
 *   3. the CLIP pattern, case-insensitive, matched by hand over utf8proc's
 *      categories: <|startoftext|> | <|endoftext|> | 's|'t|'re|'ve|'m|'ll|'d
 *      | \p{L}+ | \p{N} | [^\s\p{L}\p{N}]+ (U+0345 matches no branch under
 *      the regex module's IGNORECASE and is skipped, as there).
 *   4. each match's UTF-8 bytes through CLIP's bytes_to_unicode table, then
 *      BPE by merge rank with "</w>" on the last symbol (a match equal to
 *      "<|startoftext|>"/"<|endoftext|>" is taken whole, as the reference's
 *      BPE cache does). A symbol absent from the vocabulary gives unk.
 *
 * Differences that remain: the reference's Python 3.11 knows Unicode 14, the
 * utf8proc this links (2.8) Unicode 15; a character first assigned in 15 is
 * removed by the reference (unassigned = category Cn) and kept here. The
 * added-token split is leftmost-longest; transformers' Trie gives the same
 * result unless one added token is a proper prefix/suffix/substring of
 * another (never so for CLIP: "<|startoftext|>", "<|endoftext|>", "!").
 *
 * Untrusted input: vocab.json, merges.txt, the two JSON configs and the .gz
 * are files from users; every violation returns SDXL_STATUS_BAD_INPUT naming
 * the file, the line (or token) and the problem. Text to encode must be valid
 * UTF-8 (overlongs, surrogates and code points above U+10FFFF are invalid) of
 * at most SDXL_TOKENIZER_MAX_TEXT bytes; anything else is BAD_INPUT with the
 * byte offset (not replaced by U+FFFD: a request with broken text is an error
 * the client should see, and the reference would have deleted U+FFFD anyway).
 * BPE runs in O(n log n) per word (a heap of adjacent pairs, merged one rank
 * at a time, all occurrences left to right, as the reference), so a 64 KiB
 * word costs milliseconds, not minutes.
 *
 * Ownership and threads: a loaded tokenizer is immutable. Any number of
 * threads may encode with it concurrently; each call allocates its own
 * scratch (through sdxl_malloc) and frees it before returning. Free it once,
 * after every user is done. All heap memory goes through core/alloc.h
 * (cJSON's transient parse trees excepted, as in io/safetensors.c).
 */
#ifndef SDXL_MODEL_TOKENIZER_H
#define SDXL_MODEL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* Longest text (bytes, without the NUL) sdxl_tokenizer_encode and
 * sdxl_tokenize_prompt accept. 64 KiB is ~850 CLIP chunks of 75 tokens. */
#define SDXL_TOKENIZER_MAX_TEXT 65536
/* Largest token id a vocabulary or added token may use (exclusive). */
#define SDXL_TOKENIZER_MAX_ID (1 << 24)
/* The reference reads at most this many merges (lines 2..48895 of
 * merges.txt): 49152 - 256 - 2. Later lines are ignored, as there. */
#define SDXL_TOKENIZER_MAX_MERGES 48894

typedef struct sdxl_tokenizer sdxl_tokenizer;

/* Pad token of sdxl_tokenizer_load_clip_default. */
typedef enum sdxl_tokenizer_pad {
    SDXL_TOKENIZER_PAD_EOS = 0, /* pad with <|endoftext|>: SDXL's tokenizer (CLIP ViT-L) */
    SDXL_TOKENIZER_PAD_BANG,    /* pad with "!" (id 0), itself an added special token:
                                   SDXL's tokenizer_2 (OpenCLIP bigG) as diffusers ships it */
} sdxl_tokenizer_pad;

/* Load a diffusers/transformers tokenizer folder: vocab.json and merges.txt
 * (required), tokenizer_config.json and special_tokens_map.json (optional;
 * the second overrides the first, CLIPTokenizer's defaults fill the rest:
 * bos <|startoftext|>, eos = unk = pad = <|endoftext|>). model_max_length
 * comes from tokenizer_config.json (77 when absent or "unbounded" > 1024).
 * Every special token not yet an added token becomes one, with its vocab id
 * (or the next free id, as transformers assigns it). On success *out owns a
 * new tokenizer (sdxl_tokenizer_free). Errors: NOT_FOUND (a required file
 * missing), IO, BAD_INPUT (file and line/token named), OUT_OF_MEMORY. */
sdxl_status sdxl_tokenizer_load_dir(const char *dir, sdxl_tokenizer **out, sdxl_error *err);

/* The standard CLIP vocabulary for single-file checkpoints, built from
 * OpenAI's bpe_simple_vocab_16e6.txt.gz (data/clip_bpe_simple_vocab_16e6.txt.gz
 * in this repository): ids 0..255 the byte symbols in bytes_to_unicode order,
 * 256..511 the same with "</w>", then the first 48 894 merges joined, then
 * <|startoftext|> (49406) and <|endoftext|> (49407): 49 408 tokens, exactly
 * the vocab.json/merges.txt of openai/clip-vit-large-patch14. bos, eos and
 * unk as CLIP's; pad per `pad`. model_max_length 77. Errors as above. */
sdxl_status sdxl_tokenizer_load_clip_default(const char *bpe_gz_path, sdxl_tokenizer_pad pad,
                                             sdxl_tokenizer **out, sdxl_error *err);

/* Free a tokenizer. NULL-safe. Not while another thread uses it. */
void sdxl_tokenizer_free(sdxl_tokenizer *t);

/* Special ids (-1 for NULL t). pad is what diffusers pads with. */
int32_t sdxl_tokenizer_bos(const sdxl_tokenizer *t);
int32_t sdxl_tokenizer_eos(const sdxl_tokenizer *t);
int32_t sdxl_tokenizer_pad_id(const sdxl_tokenizer *t);
int32_t sdxl_tokenizer_unk(const sdxl_tokenizer *t);
/* model_max_length: length of one encoded row, bos and eos included (77). */
int sdxl_tokenizer_max_length(const sdxl_tokenizer *t);
/* One more than the largest id the tokenizer can produce (vocab + added
 * tokens): 49408 for CLIP. The text encoder's embedding must be this large. */
int32_t sdxl_tokenizer_vocab_size(const sdxl_tokenizer *t);
/* Id of the token string `token` (added tokens first, then the vocabulary,
 * as convert_tokens_to_ids without the unk fallback); -1 if neither has it. */
int32_t sdxl_tokenizer_token_id(const sdxl_tokenizer *t, const char *token);
/* String of id `id` (byte-unicode form, e.g. "photo</w>"); NULL if no token
 * has that id. Owned by t. */
const char *sdxl_tokenizer_token_str(const sdxl_tokenizer *t, int32_t id);

/* Encode `text` (NUL-terminated UTF-8) into raw ids: no bos, eos, padding or
 * truncation (= transformers' tokenizer(text, add_special_tokens=False)).
 * On success *ids is a new sdxl_malloc'd array of *n ids (never NULL, even
 * for n == 0; release with sdxl_free). On failure *ids is NULL, *n is 0.
 * Errors: INVALID_ARG (NULL arguments), BAD_INPUT (invalid UTF-8, too long),
 * OUT_OF_MEMORY. Thread-safe. */
sdxl_status sdxl_tokenizer_encode(const sdxl_tokenizer *t, const char *text, int32_t **ids, size_t *n,
                                  sdxl_error *err);

/* Internal (model/prompt.c): encode text[0, len) and append the ids to the
 * growable array *ids (*n used, *cap allocated; sdxl_realloc'd). The text
 * must already be valid UTF-8 of at most SDXL_TOKENIZER_MAX_TEXT bytes
 * (core/utf8.h: sdxl_utf8_invalid_at). On failure *n is unchanged. */
sdxl_status sdxl__tokenizer_encode_append(const sdxl_tokenizer *t, const char *text, size_t len,
                                          int32_t **ids, size_t *n, size_t *cap, sdxl_error *err);

/* Internal: the id of ",</w>" in the vocabulary (A1111's comma token for the
 * chunk-boundary rule), -1 if absent. */
int32_t sdxl__tokenizer_comma(const sdxl_tokenizer *t);

#endif
