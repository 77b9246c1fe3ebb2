// Tests of despeck/autodiff/tape.hpp: topological reverse loop, accumulation at fan-out,
// parameters that persist, fresh activation gradients each step.
#include <doctest/doctest.h>

#include "despeck/autodiff/tape.hpp"
#include "despeck/ops/elementwise.hpp"
#include "despeck/ops/mse.hpp"

using namespace despeck;

TEST_CASE("Tape: gradients accumulate where a value feeds several consumers") {
    // y = a*a + a  ->  dy/da = 2a + 1, with a feeding three uses.
    Tape<double> tape;
    Tensor<double> a_value(Shape{3}, {1.0, -2.0, 0.5});
    Var<double> a = tape.variable(a_value);
    Var<double> y = ops::add(ops::multiply(a, a), a);
    Tensor<double> seed(Shape{3}, 1.0);
    tape.backward(y, seed.view());
    CHECK(tape.grad(a)[0] == doctest::Approx(3.0));
    CHECK(tape.grad(a)[1] == doctest::Approx(-3.0));
    CHECK(tape.grad(a)[2] == doctest::Approx(2.0));
}

TEST_CASE("Tape: parameter gradients land in the borrowed buffer and add to what is there") {
    Tensor<double> p(Shape{2}, {3.0, 4.0}), g(Shape{2}, {10.0, 20.0});
    Tape<double> tape;
    Var<double> v = tape.parameter(p.view(), g.view());
    Var<double> y = ops::scale(v, 2.0);
    Tensor<double> seed(Shape{2}, 1.0);
    tape.backward(y, seed.view());
    CHECK(g[0] == doctest::Approx(12.0));
    CHECK(g[1] == doctest::Approx(22.0));
}

TEST_CASE("Tape: activation gradients are fresh on every backward pass") {
    Tape<double> tape;
    Var<double> a = tape.variable(Tensor<double>(Shape{1}, {2.0}));
    Var<double> y = ops::scale(a, 3.0);
    Tensor<double> seed(Shape{1}, 1.0);
    tape.backward(y, seed.view());
    tape.backward(y, seed.view());
    CHECK(tape.grad(a)[0] == doctest::Approx(3.0));  // not 6: no stale gradient survives
}

TEST_CASE("Tape: misuse is an error, not a crash") {
    Tape<double> tape, other;
    Var<double> c = tape.constant(Tensor<double>(Shape{2}, 1.0));
    Var<double> v = tape.variable(Tensor<double>(Shape{2}, 1.0));
    Var<double> w = other.variable(Tensor<double>(Shape{2}, 1.0));
    CHECK_THROWS_AS(tape.backward(ops::scale(c, 2.0)), error);      // root needs no gradient
    CHECK_THROWS_AS(tape.backward(v), shape_error);                  // not a scalar
    CHECK_THROWS_AS(ops::add(v, w), error);                          // different tapes
    CHECK_THROWS_AS(tape.grad(c), error);                            // constants have no gradient
    CHECK_THROWS_AS(tape.grad(v), error);                            // read before backward
    tape.clear();
    CHECK(tape.size() == 0);
    CHECK_THROWS_AS(tape.value(v), error);                           // cleared
    tape.constant(Tensor<double>(Shape{2}, 5.0));
    tape.constant(Tensor<double>(Shape{2}, 6.0));
    CHECK_THROWS_AS(tape.value(v), error);  // a Var from before clear() never reads a new node
}

TEST_CASE("Tape: constants get no backward function recorded") {
    Tape<double> tape;
    Var<double> a = tape.constant(Tensor<double>(Shape{1, 1, 1, 1}, 1.0));
    Var<double> b = tape.constant(Tensor<double>(Shape{1, 1, 1, 1}, 3.0));
    Var<double> l = ops::mse(a, b);
    CHECK_FALSE(l.requires_grad());
    CHECK(l.value()[0] == doctest::Approx(4.0));
}

TEST_CASE("Tape: intermediate gradients are freed after use unless asked to keep them") {
    // y = 3 * (2 * a): the intermediate (2 * a) has gradient 3, freed once its backward ran.
    Tensor<double> seed(Shape{2}, 1.0);
    {
        Tape<double> tape;
        Var<double> a = tape.variable(Tensor<double>(Shape{2}, 1.0));
        Var<double> mid = ops::scale(a, 2.0);
        Var<double> y = ops::scale(mid, 3.0);
        Var<double> unused = tape.variable(Tensor<double>(Shape{2}, 1.0));
        tape.backward(y, seed.view());
        CHECK(tape.grad(a)[0] == doctest::Approx(6.0));
        CHECK_THROWS_WITH_AS(tape.grad(mid), doctest::Contains("keep_intermediate_gradients"), error);
        CHECK(tape.grad(unused)[1] == 0.0);  // a leaf off the path: zero, not an error
    }
    {
        Tape<double> tape;
        tape.keep_intermediate_gradients(true);
        Var<double> a = tape.variable(Tensor<double>(Shape{2}, 1.0));
        Var<double> mid = ops::scale(a, 2.0);
        Var<double> y = ops::scale(mid, 3.0);
        tape.backward(y, seed.view());
        CHECK(tape.grad(mid)[0] == doctest::Approx(3.0));
        CHECK(tape.grad(y)[1] == doctest::Approx(1.0));
    }
}
