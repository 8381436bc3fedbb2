/* elementwise_math.h - the float kernels of the CPU back end's elementwise and
 * norm ops, written once in plain C (see elementwise_kernels.h for why).
 *
 * NOT an ordinary header: elementwise.c, elementwise_avx2.c and
 * elementwise_avx512.c each include it once, after defining
 *     SDXL_EW_TABLE  the name of the sdxl__ew_kernels table to define
 *     SDXL_EW_ISA    its sdxl_isa_level
 * and GCC vectorizes the loops for that file's ISA.
 *
 * Rules that keep the code vectorizable AND bit-identical across ISAs:
 *   - no libm calls (expf/erff are scalar calls GCC cannot vectorize): exp,
 *     sigmoid and erfc below are our own, from +, -, *, /, int<->float
 *     conversions, bit moves and selects, all exact or IEEE-rounded the same
 *     way at every vector width;
 *   - no a*b+c that the compiler could fuse (C11 mode: -ffp-contract=off).
 *     Fusing would make the AVX2/AVX-512 kernels ~1.45x faster in cache
 *     (measured: SiLU 0.81 -> 0.56 ns/element at AVX-512) but their results
 *     would then differ from the generic build's in the last bit;
 *   - no branches: a choice between two computed values is ew_sel, a bitwise
 *     blend, and clamps are unsigned min/max on the bit pattern. GCC turns a
 *     float `c ? a : b` whose arm is arithmetic or a constant into a branch
 *     (sinking or jump threading) and then, under -ftrapping-math (the
 *     default), will not vectorize the loop;
 *   - reductions keep explicit lanes (arrays or GCC vector types), so the
 *     summation order is written in the source, not chosen by the vectorizer.
 * Check after edits: gcc -fopt-info-vec-missed must not report "control flow
 * in loop" for this file.
 */
#ifndef SDXL_EW_TABLE
#error "define SDXL_EW_TABLE and SDXL_EW_ISA before including elementwise_math.h"
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/elementwise_kernels.h"

/* Lanes of softmax's explicit reductions (max in float, sum in double): 16 =
 * one AVX-512 float vector, enough independent chains to hide add latency. */
#define EW_LANES 16

static inline float ew_f32_from_bits(int32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline uint32_t ew_bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* c ? a : b, both already computed, as a bit blend (see the rules above). */
static inline float ew_sel(int c, float a, float b) {
    uint32_t m = 0u - (uint32_t)(c != 0);
    uint32_t u = (ew_bits_of(a) & m) | (ew_bits_of(b) & ~m);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* e^x for x <= 0. Positive x and +NaN are treated as 0, -NaN as -104: callers
 * pass x <= 0 and propagate NaN themselves (x·sigmoid(x) does by the multiply).
 * x = k·ln2 + r with k = round(x / ln2) in [-150, 0] and |r| <= ln2/2 (+ rounding).
 * ln2 is split Cody-Waite style into a 15-bit head (k·head is exact for |k| < 512)
 * and a tail, so r carries no cancellation error. e^r is its Taylor series to r^7:
 * truncation < 0.347^8 / 8! = 5.3e-9, under a tenth of an ulp; Horner rounding
 * keeps the total within ~2 ulp (checked against double exp in the tests).
 * 2^k = 2^(k/2) · 2^(k - k/2), each built in the exponent field, so results
 * below FLT_MIN underflow gradually (one rounding, in the last multiply) and
 * x < -104 rounds to 0 by itself.
 * The clamp to [-104, -0] is an unsigned min/max on the bit pattern (for sign-set
 * floats, a larger pattern is a more negative value): a float ternary here lets
 * GCC thread the constant arm into a branch, and then it will not vectorize. */
static inline float ew_expn(float x) {
    uint32_t u = ew_bits_of(x);
    u = u > 0x80000000u ? u : 0x80000000u; /* +anything -> -0 */
    u = u < 0xC2D00000u ? u : 0xC2D00000u; /* below -104 (and -NaN) -> -104 */
    float xc;
    memcpy(&xc, &u, sizeof xc);
    int32_t k = (int32_t)(xc * 1.44269504f - 0.5f); /* truncation of a value <= -0.5: round to nearest */
    float kf = (float)k;
    float r = (xc - kf * 0.693145751953125f) - kf * 1.428606765330187e-6f;
    float p = 1.0f / 40320.0f;
    p = p * r + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t k1 = k / 2, k2 = k - k1; /* both in [-75, 0] */
    return (p * ew_f32_from_bits((k1 + 127) << 23)) * ew_f32_from_bits((k2 + 127) << 23);
}

/* 1 / (1 + e^-x), through e = e^-|x| so the exponential never overflows and both
 * tails keep full relative precision (x < 0: e / (1 + e)). ~3 ulp. */
static inline float ew_sigmoid(float x) {
    float e = ew_expn(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return ew_sel(x >= 0.0f, r, e * r);
}

static inline float ew_silu(float x) { return x * ew_sigmoid(x); }

/* CLIP-L's activation: x·sigmoid(1.702·x). */
static inline float ew_quick_gelu(float x) { return x * ew_sigmoid(1.702f * x); }

/* torch's gelu(approximate="tanh") = 0.5·x·(1 + tanh(u)), u = √(2/π)(x + 0.044715x³).
 * 0.5(1 + tanh u) = sigmoid(2u) exactly, and sigmoid keeps its relative precision
 * for x << 0 where 1 + tanh u would cancel. */
static inline float ew_gelu_tanh(float x) {
    float u2 = 1.5957691216057308f * (x + 0.044715f * x * x * x); /* 2·√(2/π) */
    return x * ew_sigmoid(u2);
}

/* torch's exact gelu: 0.5·x·(1 + erf(x/√2)) = 0.5·x·(2 - erfc(a/√2)) for x >= 0 and
 * 0.5·x·erfc(a/√2) for x < 0, a = |x|. Only erfc is approximated, and in relative
 * terms, so the negative tail keeps its precision (torch's fp32 1 + erf(x) cancels
 * there: at x = -5 it is ~4% off the true value; we are within 1e-6).
 *
 * erfc(z) = e^{-z²} · t · h(t), t = 2 / (2 + z), z in [0, 9.9]. h(t) = erfc(z)e^{z²}/t
 * is smooth on t in [1/6, 1], from 1 at z = 0 down to 1/(2√π) as z grows; the
 * degree-10 polynomial below is its Chebyshev interpolant on [1/6, 1] (fitted with
 * mpmath at 40 digits): 2.2e-9 max relative error in exact arithmetic, 2.1e-7
 * evaluated in f32 with t rounded.
 * e^{-z²} = e^{-a²/2}: a² is split exactly into sq + sq_lo (Dekker), because the
 * rounding of a² alone would become a relative error of a²·2^-24 in the
 * exponential (1e-6 at a = 4). Total: within ~4e-7 relative of 1 + erf(x/√2) (tested
 * against double erf/erfc over a dense grid). */
static inline float ew_gelu_erf(float x) {
    /* a = min(|x|, 14) as an unsigned min on the bits (see ew_expn); NaN -> 14.
     * erfc(14/√2) ~ 1e-44: the tail beyond is 0 in f32 anyway. */
    uint32_t ub = ew_bits_of(x) & 0x7FFFFFFFu;
    ub = ub < 0x41600000u ? ub : 0x41600000u;
    float a;
    memcpy(&a, &ub, sizeof a);
    /* Veltkamp split a = ah + al into 12-bit halves: ah², ah·al, al² are exact. */
    float c = a * 4097.0f;
    float ah = c - (c - a);
    float al = a - ah;
    float sq = a * a;
    float sq_lo = ((ah * ah - sq) + 2.0f * ah * al) + al * al;
    /* e^{-a²/2} = e^{-sq/2} · e^{-sq_lo/2}, the second factor is 1 - sq_lo/2 to 2^-48. */
    float g = ew_expn(-0.5f * sq) * (1.0f - 0.5f * sq_lo);
    float t = 2.0f / (2.0f + a * 0.70710678f);
    float h = 0.032398652182938425f;
    h = h * t - 0.17162890148374205f;
    h = h * t + 0.33256866095727738f;
    h = h * t - 0.21899328478139351f;
    h = h * t - 0.086649442036131166f;
    h = h * t + 0.074567947390960022f;
    h = h * t + 0.039057517883666986f;
    h = h * t + 0.18979546880405755f;
    h = h * t + 0.24447910946745167f;
    h = h * t + 0.28231842769529234f;
    h = h * t + 0.28208584591177005f;
    float q = g * t * h; /* erfc(a/√2) */
    float phi2 = ew_sel(x >= 0.0f, 2.0f - q, q); /* 1 + erf(x/√2); NaN: q, and 0.5·x·q is NaN */
    return 0.5f * x * phi2;
}

/* ---- array kernels ----------------------------------------------------------- */
/* x [n] → y [n]; y == x allowed: GCC's runtime overlap check sends y <= x down
 * the vector path. */
#define EW_DEFINE_UNARY(name, f)                                                                   \
    static void name(const float *x, float *y, size_t n) {                                         \
        for (size_t i = 0; i < n; i++) y[i] = f(x[i]);                                             \
    }
EW_DEFINE_UNARY(ew_silu_n, ew_silu)
EW_DEFINE_UNARY(ew_gelu_erf_n, ew_gelu_erf)
EW_DEFINE_UNARY(ew_gelu_tanh_n, ew_gelu_tanh)
EW_DEFINE_UNARY(ew_quick_gelu_n, ew_quick_gelu)
#undef EW_DEFINE_UNARY

/* h, g [n] (the two halves of one GEGLU row) → y [n]. */
static void ew_geglu_n(const float *h, const float *g, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = h[i] * ew_gelu_erf(g[i]);
}

/* Mean and biased variance of x [n], as torch computes them, in double.
 * The sums are taken of d = x - x[0]: a pivot inside the data makes
 * E[d²] - E[d]² free of cancellation even when |mean| >> std (one pass instead of
 * two; x - x[0] in double is exact unless their exponents are far apart).
 * 16 lanes as GCC vector types (four 4-double vectors per sum): the plain-array
 * form of the same loop was only half vectorized by GCC's SLP at AVX-512. The
 * order of additions is still fixed by the source, the same at every ISA. */
typedef float ew_f4 __attribute__((vector_size(16)));
typedef double ew_d4 __attribute__((vector_size(32)));

static void ew_moments(const float *x, size_t n, double *mean, double *var) {
    const double p = (double)x[0];
    ew_d4 s[4] = {{0}}, q[4] = {{0}};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int v = 0; v < 4; v++) {
            ew_f4 a;
            memcpy(&a, x + i + 4 * v, sizeof a);
            ew_d4 d = __builtin_convertvector(a, ew_d4) - p;
            s[v] += d;
            q[v] += d * d;
        }
    double st = 0.0, qt = 0.0;
    for (; i < n; i++) {
        double d = (double)x[i] - p;
        st += d;
        qt += d * d;
    }
    for (int v = 0; v < 4; v++)
        for (int l = 0; l < 4; l++) {
            st += s[v][l];
            qt += q[v][l];
        }
    double m = st / (double)n;
    double v = qt / (double)n - m * m;
    *mean = p + m;
    *var = v > 0.0 ? v : 0.0; /* rounding can leave -tiny for a constant group */
}

/* One channel of a group norm: x, y [n]. The mean comes as mean_hi + mean_lo
 * (float head and tail of the double mean), and the op is (x - mean)·scale rather
 * than x·scale - mean·scale (torch's form): no cancellation when |mean| >> std. */
static void ew_norm_apply(const float *x, float *y, size_t n, float mean_hi, float mean_lo,
                          float scale, float shift, bool silu) {
    if (silu) {
        for (size_t i = 0; i < n; i++) {
            float v = ((x[i] - mean_hi) - mean_lo) * scale + shift;
            y[i] = ew_silu(v);
        }
    } else {
        for (size_t i = 0; i < n; i++) y[i] = ((x[i] - mean_hi) - mean_lo) * scale + shift;
    }
}

/* One layer-norm row: x, y, gamma, beta [n]; mean as in ew_norm_apply. */
static void ew_layer_norm_row(const float *x, float *y, size_t n, float mean_hi, float mean_lo,
                              float rstd, const float *gamma, const float *beta) {
    if (gamma && beta) {
        for (size_t i = 0; i < n; i++) y[i] = ((x[i] - mean_hi) - mean_lo) * rstd * gamma[i] + beta[i];
    } else if (gamma) {
        for (size_t i = 0; i < n; i++) y[i] = ((x[i] - mean_hi) - mean_lo) * rstd * gamma[i];
    } else if (beta) {
        for (size_t i = 0; i < n; i++) y[i] = ((x[i] - mean_hi) - mean_lo) * rstd + beta[i];
    } else {
        for (size_t i = 0; i < n; i++) y[i] = ((x[i] - mean_hi) - mean_lo) * rstd;
    }
}

/* One softmax row: x, y [n], n >= 1. exp(x - max) <= 1 never overflows; the sum is
 * kept in double lanes. A NaN anywhere makes the row NaN (through the sum), as in
 * torch; so does a row of -inf (-inf - -inf) or one holding +inf (inf - inf). */
static void ew_softmax_row(const float *x, float *y, size_t n) {
    float mx[EW_LANES];
    for (int l = 0; l < EW_LANES; l++) mx[l] = -INFINITY;
    size_t i = 0;
    for (; i + EW_LANES <= n; i += EW_LANES)
        for (int l = 0; l < EW_LANES; l++) mx[l] = x[i + l] > mx[l] ? x[i + l] : mx[l];
    float m = -INFINITY;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int l = 0; l < EW_LANES; l++) m = mx[l] > m ? mx[l] : m;

    double s[EW_LANES] = {0};
    for (i = 0; i + EW_LANES <= n; i += EW_LANES)
        for (int l = 0; l < EW_LANES; l++) {
            float d = x[i + l] - m;
            float e = ew_sel(d == d, ew_expn(d), d); /* NaN stays NaN (ew_expn maps it to 1 or 0) */
            y[i + l] = e;
            s[l] += (double)e;
        }
    double st = 0.0;
    for (; i < n; i++) {
        float d = x[i] - m;
        float e = ew_sel(d == d, ew_expn(d), d);
        y[i] = e;
        st += (double)e;
    }
    for (int l = 0; l < EW_LANES; l++) st += s[l];
    float inv = (float)(1.0 / st);
    for (i = 0; i < n; i++) y[i] *= inv;
}

const sdxl__ew_kernels SDXL_EW_TABLE = {
    .isa = SDXL_EW_ISA,
    .unary =
        {
            [SDXL_UNARY_SILU] = ew_silu_n,
            [SDXL_UNARY_GELU_ERF] = ew_gelu_erf_n,
            [SDXL_UNARY_GELU_TANH] = ew_gelu_tanh_n,
            [SDXL_UNARY_QUICK_GELU] = ew_quick_gelu_n,
        },
    .geglu = ew_geglu_n,
    .moments = ew_moments,
    .norm_apply = ew_norm_apply,
    .layer_norm_row = ew_layer_norm_row,
    .softmax_row = ew_softmax_row,
};
