/* Portable C kernels (no ISA extensions beyond the compiler's baseline) and shared
 * generic helpers used by the other variants. */
#include "sk_common.h"
#include <math.h>
#include <string.h>

void sk_pack_x_generic(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1,
                       float *xt, const sk_tiling *tl, int64_t n_in)
{
    (void)n_in;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        for (int64_t kb = k0; kb < k1; kb += 16) {
            const int64_t ke = kb + 16 < k1 ? kb + 16 : k1;
            for (int64_t tl_ = 0; tl_ < w; tl_++) {
                const int64_t t = tile->t0 + tl_;
                if (t < nb) {
                    const float *xr = X + t * ldX;
                    for (int64_t k = kb; k < ke; k++) xb[k * w + tl_] = xr[k];
                } else {
                    for (int64_t k = kb; k < ke; k++) xb[k * w + tl_] = 0.0f;
                }
            }
        }
    }
}

float sk_gelu1(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

void sk_unpack_y_generic(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                         float *Y, int64_t ldY, const float *bias, const float *R, int act)
{
    for (int64_t t = 0; t < ntok; t++) {
        float *yr = Y + t * ldY;
        for (int64_t r = 0; r < nrows; r++) {
            const float v = scratch[r * lds + t] + (bias ? bias[r] : 0.0f);
            yr[r] = (act == SK_ACT_GELU ? sk_gelu1(v) : v) + (R ? R[t * ldY + r] : 0.0f);
        }
    }
}

static void tile_fp32(int bh, const sk_segs *sg, const float *xt, const sk_tiling *tl, float *scratch, int64_t lds)
{
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        for (int p = 0; p < sg->npan; p++)
            for (int64_t s = sg->sptr[p]; s < sg->sptr[p + 1]; s++) {
                const int64_t r = sg->row ? sg->row[s] : s - sg->sptr[0];
                for (int64_t tg = 0; tg < w; tg += 16) {
                    float acc[8][16];
                    memset(acc, 0, sizeof(acc));
                    for (int64_t j = sg->start[s]; j < sg->start[s + 1]; j++) {
                        const float *xp = xb + (int64_t)sg->idx[j] * w + tg;
                        for (int b = 0; b < bh; b++) {
                            const float wv = sg->val[j * bh + b];
                            for (int l = 0; l < 16; l++) acc[b][l] += wv * xp[l];
                        }
                    }
                    for (int b = 0; b < bh; b++) {
                        float *o = scratch + (r * bh + b) * lds + tile->t0 + tg;
                        for (int l = 0; l < 16; l++) o[l] = p > 0 ? o[l] + acc[b][l] : acc[b][l];
                    }
                }
            }
    }
}

/* ---------------------------------------------------------------------------- INT8 */
/* AMX's tile operations in C, for the 16x4 block product's schedule (sk_amx16.inc.h): eight
 * tiles of 16 rows x 64 bytes; tdpbsud's C[m][n] += sum_k A[m][k] (int8) * B[k / 4][4 n + k % 4] (uint8) */
typedef struct {
    uint8_t t[8][16][64];
} sk_emu_tiles;

static void emu_dp(sk_emu_tiles *T, int c, int a, int b)
{
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            int32_t acc;
            memcpy(&acc, T->t[c][m] + 4 * n, 4);
            for (int k = 0; k < 64; k++) acc += (int8_t)T->t[a][m][k] * (int32_t)T->t[b][k / 4][4 * n + k % 4];
            memcpy(T->t[c][m] + 4 * n, &acc, 4);
        }
}

#define AMX16_FN tile_int8_16x4_emulated
#define AMX_STATE sk_emu_tiles T_
#define AMX_BEGIN() memset(&T_, 0, sizeof(T_))
#define AMX_END() ((void)0)
#define AMX_ZERO(n) memset(T_.t[n], 0, sizeof(T_.t[n]))
#define AMX_LOAD(n, p, stride) \
    for (int r_ = 0; r_ < 16; r_++) memcpy(T_.t[n][r_], (const uint8_t *)(p) + r_ * (int64_t)(stride), 64)
#define AMX_STORE(n, p, stride) \
    for (int r_ = 0; r_ < 16; r_++) memcpy((uint8_t *)(p) + r_ * (int64_t)(stride), T_.t[n][r_], 64)
#define AMX_DP(c, a, b) emu_dp(&T_, c, a, b)
#define AMX_COPY(dst, src, n) memcpy((dst), (src), (size_t)(n))
/* the portable 16x4 block product: the AMX kernel's schedule with these operations, so that
 * schedule is tested on every CPU */
#include "sk_amx16.inc.h"

void sk_tile_int8_generic(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval,
                          int64_t br0, int64_t br1, const uint8_t *xq, const sk_tiling *tl,
                          int64_t nq, int32_t *scratch, int64_t lds)
{
    (void)nq;
    if (bh == SK_TILE_ROWS) {
        tile_int8_16x4_emulated(ptr, idx, qval, br0, br1, xq, tl, scratch, lds);
        return;
    }
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const uint8_t *xb = xq + tile->offset;
        const int64_t w = tile->width;
        for (int64_t br = br0; br < br1; br++) {
            for (int64_t tg = 0; tg < w; tg += 16) {
                int32_t acc[8][16];
                memset(acc, 0, sizeof(acc));
                for (int64_t j = ptr[br]; j < ptr[br + 1]; j++) {
                    const uint8_t *xp = xb + ((int64_t)idx[j] * w + tg) * 4;
                    for (int b = 0; b < bh; b++) {
                        const uint32_t word = (uint32_t)qval[j * bh + b];
                        const int32_t w0 = (int8_t)(word & 0xff), w1 = (int8_t)((word >> 8) & 0xff);
                        const int32_t w2 = (int8_t)((word >> 16) & 0xff), w3 = (int8_t)(word >> 24);
                        for (int l = 0; l < 16; l++)
                            acc[b][l] += xp[4 * l] * w0 + xp[4 * l + 1] * w1 + xp[4 * l + 2] * w2 + xp[4 * l + 3] * w3;
                    }
                }
                for (int b = 0; b < bh; b++) {
                    int32_t *o = scratch + ((br - br0) * bh + b) * lds + tile->t0 + tg;
                    for (int l = 0; l < 16; l++) o[l] = acc[b][l];
                }
            }
        }
    }
}

/* pack_xq (fp32 X, quantized with inv) and pack_xq_raw (int8 X, raw) in one body; raw is a
 * compile-time constant after inlining. Tokens past nb and columns past n_in get u = 128. */
static inline __attribute__((always_inline)) void pack_quads(const void *X, int raw, int64_t ldX, int64_t nb,
                                                             int64_t n_in, int64_t q0, int64_t q1, const float *inv,
                                                             uint8_t *xq, const sk_tiling *tl)
{
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        uint8_t *xb = xq + tile->offset;
        const int64_t w = tile->width;
        for (int64_t tl_ = 0; tl_ < w; tl_++) {
            const int64_t t = tile->t0 + tl_;
            for (int64_t q = q0; q < q1; q++) {
                uint8_t *d = xb + (q * w + tl_) * 4;
                for (int c = 0; c < 4; c++) {
                    const int64_t k = 4 * q + c;
                    if (!(t < nb && k < n_in)) d[c] = 128;
                    else if (raw) d[c] = (uint8_t)((int32_t)((const int8_t *)X)[t * ldX + k] + 128);
                    else d[c] = (uint8_t)(sk_quant1(((const float *)X)[t * ldX + k], inv[t]) + 128);
                }
            }
        }
    }
}

void sk_pack_xq_generic(const float *X, int64_t ldX, int64_t nb, int64_t n_in, int64_t q0, int64_t q1,
                        const float *inv, uint8_t *xq, const sk_tiling *tl, int64_t nq)
{
    (void)nq;
    pack_quads(X, 0, ldX, nb, n_in, q0, q1, inv, xq, tl);
}

void sk_pack_xq_raw_generic(const int8_t *X, int64_t ldX, int64_t nb, int64_t n_in, int64_t q0, int64_t q1,
                            uint8_t *xq, const sk_tiling *tl, int64_t nq)
{
    (void)nq;
    pack_quads(X, 1, ldX, nb, n_in, q0, q1, NULL, xq, tl);
}

void sk_unpack_int8_generic(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, float *Y,
                            int64_t ldY, const float *bias, const float *R, const float *sw, const int32_t *comp,
                            const float *sx, int act)
{
    for (int64_t t = 0; t < ntok; t++) {
        float *yr = Y + t * ldY;
        for (int64_t r = 0; r < nrows; r++) {
            const float v = (float)(scratch[r * lds + t] - comp[r]) * (sx[t] * sw[r]) + (bias ? bias[r] : 0.0f);
            yr[r] = (act == SK_ACT_GELU ? sk_gelu1(v) : v) + (R ? R[t * ldY + r] : 0.0f);
        }
    }
}

void sk_unpack_i32_generic(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, int32_t *Y,
                           int64_t ldY, const int32_t *comp)
{
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t r = 0; r < nrows; r++) Y[t * ldY + r] = scratch[r * lds + t] - comp[r];
}

void sk_rows_amax_generic(const float *X, int64_t ldX, int64_t K, int64_t t0, int64_t t1, float *amax)
{
    for (int64_t t = t0; t < t1; t++) {
        const float *xr = X + t * ldX;
        float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t k = 0;
        for (; k + 8 <= K; k += 8)
            for (int l = 0; l < 8; l++) {
                const float v = fabsf(xr[k + l]);
                a[l] = (v > a[l] || v != v) ? v : a[l];
            }
        float m = 0.0f;
        for (; k < K; k++) {
            const float v = fabsf(xr[k]);
            m = (v > m || v != v) ? v : m;
        }
        for (int l = 0; l < 8; l++) m = (a[l] > m || a[l] != a[l]) ? a[l] : m;
        amax[t] = m != m ? __builtin_inff() : m;
    }
}

/* Portable attention head (two passes over the scores: max, then exp / sum / weighted V). A row
 * with a NaN score gives NaN outputs (as torch's softmax); a row whose keys are all masked, zeros. */
void sk_attn_head_generic(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                          float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    float *p = scratch;
    for (int64_t i = 0; i < S; i++) {
        const float *qi = q + i * ld;
        float m = -__builtin_inff();
        int nan = 0;
        for (int64_t j = 0; j < S; j++) {
            const float *kj = k + j * ld;
            float acc = 0.0f;
            for (int64_t d = 0; d < dh; d++) acc += qi[d] * kj[d];
            p[j] = acc * scale + (kb ? kb[j] : 0.0f);
            if (p[j] > m) m = p[j];
            nan |= p[j] != p[j];
        }
        float *oi = o + i * ldo;
        for (int64_t d = 0; d < dh; d++) oi[d] = nan ? __builtin_nanf("") : 0.0f;
        if (nan || !(m > -__builtin_inff())) continue; /* every key masked: zeros */
        float l = 0.0f;
        for (int64_t j = 0; j < S; j++) {
            p[j] = expf(p[j] - m);
            l += p[j];
        }
        const float inv = 1.0f / l;
        for (int64_t j = 0; j < S; j++) {
            const float pj = p[j] * inv;
            const float *vj = v + j * ld;
            for (int64_t d = 0; d < dh; d++) oi[d] += pj * vj[d];
        }
    }
}

/* whether the n floats at stride st hold NaN or inf (exponent bits all set) */
static int any_nonfinite(const float *x, int64_t n, int64_t st)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i * st, sizeof b);
        bad |= (b & 0x7f800000u) == 0x7f800000u;
    }
    return bad != 0;
}

/* whether q, k or v hold NaN or inf: outer runs of inner contiguous floats, os apart; branch-free
 * (an all-ones exponent plus one exponent step carries into the sign bit), so it vectorizes, on
 * AVX2 where the CPU has it (target_clones: chosen at load) */
#if defined(SK_HAVE_X86) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
int sk_any_nonfinite(const float *x, int64_t n)
{
    const uint32_t *b = (const uint32_t *)(const void *)x;
    uint32_t acc = 0;
    for (int64_t i = 0; i < n; i++) acc |= (b[i] & 0x7f800000u) + 0x00800000u;
    return (acc & 0x80000000u) != 0;
}

#if defined(SK_HAVE_X86) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
static int head_nonfinite(const float *q, const float *k, const float *v, int64_t outer, int64_t inner, int64_t os)
{
    uint32_t acc = 0;
    for (int64_t a = 0; a < outer; a++) {
        const uint32_t *bq = (const uint32_t *)(const void *)(q + a * os), *bk = (const uint32_t *)(const void *)(k + a * os),
                       *bv = (const uint32_t *)(const void *)(v + a * os);
        for (int64_t i = 0; i < inner; i++)
            acc |= ((bq[i] & 0x7f800000u) + 0x00800000u) | ((bk[i] & 0x7f800000u) + 0x00800000u) |
                   ((bv[i] & 0x7f800000u) + 0x00800000u);
    }
    return (acc & 0x80000000u) != 0;
}

void sk_attn8_nan(const float *q, const float *k, const float *v, int64_t rs, int64_t cs, int64_t S, int64_t dh,
                  const float *kb, float *o, int64_t ldo)
{
    /* a contiguous pass over the head first (rows or channels, as the layout has them) */
    if (!(cs == 1 ? head_nonfinite(q, k, v, S, dh, rs) : head_nonfinite(q, k, v, dh, S, cs))) return;
    /* every key masked: the rows are zeros whatever K and V hold (as fp32 attention's) */
    int head = 0;
    const int all_masked = kb && sk_attn8_every_key(kb, S);
    for (int64_t j = 0; j < S && !head && !all_masked; j++)
        if (!kb || !(kb[j] <= SK_KEY_MASKED))
            head = any_nonfinite(k + j * rs, dh, cs) || any_nonfinite(v + j * rs, dh, cs);
    for (int64_t i = 0; i < S; i++)
        if (head || any_nonfinite(q + i * rs, dh, cs))
            for (int64_t d = 0; d < dh; d++) o[i * ldo + d] = __builtin_nanf("");
}

/* amax of n floats at stride st (NaN counts as +inf) and the quantization rule of quant_rows:
 * returns the inverse scale 127 / amax (0 when the range is zero or not finite), *scale = amax / 127.
 * kb (or NULL: all count): key biases of the n values; masked ones (SK_KEY_MASKED) are left out */
static float attn8_range(const float *x, int64_t n, int64_t st, const float *kb, float *scale)
{
    float a = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        if (kb && kb[i] <= SK_KEY_MASKED) continue;
        const float v = fabsf(x[i * st]);
        a = (v > a || v != v) ? (v != v ? __builtin_inff() : v) : a;
    }
    const int ok = a >= SK_RANGE_MIN && a <= SK_RANGE_MAX;
    *scale = ok ? a / 127.0f : 0.0f;
    return ok ? 127.0f / a : 0.0f;
}

/* Portable INT8 attention head: the arithmetic of sk_kernels.attn_head_int8 in plain loops
 * (the same layouts as the VNNI kernel, so the two share one scratch plan). */
/* element (row i, channel d) of q, k, v at [i * ls + d * cs]: token-major (ls = ld, cs = 1) or
 * channel-major (ls = 1, cs = ld) */
static void attn_head_int8_strided(const float *q, const float *k, const float *v, int64_t ls, int64_t cs, int64_t S,
                                   int64_t dh, float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    sk_attn8 a;
    sk_attn8_parts(S, dh, &a, scratch);
    const int64_t Sp = a.Sp, nq = a.nq, dhp = a.dhp;
    memset(a.k8, 0, (size_t)(nq * Sp * 4));
    memset(a.v8, 0, (size_t)(Sp * dhp));
    for (int64_t j = 0; j < Sp; j++) {
        int32_t sum = 0;
        float sc = 0.0f;
        if (j < S) {
            const float inv = attn8_range(k + j * ls, dh, cs, NULL, &sc);
            for (int64_t d = 0; d < dh; d++) {
                const int32_t kq = inv > 0.0f ? sk_quant1(k[j * ls + d * cs], inv) : 0;
                a.k8[((d / 4) * Sp + j) * 4 + d % 4] = (int8_t)kq;
                sum += kq;
            }
        }
        a.kcomp[j] = 128 * sum;
        a.ksc[j] = sc;
        a.bias[j] = j < S ? sk_attn8_key_bias(kb, j) : -__builtin_inff();
    }
    const int every = sk_attn8_every_key(kb, S);
    for (int64_t d = 0; d < dhp; d++) {
        float sc = 0.0f;
        const float inv = d < dh ? attn8_range(v + d * cs, S, ls, every ? NULL : kb, &sc) : 0.0f;
        a.vsc[d] = sc;
        for (int64_t j = 0; d < dh && j < S; j++)
            a.v8[((j / 4) * dhp + d) * 4 + j % 4] = (int8_t)(inv > 0.0f ? sk_quant1(v[j * ls + d * cs], inv) : 0);
    }
    int32_t *acc = (int32_t *)a.pu; /* dh int32 per row: the pu rows are not needed here */
    for (int64_t i = 0; i < S; i++) {
        float sq;
        const float inv = attn8_range(q + i * ls, dh, cs, NULL, &sq);
        uint8_t *qi = a.q8 + i * 4; /* channel d at qi[(d / 4) * Sp * 4 + d % 4] */
        for (int64_t d = 0; d < nq * 4; d++)
            qi[(d / 4) * Sp * 4 + d % 4] = (uint8_t)(128 + (d < dh && inv > 0.0f ? sk_quant1(q[i * ls + d * cs], inv) : 0));
        const float rs = sq * scale;
        float m = -__builtin_inff();
        for (int64_t j = 0; j < Sp; j++) {
            int32_t dot = 0;
            for (int64_t d = 0; d < nq * 4; d++)
                dot += (int32_t)qi[(d / 4) * Sp * 4 + d % 4] * a.k8[((d / 4) * Sp + j) * 4 + d % 4];
            const float sj = (float)(dot - a.kcomp[j]) * (a.ksc[j] * rs) + a.bias[j];
            a.p[j] = sj;
            if (sj > m) m = sj;
        }
        float *oi = o + i * ldo;
        if (!(m > -__builtin_inff())) { /* every key masked (or NaN scores): zeros */
            for (int64_t d = 0; d < dh; d++) oi[d] = 0.0f;
            continue;
        }
        int32_t L = 0;
        for (int64_t d = 0; d < dh; d++) acc[d] = 0;
        for (int64_t j = 0; j < Sp; j++) {
            const float e = a.p[j] - m >= -87.0f ? expf(a.p[j] - m) : 0.0f;
            const int32_t u = (int32_t)__builtin_rintf(e * 255.0f);
            L += u;
            for (int64_t d = 0; u && d < dh; d++) acc[d] += u * a.v8[((j / 4) * dhp + d) * 4 + j % 4];
        }
        const float il = L > 0 ? 1.0f / (float)L : __builtin_nanf(""); /* L = 0 only when a score overflows to +inf: NaN, as fp32 softmax gives */
        for (int64_t d = 0; d < dh; d++) oi[d] = (float)acc[d] * (a.vsc[d] * il);
    }
}

void sk_attn_head_int8_generic(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                               float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    attn_head_int8_strided(q, k, v, ld, 1, S, dh, scale, kb, o, ldo, scratch);
}

void sk_attn_head_int8_cm_generic(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                                  float scale, const float *kb, float *o, int64_t ldo, float *scratch)
{
    attn_head_int8_strided(q, k, v, 1, ld, S, dh, scale, kb, o, ldo, scratch);
}

void sk_quant_rows_generic(const float *X, int64_t ntok, int64_t N, int8_t *Q, float *scale)
{
    for (int64_t t = 0; t < ntok; t++) {
        float a;
        sk_rows_amax_generic(X + t * N, N, N, 0, 1, &a);
        const int ok = a >= SK_RANGE_MIN && a <= SK_RANGE_MAX;
        const float inv = ok ? 127.0f / a : 0.0f;
        scale[t] = sk_range_scale(a);
        for (int64_t i = 0; i < N; i++) Q[t * N + i] = ok ? (int8_t)sk_quant1(X[t * N + i], inv) : 0;
    }
}

void sk_mid_int8_generic(int32_t *acc, int64_t lds, int64_t nrows, int64_t nb, const float *bias, const float *sw,
                         const int32_t *comp, const float *sx, int act, float *amax)
{
    for (int64_t r = 0; r < nrows; r++) {
        int32_t *a = acc + r * lds;
        float *y = (float *)a;
        for (int64_t t = 0; t < nb; t++) {
            /* sk_unpack_int8_generic's expression, so the same bits */
            const float v = (float)(a[t] - comp[r]) * (sx[t] * sw[r]) + (bias ? bias[r] : 0.0f);
            const float g = act == SK_ACT_GELU ? sk_gelu1(v) : v;
            const float m = g != g ? __builtin_inff() : fabsf(g);
            y[t] = g;
            if (m > amax[t]) amax[t] = m;
        }
    }
}

void sk_pack_mid_generic(const float *mid, int64_t ldm, int64_t n_in, int64_t nb, const float *inv, uint8_t *xq,
                         const sk_tiling *tl)
{
    const int64_t nq = (n_in + 3) / 4;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        uint8_t *xb = xq + tile->offset;
        const int64_t w = tile->width;
        for (int64_t q = 0; q < nq; q++)
            for (int64_t l = 0; l < w; l++) {
                const int64_t t = tile->t0 + l;
                for (int e = 0; e < 4; e++) {
                    const int64_t c = 4 * q + e;
                    const int keep = t < nb && c < n_in && inv[t] != 0.0f;
                    xb[(q * w + l) * 4 + e] = (uint8_t)(keep ? sk_quant1(mid[c * ldm + t], inv[t]) + 128 : 128);
                }
            }
    }
}

/* Portable LayerNorm: double accumulators, two passes (mean, then centred variance). */
void sk_layer_norm_generic(float *Y, int64_t ntok, int64_t N, const float *gamma, const float *beta, float eps,
                           float *amax)
{
    for (int64_t t = 0; t < ntok; t++) {
        float *y = Y + t * N;
        double sum = 0.0, sq = 0.0;
        for (int64_t i = 0; i < N; i++) sum += y[i];
        const double mean = N > 0 ? sum / (double)N : 0.0;
        for (int64_t i = 0; i < N; i++) sq += (y[i] - mean) * (y[i] - mean);
        const float rstd = (float)(1.0 / sqrt((N > 0 ? sq / (double)N : 0.0) + (double)eps));
        const float mf = (float)mean;
        for (int64_t i = 0; i < N; i++) y[i] = (y[i] - mf) * rstd * gamma[i] + (beta ? beta[i] : 0.0f);
        if (amax) sk_rows_amax_generic(y, N, N, 0, 1, amax + t);
    }
}

const sk_kernels sk_kernels_scalar = {
    "scalar", tile_fp32, sk_pack_x_generic, sk_unpack_y_generic,
    sk_tile_int8_generic, sk_pack_xq_generic, sk_pack_xq_raw_generic, sk_unpack_int8_generic,
    sk_rows_amax_generic, sk_unpack_i32_generic, sk_attn_head_generic, sk_layer_norm_generic,
    sk_quant_rows_generic, sk_attn_head_int8_generic, sk_mid_int8_generic, sk_pack_mid_generic,
    sk_attn_head_int8_cm_generic,
};
