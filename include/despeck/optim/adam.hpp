// despeck/optim/adam.hpp — Adam with bias correction, over a ParameterStore's flat buffers.
//
// One step t (counted per optimiser step, starting at 1):
//   m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// This is PyTorch's torch.optim.Adam (eps outside the square root, added after the correction);
// Keras' Adam differs only in where eps sits (eps * sqrt(1 - beta2^t)), immaterial in practice.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "despeck/nn/parameters.hpp"
#include "despeck/parallel.hpp"

namespace despeck {

struct AdamOptions {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
};

template <class T>
class Adam {
public:
    explicit Adam(AdamOptions options = {}) : opt_(options) {
        if (!(opt_.beta1 >= 0 && opt_.beta1 < 1) || !(opt_.beta2 >= 0 && opt_.beta2 < 1) || !(opt_.eps > 0))
            detail::fail<value_error>("Adam: need 0 <= beta1, beta2 < 1 and eps > 0; got beta1=", opt_.beta1,
                                      " beta2=", opt_.beta2, " eps=", opt_.eps);
    }

    // Applies one update with learning rate lr to every parameter, from the gradients in the store.
    void step(ParameterStore<T>& params, double lr) {
        const auto n = static_cast<std::size_t>(params.total_size());
        if (m_.empty()) {
            m_.assign(n, T(0));
            v_.assign(n, T(0));
        }
        if (m_.size() != n)
            detail::fail<shape_error>("Adam::step: state holds ", m_.size(), " values, the parameters ", n);
        ++step_;
        const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(step_));
        const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(step_));
        const T b1 = T(opt_.beta1), b2 = T(opt_.beta2), eps = T(opt_.eps);
        const T step_size = T(lr / bc1), inv_sqrt_bc2 = T(1.0 / std::sqrt(bc2));
        T* p = params.values().data();
        const T* g = params.grads().data();
        T* m = m_.data();
        T* v = v_.data();
        // Element-wise, so the same floats on any number of threads.
        detail::parallel_chunks(params.total_size(), [&](index_t begin, index_t end) {
#if defined(_OPENMP)
#pragma omp simd
#endif
            for (index_t i = begin; i < end; ++i) {
                m[i] = b1 * m[i] + (T(1) - b1) * g[i];
                v[i] = b2 * v[i] + (T(1) - b2) * g[i] * g[i];
                p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
            }
        });
    }

    const AdamOptions& options() const { return opt_; }
    std::int64_t step_count() const { return step_; }
    // State access for checkpoints: first and second moments in the parameters' flat layout.
    std::vector<T>& first_moment() { return m_; }
    std::vector<T>& second_moment() { return v_; }
    const std::vector<T>& first_moment() const { return m_; }
    const std::vector<T>& second_moment() const { return v_; }
    void set_state(std::int64_t step, std::vector<T> m, std::vector<T> v) {
        if (m.size() != v.size() || step < 0)
            detail::fail<value_error>("Adam::set_state: step ", step, ", moments of ", m.size(), " and ", v.size());
        step_ = step;
        m_ = std::move(m);
        v_ = std::move(v);
    }

private:
    AdamOptions opt_;
    std::vector<T> m_, v_;
    std::int64_t step_ = 0;
};

}  // namespace despeck
