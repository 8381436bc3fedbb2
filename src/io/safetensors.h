/* safetensors.h - read and write .safetensors files.
 *
 * The format (https://github.com/huggingface/safetensors):
 *
 *     u64 little-endian N | N bytes of UTF-8 JSON | data section
 *
 * The JSON is one object: each key is a tensor name mapped to
 *     {"dtype": "F16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 * with offsets relative to the start of the data section, plus an optional
 * "__metadata__" object of string values.
 *
 * Reading is zero-copy: sdxl_st_open maps the file read-only and every
 * tensor's `data` points into the mapping (weights stay mapped; restoring a
 * LoRA-touched weight re-reads these bytes). The file is UNTRUSTED: every
 * offset, size and string is checked before the open succeeds, and every
 * violation returns SDXL_STATUS_BAD_INPUT with a message naming the file, the
 * tensor and the problem. What is accepted:
 *   - header length in [1, 100 000 000] and within the file;
 *   - header is strict UTF-8 JSON (no raw control characters, no \u0000,
 *     nothing but whitespace after the object); an object whose values are
 *     tensor entries with exactly the three fields above, or "__metadata__";
 *   - dims and offsets are plain non-negative integers below 2^53 (no sign,
 *     fraction or exponent, no leading zeros);
 *   - at most SDXL_ST_MAX_DIMS dims, at most SDXL_ST_MAX_TENSORS tensors;
 *   - shape product x dtype size == end - begin, without overflow;
 *   - begin <= end <= size of the data section; no two tensors share a byte;
 *   - unique tensor names and unique metadata keys.
 * Gaps between tensors and unused bytes at the end of the data section are
 * accepted (logged at debug level): the official reader rejects them, but
 * they are harmless to a reader that only follows offsets.
 *
 * Thread-safety: a sdxl_st_file is immutable once opened; any number of
 * threads may call the getters on it concurrently. sdxl_st_close must not
 * race with other calls on the same file.
 *
 * Memory: one sdxl_malloc block per file (tensor table, name index and all
 * strings) plus the mapping, counted as mapped bytes. The JSON tree is
 * transient (cJSON's own allocator, not counted; freed before the open
 * returns). It costs about 80 bytes per JSON value, so a hostile header made
 * of tiny values can take ~30x its size for a moment: up to ~3 GB at the
 * 100 MB cap. Real headers are small (SDXL checkpoint ~300 KB).
 */
#ifndef SDXL_IO_SAFETENSORS_H
#define SDXL_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

typedef enum sdxl_st_dtype {
    SDXL_ST_BOOL,
    SDXL_ST_U8,
    SDXL_ST_I8,
    SDXL_ST_I16,
    SDXL_ST_U16,
    SDXL_ST_I32,
    SDXL_ST_U32,
    SDXL_ST_I64,
    SDXL_ST_U64,
    SDXL_ST_F16,
    SDXL_ST_BF16,
    SDXL_ST_F32,
    SDXL_ST_F64,
    SDXL_ST_F8_E4M3,
    SDXL_ST_F8_E5M2,
    SDXL_ST_DTYPE_COUNT_
} sdxl_st_dtype;

#define SDXL_ST_MAX_DIMS 8
#define SDXL_ST_MAX_HEADER 100000000u /* bytes of JSON, as the reference reader caps it */
#define SDXL_ST_MAX_TENSORS 1000000u  /* bounds the tensor table of a hostile header */

typedef struct sdxl_st_tensor {
    const char *name; /* owned by the file */
    sdxl_st_dtype dtype;
    int ndim;                        /* 0 (scalar, one element) .. SDXL_ST_MAX_DIMS */
    int64_t shape[SDXL_ST_MAX_DIMS]; /* dims beyond ndim are 0 */
    const void *data;                /* into the mapping / caller buffer; read-only; no alignment promised */
    size_t nbytes;                   /* end - begin; 0 for a tensor with no elements */
    uint64_t offset;                 /* of data from the start of the data section */
} sdxl_st_tensor;

typedef struct sdxl_st_file sdxl_st_file;

/* A metadata entry (key and value owned by their file). */
typedef struct sdxl_st_kv {
    const char *key, *value;
} sdxl_st_kv;

/* Internal (io/): binary searches over tables sorted by strcmp of the name
 * (key), shared by the safetensors and torch readers. NULL when absent. */
const sdxl_st_tensor *sdxl__st_find_sorted(const sdxl_st_tensor *const *by_name, size_t n, const char *name);
const char *sdxl__st_kv_find_sorted(const sdxl_st_kv *const *by_key, size_t n, const char *key);

/* Map `path` read-only and validate it. On success *out owns the mapping
 * (close it with sdxl_st_close). Errors: NOT_FOUND (no such file), IO (open,
 * stat, mmap refused; not a regular file), BAD_INPUT (malformed, see above),
 * OUT_OF_MEMORY. On failure *out is NULL.
 * Caveat of mmap: if another process truncates the file while it is mapped,
 * touching the lost pages raises SIGBUS. Weight files are not rewritten in
 * place (sdxl_st_write renames), so this does not happen in our own flows. */
sdxl_status sdxl_st_open(const char *path, sdxl_st_file **out, sdxl_error *err);

/* Same over caller memory [buf, buf+len), which must stay valid and
 * unchanged until sdxl_st_close (tensor data points into it). Nothing is
 * copied but names and metadata. sdxl_st_path gives "<memory>". */
sdxl_status sdxl_st_parse(const void *buf, size_t len, sdxl_st_file **out, sdxl_error *err);

/* Unmap (if mapped) and free. NULL-safe. Every pointer obtained from `f`
 * (tensors, names, data, metadata) dies with it. */
void sdxl_st_close(sdxl_st_file *f);

/* Number of tensors (0 for NULL). */
size_t sdxl_st_count(const sdxl_st_file *f);
/* i-th tensor in the order of data offsets (begin, then end, then name);
 * NULL if i is out of range. */
const sdxl_st_tensor *sdxl_st_at(const sdxl_st_file *f, size_t i);
/* Tensor by exact name (binary search, O(log n)); NULL if absent. */
const sdxl_st_tensor *sdxl_st_find(const sdxl_st_file *f, const char *name);

/* "__metadata__" entries, in file order. sdxl_st_metadata_at returns false
 * (and leaves *key, *value alone) if i is out of range. Strings owned by f. */
size_t sdxl_st_metadata_count(const sdxl_st_file *f);
bool sdxl_st_metadata_at(const sdxl_st_file *f, size_t i, const char **key, const char **value);
/* Value of a metadata key (binary search); NULL if absent. */
const char *sdxl_st_metadata(const sdxl_st_file *f, const char *key);

/* The path given to sdxl_st_open (a copy owned by f), or "<memory>". */
const char *sdxl_st_path(const sdxl_st_file *f);
/* Sizes of the JSON header (the N of the format) and of the data section. */
uint64_t sdxl_st_header_size(const sdxl_st_file *f);
uint64_t sdxl_st_data_size(const sdxl_st_file *f);

/* Bytes per element (1 for BOOL and the F8 types); 0 for an invalid value. */
size_t sdxl_st_dtype_size(sdxl_st_dtype t);
/* Name as spelled in the format ("F32", "BF16", "F8_E4M3"); "?" if invalid. */
const char *sdxl_st_dtype_name(sdxl_st_dtype t);
/* Inverse of sdxl_st_dtype_name (exact, case-sensitive); false if unknown. */
bool sdxl_st_dtype_from_name(const char *name, sdxl_st_dtype *out);

/* Engine view of a tensor of `f`: a sdxl_tensor over the same bytes (no
 * copy). Only F32/F16/BF16/I32 and ndim <= SDXL_MAX_DIMS (4) are engine
 * tensors; anything else is SDXL_STATUS_UNSUPPORTED naming the tensor. Data
 * not aligned to the element size (possible: the format does not align) is
 * also UNSUPPORTED: the kernels read typed pointers, so such a tensor must be
 * copied first. The view's data is read-only memory despite the void*
 * (writing through it faults for a mapped file). */
sdxl_status sdxl_st_view(const sdxl_st_file *f, const sdxl_st_tensor *t, sdxl_tensor *out, sdxl_error *err);

/* ---- writer --------------------------------------------------------------- */

typedef struct sdxl_st_write_entry {
    const char *name; /* valid UTF-8, unique, not "__metadata__" */
    sdxl_st_dtype dtype;
    int ndim;             /* 0..SDXL_ST_MAX_DIMS */
    const int64_t *shape; /* ndim dims, each >= 0; may be NULL when ndim == 0 */
    const void *data;     /* shape product x dtype size bytes; may be NULL when that is 0 */
} sdxl_st_write_entry;

/* Write a safetensors file that the reference implementation reads back.
 *   - Written to "<path>.tmp", fsync'd, then renamed over `path` (and the
 *     directory fsync'd), so `path` never holds a partial file; on any
 *     failure "<path>.tmp" is removed and `path` is left as it was.
 *   - Header: "__metadata__" first (if any), then the tensors in the given
 *     order; padded with spaces so that the data section starts at a multiple
 *     of 8 bytes from the file start.
 *   - Data: tensors back to back in the given order, no padding between them
 *     (the reference reader rejects gaps). Every tensor is therefore aligned
 *     to its element size when entries are ordered by descending element size,
 *     as the reference writer orders them.
 * metadata_kv: NULL, or "key", "value", ..., NULL (keys unique, UTF-8).
 * Errors: INVALID_ARG (bad entry or metadata: the message says which), IO,
 * OUT_OF_MEMORY. Not safe for two concurrent writers of the same path (they
 * share "<path>.tmp"); different paths are independent. */
sdxl_status sdxl_st_write(const char *path, const sdxl_st_write_entry *entries, size_t n,
                          const char *const *metadata_kv, sdxl_error *err);

/* Streaming variant, for files too large to hold in memory (a generated
 * 7 GB model): the data of each tensor is produced by `fill` just before it
 * is written, in chunks of at most SDXL_ST_WRITE_CHUNK bytes, so memory stays
 * at one chunk whatever the file size.
 *
 *   fill(user_data, i, offset, buf, len, err) must write bytes
 *   [offset, offset + len) of entries[i]'s data into buf and return
 *   SDXL_STATUS_OK, or return an error status with `err` set (e.g.
 *   SDXL_STATUS_CANCELLED), which abandons the write.
 *
 * Calls come in file order (tensor 0 first, offsets increasing, each tensor
 * complete before the next); len is a multiple of the element size; buf is
 * 64-byte aligned and only valid during the call; a tensor of 0 bytes gets no
 * call. entries[i].data is ignored (may be NULL). Everything else as
 * sdxl_st_write: same header and layout (byte-identical output for the same
 * bytes), same "<path>.tmp" + fsync + rename, and on any failure, including
 * one returned by `fill`, "<path>.tmp" is removed and `path` is left as it
 * was. */
#define SDXL_ST_WRITE_CHUNK ((size_t)8 << 20)
typedef sdxl_status (*sdxl_st_fill_fn)(void *user_data, size_t index, uint64_t offset, void *buf, size_t len,
                                       sdxl_error *err);
sdxl_status sdxl_st_write_cb(const char *path, const sdxl_st_write_entry *entries, size_t n,
                             const char *const *metadata_kv, sdxl_st_fill_fn fill, void *user_data,
                             sdxl_error *err);

#endif
