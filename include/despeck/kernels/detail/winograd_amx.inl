// despeck/kernels/detail/winograd_amx.inl — fast inference's Winograd F(6x6,3x3) products on
// AMX, Intel's tile matrix unit (Sapphire Rapids and later), in three bf16 products per float one.
// Included once by conv2d_direct.hpp, inside an AVX-512 + AVX512-BF16 target region, after
// direct_avx512 (whose input and output transforms it reuses). Not a public header.
//
// Why three products: a bf16 has 8 significant bits, so one bf16 product per float product misses
// fast mode's bound (1e-3 of the range from exact mode). Each float x is split into
// hi = bf16(x) and lo = bf16(x - hi), 16 significant bits together, and
//   x * w ~ xh * wh + xh * wl + xl * wh        (xl * wl and the split's remainder, ~2^-16 relative, dropped)
// with every sum in float inside the tile unit. A tile multiply (TDPBF16PS) is 16 x 16 x 32
// multiply-adds in 16 cycles, 16 times one core's two 16-lane FMAs; three of them per product leave
// a factor of about 5 on the products, of which the tile loads from L1 and L2 take some back.
//
// One work item is a block of up to 32 tiles of one tile row, as in run_winograd:
//   1. input transform (direct_avx512's, float) of each tile into an L1 scratch S [64 points][64
//      channels], then split into the block buffer: per tile 64 points x 256 bytes, the point's 64
//      channels as bf16 hi (128 bytes), then as bf16 lo (128 bytes);
//   2. per point, the products of the block's tiles (rows of the A tiles, up to 2 x 16) with the
//      point's weights, written over the same 256 bytes as 64 floats (the point's input is read
//      in full before they are stored);
//   3. output transform (direct_avx512's) of each tile, bias and ReLU.
// Tiles lie tile_bytes apart: 64 bytes more than the 16 KiB a tile holds, so that the 16 rows of a
// tile load do not all map to one L1 set.
//
// 64 -> 64 channels only (deSpeckNet's width; prepare_conv_winograd picks this path for no other).
// The tile instructions are written as inline assembly with a memory clobber: GCC 12's intrinsics
// claim no memory effects, so ordinary loads of what a tile store wrote could move above it (and
// its _tile_loadconfig reads 8 bytes of the 64-byte configuration, so the stores filling it may be
// dropped). The tile macros stay defined for conv2d_amx_exact.inl, which undefines them.

namespace direct_amx {

constexpr index_t points = 64;             // (6 + 2)^2
constexpr index_t channels = 64;           // ci = co
constexpr index_t point_bytes = 256;       // 64 bf16 hi + 64 bf16 lo, later 64 floats
constexpr index_t tile_bytes = points * point_bytes + 64;
constexpr index_t block_tiles = 32;        // two A tiles of 16 rows
constexpr index_t point_weight_bytes = 2 * 2 * 4 * 1024;  // [k 2][hi, lo][column 4] tiles of 1 KiB
// Scratch per thread, in floats: the block, S and the 32 x 32 floats of one half of a point's products.
constexpr index_t scratch_floats = block_tiles * tile_bytes / 4 + points * channels + 32 * 32;

#define DESPECK_TILE_ZERO(t) asm volatile("tilezero %%tmm" #t ::: "memory")
#define DESPECK_TILE_LOAD(t, ptr, stride) \
    asm volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(ptr), "r"(static_cast<index_t>(stride)) : "memory")
#define DESPECK_TILE_STORE(t, ptr, stride) \
    asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(ptr), "r"(static_cast<index_t>(stride)) : "memory")
// C [rows x 16 floats] += A [rows x 32 bf16] B [32 x 16 bf16], B stored as 16 rows of channel
// pairs (row r: channels 2r and 2r + 1 for each of 16 outputs); tdpbf16ps C, A, B in Intel's order.
#define DESPECK_TILE_DP(c, a, b) asm volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::: "memory")

// Tile registers: C (products, float) 0-3, A (transformed input) 4-5, B (weights) 6-7. Every row
// is 64 bytes: 32 bf16 channels (A, B as pairs of channels for 16 outputs) or 16 floats (C).
// rows0: the rows of A and C tiles 0, 1, 4; rows1: of 2, 3, 5 (a partial block's last 16 tiles).
struct alignas(64) TileConfig {
    std::uint8_t palette = 1, start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};
inline void load_tile_config(int rows0, int rows1) {
    TileConfig c;
    for (int t = 0; t < 8; ++t) c.colsb[t] = 64;
    for (int t : {0, 1, 4}) c.rows[t] = static_cast<std::uint8_t>(rows0);
    for (int t : {2, 3, 5}) c.rows[t] = static_cast<std::uint8_t>(rows1);
    c.rows[6] = c.rows[7] = 16;
    asm volatile("ldtilecfg %0" ::"m"(c) : "memory");
}
inline void release_tiles() { asm volatile("tilerelease" ::: "memory"); }

// 16 floats -> `parts` bf16 parts, `channels` elements apart (d 32-byte aligned): part 0 the
// nearest bf16 of x (ties to even), each later part the nearest bf16 of what the parts before it
// left. Two parts (hi, lo) for fast mode's products; three, which hold a float exactly, for exact
// mode's (conv2d_amx_exact.inl). Like the tile unit, the conversion treats denormal inputs as
// zero. A value of 3.39e38 or more in magnitude rounds to an infinite first part and NaN after
// it: such a layer gives NaN where float products would give inf.
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
// One tile's transformed input S [64 points][64 channels] into its block slot.
inline void split_tile(const float* S, char* slot) {
    for (index_t p = 0; p < points; ++p) {
        auto* hi = reinterpret_cast<std::uint16_t*>(slot + p * point_bytes);
        for (index_t c = 0; c < channels; c += 16) split_parts16<2>(S + p * channels + c, hi + c);
    }
}

// Point p's products for the block's nt tiles (1..32). a: the block's first tile at this point;
// w: the point's weights, [k][hi, lo][column] tiles of 16 channel pairs x 16 outputs. The tile
// configuration must match nt (load_tile_config(16, nt - 16) or (nt, nt)).
inline void point_products(char* a, const char* w, index_t nt, float* half_products) {
    constexpr index_t k_bytes = 2 * 4 * 1024, lo_bytes = 4 * 1024;
    if (nt > 16) {
        // 32 tiles x 32 outputs per pass, C = 2 x 2 tiles. Pass 0's products wait in
        // half_products: they would overwrite the hi channels that pass 1 still reads.
        for (int half = 0; half < 2; ++half) {
            DESPECK_TILE_ZERO(0);
            DESPECK_TILE_ZERO(1);
            DESPECK_TILE_ZERO(2);
            DESPECK_TILE_ZERO(3);
            for (int k = 0; k < 2; ++k) {
                const char* ak = a + k * 64;  // channels [32k, 32k + 32): hi at +0, lo at +128
                const char* wh = w + k * k_bytes + half * 2048;
                const char* wl = wh + lo_bytes;
                DESPECK_TILE_LOAD(4, ak, tile_bytes);
                DESPECK_TILE_LOAD(5, ak + 16 * tile_bytes, tile_bytes);
                DESPECK_TILE_LOAD(6, wh, 64);
                DESPECK_TILE_LOAD(7, wh + 1024, 64);
                DESPECK_TILE_DP(0, 4, 6);  // xh * wh
                DESPECK_TILE_DP(1, 4, 7);
                DESPECK_TILE_DP(2, 5, 6);
                DESPECK_TILE_DP(3, 5, 7);
                DESPECK_TILE_LOAD(6, wl, 64);
                DESPECK_TILE_LOAD(7, wl + 1024, 64);
                DESPECK_TILE_DP(0, 4, 6);  // xh * wl
                DESPECK_TILE_DP(1, 4, 7);
                DESPECK_TILE_DP(2, 5, 6);
                DESPECK_TILE_DP(3, 5, 7);
                DESPECK_TILE_LOAD(4, ak + 128, tile_bytes);
                DESPECK_TILE_LOAD(5, ak + 128 + 16 * tile_bytes, tile_bytes);
                DESPECK_TILE_LOAD(6, wh, 64);
                DESPECK_TILE_LOAD(7, wh + 1024, 64);
                DESPECK_TILE_DP(0, 4, 6);  // xl * wh
                DESPECK_TILE_DP(1, 4, 7);
                DESPECK_TILE_DP(2, 5, 6);
                DESPECK_TILE_DP(3, 5, 7);
            }
            if (half == 0) {
                DESPECK_TILE_STORE(0, half_products, 128);
                DESPECK_TILE_STORE(1, half_products + 16, 128);
                DESPECK_TILE_STORE(2, half_products + 16 * 32, 128);
                DESPECK_TILE_STORE(3, half_products + 16 * 32 + 16, 128);
            } else {
                char* m = a + 128;  // outputs 32-63 over the lo channels
                DESPECK_TILE_STORE(0, m, tile_bytes);
                DESPECK_TILE_STORE(1, m + 64, tile_bytes);
                DESPECK_TILE_STORE(2, m + 16 * tile_bytes, tile_bytes);
                DESPECK_TILE_STORE(3, m + 16 * tile_bytes + 64, tile_bytes);
            }
        }
        for (index_t t = 0; t < nt; ++t) {  // outputs 0-31 over the hi channels
            auto* m = reinterpret_cast<float*>(a + t * tile_bytes);
            _mm512_store_ps(m, _mm512_load_ps(half_products + t * 32));
            _mm512_store_ps(m + 16, _mm512_load_ps(half_products + t * 32 + 16));
        }
        return;
    }
    // Up to 16 tiles x all 64 outputs, C = 1 x 4 tiles; every load comes before the stores.
    DESPECK_TILE_ZERO(0);
    DESPECK_TILE_ZERO(1);
    DESPECK_TILE_ZERO(2);
    DESPECK_TILE_ZERO(3);
    for (int k = 0; k < 2; ++k) {
        const char* ak = a + k * 64;
        const char* wh = w + k * k_bytes;
        const char* wl = wh + lo_bytes;
        DESPECK_TILE_LOAD(4, ak, tile_bytes);
        DESPECK_TILE_LOAD(5, ak + 128, tile_bytes);
        DESPECK_TILE_LOAD(6, wh, 64);
        DESPECK_TILE_LOAD(7, wh + 1024, 64);
        DESPECK_TILE_DP(0, 4, 6);
        DESPECK_TILE_DP(1, 4, 7);
        DESPECK_TILE_DP(0, 5, 6);
        DESPECK_TILE_DP(1, 5, 7);
        DESPECK_TILE_LOAD(6, wh + 2048, 64);
        DESPECK_TILE_LOAD(7, wh + 3072, 64);
        DESPECK_TILE_DP(2, 4, 6);
        DESPECK_TILE_DP(3, 4, 7);
        DESPECK_TILE_DP(2, 5, 6);
        DESPECK_TILE_DP(3, 5, 7);
        DESPECK_TILE_LOAD(6, wl, 64);
        DESPECK_TILE_LOAD(7, wl + 1024, 64);
        DESPECK_TILE_DP(0, 4, 6);
        DESPECK_TILE_DP(1, 4, 7);
        DESPECK_TILE_LOAD(6, wl + 2048, 64);
        DESPECK_TILE_LOAD(7, wl + 3072, 64);
        DESPECK_TILE_DP(2, 4, 6);
        DESPECK_TILE_DP(3, 4, 7);
    }
    DESPECK_TILE_STORE(0, a, tile_bytes);
    DESPECK_TILE_STORE(1, a + 64, tile_bytes);
    DESPECK_TILE_STORE(2, a + 128, tile_bytes);
    DESPECK_TILE_STORE(3, a + 192, tile_bytes);
}

// All 64 points of one block, with its tile configuration. block: the block's tiles (split);
// weights: [64 points] of point_weight_bytes. Afterwards each tile holds its 64 x 64 products.
inline void block_products(char* block, const char* weights, index_t nt, float* half_products) {
    if (nt > 16)
        load_tile_config(16, static_cast<int>(nt - 16));
    else
        load_tile_config(static_cast<int>(nt), static_cast<int>(nt));
    for (index_t p = 0; p < points; ++p)
        point_products(block + p * point_bytes, weights + p * point_weight_bytes, nt, half_products);
    release_tiles();
}

// One work item (tiles [t0, t1) of tile row th of image n, t1 - t0 <= 32); scratch: scratch_floats.
inline void winograd_item(const WinogradArgs& a, const char* weights, index_t n, index_t th, index_t t0, index_t t1,
                          float* scratch) {
    const index_t H = a.H, W = a.W, nt = t1 - t0;
    char* block = reinterpret_cast<char*>(scratch);
    float* S = scratch + block_tiles * tile_bytes / 4;
    float* half_products = S + points * channels;
    const float* xn = a.x + n * H * W * channels;
    for (index_t t = 0; t < nt; ++t) {
        direct_avx512::prefetch_window_columns<6>(xn, H, W, channels, th, t0 + t + 2);
        direct_avx512::winograd6_input_tile(xn, H, W, channels, th * 6 - 1, (t0 + t) * 6 - 1, S);
        split_tile(S, block + t * tile_bytes);
    }
    block_products(block, weights, nt, half_products);
    float* yn = a.y + n * H * W * channels;
    for (index_t t = 0; t < nt; ++t)
        direct_avx512::winograd6_output_tile(a, reinterpret_cast<const float*>(block + t * tile_bytes), yn, th * 6,
                                             (t0 + t) * 6, a.stream);
    if (a.stream) _mm_sfence();  // order the non-temporal stores before the layer's end barrier
}

}  // namespace direct_amx
