/*
 * Static inline AVX-512 helpers shared by the AVX-512 and VNNI translation units: the 16x16
 * transpose of 32-bit lanes behind every layout change between row-major activations / outputs
 * and token-contiguous tiles, exp for the softmax and GELU. Include after immintrin.h in a file
 * compiled under an avx512f target pragma (each includer gets its own copy, compiled for its
 * own target).
 */
#ifndef SK_AVX512_INLINE_H
#define SK_AVX512_INLINE_H
/* In-register 16x16 transpose of r[0..15]. */
static inline __attribute__((always_inline)) void tr16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int h = 0; h < 2; h++) {
        for (int i = 0; i < 4; i++) {
            t[8 * h + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0x88);
            t[8 * h + 4 + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0xdd);
        }
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
    }
}

/* r = the 16 x 16 block of 32-bit lanes at p (rows lds elements apart, 64-byte aligned; rows
 * from nr on read as zero), transposed: r[l] holds column l. Works for float and int32 data. */
static inline __attribute__((always_inline)) void sk_load_tr16(const void *p, int64_t lds, int64_t nr, __m512 r[16])
{
    const float *f = (const float *)p;
    for (int l = 0; l < 16; l++) r[l] = l < nr ? _mm512_load_ps(f + l * lds) : _mm512_setzero_ps();
    tr16(r);
}

/* e^y for y <= 0 (inputs below -87 flush to ~0): Cody-Waite reduction, degree-6 polynomial */
static inline __attribute__((always_inline)) __m512 sk_exp_nonpos16(__m512 y)
{
    y = _mm512_max_ps(y, _mm512_set1_ps(-87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), y);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* GELU x Phi(x) (Phi the standard normal CDF: the exact-form 0.5 x (1 + erf(x / sqrt 2))) within
 * 1.7e-6 absolute for every x, without a division or an exp: Phi(|x|) is a cubic in u on each of
 * 16 intervals |x| = (k + u) * 5/16, u in [0, 1), over [0, 5) (coefficients fitted to Phi by least
 * squares on Chebyshev nodes; the coefficients of 16 lanes are one permute each), 1 from 5 on
 * (1 - Phi(5) = 2.9e-7); Phi(x) = 1 - Phi(|x|) for x < 0. NaN stays NaN. */
/* (coefficients: sk_gelu_pw in sk_common.h, shared with the AVX2 gelu8) */

static inline __attribute__((always_inline)) __m512 sk_gelu16(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f), a = _mm512_abs_ps(x);
    const __m512 t = _mm512_mul_ps(a, _mm512_set1_ps(3.2f)); /* 16 / 5 */
    const __m512 kf = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512i k = _mm512_cvttps_epi32(kf); /* lanes past 5 index garbage: replaced below */
    const __m512 u = _mm512_sub_ps(t, kf);
    __m512 p = _mm512_permutexvar_ps(k, _mm512_load_ps(sk_gelu_pw[3]));
    p = _mm512_fmadd_ps(p, u, _mm512_permutexvar_ps(k, _mm512_load_ps(sk_gelu_pw[2])));
    p = _mm512_fmadd_ps(p, u, _mm512_permutexvar_ps(k, _mm512_load_ps(sk_gelu_pw[1])));
    p = _mm512_fmadd_ps(p, u, _mm512_permutexvar_ps(k, _mm512_load_ps(sk_gelu_pw[0])));
    p = _mm512_mask_mov_ps(p, _mm512_cmp_ps_mask(a, _mm512_set1_ps(5.0f), _CMP_GE_OQ), one);
    p = _mm512_mask_sub_ps(p, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), one, p);
    return _mm512_mul_ps(x, p);
}
#endif
