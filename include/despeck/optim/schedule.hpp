// despeck/optim/schedule.hpp — piecewise-constant learning rates.
//
//   lr(t) = values[k], k = number of boundaries b with t >= b   (t: epoch or step, from 0)
// deSpeckNet's schedule: 1e-3, then 1e-4. The TensorFlow code uses lr 1e-3 for epochs 0..30,
// 1e-4 for 31..60 and 5e-5 after (tf_despecknet()).
#pragma once

#include <string>
#include <vector>

#include "despeck/error.hpp"

namespace despeck {

class PiecewiseConstantSchedule {
public:
    PiecewiseConstantSchedule(std::vector<long> boundaries, std::vector<double> values)
        : boundaries_(std::move(boundaries)), values_(std::move(values)) {
        if (values_.size() != boundaries_.size() + 1)
            detail::fail<value_error>("PiecewiseConstantSchedule: ", values_.size(), " values need ",
                                      values_.size() - 1, " boundaries, got ", boundaries_.size());
        for (std::size_t i = 1; i < boundaries_.size(); ++i)
            if (boundaries_[i] <= boundaries_[i - 1])
                detail::fail<value_error>("PiecewiseConstantSchedule: boundaries must increase, got ", boundaries_[i - 1],
                                          " then ", boundaries_[i]);
        for (double v : values_)
            if (!(v > 0)) detail::fail<value_error>("PiecewiseConstantSchedule: learning rate ", v, " is not positive");
    }
    static PiecewiseConstantSchedule constant(double lr) { return {{}, {lr}}; }
    static PiecewiseConstantSchedule tf_despecknet() { return {{31, 61}, {1e-3, 1e-4, 5e-5}}; }

    double operator()(long t) const {
        std::size_t k = 0;
        while (k < boundaries_.size() && t >= boundaries_[k]) ++k;
        return values_[k];
    }
    const std::vector<long>& boundaries() const { return boundaries_; }
    const std::vector<double>& values() const { return values_; }

private:
    std::vector<long> boundaries_;
    std::vector<double> values_;
};

}  // namespace despeck
