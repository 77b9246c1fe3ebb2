// Every optimised conv kernel against the scalar reference: odd image sizes (1 pixel, 1 row,
// primes), channel counts below, at and above the vector width, images that span several
// im2col chunks, and the accumulate-into-gradient contract.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "despeck/kernels/conv2d.hpp"
#include "despeck/random.hpp"
#include "support/kernel_choice.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace despeck;
using despeck::testing::KernelChoiceGuard;
using despeck::testing::supported_isas;

namespace {

template <class T>
Tensor<T> random_tensor(Shape s, Rng& rng) {
    Tensor<T> t(s);
    for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<T>(rng.uniform(-1, 1));
    return t;
}

// max |a - b| relative to max |b|, so float tolerances scale with the sums' magnitude.
template <class T>
double relative_max_error(const Tensor<T>& a, const Tensor<T>& b) {
    double err = 0, scale = 0;
    for (index_t i = 0; i < a.size(); ++i) {
        err = std::max(err, std::abs(double(a[i]) - double(b[i])));
        scale = std::max(scale, std::abs(double(b[i])));
    }
    return scale > 0 ? err / scale : err;
}

enum class Fast { im2col, direct };

// The optimised kernels: im2col for any T, the direct SIMD kernels (current instruction set) for float.
template <class T>
void fast_forward(Fast f, const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, Tensor<T>& y) {
    if constexpr (std::is_same_v<T, float>)
        if (f == Fast::direct) return kernels::conv2d_forward_direct(x.view(), w.view(), b.view(), y.view());
    kernels::conv2d_forward_im2col<T>(x.view(), w.view(), b.view(), y.view());
}
template <class T>
void fast_backward_data(Fast f, const Tensor<T>& dy, const Tensor<T>& w, Tensor<T>& dx) {
    if constexpr (std::is_same_v<T, float>)
        if (f == Fast::direct) return kernels::conv2d_backward_data_direct(dy.view(), w.view(), dx.view());
    kernels::conv2d_backward_data_im2col<T>(dy.view(), w.view(), dx.view());
}
template <class T>
void fast_backward_weights(Fast f, const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>& dw, Tensor<T>& db) {
    if constexpr (std::is_same_v<T, float>)
        if (f == Fast::direct) return kernels::conv2d_backward_weights_direct(x.view(), dy.view(), dw.view(), db.view());
    kernels::conv2d_backward_weights_im2col<T>(x.view(), dy.view(), dw.view(), db.view());
}

template <class T>
void compare_all_passes(index_t N, index_t H, index_t W, index_t Ci, index_t Co, index_t K, double tol,
                        Fast fast = Fast::im2col) {
    CAPTURE(N);
    CAPTURE(H);
    CAPTURE(W);
    CAPTURE(Ci);
    CAPTURE(Co);
    CAPTURE(K);
    Rng rng(static_cast<std::uint64_t>(N * 1000003 + H * 10007 + W * 101 + Ci * 13 + Co * 7 + K));
    const Tensor<T> x = random_tensor<T>(Shape{N, H, W, Ci}, rng), w = random_tensor<T>(Shape{K, K, Ci, Co}, rng),
                    b = random_tensor<T>(Shape{Co}, rng), dy = random_tensor<T>(Shape{N, H, W, Co}, rng);

    Tensor<T> y_ref(dy.shape()), y_fast(dy.shape(), T(99));
    kernels::conv2d_forward_reference<T>(x.view(), w.view(), b.view(), y_ref.view());
    fast_forward<T>(fast, x, w, b, y_fast);
    CHECK(relative_max_error(y_fast, y_ref) <= tol);

    // Backward passes add into buffers that already hold values.
    const Tensor<T> dx0 = random_tensor<T>(x.shape(), rng), dw0 = random_tensor<T>(w.shape(), rng),
                    db0 = random_tensor<T>(b.shape(), rng);
    Tensor<T> dx_ref = dx0, dx_fast = dx0, dw_ref = dw0, dw_fast = dw0, db_ref = db0, db_fast = db0;
    kernels::conv2d_backward_data_reference<T>(dy.view(), w.view(), dx_ref.view());
    fast_backward_data<T>(fast, dy, w, dx_fast);
    CHECK(relative_max_error(dx_fast, dx_ref) <= tol);
    kernels::conv2d_backward_weights_reference<T>(x.view(), dy.view(), dw_ref.view(), db_ref.view());
    fast_backward_weights<T>(fast, x, dy, dw_fast, db_fast);
    CHECK(relative_max_error(dw_fast, dw_ref) <= tol);
    CHECK(relative_max_error(db_fast, db_ref) <= tol);
    // The reference itself must have done something: the accumulated buffers moved.
    CHECK(relative_max_error(dx_ref, dx0) > 1e-6);
    CHECK(relative_max_error(dw_ref, dw0) > 1e-6);
}

}  // namespace

TEST_CASE("im2col conv matches the reference: tiny and odd images") {
    for (index_t K : {1, 3, 5})
        for (auto [H, W] : {std::pair<index_t, index_t>{1, 1}, {1, 7}, {7, 1}, {2, 3}, {13, 11}})
            for (auto [Ci, Co] : {std::pair<index_t, index_t>{1, 1}, {2, 3}, {3, 17}, {17, 2}}) {
                compare_all_passes<double>(2, H, W, Ci, Co, K, 1e-12);
                compare_all_passes<float>(1, H, W, Ci, Co, K, 1e-5);
            }
}

TEST_CASE("im2col conv matches the reference: deSpeckNet's shapes, over several chunks") {
    // 64 -> 64 channels, 3x3: 576 columns, so ~1800 pixels a chunk; 2 x 37 x 29 = 2146 pixels.
    compare_all_passes<float>(2, 37, 29, 64, 64, 3, 2e-5);
    compare_all_passes<float>(1, 9, 40, 2, 64, 3, 2e-5);   // first layer, dual-pol
    compare_all_passes<float>(3, 11, 7, 64, 1, 3, 2e-5);   // last layer, single-pol
    compare_all_passes<double>(1, 5, 6, 63, 65, 3, 1e-12); // one off the vector width each way
}

TEST_CASE("direct SIMD kernels match the reference on every instruction set: tails, 1-pixel and 1-row images") {
    KernelChoiceGuard guard;
    for (auto isa : supported_isas()) {
        CAPTURE(kernels::to_string(isa));
        kernels::set_simd_isa(isa);
        for (index_t K : {1, 3, 5})
            for (auto [H, W] : {std::pair<index_t, index_t>{1, 1}, {1, 7}, {7, 1}, {2, 3}, {13, 11}, {3, 23}})
                for (auto [Ci, Co] : {std::pair<index_t, index_t>{1, 1}, {2, 3}, {3, 17}, {17, 2}, {5, 33}}) {
                    compare_all_passes<float>(1, H, W, Ci, Co, K, 1e-5, Fast::direct);
                    CHECK(kernels::last_direct_isa() == isa);
                }
        // deSpeckNet's shapes and one off the register tiles (64 channels, 6-pixel blocks) each way.
        compare_all_passes<float>(2, 9, 40, 64, 64, 3, 2e-5, Fast::direct);
        compare_all_passes<float>(1, 7, 41, 63, 65, 3, 2e-5, Fast::direct);
        compare_all_passes<float>(1, 9, 40, 2, 64, 3, 2e-5, Fast::direct);   // first layer, dual-pol
        compare_all_passes<float>(3, 11, 7, 64, 1, 3, 2e-5, Fast::direct);   // last layer, single-pol
        // Last layer, both polarisations and single-pol, on rows long enough for several 8-pixel
        // blocks (AVX-512), the bottom row's prefetch, the edge blocks and, on AVX-512, a block
        // of 4 (w0 = 40 and 32) before a single-pixel tail.
        compare_all_passes<float>(2, 9, 45, 64, 2, 3, 2e-5, Fast::direct);
        compare_all_passes<float>(1, 4, 37, 64, 1, 3, 2e-5, Fast::direct);
        // 5x5: the prefetch with P = 2 (w0 = 0 and 8 on AVX-512), a whole block at the right edge
        // (w0 = 32 on AVX-512, 36 elsewhere).
        compare_all_passes<float>(1, 6, 41, 64, 2, 5, 2e-5, Fast::direct);
        compare_all_passes<float>(1, 5, 13, 129, 31, 3, 2e-5, Fast::direct); // several channel chunks
    }
}

namespace {
// A ReLU output: each value zero with probability 1 - density, else |normal|; a few -0.0 among
// the zeros (they count as zero).
Tensor<float> relu_like(Shape s, double density, Rng& rng) {
    Tensor<float> t(s);
    for (index_t i = 0; i < t.size(); ++i)
        t[i] = rng.uniform() < density ? static_cast<float>(std::abs(rng.normal())) : (i % 7 == 0 ? -0.0f : 0.0f);
    return t;
}

// y with the layer prepared as given; sparse_rows gets how many rows ran the sparse kernel.
Tensor<float> run_layer(const kernels::PreparedConv& p, const Tensor<float>& x, index_t& sparse_rows) {
    Tensor<float> y(Shape{x.shape()[0], x.shape()[1], x.shape()[2], p.co}, 99.f);
    kernels::run_prepared_conv(p, x.view(), y.view());
    sparse_rows = kernels::last_sparse_rows();
    return y;
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}
}  // namespace

TEST_CASE("the sparse-input forward gives the dense kernel's floats bit for bit, on every instruction set") {
    KernelChoiceGuard guard;
    for (auto isa : supported_isas()) {
        CAPTURE(kernels::to_string(isa));
        kernels::set_simd_isa(isa);
        // 1-pixel, 1-column and 2-pixel images; blocks of 6, 4, 2 and 1 along rows of 13, 11, 29
        // and 7; channel counts off every vector width, one and several output chunks; input
        // channels over one 64-bit mask word (65: a 1-bit second word; 100: a second word of
        // vectors and a tail; 130: three words).
        for (auto [N, H, W, Ci, Co] : {std::array<index_t, 5>{1, 1, 1, 5, 20}, {1, 7, 1, 19, 37}, {1, 1, 2, 3, 3},
                                       {2, 5, 13, 64, 64}, {1, 9, 11, 16, 16}, {1, 4, 29, 33, 17}, {1, 6, 7, 64, 129},
                                       {1, 3, 9, 65, 16}, {1, 2, 5, 130, 20}, {1, 3, 7, 100, 24}})
            for (double density : {0.0, 0.3, 1.0}) {
                CAPTURE(N);
                CAPTURE(H);
                CAPTURE(W);
                CAPTURE(Ci);
                CAPTURE(Co);
                CAPTURE(density);
                Rng rng(static_cast<std::uint64_t>(H * 131 + W * 17 + Ci * 5 + Co + 1000 * density));
                Tensor<float> x = relu_like(Shape{N, H, W, Ci}, density, rng);
                if (Ci == 65 && density == 0.3) {  // NaN and inf are nonzeros: both kernels spread them
                    x[7] = std::numeric_limits<float>::quiet_NaN();
                    x[Ci * 10 + 64] = std::numeric_limits<float>::infinity();
                }
                const Tensor<float> w = random_tensor<float>(Shape{3, 3, Ci, Co}, rng), b = random_tensor<float>(Shape{Co}, rng),
                                    scale = random_tensor<float>(Shape{Co}, rng), shift = random_tensor<float>(Shape{Co}, rng);
                kernels::PreparedConv p = kernels::prepare_conv_direct(w.view(), b.view(), scale.view(), shift.view(), true);
                index_t rows = -1;
                const Tensor<float> dense = run_layer(p, x, rows);
                p.sparse_input = true;
                p.sparse_max_density = 1.0f;  // every row sparse
                const Tensor<float> sparse = run_layer(p, x, rows);
                CHECK(rows == N * H);
                CHECK(same_bits(sparse, dense));
                CHECK(kernels::last_direct_isa() == isa);
            }
        // The reference agrees too (without batch norm: the dense kernel's own test covers it).
        Rng rng(3);
        const Tensor<float> x = relu_like(Shape{1, 8, 19, 24}, 0.3, rng), w = random_tensor<float>(Shape{3, 3, 24, 40}, rng),
                            b = random_tensor<float>(Shape{40}, rng);
        kernels::PreparedConv p = kernels::prepare_conv_direct(w.view(), b.view(), {}, {}, false);
        p.sparse_input = true;
        p.sparse_max_density = 1.0f;
        index_t rows = -1;
        const Tensor<float> sparse = run_layer(p, x, rows);
        Tensor<float> ref(sparse.shape());
        kernels::conv2d_forward_reference<float>(x.view(), w.view(), b.view(), ref.view());
        CHECK(rows == 8);
        CHECK(relative_max_error(sparse, ref) <= 1e-5);
    }
}

TEST_CASE("the sparse-input forward picks the dense kernel for dense rows and layers, with the same floats") {
    KernelChoiceGuard guard;
    for (auto isa : supported_isas()) {
        CAPTURE(kernels::to_string(isa));
        kernels::set_simd_isa(isa);
        Rng rng(7);
        const index_t N = 2, H = 12, W = 17, C = 32;
        // Rows 4k and 4k + 1 all nonzero, 4k + 2 and 4k + 3 all zero: an output row sees 2/3 or
        // 1/3 of its input window nonzero (1/2 or 0 at the top and bottom), so a threshold of
        // 0.55 splits the rows; the layer's sample (every other row) sees half nonzero.
        Tensor<float> x(Shape{N, H, W, C});
        for (index_t i = 0; i < x.size(); ++i) x[i] = (i / (W * C)) % 4 < 2 ? static_cast<float>(0.1 + rng.uniform()) : 0.0f;
        const Tensor<float> w = random_tensor<float>(Shape{3, 3, C, C}, rng), b = random_tensor<float>(Shape{C}, rng);
        kernels::PreparedConv p = kernels::prepare_conv_direct(w.view(), b.view(), {}, {}, true);
        index_t rows = -1;
        const Tensor<float> dense = run_layer(p, x, rows);
        p.sparse_input = true;
        p.sparse_max_density = 0.55f;
        const Tensor<float> mixed = run_layer(p, x, rows);
        CHECK(rows > 0);
        CHECK(rows < N * H);
        CHECK(same_bits(mixed, dense));
        // A dense layer (90% nonzero): the sample of rows sends it to the dense kernel whole.
        const Tensor<float> full = relu_like(Shape{N, H, W, C}, 0.9, rng);
        p.sparse_max_density = 0.4f;
        p.sparse_input = false;
        const Tensor<float> full_dense = run_layer(p, full, rows);
        p.sparse_input = true;
        const Tensor<float> full_auto = run_layer(p, full, rows);
        CHECK(rows == 0);
        CHECK(same_bits(full_auto, full_dense));
    }
#if defined(_OPENMP)
    // Bands of 32 rows handed out to threads (46 rows: two bands, the second across both images):
    // 1, 2, 3 and 5 threads, the same floats.
    Rng rng(9);
    const Tensor<float> x = relu_like(Shape{2, 23, 19, 64}, 0.3, rng), w = random_tensor<float>(Shape{3, 3, 64, 64}, rng),
                        b = random_tensor<float>(Shape{64}, rng);
    kernels::PreparedConv p = kernels::prepare_conv_direct(w.view(), b.view(), {}, {}, true);
    p.sparse_input = true;
    auto run = [&](int threads) {
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        index_t rows = -1;
        Tensor<float> y = run_layer(p, x, rows);
        omp_set_num_threads(saved);
        CHECK(rows == 46);
        return y;
    };
    const Tensor<float> one = run(1);
    for (int threads : {2, 3, 5}) CHECK(same_bits(run(threads), one));
#endif
}

TEST_CASE("Winograd forward, backward-data and backward-weights (training) match the reference on every instruction set") {
    KernelChoiceGuard guard;
    for (auto isa : supported_isas()) {
        CAPTURE(kernels::to_string(isa));
        kernels::set_simd_isa(isa);
        // 2 x 40 x 40 (200 tiles) and 3 x 37 x 53 (420 tiles) give backward-weights 4 parts of
        // several 32-tile chunks, the last partial; the small images give 1 part of 1 chunk.
        for (auto [N, H, W] : {std::array<index_t, 3>{1, 1, 1}, {1, 1, 9}, {2, 9, 1}, {1, 13, 11}, {2, 40, 40}, {3, 37, 53}})
            for (auto [Ci, Co] : {std::pair<index_t, index_t>{16, 16}, {17, 33}, {64, 64}, {64, 20}}) {
                CAPTURE(H);
                CAPTURE(W);
                CAPTURE(Ci);
                CAPTURE(Co);
                Rng rng(static_cast<std::uint64_t>(H * 131 + W * 7 + Ci + Co));
                const Tensor<float> x = random_tensor<float>(Shape{N, H, W, Ci}, rng), w = random_tensor<float>(Shape{3, 3, Ci, Co}, rng),
                                    b = random_tensor<float>(Shape{Co}, rng), dy = random_tensor<float>(Shape{N, H, W, Co}, rng);
                Tensor<float> y_ref(dy.shape()), y(dy.shape(), 99.f);
                kernels::conv2d_forward_reference<float>(x.view(), w.view(), b.view(), y_ref.view());
                kernels::conv2d_forward_winograd(x.view(), w.view(), b.view(), y.view());
                CHECK(relative_max_error(y, y_ref) <= 5e-5);
                const Tensor<float> dx0 = random_tensor<float>(x.shape(), rng);
                Tensor<float> dx_ref = dx0, dx = dx0;  // backward-data adds into what is there
                kernels::conv2d_backward_data_reference<float>(dy.view(), w.view(), dx_ref.view());
                kernels::conv2d_backward_data_winograd(dy.view(), w.view(), dx.view());
                CHECK(relative_max_error(dx, dx_ref) <= 5e-5);
                CHECK(kernels::last_direct_isa() == isa);
                // Backward-weights adds into what is there too; db is the plain column sum.
                const Tensor<float> dw0 = random_tensor<float>(w.shape(), rng), db0 = random_tensor<float>(b.shape(), rng);
                Tensor<float> dw_ref = dw0, dw = dw0, db_ref = db0, db = db0;
                kernels::conv2d_backward_weights_reference<float>(x.view(), dy.view(), dw_ref.view(), db_ref.view());
                kernels::conv2d_backward_weights_winograd(x.view(), dy.view(), dw.view(), db.view());
                CHECK(relative_max_error(dw, dw_ref) <= 5e-5);
                CHECK(relative_max_error(db, db_ref) <= 1e-5);
                CHECK(kernels::last_direct_isa() == isa);
            }
    }
    // Dispatch: automatic runs Winograd for all three passes of 64 -> 64, direct for layers with
    // few channels; explicit direct never runs Winograd.
    Rng rng(5);
    const Tensor<float> x = random_tensor<float>(Shape{1, 6, 6, 64}, rng), w = random_tensor<float>(Shape{3, 3, 64, 64}, rng),
                        w2 = random_tensor<float>(Shape{3, 3, 64, 2}, rng);
    Tensor<float> y(Shape{1, 6, 6, 64}), y2(Shape{1, 6, 6, 2}), dw(w.shape());
    kernels::set_conv_algorithm(kernels::conv_algorithm::automatic);
    kernels::conv2d_forward<float>(x.view(), w.view(), {}, y.view());
    CHECK(kernels::last_conv_algorithm() == kernels::conv_algorithm::winograd);
    kernels::conv2d_backward_weights<float>(x.view(), y.view(), dw.view(), {});
    CHECK(kernels::last_conv_algorithm() == kernels::conv_algorithm::winograd);
    kernels::conv2d_forward<float>(x.view(), w2.view(), {}, y2.view());
    CHECK(kernels::last_conv_algorithm() == kernels::conv_algorithm::direct);
    Tensor<float> dw2(w2.shape());
    kernels::conv2d_backward_weights<float>(x.view(), y2.view(), dw2.view(), {});
    CHECK(kernels::last_conv_algorithm() == kernels::conv_algorithm::direct);
    kernels::set_conv_algorithm(kernels::conv_algorithm::direct);
    kernels::conv2d_forward<float>(x.view(), w.view(), {}, y.view());
    CHECK(kernels::last_conv_algorithm() == kernels::conv_algorithm::direct);
    kernels::conv2d_backward_weights<float>(x.view(), y.view(), dw.view(), {});
    CHECK(kernels::last_conv_algorithm() == kernels::conv_algorithm::direct);
}

TEST_CASE("direct and Winograd backward-weights do not depend on the thread count") {
#if defined(_OPENMP)
    KernelChoiceGuard guard;
    Rng rng(11);
    // Winograd: 2 x 29 x 37 = 160 tiles in 4 parts of 40 (a full and a partial chunk each);
    // 1 x 29 x 37 = 80 tiles in 3 uneven parts (26, 27, 27). 5 threads: more threads than parts.
    for (index_t images : {2, 1})
    for (bool winograd : {false, true}) {
        CAPTURE(images);
        CAPTURE(winograd);
        const Tensor<float> x = random_tensor<float>(Shape{images, 29, 37, 64}, rng),
                            dy = random_tensor<float>(Shape{images, 29, 37, 64}, rng);
        auto run = [&](int threads) {
            Tensor<float> dw(Shape{3, 3, 64, 64}), db(Shape{64});
            const int saved = omp_get_max_threads();
            omp_set_num_threads(threads);
            if (winograd)
                kernels::conv2d_backward_weights_winograd(x.view(), dy.view(), dw.view(), db.view());
            else
                kernels::conv2d_backward_weights_direct(x.view(), dy.view(), dw.view(), db.view());
            omp_set_num_threads(saved);
            return dw;
        };
        const Tensor<float> one = run(1), two = run(2), three = run(3), five = run(5);
        for (index_t i = 0; i < one.size(); ++i) {
            REQUIRE(one[i] == two[i]);
            REQUIRE(one[i] == three[i]);
            REQUIRE(one[i] == five[i]);
        }
        // And it is the gradient: against the reference within the kernels' float error.
        Tensor<float> ref(Shape{3, 3, 64, 64}), db(Shape{64});
        kernels::conv2d_backward_weights_reference<float>(x.view(), dy.view(), ref.view(), db.view());
        CHECK(relative_max_error(one, ref) <= 5e-5);
    }
#endif
}

TEST_CASE("dispatch runs the selected kernel and records it") {
    KernelChoiceGuard guard;
    Rng rng(3);
    const Tensor<float> x = random_tensor<float>(Shape{1, 5, 5, 2}, rng), w = random_tensor<float>(Shape{3, 3, 2, 2}, rng);
    Tensor<float> y(Shape{1, 5, 5, 2});
    for (auto algo : {kernels::conv_algorithm::reference, kernels::conv_algorithm::im2col_gemm, kernels::conv_algorithm::direct}) {
        kernels::set_conv_algorithm(algo);
        kernels::conv2d_forward<float>(x.view(), w.view(), TensorView<const float>{}, y.view());
        CHECK(kernels::last_conv_algorithm() == algo);
    }
    // automatic: direct for float, im2col for double; direct refuses double rather than substitute.
    kernels::set_conv_algorithm(kernels::conv_algorithm::automatic);
    kernels::conv2d_forward<float>(x.view(), w.view(), TensorView<const float>{}, y.view());
    CHECK(kernels::last_conv_algorithm() == kernels::conv_algorithm::direct);
    const Tensor<double> xd(Shape{1, 5, 5, 2}, 1.0), wd(Shape{3, 3, 2, 2}, 1.0);
    Tensor<double> yd(Shape{1, 5, 5, 2});
    kernels::conv2d_forward<double>(xd.view(), wd.view(), TensorView<const double>{}, yd.view());
    CHECK(kernels::last_conv_algorithm() == kernels::conv_algorithm::im2col_gemm);
    kernels::set_conv_algorithm(kernels::conv_algorithm::direct);
    CHECK_THROWS_WITH_AS(kernels::conv2d_forward<double>(xd.view(), wd.view(), TensorView<const double>{}, yd.view()),
                         doctest::Contains("float only"), value_error);
}

TEST_CASE("instruction-set choice: names parse, unsupported ones are refused by name") {
    KernelChoiceGuard guard;
    CHECK(kernels::parse_simd_isa("avx2") == kernels::simd_isa::avx2);
    CHECK_THROWS_WITH_AS(kernels::parse_simd_isa("sse9"), doctest::Contains("sse9"), value_error);
    for (auto s : {kernels::simd_isa::avx2, kernels::simd_isa::avx512})
        if (!kernels::cpu_supports(s)) CHECK_THROWS_AS(kernels::set_simd_isa(s), value_error);
    CHECK(kernels::cpu_supports(kernels::simd_isa::scalar));
}
