// Batch normalisation beyond gradients: statistics, running averages, modes that must agree.
#include <doctest/doctest.h>

#include "despeck/ops/batch_norm.hpp"
#include "support/grad_check.hpp"

using namespace despeck;
using despeck::testing::random_tensor;

TEST_CASE("batch_norm: training and inference agree when the running statistics are the batch's") {
    Rng rng(21);
    const Shape s{3, 5, 7, 4};
    Tensor<double> x = random_tensor(s, rng, -3, 5), gamma = random_tensor(Shape{4}, rng, 0.5, 2), beta = random_tensor(Shape{4}, rng);
    Tensor<double> rm(Shape{4}, 123.0), rv(Shape{4}, 456.0);
    ops::BatchNormOptions opt;
    opt.momentum = 0.0;  // running statistics become the last batch's, as in the original code
    Tensor<double> xhat, inv_std;
    Tensor<double> y_train = ops::batch_norm_forward_training<double>(x.view(), gamma.view(), beta.view(), rm.view(), rv.view(),
                                                                      opt, xhat, inv_std);
    Tensor<double> y_infer = ops::batch_norm_forward_inference<double>(x.view(), gamma.view(), beta.view(), rm.view(), rv.view(), opt);
    for (index_t i = 0; i < x.size(); ++i) CHECK(y_infer[i] == doctest::Approx(y_train[i]).epsilon(1e-12));
    // The output of training mode has zero mean and (gamma^2 * var/(var+eps)) variance per channel.
    auto ym = y_train.matrix(s.size() / 4, 4);
    for (int c = 0; c < 4; ++c) CHECK(ym.col(c).mean() == doctest::Approx(beta[c]).epsilon(1e-10));
}

TEST_CASE("batch_norm: running statistics follow the momentum, biased or unbiased variance") {
    Tensor<float> x(Shape{1, 1, 4, 1}, {1.0f, 2.0f, 3.0f, 6.0f});  // mean 3, biased var 3.5, unbiased 14/3
    Tensor<float> gamma(Shape{1}, {1.0f}), beta(Shape{1}, {0.0f}), xhat, inv_std;
    Tensor<float> rm(Shape{1}, {1.0f}), rv(Shape{1}, {2.0f});
    ops::BatchNormOptions opt;
    opt.momentum = 0.75;
    ops::batch_norm_forward_training<float>(x.view(), gamma.view(), beta.view(), rm.view(), rv.view(), opt, xhat, inv_std);
    CHECK(rm[0] == doctest::Approx(0.75 * 1 + 0.25 * 3));
    CHECK(rv[0] == doctest::Approx(0.75 * 2 + 0.25 * 3.5));
    CHECK(inv_std[0] == doctest::Approx(1 / std::sqrt(3.5 + 1e-4)));
    opt.unbiased_running_var = true;
    opt.momentum = 0.0;
    ops::batch_norm_forward_training<float>(x.view(), gamma.view(), beta.view(), rm.view(), rv.view(), opt, xhat, inv_std);
    CHECK(rm[0] == doctest::Approx(3.0));
    CHECK(rv[0] == doctest::Approx(14.0 / 3.0));
}

TEST_CASE("batch_norm: float statistics of large-offset data stay accurate") {
    // dB-like activations: a large common offset must not destroy the variance (two-pass sums).
    Rng rng(22);
    Tensor<float> x(Shape{16, 40, 40, 2});
    for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(1000.0 + rng.normal());
    Tensor<float> gamma(Shape{2}, 1.0f), beta(Shape{2}, 0.0f), rm(Shape{2}), rv(Shape{2}), xhat, inv_std;
    ops::batch_norm_forward_training<float>(x.view(), gamma.view(), beta.view(), rm.view(), rv.view(), {}, xhat, inv_std);
    CHECK(rv[0] == doctest::Approx(1.0).epsilon(0.05));
    CHECK(rm[1] == doctest::Approx(1000.0).epsilon(1e-4));
}

TEST_CASE("batch_norm: bad shapes and running statistics are errors") {
    Tensor<double> x(Shape{1, 2, 2, 3}), g(Shape{2}), b(Shape{3}), rm(Shape{3}), rv(Shape{3}, -1.0);
    Tensor<double> xhat, inv_std;
    CHECK_THROWS_AS(ops::batch_norm_forward_training<double>(x.view(), g.view(), b.view(), rm.view(), rv.view(), {}, xhat, inv_std),
                    shape_error);
    Tensor<double> g3(Shape{3}, 1.0);
    CHECK_THROWS_AS(ops::batch_norm_forward_inference<double>(x.view(), g3.view(), b.view(), rm.view(), rv.view(), {}),
                    value_error);
}
