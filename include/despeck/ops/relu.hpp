// despeck/ops/relu.hpp — rectified linear unit, any shape.
//   y = max(x, 0);  dx += dy * [y > 0]   (the gradient at exactly 0 is taken as 0)
#pragma once

#include "despeck/autodiff/tape.hpp"

namespace despeck::ops {

template <class T>
Tensor<T> relu_forward(TensorView<const T> x) {
    Tensor<T> y = Tensor<T>::uninitialized(x.shape);
    y.flat() = x.flat().max(T(0));
    return y;
}

template <class T>
void relu_backward(TensorView<const T> y, TensorView<const T> dy, TensorView<T> dx) {
    dx.flat() += (y.flat() > T(0)).select(dy.flat(), T(0));
}

template <class T>
Var<T> relu(Var<T> x) {
    Tape<T>& tape = same_tape("relu", x);
    return tape.record("relu", relu_forward<T>(x.value()), x.requires_grad(), [x](Tape<T>& t, Var<T> out) {
        relu_backward<T>(out.value(), t.grad(out), t.grad(x));
    });
}

}  // namespace despeck::ops
