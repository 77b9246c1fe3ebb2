// despeck/ops/total_variation.hpp — total variation of NHWC images, summed over the batch.
//
//   x [N, H, W, C] -> [1]
//   anisotropic (L1):  sum_{n,c} ( sum_{h,w} |x[h+1,w] - x[h,w]| + sum_{h,w} |x[h,w+1] - x[h,w]| )
//                      = tf.reduce_sum(tf.image.total_variation(x)), the TensorFlow deSpeckNet's TV loss
//   quadratic:         the same with squared differences (smooth everywhere)
// Backward of |d| uses sign(d), with sign(0) = 0 as TensorFlow does.
#pragma once

#include <cmath>

#include "despeck/autodiff/tape.hpp"

namespace despeck::ops {

enum class TvKind { anisotropic_l1, quadratic };

template <class T>
T total_variation_forward(TensorView<const T> x, TvKind kind) {
    require_nhwc("total_variation", "input x", x);
    const index_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3];
    auto penalty = [kind](T d) { return kind == TvKind::anisotropic_l1 ? std::abs(d) : d * d; };
    double sum = 0;
    for (index_t n = 0; n < N; ++n)
        for (index_t h = 0; h < H; ++h)
            for (index_t w = 0; w < W; ++w)
                for (index_t c = 0; c < C; ++c) {
                    const T v = x.at(n, h, w, c);
                    if (h + 1 < H) sum += penalty(x.at(n, h + 1, w, c) - v);
                    if (w + 1 < W) sum += penalty(x.at(n, h, w + 1, c) - v);
                }
    return static_cast<T>(sum);
}

// dx += g * d(TV)/dx
template <class T>
void total_variation_backward(TensorView<const T> x, TvKind kind, T g, TensorView<T> dx) {
    const index_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3];
    auto slope = [kind](T d) { return kind == TvKind::anisotropic_l1 ? T((d > 0) - (d < 0)) : T(2) * d; };
    for (index_t n = 0; n < N; ++n)
        for (index_t h = 0; h < H; ++h)
            for (index_t w = 0; w < W; ++w)
                for (index_t c = 0; c < C; ++c) {
                    const T v = x.at(n, h, w, c);
                    if (h + 1 < H) {
                        const T s = g * slope(x.at(n, h + 1, w, c) - v);
                        dx.at(n, h + 1, w, c) += s;
                        dx.at(n, h, w, c) -= s;
                    }
                    if (w + 1 < W) {
                        const T s = g * slope(x.at(n, h, w + 1, c) - v);
                        dx.at(n, h, w + 1, c) += s;
                        dx.at(n, h, w, c) -= s;
                    }
                }
}

template <class T>
Var<T> total_variation(Var<T> x, TvKind kind = TvKind::anisotropic_l1) {
    Tape<T>& tape = same_tape("total_variation", x);
    Tensor<T> loss(Shape{1});
    loss[0] = total_variation_forward<T>(x.value(), kind);
    return tape.record("total_variation", std::move(loss), x.requires_grad(), [x, kind](Tape<T>& t, Var<T> out) {
        total_variation_backward<T>(x.value(), kind, t.grad(out)[0], t.grad(x));
    });
}

}  // namespace despeck::ops
