/* elementwise.c - CPU ops that touch each element a few times: softmax,
 * activations, GEGLU, broadcast add/mul, scale, concat, nearest upsample,
 * embedding lookup and dtype cast (layouts and aliasing: backend.h).
 *
 * The float kernels (exp, sigmoid, erf, row kernels) live in
 * elementwise_math.h and are instantiated here for generic x86-64 and in
 * elementwise_avx2.c / elementwise_avx512.c for the wider ISAs; each op picks
 * its table per call (sdxl__ew_kernels_get). The memory-bound ops (binary,
 * scale, concat, upsample, cast) are plain loops and memcpy: they run at
 * memory speed with SSE2 already, so they have no ISA variants.
 *
 * Threading: work is cut into blocks of SDXL__EW_BLOCK elements (or rows worth
 * that many) and run on the back end's pool; below one block it stays on the
 * calling thread.
 */
#define SDXL_EW_TABLE sdxl__ew_kernels_generic
#define SDXL_EW_ISA SDXL_ISA_GENERIC
#include "backend/cpu/elementwise_math.h"

#include <stdint.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/elementwise_kernels.h"

/* ---- shared helpers ------------------------------------------------------------ */

const sdxl__ew_kernels *sdxl__ew_kernels_get(void) {
    switch (sdxl_cpu_isa()) {
    case SDXL_ISA_AVX512: return &sdxl__ew_kernels_avx512;
    case SDXL_ISA_AVX2: return &sdxl__ew_kernels_avx2;
    default: return &sdxl__ew_kernels_generic;
    }
}

sdxl_status sdxl__ew_check(sdxl_backend *be, const char *op, const char *name,
                           const sdxl_tensor *t, unsigned dtypes) {
    if (!t) return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: %s is NULL", op, name);
    if (t->ndim < 0 || t->ndim > SDXL_MAX_DIMS)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: %s has ndim %d (0..%d allowed)", op,
                              name, t->ndim, SDXL_MAX_DIMS);
    if ((unsigned)t->dtype >= (unsigned)SDXL_DTYPE_COUNT_)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: %s has invalid dtype %d", op, name,
                              (int)t->dtype);
    for (int i = 0; i < t->ndim; i++)
        if (t->ne[i] < 0)
            return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: %s has negative dim %d (%lld)",
                                  op, name, i, (long long)t->ne[i]);
    if (t->device != SDXL_DEVICE_CPU)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "%s: %s (%s) is device memory; the CPU back end needs host tensors",
                              op, name, SDXL__EW_DESC(t));
    if (!t->data && sdxl_tensor_nelem(t) > 0)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: %s (%s) has no data", op, name,
                              SDXL__EW_DESC(t));
    if (!(dtypes & SDXL__EW_DTYPE_BIT(t->dtype))) {
        char want[40] = "";
        static const sdxl_dtype all[] = {SDXL_DTYPE_F32, SDXL_DTYPE_F16, SDXL_DTYPE_BF16,
                                         SDXL_DTYPE_I32};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (dtypes & SDXL__EW_DTYPE_BIT(all[i])) {
                if (want[0]) strcat(want, "|");
                strcat(want, sdxl_dtype_name(all[i]));
            }
        return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "%s: %s is %s; supported: %s", op, name,
                              SDXL__EW_DESC(t), want);
    }
    return SDXL_STATUS_OK;
}

bool sdxl__ew_overlap(const sdxl_tensor *a, const sdxl_tensor *b) {
    size_t na = sdxl_tensor_nbytes(a), nb = sdxl_tensor_nbytes(b);
    if (!na || !nb) return false;
    uintptr_t pa = (uintptr_t)a->data, pb = (uintptr_t)b->data;
    return pa < pb + nb && pb < pa + na;
}

/* y may be x itself (same buffer and shape) but must not partially overlap it. */
static sdxl_status check_inplace_ok(sdxl_backend *be, const char *op, const char *xname,
                                    const sdxl_tensor *x, const sdxl_tensor *y) {
    if (sdxl__ew_overlap(x, y) && x->data != y->data)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "%s: y (%s) overlaps %s (%s) without being it", op, SDXL__EW_DESC(y),
                              xname, SDXL__EW_DESC(x));
    return SDXL_STATUS_OK;
}

static sdxl_status check_no_overlap(sdxl_backend *be, const char *op, const char *xname,
                                    const sdxl_tensor *x, const sdxl_tensor *y) {
    if (sdxl__ew_overlap(x, y))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: y (%s) must not overlap %s (%s)",
                              op, SDXL__EW_DESC(y), xname, SDXL__EW_DESC(x));
    return SDXL_STATUS_OK;
}

static sdxl_status check_same_shape(sdxl_backend *be, const char *op, const char *xname,
                                    const sdxl_tensor *x, const sdxl_tensor *y) {
    if (!sdxl_tensor_same_shape(x, y))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "%s: y (%s) must have the shape of %s (%s)", op, SDXL__EW_DESC(y),
                              xname, SDXL__EW_DESC(x));
    return SDXL_STATUS_OK;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        sdxl_status st_ = (expr);                                                                  \
        if (st_ != SDXL_STATUS_OK) return st_;                                                     \
    } while (0)

static const unsigned F32_ONLY = SDXL__EW_DTYPE_BIT(SDXL_DTYPE_F32);

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

/* Run fn over n elements in blocks of SDXL__EW_BLOCK: fn gets block indices. */
static void parallel_blocks(sdxl_backend *be, size_t n, sdxl_parallel_fn fn, void *ctx) {
    size_t blocks = (n + SDXL__EW_BLOCK - 1) / SDXL__EW_BLOCK;
    if (blocks == 1)
        fn(ctx, 0, 1, 0);
    else if (blocks > 1)
        sdxl_threadpool_parallel_for(sdxl__cpu(be)->pool, blocks, 1, fn, ctx);
}

/* Run fn over `rows` rows of `row_len` elements, at least ~one block per chunk. */
static void parallel_rows(sdxl_backend *be, size_t rows, size_t row_len, sdxl_parallel_fn fn,
                          void *ctx) {
    if (!rows) return;
    size_t grain = row_len ? (SDXL__EW_BLOCK + row_len - 1) / row_len : rows;
    if (grain >= rows)
        fn(ctx, 0, rows, 0);
    else
        sdxl_threadpool_parallel_for(sdxl__cpu(be)->pool, rows, grain, fn, ctx);
}

/* ---- softmax ------------------------------------------------------------------- */

typedef struct {
    const sdxl__ew_kernels *k;
    const float *x; /* [rows, n] */
    float *y;       /* [rows, n] */
    size_t n;
} softmax_ctx;

static void softmax_task(void *vc, size_t r0, size_t r1, int tid) {
    const softmax_ctx *c = vc;
    for (size_t r = r0; r < r1; r++) c->k->softmax_row(c->x + r * c->n, c->y + r * c->n, c->n);
}

sdxl_status sdxl__cpu_softmax(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y) {
    TRY(sdxl__ew_check(be, "softmax", "x", x, F32_ONLY));
    TRY(sdxl__ew_check(be, "softmax", "y", y, F32_ONLY));
    if (x->ndim < 1)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "softmax: x (%s) needs at least one dim",
                              SDXL__EW_DESC(x));
    TRY(check_same_shape(be, "softmax", "x", x, y));
    TRY(check_inplace_ok(be, "softmax", "x", x, y));
    size_t n = (size_t)x->ne[x->ndim - 1];
    if (n == 0) return SDXL_STATUS_OK;
    softmax_ctx c = {sdxl__ew_kernels_get(), x->data, y->data, n};
    parallel_rows(be, (size_t)sdxl_tensor_nelem(x) / n, n, softmax_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- unary activations ---------------------------------------------------------- */

typedef struct {
    void (*fn)(const float *, float *, size_t);
    const float *x; /* [n] */
    float *y;       /* [n] */
    size_t n;
} unary_ctx;

static void unary_task(void *vc, size_t b0, size_t b1, int tid) {
    const unary_ctx *c = vc;
    size_t s = b0 * SDXL__EW_BLOCK, e = min_sz(b1 * SDXL__EW_BLOCK, c->n);
    c->fn(c->x + s, c->y + s, e - s);
}

sdxl_status sdxl__cpu_unary(sdxl_backend *be, sdxl_unary_op op, const sdxl_tensor *x, sdxl_tensor *y) {
    if ((unsigned)op >= (unsigned)SDXL_UNARY_COUNT_)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "unary: unknown op %d", (int)op);
    TRY(sdxl__ew_check(be, "unary", "x", x, F32_ONLY));
    TRY(sdxl__ew_check(be, "unary", "y", y, F32_ONLY));
    TRY(check_same_shape(be, "unary", "x", x, y));
    TRY(check_inplace_ok(be, "unary", "x", x, y));
    unary_ctx c = {sdxl__ew_kernels_get()->unary[op], x->data, y->data,
                   (size_t)sdxl_tensor_nelem(x)};
    parallel_blocks(be, c.n, unary_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- GEGLU ---------------------------------------------------------------------- */

typedef struct {
    const sdxl__ew_kernels *k;
    const float *x; /* [rows, 2n] = [h | g] per row */
    float *y;       /* [rows, n] */
    size_t n, total;
} geglu_ctx;

/* Blocks of the flat output; a block may start and end mid-row. */
static void geglu_task(void *vc, size_t b0, size_t b1, int tid) {
    const geglu_ctx *c = vc;
    size_t s = b0 * SDXL__EW_BLOCK, e = min_sz(b1 * SDXL__EW_BLOCK, c->total);
    size_t r = s / c->n, o = s % c->n;
    while (s < e) {
        size_t m = min_sz(c->n - o, e - s);
        const float *h = c->x + r * 2 * c->n + o;
        c->k->geglu(h, h + c->n, c->y + s, m);
        s += m;
        r++;
        o = 0;
    }
}

sdxl_status sdxl__cpu_geglu(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y) {
    TRY(sdxl__ew_check(be, "geglu", "x", x, F32_ONLY));
    TRY(sdxl__ew_check(be, "geglu", "y", y, F32_ONLY));
    int nd = x->ndim;
    bool ok = nd >= 1 && y->ndim == nd && x->ne[nd - 1] % 2 == 0 &&
              y->ne[nd - 1] == x->ne[nd - 1] / 2;
    for (int i = 0; ok && i < nd - 1; i++) ok = x->ne[i] == y->ne[i];
    if (!ok)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "geglu: x (%s) must be [..., 2N] and y (%s) [..., N] with the same "
                              "leading dims",
                              SDXL__EW_DESC(x), SDXL__EW_DESC(y));
    TRY(check_no_overlap(be, "geglu", "x", x, y));
    geglu_ctx c = {sdxl__ew_kernels_get(), x->data, y->data, (size_t)y->ne[nd - 1],
                   (size_t)sdxl_tensor_nelem(y)};
    if (c.n == 0) return SDXL_STATUS_OK;
    parallel_blocks(be, c.total, geglu_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- binary add / mul with broadcasting ------------------------------------------ */
/* Plain loops: the compiler vectorizes them (with a runtime check that lets
 * y == a take the vector path); they are memory-bound. */

static void add_vv(const float *a, const float *b, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
static void mul_vv(const float *a, const float *b, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}
static void add_vs(const float *a, float b, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b;
}
static void mul_vs(const float *a, float b, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] * b;
}

/* The broadcast, reduced: dims where a is 1 are dropped and neighbours that b
 * either matches or broadcasts alike are merged, so every case becomes
 *   a [outer..., L] with b matching (eq) or broadcasting each dim.
 * The SDXL cases: same shape -> [N] eq; bias [1,C,1,1] on [B,C,H,W] ->
 * [B]bc [C]eq [HW]bc; [B,1,C] on [B,T,C] -> [B]eq [T]bc [C]eq; time embedding
 * [B,C,1,1] -> [B·C]eq [HW]bc. The last dim is the contiguous inner run; each
 * outer row finds its b offset by mixed radix over at most 3 outer dims. */
typedef struct {
    sdxl_binary_op op;
    const float *a, *b;
    float *y;
    size_t total;         /* elements of a / y */
    size_t L;             /* inner run */
    bool inner_eq;        /* b varies along the inner run (else one value per run) */
    int n_outer;          /* 0..3 */
    size_t outer_len[SDXL_MAX_DIMS];
    size_t outer_bstride[SDXL_MAX_DIMS]; /* 0 where b broadcasts */
} binary_ctx;

static size_t binary_b_offset(const binary_ctx *c, size_t row) {
    size_t off = 0;
    for (int d = c->n_outer - 1; d >= 0; d--) {
        size_t i = row % c->outer_len[d];
        row /= c->outer_len[d];
        off += i * c->outer_bstride[d];
    }
    return off;
}

static void binary_task(void *vc, size_t b0, size_t b1, int tid) {
    const binary_ctx *c = vc;
    size_t s = b0 * SDXL__EW_BLOCK, e = min_sz(b1 * SDXL__EW_BLOCK, c->total);
    size_t r = s / c->L, o = s % c->L;
    bool add = c->op == SDXL_BINARY_ADD;
    while (s < e) {
        size_t m = min_sz(c->L - o, e - s);
        const float *pb = c->b + binary_b_offset(c, r);
        if (c->inner_eq)
            (add ? add_vv : mul_vv)(c->a + s, pb + o, c->y + s, m);
        else
            (add ? add_vs : mul_vs)(c->a + s, *pb, c->y + s, m);
        s += m;
        r++;
        o = 0;
    }
}

sdxl_status sdxl__cpu_binary(sdxl_backend *be, sdxl_binary_op op, const sdxl_tensor *a,
                             const sdxl_tensor *b, sdxl_tensor *y) {
    if ((unsigned)op >= (unsigned)SDXL_BINARY_COUNT_)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "binary: unknown op %d", (int)op);
    TRY(sdxl__ew_check(be, "binary", "a", a, F32_ONLY));
    TRY(sdxl__ew_check(be, "binary", "b", b, F32_ONLY));
    TRY(sdxl__ew_check(be, "binary", "y", y, F32_ONLY));
    TRY(check_same_shape(be, "binary", "a", a, y));
    int nd = a->ndim;
    bool ok = b->ndim <= nd;
    int64_t bd[SDXL_MAX_DIMS]; /* b's dims, left-padded with 1s to a's ndim */
    for (int i = 0; ok && i < nd; i++) {
        int j = i - (nd - b->ndim);
        bd[i] = j >= 0 ? b->ne[j] : 1;
        ok = bd[i] == 1 || bd[i] == a->ne[i];
    }
    if (!ok)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "binary: b (%s) does not broadcast to a (%s): after left-padding "
                              "with 1s each dim of b must be 1 or equal a's",
                              SDXL__EW_DESC(b), SDXL__EW_DESC(a));
    TRY(check_inplace_ok(be, "binary", "a", a, y));
    if (sdxl__ew_overlap(b, y) && !(b->data == y->data && sdxl_tensor_same_shape(b, a)))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "binary: y (%s) overlaps b (%s); only a b of a's shape may be y",
                              SDXL__EW_DESC(y), SDXL__EW_DESC(b));

    binary_ctx c = {.op = op, .a = a->data, .b = b->data, .y = y->data,
                    .total = (size_t)sdxl_tensor_nelem(a)};
    if (c.total == 0) return SDXL_STATUS_OK;
    /* Collapse to runs of equal broadcast kind (dims where a is 1 vanish). */
    size_t len[SDXL_MAX_DIMS];
    bool eq[SDXL_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < nd; i++) {
        if (a->ne[i] == 1) continue;
        bool e = bd[i] != 1;
        if (k > 0 && eq[k - 1] == e) {
            len[k - 1] *= (size_t)a->ne[i];
        } else {
            len[k] = (size_t)a->ne[i];
            eq[k] = e;
            k++;
        }
    }
    if (k == 0) { /* one element */
        len[0] = 1;
        eq[0] = true;
        k = 1;
    }
    c.L = len[k - 1];
    c.inner_eq = eq[k - 1];
    c.n_outer = k - 1;
    size_t bstride = c.inner_eq ? c.L : 1;
    for (int d = k - 2; d >= 0; d--) {
        c.outer_len[d] = len[d];
        c.outer_bstride[d] = eq[d] ? bstride : 0;
        if (eq[d]) bstride *= len[d];
    }
    parallel_blocks(be, c.total, binary_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- scale ------------------------------------------------------------------------ */

typedef struct {
    const float *x;
    float *y;
    float s, t;
    size_t n;
} scale_ctx;

static void scale_task(void *vc, size_t b0, size_t b1, int tid) {
    const scale_ctx *c = vc;
    size_t s = b0 * SDXL__EW_BLOCK, e = min_sz(b1 * SDXL__EW_BLOCK, c->n);
    const float *x = c->x;
    float *y = c->y;
    const float k = c->s, t = c->t;
    for (size_t i = s; i < e; i++) y[i] = x[i] * k + t;
}

sdxl_status sdxl__cpu_scale(sdxl_backend *be, const sdxl_tensor *x, float s, float t, sdxl_tensor *y) {
    TRY(sdxl__ew_check(be, "scale", "x", x, F32_ONLY));
    TRY(sdxl__ew_check(be, "scale", "y", y, F32_ONLY));
    TRY(check_same_shape(be, "scale", "x", x, y));
    TRY(check_inplace_ok(be, "scale", "x", x, y));
    scale_ctx c = {x->data, y->data, s, t, (size_t)sdxl_tensor_nelem(x)};
    parallel_blocks(be, c.n, scale_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- concat ----------------------------------------------------------------------- */

typedef struct {
    const char *a, *b; /* [outer, run_a] and [outer, run_b] bytes */
    char *y;           /* [outer, run_a + run_b] bytes */
    size_t run_a, run_b;
} concat_ctx;

static void concat_task(void *vc, size_t r0, size_t r1, int tid) {
    const concat_ctx *c = vc;
    size_t run_y = c->run_a + c->run_b;
    for (size_t r = r0; r < r1; r++) {
        memcpy(c->y + r * run_y, c->a + r * c->run_a, c->run_a);
        memcpy(c->y + r * run_y + c->run_a, c->b + r * c->run_b, c->run_b);
    }
}

sdxl_status sdxl__cpu_concat(sdxl_backend *be, const sdxl_tensor *a, const sdxl_tensor *b, int dim,
                             sdxl_tensor *y) {
    TRY(sdxl__ew_check(be, "concat", "a", a, SDXL__EW_ANY));
    TRY(sdxl__ew_check(be, "concat", "b", b, SDXL__EW_ANY));
    TRY(sdxl__ew_check(be, "concat", "y", y, SDXL__EW_ANY));
    if (a->dtype != b->dtype || a->dtype != y->dtype)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "concat: a (%s), b (%s) and y (%s) must have one dtype",
                              SDXL__EW_DESC(a), SDXL__EW_DESC(b), SDXL__EW_DESC(y));
    int nd = a->ndim;
    if (dim < 0 || dim >= nd)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "concat: dim %d outside [0, %d) for a (%s)", dim, nd, SDXL__EW_DESC(a));
    bool ok = b->ndim == nd && y->ndim == nd && y->ne[dim] == a->ne[dim] + b->ne[dim];
    for (int i = 0; ok && i < nd; i++)
        if (i != dim) ok = a->ne[i] == b->ne[i] && a->ne[i] == y->ne[i];
    if (!ok)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "concat: along dim %d, a (%s) and b (%s) must agree on every other "
                              "dim and y (%s) must be their concatenation",
                              dim, SDXL__EW_DESC(a), SDXL__EW_DESC(b), SDXL__EW_DESC(y));
    TRY(check_no_overlap(be, "concat", "a", a, y));
    TRY(check_no_overlap(be, "concat", "b", b, y));
    size_t es = sdxl_dtype_size(a->dtype);
    size_t inner = (size_t)sdxl_tensor_inner(a, dim + 1);
    size_t outer = 1;
    for (int i = 0; i < dim; i++) outer *= (size_t)a->ne[i];
    concat_ctx c = {a->data, b->data, y->data, (size_t)a->ne[dim] * inner * es,
                    (size_t)b->ne[dim] * inner * es};
    parallel_rows(be, outer, (c.run_a + c.run_b) / es, concat_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- nearest-neighbour x2 upsample -------------------------------------------------- */

typedef struct {
    const float *x; /* [rows = B·C·H, W] */
    float *y;       /* [rows, 2 (output rows), 2W] */
    size_t w;
} upsample_ctx;

static void upsample_task(void *vc, size_t r0, size_t r1, int tid) {
    const upsample_ctx *c = vc;
    size_t w = c->w;
    for (size_t r = r0; r < r1; r++) {
        const float *x = c->x + r * w;
        float *y0 = c->y + r * 4 * w; /* output row 2h */
        for (size_t i = 0; i < w; i++) {
            y0[2 * i] = x[i];
            y0[2 * i + 1] = x[i];
        }
        memcpy(y0 + 2 * w, y0, 2 * w * sizeof *y0); /* output row 2h + 1 */
    }
}

sdxl_status sdxl__cpu_upsample_nearest2x(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y) {
    TRY(sdxl__ew_check(be, "upsample_nearest2x", "x", x, F32_ONLY));
    TRY(sdxl__ew_check(be, "upsample_nearest2x", "y", y, F32_ONLY));
    if (x->ndim != 4 || y->ndim != 4 || y->ne[0] != x->ne[0] || y->ne[1] != x->ne[1] ||
        y->ne[2] != 2 * x->ne[2] || y->ne[3] != 2 * x->ne[3])
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "upsample_nearest2x: x (%s) must be [B,C,H,W] and y (%s) [B,C,2H,2W]",
                              SDXL__EW_DESC(x), SDXL__EW_DESC(y));
    TRY(check_no_overlap(be, "upsample_nearest2x", "x", x, y));
    upsample_ctx c = {x->data, y->data, (size_t)x->ne[3]};
    if (c.w == 0) return SDXL_STATUS_OK;
    parallel_rows(be, (size_t)(x->ne[0] * x->ne[1] * x->ne[2]), 4 * c.w, upsample_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- embedding ----------------------------------------------------------------------- */

typedef struct {
    const char *table; /* [V, D] of dtype */
    sdxl_dtype dtype;
    const int32_t *ids; /* [N], all checked in [0, V) */
    float *y;           /* [N, D] */
    size_t d;
} embedding_ctx;

static void embedding_task(void *vc, size_t r0, size_t r1, int tid) {
    const embedding_ctx *c = vc;
    size_t row_bytes = c->d * sdxl_dtype_size(c->dtype);
    for (size_t r = r0; r < r1; r++)
        sdxl_convert_n(c->table + (size_t)c->ids[r] * row_bytes, c->dtype, c->y + r * c->d,
                       SDXL_DTYPE_F32, c->d);
}

sdxl_status sdxl__cpu_embedding(sdxl_backend *be, const sdxl_tensor *table, const sdxl_tensor *ids,
                                sdxl_tensor *y) {
    TRY(sdxl__ew_check(be, "embedding", "table", table, SDXL__EW_FLOATS));
    TRY(sdxl__ew_check(be, "embedding", "ids", ids, SDXL__EW_DTYPE_BIT(SDXL_DTYPE_I32)));
    TRY(sdxl__ew_check(be, "embedding", "y", y, F32_ONLY));
    /* ids [N] -> y [N, D]; ids of more dims ([B, T]) give y [B, T, D] the same way. */
    bool ok = table->ndim == 2 && ids->ndim >= 1 && ids->ndim < SDXL_MAX_DIMS &&
              y->ndim == ids->ndim + 1 && y->ne[y->ndim - 1] == table->ne[1];
    for (int i = 0; ok && i < ids->ndim; i++) ok = y->ne[i] == ids->ne[i];
    if (!ok)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "embedding: table (%s) must be [V,D], ids (%s) [N] and y (%s) [N,D]",
                              SDXL__EW_DESC(table), SDXL__EW_DESC(ids), SDXL__EW_DESC(y));
    TRY(check_no_overlap(be, "embedding", "table", table, y));
    TRY(check_no_overlap(be, "embedding", "ids", ids, y));
    size_t n = (size_t)sdxl_tensor_nelem(ids);
    const int32_t *id = ids->data;
    int64_t v = table->ne[0];
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0 || id[i] >= v)
            return sdxl__cpu_fail(be, SDXL_STATUS_BAD_INPUT,
                                  "embedding: ids[%zu] = %d is outside [0, %lld) (table %s)", i,
                                  (int)id[i], (long long)v, SDXL__EW_DESC(table));
    embedding_ctx c = {table->data, table->dtype, id, y->data, (size_t)table->ne[1]};
    parallel_rows(be, n, c.d, embedding_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- cast ------------------------------------------------------------------------------ */

typedef struct {
    const char *x;
    char *y;
    sdxl_dtype xt, yt;
    size_t n;
} cast_ctx;

static void cast_task(void *vc, size_t b0, size_t b1, int tid) {
    const cast_ctx *c = vc;
    size_t s = b0 * SDXL__EW_BLOCK, e = min_sz(b1 * SDXL__EW_BLOCK, c->n);
    size_t xs = sdxl_dtype_size(c->xt), ys = sdxl_dtype_size(c->yt);
    if (c->xt == c->yt)
        memcpy(c->y + s * ys, c->x + s * xs, (e - s) * xs);
    else
        sdxl_convert_n(c->x + s * xs, c->xt, c->y + s * ys, c->yt, e - s);
}

sdxl_status sdxl__cpu_cast(sdxl_backend *be, const sdxl_tensor *x, sdxl_tensor *y) {
    TRY(sdxl__ew_check(be, "cast", "x", x, SDXL__EW_ANY));
    TRY(sdxl__ew_check(be, "cast", "y", y, SDXL__EW_ANY));
    TRY(check_same_shape(be, "cast", "x", x, y));
    bool xi = x->dtype == SDXL_DTYPE_I32, yi = y->dtype == SDXL_DTYPE_I32;
    if (xi != yi)
        return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED,
                              "cast: %s -> %s: i32 casts only to i32", SDXL__EW_DESC(x),
                              SDXL__EW_DESC(y));
    if (x->data == y->data && x->dtype == y->dtype) return SDXL_STATUS_OK; /* in-place copy */
    TRY(check_no_overlap(be, "cast", "x", x, y));
    cast_ctx c = {x->data, y->data, x->dtype, y->dtype, (size_t)sdxl_tensor_nelem(x)};
    parallel_blocks(be, c.n, cast_task, &c);
    return SDXL_STATUS_OK;
}
