// despeck/random.hpp — a small, portable random generator (xoshiro256**, seeded by splitmix64).
//
// std::normal_distribution and friends differ between standard libraries, so a seed would not
// give the same weights or patches with libstdc++ and libc++. The integer and uniform streams here
// are defined bit-for-bit, so a seed means the same numbers on every platform; normal() goes
// through std::log, std::sin and std::cos, which may differ in the last bit between maths libraries.
#pragma once

#include <cmath>
#include <cstdint>

namespace despeck {

class Rng {
public:
    explicit Rng(std::uint64_t seed = 0) {
        std::uint64_t s = seed;
        for (auto& word : state_) word = splitmix64(s);
    }

    std::uint64_t next_u64() {
        const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
        const std::uint64_t t = state_[1] << 17;
        state_[2] ^= state_[0];
        state_[3] ^= state_[1];
        state_[1] ^= state_[2];
        state_[0] ^= state_[3];
        state_[2] ^= t;
        state_[3] = rotl(state_[3], 45);
        return result;
    }
    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
    double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
    // Uniform integer in [0, n), n > 0 (Lemire's method would be faster; this is unbiased enough
    // for n far below 2^64 and simple to reproduce).
    std::uint64_t below(std::uint64_t n) { return static_cast<std::uint64_t>(uniform() * static_cast<double>(n)) % n; }
    // Standard normal by Box-Muller (both values used).
    double normal() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        const double u1 = 1.0 - uniform();  // (0, 1]: log is finite
        const double u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        constexpr double two_pi = 6.283185307179586476925286766559;
        spare_ = r * std::sin(two_pi * u2);
        has_spare_ = true;
        return r * std::cos(two_pi * u2);
    }
    // Normal truncated to [-2, 2] standard deviations by redrawing, as Keras' truncated_normal.
    double truncated_normal() {
        for (;;) {
            const double z = normal();
            if (std::abs(z) <= 2.0) return z;
        }
    }

private:
    static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    static std::uint64_t splitmix64(std::uint64_t& s) {
        std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    std::uint64_t state_[4]{};
    double spare_ = 0;
    bool has_spare_ = false;
};

}  // namespace despeck
