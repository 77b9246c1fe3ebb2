// despeck/ops/batch_norm.hpp — batch normalisation over the channel axis of NHWC tensors.
//
//   x [N, H, W, C], gamma [C], beta [C]; statistics over the M = N*H*W values of each channel.
//   training:  mean_c, var_c = biased batch statistics;  xhat = (x - mean) / sqrt(var + eps)
//              y = gamma * xhat + beta
//              running <- momentum * running + (1 - momentum) * batch     (Keras convention)
//              momentum 0: the running statistics are the last training batch's, as in the
//              original TensorFlow (BatchNormalization(momentum=0.0)) and MatConvNet code.
//   inference: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta
// Backward, training mode (the statistics depend on x):
//   dxhat = dy * gamma
//   dx    = inv_std / M * (M * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
//   dgamma = sum(dy * xhat),  dbeta = sum(dy)
// Backward, inference mode: dx = dy * gamma * inv_std; dgamma = sum(dy * xhat); dbeta = sum(dy).
#pragma once

#include <cmath>
#include <vector>

#include "despeck/autodiff/tape.hpp"

namespace despeck::ops {

struct BatchNormOptions {
    double eps = 1e-4;           // the TensorFlow deSpeckNet's value
    double momentum = 0.0;       // weight of the old running statistics in the update
    // Running variance with Bessel's correction, var * M/(M-1): PyTorch does this, and so does
    // TensorFlow's fused batch-norm kernel; MatConvNet stores the biased sigma. The factor is
    // 1.00004 for a batch of 16 x 40 x 40, so the default (biased) differs only in the 5th digit.
    bool unbiased_running_var = false;
};

enum class Mode { training, inference };

template <class T>
void batch_norm_check(const char* where, TensorView<const T> x, TensorView<const T> gamma, TensorView<const T> beta) {
    require_nhwc(where, "input x", x);
    const index_t C = x.shape[3];
    if (gamma.shape != Shape{C} || beta.shape != Shape{C})
        detail::fail<shape_error>(where, ": gamma ", gamma.shape, " and beta ", beta.shape, " must both be [", C,
                                  "] for input ", x.shape);
}

// Whether running statistics are given (both [C]) or absent (both empty); anything else throws.
template <class T>
bool check_running_statistics(const char* where, TensorView<T> running_mean, TensorView<T> running_var, index_t C) {
    if (running_mean.empty() && running_var.empty()) return false;
    if (running_mean.shape != Shape{C} || running_var.shape != Shape{C})
        detail::fail<shape_error>(where, ": running statistics ", running_mean.shape, " / ", running_var.shape,
                                  " must both be [", C, "] (or both absent)");
    return true;
}

// running <- momentum * running + (1 - momentum) * batch (Bessel-corrected variance on request).
template <class T>
void update_running_statistics(TensorView<T> running_mean, TensorView<T> running_var, const std::vector<double>& mean,
                               const std::vector<double>& var, index_t M, const BatchNormOptions& opt) {
    const double mom = opt.momentum;
    const double bessel = (opt.unbiased_running_var && M > 1) ? double(M) / double(M - 1) : 1.0;
    for (index_t c = 0; c < running_mean.size(); ++c) {
        const auto k = static_cast<std::size_t>(c);
        running_mean[c] = static_cast<T>(mom * running_mean[c] + (1 - mom) * mean[k]);
        running_var[c] = static_cast<T>(mom * running_var[c] + (1 - mom) * var[k] * bessel);
    }
}

// Training forward. Writes xhat [N,H,W,C] and inv_std [C] for the backward pass and updates the
// running statistics (skipped when they are empty views).
template <class T>
Tensor<T> batch_norm_forward_training(TensorView<const T> x, TensorView<const T> gamma, TensorView<const T> beta,
                                      TensorView<T> running_mean, TensorView<T> running_var,
                                      const BatchNormOptions& opt, Tensor<T>& xhat, Tensor<T>& inv_std) {
    batch_norm_check("batch_norm", x, gamma, beta);
    const index_t C = x.shape[3], M = x.size() / C;
    if (M < 1) detail::fail<shape_error>("batch_norm: empty input ", x.shape);
    const bool no_running = !check_running_statistics("batch_norm", running_mean, running_var, C);
    const auto xm = x.matrix(M, C);
    // Two-pass statistics accumulated in double: dB-scale activations carry large offsets that a
    // one-pass float E[x^2] - E[x]^2 would cancel away.
    std::vector<double> mean(static_cast<std::size_t>(C), 0.0), var(static_cast<std::size_t>(C), 0.0);
    for (index_t p = 0; p < M; ++p) {
        const T* row = x.data + p * C;
        for (index_t c = 0; c < C; ++c) mean[static_cast<std::size_t>(c)] += row[c];
    }
    for (auto& m : mean) m /= double(M);
    for (index_t p = 0; p < M; ++p) {
        const T* row = x.data + p * C;
        for (index_t c = 0; c < C; ++c) {
            const double d = row[c] - mean[static_cast<std::size_t>(c)];
            var[static_cast<std::size_t>(c)] += d * d;
        }
    }
    for (auto& v : var) v /= double(M);

    inv_std = Tensor<T>(Shape{C});
    EigenArray<T> meanT(C);
    for (index_t c = 0; c < C; ++c) {
        inv_std[c] = static_cast<T>(1.0 / std::sqrt(var[static_cast<std::size_t>(c)] + opt.eps));
        meanT(c) = static_cast<T>(mean[static_cast<std::size_t>(c)]);
    }
    xhat = Tensor<T>::uninitialized(x.shape);
    Tensor<T> y = Tensor<T>::uninitialized(x.shape);
    auto xh = xhat.matrix(M, C);
    auto ym = y.matrix(M, C);
    xh = (xm.array().rowwise() - meanT.transpose()).rowwise() * inv_std.flat().transpose();
    ym = (xh.array().rowwise() * gamma.flat().transpose()).rowwise() + beta.flat().transpose();

    if (!no_running) update_running_statistics(running_mean, running_var, mean, var, M, opt);
    return y;
}

template <class T>
Tensor<T> batch_norm_forward_inference(TensorView<const T> x, TensorView<const T> gamma, TensorView<const T> beta,
                                       TensorView<const T> running_mean, TensorView<const T> running_var,
                                       const BatchNormOptions& opt) {
    batch_norm_check("batch_norm", x, gamma, beta);
    const index_t C = x.shape[3], M = x.size() / C;
    if (running_mean.shape != Shape{C} || running_var.shape != Shape{C})
        detail::fail<shape_error>("batch_norm: running statistics ", running_mean.shape, " / ", running_var.shape,
                                  " must be [", C, "]");
    // y = scale * x + shift with scale = gamma / sqrt(var + eps), shift = beta - mean * scale.
    EigenArray<T> scale(C), shift(C);
    for (index_t c = 0; c < C; ++c) {
        if (!(running_var[c] >= 0)) detail::fail<value_error>("batch_norm: running_var[", c, "] = ", running_var[c]);
        scale(c) = static_cast<T>(gamma[c] / std::sqrt(static_cast<double>(running_var[c]) + opt.eps));
        shift(c) = beta[c] - running_mean[c] * scale(c);
    }
    Tensor<T> y = Tensor<T>::uninitialized(x.shape);
    y.matrix(M, C) = (x.matrix(M, C).array().rowwise() * scale.transpose()).rowwise() + shift.transpose();
    return y;
}

// Training backward; adds into dx, dgamma, dbeta (each may be empty).
template <class T>
void batch_norm_backward_training(TensorView<const T> dy, TensorView<const T> xhat, TensorView<const T> inv_std,
                                  TensorView<const T> gamma, TensorView<T> dx, TensorView<T> dgamma, TensorView<T> dbeta) {
    const index_t C = dy.shape[3], M = dy.size() / C;
    const auto dym = dy.matrix(M, C);
    const auto xh = xhat.matrix(M, C);
    const EigenArray<T> sum_dy = dym.colwise().sum().transpose().array();
    const EigenArray<T> sum_dy_xhat = (dym.array() * xh.array()).colwise().sum().transpose();
    if (!dgamma.empty()) dgamma.flat() += sum_dy_xhat;
    if (!dbeta.empty()) dbeta.flat() += sum_dy;
    if (!dx.empty()) {
        // dxhat sums: sum(dxhat) = gamma * sum(dy), sum(dxhat * xhat) = gamma * sum(dy * xhat).
        const EigenArray<T> g = gamma.flat();
        const EigenArray<T> k = g * inv_std.flat() / T(M);
        const EigenArray<T> a = k * T(M);                       // multiplies dy
        const EigenArray<T> c0 = k * sum_dy;                    // constant term
        const EigenArray<T> c1 = k * sum_dy_xhat;               // multiplies xhat
        auto dxm = dx.matrix(M, C);
        dxm.array() += (dym.array().rowwise() * a.transpose()).rowwise() - c0.transpose();
        dxm.array() -= xh.array().rowwise() * c1.transpose();
    }
}

template <class T>
void batch_norm_backward_inference(TensorView<const T> x, TensorView<const T> dy, TensorView<const T> gamma,
                                   TensorView<const T> running_mean, TensorView<const T> running_var,
                                   const BatchNormOptions& opt, TensorView<T> dx, TensorView<T> dgamma, TensorView<T> dbeta) {
    const index_t C = dy.shape[3], M = dy.size() / C;
    EigenArray<T> inv_std(C);
    for (index_t c = 0; c < C; ++c) inv_std(c) = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + opt.eps));
    const auto dym = dy.matrix(M, C);
    if (!dgamma.empty())
        dgamma.flat() += ((x.matrix(M, C).array().rowwise() - running_mean.flat().transpose()).rowwise() * inv_std.transpose() *
                          dym.array()).colwise().sum().transpose();
    if (!dbeta.empty()) dbeta.flat() += dym.colwise().sum().transpose().array();
    if (!dx.empty()) dx.matrix(M, C).array() += dym.array().rowwise() * (gamma.flat() * inv_std).transpose();
}

// Records batch normalisation. running_mean / running_var are views into the model's buffers:
// updated in training mode, read in inference mode.
template <class T>
Var<T> batch_norm(Var<T> x, Var<T> gamma, Var<T> beta, TensorView<T> running_mean, TensorView<T> running_var, Mode mode,
                  const BatchNormOptions& opt = {}) {
    Tape<T>& tape = same_tape("batch_norm", x, gamma, beta);
    const bool needs = any_requires_grad(x, gamma, beta);
    if (mode == Mode::training) {
        Tensor<T> xhat, inv_std;
        Tensor<T> y = batch_norm_forward_training<T>(x.value(), gamma.value(), beta.value(), running_mean, running_var,
                                                     opt, xhat, inv_std);
        TensorView<T> xhat_v = tape.keep(std::move(xhat)), inv_std_v = tape.keep(std::move(inv_std));
        return tape.record("batch_norm", std::move(y), needs, [=](Tape<T>& t, Var<T> out) {
            batch_norm_backward_training<T>(t.grad(out), xhat_v, inv_std_v, gamma.value(), grad_if_needed(t, x),
                                            grad_if_needed(t, gamma), grad_if_needed(t, beta));
        });
    }
    Tensor<T> y = batch_norm_forward_inference<T>(x.value(), gamma.value(), beta.value(), running_mean, running_var, opt);
    return tape.record("batch_norm", std::move(y), needs, [=](Tape<T>& t, Var<T> out) {
        batch_norm_backward_inference<T>(x.value(), t.grad(out), gamma.value(), running_mean, running_var, opt,
                                         grad_if_needed(t, x), grad_if_needed(t, gamma), grad_if_needed(t, beta));
    });
}

}  // namespace despeck::ops
