/* pickle.c - the restricted pickle interpreter (see pickle.h for what it
 * builds and refuses).
 *
 * The machine follows CPython's Lib/pickle.py _Unpickler opcode by opcode
 * (the reference for what each opcode does to the stack), with three
 * differences that make it safe:
 *   1. GLOBAL / STACK_GLOBAL look the name up in `allowed[]` and push a tag;
 *      nothing is imported. A name not in the table ends the load.
 *   2. REDUCE / NEWOBJ / BUILD dispatch on that tag to a few C builders that
 *      check their arguments' kinds and values; nothing is called.
 *   3. Every container, string and table counts against a byte budget, and
 *      every read, stack access and memo index is checked.
 *
 * Values live in one table (pk_obj, 16 bytes each) and are referred to by
 * index, so the Python object graph (memo sharing, a list that contains
 * itself) is representable without pointers that could dangle when the
 * table grows. Strings and tuples, which never change once built, come from
 * a bump arena; lists and dicts own a growable item array each.
 */
#include "io/pickle.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"
#include "core/alloc.h"

/* ---- allowed globals ---------------------------------------------------- */

enum {
    G_ODICT,       /* collections.OrderedDict */
    G_SIZE,        /* torch.Size */
    G_ENCODE,      /* _codecs.encode */
    G_REBUILD_V1,  /* torch._utils._rebuild_tensor */
    G_REBUILD_V2,  /* torch._utils._rebuild_tensor_v2 */
    G_REBUILD_V3,  /* torch._utils._rebuild_tensor_v3 */
    G_PARAM,       /* torch._utils._rebuild_parameter */
    G_PARAM_STATE, /* torch._utils._rebuild_parameter_with_state */
    G_STORAGE,     /* a storage type (only meaningful inside a persistent id) */
    G_DTYPE,       /* a torch.dtype value */
};

#define NO_DTYPE (-1) /* known to torch, not representable here */

typedef struct allowed_global {
    const char *full; /* "module.name" */
    unsigned char mlen;
    unsigned char kind;
    signed char dtype; /* sdxl_st_dtype or NO_DTYPE, for G_STORAGE / G_DTYPE */
    bool untyped;
} allowed_global;

#define GL(mod, name, kind)                                                                                  \
    { mod "." name, sizeof(mod) - 1, kind, NO_DTYPE, false }
#define ST(mod, name, dt)                                                                                    \
    { mod "." name, sizeof(mod) - 1, G_STORAGE, dt, false }
#define DT(name, dt)                                                                                         \
    { "torch." name, 5, G_DTYPE, dt, false }
#define STORAGES(mod)                                                                                        \
    ST(mod, "DoubleStorage", SDXL_ST_F64), ST(mod, "FloatStorage", SDXL_ST_F32),                             \
        ST(mod, "HalfStorage", SDXL_ST_F16), ST(mod, "BFloat16Storage", SDXL_ST_BF16),                       \
        ST(mod, "LongStorage", SDXL_ST_I64), ST(mod, "IntStorage", SDXL_ST_I32),                             \
        ST(mod, "ShortStorage", SDXL_ST_I16), ST(mod, "CharStorage", SDXL_ST_I8),                            \
        ST(mod, "ByteStorage", SDXL_ST_U8), ST(mod, "BoolStorage", SDXL_ST_BOOL),                            \
        ST(mod, "ComplexDoubleStorage", NO_DTYPE), ST(mod, "ComplexFloatStorage", NO_DTYPE),                 \
        ST(mod, "QInt8Storage", NO_DTYPE), ST(mod, "QUInt8Storage", NO_DTYPE),                               \
        ST(mod, "QInt32Storage", NO_DTYPE), ST(mod, "QUInt4x2Storage", NO_DTYPE),                            \
        ST(mod, "QUInt2x4Storage", NO_DTYPE)

static const allowed_global allowed[] = {
    GL("collections", "OrderedDict", G_ODICT),
    GL("torch", "Size", G_SIZE),
    GL("_codecs", "encode", G_ENCODE),
    GL("torch._utils", "_rebuild_tensor", G_REBUILD_V1),
    GL("torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2),
    GL("torch._utils", "_rebuild_tensor_v3", G_REBUILD_V3),
    GL("torch._utils", "_rebuild_parameter", G_PARAM),
    GL("torch._utils", "_rebuild_parameter_with_state", G_PARAM_STATE),
    STORAGES("torch"),
    STORAGES("torch.cuda"), /* CUDA storages of torch <= 1.10 */
    {"torch.UntypedStorage", 5, G_STORAGE, SDXL_ST_U8, true},
    {"torch.storage.UntypedStorage", 13, G_STORAGE, SDXL_ST_U8, true},
    DT("float64", SDXL_ST_F64),
    DT("float32", SDXL_ST_F32),
    DT("float16", SDXL_ST_F16),
    DT("bfloat16", SDXL_ST_BF16),
    DT("int64", SDXL_ST_I64),
    DT("int32", SDXL_ST_I32),
    DT("int16", SDXL_ST_I16),
    DT("int8", SDXL_ST_I8),
    DT("uint8", SDXL_ST_U8),
    DT("uint16", SDXL_ST_U16),
    DT("uint32", SDXL_ST_U32),
    DT("uint64", SDXL_ST_U64),
    DT("bool", SDXL_ST_BOOL),
    DT("float8_e4m3fn", SDXL_ST_F8_E4M3),
    DT("float8_e5m2", SDXL_ST_F8_E5M2),
    DT("float8_e4m3fnuz", NO_DTYPE),
    DT("float8_e5m2fnuz", NO_DTYPE),
    DT("complex32", NO_DTYPE),
    DT("complex64", NO_DTYPE),
    DT("complex128", NO_DTYPE),
    DT("qint8", NO_DTYPE),
    DT("quint8", NO_DTYPE),
    DT("qint32", NO_DTYPE),
    DT("quint4x2", NO_DTYPE),
};
#define N_ALLOWED (sizeof allowed / sizeof allowed[0])
_Static_assert(N_ALLOWED < 256, "a global's index is kept in a byte");

/* ---- opcodes ------------------------------------------------------------ */

static const char *const op_names[256] = {
    ['('] = "MARK",
    ['.'] = "STOP",
    ['0'] = "POP",
    ['1'] = "POP_MARK",
    ['2'] = "DUP",
    ['F'] = "FLOAT",
    ['I'] = "INT",
    ['J'] = "BININT",
    ['K'] = "BININT1",
    ['L'] = "LONG",
    ['M'] = "BININT2",
    ['N'] = "NONE",
    ['P'] = "PERSID",
    ['Q'] = "BINPERSID",
    ['R'] = "REDUCE",
    ['S'] = "STRING",
    ['T'] = "BINSTRING",
    ['U'] = "SHORT_BINSTRING",
    ['V'] = "UNICODE",
    ['X'] = "BINUNICODE",
    ['a'] = "APPEND",
    ['b'] = "BUILD",
    ['c'] = "GLOBAL",
    ['d'] = "DICT",
    ['}'] = "EMPTY_DICT",
    ['e'] = "APPENDS",
    ['g'] = "GET",
    ['h'] = "BINGET",
    ['i'] = "INST",
    ['j'] = "LONG_BINGET",
    ['l'] = "LIST",
    [']'] = "EMPTY_LIST",
    ['o'] = "OBJ",
    ['p'] = "PUT",
    ['q'] = "BINPUT",
    ['r'] = "LONG_BINPUT",
    ['s'] = "SETITEM",
    ['t'] = "TUPLE",
    [')'] = "EMPTY_TUPLE",
    ['u'] = "SETITEMS",
    ['G'] = "BINFLOAT",
    [0x80] = "PROTO",
    [0x81] = "NEWOBJ",
    [0x82] = "EXT1",
    [0x83] = "EXT2",
    [0x84] = "EXT4",
    [0x85] = "TUPLE1",
    [0x86] = "TUPLE2",
    [0x87] = "TUPLE3",
    [0x88] = "NEWTRUE",
    [0x89] = "NEWFALSE",
    [0x8a] = "LONG1",
    [0x8b] = "LONG4",
    ['B'] = "BINBYTES",
    ['C'] = "SHORT_BINBYTES",
    [0x8c] = "SHORT_BINUNICODE",
    [0x8d] = "BINUNICODE8",
    [0x8e] = "BINBYTES8",
    [0x8f] = "EMPTY_SET",
    [0x90] = "ADDITEMS",
    [0x91] = "FROZENSET",
    [0x92] = "NEWOBJ_EX",
    [0x93] = "STACK_GLOBAL",
    [0x94] = "MEMOIZE",
    [0x95] = "FRAME",
    [0x96] = "BYTEARRAY8",
    [0x97] = "NEXT_BUFFER",
    [0x98] = "READONLY_BUFFER",
};

/* ---- the result --------------------------------------------------------- */

typedef struct pk_obj {
    uint8_t kind;
    uint8_t tag;  /* BOOL: the value; GLOBAL: index into allowed[] */
    uint32_t len; /* STR/BYTES/BIGINT: bytes; TUPLE/LIST: items; DICT: entries */
    union {
        int64_t i;
        double f;
        char *s;
        sdxl_pk_ref *items; /* DICT: key, value, key, value, ... */
        uint32_t index;     /* TENSOR / STORAGE payload */
    } u;
} pk_obj;

typedef struct pk_chunk {
    struct pk_chunk *next;
    size_t used, cap;
    /* cap bytes follow */
} pk_chunk;

#define CHUNK_BYTES ((size_t)64 << 10)

struct sdxl_pickle {
    pk_obj *objs;
    size_t n_objs, cap_objs;
    sdxl_pk_tensor *tensors;
    size_t n_tensors, cap_tensors;
    sdxl_pk_storage *storages;
    size_t n_storages, cap_storages;
    pk_chunk *chunks;
    size_t bytes; /* allocated for the result */
    size_t items;
    sdxl_pk_ref root;
};

/* ---- the machine -------------------------------------------------------- */

typedef struct pk_vm {
    sdxl_pickle *p;
    const uint8_t *buf;
    size_t len, pos;
    size_t op_pos;
    int op; /* -1 before the first opcode */
    sdxl_pk_params prm;
    sdxl_pk_ref *stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    sdxl_pk_ref *memo;
    size_t memo_cap, memo_count;
    size_t used; /* bytes allocated, result and machine together: against prm.max_bytes */
    sdxl_error *err;
} pk_vm;

sdxl_pk_params sdxl_pickle_default_params(void) {
    return (sdxl_pk_params){
        .max_stack = (size_t)1 << 20,
        .max_marks = 4096,
        .max_memo = (size_t)1 << 24,
        .max_objects = (size_t)1 << 26,
        .max_bytes = (size_t)1 << 30,
        .base_offset = 0,
    };
}

static const char *kind_names[SDXL_PK_KIND_COUNT_] = {
    [SDXL_PK_NONE] = "None",     [SDXL_PK_BOOL] = "bool",     [SDXL_PK_INT] = "int",
    [SDXL_PK_BIGINT] = "int",    [SDXL_PK_FLOAT] = "float",   [SDXL_PK_STR] = "str",
    [SDXL_PK_BYTES] = "bytes",   [SDXL_PK_TUPLE] = "tuple",   [SDXL_PK_LIST] = "list",
    [SDXL_PK_DICT] = "dict",     [SDXL_PK_GLOBAL] = "global", [SDXL_PK_STORAGE] = "storage",
    [SDXL_PK_TENSOR] = "tensor",
};

const char *sdxl_pickle_kind_name(sdxl_pk_kind k) {
    return (unsigned)k < SDXL_PK_KIND_COUNT_ ? kind_names[k] : "?";
}

/* ---- errors ------------------------------------------------------------- */

/* Text from the file, quoted for a message: control and non-ASCII bytes
 * escaped, cut short. By value so it can sit in an argument list. */
typedef struct {
    char s[96];
} qtext;

static qtext quote_bytes(const char *s, size_t n) {
    qtext q;
    size_t o = 0;
    q.s[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 8 >= sizeof q.s) {
            memcpy(q.s + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c >= 0x7f)
            o += (size_t)snprintf(q.s + o, sizeof q.s - o, "\\x%02x", c);
        else if (c == '"' || c == '\\') {
            q.s[o++] = '\\';
            q.s[o++] = (char)c;
        } else
            q.s[o++] = (char)c;
    }
    q.s[o++] = '"';
    q.s[o] = '\0';
    return q;
}

__attribute__((format(printf, 3, 4))) static sdxl_status vm_fail(pk_vm *vm, sdxl_status st, const char *fmt,
                                                                 ...) {
    char why[SDXL_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    size_t at = vm->prm.base_offset + vm->op_pos;
    if (vm->op < 0) return sdxl_error_set(vm->err, st, "pickle byte %zu: %s", at, why);
    const char *name = op_names[vm->op];
    if (name) return sdxl_error_set(vm->err, st, "pickle byte %zu, %s (0x%02x): %s", at, name, vm->op, why);
    return sdxl_error_set(vm->err, st, "pickle byte %zu, opcode 0x%02x: %s", at, vm->op, why);
}

#define BAD(...) vm_fail(vm, SDXL_STATUS_BAD_INPUT, __VA_ARGS__)
#define TRY(expr)                                                                                            \
    do {                                                                                                     \
        sdxl_status st_ = (expr);                                                                            \
        if (st_ != SDXL_STATUS_OK) return st_;                                                               \
    } while (0)

/* ---- memory ------------------------------------------------------------- */

static sdxl_status account(pk_vm *vm, size_t n) {
    if (n > vm->prm.max_bytes - vm->used)
        return BAD("the pickle builds more than %zu bytes of objects (the cap)", vm->prm.max_bytes);
    vm->used += n;
    return SDXL_STATUS_OK;
}

static sdxl_status oom(pk_vm *vm, size_t n) {
    return vm_fail(vm, SDXL_STATUS_OUT_OF_MEMORY, "out of memory (%zu bytes)", n);
}

/* Grow *arr (elements of `es` bytes, capacity *cap) to hold `need`.
 * `counted` (may be NULL) gets the growth in bytes too. */
static sdxl_status grow(pk_vm *vm, void **arr, size_t *cap, size_t need, size_t es, size_t *counted) {
    if (need <= *cap) return SDXL_STATUS_OK;
    size_t nc = *cap ? *cap : 8;
    while (nc < need) {
        if (nc > SIZE_MAX / 4) return BAD("a table grows past the address space");
        nc *= 2;
    }
    size_t bytes;
    if (__builtin_mul_overflow(nc, es, &bytes)) return BAD("a table grows past the address space");
    size_t delta = bytes - *cap * es;
    TRY(account(vm, delta));
    void *q = sdxl_realloc(*arr, bytes);
    if (!q) return oom(vm, bytes);
    *arr = q;
    *cap = nc;
    if (counted) *counted += delta;
    return SDXL_STATUS_OK;
}

/* n bytes from the arena, 8-aligned. */
static sdxl_status arena(pk_vm *vm, size_t n, void **out) {
    sdxl_pickle *p = vm->p;
    if (n > SIZE_MAX - 8) return BAD("an object is larger than the address space");
    n = (n + 7) & ~(size_t)7;
    pk_chunk *c = p->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > CHUNK_BYTES / 4 ? n : CHUNK_BYTES;
        if (cap > SIZE_MAX - sizeof(pk_chunk)) return BAD("an object is larger than the address space");
        TRY(account(vm, sizeof(pk_chunk) + cap));
        pk_chunk *nc = sdxl_malloc(sizeof(pk_chunk) + cap);
        if (!nc) return oom(vm, sizeof(pk_chunk) + cap);
        p->bytes += sizeof(pk_chunk) + cap;
        nc->used = 0;
        nc->cap = cap;
        if (c && cap != CHUNK_BYTES) { /* a dedicated block: keep filling the current chunk */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            p->chunks = nc;
        }
        c = nc;
    }
    *out = (char *)(c + 1) + c->used;
    c->used += n;
    return SDXL_STATUS_OK;
}

/* ---- values ------------------------------------------------------------- */

static sdxl_status new_obj(pk_vm *vm, sdxl_pk_kind kind, sdxl_pk_ref *out) {
    sdxl_pickle *p = vm->p;
    if (p->n_objs >= vm->prm.max_objects) return BAD("more than %zu objects (the cap)", vm->prm.max_objects);
    if (p->n_objs >= SDXL_PK_REF_NONE) return BAD("more than %u objects", (unsigned)SDXL_PK_REF_NONE);
    TRY(grow(vm, (void **)&p->objs, &p->cap_objs, p->n_objs + 1, sizeof(pk_obj), &p->bytes));
    pk_obj *o = &p->objs[p->n_objs];
    memset(o, 0, sizeof *o);
    o->kind = (uint8_t)kind;
    *out = (sdxl_pk_ref)p->n_objs++;
    return SDXL_STATUS_OK;
}

static pk_obj *obj(pk_vm *vm, sdxl_pk_ref r) {
    return &vm->p->objs[r];
}

static sdxl_status new_int(pk_vm *vm, int64_t v, sdxl_pk_ref *out) {
    TRY(new_obj(vm, SDXL_PK_INT, out));
    obj(vm, *out)->u.i = v;
    return SDXL_STATUS_OK;
}

static sdxl_status new_float(pk_vm *vm, double v, sdxl_pk_ref *out) {
    TRY(new_obj(vm, SDXL_PK_FLOAT, out));
    obj(vm, *out)->u.f = v;
    return SDXL_STATUS_OK;
}

/* A STR/BYTES/BIGINT value holding a copy of [s, s+n) and a terminating NUL. */
static sdxl_status new_blob(pk_vm *vm, sdxl_pk_kind kind, const void *s, size_t n, sdxl_pk_ref *out) {
    if (n > UINT32_MAX - 1) return BAD("a string of %zu bytes is longer than the 4 GiB limit", n);
    char *d = NULL;
    TRY(arena(vm, n + 1, (void **)&d));
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    TRY(new_obj(vm, kind, out));
    pk_obj *o = obj(vm, *out);
    o->len = (uint32_t)n;
    o->u.s = d;
    return SDXL_STATUS_OK;
}

static sdxl_status new_str(pk_vm *vm, const void *s, size_t n, sdxl_pk_ref *out) {
    size_t bad = sdxl_utf8_invalid_at(s, n);
    if (bad != n) return BAD("string of %zu bytes is not valid UTF-8 (at its byte %zu)", n, bad);
    return new_blob(vm, SDXL_PK_STR, s, n, out);
}

/* A tuple of the n refs at items (copied). */
static sdxl_status new_tuple(pk_vm *vm, const sdxl_pk_ref *items, size_t n, sdxl_pk_ref *out) {
    if (n > UINT32_MAX) return BAD("a tuple of %zu items", n);
    sdxl_pk_ref *d = NULL;
    if (n) {
        TRY(arena(vm, n * sizeof *d, (void **)&d));
        memcpy(d, items, n * sizeof *d);
    }
    TRY(new_obj(vm, SDXL_PK_TUPLE, out));
    pk_obj *o = obj(vm, *out);
    o->len = (uint32_t)n;
    o->u.items = d;
    return SDXL_STATUS_OK;
}

/* Capacity (in refs) of a list/dict item array holding n refs. */
static size_t item_cap(size_t n) {
    if (n == 0) return 0;
    size_t c = 8;
    while (c < n)
        c *= 2;
    return c;
}

/* Append n refs to the LIST or DICT r (dicts: n even, key/value pairs). */
static sdxl_status extend(pk_vm *vm, sdxl_pk_ref r, const sdxl_pk_ref *items, size_t n) {
    if (!n) return SDXL_STATUS_OK;
    pk_obj *o = obj(vm, r);
    size_t per = o->kind == SDXL_PK_DICT ? 2 : 1;
    size_t have = (size_t)o->len * per;
    if (n > (size_t)UINT32_MAX * per - have) return BAD("a %s of more than 2^32 items", kind_names[o->kind]);
    size_t cap = item_cap(have);
    if (have + n > cap) {
        size_t nc = item_cap(have + n);
        TRY(account(vm, (nc - cap) * sizeof(sdxl_pk_ref)));
        sdxl_pk_ref *q = sdxl_realloc(o->u.items, nc * sizeof(sdxl_pk_ref));
        if (!q) return oom(vm, nc * sizeof(sdxl_pk_ref));
        vm->p->bytes += (nc - cap) * sizeof(sdxl_pk_ref);
        o = obj(vm, r);
        o->u.items = q;
    }
    memcpy(o->u.items + have, items, n * sizeof *items);
    o->len += (uint32_t)(n / per);
    return SDXL_STATUS_OK;
}

static sdxl_status new_container(pk_vm *vm, sdxl_pk_kind kind, const sdxl_pk_ref *items, size_t n,
                                 sdxl_pk_ref *out) {
    TRY(new_obj(vm, kind, out));
    return extend(vm, *out, items, n);
}

/* Dict keys must be hashable in Python: lists and dicts are not. */
static sdxl_status check_keys(pk_vm *vm, const sdxl_pk_ref *pairs, size_t n) {
    for (size_t i = 0; i < n; i += 2) {
        uint8_t k = obj(vm, pairs[i])->kind;
        if (k == SDXL_PK_LIST || k == SDXL_PK_DICT) return BAD("a %s used as a dict key", kind_names[k]);
    }
    return SDXL_STATUS_OK;
}

/* ---- stack -------------------------------------------------------------- */

static size_t frame_base(const pk_vm *vm) {
    return vm->n_marks ? vm->marks[vm->n_marks - 1] : 0;
}

static sdxl_status push(pk_vm *vm, sdxl_pk_ref r) {
    if (vm->sp >= vm->prm.max_stack)
        return BAD("more than %zu values on the stack (the cap)", vm->prm.max_stack);
    TRY(grow(vm, (void **)&vm->stack, &vm->stack_cap, vm->sp + 1, sizeof *vm->stack, NULL));
    vm->stack[vm->sp++] = r;
    return SDXL_STATUS_OK;
}

static sdxl_status pop(pk_vm *vm, sdxl_pk_ref *out) {
    if (vm->sp <= frame_base(vm))
        return BAD(vm->n_marks ? "the stack is empty above the last MARK" : "the stack is empty");
    *out = vm->stack[--vm->sp];
    return SDXL_STATUS_OK;
}

static sdxl_status top(pk_vm *vm, sdxl_pk_ref *out) {
    if (vm->sp <= frame_base(vm))
        return BAD(vm->n_marks ? "the stack is empty above the last MARK" : "the stack is empty");
    *out = vm->stack[vm->sp - 1];
    return SDXL_STATUS_OK;
}

/* Close the last MARK: the items above it are stack[*start, vm->sp); the
 * caller uses them, then sets vm->sp = *start. */
static sdxl_status pop_mark(pk_vm *vm, size_t *start) {
    if (!vm->n_marks) return BAD("no MARK is open");
    *start = vm->marks[--vm->n_marks];
    return SDXL_STATUS_OK;
}

/* ---- reading the input --------------------------------------------------- */

static sdxl_status need(pk_vm *vm, size_t n) {
    if (n > vm->len - vm->pos)
        return BAD("needs %zu bytes of argument but %zu remain (truncated?)", n, vm->len - vm->pos);
    return SDXL_STATUS_OK;
}

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static sdxl_status read_le(pk_vm *vm, int n, uint64_t *out) {
    TRY(need(vm, (size_t)n));
    *out = rd_le(vm->buf + vm->pos, n);
    vm->pos += (size_t)n;
    return SDXL_STATUS_OK;
}

/* The text up to the next '\n' (not included; the '\n' is consumed). */
static sdxl_status read_line(pk_vm *vm, const char **s, size_t *n) {
    const uint8_t *start = vm->buf + vm->pos;
    const uint8_t *nl = memchr(start, '\n', vm->len - vm->pos);
    if (!nl) return BAD("its text argument has no terminating newline (truncated?)");
    *s = (const char *)start;
    *n = (size_t)(nl - start);
    vm->pos += *n + 1;
    return SDXL_STATUS_OK;
}

/* A length-prefixed argument: `lenbytes` little-endian length, then data. */
static sdxl_status read_counted(pk_vm *vm, int lenbytes, bool is_signed, const uint8_t **data, size_t *n) {
    uint64_t l = 0;
    TRY(read_le(vm, lenbytes, &l));
    if (is_signed && lenbytes == 4 && (l & 0x80000000u)) return BAD("negative length %d", (int)(int32_t)l);
    if (l > vm->len - vm->pos)
        return BAD("length %llu is more than the %zu bytes that remain (truncated?)", (unsigned long long)l,
                   vm->len - vm->pos);
    *data = vm->buf + vm->pos;
    *n = (size_t)l;
    vm->pos += (size_t)l;
    return SDXL_STATUS_OK;
}

/* A decimal integer as the text opcodes write it: optional sign, digits. */
static bool parse_decimal(const char *s, size_t n, int64_t *out) {
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i == n) return false;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (lim - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v; /* 0 - v wraps to INT64_MIN exactly for v = 2^63 */
    return true;
}

/* INT / LONG text beyond 64 bits: a BIGINT (at most MAX_DIGITS digits, so
 * the quadratic conversion stays cheap). */
#define MAX_DIGITS 200

static sdxl_status new_long(pk_vm *vm, const uint8_t *b, size_t n, sdxl_pk_ref *out);

static sdxl_status new_decimal(pk_vm *vm, const char *s, size_t n, sdxl_pk_ref *out) {
    int64_t v;
    if (parse_decimal(s, n, &v)) return new_int(vm, v, out);
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i == n || n - i > MAX_DIGITS)
        return BAD("argument %s is not a decimal integer of at most %d digits", quote_bytes(s, n).s,
                   MAX_DIGITS);
    uint8_t mag[MAX_DIGITS / 2 + 2] = {0}; /* little-endian magnitude; 10^200 < 2^665 */
    size_t len = 1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return BAD("argument %s is not a decimal integer", quote_bytes(s, n).s);
        unsigned carry = (unsigned)(s[i] - '0');
        for (size_t k = 0; k < len; k++) {
            unsigned x = mag[k] * 10u + carry;
            mag[k] = (uint8_t)x;
            carry = x >> 8;
        }
        if (carry) mag[len++] = (uint8_t)carry;
    }
    if (mag[len - 1] & 0x80) len++; /* room for the sign bit */
    if (neg) {                      /* two's complement: invert, add one */
        unsigned carry = 1;
        for (size_t k = 0; k < len; k++) {
            unsigned x = (uint8_t)~mag[k] + carry;
            mag[k] = (uint8_t)x;
            carry = x >> 8;
        }
    }
    return new_long(vm, mag, len, out);
}

static sdxl_status read_line_int(pk_vm *vm, const char *what, int64_t *out) {
    const char *s = NULL;
    size_t n = 0;
    TRY(read_line(vm, &s, &n));
    if (!parse_decimal(s, n, out))
        return BAD("%s %s is not a decimal integer in the 64-bit range", what, quote_bytes(s, n).s);
    return SDXL_STATUS_OK;
}

/* ---- string decoders of the text protocol -------------------------------- */

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(uint8_t *d, uint32_t cp) {
    if (cp < 0x80) {
        d[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (uint8_t)(0xC0 | (cp >> 6));
        d[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (uint8_t)(0xE0 | (cp >> 12));
        d[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (uint8_t)(0xF0 | (cp >> 18));
    d[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* UNICODE's argument: "raw-unicode-escape" (each byte is a Latin-1 code
 * point, except \uXXXX and \UXXXXXXXX after an odd number of backslashes),
 * as UTF-8. At most 2 output bytes per input byte (4 per 6-byte \u, 4 per
 * 10-byte \U). */
static sdxl_status decode_raw_unicode(pk_vm *vm, const char *s, size_t n, sdxl_pk_ref *out) {
    if (n > (SIZE_MAX - 1) / 2) return BAD("string too long");
    uint8_t *d = sdxl_malloc(2 * n + 1);
    if (!d) return oom(vm, 2 * n + 1);
    size_t o = 0, i = 0;
    sdxl_status st = SDXL_STATUS_OK;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c != '\\') {
            o += put_utf8(d + o, c);
            i++;
            continue;
        }
        size_t run = 0;
        while (i < n && s[i] == '\\') {
            d[o++] = '\\';
            i++;
            run++;
        }
        if (!(run & 1) || i >= n || (s[i] != 'u' && s[i] != 'U')) continue;
        o--; /* the odd backslash starts the escape */
        size_t digits = s[i] == 'u' ? 4 : 8;
        i++;
        uint32_t cp = 0;
        for (size_t k = 0; k < digits; k++) {
            int h = i + k < n ? hexval((unsigned char)s[i + k]) : -1;
            if (h < 0) {
                st = BAD("truncated \\%c escape in a UNICODE string", digits == 4 ? 'u' : 'U');
                goto done;
            }
            cp = (cp << 4) | (uint32_t)h;
        }
        i += digits;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            st = BAD("escape \\U%08x in a UNICODE string is not a Unicode scalar value", cp);
            goto done;
        }
        o += put_utf8(d + o, cp);
    }
    st = new_blob(vm, SDXL_PK_STR, d, o, out);
done:
    sdxl_free(d);
    return st;
}

/* STRING's argument: a quoted Python 2 str literal (repr), whose escapes
 * codecs.escape_decode undoes; the bytes are then UTF-8 (torch.load's
 * encoding). */
static sdxl_status decode_quoted(pk_vm *vm, const char *s, size_t n, sdxl_pk_ref *out) {
    if (n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0])
        return BAD("the STRING argument is not quoted");
    s++;
    n -= 2;
    uint8_t *d = sdxl_malloc(n + 1);
    if (!d) return oom(vm, n + 1);
    size_t o = 0;
    sdxl_status st;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i++];
        if (c != '\\') {
            d[o++] = c;
            continue;
        }
        if (i == n) {
            st = BAD("the STRING argument ends with a lone backslash");
            goto done;
        }
        c = (unsigned char)s[i++];
        switch (c) {
        case '\n': break;
        case '\\': d[o++] = '\\'; break;
        case '\'': d[o++] = '\''; break;
        case '"': d[o++] = '"'; break;
        case 'a': d[o++] = 7; break;
        case 'b': d[o++] = 8; break;
        case 'f': d[o++] = 12; break;
        case 'n': d[o++] = 10; break;
        case 'r': d[o++] = 13; break;
        case 't': d[o++] = 9; break;
        case 'v': d[o++] = 11; break;
        case 'x': {
            int h1 = i < n ? hexval((unsigned char)s[i]) : -1;
            int h2 = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            if (h1 < 0 || h2 < 0) {
                st = BAD("invalid \\x escape in a STRING argument");
                goto done;
            }
            d[o++] = (uint8_t)(h1 * 16 + h2);
            i += 2;
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = c - '0';
                for (int k = 0; k < 2 && i < n && s[i] >= '0' && s[i] <= '7'; k++)
                    v = v * 8 + (unsigned)(s[i++] - '0');
                d[o++] = (uint8_t)v;
            } else { /* unknown escapes stay as they are */
                d[o++] = '\\';
                d[o++] = c;
            }
        }
    }
    st = new_str(vm, d, o, out);
done:
    sdxl_free(d);
    return st;
}

/* LONG1 / LONG4 payload: little-endian two's complement. */
static sdxl_status new_long(pk_vm *vm, const uint8_t *b, size_t n, sdxl_pk_ref *out) {
    if (n == 0) return new_int(vm, 0, out);
    bool neg = b[n - 1] & 0x80;
    /* fits in 64 bits when the bytes past the 8th only repeat the sign */
    size_t sig = n;
    uint8_t ext = neg ? 0xFF : 0x00;
    while (sig > 8 && b[sig - 1] == ext)
        sig--;
    if (sig <= 8 && (sig < 8 || ((b[7] & 0x80) != 0) == neg)) {
        uint64_t v = neg ? UINT64_MAX : 0;
        for (size_t i = 0; i < sig; i++) {
            v &= ~((uint64_t)0xFF << (8 * i));
            v |= (uint64_t)b[i] << (8 * i);
        }
        return new_int(vm, (int64_t)v, out);
    }
    return new_blob(vm, SDXL_PK_BIGINT, b, n, out);
}

/* ---- globals and the builders ------------------------------------------- */

static sdxl_status push_global(pk_vm *vm, const char *mod, size_t mlen, const char *name, size_t nlen) {
    for (size_t i = 0; i < N_ALLOWED; i++) {
        const allowed_global *g = &allowed[i];
        if (g->mlen == mlen && !memcmp(g->full, mod, mlen) && strlen(g->full + mlen + 1) == nlen &&
            !memcmp(g->full + mlen + 1, name, nlen)) {
            sdxl_pk_ref r;
            TRY(new_obj(vm, SDXL_PK_GLOBAL, &r));
            obj(vm, r)->tag = (uint8_t)i;
            return push(vm, r);
        }
    }
    char full[200];
    size_t m = mlen < 90 ? mlen : 90, k = nlen < 90 ? nlen : 90;
    memcpy(full, mod, m);
    full[m] = '.';
    memcpy(full + m + 1, name, k);
    return BAD("refusing global %s: only tensors, storages, dicts, lists, tuples, strings, bytes and numbers "
               "can be built (nothing is imported or called)",
               quote_bytes(full, m + 1 + k).s);
}

static const allowed_global *global_of(pk_vm *vm, sdxl_pk_ref r) {
    const pk_obj *o = obj(vm, r);
    return o->kind == SDXL_PK_GLOBAL ? &allowed[o->tag] : NULL;
}

static const char *describe(pk_vm *vm, sdxl_pk_ref r) {
    const allowed_global *g = global_of(vm, r);
    return g ? g->full : kind_names[obj(vm, r)->kind];
}

static sdxl_pk_ref item(pk_vm *vm, sdxl_pk_ref tuple, size_t i) {
    return obj(vm, tuple)->u.items[i];
}

static bool is_int(pk_vm *vm, sdxl_pk_ref r) {
    return obj(vm, r)->kind == SDXL_PK_INT;
}

/* ('storage', <storage type>, key, location, numel[, view_metadata]) */
static sdxl_status persistent_load(pk_vm *vm, sdxl_pk_ref pid, sdxl_pk_ref *out) {
    const pk_obj *o = obj(vm, pid);
    if (o->kind != SDXL_PK_TUPLE || (o->len != 5 && o->len != 6))
        return BAD("the persistent id is a %s of %u items; expected a storage tuple ('storage', type, key, "
                   "location, numel)",
                   kind_names[o->kind], o->kind == SDXL_PK_TUPLE ? o->len : 0);
    const pk_obj *tn = obj(vm, item(vm, pid, 0));
    if (tn->kind != SDXL_PK_STR || strcmp(tn->u.s, "storage") != 0)
        return BAD("the persistent id is not a storage (its type name is %s)",
                   tn->kind == SDXL_PK_STR ? quote_bytes(tn->u.s, tn->len).s : kind_names[tn->kind]);
    const allowed_global *g = global_of(vm, item(vm, pid, 1));
    if (!g || g->kind != G_STORAGE)
        return BAD("the persistent id's storage type is a %s, not a torch storage class",
                   describe(vm, item(vm, pid, 1)));
    if (g->dtype == NO_DTYPE)
        return vm_fail(vm, SDXL_STATUS_UNSUPPORTED, "storage type %s is not supported", g->full);
    const pk_obj *key = obj(vm, item(vm, pid, 2)), *loc = obj(vm, item(vm, pid, 3));
    if (key->kind != SDXL_PK_STR || key->len == 0 || memchr(key->u.s, 0, key->len))
        return BAD("the storage key is a %s, not a non-empty string without NUL", kind_names[key->kind]);
    if (loc->kind != SDXL_PK_STR)
        return BAD("the storage location is a %s, not a string", kind_names[loc->kind]);
    const pk_obj *numel = obj(vm, item(vm, pid, 4));
    if (numel->kind != SDXL_PK_INT || numel->u.i < 0)
        return BAD("storage %s: numel is not a non-negative integer", quote_bytes(key->u.s, key->len).s);
    if (o->len == 6 && obj(vm, item(vm, pid, 5))->kind != SDXL_PK_NONE)
        return vm_fail(vm, SDXL_STATUS_UNSUPPORTED,
                       "storage %s: storage views (view_metadata of pre-1.0 files) are not supported",
                       quote_bytes(key->u.s, key->len).s);

    sdxl_pickle *p = vm->p;
    if (p->n_storages >= UINT32_MAX) return BAD("too many storages");
    TRY(grow(vm, (void **)&p->storages, &p->cap_storages, p->n_storages + 1, sizeof *p->storages, &p->bytes));
    sdxl_pk_storage *s = &p->storages[p->n_storages];
    s->key = key->u.s;
    s->location = loc->u.s;
    s->dtype = (sdxl_st_dtype)g->dtype;
    s->untyped = g->untyped;
    s->numel = (uint64_t)numel->u.i;
    TRY(new_obj(vm, SDXL_PK_STORAGE, out));
    obj(vm, *out)->u.index = (uint32_t)p->n_storages++;
    return SDXL_STATUS_OK;
}

/* Reads a size or stride sequence (tuple or list of non-negative ints). */
static sdxl_status read_dims(pk_vm *vm, sdxl_pk_ref r, const char *what, int64_t *dst, int *ndim) {
    const pk_obj *o = obj(vm, r);
    if (o->kind != SDXL_PK_TUPLE && o->kind != SDXL_PK_LIST)
        return BAD("tensor %s is a %s, not a tuple", what, describe(vm, r));
    if (o->len > SDXL_ST_MAX_DIMS)
        return vm_fail(vm, SDXL_STATUS_UNSUPPORTED, "tensor of %u dimensions; at most %d are supported",
                       o->len, SDXL_ST_MAX_DIMS);
    for (uint32_t i = 0; i < o->len; i++) {
        const pk_obj *d = obj(vm, o->u.items[i]);
        if (d->kind != SDXL_PK_INT || d->u.i < 0)
            return BAD("tensor %s[%u] is not a non-negative integer", what, i);
        dst[i] = d->u.i;
    }
    *ndim = (int)o->len;
    return SDXL_STATUS_OK;
}

static sdxl_status rebuild_tensor(pk_vm *vm, const allowed_global *g, sdxl_pk_ref args, sdxl_pk_ref *out) {
    uint32_t n = obj(vm, args)->len;
    bool ok = g->kind == G_REBUILD_V1   ? n == 4
              : g->kind == G_REBUILD_V2 ? (n == 6 || n == 7)
                                        : (n == 7 || n == 8);
    if (!ok) return BAD("%s called with %u arguments", g->full, n);
    sdxl_pk_ref sref = item(vm, args, 0);
    if (obj(vm, sref)->kind != SDXL_PK_STORAGE)
        return BAD("%s: the storage argument is a %s", g->full, describe(vm, sref));
    const sdxl_pk_storage *s = &vm->p->storages[obj(vm, sref)->u.index];
    sdxl_pk_ref off = item(vm, args, 1);
    if (!is_int(vm, off) || obj(vm, off)->u.i < 0)
        return BAD("%s: storage_offset is not a non-negative integer", g->full);
    sdxl_pk_tensor t = {.storage = sref, .dtype = s->dtype, .offset = obj(vm, off)->u.i};
    int nd_stride;
    TRY(read_dims(vm, item(vm, args, 2), "size", t.size, &t.ndim));
    TRY(read_dims(vm, item(vm, args, 3), "stride", t.stride, &nd_stride));
    if (nd_stride != t.ndim) return BAD("%s: size has %d dims but stride %d", g->full, t.ndim, nd_stride);
    if (g->kind == G_REBUILD_V3) {
        const allowed_global *dt = global_of(vm, item(vm, args, 6));
        if (!dt || dt->kind != G_DTYPE)
            return BAD("%s: the dtype argument is a %s, not a torch dtype", g->full,
                       describe(vm, item(vm, args, 6)));
        if (dt->dtype == NO_DTYPE)
            return vm_fail(vm, SDXL_STATUS_UNSUPPORTED, "tensor of dtype %s is not supported", dt->full);
        t.dtype = (sdxl_st_dtype)dt->dtype;
    }
    sdxl_pickle *p = vm->p;
    if (p->n_tensors >= UINT32_MAX) return BAD("too many tensors");
    TRY(grow(vm, (void **)&p->tensors, &p->cap_tensors, p->n_tensors + 1, sizeof *p->tensors, &p->bytes));
    p->tensors[p->n_tensors] = t;
    TRY(new_obj(vm, SDXL_PK_TENSOR, out));
    obj(vm, *out)->u.index = (uint32_t)p->n_tensors++;
    return SDXL_STATUS_OK;
}

/* _codecs.encode(str[, encoding]) -> bytes, for "latin1" and "utf-8". */
static sdxl_status codecs_encode(pk_vm *vm, sdxl_pk_ref args, sdxl_pk_ref *out) {
    uint32_t n = obj(vm, args)->len;
    if (n < 1 || n > 2) return BAD("_codecs.encode called with %u arguments", n);
    const pk_obj *s = obj(vm, item(vm, args, 0));
    if (s->kind != SDXL_PK_STR) return BAD("_codecs.encode of a %s", kind_names[s->kind]);
    const char *enc = "utf-8";
    if (n == 2) {
        const pk_obj *e = obj(vm, item(vm, args, 1));
        if (e->kind != SDXL_PK_STR) return BAD("_codecs.encode: the encoding is a %s", kind_names[e->kind]);
        enc = e->u.s;
    }
    if (!strcmp(enc, "utf-8") || !strcmp(enc, "utf8"))
        return new_blob(vm, SDXL_PK_BYTES, s->u.s, s->len, out);
    if (strcmp(enc, "latin1") && strcmp(enc, "latin-1") && strcmp(enc, "iso-8859-1"))
        return BAD("_codecs.encode: encoding %s is not supported (latin1 and utf-8 are)",
                   quote_bytes(enc, strlen(enc)).s);
    /* the string is valid UTF-8; every code point must fit in one byte */
    uint8_t *d = sdxl_malloc(s->len + 1);
    if (!d) return oom(vm, s->len + 1);
    size_t o = 0;
    const uint8_t *b = (const uint8_t *)s->u.s;
    for (size_t i = 0; i < s->len;) {
        if (b[i] < 0x80) {
            d[o++] = b[i++];
        } else if ((b[i] & 0xE0) == 0xC0 && b[i] <= 0xC3) {
            d[o++] = (uint8_t)(((b[i] & 0x1F) << 6) | (b[i + 1] & 0x3F));
            i += 2;
        } else {
            sdxl_free(d);
            return BAD("_codecs.encode: a code point above U+00FF cannot be latin1");
        }
    }
    sdxl_status st = new_blob(vm, SDXL_PK_BYTES, d, o, out);
    sdxl_free(d);
    return st;
}

/* func(*args) for an allowed global func. */
static sdxl_status call(pk_vm *vm, sdxl_pk_ref func, sdxl_pk_ref args, sdxl_pk_ref *out) {
    const allowed_global *g = global_of(vm, func);
    if (!g) return BAD("cannot call a %s", kind_names[obj(vm, func)->kind]);
    if (obj(vm, args)->kind != SDXL_PK_TUPLE)
        return BAD("the arguments of %s are a %s, not a tuple", g->full, describe(vm, args));
    uint32_t n = obj(vm, args)->len;
    switch (g->kind) {
    case G_ODICT:
        if (n) return BAD("collections.OrderedDict called with %u arguments (pickles pass none)", n);
        return new_container(vm, SDXL_PK_DICT, NULL, 0, out);
    case G_SIZE:
        if (n != 1 || obj(vm, item(vm, args, 0))->kind != SDXL_PK_TUPLE)
            return BAD("torch.Size expects one tuple argument");
        *out = item(vm, args, 0);
        return SDXL_STATUS_OK;
    case G_ENCODE: return codecs_encode(vm, args, out);
    case G_REBUILD_V1:
    case G_REBUILD_V2:
    case G_REBUILD_V3: return rebuild_tensor(vm, g, args, out);
    case G_PARAM:
    case G_PARAM_STATE: {
        uint32_t want = g->kind == G_PARAM ? 3 : 4;
        if (n != want) return BAD("%s called with %u arguments, expected %u", g->full, n, want);
        sdxl_pk_ref t = item(vm, args, 0);
        if (obj(vm, t)->kind != SDXL_PK_TENSOR) return BAD("%s of a %s", g->full, describe(vm, t));
        vm->p->tensors[obj(vm, t)->u.index].parameter = true;
        *out = t;
        return SDXL_STATUS_OK;
    }
    default: return BAD("%s is not callable here", g->full);
    }
}

/* cls.__new__(cls, *args) for NEWOBJ / NEWOBJ_EX. */
static sdxl_status instantiate(pk_vm *vm, sdxl_pk_ref cls, sdxl_pk_ref args, sdxl_pk_ref *out) {
    const allowed_global *g = global_of(vm, cls);
    if (!g || (g->kind != G_ODICT && g->kind != G_SIZE))
        return BAD("cannot instantiate a %s (only collections.OrderedDict and torch.Size)",
                   describe(vm, cls));
    if (obj(vm, args)->kind != SDXL_PK_TUPLE)
        return BAD("the arguments of %s are a %s, not a tuple", g->full, describe(vm, args));
    if (g->kind == G_ODICT) return new_container(vm, SDXL_PK_DICT, NULL, 0, out); /* __new__ ignores args */
    return call(vm, cls, args, out);
}

/* ---- the interpreter loop ------------------------------------------------ */

static sdxl_status memo_put(pk_vm *vm, int64_t idx) {
    if (idx < 0) return BAD("negative memo index %lld", (long long)idx);
    if ((uint64_t)idx >= vm->prm.max_memo || (uint64_t)idx >= vm->len)
        return BAD("memo index %lld is out of range (limit %zu)", (long long)idx,
                   vm->prm.max_memo < vm->len ? vm->prm.max_memo : vm->len);
    sdxl_pk_ref v = 0;
    TRY(top(vm, &v));
    size_t i = (size_t)idx, old = vm->memo_cap;
    if (i >= old) {
        TRY(grow(vm, (void **)&vm->memo, &vm->memo_cap, i + 1, sizeof *vm->memo, NULL));
        for (size_t k = old; k < vm->memo_cap; k++)
            vm->memo[k] = SDXL_PK_REF_NONE;
    }
    if (vm->memo[i] == SDXL_PK_REF_NONE) vm->memo_count++;
    vm->memo[i] = v;
    return SDXL_STATUS_OK;
}

static sdxl_status memo_get(pk_vm *vm, int64_t idx) {
    if (idx < 0 || (uint64_t)idx >= vm->memo_cap || vm->memo[idx] == SDXL_PK_REF_NONE)
        return BAD("memo index %lld was never set", (long long)idx);
    return push(vm, vm->memo[idx]);
}

/* push_new(vm, new_x(vm, ..., &r), &r): push r if new_x succeeded. r goes
 * by address: its value is only read after new_x has set it. */
static sdxl_status push_new(pk_vm *vm, sdxl_status st, const sdxl_pk_ref *r) {
    return st == SDXL_STATUS_OK ? push(vm, *r) : st;
}

static sdxl_status step(pk_vm *vm, bool *stop) {
    sdxl_pk_ref r = 0, a = 0, b = 0, c = 0;
    const uint8_t *data = NULL;
    const char *line = NULL;
    size_t n = 0, start = 0;
    uint64_t u = 0;
    int64_t i64 = 0;

    switch (vm->op) {
    /* ---- framing */
    case 0x80: /* PROTO */
        TRY(read_le(vm, 1, &u));
        if (u > 5) return BAD("protocol %llu is newer than 5", (unsigned long long)u);
        return SDXL_STATUS_OK;
    case 0x95: /* FRAME: a hint for buffering; the bytes follow inline */
        TRY(read_le(vm, 8, &u));
        if (u > vm->len - vm->pos)
            return BAD("frame of %llu bytes but %zu remain (truncated?)", (unsigned long long)u,
                       vm->len - vm->pos);
        return SDXL_STATUS_OK;
    case '.': /* STOP */
        TRY(pop(vm, &r));
        vm->p->root = r;
        *stop = true;
        return SDXL_STATUS_OK;

    /* ---- stack */
    case '(': /* MARK */
        if (vm->n_marks >= vm->prm.max_marks)
            return BAD("more than %zu nested MARKs (the cap)", vm->prm.max_marks);
        TRY(grow(vm, (void **)&vm->marks, &vm->marks_cap, vm->n_marks + 1, sizeof *vm->marks, NULL));
        vm->marks[vm->n_marks++] = vm->sp;
        return SDXL_STATUS_OK;
    case '0': /* POP: the top item, or the mark when nothing is above it */
        if (vm->sp > frame_base(vm)) {
            vm->sp--;
            return SDXL_STATUS_OK;
        }
        TRY(pop_mark(vm, &start));
        vm->sp = start;
        return SDXL_STATUS_OK;
    case '1': /* POP_MARK */
        TRY(pop_mark(vm, &start));
        vm->sp = start;
        return SDXL_STATUS_OK;
    case '2': /* DUP */ TRY(top(vm, &r)); return push(vm, r);

    /* ---- scalars */
    case 'N': return push(vm, 0); /* the None, True, False singletons are refs 0, 1, 2 */
    case 0x88: return push(vm, 1);
    case 0x89: return push(vm, 2);
    case 'J': /* BININT */
        TRY(read_le(vm, 4, &u));
        return push_new(vm, new_int(vm, (int32_t)(uint32_t)u, &r), &r);
    case 'K': /* BININT1 */ TRY(read_le(vm, 1, &u)); return push_new(vm, new_int(vm, (int64_t)u, &r), &r);
    case 'M': /* BININT2 */ TRY(read_le(vm, 2, &u)); return push_new(vm, new_int(vm, (int64_t)u, &r), &r);
    case 0x8a: /* LONG1 */
        TRY(read_counted(vm, 1, false, &data, &n));
        return push_new(vm, new_long(vm, data, n, &r), &r);
    case 0x8b: /* LONG4 */
        TRY(read_counted(vm, 4, true, &data, &n));
        return push_new(vm, new_long(vm, data, n, &r), &r);
    case 'I': /* INT: "01" / "00" are True / False (protocol 0 bools) */
        TRY(read_line(vm, &line, &n));
        if (n == 2 && line[0] == '0' && (line[1] == '0' || line[1] == '1'))
            return push(vm, line[1] == '1' ? 1 : 2);
        return push_new(vm, new_decimal(vm, line, n, &r), &r);
    case 'L': /* LONG: decimal with an optional trailing L */
        TRY(read_line(vm, &line, &n));
        if (n && line[n - 1] == 'L') n--;
        return push_new(vm, new_decimal(vm, line, n, &r), &r);
    case 'G': { /* BINFLOAT: big-endian IEEE double */
        TRY(need(vm, 8));
        uint64_t bits = 0;
        for (int k = 0; k < 8; k++)
            bits = (bits << 8) | vm->buf[vm->pos + (size_t)k];
        vm->pos += 8;
        double d;
        memcpy(&d, &bits, sizeof d);
        return push_new(vm, new_float(vm, d, &r), &r);
    }
    case 'F': { /* FLOAT: repr() text */
        TRY(read_line(vm, &line, &n));
        char tmp[64];
        bool ok = n > 0 && n < sizeof tmp;
        for (size_t k = 0; ok && k < n; k++) {
            char ch = line[k];
            ok = (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '+' || ch == 'e' || ch == 'E' ||
                 ch == 'i' || ch == 'n' || ch == 'f' || ch == 'a';
        }
        double d = 0;
        if (ok) {
            memcpy(tmp, line, n);
            tmp[n] = '\0';
            char *end;
            d = strtod(tmp, &end);
            ok = end == tmp + n;
        }
        if (!ok) return BAD("argument %s is not a float", quote_bytes(line, n).s);
        return push_new(vm, new_float(vm, d, &r), &r);
    }

    /* ---- strings and bytes */
    case 'X': /* BINUNICODE */
        TRY(read_counted(vm, 4, false, &data, &n));
        return push_new(vm, new_str(vm, data, n, &r), &r);
    case 0x8c: /* SHORT_BINUNICODE */
        TRY(read_counted(vm, 1, false, &data, &n));
        return push_new(vm, new_str(vm, data, n, &r), &r);
    case 0x8d: /* BINUNICODE8 */
        TRY(read_counted(vm, 8, false, &data, &n));
        return push_new(vm, new_str(vm, data, n, &r), &r);
    case 'T': /* BINSTRING (Python 2 str; torch.load decodes it as UTF-8) */
        TRY(read_counted(vm, 4, true, &data, &n));
        return push_new(vm, new_str(vm, data, n, &r), &r);
    case 'U': /* SHORT_BINSTRING */
        TRY(read_counted(vm, 1, false, &data, &n));
        return push_new(vm, new_str(vm, data, n, &r), &r);
    case 'V': /* UNICODE */
        TRY(read_line(vm, &line, &n));
        return push_new(vm, decode_raw_unicode(vm, line, n, &r), &r);
    case 'S': /* STRING */
        TRY(read_line(vm, &line, &n));
        return push_new(vm, decode_quoted(vm, line, n, &r), &r);
    case 'B': /* BINBYTES */
        TRY(read_counted(vm, 4, false, &data, &n));
        return push_new(vm, new_blob(vm, SDXL_PK_BYTES, data, n, &r), &r);
    case 'C': /* SHORT_BINBYTES */
        TRY(read_counted(vm, 1, false, &data, &n));
        return push_new(vm, new_blob(vm, SDXL_PK_BYTES, data, n, &r), &r);
    case 0x8e: /* BINBYTES8 */
    case 0x96: /* BYTEARRAY8 (a bytearray; read-only bytes here) */
        TRY(read_counted(vm, 8, false, &data, &n));
        return push_new(vm, new_blob(vm, SDXL_PK_BYTES, data, n, &r), &r);

    /* ---- containers */
    case ')': return push_new(vm, new_tuple(vm, NULL, 0, &r), &r);
    case ']': return push_new(vm, new_container(vm, SDXL_PK_LIST, NULL, 0, &r), &r);
    case '}': return push_new(vm, new_container(vm, SDXL_PK_DICT, NULL, 0, &r), &r);
    case 0x85: /* TUPLE1 .. TUPLE3 */
    case 0x86:
    case 0x87:
        n = (size_t)(vm->op - 0x84);
        if (vm->sp - frame_base(vm) < n) return BAD("needs %zu items on the stack", n);
        TRY(new_tuple(vm, vm->stack + vm->sp - n, n, &r));
        vm->sp -= n;
        return push(vm, r);
    case 't': /* TUPLE */
        TRY(pop_mark(vm, &start));
        TRY(new_tuple(vm, vm->stack + start, vm->sp - start, &r));
        vm->sp = start;
        return push(vm, r);
    case 'l': /* LIST */
        TRY(pop_mark(vm, &start));
        TRY(new_container(vm, SDXL_PK_LIST, vm->stack + start, vm->sp - start, &r));
        vm->sp = start;
        return push(vm, r);
    case 'd': /* DICT */
        TRY(pop_mark(vm, &start));
        if ((vm->sp - start) & 1) return BAD("odd number of items (%zu) for key/value pairs", vm->sp - start);
        TRY(check_keys(vm, vm->stack + start, vm->sp - start));
        TRY(new_container(vm, SDXL_PK_DICT, vm->stack + start, vm->sp - start, &r));
        vm->sp = start;
        return push(vm, r);
    case 'a': /* APPEND */
        TRY(pop(vm, &a));
        TRY(top(vm, &r));
        if (obj(vm, r)->kind != SDXL_PK_LIST) return BAD("APPEND to a %s, not a list", describe(vm, r));
        return extend(vm, r, &a, 1);
    case 'e': /* APPENDS */
        TRY(pop_mark(vm, &start));
        if (start <= frame_base(vm)) return BAD("no list below the MARK");
        r = vm->stack[start - 1];
        if (obj(vm, r)->kind != SDXL_PK_LIST) return BAD("APPENDS to a %s, not a list", describe(vm, r));
        TRY(extend(vm, r, vm->stack + start, vm->sp - start));
        vm->sp = start;
        return SDXL_STATUS_OK;
    case 's': { /* SETITEM */
        TRY(pop(vm, &b));
        TRY(pop(vm, &a));
        TRY(top(vm, &r));
        if (obj(vm, r)->kind != SDXL_PK_DICT) return BAD("SETITEM on a %s, not a dict", describe(vm, r));
        sdxl_pk_ref kv[2] = {a, b};
        TRY(check_keys(vm, kv, 2));
        return extend(vm, r, kv, 2);
    }
    case 'u': /* SETITEMS */
        TRY(pop_mark(vm, &start));
        if (start <= frame_base(vm)) return BAD("no dict below the MARK");
        r = vm->stack[start - 1];
        if (obj(vm, r)->kind != SDXL_PK_DICT) return BAD("SETITEMS on a %s, not a dict", describe(vm, r));
        if ((vm->sp - start) & 1) return BAD("odd number of items (%zu) for key/value pairs", vm->sp - start);
        TRY(check_keys(vm, vm->stack + start, vm->sp - start));
        TRY(extend(vm, r, vm->stack + start, vm->sp - start));
        vm->sp = start;
        return SDXL_STATUS_OK;
    case 0x8f: /* EMPTY_SET */
    case 0x90: /* ADDITEMS */
    case 0x91: /* FROZENSET */ return BAD("sets are not supported");

    /* ---- memo */
    case 'p': /* PUT */ TRY(read_line_int(vm, "memo index", &i64)); return memo_put(vm, i64);
    case 'q': /* BINPUT */ TRY(read_le(vm, 1, &u)); return memo_put(vm, (int64_t)u);
    case 'r': /* LONG_BINPUT */ TRY(read_le(vm, 4, &u)); return memo_put(vm, (int64_t)u);
    case 0x94: /* MEMOIZE: the next index is the number of memo entries */
        return memo_put(vm, (int64_t)vm->memo_count);
    case 'g': /* GET */ TRY(read_line_int(vm, "memo index", &i64)); return memo_get(vm, i64);
    case 'h': /* BINGET */ TRY(read_le(vm, 1, &u)); return memo_get(vm, (int64_t)u);
    case 'j': /* LONG_BINGET */ TRY(read_le(vm, 4, &u)); return memo_get(vm, (int64_t)u);

    /* ---- the risky ones */
    case 'c': { /* GLOBAL: module\nname\n */
        const char *mod = NULL;
        size_t mlen = 0;
        TRY(read_line(vm, &mod, &mlen));
        TRY(read_line(vm, &line, &n));
        return push_global(vm, mod, mlen, line, n);
    }
    case 0x93: { /* STACK_GLOBAL */
        TRY(pop(vm, &b));
        TRY(pop(vm, &a));
        const pk_obj *m = obj(vm, a), *nm = obj(vm, b);
        if (m->kind != SDXL_PK_STR || nm->kind != SDXL_PK_STR)
            return BAD("module and name are a %s and a %s, not strings", kind_names[m->kind],
                       kind_names[nm->kind]);
        return push_global(vm, m->u.s, m->len, nm->u.s, nm->len);
    }
    case 'R': /* REDUCE: func(*args) */
        TRY(pop(vm, &a));
        TRY(top(vm, &c));
        TRY(call(vm, c, a, &r));
        vm->stack[vm->sp - 1] = r;
        return SDXL_STATUS_OK;
    case 0x81: /* NEWOBJ: cls.__new__(cls, *args) */
        TRY(pop(vm, &a));
        TRY(pop(vm, &c));
        return push_new(vm, instantiate(vm, c, a, &r), &r);
    case 0x92: /* NEWOBJ_EX: cls.__new__(cls, *args, **kwargs) */
        TRY(pop(vm, &b));
        TRY(pop(vm, &a));
        TRY(pop(vm, &c));
        if (obj(vm, b)->kind != SDXL_PK_DICT || obj(vm, b)->len)
            return BAD("keyword arguments to %s are not supported", describe(vm, c));
        return push_new(vm, instantiate(vm, c, a, &r), &r);
    case 'b': { /* BUILD: inst.__setstate__(state) */
        TRY(pop(vm, &a));
        TRY(top(vm, &r));
        uint8_t k = obj(vm, r)->kind;
        /* a state_dict's OrderedDict carries `_metadata` (per-module version
         * numbers); a tensor's state is legacy set_() arguments. Neither is
         * kept: only the values matter here. */
        if (k != SDXL_PK_DICT && k != SDXL_PK_TENSOR)
            return BAD("BUILD on a %s (only dicts and tensors)", describe(vm, r));
        return SDXL_STATUS_OK;
    }
    case 'Q': /* BINPERSID */ TRY(pop(vm, &a)); return push_new(vm, persistent_load(vm, a, &r), &r);
    case 'P': /* PERSID: the id is a text line */
        TRY(read_line(vm, &line, &n));
        TRY(new_str(vm, line, n, &a));
        return push_new(vm, persistent_load(vm, a, &r), &r);
    case 'i': { /* INST: module\nname\n, args above a MARK */
        const char *mod = NULL;
        size_t mlen = 0;
        TRY(read_line(vm, &mod, &mlen));
        TRY(read_line(vm, &line, &n));
        char full[200];
        size_t m = mlen < 90 ? mlen : 90, k = n < 90 ? n : 90;
        memcpy(full, mod, m);
        full[m] = '.';
        memcpy(full + m + 1, line, k);
        return BAD("refusing to instantiate %s: class instances are not supported",
                   quote_bytes(full, m + 1 + k).s);
    }
    case 'o': return BAD("class instances (OBJ) are not supported");
    case 0x82:
    case 0x83:
    case 0x84: return BAD("extension registry codes are not supported");
    case 0x97:
    case 0x98: return BAD("out-of-band buffers are not supported");
    default: return BAD("unknown opcode");
    }
}

static void free_result(sdxl_pickle *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_objs; i++) {
        uint8_t k = p->objs[i].kind;
        if (k == SDXL_PK_LIST || k == SDXL_PK_DICT) sdxl_free(p->objs[i].u.items);
    }
    for (pk_chunk *c = p->chunks, *next; c; c = next) {
        next = c->next;
        sdxl_free(c);
    }
    sdxl_free(p->objs);
    sdxl_free(p->tensors);
    sdxl_free(p->storages);
    sdxl_free(p);
}

sdxl_status sdxl_pickle_load(const void *buf, size_t len, const sdxl_pk_params *params, sdxl_pickle **out,
                             size_t *consumed, sdxl_error *err) {
    if (!out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_pickle_load: out is NULL");
    *out = NULL;
    if (!buf && len) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_pickle_load: buf is NULL");

    pk_vm vm = {.buf = buf, .len = len, .op = -1, .err = err};
    vm.prm = sdxl_pickle_default_params();
    if (params) {
        sdxl_pk_params d = vm.prm;
        vm.prm = *params;
        if (!vm.prm.max_stack) vm.prm.max_stack = d.max_stack;
        if (!vm.prm.max_marks) vm.prm.max_marks = d.max_marks;
        if (!vm.prm.max_memo) vm.prm.max_memo = d.max_memo;
        if (!vm.prm.max_objects) vm.prm.max_objects = d.max_objects;
        if (!vm.prm.max_bytes) vm.prm.max_bytes = d.max_bytes;
    }
    sdxl_pickle *p = sdxl_malloc(sizeof *p);
    if (!p) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "pickle: out of memory");
    memset(p, 0, sizeof *p);
    p->bytes = sizeof *p;
    vm.p = p;

    sdxl_status st = SDXL_STATUS_OK;
    sdxl_pk_ref r;
    /* refs 0, 1, 2: None, True, False */
    if ((st = new_obj(&vm, SDXL_PK_NONE, &r)) != SDXL_STATUS_OK) goto fail;
    if ((st = new_obj(&vm, SDXL_PK_BOOL, &r)) != SDXL_STATUS_OK) goto fail;
    p->objs[r].tag = 1;
    if ((st = new_obj(&vm, SDXL_PK_BOOL, &r)) != SDXL_STATUS_OK) goto fail;

    /* the stack exists from the start: `stack + start` of an empty MARK
     * frame (as in "(t") must not be arithmetic on NULL */
    if ((st = grow(&vm, (void **)&vm.stack, &vm.stack_cap, 64, sizeof *vm.stack, NULL)) != SDXL_STATUS_OK)
        goto fail;

    bool stop = false;
    while (!stop) {
        if (vm.pos >= vm.len) {
            vm.op = -1;
            vm.op_pos = vm.pos;
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                "pickle byte %zu: the data ends before STOP (truncated?)",
                                vm.prm.base_offset + vm.pos);
            goto fail;
        }
        vm.op_pos = vm.pos;
        vm.op = vm.buf[vm.pos++];
        st = step(&vm, &stop);
        if (st != SDXL_STATUS_OK) goto fail;
    }
    size_t items = 0;
    for (size_t i = 0; i < p->n_objs; i++) {
        const pk_obj *o = &p->objs[i];
        if (o->kind == SDXL_PK_TUPLE || o->kind == SDXL_PK_LIST) items += o->len;
        if (o->kind == SDXL_PK_DICT) items += 2 * (size_t)o->len;
    }
    p->items = items;
    sdxl_free(vm.stack);
    sdxl_free(vm.marks);
    sdxl_free(vm.memo);
    if (consumed) *consumed = vm.pos;
    *out = p;
    return SDXL_STATUS_OK;

fail:
    sdxl_free(vm.stack);
    sdxl_free(vm.marks);
    sdxl_free(vm.memo);
    free_result(p);
    return st;
}

void sdxl_pickle_free(sdxl_pickle *p) {
    free_result(p);
}

/* ---- getters ------------------------------------------------------------ */

static const pk_obj *get(const sdxl_pickle *p, sdxl_pk_ref r) {
    return p && r < p->n_objs ? &p->objs[r] : NULL;
}

sdxl_pk_ref sdxl_pickle_root(const sdxl_pickle *p) {
    return p ? p->root : SDXL_PK_REF_NONE;
}

sdxl_pk_kind sdxl_pickle_kind(const sdxl_pickle *p, sdxl_pk_ref r) {
    const pk_obj *o = get(p, r);
    return o ? (sdxl_pk_kind)o->kind : SDXL_PK_KIND_COUNT_;
}

bool sdxl_pickle_bool(const sdxl_pickle *p, sdxl_pk_ref r) {
    const pk_obj *o = get(p, r);
    return o && o->kind == SDXL_PK_BOOL && o->tag;
}

int64_t sdxl_pickle_int(const sdxl_pickle *p, sdxl_pk_ref r) {
    const pk_obj *o = get(p, r);
    if (!o) return 0;
    if (o->kind == SDXL_PK_INT) return o->u.i;
    if (o->kind == SDXL_PK_BOOL) return o->tag;
    return 0;
}

double sdxl_pickle_float(const sdxl_pickle *p, sdxl_pk_ref r) {
    const pk_obj *o = get(p, r);
    return o && o->kind == SDXL_PK_FLOAT ? o->u.f : 0.0;
}

const char *sdxl_pickle_str(const sdxl_pickle *p, sdxl_pk_ref r, size_t *len) {
    const pk_obj *o = get(p, r);
    if (!o || (o->kind != SDXL_PK_STR && o->kind != SDXL_PK_BYTES && o->kind != SDXL_PK_BIGINT)) return NULL;
    if (len) *len = o->len;
    return o->u.s;
}

const char *sdxl_pickle_global_name(const sdxl_pickle *p, sdxl_pk_ref r) {
    const pk_obj *o = get(p, r);
    return o && o->kind == SDXL_PK_GLOBAL ? allowed[o->tag].full : NULL;
}

bool sdxl_pickle_global_dtype(const sdxl_pickle *p, sdxl_pk_ref r, sdxl_st_dtype *out) {
    const pk_obj *o = get(p, r);
    if (!o || o->kind != SDXL_PK_GLOBAL || allowed[o->tag].kind != G_DTYPE ||
        allowed[o->tag].dtype == NO_DTYPE)
        return false;
    if (out) *out = (sdxl_st_dtype)allowed[o->tag].dtype;
    return true;
}

size_t sdxl_pickle_len(const sdxl_pickle *p, sdxl_pk_ref r) {
    const pk_obj *o = get(p, r);
    if (!o || (o->kind != SDXL_PK_TUPLE && o->kind != SDXL_PK_LIST && o->kind != SDXL_PK_DICT)) return 0;
    return o->len;
}

sdxl_pk_ref sdxl_pickle_item(const sdxl_pickle *p, sdxl_pk_ref r, size_t i) {
    const pk_obj *o = get(p, r);
    if (!o || (o->kind != SDXL_PK_TUPLE && o->kind != SDXL_PK_LIST) || i >= o->len) return SDXL_PK_REF_NONE;
    return o->u.items[i];
}

bool sdxl_pickle_dict_entry(const sdxl_pickle *p, sdxl_pk_ref d, size_t i, sdxl_pk_ref *key,
                            sdxl_pk_ref *value) {
    const pk_obj *o = get(p, d);
    if (!o || o->kind != SDXL_PK_DICT || i >= o->len) return false;
    if (key) *key = o->u.items[2 * i];
    if (value) *value = o->u.items[2 * i + 1];
    return true;
}

const sdxl_pk_tensor *sdxl_pickle_tensor(const sdxl_pickle *p, sdxl_pk_ref r) {
    const pk_obj *o = get(p, r);
    return o && o->kind == SDXL_PK_TENSOR ? &p->tensors[o->u.index] : NULL;
}

const sdxl_pk_storage *sdxl_pickle_storage(const sdxl_pickle *p, sdxl_pk_ref r) {
    const pk_obj *o = get(p, r);
    return o && o->kind == SDXL_PK_STORAGE ? &p->storages[o->u.index] : NULL;
}

size_t sdxl_pickle_storage_count(const sdxl_pickle *p) {
    return p ? p->n_storages : 0;
}

const sdxl_pk_storage *sdxl_pickle_storage_at(const sdxl_pickle *p, size_t i) {
    return p && i < p->n_storages ? &p->storages[i] : NULL;
}

size_t sdxl_pickle_object_count(const sdxl_pickle *p) {
    return p ? p->n_objs : 0;
}

size_t sdxl_pickle_item_count(const sdxl_pickle *p) {
    return p ? p->items : 0;
}

size_t sdxl_pickle_bytes(const sdxl_pickle *p) {
    return p ? p->bytes : 0;
}
