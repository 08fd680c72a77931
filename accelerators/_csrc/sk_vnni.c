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

#define QROWLOOP(FN, NVV)                                                                  \
    for (int64_t br = br0; br < br1; br++) {                                               \
        int32_t *o = scratch + (br - br0) * bh * lds + tile->t0;                           \
        for (int64_t s = 0; s < nvt; s += (NVV))                                           \
            FN(idx, qval, ptr[br], ptr[br + 1], xb + s * VW, w, o + s * VW, lds, 0);       \
    }

static void tile_int8(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval,
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
            if (nvt >= 4) { QROWLOOP(mq_b1_v4, 4) }
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
        default:
            if (nvt >= 2) { QROWLOOP(mq_b8_v2, 2) }
            else { QROWLOOP(mq_b8_v1, 1) }
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
        const int ok = a > 0.0f && a <= 3.0e38f;
        const __m512 inv = _mm512_set1_ps(ok ? 127.0f / a : 0.0f);
        scale[t] = ok ? a / 127.0f : 0.0f;
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

const sk_kernels sk_kernels_vnni = {
    "vnni", sk_avx512_tile_fp32, sk_avx512_pack_x, sk_avx512_unpack_y,
    tile_int8, pack_xq, pack_xq_raw, unpack_int8, rows_amax, unpack_i32, sk_avx512_attn_head,
    sk_avx512_layer_norm, quant_rows,
};
#endif
