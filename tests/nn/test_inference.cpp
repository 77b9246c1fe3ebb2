// Inference engines against the layer-by-layer path: the fused exact plan (conv + bias + batch
// norm + ReLU in one pass) on odd sizes for every instruction set, the prepared Winograd and
// direct layers against the scalar reference convolution, and the fast (Winograd) mode's accuracy
// bound on real SAR data: max deviation <= 1e-3 of the output's range, PSNR change < 0.01 dB.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "despeck/io/npy.hpp"
#include "despeck/kernels/conv2d.hpp"
#include "despeck/nn/despecknet.hpp"
#include "despeck/random.hpp"
#include "support/kernel_choice.hpp"

using namespace despeck;
using despeck::testing::KernelChoiceGuard;
using despeck::testing::supported_isas;

namespace {

Tensor<float> uniform_tensor(Shape s, Rng& rng, double lo = -1, double hi = 1) {
    Tensor<float> t(s);
    for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(rng.uniform(lo, hi));
    return t;
}

// max |a - b| over max |b|: the normwise relative deviation (infinity norm), "of the output's
// range" in the docs.
double deviation(const Tensor<float>& a, const Tensor<float>& b) {
    REQUIRE(a.shape() == b.shape());
    double err = 0, scale = 0;
    for (index_t i = 0; i < a.size(); ++i) {
        err = std::max(err, std::abs(double(a[i]) - double(b[i])));
        scale = std::max(scale, std::abs(double(b[i])));
    }
    return scale > 0 ? err / scale : err;
}

}  // namespace

TEST_CASE("prepared layers match the reference convolution: direct with fused batch norm and ReLU, Winograd") {
    KernelChoiceGuard guard;
    kernels::set_amx_enabled(false);  // float products throughout (AMX: the tests below)
    Rng rng(21);
    for (auto isa : supported_isas()) {
        CAPTURE(kernels::to_string(isa));
        kernels::set_simd_isa(isa);
        for (auto [N, H, W] : {std::array<index_t, 3>{1, 1, 1}, {1, 1, 9}, {1, 9, 1}, {2, 5, 6}, {1, 13, 11}, {1, 17, 30}, {1, 8, 151}, {2, 13, 14}})
            for (auto [Ci, Co] : {std::pair<index_t, index_t>{1, 3}, {2, 64}, {17, 33}, {8, 8}, {16, 16}, {20, 20}, {64, 64}, {80, 80}, {64, 2}}) {
                CAPTURE(H);
                CAPTURE(W);
                CAPTURE(Ci);
                CAPTURE(Co);
                const Tensor<float> x = uniform_tensor(Shape{N, H, W, Ci}, rng), w = uniform_tensor(Shape{3, 3, Ci, Co}, rng),
                                    b = uniform_tensor(Shape{Co}, rng), scale = uniform_tensor(Shape{Co}, rng, 0.5, 2),
                                    shift = uniform_tensor(Shape{Co}, rng);
                Tensor<float> conv(Shape{N, H, W, Co});
                kernels::conv2d_forward_reference<float>(x.view(), w.view(), b.view(), conv.view());
                Tensor<float> expect_bn(conv.shape()), expect_relu(conv.shape());
                for (index_t i = 0; i < conv.size(); ++i) {
                    expect_bn[i] = std::max(0.f, conv[i] * scale[i % Co] + shift[i % Co]);
                    expect_relu[i] = std::max(0.f, conv[i]);
                }
                Tensor<float> y(conv.shape(), 99.f);
                kernels::run_prepared_conv(kernels::prepare_conv_direct(w.view(), b.view(), scale.view(), shift.view(), true),
                                           x.view(), y.view());
                CHECK(kernels::last_direct_isa() == isa);
                CHECK(deviation(y, expect_bn) <= 2e-6);
                // Winograd F(4x4,3x3) and F(6x6,3x3): sizes that are not multiples of the tile leave
                // partial tiles on the right and bottom; 8x151 spans two blocks of 24 tiles (26
                // tiles of 6, 38 of 4); 2x13x14 has whole F(6x6) tiles in the second image too.
                // The products overwrite the transformed input where ci == co fits one register
                // tile of channels (8: every ISA, scalar included; 16: every vector ISA; 20: a
                // partial last vector, AVX-512 only; 64: AVX-512 only; 80: never).
                const index_t tile_channels = isa == kernels::simd_isa::avx512 ? 64 : isa == kernels::simd_isa::avx2 ? 16 : 8;
                for (int tile : {4, 6}) {
                    CAPTURE(tile);
                    Tensor<float> yw(conv.shape(), 99.f);
                    kernels::run_prepared_conv(kernels::prepare_conv_winograd(w.view(), b.view(), true, tile), x.view(), yw.view());
                    CHECK(kernels::last_winograd_in_place() == (Ci == Co && Co <= tile_channels));
                    CHECK(deviation(yw, expect_relu) <= 5e-5);
                    kernels::run_prepared_conv(kernels::prepare_conv_winograd(w.view(), b.view(), false, tile), x.view(), yw.view());
                    CHECK(deviation(yw, conv) <= 5e-5);
                }
            }
    }
}

TEST_CASE("Winograd F(6x6,3x3) on an output larger than the caches (non-temporal stores) matches direct convolution") {
    // 2 x 187 x 187 x 64 floats is 17.9 MB, over the 16 MiB past which F(6x6) stores bypass the
    // cache (AVX-512 only: its stores fill whole cache lines); 187 = 31 tiles of 6 and 1 pixel, so
    // edge tiles take the cropped, cached path.
    KernelChoiceGuard guard;
    kernels::set_amx_enabled(false);  // the float products' stores (AMX: its own test below)
    Rng rng(23);
    const Tensor<float> x = uniform_tensor(Shape{2, 187, 187, 64}, rng), w = uniform_tensor(Shape{3, 3, 64, 64}, rng),
                        b = uniform_tensor(Shape{64}, rng);
    for (auto isa : supported_isas()) {
        CAPTURE(kernels::to_string(isa));
        kernels::set_simd_isa(isa);
        for (bool relu : {true, false}) {
            CAPTURE(relu);
            Tensor<float> exact(Shape{2, 187, 187, 64}), fast(exact.shape(), 99.f);
            kernels::run_prepared_conv(kernels::prepare_conv_direct(w.view(), b.view(), {}, {}, relu), x.view(), exact.view());
            kernels::run_prepared_conv(kernels::prepare_conv_winograd(w.view(), b.view(), relu, 6), x.view(), fast.view());
            CHECK(kernels::last_direct_isa() == isa);
            CHECK(kernels::last_winograd_streamed() == (isa == kernels::simd_isa::avx512));
            CHECK(deviation(fast, exact) <= 5e-5);
        }
    }
    // Below the threshold, and always for F(4x4), the stores stay cached.
    const Tensor<float> small = uniform_tensor(Shape{1, 40, 40, 64}, rng);
    Tensor<float> y(Shape{1, 40, 40, 64});
    kernels::run_prepared_conv(kernels::prepare_conv_winograd(w.view(), b.view(), true, 6), small.view(), y.view());
    CHECK_FALSE(kernels::last_winograd_streamed());
    Tensor<float> big(Shape{2, 187, 187, 64});
    kernels::run_prepared_conv(kernels::prepare_conv_winograd(w.view(), b.view(), true, 4), x.view(), big.view());
    CHECK_FALSE(kernels::last_winograd_streamed());
}

// ---- AMX (int8 slices for fast inference's F(6x6) layers, nine bf16 products for exact mode's) ---
// Where the CPU has no AMX these cases say so and check only that it cannot be switched on.

namespace {
bool amx_or_say_why() {
    if (kernels::cpu_supports_amx()) return true;
    MESSAGE("this CPU (or OS) offers no AMX tiles (AMX-BF16 and AMX-INT8): the AMX kernels are not exercised here");
    CHECK_THROWS_WITH_AS(kernels::set_amx_enabled(true), doctest::Contains("AMX"), value_error);
    CHECK_FALSE(kernels::get_amx_enabled());
    return false;
}
}  // namespace

TEST_CASE("AMX: the process starts from DESPECK_AMX (0: float products), or uses AMX where the CPU has it") {
    // ctest runs this suite once more as test_inference_float_products, with DESPECK_AMX=0.
    const char* env = std::getenv("DESPECK_AMX");
    if (env && std::string(env) == "0")
        CHECK_FALSE(kernels::get_amx_enabled());
    else
        CHECK(kernels::get_amx_enabled() == kernels::cpu_supports_amx());
}

#if DESPECK_AMX_KERNELS
TEST_CASE("AMX: exact mode's three-part bf16 split of the vector path equals its scalar reference, bit for bit") {
    if (!amx_or_say_why()) return;
    // Ties to even, carries into the exponent, signs, denormals (taken as zero), the largest floats.
    std::vector<float> v = {0.f, -0.f, 1.f, -1.f, 1.00390625f, 1.01171875f, 1.0078125f, 3.4e38f, -3.4e38f, 1e-38f, 1e-40f,
                            -1e-45f, 1.17549435e-38f, 0.333333343f, -2.71828175f, 65504.f};
    Rng rng(31);
    while (v.size() % 16 != 0 || v.size() < 4096) v.push_back(static_cast<float>(rng.normal() * std::pow(10.0, rng.uniform(-30, 30))));
    alignas(64) float in[16];
    alignas(64) std::uint16_t parts[3 * 64];  // part k at 64 k elements, as split_parts16 lays them out
    using kernels::detail_direct::bf16_from_float;
    using kernels::detail_direct::float_from_bf16;
    for (std::size_t i = 0; i < v.size(); i += 16) {
        std::copy(v.begin() + static_cast<std::ptrdiff_t>(i), v.begin() + static_cast<std::ptrdiff_t>(i) + 16, in);
        kernels::direct_amx::split_parts16<3>(in, parts);
        for (int l = 0; l < 16; ++l) {
            CAPTURE(in[l]);
            float rest = in[l];
            for (int k = 0; k < 3; ++k) {
                const std::uint16_t expect = bf16_from_float(rest);
                CHECK(parts[k * 64 + l] == expect);
                rest -= float_from_bf16(expect);
            }
        }
    }
}

namespace {
// The value slices s0, s1, s2 stand for, in units of the unscale: s0 + s1 / 2^8 + s2 / 2^16.
double from_slices(const std::int8_t* s) { return s[0] + s[1] / 256.0 + s[2] / 65536.0; }
}  // namespace

TEST_CASE("AMX: a row's int8 slices (vector path) equal their scalar reference bit for bit, and rebuild it within 2^-21 of its largest value") {
    namespace A = kernels::direct_amx;
    if (!amx_or_say_why()) return;
    Rng rng(33);
    std::vector<std::vector<float>> rows;
    for (int r = 0; r < 400; ++r) {  // magnitudes over 12 decades inside a row, scales over 60 between rows
        std::vector<float> row(64);
        const double scale = std::pow(10.0, rng.uniform(-30, 30));
        for (float& x : row) x = static_cast<float>(rng.normal() * scale * std::pow(10.0, rng.uniform(-12, 0)));
        rows.push_back(row);
    }
    const auto with = [](std::vector<float> row, std::initializer_list<std::pair<int, float>> set) {
        for (auto [at, x] : set) row[static_cast<std::size_t>(at)] = x;
        return row;
    };
    const std::vector<float> ramp = [] {
        std::vector<float> r(64);
        for (int c = 0; c < 64; ++c) r[static_cast<std::size_t>(c)] = static_cast<float>(c - 31) / 8;  // -3.875 .. 4: max a power of two
        return r;
    }();
    rows.push_back(std::vector<float>(64, 0.f));                                          // zero: zero slices, unscale 0
    rows.push_back(std::vector<float>(64, -0.f));
    rows.push_back(std::vector<float>(64, 1e-31f));                                       // under 2^-100: zero
    rows.push_back(std::vector<float>(64, 1e-29f));                                       // just over
    rows.push_back(ramp);
    rows.push_back(with(ramp, {{5, 127.99999f}}));                                      // the largest at the top of its binade
    rows.push_back(with(ramp, {{7, -3.4e38f}}));                                        // the largest floats
    rows.push_back(with(ramp, {{9, 1e-40f}, {10, -1e-45f}}));                           // denormals beside normal values
    rows.push_back(with(ramp, {{3, std::numeric_limits<float>::infinity()}}));          // inf: NaN unscale, zero slices
    rows.push_back(with(ramp, {{63, -std::numeric_limits<float>::quiet_NaN()}}));       // NaN: the same
    alignas(64) float x[64];
    alignas(64) char slot[A::point_bytes];
    bool bitwise = true;
    double worst = 0;
    for (std::size_t r = 0; r < rows.size(); ++r) {
        CAPTURE(r);
        const std::vector<float>& row = rows[r];
        std::copy(row.begin(), row.end(), x);
        A::slice_row(x, slot);
        const std::uint32_t top = A::largest_magnitude_bits(row.data(), 64);
        const A::SliceScale s = A::slice_scale(top);
        float unscale;
        std::memcpy(&unscale, slot + 192, sizeof(float));
        CHECK((unscale == s.unscale || (std::isnan(unscale) && std::isnan(s.unscale))));
        const bool finite = std::bit_cast<float>(top) < std::numeric_limits<float>::infinity();
        CHECK(finite == !std::isnan(s.unscale));
        for (int c = 0; c < 64; ++c) {
            std::int8_t expect[A::slices];
            A::slice_value(row[static_cast<std::size_t>(c)], s, expect);
            const std::int8_t got[A::slices] = {static_cast<std::int8_t>(slot[c]), static_cast<std::int8_t>(slot[64 + c]),
                                               static_cast<std::int8_t>(slot[128 + c])};
            const bool same = got[0] == expect[0] && got[1] == expect[1] && got[2] == expect[2];
            if (bitwise && !same) FAIL_CHECK("first difference at channel " << c);
            bitwise = bitwise && same;
            if (finite && s.unscale > 0) {
                const double m = std::bit_cast<float>(top);
                worst = std::max(worst, std::abs(from_slices(got) * s.unscale - row[static_cast<std::size_t>(c)]) / (m * 0x1p-21));
            }
            if (!finite || s.unscale == 0) bitwise = bitwise && got[0] == 0 && got[1] == 0 && got[2] == 0;
        }
    }
    CHECK(bitwise);
    MESSAGE("slices rebuild each row within " << worst << " x 2^-21 of its largest magnitude");
    CHECK(worst <= 1.0);
    CHECK(worst > 0.0);  // the check above measured something
}

TEST_CASE("AMX: the packed weights' layout, and a block's products against their scalar reference (int8 slices, three levels) for 1-32 tiles") {
    namespace A = kernels::direct_amx;
    Rng rng(37);
    // Transformed weights [64 points][64 channels][64 outputs], packed as prepare_conv_winograd
    // does; columns of different magnitudes, one of zeros.
    Tensor<float> wt = uniform_tensor(Shape{64, 64, 64}, rng, -2, 2);
    for (index_t pt = 0; pt < 64; ++pt)
        for (index_t c = 0; c < 64; ++c)
            for (index_t o = 0; o < 64; ++o) wt[(pt * 64 + c) * 64 + o] *= static_cast<float>(std::pow(10.0, (o % 7) - 3.0)) * (o == 5 ? 0.f : 1.f);
    kernels::PreparedConv p;
    kernels::detail_direct::pack_amx_weights(wt.data(), p);
    const char* packed = reinterpret_cast<const char*>(p.amx_weights.data());
    // The packed weights, read at the byte offsets point_levels uses (per point: 4 KiB per slice,
    // 1 KiB per column of 16 outputs, 64 bytes per channel quad, then output and channel within
    // the quad), hold the column's slices; its unscale follows the slices. (Without AMX this only
    // checks the packing against the offsets written here; with it, the products below check the
    // offsets against the tile unit's own reading of B tiles.)
    std::vector<double> column_unscale(64 * 64);
    std::vector<std::int8_t> slices(64 * 64 * 64 * 3);  // [point][channel][output][slice]
    bool layout_ok = true;
    for (index_t pt = 0; pt < 64; ++pt)
        for (index_t o = 0; o < 64; ++o) {
            const A::SliceScale s = A::slice_scale(A::largest_magnitude_bits(wt.data() + pt * 64 * 64 + o, 64, 64));
            float stored;
            std::memcpy(&stored, packed + pt * A::point_weight_bytes + A::point_slice_bytes + o * 4, sizeof(float));
            layout_ok = layout_ok && stored == s.unscale;
            column_unscale[static_cast<std::size_t>(pt * 64 + o)] = s.unscale;
            for (index_t c = 0; c < 64; ++c) {
                std::int8_t expect[A::slices];
                A::slice_value(wt[(pt * 64 + c) * 64 + o], s, expect);
                for (index_t j = 0; j < A::slices; ++j) {
                    const char got = packed[pt * A::point_weight_bytes + j * 4096 + (o / 16) * 1024 + (c / 4) * 64 + (o % 16) * 4 + c % 4];
                    layout_ok = layout_ok && static_cast<std::int8_t>(got) == expect[j];
                    slices[static_cast<std::size_t>(((pt * 64 + c) * 64 + o) * 3 + j)] = expect[j];
                }
            }
        }
    CHECK(layout_ok);
    if (!amx_or_say_why()) return;
    Tensor<float> scratch = Tensor<float>::uninitialized(Shape{A::scratch_floats});
    char* block = reinterpret_cast<char*>(scratch.data());
    auto* levels = reinterpret_cast<std::int32_t*>(scratch.data() + A::block_tiles * A::tile_bytes / 4 + 64 * 64);
    for (index_t nt : {1, 2, 5, 15, 16, 17, 23, 31, 32}) {
        CAPTURE(nt);
        // Each tile's transformed input S [64 points][64 channels], sliced into the block; the
        // block's slots past nt hold a pattern that must survive (their rows are neither read
        // into the products nor written).
        std::vector<Tensor<float>> S;
        for (index_t t = 0; t < nt; ++t) {
            S.push_back(uniform_tensor(Shape{64, 64}, rng, -3, 3));
            A::slice_tile(S.back().data(), block + t * A::tile_bytes);
        }
        std::fill(block + nt * A::tile_bytes, block + A::block_tiles * A::tile_bytes, char(0x5a));
        A::block_products(block, packed, nt, levels);
        CHECK(std::all_of(block + nt * A::tile_bytes, block + A::block_tiles * A::tile_bytes, [](char b) { return b == 0x5a; }));
        double worst_levels = 0, worst_float = 0;
        for (index_t t = 0; t < nt; ++t)
            for (index_t pt = 0; pt < 64; ++pt) {
                const float* row = S[static_cast<std::size_t>(t)].data() + pt * 64;
                const std::uint32_t top = A::largest_magnitude_bits(row, 64);
                const A::SliceScale row_scale = A::slice_scale(top);
                const float row_unscale = row_scale.unscale, row_max = std::bit_cast<float>(top);
                std::vector<std::int8_t> xs(64 * 3);
                for (index_t c = 0; c < 64; ++c) A::slice_value(row[c], row_scale, &xs[static_cast<std::size_t>(c * 3)]);
                for (index_t o = 0; o < 64; ++o) {
                    // The three levels in exact integers, then combined: the kernel's float
                    // arithmetic after them is a few roundings of 2^-24 of the sum's terms.
                    std::int64_t L[3] = {0, 0, 0};
                    double exact = 0, column_max = 0;
                    for (index_t c = 0; c < 64; ++c) {
                        const std::int8_t* x = &xs[static_cast<std::size_t>(c * 3)];
                        const std::int8_t* w = &slices[static_cast<std::size_t>(((pt * 64 + c) * 64 + o) * 3)];
                        L[0] += x[0] * w[0];
                        L[1] += x[0] * w[1] + x[1] * w[0];
                        L[2] += x[0] * w[2] + x[1] * w[1] + x[2] * w[0];
                        const double wc = wt[(pt * 64 + c) * 64 + o];
                        exact += double(S[static_cast<std::size_t>(t)][pt * 64 + c]) * wc;
                        column_max = std::max(column_max, std::abs(wc));
                    }
                    const double unscale = double(row_unscale) * column_unscale[static_cast<std::size_t>(pt * 64 + o)];
                    const double expect = (double(L[0]) + double(L[1]) / 256 + double(L[2]) / 65536) * unscale;
                    const double magnitude = (std::abs(double(L[0])) + std::abs(double(L[1])) / 256 + std::abs(double(L[2])) / 65536) * unscale;
                    const float got = reinterpret_cast<const float*>(block + t * A::tile_bytes)[pt * 64 + o];
                    worst_levels = std::max(worst_levels, std::abs(double(got) - expect) / (magnitude * 0x1p-24 * 4 + 1e-300));
                    // Against the float products: the slices' rounding (2^-23 of max|x| and of
                    // max|w| per value) and the dropped terms (about 2 x 2^-24 per channel),
                    // over 64 channels at most 2^-15.4 of max|x| max|w| (measured about 2^-18.6).
                    worst_float = std::max(worst_float, std::abs(double(got) - exact) / (0x1p-15 * row_max * column_max + 1e-300));
                }
            }
        CHECK(worst_levels <= 1.0);
        CHECK(worst_float <= 1.0);
    }
    // An infinity in a row makes that row's products NaN (float products: inf or NaN), and only
    // those.
    Tensor<float> tile = uniform_tensor(Shape{64, 64}, rng, -3, 3);
    tile[5 * 64 + 9] = std::numeric_limits<float>::infinity();
    A::slice_tile(tile.data(), block);
    A::block_products(block, packed, 1, levels);
    const float* products = reinterpret_cast<const float*>(block);
    bool nan_at_point = true, finite_elsewhere = true;
    for (index_t pt = 0; pt < 64; ++pt)
        for (index_t o = 0; o < 64; ++o) {
            if (pt == 5)
                nan_at_point = nan_at_point && std::isnan(products[pt * 64 + o]);
            else
                finite_elsewhere = finite_elsewhere && std::isfinite(products[pt * 64 + o]);
        }
    CHECK(nan_at_point);
    CHECK(finite_elsewhere);
}
#endif

TEST_CASE("AMX: fast inference's F(6x6) 64 -> 64 layers match direct convolution on odd sizes, and pick AMX only there") {
    KernelChoiceGuard guard;
    if (!amx_or_say_why()) return;
    kernels::set_simd_isa(kernels::simd_isa::avx512);
    kernels::set_amx_enabled(true);
    Rng rng(41);
    const Tensor<float> w = uniform_tensor(Shape{3, 3, 64, 64}, rng), b = uniform_tensor(Shape{64}, rng);
    // Widths of 1, 16, 17, 32 and 33 tiles (6, 96, 102, 192, 198 pixels) and ragged ones: blocks of
    // one or two row tiles of the unit, full and partial; 2 x 187 x 187 streams its output.
    for (auto [N, H, W] : {std::array<index_t, 3>{1, 1, 1}, {1, 7, 6}, {2, 13, 96}, {1, 6, 102}, {1, 11, 192}, {1, 8, 198},
                           {2, 37, 101}, {1, 19, 383}, {2, 187, 187}}) {
        CAPTURE(N);
        CAPTURE(H);
        CAPTURE(W);
        const Tensor<float> x = uniform_tensor(Shape{N, H, W, 64}, rng);
        for (bool relu : {true, false}) {
            CAPTURE(relu);
            Tensor<float> exact(Shape{N, H, W, 64}), fast(exact.shape(), 99.f);
            kernels::run_prepared_conv(kernels::prepare_conv_direct(w.view(), b.view(), {}, {}, relu), x.view(), exact.view());
            const auto prepared = kernels::prepare_conv_winograd(w.view(), b.view(), relu, 6);
            CHECK(prepared.amx);
            CHECK(prepared.weights.empty());
            kernels::run_prepared_conv(prepared, x.view(), fast.view());
            CHECK(kernels::last_winograd_amx());
            CHECK(kernels::last_winograd_streamed() == (N * H * W * 64 * 4 > (16 << 20)));
            // Per layer about 1.3e-5 of the range, as with float products.
            CHECK(deviation(fast, exact) <= 5e-5);
        }
    }
    // Not for other widths, F(4x4), other instruction sets, or with AMX switched off.
    const Tensor<float> w32 = uniform_tensor(Shape{3, 3, 32, 32}, rng);
    CHECK_FALSE(kernels::prepare_conv_winograd(w32.view(), {}, true, 6).amx);
    CHECK_FALSE(kernels::prepare_conv_winograd(w.view(), b.view(), true, 4).amx);
    kernels::set_simd_isa(kernels::simd_isa::avx2);
    CHECK_FALSE(kernels::prepare_conv_winograd(w.view(), b.view(), true, 6).amx);
    kernels::set_simd_isa(kernels::simd_isa::avx512);
    kernels::set_amx_enabled(false);
    const auto off = kernels::prepare_conv_winograd(w.view(), b.view(), true, 6);
    CHECK_FALSE(off.amx);
    const Tensor<float> x = uniform_tensor(Shape{1, 12, 12, 64}, rng);
    Tensor<float> y(Shape{1, 12, 12, 64});
    kernels::run_prepared_conv(off, x.view(), y.view());
    CHECK_FALSE(kernels::last_winograd_amx());
}

TEST_CASE("AMX: exact inference's nine-product 64 -> 64 kernel equals the direct kernel up to summation order, on odd sizes") {
    KernelChoiceGuard guard;
    kernels::set_simd_isa(kernels::simd_isa::avx512);
    if (!amx_or_say_why()) return;
    kernels::set_amx_enabled(true);
    Rng rng(43);
    const Tensor<float> w = uniform_tensor(Shape{3, 3, 64, 64}, rng), b = uniform_tensor(Shape{64}, rng),
                        scale = uniform_tensor(Shape{64}, rng, 0.5, 2), shift = uniform_tensor(Shape{64}, rng);
    // Widths below, at and past the kernel's 32-pixel blocks and its 256-column strips (257: a
    // 1-column second strip; 600: a middle strip with image on both sides and a 3-block last
    // one); 1-row and 1-pixel images; two and three images (the kernel's bands of 32 rows cross
    // from one image to the next, and start mid-image); 33 rows: a 1-row band at the bottom.
    for (auto [N, H, W] : {std::array<index_t, 3>{1, 1, 1}, {1, 3, 31}, {2, 13, 33}, {1, 7, 64}, {2, 37, 101}, {1, 2, 200},
                           {3, 5, 40}, {1, 3, 257}, {1, 2, 600}, {1, 33, 40}}) {
        CAPTURE(N);
        CAPTURE(H);
        CAPTURE(W);
        const Tensor<float> x = uniform_tensor(Shape{N, H, W, 64}, rng);
        for (bool bn : {true, false}) {
            CAPTURE(bn);
            const auto dense = bn ? kernels::prepare_conv_direct(w.view(), b.view(), scale.view(), shift.view(), true)
                                  : kernels::prepare_conv_direct(w.view(), b.view(), {}, {}, false);
            auto amx = dense;
            REQUIRE(kernels::prepare_amx_exact(amx));
            Tensor<float> expect(Shape{N, H, W, 64}), got(expect.shape(), 99.f), reference(expect.shape());
            kernels::run_prepared_conv(dense, x.view(), expect.view());
            CHECK_FALSE(kernels::last_direct_amx());
            kernels::run_prepared_conv(amx, x.view(), got.view());
            CHECK(kernels::last_direct_amx());
            CHECK(deviation(got, expect) <= 2e-6);
            kernels::conv2d_forward_reference<float>(x.view(), w.view(), b.view(), reference.view());
            for (index_t i = 0; i < reference.size(); ++i)
                reference[i] = bn ? std::max(0.f, reference[i] * scale[i % 64] + shift[i % 64]) : reference[i];
            CHECK(deviation(got, reference) <= 2e-6);
        }
    }
    // Exact, not merely close: on a 1-pixel image only the centre tap meets nonzero input, so an
    // output is a sum of 64 products; with odd integers of 17-18 bits on one side and -1, 0 or 1 on the
    // other every product and partial sum is an integer under 2^24, exact in float in any order.
    // A two-part split would lose the lowest bits of many of them: only all three parts pass.
    for (int side : {0, 1}) {
        CAPTURE(side);
        Tensor<float> xi(Shape{1, 1, 1, 64}), wi(Shape{3, 3, 64, 64});
        for (index_t i = 0; i < xi.size(); ++i)
            xi[i] = side == 0 ? static_cast<float>(65536 + static_cast<int>(rng.uniform(0, 65535)) * 2 + 1)
                              : static_cast<float>(static_cast<int>(rng.uniform(0, 3)) - 1);
        for (index_t i = 0; i < wi.size(); ++i)
            wi[i] = side == 1 ? static_cast<float>(-(65536 + static_cast<int>(rng.uniform(0, 65535)) * 2 + 1))
                              : static_cast<float>(static_cast<int>(rng.uniform(0, 3)) - 1);
        const auto dense = kernels::prepare_conv_direct(wi.view(), {}, {}, {}, false);
        auto amx = dense;
        REQUIRE(kernels::prepare_amx_exact(amx));
        Tensor<float> expect(Shape{1, 1, 1, 64}), got(expect.shape());
        kernels::run_prepared_conv(dense, xi.view(), expect.view());
        kernels::run_prepared_conv(amx, xi.view(), got.view());
        CHECK(kernels::last_direct_amx());
        for (index_t o = 0; o < 64; ++o) CHECK(got[o] == expect[o]);
    }
    // After a ReLU, a sparse input takes the sparse kernel (the same floats as the dense one), a
    // denser one the AMX kernel; the first layer's input, not after a ReLU, always the AMX kernel.
    auto layer = kernels::prepare_conv_direct(w.view(), b.view(), scale.view(), shift.view(), true);
    REQUIRE(kernels::prepare_amx_exact(layer));
    layer.sparse_input = true;
    for (double zeros : {0.8, 0.4}) {
        CAPTURE(zeros);
        Tensor<float> x(Shape{1, 24, 40, 64});
        for (index_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(0, 1) < zeros ? 0.f : static_cast<float>(rng.uniform(0.1, 1));
        Tensor<float> got(Shape{1, 24, 40, 64}), dense(got.shape());
        kernels::run_prepared_conv(layer, x.view(), got.view());
        CHECK(kernels::last_direct_amx() == (zeros < 0.62));
        kernels::run_prepared_conv(kernels::prepare_conv_direct(w.view(), b.view(), scale.view(), shift.view(), true), x.view(),
                                   dense.view());
        if (zeros > 0.62) CHECK(deviation(got, dense) == 0);
        CHECK(deviation(got, dense) <= 2e-6);
    }
    // Only 3x3 64 -> 64 layers of the AVX-512 kernels with AMX on; training's layers never ask.
    const Tensor<float> w32 = uniform_tensor(Shape{3, 3, 32, 32}, rng), w5 = uniform_tensor(Shape{5, 5, 64, 64}, rng);
    auto other = kernels::prepare_conv_direct(w32.view(), {}, {}, {}, true);
    CHECK_FALSE(kernels::prepare_amx_exact(other));
    other = kernels::prepare_conv_direct(w5.view(), {}, {}, {}, true);
    CHECK_FALSE(kernels::prepare_amx_exact(other));
    kernels::set_amx_enabled(false);
    other = kernels::prepare_conv_direct(w.view(), {}, {}, {}, true);
    CHECK_FALSE(kernels::prepare_amx_exact(other));
    kernels::set_amx_enabled(true);
    kernels::set_simd_isa(kernels::simd_isa::avx2);
    other = kernels::prepare_conv_direct(w.view(), {}, {}, {}, true);
    CHECK_FALSE(kernels::prepare_amx_exact(other));
}

TEST_CASE("AMX: the exact plan of a 64-filter model puts its 64 -> 64 layers on AMX and stays with the layer-by-layer path") {
    KernelChoiceGuard guard;
    if (!amx_or_say_why()) return;
    kernels::set_simd_isa(kernels::simd_isa::avx512);
    kernels::set_conv_algorithm(kernels::conv_algorithm::direct);
    DeSpeckNetConfig cfg;
    cfg.depth = 6;  // 64 filters: four 64 -> 64 layers
    DeSpeckNet<float> model(cfg, 11);
    Rng rng(47);
    const Tensor<float> batch = uniform_tensor(Shape{2, 24, 24, 2}, rng, -20, 0);
    model.compute_gradients(batch.view(), batch.view(), {});  // running statistics from a batch
    const Tensor<float> x = uniform_tensor(Shape{1, 29, 71, 2}, rng, -20, 0);
    const Tensor<float> layered = model.run_branch(DeSpeckNet<float>::clean_branch, x.view());
    kernels::set_amx_enabled(true);
    const BranchPlan<float> plan(model, DeSpeckNet<float>::clean_branch, InferenceMode::exact);
    int on_amx = 0;
    for (const auto& l : plan.layers()) on_amx += l.amx_exact;
    CHECK(on_amx == 4);
    const Tensor<float> with_amx = plan.run(x.view());
    // Four layers' other summation order: a few 1e-6 of the range (the direct plan 2e-6).
    CHECK(deviation(with_amx, layered) <= 5e-6);
    kernels::set_amx_enabled(false);
    const BranchPlan<float> without(model, DeSpeckNet<float>::clean_branch, InferenceMode::exact);
    for (const auto& l : without.layers()) CHECK_FALSE(l.amx_exact);
    const Tensor<float> direct = without.run(x.view());
    CHECK(deviation(direct, layered) <= 2e-6);
    CHECK(deviation(with_amx, direct) > 0);  // some layer did run on AMX (the sparse kernel gives the direct floats)
}

TEST_CASE("prepared layers refuse inputs that do not fit, and Winograd refuses non-3x3 weights and other tiles") {
    const Tensor<float> w(Shape{3, 3, 4, 8}, 0.1f), w5(Shape{5, 5, 4, 8}, 0.1f);
    const auto p = kernels::prepare_conv_direct(w.view(), {}, {}, {}, false);
    Tensor<float> x(Shape{1, 4, 4, 3}), y(Shape{1, 4, 4, 8});
    CHECK_THROWS_WITH_AS(kernels::run_prepared_conv(p, x.view(), y.view()), doctest::Contains("[1,4,4,3]"), shape_error);
    CHECK_THROWS_WITH_AS(kernels::prepare_conv_winograd(w5.view(), {}, false), doctest::Contains("3x3"), shape_error);
    CHECK_THROWS_WITH_AS(kernels::prepare_conv_winograd(w.view(), {}, false, 5), doctest::Contains("output tile 5"), value_error);
}

TEST_CASE("the fused exact plan equals the layer-by-layer path on odd sizes, for every instruction set") {
    KernelChoiceGuard guard;
    // The layer-by-layer reference runs the exact direct kernels (automatic would pick Winograd).
    kernels::set_conv_algorithm(kernels::conv_algorithm::direct);
    for (auto combine : {CombineMode::additive_db, CombineMode::multiplicative_linear})
        for (int channels : {1, 2}) {
            DeSpeckNetConfig cfg;
            cfg.depth = 5;
            cfg.filters = 20;  // not a multiple of any vector width: tails everywhere
            cfg.channels = channels;
            cfg.combine = combine;
            DeSpeckNet<float> model(cfg, 3);
            Rng rng(5);
            const Tensor<float> batch = uniform_tensor(Shape{2, 9, 8, channels}, rng, 0.1, 1.0);
            model.compute_gradients(batch.view(), batch.view(), {});  // running statistics from a batch
            for (auto isa : supported_isas()) {
                kernels::set_simd_isa(isa);
                for (auto [N, H, W] : {std::array<index_t, 3>{1, 1, 1}, {1, 1, 7}, {1, 7, 1}, {2, 13, 11}}) {
                    CAPTURE(kernels::to_string(isa));
                    CAPTURE(H);
                    CAPTURE(W);
                    const Tensor<float> x = uniform_tensor(Shape{N, H, W, channels}, rng, 0.1, 1.0);
                    const Tensor<float> layered = model.run_branch(DeSpeckNet<float>::clean_branch, x.view());
                    const Tensor<float> fused = model.predict_clean(x.view());
                    CHECK(deviation(fused, layered) <= 2e-6);
                    // Every layer that follows a ReLU may skip zero inputs; the first may not.
                    const BranchPlan<float> plan(model, DeSpeckNet<float>::clean_branch, InferenceMode::exact);
                    for (std::size_t k = 0; k < plan.layers().size(); ++k)
                        CHECK(plan.layers()[k].sparse_input == (k > 0 && plan.layers()[k].method == kernels::PreparedConv::Method::direct));
                    const Tensor<float> fast = model.predict_clean(x.view(), InferenceMode::fast);
                    CHECK(deviation(fast, layered) <= 1e-4);
                    const Tensor<float> noise = model.predict_noise(x.view());
                    CHECK(deviation(noise, model.run_branch(DeSpeckNet<float>::noise_branch, x.view())) <= 2e-6);
                }
            }
        }
}

TEST_CASE("the exact plan skips zero activations where they dominate, and still equals the layer-by-layer path") {
    KernelChoiceGuard guard;
    kernels::set_conv_algorithm(kernels::conv_algorithm::direct);
    DeSpeckNetConfig cfg;
    cfg.depth = 6;
    cfg.filters = 24;
    DeSpeckNet<float> model(cfg, 4);
    // Batch-norm shifts of -1 leave about 85% of each ReLU's outputs at zero, as sparse as a
    // trained model's (70%) and more: the plan's sparse-input kernel then runs.
    for (std::size_t i = 0; i < model.parameters().count(); ++i) {
        const std::string& name = model.parameters().entry(i).name;
        if (name.find(".bn") != std::string::npos && name.ends_with(".bias")) {
            TensorView<float> beta = model.parameters().value(i);
            for (index_t k = 0; k < beta.size(); ++k) beta[k] = -1.0f;
        }
    }
    Rng rng(8);
    const Tensor<float> x = uniform_tensor(Shape{2, 17, 23, cfg.channels}, rng, -20.0, -5.0);
    const Tensor<float> layered = model.run_branch(DeSpeckNet<float>::clean_branch, x.view());
    for (auto isa : supported_isas()) {
        CAPTURE(kernels::to_string(isa));
        kernels::set_simd_isa(isa);
        const Tensor<float> fused = model.predict_clean(x.view());
        CHECK(kernels::last_sparse_rows() == 2 * 17);  // the last layer with a sparse input: all rows
        CHECK(deviation(fused, layered) <= 2e-6);
    }
}

TEST_CASE("a plan keeps the weights it was built with, and rejects bad input by name") {
    DeSpeckNetConfig cfg;
    cfg.depth = 3;
    cfg.filters = 8;
    cfg.channels = 1;
    DeSpeckNet<float> model(cfg, 1);
    Rng rng(8);
    const Tensor<float> x = uniform_tensor(Shape{1, 6, 6, 1}, rng);
    const BranchPlan<float> plan(model, DeSpeckNet<float>::clean_branch, InferenceMode::exact);
    const Tensor<float> before = plan.run(x.view());
    for (float& v : model.parameters().values()) v *= 2;
    const Tensor<float> after = plan.run(x.view());
    CHECK(deviation(after, before) == 0.0);
    CHECK(deviation(model.predict_clean(x.view()), before) > 1e-3);
    Tensor<float> bad = x;
    bad[7] = std::nanf("");
    CHECK_THROWS_WITH_AS(plan.run(bad.view()), doctest::Contains("flat index 7"), value_error);
    const Tensor<float> two(Shape{1, 6, 6, 2});
    CHECK_THROWS_WITH_AS(plan.run(two.view()), doctest::Contains("2 channels"), shape_error);
}

TEST_CASE("fast inference stays within its documented bound on real SAR (TerraSAR-X single look)") {
    // A full-size single-pol model (depth 17, 64 filters) adapted for a few steps to the scene in
    // tuning mode, so weights and batch-norm statistics are those of real speckle, not of the
    // initialisation. Bounds: max |fast - exact| <= 1e-3 of max |exact| (normwise), and the PSNR of
    // either against the 2x2-multilooked reference differs by < 0.01 dB; point by point in
    // intensity, 1e-3 too (below).
    const auto dir = std::filesystem::path(DESPECK_SHARED_DIR) / "data" / "sar";
    const auto single = dir / "tsx_slc_intensity_1look_256x256.npy", multi = dir / "tsx_slc_intensity_ml2x2_128x128.npy";
    for (const auto& p : {single, multi})
        if (!std::filesystem::exists(p)) FAIL("missing real SAR crop " << p.string() << " (see ../shared/README.md)");
    const Tensor<float> intensity = io::read_npy_f32(single), ml = io::read_npy_f32(multi);
    REQUIRE(intensity.shape() == Shape{256, 256});
    REQUIRE(ml.shape() == Shape{128, 128});
    auto to_db = [](float v) { return static_cast<float>(10.0 * std::log10(std::max(double(v), 1e-6))); };

    DeSpeckNetConfig cfg;  // depth 17, 64 filters
    cfg.channels = 1;
    DeSpeckNet<float> model(cfg, 7);
    Adam<float> adam;
    Rng rng(13);
    Tensor<float> batch(Shape{16, 40, 40, 1});
    for (int step = 0; step < 3; ++step) {
        for (index_t k = 0; k < 16; ++k) {  // 40x40 patches from the top half
            const index_t r0 = static_cast<index_t>(rng.uniform(0, 88)), c0 = static_cast<index_t>(rng.uniform(0, 216));
            for (index_t r = 0; r < 40; ++r)
                for (index_t c = 0; c < 40; ++c) batch[(k * 40 + r) * 40 + c] = to_db(intensity[(r0 + r) * 256 + c0 + c]);
        }
        model.train_step(batch.view(), {}, {}, adam, 1e-3);
    }
    // The bottom half (rows 128..255) as one image; its reference is the multilooked crop's bottom half.
    Tensor<float> scene(Shape{1, 128, 256, 1}), reference(Shape{128, 256});
    for (index_t r = 0; r < 128; ++r)
        for (index_t c = 0; c < 256; ++c) {
            scene[r * 256 + c] = to_db(intensity[(128 + r) * 256 + c]);
            reference[r * 256 + c] = to_db(ml[((128 + r) / 2) * 128 + c / 2]);
        }
    const Tensor<float> exact = model.predict_clean(scene.view(), InferenceMode::exact);
    auto psnr = [&](const Tensor<float>& out) {
        double se = 0, lo = 1e30, hi = -1e30;
        for (index_t i = 0; i < reference.size(); ++i) {
            se += std::pow(double(out[i]) - reference[i], 2);
            lo = std::min(lo, double(reference[i]));
            hi = std::max(hi, double(reference[i]));
        }
        return 10 * std::log10((hi - lo) * (hi - lo) / (se / double(reference.size())));
    };
    // Fast mode with float products, and with AMX's int8 slices where the CPU has them.
    KernelChoiceGuard guard;
    for (bool amx : despeck::testing::fast_product_amx_choices()) {
        CAPTURE(amx);
        kernels::set_amx_enabled(amx);
        const Tensor<float> fast = model.predict_clean(scene.view(), InferenceMode::fast);
        CHECK(kernels::last_winograd_amx() == amx);
        const double dev = deviation(fast, exact);
        const std::string products = amx ? "AMX int8" : "float";
        MESSAGE("fast vs exact on TerraSAR-X (" << products << " products): max deviation " << dev << " of the range");
        CHECK(dev <= 1e-3);
        CHECK(dev > 0);  // the two modes did run different arithmetic
        // Point by point, in the intensity the dB values stand for: max |10^((fast - exact)/10) - 1|,
        // the relative error a SAR analyst sees in each despeckled pixel. Measured 6.9e-5 with float
        // products and 1.2e-4 with AMX's (docs/benchmarks.md, "Fast inference accuracy").
        double pointwise = 0;
        for (index_t i = 0; i < fast.size(); ++i)
            pointwise = std::max(pointwise, std::abs(std::pow(10.0, (double(fast[i]) - double(exact[i])) / 10) - 1));
        MESSAGE("fast vs exact on TerraSAR-X (" << products << " products): max pointwise relative deviation of the intensity "
                                                << pointwise);
        CHECK(pointwise <= 1e-3);
        const double p_exact = psnr(exact), p_fast = psnr(fast);
        MESSAGE("PSNR vs the 2x2 multilook: exact " << p_exact << " dB, fast " << p_fast << " dB");
        CHECK(std::abs(p_fast - p_exact) < 0.01);
    }
}
