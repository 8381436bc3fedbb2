/* naming.h - the one internal naming of SDXL weights, and the mapping of
 * every file layout onto it (ARCHITECTURE rule 3).
 *
 * Internal names are diffusers' module paths with a component prefix:
 *
 *     unet.down_blocks.1.attentions.0.proj_in.weight
 *     vae.decoder.up_blocks.0.resnets.1.conv1.weight
 *     te1.text_model.encoder.layers.3.self_attn.q_proj.weight
 *     te2.text_model.final_layer_norm.bias, te2.text_projection.weight
 *
 * A naming is computed from a model config (block indices depend on the
 * number of levels, layers_per_block and where the attentions are). It
 * lists every tensor the UNet, VAE and text encoders of that config need
 * (the "expected set"), each with its internal shape and, per layout, where
 * it lives:
 *
 *   SDXL_LAYOUT_DIFFUSERS   <component folder>/<file>: the internal name
 *                           without its prefix, same shape (identity).
 *   SDXL_LAYOUT_SGM         Stability's single file:
 *     UNet   model.diffusion_model.*: time_embed.0/2, label_emb.0.0/2,
 *            input_blocks.0.0 (conv_in), input_blocks.K.0 resnets
 *            (in_layers.0/2, emb_layers.1, out_layers.0/3, skip_connection),
 *            input_blocks.K.1 attentions, input_blocks.K.0.op downsamplers,
 *            middle_block.0/1/2, output_blocks.K.{0,1} and the upsampler at
 *            output_blocks.K.{1 or 2}.conv (2 when the level has attention),
 *            out.0/2. K = 1 + level*(N+1) + j down, level*(N+1) + j up.
 *     VAE    first_stage_model.{encoder,decoder}: down.i.block.j,
 *            down.i.downsample, up.(L-1-i).block.j, up.(L-1-i).upsample,
 *            mid.block_1/2, mid.attn_1.{norm,q,k,v,proj_out} (1x1 conv
 *            [C,C,1,1] in SGM, Linear [C,C] inside: a RESHAPE view),
 *            nin_shortcut, norm_out; quant_conv, post_quant_conv.
 *     TE1    conditioner.embedders.0.transformer.text_model.* (HF names).
 *     TE2    conditioner.embedders.1.model.*: token_embedding,
 *            positional_embedding, transformer.resblocks.N.{ln_1,
 *            attn.in_proj_weight/bias = q;k;v stacked on dim 0 (three ROWS
 *            views), attn.out_proj, ln_2, mlp.c_fc (fc1), mlp.c_proj (fc2)},
 *            ln_final, text_projection stored [hidden, proj] (TRANSPOSE).
 *
 * The same tables serve LoRA: modules (a weight plus its optional bias) can
 * be looked up by internal path, by SGM module path
 * ("input_blocks.4.1.transformer_blocks.0.attn1.to_q", with or without
 * "model.diffusion_model."), and by kohya's flattened names, both spellings
 * sd-scripts writes: lora_unet_<SGM path, '.'->'_'> and
 * lora_unet_<diffusers path, '.'->'_'>, lora_te1_<HF path>, lora_te2_<HF path>.
 *
 * Memory: one object owns every string and table (sdxl_malloc; a few
 * blocks). Thread-safety: immutable after sdxl_naming_create; any number of
 * threads may read it concurrently.
 */
#ifndef SDXL_MODEL_NAMING_H
#define SDXL_MODEL_NAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"
#include "model/config.h"

typedef enum sdxl_component {
    SDXL_COMP_UNET = 0,
    SDXL_COMP_VAE,
    SDXL_COMP_TE1,
    SDXL_COMP_TE2,
    SDXL_COMP_COUNT_
} sdxl_component;

/* "unet", "vae", "te1", "te2" (the internal name prefix); "?" if invalid. */
const char *sdxl_component_prefix(sdxl_component c);
/* diffusers folder: "unet", "vae", "text_encoder", "text_encoder_2". */
const char *sdxl_component_folder(sdxl_component c);

typedef enum sdxl_layout { SDXL_LAYOUT_DIFFUSERS = 0, SDXL_LAYOUT_SGM, SDXL_LAYOUT_COUNT_ } sdxl_layout;

const char *sdxl_layout_name(sdxl_layout l); /* "diffusers", "sgm" */

/* How the internal tensor is made from the source tensor. */
typedef enum sdxl_xform {
    SDXL_XFORM_NONE = 0,  /* same bytes, same shape */
    SDXL_XFORM_RESHAPE,   /* same bytes, another shape with the same element count */
    SDXL_XFORM_ROWS,      /* rows [row_begin, row_end) of the source's dim 0: same bytes, offset */
    SDXL_XFORM_TRANSPOSE, /* 2-D: internal [a,b] = transpose of source [b,a]; needs a copy */
} sdxl_xform;

const char *sdxl_xform_name(sdxl_xform x); /* "none", "reshape", "rows", "transpose" */

typedef struct sdxl_name_source {
    const char *key; /* tensor key in that layout's file (diffusers: no component prefix) */
    sdxl_xform xform;
    int ndim;
    int64_t shape[SDXL_MAX_DIMS]; /* expected shape of the source tensor */
    int64_t row_begin, row_end;   /* SDXL_XFORM_ROWS only */
} sdxl_name_source;

typedef struct sdxl_name_entry {
    const char *name; /* internal name */
    sdxl_component comp;
    int ndim;
    int64_t shape[SDXL_MAX_DIMS]; /* internal (diffusers) shape; dims >= ndim are 1 */
    int module;                   /* index of its module */
    sdxl_name_source src[SDXL_LAYOUT_COUNT_];
} sdxl_name_entry;

typedef enum sdxl_module_kind {
    SDXL_MODULE_LINEAR = 0, /* weight [out, in] */
    SDXL_MODULE_CONV,       /* weight [out, in, kh, kw] */
    SDXL_MODULE_NORM,       /* GroupNorm / LayerNorm: weight [C] */
    SDXL_MODULE_EMBEDDING,  /* token / position table [n, dim] */
} sdxl_module_kind;

typedef struct sdxl_name_module {
    const char *path;      /* internal module path: "unet.mid_block.attentions.0.proj_in" */
    const char *sgm_path;  /* full SGM module path, or NULL when the module is a slice (TE2 q/k/v) */
    const char *kohya;     /* "lora_unet_mid_block_attentions_0_proj_in"; NULL for the VAE */
    const char *kohya_sgm; /* "lora_unet_middle_block_1_proj_in" (UNet only; else NULL) */
    sdxl_component comp;
    sdxl_module_kind kind;
    int weight; /* entry index of .weight (every module has one) */
    int bias;   /* entry index of .bias, or -1 */
} sdxl_name_module;

typedef struct sdxl_naming sdxl_naming;

/* Build the naming of `cfg` (which must pass sdxl_model_config_validate).
 * Errors: INVALID_ARG (cfg invalid), OUT_OF_MEMORY. Free with
 * sdxl_naming_free. */
sdxl_status sdxl_naming_create(const sdxl_model_config *cfg, sdxl_naming **out, sdxl_error *err);
void sdxl_naming_free(sdxl_naming *n); /* NULL-safe */

/* Entries (tensors), in a fixed order: UNet, VAE, TE1, TE2. */
size_t sdxl_naming_count(const sdxl_naming *n);
size_t sdxl_naming_count_component(const sdxl_naming *n, sdxl_component c);
const sdxl_name_entry *sdxl_naming_at(const sdxl_naming *n, size_t i); /* NULL if out of range */
/* Index of an entry (its position for sdxl_naming_at); -1 for NULL. */
long sdxl_naming_index(const sdxl_naming *n, const sdxl_name_entry *e);

/* By internal name (hash, O(1)); NULL if absent. */
const sdxl_name_entry *sdxl_naming_find(const sdxl_naming *n, const char *name);
/* The entry whose source in `layout` is `key`. DIFFUSERS: key as in the
 * component's file (comp says which file). SGM: the single file's key, comp
 * ignored; for TE2's in_proj (three entries share one key) the q entry. */
const sdxl_name_entry *sdxl_naming_find_source(const sdxl_naming *n, sdxl_layout layout, sdxl_component comp,
                                               const char *key);

/* Modules. */
size_t sdxl_naming_module_count(const sdxl_naming *n);
const sdxl_name_module *sdxl_naming_module_at(const sdxl_naming *n, size_t i);
const sdxl_name_module *sdxl_naming_module(const sdxl_naming *n, const char *path); /* internal path */
/* SGM module path, full ("model.diffusion_model.input_blocks.4.1.proj_in",
 * "first_stage_model.decoder.mid.attn_1.q",
 * "conditioner.embedders.1.model.transformer.resblocks.0.attn.out_proj") or
 * UNet-relative ("input_blocks.4.1.proj_in", as LoRA files write it). */
const sdxl_name_module *sdxl_naming_module_by_sgm(const sdxl_naming *n, const char *sgm_path);
/* kohya flattened name, either spelling ("lora_unet_input_blocks_4_1_proj_in",
 * "lora_unet_down_blocks_1_attentions_0_proj_in", "lora_te1_text_model_...").
 * Without the ".lora_down.weight" suffix. */
const sdxl_name_module *sdxl_naming_module_by_kohya(const sdxl_naming *n, const char *name);

#endif
