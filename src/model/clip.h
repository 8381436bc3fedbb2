/* clip.h - the CLIP text encoders of SDXL (transformers' CLIPTextModel and
 * CLIPTextModelWithProjection), run through the op table.
 *
 *   ids [B,T] ─token emb + position emb─► x [B,T,H]
 *   × num_layers:  x += out_proj(attn_causal(LN1(x)))      (heads from config)
 *                  x += fc2(act(fc1(LN2(x))))              (act: gelu / quick_gelu from config)
 *   hidden = hidden_states[cfg.hidden_state_index]        (0 = embeddings, i = after layer i;
 *                                                          SDXL reads num_layers-1, the penultimate)
 *   pooled = final_LN(x)[b, eos position]  (· text_projectionᵀ when the model has one)
 *
 * The eos position follows transformers: with eos_token_id == 2 (every real
 * CLIP config) it is argmax(ids) (first maximum); otherwise the first
 * position holding eos_token_id (the last position if there is none).
 * Layers after the ones the requested outputs need are not run (SDXL's TE1
 * stops after its penultimate layer: its pooled output is unused).
 *
 * Memory: activations come from `arena` (sdxl_clip_arena_bytes says how
 * much); nothing else is allocated. Thread-safety: the weights are read only;
 * one back end per concurrent call.
 */
#ifndef SDXL_MODEL_CLIP_H
#define SDXL_MODEL_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/arena.h"
#include "model/weights.h"

/* Arena bytes sdxl_clip_encode needs for B sequences of T tokens. */
size_t sdxl_clip_arena_bytes(const sdxl_te_config *cfg, int B, int T);

/* Encode B sequences of T ids (T <= max_position_embeddings) with text
 * encoder `comp` (SDXL_COMP_TE1 or SDXL_COMP_TE2) of `w`.
 *   hidden  [B,T,hidden_size] f32, or NULL: hidden_states[cfg.hidden_state_index]
 *   pooled  [B,projection_dim] (with projection) or [B,hidden_size], or NULL
 * Errors: BAD_INPUT for an id outside the vocabulary (position named),
 * INVALID_ARG for T or B out of range, OUT_OF_MEMORY when the arena is too
 * small, and whatever an op reports. */
sdxl_status sdxl_clip_encode(sdxl_backend *be, const sdxl_weights *w, sdxl_component comp, const int32_t *ids,
                             int B, int T, sdxl_arena *arena, float *hidden, float *pooled, sdxl_error *err);

#endif
