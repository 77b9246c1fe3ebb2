// Adam against steps computed by hand, and the learning-rate schedule.
#include <doctest/doctest.h>

#include <cmath>

#include "despeck/optim/adam.hpp"
#include "despeck/optim/schedule.hpp"

using namespace despeck;

TEST_CASE("Adam: three steps match a hand computation, with bias correction per step") {
    ParameterStore<double> params;
    params.add("p", Shape{2});
    params.value(0)[0] = 1.0;
    params.value(0)[1] = -2.0;
    Adam<double> adam({0.9, 0.999, 1e-8});
    const double grads[3][2] = {{0.5, -1.0}, {0.1, 3.0}, {-0.4, 0.0}};
    double p[2] = {1.0, -2.0}, m[2] = {0, 0}, v[2] = {0, 0};
    const double lr = 0.01;
    for (int t = 1; t <= 3; ++t) {
        params.grad(0)[0] = grads[t - 1][0];
        params.grad(0)[1] = grads[t - 1][1];
        adam.step(params, lr);
        for (int i = 0; i < 2; ++i) {
            const double g = grads[t - 1][i];
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.999 * v[i] + 0.001 * g * g;
            const double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.999, t));
            p[i] -= lr * mhat / (std::sqrt(vhat) + 1e-8);
        }
        CHECK(params.value(0)[0] == doctest::Approx(p[0]).epsilon(1e-12));
        CHECK(params.value(0)[1] == doctest::Approx(p[1]).epsilon(1e-12));
    }
    CHECK(adam.step_count() == 3);
    // The first step moves each parameter by about lr, whatever the gradient's scale.
    ParameterStore<double> q;
    q.add("q", Shape{1});
    q.grad(0)[0] = 1e-3;
    Adam<double> fresh;
    fresh.step(q, 0.01);
    CHECK(q.value(0)[0] == doctest::Approx(-0.01).epsilon(1e-4));
}

TEST_CASE("Adam: invalid options and state are errors") {
    CHECK_THROWS_AS(Adam<float>({1.0, 0.999, 1e-8}), value_error);
    CHECK_THROWS_AS(Adam<float>({0.9, 0.999, 0.0}), value_error);
    ParameterStore<float> a, b;
    a.add("x", Shape{3});
    b.add("y", Shape{4});
    Adam<float> adam;
    adam.step(a, 1e-3);
    CHECK_THROWS_AS(adam.step(b, 1e-3), shape_error);
}

TEST_CASE("PiecewiseConstantSchedule: values between boundaries") {
    PiecewiseConstantSchedule s({30}, {1e-3, 1e-4});
    CHECK(s(0) == 1e-3);
    CHECK(s(29) == 1e-3);
    CHECK(s(30) == 1e-4);
    CHECK(s(1000) == 1e-4);
    auto tf = PiecewiseConstantSchedule::tf_despecknet();
    CHECK(tf(30) == 1e-3);
    CHECK(tf(31) == 1e-4);
    CHECK(tf(61) == 5e-5);
    CHECK_THROWS_AS(PiecewiseConstantSchedule({10, 5}, {1, 2, 3}), value_error);
    CHECK_THROWS_AS(PiecewiseConstantSchedule({10}, {1}), value_error);
    CHECK_THROWS_AS(PiecewiseConstantSchedule({}, {-1.0}), value_error);
}

TEST_CASE("ParameterStore: one contiguous buffer, views at their offsets") {
    ParameterStore<float> s;
    s.add("a", Shape{2, 3}, 1.0f);
    s.add("b", Shape{4}, 2.0f);
    CHECK(s.total_size() == 10);
    CHECK(s.entry(1).offset == 6);
    CHECK(s.value("b").data == s.values().data() + 6);
    CHECK(s.grad("b").data == s.grads().data() + 6);
    CHECK(s.values()[7] == 2.0f);
    CHECK_THROWS_AS(s.add("a", Shape{1}), value_error);
    CHECK_THROWS_AS(s.value("zzz"), value_error);
}
