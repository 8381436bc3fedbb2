/* adapter.h - one LoRA-family adapter file, parsed and bound to a model's
 * naming: every key mapped onto a module of the model, every module's parts
 * shape-checked, ready to produce its weight delta.
 *
 *     sdxl_lora_adapter *a;
 *     if (sdxl_lora_adapter_load("loras/style.safetensors", naming, &a, &err)) ... err.msg ...
 *     printf("%zu modules, %zu keys unmatched\n", sdxl_lora_adapter_module_count(a),
 *            sdxl_lora_adapter_unmatched_count(a));
 *     ... sdxl_lora_merger_apply (merge.h) ...
 *     sdxl_lora_adapter_free(a);
 *
 * Containers: safetensors and torch.save files (zip or legacy pickle), told
 * apart by their bytes (io/tensorfile.h). The file is read into memory once
 * (its bytes are the adapter's; nothing stays mapped, so a file rewritten in
 * place while cached cannot fault the process).
 *
 * Key layouts, all resolved through the model's naming (model/naming.h):
 *   kohya           lora_unet_<diffusers path, . -> _>   lora_unet_down_blocks_1_attentions_0_proj_in
 *                   lora_unet_<SGM path, . -> _>          lora_unet_input_blocks_4_1_proj_in
 *                   lora_te1_<HF path>, lora_te2_<HF path> lora_te1_text_model_encoder_layers_0_mlp_fc1
 *   diffusers/PEFT  [base_model.model.][unet.|text_encoder.|text_encoder_2.]<module path>.<part>
 *                   (no component prefix: the UNet, else a text encoder whose module shapes fit)
 *   SGM dotted      [model.]diffusion_model.<SGM path>.<part>
 *   old diffusers   unet.<...>.attn1.processor.to_q_lora.down.weight (attention processors)
 * Parts (the key's suffix after the module):
 *   LoRA/LoCon      lora_down.weight | lora_A[.<adapter>].weight | lora.down.weight |
 *                   lora_linear_layer.down.weight; the same with up/B; lora_mid.weight; alpha
 *   LoHa            hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b, hada_t1, hada_t2
 *   LoKr            lokr_w1, lokr_w1_a, lokr_w1_b, lokr_w2, lokr_w2_a, lokr_w2_b, lokr_t2
 *   DoRA            dora_scale | lora_magnitude_vector[.weight] (next to any of the above)
 *   full            diff (weight), diff_b (bias); LyCORIS norm: w_norm, b_norm
 *
 * The delta of one module (W: the base weight [out, in] or [out, in, kh, kw],
 * k = kh*kw, all math in f32; every formula as kohya sd-scripts / LyCORIS
 * define the trained network and as diffusers, A1111 and ComfyUI merge it):
 *   LoRA    Δ = (α/r) · up[out,r] @ down[r,in·k]                      r = down.shape[0]
 *           (sd-scripts networks/lora.py LoRAModule: up(down(x)) * multiplier * alpha/lora_dim)
 *   Tucker  Δ[o,i,hw] = (α/r) · Σ_p Σ_q up[o,p] · mid[p,q,hw] · down[q,i]
 *           (LyCORIS LoConModule with use_tucker: down 1x1, mid kh x kw, up 1x1)
 *   LoHa    Δ = (α/r) · (w1_a @ w1_b) ∘ (w2_a @ w2_b)                 r = w1_b.shape[0]
 *           Tucker: w1[p,q,hw] = Σ_i Σ_j t1[i,j,hw] · w1_a[i,p] · w1_b[j,q]  (w1_a [r,out], w1_b [r,in])
 *           (LyCORIS modules/loha.py; FedPara, Hyeon-Woo et al. 2022)
 *   LoKr    Δ = s · kron(w1, w2);  w1 = lokr_w1 | w1_a @ w1_b  [a,b];  w2 = lokr_w2 | w2_a @ w2_b
 *           (or Tucker as LoHa with t2)  [c,d(,kh,kw)];  a·c = out, b·d = in;
 *           s = α / w2_b.shape[0] when w2 is factorized, else α / w1_b.shape[0] when w1 is,
 *           else 1 (LyCORIS modules/lokr.py: both full means alpha = dim; which rank wins when
 *           both are factorized as A1111 and ComfyUI read it — LyCORIS trains them equal)
 *   full    Δ = diff; bias Δ = diff_b; norm layers: Δweight = w_norm, Δbias = b_norm (scale 1)
 *   DoRA    Wc = W + Δ0 (Δ0: the module's delta above); n = ‖Wc‖₂ per input channel when the
 *           scale is [1,in,...] (LyCORIS/A1111 default), per output row when it is [out,1,...]
 *           or 1-D [out]; PEFT's lora_magnitude_vector is always per output row (its Conv2d
 *           form is [1,out,1,1]); Δ = Wc · scale / (n + ε) − W,
 *           ε = 2⁻²³ (f32 epsilon, as ComfyUI). The strength then scales Δ like any other
 *           (A1111 networks: apply_weight_decompose returns the difference).
 * Where others differ (tools/refs/make_lycoris_refs.py checks against LyCORIS
 * 3.1/3.4 and PEFT 0.10): LyCORIS's own merge_to scales LoHa/LoKr by (α/r)²
 * (its forward, A1111 and ComfyUI by α/r, as here); LyCORIS and PEFT put a
 * DoRA strength m inside the normalisation (here and in A1111/ComfyUI it
 * scales the difference; all agree at m = 1); A1111/ComfyUI stack adapters
 * one after another on the live weight, so a later DoRA normalises W plus
 * earlier deltas (here every Δ is taken against the base W: the result does
 * not depend on the order of the list).
 * α defaults to r when the file has no alpha for a module (sd-scripts). PEFT
 * and diffusers exports have no alpha keys: α = r, i.e. scale = strength.
 *
 * Keys that map to no module of the model, modules whose part shapes do not
 * fit the model's weight, and incomplete modules (an up without a down) are
 * not silently dropped: they are counted and listed with the reason
 * (sdxl_lora_adapter_unmatched_*). Loading succeeds as long as the file is
 * well-formed; an adapter with zero usable modules is for the caller to
 * report (sdxl_lora_adapter_module_count() == 0).
 *
 * Thread-safety: immutable after load; any number of threads may read it
 * (compute deltas) concurrently.
 */
#ifndef SDXL_LORA_ADAPTER_H
#define SDXL_LORA_ADAPTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"
#include "io/safetensors.h"
#include "model/naming.h"

typedef enum sdxl_lora_type {
    SDXL_LORA_TYPE_LORA = 0,  /* low rank (LoCon when on a conv) */
    SDXL_LORA_TYPE_LORA_TUCKER, /* LoCon with lora_mid */
    SDXL_LORA_TYPE_LOHA,
    SDXL_LORA_TYPE_LOKR,
    SDXL_LORA_TYPE_FULL,      /* diff / diff_b / w_norm / b_norm only */
    SDXL_LORA_TYPE_COUNT_
} sdxl_lora_type;

const char *sdxl_lora_type_name(sdxl_lora_type t); /* "lora", "locon-tucker", "loha", "lokr", "full" */

/* One module of an adapter (read-only view; the adapter owns it). */
typedef struct sdxl_lora_module {
    const sdxl_name_module *module; /* the model module it changes */
    const char *key;                /* the module's key as the file spells it (without part suffix) */
    sdxl_lora_type type;
    int rank;      /* r (LoRA/LoHa), the factorized dim (LoKr), 0 (full) */
    float alpha;   /* as in the file, or = rank when absent */
    bool has_alpha;
    bool dora;     /* has a DoRA magnitude */
    bool weight_delta; /* changes the module's weight */
    bool bias_delta;   /* changes the module's bias (diff_b / b_norm) */
} sdxl_lora_module;

typedef struct sdxl_lora_adapter sdxl_lora_adapter;

/* Read `path` and bind it to `naming`. Errors: NOT_FOUND (no such file), IO,
 * BAD_INPUT (malformed container, a part of the wrong rank/dtype, a module
 * with conflicting parts — message: file, key, what was expected),
 * OUT_OF_MEMORY. */
sdxl_status sdxl_lora_adapter_load(const char *path, const sdxl_naming *naming, sdxl_lora_adapter **out,
                                   sdxl_error *err);
/* Same over caller bytes (copied); `label` names it in messages. */
sdxl_status sdxl_lora_adapter_parse(const void *buf, size_t len, const char *label, const sdxl_naming *naming,
                                    sdxl_lora_adapter **out, sdxl_error *err);
void sdxl_lora_adapter_free(sdxl_lora_adapter *a); /* NULL-safe */

/* A process-unique serial, never reused: identifies this loaded instance
 * (a reload of the same file gets a new one). */
uint64_t sdxl_lora_adapter_id(const sdxl_lora_adapter *a);
const char *sdxl_lora_adapter_label(const sdxl_lora_adapter *a); /* the path, or the parse label */
const sdxl_naming *sdxl_lora_adapter_naming(const sdxl_lora_adapter *a); /* the one it was bound to */
const char *sdxl_lora_adapter_format(const sdxl_lora_adapter *a); /* "safetensors", "pytorch-zip", ... */
/* Bytes the adapter holds (file bytes + tables), for cache accounting. */
size_t sdxl_lora_adapter_bytes(const sdxl_lora_adapter *a);
/* The file's __metadata__ (safetensors) or string entries (pickles). */
const char *sdxl_lora_adapter_metadata(const sdxl_lora_adapter *a, const char *key); /* NULL if absent */

size_t sdxl_lora_adapter_module_count(const sdxl_lora_adapter *a);
const sdxl_lora_module *sdxl_lora_adapter_module(const sdxl_lora_adapter *a, size_t i);
/* Modules per component (SDXL_COMP_UNET / TE1 / TE2). */
size_t sdxl_lora_adapter_component_count(const sdxl_lora_adapter *a, sdxl_component c);
/* The dominant type (most modules) and the largest rank, for listings. */
sdxl_lora_type sdxl_lora_adapter_main_type(const sdxl_lora_adapter *a);
int sdxl_lora_adapter_max_rank(const sdxl_lora_adapter *a);

/* What could not be used: each entry a key (or module key) and why
 * ("no module 'lora_unet_foo' in this model", "shape [4,320] does not fit
 * unet.x.weight [640,640]", "lora_up without lora_down"). */
size_t sdxl_lora_adapter_unmatched_count(const sdxl_lora_adapter *a);
bool sdxl_lora_adapter_unmatched_at(const sdxl_lora_adapter *a, size_t i, const char **key, const char **why);

/* The module's delta for its weight (if weight_delta) and/or bias (if
 * bias_delta), in f32, at strength 1, scale included: dw gets nelem(weight)
 * floats in the weight's internal layout, db nelem(bias). `base` is the
 * module weight's ORIGINAL values in f32 (needed by DoRA; may be NULL for
 * modules without DoRA). `be` is a CPU back end (its linear op does the
 * low-rank products). Errors: OUT_OF_MEMORY, INVALID_ARG. */
sdxl_status sdxl_lora_module_delta(sdxl_backend *be, const sdxl_lora_adapter *a, size_t i, const float *base,
                                   float *dw, float *db, sdxl_error *err);

#endif
