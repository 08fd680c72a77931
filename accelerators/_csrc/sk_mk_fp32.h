/*
 * Register-tiled micro-kernel template (fp32 FMA, or int8 vpdpbusd with MK_XT/MK_WT/MK_OT = int32) (included several times per ISA file).
 * Parameters (macros): MK_FN name, MK_B block height (output rows per block), MK_NV vectors
 * per row (token tile = MK_NV * VW tokens), MK_U independent accumulator sets (unroll over
 * blocks to hide FMA latency when MK_B * MK_NV is small).
 * Vector macros from the includer: VEC, VW, VZERO(), VLOAD(p), VSET1(x), VFMA(a,b,c)=a*b+c,
 * VADD(a,b), VSTORE(p,v).
 *
 * out[b * lds + v * VW + l] = (accum ? out[...] : 0) + sum_j val[j*B+b] * xt[idx[j] * ldx + v * VW + l], j in [j0, j1)
 */
#ifndef MK_XT
#define MK_XT float /* element type of the packed activations */
#define MK_WT float /* element type of one stored weight (per block row) */
#define MK_OT float /* accumulator / output element type */
#endif
static inline __attribute__((always_inline)) void
MK_FN(const int32_t *restrict idx, const MK_WT *restrict val, int64_t j0, int64_t j1,
      const MK_XT *restrict xt, int64_t ldx, MK_OT *restrict out, int64_t lds, int accum)
{
    VEC acc[MK_U][MK_B][MK_NV];
    _Pragma("GCC unroll 64")
    for (int u = 0; u < MK_U; u++)
        _Pragma("GCC unroll 64")
        for (int b = 0; b < MK_B; b++)
            _Pragma("GCC unroll 64")
            for (int v = 0; v < MK_NV; v++) acc[u][b][v] = VZERO();
    if (accum) {
        _Pragma("GCC unroll 64")
        for (int b = 0; b < MK_B; b++)
            _Pragma("GCC unroll 64")
            for (int v = 0; v < MK_NV; v++) acc[0][b][v] = VLOAD(out + b * lds + v * VW);
    }
    int64_t j = j0;
    for (; j + MK_U <= j1; j += MK_U) {
        _Pragma("GCC unroll 64")
        for (int u = 0; u < MK_U; u++) {
            const MK_XT *xp = xt + (int64_t)idx[j + u] * ldx;
            VEC xv[MK_NV];
            _Pragma("GCC unroll 64")
            for (int v = 0; v < MK_NV; v++) xv[v] = VLOAD(xp + v * VW);
            _Pragma("GCC unroll 64")
            for (int b = 0; b < MK_B; b++) {
                VEC wv = VSET1(val[(j + u) * MK_B + b]);
                _Pragma("GCC unroll 64")
                for (int v = 0; v < MK_NV; v++) acc[u][b][v] = VFMA(wv, xv[v], acc[u][b][v]);
            }
        }
    }
#if MK_U > 1
    for (; j < j1; j++) {
        const MK_XT *xp = xt + (int64_t)idx[j] * ldx;
        VEC xv[MK_NV];
        _Pragma("GCC unroll 64")
        for (int v = 0; v < MK_NV; v++) xv[v] = VLOAD(xp + v * VW);
        _Pragma("GCC unroll 64")
        for (int b = 0; b < MK_B; b++) {
            VEC wv = VSET1(val[j * MK_B + b]);
            _Pragma("GCC unroll 64")
            for (int v = 0; v < MK_NV; v++) acc[0][b][v] = VFMA(wv, xv[v], acc[0][b][v]);
        }
    }
    _Pragma("GCC unroll 64")
    for (int u = 1; u < MK_U; u++)
        _Pragma("GCC unroll 64")
        for (int b = 0; b < MK_B; b++)
            _Pragma("GCC unroll 64")
            for (int v = 0; v < MK_NV; v++) acc[0][b][v] = VADD(acc[0][b][v], acc[u][b][v]);
#endif
    _Pragma("GCC unroll 64")
    for (int b = 0; b < MK_B; b++)
        _Pragma("GCC unroll 64")
        for (int v = 0; v < MK_NV; v++) VSTORE(out + b * lds + v * VW, acc[0][b][v]);
}
#undef MK_FN
#undef MK_B
#undef MK_NV
#undef MK_U
