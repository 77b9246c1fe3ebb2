// despeck/kernels/conv2d.hpp — the one dispatch point for 2-D convolution kernels.
//
// Every call goes through conv2d_forward / conv2d_backward_data / conv2d_backward_weights here,
// which pick the variant from the process-wide choice (default: im2col + GEMM) and record which
// one ran, so tests and benchmarks can prove the path they meant to exercise did run. Nothing
// falls back silently: an unknown choice is an error.
#pragma once

#include <atomic>
#include <string_view>

#include "despeck/error.hpp"
#include "despeck/kernels/conv2d_im2col.hpp"
#include "despeck/kernels/conv2d_reference.hpp"

namespace despeck::kernels {

enum class conv_algorithm { reference, im2col_gemm };

inline std::string_view to_string(conv_algorithm a) {
    switch (a) {
        case conv_algorithm::reference: return "reference";
        case conv_algorithm::im2col_gemm: return "im2col_gemm";
    }
    return "unknown";
}

namespace detail_dispatch {
inline std::atomic<conv_algorithm>& selected() {
    static std::atomic<conv_algorithm> a{conv_algorithm::im2col_gemm};
    return a;
}
inline std::atomic<conv_algorithm>& last_used() {
    static std::atomic<conv_algorithm> a{conv_algorithm::im2col_gemm};
    return a;
}
}  // namespace detail_dispatch

inline void set_conv_algorithm(conv_algorithm a) { detail_dispatch::selected() = a; }
inline conv_algorithm get_conv_algorithm() { return detail_dispatch::selected(); }
// The variant that ran in the most recent conv call (any of the three passes).
inline conv_algorithm last_conv_algorithm() { return detail_dispatch::last_used(); }

template <class T>
void conv2d_forward(TensorView<const T> x, TensorView<const T> w, TensorView<const T> b, TensorView<T> y) {
    const conv_algorithm a = get_conv_algorithm();
    detail_dispatch::last_used() = a;
    switch (a) {
        case conv_algorithm::reference: return conv2d_forward_reference(x, w, b, y);
        case conv_algorithm::im2col_gemm: return conv2d_forward_im2col(x, w, b, y);
    }
    despeck::detail::fail<value_error>("conv2d_forward: unknown algorithm ", static_cast<int>(a));
}

template <class T>
void conv2d_backward_data(TensorView<const T> dy, TensorView<const T> w, TensorView<T> dx) {
    const conv_algorithm a = get_conv_algorithm();
    detail_dispatch::last_used() = a;
    switch (a) {
        case conv_algorithm::reference: return conv2d_backward_data_reference(dy, w, dx);
        case conv_algorithm::im2col_gemm: return conv2d_backward_data_im2col(dy, w, dx);
    }
    despeck::detail::fail<value_error>("conv2d_backward_data: unknown algorithm ", static_cast<int>(a));
}

template <class T>
void conv2d_backward_weights(TensorView<const T> x, TensorView<const T> dy, TensorView<T> dw, TensorView<T> db) {
    const conv_algorithm a = get_conv_algorithm();
    detail_dispatch::last_used() = a;
    switch (a) {
        case conv_algorithm::reference: return conv2d_backward_weights_reference(x, dy, dw, db);
        case conv_algorithm::im2col_gemm: return conv2d_backward_weights_im2col(x, dy, dw, db);
    }
    despeck::detail::fail<value_error>("conv2d_backward_weights: unknown algorithm ", static_cast<int>(a));
}

}  // namespace despeck::kernels
