// despeck/runtime.hpp — what the running build can do: OpenMP on or off, thread count, SIMD.
//
// Programs print this at start-up so that a run on one core, or without vector instructions,
// never goes unnoticed.
#pragma once

#include <string>

#include <Eigen/Core>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace despeck {

inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;
inline constexpr const char* version_string = "0.1.0";

struct runtime_info {
    bool openmp = false;        // compiled with OpenMP
    int max_threads = 1;        // threads a parallel region will use
    std::string simd;           // Eigen's instruction sets in use, e.g. "AVX512, FMA, AVX2, ..."
    int eigen_version_major = EIGEN_WORLD_VERSION;
    int eigen_version_minor = EIGEN_MAJOR_VERSION;
};

inline runtime_info get_runtime_info() {
    runtime_info info;
#if defined(_OPENMP)
    info.openmp = true;
    info.max_threads = omp_get_max_threads();
#endif
    info.simd = Eigen::SimdInstructionSetsInUse();
    return info;
}

// Sets the threads used by despeck's parallel loops (and Eigen's OpenMP-parallel GEMM).
// Without OpenMP it accepts only 1, so a request for more threads is never silently ignored.
inline bool set_num_threads(int threads) {
#if defined(_OPENMP)
    if (threads < 1) return false;
    omp_set_num_threads(threads);
    return true;
#else
    return threads == 1;
#endif
}

inline std::string describe_runtime() {
    const runtime_info info = get_runtime_info();
    std::string text = "despeck " + std::string(version_string) + ", Eigen " +
                       std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
                       std::to_string(EIGEN_MINOR_VERSION) + ", OpenMP ";
    text += info.openmp ? "on, " + std::to_string(info.max_threads) + " thread(s)" : "off (1 thread)";
    text += ", SIMD: " + info.simd;
    return text;
}

}  // namespace despeck
