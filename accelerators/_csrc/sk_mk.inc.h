/*
 * TEMPLATE, included once per micro-kernel instance (no include guard): a register-tiled
 * micro-kernel, fp32 FMA or (with MK_XT / MK_WT / MK_OT = int32_t) int8 vpdpbusd.
 *
 * Expects before each #include (and #undefs it after):
 *   MK   "name, B, NV, U": the function's name, B block height (output rows per block), NV
 *        vectors per row (token tile = NV * VW tokens), U independent accumulator sets (unroll
 *        over blocks to hide the FMA latency when B * NV is small).
 * and from the includer, once: VEC, VW, VZERO(), VLOAD(p), VSET1(x), VFMA(a, b, c) = a * b + c,
 * VADD(a, b), VSTORE(p, v); optionally MK_XT / MK_WT / MK_OT (element types of the packed
 * activations, of one stored weight, of the accumulator; float by default), and per instance
 * MK_WIDX(j, b), the index in val of block j's weight of row b (default j * B + b; 16x4 blocks
 * use their AMX tile layout, sk_qword).
 *
 * out[b * lds + v * VW + l] = (accum ? out[...] : 0) + sum_j val[MK_WIDX(j, b)] * xt[idx[j] * ldx + v * VW + l], j in [j0, j1)
 */
#ifndef SK_MK_PARAMS
#define SK_MK_PARAMS
#define SK_MK_FN_(fn, b, nv, u) fn
#define SK_MK_B_(fn, b, nv, u) b
#define SK_MK_NV_(fn, b, nv, u) nv
#define SK_MK_U_(fn, b, nv, u) u
#define SK_MK_FN(P) SK_MK_FN_(P) /* one level more, so that P is expanded into its four fields */
#define SK_MK_B(P) SK_MK_B_(P)
#define SK_MK_NV(P) SK_MK_NV_(P)
#define SK_MK_U(P) SK_MK_U_(P)
#endif
#ifndef MK_XT
#define MK_XT float /* element type of the packed activations */
#define MK_WT float /* element type of one stored weight (per block row) */
#define MK_OT float /* accumulator / output element type */
#endif
#ifndef MK_WIDX
#define MK_WIDX(j, b) ((j) * MK_B + (b))
#endif
#define MK_B SK_MK_B(MK)
#define MK_NV SK_MK_NV(MK)
#define MK_U SK_MK_U(MK)
static inline __attribute__((always_inline)) void
SK_MK_FN(MK)(const int32_t *restrict idx, const MK_WT *restrict val, int64_t j0, int64_t j1,
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
                VEC wv = VSET1(val[MK_WIDX(j + u, b)]);
                _Pragma("GCC unroll 64")
                for (int v = 0; v < MK_NV; v++) acc[u][b][v] = VFMA(wv, xv[v], acc[u][b][v]);
            }
        }
    }
#if SK_MK_U(MK) > 1
    for (; j < j1; j++) {
        const MK_XT *xp = xt + (int64_t)idx[j] * ldx;
        VEC xv[MK_NV];
        _Pragma("GCC unroll 64")
        for (int v = 0; v < MK_NV; v++) xv[v] = VLOAD(xp + v * VW);
        _Pragma("GCC unroll 64")
        for (int b = 0; b < MK_B; b++) {
            VEC wv = VSET1(val[MK_WIDX(j, b)]);
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
#undef MK_B
#undef MK_NV
#undef MK_U
#undef MK_WIDX
#undef MK
