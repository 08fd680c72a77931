/*
 * TEMPLATE, included once per translation unit (no include guard): the INT8 product of 16x4
 * blocks ("bsr16x4") on AMX tiles, one `tdpbsud` per 16 output rows x 16 tokens x 16 blocks.
 *
 *   C[16 rows][16 tokens] (int32) += A[16 rows][16 blocks x 4 int8] . B[16 blocks][16 tokens x 4 uint8]
 *
 * A (signed weights) is one stored group of 16 blocks as packing lays it out (sk_qword: row b's
 * 16 words contiguous, 64 bytes), loaded as it is. B (unsigned activations, u = x_q + 128) takes
 * row k from the packed activation tile's quad row idx[k]: its 16 tokens x 4 bytes are 64
 * contiguous bytes there, but the 16 rows of a group are not a constant stride apart, so they are
 * gathered into a buffer first (one copy per block and row of sub-tiles, NS x 64 bytes). C is
 * stored output-row-major, the scratch layout the unpack reads. tdpbsud sums 4 products per int32
 * lane exactly (no saturation), so the sums are those of every other variant, bit for bit.
 *
 * Schedule per token tile and 16-row block row: up to 4 sub-tiles of 16 tokens at once (C in
 * tiles 0-3), each group of 16 blocks loaded once into tile 4 (A) and met by the 4 sub-tiles'
 * gathered activations (B, tiles 5 and 6 alternating).
 *
 * Expects from the includer: AMX16_FN (the function's name), AMX_STATE (declarations the
 * operations below need), AMX_BEGIN() / AMX_END() (configure all tiles as 16 rows x 64 bytes;
 * release them), AMX_ZERO(t), AMX_LOAD(t, p, stride), AMX_STORE(t, p, stride) (16 rows of 64
 * bytes, stride in bytes), AMX_DP(c, a, b) (c += a (int8) . b (uint8), tdpbsud) and
 * AMX_COPY(dst, src, n) (n bytes, a multiple of 64). Tile numbers are literal constants.
 */
static void AMX16_FN(const int64_t *ptr, const int32_t *idx, const int32_t *qval, int64_t br0, int64_t br1,
                     const uint8_t *xq, const sk_tiling *tl, int32_t *scratch, int64_t lds)
{
    enum { SUB = 4 };  /* sub-tiles of 16 tokens per pass: C tiles 0..3 */
    uint8_t bbuf[SK_TILE_ROWS * SUB * 64] __attribute__((aligned(64)));
    AMX_STATE;
    AMX_BEGIN();
    for (int i = 0; i < tl->ntiles; i++) {
        const sk_tile *tile = &tl->tiles[i];
        const uint8_t *xb = xq + tile->offset;
        const int64_t w = tile->width, nsub = w / 16; /* tokens: a multiple of 16 */
        for (int64_t br = br0; br < br1; br++) {
            int32_t *o = scratch + (br - br0) * SK_TILE_ROWS * lds + tile->t0;
            const int64_t j0 = ptr[br], j1 = ptr[br + 1]; /* j1 - j0: a multiple of 16 (packing pads) */
            for (int64_t s0 = 0; s0 < nsub; s0 += SUB) {
                const int ns = (int)(nsub - s0 < SUB ? nsub - s0 : SUB);
                const int64_t ldb = (int64_t)ns * 64; /* bytes per gathered row */
                AMX_ZERO(0);
                AMX_ZERO(1);
                AMX_ZERO(2);
                AMX_ZERO(3);
                for (int64_t g = j0; g < j1; g += SK_TILE_ROWS) {
                    for (int k = 0; k < SK_TILE_ROWS; k++)
                        AMX_COPY(bbuf + k * ldb, xb + ((int64_t)idx[g + k] * w + s0 * 16) * 4, ldb);
                    AMX_LOAD(4, qval + g * SK_TILE_ROWS, 64);
                    AMX_LOAD(5, bbuf, ldb);
                    AMX_DP(0, 4, 5);
                    if (ns > 1) {
                        AMX_LOAD(6, bbuf + 64, ldb);
                        AMX_DP(1, 4, 6);
                    }
                    if (ns > 2) {
                        AMX_LOAD(5, bbuf + 128, ldb);
                        AMX_DP(2, 4, 5);
                    }
                    if (ns > 3) {
                        AMX_LOAD(6, bbuf + 192, ldb);
                        AMX_DP(3, 4, 6);
                    }
                }
                const int64_t ldo = lds * (int64_t)sizeof(int32_t);
                AMX_STORE(0, o + s0 * 16, ldo);
                if (ns > 1) AMX_STORE(1, o + (s0 + 1) * 16, ldo);
                if (ns > 2) AMX_STORE(2, o + (s0 + 2) * 16, ldo);
                if (ns > 3) AMX_STORE(3, o + (s0 + 3) * 16, ldo);
            }
        }
    }
    AMX_END();
}
