/* tensorfile.h - one read-only "named tensor set" over every weight
 * container we read: safetensors (io/safetensors.h), torch.save zip and
 * legacy files (io/torchfile.h). Callers (model loading, LoRA loading) ask
 * for tensors by name and never care which container it was.
 *
 * The container is detected from the content, never from the extension
 * (.pt, .bin and .ckpt files in the wild may be any of them):
 *   - "PK\x03\x04" at byte 0                        -> SDXL_TF_TORCH_ZIP
 *   - a little-endian u64 header length N followed by '{' (or JSON
 *     whitespace) at byte 8                         -> SDXL_TF_SAFETENSORS
 *   - pickle PROTO (0x80) at byte 0                  -> SDXL_TF_TORCH_LEGACY
 *   - anything else: SDXL_STATUS_BAD_INPUT naming the first bytes.
 * The chosen reader then validates everything (its own header says what it
 * accepts); its errors come through unchanged.
 *
 * Differences that remain visible, by design:
 *   - safetensors data is zero-copy (mapped file or the caller's buffer) and
 *     may be unaligned; torch tensors are owned, contiguous, 64-byte aligned
 *     copies. sdxl_tf_to_f32 reads either.
 *   - tensor order: safetensors by data offset, torch in pickle order.
 *   - torch files also turn number leaves into 0-dim F64/I64 tensors and
 *     string leaves into metadata (see torchfile.h); safetensors metadata is
 *     its "__metadata__".
 *
 * Thread-safety: an open sdxl_tensorfile is immutable; getters may be called
 * concurrently. sdxl_tf_close must not race with other calls on it.
 */
#ifndef SDXL_IO_TENSORFILE_H
#define SDXL_IO_TENSORFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"
#include "io/safetensors.h"

typedef enum sdxl_tf_format { SDXL_TF_SAFETENSORS, SDXL_TF_TORCH_ZIP, SDXL_TF_TORCH_LEGACY } sdxl_tf_format;

typedef struct sdxl_tensorfile sdxl_tensorfile;

/* Open `path` (detecting its container). Safetensors files stay mapped until
 * sdxl_tf_close; torch files are read into memory and unmapped. Errors:
 * NOT_FOUND, IO, BAD_INPUT, UNSUPPORTED, OUT_OF_MEMORY, with messages naming
 * the path. On failure *out is NULL. */
sdxl_status sdxl_tf_open(const char *path, sdxl_tensorfile **out, sdxl_error *err);

/* Same over [buf, buf+len). For safetensors the buffer must stay valid and
 * unchanged until sdxl_tf_close (tensor data points into it); torch files
 * copy what they keep and do not need it after the call. Messages name the
 * file "<memory>". */
sdxl_status sdxl_tf_parse(const void *buf, size_t len, sdxl_tensorfile **out, sdxl_error *err);

/* NULL-safe. Every pointer obtained from f dies with it. */
void sdxl_tf_close(sdxl_tensorfile *f);

sdxl_tf_format sdxl_tf_format_of(const sdxl_tensorfile *f);
/* "safetensors", "torch zip", "torch legacy"; "?" for an invalid value. */
const char *sdxl_tf_format_name(sdxl_tf_format fmt);

/* Tensors: count, i-th (NULL if out of range), by exact name (NULL if
 * absent). Owned by f. */
size_t sdxl_tf_count(const sdxl_tensorfile *f);
const sdxl_st_tensor *sdxl_tf_at(const sdxl_tensorfile *f, size_t i);
const sdxl_st_tensor *sdxl_tf_find(const sdxl_tensorfile *f, const char *name);

/* String metadata: count, i-th (false if out of range), by key (NULL if
 * absent). Owned by f. */
size_t sdxl_tf_metadata_count(const sdxl_tensorfile *f);
bool sdxl_tf_metadata_at(const sdxl_tensorfile *f, size_t i, const char **key, const char **value);
const char *sdxl_tf_metadata(const sdxl_tensorfile *f, const char *key);

/* Bytes f holds in memory, for cache accounting: a torch file's copies and
 * tables; for safetensors only the bookkeeping (tensor table, names,
 * metadata), not the mapped or caller-owned data. */
size_t sdxl_tf_bytes(const sdxl_tensorfile *f);

/* Convert all nbytes / dtype-size elements of t into dst (f32, any
 * alignment of t->data: reads go through memcpy). F32 is copied; F16 and
 * BF16 widen exactly; F64, I64 and I32 round to the nearest f32. Other
 * dtypes: SDXL_STATUS_UNSUPPORTED naming the tensor. INVALID_ARG if t or
 * dst is NULL (dst may be NULL for a tensor with no elements). Thread-safe. */
sdxl_status sdxl_tf_to_f32(const sdxl_st_tensor *t, float *dst, sdxl_error *err);

#endif
