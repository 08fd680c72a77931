/*
 * Row-pair micro-kernel template (fp32 FMA, included once per instantiation; MK2_FN the pair,
 * MK2_FN1 its single-row companion, MK2_NV vectors per row): two rows (block
 * rows of height 1) of MK2_NV vectors each, stepped together, so 2 * MK2_NV independent
 * accumulator chains hide the FMA latency with no per-row zeroing or reduction of unrolled sets.
 * Column-panel segments are sorted by length, so the rows of a pair have nearly equal lengths
 * and the single-row tails are short. Vector macros from the includer as in sk_mk_fp32.h.
 *
 * oa[v * VW + l] = (accum ? oa[...] : 0) + sum_j val[j] * xt[idx[j] * ldx + v * VW + l], j in [a0, a1)
 * ob likewise for j in [b0, b1).
 */
#ifndef SK_MK2_ROW
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
static inline __attribute__((always_inline)) void
MK2_FN(const int32_t *restrict idx, const float *restrict val, int64_t a0, int64_t a1, int64_t b0, int64_t b1,
       const float *restrict xt, int64_t ldx, float *restrict oa, float *restrict ob, int accum)
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

/* The single-row companion (MK2_FN1) for a row left without a partner (an odd segment count):
 * the same sequential sum as a row of a pair, so a row's rounding never depends on whether it
 * was paired (SparseLinear.stack promises bit-identical outputs). */
static inline __attribute__((always_inline)) void
MK2_FN1(const int32_t *restrict idx, const float *restrict val, int64_t a0, int64_t a1,
        const float *restrict xt, int64_t ldx, float *restrict oa, int accum)
{
    VEC A[MK2_NV];
    _Pragma("GCC unroll 16")
    for (int v = 0; v < MK2_NV; v++) A[v] = accum ? VLOAD(oa + v * VW) : VZERO();
    SK_MK2_ROW(A, idx, val, a0, a1, MK2_NV)
    _Pragma("GCC unroll 16")
    for (int v = 0; v < MK2_NV; v++) VSTORE(oa + v * VW, A[v]);
}
#undef MK2_FN
#undef MK2_FN1
#undef MK2_NV
