/* attention.c - fused multi-head attention (flash-style), the driver and the
 * generic-C kernels. Layout and blocking: attention.h.
 *
 * Why this shape: o = softmax(q·kᵀ·scale)·v is computed per (batch, head,
 * block of 48 queries) over blocks of 192 keys with an online softmax
 * (running max m and sum l; when m grows, the partial output and l are
 * rescaled by 2^(m_old - m_new)), so nothing of size Tq x Tk ever exists:
 * at 4096 tokens x 10 heads the score matrix alone would be 640 MB.
 *
 * Keys and values of a head are repacked once (kᵀ per key block, v with its
 * columns padded to a multiple of 16) so the score and value micro-kernels
 * read contiguous, aligned vectors; that is O(Tk·D) per head. Heads are
 * processed in rounds that bound this packed copy to ~32 MiB: the threads
 * first pack every head of the round, then take (head, query block) tasks.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/attention.h"
#include "backend/cpu/gemm.h"

#define BQ SDXL__ATT_BQ
#define BK SDXL__ATT_BK
#define LOG2E 1.4426950408889634
#define ROUND_BUDGET (32u << 20) /* bytes of packed k/v per round of heads */

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round_up(int64_t a, int64_t b) { return cdiv(a, b) * b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- generic C kernels ---------------------------------------------------- */

static void scores_generic(int64_t D, const float *qp, const float *kp, int64_t nk16, float *s) {
    for (int i = 0; i < BQ; i++) memset(s + i * BK, 0, (size_t)nk16 * sizeof(float));
    for (int64_t d = 0; d < D; d++) {
        const float *kd = kp + d * BK; /* [nk16] */
        for (int i = 0; i < BQ; i++) {
            const float a = qp[d * BQ + i];
            float *si = s + i * BK;
            for (int64_t j = 0; j < nk16; j++) si[j] += a * kd[j];
        }
    }
}

static void softmax_generic(float *s, int64_t nk, const int64_t *nvalid, float *m, float *l, float *alpha) {
    for (int i = 0; i < BQ; i++) {
        float *row = s + i * BK;
        const int64_t n = nvalid[i];
        if (n == 0) {
            alpha[i] = 1.0f;
            memset(row, 0, (size_t)nk * sizeof(float));
            continue;
        }
        float mx = row[0];
        for (int64_t j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        const float mn = m[i] > mx ? m[i] : mx;
        const float a = m[i] == -INFINITY ? 0.0f : exp2f(m[i] - mn);
        float sum = 0.0f;
        for (int64_t j = 0; j < n; j++) {
            row[j] = exp2f(row[j] - mn);
            sum += row[j];
        }
        for (int64_t j = n; j < nk; j++) row[j] = 0.0f;
        l[i] = l[i] * a + sum;
        m[i] = mn;
        alpha[i] = a;
    }
}

static void pv_generic(const float *p, int64_t nk, const float *vp, int64_t Dp, const float *alpha, float *o) {
    for (int i = 0; i < BQ; i++) {
        float *oi = o + i * Dp; /* [Dp] */
        for (int64_t d = 0; d < Dp; d++) oi[d] *= alpha[i];
        for (int64_t j = 0; j < nk; j++) {
            const float pj = p[i * BK + j];
            if (pj == 0.0f) continue;
            const float *vj = vp + j * Dp;
            for (int64_t d = 0; d < Dp; d++) oi[d] += pj * vj[d];
        }
    }
}

static void exp2_generic(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = exp2f(x[i]);
}

const sdxl__attn_isa sdxl__attn_isa_generic = {scores_generic, softmax_generic, pv_generic, exp2_generic};

const sdxl__attn_isa *sdxl__attn_isa_for(sdxl_isa_level level) {
    if (level >= SDXL_ISA_AVX512) return &sdxl__attn_isa_avx512;
    if (level >= SDXL_ISA_AVX2) return &sdxl__attn_isa_avx2;
    return &sdxl__attn_isa_generic;
}

/* ---- the driver ----------------------------------------------------------- */

typedef struct att_job {
    const sdxl__attn_isa *ai;
    const sdxl__gemm_isa *gi; /* its transposing packer */
    const float *q, *k, *v;   /* q [B, Tq, C], k, v [B, Tk, C] */
    float *o;                 /* o [B, Tq, C] */
    int64_t B, Tq, Tk, C, H, D, Dp, nkb, nqb;
    float kscale;
    int causal;
    int64_t hb0;       /* first (b·H + h) of this round */
    float *kv;         /* per head of the round: kp [nkb][D][BK] then vp [Tk][Dp] */
    int64_t kv_head;   /* floats per head */
    char *thr;         /* per thread: qp, s, o, m, l, alpha, nvalid */
    size_t thr_bytes;
} att_job;

static void att_pack(void *ctx, size_t begin, size_t end, int ti) {
    const att_job *j = ctx;
    for (size_t u = begin; u < end; u++) {
        const int64_t hh = (int64_t)u / j->nkb, kb = (int64_t)u % j->nkb;
        const int64_t bh = j->hb0 + hh, b = bh / j->H, h = bh % j->H;
        const int64_t j0 = kb * BK, nk = min64(BK, j->Tk - j0);
        float *kp = j->kv + hh * j->kv_head + kb * j->D * BK;         /* [D][BK] */
        float *vp = j->kv + hh * j->kv_head + j->nkb * j->D * BK + j0 * j->Dp; /* [nk][Dp] */
        const float *ks = j->k + (b * j->Tk + j0) * j->C + h * j->D;  /* [nk][D], stride C */
        const float *vs = j->v + (b * j->Tk + j0) * j->C + h * j->D;
        j->gi->pack_t(ks, j->C, j->D, nk, BK, kp);
        for (int64_t t = 0; t < j->D * BK; t++) kp[t] *= j->kscale; /* fold scale·log2(e) into the keys */
        for (int64_t t = 0; t < nk; t++) {
            memcpy(vp + t * j->Dp, vs + t * j->C, (size_t)j->D * sizeof(float));
            for (int64_t d = j->D; d < j->Dp; d++) vp[t * j->Dp + d] = 0.0f;
        }
    }
}

static void att_compute(void *ctx, size_t begin, size_t end, int ti) {
    const att_job *j = ctx;
    char *base = j->thr + (size_t)ti * j->thr_bytes;
    float *qp = (float *)base;                     /* [D][BQ] */
    float *s = qp + round_up(j->D * BQ, 16);        /* [BQ][BK] */
    float *o = s + BQ * BK;                         /* [BQ][Dp] */
    float *m = o + BQ * j->Dp, *l = m + BQ, *alpha = l + BQ; /* [BQ] each */
    int64_t *nvalid = (int64_t *)(alpha + BQ);      /* [BQ] */
    for (size_t u = begin; u < end; u++) {
        const int64_t hh = (int64_t)u / j->nqb, qb = (int64_t)u % j->nqb;
        const int64_t bh = j->hb0 + hh, b = bh / j->H, h = bh % j->H;
        const int64_t q0 = qb * BQ, nq = min64(BQ, j->Tq - q0);
        const float *kp = j->kv + hh * j->kv_head;
        const float *vp = kp + j->nkb * j->D * BK;

        j->gi->pack_t(j->q + (b * j->Tq + q0) * j->C + h * j->D, j->C, j->D, nq, BQ, qp);
        memset(o, 0, (size_t)(BQ * j->Dp) * sizeof(float));
        for (int i = 0; i < BQ; i++) {
            m[i] = -INFINITY;
            l[i] = 0.0f;
        }
        /* causal: keys 0..q0+nq-1 at most */
        const int64_t kb_end = j->causal ? min64(j->nkb, (q0 + nq - 1) / BK + 1) : j->nkb;
        for (int64_t kb = 0; kb < kb_end; kb++) {
            const int64_t j0 = kb * BK, nk = min64(BK, j->Tk - j0);
            for (int i = 0; i < BQ; i++) {
                int64_t n = nk;
                if (j->causal) {
                    n = q0 + i + 1 - j0;
                    n = n < 0 ? 0 : n > nk ? nk : n;
                }
                nvalid[i] = n;
            }
            j->ai->scores(j->D, qp, kp + kb * j->D * BK, round_up(nk, 16), s);
            j->ai->softmax(s, nk, nvalid, m, l, alpha);
            j->ai->pv(s, nk, vp + j0 * j->Dp, j->Dp, alpha, o);
        }
        for (int64_t i = 0; i < nq; i++) {
            const float inv = 1.0f / l[i];
            float *dst = j->o + (b * j->Tq + q0 + i) * j->C + h * j->D;
            for (int64_t d = 0; d < j->D; d++) dst[d] = o[i * j->Dp + d] * inv;
        }
    }
}

static int overlaps(const sdxl_tensor *a, const sdxl_tensor *b) {
    uintptr_t a0 = (uintptr_t)a->data, a1 = a0 + sdxl_tensor_nbytes(a);
    uintptr_t b0 = (uintptr_t)b->data, b1 = b0 + sdxl_tensor_nbytes(b);
    return a0 < b1 && b0 < a1;
}

sdxl_status sdxl__cpu_attention(sdxl_backend *be, const sdxl_tensor *q, const sdxl_tensor *k,
                                const sdxl_tensor *v, const sdxl_attention_params *p, sdxl_tensor *o) {
    char dq[96], dk[96], dv[96], dout[96];
    if (!q || !k || !v || !p || !o)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: q, k, v, params and o must not be NULL");
    sdxl_tensor_describe(q, dq, sizeof dq);
    sdxl_tensor_describe(k, dk, sizeof dk);
    sdxl_tensor_describe(v, dv, sizeof dv);
    sdxl_tensor_describe(o, dout, sizeof dout);
    if (q->dtype != SDXL_DTYPE_F32 || k->dtype != SDXL_DTYPE_F32 || v->dtype != SDXL_DTYPE_F32 ||
        o->dtype != SDXL_DTYPE_F32)
        return sdxl__cpu_fail(be, SDXL_STATUS_UNSUPPORTED, "attention: q %s, k %s, v %s and o %s must be f32", dq,
                              dk, dv, dout);
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || o->ndim != 3)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG,
                              "attention: q %s, k %s, v %s and o %s must be 3-D [B, T, C]", dq, dk, dv, dout);
    const int64_t B = q->ne[0], Tq = q->ne[1], C = q->ne[2], Tk = k->ne[1];
    if (k->ne[0] != B || k->ne[2] != C)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: k %s does not match q %s (expected [%lld, Tk, %lld])",
                              dk, dq, (long long)B, (long long)C);
    if (!sdxl_tensor_same_shape(v, k))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: v %s must have the shape of k %s", dv, dk);
    if (!sdxl_tensor_same_shape(o, q))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: o %s must have the shape of q %s", dout, dq);
    if (p->heads < 1 || C % p->heads != 0 || C == 0)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: %d heads do not divide the %lld channels of q %s",
                              p->heads, (long long)C, dq);
    if (Tk < 1 && B * Tq > 0)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: k %s has no keys", dk);
    if (p->causal && Tq != Tk)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: causal needs Tq == Tk (q %s, k %s)", dq, dk);
    if (q->device != SDXL_DEVICE_CPU || k->device != SDXL_DEVICE_CPU || v->device != SDXL_DEVICE_CPU ||
        o->device != SDXL_DEVICE_CPU)
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: tensors must be in CPU memory");
    if (B * Tq == 0) return SDXL_STATUS_OK;
    if (overlaps(o, q) || overlaps(o, k) || overlaps(o, v))
        return sdxl__cpu_fail(be, SDXL_STATUS_INVALID_ARG, "attention: o %s must not overlap q, k or v", dout);

    sdxl_cpu_backend *cb = sdxl__cpu(be);
    const sdxl_isa_level isa = sdxl_cpu_isa();
    att_job j = {
        .ai = sdxl__attn_isa_for(isa), .gi = sdxl__gemm_isa_for(isa),
        .q = q->data, .k = k->data, .v = v->data, .o = o->data,
        .B = B, .Tq = Tq, .Tk = Tk, .C = C, .H = p->heads, .D = C / p->heads,
        .kscale = (float)(p->scale * LOG2E), .causal = p->causal,
    };
    j.Dp = round_up(j.D, 16);
    j.nkb = cdiv(Tk, BK);
    j.nqb = cdiv(Tq, BQ);
    j.kv_head = round_up(j.nkb * j.D * BK + Tk * j.Dp, 16);
    const int64_t n_heads = B * j.H;
    int64_t per_round = (int64_t)(ROUND_BUDGET / ((size_t)j.kv_head * sizeof(float)));
    per_round = per_round < 1 ? 1 : per_round > n_heads ? n_heads : per_round;

    const int T = cb->n_threads > 0 ? cb->n_threads : 1;
    j.thr_bytes = (size_t)(round_up(j.D * BQ, 16) + BQ * BK + BQ * j.Dp + 3 * BQ) * sizeof(float) +
                  BQ * sizeof(int64_t);
    j.thr_bytes = (size_t)round_up((int64_t)j.thr_bytes, 64);
    const size_t kv_bytes = (size_t)(per_round * j.kv_head) * sizeof(float);
    const size_t bytes = kv_bytes + (size_t)T * j.thr_bytes;
    char *s = sdxl__cpu_scratch(cb, bytes);
    if (!s)
        return sdxl__cpu_fail(be, SDXL_STATUS_OUT_OF_MEMORY, "attention: cannot allocate %zu bytes of scratch", bytes);
    j.kv = (float *)s;
    j.thr = s + kv_bytes;

    for (j.hb0 = 0; j.hb0 < n_heads; j.hb0 += per_round) {
        const int64_t hn = min64(per_round, n_heads - j.hb0);
        sdxl_threadpool_parallel_for(cb->pool, (size_t)(hn * j.nkb), 1, att_pack, &j);
        sdxl_threadpool_parallel_for(cb->pool, (size_t)(hn * j.nqb), 1, att_compute, &j);
    }
    return SDXL_STATUS_OK;
}
