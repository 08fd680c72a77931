/*
 * TEMPLATE, included once per translation unit (no include guard): the INT8 block product
 * without VNNI, u8 x s8 -> s32 from vpmaddubsw (u8 x s8 -> saturating s16 pairs) and vpmaddwd
 * against ones (s16 pairs -> s32). vpmaddubsw's pair sums overflow for u * w
 * (2 * 255 * 127 > 32767), so the product runs signed: x_q = u - 128 (u ^ 0x80) is given the
 * weight's sign and meets |w| as the unsigned operand, so every pair is at most 2 * 127 * 128 < 2^15:
 * exact for x_q in [-127, 127] (u >= 1: the +128 offset of every quantized activation; the
 * int8-input entry points check for -128: sk_kernels.int8_no_x_min). The tile's contract
 * (sum u * w) adds back 128 * (sum of the row's weights) at the end. Where w = 0 the sign step
 * may keep x_q (AVX-512) or zero it (AVX2's vpsignb); it meets |w| = 0 either way, so the sums
 * are the same on every includer.
 *
 * Expects from the includer: QV (integer vector type), QW (int32 lanes per vector), QZERO(),
 * QLOAD(p) (aligned), QSTORE(p, v), QXOR(a, b), QADD32(a, b), QSET1_8(x), QSET1_16(x), QSET1_32(x),
 * QABS8(v), QSIGN_T (type of a weight's sign), QSIGN_OF(wv) (from the broadcast weight word),
 * QAPPLY_SIGN(x, s) (x negated bytewise where the weight byte is negative), QMADDUBS(a, b)
 * (vpmaddubsw), QMADDWD(a, b) (vpmaddwd), and Q_NV_MAX (most vectors per row of a register tile).
 * Defines mq(B, NV, ...) and the row loop Q_ROWLOOP(B, NV) for the includer's tile_int8.
 */
static inline __attribute__((always_inline)) int32_t wsum4(int32_t word)
{
    return (int32_t)(int8_t)word + (int8_t)(word >> 8) + (int8_t)(word >> 16) + (int8_t)(word >> 24);
}

/* out[b * lds + v * QW + l] = sum_j u(idx[j])[token v * QW + l] . w(j, b0 + b), j in [j0, j1), b < RB:
 * rows b0 .. b0 + RB - 1 of blocks of B rows x 4 columns (RB <= 8 rows at once: 16x4 blocks run in
 * two halves), NV vectors of QW tokens (xt: the tile's quad rows, ldx tokens apart) */
static inline __attribute__((always_inline)) void mq(int B, int RB, int b0, int NV, const int32_t *restrict idx,
                                                     const int32_t *restrict val, int64_t j0, int64_t j1,
                                                     const int32_t *restrict xt, int64_t ldx, int32_t *restrict out,
                                                     int64_t lds)
{
    QV acc[8][Q_NV_MAX];
    int32_t ws[8] = {0};
    const QV ones = QSET1_16(1), flip = QSET1_8((char)0x80);
    _Pragma("GCC unroll 8")
    for (int b = 0; b < RB; b++)
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) acc[b][v] = QZERO();
    for (int64_t j = j0; j < j1; j++) {
        const int32_t *xp = xt + (int64_t)idx[j] * ldx;
        QV xs[Q_NV_MAX];
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) xs[v] = QXOR(QLOAD(xp + v * QW), flip);
        _Pragma("GCC unroll 8")
        for (int b = 0; b < RB; b++) {
            const int32_t word = val[sk_qword(B, j, b0 + b)];
            ws[b] += wsum4(word);
            const QV wv = QSET1_32(word), aw = QABS8(wv);
            const QSIGN_T sg = QSIGN_OF(wv);
            _Pragma("GCC unroll 8")
            for (int v = 0; v < NV; v++)
                acc[b][v] = QADD32(acc[b][v], QMADDWD(QMADDUBS(aw, QAPPLY_SIGN(xs[v], sg)), ones));
        }
    }
    _Pragma("GCC unroll 8")
    for (int b = 0; b < RB; b++) {
        const QV off = QSET1_32(128 * ws[b]);
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) QSTORE(out + b * lds + v * QW, QADD32(acc[b][v], off));
    }
}

/* every block row br0..br1 of every tile, NV vectors at a time, then single vectors (the tile
 * width is a multiple of 16 tokens); blocks of more than 8 rows in slices of 8 */
#define Q_RB(B) ((B) > 8 ? 8 : (B))
#define Q_ROWLOOP(B, NV)                                                                   \
    for (int64_t br = br0; br < br1; br++)                                                 \
        for (int h = 0; h < (B); h += Q_RB(B)) {                                           \
            int32_t *o = scratch + ((br - br0) * (B) + h) * lds + tile->t0;                \
            int64_t s = 0;                                                                 \
            for (; s + (NV) <= nvt; s += (NV))                                             \
                mq(B, Q_RB(B), h, NV, idx, qval, ptr[br], ptr[br + 1], xb + s * QW, w, o + s * QW, lds); \
            for (; s < nvt; s += 1) mq(B, Q_RB(B), h, 1, idx, qval, ptr[br], ptr[br + 1], xb + s * QW, w, o + s * QW, lds); \
        }
