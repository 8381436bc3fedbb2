/* dtype conversions: every 16-bit pattern exhaustively against an oracle
 * computed independently (ldexp in double from the bit fields), rounding
 * checked as a property (the result is the nearest value, ties to even),
 * every bulk variant against the scalar code bit for bit, and, where the CPU
 * has them, the hardware conversion instructions as a second oracle. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TEST_X86 1
#endif

#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "test.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- oracles: values from the fields, in double -------------------------- */

static double f16_value(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 0x1F, m = h & 0x3FF;
    double v;
    if (e == 31) v = m ? NAN : INFINITY;
    else if (e == 0) v = ldexp(m, -24);
    else v = ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static double bf16_value(uint16_t h) {
    int s = h >> 15, e = (h >> 7) & 0xFF, m = h & 0x7F;
    double v;
    if (e == 255) v = m ? NAN : INFINITY;
    else if (e == 0) v = ldexp(m, -133);
    else v = ldexp(128 + m, e - 134);
    return s ? -v : v;
}

static bool f16_is_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }
static bool bf16_is_nan(uint16_t h) { return (h & 0x7F80) == 0x7F80 && (h & 0x7F); }
static bool f32_is_nan(uint32_t u) { return (u & 0x7FFFFFFF) > 0x7F800000; }

/* The documented NaN rules (dtype.h). */
static uint16_t f16_nan_rule(uint32_t u) { return (uint16_t)(((u >> 16) & 0x8000) | 0x7E00 | ((u >> 13) & 0x3FF)); }
static uint16_t bf16_nan_rule(uint32_t u) { return (uint16_t)((u >> 16) | 0x0040); }

/* A random f32 pattern, weighted towards the places where conversions go
 * wrong: f16 range, exact and near midpoints, tie bits for bf16, specials. */
static uint32_t interesting_f32(uint64_t *s) {
    uint64_t r = rng_next(s);
    uint32_t lo = (uint32_t)r, sign = (uint32_t)(r >> 63) << 31;
    switch ((r >> 40) & 7) {
    case 0:
    case 1: return lo; /* anything */
    case 2: { /* exponents around the f16 range, subnormals included */
        uint32_t e = 95 + (uint32_t)((r >> 32) % 56);
        return sign | e << 23 | (lo & 0x7FFFFF);
    }
    case 3: { /* an f16 midpoint, or one f32 ulp either side */
        uint16_t h = (uint16_t)(lo % 0x7BFF);
        float mid = (float)((f16_value(h) + f16_value((uint16_t)(h + 1))) / 2);
        uint32_t u = bits_of(mid) + (uint32_t)((r >> 32) % 3) - 1;
        return sign | (u & 0x7FFFFFFF);
    }
    case 4: { /* bf16 ties and near-ties */
        static const uint32_t low[] = {0x8000, 0x7FFF, 0x8001, 0x0000, 0xFFFF};
        return (lo & 0xFFFF0000u) | low[(r >> 32) % 5];
    }
    case 5: /* NaN with a random payload */
        return sign | 0x7F800000 | ((lo & 0x7FFFFF) ? (lo & 0x7FFFFF) : 1);
    case 6: /* f32 subnormals and zeros */
        return sign | (lo & ((r >> 33) & 1 ? 0x7FFFFF : 0xFF));
    default: { /* around the overflow thresholds */
        static const uint32_t base[] = {0x477FF000, 0x477FE000, 0x7F7F8000, 0x7F7FFFFF, 0x7F800000};
        return sign | (base[(r >> 32) % 5] + (uint32_t)((r >> 36) % 5) - 2);
    }
    }
}

/* ---- f16 ----------------------------------------------------------------- */

TEST(dtype_size_and_name) {
    CHECK_EQ_INT(sdxl_dtype_size(SDXL_DTYPE_F32), 4);
    CHECK_EQ_INT(sdxl_dtype_size(SDXL_DTYPE_F16), 2);
    CHECK_EQ_INT(sdxl_dtype_size(SDXL_DTYPE_BF16), 2);
    CHECK_EQ_INT(sdxl_dtype_size(SDXL_DTYPE_I32), 4);
    CHECK_EQ_INT(sdxl_dtype_size(SDXL_DTYPE_COUNT_), 0);
    CHECK_EQ_INT(sdxl_dtype_size((sdxl_dtype)-1), 0);
    CHECK(strcmp(sdxl_dtype_name(SDXL_DTYPE_F32), "f32") == 0);
    CHECK(strcmp(sdxl_dtype_name(SDXL_DTYPE_F16), "f16") == 0);
    CHECK(strcmp(sdxl_dtype_name(SDXL_DTYPE_BF16), "bf16") == 0);
    CHECK(strcmp(sdxl_dtype_name(SDXL_DTYPE_I32), "i32") == 0);
    CHECK(strcmp(sdxl_dtype_name(SDXL_DTYPE_COUNT_), "?") == 0);
    CHECK(strcmp(sdxl_dtype_name((sdxl_dtype)77), "?") == 0);
}

TEST(f16_to_f32_every_pattern_matches_oracle) {
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = sdxl_f16_to_f32(h);
        double want = f16_value(h);
        if (f16_is_nan(h)) {
            /* NaN: sign kept, payload moved up, quiet bit set */
            uint32_t want_bits = (uint32_t)(h & 0x8000) << 16 | 0x7FC00000 | (uint32_t)(h & 0x3FF) << 13;
            CHECK_MSG(isnan(f) && bits_of(f) == want_bits, "f16 %04x -> %08x, want %08x", h, bits_of(f),
                      want_bits);
        } else {
            CHECK_MSG((double)f == want && !signbit(f) == !(h & 0x8000), "f16 %04x -> %.9g, want %.9g", h,
                      (double)f, want);
        }
    }
}

TEST(f16_round_trip_every_pattern) {
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        uint16_t back = sdxl_f32_to_f16(sdxl_f16_to_f32(h));
        uint16_t want = f16_is_nan(h) ? (uint16_t)(h | 0x0200) : h; /* a signalling NaN comes back quiet */
        CHECK_MSG(back == want, "f16 %04x -> f32 -> %04x", h, back);
    }
}

TEST(f32_to_f16_midpoints_tie_to_even) {
    /* Every pair of adjacent finite f16 values, both signs: the midpoint is
     * exact in f32 (12 significant bits) and must go to the even one; one
     * f32 ulp either side must go to the nearer one. */
    for (uint16_t h = 0; h < 0x7BFF; h++) {
        for (int neg = 0; neg < 2; neg++) {
            uint16_t s = neg ? 0x8000 : 0, lo = (uint16_t)(s | h), hi = (uint16_t)(s | (h + 1));
            float mid = (float)((f16_value(lo) + f16_value(hi)) / 2);
            CHECK((double)mid == (f16_value(lo) + f16_value(hi)) / 2);
            uint16_t even = (h & 1) ? hi : lo;
            float toward0 = float_of(bits_of(mid) - 1), away = float_of(bits_of(mid) + 1);
            uint16_t r = sdxl_f32_to_f16(mid), r0 = sdxl_f32_to_f16(toward0), r1 = sdxl_f32_to_f16(away);
            CHECK_MSG(r == even, "mid of %04x,%04x -> %04x", lo, hi, r);
            CHECK_MSG(r0 == lo, "below mid of %04x,%04x -> %04x", lo, hi, r0);
            CHECK_MSG(r1 == hi, "above mid of %04x,%04x -> %04x", lo, hi, r1);
        }
    }
}

TEST(f32_to_f16_edges) {
    CHECK_EQ_INT(sdxl_f32_to_f16(65504.0f), 0x7BFF);
    CHECK_EQ_INT(sdxl_f32_to_f16(65519.996f), 0x7BFF); /* just below the threshold */
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0x477FEFFF)), 0x7BFF);
    CHECK_EQ_INT(sdxl_f32_to_f16(65520.0f), 0x7C00); /* ties to even = Inf */
    CHECK_EQ_INT(sdxl_f32_to_f16(-65520.0f), 0xFC00);
    CHECK_EQ_INT(sdxl_f32_to_f16(1e10f), 0x7C00);
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0x7F7FFFFF)), 0x7C00); /* FLT_MAX */
    CHECK_EQ_INT(sdxl_f32_to_f16(INFINITY), 0x7C00);
    CHECK_EQ_INT(sdxl_f32_to_f16(-INFINITY), 0xFC00);
    CHECK_EQ_INT(sdxl_f32_to_f16(0.0f), 0x0000);
    CHECK_EQ_INT(sdxl_f32_to_f16(-0.0f), 0x8000);
    CHECK_EQ_INT(sdxl_f32_to_f16(-1e-30f), 0x8000);
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0x00000001)), 0x0000); /* f32 subnormals */
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0x807FFFFF)), 0x8000);
    CHECK_EQ_INT(sdxl_f32_to_f16(ldexpf(1, -24)), 0x0001);        /* smallest subnormal */
    CHECK_EQ_INT(sdxl_f32_to_f16(ldexpf(1, -25)), 0x0000);        /* tie with 0: even */
    CHECK_EQ_INT(sdxl_f32_to_f16(nextafterf(ldexpf(1, -25), 1)), 0x0001);
    CHECK_EQ_INT(sdxl_f32_to_f16(ldexpf(3, -25)), 0x0002);        /* tie 1|2: even */
    CHECK_EQ_INT(sdxl_f32_to_f16(ldexpf(5, -25)), 0x0002);        /* tie 2|3: even */
    CHECK_EQ_INT(sdxl_f32_to_f16(ldexpf(1023, -24)), 0x03FF);     /* largest subnormal */
    CHECK_EQ_INT(sdxl_f32_to_f16(ldexpf(2047, -25)), 0x0400);     /* tie 3FF|400: even = normal */
    CHECK_EQ_INT(sdxl_f32_to_f16(ldexpf(1, -14)), 0x0400);
    CHECK_EQ_INT(sdxl_f32_to_f16(1.0f), 0x3C00);
    CHECK_EQ_INT(sdxl_f32_to_f16(-2.0f), 0xC000);
    CHECK_EQ_INT(sdxl_f32_to_f16(0.1f), 0x2E66);
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0x3F801000)), 0x3C00); /* 1 + 2^-11: tie, even */
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0x3F803000)), 0x3C02); /* 1 + 3*2^-11: tie, even */
}

TEST(f32_to_f16_nan_rule) {
    CHECK_EQ_INT(sdxl_f32_to_f16(NAN), 0x7E00);
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0xFFC00000)), 0xFE00);
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0x7F800001)), 0x7E00); /* payload only in low bits: still NaN */
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0x7FA00000)), 0x7F00); /* sNaN: quieted, payload kept */
    CHECK_EQ_INT(sdxl_f32_to_f16(float_of(0xFFFFFFFF)), 0xFFFF);
    uint64_t s = 11;
    for (int i = 0; i < 20000; i++) {
        uint32_t u = (uint32_t)rng_next(&s) | 0x7F800000;
        if (!f32_is_nan(u)) continue;
        uint16_t h = sdxl_f32_to_f16(float_of(u));
        CHECK_MSG(h == f16_nan_rule(u) && f16_is_nan(h), "NaN %08x -> %04x", u, h);
    }
}

/* h must be the f16 nearest to x (ties to even), or Inf beyond 65520. */
static bool f16_is_nearest(float x, uint16_t h) {
    double v = (double)x;
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    if (fabs(v) >= 65520.0) return h == (sign | 0x7C00);
    if ((h & 0x8000) != sign || (h & 0x7FFF) > 0x7BFF) return false;
    double d = fabs(v - f16_value(h));
    uint16_t m = h & 0x7FFF;
    for (int k = -1; k <= 1; k += 2) {
        if ((k < 0 && m == 0) || (k > 0 && m == 0x7BFF)) continue;
        double dn = fabs(v - f16_value((uint16_t)(sign | (m + k))));
        if (dn < d || (dn == d && (h & 1))) return false;
    }
    return true;
}

TEST(f32_to_f16_random_is_nearest) {
    uint64_t s = 1;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = interesting_f32(&s);
        if (f32_is_nan(u)) continue;
        uint16_t h = sdxl_f32_to_f16(float_of(u));
        CHECK_MSG(f16_is_nearest(float_of(u), h), "f32 %08x (%.9g) -> f16 %04x", u, (double)float_of(u), h);
    }
}

/* ---- bf16 ---------------------------------------------------------------- */

TEST(bf16_to_f32_every_pattern_matches_oracle) {
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = sdxl_bf16_to_f32(h);
        if (bf16_is_nan(h)) {
            CHECK_MSG(isnan(f) && bits_of(f) == (uint32_t)h << 16, "bf16 %04x -> %08x", h, bits_of(f));
        } else {
            double want = bf16_value(h);
            CHECK_MSG((double)f == want && !signbit(f) == !(h & 0x8000), "bf16 %04x -> %.9g, want %.9g", h,
                      (double)f, want);
        }
    }
}

TEST(bf16_round_trip_every_pattern) {
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        uint16_t back = sdxl_f32_to_bf16(sdxl_bf16_to_f32(h));
        uint16_t want = bf16_is_nan(h) ? (uint16_t)(h | 0x0040) : h;
        CHECK_MSG(back == want, "bf16 %04x -> f32 -> %04x", h, back);
    }
}

TEST(f32_to_bf16_midpoints_tie_to_even) {
    for (uint16_t h = 0; h < 0x7F7F; h++) {
        for (int neg = 0; neg < 2; neg++) {
            uint16_t s = neg ? 0x8000 : 0, lo = (uint16_t)(s | h), hi = (uint16_t)(s | (h + 1));
            double exact = (bf16_value(lo) + bf16_value(hi)) / 2;
            float mid = (float)exact;
            CHECK(bits_of(mid) == ((uint32_t)lo << 16 | 0x8000)); /* the tie pattern, independently */
            uint16_t even = (h & 1) ? hi : lo;
            uint16_t r = sdxl_f32_to_bf16(mid);
            uint16_t r0 = sdxl_f32_to_bf16(float_of(bits_of(mid) - 1));
            uint16_t r1 = sdxl_f32_to_bf16(float_of(bits_of(mid) + 1));
            CHECK_MSG(r == even, "mid of %04x,%04x -> %04x", lo, hi, r);
            CHECK_MSG(r0 == lo, "below mid of %04x,%04x -> %04x", lo, hi, r0);
            CHECK_MSG(r1 == hi, "above mid of %04x,%04x -> %04x", lo, hi, r1);
        }
    }
}

TEST(f32_to_bf16_edges_and_nan_rule) {
    CHECK_EQ_INT(sdxl_f32_to_bf16(1.0f), 0x3F80);
    CHECK_EQ_INT(sdxl_f32_to_bf16(-0.0f), 0x8000);
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x7F7F7FFF)), 0x7F7F); /* below the threshold: max */
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x7F7F8000)), 0x7F80); /* max + half ulp: tie to even = Inf */
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0xFF7FFFFF)), 0xFF80); /* -FLT_MAX */
    CHECK_EQ_INT(sdxl_f32_to_bf16(INFINITY), 0x7F80);
    CHECK_EQ_INT(sdxl_f32_to_bf16(-INFINITY), 0xFF80);
    /* f32 subnormals stay subnormal in bf16, rounded, never flushed */
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x00010000)), 0x0001);
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x00008000)), 0x0000); /* tie with 0 */
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x00008001)), 0x0001);
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x807F8000)), 0x8080); /* tie, carries into the exponent */
    /* NaN: (bits >> 16) | 0x0040. The rounding add would carry 0x7FFFFFFF
     * into 0x8000 and 0x7F80xxxx payloads into Inf without the NaN branch. */
    CHECK_EQ_INT(sdxl_f32_to_bf16(NAN), 0x7FC0);
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x7F800001)), 0x7FC0);
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0xFF800001)), 0xFFC0);
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x7FFFFFFF)), 0x7FFF);
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x7FA0FFFF)), 0x7FE0);
    uint64_t s = 12;
    for (int i = 0; i < 20000; i++) {
        uint32_t u = (uint32_t)rng_next(&s) | 0x7F800000;
        if (!f32_is_nan(u)) continue;
        uint16_t h = sdxl_f32_to_bf16(float_of(u));
        CHECK_MSG(h == bf16_nan_rule(u) && bf16_is_nan(h), "NaN %08x -> %04x", u, h);
    }
}

static bool bf16_is_nearest(float x, uint16_t h) {
    double v = (double)x;
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    if ((bits_of(x) & 0x7FFFFFFF) >= 0x7F7F8000) return h == (sign | 0x7F80);
    if ((h & 0x8000) != sign || (h & 0x7FFF) > 0x7F7F) return false;
    double d = fabs(v - bf16_value(h));
    uint16_t m = h & 0x7FFF;
    for (int k = -1; k <= 1; k += 2) {
        if ((k < 0 && m == 0) || (k > 0 && m == 0x7F7F)) continue;
        double dn = fabs(v - bf16_value((uint16_t)(sign | (m + k))));
        if (dn < d || (dn == d && (h & 1))) return false;
    }
    return true;
}

TEST(f32_to_bf16_random_is_nearest) {
    uint64_t s = 2;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = interesting_f32(&s);
        if (f32_is_nan(u)) continue;
        uint16_t h = sdxl_f32_to_bf16(float_of(u));
        CHECK_MSG(bf16_is_nearest(float_of(u), h), "f32 %08x (%.9g) -> bf16 %04x", u, (double)float_of(u), h);
    }
}

/* ---- bulk variants ------------------------------------------------------- */

/* Runs `body` once per ISA level this CPU has, with the dispatch capped to
 * it; returns how many levels ran. */
#define FOR_EACH_LEVEL(lvl, body)                                                                  \
    do {                                                                                           \
        sdxl_isa_level saved_cap_ = sdxl_cpu_max_isa();                                            \
        for (int lvl_i_ = SDXL_ISA_GENERIC; lvl_i_ <= SDXL_ISA_AVX512; lvl_i_++) {                 \
            sdxl_isa_level lvl = (sdxl_isa_level)lvl_i_;                                           \
            sdxl_cpu_set_max_isa(lvl);                                                             \
            if (sdxl_cpu_isa() != lvl) continue; /* the CPU lacks it */                            \
            body;                                                                                  \
        }                                                                                          \
        sdxl_cpu_set_max_isa(saved_cap_);                                                          \
    } while (0)

#define N_RANDOM 300000

TEST(bulk_variants_match_scalar_bit_for_bit) {
    uint16_t *all16 = sdxl_malloc(65536 * 2), *out16 = sdxl_malloc((N_RANDOM + 64) * 2);
    float *f32 = sdxl_malloc((N_RANDOM + 64) * 4), *outf = sdxl_malloc((N_RANDOM + 64) * 4);
    REQUIRE(all16 && out16 && f32 && outf);
    for (uint32_t i = 0; i < 65536; i++) all16[i] = (uint16_t)i;
    uint64_t s = 3;
    for (int i = 0; i < N_RANDOM + 64; i++) f32[i] = float_of(interesting_f32(&s));
    int levels = 0;
    FOR_EACH_LEVEL(lvl, {
        levels++;
        const char *name = sdxl_isa_name(lvl);
        /* every 16-bit pattern, widened */
        sdxl_f16_to_f32_n(all16, outf, 65536);
        int bad = 0;
        for (uint32_t i = 0; i < 65536; i++) bad += bits_of(outf[i]) != bits_of(sdxl_f16_to_f32((uint16_t)i));
        CHECK_MSG(bad == 0, "%s f16->f32: %d of 65536 differ", name, bad);
        sdxl_bf16_to_f32_n(all16, outf, 65536);
        bad = 0;
        for (uint32_t i = 0; i < 65536; i++) bad += bits_of(outf[i]) != bits_of(sdxl_bf16_to_f32((uint16_t)i));
        CHECK_MSG(bad == 0, "%s bf16->f32: %d of 65536 differ", name, bad);
        /* random f32, narrowed */
        sdxl_f32_to_f16_n(f32, out16, N_RANDOM);
        bad = 0;
        for (int i = 0; i < N_RANDOM; i++) bad += out16[i] != sdxl_f32_to_f16(f32[i]);
        CHECK_MSG(bad == 0, "%s f32->f16: %d of %d differ", name, bad, N_RANDOM);
        sdxl_f32_to_bf16_n(f32, out16, N_RANDOM);
        bad = 0;
        for (int i = 0; i < N_RANDOM; i++) bad += out16[i] != sdxl_f32_to_bf16(f32[i]);
        CHECK_MSG(bad == 0, "%s f32->bf16: %d of %d differ", name, bad, N_RANDOM);

        /* every length 0..80 at misaligned starts: tails right, nothing
         * written past the end */
        for (size_t off = 0; off < 3; off++) {
            for (size_t n = 0; n <= 80; n++) {
                const float *src = f32 + 1000 * off + off; /* NaNs and ties are in there too */
                memset(out16, 0xA5, (n + 40) * 2);
                sdxl_f32_to_f16_n(src, out16 + off, n);
                for (size_t i = 0; i < n; i++) CHECK(out16[off + i] == sdxl_f32_to_f16(src[i]));
                for (size_t i = n; i < n + 32; i++) CHECK_MSG(out16[off + i] == 0xA5A5, "%s f16 n=%zu wrote past", name, n);
                memset(out16, 0xA5, (n + 40) * 2);
                sdxl_f32_to_bf16_n(src, out16 + off, n);
                for (size_t i = 0; i < n; i++) CHECK(out16[off + i] == sdxl_f32_to_bf16(src[i]));
                for (size_t i = n; i < n + 32; i++) CHECK_MSG(out16[off + i] == 0xA5A5, "%s bf16 n=%zu wrote past", name, n);
                const uint16_t *h = all16 + 0x7BE0 + 977 * off + off; /* reaches Inf/NaN patterns */
                memset(outf, 0xA5, (n + 40) * 4);
                sdxl_f16_to_f32_n(h, outf + off, n);
                for (size_t i = 0; i < n; i++) CHECK(bits_of(outf[off + i]) == bits_of(sdxl_f16_to_f32(h[i])));
                for (size_t i = n; i < n + 32; i++) CHECK(bits_of(outf[off + i]) == 0xA5A5A5A5);
                memset(outf, 0xA5, (n + 40) * 4);
                sdxl_bf16_to_f32_n(h, outf + off, n);
                for (size_t i = 0; i < n; i++) CHECK(bits_of(outf[off + i]) == bits_of(sdxl_bf16_to_f32(h[i])));
                for (size_t i = n; i < n + 32; i++) CHECK(bits_of(outf[off + i]) == 0xA5A5A5A5);
            }
        }
    });
    CHECK(levels >= 1);
    printf("    bulk variants checked at %d ISA level(s), detected %s\n", levels,
           sdxl_isa_name(sdxl_cpu_isa()));
    sdxl_free(all16);
    sdxl_free(out16);
    sdxl_free(f32);
    sdxl_free(outf);
}

#ifdef TEST_X86
TEST(bulk_ignores_fp_environment) {
    /* Another library in the process may set FTZ/DAZ or a rounding mode
     * (fast-math builds do). The conversions must not change with it. */
    enum { N = 4099 };
    float *src = sdxl_malloc(N * 4), *outf = sdxl_malloc(N * 4);
    uint16_t *o16 = sdxl_malloc(N * 2), *h = sdxl_malloc(N * 2);
    REQUIRE(src && outf && o16 && h);
    uint64_t s = 4;
    for (int i = 0; i < N; i++) {
        /* f16 subnormal range, f32 subnormals, ties */
        uint32_t u = interesting_f32(&s);
        if (i % 3 == 0) u = (u & 0x80000000u) | ((100u + (uint32_t)(i % 14)) << 23) | (u & 0x7FFFFF);
        src[i] = float_of(u);
        h[i] = (uint16_t)(i % 2 ? (i & 0x83FF) : rng_next(&s)); /* many f16 subnormals */
    }
    unsigned csr = _mm_getcsr();
    FOR_EACH_LEVEL(lvl, {
        for (int mode = 0; mode < 4; mode++) {
            _mm_setcsr((csr & ~0x6000u) | 0x8040u | ((unsigned)mode << 13)); /* FTZ, DAZ, RC */
            sdxl_f32_to_f16_n(src, o16, N);
            sdxl_f16_to_f32_n(h, outf, N);
            _mm_setcsr(csr);
            int bad = 0;
            for (int i = 0; i < N; i++) bad += o16[i] != sdxl_f32_to_f16(src[i]);
            for (int i = 0; i < N; i++) bad += bits_of(outf[i]) != bits_of(sdxl_f16_to_f32(h[i]));
            CHECK_MSG(bad == 0, "%s, MXCSR RC=%d FTZ DAZ: %d differ", sdxl_isa_name(lvl), mode, bad);
            _mm_setcsr((csr & ~0x6000u) | 0x8040u | ((unsigned)mode << 13));
            sdxl_f32_to_bf16_n(src, o16, N);
            _mm_setcsr(csr);
            bad = 0;
            for (int i = 0; i < N; i++) bad += o16[i] != sdxl_f32_to_bf16(src[i]);
            CHECK_MSG(bad == 0, "%s bf16, MXCSR RC=%d FTZ DAZ: %d differ", sdxl_isa_name(lvl), mode, bad);
        }
    });
    _mm_setcsr(csr);
    sdxl_free(src);
    sdxl_free(outf);
    sdxl_free(o16);
    sdxl_free(h);
}
#endif

TEST(convert_n_every_pair) {
    uint16_t *all = sdxl_malloc(65536 * 2), *o16 = sdxl_malloc(65536 * 2);
    float *f = sdxl_malloc(65536 * 4);
    REQUIRE(all && o16 && f);
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    FOR_EACH_LEVEL(lvl, {
        const char *name = sdxl_isa_name(lvl);
        int bad = 0;
        /* f16 -> bf16 and back: one rounding of the exact value, i.e. the
         * scalar composition through f32 (widening is exact) */
        CHECK(sdxl_convert_n(all, SDXL_DTYPE_F16, o16, SDXL_DTYPE_BF16, 65536) == 0);
        for (uint32_t i = 0; i < 65536; i++)
            bad += o16[i] != sdxl_f32_to_bf16(sdxl_f16_to_f32((uint16_t)i));
        CHECK(sdxl_convert_n(all, SDXL_DTYPE_BF16, o16, SDXL_DTYPE_F16, 65536) == 0);
        for (uint32_t i = 0; i < 65536; i++)
            bad += o16[i] != sdxl_f32_to_f16(sdxl_bf16_to_f32((uint16_t)i));
        CHECK(sdxl_convert_n(all, SDXL_DTYPE_F16, f, SDXL_DTYPE_F32, 65536) == 0);
        for (uint32_t i = 0; i < 65536; i++) bad += bits_of(f[i]) != bits_of(sdxl_f16_to_f32((uint16_t)i));
        CHECK(sdxl_convert_n(f, SDXL_DTYPE_F32, o16, SDXL_DTYPE_F16, 65536) == 0);
        for (uint32_t i = 0; i < 65536; i++) bad += o16[i] != (f16_is_nan((uint16_t)i) ? (i | 0x200) : i);
        CHECK(sdxl_convert_n(all, SDXL_DTYPE_BF16, f, SDXL_DTYPE_F32, 65536) == 0);
        for (uint32_t i = 0; i < 65536; i++) bad += bits_of(f[i]) != i << 16;
        CHECK(sdxl_convert_n(f, SDXL_DTYPE_F32, o16, SDXL_DTYPE_BF16, 65536) == 0);
        for (uint32_t i = 0; i < 65536; i++) bad += o16[i] != (bf16_is_nan((uint16_t)i) ? (i | 0x40) : i);
        CHECK_MSG(bad == 0, "%s: %d conversions differ", name, bad);
    });
    /* a value bf16 keeps but f16 cannot: 1e5 overflows f16 */
    uint16_t b = sdxl_f32_to_bf16(1e5f), r;
    CHECK(sdxl_convert_n(&b, SDXL_DTYPE_BF16, &r, SDXL_DTYPE_F16, 1) == 0 && r == 0x7C00);
    /* same dtype: a copy, bits and all */
    CHECK(sdxl_convert_n(all, SDXL_DTYPE_F16, o16, SDXL_DTYPE_F16, 65536) == 0);
    CHECK(memcmp(all, o16, 65536 * 2) == 0);
    float a4[4] = {1, NAN, -0.0f, 3}, b4[4] = {0};
    CHECK(sdxl_convert_n(a4, SDXL_DTYPE_F32, b4, SDXL_DTYPE_F32, 4) == 0);
    CHECK(memcmp(a4, b4, sizeof a4) == 0);
    /* non-float dtypes refused, nothing written */
    int32_t iv[2] = {1, 2}, io[2] = {7, 7};
    CHECK(sdxl_convert_n(iv, SDXL_DTYPE_I32, io, SDXL_DTYPE_I32, 2) == -1);
    CHECK(sdxl_convert_n(iv, SDXL_DTYPE_I32, f, SDXL_DTYPE_F32, 2) == -1);
    CHECK(sdxl_convert_n(f, SDXL_DTYPE_F32, io, SDXL_DTYPE_I32, 2) == -1);
    CHECK(sdxl_convert_n(f, SDXL_DTYPE_F32, io, SDXL_DTYPE_COUNT_, 2) == -1);
    CHECK(io[0] == 7 && io[1] == 7);
    CHECK(sdxl_convert_n(f, SDXL_DTYPE_F32, o16, SDXL_DTYPE_F16, 0) == 0);
    sdxl_free(all);
    sdxl_free(o16);
    sdxl_free(f);
}

/* ---- hardware as a second oracle ----------------------------------------- */

#ifdef TEST_X86
__attribute__((target("f16c"))) static float hw_f16_to_f32(uint16_t h) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

__attribute__((target("f16c"))) static uint16_t hw_f32_to_f16(float f) {
    return (uint16_t)_mm_cvtsi128_si32(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT));
}

TEST(f16c_instructions_agree_with_scalar) {
    if (!sdxl_cpu_get()->f16c) {
        printf("    skipped: no F16C here\n");
        return;
    }
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) bad += bits_of(hw_f16_to_f32((uint16_t)i)) != bits_of(sdxl_f16_to_f32((uint16_t)i));
    CHECK_MSG(bad == 0, "VCVTPH2PS differs on %d of 65536 patterns", bad);
    uint64_t s = 5;
    bad = 0;
    for (int i = 0; i < 300000; i++) {
        float x = float_of(interesting_f32(&s));
        uint16_t hw = hw_f32_to_f16(x), sw = sdxl_f32_to_f16(x);
        if (hw != sw && bad++ < 5) printf("    f32 %08x: hw %04x, scalar %04x\n", bits_of(x), hw, sw);
    }
    CHECK_MSG(bad == 0, "VCVTPS2PH differs on %d inputs", bad);
}

__attribute__((target("avx512f,avx512vl,avx512bf16"))) static uint16_t hw_f32_to_bf16(float f) {
    __m128bh r = _mm_cvtneps_pbh(_mm_set_ss(f));
    uint16_t h;
    memcpy(&h, &r, 2);
    return h;
}

TEST(avx512bf16_instruction_agrees_with_scalar) {
    if (!sdxl_cpu_get()->avx512_bf16) {
        printf("    skipped: no AVX512-BF16 here\n");
        return;
    }
    /* VCVTNEPS2BF16 treats f32 subnormal inputs as zero (our rule keeps
     * them, which is why dtype_avx512.c does not use it); everything else,
     * NaNs included, must agree. */
    CHECK_EQ_INT(hw_f32_to_bf16(float_of(0x00010000)), 0x0000);
    CHECK_EQ_INT(sdxl_f32_to_bf16(float_of(0x00010000)), 0x0001);
    uint64_t s = 6;
    int bad = 0, n = 0;
    for (int i = 0; i < 300000; i++) {
        uint32_t u = interesting_f32(&s);
        if ((u & 0x7F800000) == 0 && (u & 0x7FFFFF)) continue;
        n++;
        uint16_t hw = hw_f32_to_bf16(float_of(u)), sw = sdxl_f32_to_bf16(float_of(u));
        if (hw != sw && bad++ < 5) printf("    f32 %08x: hw %04x, scalar %04x\n", u, hw, sw);
    }
    CHECK(n > 200000);
    CHECK_MSG(bad == 0, "VCVTNEPS2BF16 differs on %d inputs", bad);
}
#endif
