/* torchfile.h - read a torch.save file (.pt / .pth / .bin / .ckpt) as a flat
 * set of named tensors, without Python and without running its pickle.
 *
 * Two containers, told apart by content:
 *   - zip (PyTorch >= 1.6, the default): a zip archive whose entries sit in
 *     one top folder of any name, <prefix>/data.pkl (the pickle),
 *     <prefix>/data/<key> (the raw bytes of each storage), optionally
 *     <prefix>/byteorder ("little"; "big" is SDXL_STATUS_UNSUPPORTED) and
 *     other records that are ignored (version, .data/serialization_id).
 *     Entries may be stored or compressed; libzip checks their CRCs.
 *   - legacy (torch.save(..., _use_new_zipfile_serialization=False)): five
 *     pickles back to back (the magic number 0x1950a86a20f9469cfc6c, the
 *     protocol version 1001, sys_info, the object, the list of storage keys)
 *     followed, for each key of that list in order, by an int64 element
 *     count and the storage's raw bytes. (The tar format of torch < 0.4 is
 *     not read.)
 * The pickle runs in io/pickle.h's restricted interpreter: any global beyond
 * tensors, storages and containers (os.system, builtins.eval, ...) makes the
 * load fail with BAD_INPUT naming it, and nothing is executed.
 *
 * What comes out. The pickled object must be a dict (or OrderedDict). It is
 * flattened into names joined with ".": {"state_dict": {"a": {"w": T}}}
 * gives the tensor "state_dict.a.w" (callers strip wrapper prefixes such as
 * "state_dict." or "model." themselves; nothing is guessed here). Keys are
 * strings, or ints (written in decimal); entries with other keys are ignored.
 * Leaves:
 *   - tensors (and nn.Parameters) become tensors;
 *   - Python floats become 0-dim F64 tensors, Python ints 0-dim I64 tensors
 *     (so a LoRA's `alpha` stored as a number reads like a tensor);
 *   - strings become metadata entries (name -> value);
 *   - everything else (bool, None, bytes, lists, tuples, dtypes, ...) is
 *     ignored and counted (sdxl_torch_ignored_count).
 * Two leaves with the same flattened name are BAD_INPUT. Every tensor is
 * copied into its own 64-byte-aligned buffer in C-contiguous (row-major)
 * layout, whatever its strides in the file: views sharing one storage,
 * transposed and sliced tensors, expanded (zero-stride) tensors all come out
 * as the values torch.load would give. dtype is that of the storage
 * (F64/F32/F16/BF16/I64/I32/I16/I8/U8/BOOL, and F8_E4M3/F8_E5M2/U16/U32/U64
 * through torch 2.x's UntypedStorage + dtype form); complex and quantized
 * storages are SDXL_STATUS_UNSUPPORTED, as are tensors of more than
 * SDXL_ST_MAX_DIMS dims.
 *
 * The file is UNTRUSTED. Checked before anything is used: zip structure and
 * CRCs (libzip); every storage's declared size against its data (exactly);
 * every tensor's offset + sum((size_i - 1) * stride_i) against its storage,
 * in overflow-safe 64-bit arithmetic; name lengths (SDXL_TORCH_MAX_NAME) and
 * nesting depth (SDXL_TORCH_MAX_DEPTH); and the memory it may take: tensor
 * data, names and strings together at most 4 x the file size + 64 MiB
 * (SDXL_TORCH_EXPANSION_*), so that a small hostile file cannot ask for
 * gigabytes through expanded views or shared storages. Failures are
 * BAD_INPUT with a message naming the file ("<memory>" for a buffer), the
 * entry or the tensor, and the problem.
 *
 * Thread-safety: an open sdxl_torch_file is immutable; its getters may be
 * called from any number of threads. sdxl_torch_close must not race with
 * other calls on the same file. Memory: tensor data and tables through
 * sdxl_malloc (sdxl_torch_bytes); libzip's own working memory during the
 * parse is not counted.
 */
#ifndef SDXL_IO_TORCHFILE_H
#define SDXL_IO_TORCHFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"
#include "io/safetensors.h" /* sdxl_st_tensor, sdxl_st_dtype */

#define SDXL_TORCH_MAX_NAME 4096 /* bytes of one flattened name */
#define SDXL_TORCH_MAX_DEPTH 64  /* nested dicts */
#define SDXL_TORCH_EXPANSION_FACTOR 4
#define SDXL_TORCH_EXPANSION_SLACK ((size_t)64 << 20)

typedef struct sdxl_torch_file sdxl_torch_file;

/* Read the file at `path` (mapped for the parse, unmapped before return:
 * everything kept is copied). On success *out owns the result; close it with
 * sdxl_torch_close. Errors: NOT_FOUND, IO (open, stat, mmap; not a regular
 * file), BAD_INPUT (see above), UNSUPPORTED, OUT_OF_MEMORY. On failure *out
 * is NULL. */
sdxl_status sdxl_torch_open(const char *path, sdxl_torch_file **out, sdxl_error *err);

/* Same over [buf, buf+len), which is only read during the call (everything
 * kept is copied). Messages name the file "<memory>". */
sdxl_status sdxl_torch_parse(const void *buf, size_t len, sdxl_torch_file **out, sdxl_error *err);

/* Free everything. NULL-safe. Every pointer obtained from f dies with it. */
void sdxl_torch_close(sdxl_torch_file *f);

/* Number of tensors (0 for NULL). */
size_t sdxl_torch_count(const sdxl_torch_file *f);
/* i-th tensor, in the order the pickle's dicts list them (depth first);
 * NULL if out of range. data is C-contiguous, 64-byte aligned, owned by f
 * (non-NULL also when nbytes is 0); offset is the tensor's byte offset in
 * its storage (0 for numbers). */
const sdxl_st_tensor *sdxl_torch_at(const sdxl_torch_file *f, size_t i);
/* Tensor by exact flattened name (binary search); NULL if absent. */
const sdxl_st_tensor *sdxl_torch_find(const sdxl_torch_file *f, const char *name);

/* String leaves, in file order. metadata_at returns false (and leaves *key,
 * *value alone) if i is out of range. Strings owned by f. */
size_t sdxl_torch_metadata_count(const sdxl_torch_file *f);
bool sdxl_torch_metadata_at(const sdxl_torch_file *f, size_t i, const char **key, const char **value);
/* Value of a metadata key (binary search); NULL if absent. */
const char *sdxl_torch_metadata(const sdxl_torch_file *f, const char *key);

/* Leaves that were neither tensors, numbers nor strings (see above). */
size_t sdxl_torch_ignored_count(const sdxl_torch_file *f);
/* true for the legacy (non-zip) container. */
bool sdxl_torch_is_legacy(const sdxl_torch_file *f);
/* Bytes f holds through sdxl_malloc (tensor data, names, tables). */
size_t sdxl_torch_bytes(const sdxl_torch_file *f);

#endif
