/* norm.c - CPU group norm (+ fused SiLU) and layer norm (backend.h).
 *
 * Statistics: mean and biased variance, as torch, accumulated in double over a
 * pivot-shifted one-pass sum (elementwise_math.h, ew_moments). A 128×128×10
 * group is 163 840 values: a float running sum would lose ~3 digits there; in
 * double the error stays near 1e-12 relative. Normalization is
 * (x - mean)·(gamma·rstd) + beta with the mean carried as two floats, then SiLU
 * in the same pass when asked (the SDXL resnet pattern GroupNorm -> SiLU), so
 * the activation is read twice (stats, apply) and written once.
 *
 * Threading: group norm runs one (batch, group) per task - its values are
 * contiguous in NCHW (C/groups channels × H·W), 640 KB for SDXL's largest,
 * so the apply pass reads it back from L2. Layer norm runs blocks of rows.
 */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/elementwise_kernels.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        sdxl_status st_ = (expr);                                                                  \
        if (st_ != SDXL_STATUS_OK) return st_;                                                     \
    } while (0)

static const unsigned F32_ONLY = SDXL__EW_DTYPE_BIT(SDXL_DTYPE_F32);

/* gamma / beta: NULL, or [C] of any float dtype. */
static sdxl_status check_affine(sdxl_backend *be, const char *op, const char *name,
                                const sdxl_tensor *t, int64_t c, const sdxl_tensor *x) {
    if (!t) return SDXL_STATUS_OK;
    TRY(sdxl__ew_check(be, op, name, t, SDXL__EW_FLOATS));
    if (t->ndim != 1 || t->ne[0] != c)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: %s (%s) must be [%lld] for x (%s)",
                              op, name, SDXL__EW_DESC(t), (long long)c, SDXL__EW_DESC(x));
    return SDXL_STATUS_OK;
}

static sdxl_status check_eps(sdxl_backend *be, const char *op, float eps) {
    if (!(eps >= 0.0f) || isinf(eps))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: eps = %g must be finite and >= 0",
                              op, (double)eps);
    return SDXL_STATUS_OK;
}

static sdxl_status check_xy(sdxl_backend *be, const char *op, const sdxl_tensor *x,
                            const sdxl_tensor *y) {
    TRY(sdxl__ew_check(be, op, "x", x, F32_ONLY));
    TRY(sdxl__ew_check(be, op, "y", y, F32_ONLY));
    if (!sdxl_tensor_same_shape(x, y))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "%s: y (%s) must have the shape of x (%s)",
                              op, SDXL__EW_DESC(y), SDXL__EW_DESC(x));
    if (sdxl__ew_overlap(x, y) && x->data != y->data)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "%s: y (%s) overlaps x (%s) without being it", op, SDXL__EW_DESC(y),
                              SDXL__EW_DESC(x));
    return SDXL_STATUS_OK;
}

/* gamma and beta as f32 arrays [c] (NULL stays NULL). f16/bf16 are widened into
 * the back end's scratch, once per call. */
static sdxl_status widen_affine(sdxl_backend *be, const sdxl_tensor *gamma, const sdxl_tensor *beta,
                                size_t c, const float **g, const float **b) {
    *g = gamma ? gamma->data : NULL;
    *b = beta ? beta->data : NULL;
    bool wg = gamma && gamma->dtype != SDXL_DTYPE_F32, wb = beta && beta->dtype != SDXL_DTYPE_F32;
    if (!wg && !wb) return SDXL_STATUS_OK;
    float *s = sdxl__cpu_scratch(sdxl__cpu(be), 2 * c * sizeof(float));
    if (!s) return be->err.status;
    if (wg) {
        sdxl_convert_n(gamma->data, gamma->dtype, s, SDXL_DTYPE_F32, c);
        *g = s;
    }
    if (wb) {
        sdxl_convert_n(beta->data, beta->dtype, s + c, SDXL_DTYPE_F32, c);
        *b = s + c;
    }
    return SDXL_STATUS_OK;
}

/* The double mean as a float head and the float of what the head misses. */
static void split_mean(double mean, float *hi, float *lo) {
    *hi = (float)mean;
    *lo = (float)(mean - (double)*hi);
}

/* ---- group norm --------------------------------------------------------------------- */

typedef struct {
    const sdxl__ew_kernels *k;
    const float *x; /* [B, C, S] (S = product of the spatial dims) */
    float *y;       /* [B, C, S] */
    const float *gamma, *beta; /* [C] f32 or NULL */
    size_t c, s, groups, cpg;  /* cpg = C / groups */
    double eps;
    bool silu;
} group_norm_ctx;

static void group_norm_task(void *vc, size_t t0, size_t t1, int tid) {
    const group_norm_ctx *c = vc;
    for (size_t t = t0; t < t1; t++) { /* t = batch · groups + group */
        size_t g = t % c->groups;
        size_t off = t * c->cpg * c->s; /* (b·C + g·cpg)·S */
        double mean, var;
        c->k->moments(c->x + off, c->cpg * c->s, &mean, &var);
        double rstd = 1.0 / sqrt(var + c->eps);
        float m_hi, m_lo;
        split_mean(mean, &m_hi, &m_lo);
        for (size_t j = 0; j < c->cpg; j++) {
            size_t ch = g * c->cpg + j;
            float scale = (float)(rstd * (c->gamma ? (double)c->gamma[ch] : 1.0));
            float shift = c->beta ? c->beta[ch] : 0.0f;
            size_t o = off + j * c->s;
            c->k->norm_apply(c->x + o, c->y + o, c->s, m_hi, m_lo, scale, shift, c->silu);
        }
    }
}

sdxl_status sdxl__cpu_group_norm(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *gamma,
                                 const sdxl_tensor *beta, int groups, float eps, bool silu,
                                 sdxl_tensor *y) {
    TRY(check_xy(be, "group_norm", x, y));
    if (x->ndim < 2)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "group_norm: x (%s) must be [B, C, ...] (at least 2 dims)",
                              SDXL__EW_DESC(x));
    int64_t ch = x->ne[1];
    if (groups < 1 || ch % groups != 0)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "group_norm: C=%lld not divisible by groups=%d (x %s)", (long long)ch,
                              groups, SDXL__EW_DESC(x));
    TRY(check_affine(be, "group_norm", "gamma", gamma, ch, x));
    TRY(check_affine(be, "group_norm", "beta", beta, ch, x));
    TRY(check_eps(be, "group_norm", eps));

    group_norm_ctx c = {.k = sdxl__ew_kernels_get(), .x = x->data, .y = y->data,
                        .c = (size_t)ch, .s = (size_t)sdxl_tensor_inner(x, 2),
                        .groups = (size_t)groups, .cpg = (size_t)(ch / groups), .eps = eps,
                        .silu = silu};
    size_t tasks = (size_t)x->ne[0] * c.groups, group_elems = c.cpg * c.s;
    if (!tasks || !group_elems) return SDXL_STATUS_OK;
    TRY(widen_affine(be, gamma, beta, c.c, &c.gamma, &c.beta));
    /* Small groups (CLIP-sized or tests) are batched so a task holds ~a block. */
    size_t grain = (SDXL__EW_BLOCK + group_elems - 1) / group_elems;
    if (grain >= tasks)
        group_norm_task(&c, 0, tasks, 0);
    else
        sdxl_threadpool_parallel_for(sdxl__cpu(be)->pool, tasks, grain, group_norm_task, &c);
    return SDXL_STATUS_OK;
}

/* ---- layer norm ---------------------------------------------------------------------- */

typedef struct {
    const sdxl__ew_kernels *k;
    const float *x; /* [rows, C] */
    float *y;       /* [rows, C] */
    const float *gamma, *beta; /* [C] f32 or NULL */
    size_t c;
    double eps;
} layer_norm_ctx;

static void layer_norm_task(void *vc, size_t r0, size_t r1, int tid) {
    const layer_norm_ctx *c = vc;
    for (size_t r = r0; r < r1; r++) {
        const float *x = c->x + r * c->c;
        double mean, var;
        c->k->moments(x, c->c, &mean, &var);
        float m_hi, m_lo;
        split_mean(mean, &m_hi, &m_lo);
        float rstd = (float)(1.0 / sqrt(var + c->eps));
        c->k->layer_norm_row(x, c->y + r * c->c, c->c, m_hi, m_lo, rstd, c->gamma, c->beta);
    }
}

sdxl_status sdxl__cpu_layer_norm(sdxl_backend *be, const sdxl_tensor *x, const sdxl_tensor *gamma,
                                 const sdxl_tensor *beta, float eps, sdxl_tensor *y) {
    TRY(check_xy(be, "layer_norm", x, y));
    if (x->ndim < 1)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "layer_norm: x (%s) needs at least one dim", SDXL__EW_DESC(x));
    int64_t ch = x->ne[x->ndim - 1];
    TRY(check_affine(be, "layer_norm", "gamma", gamma, ch, x));
    TRY(check_affine(be, "layer_norm", "beta", beta, ch, x));
    TRY(check_eps(be, "layer_norm", eps));
    if (ch == 0 || sdxl_tensor_nelem(x) == 0) return SDXL_STATUS_OK;

    layer_norm_ctx c = {.k = sdxl__ew_kernels_get(), .x = x->data, .y = y->data,
                        .c = (size_t)ch, .eps = eps};
    TRY(widen_affine(be, gamma, beta, c.c, &c.gamma, &c.beta));
    size_t rows = (size_t)(sdxl_tensor_nelem(x) / ch);
    size_t grain = (SDXL__EW_BLOCK + c.c - 1) / c.c;
    if (grain >= rows)
        layer_norm_task(&c, 0, rows, 0);
    else
        sdxl_threadpool_parallel_for(sdxl__cpu(be)->pool, rows, grain, layer_norm_task, &c);
    return SDXL_STATUS_OK;
}
