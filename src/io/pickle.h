/* pickle.h - a restricted pickle interpreter for torch.save files.
 *
 * torch.save writes Python pickles. A pickle is a program for a small stack
 * machine, and its GLOBAL / REDUCE opcodes can import and call any Python
 * function: loading one with Python's pickle runs whatever the author wanted
 * (os.system, builtins.eval, ...). This interpreter executes the same opcodes
 * (protocols 0 to 5) but can only *build* a fixed set of harmless values:
 *
 *   None, bool, int, float, str, bytes, tuple, list, dict
 *   (collections.OrderedDict is a dict), and torch objects:
 *   - storages, from persistent ids ('storage', <storage type>, key,
 *     location, numel[, view_metadata]) where the storage type is one of
 *     torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage
 *     (also under torch.cuda) or torch[.storage].UntypedStorage;
 *   - tensors, from torch._utils._rebuild_tensor / _rebuild_tensor_v2 /
 *     _rebuild_tensor_v3 over such a storage, optionally wrapped by
 *     _rebuild_parameter / _rebuild_parameter_with_state (the tensor itself);
 *   - torch.Size(t) (the tuple t), dtype objects (torch.float16, ...: a
 *     SDXL_PK_GLOBAL value), and _codecs.encode(str, "latin1" | "utf-8"),
 *     which protocol 2 uses to pickle bytes.
 * The allowed globals are exactly the names above; any other GLOBAL or
 * STACK_GLOBAL (os.system, posix.system, builtins.eval, subprocess.Popen, a
 * tensor subclass, ...) stops the load with SDXL_STATUS_BAD_INPUT naming the
 * module and attribute. Nothing is ever imported or called: an allowed
 * global is only a tag that REDUCE dispatches on. BUILD is accepted on dicts
 * (the `_metadata` attribute of a state_dict, ignored) and tensors (ignored);
 * sets, INST/OBJ, extension codes and out-of-band buffers are refused.
 *
 * The input is UNTRUSTED. Every read is bounds-checked; the stack, the marks,
 * the memo, the object count and the bytes built are capped (see
 * sdxl_pk_params; every cap also holds relative to the input: a memo index
 * must be below the pickle's length, and an object costs at least one
 * opcode). A failure returns SDXL_STATUS_BAD_INPUT (malformed or refused) or
 * SDXL_STATUS_UNSUPPORTED (well-formed but not representable: a complex or
 * quantized storage, a tensor of more than SDXL_ST_MAX_DIMS dims, storage
 * views of pre-1.0 files), with a message that starts with the byte offset
 * and the opcode: "pickle byte 42, GLOBAL (0x63): refusing global
 * \"os.system\" ...". Strings must be valid UTF-8 (as Python decodes them);
 * they may contain NUL bytes, so each comes with its length.
 *
 * Result: an immutable object graph. Values are referred to by sdxl_pk_ref
 * handles (objects may be shared through the memo, and a list or dict may
 * even contain itself: walkers must bound their depth). Tensors are not
 * materialized here: an sdxl_pk_tensor says which storage, offset, size and
 * stride; torchfile.c checks them against the storage bytes.
 *
 * Thread-safety: a loaded sdxl_pickle is immutable; its getters may be
 * called from any number of threads. Memory: all of it through sdxl_malloc,
 * freed by sdxl_pickle_free.
 */
#ifndef SDXL_IO_PICKLE_H
#define SDXL_IO_PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "io/safetensors.h" /* sdxl_st_dtype, SDXL_ST_MAX_DIMS */

typedef enum sdxl_pk_kind {
    SDXL_PK_NONE = 0,
    SDXL_PK_BOOL,
    SDXL_PK_INT,    /* fits in int64 */
    SDXL_PK_BIGINT, /* does not; sdxl_pickle_str gives its little-endian two's-complement bytes */
    SDXL_PK_FLOAT,
    SDXL_PK_STR, /* UTF-8, NUL-terminated, may contain NUL */
    SDXL_PK_BYTES,
    SDXL_PK_TUPLE,
    SDXL_PK_LIST,
    SDXL_PK_DICT,    /* dict or collections.OrderedDict; entries in insertion order */
    SDXL_PK_GLOBAL,  /* an allowed global used as a value (a dtype such as torch.float16) */
    SDXL_PK_STORAGE, /* a persistent-id storage */
    SDXL_PK_TENSOR,
    SDXL_PK_KIND_COUNT_
} sdxl_pk_kind;

typedef uint32_t sdxl_pk_ref;
#define SDXL_PK_REF_NONE UINT32_MAX /* "no object": what getters return for a bad ref or index */

typedef struct sdxl_pk_storage {
    const char *key;      /* the persistent id's key ("0", "94376895876800"); NUL-free */
    const char *location; /* "cpu", "cuda:0", ...; only informative */
    sdxl_st_dtype dtype;  /* of the storage type; U8 for UntypedStorage */
    bool untyped;         /* UntypedStorage: numel counts bytes */
    uint64_t numel;       /* elements of dtype, as the persistent id declares */
} sdxl_pk_storage;

typedef struct sdxl_pk_tensor {
    sdxl_pk_ref storage;              /* an SDXL_PK_STORAGE value */
    sdxl_st_dtype dtype;              /* the storage's, or _rebuild_tensor_v3's dtype argument */
    int ndim;                         /* 0 .. SDXL_ST_MAX_DIMS */
    int64_t offset;                   /* storage_offset, in elements of dtype; >= 0 */
    int64_t size[SDXL_ST_MAX_DIMS];   /* >= 0 */
    int64_t stride[SDXL_ST_MAX_DIMS]; /* elements; >= 0 */
    bool parameter;                   /* came through _rebuild_parameter* */
} sdxl_pk_tensor;

/* Caps of one load. Zero fields take the default. */
typedef struct sdxl_pk_params {
    size_t max_stack;   /* values on the stack, all mark frames together (default 1 << 20) */
    size_t max_marks;   /* open MARKs (default 4096) */
    size_t max_memo;    /* memo indices must be below this and below the input length (default 1 << 24) */
    size_t max_objects; /* values created (default 1 << 26) */
    size_t max_bytes;   /* bytes of strings, containers and tables built (default 1 GiB) */
    size_t base_offset; /* added to byte offsets in messages (a pickle inside a bigger file) */
} sdxl_pk_params;

sdxl_pk_params sdxl_pickle_default_params(void);

typedef struct sdxl_pickle sdxl_pickle;

/* Run the pickle at [buf, buf+len) up to and including its STOP opcode.
 * *consumed (may be NULL) gets the number of bytes up to and including STOP,
 * so pickles written back to back can be read one after another. params may
 * be NULL (defaults). Nothing points into buf afterwards. On failure *out is
 * NULL and err says why (see the header comment). Thread-safe (no globals). */
sdxl_status sdxl_pickle_load(const void *buf, size_t len, const sdxl_pk_params *params, sdxl_pickle **out,
                             size_t *consumed, sdxl_error *err);

/* NULL-safe. */
void sdxl_pickle_free(sdxl_pickle *p);

/* The value STOP returned. */
sdxl_pk_ref sdxl_pickle_root(const sdxl_pickle *p);

/* Kind of a value; SDXL_PK_KIND_COUNT_ for a bad ref. */
sdxl_pk_kind sdxl_pickle_kind(const sdxl_pickle *p, sdxl_pk_ref r);
/* "None", "bool", "int", "str", "dict", "tensor", ... ("?" if invalid). */
const char *sdxl_pickle_kind_name(sdxl_pk_kind k);

/* Scalar getters: the value, or 0 / false when r is not of that kind
 * (sdxl_pickle_int also reads a bool as 0 / 1). */
bool sdxl_pickle_bool(const sdxl_pickle *p, sdxl_pk_ref r);
int64_t sdxl_pickle_int(const sdxl_pickle *p, sdxl_pk_ref r);
double sdxl_pickle_float(const sdxl_pickle *p, sdxl_pk_ref r);
/* Bytes of a STR, BYTES or BIGINT value (NUL-terminated; *len, if non-NULL,
 * gets the length without the terminator); NULL for other kinds. */
const char *sdxl_pickle_str(const sdxl_pickle *p, sdxl_pk_ref r, size_t *len);
/* "module.name" of a GLOBAL value ("torch.float16"); NULL for other kinds. */
const char *sdxl_pickle_global_name(const sdxl_pickle *p, sdxl_pk_ref r);
/* dtype of a dtype GLOBAL; false for other values (and for dtypes with no
 * sdxl_st_dtype, such as torch.complex64). */
bool sdxl_pickle_global_dtype(const sdxl_pickle *p, sdxl_pk_ref r, sdxl_st_dtype *out);

/* Items of a TUPLE or LIST, entries of a DICT; 0 for other kinds. */
size_t sdxl_pickle_len(const sdxl_pickle *p, sdxl_pk_ref r);
/* i-th item of a TUPLE or LIST; SDXL_PK_REF_NONE if not one or i out of range. */
sdxl_pk_ref sdxl_pickle_item(const sdxl_pickle *p, sdxl_pk_ref r, size_t i);
/* i-th entry of a DICT (insertion order; a key set twice appears twice, the
 * way the pickle set it); false if not a dict or i out of range. */
bool sdxl_pickle_dict_entry(const sdxl_pickle *p, sdxl_pk_ref d, size_t i, sdxl_pk_ref *key,
                            sdxl_pk_ref *value);

/* Tensor / storage payload of a TENSOR / STORAGE value; NULL otherwise. */
const sdxl_pk_tensor *sdxl_pickle_tensor(const sdxl_pickle *p, sdxl_pk_ref r);
const sdxl_pk_storage *sdxl_pickle_storage(const sdxl_pickle *p, sdxl_pk_ref r);

/* Every storage the persistent ids created, reachable from the root or not,
 * in the order the pickle created them (one per persistent id: a key used
 * twice appears twice). */
size_t sdxl_pickle_storage_count(const sdxl_pickle *p);
const sdxl_pk_storage *sdxl_pickle_storage_at(const sdxl_pickle *p, size_t i);

/* Sizes, for walkers' budgets and memory accounting: values created, items
 * held by all containers together, bytes allocated. */
size_t sdxl_pickle_object_count(const sdxl_pickle *p);
size_t sdxl_pickle_item_count(const sdxl_pickle *p);
size_t sdxl_pickle_bytes(const sdxl_pickle *p);

#endif
