/* AVX-512F kernels (16 fp32 lanes, 32 zmm registers). Compiled for the whole file with a
 * target pragma; only called after module.c checked the CPU supports avx512f/bw/vl. */
#include "sk_common.h"
#ifdef SK_HAVE_X86
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#include <immintrin.h>
#include <string.h>
#include <math.h>

#define VEC __m512
#define VW 16
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_load_ps(p)
#define VSET1(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VSTORE(p, v) _mm512_store_ps((p), (v))

/* micro-kernels (sk_mk.inc.h): name, rows per block, vectors per row, unrolled accumulator sets */
#define MK mk_b1_v1, 1, 1, 4
#include "sk_mk.inc.h"
#define MK mk_b1_v2, 1, 2, 4
#include "sk_mk.inc.h"
#define MK mk_b1_v4, 1, 4, 2
#include "sk_mk.inc.h"
#define MK mk_b1_v8, 1, 8, 2
#include "sk_mk.inc.h"
#define MK mk_b2_v1, 2, 1, 4
#include "sk_mk.inc.h"
#define MK mk_b2_v2, 2, 2, 2
#include "sk_mk.inc.h"
#define MK mk_b2_v4, 2, 4, 2
#include "sk_mk.inc.h"
#define MK mk_b2_v8, 2, 8, 1
#include "sk_mk.inc.h"
#define MK mk_b4_v1, 4, 1, 2
#include "sk_mk.inc.h"
#define MK mk_b4_v2, 4, 2, 1
#include "sk_mk.inc.h"
#define MK mk_b4_v4, 4, 4, 1
#include "sk_mk.inc.h"
#define MK mk_b8_v1, 8, 1, 1
#include "sk_mk.inc.h"
#define MK mk_b8_v2, 8, 2, 1
#include "sk_mk.inc.h"
/* row pairs (sk_mk2.inc.h): pair, single-row companion, vectors per row */
#define MK2 mk2_v2, mk1_v2, 2
#include "sk_mk2.inc.h"
#define MK2 mk2_v4, mk1_v4, 4
#include "sk_mk2.inc.h"
#define MK2 mk2_v8, mk1_v8, 8
#include "sk_mk2.inc.h"

void sk_avx512_tile_fp32(int bh, const sk_segs *sg, const float *xt, const sk_tiling *tl, float *scratch, int64_t lds)
{
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        const int64_t nvt = w / VW; /* power of two */
        switch (bh) {
        case 1:
            if (nvt >= 8) { SK_PAIRLOOP(mk2_v8, mk1_v8, 8) }
            else if (nvt >= 4) { SK_PAIRLOOP(mk2_v4, mk1_v4, 4) }
            else if (nvt >= 2) { SK_PAIRLOOP(mk2_v2, mk1_v2, 2) }
            else { SK_SEGLOOP(mk_b1_v1, 1) } /* one vector per row: the 4-way unrolled single row wins */
            break;
        case 2:
            if (nvt >= 8) { SK_SEGLOOP(mk_b2_v8, 8) }
            else if (nvt >= 4) { SK_SEGLOOP(mk_b2_v4, 4) }
            else if (nvt >= 2) { SK_SEGLOOP(mk_b2_v2, 2) }
            else { SK_SEGLOOP(mk_b2_v1, 1) }
            break;
        case 4:
            if (nvt >= 4) { SK_SEGLOOP(mk_b4_v4, 4) }
            else if (nvt >= 2) { SK_SEGLOOP(mk_b4_v2, 2) }
            else { SK_SEGLOOP(mk_b4_v1, 1) }
            break;
        default: /* 8 */
            if (nvt >= 2) { SK_SEGLOOP(mk_b8_v2, 2) }
            else { SK_SEGLOOP(mk_b8_v1, 1) }
            break;
        }
    }
}

#include "sk_avx512_inline.h"

void sk_avx512_pack_x(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1,
                      float *xt, const sk_tiling *tl, int64_t n_in)
{
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        for (int64_t tg = 0; tg < w; tg += 16) {
            const int64_t t = tile->t0 + tg;
            int64_t nt = nb - t;
            nt = nt < 0 ? 0 : (nt > 16 ? 16 : nt);
            for (int64_t k = k0; k < k1; k += 16) {
                int64_t nk = k1 - k < 16 ? k1 - k : 16;
                __mmask16 km = (__mmask16)((1u << nk) - 1u);
                __m512 r[16];
                for (int l = 0; l < 16; l++)
                    r[l] = l < nt ? _mm512_maskz_loadu_ps(km, X + (t + l) * ldX + k) : _mm512_setzero_ps();
                tr16(r);
                for (int l = 0; l < nk; l++) _mm512_store_ps(xb + (k + l) * w + tg, r[l]);
            }
        }
    }
    (void)n_in;
}

/* Transposes the scratch (rows x tokens) into Y (tokens x rows) in strips of 16 tokens x up to
 * SK_STAGE_ROWS rows: 16x16 register transposes land in an L1 staging buffer, then each token row
 * of the strip is written to Y as one run of consecutive lines with the epilogue applied. Storing
 * the transposed blocks straight into Y would put 16 lines of one L1 set in flight whenever
 * ldY * 4 is a multiple of 4 KiB (BERT widths 768, 1536, 3072) and stall on L1 conflicts; strips
 * of at most 8 tokens (8 lines per set) are stored directly, saving the copy. */
#define SK_STAGE_ROWS 256
/* the Linear epilogue of one output vector: + bias, optional GELU, + residual (masked load) */
static inline __attribute__((always_inline)) __m512 epi16(__m512 v, __m512 bv, int act, const float *r, __mmask16 m)
{
    v = _mm512_add_ps(v, bv);
    if (act == SK_ACT_GELU) v = sk_gelu16(v);
    return r ? _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r)) : v;
}

void sk_avx512_unpack_y(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                        float *Y, int64_t ldY, const float *bias, const float *R, int act)
{
    enum { LST = SK_STAGE_ROWS + 16 }; /* staged row stride: rows fall in different L1 sets */
    float stage[16 * LST] __attribute__((aligned(64)));
    for (int64_t rb = 0; rb < nrows; rb += SK_STAGE_ROWS) {
        const int64_t nrb = nrows - rb < SK_STAGE_ROWS ? nrows - rb : SK_STAGE_ROWS;
        for (int64_t t = 0; t < ntok; t += 16) {
            const int64_t nt = ntok - t < 16 ? ntok - t : 16;
            for (int64_t r0 = 0; r0 < nrb; r0 += 16) {
                const int64_t nr = nrb - r0 < 16 ? nrb - r0 : 16;
                __m512 r[16];
                sk_load_tr16(scratch + (rb + r0) * lds + t, lds, nr, r);
                if (nt > 8) {
                    for (int l = 0; l < nt; l++) _mm512_store_ps(stage + l * LST + r0, r[l]);
                    continue;
                }
                /* few tokens: at most 8 lines of one set in flight, store straight into Y */
                const __mmask16 m = (__mmask16)((1u << nr) - 1u);
                const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + rb + r0) : _mm512_setzero_ps();
                for (int l = 0; l < nt; l++)
                    _mm512_mask_storeu_ps(Y + (t + l) * ldY + rb + r0, m,
                                          epi16(r[l], bv, act, R ? R + (t + l) * ldY + rb + r0 : NULL, m));
            }
            if (nt <= 8) continue;
            for (int l = 0; l < nt; l++) {
                const float *st = stage + l * LST;
                float *yr = Y + (t + l) * ldY + rb;
                const float *rr = R ? R + (t + l) * ldY + rb : NULL;
                for (int64_t c = 0; c < nrb; c += 16) {
                    const __mmask16 m = nrb - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nrb - c)) - 1u);
                    const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + rb + c) : _mm512_setzero_ps();
                    _mm512_mask_storeu_ps(yr + c, m, epi16(_mm512_load_ps(st + c), bv, act, rr ? rr + c : NULL, m));
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------
 * Attention for one head, SK_ATTN_ROWS query rows at a time: K is transposed once into scratch
 * (dh x Sp, keys contiguous) so each score vector is 16 keys wide; the softmax probabilities of
 * the row block stay in L1 for the V pass (columns of V in 16-float chunks).
 * ---------------------------------------------------------------------------------- */
enum { AR = SK_ATTN_ROWS };

/* the head's keys and values, laid out once per head in scratch (see sk_attn_scratch_floats) */
typedef struct {
    int64_t S, Sp, nj;   /* keys, keys padded to 16, 16-key vectors */
    int64_t dh, ncv, dhp; /* head dim, its 16-float chunks, padded head dim */
    float *kt;           /* dh x Sp: K transposed */
    float *bias;         /* Sp: key bias, -inf on padding keys */
    float *p;            /* AR x Sp scores, then probabilities */
    float *vb;           /* S x dhp: V rows packed contiguously (BERT's row stride maps every V row to
                            the same few L1 sets) */
} attn_kv;

/* exp(x) for x <= 0 (softmax after the max is subtracted), sk_exp_nonpos16's polynomial; x below
 * -87 (including -inf for masked keys) and NaN give exactly 0. */
static inline __attribute__((always_inline)) __m512 exp16_nonpos(__m512 x)
{
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ), sk_exp_nonpos16(x));
}

static inline __attribute__((always_inline)) void attn_pack_kv(attn_kv *a, const float *k, const float *v, int64_t ld,
                                                               const float *kb)
{
    const int64_t S = a->S, Sp = a->Sp, dh = a->dh;
    for (int64_t j = 0; j < S; j++) {
        const float *kj = k + j * ld;
        for (int64_t d = 0; d < dh; d++) a->kt[d * Sp + j] = kj[d];
        for (int64_t c = 0; c < a->ncv; c++) {
            const int64_t nd = dh - c * 16 < 16 ? dh - c * 16 : 16;
            _mm512_store_ps(a->vb + j * a->dhp + c * 16,
                            _mm512_maskz_loadu_ps((__mmask16)((1u << nd) - 1u), v + j * ld + c * 16));
        }
    }
    for (int64_t d = 0; d < dh; d++)
        for (int64_t j = S; j < Sp; j++) a->kt[d * Sp + j] = 0.0f;
    for (int64_t j = 0; j < Sp; j++) a->bias[j] = j < S ? (kb ? kb[j] : 0.0f) : -__builtin_inff();
}

/* scores p[r] = scale * q_r . K + bias for the AR rows qr, their maxima mx (NaN scores left out)
 * and nan[r], the lanes that saw a NaN score; two 16-key vectors x AR rows per step: 2 AR
 * independent FMA chains */
static inline __attribute__((always_inline)) void attn_scores(const attn_kv *a, const float *const qr[AR],
                                                              __m512 vscale, __m512 mx[AR], __mmask16 nan[AR])
{
    const int64_t Sp = a->Sp;
    for (int r = 0; r < AR; r++) {
        mx[r] = _mm512_set1_ps(-__builtin_inff());
        nan[r] = 0;
    }
    for (int64_t jv = 0; jv < a->nj; jv += 2) {
        const int two = jv + 1 < a->nj;
        __m512 acc0[AR], acc1[AR];
        for (int r = 0; r < AR; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
        const float *kc = a->kt + jv * 16;
        if (two) {
            for (int64_t d = 0; d < a->dh; d++) {
                const __m512 k0 = _mm512_load_ps(kc + d * Sp), k1 = _mm512_load_ps(kc + d * Sp + 16);
                for (int r = 0; r < AR; r++) {
                    const __m512 qb = _mm512_set1_ps(qr[r][d]);
                    acc0[r] = _mm512_fmadd_ps(qb, k0, acc0[r]);
                    acc1[r] = _mm512_fmadd_ps(qb, k1, acc1[r]);
                }
            }
        } else {
            for (int64_t d = 0; d < a->dh; d++) {
                const __m512 k0 = _mm512_load_ps(kc + d * Sp);
                for (int r = 0; r < AR; r++) acc0[r] = _mm512_fmadd_ps(_mm512_set1_ps(qr[r][d]), k0, acc0[r]);
            }
        }
        for (int h = 0; h <= two; h++) {
            const __m512 bv = _mm512_load_ps(a->bias + (jv + h) * 16);
            for (int r = 0; r < AR; r++) {
                const __m512 s = _mm512_fmadd_ps(h ? acc1[r] : acc0[r], vscale, bv);
                _mm512_store_ps(a->p + r * Sp + (jv + h) * 16, s);
                mx[r] = _mm512_max_ps(s, mx[r]); /* a NaN s keeps mx: the row max stays right */
                nan[r] |= _mm512_cmp_ps_mask(s, s, _CMP_UNORD_Q);
            }
        }
    }
}

/* p[r] <- exp(p[r] - max) in place, inv[r] = 1 / sum; a row whose keys are all masked gets zero
 * probabilities (and inv 0), a row with a NaN score zero probabilities and inv NaN (NaN outputs,
 * as the scalar kernel) */
static inline __attribute__((always_inline)) void attn_softmax(const attn_kv *a, const __m512 mx[AR],
                                                               const __mmask16 nan[AR], float inv[AR])
{
    const int64_t Sp = a->Sp;
    for (int r = 0; r < AR; r++) {
        const float m = _mm512_reduce_max_ps(mx[r]);
        if (nan[r] || !(m > -__builtin_inff())) {
            memset(a->p + r * Sp, 0, sizeof(float) * (size_t)Sp);
            inv[r] = nan[r] ? __builtin_nanf("") : 0.0f;
            continue;
        }
        const __m512 mv = _mm512_set1_ps(m);
        __m512 sum = _mm512_setzero_ps();
        for (int64_t jv = 0; jv < a->nj; jv++) {
            const __m512 e = exp16_nonpos(_mm512_sub_ps(_mm512_load_ps(a->p + r * Sp + jv * 16), mv));
            _mm512_store_ps(a->p + r * Sp + jv * 16, e);
            sum = _mm512_add_ps(sum, e);
        }
        inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
    }
}

/* o[r] = inv[r] * p[r] V for the nr real rows at o (row stride ldo); two 16-column chunks of V x
 * AR rows per step */
static inline __attribute__((always_inline)) void attn_pv(const attn_kv *a, const float inv[AR], int64_t nr, float *o,
                                                          int64_t ldo)
{
    const int64_t dh = a->dh;
    for (int64_t c = 0; c < a->ncv; c += 2) {
        const int two = c + 1 < a->ncv;
        const int64_t nd0 = dh - c * 16 < 16 ? dh - c * 16 : 16;
        const int64_t nd1 = two ? (dh - c * 16 - 16 < 16 ? dh - c * 16 - 16 : 16) : 0;
        const __mmask16 m0 = (__mmask16)((1u << nd0) - 1u), m1 = (__mmask16)((1u << nd1) - 1u);
        __m512 o0[AR], o1[AR];
        for (int r = 0; r < AR; r++) o0[r] = o1[r] = _mm512_setzero_ps();
        const float *vc = a->vb + c * 16;
        for (int64_t j = 0; j < a->S; j++) {
            const __m512 v0 = _mm512_load_ps(vc + j * a->dhp);
            const __m512 v1 = two ? _mm512_load_ps(vc + j * a->dhp + 16) : _mm512_setzero_ps();
            for (int r = 0; r < AR; r++) {
                const __m512 pb = _mm512_set1_ps(a->p[r * a->Sp + j]);
                o0[r] = _mm512_fmadd_ps(pb, v0, o0[r]);
                o1[r] = _mm512_fmadd_ps(pb, v1, o1[r]);
            }
        }
        for (int r = 0; r < nr; r++) {
            const __m512 iv = _mm512_set1_ps(inv[r]);
            float *orow = o + r * ldo + c * 16;
            /* an all-masked row stores zeros, not 0 * V (an inf in V would make NaN) */
            const __m512 y0 = inv[r] == 0.0f ? _mm512_setzero_ps() : _mm512_mul_ps(o0[r], iv);
            const __m512 y1 = inv[r] == 0.0f ? _mm512_setzero_ps() : _mm512_mul_ps(o1[r], iv);
            _mm512_mask_storeu_ps(orow, m0, y0);
            if (two) _mm512_mask_storeu_ps(orow + 16, m1, y1);
        }
    }
}

void sk_avx512_attn_head(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                         float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    attn_kv a = {.S = S, .Sp = (S + 15) / 16 * 16, .dh = dh, .ncv = (dh + 15) / 16};
    a.nj = a.Sp / 16;
    a.dhp = a.ncv * 16;
    a.kt = scratch;
    a.bias = a.kt + dh * a.Sp;
    a.p = a.bias + a.Sp;
    a.vb = a.p + AR * a.Sp;
    attn_pack_kv(&a, k, v, ld, kb);
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t i0 = 0; i0 < S; i0 += AR) {
        const int64_t nr = S - i0 < AR ? S - i0 : AR;
        const float *qr[AR]; /* rows past the end repeat the last one (computed, never stored) */
        for (int r = 0; r < AR; r++) qr[r] = q + (i0 + (r < nr ? r : nr - 1)) * ld;
        __m512 mx[AR];
        __mmask16 nan[AR];
        float inv[AR];
        attn_scores(&a, qr, vscale, mx, nan);
        attn_softmax(&a, mx, nan, inv);
        attn_pv(&a, inv, nr, o + i0 * ldo, ldo);
    }
}

/* LayerNorm with 16-wide float accumulators: pass 1 mean, pass 2 centred variance, pass 3 write. */
void sk_avx512_layer_norm(float *Y, int64_t ntok, int64_t N, const float *gamma, const float *beta, float eps,
                          float *amax)
{
    const __m512 inf = _mm512_set1_ps(__builtin_inff());
    for (int64_t t = 0; t < ntok; t++) {
        float *y = Y + t * N;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i + 32 <= N; i += 32) {
            s0 = _mm512_add_ps(s0, _mm512_loadu_ps(y + i));
            s1 = _mm512_add_ps(s1, _mm512_loadu_ps(y + i + 16));
        }
        for (; i < N; i += 16)
            s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps((__mmask16)((1u << (N - i < 16 ? N - i : 16)) - 1u), y + i));
        const float mean = N > 0 ? _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / (float)N : 0.0f;
        const __m512 mv = _mm512_set1_ps(mean);
        s0 = s1 = _mm512_setzero_ps();
        for (i = 0; i + 32 <= N; i += 32) {
            const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(y + i), mv), d1 = _mm512_sub_ps(_mm512_loadu_ps(y + i + 16), mv);
            s0 = _mm512_fmadd_ps(d0, d0, s0);
            s1 = _mm512_fmadd_ps(d1, d1, s1);
        }
        for (; i < N; i += 16) {
            const __mmask16 m = (__mmask16)((1u << (N - i < 16 ? N - i : 16)) - 1u);
            const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, y + i), mv);
            s0 = _mm512_fmadd_ps(d, d, s0);
        }
        const float var = N > 0 ? _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / (float)N : 0.0f;
        const __m512 rs = _mm512_set1_ps(1.0f / sqrtf(var + eps));
        __m512 am = _mm512_setzero_ps(); /* the range of the written row, as rows_amax: NaN as +inf */
        for (i = 0; i < N; i += 16) {
            const __mmask16 m = (__mmask16)((1u << (N - i < 16 ? N - i : 16)) - 1u);
            const __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, gamma + i), rs);
            const __m512 b = beta ? _mm512_maskz_loadu_ps(m, beta + i) : _mm512_setzero_ps();
            const __m512 r = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, y + i), mv), g, b);
            _mm512_mask_storeu_ps(y + i, m, r);
            const __m512 a = _mm512_maskz_mov_ps(m, _mm512_abs_ps(r));
            am = _mm512_max_ps(am, _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), inf));
        }
        if (amax) amax[t] = _mm512_reduce_max_ps(am);
    }
}

/* ---- INT8 without VNNI (AVX-512BW) -----------------------------------------------------
 * AVX2's signed-pair product (sk_mq_signed.inc.h) on 16-token vectors. AVX-512 has no vpsignb:
 * the sign is a masked negation, the mask from the weight's sign bits, once per block row. 32
 * registers hold 4 rows x 4 vectors of accumulators (AVX2: 4 x 2). */
#define Q_NV_MAX 8
#define QV __m512i
#define QW 16
#define QZERO() _mm512_setzero_si512()
#define QLOAD(p) _mm512_load_si512((const void *)(p))
#define QSTORE(p, v) _mm512_store_si512((void *)(p), (v))
#define QXOR(a, b) _mm512_xor_si512((a), (b))
#define QADD32(a, b) _mm512_add_epi32((a), (b))
#define QSET1_8(x) _mm512_set1_epi8(x)
#define QSET1_16(x) _mm512_set1_epi16(x)
#define QSET1_32(x) _mm512_set1_epi32(x)
#define QABS8(v) _mm512_abs_epi8(v)
#define QSIGN_T __mmask64
#define QSIGN_OF(wv) _mm512_movepi8_mask(wv)
#define QAPPLY_SIGN(x, s) _mm512_mask_sub_epi8((x), (s), _mm512_setzero_si512(), (x))
#define QMADDUBS(a, b) _mm512_maddubs_epi16((a), (b))
#define QMADDWD(a, b) _mm512_madd_epi16((a), (b))
#include "sk_mq_signed.inc.h"

void sk_avx512_tile_int8(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval, int64_t br0, int64_t br1,
                         const uint8_t *xq, const sk_tiling *tl, int64_t nq, int32_t *scratch, int64_t lds)
{
    (void)nq;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const int32_t *xb = (const int32_t *)(xq + tile->offset);
        const int64_t w = tile->width, nvt = w / 16; /* tokens = int32 words per quad row */
        switch (bh) {
        case 1:
            if (nvt >= 8) { Q_ROWLOOP(1, 8) } else if (nvt >= 4) { Q_ROWLOOP(1, 4) } else { Q_ROWLOOP(1, 2) }
            break;
        case 2:
            if (nvt >= 4) { Q_ROWLOOP(2, 4) } else { Q_ROWLOOP(2, 2) }
            break;
        case 4:
            if (nvt >= 4) { Q_ROWLOOP(4, 4) } else { Q_ROWLOOP(4, 2) }
            break;
        case 8: Q_ROWLOOP(8, 2) break;
        default: Q_ROWLOOP(16, 2) break; /* 16x4 blocks: two slices of 8 rows */
        }
    }
}

const sk_kernels sk_kernels_avx512 = {
    /* the fp32 entries and the INT8 product; sk_module.c builds the avx512 table from AVX2's with these
     * (the other int8 entries: placeholders) */
    "avx512", sk_avx512_tile_fp32, sk_avx512_pack_x, sk_avx512_unpack_y,
    sk_avx512_tile_int8, sk_pack_xq_generic, sk_pack_xq_raw_generic, sk_unpack_int8_generic,
    sk_rows_amax_generic, sk_unpack_i32_generic, sk_avx512_attn_head, sk_avx512_layer_norm,
    sk_quant_rows_generic, sk_attn_head_int8_generic, sk_mid_int8_generic, sk_pack_mid_generic,
    sk_attn_head_int8_cm_generic,
};
#endif
