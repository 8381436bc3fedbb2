/* merge.h - merge a set of adapters into a model's weights, and restore them
 * exactly.
 *
 *     sdxl_lora_merger *m;
 *     sdxl_lora_merger_create(weights, cpu_backend, &m, &err);
 *     sdxl_lora_apply set[2] = {{style, 0.8f, 0.8f}, {light, 0.5f, 0.0f}};
 *     sdxl_lora_merger_apply(m, set, 2, 1.0f, &stats, &err);   // W' = W + Σ wᵢ·Δᵢ
 *     ... run the model ...
 *     sdxl_lora_merger_apply(m, set, 2, 1.0f, &stats, &err);   // same set: nothing to do
 *     sdxl_lora_merger_restore(m, &stats, &err);               // every weight back to the file's
 *     sdxl_lora_merger_free(m);
 *
 * The merger holds the model's "current set": for every weight, the list of
 * (adapter instance, module, strength) merged into it. Applying a set makes
 * it current:
 *   - a weight whose list is unchanged is left alone (applying the same set
 *     again is a no-op; changing one adapter's strength re-merges only the
 *     weights that adapter touches, the seed's dynamic weight adjustment);
 *   - a weight whose list changed is recomputed from scratch: its ORIGINAL
 *     values re-derived from the mapped file bytes (sdxl_weights_read_original,
 *     ARCHITECTURE rule 4), plus Σᵢ sᵢ·Δᵢ accumulated in f32, rounded once to
 *     the weight's dtype into a new buffer that the model then reads
 *     (sdxl_weights_set_data). Every Δᵢ is computed against the original W
 *     (order-independent; matters only for DoRA);
 *   - a weight no longer in any list is restored: the model reads its
 *     load-time data again, so it is bit-identical to a fresh load, after any
 *     sequence of applies and restores (no backup copies, no drift).
 * Strength of module j of adapter i: set[i].unet_weight for UNet modules,
 * set[i].te_weight for text-encoder modules, times `global`. Zero strengths
 * contribute nothing. An adapter with zero modules contributes nothing.
 *
 * Never half-applied: weights not yet overridden are computed first into new
 * buffers; if that fails (out of memory) they are freed and the model keeps
 * the previous set untouched. Weights already overridden are then re-merged
 * in place (no second copy of every merged weight: a full-size SDXL LoRA
 * holds ~5.5 GB of merged f16 weights); if that fails, every weight is
 * restored and the error says the model is back to its base weights. Either
 * way the model is never a mix of two sets.
 * Peak extra memory during an apply: the new buffers, plus f32 scratch for
 * the largest weight (2-3 copies).
 * Thread-safety: none; an apply must not run while the model is being run
 * (merges happen between requests). The adapters must stay alive for the
 * duration of each apply call only (the merger keeps their ids, not them).
 */
#ifndef SDXL_LORA_MERGE_H
#define SDXL_LORA_MERGE_H

#include <stddef.h>

#include "backend/backend.h"
#include "core/status.h"
#include "lora/adapter.h"
#include "model/weights.h"

typedef struct sdxl_lora_apply {
    const sdxl_lora_adapter *adapter;
    float unet_weight; /* strength on UNet modules */
    float te_weight;   /* strength on text-encoder modules */
} sdxl_lora_apply;

typedef struct sdxl_lora_merge_stats {
    size_t merged;   /* weights (re)computed by this call */
    size_t restored; /* weights put back to their load-time data */
    size_t kept;     /* weights already right, left alone */
    size_t held;     /* weights overridden after the call */
    size_t bytes;    /* bytes of merged buffers held after the call */
    size_t peak_extra_bytes; /* largest extra (new buffers + scratch) during the call */
    double ms;       /* wall time of the call */
} sdxl_lora_merge_stats;

typedef struct sdxl_lora_merger sdxl_lora_merger;

/* `w` must outlive the merger; `be` is a CPU back end (low-rank products).
 * Errors: INVALID_ARG, OUT_OF_MEMORY. */
sdxl_status sdxl_lora_merger_create(sdxl_weights *w, sdxl_backend *be, sdxl_lora_merger **out, sdxl_error *err);
/* Restores every weight, then frees. NULL-safe. */
void sdxl_lora_merger_free(sdxl_lora_merger *m);

/* Make `set` (n entries, n may be 0) the current set; `stats` may be NULL.
 * Errors: INVALID_ARG (an adapter bound to another model's naming, a
 * non-finite strength; nothing changed), OUT_OF_MEMORY (the previous set, or
 * no adapter at all when the in-place phase failed: see above). */
sdxl_status sdxl_lora_merger_apply(sdxl_lora_merger *m, const sdxl_lora_apply *set, size_t n, float global,
                                   sdxl_lora_merge_stats *stats, sdxl_error *err);
/* The empty set: every weight back to its load-time data. Cannot fail. */
void sdxl_lora_merger_restore(sdxl_lora_merger *m, sdxl_lora_merge_stats *stats);

/* Weights currently overridden, and the bytes of their buffers. */
size_t sdxl_lora_merger_held(const sdxl_lora_merger *m);
size_t sdxl_lora_merger_bytes(const sdxl_lora_merger *m);

#endif
