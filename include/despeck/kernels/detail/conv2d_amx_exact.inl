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
// Layout. The work runs in items of 32 output rows by at most 256 output columns
// (exact_strip_pixels). For its item a thread splits each input row of the strip, plus one column
// on each side, into a row buffer of [258 pixels][3 parts][64 channels] bf16, 384 bytes a pixel
// (zeros outside the image), and keeps the three rows an output row needs in a ring (so rows at
// a band's edges and columns at a strip's edges are split twice, by both items that read them).
// A strip's output row runs in blocks of 32 pixels x 32 outputs (C = 2 x 2 tiles of 16 pixels x
// 16 outputs); for each tap and each half of the input channels the three A parts (2 tiles each,
// rows 384 bytes apart: the tap's shifted pixels) meet the three B parts of the tap's weights (2
// tiles each): 2 + 6 tile loads per 12 multiplies.
//
// Why strips and why the accumulators go through memory: the weights are 216 KiB and a 1024-wide
// row's three split rows 1.13 MiB, so whole rows block by block, all nine taps per block, streamed
// both from L2, and with the output and the next input row the working set overflowed the 2 MiB
// L2. Now, for each half of the outputs, the taps run in six groups (kernel row ky, input-channel
// half k), each over every block of the strip's row: a group's weights (3 taps x 3 parts x 2
// tiles, 18 KiB) stay in L1 across the strip's eight blocks, and the ring (290 KiB) stays in L2.
// The price is storing and reloading the four accumulator tiles between groups: 8 tile moves per
// 108 multiplies, to the strip's 32 KiB of accumulators, which share L1 with the weights and the
// A rows and so partly live in L2. A 64->64 layer on a 1058x1058 image, half zeros, 2 threads,
// Intel Xeon (AMX), nine runs each, interleaved: 173-188 ms, against 196-211 ms whole rows block
// by block (docs/benchmarks.md, "The Intel Xeon, sixth session").
//
// The epilogue (bias, then batch norm's scale and shift, then ReLU, as the direct kernel's
// store_block does it) writes each block's valid pixels from the stored accumulators. Pixels
// past W read zero columns, and their outputs are not written. Image rows above and below the
// image skip their kernel row's two groups instead of multiplying zeros.

namespace direct_amx {

constexpr index_t exact_pixel_bytes = 3 * channels * 2;                     // [3 parts][64] bf16
constexpr index_t exact_tap_weight_bytes = 2 * 3 * 4 * 1024;                // [k 2][part 3][column 4] tiles
constexpr index_t exact_weight_bytes = 9 * exact_tap_weight_bytes;          // 216 KiB
constexpr index_t exact_strip_pixels = 256;                                 // output columns per strip
static_assert(exact_strip_pixels % 32 == 0, "a strip is whole 32-pixel blocks");
constexpr index_t exact_strip_blocks = exact_strip_pixels / 32;
constexpr index_t exact_ring_row_bytes = (exact_strip_pixels + 2) * exact_pixel_bytes;  // a multiple of 64
constexpr index_t exact_accumulator_bytes = exact_strip_blocks * 4 * 1024;  // [block][2 x 2 tiles of 16 x 16 floats]
// Scratch per thread, in floats (64-byte aligned): the strip's accumulators, then the ring of
// three split rows. 322 KiB, whatever the image's width.
constexpr index_t exact_scratch_floats = (exact_accumulator_bytes + 3 * exact_ring_row_bytes) / 4;

// Columns [c0 - 1, c0 + exact_strip_pixels + 1) of input row x [W][64] into a ring row (buffer
// pixel i is column c0 - 1 + i; columns outside [0, W) are zeros).
inline void split_strip3(const float* x, index_t W, index_t c0, char* dst) {
    const index_t first = std::max<index_t>(c0 - 1, 0), last = std::min<index_t>(W, c0 + exact_strip_pixels + 1);
    const index_t lead = first - (c0 - 1), filled = lead + std::max<index_t>(last - first, 0);
    std::memset(dst, 0, static_cast<std::size_t>(lead * exact_pixel_bytes));
    std::memset(dst + filled * exact_pixel_bytes, 0,
                static_cast<std::size_t>((exact_strip_pixels + 2 - filled) * exact_pixel_bytes));
    for (index_t p = first; p < last; ++p)
        for (index_t c = 0; c < channels; c += 16)
            split_parts16<3>(x + p * channels + c, reinterpret_cast<std::uint16_t*>(dst + (p - first + lead) * exact_pixel_bytes) + c);
}

// Adds tap row ky's products over input channels [32 k, 32 k + 32) to the accumulators of
// blocks [0, blocks) of one output row, outputs [32 half, 32 half + 32). row: the split input row
// h - 1 + ky; w: the packed weights; acc: exact_accumulator_bytes, zeroed first where first.
inline void exact_group(const char* row, const char* w, int ky, int k, int half, index_t blocks, bool first, float* acc) {
    for (index_t b = 0; b < blocks; ++b) {
        float* c = acc + b * 1024;
        if (first) {
            DESPECK_TILE_ZERO(0);
            DESPECK_TILE_ZERO(1);
            DESPECK_TILE_ZERO(2);
            DESPECK_TILE_ZERO(3);
        } else {
            DESPECK_TILE_LOAD(0, c, 64);
            DESPECK_TILE_LOAD(1, c + 256, 64);
            DESPECK_TILE_LOAD(2, c + 512, 64);
            DESPECK_TILE_LOAD(3, c + 768, 64);
        }
        for (int kx = 0; kx < 3; ++kx) {
            const char* a = row + (b * 32 + kx) * exact_pixel_bytes + k * 64;
            const char* wk = w + (ky * 3 + kx) * exact_tap_weight_bytes + k * 3 * 4096 + half * 2048;
            for (int part = 0; part < 3; ++part) {
                const char* ap = a + part * 128;
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
        DESPECK_TILE_STORE(0, c, 64);
        DESPECK_TILE_STORE(1, c + 256, 64);
        DESPECK_TILE_STORE(2, c + 512, 64);
        DESPECK_TILE_STORE(3, c + 768, 64);
    }
}

// Output rows [r0, r1) of the N * H rows (row n * H + h), columns [c0, c0 + exact_strip_pixels) ∩
// [0, W), of a prepared 3x3 64 -> 64 layer: y = relu?((conv + bias) * scale + shift), a.post_* as
// in DirectConvArgs. weights: the packed nine-product weights (exact_weight_bytes). scratch:
// exact_scratch_floats, 64-byte aligned.
inline void exact_rows(const DirectConvArgs& a, const char* weights, index_t r0, index_t r1, index_t c0, float* scratch) {
    const index_t H = a.H, W = a.W;
    const index_t width = std::min(exact_strip_pixels, W - c0), blocks = (width + 31) / 32;
    float* acc = scratch;
    char* ring = reinterpret_cast<char*>(scratch) + exact_accumulator_bytes;
    load_tile_config(16);
    index_t ring_image = -1, ring_last = -2;  // the ring holds rows ring_last - 2 .. ring_last of ring_image (slot r % 3)
    for (index_t row = r0; row < r1; ++row) {
        const index_t n = row / H, h = row % H;
        const float* xn = a.x + n * H * W * channels;
        if (n != ring_image) ring_image = n, ring_last = h - 2;
        for (index_t r = std::max({ring_last + 1, h - 1, index_t(0)}); r <= std::min(h + 1, H - 1); ++r)
            split_strip3(xn + r * W * channels, W, c0, ring + (r % 3) * exact_ring_row_bytes);
        ring_last = std::max(ring_last, std::min(h + 1, H - 1));
        float* yrow = a.y + ((n * H + h) * W + c0) * channels;
        for (int half = 0; half < 2; ++half) {
            bool first = true;
            for (int ky = 0; ky < 3; ++ky) {
                const index_t r = h - 1 + ky;
                if (r < 0 || r >= H) continue;
                for (int k = 0; k < 2; ++k, first = false)
                    exact_group(ring + (r % 3) * exact_ring_row_bytes, weights, ky, k, half, blocks, first, acc);
            }
            // store_block's order (bias, then scale and shift, then ReLU) with the constants
            // hoisted: calling store_block once per pixel cost about 5% of the layer.
            for (index_t b = 0; b < blocks; ++b) {
                const float* c = acc + b * 1024;  // tile (pixel tile pt, output tile v) at c + pt * 512 + v * 256
                const index_t valid = std::min<index_t>(32, width - b * 32);
                for (int v = 0; v < 2; ++v) {
                    const index_t o = half * 32 + v * 16;
                    const __m512 bias = a.bias_padded ? _mm512_loadu_ps(a.bias_padded + o) : _mm512_setzero_ps();
                    const __m512 scale = a.post_scale ? _mm512_loadu_ps(a.post_scale + o) : _mm512_set1_ps(1.0f);
                    const __m512 shift = a.post_shift ? _mm512_loadu_ps(a.post_shift + o) : _mm512_setzero_ps();
                    for (index_t p = 0; p < valid; ++p) {
                        __m512 v16 = _mm512_add_ps(_mm512_load_ps(c + (p / 16) * 512 + v * 256 + (p % 16) * 16), bias);
                        if (a.post_scale) v16 = _mm512_add_ps(_mm512_mul_ps(v16, scale), shift);
                        if (a.post_relu) v16 = _mm512_max_ps(v16, _mm512_setzero_ps());
                        _mm512_storeu_ps(yrow + (b * 32 + p) * channels + o, v16);
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
