// despeck/kernels/detail/winograd_amx.inl — fast inference's Winograd F(6x6,3x3) products on
// AMX, Intel's tile matrix unit (Sapphire Rapids and later), as exact int8 products of values cut
// into three 8-bit slices. Included once by conv2d_direct.hpp, inside an AVX-512 + AVX512-BF16
// target region, after direct_avx512 (whose input and output transforms it reuses). Not a public
// header. (split_parts16 and the tile macros below also serve conv2d_amx_exact.inl.)
//
// The products. A point's product is a 64-channel dot product per output, sum_c x_c w_c: x one
// tile's transformed input at the point (a row), w the point's transformed weights for one output
// (a column). Each row is scaled by 127 * 2^16 / max|x_c|, each column by 127 * 2^16 / max|w_c|,
// and each scaled value cut into the three signed base-256 digits of its nearest integer
// (slice_scale and slice_scaled in conv2d_direct.hpp): x = (x0 + x1 / 2^8 + x2 / 2^16) max|x| /
// 127, every slice in -128 .. 127, 23 bits below the row's largest value. A tile multiply
// (TDPBSSD) sums int8 products into int32 exactly, so the three levels
//   L0 = sum x0 w0,  L1 = sum x0 w1 + x1 w0,  L2 = sum x0 w2 + x1 w1 + x2 w0
// are exact, and the product is (L0 + L1 / 2^8 + L2 / 2^16) (max|x| / 127) (max|w| / 127); the
// next levels' terms, each at most about 2^-24 of max|x| max|w| and of either sign, are
// dropped. Six int8 tile multiplies per float product, each 16 x 16 x 64 multiply-adds in 16
// cycles: the tile work of three bf16 products.
// Why not bf16, as before: x = hi + lo in two bf16 keeps 16 bits of each value, and the three
// products xh wh + xh wl + xl wh leave out about 2^-16 of each term in three places (the
// remainders of x and of w, and xl wl). Fast inference on the authors' model and real SAR then
// strayed 2.3e-3 of a pixel's value from exact mode at its worst pixel, over fast mode's 1e-3.
// The slices keep 2^-23 of the row's largest value, and the worst pixel stays within 3.4e-4
// (float products: 1.9e-4), three times inside the bound (docs/benchmarks.md, "Fast inference
// accuracy" and "The Intel Xeon, eighth session"). The price is vector work, the slicing and the
// levels' combination: fast inference about 8% slower than with the bf16 products.
//
// One work item is a block of up to 32 tiles of one tile row, as in run_winograd:
//   1. input transform (direct_avx512's, float) of each tile into an L1 scratch S [64 points][64
//      channels], then sliced into the block buffer: per tile 64 points x 256 bytes, the point's
//      three slices of 64 int8 channels at bytes 0, 64 and 128 and the row's unscale max|x| / 127
//      (float) at byte 192;
//   2. per row tile (16 tiles: the rows of an A tile) and point, the three levels of its products
//      with the point's weights into an L1 scratch of int32 [3 levels][16 rows][64 outputs], then
//      combined in float over the same 256 bytes of the block (the point's slices are read in
//      full before);
//   3. output transform (direct_avx512's) of each tile, bias and ReLU.
// Tiles lie tile_bytes apart: 64 bytes more than the 16 KiB a tile holds, so that the 16 rows of a
// tile load do not all map to one L1 set.
//
// Rows whose largest magnitude is under 2^-100 (zero, say: tiles past the image's edge) give zero
// products; a row holding an infinity or NaN gives NaN products (float products give inf or NaN,
// which the output transform's differences make NaN as a rule), and so does a column holding one.
//
// 64 -> 64 channels only (deSpeckNet's width; prepare_conv_winograd picks this path for no other).
// The tile instructions are written as inline assembly with a memory clobber: GCC 12's intrinsics
// claim no memory effects, so ordinary loads of what a tile store wrote could move above it (and
// its _tile_loadconfig reads 8 bytes of the 64-byte configuration, so the stores filling it may be
// dropped). The tile macros stay defined for conv2d_amx_exact.inl, which undefines them.

namespace direct_amx {

constexpr index_t points = 64;             // (6 + 2)^2
constexpr index_t channels = 64;           // ci = co
constexpr index_t point_bytes = 256;       // 3 x 64 int8 slices and the row's unscale, later 64 floats
constexpr index_t tile_bytes = points * point_bytes + 64;
constexpr index_t block_tiles = 32;        // two A tiles of 16 rows
constexpr index_t point_slice_bytes = slices * 4 * 1024;               // [slice 3][column 4] B tiles of 1 KiB
constexpr index_t point_weight_bytes = point_slice_bytes + channels * 4;  // then the 64 columns' unscales
constexpr index_t level_words = slices * 16 * channels;               // int32 [level 3][row 16][output 64]
// Scratch per thread, in floats: the block, S, and one row tile's levels at one point.
constexpr index_t scratch_floats = block_tiles * tile_bytes / 4 + points * channels + level_words;

#define DESPECK_TILE_ZERO(t) asm volatile("tilezero %%tmm" #t ::: "memory")
#define DESPECK_TILE_LOAD(t, ptr, stride) \
    asm volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(ptr), "r"(static_cast<index_t>(stride)) : "memory")
#define DESPECK_TILE_STORE(t, ptr, stride) \
    asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(ptr), "r"(static_cast<index_t>(stride)) : "memory")
// C [rows x 16 floats] += A [rows x 32 bf16] B [32 x 16 bf16], B stored as 16 rows of channel
// pairs (row r: channels 2r and 2r + 1 for each of 16 outputs); tdpbf16ps C, A, B in Intel's order.
#define DESPECK_TILE_DP(c, a, b) asm volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::: "memory")
// C [rows x 16 int32] += A [rows x 64 int8] B [64 x 16 int8], B stored as 16 rows of channel
// quads (row r: channels 4r .. 4r + 3 for each of 16 outputs); sums exact in int32.
#define DESPECK_TILE_DP_INT8(c, a, b) asm volatile("tdpbssd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::: "memory")

// Tile registers: C (sums) 0-3, A (inputs) 4-5, B (weights) 6-7; every row 64 bytes (16 floats
// or int32, 32 bf16, 64 int8). A and C tiles have `rows` rows (the pixels or tiles in hand), B
// tiles 16.
struct alignas(64) TileConfig {
    std::uint8_t palette = 1, start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};
inline void load_tile_config(int rows) {
    TileConfig c;
    for (int t = 0; t < 8; ++t) c.colsb[t] = 64;
    for (int t = 0; t < 6; ++t) c.rows[t] = static_cast<std::uint8_t>(rows);
    c.rows[6] = c.rows[7] = 16;
    asm volatile("ldtilecfg %0" ::"m"(c) : "memory");
}
inline void release_tiles() { asm volatile("tilerelease" ::: "memory"); }

// 16 floats -> `parts` bf16 parts, `channels` elements apart (d 32-byte aligned): part 0 the
// nearest bf16 of x (ties to even), each later part the nearest bf16 of what the parts before it
// left. Three hold a float exactly: exact mode's products (conv2d_amx_exact.inl) use them. Like
// the tile unit, the conversion treats denormal inputs as zero. A value of 3.39e38 or more in
// magnitude rounds to an infinite first part and NaN after it: such a layer gives NaN where
// float products would give inf.
template <int parts>
inline void split_parts16(const float* s, std::uint16_t* d) {
    __m512 v = _mm512_loadu_ps(s);
    DESPECK_UNROLL
    for (int part = 0; part < parts; ++part) {
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
        _mm256_store_si256(reinterpret_cast<__m256i*>(d + part * channels), h);
        if (part + 1 < parts) v = _mm512_sub_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
}
// One point's 64 channels x (S, floats) into its block slot, as slice_scale and slice_scaled
// (conv2d_direct.hpp) make them: slices 0, 1 and 2 as rows of 64 int8 at bytes 0, 64 and 128, the
// row's unscale (float) at byte 192. q's bytes are the slices: a byte shuffle gathers each 128-bit
// lane's bytes k into its dword k, two dword permutes and a 128-bit shuffle then bring each
// byte's dwords of the four vectors together, in channel order.
//
// The max and 128-bit shuffles are the masked intrinsics with a full mask: GCC 12's unmasked ones
// pass _mm512_undefined_epi32() through, which -Wuninitialized reports here once they are inlined
// (GCC bug 105593, fixed in 12.3).
inline void slice_row(const float* x, char* slot) {
    constexpr __mmask16 all16 = 0xffff;
    constexpr __mmask8 all8 = 0xff;
    __m512 v[4];
    __m512i top = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
        v[k] = _mm512_load_ps(x + 16 * k);
        top = _mm512_mask_max_epu32(top, all16, top, _mm512_and_si512(_mm512_castps_si512(v[k]), _mm512_set1_epi32(0x7fffffff)));
    }
    // The largest magnitude by its bits (an unsigned compare orders finite floats, inf and NaN),
    // into every lane: halves, 128-bit lanes, pairs and dwords swapped in turn.
    top = _mm512_mask_max_epu32(top, all16, top, _mm512_mask_shuffle_i64x2(top, all8, top, top, 0x4e));
    top = _mm512_mask_max_epu32(top, all16, top, _mm512_mask_shuffle_i64x2(top, all8, top, top, 0xb1));
    top = _mm512_mask_max_epu32(top, all16, top, _mm512_mask_shuffle_epi32(top, all16, top, _MM_PERM_BADC));
    top = _mm512_mask_max_epu32(top, all16, top, _mm512_mask_shuffle_epi32(top, all16, top, _MM_PERM_CDAB));
    const SliceScale s = slice_scale(static_cast<std::uint32_t>(_mm512_cvtsi512_si32(top)));
    const __m512 scale = _mm512_set1_ps(s.scale);
    const __m512i bytes_to_dwords = _mm512_set4_epi32(0x0f0b0703, 0x0e0a0602, 0x0d090501, 0x0c080400);
    const __m512i offset = _mm512_set1_epi32(0x8080);
    __m512i q[4];
    for (int k = 0; k < 4; ++k) {
        // 0 * inf would be NaN: a zero scale means zero slices.
        const __m512 y = s.scale == 0.f ? _mm512_setzero_ps() : _mm512_mul_ps(v[k], scale);
        const __m512i digits = _mm512_xor_si512(_mm512_add_epi32(_mm512_cvtps_epi32(y), offset), offset);
        q[k] = _mm512_shuffle_epi8(digits, bytes_to_dwords);  // lane l: dword k = byte k of its 4 values
    }
    // Dwords [vector a: byte b of lanes 0-3][vector b: the same][a: byte b'][b: byte b'].
    const __m512i bytes21 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i bytes0 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 3, 7, 11, 15, 19, 23, 27, 31);
    const __m512i a01 = _mm512_permutex2var_epi32(q[0], bytes21, q[1]), a23 = _mm512_permutex2var_epi32(q[2], bytes21, q[3]);
    const __m512i b01 = _mm512_permutex2var_epi32(q[0], bytes0, q[1]), b23 = _mm512_permutex2var_epi32(q[2], bytes0, q[3]);
    _mm512_store_si512(slot, _mm512_mask_shuffle_i64x2(a01, all8, a01, a23, 0x44));        // byte 2: slice 0
    _mm512_store_si512(slot + 64, _mm512_mask_shuffle_i64x2(a01, all8, a01, a23, 0xee));   // byte 1: slice 1
    _mm512_store_si512(slot + 128, _mm512_mask_shuffle_i64x2(b01, all8, b01, b23, 0x44));  // byte 0: slice 2
    std::memcpy(slot + 192, &s.unscale, sizeof(float));
}
// One tile's transformed input S [64 points][64 channels] into its block slot.
inline void slice_tile(const float* S, char* slot) {
    for (index_t p = 0; p < points; ++p) slice_row(S + p * channels, slot + p * point_bytes);
}

// The three levels of one row tile's products at one point: a, the row tile's first tile at the
// point (rows tile_bytes apart); w, the point's weights ([slice][column 4] B tiles); levels, int32
// [level 3][row 16][output 64]. C tiles 0-3 hold one level's four columns of 16 outputs at a
// time; A tiles 4-5 and B tiles 6-7 alternate, so that a load need not wait for the multiply
// before it. The tile configuration must be load_tile_config(rows).
inline void point_levels(const char* a, const char* w, std::int32_t* levels) {
#define DESPECK_LEVEL_TERM(A, slice_of_w)                                      \
    DESPECK_TILE_LOAD(6, w + (slice_of_w) * 4096, 64);                         \
    DESPECK_TILE_DP_INT8(0, A, 6);                                             \
    DESPECK_TILE_LOAD(7, w + (slice_of_w) * 4096 + 1024, 64);                  \
    DESPECK_TILE_DP_INT8(1, A, 7);                                             \
    DESPECK_TILE_LOAD(6, w + (slice_of_w) * 4096 + 2048, 64);                  \
    DESPECK_TILE_DP_INT8(2, A, 6);                                             \
    DESPECK_TILE_LOAD(7, w + (slice_of_w) * 4096 + 3072, 64);                  \
    DESPECK_TILE_DP_INT8(3, A, 7)
#define DESPECK_LEVEL_BEGIN() \
    DESPECK_TILE_ZERO(0);     \
    DESPECK_TILE_ZERO(1);     \
    DESPECK_TILE_ZERO(2);     \
    DESPECK_TILE_ZERO(3)
#define DESPECK_LEVEL_END(level)                                                  \
    DESPECK_TILE_STORE(0, levels + (level) * 16 * channels, channels * 4);       \
    DESPECK_TILE_STORE(1, levels + (level) * 16 * channels + 16, channels * 4);  \
    DESPECK_TILE_STORE(2, levels + (level) * 16 * channels + 32, channels * 4);  \
    DESPECK_TILE_STORE(3, levels + (level) * 16 * channels + 48, channels * 4)
    DESPECK_TILE_LOAD(4, a, tile_bytes);  // x0
    DESPECK_LEVEL_BEGIN();
    DESPECK_LEVEL_TERM(4, 0);  // x0 w0
    DESPECK_LEVEL_END(0);
    DESPECK_TILE_LOAD(5, a + 64, tile_bytes);  // x1
    DESPECK_LEVEL_BEGIN();
    DESPECK_LEVEL_TERM(4, 1);  // x0 w1
    DESPECK_LEVEL_TERM(5, 0);  // x1 w0
    DESPECK_LEVEL_END(1);
    DESPECK_LEVEL_BEGIN();
    DESPECK_LEVEL_TERM(4, 2);  // x0 w2
    DESPECK_LEVEL_TERM(5, 1);  // x1 w1
    DESPECK_TILE_LOAD(4, a + 128, tile_bytes);  // x2
    DESPECK_LEVEL_TERM(4, 0);  // x2 w0
    DESPECK_LEVEL_END(2);
#undef DESPECK_LEVEL_TERM
#undef DESPECK_LEVEL_BEGIN
#undef DESPECK_LEVEL_END
}
// The products from the levels, in float over the rows' slots (rows of them, tile_bytes apart):
// (L0 + L1 / 2^8 + L2 / 2^16) x the row's unscale x the column's (w + point_slice_bytes).
inline void combine_levels(const std::int32_t* levels, const char* w, index_t rows, char* a) {
    const float* column_unscale = reinterpret_cast<const float*>(w + point_slice_bytes);
    __m512 cu[4];  // in registers: the slots' stores could alias them
    for (int k = 0; k < 4; ++k) cu[k] = _mm512_loadu_ps(column_unscale + 16 * k);
    const __m512 step = _mm512_set1_ps(1.f / 256);
    for (index_t m = 0; m < rows; ++m) {
        char* slot = a + m * tile_bytes;
        float row_unscale;
        std::memcpy(&row_unscale, slot + 192, sizeof(float));
        const __m512 u = _mm512_set1_ps(row_unscale);
        DESPECK_UNROLL
        for (int k = 0; k < 4; ++k) {
            const std::int32_t* l = levels + m * channels + 16 * k;
            const __m512 l0 = _mm512_cvtepi32_ps(_mm512_load_si512(l));
            const __m512 l1 = _mm512_cvtepi32_ps(_mm512_load_si512(l + 16 * channels));
            const __m512 l2 = _mm512_cvtepi32_ps(_mm512_load_si512(l + 32 * channels));
            const __m512 sum = _mm512_fmadd_ps(_mm512_fmadd_ps(l2, step, l1), step, l0);
            // The row's unscale first: u cu alone could leave float's range where the product does not.
            _mm512_store_ps(reinterpret_cast<float*>(slot) + 16 * k, _mm512_mul_ps(_mm512_mul_ps(sum, u), cu[k]));
        }
    }
}

// All 64 points of one block of nt tiles (1..32). block: the block's tiles (sliced); weights:
// [64 points] of point_weight_bytes; levels: level_words, 64-byte aligned. Afterwards each tile
// holds its 64 x 64 products. Row tile by row tile, so that a partial one gets its own
// configuration (rows past nt are neither read nor written).
inline void block_products(char* block, const char* weights, index_t nt, std::int32_t* levels) {
    for (index_t r0 = 0; r0 < nt; r0 += 16) {
        const index_t rows = std::min<index_t>(16, nt - r0);
        load_tile_config(static_cast<int>(rows));
        char* a = block + r0 * tile_bytes;
        for (index_t p = 0; p < points; ++p) {
            const char* w = weights + p * point_weight_bytes;
            point_levels(a + p * point_bytes, w, levels);
            combine_levels(levels, w, rows, a + p * point_bytes);
        }
    }
    release_tiles();
}

// One work item (tiles [t0, t1) of tile row th of image n, t1 - t0 <= 32); scratch: scratch_floats.
inline void winograd_item(const WinogradArgs& a, const char* weights, index_t n, index_t th, index_t t0, index_t t1,
                          float* scratch) {
    const index_t H = a.H, W = a.W, nt = t1 - t0;
    char* block = reinterpret_cast<char*>(scratch);
    float* S = scratch + block_tiles * tile_bytes / 4;
    auto* levels = reinterpret_cast<std::int32_t*>(S + points * channels);
    const float* xn = a.x + n * H * W * channels;
    for (index_t t = 0; t < nt; ++t) {
        direct_avx512::prefetch_window_columns<6>(xn, H, W, channels, th, t0 + t + 2);
        direct_avx512::winograd6_input_tile(xn, H, W, channels, th * 6 - 1, (t0 + t) * 6 - 1, S);
        slice_tile(S, block + t * tile_bytes);
    }
    block_products(block, weights, nt, levels);
    float* yn = a.y + n * H * W * channels;
    for (index_t t = 0; t < nt; ++t)
        direct_avx512::winograd6_output_tile(a, reinterpret_cast<const float*>(block + t * tile_bytes), yn, th * 6,
                                             (t0 + t) * 6, a.stream);
    if (a.stream) _mm_sfence();  // order the non-temporal stores before the layer's end barrier
}

}  // namespace direct_amx
