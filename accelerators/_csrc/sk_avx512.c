/* AVX-512F kernels (16 fp32 lanes, 32 zmm registers). Compiled for the whole file with a
 * target pragma; only called after module.c checked the CPU supports avx512f/bw/vl. */
#include "sk_common.h"
#ifdef SK_HAVE_X86
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#include <immintrin.h>
#include <string.h>

#define VEC __m512
#define VW 16
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_load_ps(p)
#define VSET1(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VSTORE(p, v) _mm512_store_ps((p), (v))

#define MK_FN mk_b1_v1
#define MK_B 1
#define MK_NV 1
#define MK_U 4
#include "sk_mk_fp32.h"
#define MK_FN mk_b1_v2
#define MK_B 1
#define MK_NV 2
#define MK_U 4
#include "sk_mk_fp32.h"
#define MK_FN mk_b1_v4
#define MK_B 1
#define MK_NV 4
#define MK_U 2
#include "sk_mk_fp32.h"
#define MK_FN mk_b1_v8
#define MK_B 1
#define MK_NV 8
#define MK_U 2
#include "sk_mk_fp32.h"
#define MK_FN mk_b2_v1
#define MK_B 2
#define MK_NV 1
#define MK_U 4
#include "sk_mk_fp32.h"
#define MK_FN mk_b2_v2
#define MK_B 2
#define MK_NV 2
#define MK_U 2
#include "sk_mk_fp32.h"
#define MK_FN mk_b2_v4
#define MK_B 2
#define MK_NV 4
#define MK_U 2
#include "sk_mk_fp32.h"
#define MK_FN mk_b2_v8
#define MK_B 2
#define MK_NV 8
#define MK_U 1
#include "sk_mk_fp32.h"
#define MK_FN mk_b4_v1
#define MK_B 4
#define MK_NV 1
#define MK_U 2
#include "sk_mk_fp32.h"
#define MK_FN mk_b4_v2
#define MK_B 4
#define MK_NV 2
#define MK_U 1
#include "sk_mk_fp32.h"
#define MK_FN mk_b4_v4
#define MK_B 4
#define MK_NV 4
#define MK_U 1
#include "sk_mk_fp32.h"
#define MK_FN mk_b8_v1
#define MK_B 8
#define MK_NV 1
#define MK_U 1
#include "sk_mk_fp32.h"
#define MK_FN mk_b8_v2
#define MK_B 8
#define MK_NV 2
#define MK_U 1
#include "sk_mk_fp32.h"

typedef void (*mk_fn)(const int32_t *restrict, const float *restrict, int64_t, int64_t,
                      const float *restrict, int64_t, float *restrict, int64_t);

/* rows x (K panels) x (sub-tiles); pp[br * (npan + 1) + p] = first block of panel p */
#define ROWLOOP(FN, NVV)                                                                   \
    for (int p = 0; p < npan; p++)                                                         \
        for (int64_t br = br0; br < br1; br++) {                                           \
            float *o = scratch + (br - br0) * bh * lds + tile->t0;                         \
            const int64_t ja = npan > 1 ? pp[br * (npan + 1) + p] : ptr[br];               \
            const int64_t jb = npan > 1 ? pp[br * (npan + 1) + p + 1] : ptr[br + 1];       \
            for (int64_t s = 0; s < nvt; s += (NVV))                                       \
                FN(idx, val, ja, jb, xb + s * VW, w, o + s * VW, lds, p > 0);              \
        }

static void tile_fp32(int bh, const int64_t *ptr, const int64_t *pp, int npan, const int32_t *idx,
                      const float *val, int64_t br0, int64_t br1, const float *xt, const sk_tiling *tl,
                      int64_t n_in, float *scratch, int64_t lds)
{
    (void)n_in;
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        const int64_t nvt = w / VW; /* power of two */
        switch (bh) {
        case 1:
            if (nvt >= 8) { ROWLOOP(mk_b1_v8, 8) }
            else if (nvt >= 4) { ROWLOOP(mk_b1_v4, 4) }
            else if (nvt >= 2) { ROWLOOP(mk_b1_v2, 2) }
            else { ROWLOOP(mk_b1_v1, 1) }
            break;
        case 2:
            if (nvt >= 8) { ROWLOOP(mk_b2_v8, 8) }
            else if (nvt >= 4) { ROWLOOP(mk_b2_v4, 4) }
            else if (nvt >= 2) { ROWLOOP(mk_b2_v2, 2) }
            else { ROWLOOP(mk_b2_v1, 1) }
            break;
        case 4:
            if (nvt >= 4) { ROWLOOP(mk_b4_v4, 4) }
            else if (nvt >= 2) { ROWLOOP(mk_b4_v2, 2) }
            else { ROWLOOP(mk_b4_v1, 1) }
            break;
        default: /* 8 */
            if (nvt >= 2) { ROWLOOP(mk_b8_v2, 2) }
            else { ROWLOOP(mk_b8_v1, 1) }
            break;
        }
    }
}

#include "sk_tr16.h"

static void pack_x(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1,
                   float *xt, const sk_tiling *tl, int64_t n_in)
{
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        for (int64_t tg = 0; tg < w; tg += 16) {
            const int64_t t = tile->t0 + tg;
            int64_t nt = nb - t;
            nt = nt < 0 ? 0 : (nt > 16 ? 16 : nt);
            for (int64_t k = k0; k < k1; k += 16) {
                int64_t nk = k1 - k < 16 ? k1 - k : 16;
                __mmask16 km = (__mmask16)((1u << nk) - 1u);
                __m512 r[16];
                for (int l = 0; l < 16; l++)
                    r[l] = l < nt ? _mm512_maskz_loadu_ps(km, X + (t + l) * ldX + k) : _mm512_setzero_ps();
                tr16(r);
                for (int l = 0; l < nk; l++) _mm512_store_ps(xb + (k + l) * w + tg, r[l]);
            }
        }
    }
    (void)n_in;
}

/* Token-major order over row blocks of 16: each token row of Y receives a run of consecutive
 * lines before the next token, which avoids the L1 set conflicts of a column-wise walk when
 * ldY * 4 is a multiple of 4 KiB (BERT widths 768, 1536, 3072). */
static void unpack_y(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                     float *Y, int64_t ldY, const float *bias, int act)
{
    for (int64_t t = 0; t < ntok; t += 16) {
        const int64_t nt = ntok - t < 16 ? ntok - t : 16;
        for (int64_t r0 = 0; r0 < nrows; r0 += 16) {
            const int64_t nr = nrows - r0 < 16 ? nrows - r0 : 16;
            const __mmask16 rm = (__mmask16)((1u << nr) - 1u);
            const __m512 bv = bias ? _mm512_maskz_loadu_ps(rm, bias + r0) : _mm512_setzero_ps();
            const float *sb = scratch + r0 * lds + t;
            __m512 r[16];
            for (int l = 0; l < 16; l++) r[l] = l < nr ? _mm512_load_ps(sb + l * lds) : _mm512_setzero_ps();
            tr16(r);
            float *yb = Y + t * ldY + r0;
            if (act == SK_ACT_GELU)
                for (int l = 0; l < nt; l++) r[l] = sk_gelu16(_mm512_add_ps(r[l], bv));
            else
                for (int l = 0; l < nt; l++) r[l] = _mm512_add_ps(r[l], bv);
            if (nr == 16) {
                for (int l = 0; l < nt; l++) _mm512_storeu_ps(yb + l * ldY, r[l]);
            } else {
                for (int l = 0; l < nt; l++) _mm512_mask_storeu_ps(yb + l * ldY, rm, r[l]);
            }
        }
    }
}

const sk_kernels sk_kernels_avx512 = {
    "avx512", tile_fp32, pack_x, unpack_y,
    /* int8 on non-VNNI variants: portable C */
    sk_tile_int8_generic, sk_pack_xq_generic, sk_pack_xq_raw_generic, sk_unpack_int8_generic,
    sk_rows_amax_generic, sk_unpack_i32_generic,
};

/* exported for the vnni table */
void sk_avx512_tile_fp32(int bh, const int64_t *ptr, const int64_t *pp, int npan, const int32_t *idx,
                         const float *val, int64_t br0, int64_t br1, const float *xt, const sk_tiling *tl,
                         int64_t n_in, float *scratch, int64_t lds)
{ tile_fp32(bh, ptr, pp, npan, idx, val, br0, br1, xt, tl, n_in, scratch, lds); }
void sk_avx512_pack_x(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1,
                      float *xt, const sk_tiling *tl, int64_t n_in)
{ pack_x(X, ldX, nb, k0, k1, xt, tl, n_in); }
void sk_avx512_unpack_y(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                        float *Y, int64_t ldY, const float *bias, int act)
{ unpack_y(scratch, lds, nrows, ntok, Y, ldY, bias, act); }
#endif
