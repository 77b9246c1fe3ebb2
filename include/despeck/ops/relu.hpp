// despeck/ops/relu.hpp — rectified linear unit, any shape.
//   y = max(x, 0);  dx += dy * [y > 0]   (the gradient at exactly 0 is taken as 0)
#pragma once

#include <algorithm>

#include "despeck/autodiff/tape.hpp"
#include "despeck/parallel.hpp"

namespace despeck::ops {

// Both passes split the buffer between threads (parallel_chunks): after deSpeckNet's first
// convolution they touch 16x40x40x64 floats per branch, and on one thread they were 3% of a
// 2-thread training step.
template <class T>
Tensor<T> relu_forward(TensorView<const T> x) {
    Tensor<T> y = Tensor<T>::uninitialized(x.shape);
    const T* in = x.data;
    T* out = y.data();
    detail::parallel_chunks(x.size(), [in, out](index_t begin, index_t end) {
#if defined(_OPENMP)
#pragma omp simd
#endif
        for (index_t i = begin; i < end; ++i) out[i] = std::max(in[i], T(0));
    });
    return y;
}

template <class T>
void relu_backward(TensorView<const T> y, TensorView<const T> dy, TensorView<T> dx) {
    const T *out = y.data, *g = dy.data;
    T* d = dx.data;
    detail::parallel_chunks(y.size(), [out, g, d](index_t begin, index_t end) {
#if defined(_OPENMP)
#pragma omp simd
#endif
        for (index_t i = begin; i < end; ++i) d[i] += out[i] > T(0) ? g[i] : T(0);
    });
}

template <class T>
Var<T> relu(Var<T> x) {
    Tape<T>& tape = same_tape("relu", x);
    return tape.record("relu", relu_forward<T>(x.value()), x.requires_grad(), [x](Tape<T>& t, Var<T> out) {
        relu_backward<T>(out.value(), t.grad(out), t.grad(x));
    });
}

}  // namespace despeck::ops
