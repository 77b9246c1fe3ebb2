// tests/support/grad_check.hpp — the one finite-difference gradient checker, in double.
//
// For an op (or a whole model) built on a Tape<double> from a list of input tensors, it compares
// the tape's gradients of L = sum(out * R), R a fixed random tensor, with central differences.
// It is built to fail when something is wrong:
//   * Accumulation: every input's gradient buffer is pre-seeded with random values S before
//     backward, and the analytic gradient is taken as (buffer - S). A backward that assigns instead
//     of adding, or that never writes an element, leaves the wrong value and fails.
//   * Poisoning: each gradient buffer sits between two NaN-filled guard zones of 64 elements; a
//     kernel that writes past either end of it (a tail bug) leaves a guard changed and fails, and
//     every gradient read back must be finite.
//   * Tolerance: |analytic - numeric| <= abs_tol + rel_tol * max(|analytic|, |numeric|), tried
//     with several step sizes (a step across a ReLU kink or an |x| corner fails one size, not all).
//   * Vacuity: it refuses to pass when every compared analytic and numeric gradient is ~0.
#pragma once

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "despeck/autodiff/tape.hpp"
#include "despeck/random.hpp"

namespace despeck::testing {

struct GradCheckOptions {
    double rel_tol = 1e-6;
    double abs_tol = 1e-8;
    std::vector<double> steps{1e-6, 1e-5, 1e-4, 1e-7};
    // Check at most this many elements per input (chosen at random); 0 = all.
    index_t max_elements_per_input = 0;
    std::uint64_t seed = 12345;
    // Inputs whose index is listed here are constants (no gradient wanted); all others are checked.
    std::vector<std::size_t> constant_inputs{};
};

struct GradCheckReport {
    index_t compared = 0;
    double max_abs_error = 0;
    double max_rel_error = 0;
    double max_abs_gradient = 0;
    std::vector<std::string> failures;
    bool ok() const { return failures.empty() && compared > 0; }
};

// Compares the analytic gradients of a scalar function of a set of buffers with central
// differences (several step sizes). Used by check_gradients below, and directly for a whole model
// (parameters perturbed in place, the loss re-evaluated).
//   values[i]   the buffer to perturb; analytic[i] its gradient; loss() re-evaluates in double.
inline GradCheckReport compare_with_finite_differences(const std::vector<TensorView<double>>& values,
                                                       const std::vector<TensorView<const double>>& analytic,
                                                       const std::function<double()>& loss, GradCheckOptions opt = {}) {
    GradCheckReport report;
    Rng rng(opt.seed);
    for (std::size_t i = 0; i < values.size(); ++i) {
        const index_t n = values[i].size();
        std::vector<index_t> elements;
        if (opt.max_elements_per_input == 0 || n <= opt.max_elements_per_input) {
            for (index_t k = 0; k < n; ++k) elements.push_back(k);
        } else {
            for (index_t k = 0; k < opt.max_elements_per_input; ++k)
                elements.push_back(static_cast<index_t>(rng.below(static_cast<std::uint64_t>(n))));
        }
        for (index_t k : elements) {
            const double a = analytic[i][k];
            if (!std::isfinite(a)) {
                report.failures.push_back("tensor " + std::to_string(i) + " element " + std::to_string(k) + ": not finite");
                continue;
            }
            double best_excess = INFINITY, best_numeric = 0;
            for (double h : opt.steps) {
                const double base = values[i][k];
                values[i][k] = base + h;
                const double lp = loss();
                values[i][k] = base - h;
                const double lm = loss();
                values[i][k] = base;
                const double numeric = (lp - lm) / (2 * h);
                const double excess = std::abs(a - numeric) - (opt.abs_tol + opt.rel_tol * std::max(std::abs(a), std::abs(numeric)));
                if (excess < best_excess) {
                    best_excess = excess;
                    best_numeric = numeric;
                    if (excess <= 0) break;
                }
            }
            const double err = std::abs(a - best_numeric), scale = std::max(std::abs(a), std::abs(best_numeric));
            ++report.compared;
            report.max_abs_error = std::max(report.max_abs_error, err);
            report.max_abs_gradient = std::max(report.max_abs_gradient, scale);
            if (scale > 0) report.max_rel_error = std::max(report.max_rel_error, err / scale);
            if (best_excess > 0) {
                std::ostringstream msg;
                msg << "tensor " << i << " element " << k << ": analytic " << a << " vs numeric " << best_numeric;
                report.failures.push_back(msg.str());
            }
        }
    }
    if (report.max_abs_gradient < 1e-9) report.failures.push_back("every compared gradient is ~0: the check would prove nothing");
    return report;
}

// build(tape, vars) records the op(s) on the tape from the input vars and returns the output.
using GraphBuilder = std::function<Var<double>(Tape<double>&, const std::vector<Var<double>>&)>;

inline GradCheckReport check_gradients(std::vector<Tensor<double>> inputs, const GraphBuilder& build,
                                       GradCheckOptions opt = {}) {
    GradCheckReport report;
    Rng rng(opt.seed);
    auto is_constant = [&](std::size_t i) {
        for (auto c : opt.constant_inputs)
            if (c == i) return true;
        return false;
    };

    // Loss weights R, fixed for the whole check: L = sum(out * R).
    Tensor<double> weights;
    auto loss_of = [&](const std::vector<Tensor<double>>& xs) {
        Tape<double> tape;
        std::vector<Var<double>> vars;
        for (std::size_t i = 0; i < xs.size(); ++i)
            vars.push_back(is_constant(i) ? tape.constant(xs[i]) : tape.variable(xs[i]));
        Var<double> out = build(tape, vars);
        if (weights.empty()) {
            weights = Tensor<double>(out.shape());
            for (index_t k = 0; k < weights.size(); ++k) weights[k] = rng.uniform(-1.0, 1.0);
        }
        return (out.value().flat() * weights.flat()).sum();
    };
    loss_of(inputs);  // fixes R

    // Analytic gradients, with seeded buffers and poisoned bystanders.
    Tape<double> tape;
    std::vector<Var<double>> vars;
    constexpr index_t guard = 64;
    std::vector<Tensor<double>> seeds(inputs.size());
    std::vector<std::vector<double>> guarded(inputs.size());  // [NaN x guard | gradient | NaN x guard]
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (is_constant(i)) {
            vars.push_back(tape.constant(inputs[i]));
            continue;
        }
        seeds[i] = Tensor<double>(inputs[i].shape());
        for (index_t k = 0; k < seeds[i].size(); ++k) seeds[i][k] = rng.uniform(-1.0, 1.0);
        guarded[i].assign(static_cast<std::size_t>(seeds[i].size() + 2 * guard), std::nan(""));
        std::copy(seeds[i].data(), seeds[i].data() + seeds[i].size(), guarded[i].data() + guard);
        // The input is a leaf whose gradient buffer we own, pre-seeded with S.
        vars.push_back(tape.parameter(inputs[i].view(), TensorView<double>(guarded[i].data() + guard, inputs[i].shape()),
                                      "checked_input"));
    }
    Var<double> out = build(tape, vars);
    if (out.shape() != weights.shape()) {
        report.failures.push_back("output shape changed between runs");
        return report;
    }
    tape.backward(out, weights.view());
    std::vector<Tensor<double>> seeded_grads(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (is_constant(i)) continue;
        const index_t n = inputs[i].size();
        for (index_t k = 0; k < guard; ++k)
            if (!std::isnan(guarded[i][static_cast<std::size_t>(k)]) ||
                !std::isnan(guarded[i][static_cast<std::size_t>(guard + n + k)])) {
                report.failures.push_back("input " + std::to_string(i) + ": backward wrote outside its gradient buffer");
                break;
            }
        seeded_grads[i] = Tensor<double>(inputs[i].shape());
        std::copy(guarded[i].data() + guard, guarded[i].data() + guard + n, seeded_grads[i].data());
    }

    // Analytic = buffer after backward - seed; a never-written or overwritten element shows here.
    std::vector<TensorView<double>> values;
    std::vector<Tensor<double>> analytic_storage;
    std::vector<TensorView<const double>> analytic;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (is_constant(i)) continue;
        analytic_storage.push_back(seeded_grads[i]);
        analytic_storage.back().flat() -= seeds[i].flat();
        values.push_back(inputs[i].view());
    }
    for (const auto& a : analytic_storage) analytic.push_back(a.view());
    GradCheckReport fd = compare_with_finite_differences(values, analytic, [&] { return loss_of(inputs); }, opt);
    fd.failures.insert(fd.failures.begin(), report.failures.begin(), report.failures.end());
    return fd;
}

// doctest glue: checks the report and prints what failed, with the seed.
inline void require_gradients_match(const GradCheckReport& r, std::uint64_t seed = GradCheckOptions{}.seed) {
    INFO("seed " << seed << ", compared " << r.compared << ", max abs error " << r.max_abs_error
                 << ", max rel error " << r.max_rel_error << ", max |gradient| " << r.max_abs_gradient);
    std::string first;
    for (std::size_t i = 0; i < r.failures.size() && i < 5; ++i) first += r.failures[i] + "\n";
    INFO(r.failures.size() << " failure(s):\n" << first);
    CHECK(r.ok());
}

inline Tensor<double> random_tensor(Shape shape, Rng& rng, double lo = -1, double hi = 1) {
    Tensor<double> t(shape);
    for (index_t k = 0; k < t.size(); ++k) t[k] = rng.uniform(lo, hi);
    return t;
}

}  // namespace despeck::testing
