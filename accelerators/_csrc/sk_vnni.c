/* AVX-512 VNNI variant: fp32 kernels are the AVX-512 ones; INT8 kernels use vpdpbusd
 * (u8 activations x s8 weights -> s32, 4 products per lane per instruction). */
#include "sk_common.h"
#ifdef SK_HAVE_X86
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")
#include <immintrin.h>
#include <string.h>
#include "sk_avx512_inline.h"

#define VEC __m512i
#define VW 16
#define VZERO() _mm512_setzero_si512()
#define VLOAD(p) _mm512_load_si512((const void *)(p))
#define VSET1(x) _mm512_set1_epi32(x)
/* template semantics: acc = a * b + c with a = weight word, b = activation vector */
#define VFMA(a, b, c) _mm512_dpbusd_epi32((c), (b), (a))
#define VADD(a, b) _mm512_add_epi32((a), (b))
#define VSTORE(p, v) _mm512_store_si512((void *)(p), (v))
#define MK_XT int32_t
#define MK_WT int32_t
#define MK_OT int32_t

/* micro-kernels (sk_mk.inc.h): name, rows per block, vectors per row, unrolled accumulator sets */
#define MK mq_b1_v1, 1, 1, 4
#include "sk_mk.inc.h"
#define MK mq_b1_v2, 1, 2, 4
#include "sk_mk.inc.h"
#define MK mq_b1_v4, 1, 4, 2
#include "sk_mk.inc.h"
#define MK mq_b1_v8, 1, 8, 1
#include "sk_mk.inc.h"
#define MK mq_b2_v1, 2, 1, 4
#include "sk_mk.inc.h"
#define MK mq_b2_v2, 2, 2, 2
#include "sk_mk.inc.h"
#define MK mq_b2_v4, 2, 4, 1
#include "sk_mk.inc.h"
#define MK mq_b4_v1, 4, 1, 2
#include "sk_mk.inc.h"
#define MK mq_b4_v2, 4, 2, 1
#include "sk_mk.inc.h"
#define MK mq_b4_v4, 4, 4, 1
#include "sk_mk.inc.h"
#define MK mq_b8_v1, 8, 1, 1
#include "sk_mk.inc.h"
#define MK mq_b8_v2, 8, 2, 1
#include "sk_mk.inc.h"
#define MK mq_b16_v1, 16, 1, 1
#define MK_WIDX(j, b) sk_qword(SK_TILE_ROWS, (j), (b))
#include "sk_mk.inc.h"

#define QROWLOOP(FN, NVV)                                                                  \
    for (int64_t br = br0; br < br1; br++) {                                               \
        int32_t *o = scratch + (br - br0) * bh * lds + tile->t0;                           \
        for (int64_t s = 0; s < nvt; s += (NVV))                                           \
            FN(idx, qval, ptr[br], ptr[br + 1], xb + s * VW, w, o + s * VW, lds, 0);       \
    }

void sk_vnni_tile_int8(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval,
                       int64_t br0, int64_t br1, const uint8_t *xq, const sk_tiling *tl,
                       int64_t nq, int32_t *scratch, int64_t lds)
{
    (void)nq;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const int32_t *xb = (const int32_t *)(xq + tile->offset);
        const int64_t w = tile->width; /* tokens = int32 words per quad row */
        const int64_t nvt = w / VW;
        switch (bh) {
        case 1:
            if (nvt >= 8) { QROWLOOP(mq_b1_v8, 8) }
            else if (nvt >= 4) { QROWLOOP(mq_b1_v4, 4) }
            else if (nvt >= 2) { QROWLOOP(mq_b1_v2, 2) }
            else { QROWLOOP(mq_b1_v1, 1) }
            break;
        case 2:
            if (nvt >= 4) { QROWLOOP(mq_b2_v4, 4) }
            else if (nvt >= 2) { QROWLOOP(mq_b2_v2, 2) }
            else { QROWLOOP(mq_b2_v1, 1) }
            break;
        case 4:
            if (nvt >= 4) { QROWLOOP(mq_b4_v4, 4) }
            else if (nvt >= 2) { QROWLOOP(mq_b4_v2, 2) }
            else { QROWLOOP(mq_b4_v1, 1) }
            break;
        case 8:
            if (nvt >= 2) { QROWLOOP(mq_b8_v2, 2) }
            else { QROWLOOP(mq_b8_v1, 1) }
            break;
        default: /* 16x4 blocks: 16 accumulators of 16 tokens */
            QROWLOOP(mq_b16_v1, 1)
            break;
        }
    }
}

/* 16 quads (64 fp32) of one token -> 16 words of u8 (x_q + 128) */
static inline __attribute__((always_inline)) __m128i quant16(const float *xr, int64_t n, __m512 inv)
{
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    n = n < 0 ? 0 : (n > 16 ? 16 : n);
    const __mmask16 m = (__mmask16)((1u << n) - 1u);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr), inv);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi); /* NaN -> -127 (max returns its 2nd operand) */
    return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(128)));
}

/* 16 quads (64 fp32, kvalid of them real) of one token -> 16 words of u8 (x_q + 128) */
static inline __attribute__((always_inline)) __m512i quant64(const float *xr, int64_t kvalid, __m512 inv)
{
    __m512i res = _mm512_castsi128_si512(quant16(xr, kvalid, inv));
    res = _mm512_inserti32x4(res, quant16(xr + 16, kvalid - 16, inv), 1);
    res = _mm512_inserti32x4(res, quant16(xr + 32, kvalid - 32, inv), 2);
    res = _mm512_inserti32x4(res, quant16(xr + 48, kvalid - 48, inv), 3);
    return res;
}

/* pack_xq (fp32 X, quantized with inverse scales inv) and pack_xq_raw (int8 X, offset; raw is a
 * compile-time constant after inlining) in one body: 16 tokens x 16 quads (64 bytes of u8 =
 * x_q + 128 per token) per transpose; tokens past nb and columns past n_in hold u = 128. */
static inline __attribute__((always_inline)) void pack_quads(const void *X, int raw, int64_t ldX, int64_t nb,
                                                             int64_t n_in, int64_t q0, int64_t q1, const float *inv,
                                                             uint8_t *xq, const sk_tiling *tl)
{
    const __m512i pad = _mm512_set1_epi32((int)0x80808080u);
    const int64_t kend = 4 * q1 < n_in ? 4 * q1 : n_in;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        int32_t *xb = (int32_t *)(xq + tile->offset);
        const int64_t w = tile->width;
        for (int64_t tg = 0; tg < w; tg += 16) {
            const int64_t t = tile->t0 + tg;
            for (int64_t qa = q0; qa < q1; qa += 16) {
                const int64_t nqv = q1 - qa < 16 ? q1 - qa : 16;
                int64_t n = kend - 4 * qa; /* valid input columns of the 64 */
                n = n < 0 ? 0 : (n > 64 ? 64 : n);
                const __mmask64 m = n == 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
                __m512i r[16];
                for (int l = 0; l < 16; l++) {
                    const int64_t off = (t + l) * ldX + 4 * qa;
                    if (t + l >= nb) r[l] = pad;
                    else if (raw) r[l] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, (const int8_t *)X + off), pad);
                    else r[l] = quant64((const float *)X + off, kend - 4 * qa, _mm512_set1_ps(inv[t + l]));
                }
                tr16((__m512 *)r);
                for (int l = 0; l < nqv; l++) _mm512_store_si512((void *)(xb + (qa + l) * w + tg), r[l]);
            }
        }
    }
}

static void pack_xq(const float *X, int64_t ldX, int64_t nb, int64_t n_in, int64_t q0, int64_t q1,
                    const float *inv, uint8_t *xq, const sk_tiling *tl, int64_t nq)
{
    (void)nq;
    pack_quads(X, 0, ldX, nb, n_in, q0, q1, inv, xq, tl);
}

static void pack_xq_raw(const int8_t *X, int64_t ldX, int64_t nb, int64_t n_in, int64_t q0, int64_t q1,
                        uint8_t *xq, const sk_tiling *tl, int64_t nq)
{
    (void)nq;
    pack_quads(X, 1, ldX, nb, n_in, q0, q1, NULL, xq, tl);
}

static void unpack_int8(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, float *Y,
                        int64_t ldY, const float *bias, const float *R, const float *sw, const int32_t *comp,
                        const float *sx, int act)
{
    for (int64_t t = 0; t < ntok; t += 16) {
        const int64_t nt = ntok - t < 16 ? ntok - t : 16;
        for (int64_t r0 = 0; r0 < nrows; r0 += 16) {
            const int64_t nr = nrows - r0 < 16 ? nrows - r0 : 16;
            const __mmask16 rm = (__mmask16)((1u << nr) - 1u);
            const __m512 bv = bias ? _mm512_maskz_loadu_ps(rm, bias + r0) : _mm512_setzero_ps();
            const __m512 swv = _mm512_maskz_loadu_ps(rm, sw + r0);
            const __m512i cv = _mm512_maskz_loadu_epi32(rm, comp + r0);
            __m512i r[16];
            sk_load_tr16(scratch + r0 * lds + t, lds, nr, (__m512 *)r);
            float *yb = Y + t * ldY + r0;
            for (int l = 0; l < nt; l++) {
                const __m512 a = _mm512_cvtepi32_ps(_mm512_sub_epi32(r[l], cv));
                __m512 y = _mm512_fmadd_ps(a, _mm512_mul_ps(swv, _mm512_set1_ps(sx[t + l])), bv);
                if (act == SK_ACT_GELU) y = sk_gelu16(y);
                if (R) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(rm, R + (t + l) * ldY + r0));
                _mm512_mask_storeu_ps(yb + l * ldY, rm, y);
            }
        }
    }
}

static void unpack_i32(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, int32_t *Y,
                       int64_t ldY, const int32_t *comp)
{
    for (int64_t t = 0; t < ntok; t += 16) {
        const int64_t nt = ntok - t < 16 ? ntok - t : 16;
        for (int64_t r0 = 0; r0 < nrows; r0 += 16) {
            const int64_t nr = nrows - r0 < 16 ? nrows - r0 : 16;
            const __mmask16 rm = (__mmask16)((1u << nr) - 1u);
            const __m512i cv = _mm512_maskz_loadu_epi32(rm, comp + r0);
            __m512i r[16];
            sk_load_tr16(scratch + r0 * lds + t, lds, nr, (__m512 *)r);
            for (int l = 0; l < nt; l++)
                _mm512_mask_storeu_epi32(Y + (t + l) * ldY + r0, rm, _mm512_sub_epi32(r[l], cv));
        }
    }
}

static void rows_amax(const float *X, int64_t ldX, int64_t K, int64_t t0, int64_t t1, float *amax)
{
    const __m512 inf = _mm512_set1_ps(__builtin_inff());
    for (int64_t t = t0; t < t1; t++) {
        const float *xr = X + t * ldX;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            /* max(|x|, a): a NaN in x propagates as +inf via the unordered compare below */
            __m512 v0 = _mm512_abs_ps(_mm512_loadu_ps(xr + k)), v1 = _mm512_abs_ps(_mm512_loadu_ps(xr + k + 16));
            v0 = _mm512_mask_mov_ps(v0, _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q), inf);
            v1 = _mm512_mask_mov_ps(v1, _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q), inf);
            a0 = _mm512_max_ps(a0, v0);
            a1 = _mm512_max_ps(a1, v1);
        }
        for (; k < K; k += 16) {
            const int64_t n = K - k < 16 ? K - k : 16;
            __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), xr + k));
            v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), inf);
            a0 = _mm512_max_ps(a0, v);
        }
        amax[t] = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
    }
}

static void quant_rows(const float *X, int64_t ntok, int64_t N, int8_t *Q, float *scale)
{
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    for (int64_t t = 0; t < ntok; t++) {
        const float *x = X + t * N;
        float a;
        rows_amax(x, N, N, 0, 1, &a);
        const int ok = a >= SK_RANGE_MIN && a <= SK_RANGE_MAX;
        const __m512 inv = _mm512_set1_ps(ok ? 127.0f / a : 0.0f);
        scale[t] = sk_range_scale(a);
        if (!ok) {
            memset(Q + t * N, 0, (size_t)N);
            continue;
        }
        for (int64_t i = 0; i < N; i += 16) {
            const __mmask16 m = (__mmask16)((1u << (N - i < 16 ? N - i : 16)) - 1u);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv);
            v = _mm512_min_ps(_mm512_max_ps(v, lo), hi); /* NaN -> -127, as sk_quant1 */
            _mm_mask_storeu_epi8(Q + t * N + i, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
        }
    }
}

/* one dequantized + activated vector of mid_int8, its |y| folded into am (NaN as +inf) */
static inline __attribute__((always_inline)) void mid16(int32_t *p, __m512i cv, __m512 s, __m512 bv, int act,
                                                         __m512 *am)
{
    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_load_si512((const void *)p), cv)), s, bv);
    if (act == SK_ACT_GELU) y = sk_gelu16(y);
    _mm512_store_ps((float *)p, y);
    const __m512 v = _mm512_abs_ps(y);
    *am = _mm512_max_ps(*am, _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                                                _mm512_set1_ps(__builtin_inff())));
}

/* mid_int8 (see sk_common.h): unpack_int8's arithmetic (sw * sx, then one fmadd) on 16 tokens per
 * vector; per-token ranges as vertical maxima. A row's tokens are contiguous: rows outer, the
 * token vectors of a full 128-token block unrolled (their ranges and scales stay in registers). */
static void mid_int8(int32_t *acc, int64_t lds, int64_t nrows, int64_t nb, const float *bias, const float *sw,
                     const int32_t *comp, const float *sx, int act, float *amax)
{
    if (nb == 128) {
        __m512 am[8], sxv[8];
        for (int v = 0; v < 8; v++) am[v] = _mm512_loadu_ps(amax + 16 * v), sxv[v] = _mm512_loadu_ps(sx + 16 * v);
        for (int64_t r = 0; r < nrows; r++) {
            const __m512i cv = _mm512_set1_epi32(comp[r]);
            const __m512 swv = _mm512_set1_ps(sw[r]), bv = bias ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps();
            int32_t *p = acc + r * lds;
            for (int v = 0; v < 8; v++) mid16(p + 16 * v, cv, _mm512_mul_ps(swv, sxv[v]), bv, act, &am[v]);
        }
        for (int v = 0; v < 8; v++) _mm512_storeu_ps(amax + 16 * v, am[v]);
        return;
    }
    for (int64_t t = 0; t < nb; t += 16) {
        const int64_t n = nb - t < 16 ? nb - t : 16;
        const __mmask16 tm = (__mmask16)((1u << n) - 1u);
        const __m512 sxv = _mm512_maskz_loadu_ps(tm, sx + t);
        __m512 am = _mm512_maskz_loadu_ps(tm, amax + t);
        for (int64_t r = 0; r < nrows; r++)
            mid16(acc + r * lds + t, _mm512_set1_epi32(comp[r]), _mm512_mul_ps(_mm512_set1_ps(sw[r]), sxv),
                  bias ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps(), act, &am);
        _mm512_mask_storeu_ps(amax + t, tm, am);
    }
}

/* pack_mid (see sk_common.h): for 16 tokens, each quad's 4 channel rows quantized (quant_rows'
 * rule) and interleaved bytewise into one 32-bit word per token: no transpose */
static void pack_mid(const float *mid, int64_t ldm, int64_t n_in, int64_t nb, const float *inv, uint8_t *xq,
                     const sk_tiling *tl)
{
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    const __m512i off = _mm512_set1_epi32(128), pad = _mm512_set1_epi32((int)0x80808080u);
    const int64_t nq = (n_in + 3) / 4;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        int32_t *xb = (int32_t *)(xq + tile->offset);
        const int64_t w = tile->width;
        for (int64_t tg = 0; tg < w; tg += 16) {
            const int64_t t = tile->t0 + tg;
            const int64_t n = nb - t <= 0 ? 0 : (nb - t < 16 ? nb - t : 16);
            const __mmask16 tm = (__mmask16)((1u << n) - 1u);
            const __m512 invv = _mm512_maskz_loadu_ps(tm, inv + t);
            const __mmask16 keep = _mm512_mask_cmp_ps_mask(tm, invv, _mm512_setzero_ps(), _CMP_NEQ_OQ);
            const float *col = mid + t;
            for (int64_t q = 0; q < nq; q++) {
                __m512i word = _mm512_setzero_si512();
                for (int e = 0; e < 4; e++) {
                    const int64_t c = 4 * q + e;
                    __m512i u = off;
                    if (c < n_in) {
                        const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_load_ps(col + c * ldm), invv),
                                                                     lo), hi);
                        u = _mm512_add_epi32(_mm512_cvtps_epi32(v), off);
                    }
                    word = _mm512_or_si512(word, _mm512_slli_epi32(u, 8 * e));
                }
                _mm512_store_si512((void *)(xb + q * w + tg), _mm512_mask_mov_epi32(pad, keep, word));
            }
        }
    }
}

/* ------------------------------------------------------------------------------------
 * INT8 attention head (sk_kernels.attn_head_int8): Q K^T and P V with vpdpbusd. Scores are 16
 * keys wide (K packed [quads][keys][4 bytes], one broadcast 32-bit quad of q per step); the
 * probabilities leave the softmax as uint8 u = rint(255 e), the unsigned operand of vpdpbusd, and
 * meet V packed [key quads][channels][4 bytes], so each output vector is 16 channels wide.
 * ---------------------------------------------------------------------------------- */
enum { AR8 = SK_ATTN_ROWS };

/* 16 lanes of x * inv rounded to nearest even and clamped to [-127, 127] (quant_rows' rule) */
static inline __attribute__((always_inline)) __m512i qv16(__m512 x, __m512 inv)
{
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, inv), _mm512_set1_ps(-127.0f)),
                                   _mm512_set1_ps(127.0f));
    return _mm512_cvtps_epi32(v);
}

/* 255 e^(s - m) for s <= m: 2^t with t = (s - m) log2(e) split into n + f (|f| <= 1/2), 2^f by a
 * degree-3 polynomial (relative error < 8e-5, far below the 1/255 of the uint8 it is rounded to),
 * t clamped at -126 so masked keys (-inf) and NaN give 0. s - m is formed first, as the scalar
 * variant's expf(s - m) does: s log2(e) - m log2(e) would carry m log2(e)'s rounding, half a power
 * of two at scores of 1e7 and whole powers beyond 1.2e7. */
static inline __attribute__((always_inline)) __m512 exp255(__m512 s, __m512 m)
{
    const __m512 t = _mm512_max_ps(_mm512_mul_ps(_mm512_sub_ps(s, m), _mm512_set1_ps(1.44269504088896341f)),
                                   _mm512_set1_ps(-126.0f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(255.0f * 0.05508876591920853f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.0f * 0.24260465800762177f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.0f * 0.6932762861251831f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.0f * 0.999928891658783f));
    return _mm512_scalef_ps(p, n);
}

static inline int32_t load_i32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* 16 rows x 16 channels from c0 (rows past nr and channels past dh read as 0), transposed: r[d]
 * holds channel c0 + d of the 16 rows */
static inline __attribute__((always_inline)) void load_tr_rows(const float *x, int64_t ld, int64_t nr, int64_t c0,
                                                               int64_t dh, __m512 r[16])
{
    const int64_t nd = dh - c0 < 16 ? dh - c0 : 16;
    const __mmask16 m = (__mmask16)((1u << nd) - 1u);
    for (int l = 0; l < 16; l++) r[l] = l < nr ? _mm512_maskz_loadu_ps(m, x + l * ld + c0) : _mm512_setzero_ps();
    tr16(r);
}

/* |x| with NaN as +inf (the range rule of rows_amax) */
static inline __attribute__((always_inline)) __m512 abs_nan_inf(__m512 x)
{
    x = _mm512_abs_ps(x);
    return _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_set1_ps(__builtin_inff()));
}

/* inverse scales of 16 rows from their ranges am by quant_rows' rule (0 for a zero or non-finite
 * range), the scales amax / 127 into *scale */
static inline __attribute__((always_inline)) __m512 lanes_inv(__m512 am, __m512 *scale)
{
    const __mmask16 ok = _mm512_cmp_ps_mask(am, _mm512_set1_ps(SK_RANGE_MIN), _CMP_GE_OQ) &
                         _mm512_cmp_ps_mask(am, _mm512_set1_ps(SK_RANGE_MAX), _CMP_LE_OQ);
    *scale = _mm512_maskz_div_ps(ok, am, _mm512_set1_ps(127.0f));
    return _mm512_maskz_div_ps(ok, _mm512_set1_ps(127.0f), am);
}

/* inverse scales (lanes_inv) of rows [0, nr) of x (row stride ld, dh channels), 16 rows at a time:
 * each row's range is the vertical max of its transposed channel vectors; lanes past nr get 0 */
static inline __attribute__((always_inline)) __m512 rows16_inv(const float *x, int64_t ld, int64_t nr, int64_t dh,
                                                               __m512 *scale)
{
    __m512 r[16], am = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < dh; c0 += 16) {
        load_tr_rows(x, ld, nr, c0, dh, r);
        for (int d = 0; d < 16; d++) am = _mm512_max_ps(am, abs_nan_inf(r[d]));
    }
    return lanes_inv(am, scale);
}

/* Quantize and lay out one head (sk_attn8). Keys and queries go 16 rows at a time through 16 x 16
 * transposes, so a row's range is a vertical max over channel vectors (no horizontal reduction
 * per row) and, for keys, four quantized channel vectors interleaved bytewise are one
 * [quad][16 keys][4] vector of k8. */
static void attn8_pack(sk_attn8 *a, const float *q, const float *k, const float *v, int64_t ld, const float *kb)
{
    const int64_t S = a->S, Sp = a->Sp, dh = a->dh, nq = a->nq, dhp = a->dhp, nc = dhp / 16;
    const __m512i lo8 = _mm512_set1_epi32(0xff);
    for (int64_t j0 = 0; j0 < Sp; j0 += 16) {
        const int64_t nk = S - j0 < 16 ? S - j0 : 16;
        const float *kr = k + j0 * ld;
        __m512 r[16], sc;
        const __m512 inv = rows16_inv(kr, ld, nk, dh, &sc);
        _mm512_store_ps(a->ksc + j0, sc);
        __m512i sum = _mm512_setzero_si512();
        for (int64_t c = 0; c < nc; c++) {
            load_tr_rows(kr, ld, nk, c * 16, dh, r);
            for (int t = 0; t < 4 && c * 4 + t < nq; t++) {
                __m512i w = _mm512_setzero_si512();
                for (int e = 0; e < 4; e++) {
                    const __m512i qi = qv16(r[4 * t + e], inv);
                    sum = _mm512_add_epi32(sum, qi);
                    w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(qi, lo8), 8 * e));
                }
                _mm512_store_si512((void *)(a->k8 + ((c * 4 + t) * Sp + j0) * 4), w);
            }
        }
        _mm512_store_si512((void *)(a->kcomp + j0), _mm512_slli_epi32(sum, 7)); /* 128 * sum */
        for (int64_t l = 0; l < 16; l++) a->bias[j0 + l] = l < nk ? sk_attn8_key_bias(kb, j0 + l) : -__builtin_inff();
    }
    /* values: one scale per channel over the head's unmasked keys; quads of 4 keys, channels contiguous */
    const int every = sk_attn8_every_key(kb, S);
    for (int64_t c = 0; c < nc; c++) {
        const int64_t nd = dh - c * 16 < 16 ? (dh - c * 16 > 0 ? dh - c * 16 : 0) : 16;
        const __mmask16 m = (__mmask16)((1u << nd) - 1u);
        __m512 am = _mm512_setzero_ps(), sc;
        for (int64_t j = 0; j < S; j++)
            if (every || !(kb[j] <= SK_KEY_MASKED))
                am = _mm512_max_ps(am, abs_nan_inf(_mm512_maskz_loadu_ps(m, v + j * ld + c * 16)));
        const __m512 inv = lanes_inv(am, &sc);
        _mm512_store_ps(a->vsc + c * 16, sc);
        for (int64_t jq = 0; jq < Sp / 4; jq++) {
            __m512i w = _mm512_setzero_si512();
            for (int e = 0; e < 4; e++) {
                const int64_t j = jq * 4 + e;
                if (j >= S) break;
                const __m512i qi = qv16(_mm512_maskz_loadu_ps(m, v + j * ld + c * 16), inv);
                w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(qi, lo8), 8 * e));
            }
            _mm512_store_si512((void *)(a->v8 + (jq * dhp + c * 16) * 4), w);
        }
    }
    /* queries: like keys, [quad][16 queries][4] vectors of q8 + 128 (the unsigned operand) */
    const __m512i off = _mm512_set1_epi32(128);
    for (int64_t i0 = 0; i0 < S; i0 += 16) {
        const int64_t nr = S - i0 < 16 ? S - i0 : 16;
        const float *qr = q + i0 * ld;
        __m512 r[16], sc;
        const __m512 inv = rows16_inv(qr, ld, nr, dh, &sc);
        _mm512_store_ps(a->qsc + i0, sc);
        for (int64_t c = 0; c < nc; c++) {
            load_tr_rows(qr, ld, nr, c * 16, dh, r);
            for (int t = 0; t < 4 && c * 4 + t < nq; t++) {
                __m512i w = _mm512_setzero_si512();
                for (int e = 0; e < 4; e++) /* channels past dh: q8 = 0, u = 128 */
                    w = _mm512_or_si512(w, _mm512_slli_epi32(
                        _mm512_and_si512(_mm512_add_epi32(qv16(r[4 * t + e], inv), off), lo8), 8 * e));
                _mm512_store_si512((void *)(a->q8 + ((c * 4 + t) * Sp + i0) * 4), w);
            }
        }
    }
}

/* Prefetch (to L2) rows [i0, i1) of the next head's q, k and v: dh floats to the right of this
 * head's, where the next work item of the attention loop usually reads (a prefetch never faults,
 * so past the end of the buffer it is only wasted). The packing of a head otherwise waits on
 * memory for each of its rows, one or two lines per row at a stride of 3 * hidden floats. */
static inline void prefetch_next_head(const float *q, const float *k, const float *v, int64_t ld, int64_t dh,
                                      int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++)
        for (int64_t d = 0; d < dh; d += 16) {
            _mm_prefetch((const char *)(q + i * ld + dh + d), _MM_HINT_T1);
            _mm_prefetch((const char *)(k + i * ld + dh + d), _MM_HINT_T1);
            _mm_prefetch((const char *)(v + i * ld + dh + d), _MM_HINT_T1);
        }
}

/* Quantize and lay out one head (sk_attn8) from channel-major q, k, v (channel d of row i at
 * x[d * ld + i]), with attn8_pack's arithmetic on the same values, so the same bytes and scales.
 * Keys are already in the layout k8 needs (a vector of 16 keys per channel): ranges are vertical
 * maxima over the channel rows and four quantized rows interleave bytewise into a k8 vector.
 * Values and queries need vectors of channels per row: 16 x 16 transposes. */
static void attn8_pack_cm(sk_attn8 *a, const float *q, const float *k, const float *v, int64_t ld, const float *kb)
{
    const int64_t S = a->S, Sp = a->Sp, dh = a->dh, nq = a->nq, dhp = a->dhp, nc = dhp / 16;
    const __m512i lo8 = _mm512_set1_epi32(0xff);
    for (int64_t j0 = 0; j0 < Sp; j0 += 16) {
        const int64_t nk = S - j0 < 16 ? (S - j0 > 0 ? S - j0 : 0) : 16;
        const __mmask16 km = (__mmask16)((1u << nk) - 1u);
        __m512 am = _mm512_setzero_ps(), sc;
        for (int64_t d = 0; d < dh; d++) am = _mm512_max_ps(am, abs_nan_inf(_mm512_maskz_loadu_ps(km, k + d * ld + j0)));
        const __m512 inv = lanes_inv(am, &sc);
        _mm512_store_ps(a->ksc + j0, sc);
        __m512i sum = _mm512_setzero_si512();
        for (int64_t c = 0; c < nq; c++) {
            __m512i w = _mm512_setzero_si512();
            for (int e = 0; e < 4 && 4 * c + e < dh; e++) {
                const __m512i qi = qv16(_mm512_maskz_loadu_ps(km, k + (4 * c + e) * ld + j0), inv);
                sum = _mm512_add_epi32(sum, qi);
                w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(qi, lo8), 8 * e));
            }
            _mm512_store_si512((void *)(a->k8 + (c * Sp + j0) * 4), w);
        }
        _mm512_store_si512((void *)(a->kcomp + j0), _mm512_slli_epi32(sum, 7)); /* 128 * sum */
        for (int64_t l = 0; l < 16; l++) a->bias[j0 + l] = l < nk ? sk_attn8_key_bias(kb, j0 + l) : -__builtin_inff();
    }
    /* values: one scale per channel (a horizontal max over the channel's row of unmasked keys) */
    const int every = sk_attn8_every_key(kb, S);
    const __m512 masked_at = _mm512_set1_ps(SK_KEY_MASKED); /* a key counts when its bias is not <= this */
    for (int64_t c = 0; c < nc; c++) {
        const int64_t nd = dh - c * 16 < 16 ? (dh - c * 16 > 0 ? dh - c * 16 : 0) : 16;
        float amc[16] = {0};
        for (int64_t d = 0; d < nd; d++) {
            const float *vr = v + (c * 16 + d) * ld;
            __m512 m = _mm512_setzero_ps();
            for (int64_t j0 = 0; j0 < S; j0 += 16) { /* keys past S and masked keys read 0 */
                const __mmask16 km = every ? (__mmask16)((1u << (S - j0 < 16 ? S - j0 : 16)) - 1u)
                                           : _mm512_cmp_ps_mask(_mm512_load_ps(a->bias + j0), masked_at, _CMP_NLE_UQ);
                m = _mm512_max_ps(m, abs_nan_inf(_mm512_maskz_loadu_ps(km, vr + j0)));
            }
            amc[d] = _mm512_reduce_max_ps(m);
        }
        __m512 sc, r[16];
        const __m512 inv = lanes_inv(_mm512_loadu_ps(amc), &sc);
        _mm512_store_ps(a->vsc + c * 16, sc);
        for (int64_t j0 = 0; j0 < Sp; j0 += 16) {
            load_tr_rows(v + c * 16 * ld, ld, nd, j0, S, r); /* r[e]: the 16 channels of key j0 + e */
            for (int64_t t = 0; t < 4; t++) {
                __m512i w = _mm512_setzero_si512();
                for (int e = 0; e < 4; e++)
                    w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(qv16(r[4 * t + e], inv), lo8), 8 * e));
                _mm512_store_si512((void *)(a->v8 + ((j0 / 4 + t) * dhp + c * 16) * 4), w);
            }
        }
    }
    /* queries: like keys (vertical ranges, bytewise interleave), + 128 (the unsigned operand) */
    const __m512i off = _mm512_set1_epi32(128);
    for (int64_t i0 = 0; i0 < S; i0 += 16) {
        const int64_t nr = S - i0 < 16 ? S - i0 : 16;
        const __mmask16 qm = (__mmask16)((1u << nr) - 1u);
        __m512 am = _mm512_setzero_ps(), sc;
        for (int64_t d = 0; d < dh; d++) am = _mm512_max_ps(am, abs_nan_inf(_mm512_maskz_loadu_ps(qm, q + d * ld + i0)));
        const __m512 inv = lanes_inv(am, &sc);
        _mm512_store_ps(a->qsc + i0, sc);
        for (int64_t c = 0; c < nq; c++) {
            __m512i w = _mm512_setzero_si512();
            for (int e = 0; e < 4; e++) {
                const int64_t d = 4 * c + e; /* channels past dh: q8 = 0, u = 128 */
                const __m512 x = d < dh ? _mm512_maskz_loadu_ps(qm, q + d * ld + i0) : _mm512_setzero_ps();
                w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(_mm512_add_epi32(qv16(x, inv), off), lo8), 8 * e));
            }
            _mm512_store_si512((void *)(a->q8 + (c * Sp + i0) * 4), w);
        }
    }
}

/* Q K^T, softmax and P V of a packed head (sk_attn8) into o; q, k, v, ld: the token-major rows to
 * prefetch for the next head (q NULL: none) */
static void attn8_run(const sk_attn8 *ap, float scale, float *o, int64_t ldo, const float *q, const float *k,
                      const float *v, int64_t ld)
{
    const sk_attn8 a = *ap;
    const int64_t S = a.S, dh = a.dh, Sp = a.Sp, nj = Sp / 16, nq = a.nq, dhp = a.dhp, nc = dhp / 16,
                  nkq = (S + 3) / 4;
    for (int64_t i0 = 0; i0 < S; i0 += AR8) {
        const int64_t nr = S - i0 < AR8 ? S - i0 : AR8;
        if (q) prefetch_next_head(q, k, v, ld, dh, i0, i0 + nr);
        const uint8_t *qr[AR8]; /* rows past the end repeat the last one (computed, never stored) */
        __m512 rs[AR8], mx[AR8];
        for (int r = 0; r < AR8; r++) {
            const int64_t i = i0 + (r < nr ? r : nr - 1);
            qr[r] = a.q8 + i * 4;
            rs[r] = _mm512_set1_ps(a.qsc[i] * scale);
            mx[r] = _mm512_set1_ps(-__builtin_inff());
        }
        /* scores: two 16-key vectors x AR8 rows per step */
        for (int64_t jv = 0; jv < nj; jv += 2) {
            const int two = jv + 1 < nj;
            __m512i acc0[AR8], acc1[AR8];
            for (int r = 0; r < AR8; r++) acc0[r] = acc1[r] = _mm512_setzero_si512();
            for (int64_t c = 0; c < nq; c++) {
                const int8_t *kc = a.k8 + (c * Sp + jv * 16) * 4;
                const __m512i k0 = _mm512_load_si512((const void *)kc);
                const __m512i k1 = two ? _mm512_load_si512((const void *)(kc + 64)) : _mm512_setzero_si512();
                for (int r = 0; r < AR8; r++) {
                    const __m512i qb = _mm512_set1_epi32(load_i32(qr[r] + c * Sp * 4));
                    acc0[r] = _mm512_dpbusd_epi32(acc0[r], qb, k0);
                    acc1[r] = _mm512_dpbusd_epi32(acc1[r], qb, k1);
                }
            }
            for (int h = 0; h <= two; h++) {
                const int64_t j = (jv + h) * 16;
                const __m512i comp = _mm512_load_si512((const void *)(a.kcomp + j));
                const __m512 ks = _mm512_load_ps(a.ksc + j), bv = _mm512_load_ps(a.bias + j);
                for (int r = 0; r < AR8; r++) {
                    const __m512 d = _mm512_cvtepi32_ps(_mm512_sub_epi32(h ? acc1[r] : acc0[r], comp));
                    const __m512 sc = _mm512_add_ps(_mm512_mul_ps(d, _mm512_mul_ps(ks, rs[r])), bv);
                    _mm512_store_ps(a.p + r * Sp + j, sc);
                    mx[r] = _mm512_max_ps(sc, mx[r]); /* a NaN score is skipped, as by the scalar sj > m */
                }
            }
        }
        /* softmax numerators, quantized to u = rint(255 e) */
        float il[AR8];
        for (int r = 0; r < AR8; r++) {
            const float m = _mm512_reduce_max_ps(mx[r]);
            if (!(m > -__builtin_inff())) { /* every key masked (or NaN scores): zeros */
                memset(a.pu + r * Sp, 0, (size_t)Sp);
                il[r] = 0.0f;
                continue;
            }
            const __m512 mv = _mm512_set1_ps(m);
            __m512i sum = _mm512_setzero_si512();
            for (int64_t jv = 0; jv < nj; jv++) {
                const __m512i u = _mm512_cvtps_epi32(exp255(_mm512_load_ps(a.p + r * Sp + jv * 16), mv));
                _mm_store_si128((__m128i *)(a.pu + r * Sp + jv * 16), _mm512_cvtepi32_epi8(u));
                sum = _mm512_add_epi32(sum, u);
            }
            const int32_t L = _mm512_reduce_add_epi32(sum);
            il[r] = L > 0 ? 1.0f / (float)L : __builtin_nanf(""); /* L = 0 only when a score overflows to +inf: NaN, as fp32 softmax gives */
        }
        /* P V: two 16-channel vectors x AR8 rows per step, 4 keys per vpdpbusd */
        for (int64_t c = 0; c < nc; c += 2) {
            const int two = c + 1 < nc;
            __m512i o0[AR8], o1[AR8];
            for (int r = 0; r < AR8; r++) o0[r] = o1[r] = _mm512_setzero_si512();
            for (int64_t jq = 0; jq < nkq; jq++) {
                const int8_t *vc = a.v8 + (jq * dhp + c * 16) * 4;
                const __m512i v0 = _mm512_load_si512((const void *)vc);
                const __m512i v1 = two ? _mm512_load_si512((const void *)(vc + 64)) : _mm512_setzero_si512();
                for (int r = 0; r < AR8; r++) {
                    const __m512i pb = _mm512_set1_epi32(load_i32(a.pu + r * Sp + jq * 4));
                    o0[r] = _mm512_dpbusd_epi32(o0[r], pb, v0);
                    o1[r] = _mm512_dpbusd_epi32(o1[r], pb, v1);
                }
            }
            for (int h = 0; h <= two; h++) {
                const int64_t d0 = (c + h) * 16;
                const int64_t nd = dh - d0 < 16 ? dh - d0 : 16;
                if (nd <= 0) break;
                const __mmask16 m = (__mmask16)((1u << nd) - 1u);
                const __m512 sv = _mm512_load_ps(a.vsc + d0);
                for (int r = 0; r < nr; r++) {
                    const __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(h ? o1[r] : o0[r]),
                                                   _mm512_mul_ps(sv, _mm512_set1_ps(il[r])));
                    _mm512_mask_storeu_ps(o + (i0 + r) * ldo + d0, m, y);
                }
            }
        }
    }
}

static void attn_head_int8(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                           float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    sk_attn8 a;
    sk_attn8_parts(S, dh, &a, scratch);
    attn8_pack(&a, q, k, v, ld, kb);
    attn8_run(&a, scale, o, ldo, q, k, v, ld);
}

static void attn_head_int8_cm(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                              float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    sk_attn8 a;
    sk_attn8_parts(S, dh, &a, scratch);
    attn8_pack_cm(&a, q, k, v, ld, kb);
    attn8_run(&a, scale, o, ldo, NULL, NULL, NULL, 0);
}

const sk_kernels sk_kernels_vnni = {
    "vnni", sk_avx512_tile_fp32, sk_avx512_pack_x, sk_avx512_unpack_y,
    sk_vnni_tile_int8, pack_xq, pack_xq_raw, unpack_int8, rows_amax, unpack_i32, sk_avx512_attn_head,
    sk_avx512_layer_norm, quant_rows, attn_head_int8, mid_int8, pack_mid, attn_head_int8_cm,
};
#endif
