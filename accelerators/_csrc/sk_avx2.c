/* AVX2 + FMA kernels (8 fp32 lanes, 16 ymm registers). */
#include "sk_common.h"
#ifdef SK_HAVE_X86
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define VEC __m256
#define VW 8
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_load_ps(p)
#define VSET1(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VSTORE(p, v) _mm256_store_ps((p), (v))

/* micro-kernels (sk_mk.inc.h): name, rows per block, vectors per row, unrolled accumulator sets */
#define MK mk_b1_v2, 1, 2, 4
#include "sk_mk.inc.h"
#define MK mk_b1_v4, 1, 4, 2
#include "sk_mk.inc.h"
#define MK mk_b2_v2, 2, 2, 2
#include "sk_mk.inc.h"
#define MK mk_b2_v4, 2, 4, 1
#include "sk_mk.inc.h"
#define MK mk_b4_v2, 4, 2, 1
#include "sk_mk.inc.h"
#define MK mk_b8_v1, 8, 1, 1
#include "sk_mk.inc.h"

static void tile_fp32(int bh, const sk_segs *sg, const float *xt, const sk_tiling *tl, float *scratch, int64_t lds)
{
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        const int64_t nvt = w / VW; /* even */
        switch (bh) {
        case 1:
            if (nvt % 4 == 0) { SK_SEGLOOP(mk_b1_v4, 4) } else { SK_SEGLOOP(mk_b1_v2, 2) }
            break;
        case 2:
            if (nvt % 4 == 0) { SK_SEGLOOP(mk_b2_v4, 4) } else { SK_SEGLOOP(mk_b2_v2, 2) }
            break;
        case 4:
            SK_SEGLOOP(mk_b4_v2, 2)
            break;
        default:
            SK_SEGLOOP(mk_b8_v1, 1)
            break;
        }
    }
}

/* ---- INT8 without VNNI: the signed-pair product (sk_mq_signed.inc.h) on 8-token vectors ---- */
#define Q_NV_MAX 8 /* 8 accumulators + 2 constants + weight, |weight| and 3 temporaries: 16 ymm */
#define QV __m256i
#define QW 8
#define QZERO() _mm256_setzero_si256()
#define QLOAD(p) _mm256_load_si256((const __m256i *)(p))
#define QSTORE(p, v) _mm256_store_si256((__m256i *)(p), (v))
#define QXOR(a, b) _mm256_xor_si256((a), (b))
#define QADD32(a, b) _mm256_add_epi32((a), (b))
#define QSET1_8(x) _mm256_set1_epi8(x)
#define QSET1_16(x) _mm256_set1_epi16(x)
#define QSET1_32(x) _mm256_set1_epi32(x)
#define QABS8(v) _mm256_abs_epi8(v)
#define QSIGN_T __m256i
#define QSIGN_OF(wv) (wv)
#define QAPPLY_SIGN(x, s) _mm256_sign_epi8((x), (s))
#define QMADDUBS(a, b) _mm256_maddubs_epi16((a), (b))
#define QMADDWD(a, b) _mm256_madd_epi16((a), (b))
#include "sk_mq_signed.inc.h"

static void tile_int8(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval, int64_t br0, int64_t br1,
                      const uint8_t *xq, const sk_tiling *tl, int64_t nq, int32_t *scratch, int64_t lds)
{
    (void)nq;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const int32_t *xb = (const int32_t *)(xq + tile->offset);
        const int64_t w = tile->width, nvt = w / 8; /* tokens = int32 words per quad row; nvt even */
        switch (bh) {
        case 1: Q_ROWLOOP(1, 8) break;
        case 2: Q_ROWLOOP(2, 4) break;
        case 4: Q_ROWLOOP(4, 2) break;
        case 8: Q_ROWLOOP(8, 1) break;
        default: Q_ROWLOOP(16, 1) break; /* 16x4 blocks: two slices of 8 rows */
        }
    }
}

/* ---- layout changes and quantization around the INT8 product ------------------------- */

/* In-register 8x8 transpose of 32-bit lanes r[0..7] (float or int32 data). */
static inline __attribute__((always_inline)) void tr8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

/* lane mask of the first n (0..8) 32-bit lanes */
static inline __attribute__((always_inline)) __m256i lanes(int64_t n)
{
    n = n < 0 ? 0 : (n > 8 ? 8 : n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* 8 fp32 -> int32 x_q by quant_rows' rule: rint(x * inv) clamped to [-127, 127], NaN -> -127 */
static inline __attribute__((always_inline)) __m256i quant8(__m256 x, __m256 inv)
{
    __m256 v = _mm256_max_ps(_mm256_mul_ps(x, inv), _mm256_set1_ps(-127.0f)); /* NaN -> 2nd operand */
    return _mm256_cvtps_epi32(_mm256_min_ps(v, _mm256_set1_ps(127.0f)));
}

/* 32 int32 in [-128, 127] (a: channels 0-7, b: 8-15, c: 16-23, d: 24-31) -> 32 bytes x ^ 0x80 (u = x + 128) in order */
static inline __attribute__((always_inline)) __m256i bytes32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d); /* per 128-bit lane */
    const __m256i x = _mm256_packs_epi16(ab, cd); /* a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7 (4-byte groups) */
    const __m256i u = _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    return _mm256_xor_si256(u, _mm256_set1_epi8((char)0x80));
}

/* pack_xq (fp32 X with inverse scales inv) and pack_xq_raw (int8 X; raw is a compile-time
 * constant after inlining) in one body: 8 tokens x 8 quads (32 bytes of u per token) per 8x8
 * transpose; tokens past nb and columns past n_in hold u = 128. */
static inline __attribute__((always_inline)) void pack_quads(const void *X, int raw, int64_t ldX, int64_t nb,
                                                             int64_t n_in, int64_t q0, int64_t q1, const float *inv,
                                                             uint8_t *xq, const sk_tiling *tl)
{
    const __m256i pad = _mm256_set1_epi32((int)0x80808080u);
    const int64_t kend = 4 * q1 < n_in ? 4 * q1 : n_in;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        int32_t *xb = (int32_t *)(xq + tile->offset);
        const int64_t w = tile->width;
        for (int64_t tg = 0; tg < w; tg += 8) {
            const int64_t t = tile->t0 + tg;
            for (int64_t qa = q0; qa < q1; qa += 8) {
                const int64_t nqv = q1 - qa < 8 ? q1 - qa : 8, n = kend - 4 * qa; /* valid columns of the 32 */
                __m256i r[8];
                for (int l = 0; l < 8; l++) {
                    const int64_t off = (t + l) * ldX + 4 * qa;
                    if (t + l >= nb) {
                        r[l] = pad;
                    } else if (raw) {
                        const int8_t *xr = (const int8_t *)X + off;
                        if (n >= 32) {
                            r[l] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)xr), pad);
                        } else {
                            int8_t buf[32] = {0};
                            for (int64_t k = 0; k < n; k++) buf[k] = xr[k];
                            r[l] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)buf), pad);
                        }
                    } else {
                        const float *xr = (const float *)X + off;
                        const __m256 iv = _mm256_set1_ps(inv[t + l]);
                        __m256i v[4];
                        for (int g = 0; g < 4; g++) {
                            const __m256 x = n >= 8 * g + 8 ? _mm256_loadu_ps(xr + 8 * g)
                                                            : _mm256_maskload_ps(xr + 8 * g, lanes(n - 8 * g));
                            v[g] = quant8(x, iv); /* masked-off lanes load 0 -> x_q 0 */
                        }
                        r[l] = bytes32(v[0], v[1], v[2], v[3]);
                    }
                }
                tr8((__m256 *)r);
                for (int l = 0; l < nqv; l++) _mm256_store_si256((__m256i *)(xb + (qa + l) * w + tg), r[l]);
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

/* GELU as sk_gelu16 (sk_avx512_inline.h: the same piecewise cubics of Phi, within 1.7e-6
 * absolute), 8 lanes: the 16 coefficients of each power are two 8-lane tables, one permute each. */

static inline __attribute__((always_inline)) __m256 coef8(int c, __m256i k, __m256 hi)
{
    const __m256 lo8 = _mm256_permutevar8x32_ps(_mm256_load_ps(sk_gelu_pw[c]), k);
    const __m256 hi8 = _mm256_permutevar8x32_ps(_mm256_load_ps(sk_gelu_pw[c] + 8), k);
    return _mm256_blendv_ps(lo8, hi8, hi);
}

static inline __attribute__((always_inline)) __m256 gelu8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f), a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    const __m256 t = _mm256_mul_ps(a, _mm256_set1_ps(3.2f)); /* 16 / 5 */
    const __m256 kf = _mm256_floor_ps(t);
    const __m256i k = _mm256_cvttps_epi32(kf); /* lanes past 5 index garbage: replaced below */
    const __m256 hi = _mm256_castsi256_ps(_mm256_slli_epi32(k, 28)); /* sign bit = bit 3 of k: entries 8-15 */
    const __m256 u = _mm256_sub_ps(t, kf);
    __m256 p = coef8(3, k, hi);
    p = _mm256_fmadd_ps(p, u, coef8(2, k, hi));
    p = _mm256_fmadd_ps(p, u, coef8(1, k, hi));
    p = _mm256_fmadd_ps(p, u, coef8(0, k, hi));
    p = _mm256_blendv_ps(p, one, _mm256_cmp_ps(a, _mm256_set1_ps(5.0f), _CMP_GE_OQ));
    p = _mm256_blendv_ps(p, _mm256_sub_ps(one, p), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
    return _mm256_mul_ps(x, p);
}

/* Y (tokens x rows) from the scratch (rows x tokens), 8 x 8 blocks through tr8, and the Linear
 * epilogue (+ bias, GELU as gelu8 — the AVX-512 variants' approximation — + residual). int8 (a
 * compile-time constant after inlining): the scratch holds int32 sums and each value is first
 * dequantized with unpack_int8's arithmetic (sw * sx, then one fmadd, as before the merge);
 * fp32: the scratch holds the sums themselves. 8-token strips put at most 8 lines of one L1 set in
 * flight, so they are stored straight into Y (the AVX-512 variant stages its 16-token strips). */
static inline __attribute__((always_inline)) void unpack8(const void *scratch, int int8, int64_t lds, int64_t nrows,
                                                          int64_t ntok, float *Y, int64_t ldY, const float *bias,
                                                          const float *R, const float *sw, const int32_t *comp,
                                                          const float *sx, int act)
{
    for (int64_t t = 0; t < ntok; t += 8) {
        const int64_t nt = ntok - t < 8 ? ntok - t : 8;
        for (int64_t r0 = 0; r0 < nrows; r0 += 8) {
            const int64_t nr = nrows - r0 < 8 ? nrows - r0 : 8;
            const __m256i rm = lanes(nr);
            const __m256 bv = bias ? _mm256_maskload_ps(bias + r0, rm) : _mm256_setzero_ps();
            const __m256 swv = int8 ? _mm256_maskload_ps(sw + r0, rm) : _mm256_setzero_ps();
            const __m256i cv = int8 ? _mm256_maskload_epi32(comp + r0, rm) : _mm256_setzero_si256();
            __m256 r[8];
            for (int l = 0; l < 8; l++)
                r[l] = l < nr ? _mm256_load_ps((const float *)scratch + (r0 + l) * lds + t) : _mm256_setzero_ps();
            tr8(r); /* 32-bit lanes: int32 sums travel as float bit patterns */
            float *yb = Y + t * ldY + r0;
            for (int l = 0; l < nt; l++) {
                __m256 y;
                if (int8) {
                    const __m256 a = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_castps_si256(r[l]), cv));
                    y = _mm256_fmadd_ps(a, _mm256_mul_ps(swv, _mm256_set1_ps(sx[t + l])), bv);
                } else {
                    y = _mm256_add_ps(r[l], bv);
                }
                if (act == SK_ACT_GELU) y = gelu8(y);
                if (R) y = _mm256_add_ps(y, _mm256_maskload_ps(R + (t + l) * ldY + r0, rm));
                if (nr == 8) _mm256_storeu_ps(yb + l * ldY, y);
                else _mm256_maskstore_ps(yb + l * ldY, rm, y);
            }
        }
    }
}

static void unpack_int8(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, float *Y,
                        int64_t ldY, const float *bias, const float *R, const float *sw, const int32_t *comp,
                        const float *sx, int act)
{
    unpack8(scratch, 1, lds, nrows, ntok, Y, ldY, bias, R, sw, comp, sx, act);
}

static void unpack_y(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok, float *Y, int64_t ldY,
                     const float *bias, const float *R, int act)
{
    unpack8(scratch, 0, lds, nrows, ntok, Y, ldY, bias, R, NULL, NULL, NULL, act);
}

/* pack_x (fp32): X (tokens x K) into the tiles' transposed layout (k rows of w tokens), 8 tokens x
 * 8 columns per tr8; tokens past nb are zeros, as in sk_pack_x_generic. */
static void pack_x(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1, float *xt,
                   const sk_tiling *tl, int64_t n_in)
{
    (void)n_in;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        for (int64_t tg = 0; tg < w; tg += 8) {
            const int64_t t = tile->t0 + tg;
            const int64_t nt = nb - t < 0 ? 0 : (nb - t > 8 ? 8 : nb - t);
            for (int64_t k = k0; k < k1; k += 8) {
                const int64_t nk = k1 - k < 8 ? k1 - k : 8;
                const __m256i km = lanes(nk);
                __m256 r[8];
                for (int l = 0; l < 8; l++)
                    r[l] = l >= nt ? _mm256_setzero_ps()
                                   : (nk == 8 ? _mm256_loadu_ps(X + (t + l) * ldX + k)
                                              : _mm256_maskload_ps(X + (t + l) * ldX + k, km));
                tr8(r);
                for (int l = 0; l < nk; l++) _mm256_store_ps(xb + (k + l) * w + tg, r[l]);
            }
        }
    }
}

/* amax[t] = max_k |X[t, k]|, NaN as +inf */
static void rows_amax(const float *X, int64_t ldX, int64_t K, int64_t t0, int64_t t1, float *amax)
{
    const __m256 inf = _mm256_set1_ps(__builtin_inff()), sgn = _mm256_set1_ps(-0.0f);
    for (int64_t t = t0; t < t1; t++) {
        const float *xr = X + t * ldX;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256 v0 = _mm256_andnot_ps(sgn, _mm256_loadu_ps(xr + k)), v1 = _mm256_andnot_ps(sgn, _mm256_loadu_ps(xr + k + 8));
            v0 = _mm256_blendv_ps(v0, inf, _mm256_cmp_ps(v0, v0, _CMP_UNORD_Q));
            v1 = _mm256_blendv_ps(v1, inf, _mm256_cmp_ps(v1, v1, _CMP_UNORD_Q));
            a0 = _mm256_max_ps(a0, v0);
            a1 = _mm256_max_ps(a1, v1);
        }
        for (; k < K; k += 8) {
            __m256 v = _mm256_andnot_ps(sgn, _mm256_maskload_ps(xr + k, lanes(K - k)));
            v = _mm256_blendv_ps(v, inf, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            a0 = _mm256_max_ps(a0, v);
        }
        a0 = _mm256_max_ps(a0, a1);
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        amax[t] = _mm_cvtss_f32(m);
    }
}

/* quant_rows (see sk_common.h) */
static void quant_rows(const float *X, int64_t ntok, int64_t N, int8_t *Q, float *scale)
{
    for (int64_t t = 0; t < ntok; t++) {
        const float *x = X + t * N;
        float a;
        rows_amax(x, N, N, 0, 1, &a);
        const int ok = a >= SK_RANGE_MIN && a <= SK_RANGE_MAX;
        const __m256 inv = _mm256_set1_ps(ok ? 127.0f / a : 0.0f);
        scale[t] = sk_range_scale(a);
        int8_t *q = Q + t * N;
        if (!ok) {
            memset(q, 0, (size_t)N);
            continue;
        }
        int64_t i = 0;
        for (; i + 32 <= N; i += 32) {
            const __m256i u = bytes32(quant8(_mm256_loadu_ps(x + i), inv), quant8(_mm256_loadu_ps(x + i + 8), inv),
                                      quant8(_mm256_loadu_ps(x + i + 16), inv), quant8(_mm256_loadu_ps(x + i + 24), inv));
            _mm256_storeu_si256((__m256i *)(q + i), _mm256_xor_si256(u, _mm256_set1_epi8((char)0x80)));
        }
        for (; i < N; i++) q[i] = (int8_t)sk_quant1(x[i], 127.0f / a);
    }
}

/* one dequantized + activated vector of mid_int8, its |y| folded into am (NaN as +inf) */
static inline __attribute__((always_inline)) void mid8(int32_t *p, __m256i cv, __m256 s, __m256 bv, int act, __m256 *am)
{
    __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_load_si256((const __m256i *)p), cv)), s, bv);
    if (act == SK_ACT_GELU) y = gelu8(y);
    _mm256_store_ps((float *)p, y);
    const __m256 v = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), y);
    *am = _mm256_max_ps(*am, _mm256_blendv_ps(v, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}

/* mid_int8 (see sk_common.h): 8 tokens per vector, rows inner so the token ranges stay in a register */
static void mid_int8(int32_t *acc, int64_t lds, int64_t nrows, int64_t nb, const float *bias, const float *sw,
                     const int32_t *comp, const float *sx, int act, float *amax)
{
    for (int64_t t = 0; t < nb; t += 8) {
        const __m256i tm = lanes(nb - t);
        const __m256 sxv = _mm256_maskload_ps(sx + t, tm);
        __m256 am = _mm256_maskload_ps(amax + t, tm);
        for (int64_t r = 0; r < nrows; r++)
            mid8(acc + r * lds + t, _mm256_set1_epi32(comp[r]), _mm256_mul_ps(_mm256_set1_ps(sw[r]), sxv),
                 bias ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps(), act, &am);
        _mm256_maskstore_ps(amax + t, tm, am);
    }
}

/* pack_mid (see sk_common.h): for 8 tokens, each quad's 4 channel rows quantized and interleaved
 * bytewise into one 32-bit word per token: no transpose */
static void pack_mid(const float *mid, int64_t ldm, int64_t n_in, int64_t nb, const float *inv, uint8_t *xq,
                     const sk_tiling *tl)
{
    const __m256i off = _mm256_set1_epi32(128), pad = _mm256_set1_epi32((int)0x80808080u), bytes = _mm256_set1_epi32(0xff);
    const int64_t nq = (n_in + 3) / 4;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        int32_t *xb = (int32_t *)(xq + tile->offset);
        const int64_t w = tile->width;
        for (int64_t tg = 0; tg < w; tg += 8) {
            const int64_t t = tile->t0 + tg;
            const __m256i tm = lanes(nb - t);
            const __m256 invv = _mm256_maskload_ps(inv + t, tm);
            const __m256i keep = _mm256_and_si256(tm, _mm256_castps_si256(_mm256_cmp_ps(invv, _mm256_setzero_ps(), _CMP_NEQ_OQ)));
            const float *col = mid + t;
            for (int64_t q = 0; q < nq; q++) {
                __m256i word = _mm256_setzero_si256();
                for (int e = 0; e < 4; e++) {
                    const int64_t c = 4 * q + e;
                    __m256i u = off;
                    if (c < n_in) u = _mm256_add_epi32(quant8(_mm256_load_ps(col + c * ldm), invv), off);
                    word = _mm256_or_si256(word, _mm256_slli_epi32(_mm256_and_si256(u, bytes), 8 * e));
                }
                _mm256_store_si256((__m256i *)(xb + q * w + tg), _mm256_blendv_epi8(pad, word, keep));
            }
        }
    }
}

/* LayerNorm (see sk_common.h): the portable kernel's double-precision mean and centred variance
 * (4 doubles per vector), then one fp32 pass */
static void layer_norm(float *Y, int64_t ntok, int64_t N, const float *gamma, const float *beta, float eps, float *amax)
{
    for (int64_t t = 0; t < ntok; t++) {
        float *y = Y + t * N;
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        int64_t i = 0;
        for (; i + 8 <= N; i += 8) {
            const __m256 v = _mm256_loadu_ps(y + i);
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        }
        double d[4], sum = 0.0, sq = 0.0;
        _mm256_storeu_pd(d, _mm256_add_pd(s0, s1));
        sum = (d[0] + d[1]) + (d[2] + d[3]);
        for (; i < N; i++) sum += y[i];
        const double mean = N > 0 ? sum / (double)N : 0.0;
        const __m256d mv = _mm256_set1_pd(mean);
        s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        for (i = 0; i + 8 <= N; i += 8) {
            const __m256 v = _mm256_loadu_ps(y + i);
            const __m256d a = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), mv);
            const __m256d b = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), mv);
            s0 = _mm256_fmadd_pd(a, a, s0);
            s1 = _mm256_fmadd_pd(b, b, s1);
        }
        _mm256_storeu_pd(d, _mm256_add_pd(s0, s1));
        sq = (d[0] + d[1]) + (d[2] + d[3]);
        for (; i < N; i++) sq += (y[i] - mean) * (y[i] - mean);
        const float rstd = (float)(1.0 / sqrt((N > 0 ? sq / (double)N : 0.0) + (double)eps));
        const __m256 mf = _mm256_set1_ps((float)mean), rs = _mm256_set1_ps(rstd);
        for (i = 0; i + 8 <= N; i += 8) {
            const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(y + i), mf), rs), _mm256_loadu_ps(gamma + i));
            _mm256_storeu_ps(y + i, beta ? _mm256_add_ps(v, _mm256_loadu_ps(beta + i)) : v);
        }
        for (; i < N; i++) y[i] = (y[i] - (float)mean) * rstd * gamma[i] + (beta ? beta[i] : 0.0f);
        if (amax) rows_amax(y, N, N, 0, 1, amax + t);
    }
}

/* ---- fp32 attention head (attn_head) ------------------------------------------------
 * sk_avx512_attn_head's plan on 8 lanes: K transposed once into scratch (dh x Sp, keys contiguous),
 * V rows packed (S x dhp), SK_ATTN_ROWS query rows per block; two 8-key vectors x 4 rows of FMA
 * chains for the scores, two 8-channel chunks x 4 rows for P V (11 live registers of 16). */
enum { AF = SK_ATTN_ROWS };

/* e^y for y <= 0: sk_exp_nonpos16's reduction and polynomial on 8 lanes, 2^n built in the exponent
 * bits; y below -87 (including -inf for masked keys) and NaN give exactly 0 */
static inline __attribute__((always_inline)) __m256 exp8_nonpos(__m256 x)
{
    const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
    const __m256 y = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), y);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(e))); /* n >= -126: a normal 2^n */
}

static inline __attribute__((always_inline)) float hsum8(__m256 v)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

static inline __attribute__((always_inline)) float hmax8(__m256 v)
{
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}

static void attn_head(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh, float scale,
                      const float *kb, float *o, int64_t ldo, float *scratch)
{
    const int64_t Sp = (S + 15) / 16 * 16, ncv = (dh + 7) / 8, dhp = (dh + 15) / 16 * 16;
    float *kt = scratch, *bias = kt + dh * Sp, *p = bias + Sp, *vb = p + AF * Sp; /* sk_attn_scratch_floats */
    for (int64_t j = 0; j < S; j++) {
        for (int64_t d = 0; d < dh; d++) kt[d * Sp + j] = k[j * ld + d];
        for (int64_t c = 0; c < ncv; c++)
            _mm256_store_ps(vb + j * dhp + c * 8, _mm256_maskload_ps(v + j * ld + c * 8, lanes(dh - c * 8)));
    }
    for (int64_t d = 0; d < dh; d++)
        for (int64_t j = S; j < Sp; j++) kt[d * Sp + j] = 0.0f;
    for (int64_t j = 0; j < Sp; j++) bias[j] = j < S ? (kb ? kb[j] : 0.0f) : -__builtin_inff();
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int64_t i0 = 0; i0 < S; i0 += AF) {
        const int64_t nr = S - i0 < AF ? S - i0 : AF;
        const float *qr[AF]; /* rows past the end repeat the last one (computed, never stored) */
        __m256 mx[AF], nan[AF]; /* nan: lanes that saw a NaN score (max_ps below skips them) */
        float inv[AF];
        for (int r = 0; r < AF; r++) {
            qr[r] = q + (i0 + (r < nr ? r : nr - 1)) * ld;
            mx[r] = _mm256_set1_ps(-__builtin_inff());
            nan[r] = _mm256_setzero_ps();
        }
        /* scores: two 8-key vectors x AF rows per step (Sp is a multiple of 16) */
        for (int64_t j = 0; j < Sp; j += 16) {
            __m256 acc0[AF], acc1[AF];
            for (int r = 0; r < AF; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
            for (int64_t d = 0; d < dh; d++) {
                const __m256 k0 = _mm256_load_ps(kt + d * Sp + j), k1 = _mm256_load_ps(kt + d * Sp + j + 8);
                for (int r = 0; r < AF; r++) {
                    const __m256 qb = _mm256_broadcast_ss(qr[r] + d);
                    acc0[r] = _mm256_fmadd_ps(qb, k0, acc0[r]);
                    acc1[r] = _mm256_fmadd_ps(qb, k1, acc1[r]);
                }
            }
            for (int h = 0; h < 2; h++) {
                const __m256 bv = _mm256_load_ps(bias + j + 8 * h);
                for (int r = 0; r < AF; r++) {
                    const __m256 sc = _mm256_fmadd_ps(h ? acc1[r] : acc0[r], vscale, bv);
                    _mm256_store_ps(p + r * Sp + j + 8 * h, sc);
                    mx[r] = _mm256_max_ps(sc, mx[r]); /* a NaN sc keeps mx: the row max stays right */
                    nan[r] = _mm256_or_ps(nan[r], _mm256_cmp_ps(sc, sc, _CMP_UNORD_Q));
                }
            }
        }
        /* softmax: p <- exp(p - max), inv = 1 / sum; a row whose keys are all masked gets zeros
         * (inv 0), a row with a NaN score NaNs (inv NaN), as the scalar kernel */
        for (int r = 0; r < AF; r++) {
            const float m = hmax8(mx[r]);
            const int has_nan = _mm256_movemask_ps(nan[r]) != 0;
            if (has_nan || !(m > -__builtin_inff())) {
                memset(p + r * Sp, 0, sizeof(float) * (size_t)Sp);
                inv[r] = has_nan ? __builtin_nanf("") : 0.0f;
                continue;
            }
            const __m256 mv = _mm256_set1_ps(m);
            __m256 sum = _mm256_setzero_ps();
            for (int64_t j = 0; j < Sp; j += 8) {
                const __m256 e = exp8_nonpos(_mm256_sub_ps(_mm256_load_ps(p + r * Sp + j), mv));
                _mm256_store_ps(p + r * Sp + j, e);
                sum = _mm256_add_ps(sum, e);
            }
            inv[r] = 1.0f / hsum8(sum);
        }
        /* o = inv * p V: two 8-channel chunks x AF rows per step */
        for (int64_t c = 0; c < ncv; c += 2) {
            const int two = c + 1 < ncv;
            __m256 o0[AF], o1[AF];
            for (int r = 0; r < AF; r++) o0[r] = o1[r] = _mm256_setzero_ps();
            const float *vc = vb + c * 8;
            for (int64_t j = 0; j < S; j++) {
                const __m256 v0 = _mm256_load_ps(vc + j * dhp), v1 = two ? _mm256_load_ps(vc + j * dhp + 8) : _mm256_setzero_ps();
                for (int r = 0; r < AF; r++) {
                    const __m256 pb = _mm256_broadcast_ss(p + r * Sp + j);
                    o0[r] = _mm256_fmadd_ps(pb, v0, o0[r]);
                    o1[r] = _mm256_fmadd_ps(pb, v1, o1[r]);
                }
            }
            const __m256i m0 = lanes(dh - c * 8), m1 = lanes(two ? dh - c * 8 - 8 : 0);
            for (int r = 0; r < nr; r++) {
                const __m256 iv = _mm256_set1_ps(inv[r]);
                float *orow = o + (i0 + r) * ldo + c * 8;
                /* an all-masked row stores zeros, not 0 * V (an inf in V would make NaN) */
                const __m256 y0 = inv[r] == 0.0f ? _mm256_setzero_ps() : _mm256_mul_ps(o0[r], iv);
                const __m256 y1 = inv[r] == 0.0f ? _mm256_setzero_ps() : _mm256_mul_ps(o1[r], iv);
                _mm256_maskstore_ps(orow, m0, y0);
                if (two) _mm256_maskstore_ps(orow + 8, m1, y1);
            }
        }
    }
}

/* ---- INT8 attention head (attn_head_int8, attn_head_int8_cm) ---------------------------
 * sk_attn8's layouts and arithmetic (the bits of every variant's integer sums): Q K^T with the
 * signed form of the product above (q8 stored signed, k's sign moved onto it, |k| unsigned), so the
 * sums are q . k directly (no kcomp); the softmax numerators u = rint(255 e) in [0, 255] do not fit
 * vpmaddubsw's signed pairs with v, so P V runs on 16-bit lanes: v sign-extended (vpmovsxbw) and
 * u zero-extended, vpmaddwd per two keys, the two partial sums of a channel added at the end. */
enum { AR2 = SK_ATTN_ROWS };

/* |x| with NaN as +inf (the range rule of rows_amax) */
static inline __attribute__((always_inline)) __m256 abs_nan_inf8(__m256 x)
{
    x = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    return _mm256_blendv_ps(x, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* inverse scales from ranges am by quant_rows' rule (0 for a zero or non-finite range), amax / 127 into *scale */
static inline __attribute__((always_inline)) __m256 lanes_inv8(__m256 am, __m256 *scale)
{
    const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(am, _mm256_set1_ps(SK_RANGE_MIN), _CMP_GE_OQ),
                                    _mm256_cmp_ps(am, _mm256_set1_ps(SK_RANGE_MAX), _CMP_LE_OQ));
    *scale = _mm256_and_ps(ok, _mm256_div_ps(am, _mm256_set1_ps(127.0f)));
    return _mm256_and_ps(ok, _mm256_div_ps(_mm256_set1_ps(127.0f), am));
}

/* four int32 vectors of quantized channels (e = 0..3) interleaved bytewise: one [8 rows][4] word vector */
static inline __attribute__((always_inline)) __m256i interleave4(const __m256i qi[4])
{
    const __m256i lo8 = _mm256_set1_epi32(0xff);
    __m256i w = _mm256_setzero_si256();
    for (int e = 0; e < 4; e++) w = _mm256_or_si256(w, _mm256_slli_epi32(_mm256_and_si256(qi[e], lo8), 8 * e));
    return w;
}

/* channels d0..d0+7 of the 8 rows j0..j0+7 into r[e] (lane l: row j0 + l); rows past S and channels
 * past dh read 0. Channel-major x[d * ld + j]: one masked load per channel; token-major x[j * ld + d]:
 * one masked load per row and an 8x8 transpose (no gathers) */
static inline __attribute__((always_inline)) void chan8(const float *x, int64_t ld, int64_t S, int64_t dh, int64_t j0,
                                                        int64_t d0, int tm, __m256 r[8])
{
    if (!tm) {
        const __m256i m = lanes(S - j0);
        for (int e = 0; e < 8; e++) r[e] = d0 + e < dh ? _mm256_maskload_ps(x + (d0 + e) * ld + j0, m) : _mm256_setzero_ps();
        return;
    }
    const __m256i m = lanes(dh - d0);
    for (int l = 0; l < 8; l++) r[l] = j0 + l < S ? _mm256_maskload_ps(x + (j0 + l) * ld + d0, m) : _mm256_setzero_ps();
    tr8(r);
}

/* Quantize and lay out one head (sk_attn8) from channel-major (tm 0) or token-major (tm 1) q, k, v:
 * vectors of 8 rows per channel, so ranges are vertical maxima and four quantized channels
 * interleave bytewise into one [8 rows][4] vector of k8 / q8. q8 holds q itself (signed, padding
 * channels 0), not sk_attn8's q + 128: only attn8_run below reads it, and the signed product wants q. */
static inline __attribute__((always_inline)) void attn8_pack(sk_attn8 *a, const float *q, const float *k, const float *v,
                                                             int64_t ld, const float *kb, int tm)
{
    const int64_t S = a->S, Sp = a->Sp, dh = a->dh, nq = a->nq, dhp = a->dhp;
    __m256 r[8];
    /* keys (8 at a time, a vector per channel) and queries, ranges as vertical maxima */
    for (int pass = 0; pass < 2; pass++) {
        const float *x = pass ? q : k;
        const int64_t end = pass ? (S + 7) / 8 * 8 : Sp;
        for (int64_t j0 = 0; j0 < end; j0 += 8) {
            __m256 am = _mm256_setzero_ps(), sc;
            for (int64_t d0 = 0; d0 < dh; d0 += 8) {
                chan8(x, ld, S, dh, j0, d0, tm, r);
                for (int e = 0; e < 8; e++) am = _mm256_max_ps(am, abs_nan_inf8(r[e])); /* zeros past dh */
            }
            const __m256 inv = lanes_inv8(am, &sc);
            _mm256_store_ps((pass ? a->qsc : a->ksc) + j0, sc);
            int8_t *dst = pass ? (int8_t *)a->q8 : a->k8;
            for (int64_t d0 = 0; d0 < 4 * nq; d0 += 8) {
                chan8(x, ld, S, dh, j0, d0, tm, r);
                for (int h = 0; h < 2 && d0 / 4 + h < nq; h++) {
                    __m256i qi[4];
                    for (int e = 0; e < 4; e++) qi[e] = quant8(r[4 * h + e], inv); /* channels past dh: 0 */
                    _mm256_store_si256((__m256i *)(dst + ((d0 / 4 + h) * Sp + j0) * 4), interleave4(qi));
                }
            }
            if (!pass)
                for (int64_t l = 0; l < 8; l++) a->bias[j0 + l] = j0 + l < S ? sk_attn8_key_bias(kb, j0 + l) : -__builtin_inff();
        }
    }
    /* values: per channel one scale over the head's unmasked keys; a channel's quantized row of keys, 4 keys
     * to a word, is the channel's column of v8 */
    memset(a->v8, 0, (size_t)(Sp * dhp));
    for (int64_t d = dh; d < dhp; d++) a->vsc[d] = 0.0f;
    const int every = sk_attn8_every_key(kb, S);
    for (int64_t d0 = 0; d0 < dh; d0 += 8) {
        __m256 am[8], inv[8];
        for (int e = 0; e < 8; e++) am[e] = _mm256_setzero_ps();
        for (int64_t j0 = 0; j0 < S; j0 += 8) {
            chan8(v, ld, S, dh, j0, d0, tm, r);
            /* lanes of the keys that count for the ranges: masked keys left out (past S: zeros) */
            const __m256 keep = every ? _mm256_castsi256_ps(_mm256_set1_epi32(-1))
                                      : _mm256_cmp_ps(_mm256_load_ps(a->bias + j0), _mm256_set1_ps(SK_KEY_MASKED), _CMP_NLE_UQ);
            for (int e = 0; e < 8; e++) am[e] = _mm256_max_ps(am[e], _mm256_and_ps(abs_nan_inf8(r[e]), keep));
        }
        for (int e = 0; e < 8; e++) {
            __m128 h = _mm_max_ps(_mm256_castps256_ps128(am[e]), _mm256_extractf128_ps(am[e], 1));
            h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            h = _mm_max_ss(h, _mm_movehdup_ps(h));
            __m256 sc;
            inv[e] = lanes_inv8(_mm256_set1_ps(_mm_cvtss_f32(h)), &sc);
            if (d0 + e < dh) a->vsc[d0 + e] = _mm256_cvtss_f32(sc);
        }
        for (int64_t j0 = 0; j0 < S; j0 += 8) {
            chan8(v, ld, S, dh, j0, d0, tm, r);
            for (int e = 0; e < 8 && d0 + e < dh; e++) {
                const __m256i qi = quant8(r[e], inv[e]); /* keys past S: 0 */
                const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(qi, qi), _mm256_setzero_si256());
                const int32_t w0 = _mm256_extract_epi32(b, 0), w1 = _mm256_extract_epi32(b, 4);
                memcpy(a->v8 + ((j0 / 4) * dhp + d0 + e) * 4, &w0, 4);
                memcpy(a->v8 + ((j0 / 4 + 1) * dhp + d0 + e) * 4, &w1, 4);
            }
        }
    }
}

/* 255 e^(s - m) for s <= m: as exp255 of the VNNI kernel (t = (s - m) log2(e) with s - m formed
 * first, 2^f by a degree-3 polynomial, t clamped at -126 so masked keys and NaN give 0), 2^n built
 * in the exponent bits */
static inline __attribute__((always_inline)) __m256 exp255_8(__m256 s, __m256 m)
{
    const __m256 t = _mm256_max_ps(_mm256_mul_ps(_mm256_sub_ps(s, m), _mm256_set1_ps(1.44269504088896341f)),
                                   _mm256_set1_ps(-126.0f));
    const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(t, n);
    __m256 p = _mm256_set1_ps(255.0f * 0.05508876591920853f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(255.0f * 0.24260465800762177f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(255.0f * 0.6932762861251831f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(255.0f * 0.999928891658783f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}


static void attn8_run(const sk_attn8 *ap, float scale, float *o, int64_t ldo)
{
    const sk_attn8 a = *ap;
    const int64_t S = a.S, dh = a.dh, Sp = a.Sp, nq = a.nq, dhp = a.dhp, nkq = (S + 3) / 4;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t i0 = 0; i0 < S; i0 += AR2) {
        const int64_t nr = S - i0 < AR2 ? S - i0 : AR2;
        const uint8_t *qr[AR2]; /* rows past the end repeat the last one (computed, never stored) */
        __m256 rs[AR2], mx[AR2];
        for (int r = 0; r < AR2; r++) {
            const int64_t i = i0 + (r < nr ? r : nr - 1);
            qr[r] = a.q8 + i * 4;
            rs[r] = _mm256_set1_ps(a.qsc[i] * scale);
            mx[r] = _mm256_set1_ps(-__builtin_inff());
        }
        /* scores: one 8-key vector x AR2 rows per step (accumulators and operands stay in the 16
         * registers); q8 holds q signed (attn8_pack), k's sign moves onto it, |k| is unsigned */
        for (int64_t j = 0; j < Sp; j += 8) {
            __m256i acc[AR2];
            for (int r = 0; r < AR2; r++) acc[r] = _mm256_setzero_si256();
            for (int64_t c = 0; c < nq; c++) {
                const __m256i k0 = _mm256_load_si256((const __m256i *)(a.k8 + (c * Sp + j) * 4));
                const __m256i a0 = _mm256_abs_epi8(k0);
                for (int r = 0; r < AR2; r++) {
                    int32_t qw;
                    memcpy(&qw, qr[r] + c * Sp * 4, 4);
                    acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(_mm256_set1_epi32(qw), k0)), ones));
                }
            }
            const __m256 ks = _mm256_load_ps(a.ksc + j), bv = _mm256_load_ps(a.bias + j);
            for (int r = 0; r < AR2; r++) {
                const __m256 sc = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[r]), _mm256_mul_ps(ks, rs[r])), bv);
                _mm256_store_ps(a.p + r * Sp + j, sc);
                mx[r] = _mm256_max_ps(sc, mx[r]); /* a NaN score is skipped, as by the scalar sj > m */
            }
        }
        /* softmax numerators u = rint(255 e), written as uint16 over the front of the row's scores */
        float il[AR2];
        for (int r = 0; r < AR2; r++) {
            float *pr = a.p + r * Sp;
            uint16_t *ur = (uint16_t *)pr;
            const float m = hmax8(mx[r]);
            if (!(m > -__builtin_inff())) { /* every key masked (or NaN scores): zeros */
                memset(ur, 0, (size_t)Sp * 2);
                il[r] = 0.0f;
                continue;
            }
            const __m256 mv = _mm256_set1_ps(m);
            __m256i sum = _mm256_setzero_si256();
            for (int64_t jv = 0; jv < Sp; jv += 8) {
                const __m256i u = _mm256_cvtps_epi32(exp255_8(_mm256_load_ps(pr + jv), mv));
                sum = _mm256_add_epi32(sum, u);
                const __m256i u16 = _mm256_packus_epi32(u, u); /* lanes: u0-3 u0-3 | u4-7 u4-7 */
                _mm_storeu_si128((__m128i *)(ur + jv), _mm256_castsi256_si128(_mm256_permute4x64_epi64(u16, 0x08)));
            }
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            const int32_t L = _mm_cvtsi128_si32(s4);
            il[r] = L > 0 ? 1.0f / (float)L : __builtin_nanf(""); /* L = 0 only when a score overflows to +inf: NaN, as fp32 softmax gives */
        }
        /* P V: 8 channels x 2 rows per step (4 accumulators, no spills); per 4 keys one vpmaddwd per
         * row and 4 channels, the two partial sums of a channel (keys 0-1, 2-3) added at the end */
        for (int r0 = 0; r0 < nr; r0 += 2) {
            const uint16_t *u0 = (const uint16_t *)(a.p + r0 * Sp), *u1 = (const uint16_t *)(a.p + (r0 + 1) * Sp);
            for (int64_t c0 = 0; c0 < dh; c0 += 8) {
                __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
                for (int64_t jq = 0; jq < nkq; jq++) {
                    const int8_t *vc = a.v8 + (jq * dhp + c0) * 4;
                    const __m256i v0 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)vc));        /* c0..c0+3 */
                    const __m256i v1 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(vc + 16))); /* c0+4..c0+7 */
                    int64_t w0, w1;
                    memcpy(&w0, u0 + jq * 4, 8);
                    memcpy(&w1, u1 + jq * 4, 8);
                    const __m256i p0 = _mm256_set1_epi64x(w0), p1 = _mm256_set1_epi64x(w1);
                    lo0 = _mm256_add_epi32(lo0, _mm256_madd_epi16(p0, v0));
                    hi0 = _mm256_add_epi32(hi0, _mm256_madd_epi16(p0, v1));
                    lo1 = _mm256_add_epi32(lo1, _mm256_madd_epi16(p1, v0));
                    hi1 = _mm256_add_epi32(hi1, _mm256_madd_epi16(p1, v1));
                }
                const int64_t nd = dh - c0 < 8 ? dh - c0 : 8;
                const __m256i dm = lanes(nd);
                const __m256 sv = _mm256_load_ps(a.vsc + c0);
                for (int r = r0; r < r0 + 2 && r < nr; r++) {
                    const __m256i sum = _mm256_permute4x64_epi64(r == r0 ? _mm256_hadd_epi32(lo0, hi0) : _mm256_hadd_epi32(lo1, hi1), 0xd8);
                    const __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(sv, _mm256_set1_ps(il[r])));
                    if (nd == 8) _mm256_storeu_ps(o + (i0 + r) * ldo + c0, y);
                    else _mm256_maskstore_ps(o + (i0 + r) * ldo + c0, dm, y);
                }
            }
        }
    }
}

static void attn_head_int8_cm(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                              float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    sk_attn8 a;
    sk_attn8_parts(S, dh, &a, scratch);
    attn8_pack(&a, q, k, v, ld, kb, 0);
    attn8_run(&a, scale, o, ldo);
}

static void attn_head_int8(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                           float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    sk_attn8 a;
    sk_attn8_parts(S, dh, &a, scratch);
    attn8_pack(&a, q, k, v, ld, kb, 1);
    attn8_run(&a, scale, o, ldo);
}

const sk_kernels sk_kernels_avx2 = {
    /* AVX2: the fp32 and int8 products, what surrounds them, both attentions */
    "avx2", tile_fp32, pack_x, unpack_y,
    tile_int8, pack_xq, pack_xq_raw, unpack_int8,
    rows_amax, sk_unpack_i32_generic, attn_head, layer_norm,
    quant_rows, attn_head_int8, mid_int8, pack_mid,
    attn_head_int8_cm,
    /* int8_no_x_min */ 1,
};
#endif
