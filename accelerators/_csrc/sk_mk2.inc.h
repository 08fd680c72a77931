/*
 * TEMPLATE, included once per instance (no include guard): the row-pair fp32 micro-kernel and
 * its single-row companion, for height-1 blocks (CSR rows and column-panel segments).
 *
 * Expects before each #include (and #undefs it after):
 *   MK2  "pair, single, NV": the names of the pair kernel and of its single-row companion, and
 *        NV vectors per row;
 * and the includer's vector macros as in sk_mk.inc.h.
 *
 * Two rows of NV vectors each are stepped together, so 2 * NV independent accumulator chains
 * hide the FMA latency with no per-row zeroing or reduction of unrolled sets. Column-panel
 * segments are sorted by length, so the rows of a pair have nearly equal lengths and the
 * single-row tails are short.
 *
 * oa[v * VW + l] = (accum ? oa[...] : 0) + sum_j val[j] * xt[idx[j] * ldx + v * VW + l], j in [a0, a1)
 * ob likewise for j in [b0, b1).
 */
#ifndef SK_MK2_PARAMS
#define SK_MK2_PARAMS
#define SK_MK2_FN_(fn2, fn1, nv) fn2
#define SK_MK2_FN1_(fn2, fn1, nv) fn1
#define SK_MK2_NV_(fn2, fn1, nv) nv
#define SK_MK2_FN(P) SK_MK2_FN_(P) /* one level more, so that P is expanded into its fields */
#define SK_MK2_FN1(P) SK_MK2_FN1_(P)
#define SK_MK2_NV(P) SK_MK2_NV_(P)
/* ACC[0..NV) += sum_j VAL[j] * xt[IDX[j] * ldx + v * VW], j in [J0, J1): one row's sequential sum,
 * shared by the pair's tails and the single-row companion so both round alike */
#define SK_MK2_ROW(ACC, IDX, VAL, J0, J1, NV)                                               \
    for (int64_t j_ = (J0); j_ < (J1); j_++) {                                             \
        const float *x_ = xt + (int64_t)(IDX)[j_] * ldx;                                   \
        const VEC w_ = VSET1((VAL)[j_]);                                                   \
        _Pragma("GCC unroll 16")                                                           \
        for (int v = 0; v < (NV); v++) (ACC)[v] = VFMA(w_, VLOAD(x_ + v * VW), (ACC)[v]);  \
    }
#endif
#define MK2_NV SK_MK2_NV(MK2)
static inline __attribute__((always_inline)) void
SK_MK2_FN(MK2)(const int32_t *restrict idx, const float *restrict val, int64_t a0, int64_t a1, int64_t b0,
               int64_t b1, const float *restrict xt, int64_t ldx, float *restrict oa, float *restrict ob, int accum)
{
    VEC A[MK2_NV], B[MK2_NV];
    _Pragma("GCC unroll 16")
    for (int v = 0; v < MK2_NV; v++) {
        A[v] = accum ? VLOAD(oa + v * VW) : VZERO();
        B[v] = accum ? VLOAD(ob + v * VW) : VZERO();
    }
    const int64_t na = a1 - a0, nb = b1 - b0, n = na < nb ? na : nb;
    const int32_t *ia = idx + a0, *ib = idx + b0;
    const float *va = val + a0, *vb = val + b0;
    int64_t k = 0;
    for (; k < n; k++) {
        const float *xa = xt + (int64_t)ia[k] * ldx, *xb = xt + (int64_t)ib[k] * ldx;
        const VEC wa = VSET1(va[k]), wb = VSET1(vb[k]);
        _Pragma("GCC unroll 16")
        for (int v = 0; v < MK2_NV; v++) {
            A[v] = VFMA(wa, VLOAD(xa + v * VW), A[v]);
            B[v] = VFMA(wb, VLOAD(xb + v * VW), B[v]);
        }
    }
    SK_MK2_ROW(A, ia, va, k, na, MK2_NV)
    SK_MK2_ROW(B, ib, vb, k, nb, MK2_NV)
    _Pragma("GCC unroll 16")
    for (int v = 0; v < MK2_NV; v++) {
        VSTORE(oa + v * VW, A[v]);
        VSTORE(ob + v * VW, B[v]);
    }
}

/* The single-row companion for a row left without a partner (an odd segment count):
 * the same sequential sum as a row of a pair, so a row's rounding never depends on whether it
 * was paired (SparseLinear.stack promises bit-identical outputs). */
static inline __attribute__((always_inline)) void
SK_MK2_FN1(MK2)(const int32_t *restrict idx, const float *restrict val, int64_t a0, int64_t a1,
                const float *restrict xt, int64_t ldx, float *restrict oa, int accum)
{
    VEC A[MK2_NV];
    _Pragma("GCC unroll 16")
    for (int v = 0; v < MK2_NV; v++) A[v] = accum ? VLOAD(oa + v * VW) : VZERO();
    SK_MK2_ROW(A, idx, val, a0, a1, MK2_NV)
    _Pragma("GCC unroll 16")
    for (int v = 0; v < MK2_NV; v++) VSTORE(oa + v * VW, A[v]);
}
#undef MK2_NV
#undef MK2
