/*
 * sparsebench sparse kernels: shared declarations.
 *
 * Conventions (all kernels):
 *   W  : sparse weight, logical shape (n_out, n_in), stored as "block-row CSR" with
 *        blocks of bh consecutive output rows x 1 input column (bh = 1 is plain CSR).
 *        ptr[nbr+1] (int64), idx[nnzb] (int32 column), val[nnzb * bh] (block-major).
 *   X  : dense activations, tokens x n_in, row-major.
 *   Y  : dense output, tokens x n_out, row-major; Y = X * W^T (+ bias).
 *   XT : packed, transposed copy of a block of X: token tiles of width w (multiple of 16
 *        floats), each tile contiguous with layout [n_in][w] ("token-contiguous").
 *
 * Variants are separate translation units compiled with a `#pragma GCC target(...)`, each
 * exporting one sk_kernels table; sk_module.c picks the table at import (or per call) after
 * checking the CPU. This header is all a kernel file sees: no CPython here.
 */
#ifndef SK_COMMON_H
#define SK_COMMON_H

#include <stdint.h>
#include <stddef.h>

#define SK_ROWS_PER_CHUNK 16   /* output rows per unit of parallel work / unpack */
#define SK_TOK_GROUP 16        /* token padding granularity */
#define SK_INT8_MAX_ROW_QUADS 16384 /* int8: quads per row whose int32 sums stay exact (n_in <= 65536) */
/* INT8 quantization: a range max |x| gives a scale when SK_RANGE_MIN <= amax <= SK_RANGE_MAX, i.e.
 * finite and above 127 / FLT_MAX, so 127 / amax stays finite (below, zeros would quantize as
 * 0 x inf = NaN); a zero, smaller or non-finite range maps every value to 0 with scale 0.
 * SK_RANGE_MAX is FLT_MAX: every finite range up to it has a finite 127 / amax (>= 3.7e-37, a
 * normal float) and a finite amax / 127, so a token near the float32 limit is quantized like any
 * other (its outputs may overflow to +-inf, as torch's would) instead of counting as non-finite;
 * `a <= SK_RANGE_MAX` is the finiteness test (false for +inf and NaN) */
#define SK_RANGE_MIN 3.8e-37f
#define SK_RANGE_MAX 3.40282347e38f
/* The dequantization scale of a linear layer's row (token) of range a (max |x|, NaN counted as
 * +inf): a / 127; 0 for a zero or too small range; NaN for a non-finite one, whose values quantize
 * to 0 but whose outputs (acc * scale + bias) must be NaN, as torch's would be, not the bias. */
static inline float sk_range_scale(float a)
{
    return !(a <= SK_RANGE_MAX) ? __builtin_nanf("") : a >= SK_RANGE_MIN ? a / 127.0f : 0.0f;
}
#define SK_ACT_NONE 0          /* epilogue activations applied while writing Y */
#define SK_ACT_GELU 1          /* exact (erf) GELU: 0.5 x (1 + erf(x / sqrt 2)) */

/* One token tile inside a packed XT block. */
typedef struct {
    int64_t t0;      /* first token (relative to the block) */
    int64_t width;   /* tokens in the tile (multiple of 16), row stride of the tile */
    int64_t offset;  /* float offset of the tile inside the XT buffer */
} sk_tile;

#define SK_MAX_TILES 512

typedef struct {
    int ntiles;
    sk_tile tiles[SK_MAX_TILES];
} sk_tiling;

/* A list of fp32 work segments for one tile_fp32 call: segment s multiplies the stored blocks
 * [start[s], start[s + 1]) of (idx, val) into scratch block row row[s] (row == NULL: s - sptr[0]).
 * Segments come in npan consecutive panels, panel p = [sptr[p], sptr[p + 1]); panel 0 writes its
 * rows, later panels add to them, so every row written by the call must appear in panel 0.
 *  - plain rows: npan = 1, one segment per block row, start = ptr, row = NULL;
 *  - column panels (SKMatrix.panel > 0): per group of SK_PANEL_GROUP_ROWS rows, one segment per
 *    (block row, panel of `panel` input columns); within a panel, segments are sorted by length,
 *    so the inner loop's trip count repeats from one row to the next (predicted branches), and
 *    the panel's slice of XT stays in L1 while all rows of the group sweep it. */
typedef struct {
    int npan;
    const int64_t *sptr;  /* npan + 1 */
    const int32_t *row;   /* block row (relative to scratch) per segment, or NULL */
    const int64_t *start; /* first stored block per segment, start[s + 1] ends it */
    const int32_t *idx;
    const float *val;
} sk_segs;

#define SK_PANEL_GROUP_ROWS 256 /* output rows per column-panel sweep (16 chunks) */

/* Body of a SIMD tile_fp32 for one token tile: the segments of sg (panel 0 stores, later panels
 * accumulate) x sub-tiles of NVV vectors, with micro-kernel FN (sk_mk.inc.h). Expects in scope:
 * sg, bh, scratch, lds, tile, xb (tile base), w (tile width), nvt (vectors per tile), VW. */
#define SK_SEGLOOP(FN, NVV)                                                                \
    for (int p = 0; p < sg->npan; p++)                                                     \
        for (int64_t s = sg->sptr[p]; s < sg->sptr[p + 1]; s++) {                          \
            const int64_t r = sg->row ? sg->row[s] : s - sg->sptr[0];                      \
            float *o = scratch + r * bh * lds + tile->t0;                                  \
            for (int64_t v = 0; v < nvt; v += (NVV))                                       \
                FN(sg->idx, sg->val, sg->start[s], sg->start[s + 1], xb + v * VW, w, o + v * VW, lds, p > 0); \
        }

/* SK_SEGLOOP for height-1 blocks with a row-pair micro-kernel FN2 and its single-row companion
 * FN1 (sk_mk2.inc.h): consecutive segments of a panel two at a time, FN1 for an odd one left. */
#define SK_PAIRLOOP(FN2, FN1, NVV)                                                         \
    for (int p = 0; p < sg->npan; p++) {                                                   \
        int64_t s = sg->sptr[p];                                                           \
        const int64_t se = sg->sptr[p + 1];                                                \
        for (; s + 1 < se; s += 2) {                                                       \
            const int64_t ra = sg->row ? sg->row[s] : s - sg->sptr[0];                     \
            const int64_t rb = sg->row ? sg->row[s + 1] : s + 1 - sg->sptr[0];             \
            float *oa = scratch + ra * lds + tile->t0, *ob = scratch + rb * lds + tile->t0; \
            for (int64_t v = 0; v < nvt; v += (NVV))                                       \
                FN2(sg->idx, sg->val, sg->start[s], sg->start[s + 1], sg->start[s + 1], sg->start[s + 2], \
                    xb + v * VW, w, oa + v * VW, ob + v * VW, p > 0);                      \
        }                                                                                  \
        for (; s < se; s++) {                                                              \
            const int64_t r = sg->row ? sg->row[s] : s - sg->sptr[0];                      \
            float *o = scratch + r * lds + tile->t0;                                       \
            for (int64_t v = 0; v < nvt; v += (NVV))                                       \
                FN1(sg->idx, sg->val, sg->start[s], sg->start[s + 1], xb + v * VW, w, o + v * VW, p > 0); \
        }                                                                                  \
    }

/* ---- INT8 ----------------------------------------------------------------------------
 * Weights: blocks of bh output rows x 4 input columns ("quads"), int8, stored per block as bh
 * int32 words (4 int8 each, little-endian = columns 4q..4q+3). idx = quad number.
 * Activations are quantized per token (or per tensor) to x_q in [-127, 127] and stored as
 * u = x_q + 128 (uint8) in token tiles laid out [nq quads][w tokens][4 bytes], so one 32-bit
 * lane holds 4 consecutive input channels of one token: the operand layout of vpdpbusd
 * (u8 x s8 -> s32). The +128 offset is removed with a per-row compensation 128 * sum(w_q).
 * Padding (tokens past the end, columns past n_in) holds u = 128 (x_q = 0).
 *
 * Blocks of SK_TILE_ROWS = 16 rows ("bsr16x4", the weight operand of one AMX tile row) are stored
 * for AMX: every block row is padded with zero-weight blocks (column: the row's last) to a
 * multiple of 16 blocks, and each group g of 16 consecutive blocks is one 16 x 64-byte tile,
 * row b = the 16 blocks' words of output row b: block j's word of row b at sk_qword(16, j, b).
 */
#define SK_TILE_ROWS 16
/* index in qval of the word of block j, row b (block rows of bh rows) */
static inline __attribute__((always_inline)) int64_t sk_qword(int bh, int64_t j, int b)
{
    return bh == SK_TILE_ROWS ? (j & ~(int64_t)15) * 16 + b * 16 + (j & 15) : j * bh + b;
}
typedef struct sk_kernels {
    const char *name;
    /* fp32: scratch[(row * bh + b) * lds + t] for the segments of sg (see sk_segs), all tiles. */
    void (*tile_fp32)(int bh, const sk_segs *sg, const float *xt, const sk_tiling *tl, float *scratch, int64_t lds);
    /* xt tiles <- X[0:nb, k0:k1] transposed; tokens nb..(padded) zero. */
    void (*pack_x)(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1,
                   float *xt, const sk_tiling *tl, int64_t n_in);
    /* Y[t * ldY + r] = act(scratch[r * lds + t] (+ bias[r])) (+ R[t * ldY + r]) for r < nrows, t < ntok;
     * R (residual, same layout as Y) may be NULL. */
    void (*unpack_y)(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                     float *Y, int64_t ldY, const float *bias, const float *R, int act);
    /* int8: scratch[r * lds + t] = sum over stored quads of u * w (int32, no compensation) */
    void (*tile_int8)(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval,
                      int64_t br0, int64_t br1, const uint8_t *xq, const sk_tiling *tl,
                      int64_t nq, int32_t *scratch, int64_t lds);
    /* quantize X[0:nb, 4*q0 : 4*q1] (fp32, row stride ldX, n_in valid columns) with per-token
     * inverse scales inv[0:nb] into xq tiles; tokens nb.. and columns >= n_in get u = 128. */
    void (*pack_xq)(const float *X, int64_t ldX, int64_t nb, int64_t n_in, int64_t q0, int64_t q1,
                    const float *inv, uint8_t *xq, const sk_tiling *tl, int64_t nq);
    /* same from already-quantized int8 X (exact-integer path) */
    void (*pack_xq_raw)(const int8_t *X, int64_t ldX, int64_t nb, int64_t n_in, int64_t q0, int64_t q1,
                        uint8_t *xq, const sk_tiling *tl, int64_t nq);
    /* Y[t * ldY + r] = act((acc[r][t] - comp[r]) * (sx[t] * sw[r]) + bias[r]) (+ R[t * ldY + r])  (fp32 out) */
    void (*unpack_int8)(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, float *Y,
                        int64_t ldY, const float *bias, const float *R, const float *sw, const int32_t *comp,
                        const float *sx, int act);
    /* amax[t] = max_k |X[t * ldX + k]| for t in [t0, t1) (NaN counts as +inf) */
    void (*rows_amax)(const float *X, int64_t ldX, int64_t K, int64_t t0, int64_t t1, float *amax);
    /* Y[t * ldY + r] = acc[r][t] - comp[r]  (int32 out) */
    void (*unpack_i32)(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, int32_t *Y,
                       int64_t ldY, const int32_t *comp);
    /* One attention head: o[i] = sum_j softmax_j(scale * q[i].k[j] + kb[j]) v[j] for i, j < S.
     * q, k, v: row i at q + i * ld (dh floats); o: row i at o + i * ldo; kb: S additive key biases
     * (NULL = none; -inf masks a key); a row whose keys are all masked gets zeros.
     * scratch: sk_attn_scratch_floats(S, dh) floats, 64-byte aligned. */
    void (*attn_head)(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                      float scale, const float *kb, float *o, int64_t ldo, float *scratch);
    /* In-place LayerNorm of ntok rows of N floats (row stride N):
     * y = (y - mean) / sqrt(var + eps) * gamma + beta, biased variance; beta may be NULL.
     * amax (or NULL): amax[t] = max |y| of the normalized row t, as rows_amax would give it. */
    void (*layer_norm)(float *Y, int64_t ntok, int64_t N, const float *gamma, const float *beta, float eps,
                       float *amax);
    /* Per-row symmetric INT8 quantization of ntok rows of N floats (row stride N), the same rule
     * as the activations of spmm_int8: amax = max |x| (NaN counts as +inf); a finite, non-zero amax
     * gives scale = amax / 127 and q = clamp(rint(x * 127 / amax), -127, 127); otherwise scale 0, q 0. */
    void (*quant_rows)(const float *X, int64_t ntok, int64_t N, int8_t *Q, float *scale);
    /* One attention head in INT8 (arguments as attn_head; scratch: sk_attn8_scratch_floats(S, dh)
     * floats, 64-byte aligned). The arithmetic every variant follows (sk_attn8 below):
     *   q, k rows quantized per row and v per channel (d) over the head's unmasked keys (those
     *   with !(kb[j] <= SK_KEY_MASKED); all S keys when every key is masked or kb is NULL), by
     *   quant_rows' rule (amax / 127, rint, clamp to +-127; a zero or non-finite range gives 0);
     *   s[i][j] = (float)(q8[i] . k8[j]) * (sk[j] * (sq[i] * scale)) + kb[j]   (exact int32 dot;
     *   kb[j] <= SK_KEY_MASKED counts as -inf);
     *   e = exp(s - max_j s), u[i][j] = rint(255 e) in [0, 255], L[i] = sum_j u[i][j] (>= 255);
     *   o[i][d] = (float)(sum_j u[i][j] v8[j][d]) * (sv[d] * (1 / (float)L[i]))  (exact int32 sum).
     * A row whose keys are all masked gets zeros. Needs S <= SK_ATTN8_MAX_S (int32 accumulators). */
    void (*attn_head_int8)(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                           float scale, const float *kb, float *o, int64_t ldo, float *scratch);
    /* Fused INT8 FFN (ffn_int8): the first product's output pass kept channel-major. In place
     * over the int32 accumulators acc[r * lds + t] (r < nrows; tokens up to nb rounded up to 16,
     * 64-byte aligned rows), the fp32
     *   mid[r][t] = act((acc[r][t] - comp[r]) * (sx[t] * sw[r]) + bias[r])   (unpack_int8's arithmetic)
     * and amax[t] = max(amax[t], max_r |mid[r][t]|) for t < nb (NaN counts as +inf). */
    void (*mid_int8)(int32_t *acc, int64_t lds, int64_t nrows, int64_t nb, const float *bias, const float *sw,
                     const int32_t *comp, const float *sx, int act, float *amax);
    /* xq tiles (pack_xq's layout, n_in channels) of channel-major fp32 mid[c * ldm + t] for
     * t < nb, quantized per token with inverse scales inv[t] by quant_rows' rule; tokens with
     * inv[t] == 0 (a zero or non-finite range), tokens >= nb and channels >= n_in get u = 128. */
    void (*pack_mid)(const float *mid, int64_t ldm, int64_t n_in, int64_t nb, const float *inv, uint8_t *xq,
                     const sk_tiling *tl);
    /* attn_head_int8 on channel-major q, k, v (qkv_attention_int8: the q / k / v product's rows as
     * its output pass leaves them): row i, channel d at q[d * ld + i] (k, v alike); the same
     * arithmetic, so the same bits as attn_head_int8 on the transposed rows. */
    void (*attn_head_int8_cm)(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                              float scale, const float *kb, float *o, int64_t ldo, float *scratch);
    /* 1: tile_int8 is exact only for u >= 1 (x_q >= -127), which every quantizing pack gives; an
     * int8 input holding -128 then runs on the scalar table (0 in the tables that leave it out) */
    int int8_no_x_min;
} sk_kernels;

/* LayerNorm epilogue of a Linear kernel call (applied after bias, activation and residual). */
typedef struct {
    const float *gamma, *beta; /* N each; beta may be NULL */
    float eps;
} sk_ln;

#define SK_ATTN_ROWS 4 /* query rows per block */
static inline int64_t sk_attn_scratch_floats(int64_t S, int64_t dh)
{
    const int64_t Sp = (S + 15) / 16 * 16;
    return (dh + 1 + SK_ATTN_ROWS) * Sp + S * ((dh + 15) / 16 * 16) + 16;
}

/* INT8 attention: 255 * 127 * S < 2^31 keeps the u . v8 sums exact */
#define SK_ATTN8_MAX_S 65536
/* A key bias at or below this masks its key: -inf (boolean masks), finfo(float32).min (the additive
 * masks of transformers), -1e9 and BERT's original -10000. Its bias counts as -inf
 * (sk_attn8_key_bias), which changes no numerator u: exp of -10000 plus any realistic score
 * difference (far below 9,900) is already 0 in every variant. So the key's value is left out of
 * the value ranges: a sequence padded in a batch gets the scales, and the bits, it gets alone. */
#define SK_KEY_MASKED (-1.0e4f)
/* key j's bias as the INT8 head adds it: a masked key's is -inf (u = 0 in every variant, and a row
 * whose keys are all masked gets zeros, where a finite mask's huge scores would overflow the
 * exponential's argument); 0 without a bias */
static inline float sk_attn8_key_bias(const float *kb, int64_t j)
{
    return !kb ? 0.0f : kb[j] <= SK_KEY_MASKED ? -__builtin_inff() : kb[j];
}
/* 1 when every key counts for the value ranges: kb NULL, or every key masked (no unmasked row
 * then: all S keys count, as without a bias). Otherwise key j counts when !(kb[j] <= SK_KEY_MASKED)
 * (NaN counts as unmasked); the vector variants read that off sk_attn8.bias (-inf past S). */
static inline int sk_attn8_every_key(const float *kb, int64_t S)
{
    if (!kb) return 1;
    for (int64_t j = 0; j < S; j++)
        if (!(kb[j] <= SK_KEY_MASKED)) return 0;
    return 1;
}
/* The INT8 head's scratch, carved from one 64-byte aligned block (every part 64-byte aligned):
 * keys padded to Sp (multiple of 16), head dim to dhp (multiple of 16) and to nq quads of 4. */
typedef struct {
    int64_t S, Sp, dh, dhp, nq;
    int8_t *k8;      /* [nq][Sp][4]: key j's channels 4c..4c+3 at (c * Sp + j) * 4; padding 0 */
    int32_t *kcomp;  /* Sp: 128 * sum_d k8[j][d] (removes the +128 offset of q8) */
    float *ksc;      /* Sp: key scales (0 on padding keys) */
    float *bias;     /* Sp: key bias, -inf on padding keys */
    uint8_t *q8;     /* [nq][Sp][4]: query i's channels 4c..4c+3 at (c * Sp + i) * 4, as q8 + 128 (uint8,
                        vpdpbusd's unsigned operand); padding channels 128 */
    float *qsc;      /* S (padded to 16): query scales */
    int8_t *v8;      /* [Sp / 4][dhp][4]: value of key 4 jq + e, channel d at (jq * dhp + d) * 4 + e */
    float *vsc;      /* dhp: value scales per channel */
    float *p;        /* SK_ATTN_ROWS x Sp: scores, then exponentials */
    uint8_t *pu;     /* SK_ATTN_ROWS x Sp: u = rint(255 e), 0 on masked and padding keys (at least
                        dhp int32: the portable kernel's accumulators) */
} sk_attn8;

static inline int64_t sk_attn8_parts(int64_t S, int64_t dh, sk_attn8 *a, float *base)
{
    const int64_t Sp = (S + 15) / 16 * 16, dhp = (dh + 15) / 16 * 16, nq = (dh + 3) / 4;
    const int64_t sizes[10] = {nq * Sp * 4, Sp * 4, Sp * 4, Sp * 4, nq * Sp * 4, (S + 15) / 16 * 64,
                               Sp * dhp, dhp * 4, SK_ATTN_ROWS * Sp * 4,
                               SK_ATTN_ROWS * Sp > dhp * 4 ? SK_ATTN_ROWS * Sp : dhp * 4};
    int64_t off[10], total = 0; /* bytes, each part rounded up to 64 */
    for (int i = 0; i < 10; i++) {
        off[i] = total;
        total += (sizes[i] + 63) / 64 * 64;
    }
    if (a) {
        char *b = (char *)base;
        a->S = S, a->Sp = Sp, a->dh = dh, a->dhp = dhp, a->nq = nq;
        a->k8 = (int8_t *)(b + off[0]), a->kcomp = (int32_t *)(b + off[1]), a->ksc = (float *)(b + off[2]);
        a->bias = (float *)(b + off[3]), a->q8 = (uint8_t *)(b + off[4]), a->qsc = (float *)(b + off[5]);
        a->v8 = (int8_t *)(b + off[6]), a->vsc = (float *)(b + off[7]), a->p = (float *)(b + off[8]);
        a->pu = (uint8_t *)(b + off[9]);
    }
    return total / 4;
}
static inline int64_t sk_attn8_scratch_floats(int64_t S, int64_t dh) { return sk_attn8_parts(S, dh, NULL, NULL); }

extern const sk_kernels sk_kernels_scalar;
#if defined(__x86_64__) && defined(__GNUC__)
#define SK_HAVE_X86 1
extern const sk_kernels sk_kernels_avx2;
extern const sk_kernels sk_kernels_avx512;
extern const sk_kernels sk_kernels_vnni;
/* the vnni table's INT8 product (sk_vnni.c), which the amx table keeps for blocks other than 16x4 */
void sk_vnni_tile_int8(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval, int64_t br0, int64_t br1,
                       const uint8_t *xq, const sk_tiling *tl, int64_t nq, int32_t *scratch, int64_t lds);
/* AMX intrinsics and target names: GCC 11 / clang 12 onwards */
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11)
#define SK_HAVE_AMX 1
/* AMX tiles for 16x4 blocks (sk_amx.c): the product for bsr16x4 on a CPU with AMX-INT8 */
void sk_amx_tile_int8(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval, int64_t br0, int64_t br1,
                      const uint8_t *xq, const sk_tiling *tl, int64_t nq, int32_t *scratch, int64_t lds);
#endif
#endif

/* Shared scalar helpers (defined in sk_scalar.c). */
void sk_pack_x_generic(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1,
                       float *xt, const sk_tiling *tl, int64_t n_in);
void sk_unpack_y_generic(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                         float *Y, int64_t ldY, const float *bias, const float *R, int act);
void sk_tile_int8_generic(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval,
                          int64_t br0, int64_t br1, const uint8_t *xq, const sk_tiling *tl,
                          int64_t nq, int32_t *scratch, int64_t lds);
void sk_pack_xq_generic(const float *X, int64_t ldX, int64_t nb, int64_t n_in, int64_t q0, int64_t q1,
                        const float *inv, uint8_t *xq, const sk_tiling *tl, int64_t nq);
void sk_pack_xq_raw_generic(const int8_t *X, int64_t ldX, int64_t nb, int64_t n_in, int64_t q0, int64_t q1,
                            uint8_t *xq, const sk_tiling *tl, int64_t nq);
void sk_unpack_int8_generic(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, float *Y,
                            int64_t ldY, const float *bias, const float *R, const float *sw, const int32_t *comp,
                            const float *sx, int act);
/* exact GELU with libm erff (portable epilogue) */
float sk_gelu1(float x);
void sk_unpack_i32_generic(const int32_t *scratch, int64_t lds, int64_t nrows, int64_t ntok, int32_t *Y,
                           int64_t ldY, const int32_t *comp);
void sk_rows_amax_generic(const float *X, int64_t ldX, int64_t K, int64_t t0, int64_t t1, float *amax);
void sk_quant_rows_generic(const float *X, int64_t ntok, int64_t N, int8_t *Q, float *scale);
void sk_mid_int8_generic(int32_t *acc, int64_t lds, int64_t nrows, int64_t nb, const float *bias, const float *sw,
                         const int32_t *comp, const float *sx, int act, float *amax);
void sk_pack_mid_generic(const float *mid, int64_t ldm, int64_t n_in, int64_t nb, const float *inv, uint8_t *xq,
                         const sk_tiling *tl);
void sk_layer_norm_generic(float *Y, int64_t ntok, int64_t N, const float *gamma, const float *beta, float eps,
                           float *amax);
void sk_attn_head_generic(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                          float scale, const float *kb, float *o, int64_t ldo, float *scratch);
void sk_attn_head_int8_generic(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                               float scale, const float *kb, float *o, int64_t ldo, float *scratch);
void sk_attn_head_int8_cm_generic(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                                  float scale, const float *kb, float *o, int64_t ldo, float *scratch);
/* After an INT8 head (whose quantization maps NaN and inf to 0): NaN outputs where torch's would be
 * NaN. A query row holding NaN or inf gets a NaN row; an unmasked key or value row holding one
 * makes the whole head NaN (torch: every score, or every output of that channel); with every key
 * masked, K and V do not count (the rows are zeros, as in fp32 attention). Element (i, d) of q, k,
 * v at i * rs + d * cs. */
void sk_attn8_nan(const float *q, const float *k, const float *v, int64_t rs, int64_t cs, int64_t S, int64_t dh,
                  const float *kb, float *o, int64_t ldo);
/* whether the n contiguous floats at x hold NaN or inf (one branch-free pass) */
int sk_any_nonfinite(const float *x, int64_t n);
#ifdef SK_HAVE_X86
/* AVX-512 fp32 kernels (defined in sk_avx512.c), shared by the avx512 and vnni tables. */
void sk_avx512_tile_fp32(int bh, const sk_segs *sg, const float *xt, const sk_tiling *tl, float *scratch, int64_t lds);
void sk_avx512_pack_x(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1,
                      float *xt, const sk_tiling *tl, int64_t n_in);
void sk_avx512_unpack_y(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                        float *Y, int64_t ldY, const float *bias, const float *R, int act);
void sk_avx512_layer_norm(float *Y, int64_t ntok, int64_t N, const float *gamma, const float *beta, float eps,
                          float *amax);
void sk_avx512_attn_head(const float *q, const float *k, const float *v, int64_t ld, int64_t S, int64_t dh,
                         float scale, const float *kb, float *o, int64_t ldo, float *scratch);
/* the INT8 product without VNNI (AVX-512BW; the avx512 table's only int8 entry of its own) */
void sk_avx512_tile_int8(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval, int64_t br0, int64_t br1,
                         const uint8_t *xq, const sk_tiling *tl, int64_t nq, int32_t *scratch, int64_t lds);
#endif
/* x * inv rounded to nearest even, clamped to [-127, 127] (shared definition of quantization) */
static inline int32_t sk_quant1(float x, float inv)
{
    float v = x * inv;
    if (!(v > -127.0f)) v = -127.0f; /* also maps NaN to -127 */
    if (v > 127.0f) v = 127.0f;
    return (int32_t)__builtin_rintf(v);
}

/* GELU's piecewise cubics of Phi (sk_gelu16 in sk_avx512_inline.h, gelu8 in sk_avx2.c): entry
 * [power][interval], 16 intervals of 5/16 over [0, 5) */
static const float sk_gelu_pw[4][16] __attribute__((aligned(64))) = {
    {4.99999493e-01f, 6.22668326e-01f, 7.34012783e-01f, 8.25747907e-01f, 8.94349515e-01f, 9.40914810e-01f,
     9.69603956e-01f, 9.85647440e-01f, 9.93790746e-01f, 9.97542381e-01f, 9.99111116e-01f, 9.99706507e-01f,
     9.99911606e-01f, 9.99975741e-01f, 9.99993920e-01f, 9.99998629e-01f},
    {1.24684803e-01f, 1.18772738e-01f, 1.02604680e-01f, 8.03798512e-02f, 5.71008399e-02f, 3.67825031e-02f,
     2.14849357e-02f, 1.13792438e-02f, 5.46479179e-03f, 2.37963605e-03f, 9.39552730e-04f, 3.36359517e-04f,
     1.09183587e-04f, 3.21352709e-05f, 8.57586838e-06f, 2.07513790e-06f},
    {-6.83290928e-05f, -6.01429259e-03f, -1.02865007e-02f, -1.19931968e-02f, -1.12683764e-02f, -8.99472926e-03f,
     -6.24573464e-03f, -3.82076227e-03f, -2.07485608e-03f, -1.00516458e-03f, -4.35880007e-04f, -1.69602252e-04f,
     -5.93218319e-05f, -1.86773268e-05f, -5.29908493e-06f, -1.35596099e-06f},
    {-1.94686442e-03f, -1.41375454e-03f, -5.83351764e-04f, 2.14338914e-04f, 7.32257206e-04f, 9.01041669e-04f,
     8.04162759e-04f, 5.84874477e-04f, 3.61816492e-04f, 1.94391425e-04f, 9.17875514e-05f, 3.83751722e-05f,
     1.42778272e-05f, 4.74427134e-06f, 1.41161581e-06f, 3.76854445e-07f},
};


#endif
