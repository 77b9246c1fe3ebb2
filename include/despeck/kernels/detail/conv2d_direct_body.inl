// despeck/kernels/detail/conv2d_direct_body.inl — the direct NHWC convolution micro-kernels,
// written once over a vector type V and compiled once per instruction set.
//
// Included by conv2d_direct.hpp inside `namespace despeck::kernels::direct_<isa>` between
// `#pragma GCC target(...)` brackets, after that namespace defined `struct V` (width, max_rw,
// max_nv, zero/load/store/bcast/fma/load_part/store_part). No include guard: it is meant to be
// included several times. Everything here is float; shapes and layouts are in conv2d_direct.hpp.

// What every forward register block does last: batch norm (scale, shift), ReLU, then the store
// (or y += acc); a partial last vector where lanes is not a multiple of the width.
template <int RW, int NV>
inline void store_block(typename V::reg (&acc)[RW][NV], float* y, index_t co, int lanes, bool accumulate,
                        const BlockEpilogue& ep) {
    if (ep.scale) {  // inference batch norm, y = acc * scale + shift: the same two roundings as its own pass
        DESPECK_UNROLL
        for (int v = 0; v < NV; ++v) {
            const typename V::reg sc = V::load(ep.scale + v * V::width), sh = V::load(ep.shift + v * V::width);
            DESPECK_UNROLL
            for (int r = 0; r < RW; ++r) acc[r][v] = V::add(V::mul(acc[r][v], sc), sh);
        }
    }
    if (ep.relu) {
        DESPECK_UNROLL
        for (int r = 0; r < RW; ++r)
            DESPECK_UNROLL
            for (int v = 0; v < NV; ++v) acc[r][v] = V::max(acc[r][v], V::zero());
    }
    const int full = lanes / V::width, part = lanes % V::width;
    DESPECK_UNROLL
    for (int r = 0; r < RW; ++r) {
        float* out = y + r * co;
        DESPECK_UNROLL
        for (int v = 0; v < NV; ++v) {
            if (v < full) {
                if (accumulate) acc[r][v] = V::add(acc[r][v], V::load(out + v * V::width));
                V::store(out + v * V::width, acc[r][v]);
            } else if (v == full && part) {
                if (accumulate) acc[r][v] = V::add(acc[r][v], V::load_part(out + v * V::width, part));
                V::store_part(out + v * V::width, acc[r][v], part);
            }
        }
    }
}

// Forward micro-kernel: RW consecutive output pixels of one output row x NV vectors of output
// channels, accumulated in RW*NV registers over all taps and input channels.
//   xs       floats between consecutive input pixels (ci for an NHWC image)
//   rows[i]  input pixel (column w0 - P) of input row h + i - P, or nullptr when that row is padding;
//            the RW + K - 1 pixels from there on are all readable (the caller pads edge blocks)
//   wp       packed weights at this block's first output channel; tap t, channel c at wp[(t*ci + c)*cop]
//   y        output pixel w0 at this block's first channel; pixels are co apart
//   lanes    output channels in this block (<= NV * V::width); the last vector may be partial
template <int RW, int NV>
inline void forward_block(const float* const* rows, int K, index_t ci, index_t xs, const float* wp, index_t cop,
                          const float* bias, float* y, index_t co, int lanes, bool accumulate,
                          const BlockEpilogue& ep) {
    typename V::reg acc[RW][NV];
    DESPECK_UNROLL
    for (int v = 0; v < NV; ++v) {
        const typename V::reg b0 = bias ? V::load(bias + v * V::width) : V::zero();
        DESPECK_UNROLL
        for (int r = 0; r < RW; ++r) acc[r][v] = b0;
    }
    for (int i = 0; i < K; ++i) {
        const float* row = rows[i];
        if (!row) continue;
        for (int j = 0; j < K; ++j) {
            const float* xj = row + j * xs;
            const float* wt = wp + (i * K + j) * ci * cop;
            for (index_t c = 0; c < ci; ++c) {
                typename V::reg wv[NV];
                DESPECK_UNROLL
                for (int v = 0; v < NV; ++v) wv[v] = V::load(wt + c * cop + v * V::width);
                DESPECK_UNROLL
                for (int r = 0; r < RW; ++r) {
                    const typename V::reg xb = V::bcast(xj[r * xs + c]);
                    DESPECK_UNROLL
                    for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(xb, wv[v], acc[r][v]);
                }
            }
        }
    }
    store_block<RW, NV>(acc, y, co, lanes, accumulate, ep);
}

// Pixel counts per block along a row: as many max_rw blocks as fit, then 4, 2, 1.
inline int next_block_width(index_t remaining) {
    if (remaining >= V::max_rw) return V::max_rw;
    if (remaining >= 4 && V::max_rw >= 4) return 4;
    if (remaining >= 2) return 2;
    return 1;
}

// Calls f.template operator()<RW>() for a width rw from next_block_width (pixels, or input channels
// in backward-weights), so that each register block is compiled for the widths this instruction
// set uses and no others. Those are the only widths the kernels ask for: any other would run 1.
static_assert(V::max_rw == 4 || V::max_rw == 6, "next_block_width and with_block_width know block widths 6, 4, 2, 1");
template <class F>
DESPECK_ALWAYS_INLINE void with_block_width(int rw, F&& f) {
    switch (rw) {
        case 6: if constexpr (V::max_rw >= 6) return f.template operator()<6>(); break;
        case 4: if constexpr (V::max_rw >= 4) return f.template operator()<4>(); break;
        case 2: return f.template operator()<2>();
        default: break;
    }
    f.template operator()<1>();
}

// Calls f.template operator()<NV>() for nv (1 .. max_nv) vectors of output channels.
template <class F>
DESPECK_ALWAYS_INLINE void with_vector_count(int nv, F&& f) {
    switch (nv) {
        case 1: return f.template operator()<1>();
        case 2: return f.template operator()<2>();
        case 3: if constexpr (V::max_nv >= 3) return f.template operator()<3>(); break;
        case 4: if constexpr (V::max_nv >= 4) return f.template operator()<4>(); break;
        default: break;
    }
}

// Output row (n, h), output channels [co0, co0 + lanes): what the forward kernels' blocks need.
struct ForwardChunk {
    int lanes, nv;       // channels in the chunk, vectors they take
    const float* bias;   // at co0, or nullptr
    BlockEpilogue ep;    // at co0
    float* yrow;         // output pixel (n, h, 0), channel co0
};
inline ForwardChunk forward_chunk(const DirectConvArgs& a, index_t n, index_t h, index_t co0) {
    const int lanes = static_cast<int>(std::min<index_t>(a.chunk_width, a.co - co0));
    return {lanes, (lanes + V::width - 1) / V::width, a.bias_padded ? a.bias_padded + co0 : nullptr,
            BlockEpilogue{a.post_scale ? a.post_scale + co0 : nullptr, a.post_shift ? a.post_shift + co0 : nullptr,
                          a.post_relu},
            a.y + ((n * a.H + h) * a.W) * a.co + co0};
}

// One work item: output row (n, h) and output-channel chunk `chunk` (chunk_width channels from
// chunk * chunk_width). scratch holds K * (max_rw + K - 1) * ci floats for edge blocks.
inline void forward_row(const DirectConvArgs& a, index_t n, index_t h, index_t chunk, float* scratch) {
    const int K = a.K, P = a.K / 2;
    const index_t H = a.H, W = a.W, ci = a.ci;
    const index_t co0 = chunk * a.chunk_width;
    const float* wp = a.wp + co0;
    const auto [lanes, nv, bias, ep, yrow] = forward_chunk(a, n, h, co0);
    const float* rows[16];  // K <= 15, checked by the caller
    const float* real_rows[16];
    for (int i = 0; i < K; ++i) {
        const index_t hh = h + i - P;
        real_rows[i] = (hh < 0 || hh >= H) ? nullptr : a.x + ((n * H + hh) * W) * ci;
    }
    for (index_t w0 = 0; w0 < W;) {
        const int rw = next_block_width(W - w0);
        const bool edge = w0 - P < 0 || w0 + rw + P > W;
        if (!edge) {
            for (int i = 0; i < K; ++i) rows[i] = real_rows[i] ? real_rows[i] + (w0 - P) * ci : nullptr;
        } else {
            // Copy the block's input window with its zero columns into scratch.
            const index_t span = rw + K - 1;
            for (int i = 0; i < K; ++i) {
                if (!real_rows[i]) {
                    rows[i] = nullptr;
                    continue;
                }
                float* dst = scratch + i * span * ci;
                for (index_t s = 0; s < span; ++s) {
                    const index_t col = w0 - P + s;
                    if (col < 0 || col >= W)
                        std::fill(dst + s * ci, dst + (s + 1) * ci, 0.0f);
                    else
                        std::copy(real_rows[i] + col * ci, real_rows[i] + (col + 1) * ci, dst + s * ci);
                }
                rows[i] = dst;
            }
        }
        float* y = yrow + w0 * a.co;
        with_vector_count(nv, [&]<int NV>() {
            with_block_width(rw, [&]<int RW>() { forward_block<RW, NV>(rows, K, ci, ci, wp, a.cop, bias, y, a.co, lanes, a.accumulate, ep); });
        });
        w0 += rw;
    }
}

// ---- sparse-input forward (exact inference after a ReLU) -------------------------------------
// A ReLU leaves most of a trained network's activations at exactly zero (67-72% per layer in the
// authors' pretrained deSpeckNet on real SAR crops), and a zero adds nothing to any output. So
// each input row's nonzeros are first marked, pixel by pixel, in bit masks (one bit per channel);
// a register block of RW output pixels x NV vectors then walks the 3 x (RW + 2) input window
// column by column, multiplying each nonzero value with the weight vectors of the (up to 3) taps
// through which it reaches the block's outputs.
//
// Each output still adds its products in the dense kernel's order (tap row, tap column, channel),
// only without the zero ones, so both kernels give the same floats, bit for bit, and a layer can
// mix them row by row. 3x3 kernels only: the window's columns are unrolled.

struct SparseRow {
    const float* x;         // the input row [W][ci], read in place
    const uint64_t* masks;  // [W][words]: bit c % 64 of word c / 64 set where channel c is nonzero
    index_t words;          // ceil(ci / 64)
};

// Writes input row x [W][ci]'s nonzero bits, masks [W][words] with words = ceil(ci / 64), and
// returns how many are set. -0 counts as zero (it adds nothing either); NaN counts as nonzero, and
// spreads as in the dense kernel.
inline index_t nonzero_masks(const float* x, index_t W, index_t ci, index_t words, uint64_t* masks) {
    index_t count = 0;
    for (index_t j = 0; j < W; ++j) {
        const float* xj = x + j * ci;
        uint64_t* mj = masks + j * words;
        for (index_t word = 0; word < words; ++word) {
            const index_t c0 = word * 64, c1 = std::min(ci, c0 + 64);
            uint64_t m = 0;
            index_t c = c0;
            for (; c + V::width <= c1; c += V::width) m |= uint64_t(V::nonzero_bits(xj + c)) << (c - c0);
            for (; c < c1; ++c) m |= uint64_t(xj[c] != 0.0f) << (c - c0);
            mj[word] = m;
            count += std::popcount(m);
        }
    }
    return count;
}

// One nonzero value xb of window column J times its weight rows (at offset off from each tap's
// start) into the accumulators of the outputs it reaches: up to 3 taps x NV vectors, unrolled at
// compile time (a DESPECK_UNROLL loop inside sparse_column's while loop stayed a loop in GCC 12,
// with the accumulators in memory).
template <int RW, int NV, int J, int... I>
DESPECK_ALWAYS_INLINE void sparse_fmas(typename V::reg xb, const float* const (&tap)[3], index_t off, typename V::reg* acc,
                        std::integer_sequence<int, I...>) {
    const auto one = [&]<int kx, int v>() {
        constexpr int o = J - kx;
        if constexpr (o >= 0 && o < RW) acc[o * NV + v] = V::fma(xb, V::load(tap[kx] + off + v * V::width), acc[o * NV + v]);
    };
    (one.template operator()<I / NV, I % NV>(), ...);
}

// Window column J (input column w0 - 1 + J) of one tap row: its nonzeros reach output w0 + J - kx
// through tap column kx. tap[kx] is that tap's packed weights at the block's first channel; acc
// the block's [RW][NV] accumulators, flat (as an array reference, GCC 12 merges the identical
// bodies of different RW and then warns that one's array type overruns the other's object).
// The channels come from the pixel's bit mask (count trailing zeros, clear the lowest bit), so
// the addresses of a nonzero's value and weight rows are computed, not loaded: with a loaded
// offset per nonzero (the first version), the weight loads waited on that load and the loop ran
// at 1.1-1.3 FMAs per cycle against 1.5-1.75 with computed addresses (docs/benchmarks.md).
template <int RW, int NV, int J>
DESPECK_ALWAYS_INLINE void sparse_column(const SparseRow& r, index_t col, index_t W, index_t ci, index_t cop, const float* const (&tap)[3],
                          typename V::reg* acc) {
    if (col < 0 || col >= W) return;  // zero padding
    const float* xj = r.x + col * ci;
    const uint64_t* mj = r.masks + col * r.words;
    for (index_t word = 0; word < r.words; ++word) {
        uint64_t m = mj[word];
        const float* xw = xj + word * 64;
        const index_t w_off = word * 64 * cop;
        while (m) {
            const index_t c = std::countr_zero(m);
            m &= m - 1;
            sparse_fmas<RW, NV, J>(V::bcast(xw[c]), tap, w_off + c * cop, acc, std::make_integer_sequence<int, 3 * NV>{});
        }
    }
}

template <int RW, int NV, int... J>
inline void sparse_columns(const SparseRow& r, index_t w0, index_t W, index_t ci, index_t cop, const float* const (&tap)[3],
                           typename V::reg* acc, std::integer_sequence<int, J...>) {
    (sparse_column<RW, NV, J>(r, w0 - 1 + J, W, ci, cop, tap, acc), ...);
}

// Output pixels [w0, w0 + RW) of one row, NV vectors of channels, and one tap row: input row r
// with its masks, weights wt at that tap row's first tap and the block's first channel. The
// accumulators start from the bias on the first tap row and from y (where the previous tap row
// left them) after it; the last tap row applies the epilogue. Tap rows outside the loop over the
// row's blocks keep one tap row's weights (3 x ci x 64 floats, 48 KiB for 64 channels) in L1
// while the blocks run, where all three (144 KiB) would not fit (interleaved A/B on real
// activations: 5-10% faster).
template <int RW, int NV>
inline void sparse_block(const SparseRow& r, index_t w0, index_t W, const float* wt, index_t ci, index_t cop, bool first,
                         bool last, const float* bias, float* y, index_t co, int lanes, const BlockEpilogue& ep) {
    typename V::reg acc[RW][NV];
    const int full = lanes / V::width, part = lanes % V::width;
    DESPECK_UNROLL
    for (int v = 0; v < NV; ++v) {
        const typename V::reg b0 = bias ? V::load(bias + v * V::width) : V::zero();
        DESPECK_UNROLL
        for (int o = 0; o < RW; ++o) {
            const float* in = y + o * co + v * V::width;
            acc[o][v] = first ? b0 : v < full ? V::load(in) : part ? V::load_part(in, part) : V::zero();
        }
    }
    const float* const tap[3] = {wt, wt + ci * cop, wt + 2 * ci * cop};
    sparse_columns<RW, NV>(r, w0, W, ci, cop, tap, &acc[0][0], std::make_integer_sequence<int, RW + 2>{});
    static constexpr BlockEpilogue none{nullptr, nullptr, false};
    store_block<RW, NV>(acc, y, co, lanes, /*accumulate=*/false, last ? ep : none);
}

template <int NV>
inline void sparse_block_any(int rw, const SparseRow& r, index_t w0, index_t W, const float* wt, index_t ci, index_t cop,
                             bool first, bool last, const float* bias, float* y, index_t co, int lanes,
                             const BlockEpilogue& ep) {
    with_block_width(rw, [&]<int RW>() { sparse_block<RW, NV>(r, w0, W, wt, ci, cop, first, last, bias, y, co, lanes, ep); });
}

// Output row (n, h), every chunk of output channels, from its masked input rows: rows[i] is
// input row h + i - 1, or nullptr where that row is padding (at least the middle one is there).
inline void sparse_forward_row(const DirectConvArgs& a, const SparseRow* const* rows, index_t n, index_t h) {
    const index_t W = a.W;
    int present[3], count = 0;
    for (int i = 0; i < 3; ++i)
        if (rows[i]) present[count++] = i;
    for (index_t co0 = 0; co0 < a.co; co0 += a.chunk_width) {
        const auto [lanes, nv, bias, ep, yrow] = forward_chunk(a, n, h, co0);
        for (int k = 0; k < count; ++k) {
            const int i = present[k];
            const bool first = k == 0, last = k == count - 1;
            const float* wt = a.wp + (i * 3) * a.ci * a.cop + co0;
            for (index_t w0 = 0; w0 < W;) {
                const int rw = next_block_width(W - w0);
                float* y = yrow + w0 * a.co;
                // A switch, not with_vector_count: with that lambda here GCC 12 inlined the sparse
                // blocks differently and the sparse kernel ran at 0.6x its speed.
                switch (nv) {
                    case 1: sparse_block_any<1>(rw, *rows[i], w0, W, wt, a.ci, a.cop, first, last, bias, y, a.co, lanes, ep); break;
                    case 2: sparse_block_any<2>(rw, *rows[i], w0, W, wt, a.ci, a.cop, first, last, bias, y, a.co, lanes, ep); break;
                    case 3: if constexpr (V::max_nv >= 3) sparse_block_any<3>(rw, *rows[i], w0, W, wt, a.ci, a.cop, first, last, bias, y, a.co, lanes, ep); break;
                    case 4: if constexpr (V::max_nv >= 4) sparse_block_any<4>(rw, *rows[i], w0, W, wt, a.ci, a.cop, first, last, bias, y, a.co, lanes, ep); break;
                    default: break;
                }
                w0 += rw;
            }
        }
    }
}

// Output rows [r0, r1) of the N * H rows (row n * H + h), in order, so that each input row's
// masks are made once per thread, in a ring of three. A row whose three input rows hold more than
// max_density nonzeros (of their pixels x channels) runs the dense kernel instead: there the
// sparse loop's overheads cost more than the skipped products save. Returns how many rows ran sparse.
// scratch: what forward_row needs, K * (max_rw + K - 1) * ci floats. Inference only: the sparse
// rows overwrite y (a.accumulate is false; run_prepared_conv never sets it).
inline index_t sparse_forward_rows(const DirectConvArgs& a, index_t r0, index_t r1, float max_density, float* scratch) {
    const index_t W = a.W, ci = a.ci, per_row = W * ci, words = (ci + 63) / 64, slot_size = W * words;
    // Per thread, kept across calls (OpenMP keeps its threads): three rows' masks, 1 bit per value.
    thread_local std::vector<uint64_t> masks;
    if (masks.size() < static_cast<std::size_t>(3 * slot_size)) masks.resize(static_cast<std::size_t>(3 * slot_size));
    SparseRow slot[3];
    index_t cached[3] = {-1, -1, -1}, nonzeros[3] = {0, 0, 0};
    for (int s = 0; s < 3; ++s) slot[s] = {nullptr, masks.data() + s * slot_size, words};
    index_t sparse_rows = 0;
    for (index_t row = r0; row < r1; ++row) {
        const index_t n = row / a.H, h = row % a.H;
        const SparseRow* rows[3];
        index_t total = 0, present = 0;
        for (int i = 0; i < 3; ++i) {
            const index_t hh = h + i - 1;
            rows[i] = nullptr;
            if (hh < 0 || hh >= a.H) continue;
            const int s = static_cast<int>(hh % 3);  // three consecutive rows never share a slot
            if (cached[s] != n * a.H + hh) {
                slot[s].x = a.x + (n * a.H + hh) * per_row;
                nonzeros[s] = nonzero_masks(slot[s].x, W, ci, words, masks.data() + s * slot_size);
                cached[s] = n * a.H + hh;
            }
            rows[i] = &slot[s];
            total += nonzeros[s];
            ++present;
        }
        if (static_cast<double>(total) > static_cast<double>(max_density) * static_cast<double>(present * per_row)) {
            for (index_t chunk = 0; chunk * a.chunk_width < a.co; ++chunk) forward_row(a, n, h, chunk, scratch);
        } else {
            sparse_forward_row(a, rows, n, h);
            ++sparse_rows;
        }
    }
    return sparse_rows;
}

// Backward-weights micro-kernel: RC input channels x NV vectors of output channels of one tap,
// accumulated over the output rows [h0, h1) of image n; adds into dw.
//   dw[(tap*ci + c)*co + o] += sum_{h,v} x[n, h+i-P, v+j-P, c] * dy[n, h, v, o]
template <int RC, int NV>
inline void weights_block(const DirectConvArgs& a, index_t n, index_t h0, index_t h1, int i, int j, index_t c0,
                          index_t o0, int lanes) {
    const int P = a.K / 2;
    const index_t H = a.H, W = a.W, ci = a.ci, co = a.co;
    typename V::reg acc[RC][NV];
    DESPECK_UNROLL
    for (int r = 0; r < RC; ++r)
        DESPECK_UNROLL
        for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
    const index_t v_begin = std::max<index_t>(0, P - j), v_end = std::min<index_t>(W, W + P - j);
    const bool tail = lanes < NV * V::width;
    for (index_t h = h0; h < h1; ++h) {
        const index_t hh = h + i - P;
        if (hh < 0 || hh >= H) continue;
        const float* xp = a.x + ((n * H + hh) * W + (v_begin + j - P)) * ci + c0;
        const float* dyp = a.dy + ((n * H + h) * W + v_begin) * co + o0;
        for (index_t v = v_begin; v < v_end; ++v, xp += ci, dyp += co) {
            typename V::reg g[NV];
            if (!tail) {
                DESPECK_UNROLL
                for (int u = 0; u < NV; ++u) g[u] = V::load(dyp + u * V::width);
            } else {
                DESPECK_UNROLL
                for (int u = 0; u < NV; ++u) {
                    const int left = lanes - u * V::width;
                    g[u] = left >= V::width ? V::load(dyp + u * V::width)
                                            : (left > 0 ? V::load_part(dyp + u * V::width, left) : V::zero());
                }
            }
            DESPECK_UNROLL
            for (int r = 0; r < RC; ++r) {
                const typename V::reg xb = V::bcast(xp[r]);
                DESPECK_UNROLL
                for (int u = 0; u < NV; ++u) acc[r][u] = V::fma(xb, g[u], acc[r][u]);
            }
        }
    }
    float* out = a.dw + ((i * a.K + j) * ci + c0) * co + o0;
    DESPECK_UNROLL
    for (int r = 0; r < RC; ++r)
        DESPECK_UNROLL
        for (int u = 0; u < NV; ++u) {
            const int left = lanes - u * V::width;
            if (left >= V::width) {
                V::store(out + r * co + u * V::width, V::add(acc[r][u], V::load(out + r * co + u * V::width)));
            } else if (left > 0) {
                V::store_part(out + r * co + u * V::width,
                              V::add(acc[r][u], V::load_part(out + r * co + u * V::width, left)), left);
            }
        }
}

// One work item of backward-weights: tap (i, j), input channels [c0, c0 + chunk_c), all output
// channels, over output rows [h0, h1) of image n.
inline void weights_item(const DirectConvArgs& a, index_t n, index_t h0, index_t h1, int i, int j, index_t c0,
                         index_t c1) {
    for (index_t o0 = 0; o0 < a.co; o0 += a.chunk_width) {
        const int lanes = static_cast<int>(std::min<index_t>(a.chunk_width, a.co - o0));
        const int nv = (lanes + V::width - 1) / V::width;
        for (index_t c = c0; c < c1;) {
            const int rc = next_block_width(c1 - c);
            with_vector_count(nv, [&]<int NV>() {
                with_block_width(rc, [&]<int RC>() { weights_block<RC, NV>(a, n, h0, h1, i, j, c, o0, lanes); });
            });
            c += rc;
        }
    }
}

// ---- Winograd F(4x4, 3x3) forward (training's forward and backward-data) ---------------------
// Y = A^T [ (G g G^T) . (B^T d B) ] A per 4x4 output tile, d the 6x6 input tile around it
// (Lavin & Gray 2016). Channels are the vector lanes throughout, as NHWC lays them out.

// B^T applied to 6 values.
inline void winograd_bt(const typename V::reg d[6], typename V::reg o[6]) {
    const typename V::reg two = V::bcast(2.f), four = V::bcast(4.f), five = V::bcast(5.f);
    const typename V::reg d4m2 = V::sub(d[4], d[2]), d3m1 = V::sub(d[3], d[1]);
    o[0] = V::add(V::sub(V::mul(four, d[0]), V::mul(five, d[2])), d[4]);
    o[1] = V::sub(V::add(d[3], d[4]), V::mul(four, V::add(d[1], d[2])));
    o[2] = V::add(V::sub(d[4], d[3]), V::mul(four, V::sub(d[1], d[2])));
    o[3] = V::add(d4m2, V::mul(two, d3m1));
    o[4] = V::sub(d4m2, V::mul(two, d3m1));
    o[5] = V::add(V::sub(V::mul(four, d[1]), V::mul(five, d[3])), d[5]);
}

// A^T applied to 6 values.
inline void winograd_at(const typename V::reg m[6], typename V::reg o[4]) {
    const typename V::reg two = V::bcast(2.f), four = V::bcast(4.f), eight = V::bcast(8.f);
    const typename V::reg s12 = V::add(m[1], m[2]), d12 = V::sub(m[1], m[2]);
    const typename V::reg s34 = V::add(m[3], m[4]), d34 = V::sub(m[3], m[4]);
    o[0] = V::add(V::add(m[0], s12), s34);
    o[1] = V::add(d12, V::mul(two, d34));
    o[2] = V::add(s12, V::mul(four, s34));
    o[3] = V::add(V::add(d12, V::mul(eight, d34)), m[5]);
}

// Where the transforms read the A x A window at top-left pixel (r0, c0) of image img [H,W,C], channels
// [cv, cv + lanes): straight from the image when the window lies inside it and the vector is
// full, else from `pad` (A*A vectors), a copy with zeros for pixels outside the image. Either way
// the A*A loads that follow are unconditional and independent, so cache misses overlap instead of
// queueing behind branches.
struct TileWindow {
    const float* base;
    index_t row_step, px_step;
};
template <int A>
inline TileWindow tile_window(const float* img, index_t H, index_t W, index_t C, index_t r0, index_t c0, index_t cv,
                              int lanes, float* pad) {
    if (r0 >= 0 && c0 >= 0 && r0 + A <= H && c0 + A <= W && lanes == V::width)
        return {img + (r0 * W + c0) * C + cv, W * C, C};
    for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j) {
            const index_t r = r0 + i, c = c0 + j;
            typename V::reg v = V::zero();
            if (r >= 0 && r < H && c >= 0 && c < W) {
                const float* px = img + (r * W + c) * C + cv;
                v = lanes == V::width ? V::load(px) : V::load_part(px, lanes);
            }
            V::store(pad + (i * A + j) * V::width, v);
        }
    return {pad, A * V::width, V::width};
}

// B^T d B of the 6x6 input tile whose top-left pixel is (r0, c0) of image xn [H,W,ci], a vector of
// channels at a time; pixels outside the image are zero. Point p = 6i + j of channel c goes to
// dst[p * pstride + c] (both callers pass pstride = ci: one tile's 36 points are contiguous).
inline void winograd_input_tile(const float* xn, index_t H, index_t W, index_t ci, index_t r0, index_t c0, float* dst,
                                index_t pstride) {
    alignas(64) float pad[36 * V::width];
    for (index_t cv = 0; cv < ci; cv += V::width) {
        const int lanes = static_cast<int>(std::min<index_t>(V::width, ci - cv));
        const auto [base, row_step, px_step] = tile_window<6>(xn, H, W, ci, r0, c0, cv, lanes, pad);
        typename V::reg tmp[6][6];
        DESPECK_UNROLL
        for (int j = 0; j < 6; ++j) {  // columns: tmp[:, j] = B^T d[:, j]
            typename V::reg col[6], out[6];
            DESPECK_UNROLL
            for (int i = 0; i < 6; ++i) col[i] = V::load(base + i * row_step + j * px_step);
            winograd_bt(col, out);
            DESPECK_UNROLL
            for (int i = 0; i < 6; ++i) tmp[i][j] = out[i];
        }
        DESPECK_UNROLL
        for (int i = 0; i < 6; ++i) {  // rows: V[i, :] = B^T tmp[i, :]
            typename V::reg out[6];
            winograd_bt(tmp[i], out);
            DESPECK_UNROLL
            for (int j = 0; j < 6; ++j) {
                float* p = dst + (i * 6 + j) * pstride + cv;
                if (lanes == V::width)
                    V::store(p, out[j]);
                else
                    V::store_part(p, out[j], lanes);
            }
        }
    }
}

// A^T m A of one tile's 36 products m[p * co + o] (F(4x4, 3x3)), plus bias and ReLU (or added
// into y), stored at output pixel (r0, c0) of image yn [H,W,co]; rows and columns past the image
// are cropped. Full vectors of whole tiles (all but the right and bottom edges) take an unrolled
// path without tests.
inline void winograd_output_tile(const WinogradArgs& a, const float* m, float* yn, index_t r0, index_t c0) {
    const index_t H = a.H, W = a.W, co = a.co;
    const bool whole = r0 + 4 <= H && c0 + 4 <= W;
    for (index_t ov = 0; ov < co; ov += V::width) {
        const int lanes = static_cast<int>(std::min<index_t>(V::width, co - ov));
        const float* mt = m + ov;
        typename V::reg tmp[4][6];
        const typename V::reg b = a.bias_padded ? V::load(a.bias_padded + ov) : V::zero();
        if (whole && lanes == V::width) {
            DESPECK_UNROLL
            for (int j = 0; j < 6; ++j) {  // columns: tmp[:, j] = A^T m[:, j]
                typename V::reg col[6], out[4];
                DESPECK_UNROLL
                for (int i = 0; i < 6; ++i) col[i] = V::load(mt + (i * 6 + j) * co);
                winograd_at(col, out);
                DESPECK_UNROLL
                for (int i = 0; i < 4; ++i) tmp[i][j] = out[i];
            }
            DESPECK_UNROLL
            for (int i = 0; i < 4; ++i) {
                typename V::reg out[4];
                winograd_at(tmp[i], out);
                DESPECK_UNROLL
                for (int j = 0; j < 4; ++j) {
                    typename V::reg v = V::add(out[j], b);
                    if (a.relu) v = V::max(v, V::zero());
                    float* dst = yn + ((r0 + i) * W + c0 + j) * co + ov;
                    if (a.accumulate) v = V::add(v, V::load(dst));
                    V::store(dst, v);
                }
            }
            continue;
        }
        for (int j = 0; j < 6; ++j) {
            typename V::reg col[6], out[4];
            for (int i = 0; i < 6; ++i) {
                const float* src = mt + (i * 6 + j) * co;
                col[i] = lanes == V::width ? V::load(src) : V::load_part(src, lanes);
            }
            winograd_at(col, out);
            for (int i = 0; i < 4; ++i) tmp[i][j] = out[i];
        }
        for (int i = 0; i < 4; ++i) {
            if (r0 + i >= H) break;
            typename V::reg out[4];
            winograd_at(tmp[i], out);
            for (int j = 0; j < 4; ++j) {
                if (c0 + j >= W) break;
                typename V::reg v = V::add(out[j], b);
                if (a.relu) v = V::max(v, V::zero());
                float* dst = yn + ((r0 + i) * W + c0 + j) * co + ov;
                if (a.accumulate) v = V::add(v, lanes == V::width ? V::load(dst) : V::load_part(dst, lanes));
                if (lanes == V::width)
                    V::store(dst, v);
                else
                    V::store_part(dst, v, lanes);
            }
        }
    }
}

// ---- Winograd F(6x6, 3x3) forward (fast inference) -------------------------------------------
// The same scheme on 8x8 input tiles per 6x6 output tile, interpolation points 0, +-1, +-2,
// +-1/2 and infinity (Lavin & Gray 2016; the choice NNPACK makes): 64 products per 36 outputs,
// 1.78 per pixel instead of 2.25. Its float error is about twice F(4x4)'s (tested). An 8x8
// intermediate would take 64 registers, so both transforms pass it through a buffer in L1.

// B^T applied to 8 values.
DESPECK_ALWAYS_INLINE void winograd6_bt(const typename V::reg d[8], typename V::reg o[8]) {
    const typename V::reg c525 = V::bcast(5.25f), c425 = V::bcast(4.25f), c025 = V::bcast(0.25f),
                          c125 = V::bcast(1.25f), c05 = V::bcast(0.5f), c25 = V::bcast(2.5f), two = V::bcast(2.f),
                          four = V::bcast(4.f);
    o[0] = V::add(V::sub(d[0], d[6]), V::mul(c525, V::sub(d[4], d[2])));
    o[7] = V::add(V::sub(d[7], d[1]), V::mul(c525, V::sub(d[3], d[5])));
    typename V::reg t1 = V::sub(V::add(d[2], d[6]), V::mul(c425, d[4]));
    typename V::reg t2 = V::sub(V::add(d[1], d[5]), V::mul(c425, d[3]));
    o[1] = V::add(t1, t2);
    o[2] = V::sub(t1, t2);
    t1 = V::sub(V::add(d[6], V::mul(c025, d[2])), V::mul(c125, d[4]));
    t2 = V::add(V::sub(V::mul(c05, d[1]), V::mul(c25, d[3])), V::mul(two, d[5]));
    o[3] = V::add(t1, t2);
    o[4] = V::sub(t1, t2);
    t1 = V::add(d[6], V::mul(four, V::sub(d[2], V::mul(c125, d[4]))));
    t2 = V::add(V::sub(V::mul(two, d[1]), V::mul(c25, d[3])), V::mul(c05, d[5]));
    o[5] = V::add(t1, t2);
    o[6] = V::sub(t1, t2);
}

// A^T applied to 8 values: 6 outputs.
DESPECK_ALWAYS_INLINE void winograd6_at(const typename V::reg m[8], typename V::reg o[6]) {
    const typename V::reg s1 = V::add(m[1], m[2]), d1 = V::sub(m[1], m[2]);
    const typename V::reg s2 = V::add(m[3], m[4]), d2 = V::sub(m[3], m[4]);
    const typename V::reg s3 = V::add(m[5], m[6]), d3 = V::sub(m[5], m[6]);
    o[0] = V::add(V::add(m[0], s1), V::add(s2, s3));
    o[1] = V::add(V::add(d1, V::mul(V::bcast(2.f), d2)), V::mul(V::bcast(0.5f), d3));
    o[2] = V::add(V::add(s1, V::mul(V::bcast(4.f), s2)), V::mul(V::bcast(0.25f), s3));
    o[3] = V::add(V::add(d1, V::mul(V::bcast(8.f), d2)), V::mul(V::bcast(0.125f), d3));
    o[4] = V::add(V::add(s1, V::mul(V::bcast(16.f), s2)), V::mul(V::bcast(0.0625f), s3));
    o[5] = V::add(V::add(V::add(d1, V::mul(V::bcast(32.f), d2)), V::mul(V::bcast(0.03125f), d3)), m[7]);
}

// B^T d B of one 8x8 window (its top-left pixel at src, rows row_step apart, pixels px_step apart,
// one vector of channels) into dst[p * dst_step] for the 64 points p, through tmp (64 vectors).
// Strides that are compile-time constants (Px, Dst > 0) become displacements: with run-time
// strides GCC 12 hoists all 64 store addresses out of the caller's channel loop and spills them,
// and the transform ran at a third of the core's throughput even with its data in L1.
template <index_t Px, index_t Dst>
inline void winograd6_input_window(const float* src, index_t row_step, index_t px_step_rt, float* dst,
                                   index_t dst_step_rt, int lanes, float* tmp) {
    const index_t px_step = Px > 0 ? Px : px_step_rt, dst_step = Dst > 0 ? Dst : dst_step_rt;
    DESPECK_UNROLL
    for (int i = 0; i < 8; ++i) {  // rows: tmp[i, :] = B^T d[i, :]
        const float* row = src + i * row_step;
        typename V::reg d[8], out[8];
        DESPECK_UNROLL
        for (int j = 0; j < 8; ++j) d[j] = V::load(row + j * px_step);
        winograd6_bt(d, out);
        DESPECK_UNROLL
        for (int j = 0; j < 8; ++j) V::store(tmp + (i * 8 + j) * V::width, out[j]);
    }
    DESPECK_UNROLL
    for (int j = 0; j < 8; ++j) {  // columns: V[:, j] = B^T tmp[:, j]
        typename V::reg col[8], out[8];
        DESPECK_UNROLL
        for (int i = 0; i < 8; ++i) col[i] = V::load(tmp + (i * 8 + j) * V::width);
        winograd6_bt(col, out);
        DESPECK_UNROLL
        for (int i = 0; i < 8; ++i) {
            float* q = dst + (i * 8 + j) * dst_step;
            if (lanes == V::width)
                V::store(q, out[i]);
            else
                V::store_part(q, out[i], lanes);
        }
    }
}

// B^T d B of the 8x8 input tile whose top-left pixel is (r0, c0) of image xn [H,W,ci]; pixels
// outside the image are zero. Point p = 8i + j of channel c goes to dst[p * ci + c].
inline void winograd6_input_tile(const float* xn, index_t H, index_t W, index_t ci, index_t r0, index_t c0, float* dst) {
    alignas(64) float tmp[64 * V::width];
    constexpr index_t fixed_ci = 64;  // deSpeckNet's width: strides known at compile time
    if (ci == fixed_ci && fixed_ci % V::width == 0 && r0 >= 0 && c0 >= 0 && r0 + 8 <= H && c0 + 8 <= W) {
        const float* src = xn + (r0 * W + c0) * ci;
        for (index_t cv = 0; cv < fixed_ci; cv += V::width)
            winograd6_input_window<fixed_ci, fixed_ci>(src + cv, W * ci, 0, dst + cv, 0, V::width, tmp);
        return;
    }
    alignas(64) float pad[64 * V::width];
    for (index_t cv = 0; cv < ci; cv += V::width) {
        const int lanes = static_cast<int>(std::min<index_t>(V::width, ci - cv));
        const auto [base, row_step, px_step] = tile_window<8>(xn, H, W, ci, r0, c0, cv, lanes, pad);
        winograd6_input_window<0, 0>(base, row_step, px_step, dst + cv, ci, lanes, tmp);
    }
}

// A^T m A + bias (ReLU) of a whole 6x6 output tile with co channels, co a multiple of the vector
// width: m holds the 64 points co apart, the tile's top-left pixel is dst, rows row_step apart.
// Co > 0 fixes co at compile time (0: co_rt). Compile-time strides and flags keep the addresses in
// displacements and the flags out of the stores (see winograd6_input_window).
template <index_t Co, bool Relu, bool Stream>
inline void winograd6_output_window(const float* m, float* dst, index_t row_step, index_t co_rt, const float* bias,
                                    float* tmp) {
    const index_t co = Co > 0 ? Co : co_rt;
    for (index_t ov = 0; ov < co; ov += V::width) {
        DESPECK_UNROLL
        for (int j = 0; j < 8; ++j) {  // columns: tmp[:, j] = A^T m[:, j]
            typename V::reg col[8], out[6];
            DESPECK_UNROLL
            for (int i = 0; i < 8; ++i) col[i] = V::load(m + (i * 8 + j) * co + ov);
            winograd6_at(col, out);
            DESPECK_UNROLL
            for (int i = 0; i < 6; ++i) V::store(tmp + (i * 8 + j) * V::width, out[i]);
        }
        const typename V::reg b = bias ? V::load(bias + ov) : V::zero();
        DESPECK_UNROLL
        for (int i = 0; i < 6; ++i) {  // rows: Y[i, :] = A^T tmp[i, :]
            typename V::reg row[8], out[6];
            DESPECK_UNROLL
            for (int j = 0; j < 8; ++j) row[j] = V::load(tmp + (i * 8 + j) * V::width);
            winograd6_at(row, out);
            DESPECK_UNROLL
            for (int j = 0; j < 6; ++j) {
                typename V::reg v = V::add(out[j], b);
                if constexpr (Relu) v = V::max(v, V::zero());
                float* q = dst + i * row_step + j * co + ov;
                if constexpr (Stream)
                    V::stream(q, v);
                else
                    V::store(q, v);
            }
        }
    }
}

// A^T m A of one tile's 64 products (F(6x6, 3x3)), plus bias and ReLU, stored at output pixel
// (r0, c0) of yn [H,W,co] and cropped at the image's edges. stream: whole tiles bypass the cache
// (non-temporal stores; the caller fences).
inline void winograd6_output_tile(const WinogradArgs& a, const float* m, float* yn, index_t r0, index_t c0, bool stream) {
    const index_t H = a.H, W = a.W, co = a.co;
    const int rows = static_cast<int>(std::min<index_t>(6, H - r0)), cols = static_cast<int>(std::min<index_t>(6, W - c0));
    alignas(64) float tmp[48 * V::width];
    if (rows == 6 && cols == 6 && !a.accumulate && co % V::width == 0) {  // whole tiles: unrolled, no tests
        float* dst = yn + (r0 * W + c0) * co;
        const index_t row_step = W * co;
        const auto whole = [&]<index_t Co>() {
            if (a.relu && stream)
                winograd6_output_window<Co, true, true>(m, dst, row_step, co, a.bias_padded, tmp);
            else if (a.relu)
                winograd6_output_window<Co, true, false>(m, dst, row_step, co, a.bias_padded, tmp);
            else if (stream)
                winograd6_output_window<Co, false, true>(m, dst, row_step, co, a.bias_padded, tmp);
            else
                winograd6_output_window<Co, false, false>(m, dst, row_step, co, a.bias_padded, tmp);
        };
        constexpr index_t fixed_co = 64;  // deSpeckNet's width: strides known at compile time
        if (co == fixed_co)
            whole.template operator()<fixed_co>();
        else
            whole.template operator()<0>();
        return;
    }
    for (index_t ov = 0; ov < co; ov += V::width) {
        const int lanes = static_cast<int>(std::min<index_t>(V::width, co - ov));
        const float* mt = m + ov;
        DESPECK_UNROLL
        for (int j = 0; j < 8; ++j) {  // columns: tmp[:, j] = A^T m[:, j]
            typename V::reg col[8], out[6];
            DESPECK_UNROLL
            for (int i = 0; i < 8; ++i) col[i] = lanes == V::width ? V::load(mt + (i * 8 + j) * co) : V::load_part(mt + (i * 8 + j) * co, lanes);
            winograd6_at(col, out);
            DESPECK_UNROLL
            for (int i = 0; i < 6; ++i) V::store(tmp + (i * 8 + j) * V::width, out[i]);
        }
        const typename V::reg b = a.bias_padded ? V::load(a.bias_padded + ov) : V::zero();
        for (int i = 0; i < rows; ++i) {  // rows: Y[i, :] = A^T tmp[i, :]
            typename V::reg row[8], out[6];
            DESPECK_UNROLL
            for (int j = 0; j < 8; ++j) row[j] = V::load(tmp + (i * 8 + j) * V::width);
            winograd6_at(row, out);
            float* dst = yn + ((r0 + i) * W + c0) * co + ov;
            for (int j = 0; j < cols; ++j, dst += co) {
                typename V::reg v = V::add(out[j], b);
                if (a.relu) v = V::max(v, V::zero());
                if (a.accumulate) v = V::add(v, lanes == V::width ? V::load(dst) : V::load_part(dst, lanes));
                if (lanes == V::width)
                    V::store(dst, v);
                else
                    V::store_part(dst, v, lanes);
            }
        }
    }
}

// Prefetches (into L1) the Mt columns that tile `tile` of tile row th adds to the input window of
// the tile before it, 8 (F(6x6)) or 6 (F(4x4)) rows of them. Called two tiles ahead: a window's
// loads would otherwise wait on memory (fast inference reads a 512x512x64 activation, 64 MiB, from
// DRAM) with the transform's arithmetic idle. In interleaved A/B runs, 512x512 fast inference ran
// 3-10% faster with it and the training step about 4%; one tile ahead gained less, three no more.
template <int Mt>
inline void prefetch_window_columns(const float* xn, index_t H, index_t W, index_t ci, index_t th, index_t tile) {
    const index_t c0 = tile * Mt + 1, c1 = std::min<index_t>(W, c0 + Mt);
    if (c0 >= c1) return;
    const index_t r0 = std::max<index_t>(0, th * Mt - 1), r1 = std::min<index_t>(H, th * Mt + Mt + 1);
    const index_t bytes = (c1 - c0) * ci * index_t(sizeof(float));
    for (index_t r = r0; r < r1; ++r) detail_direct::prefetch_span_into_l1(xn + (r * W + c0) * ci, bytes);
}

// One register block of a Winograd product: M[t][o] = sum_c U[t][c] W[c][o] for RW tiles and the
// lanes (<= NV * width) channels of o, tiles us (U) and ms (M) floats apart. forward_block's
// arithmetic without its taps, bias and epilogue: with those, a 64-channel call cost enough that
// a layer of fast inference ran 1.5-6% slower (interleaved A/B on an Intel Xeon).
template <int RW, int NV>
inline void product_block(const float* u, index_t ci, index_t us, const float* w, index_t cop, float* m, index_t ms,
                          int lanes) {
    typename V::reg acc[RW][NV];
    DESPECK_UNROLL
    for (int r = 0; r < RW; ++r)
        DESPECK_UNROLL
        for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
    for (index_t c = 0; c < ci; ++c) {
        typename V::reg wv[NV];
        DESPECK_UNROLL
        for (int v = 0; v < NV; ++v) wv[v] = V::load(w + c * cop + v * V::width);
        DESPECK_UNROLL
        for (int r = 0; r < RW; ++r) {
            const typename V::reg xb = V::bcast(u[r * us + c]);
            DESPECK_UNROLL
            for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(xb, wv[v], acc[r][v]);
        }
    }
    // Every input of the block is read before the first store, so m may be u (in place). A
    // partial last vector stops at lanes: past it lie the next point's products.
    const int part = lanes - (NV - 1) * V::width;
    DESPECK_UNROLL
    for (int r = 0; r < RW; ++r)
        DESPECK_UNROLL
        for (int v = 0; v < NV; ++v) {
            if (v < NV - 1 || part == V::width)
                V::store(m + r * ms + v * V::width, acc[r][v]);
            else
                V::store_part(m + r * ms + v * V::width, acc[r][v], part);
        }
}

// The nt tiles of one point, in register blocks of max_rw tiles, then 4, 2, 1.
template <int NV>
inline void product_blocks(index_t nt, const float* u, index_t ci, index_t us, const float* w, index_t cop, float* m,
                           index_t ms, int lanes) {
    for (index_t t = 0; t < nt;) {
        const int rw = next_block_width(nt - t);
        with_block_width(rw, [&]<int RW>() { product_block<RW, NV>(u + t * us, ci, us, w, cop, m + t * ms, ms, lanes); });
        t += rw;
    }
}

// One work item: tiles [t0, t1) of tile row th of image n, for output tiles of M x M pixels
// (M = 4: F(4x4,3x3), P = 36 points; M = 6: F(6x6,3x3), P = 64). scratch: P * (t1 - t0) * (ci + co)
// floats, or P * (t1 - t0) * ci where a.in_place (M overwrites U, ci == co: see run_winograd).
//   U[t][p][c]  transformed input (P points p), M[t][p][o] = sum_c U[t][p][c] * Wt[p][c][o]
// Tile-major, so each transform reads and writes one contiguous block per tile.
template <int Mt>
inline void winograd_item_m(const WinogradArgs& a, index_t n, index_t th, index_t t0, index_t t1, float* scratch) {
    constexpr int P = (Mt + 2) * (Mt + 2);
    const index_t H = a.H, W = a.W, ci = a.ci, co = a.co, nt = t1 - t0;
    float* U = scratch;
    float* M = a.in_place ? scratch : scratch + P * nt * ci;
    const float* xn = a.x + n * H * W * ci;
    // 1. input transform into U, tile-major.
    for (index_t t = 0; t < nt; ++t) {
        prefetch_window_columns<Mt>(xn, H, W, ci, th, t0 + t + 2);
        if constexpr (Mt == 4)
            winograd_input_tile(xn, H, W, ci, th * 4 - 1, (t0 + t) * 4 - 1, U + t * P * ci, ci);
        else
            winograd6_input_tile(xn, H, W, ci, th * 6 - 1, (t0 + t) * 6 - 1, U + t * P * ci);
    }
    // 2. P products [nt x ci] x [ci x co] in the direct kernel's register tiles.
    const index_t chunk = static_cast<index_t>(V::max_nv) * V::width;
    for (int p = 0; p < P; ++p)
        for (index_t o0 = 0; o0 < co; o0 += chunk) {
            const int lanes = static_cast<int>(std::min<index_t>(chunk, co - o0));
            const int nv = (lanes + V::width - 1) / V::width;
            with_vector_count(nv, [&]<int NV>() {
                product_blocks<NV>(nt, U + p * ci, ci, P * ci, a.wt + p * ci * a.cop + o0, a.cop, M + p * co + o0, P * co, lanes);
            });
        }
    // 3. output transform, bias and ReLU (a.stream: see run_winograd).
    float* yn = a.y + n * H * W * co;
    for (index_t t = 0; t < nt; ++t) {
        if constexpr (Mt == 4)
            winograd_output_tile(a, M + t * P * co, yn, th * 4, (t0 + t) * 4);
        else
            winograd6_output_tile(a, M + t * P * co, yn, th * 6, (t0 + t) * 6, a.stream);
    }
    if (Mt == 6 && a.stream) V::fence();  // order the non-temporal stores before the layer's end barrier
}

inline void winograd_item(const WinogradArgs& a, index_t n, index_t th, index_t t0, index_t t1, float* scratch) {
    if (a.m == 6)
        winograd_item_m<6>(a, n, th, t0, t1, scratch);
    else
        winograd_item_m<4>(a, n, th, t0, t1, scratch);
}

// ---- Winograd F(4x4, 3x3) backward-weights (training) ----------------------------------------
// With M = (G g G^T) . (B^T d B) and Y = A^T M A per tile: dL/dM = A dY A^T, and
// dL/dg = G^T [ sum over tiles of (B^T d B) . (A dY A^T) ] G. The driver transforms a chunk of
// tiles of x (U) and dy (D), tile-major, accumulates dWt[p] += U[:, p]^T D[:, p] for each of the
// 36 points, and applies G^T . G once at the end.

// A applied to 4 values (the transpose of winograd_at's A^T): 4 -> 6.
inline void winograd_a(const typename V::reg v[4], typename V::reg o[6]) {
    const typename V::reg two = V::bcast(2.f), four = V::bcast(4.f), eight = V::bcast(8.f);
    const typename V::reg s02 = V::add(v[0], v[2]), s13 = V::add(v[1], v[3]);
    const typename V::reg t02 = V::add(v[0], V::mul(four, v[2])), t13 = V::add(V::mul(two, v[1]), V::mul(eight, v[3]));
    o[0] = v[0];
    o[1] = V::add(s02, s13);
    o[2] = V::sub(s02, s13);
    o[3] = V::add(t02, t13);
    o[4] = V::sub(t02, t13);
    o[5] = v[3];
}

// A dY A^T of the 4x4 tile of dyn [H,W,co] whose top-left pixel is (r0, c0); pixels outside the
// image are zero (the forward cropped them). Point p of channel o goes to dst[p * pstride + o].
inline void winograd_grad_tile(const float* dyn, index_t H, index_t W, index_t co, index_t r0, index_t c0, float* dst,
                               index_t pstride) {
    // dy tiles start at (4 th, 4 tw) >= 0, so only the bottom and right edges overhang.
    alignas(64) float pad[16 * V::width];
    for (index_t ov = 0; ov < co; ov += V::width) {
        const int lanes = static_cast<int>(std::min<index_t>(V::width, co - ov));
        const auto [base, row_step, px_step] = tile_window<4>(dyn, H, W, co, r0, c0, ov, lanes, pad);
        typename V::reg tmp[6][4];
        DESPECK_UNROLL
        for (int j = 0; j < 4; ++j) {  // columns: tmp[:, j] = A g[:, j]
            typename V::reg col[4], out[6];
            DESPECK_UNROLL
            for (int i = 0; i < 4; ++i) col[i] = V::load(base + i * row_step + j * px_step);
            winograd_a(col, out);
            DESPECK_UNROLL
            for (int k = 0; k < 6; ++k) tmp[k][j] = out[k];
        }
        DESPECK_UNROLL
        for (int k = 0; k < 6; ++k) {  // rows: D[k, :] = A tmp[k, :]
            typename V::reg out[6];
            winograd_a(tmp[k], out);
            DESPECK_UNROLL
            for (int l = 0; l < 6; ++l) {
                float* p = dst + (k * 6 + l) * pstride + ov;
                if (lanes == V::width)
                    V::store(p, out[l]);
                else
                    V::store_part(p, out[l], lanes);
            }
        }
    }
}

// Transforms tile `tile` (numbered over images, tile rows, tile columns) into slot `slot` of the
// chunk buffers: a.u [slots][36][ci], a.d [slots][36][co] (tile-major, as the forward stores it:
// each tile writes one contiguous block). First it prefetches what tile + 2 adds to the x window
// and its dy window: a training batch (16x40x40x64, 6.25 MiB each) sits in L3, and without the
// prefetch the transforms ran 3x slower than with their data in L1 and took 45% of the pass.
// With it: 1 thread 9-10% faster, 2 threads 4% (interleaved A/B, 16x40x40, 64 -> 64).
inline void winograd_weights_transform(const WinogradWeightsArgs& a, index_t tile, index_t slot) {
    const index_t tiles_w = (a.W + 3) / 4, tiles_h = (a.H + 3) / 4;
    const index_t n = tile / (tiles_h * tiles_w), th = tile / tiles_w % tiles_h, tw = tile % tiles_w;
    if (const index_t ahead = tile + 2; ahead < a.N * tiles_h * tiles_w) {
        const index_t n2 = ahead / (tiles_h * tiles_w), th2 = ahead / tiles_w % tiles_h, tw2 = ahead % tiles_w;
        prefetch_window_columns<4>(a.x + n2 * a.H * a.W * a.ci, a.H, a.W, a.ci, th2, tw2);
        // dy's 4x4 window at (4 th2, 4 tw2), cropped at the bottom and right edges.
        const index_t c0 = tw2 * 4, c1 = std::min<index_t>(a.W, c0 + 4), r0 = th2 * 4, r1 = std::min<index_t>(a.H, r0 + 4);
        const index_t bytes = (c1 - c0) * a.co * index_t(sizeof(float));
        for (index_t r = r0; r < r1; ++r) detail_direct::prefetch_span_into_l1(a.dy + ((n2 * a.H + r) * a.W + c0) * a.co, bytes);
    }
    winograd_input_tile(a.x + n * a.H * a.W * a.ci, a.H, a.W, a.ci, th * 4 - 1, tw * 4 - 1, a.u + slot * 36 * a.ci, a.ci);
    winograd_grad_tile(a.dy + n * a.H * a.W * a.co, a.H, a.W, a.co, th * 4, tw * 4, a.d + slot * 36 * a.co, a.co);
}

// out[r][o] += sum_{t < nt} u[t * 36 ci + r] * d[t * 36 co + o] for RC channels r and NV vectors
// of o (one point of the tile-major chunk): RC x NV accumulators in registers while the chunk's
// tiles stream through; out rows are co apart. overwrite: out = the sum (a part's first chunk).
template <int RC, int NV>
inline void winograd_weights_block(const float* u, index_t ci, const float* d, index_t co, index_t nt, float* out,
                                   int lanes, bool overwrite) {
    typename V::reg acc[RC][NV];
    DESPECK_UNROLL
    for (int r = 0; r < RC; ++r)
        DESPECK_UNROLL
        for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
    const bool tail = lanes < NV * V::width;
    for (index_t t = 0; t < nt; ++t) {
        const float* ut = u + t * 36 * ci;
        const float* dt = d + t * 36 * co;
        typename V::reg g[NV];
        if (!tail) {
            DESPECK_UNROLL
            for (int v = 0; v < NV; ++v) g[v] = V::load(dt + v * V::width);
        } else {
            DESPECK_UNROLL
            for (int v = 0; v < NV; ++v) {
                const int left = lanes - v * V::width;
                g[v] = left >= V::width ? V::load(dt + v * V::width) : (left > 0 ? V::load_part(dt + v * V::width, left) : V::zero());
            }
        }
        DESPECK_UNROLL
        for (int r = 0; r < RC; ++r) {
            const typename V::reg ub = V::bcast(ut[r]);
            DESPECK_UNROLL
            for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(ub, g[v], acc[r][v]);
        }
    }
    DESPECK_UNROLL
    for (int r = 0; r < RC; ++r)
        DESPECK_UNROLL
        for (int v = 0; v < NV; ++v) {
            const int left = lanes - v * V::width;
            float* dst = out + r * co + v * V::width;
            if (left >= V::width)
                V::store(dst, overwrite ? acc[r][v] : V::add(acc[r][v], V::load(dst)));
            else if (left > 0)
                V::store_part(dst, overwrite ? acc[r][v] : V::add(acc[r][v], V::load_part(dst, left)), left);
        }
}

// One work item: point p, input channels [c0, c1), all output channels, over the first nt slots
// of the chunk: a.dwt[p][c][o] += sum_t U[t][p][c] * D[t][p][o] (= when a.overwrite).
inline void winograd_weights_item(const WinogradWeightsArgs& a, int p, index_t c0, index_t c1, index_t nt) {
    const index_t ci = a.ci, co = a.co;
    const index_t chunk = static_cast<index_t>(V::max_nv) * V::width;
    const float* up = a.u + p * ci;
    const float* dp = a.d + p * co;
    float* wp = a.dwt + p * ci * co;
    for (index_t o0 = 0; o0 < co; o0 += chunk) {
        const int lanes = static_cast<int>(std::min<index_t>(chunk, co - o0));
        const int nv = (lanes + V::width - 1) / V::width;
        for (index_t c = c0; c < c1;) {
            const int rc = next_block_width(c1 - c);
            float* out = wp + c * co + o0;
            with_vector_count(nv, [&]<int NV>() {
                with_block_width(rc, [&]<int RC>() { winograd_weights_block<RC, NV>(up + c, ci, dp + o0, co, nt, out, lanes, a.overwrite); });
            });
            c += rc;
        }
    }
}

// ---- forward with few output channels (the last layer, 64 -> 1 or 2) ---------------------------
// Vectorised over the input channels instead: NP pixels x CO outputs, one accumulator vector each,
// summed across its lanes at the end. Per (tap, channel vector): NP input loads, CO weight loads,
// NP * CO FMAs. wp is packed [K*K][co][ci]; rows/xs as in forward_block.
// Measured on 512x512x64 -> 2 (AVX-512, 2 threads): 5.8 ms with 4-pixel blocks, each input vector
// loaded once per output channel (GCC folds the load into both FMAs) and summed through memory
// lane by lane; 2.3 ms with 8-pixel blocks, the input in a register, tree sums and the next rows
// prefetched (small_co_row_co).
template <int NP, int CO>
inline void small_co_block(const float* const* rows, int K, index_t ci, index_t xs, const float* wp, const float* bias,
                           float* y, bool relu) {
    typename V::reg acc[NP][CO];
    DESPECK_UNROLL
    for (int r = 0; r < NP; ++r)
        DESPECK_UNROLL
        for (int o = 0; o < CO; ++o) acc[r][o] = V::zero();
    const int tail = static_cast<int>(ci % V::width);
    const index_t full = ci - tail;
    for (int i = 0; i < K; ++i) {
        const float* row = rows[i];
        if (!row) continue;
        for (int j = 0; j < K; ++j) {
            const float* xj = row + j * xs;
            const float* wt = wp + (i * K + j) * CO * ci;
            for (index_t c = 0; c < full; c += V::width) {
                typename V::reg wv[CO];
                DESPECK_UNROLL
                for (int o = 0; o < CO; ++o) wv[o] = V::load(wt + o * ci + c);
                DESPECK_UNROLL
                for (int r = 0; r < NP; ++r) {
                    typename V::reg xv = V::load(xj + r * xs + c);
                    if constexpr (CO > 1) V::keep_in_register(xv);
                    DESPECK_UNROLL
                    for (int o = 0; o < CO; ++o) acc[r][o] = V::fma(xv, wv[o], acc[r][o]);
                }
            }
            if (tail) {
                typename V::reg wv[CO];
                DESPECK_UNROLL
                for (int o = 0; o < CO; ++o) wv[o] = V::load_part(wt + o * ci + full, tail);
                DESPECK_UNROLL
                for (int r = 0; r < NP; ++r) {
                    const typename V::reg xv = V::load_part(xj + r * xs + full, tail);
                    DESPECK_UNROLL
                    for (int o = 0; o < CO; ++o) acc[r][o] = V::fma(xv, wv[o], acc[r][o]);
                }
            }
        }
    }
    DESPECK_UNROLL
    for (int r = 0; r < NP; ++r)
        DESPECK_UNROLL
        for (int o = 0; o < CO; ++o) {
            const float s = V::hsum(acc[r][o]) + (bias ? bias[o] : 0.f);
            y[r * CO + o] = relu && s < 0 ? 0.f : s;
        }
}

template <int CO>
inline void small_co_row_co(const SmallCoArgs& a, index_t n, index_t h, float* scratch) {
    const int K = a.K, P = a.K / 2;
    const index_t H = a.H, W = a.W, ci = a.ci;
    // 8 pixels x CO <= 2 outputs: 16 accumulators of the 32 zmm registers; AVX2 has 16 ymm.
    constexpr int NP = V::width == 16 && CO <= 2 ? 8 : 4;
    static_assert(NP <= small_co_max_pixels);
    const float* rows[16];
    const float* real_rows[16];
    for (int i = 0; i < K; ++i) {
        const index_t hh = h + i - P;
        real_rows[i] = (hh < 0 || hh >= H) ? nullptr : a.x + ((n * H + hh) * W) * ci;
    }
    float* yrow = a.y + ((n * H + h) * W) * CO;
    for (index_t w0 = 0; w0 < W;) {
        // Whole blocks, then (with 8-pixel blocks) one of 4 where it fits, then single pixels.
        const int np = W - w0 >= NP ? NP : (NP > 4 && W - w0 >= 4 ? 4 : 1);
        const bool edge = w0 - P < 0 || w0 + np + P > W;
        if (!edge) {
            for (int i = 0; i < K; ++i) rows[i] = real_rows[i] ? real_rows[i] + (w0 - P) * ci : nullptr;
        } else {
            const index_t span = np + K - 1;
            for (int i = 0; i < K; ++i) {
                if (!real_rows[i]) {
                    rows[i] = nullptr;
                    continue;
                }
                float* dst = scratch + i * span * ci;
                for (index_t s = 0; s < span; ++s) {
                    const index_t col = w0 - P + s;
                    if (col < 0 || col >= W)
                        std::fill(dst + s * ci, dst + (s + 1) * ci, 0.0f);
                    else
                        std::copy(real_rows[i] + col * ci, real_rows[i] + (col + 1) * ci, dst + s * ci);
                }
                rows[i] = dst;
            }
        }
        // The window's bottom row (h + P) is the only one that row h - 1, usually the same thread's
        // previous item, did not read: prefetch it two blocks ahead, or the FMAs wait on memory
        // (the input, 64 MiB at 512x512, is in DRAM).
        if (real_rows[K - 1] && w0 + 3 * NP + P <= W)
            detail_direct::prefetch_span_into_l1(real_rows[K - 1] + (w0 + 2 * NP + P) * ci, NP * ci * index_t(sizeof(float)));
        if (np == NP)
            small_co_block<NP, CO>(rows, K, ci, ci, a.wp, a.bias, yrow + w0 * CO, a.relu);
        else if (np == 4)
            small_co_block<4, CO>(rows, K, ci, ci, a.wp, a.bias, yrow + w0 * CO, a.relu);
        else
            small_co_block<1, CO>(rows, K, ci, ci, a.wp, a.bias, yrow + w0 * CO, a.relu);
        w0 += np;
    }
}

inline void small_co_row(const SmallCoArgs& a, index_t n, index_t h, float* scratch) {
    switch (a.co) {
        case 1: return small_co_row_co<1>(a, n, h, scratch);
        case 2: return small_co_row_co<2>(a, n, h, scratch);
        case 3: return small_co_row_co<3>(a, n, h, scratch);
        case 4: return small_co_row_co<4>(a, n, h, scratch);
        default: break;
    }
}
