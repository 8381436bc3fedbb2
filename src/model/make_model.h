/* make_model.h - write an SDXL model with seeded random weights, of any
 * config, in either file layout: for benchmarks and tests that need real
 * shapes (up to the full 2.6 B-parameter UNet) without real weights.
 *
 *     sdxl_make_model_params p = sdxl_make_model_default_params();
 *     p.preset = "sdxl-base";          // or p.config_dir = "models/some-sdxl"
 *     p.layout = SDXL_LAYOUT_SGM;      // one Stability single file
 *     p.dtype = SDXL_DTYPE_F16;
 *     if (sdxl_make_model("/data/sdxl-random.safetensors", &p, &report, &err)) ... err.msg ...
 *
 * Config: a built-in preset (presets.h) or a diffusers folder whose
 * model_index.json, config.json files and scheduler config are copied
 * verbatim (and its tokenizer/ and tokenizer_2/ folders, file by file).
 *
 * Layouts:
 *   SDXL_LAYOUT_DIFFUSERS  `out` is a folder as diffusers saves a pipeline:
 *     model_index.json, scheduler/scheduler_config.json, unet/ and vae/
 *     (config.json + diffusion_pytorch_model.safetensors), text_encoder/ and
 *     text_encoder_2/ (config.json + model.safetensors), tokenizer/ and
 *     tokenizer_2/ (vocab.json, merges.txt, tokenizer_config.json,
 *     special_tokens_map.json). Weight files carry {"format": "pt"} metadata
 *     (transformers refuses safetensors without it). With fp16_variant the
 *     weight files are named *.fp16.safetensors, which diffusers loads with
 *     variant="fp16"; the default plain names load without a variant
 *     argument, whatever the dtype (diffusers takes torch_dtype from the
 *     caller), so the plain names are the default.
 *   SDXL_LAYOUT_SGM  `out` is one Stability single file (model.diffusion_model.*,
 *     first_stage_model.*, conditioner.embedders.{0,1}.*), through the same
 *     naming tables the loader uses in reverse (TE2 q/k/v stacked into
 *     in_proj, text_projection transposed, VAE attention as 1x1 convs), with
 *     the self-describing metadata of sdxl_weights_single_file_metadata, so no
 *     sidecar yaml is needed. It has no tokenizers: a config whose encoders
 *     have fewer than 49408 token embeddings needs a tokenizer_dir to load
 *     with sdxl_model_load (sdxl_weights_load is enough for the weights).
 *
 * Weights: value = mean + std * N(0,1), per internal tensor (naming.h):
 *     Linear / conv weight   std 1/sqrt(fan_in), fan_in = in * kh * kw
 *                            (activations keep their scale layer to layer,
 *                            so the full-size UNet stays finite in f16)
 *     Linear / conv bias     std 0.02
 *     norm weight (gain)     mean 1, std 0.02
 *     norm bias              std 0.02
 *     embedding tables       std 0.02 (CLIP's token-table init)
 * Biases and gains are small but not constant, so a weight read from the
 * wrong tensor (a mapping bug) changes results instead of hiding.
 * The normal numbers come from a counter-based generator: splitmix64 of
 * (stream key + pair index), Box-Muller with the logarithm, sine and cosine
 * evaluated by make_model.c's own float polynomials (no libm, whose last bits
 * differ between CPUs), vectorized; ~200 M values/s per core. The stream key hashes the seed and the
 * tensor's INTERNAL name, so a value depends only on (seed, name, element
 * index): the same seed gives bit-identical weights in both layouts and on
 * every machine, any thread count, and any chunking. Then rounded to the
 * output dtype (nearest-even, core/dtype.h).
 *
 * Output: built under "<out>.partial-<pid>" and renamed to `out` only when
 * complete and verified, so `out` never holds a partial model; on failure or
 * cancel the partial output is removed. `out` must not exist (a diffusers
 * folder may be an existing empty directory). Memory: one 8 MiB chunk (plus
 * its f32 staging) per file being written; tensors are generated as they are
 * written, never all at once.
 *
 * Thread-safety: sdxl_make_model may run concurrently for different `out`.
 */
#ifndef SDXL_MODEL_MAKE_MODEL_H
#define SDXL_MODEL_MAKE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"
#include "model/naming.h"
#include "model/tokenizer.h"

/* Called after every chunk written: bytes of tensor data done so far and in
 * all. Return false to cancel (sdxl_make_model then returns
 * SDXL_STATUS_CANCELLED and leaves nothing behind). */
typedef bool (*sdxl_make_model_progress_fn)(void *user_data, uint64_t bytes_done, uint64_t bytes_total);

typedef struct sdxl_make_model_params {
    const char *preset;     /* built-in config name (presets.h) ... */
    const char *config_dir; /* ... or a diffusers folder to copy the config from (exactly one of the two) */
    sdxl_layout layout;     /* SDXL_LAYOUT_DIFFUSERS (a folder) or SDXL_LAYOUT_SGM (one file) */
    sdxl_dtype dtype;       /* F32, F16 or BF16 */
    uint64_t seed;
    bool fp16_variant; /* diffusers layout: name weights *.fp16.safetensors (dtype must be F16) */
    int n_threads;     /* generation threads; <= 0: one per CPU */
    const char
        *data_dir; /* where data/clip_bpe_simple_vocab_16e6.txt.gz is (see model.h); NULL: the usual places */
    bool verify;   /* load the result back and compare its config (default true; cheap: mmap) */
    sdxl_make_model_progress_fn progress;
    void *user_data;
} sdxl_make_model_params;

/* preset NULL, config_dir NULL, diffusers, f16, seed 0, no variant, all
 * CPUs, verify. */
sdxl_make_model_params sdxl_make_model_default_params(void);

typedef struct sdxl_make_model_report {
    size_t n_tensors;  /* weights of the model (internal names) */
    size_t n_files;    /* safetensors files written */
    uint64_t n_params; /* elements of all weights */
    uint64_t bytes;    /* tensor data written (headers and configs not counted) */
    double seconds;    /* generating and writing (fsync included) */
    double seconds_verify;
} sdxl_make_model_report;

/* Write the model to `out` (see above). `report` may be NULL. Errors:
 *   INVALID_ARG   params: neither or both config sources, unknown preset,
 *                 bad layout/dtype, fp16_variant without F16
 *   NOT_FOUND     config_dir or one of its config files, the CLIP vocabulary
 *   BAD_INPUT     config_dir's configs (file and field named); a config whose
 *                 text encoders cannot hold a CLIP vocabulary when tokenizers
 *                 must be generated
 *   IO            `out` exists, its parent is missing or not writable, a
 *                 write failed (the message names the path)
 *   CANCELLED     the progress callback returned false
 *   INTERNAL      the written model did not load back with the same config
 *   OUT_OF_MEMORY */
sdxl_status sdxl_make_model(const char *out, const sdxl_make_model_params *params,
                            sdxl_make_model_report *report, sdxl_error *err);

/* ---- the pieces, exposed for tests and tools ---------------------------------- */

/* Initialisation of entry e of naming n: value = mean + std * N(0,1). */
typedef struct sdxl_weight_init {
    float mean, std;
} sdxl_weight_init;
sdxl_weight_init sdxl_make_model_init(const sdxl_naming *n, const sdxl_name_entry *e);

/* Elements [begin, begin + count) of entry e's tensor (internal shape,
 * row-major) for `seed`, in f32, into dst. Deterministic as described above. */
void sdxl_make_model_values(uint64_t seed, const sdxl_naming *n, const sdxl_name_entry *e, uint64_t begin,
                            size_t count, float *dst);

/* Write a CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json,
 * special_tokens_map.json, as transformers saves CLIPTokenizer) holding the
 * first `vocab_size` tokens of the standard CLIP vocabulary: the 512 byte
 * symbols, the first vocab_size - 514 merges, <|startoftext|> and
 * <|endoftext|> as the last two ids. 49408 gives exactly openai/clip-vit-
 * large-patch14's tokenizer (sdxl_tokenizer_load_dir then encodes like
 * sdxl_tokenizer_load_clip_default); fewer gives a smaller, still valid BPE.
 * pad: <|endoftext|> (SDXL's tokenizer) or "!" as an added special token
 * (tokenizer_2). `dir` is created if absent. bpe_gz_path: the
 * clip_bpe_simple_vocab_16e6.txt.gz file. Errors: INVALID_ARG (vocab_size
 * outside 514..49408), NOT_FOUND/BAD_INPUT (the .gz), IO, OUT_OF_MEMORY. */
sdxl_status sdxl_make_clip_tokenizer_dir(const char *dir, const char *bpe_gz_path, int vocab_size,
                                         sdxl_tokenizer_pad pad, sdxl_error *err);

#endif
