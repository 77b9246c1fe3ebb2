// despeck/kernels/detail/conv2d_amx_exact.inl — exact inference's 3x3 64 -> 64 direct convolution
// on AMX, in nine bf16 products per float product. Included once by conv2d_direct.hpp after
// winograd_amx.inl, inside the same target region. Not a public header.
//
// Why nine: rounding to nearest, a float's 24 significant bits split exactly into three bf16 parts
// of 8 (x = x0 + x1 + x2, each part the rounded remainder of the one before), and a product of two
// bf16 values is exact in float. So sum_c x_c w_c = sum over c and the nine part pairs of
// x_i w_j, every term exact: the float maths of the dense kernel up to summation order, which is
// what exact mode promises (with nine roundings where the direct kernel has one per product).
// Exceptions at the extremes: the conversion treats a denormal remainder as zero, so values under
// about 2^-109 (1e-33) lose their low bits and values under 2^-126 become zero, and the tile unit
// flushes partial products under 2^-126; an infinite or huge value (3.39e38 and up) gives NaN
// where float maths gives inf. A network's activations and weights are nowhere near either.
//
// Layout. Each input row is split once into a row buffer of [W rounded up to 32, plus one zero
// pixel on each side][3 parts][64 channels] bf16, 384 bytes a pixel; a thread keeps the three rows
// an output row needs in a ring. An output row runs in blocks of 32 pixels x 32 outputs (C = 2 x 2
// tiles of 16 pixels x 16 outputs); for each tap and each half of the input channels the three A
// parts (2 tiles each, rows 384 bytes apart: the tap's shifted pixels) meet the three B parts of
// the tap's weights (2 tiles each): 2 + 6 tile loads per 12 multiplies. The block is stored to a
// small buffer and the epilogue (bias, then batch norm's scale and shift, then ReLU, as the direct
// kernel's store_block does it) writes the row's valid pixels. Pixels past W read zero columns,
// and their outputs are not written.

namespace direct_amx {

constexpr index_t exact_pixel_bytes = 3 * channels * 2;                     // [3 parts][64] bf16
constexpr index_t exact_tap_weight_bytes = 2 * 3 * 4 * 1024;                // [k 2][part 3][column 4] tiles
constexpr index_t exact_weight_bytes = 9 * exact_tap_weight_bytes;          // 216 KiB
inline index_t exact_row_pixels(index_t W) { return (W + 31) / 32 * 32 + 2; }
// Scratch per thread, in floats: the ring of three split rows, a zero row, a 32 x 32 float block.
inline index_t exact_scratch_floats(index_t W) { return 4 * exact_row_pixels(W) * exact_pixel_bytes / 4 + 32 * 32; }

// 16 floats -> three bf16 parts, 64 elements apart, each the nearest bf16 of what the parts
// before it left.
inline void split3_16(const float* s, std::uint16_t* d) {
    __m512 v = _mm512_loadu_ps(s);
    DESPECK_UNROLL
    for (int part = 0; part < 3; ++part) {
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
        _mm256_store_si256(reinterpret_cast<__m256i*>(d + part * channels), h);
        v = _mm512_sub_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
}
// Input row x [W][64] into a split row buffer (exact_row_pixels(W) pixels; pixel p at p + 1).
inline void split_row3(const float* x, index_t W, char* dst) {
    const index_t pixels = exact_row_pixels(W);
    std::memset(dst, 0, exact_pixel_bytes);
    std::memset(dst + (W + 1) * exact_pixel_bytes, 0, (pixels - W - 1) * exact_pixel_bytes);
    for (index_t p = 0; p < W; ++p)
        for (index_t c = 0; c < channels; c += 16)
            split3_16(x + p * channels + c, reinterpret_cast<std::uint16_t*>(dst + (p + 1) * exact_pixel_bytes) + c);
}

// 32 pixels x 32 outputs (outputs [32 half, 32 half + 32)) of one output row: rows[ky] are the
// split input rows h - 1 + ky at the block's first pixel's left neighbour; w the packed weights.
inline void exact_block(const char* const (&rows)[3], const char* w, int half, float* block) {
    DESPECK_TILE_ZERO(0);
    DESPECK_TILE_ZERO(1);
    DESPECK_TILE_ZERO(2);
    DESPECK_TILE_ZERO(3);
    for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
            const char* a = rows[ky] + kx * exact_pixel_bytes;
            const char* wt = w + (ky * 3 + kx) * exact_tap_weight_bytes + half * 2048;
            for (int k = 0; k < 2; ++k) {
                const char* wk = wt + k * 3 * 4096;
                for (int part = 0; part < 3; ++part) {
                    const char* ap = a + part * 128 + k * 64;
                    DESPECK_TILE_LOAD(4, ap, exact_pixel_bytes);
                    DESPECK_TILE_LOAD(5, ap + 16 * exact_pixel_bytes, exact_pixel_bytes);
                    DESPECK_TILE_LOAD(6, wk, 64);
                    DESPECK_TILE_LOAD(7, wk + 1024, 64);
                    DESPECK_TILE_DP(0, 4, 6);
                    DESPECK_TILE_DP(1, 4, 7);
                    DESPECK_TILE_DP(2, 5, 6);
                    DESPECK_TILE_DP(3, 5, 7);
                    DESPECK_TILE_LOAD(6, wk + 4096, 64);
                    DESPECK_TILE_LOAD(7, wk + 4096 + 1024, 64);
                    DESPECK_TILE_DP(0, 4, 6);
                    DESPECK_TILE_DP(1, 4, 7);
                    DESPECK_TILE_DP(2, 5, 6);
                    DESPECK_TILE_DP(3, 5, 7);
                    DESPECK_TILE_LOAD(6, wk + 8192, 64);
                    DESPECK_TILE_LOAD(7, wk + 8192 + 1024, 64);
                    DESPECK_TILE_DP(0, 4, 6);
                    DESPECK_TILE_DP(1, 4, 7);
                    DESPECK_TILE_DP(2, 5, 6);
                    DESPECK_TILE_DP(3, 5, 7);
                }
            }
        }
    DESPECK_TILE_STORE(0, block, 128);
    DESPECK_TILE_STORE(1, block + 16, 128);
    DESPECK_TILE_STORE(2, block + 16 * 32, 128);
    DESPECK_TILE_STORE(3, block + 16 * 32 + 16, 128);
}

// Output rows [r0, r1) of the N * H rows (row n * H + h) of a prepared 3x3 64 -> 64 layer:
// y = relu?((conv + bias) * scale + shift), a.post_* as in DirectConvArgs. weights: the packed
// nine-product weights (exact_weight_bytes). scratch: exact_scratch_floats(a.W).
inline void exact_rows(const DirectConvArgs& a, const char* weights, index_t r0, index_t r1, float* scratch) {
    const index_t H = a.H, W = a.W, row_bytes = exact_row_pixels(W) * exact_pixel_bytes;
    char* ring = reinterpret_cast<char*>(scratch);
    char* zero = ring + 3 * row_bytes;
    float* block = scratch + 4 * row_bytes / 4;
    std::memset(zero, 0, static_cast<std::size_t>(row_bytes));
    load_tile_config(16, 16);
    index_t ring_image = -1, ring_last = -2;  // the ring holds rows ring_last - 2 .. ring_last of ring_image (slot r % 3)
    for (index_t row = r0; row < r1; ++row) {
        const index_t n = row / H, h = row % H;
        const float* xn = a.x + n * H * W * channels;
        if (n != ring_image) ring_image = n, ring_last = h - 2;
        for (index_t r = std::max(ring_last + 1, h - 1); r <= std::min(h + 1, H - 1); ++r)
            if (r >= 0) split_row3(xn + r * W * channels, W, ring + (r % 3) * row_bytes);
        ring_last = std::max(ring_last, std::min(h + 1, H - 1));
        const char* in[3];
        for (int ky = 0; ky < 3; ++ky) {
            const index_t r = h - 1 + ky;
            in[ky] = r < 0 || r >= H ? zero : ring + (r % 3) * row_bytes;
        }
        float* yrow = a.y + (n * H + h) * W * channels;
        for (index_t px0 = 0; px0 < W; px0 += 32) {
            const char* rows[3] = {in[0] + px0 * exact_pixel_bytes, in[1] + px0 * exact_pixel_bytes,
                                   in[2] + px0 * exact_pixel_bytes};
            const index_t valid = std::min<index_t>(32, W - px0);
            for (int half = 0; half < 2; ++half) {
                exact_block(rows, weights, half, block);
                const index_t o0 = half * 32;
                for (int v = 0; v < 2; ++v) {
                    const index_t o = o0 + v * 16;
                    const __m512 bias = a.bias_padded ? _mm512_loadu_ps(a.bias_padded + o) : _mm512_setzero_ps();
                    const __m512 scale = a.post_scale ? _mm512_loadu_ps(a.post_scale + o) : _mm512_set1_ps(1.0f);
                    const __m512 shift = a.post_shift ? _mm512_loadu_ps(a.post_shift + o) : _mm512_setzero_ps();
                    for (index_t p = 0; p < valid; ++p) {
                        __m512 acc = _mm512_add_ps(_mm512_load_ps(block + p * 32 + v * 16), bias);
                        if (a.post_scale) acc = _mm512_add_ps(_mm512_mul_ps(acc, scale), shift);
                        if (a.post_relu) acc = _mm512_max_ps(acc, _mm512_setzero_ps());
                        _mm512_storeu_ps(yrow + (px0 + p) * channels + o, acc);
                    }
                }
            }
        }
    }
    release_tiles();
}

#undef DESPECK_TILE_ZERO
#undef DESPECK_TILE_LOAD
#undef DESPECK_TILE_STORE
#undef DESPECK_TILE_DP

}  // namespace direct_amx
