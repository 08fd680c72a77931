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

void sk_unpack_y_generic(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                         float *Y, int64_t ldY, const float *bias)
{
    for (int64_t t = 0; t < ntok; t++) {
        float *yr = Y + t * ldY;
        for (int64_t r = 0; r < nrows; r++) yr[r] = scratch[r * lds + t] + (bias ? bias[r] : 0.0f);
    }
}

static void tile_fp32(int bh, const int64_t *ptr, const int64_t *pp, int npan, const int32_t *idx,
                      const float *val, int64_t br0, int64_t br1, const float *xt, const sk_tiling *tl,
                      int64_t n_in, float *scratch, int64_t lds)
{
    (void)n_in;
    (void)pp;
    (void)npan; /* panels only change the order of the sum; the portable kernel ignores them */
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const float *xb = xt + tile->offset;
        const int64_t w = tile->width;
        for (int64_t br = br0; br < br1; br++) {
            for (int64_t tg = 0; tg < w; tg += 16) {
                float acc[8][16];
                memset(acc, 0, sizeof(acc));
                for (int64_t j = ptr[br]; j < ptr[br + 1]; j++) {
                    const float *xp = xb + (int64_t)idx[j] * w + tg;
                    for (int b = 0; b < bh; b++) {
                        const float wv = val[j * bh + b];
                        for (int l = 0; l < 16; l++) acc[b][l] += wv * xp[l];
                    }
                }
                for (int b = 0; b < bh; b++) {
                    float *o = scratch + ((br - br0) * bh + b) * lds + tile->t0 + tg;
                    for (int l = 0; l < 16; l++) o[l] = acc[b][l];
                }
            }
        }
    }
}

const sk_kernels sk_kernels_scalar = {
    "scalar", tile_fp32, sk_pack_x_generic, sk_unpack_y_generic, NULL, NULL,
};
