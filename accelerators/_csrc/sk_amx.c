/* AMX variant: the vnni table with AMX tiles for the product of 16x4 blocks (bsr16x4); every
 * other block height keeps vpdpbusd. The tile schedule is sk_amx16.inc.h, shared with the
 * portable kernel (sk_scalar.c), which runs it with the tile operations written in C. */
#include "sk_common.h"
#ifdef SK_HAVE_AMX
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,amx-tile,amx-int8")
#include <immintrin.h>
#include <string.h>

/* LDTILECFG's 64-byte operand, palette 1: eight tiles of 16 rows x 64 bytes */
typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) sk_tilecfg;

/* The tile intrinsics are asm statements that name their pointer but not the memory behind it, so
 * the compiler could keep, reorder or drop the plain stores a tile load reads (the gathered rows,
 * the configuration), move the next rows' stores above it, or cache what a tile store wrote: a
 * compiler barrier on both sides of every tile load, before the configuration and after every
 * tile store. */
#define AMX_BARRIER() __asm__ volatile("" ::: "memory")

static inline __attribute__((always_inline)) void amx_begin(sk_tilecfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->palette = 1;
    for (int t = 0; t < 8; t++) cfg->colsb[t] = 64, cfg->rows[t] = 16;
    AMX_BARRIER();
    _tile_loadconfig(cfg);
}

/* n = 64, 128, 192 or 256 bytes (1 to 4 sub-tiles); written out, as a loop becomes a memcpy call */
static inline __attribute__((always_inline)) void amx_copy(uint8_t *dst, const uint8_t *src, int64_t n)
{
    _mm512_store_si512((void *)dst, _mm512_loadu_si512((const void *)src));
    if (n > 64) _mm512_store_si512((void *)(dst + 64), _mm512_loadu_si512((const void *)(src + 64)));
    if (n > 128) _mm512_store_si512((void *)(dst + 128), _mm512_loadu_si512((const void *)(src + 128)));
    if (n > 192) _mm512_store_si512((void *)(dst + 192), _mm512_loadu_si512((const void *)(src + 192)));
}

#define AMX16_FN amx_tile_16x4
#define AMX_STATE sk_tilecfg cfg_
#define AMX_BEGIN() amx_begin(&cfg_)
#define AMX_END() _tile_release()
#define AMX_ZERO(n) _tile_zero(n)
#define AMX_LOAD(n, p, stride) do { AMX_BARRIER(); _tile_loadd(n, (const void *)(p), stride); AMX_BARRIER(); } while (0)
#define AMX_STORE(n, p, stride) do { _tile_stored(n, (void *)(p), stride); AMX_BARRIER(); } while (0)
#define AMX_DP(c, a, b) _tile_dpbsud(c, a, b)
#define AMX_COPY(dst, src, n) amx_copy((dst), (src), (n))
#include "sk_amx16.inc.h"

void sk_amx_tile_int8(int bh, const int64_t *ptr, const int32_t *idx, const int32_t *qval, int64_t br0, int64_t br1,
                      const uint8_t *xq, const sk_tiling *tl, int64_t nq, int32_t *scratch, int64_t lds)
{
    if (bh == SK_TILE_ROWS) amx_tile_16x4(ptr, idx, qval, br0, br1, xq, tl, scratch, lds);
    else sk_vnni_tile_int8(bh, ptr, idx, qval, br0, br1, xq, tl, nq, scratch, lds);
}
#endif
