// despeck/ops/mse.hpp — mean-squared error with an optional per-pixel weight mask.
//
//   a, b  [N, H, W, C];  mask [N, H, W, 1] (broadcast over channels) or [N, H, W, C], or none
//   loss = sum_e m_e * (a_e - b_e)^2 / D,  a one-element tensor [1]
//   D depends on the normalisation:
//     element_count  D = N*H*W*C, whatever the mask. This is what Keras computes for a per-pixel
//                    sample_weight (reduction SUM_OVER_BATCH_SIZE), as in the TensorFlow deSpeckNet
//                    whose change mask zeroes pixels: masked pixels count in the mean as zeros.
//     weight_sum     D = sum_e m_e: the mean over the pixels the mask keeps (0 when it keeps none).
//   Without a mask both are the plain mean.  da += 2 m (a - b) / D * dl,  db -= the same.
#pragma once

#include <type_traits>

#include "despeck/autodiff/tape.hpp"

namespace despeck::ops {

enum class MaskNormalization { element_count, weight_sum };

template <class T>
void mse_check(TensorView<const T> a, TensorView<const T> b, TensorView<const T> mask) {
    require_nhwc("mse", "prediction", a);
    require_same_shape("mse", "prediction", a, "target", b);
    if (!mask.empty()) {
        const Shape& s = a.shape;
        const bool per_pixel = mask.shape == Shape{s[0], s[1], s[2], 1};
        if (!per_pixel && mask.shape != s)
            detail::fail<shape_error>("mse: mask ", mask.shape, " must be [", s[0], ",", s[1], ",", s[2], ",1] or ", s);
    }
}

// Per-element weights broadcast to a's shape, or an empty tensor without a mask.
template <class T>
Tensor<T> mse_weights(TensorView<const T> a, TensorView<const T> mask) {
    if (mask.empty()) return {};
    if (mask.shape == a.shape) return Tensor<T>::from_view(mask);
    const index_t C = a.shape[3], P = a.size() / C;
    Tensor<T> w(a.shape);
    w.matrix(P, C) = mask.flat().matrix().replicate(1, C);
    return w;
}

template <class T>
T mse_denominator(TensorView<const T> a, const Tensor<T>& weights, MaskNormalization norm) {
    if (weights.empty() || norm == MaskNormalization::element_count) return static_cast<T>(a.size());
    return weights.flat().sum();
}

template <class T>
Var<T> mse(Var<T> a, Var<T> b, std::type_identity_t<TensorView<const T>> mask = {},
           MaskNormalization norm = MaskNormalization::element_count) {
    Tape<T>& tape = same_tape("mse", a, b);
    mse_check<T>(a.value(), b.value(), mask);
    Tensor<T> w = mse_weights<T>(a.value(), mask);
    if (!w.empty() && !(w.flat() >= T(0)).all())
        detail::fail<value_error>("mse: the mask has negative or NaN weights");
    const T denom = mse_denominator<T>(a.value(), w, norm);
    // An all-zero mask under weight_sum: the loss and its gradient are 0, not 0/0.
    const T inv = denom > T(0) ? T(1) / denom : T(0);
    Tensor<T> diff = Tensor<T>::uninitialized(a.shape());
    diff.flat() = a.value().flat() - b.value().flat();
    Tensor<T> loss(Shape{1});
    loss[0] = (w.empty() ? diff.flat().square().sum() : (w.flat() * diff.flat().square()).sum()) * inv;
    if (!w.empty()) diff.flat() *= w.flat();  // keep m * (a - b) for backward
    TensorView<T> wdiff = tape.keep(std::move(diff));
    return tape.record("mse", std::move(loss), any_requires_grad(a, b), [a, b, wdiff, inv](Tape<T>& t, Var<T> out) {
        const T g = T(2) * inv * t.grad(out)[0];
        if (a.requires_grad()) t.grad(a).flat() += g * wdiff.flat();
        if (b.requires_grad()) t.grad(b).flat() -= g * wdiff.flat();
    });
}

}  // namespace despeck::ops
