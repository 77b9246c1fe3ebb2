// despeck/ops/conv2d.hpp — 2-D convolution: stride 1, "same" zero padding, odd square kernel, bias.
//
//   x [N, H, W, Ci] (NHWC)   w [K, K, Ci, Co] (HWIO)   b [Co] or none   ->   y [N, H, W, Co]
//   y[n,h,v,o] = b[o] + sum_{i,j,c} w[i,j,c,o] * x[n, h+i-K/2, v+j-K/2, c]   (cross-correlation)
//   dx = "same" conv of dy with w rotated 180 degrees (in/out swapped); dw = sum over pixels of
//   x-patch (outer) dy; db = sum over pixels of dy.
// The loops themselves are in kernels/ (reference and optimised variants, one dispatch point).
#pragma once

#include "despeck/autodiff/tape.hpp"
#include "despeck/kernels/conv2d.hpp"

namespace despeck::ops {

// Throws unless x, w, b form a valid convolution; returns the output shape.
template <class T>
Shape conv2d_output_shape(TensorView<const T> x, TensorView<const T> w, TensorView<const T> b) {
    require_nhwc("conv2d", "input x", x);
    if (w.shape.rank() != 4) detail::fail<shape_error>("conv2d: weight must be HWIO (rank 4), got ", w.shape);
    if (w.shape[0] != w.shape[1] || w.shape[0] % 2 == 0)
        detail::fail<shape_error>("conv2d: kernel must be odd and square, weight is ", w.shape);
    if (w.shape[2] != x.shape[3])
        detail::fail<shape_error>("conv2d: input x ", x.shape, " has ", x.shape[3], " channels, weight ", w.shape,
                                  " expects ", w.shape[2]);
    if (!b.empty() && (b.shape.rank() != 1 || b.shape[0] != w.shape[3]))
        detail::fail<shape_error>("conv2d: bias ", b.shape, " does not match ", w.shape[3], " output channels");
    return Shape{x.shape[0], x.shape[1], x.shape[2], w.shape[3]};
}

template <class T>
Tensor<T> conv2d_forward(TensorView<const T> x, TensorView<const T> w, TensorView<const T> b) {
    Tensor<T> y = Tensor<T>::uninitialized(conv2d_output_shape(x, w, b));
    kernels::conv2d_forward<T>(x, w, b, y.view());
    return y;
}

// Adds the gradients into dx, dw, db; any of them may be empty (not wanted).
template <class T>
void conv2d_backward(TensorView<const T> x, TensorView<const T> w, TensorView<const T> dy, TensorView<T> dx,
                     TensorView<T> dw, TensorView<T> db) {
    if (!dx.empty()) kernels::conv2d_backward_data<T>(dy, w, dx);
    if (!dw.empty() || !db.empty()) {
        if (dw.empty()) {  // bias only: a column sum
            db.flat().matrix() += dy.matrix(dy.size() / db.size(), db.size()).colwise().sum().transpose();
        } else {
            kernels::conv2d_backward_weights<T>(x, dy, dw, db);
        }
    }
}

// Records y = conv2d(x, w, b) on the tape; pass an invalid Var (default) for no bias.
template <class T>
Var<T> conv2d(Var<T> x, Var<T> w, Var<T> b = {}) {
    Tape<T>& tape = same_tape("conv2d", x, w);
    const bool has_bias = b.valid();
    if (has_bias) same_tape("conv2d", x, b);
    Tensor<T> y = conv2d_forward<T>(x.value(), w.value(), has_bias ? b.value() : TensorView<T>{});
    const bool needs = any_requires_grad(x, w) || (has_bias && b.requires_grad());
    return tape.record("conv2d", std::move(y), needs, [x, w, b, has_bias](Tape<T>& t, Var<T> out) {
        conv2d_backward<T>(x.value(), w.value(), t.grad(out), grad_if_needed(t, x), grad_if_needed(t, w),
                           has_bias ? grad_if_needed(t, b) : TensorView<T>{});
    });
}

}  // namespace despeck::ops
