/* AVX2 + FMA kernels (8 fp32 lanes, 16 ymm registers). */
#include "sk_common.h"
#ifdef SK_HAVE_X86
#pragma GCC target("avx2,fma")
#include <immintrin.h>

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

const sk_kernels sk_kernels_avx2 = {
    /* only the fp32 multiply is AVX2; packing, unpacking, int8 and attention are portable C */
    "avx2", tile_fp32, sk_pack_x_generic, sk_unpack_y_generic,
    sk_tile_int8_generic, sk_pack_xq_generic, sk_pack_xq_raw_generic, sk_unpack_int8_generic,
    sk_rows_amax_generic, sk_unpack_i32_generic, sk_attn_head_generic, sk_layer_norm_generic,
    sk_quant_rows_generic, sk_attn_head_int8_generic, sk_mid_int8_generic, sk_pack_mid_generic,
    sk_attn_head_int8_cm_generic,
};
#endif
