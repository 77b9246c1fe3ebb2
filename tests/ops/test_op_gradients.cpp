// Finite-difference gradient checks of every op (tests/support/grad_check.hpp), on odd sizes.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "despeck/ops/batch_norm.hpp"
#include "despeck/ops/batch_norm_relu.hpp"
#include "despeck/ops/conv2d.hpp"
#include "despeck/ops/elementwise.hpp"
#include "despeck/ops/mse.hpp"
#include "despeck/ops/relu.hpp"
#include "despeck/ops/total_variation.hpp"
#include "despeck/runtime.hpp"
#include "support/grad_check.hpp"

using namespace despeck;
using despeck::testing::check_gradients;
using despeck::testing::GradCheckOptions;
using despeck::testing::random_tensor;
using despeck::testing::require_gradients_match;
using V = Var<double>;
using Inputs = std::vector<V>;

TEST_CASE("conv2d: gradients of x, w and b, for kernels 1, 3 and 5 on odd sizes") {
    for (auto [K, N, H, W, Ci, Co] : {std::array<index_t, 6>{3, 2, 5, 3, 3, 4}, std::array<index_t, 6>{1, 1, 3, 4, 2, 3},
                                      std::array<index_t, 6>{5, 1, 4, 3, 2, 2}, std::array<index_t, 6>{3, 1, 1, 1, 1, 1}}) {
        CAPTURE(K);
        CAPTURE(H);
        CAPTURE(W);
        for (auto algo : {kernels::conv_algorithm::reference, kernels::conv_algorithm::im2col_gemm}) {
            CAPTURE(kernels::to_string(algo));
            kernels::set_conv_algorithm(algo);
            Rng rng(K * 100 + H);
            auto report = check_gradients(
                {random_tensor(Shape{N, H, W, Ci}, rng), random_tensor(Shape{K, K, Ci, Co}, rng),
                 random_tensor(Shape{Co}, rng)},
                [](Tape<double>&, const Inputs& in) { return ops::conv2d(in[0], in[1], in[2]); });
            require_gradients_match(report);
            CHECK(kernels::last_conv_algorithm() == algo);
        }
    }
    kernels::set_conv_algorithm(kernels::conv_algorithm::automatic);
}

TEST_CASE("conv2d: without bias, and with a constant input (weights only)") {
    Rng rng(7);
    GradCheckOptions opt;
    opt.constant_inputs = {0};
    auto report = check_gradients({random_tensor(Shape{1, 4, 5, 2}, rng), random_tensor(Shape{3, 3, 2, 3}, rng)},
                                  [](Tape<double>&, const Inputs& in) { return ops::conv2d(in[0], in[1]); }, opt);
    require_gradients_match(report);
}

TEST_CASE("conv2d: shape errors name the shapes") {
    Tape<double> tape;
    V x = tape.constant(Tensor<double>(Shape{1, 4, 4, 2}));
    CHECK_THROWS_WITH_AS(ops::conv2d(x, tape.constant(Tensor<double>(Shape{3, 3, 3, 4}))),
                         doctest::Contains("[1,4,4,2]"), shape_error);
    CHECK_THROWS_AS(ops::conv2d(x, tape.constant(Tensor<double>(Shape{2, 2, 2, 4}))), shape_error);
    CHECK_THROWS_AS(ops::conv2d(x, tape.constant(Tensor<double>(Shape{3, 3, 2, 4})), tape.constant(Tensor<double>(Shape{3}))),
                    shape_error);
}

TEST_CASE("batch_norm: gradients in training mode (batch statistics)") {
    Rng rng(11);
    for (auto shape : {Shape{2, 3, 5, 4}, Shape{1, 1, 3, 1}, Shape{3, 2, 1, 3}}) {
        CAPTURE(shape);
        Tensor<double> rm(Shape{shape[3]}), rv(Shape{shape[3]}, 1.0);
        auto report = check_gradients(
            {random_tensor(shape, rng, -2, 3), random_tensor(Shape{shape[3]}, rng, 0.5, 1.5),
             random_tensor(Shape{shape[3]}, rng)},
            [&](Tape<double>&, const Inputs& in) {
                return ops::batch_norm(in[0], in[1], in[2], rm.view(), rv.view(), ops::Mode::training);
            });
        require_gradients_match(report);
    }
}

TEST_CASE("batch_norm_relu: gradients of the fused training op") {
    Rng rng(17);
    for (auto shape : {Shape{2, 3, 5, 4}, Shape{1, 2, 3, 2}, Shape{3, 2, 1, 3}}) {
        CAPTURE(shape);
        Tensor<double> rm(Shape{shape[3]}), rv(Shape{shape[3]}, 1.0);
        // beta around +-0.8: most outputs sit away from the ReLU kink, some channels mostly below it.
        Tensor<double> beta = random_tensor(Shape{shape[3]}, rng, 0.6, 1.0);
        beta[0] = -0.8;
        auto report = check_gradients(
            {random_tensor(shape, rng, -2, 3), random_tensor(Shape{shape[3]}, rng, 0.5, 1.5), beta},
            [&](Tape<double>&, const Inputs& in) {
                return ops::batch_norm_relu(in[0], in[1], in[2], rm.view(), rv.view(), ops::Mode::training);
            });
        require_gradients_match(report);
    }
}

TEST_CASE("batch_norm_relu equals batch_norm then relu: values, gradients and running statistics") {
    // 3 x 17 x 19 pixels: several 256-pixel blocks and a partial one; 5 channels.
    Rng rng(19);
    const Shape shape{3, 17, 19, 5};
    const Tensor<double> x0 = random_tensor(shape, rng, -2, 3), g0 = random_tensor(Shape{5}, rng, 0.5, 1.5),
                         b0 = random_tensor(Shape{5}, rng, -0.5, 0.5), seed = random_tensor(shape, rng);
    ops::BatchNormOptions opt;
    opt.momentum = 0.3;
    auto run = [&](bool fused, Tensor<double>& rm, Tensor<double>& rv) {
        Tape<double> tape;
        Var<double> x = tape.variable(x0), g = tape.variable(g0), b = tape.variable(b0);
        Var<double> y = fused ? ops::batch_norm_relu(x, g, b, rm.view(), rv.view(), ops::Mode::training, opt)
                              : ops::relu(ops::batch_norm(x, g, b, rm.view(), rv.view(), ops::Mode::training, opt));
        tape.backward(y, seed.view());
        return std::array<Tensor<double>, 4>{Tensor<double>::from_view(y.value()), Tensor<double>::from_view(x.grad()),
                                             Tensor<double>::from_view(g.grad()), Tensor<double>::from_view(b.grad())};
    };
    Tensor<double> rm1(Shape{5}, 0.5), rv1(Shape{5}, 2.0), rm2 = rm1, rv2 = rv1;
    const auto fused = run(true, rm1, rv1), plain = run(false, rm2, rv2);
    for (int k = 0; k < 4; ++k)
        for (index_t i = 0; i < fused[k].size(); ++i) REQUIRE(fused[k][i] == doctest::Approx(plain[k][i]).epsilon(1e-12));
    for (index_t c = 0; c < 5; ++c) {
        CHECK(rm1[c] == doctest::Approx(rm2[c]).epsilon(1e-14));
        CHECK(rv1[c] == doctest::Approx(rv2[c]).epsilon(1e-14));
    }
}

TEST_CASE("batch_norm: gradients in inference mode (running statistics)") {
    Rng rng(12);
    Tensor<double> rm = random_tensor(Shape{3}, rng), rv = random_tensor(Shape{3}, rng, 0.2, 2.0);
    auto report = check_gradients(
        {random_tensor(Shape{2, 3, 3, 3}, rng), random_tensor(Shape{3}, rng, 0.5, 1.5), random_tensor(Shape{3}, rng)},
        [&](Tape<double>&, const Inputs& in) {
            return ops::batch_norm(in[0], in[1], in[2], rm.view(), rv.view(), ops::Mode::inference);
        });
    require_gradients_match(report);
}

TEST_CASE("relu: gradient away from the kink, and zero gradient below it") {
    Rng rng(13);
    Tensor<double> x = random_tensor(Shape{2, 3, 5, 3}, rng);
    for (index_t i = 0; i < x.size(); ++i)
        if (std::abs(x[i]) < 0.05) x[i] = 0.3;  // finite differences need distance from 0
    auto report = check_gradients({x}, [](Tape<double>&, const Inputs& in) { return ops::relu(in[0]); });
    require_gradients_match(report);
}

// Beyond 8 chunks of 16384 values the passes run split between threads (parallel_chunks): the
// same floats as the element-wise definition for every thread count, a partial last chunk, NaN
// passed on, -0 and 0 giving no gradient, and the backward adding into what dx held.
TEST_CASE("relu: a buffer split between threads gives the element-wise definition's floats") {
    const index_t n = 9 * 16384 + 77;
    Rng rng(29);
    Tensor<float> x(Shape{n}), dy(Shape{n}), dx0(Shape{n});
    for (index_t i = 0; i < n; ++i) {
        x[i] = static_cast<float>(rng.normal());
        dy[i] = static_cast<float>(rng.normal());
        dx0[i] = static_cast<float>(rng.normal());
    }
    x[5] = std::numeric_limits<float>::quiet_NaN();
    x[6] = -0.0f;
    x[n - 1] = 0.0f;
    struct RestoreThreads {  // also when a check throws
        int threads = get_runtime_info().max_threads;
        ~RestoreThreads() { set_num_threads(threads); }
    } restore;
    for (int threads : {1, 2, 3}) {
        CAPTURE(threads);
        if (!set_num_threads(threads)) continue;  // a build without OpenMP runs the 1-thread case
        const Tensor<float> y = ops::relu_forward<float>(x.view());
        Tensor<float> dx = dx0;
        ops::relu_backward<float>(y.view(), dy.view(), dx.view());
        index_t wrong_y = 0, wrong_dx = 0;
        for (index_t i = 0; i < n; ++i) {
            if (std::isnan(x[i]))
                wrong_y += !std::isnan(y[i]);
            else
                wrong_y += y[i] != (x[i] > 0.0f ? x[i] : 0.0f);
            wrong_dx += dx[i] != dx0[i] + (y[i] > 0.0f ? dy[i] : 0.0f);
        }
        CHECK(wrong_y == 0);
        CHECK(wrong_dx == 0);
        CHECK(std::isnan(y[5]));
        CHECK(dx[5] == dx0[5]);
        CHECK(dx[6] == dx0[6]);
        CHECK(dx[n - 1] == dx0[n - 1]);
    }
}

TEST_CASE("add, subtract, multiply, scale") {
    Rng rng(14);
    const Shape s{1, 3, 5, 2};
    require_gradients_match(check_gradients({random_tensor(s, rng), random_tensor(s, rng)},
                                            [](Tape<double>&, const Inputs& in) { return ops::add(in[0], in[1]); }));
    require_gradients_match(check_gradients({random_tensor(s, rng), random_tensor(s, rng)},
                                            [](Tape<double>&, const Inputs& in) { return ops::subtract(in[0], in[1]); }));
    require_gradients_match(check_gradients({random_tensor(s, rng), random_tensor(s, rng)},
                                            [](Tape<double>&, const Inputs& in) { return ops::multiply(in[0], in[1]); }));
    require_gradients_match(check_gradients({random_tensor(s, rng)},
                                            [](Tape<double>&, const Inputs& in) { return ops::scale(in[0], -2.5); }));
    // The same input on both sides: fan-out inside one op.
    require_gradients_match(check_gradients({random_tensor(s, rng)},
                                            [](Tape<double>&, const Inputs& in) { return ops::multiply(in[0], in[0]); }));
    Tape<double> tape;
    CHECK_THROWS_AS(ops::add(tape.constant(Tensor<double>(Shape{2})), tape.constant(Tensor<double>(Shape{3}))), shape_error);
}

TEST_CASE("mse: plain, per-pixel mask and per-element mask, both normalisations") {
    Rng rng(15);
    const Shape s{2, 3, 5, 2};
    Tensor<double> pixel_mask(Shape{2, 3, 5, 1}), element_mask(s);
    for (index_t i = 0; i < pixel_mask.size(); ++i) pixel_mask[i] = rng.uniform() < 0.3 ? 0.0 : 1.0;
    for (index_t i = 0; i < element_mask.size(); ++i) element_mask[i] = rng.uniform(0.0, 2.0);
    for (auto norm : {ops::MaskNormalization::element_count, ops::MaskNormalization::weight_sum}) {
        for (const Tensor<double>* mask : std::vector<const Tensor<double>*>{nullptr, &pixel_mask, &element_mask}) {
            auto report = check_gradients({random_tensor(s, rng), random_tensor(s, rng)}, [&](Tape<double>&, const Inputs& in) {
                return ops::mse(in[0], in[1], mask ? mask->view() : TensorView<const double>{}, norm);
            });
            require_gradients_match(report);
        }
    }
}

TEST_CASE("mse: values by hand, and masked pixels drop out") {
    Tape<double> tape;
    Tensor<double> a(Shape{1, 1, 2, 1}, {1.0, 3.0}), b(Shape{1, 1, 2, 1}, {0.0, 0.0}), m(Shape{1, 1, 2, 1}, {1.0, 0.0});
    V va = tape.constant(a), vb = tape.constant(b);
    CHECK(ops::mse(va, vb).value()[0] == doctest::Approx(5.0));
    CHECK(ops::mse(va, vb, m.view(), ops::MaskNormalization::element_count).value()[0] == doctest::Approx(0.5));
    CHECK(ops::mse(va, vb, m.view(), ops::MaskNormalization::weight_sum).value()[0] == doctest::Approx(1.0));
    Tensor<double> zero(Shape{1, 1, 2, 1}, 0.0);
    CHECK(ops::mse(va, vb, zero.view(), ops::MaskNormalization::weight_sum).value()[0] == 0.0);  // not NaN
    Tensor<double> bad(Shape{1, 1, 2, 2});
    CHECK_THROWS_AS(ops::mse(va, vb, bad.view()), shape_error);
    Tensor<double> negative(Shape{1, 1, 2, 1}, {-1.0, 1.0});
    CHECK_THROWS_AS(ops::mse(va, vb, negative.view()), value_error);
    Tensor<double> nan_mask(Shape{1, 1, 2, 1}, {std::nan(""), 1.0});
    CHECK_THROWS_AS(ops::mse(va, vb, nan_mask.view()), value_error);
    Tensor<double> no_channels(Shape{1, 1, 2, 0});
    CHECK_THROWS_WITH_AS(ops::mse(tape.constant(no_channels), tape.constant(no_channels)), doctest::Contains("no channels"),
                         shape_error);
}

TEST_CASE("total_variation: gradients (both kinds) and values by hand") {
    Rng rng(16);
    for (auto kind : {ops::TvKind::anisotropic_l1, ops::TvKind::quadratic}) {
        auto report = check_gradients({random_tensor(Shape{2, 4, 5, 2}, rng)},
                                      [kind](Tape<double>&, const Inputs& in) { return ops::total_variation(in[0], kind); });
        require_gradients_match(report);
    }
    // [[1, 2], [4, 8]]: |2-1| + |8-4| + |4-1| + |8-2| = 14; squares: 1 + 16 + 9 + 36 = 62.
    Tensor<double> x(Shape{1, 2, 2, 1}, {1.0, 2.0, 4.0, 8.0});
    CHECK(ops::total_variation_forward<double>(x.view(), ops::TvKind::anisotropic_l1) == doctest::Approx(14.0));
    CHECK(ops::total_variation_forward<double>(x.view(), ops::TvKind::quadratic) == doctest::Approx(62.0));
}
