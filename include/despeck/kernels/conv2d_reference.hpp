// despeck/kernels/conv2d_reference.hpp — plain scalar 2-D convolution, forward and both
// backward passes. The ground truth every optimised variant is tested against; kept forever.
//
//   x  [N, H, W, Ci]  input, NHWC
//   w  [K, K, Ci, Co] filters, HWIO, K odd; cross-correlation (the kernel is not flipped)
//   b  [Co]           bias (may be empty)
//   y  [N, H, W, Co]  "same" output: stride 1, zero padding K/2 on every side
//
//   y[n,h,v,o] = b[o] + sum_{i,j,c} w[i,j,c,o] * x[n, h+i-K/2, v+j-K/2, c]
#pragma once

#include "despeck/tensor.hpp"

namespace despeck::kernels {

template <class T>
void conv2d_forward_reference(TensorView<const T> x, TensorView<const T> w, TensorView<const T> b, TensorView<T> y) {
    const index_t N = x.shape[0], H = x.shape[1], W = x.shape[2], Ci = x.shape[3];
    const index_t K = w.shape[0], Co = w.shape[3], P = K / 2;
    for (index_t n = 0; n < N; ++n)
        for (index_t h = 0; h < H; ++h)
            for (index_t v = 0; v < W; ++v)
                for (index_t o = 0; o < Co; ++o) {
                    T acc = b.empty() ? T(0) : b[o];
                    for (index_t i = 0; i < K; ++i) {
                        const index_t hh = h + i - P;
                        if (hh < 0 || hh >= H) continue;
                        for (index_t j = 0; j < K; ++j) {
                            const index_t vv = v + j - P;
                            if (vv < 0 || vv >= W) continue;
                            for (index_t c = 0; c < Ci; ++c) acc += w.data[((i * K + j) * Ci + c) * Co + o] * x.at(n, hh, vv, c);
                        }
                    }
                    y.at(n, h, v, o) = acc;
                }
}

// dx += d(loss)/dx given dy.
template <class T>
void conv2d_backward_data_reference(TensorView<const T> dy, TensorView<const T> w, TensorView<T> dx) {
    const index_t N = dx.shape[0], H = dx.shape[1], W = dx.shape[2], Ci = dx.shape[3];
    const index_t K = w.shape[0], Co = w.shape[3], P = K / 2;
    for (index_t n = 0; n < N; ++n)
        for (index_t h = 0; h < H; ++h)
            for (index_t v = 0; v < W; ++v)
                for (index_t i = 0; i < K; ++i) {
                    const index_t hh = h + i - P;
                    if (hh < 0 || hh >= H) continue;
                    for (index_t j = 0; j < K; ++j) {
                        const index_t vv = v + j - P;
                        if (vv < 0 || vv >= W) continue;
                        for (index_t c = 0; c < Ci; ++c) {
                            T acc = 0;
                            for (index_t o = 0; o < Co; ++o) acc += w.data[((i * K + j) * Ci + c) * Co + o] * dy.at(n, h, v, o);
                            dx.at(n, hh, vv, c) += acc;
                        }
                    }
                }
}

// dw += d(loss)/dw and db += d(loss)/db (db may be empty) given dy.
template <class T>
void conv2d_backward_weights_reference(TensorView<const T> x, TensorView<const T> dy, TensorView<T> dw, TensorView<T> db) {
    const index_t N = x.shape[0], H = x.shape[1], W = x.shape[2], Ci = x.shape[3];
    const index_t K = dw.shape[0], Co = dw.shape[3], P = K / 2;
    for (index_t i = 0; i < K; ++i)
        for (index_t j = 0; j < K; ++j)
            for (index_t c = 0; c < Ci; ++c)
                for (index_t o = 0; o < Co; ++o) {
                    T acc = 0;
                    for (index_t n = 0; n < N; ++n)
                        for (index_t h = 0; h < H; ++h) {
                            const index_t hh = h + i - P;
                            if (hh < 0 || hh >= H) continue;
                            for (index_t v = 0; v < W; ++v) {
                                const index_t vv = v + j - P;
                                if (vv < 0 || vv >= W) continue;
                                acc += x.at(n, hh, vv, c) * dy.at(n, h, v, o);
                            }
                        }
                    dw.data[((i * K + j) * Ci + c) * Co + o] += acc;
                }
    if (!db.empty())
        for (index_t o = 0; o < Co; ++o) {
            T acc = 0;
            for (index_t p = 0; p < N * H * W; ++p) acc += dy.data[p * Co + o];
            db[o] += acc;
        }
}

}  // namespace despeck::kernels
