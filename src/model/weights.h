/* weights.h - the weight store: one SDXL model's tensors under internal
 * names, loaded from a diffusers folder or a Stability single file.
 *
 *     sdxl_weights *w;
 *     sdxl_weights_params p = sdxl_weights_default_params();
 *     if (sdxl_weights_load("models/sdxl", &p, &w, &err)) ... err.msg ...
 *     const sdxl_unet_config *u = &sdxl_weights_config(w)->unet;
 *     const sdxl_tensor *t = sdxl_weights_get(w, "unet.conv_in.weight");
 *     ...
 *     sdxl_weights_free(w);
 *
 * Loading: the config comes first (config.h: config.json files, or inferred
 * from the single file's shapes + sidecar yaml + metadata + hints); from it
 * the naming (naming.h) lists every tensor the model needs with its shape.
 * Each is looked up in the source through that layout's mapping and checked:
 * present, dtype F32/F16/BF16, exactly the expected source shape. Any
 * failure is an error naming the internal name, the source key, the file and
 * both shapes. Tensors the source has beyond the expected set (e.g. the
 * `position_ids` buffer of some checkpoints) are ignored with a debug log
 * and counted (sdxl_weights_unknown_count).
 *
 * Two alternative forms seen in single files are accepted: the VAE
 * mid-block attention stored as Linear [C,C] (instead of 1x1 convs) and TE2's
 * projection as "text_projection.weight" [proj, hidden] (Linear form).
 *
 * ARCHITECTURE rule 4: the source files stay mapped read-only for the
 * store's lifetime. A tensor is a zero-copy view into the mapping whenever
 * the layout allows it (identity, reshape, the q/k/v row slices of TE2's
 * in_proj); it is materialized into an owned, 64-byte-aligned buffer only
 * when a transform needs a copy (TE2's transposed text_projection), when
 * the source bytes are not aligned to the element size, or when the caller
 * asked for a dtype conversion.
 *
 * LoRA hook (for the adapter issue): every weight remembers its source
 * (file, key, transform, file dtype), sdxl_weights_read_original re-derives
 * the original values from the mapped bytes at any time, and
 * sdxl_weights_set_data swaps the data pointer the model reads to a merged
 * buffer the caller owns, or back (NULL) to the load-time data. Model code
 * must therefore hold `const sdxl_tensor *` (stable addresses) and read
 * `->data` when it runs, never cache the data pointer across requests.
 *
 * Diffusers folder files (per component folder, see sdxl_component_folder):
 *   unet/, vae/: diffusion_pytorch_model[.fp16].safetensors
 *   text_encoder/, text_encoder_2/: model[.fp16].safetensors
 *   sharded: <name>[.fp16].safetensors.index.json ({"weight_map": {key: shard}})
 *   Variant AUTO takes the plain file, else the .fp16 one if that is the only
 *   one there; FP16 requires the .fp16 file; DEFAULT requires the plain one.
 *   PyTorch .bin files are not read (UNSUPPORTED, saying so).
 *
 * Thread-safety: after a successful load the store is immutable except for
 * sdxl_weights_set_data; any number of threads may read it concurrently.
 * sdxl_weights_set_data must not race with readers of that weight (LoRA
 * merges happen between requests). sdxl_weights_free must not race with
 * anything.
 */
#ifndef SDXL_MODEL_WEIGHTS_H
#define SDXL_MODEL_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/naming.h"

typedef enum sdxl_weights_variant {
    SDXL_VARIANT_AUTO = 0, /* plain file, else the .fp16 variant if it is the only one */
    SDXL_VARIANT_DEFAULT,  /* the plain file only */
    SDXL_VARIANT_FP16,     /* the .fp16 variant only */
} sdxl_weights_variant;

typedef struct sdxl_weights_params {
    sdxl_weights_variant variant; /* diffusers folders */
    /* Convert every weight to `dtype` at load (materialized copies), e.g.
     * SDXL_DTYPE_F16 to halve memory, or F32 for exact CPU math on an f16
     * file. false: keep each file's dtype (zero-copy where possible). */
    bool convert;
    sdxl_dtype dtype;
    /* Single file: take the config from this diffusers folder instead of
     * inferring it (its model_index.json + config.json files; weights are
     * still checked against it). NULL: infer. */
    const char *config_dir;
    /* Single file: the sidecar yaml. NULL: "<stem>.yaml" next to the
     * checkpoint if that exists. */
    const char *yaml_path;
    bool ignore_sidecar; /* do not look for <stem>.yaml */
    /* "key", "value", ..., NULL: hints that override what the file says
     * (see config.h for the keys). Applied to diffusers folders too. */
    const char *const *hints;
} sdxl_weights_params;

/* AUTO variant, no conversion, no config_dir, sidecar auto, no hints. */
sdxl_weights_params sdxl_weights_default_params(void);

/* One weight. Read-only for users; the store owns everything in it. */
typedef struct sdxl_weight {
    sdxl_tensor tensor;           /* what the model reads (internal name's shape) */
    const sdxl_name_entry *entry; /* internal name, expected shape, per-layout sources */
    const sdxl_st_tensor *src;    /* the source tensor in its mapped file */
    int file;                     /* index of the source file (sdxl_weights_file_path) */
    sdxl_xform xform;             /* how tensor is made from src */
    void *owned;                  /* materialized buffer (sdxl_malloc, owned by the store) or NULL */
    void *base_data;              /* load-time data: a view into the mapping, or `owned` */
} sdxl_weight;

typedef struct sdxl_weights sdxl_weights;

/* Load a model. `path`: a diffusers folder, or a single .safetensors file.
 * `params` may be NULL (defaults). On success *out owns the mappings;
 * free with sdxl_weights_free. Errors:
 *   NOT_FOUND     path, model_index.json, config.json or a weight file is missing
 *   BAD_INPUT     malformed file/config, a missing or mis-shaped tensor, a
 *                 tensor of a non-float dtype (message: internal name,
 *                 source key, file, expected and found shape/dtype)
 *   UNSUPPORTED   .bin/.ckpt weights, a non-SDXL architecture
 *   INVALID_ARG   bad params / hints
 *   IO, OUT_OF_MEMORY */
sdxl_status sdxl_weights_load(const char *path, const sdxl_weights_params *params, sdxl_weights **out,
                              sdxl_error *err);

/* Unmap the files and free every buffer the store owns. Buffers installed
 * with sdxl_weights_set_data stay the caller's. NULL-safe. */
void sdxl_weights_free(sdxl_weights *w);

const sdxl_model_config *sdxl_weights_config(const sdxl_weights *w); /* owned by w */
const sdxl_naming *sdxl_weights_naming(const sdxl_weights *w);       /* owned by w */
sdxl_layout sdxl_weights_layout(const sdxl_weights *w);

/* Weights, indexed like the naming's entries (sdxl_naming_at). */
size_t sdxl_weights_count(const sdxl_weights *w);
const sdxl_weight *sdxl_weights_at(const sdxl_weights *w, size_t i); /* NULL if out of range */
/* Tensor by internal name (hash lookup); NULL if the model has no such
 * weight. */
const sdxl_tensor *sdxl_weights_get(const sdxl_weights *w, const char *name);
/* Same, but an absent name is SDXL_STATUS_NOT_FOUND with a message naming
 * it (for model code: "unet.mid_block.attentions.0.proj_in.weight: no such
 * weight"). */
sdxl_status sdxl_weights_require(const sdxl_weights *w, const char *name, const sdxl_tensor **out,
                                 sdxl_error *err);

/* Tensors of the source files that no expected weight uses (ignored). */
size_t sdxl_weights_unknown_count(const sdxl_weights *w);
/* Bytes of materialized buffers the store owns (copies), and of the mapped
 * files. */
size_t sdxl_weights_owned_bytes(const sdxl_weights *w);
size_t sdxl_weights_file_count(const sdxl_weights *w);
const char *sdxl_weights_file_path(const sdxl_weights *w, size_t file); /* NULL if out of range */
const sdxl_st_file *sdxl_weights_file(const sdxl_weights *w, size_t file);

/* ---- LoRA hook ------------------------------------------------------------- */

typedef struct sdxl_weight_source {
    const char *path; /* the mapped file */
    const char *key;  /* its tensor key */
    const sdxl_st_tensor *tensor;
    sdxl_xform xform;
    int64_t row_begin, row_end; /* SDXL_XFORM_ROWS */
} sdxl_weight_source;

/* Where weight i comes from. INVALID_ARG if i is out of range. */
sdxl_status sdxl_weights_source(const sdxl_weights *w, size_t i, sdxl_weight_source *out);

/* Write weight i's ORIGINAL values (re-derived from the mapped source bytes:
 * transform applied, converted to `dtype` with the dtype.h rounding) into
 * dst, which holds nelem(weight) elements of `dtype`. With dtype equal to the
 * weight's dtype this reproduces the load-time bytes bit for bit, whatever
 * overrides are installed. INVALID_ARG on a bad index or a non-float dtype.
 * Thread-safe. */
sdxl_status sdxl_weights_read_original(const sdxl_weights *w, size_t i, void *dst, sdxl_dtype dtype,
                                       sdxl_error *err);

/* Elements [begin, begin+count) of the same (in the internal layout), into
 * dst (count elements of `dtype`, unaligned allowed): for reading one large
 * weight from several threads at once. Bit-identical to the corresponding
 * part of sdxl_weights_read_original. INVALID_ARG on a bad index or range.
 * Thread-safe. */
sdxl_status sdxl_weights_read_original_range(const sdxl_weights *w, size_t i, size_t begin, size_t count, void *dst,
                                             sdxl_dtype dtype, sdxl_error *err);

/* Make weight i read `data` (nelem elements of the weight's dtype, aligned
 * to its element size, owned by the caller and kept alive until replaced or
 * the store is freed); NULL restores the load-time data. The tensor struct's
 * address does not change. INVALID_ARG on a bad index or misaligned data. */
sdxl_status sdxl_weights_set_data(sdxl_weights *w, size_t i, void *data, sdxl_error *err);

/* ---- writing --------------------------------------------------------------- */

/* Write the store's current tensors as one SGM single file at `path`
 * (through the same naming, in reverse: TE2 q/k/v re-stacked into in_proj,
 * text_projection transposed back, VAE attention as 1x1 convs), with
 * __metadata__ hints that make the file self-describing (scaling_factor,
 * unet.num_heads, te1/te2.hidden_act, te1/te2.num_attention_heads,
 * te1/te2.hidden_state_index, te1/te2.layer_norm_eps,
 * te1/te2.bos/eos/pad_token_id, unet.norm_num_groups,
 * unet.upcast_attention, vae.norm_num_groups, force_zeros_for_empty_prompt,
 * shift_factor when set; see config.h) plus
 * `extra_metadata` ("key","value",...,NULL; may be NULL). Atomic (see
 * sdxl_st_write). Errors: IO, OUT_OF_MEMORY, INVALID_ARG. */
sdxl_status sdxl_weights_write_single_file(const sdxl_weights *w, const char *path,
                                           const char *const *extra_metadata, sdxl_error *err);

/* The __metadata__ that sdxl_weights_write_single_file writes for a model of
 * config `cfg` (the hints listed above, then `extra_metadata`, whose keys
 * replace hints of the same name), for writers that have no loaded store
 * (model/make_model.c streams generated weights). On success *out is one
 * sdxl_malloc'd block: a NULL-terminated "key","value",... array followed by
 * the strings it points to; release it with a single sdxl_free. Errors:
 * INVALID_ARG, OUT_OF_MEMORY. Thread-safe. */
sdxl_status sdxl_weights_single_file_metadata(const sdxl_model_config *cfg, const char *const *extra_metadata,
                                              const char ***out, sdxl_error *err);

#endif
