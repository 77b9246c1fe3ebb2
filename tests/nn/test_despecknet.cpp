// The deSpeckNet model: whole-model gradient check in both combine modes, initialisation,
// receptive field, inference paths that must agree, tuning mode, errors.
#include <doctest/doctest.h>

#include <cmath>

#include "despeck/nn/despecknet.hpp"
#include "support/grad_check.hpp"

using namespace despeck;
using despeck::testing::compare_with_finite_differences;
using despeck::testing::GradCheckOptions;
using despeck::testing::random_tensor;
using despeck::testing::require_gradients_match;

namespace {

DeSpeckNetConfig small_config(CombineMode combine, int channels) {
    DeSpeckNetConfig c;
    c.depth = 4;
    c.filters = 5;
    c.channels = channels;
    c.combine = combine;
    return c;
}

}  // namespace

TEST_CASE("DeSpeckNet: whole-model gradients match finite differences in both combine modes") {
    for (auto combine : {CombineMode::additive_db, CombineMode::multiplicative_linear}) {
        for (double tv_weight : {0.0, 0.01}) {
            CAPTURE(to_string(combine));
            CAPTURE(tv_weight);
            const int C = combine == CombineMode::additive_db ? 2 : 1;
            DeSpeckNetConfig cfg = small_config(combine, C);
            cfg.tv_weight = tv_weight;
            cfg.tv_kind = ops::TvKind::quadratic;  // smooth: finite differences are exact enough
            DeSpeckNet<double> model(cfg, 42);
            Rng rng(5);
            const Shape s{2, 7, 5, C};
            Tensor<double> x = combine == CombineMode::additive_db ? random_tensor(s, rng, -15, -5) : random_tensor(s, rng, 0.05, 1.0);
            Tensor<double> ref = random_tensor(s, rng, -1, 1);
            Tensor<double> mask(Shape{2, 7, 5, 1});
            for (index_t i = 0; i < mask.size(); ++i) mask[i] = rng.uniform() < 0.25 ? 0.0 : 1.0;

            model.compute_gradients(x.view(), ref.view(), mask.view());
            auto& params = model.parameters();
            Tensor<double> analytic_all(Shape{params.total_size()});
            std::copy(params.grads().begin(), params.grads().end(), analytic_all.data());
            std::vector<TensorView<double>> values;
            std::vector<TensorView<const double>> analytic;
            for (std::size_t i = 0; i < params.count(); ++i) {
                values.push_back(params.value(i));
                analytic.push_back({analytic_all.data() + params.entry(i).offset, params.entry(i).shape});
            }
            GradCheckOptions opt;
            opt.max_elements_per_input = 6;  // every tensor of both branches, 6 elements each
            opt.rel_tol = 1e-5;
            auto report = compare_with_finite_differences(values, analytic, [&] {
                return static_cast<double>(model.compute_gradients(x.view(), ref.view(), mask.view()).total);
            }, opt);
            require_gradients_match(report, opt.seed);
            CHECK(report.compared >= static_cast<index_t>(2 * params.count()));  // every tensor, >= 2 elements each
        }
    }
}

TEST_CASE("DeSpeckNet: parameter names, shapes and glorot_normal initialisation") {
    DeSpeckNetConfig cfg;  // the full-size model: depth 17, 64 filters, 2 channels
    DeSpeckNet<float> model(cfg, 1);
    const auto& p = model.parameters();
    // Per branch: 17 convs (weight + bias) and 15 batch norms (weight + bias).
    CHECK(p.count() == 2 * (17 * 2 + 15 * 2));
    CHECK(model.buffers().count() == 2 * 15 * 2);
    CHECK(p.value("clean.conv0.weight").shape == Shape{3, 3, 2, 64});
    CHECK(p.value("noise.conv16.weight").shape == Shape{3, 3, 64, 2});
    CHECK(p.value("clean.bn15.weight").shape == Shape{64});
    CHECK_FALSE(p.contains("clean.bn16.weight"));
    CHECK_FALSE(p.contains("clean.bn0.weight"));
    const index_t first = 3 * 3 * 2 * 64 + 64, hidden = 3 * 3 * 64 * 64 + 64 + 2 * 64, last = 3 * 3 * 64 * 2 + 2;
    CHECK(p.total_size() == 2 * (first + 15 * hidden + last));  // 1,116,420 trainable values

    // glorot_normal: std = sqrt(2 / (fan_in + fan_out)) for the untruncated part; truncation at 2 sigma.
    const auto w = p.value("clean.conv5.weight");
    const double mean = w.flat().template cast<double>().mean();
    const double var = (w.flat().template cast<double>() - mean).square().mean();
    const double fan = 9.0 * 64;
    CHECK(std::abs(mean) < 0.002);
    CHECK(std::sqrt(var) == doctest::Approx(std::sqrt(2.0 / (2 * fan))).epsilon(0.03));
    CHECK(w.flat().abs().maxCoeff() <= 2.0 * std::sqrt(2.0 / (2 * fan)) / 0.87962566103423978 + 1e-6);
    CHECK(p.value("clean.conv5.bias").flat().abs().maxCoeff() == 0.0f);
    CHECK(p.value("clean.bn5.weight").flat().minCoeff() == 1.0f);
    CHECK(model.buffers().value("noise.bn3.running_var").flat().minCoeff() == 1.0f);
}

TEST_CASE("DeSpeckNet: the same seed gives the same weights, another seed others") {
    const auto cfg = small_config(CombineMode::additive_db, 2);
    DeSpeckNet<float> a(cfg, 9), b(cfg, 9), c(cfg, 10);
    CHECK(std::equal(a.parameters().values().begin(), a.parameters().values().end(), b.parameters().values().begin()));
    CHECK_FALSE(std::equal(a.parameters().values().begin(), a.parameters().values().end(), c.parameters().values().begin()));
}

TEST_CASE("DeSpeckNet: the receptive field is 2*depth+1 pixels wide") {
    auto cfg = small_config(CombineMode::additive_db, 1);  // depth 4: radius 4
    DeSpeckNet<double> model(cfg, 3);
    Rng rng(8);
    Tensor<double> x = random_tensor(Shape{1, 15, 15, 1}, rng);
    // Give the running statistics non-trivial values via one training-mode pass.
    model.compute_gradients(x.view(), x.view(), {});
    const Tensor<double> y0 = model.predict_clean(x.view());
    CHECK(cfg.receptive_radius() == 4);
    for (int d : {4, 5}) {
        Tensor<double> x1 = x;
        x1.at(0, 7, 7 + d, 0) += 1.0;  // d pixels right of the centre
        const Tensor<double> y1 = model.predict_clean(x1.view());
        const double change = std::abs(y1.at(0, 7, 7, 0) - y0.at(0, 7, 7, 0));
        if (d == 4)
            CHECK(change > 1e-12);
        else
            CHECK(change == 0.0);
    }
}

TEST_CASE("DeSpeckNet: tape-free inference equals the tape's forward pass in inference mode") {
    auto cfg = small_config(CombineMode::multiplicative_linear, 1);
    DeSpeckNet<double> model(cfg, 4);
    Rng rng(9);
    Tensor<double> x = random_tensor(Shape{2, 6, 9, 1}, rng, 0.1, 1.0);
    model.compute_gradients(x.view(), x.view(), {});  // running statistics from a batch
    Tape<double> tape;
    auto out = model.forward(tape, tape.constant_view(x.view()), ops::Mode::inference, false);
    const Tensor<double> clean = model.predict_clean(x.view()), noise = model.predict_noise(x.view());
    for (index_t i = 0; i < clean.size(); ++i) {
        CHECK(clean[i] == doctest::Approx(out.clean.value()[i]).epsilon(1e-12));
        CHECK(noise[i] == doctest::Approx(out.noise.value()[i]).epsilon(1e-12));
        CHECK(out.rebuilt.value()[i] == doctest::Approx(clean[i] * noise[i]).epsilon(1e-12));
    }
}

TEST_CASE("DeSpeckNet: tuning mode (no reference) trains on the reconstruction loss alone") {
    auto cfg = small_config(CombineMode::additive_db, 2);
    DeSpeckNet<double> model(cfg, 5);
    Rng rng(10);
    Tensor<double> x = random_tensor(Shape{2, 5, 5, 2}, rng, -12, -8);
    const Losses<double> l = model.compute_gradients(x.view(), {}, {});
    CHECK(l.clean == 0.0);
    CHECK(l.total == doctest::Approx(l.reconstruction * cfg.reconstruction_weight));
    // Both branches receive gradient through the rebuilt image.
    CHECK(model.parameters().grad("clean.conv0.weight").flat().abs().maxCoeff() > 0);
    CHECK(model.parameters().grad("noise.conv0.weight").flat().abs().maxCoeff() > 0);
}

TEST_CASE("DeSpeckNet: training reduces the loss; evaluation changes nothing") {
    auto cfg = small_config(CombineMode::additive_db, 2);
    DeSpeckNet<float> model(cfg, 6);
    Rng rng(11);
    Tensor<float> ref(Shape{4, 8, 8, 2}), x(ref.shape());
    for (index_t i = 0; i < ref.size(); ++i) {
        ref[i] = static_cast<float>(2 * std::sin(0.3 * double(i % 64)));
        x[i] = ref[i] + static_cast<float>(rng.normal());
    }
    Adam<float> adam;
    const auto before = model.parameters().values();
    std::vector<float> snapshot(before.begin(), before.end());
    const Losses<float> e0 = model.evaluate(x.view(), ref.view(), {});
    CHECK(std::equal(snapshot.begin(), snapshot.end(), model.parameters().values().begin()));
    const Losses<float> first = model.train_step(x.view(), ref.view(), {}, adam, 1e-3);
    Losses<float> last{};
    for (int i = 0; i < 40; ++i) last = model.train_step(x.view(), ref.view(), {}, adam, 1e-3);
    CHECK(std::isfinite(e0.total));
    CHECK(last.total < 0.5f * first.total);
    CHECK(adam.step_count() == 41);
}

TEST_CASE("DeSpeckNet: bad configurations and inputs are errors that name the value") {
    DeSpeckNetConfig cfg;
    cfg.depth = 1;
    CHECK_THROWS_AS(DeSpeckNet<float>{cfg}, value_error);
    cfg = {};
    cfg.kernel = 4;
    CHECK_THROWS_AS(DeSpeckNet<float>{cfg}, value_error);
    cfg = {};
    cfg.tv_weight = -1;
    CHECK_THROWS_AS(DeSpeckNet<float>{cfg}, value_error);
    DeSpeckNet<float> model(small_config(CombineMode::additive_db, 2));
    Tensor<float> one_channel(Shape{1, 4, 4, 1});
    CHECK_THROWS_WITH_AS(model.predict_clean(one_channel.view()), doctest::Contains("1 channels"), shape_error);
    Tensor<float> x(Shape{1, 4, 4, 2}, 1.0f);
    Tensor<float> good = x;
    x[3] = std::nanf("");
    Adam<float> adam;
    model.train_step(good.view(), good.view(), {}, adam, 1e-3);
    const std::vector<float> buffers(model.buffers().values().begin(), model.buffers().values().end());
    const std::vector<float> params(model.parameters().values().begin(), model.parameters().values().end());
    CHECK_THROWS_AS(model.train_step(x.view(), x.view(), {}, adam, 1e-3), value_error);
    // A failed step leaves the running statistics and the weights as they were.
    CHECK(std::equal(buffers.begin(), buffers.end(), model.buffers().values().begin()));
    CHECK(std::equal(params.begin(), params.end(), model.parameters().values().begin()));
    CHECK(adam.step_count() == 1);
    CHECK_THROWS_WITH_AS(model.predict_clean(x.view()), doctest::Contains("flat index 3"), value_error);
    // Training options may change; the architecture may not.
    DeSpeckNetConfig tuned = model.config();
    tuned.clean_weight = 0;
    tuned.tv_weight = 0.1;
    model.set_config(tuned);
    CHECK(model.config().tv_weight == 0.1);
    tuned.filters = 7;
    CHECK_THROWS_AS(model.set_config(tuned), value_error);
}
