// despeck/kernels/conv2d.hpp — the one dispatch point for 2-D convolution kernels.
//
// Every call goes through conv2d_forward / conv2d_backward_data / conv2d_backward_weights here,
// which pick the variant from the process-wide choice and record which one ran, so tests and
// benchmarks can prove the path they meant to exercise did run. The default, `automatic`, is the
// Winograd for float 3x3 layers with >= 16 channels (all three passes) and the direct
// SIMD kernels for the rest (the instruction set itself is chosen in conv2d_direct.hpp); im2col +
// GEMM for double, which only gradient checks use. An explicit choice that cannot run
// (direct for double) is an error, never a silent substitute.
#pragma once

#include <atomic>
#include <string_view>
#include <type_traits>

#include "despeck/error.hpp"
#include "despeck/kernels/conv2d_direct.hpp"
#include "despeck/kernels/conv2d_im2col.hpp"
#include "despeck/kernels/conv2d_reference.hpp"

namespace despeck::kernels {

// winograd: forward, backward-data and backward-weights of 3x3 layers with >= 16 channels on both
// sides by Winograd F(4x4,3x3), other layers direct; last_conv_algorithm()
// says which of the two ran. direct is the exact fp32 option.
enum class conv_algorithm { automatic, reference, im2col_gemm, direct, winograd };

inline std::string_view to_string(conv_algorithm a) {
    switch (a) {
        case conv_algorithm::automatic: return "automatic";
        case conv_algorithm::reference: return "reference";
        case conv_algorithm::im2col_gemm: return "im2col_gemm";
        case conv_algorithm::direct: return "direct";
        case conv_algorithm::winograd: return "winograd";
    }
    return "unknown";
}

namespace detail_dispatch {
inline std::atomic<conv_algorithm>& selected() {
    static std::atomic<conv_algorithm> a{conv_algorithm::automatic};
    return a;
}
inline std::atomic<conv_algorithm>& last_used() {
    static std::atomic<conv_algorithm> a{conv_algorithm::im2col_gemm};
    return a;
}
// The variant a call with element type T runs under the current choice. automatic: Winograd
// where it applies (float), else direct (float) or im2col (double).
template <class T>
conv_algorithm resolve(const char* where, bool winograd_applies) {
    conv_algorithm a = selected();
    if (a == conv_algorithm::automatic)
        a = std::is_same_v<T, float> ? conv_algorithm::winograd : conv_algorithm::im2col_gemm;
    if ((a == conv_algorithm::direct || a == conv_algorithm::winograd) && !std::is_same_v<T, float>)
        despeck::detail::fail<value_error>(where, ": the direct and Winograd kernels are float only; choose im2col_gemm "
                                                  "or reference for double");
    if (a == conv_algorithm::winograd && !winograd_applies) a = conv_algorithm::direct;
    last_used() = a;
    return a;
}
}  // namespace detail_dispatch

inline void set_conv_algorithm(conv_algorithm a) { detail_dispatch::selected() = a; }
// Whether the current choice runs the SIMD kernels (direct or Winograd), which the fused inference
// plans use; reference and im2col_gemm choices keep inference on the layer-by-layer path too.
inline bool simd_kernels_selected() {
    const conv_algorithm a = detail_dispatch::selected();
    return a == conv_algorithm::automatic || a == conv_algorithm::direct || a == conv_algorithm::winograd;
}
inline conv_algorithm get_conv_algorithm() { return detail_dispatch::selected(); }
// The variant that ran in the most recent conv call (any of the three passes).
inline conv_algorithm last_conv_algorithm() { return detail_dispatch::last_used(); }

template <class T>
void conv2d_forward(TensorView<const T> x, TensorView<const T> w, TensorView<const T> b, TensorView<T> y) {
    const conv_algorithm a = detail_dispatch::resolve<T>(
        "conv2d_forward", winograd_applies(w.shape[0], w.shape[2], w.shape[3]));
    switch (a) {
        case conv_algorithm::direct:
            if constexpr (std::is_same_v<T, float>) return conv2d_forward_direct(x, w, b, y);
            break;
        case conv_algorithm::winograd:
            if constexpr (std::is_same_v<T, float>) return conv2d_forward_winograd(x, w, b, y);
            break;
        case conv_algorithm::automatic: break;
        case conv_algorithm::reference: return conv2d_forward_reference(x, w, b, y);
        case conv_algorithm::im2col_gemm: return conv2d_forward_im2col(x, w, b, y);
    }
    despeck::detail::fail<value_error>("conv2d_forward: unknown algorithm ", static_cast<int>(a));
}

template <class T>
void conv2d_backward_data(TensorView<const T> dy, TensorView<const T> w, TensorView<T> dx) {
    const conv_algorithm a = detail_dispatch::resolve<T>(
        "conv2d_backward_data", winograd_applies(w.shape[0], w.shape[2], w.shape[3]));
    switch (a) {
        case conv_algorithm::direct:
            if constexpr (std::is_same_v<T, float>) return conv2d_backward_data_direct(dy, w, dx);
            break;
        case conv_algorithm::winograd:
            if constexpr (std::is_same_v<T, float>) return conv2d_backward_data_winograd(dy, w, dx);
            break;
        case conv_algorithm::automatic: break;
        case conv_algorithm::reference: return conv2d_backward_data_reference(dy, w, dx);
        case conv_algorithm::im2col_gemm: return conv2d_backward_data_im2col(dy, w, dx);
    }
    despeck::detail::fail<value_error>("conv2d_backward_data: unknown algorithm ", static_cast<int>(a));
}

template <class T>
void conv2d_backward_weights(TensorView<const T> x, TensorView<const T> dy, TensorView<T> dw, TensorView<T> db) {
    const conv_algorithm a = detail_dispatch::resolve<T>(
        "conv2d_backward_weights", winograd_applies(dw.shape[0], dw.shape[2], dw.shape[3]));
    switch (a) {
        case conv_algorithm::direct:
            if constexpr (std::is_same_v<T, float>) return conv2d_backward_weights_direct(x, dy, dw, db);
            break;
        case conv_algorithm::winograd:
            if constexpr (std::is_same_v<T, float>) return conv2d_backward_weights_winograd(x, dy, dw, db);
            break;
        case conv_algorithm::automatic: break;
        case conv_algorithm::reference: return conv2d_backward_weights_reference(x, dy, dw, db);
        case conv_algorithm::im2col_gemm: return conv2d_backward_weights_im2col(x, dy, dw, db);
    }
    despeck::detail::fail<value_error>("conv2d_backward_weights: unknown algorithm ", static_cast<int>(a));
}

}  // namespace despeck::kernels
