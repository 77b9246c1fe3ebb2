// despeck/ops/elementwise.hpp — add, subtract, multiply (same shapes) and scale by a constant.
//   add:      y = a + b     da += dy         db += dy
//   subtract: y = a - b     da += dy         db -= dy
//   multiply: y = a * b     da += dy * b     db += dy * a
//   scale:    y = s * a     da += s * dy
// deSpeckNet rebuilds the noisy image as clean + noise (dB) or clean * noise (linear intensity).
#pragma once

#include "despeck/autodiff/tape.hpp"

namespace despeck::ops {

template <class T>
Var<T> add(Var<T> a, Var<T> b) {
    Tape<T>& tape = same_tape("add", a, b);
    require_same_shape("add", "a", a.value(), "b", b.value());
    Tensor<T> y = Tensor<T>::uninitialized(a.shape());
    y.flat() = a.value().flat() + b.value().flat();
    return tape.record("add", std::move(y), any_requires_grad(a, b), [a, b](Tape<T>& t, Var<T> out) {
        if (a.requires_grad()) t.grad(a).flat() += t.grad(out).flat();
        if (b.requires_grad()) t.grad(b).flat() += t.grad(out).flat();
    });
}

template <class T>
Var<T> subtract(Var<T> a, Var<T> b) {
    Tape<T>& tape = same_tape("subtract", a, b);
    require_same_shape("subtract", "a", a.value(), "b", b.value());
    Tensor<T> y = Tensor<T>::uninitialized(a.shape());
    y.flat() = a.value().flat() - b.value().flat();
    return tape.record("subtract", std::move(y), any_requires_grad(a, b), [a, b](Tape<T>& t, Var<T> out) {
        if (a.requires_grad()) t.grad(a).flat() += t.grad(out).flat();
        if (b.requires_grad()) t.grad(b).flat() -= t.grad(out).flat();
    });
}

template <class T>
Var<T> multiply(Var<T> a, Var<T> b) {
    Tape<T>& tape = same_tape("multiply", a, b);
    require_same_shape("multiply", "a", a.value(), "b", b.value());
    Tensor<T> y = Tensor<T>::uninitialized(a.shape());
    y.flat() = a.value().flat() * b.value().flat();
    return tape.record("multiply", std::move(y), any_requires_grad(a, b), [a, b](Tape<T>& t, Var<T> out) {
        if (a.requires_grad()) t.grad(a).flat() += t.grad(out).flat() * b.value().flat();
        if (b.requires_grad()) t.grad(b).flat() += t.grad(out).flat() * a.value().flat();
    });
}

template <class T>
Var<T> scale(Var<T> a, T s) {
    Tape<T>& tape = same_tape("scale", a);
    Tensor<T> y = Tensor<T>::uninitialized(a.shape());
    y.flat() = a.value().flat() * s;
    return tape.record("scale", std::move(y), a.requires_grad(), [a, s](Tape<T>& t, Var<T> out) {
        t.grad(a).flat() += t.grad(out).flat() * s;
    });
}

}  // namespace despeck::ops
