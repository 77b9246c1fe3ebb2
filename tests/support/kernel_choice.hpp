// tests/support/kernel_choice.hpp — the instruction sets a test should cover, and a guard that
// restores the process-wide kernel choices (instruction set, conv algorithm, AMX) when a test ends.
#pragma once

#include <vector>

#include "despeck/kernels/conv2d.hpp"

namespace despeck::testing {

// Every instruction set this CPU runs (kernels are tested on each, not just the best).
inline std::vector<kernels::simd_isa> supported_isas() {
    std::vector<kernels::simd_isa> out;
    for (auto s : {kernels::simd_isa::scalar, kernels::simd_isa::avx2, kernels::simd_isa::avx512})
        if (kernels::cpu_supports(s)) out.push_back(s);
    return out;
}

// Fast inference's product paths to test: float, and AMX's int8 slices where the CPU has it and the
// AVX-512 kernels are selected (AMX runs with those only).
inline std::vector<bool> fast_product_amx_choices() {
    std::vector<bool> out = {false};
    if (kernels::cpu_supports_amx() && kernels::get_simd_isa() == kernels::simd_isa::avx512) out.push_back(true);
    return out;
}

struct KernelChoiceGuard {
    kernels::simd_isa isa = kernels::get_simd_isa();
    kernels::conv_algorithm algo = kernels::get_conv_algorithm();
    bool amx = kernels::get_amx_enabled();
    ~KernelChoiceGuard() {
        kernels::set_simd_isa(isa);
        kernels::set_conv_algorithm(algo);
        kernels::set_amx_enabled(amx);
    }
};

}  // namespace despeck::testing
