// despeck/kernels/conv2d_im2col.hpp — convolution as im2col + Eigen GEMM, in bounded memory.
//
// Shapes as in conv2d_reference.hpp. The N*H*W output pixels are processed in chunks of `rows`
// pixels; each chunk unfolds its receptive fields into a row-major matrix
//   col [rows, K*K*Ci]   (column index (i*K + j)*Ci + c, the same order as HWIO weights)
// so that, with the weights seen as a [K*K*Ci, Co] matrix,
//   forward           y_chunk   = col * w + b
//   backward-weights  dw       += col^T * dy_chunk,   db += column sums of dy
//   backward-data     a "same" convolution of dy with the weights rotated by 180 degrees and
//                     in/out channels swapped: w_rot[i,j,o,c] = w[K-1-i, K-1-j, c, o]. So it reuses
//                     the forward path, whose output chunks never overlap (no scatter-add races).
// The chunk keeps `col` near a few MiB whatever the image size, so inference on a whole tile does
// not allocate K*K*Ci floats per pixel. Eigen's GEMM is OpenMP-parallel when OpenMP is on; the
// unfolding loop is parallel over the chunk's pixels.
#pragma once

#include <algorithm>
#include <vector>

#include <Eigen/Core>

#include "despeck/tensor.hpp"

namespace despeck::kernels {

namespace detail_im2col {

inline index_t chunk_rows(index_t col_width) {
    constexpr index_t target_elements = index_t(1) << 20;  // 4 MiB of float per chunk
    return std::max<index_t>(64, target_elements / std::max<index_t>(1, col_width));
}

// Unfolds pixels [p0, p0 + rows) of x (flattened over N*H*W) into col.
template <class T>
void unfold(TensorView<const T> x, index_t K, index_t p0, index_t rows, T* col) {
    const index_t H = x.shape[1], W = x.shape[2], Ci = x.shape[3], P = K / 2;
    const index_t width = K * K * Ci;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * width > 32768)
#endif
    for (index_t r = 0; r < rows; ++r) {
        const index_t p = p0 + r;
        const index_t n = p / (H * W), h = (p / W) % H, v = p % W;
        T* out = col + r * width;
        for (index_t i = 0; i < K; ++i) {
            const index_t hh = h + i - P;
            for (index_t j = 0; j < K; ++j, out += Ci) {
                const index_t vv = v + j - P;
                if (hh < 0 || hh >= H || vv < 0 || vv >= W) {
                    std::fill(out, out + Ci, T(0));
                } else {
                    const T* src = x.data + ((n * H + hh) * W + vv) * Ci;
                    std::copy(src, src + Ci, out);
                }
            }
        }
    }
}

// Calls body(col, p0, rows) for consecutive chunks of the N*H*W pixels of x, with col
// [rows, K*K*Ci] holding the chunk's unfolded receptive fields. The buffer comes from the tensor
// cache, so repeated calls touch no fresh pages.
template <class T, class Body>
void for_each_unfolded_chunk(TensorView<const T> x, index_t K, Body&& body) {
    const index_t pixels = x.shape[0] * x.shape[1] * x.shape[2];
    const index_t width = K * K * x.shape[3];
    const index_t rows = chunk_rows(width);
    Tensor<T> col_storage = Tensor<T>::uninitialized(Shape{std::min(rows, pixels), width});
    auto col = col_storage.matrix(std::min(rows, pixels), width);
    for (index_t p0 = 0; p0 < pixels; p0 += rows) {
        const index_t r = std::min(rows, pixels - p0);
        unfold(x, K, p0, r, col.data());
        body(col.topRows(r), p0, r);
    }
}

}  // namespace detail_im2col

// y = conv(x, w) + b when accumulate is false; y += conv(x, w) (+ b) when true.
template <class T>
void conv2d_forward_im2col(TensorView<const T> x, TensorView<const T> w, TensorView<const T> b, TensorView<T> y,
                           bool accumulate = false) {
    const index_t K = w.shape[0], Ci = w.shape[2], Co = w.shape[3];
    const index_t pixels = x.shape[0] * x.shape[1] * x.shape[2];
    const index_t width = K * K * Ci;
    const auto wm = w.matrix(width, Co);
    auto ym = y.matrix(pixels, Co);
    detail_im2col::for_each_unfolded_chunk<T>(x, K, [&](const auto& col, index_t p0, index_t r) {
        auto y_chunk = ym.middleRows(p0, r);
        if (accumulate)
            y_chunk.noalias() += col * wm;
        else
            y_chunk.noalias() = col * wm;
        if (!b.empty()) y_chunk.rowwise() += b.flat().matrix().transpose();
    });
}

// dx += conv(dy, w rotated 180 degrees with in/out swapped); see the header comment.
template <class T>
void conv2d_backward_data_im2col(TensorView<const T> dy, TensorView<const T> w, TensorView<T> dx) {
    const index_t K = w.shape[0], Ci = w.shape[2], Co = w.shape[3];
    Tensor<T> w_rot(Shape{K, K, Co, Ci});
    for (index_t i = 0; i < K; ++i)
        for (index_t j = 0; j < K; ++j)
            for (index_t c = 0; c < Ci; ++c)
                for (index_t o = 0; o < Co; ++o)
                    w_rot[((i * K + j) * Co + o) * Ci + c] = w.data[(((K - 1 - i) * K + (K - 1 - j)) * Ci + c) * Co + o];
    conv2d_forward_im2col<T>(dy, w_rot.view(), TensorView<const T>{}, dx, /*accumulate=*/true);
}

// dw += col^T * dy, db += column sums of dy (db may be empty).
template <class T>
void conv2d_backward_weights_im2col(TensorView<const T> x, TensorView<const T> dy, TensorView<T> dw, TensorView<T> db) {
    const index_t K = dw.shape[0], Ci = dw.shape[2], Co = dw.shape[3];
    const index_t pixels = x.shape[0] * x.shape[1] * x.shape[2];
    const index_t width = K * K * Ci;
    auto dwm = dw.matrix(width, Co);
    const auto dym = dy.matrix(pixels, Co);
    detail_im2col::for_each_unfolded_chunk<T>(x, K, [&](const auto& col, index_t p0, index_t r) {
        dwm.noalias() += col.transpose() * dym.middleRows(p0, r);
    });
    if (!db.empty()) db.flat().matrix() += dym.colwise().sum().transpose();
}

}  // namespace despeck::kernels
