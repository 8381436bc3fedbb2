/* attention.h - private to attention*.c (and tests): the per-ISA kernels of
 * the fused (flash-style) attention in attention.c.
 *
 * One task = one head of one batch item x a block of SDXL__ATT_BQ queries. It
 * walks the keys in blocks of SDXL__ATT_BK with an online softmax, so a
 * thread holds only these (per-thread scratch, sized once per call):
 *   qp    [D][BQ]   the query block, transposed
 *   s     [BQ][BK]  scores of one key block, overwritten by probabilities
 *   o     [BQ][Dp]  running output (Dp = D rounded up to 16)
 *   m, l, alpha [BQ]  running max (log2 domain), running sum, rescale factor
 * and reads, shared by all tasks of a head (packed once per head):
 *   kp    [n_kblocks][D][BK]  keys transposed per block, zero-padded, scaled by
 *                             scale·log2(e) (once per key instead of per query)
 *   vp    [Tk][Dp]            values, columns zero-padded to Dp
 * Scores are in the log2 domain so the exponential is exp2 (cheaper to
 * evaluate): p = 2^(s·log2e - m) = e^(s - m/log2e).
 */
#ifndef SDXL_BACKEND_CPU_ATTENTION_H
#define SDXL_BACKEND_CPU_ATTENTION_H

#include <stdint.h>

#include "core/cpu.h"

#define SDXL__ATT_BQ 48  /* queries per task (multiple of 6 and 8: the micro-tiles) */
#define SDXL__ATT_BK 192 /* keys per block (multiple of 48) */
/* Measured (1 thread, 4096 tokens x 64): BQ/BK 48/192 134.9 ms, 96/192 132.6, 96/144 133.3,
 * 48/384 136.9, 96/96 135.2: within noise; the smaller query block keeps more tasks. */
_Static_assert(SDXL__ATT_BQ % 48 == 0, "BQ: a multiple of the 6- and 8-row tiles and of 16 lanes");
_Static_assert(SDXL__ATT_BK % 48 == 0, "BK: a multiple of the 48-key score tile");

typedef struct sdxl__attn_isa {
    /* s[i][j] = sum_{d<D} qp[d][i] · kp[d][j]   for i < BQ, j < nk16 (nk16 a multiple of 16,
     * <= BK); qp [D][BQ], kp [D][BK], s [BQ][BK]. */
    void (*scores)(int64_t D, const float *qp, const float *kp, int64_t nk16, float *s);
    /* Online-softmax step over one key block, row i < BQ sees keys j < nvalid[i] (<= nk):
     *   nvalid 0: alpha = 1, p[i][0..nk) = 0, m and l unchanged;
     *   else      mn = max(m, max_j s), alpha = 2^(m - mn) (0 when m = -inf),
     *             p = 2^(s - mn) for j < nvalid, 0 for nvalid <= j < nk,
     *             l = l·alpha + sum p, m = mn.
     * s [BQ][BK] is overwritten by p. */
    void (*softmax)(float *s, int64_t nk, const int64_t *nvalid, float *m, float *l, float *alpha);
    /* o[i][:] = alpha[i] · o[i][:] + sum_{j<nk} p[i][j] · vp[j][:]   for i < BQ;
     * p [BQ][BK], vp [nk][Dp], o [BQ][Dp]; Dp a multiple of 16. */
    void (*pv)(const float *p, int64_t nk, const float *vp, int64_t Dp, const float *alpha, float *o);
    /* y[i] = 2^x[i] for x[i] <= 0 (the kernel's exponential; for tests). */
    void (*exp2_n)(const float *x, float *y, int64_t n);
} sdxl__attn_isa;

extern const sdxl__attn_isa sdxl__attn_isa_generic;
extern const sdxl__attn_isa sdxl__attn_isa_avx2;
extern const sdxl__attn_isa sdxl__attn_isa_avx512;

/* The table for a level (falls back to lower levels). */
const sdxl__attn_isa *sdxl__attn_isa_for(sdxl_isa_level level);

#endif
