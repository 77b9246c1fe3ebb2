// despeck/ops/batch_norm_relu.hpp — batch normalisation followed by ReLU as one training op.
//
//   x [N,H,W,C] -> y = max(0, gamma * (x - mean) / sqrt(var + eps) + beta), batch statistics
// Same maths as ops::batch_norm then ops::relu (see batch_norm.hpp for the formulas), in two
// passes over memory instead of five, and with a smaller footprint: the tape keeps only x (the
// convolution's output, already there) and y. xhat is recomputed in backward from x, the batch
// mean and inv_std instead of being stored, and the ReLU mask is y > 0.
// Statistics and gradient sums are accumulated in T within fixed blocks of 256 pixels and in double
// across blocks, in block order: the result does not depend on the thread count.
#pragma once

#include <cmath>
#include <vector>

#include "despeck/ops/batch_norm.hpp"
#include "despeck/ops/relu.hpp"

// Channel loops: vectorised whatever the including project's -O level (GCC's -O2 cost model
// leaves loops with a run-time trip count scalar); needs -fopenmp or -fopenmp-simd, else a no-op.
#if defined(_OPENMP)
#define DESPECK_SIMD_LOOP _Pragma("omp simd")
#else
#define DESPECK_SIMD_LOOP
#endif

namespace despeck::ops {

namespace detail_bnr {

constexpr index_t block_pixels = 256;

// Per-channel sums over all M pixels of what `body(p, local)` adds for pixel p into local[terms*C].
// Within a block of 256 pixels the sums run in T (vectorised: the channel loops are `omp simd`),
// block totals are added in double, in block order.
template <class T, class Body>
std::vector<double> block_sums(index_t M, index_t C, int terms, Body&& body) {
    const index_t blocks = (M + block_pixels - 1) / block_pixels;
    const index_t width = terms * C;
    std::vector<double> partial(static_cast<std::size_t>(blocks * width), 0.0);
#if defined(_OPENMP)
#pragma omp parallel if (M * C > 65536)
#endif
    {
        std::vector<T> local(static_cast<std::size_t>(width));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (index_t b = 0; b < blocks; ++b) {
            std::fill(local.begin(), local.end(), T(0));
            const index_t p1 = std::min(M, (b + 1) * block_pixels);
            for (index_t p = b * block_pixels; p < p1; ++p) body(p, local.data());
            double* acc = partial.data() + b * width;
            for (index_t k = 0; k < width; ++k) acc[k] = local[static_cast<std::size_t>(k)];
        }
    }
    std::vector<double> total(static_cast<std::size_t>(width), 0.0);
    for (index_t b = 0; b < blocks; ++b)
        for (index_t k = 0; k < width; ++k) total[static_cast<std::size_t>(k)] += partial[static_cast<std::size_t>(b * width + k)];
    return total;
}

}  // namespace detail_bnr

// Training forward. mean_out, inv_std_out [C] receive the batch statistics the backward needs;
// the running statistics are updated as in batch_norm_forward_training.
template <class T>
Tensor<T> batch_norm_relu_forward_training(TensorView<const T> x, TensorView<const T> gamma, TensorView<const T> beta,
                                           TensorView<T> running_mean, TensorView<T> running_var,
                                           const BatchNormOptions& opt, Tensor<T>& mean_out, Tensor<T>& inv_std_out) {
    batch_norm_check("batch_norm_relu", x, gamma, beta);
    const index_t C = x.shape[3], M = x.size() / C;
    if (M < 1) detail::fail<shape_error>("batch_norm_relu: empty input ", x.shape);
    const bool no_running = !check_running_statistics("batch_norm_relu", running_mean, running_var, C);
    std::vector<double> mean = detail_bnr::block_sums<T>(M, C, 1, [&](index_t p, T* acc) {
        const T* row = x.data + p * C;
        DESPECK_SIMD_LOOP
        for (index_t c = 0; c < C; ++c) acc[c] += row[c];
    });
    for (auto& m : mean) m /= double(M);
    // Second pass about the mean (in T, centred: no large offsets left to cancel).
    std::vector<T> mean_t(mean.begin(), mean.end());
    const T* mt = mean_t.data();
    std::vector<double> var = detail_bnr::block_sums<T>(M, C, 1, [&](index_t p, T* acc) {
        const T* row = x.data + p * C;
        DESPECK_SIMD_LOOP
        for (index_t c = 0; c < C; ++c) {
            const T d = row[c] - mt[c];
            acc[c] += d * d;
        }
    });
    for (index_t c = 0; c < C; ++c) {  // exact correction for the rounding of the mean to T
        const double shift = mean[static_cast<std::size_t>(c)] - double(mt[c]);
        var[static_cast<std::size_t>(c)] = var[static_cast<std::size_t>(c)] / double(M) - shift * shift;
        if (var[static_cast<std::size_t>(c)] < 0) var[static_cast<std::size_t>(c)] = 0;
    }
    mean_out = Tensor<T>(Shape{C});
    inv_std_out = Tensor<T>(Shape{C});
    for (index_t c = 0; c < C; ++c) {
        inv_std_out[c] = static_cast<T>(1.0 / std::sqrt(var[static_cast<std::size_t>(c)] + opt.eps));
        mean_out[c] = static_cast<T>(mean[static_cast<std::size_t>(c)]);
    }
    Tensor<T> y = Tensor<T>::uninitialized(x.shape);
    const T* mu = mean_out.data();
    const T* is = inv_std_out.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (M * C > 65536)
#endif
    for (index_t p = 0; p < M; ++p) {
        const T* in = x.data + p * C;
        T* out = y.data() + p * C;
        DESPECK_SIMD_LOOP
        for (index_t c = 0; c < C; ++c) {
            const T xh = (in[c] - mu[c]) * is[c];
            const T v = xh * gamma[c] + beta[c];
            out[c] = v > T(0) ? v : T(0);
        }
    }
    if (!no_running) update_running_statistics(running_mean, running_var, mean, var, M, opt);
    return y;
}

// Training backward: adds into dx, dgamma, dbeta (each may be empty). y is the forward's output.
template <class T>
void batch_norm_relu_backward_training(TensorView<const T> x, TensorView<const T> y, TensorView<const T> dy,
                                       TensorView<const T> mean, TensorView<const T> inv_std, TensorView<const T> gamma,
                                       TensorView<T> dx, TensorView<T> dgamma, TensorView<T> dbeta) {
    const index_t C = x.shape[3], M = x.size() / C;
    const T* mu = mean.data;
    const T* is = inv_std.data;
    // sums[c] = sum of the ReLU-masked dy, sums[C + c] = sum of masked dy * xhat.
    const std::vector<double> sums = detail_bnr::block_sums<T>(M, C, 2, [&](index_t p, T* acc) {
        const T* in = x.data + p * C;
        const T* out = y.data + p * C;
        const T* g = dy.data + p * C;
        T* acc_xh = acc + C;
        DESPECK_SIMD_LOOP
        for (index_t c = 0; c < C; ++c) {
            const T gm = out[c] > T(0) ? g[c] : T(0);
            const T xh = (in[c] - mu[c]) * is[c];
            acc[c] += gm;
            acc_xh[c] += gm * xh;
        }
    });
    for (index_t c = 0; c < C; ++c) {
        if (!dbeta.empty()) dbeta[c] += static_cast<T>(sums[static_cast<std::size_t>(c)]);
        if (!dgamma.empty()) dgamma[c] += static_cast<T>(sums[static_cast<std::size_t>(C + c)]);
    }
    if (dx.empty()) return;
    // dx = inv_std / M * (M * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)), dxhat = gamma * masked dy.
    std::vector<T> a(static_cast<std::size_t>(C)), c0(a.size()), c1(a.size());
    for (index_t c = 0; c < C; ++c) {
        const double k = double(gamma[c]) * double(is[c]) / double(M);
        a[static_cast<std::size_t>(c)] = static_cast<T>(k * double(M));
        c0[static_cast<std::size_t>(c)] = static_cast<T>(k * sums[static_cast<std::size_t>(c)]);
        c1[static_cast<std::size_t>(c)] = static_cast<T>(k * sums[static_cast<std::size_t>(C + c)]);
    }
    const T* pa = a.data();
    const T* p0 = c0.data();
    const T* p1 = c1.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (M * C > 65536)
#endif
    for (index_t p = 0; p < M; ++p) {
        const T* in = x.data + p * C;
        const T* out = y.data + p * C;
        const T* g = dy.data + p * C;
        T* d = dx.data + p * C;
        DESPECK_SIMD_LOOP
        for (index_t c = 0; c < C; ++c) {
            const T gm = out[c] > T(0) ? g[c] : T(0);
            const T xh = (in[c] - mu[c]) * is[c];
            d[c] += gm * pa[c] - p0[c] - xh * p1[c];
        }
    }
}

// Records max(0, batch_norm(x)). Training mode runs the fused op; inference mode records the two
// ops it stands for (their backward is already cheap).
template <class T>
Var<T> batch_norm_relu(Var<T> x, Var<T> gamma, Var<T> beta, TensorView<T> running_mean, TensorView<T> running_var,
                       Mode mode, const BatchNormOptions& opt = {}) {
    if (mode != Mode::training) return relu(batch_norm(x, gamma, beta, running_mean, running_var, mode, opt));
    Tape<T>& tape = same_tape("batch_norm_relu", x, gamma, beta);
    const bool needs = any_requires_grad(x, gamma, beta);
    Tensor<T> mean, inv_std;
    Tensor<T> y = batch_norm_relu_forward_training<T>(x.value(), gamma.value(), beta.value(), running_mean, running_var,
                                                      opt, mean, inv_std);
    TensorView<T> mean_v = tape.keep(std::move(mean)), inv_std_v = tape.keep(std::move(inv_std));
    return tape.record("batch_norm_relu", std::move(y), needs, [=](Tape<T>& t, Var<T> out) {
        batch_norm_relu_backward_training<T>(x.value(), out.value(), t.grad(out), mean_v, inv_std_v, gamma.value(),
                                             grad_if_needed(t, x), grad_if_needed(t, gamma), grad_if_needed(t, beta));
    });
}

}  // namespace despeck::ops
