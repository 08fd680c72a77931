/* AVX-512 VNNI variant: fp32 kernels are the AVX-512 ones; INT8 kernels use vpdpbusd. */
#include "sk_common.h"
#ifdef SK_HAVE_X86
void sk_avx512_tile_fp32(int bh, const int64_t *ptr, const int64_t *pp, int npan, const int32_t *idx,
                         const float *val, int64_t br0, int64_t br1, const float *xt, const sk_tiling *tl,
                         int64_t n_in, float *scratch, int64_t lds);
void sk_avx512_pack_x(const float *X, int64_t ldX, int64_t nb, int64_t k0, int64_t k1,
                      float *xt, const sk_tiling *tl, int64_t n_in);
void sk_avx512_unpack_y(const float *scratch, int64_t lds, int64_t nrows, int64_t ntok,
                        float *Y, int64_t ldY, const float *bias);

const sk_kernels sk_kernels_vnni = {
    "vnni", sk_avx512_tile_fp32, sk_avx512_pack_x, sk_avx512_unpack_y, NULL, NULL,
};
#endif
