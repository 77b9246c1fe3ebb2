// despeck/kernels/conv2d_direct.hpp — direct NHWC convolution with register-blocked SIMD
// micro-kernels (AVX-512, AVX2+FMA, portable scalar), chosen at run time from the CPU.
//
// Shapes as in conv2d_reference.hpp: x [N,H,W,Ci], w [K,K,Ci,Co] (HWIO, K odd), "same" output.
// float only; double stays on im2col_gemm/reference (it serves gradient checks, not speed).
//
// Forward: one work item is an output row (n, h) and a chunk of output channels (up to
// max_nv * width: 64 on AVX-512). Along the row, blocks of up to max_rw pixels (6 on AVX-512)
// keep max_rw x max_nv accumulators in registers (24 of 32 zmm) over all K*K taps and Ci input
// channels: per input channel, max_nv weight vectors are loaded once and max_rw input values
// broadcast, 24 FMAs per 10 loads. Blocks that touch the left or right border read a zero-padded
// copy of their input window, so the inner loop never tests bounds. Weights are repacked once per
// call to [K*K*Ci][Co rounded up to the vector width], zero-filled, so tails never load past the end.
// Backward-data is the forward pass of dy with the weights rotated 180 degrees and in/out
// swapped (packed the same way), added into dx; its output rows never overlap, so no atomics.
// Backward-weights: one micro-kernel keeps a tile of 6 input channels x 64 output channels of one
// tap in registers and streams the pixels of a few rows; threads own disjoint (tap, channel)
// tiles, so the sum order, and the result, do not depend on the thread count.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define DESPECK_X86 1
#include <immintrin.h>
#endif
// AMX (fast inference's products): tile instructions exist in 64-bit mode only (and need GNU
// as 2.34 or later); the run-time check reads CPUID and asks Linux for the tile state.
#if defined(__x86_64__) && defined(__GNUC__)
#define DESPECK_AMX_KERNELS 1
#endif
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define DESPECK_AMX_POSSIBLE 1
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "despeck/error.hpp"
#include "despeck/tensor.hpp"

// Register tiles are arrays indexed by compile-time loop counters; they stay in registers only when
// those loops are fully unrolled, whatever -O level the including project uses.
#if defined(__clang__)
#define DESPECK_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define DESPECK_UNROLL _Pragma("GCC unroll 16")
#else
#define DESPECK_UNROLL
#endif
// For small transforms whose vector arguments must stay in registers: an out-of-line call passes
// them through memory (GCC 12 stopped inlining winograd6_bt once it had two callers).
#if defined(__GNUC__)
#define DESPECK_ALWAYS_INLINE [[gnu::always_inline]] inline
#else
#define DESPECK_ALWAYS_INLINE inline
#endif

namespace despeck::kernels {

// ---- instruction sets -----------------------------------------------------------------------

enum class simd_isa { scalar, avx2, avx512 };

inline std::string_view to_string(simd_isa s) {
    switch (s) {
        case simd_isa::scalar: return "scalar";
        case simd_isa::avx2: return "avx2";
        case simd_isa::avx512: return "avx512";
    }
    return "unknown";
}

// Whether this CPU (and OS: libgcc checks XCR0) runs the given kernels.
inline bool cpu_supports(simd_isa s) {
    switch (s) {
        case simd_isa::scalar: return true;
#if DESPECK_X86 && defined(__GNUC__)
        case simd_isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case simd_isa::avx512: return __builtin_cpu_supports("avx512f");
#else
        case simd_isa::avx2:
        case simd_isa::avx512: return false;
#endif
    }
    return false;
}

inline simd_isa best_simd_isa() {
    if (cpu_supports(simd_isa::avx512)) return simd_isa::avx512;
    if (cpu_supports(simd_isa::avx2)) return simd_isa::avx2;
    return simd_isa::scalar;
}

inline simd_isa parse_simd_isa(std::string_view name) {
    for (simd_isa s : {simd_isa::scalar, simd_isa::avx2, simd_isa::avx512})
        if (name == to_string(s)) return s;
    detail::fail<value_error>("unknown SIMD instruction set '", std::string(name), "' (scalar, avx2 or avx512)");
}

namespace detail_direct {
// The process-wide choice: the environment variable DESPECK_SIMD (scalar|avx2|avx512) forces one,
// which is how the test suite runs every path on one machine; otherwise the best the CPU has.
inline simd_isa initial_isa() {
    if (const char* env = std::getenv("DESPECK_SIMD"); env && *env) {
        const simd_isa s = parse_simd_isa(env);
        if (!cpu_supports(s))
            detail::fail<value_error>("DESPECK_SIMD=", env, " but this CPU does not support ", to_string(s));
        return s;
    }
    return best_simd_isa();
}
inline std::atomic<simd_isa>& selected_isa() {
    static std::atomic<simd_isa> s{initial_isa()};
    return s;
}
}  // namespace detail_direct

inline simd_isa get_simd_isa() { return detail_direct::selected_isa(); }
// Forces the kernels of one instruction set; refuses one this CPU lacks.
inline void set_simd_isa(simd_isa s) {
    if (!cpu_supports(s)) detail::fail<value_error>("set_simd_isa: this CPU does not support ", to_string(s));
    detail_direct::selected_isa() = s;
}

// ---- AMX: the tile matrix unit, for inference's 64 -> 64 layers ------------------------------
// Intel Xeons from Sapphire Rapids on multiply bf16 tiles (AMX-BF16) at 16 times the rate of
// their float FMAs on paper (9.5 times measured, docs/benchmarks.md), and int8 tiles (AMX-INT8)
// at twice that. Fast inference (prepare_conv_winograd with tile 6, 64 -> 64 channels) runs its
// products there as exact int8 products of three 8-bit slices per value
// (detail/winograd_amx.inl), within fast mode's bound (docs/benchmarks.md, "Fast inference
// accuracy"); exact inference its direct 64 -> 64 layers as nine exact bf16 products per float
// product (detail/conv2d_amx_exact.inl). Linux hands the tile state to a process only on
// request; the first call of cpu_supports_amx() makes that request (from then on the process's
// signal frames carry the 8 KiB of tile data: a host program that handles signals on a small
// sigaltstack should set DESPECK_AMX=0, which skips the request).

// Whether the CPU has AMX-TILE, AMX-BF16 and AMX-INT8 (every AMX CPU so far has the last two) and
// AVX512-BF16, and Linux grants this process the tiles.
inline bool cpu_supports_amx() {
    static const bool supported = [] {
#if DESPECK_AMX_POSSIBLE
        unsigned a = 0, b = 0, c = 0, d = 0;
        if (!__builtin_cpu_supports("avx512f") || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
        const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u, amx_int8 = (d >> 25) & 1u;
        if (!amx_bf16 || !amx_tile || !amx_int8 || a < 1 || !__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1u)) return false;
        constexpr long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;  // from asm/prctl.h
        if (syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) != 0) return false;
        unsigned xcr0_lo = 0, xcr0_hi = 0;  // the OS saves the tile configuration and data (XCR0 bits 17, 18)
        asm volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
        return ((xcr0_lo >> 17) & 3u) == 3u;
#else
        return false;
#endif
    }();
    return supported;
}

namespace detail_direct {
// DESPECK_AMX=0 keeps inference off AMX (fast mode's products in float, exact mode on the direct
// and sparse kernels), =1 turns AMX on (an error on a CPU without it); unset: AMX where the CPU
// has it. Either way AMX runs with the AVX-512 kernels only (DESPECK_SIMD=avx2 or scalar leaves
// it unused).
inline bool initial_amx() {
    if (const char* env = std::getenv("DESPECK_AMX"); env && *env) {
        const std::string_view v = env;
        if (v == "0") return false;
        if (v != "1") detail::fail<value_error>("DESPECK_AMX=", env, ": expected 0 or 1");
        if (!cpu_supports_amx())
            detail::fail<value_error>("DESPECK_AMX=1 but this CPU (or OS) offers no AMX tiles (AMX-BF16 and AMX-INT8)");
        return true;
    }
    return cpu_supports_amx();
}
inline std::atomic<bool>& amx_selected() {
    static std::atomic<bool> s{initial_amx()};
    return s;
}
}  // namespace detail_direct

// Whether prepare_conv_winograd puts fast inference's 64 -> 64 layers on AMX, and
// prepare_amx_exact exact inference's (when the AVX-512 kernels are selected too). Layers
// prepared before a change keep the choice they were made with.
inline bool get_amx_enabled() { return detail_direct::amx_selected(); }
inline void set_amx_enabled(bool on) {
    if (on && !cpu_supports_amx()) detail::fail<value_error>("set_amx_enabled: this CPU (or OS) offers no AMX tiles (AMX-BF16 and AMX-INT8)");
    detail_direct::amx_selected() = on;
}

// One line for a program's start-up output: the convolution kernels' instruction set and
// whether inference uses AMX.
inline std::string describe_kernels() {
    std::string text = "convolution kernels: " + std::string(to_string(get_simd_isa()));
    const bool amx = get_amx_enabled() && get_simd_isa() == simd_isa::avx512;
    text += amx ? ", inference on AMX where it pays (exact: nine exact bf16 products per float product; fast: int8 "
                  "products of three 8-bit slices)"
                : ", no AMX";
    return text;
}

// A prefetch into L1 that the compiler keeps. GCC 12 finds a function whose only statements are
// __builtin_prefetch calls free of side effects (pure) and deletes the calls to it: the first
// version of the window prefetch, a small function of its own, compiled to nothing. Volatile
// assembly cannot be deleted. For the kernels' bodies, not part of the API.
namespace detail_direct {
inline void prefetch_into_l1(const void* p) {
#if DESPECK_X86 && defined(__GNUC__)
    asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
    __builtin_prefetch(p, 0, 3);
#endif
}
// One prefetch per 64 bytes from p: every line of [p, p + bytes) when p is line-aligned, as the
// callers' rows of 64-channel pixels are. Volatile assembly inside, so GCC keeps the calls.
inline void prefetch_span_into_l1(const void* p, index_t bytes) {
    const char* c = static_cast<const char*>(p);
    for (index_t b = 0; b < bytes; b += 64) prefetch_into_l1(c + b);
}
}  // namespace detail_direct

// ---- arguments shared by every instruction set ----------------------------------------------

struct DirectConvArgs {
    const float* x = nullptr;            // [N,H,W,ci] input (forward) or dy (backward-data)
    const float* dy = nullptr;           // [N,H,W,co] (backward-weights)
    const float* wp = nullptr;           // packed weights [K*K*ci][cop] (forward)
    const float* bias_padded = nullptr;  // [cop] or nullptr
    float* y = nullptr;                  // [N,H,W,co] output (forward)
    float* dw = nullptr;                 // [K,K,ci,co] (backward-weights, added into)
    index_t N = 0, H = 0, W = 0, ci = 0, co = 0, cop = 0, chunk_width = 0;
    int K = 3;
    bool accumulate = false;
    // Forward epilogue: y = relu?(acc * post_scale + post_shift), both [cop] or nullptr.
    const float* post_scale = nullptr;
    const float* post_shift = nullptr;
    bool post_relu = false;
};

// What a forward register tile does before it is stored (pointers at the tile's first channel).
struct BlockEpilogue {
    const float* scale;
    const float* shift;
    bool relu;
};

// Forward with 1-4 output channels (the last layer): y = relu?(conv(x, w) + bias), vectorised over
// the input channels. wp packed [K*K][co][ci]; bias [co] or nullptr.
struct SmallCoArgs {
    const float* x = nullptr;
    const float* wp = nullptr;
    const float* bias = nullptr;
    float* y = nullptr;
    index_t N = 0, H = 0, W = 0, ci = 0, co = 0;
    int K = 3;
    bool relu = false;
};
constexpr index_t small_co_max = 4;
constexpr index_t small_co_max_pixels = 8;  // the widest pixel block of small_co_row

// Winograd F(m x m, 3x3) forward, m = 4 or 6: x [N,H,W,ci] -> y [N,H,W,co] = relu?(conv(x, w) + bias).
struct WinogradArgs {
    const float* x = nullptr;
    const float* wt = nullptr;           // transformed weights [P][ci][cop], P = (m + 2)^2 points
    const float* bias_padded = nullptr;  // [cop] or nullptr
    float* y = nullptr;
    index_t N = 0, H = 0, W = 0, ci = 0, co = 0, cop = 0;
    bool relu = false;
    bool accumulate = false;  // y += result (backward-data); relu must be off then
    int m = 4;                // output tile: 4 for F(4x4,3x3), 6 for F(6x6,3x3)
    bool stream = false;      // F(6x6): whole tiles' stores bypass the cache (see run_winograd)
    bool in_place = false;    // the products overwrite the transformed input (see run_winograd)
};

// Winograd F(4x4, 3x3) backward-weights, one chunk of tiles at a time: transformed x and dy of up
// to `slots` tiles in u [slots][36][ci] and d [slots][36][co]; dwt [36][ci][co] accumulates the
// products in the transformed domain.
struct WinogradWeightsArgs {
    const float* x = nullptr;   // [N,H,W,ci]
    const float* dy = nullptr;  // [N,H,W,co]
    float* u = nullptr;
    float* d = nullptr;
    float* dwt = nullptr;
    index_t N = 0, H = 0, W = 0, ci = 0, co = 0, slots = 0;
    bool overwrite = false;  // the chunk's products replace dwt instead of adding to it
};

// ---- the micro-kernels, one copy per instruction set ----------------------------------------

namespace direct_scalar {
// A portable 4-lane "vector" of plain floats; the compiler may vectorise it for the baseline ISA.
struct V {
    struct reg {
        float v[4];
    };
    static constexpr int width = 4, max_rw = 4, max_nv = 2;
    static reg zero() { return reg{{0, 0, 0, 0}}; }
    static reg load(const float* p) { return reg{{p[0], p[1], p[2], p[3]}}; }
    static void store(float* p, reg r) { std::copy(r.v, r.v + 4, p); }
    static void stream(float* p, reg r) { store(p, r); }
    static void fence() {}
    static reg bcast(float s) { return reg{{s, s, s, s}}; }
    // One rounding where the CPU has FMA, as the SIMD kernels: left as c += a * b, the compiler
    // would fuse some sites and not others, and kernels that must agree bit for bit (dense and
    // sparse-input forward) would not.
    static reg fma(reg a, reg b, reg c) {
        for (int k = 0; k < 4; ++k) {
#if defined(FP_FAST_FMAF)
            c.v[k] = std::fma(a.v[k], b.v[k], c.v[k]);
#else
            c.v[k] += a.v[k] * b.v[k];  // no FMA instruction to fuse into
#endif
        }
        return c;
    }
    static reg add(reg a, reg b) {
        for (int k = 0; k < 4; ++k) a.v[k] += b.v[k];
        return a;
    }
    static reg sub(reg a, reg b) {
        for (int k = 0; k < 4; ++k) a.v[k] -= b.v[k];
        return a;
    }
    static reg mul(reg a, reg b) {
        for (int k = 0; k < 4; ++k) a.v[k] *= b.v[k];
        return a;
    }
    static reg max(reg a, reg b) {
        for (int k = 0; k < 4; ++k) a.v[k] = a.v[k] > b.v[k] ? a.v[k] : b.v[k];
        return a;
    }
    static reg load_part(const float* p, int n) {
        reg r = zero();
        for (int k = 0; k < n; ++k) r.v[k] = p[k];
        return r;
    }
    static void store_part(float* p, reg r, int n) {
        for (int k = 0; k < n; ++k) p[k] = r.v[k];
    }
    static float hsum(reg r) { return (r.v[0] + r.v[2]) + (r.v[1] + r.v[3]); }
    static void keep_in_register(reg&) {}
    // Bit l set where x[l] is nonzero (NaN included, -0 not), for the width lanes at x.
    static unsigned nonzero_bits(const float* x) {
        unsigned m = 0;
        for (int l = 0; l < 4; ++l) m |= unsigned(x[l] != 0.0f) << l;
        return m;
    }
};
#include "despeck/kernels/detail/conv2d_direct_body.inl"
}  // namespace direct_scalar

#if DESPECK_AMX_KERNELS
// Fast inference's int8 slices on AMX (detail/winograd_amx.inl), in plain code: the packed weights
// and the tests use them on any x86-64 CPU, the kernel's vector form matches them bit for bit.
namespace direct_amx {
constexpr index_t slices = 3;
// The largest magnitude of n values `stride` apart, as its bit pattern: an unsigned compare of
// the bits orders finite floats, inf and NaN (slice_row finds a row's the same way).
inline std::uint32_t largest_magnitude_bits(const float* x, index_t n, index_t stride = 1) {
    std::uint32_t top = 0;
    for (index_t i = 0; i < n; ++i) top = std::max(top, std::bit_cast<std::uint32_t>(x[i * stride]) & 0x7fffffffu);
    return top;
}
// A row's (or column's) scale from its largest magnitude m: 127 * 2^16 / m, which takes the
// row into [-127 * 2^16, 127 * 2^16] (up to the product's rounding), and the unscale m / 127,
// such that x = (slice 0 + slice 1 / 2^8 + slice 2 / 2^16) unscale within half a unit of
// slice 2 (2^-24 m) and the rounding of the product and the two divisions (2^-23 of x). Under
// 2^-100 the row counts as zero (0 and 0); an inf or NaN makes it NaN (0 and NaN). `bits`: m's
// bit pattern, as largest_magnitude_bits gives it.
struct SliceScale {
    float scale, unscale;
};
inline SliceScale slice_scale(std::uint32_t bits) {
    if (bits >= 0x7f800000u) return {0.f, std::numeric_limits<float>::quiet_NaN()};
    if (bits < 0x0d800000u) return {0.f, 0.f};  // 2^-100
    const float m = std::bit_cast<float>(bits);
    return {8323072.f / m, m / 127.f};
}
// One value scaled as slice_scale says (y = x * scale, |y| <= 127 * 2^16) as its three int8
// slices, the signed digits of base 256 of q, the nearest integer to y (ties to even): slice 0 *
// 2^16 + slice 1 * 2^8 + slice 2 = q, each slice in -128 .. 127 (slice 0 in -127 .. 127). The
// digits are the bytes of q + 0x8080, each with its top bit flipped: the offset carries each
// lower digit's range -128 .. 127 into the next byte. Balanced digits, not bytes 0 .. 255 below a
// signed top one: the terms the kernel drops (slice 1 x slice 2 and beyond) then have either
// sign; unsigned ones all fell on one side, 2^-15 of the largest product over 64 channels.
inline void slice_scaled(float y, std::int8_t out[slices]) {
    const auto q = (static_cast<std::int32_t>(std::nearbyint(y)) + 0x8080) ^ 0x8080;
    out[0] = static_cast<std::int8_t>(q >> 16);
    out[1] = static_cast<std::int8_t>(static_cast<std::uint8_t>(q >> 8));
    out[2] = static_cast<std::int8_t>(static_cast<std::uint8_t>(q));
}
// x's slices under its row's scale s: zero where s.scale is 0 (a zero, tiny or non-finite row,
// whose x * 0 could be NaN).
inline void slice_value(float x, SliceScale s, std::int8_t out[slices]) {
    out[0] = out[1] = out[2] = 0;
    if (s.scale != 0.f) slice_scaled(x * s.scale, out);
}
}  // namespace direct_amx
#endif

#if DESPECK_X86 && defined(__GNUC__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace direct_avx2 {
// 16 ymm registers: 6 pixels x 2 vectors of accumulators + 2 weights + 1 broadcast.
struct V {
    using reg = __m256;
    static constexpr int width = 8, max_rw = 6, max_nv = 2;
    static reg zero() { return _mm256_setzero_ps(); }
    static reg load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, reg r) { _mm256_storeu_ps(p, r); }
    static void stream(float* p, reg r) { _mm256_stream_ps(p, r); }  // p 32-byte aligned
    static void fence() { _mm_sfence(); }
    static reg bcast(float s) { return _mm256_set1_ps(s); }
    static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
    static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
    static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
    static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
    static __m256i mask(int n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static reg load_part(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
    static void store_part(float* p, reg r, int n) { _mm256_maskstore_ps(p, mask(n), r); }
    // The sum of the lanes as a tree: lanes l and l + 4, then l + 2, then l + 1.
    static float hsum(reg r) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
    }
    // An empty asm that claims to change r: GCC can no longer fold r's load into every
    // instruction that reads r (loading it once per use), and keeps it in a register.
    static void keep_in_register(reg& r) { asm("" : "+x"(r)); }
    // As the scalar version: NEQ_UQ is true for NaN and false for -0.
    static unsigned nonzero_bits(const float* x) {
        return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x), _mm256_setzero_ps(), _CMP_NEQ_UQ)));
    }
};
#include "despeck/kernels/detail/conv2d_direct_body.inl"
}  // namespace direct_avx2
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f")
#endif
namespace direct_avx512 {
// 32 zmm registers: 6 pixels x 4 vectors (64 channels) of accumulators + 4 weights + 1 broadcast.
struct V {
    using reg = __m512;
    static constexpr int width = 16, max_rw = 6, max_nv = 4;
    static reg zero() { return _mm512_setzero_ps(); }
    static reg load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, reg r) { _mm512_storeu_ps(p, r); }
    static void stream(float* p, reg r) { _mm512_stream_ps(p, r); }  // p 64-byte aligned
    static void fence() { _mm_sfence(); }
    static reg bcast(float s) { return _mm512_set1_ps(s); }
    static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
    static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
    static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
    // Masked form with a as the source: _mm512_max_ps starts from _mm512_undefined_ps(), which
    // GCC 12 reports as used uninitialized once inlined into some callers (a false positive).
    static reg max(reg a, reg b) { return _mm512_mask_max_ps(a, static_cast<__mmask16>(0xFFFF), a, b); }
    static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
    static reg load_part(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
    static void store_part(float* p, reg r, int n) { _mm512_mask_storeu_ps(p, mask(n), r); }
    static float hsum(reg r) { return _mm512_reduce_add_ps(r); }  // a tree of shuffles and adds
    static void keep_in_register(reg& r) { asm("" : "+v"(r)); }   // see the AVX2 version
    // As the scalar version: NEQ_UQ is true for NaN and false for -0.
    static unsigned nonzero_bits(const float* x) {
        return _mm512_cmp_ps_mask(_mm512_loadu_ps(x), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    }
};
#include "despeck/kernels/detail/conv2d_direct_body.inl"
}  // namespace direct_avx512
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16")
#endif
#if DESPECK_AMX_KERNELS
#include "despeck/kernels/detail/winograd_amx.inl"
#include "despeck/kernels/detail/conv2d_amx_exact.inl"
#endif
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // x86

// ---- drivers: packing, threading, dispatch ---------------------------------------------------

namespace detail_direct {

struct IsaTable {
    int width, max_rw, max_nv;
    void (*forward_row)(const DirectConvArgs&, index_t, index_t, index_t, float*);
    void (*weights_item)(const DirectConvArgs&, index_t, index_t, index_t, int, int, index_t, index_t);
    void (*winograd_item)(const WinogradArgs&, index_t, index_t, index_t, index_t, float*);
    void (*small_co_row)(const SmallCoArgs&, index_t, index_t, float*);
    void (*winograd_weights_transform)(const WinogradWeightsArgs&, index_t, index_t);
    void (*winograd_weights_item)(const WinogradWeightsArgs&, int, index_t, index_t, index_t);
    index_t (*sparse_forward_rows)(const DirectConvArgs&, index_t, index_t, float, float*);
};

template <class Ns>
IsaTable make_table() {
    return {Ns::V::width,        Ns::V::max_rw,      Ns::V::max_nv,
            &Ns::forward_row,     &Ns::weights_item,  &Ns::winograd_item,
            &Ns::small_co_row,    &Ns::winograd_weights_transform, &Ns::winograd_weights_item,
            &Ns::sparse_forward_rows};
}

struct ScalarNs {
    using V = direct_scalar::V;
    static void forward_row(const DirectConvArgs& a, index_t n, index_t h, index_t c, float* s) {
        direct_scalar::forward_row(a, n, h, c, s);
    }
    static void weights_item(const DirectConvArgs& a, index_t n, index_t h0, index_t h1, int i, int j, index_t c0,
                             index_t c1) {
        direct_scalar::weights_item(a, n, h0, h1, i, j, c0, c1);
    }
    static void winograd_item(const WinogradArgs& a, index_t n, index_t th, index_t t0, index_t t1, float* s) {
        direct_scalar::winograd_item(a, n, th, t0, t1, s);
    }
    static void small_co_row(const SmallCoArgs& a, index_t n, index_t h, float* s) { direct_scalar::small_co_row(a, n, h, s); }
    static void winograd_weights_transform(const WinogradWeightsArgs& a, index_t tile, index_t slot) {
        direct_scalar::winograd_weights_transform(a, tile, slot);
    }
    static void winograd_weights_item(const WinogradWeightsArgs& a, int p, index_t c0, index_t c1, index_t nt) {
        direct_scalar::winograd_weights_item(a, p, c0, c1, nt);
    }
    static index_t sparse_forward_rows(const DirectConvArgs& a, index_t r0, index_t r1, float max_density, float* s) {
        return direct_scalar::sparse_forward_rows(a, r0, r1, max_density, s);
    }
};
#if DESPECK_X86 && defined(__GNUC__)
struct Avx2Ns {
    using V = direct_avx2::V;
    static void forward_row(const DirectConvArgs& a, index_t n, index_t h, index_t c, float* s) {
        direct_avx2::forward_row(a, n, h, c, s);
    }
    static void weights_item(const DirectConvArgs& a, index_t n, index_t h0, index_t h1, int i, int j, index_t c0,
                             index_t c1) {
        direct_avx2::weights_item(a, n, h0, h1, i, j, c0, c1);
    }
    static void winograd_item(const WinogradArgs& a, index_t n, index_t th, index_t t0, index_t t1, float* s) {
        direct_avx2::winograd_item(a, n, th, t0, t1, s);
    }
    static void small_co_row(const SmallCoArgs& a, index_t n, index_t h, float* s) { direct_avx2::small_co_row(a, n, h, s); }
    static void winograd_weights_transform(const WinogradWeightsArgs& a, index_t tile, index_t slot) {
        direct_avx2::winograd_weights_transform(a, tile, slot);
    }
    static void winograd_weights_item(const WinogradWeightsArgs& a, int p, index_t c0, index_t c1, index_t nt) {
        direct_avx2::winograd_weights_item(a, p, c0, c1, nt);
    }
    static index_t sparse_forward_rows(const DirectConvArgs& a, index_t r0, index_t r1, float max_density, float* s) {
        return direct_avx2::sparse_forward_rows(a, r0, r1, max_density, s);
    }
};
struct Avx512Ns {
    using V = direct_avx512::V;
    static void forward_row(const DirectConvArgs& a, index_t n, index_t h, index_t c, float* s) {
        direct_avx512::forward_row(a, n, h, c, s);
    }
    static void weights_item(const DirectConvArgs& a, index_t n, index_t h0, index_t h1, int i, int j, index_t c0,
                             index_t c1) {
        direct_avx512::weights_item(a, n, h0, h1, i, j, c0, c1);
    }
    static void winograd_item(const WinogradArgs& a, index_t n, index_t th, index_t t0, index_t t1, float* s) {
        direct_avx512::winograd_item(a, n, th, t0, t1, s);
    }
    static void small_co_row(const SmallCoArgs& a, index_t n, index_t h, float* s) { direct_avx512::small_co_row(a, n, h, s); }
    static void winograd_weights_transform(const WinogradWeightsArgs& a, index_t tile, index_t slot) {
        direct_avx512::winograd_weights_transform(a, tile, slot);
    }
    static void winograd_weights_item(const WinogradWeightsArgs& a, int p, index_t c0, index_t c1, index_t nt) {
        direct_avx512::winograd_weights_item(a, p, c0, c1, nt);
    }
    static index_t sparse_forward_rows(const DirectConvArgs& a, index_t r0, index_t r1, float max_density, float* s) {
        return direct_avx512::sparse_forward_rows(a, r0, r1, max_density, s);
    }
};
#endif

inline IsaTable table(simd_isa s) {
    switch (s) {
        case simd_isa::scalar: return make_table<ScalarNs>();
#if DESPECK_X86 && defined(__GNUC__)
        case simd_isa::avx2: return make_table<Avx2Ns>();
        case simd_isa::avx512: return make_table<Avx512Ns>();
#else
        default: break;
#endif
    }
    detail::fail<value_error>("direct convolution: no kernels for ", to_string(s), " in this build");
}

inline std::atomic<simd_isa>& last_isa() {
    static std::atomic<simd_isa> s{simd_isa::scalar};
    return s;
}
inline std::atomic<bool>& last_streamed() {
    static std::atomic<bool> s{false};
    return s;
}
inline std::atomic<index_t>& last_sparse_rows() {
    static std::atomic<index_t> s{0};
    return s;
}
inline std::atomic<bool>& last_in_place() {
    static std::atomic<bool> s{false};
    return s;
}
inline std::atomic<bool>& last_amx() {
    static std::atomic<bool> s{false};
    return s;
}
inline std::atomic<bool>& last_amx_exact() {
    static std::atomic<bool> s{false};
    return s;
}

inline index_t round_up(index_t v, index_t m) { return (v + m - 1) / m * m; }

// Winograd F(m x m, 3x3) exists for output tiles m = 4 and 6.
inline void check_winograd_tile(const char* where, int m) {
    if (m != 4 && m != 6) detail::fail<value_error>(where, ": output tile ", m, " (F(4x4,3x3) or F(6x6,3x3): 4 or 6)");
}

inline void check_kernel(const char* where, index_t K) {
    if (K < 1 || K % 2 == 0 || K > 15)
        detail::fail<shape_error>(where, ": direct kernels take odd kernel sizes 1..15, got ", K);
}

// Runs item(it, scratch) for it in [0, items) over the OpenMP threads, split statically (fixed:
// items of equal cost) or handed out as threads free up (dynamic: items whose cost varies, or
// threads the host may slow); each thread has its own scratch of `scratch_floats` floats, from
// the tensor cache (a fresh mmap'ed buffer per call would page-fault on every layer).
enum class ItemSchedule { fixed, dynamic };
template <class Item>
void for_each_item(index_t items, index_t scratch_floats, ItemSchedule schedule, const Item& item) {
#if defined(_OPENMP)
#pragma omp parallel if (items > 1)
#endif
    {
        Tensor<float> buf = Tensor<float>::uninitialized(Shape{std::max<index_t>(scratch_floats, 1)});
        if (schedule == ItemSchedule::dynamic) {
#if defined(_OPENMP)
#pragma omp for schedule(dynamic)
#endif
            for (index_t it = 0; it < items; ++it) item(it, buf.data());
        } else {
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
            for (index_t it = 0; it < items; ++it) item(it, buf.data());
        }
    }
}
template <class Item>
void for_each_item(index_t items, index_t scratch_floats, const Item& item) {
    for_each_item(items, scratch_floats, ItemSchedule::fixed, item);
}

// Runs forward_row over every (n, h, chunk); a.wp/a.bias_padded/a.y set by the caller.
inline void run_forward(DirectConvArgs& a, const IsaTable& t) {
    a.chunk_width = static_cast<index_t>(t.max_nv) * t.width;
    const index_t chunks = (a.co + a.chunk_width - 1) / a.chunk_width;
    const index_t items = a.N * a.H * chunks;
    const index_t scratch = static_cast<index_t>(a.K) * (t.max_rw + a.K - 1) * a.ci;
    for_each_item(items, scratch, [&](index_t it, float* buf) {
        const index_t chunk = it % chunks, row = it / chunks;
        t.forward_row(a, row / a.H, row % a.H, chunk, buf);
    });
}

// Like run_forward, for a 3x3 layer whose input is mostly zeros (it follows a ReLU). Work items
// are bands of 32 output rows: within a band each input row is masked once (see
// sparse_forward_rows; the band's two halo rows twice), and the bands are handed out dynamically,
// because a row's cost now depends on its data (a scene half water and half town would leave one
// of two threads idle under a static split). Rows denser than max_density run the dense kernel.
// The share of nonzeros in a sample of at most 16 of the input's N * H rows.
inline double sampled_density(const DirectConvArgs& a) {
    const index_t rows = a.N * a.H, per_row = a.W * a.ci;
    const index_t step = (rows + 15) / 16;
    index_t sampled = 0, nonzeros = 0;
    for (index_t r = step / 2; r < rows; r += step, sampled += per_row)
        for (const float* v = a.x + r * per_row; v != a.x + (r + 1) * per_row; ++v) nonzeros += *v != 0.0f;
    return sampled > 0 ? static_cast<double>(nonzeros) / static_cast<double>(sampled) : 0.0;
}

// density: sampled_density(a), which the caller may already have taken.
inline void run_forward_sparse(DirectConvArgs& a, const IsaTable& t, float max_density, double density) {
    a.chunk_width = static_cast<index_t>(t.max_nv) * t.width;
    const index_t rows = a.N * a.H;
    // Where the sample of at most 16 rows is denser than max_density (a layer whose batch-norm
    // shifts leave most of its ReLU's outputs positive), the dense kernel runs without masking
    // any row.
    if (density > static_cast<double>(max_density)) {
        last_sparse_rows() = 0;
        run_forward(a, t);
        return;
    }
    constexpr index_t band = 32;
    const index_t bands = (rows + band - 1) / band;
    const index_t scratch = static_cast<index_t>(a.K) * (t.max_rw + a.K - 1) * a.ci;
    std::atomic<index_t> sparse_rows{0};
#if defined(_OPENMP)
#pragma omp parallel if (bands > 1)
#endif
    {
        Tensor<float> buf = Tensor<float>::uninitialized(Shape{std::max<index_t>(scratch, 1)});
        index_t mine = 0;
#if defined(_OPENMP)
#pragma omp for schedule(dynamic)
#endif
        for (index_t b = 0; b < bands; ++b)
            mine += t.sparse_forward_rows(a, b * band, std::min(rows, (b + 1) * band), max_density, buf.data());
        sparse_rows += mine;
    }
    last_sparse_rows() = sparse_rows.load();
}

inline void run_small_co(const SmallCoArgs& a, const IsaTable& t) {
    const index_t items = a.N * a.H;
    const index_t scratch = static_cast<index_t>(a.K) * (small_co_max_pixels + a.K - 1) * a.ci;
    for_each_item(items, scratch, [&](index_t it, float* buf) { t.small_co_row(a, it / a.H, it % a.H, buf); });
}

// How pack_weights lays out w [K,K,ci,co]:
//   by_input           [K*K*ci][cop], rows by tap and input channel (the forward kernels)
//   by_output          [K*K*co][cip], rows by tap and output channel (the few-output-channel kernel)
//   by_output_rotated  the same for w_rot[i,j,o,c] = w[K-1-i, K-1-j, c, o] (backward-data)
// with each row zero-filled to the width.
enum class WeightPacking { by_input, by_output, by_output_rotated };

// Row by row in parallel: Winograd backward-data packs every layer's weights on every training
// step, and on one thread that left the other idle for 2% of the step.
inline Tensor<float> pack_weights(TensorView<const float> w, WeightPacking packing, index_t width) {
    const index_t K = w.shape[0], ci = w.shape[2], co = w.shape[3], taps = K * K;
    const bool by_output = packing != WeightPacking::by_input;
    const index_t in = by_output ? co : ci, out = by_output ? ci : co, outp = round_up(out, width);
    Tensor<float> wp(Shape{taps * in, outp});
    float* dst = wp.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (ci * co >= 1024)
#endif
    for (index_t r = 0; r < taps * in; ++r) {  // r = tap * in + i: input channel i (by output: output channel)
        const index_t tap = r / in, i = r % in;
        float* row = dst + r * outp;
        if (!by_output) {
            std::copy(w.data + (tap * ci + i) * co, w.data + (tap * ci + i + 1) * co, row);
        } else {
            const index_t from = packing == WeightPacking::by_output_rotated ? taps - 1 - tap : tap;
            const float* src = w.data + from * ci * co + i;
            for (index_t c = 0; c < ci; ++c) row[c] = src[c * co];
        }
    }
    return wp;
}

}  // namespace detail_direct

// The instruction set of the most recent direct-kernel call (tests prove the forced path ran).
inline simd_isa last_direct_isa() { return detail_direct::last_isa(); }
// Whether the most recent Winograd forward wrote its output with non-temporal stores.
inline bool last_winograd_streamed() { return detail_direct::last_streamed(); }
// How many output rows the most recent sparse-input direct call ran with the sparse kernel.
inline index_t last_sparse_rows() { return detail_direct::last_sparse_rows(); }
// Whether the most recent Winograd forward (or backward-data) wrote its products over the
// transformed input (ci == co within one register tile's width of channels; see run_winograd).
inline bool last_winograd_in_place() { return detail_direct::last_in_place(); }
// Whether the most recent prepared Winograd layer (run_prepared_conv) ran its products on AMX.
inline bool last_winograd_amx() { return detail_direct::last_amx(); }
// Whether the most recent prepared direct layer ran on AMX (nine-product exact kernel).
inline bool last_direct_amx() { return detail_direct::last_amx_exact(); }

// y = conv(x, w) + b (b may be empty); y += ... when accumulate.
inline void conv2d_forward_direct(TensorView<const float> x, TensorView<const float> w, TensorView<const float> b,
                                  TensorView<float> y, bool accumulate = false) {
    const simd_isa s = get_simd_isa();
    const detail_direct::IsaTable t = detail_direct::table(s);
    detail_direct::last_isa() = s;
    detail_direct::check_kernel("conv2d_forward_direct", w.shape[0]);
    if (!accumulate && w.shape[3] <= small_co_max) {  // the last layer: vectorise over input channels
        const Tensor<float> wp = detail_direct::pack_weights(w, detail_direct::WeightPacking::by_output, 1);
        SmallCoArgs a;
        a.K = static_cast<int>(w.shape[0]);
        a.N = x.shape[0], a.H = x.shape[1], a.W = x.shape[2], a.ci = x.shape[3], a.co = w.shape[3];
        a.x = x.data, a.wp = wp.data(), a.bias = b.empty() ? nullptr : b.data, a.y = y.data;
        detail_direct::run_small_co(a, t);
        return;
    }
    const Tensor<float> wp = detail_direct::pack_weights(w, detail_direct::WeightPacking::by_input, t.width);
    Tensor<float> bias;
    DirectConvArgs a;
    a.K = static_cast<int>(w.shape[0]);
    a.N = x.shape[0], a.H = x.shape[1], a.W = x.shape[2], a.ci = x.shape[3], a.co = w.shape[3];
    a.cop = wp.shape()[1];
    if (!b.empty()) {
        bias = Tensor<float>(Shape{a.cop});
        std::copy(b.data, b.data + a.co, bias.data());
        a.bias_padded = bias.data();
    }
    a.x = x.data, a.wp = wp.data(), a.y = y.data, a.accumulate = accumulate;
    detail_direct::run_forward(a, t);
}

// dx += conv(dy, w rotated 180 degrees, in/out swapped).
inline void conv2d_backward_data_direct(TensorView<const float> dy, TensorView<const float> w, TensorView<float> dx) {
    const simd_isa s = get_simd_isa();
    const detail_direct::IsaTable t = detail_direct::table(s);
    detail_direct::last_isa() = s;
    detail_direct::check_kernel("conv2d_backward_data_direct", w.shape[0]);
    const Tensor<float> wp = detail_direct::pack_weights(w, detail_direct::WeightPacking::by_output_rotated, t.width);
    DirectConvArgs a;
    a.K = static_cast<int>(w.shape[0]);
    a.N = dy.shape[0], a.H = dy.shape[1], a.W = dy.shape[2], a.ci = w.shape[3], a.co = w.shape[2];
    a.cop = wp.shape()[1];
    a.x = dy.data, a.wp = wp.data(), a.y = dx.data, a.accumulate = true;
    detail_direct::run_forward(a, t);
}

namespace detail_direct {
// db += column sums of dy [.., co]: float within blocks of 256 pixels, double across blocks in
// block order (parallel, and independent of the thread count).
inline void add_bias_gradient(TensorView<const float> dy, index_t co, TensorView<float> db) {
    const index_t pixels = dy.size() / co;
    constexpr index_t block = 256;
    const index_t blocks = (pixels + block - 1) / block;
    std::vector<double> partial(static_cast<std::size_t>(blocks * co));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (blocks > 4)
#endif
    for (index_t k = 0; k < blocks; ++k) {
        std::vector<float> acc(static_cast<std::size_t>(co), 0.f);
        float* s = acc.data();
        for (index_t p = k * block; p < std::min(pixels, (k + 1) * block); ++p) {
            const float* row = dy.data + p * co;
#if defined(_OPENMP)
#pragma omp simd
#endif
            for (index_t o = 0; o < co; ++o) s[o] += row[o];
        }
        std::copy(acc.begin(), acc.end(), partial.begin() + k * co);
    }
    for (index_t o = 0; o < co; ++o) {
        double total = 0;
        for (index_t k = 0; k < blocks; ++k) total += partial[static_cast<std::size_t>(k * co + o)];
        db[o] += static_cast<float>(total);
    }
}
}  // namespace detail_direct

// dw += sum over pixels of x-patch (outer) dy; db += column sums of dy (db may be empty).
inline void conv2d_backward_weights_direct(TensorView<const float> x, TensorView<const float> dy, TensorView<float> dw,
                                           TensorView<float> db) {
    const simd_isa s = get_simd_isa();
    const detail_direct::IsaTable t = detail_direct::table(s);
    detail_direct::last_isa() = s;
    detail_direct::check_kernel("conv2d_backward_weights_direct", dw.shape[0]);
    DirectConvArgs a;
    a.K = static_cast<int>(dw.shape[0]);
    a.N = x.shape[0], a.H = x.shape[1], a.W = x.shape[2], a.ci = x.shape[3], a.co = dw.shape[3];
    a.x = x.data, a.dy = dy.data, a.dw = dw.data;
    a.chunk_width = static_cast<index_t>(t.max_nv) * t.width;
    // Items: (tap, group of input channels); each thread owns a contiguous range of items and
    // walks all pixels in row bands small enough that a band of x and dy stays in L2.
    const index_t group = 2 * static_cast<index_t>(t.max_rw);
    const index_t groups = (a.ci + group - 1) / group;
    const index_t items = static_cast<index_t>(a.K) * a.K * groups;
    const index_t band = std::max<index_t>(1, 16384 / std::max<index_t>(1, a.W * std::max(a.ci, a.co)));
#if defined(_OPENMP)
#pragma omp parallel if (items > 1)
#endif
    {
        index_t first = 0, last = items;
#if defined(_OPENMP)
        const index_t nt = omp_get_num_threads(), tid = omp_get_thread_num();
        first = items * tid / nt;
        last = items * (tid + 1) / nt;
#endif
        for (index_t n = 0; n < a.N; ++n)
            for (index_t h0 = 0; h0 < a.H; h0 += band) {
                const index_t h1 = std::min(a.H, h0 + band);
                for (index_t it = first; it < last; ++it) {
                    const index_t tap = it / groups, g = it % groups;
                    const index_t c0 = g * group, c1 = std::min(a.ci, c0 + group);
                    t.weights_item(a, n, h0, h1, static_cast<int>(tap / a.K), static_cast<int>(tap % a.K), c0, c1);
                }
            }
    }
    if (!db.empty()) detail_direct::add_bias_gradient(dy, a.co, db);
}

// ---- layers prepared once for repeated inference ---------------------------------------------

// A convolution whose weights were packed (direct) or transformed (Winograd) once, with what
// follows it fused into the store: batch norm with running statistics as scale/shift (direct,
// exact mode) or folded into the weights by the caller (Winograd, fast mode), then ReLU.
struct PreparedConv {
    enum class Method { direct, winograd, small_co };
    Method method = Method::direct;
    simd_isa isa = simd_isa::scalar;  // the packing's vector width belongs to this instruction set
    index_t K = 3, ci = 0, co = 0, cop = 0;
    Tensor<float> weights;      // direct: [K*K*ci][cop]; winograd: [(m+2)^2][ci][cop]; small_co: [K*K*co][ci]
    Tensor<float> bias;         // [cop], zero-filled past co
    Tensor<float> scale, shift; // [cop] or empty (direct only)
    bool relu = false;
    int winograd_tile = 4;      // winograd: the output tile m of F(m x m, 3x3), 4 or 6
    // direct, 3x3: the input follows a ReLU, so rows whose three input rows hold at most
    // sparse_max_density nonzeros skip the zeros (same floats as the dense kernel, bit for bit,
    // for finite weights: the dense kernel's 0 * inf would be NaN).
    bool sparse_input = false;
    float sparse_max_density = 0.6f;
    // winograd, tile 6, 64 -> 64 on a CPU with AMX (get_amx_enabled): the products run on the tile
    // unit as int8 products of three slices per value; amx_weights then holds the transformed
    // weights in its layout as raw bytes (pack_amx_weights: per point 12 KiB of int8 slices and
    // 64 float unscales), and weights stays empty.
    bool amx = false;
    std::vector<std::uint16_t, detail::AlignedAllocator<std::uint16_t>> amx_weights;
    // direct, 3x3, 64 -> 64, after prepare_amx_exact: the layer may run on AMX in nine exact bf16
    // partial products per float product (the float maths up to summation order; see
    // detail/conv2d_amx_exact.inl), amx_weights then holds the weights in three bf16 parts, and
    // weights stays for the sparse kernel: with sparse_input, a layer whose sampled input density
    // is at most amx_max_sparse_density runs the sparse kernel instead (it is the faster one there).
    bool amx_exact = false;
    float amx_max_sparse_density = 0.38f;
};

namespace detail_direct {
inline Tensor<float> padded(TensorView<const float> v, index_t cop, float fill = 0.f) {
    Tensor<float> t(Shape{cop}, fill);
    if (!v.empty()) std::copy(v.data, v.data + v.size(), t.data());
    return t;
}
inline void check_prepared_input(const PreparedConv& p, TensorView<const float> x, TensorView<float> y) {
    if (x.shape.rank() != 4 || x.shape[3] != p.ci || y.shape != Shape{x.shape[0], x.shape[1], x.shape[2], p.co})
        detail::fail<shape_error>("prepared conv (", p.ci, " -> ", p.co, " channels): input ", x.shape, " and output ",
                                  y.shape, " do not fit");
}
}  // namespace detail_direct

// w [K,K,ci,co], b [co] or empty; bn_scale/bn_shift [co] or empty: y = relu?((conv + b) * scale + shift).
inline PreparedConv prepare_conv_direct(TensorView<const float> w, TensorView<const float> b,
                                        TensorView<const float> bn_scale, TensorView<const float> bn_shift, bool relu) {
    detail_direct::check_kernel("prepare_conv_direct", w.shape[0]);
    PreparedConv p;
    p.method = PreparedConv::Method::direct;
    p.isa = get_simd_isa();
    const detail_direct::IsaTable t = detail_direct::table(p.isa);
    p.K = w.shape[0], p.ci = w.shape[2], p.co = w.shape[3];
    if (p.co <= small_co_max && bn_scale.empty()) {  // the last layer (no batch norm)
        p.method = PreparedConv::Method::small_co;
        p.weights = detail_direct::pack_weights(w, detail_direct::WeightPacking::by_output, 1);
        p.cop = p.co;
        p.bias = detail_direct::padded(b, p.co);
        p.relu = relu;
        return p;
    }
    p.weights = detail_direct::pack_weights(w, detail_direct::WeightPacking::by_input, t.width);
    p.cop = p.weights.shape()[1];
    p.bias = detail_direct::padded(b, p.cop);
    // A bias of -0 becomes +0, so no accumulator is ever -0: the sparse-input kernel, which skips
    // products by zero, then agrees with the dense one bit for bit (fma(0, w, -0) can be +0).
    for (index_t o = 0; o < p.cop; ++o) p.bias[o] += 0.0f;
    if (!bn_scale.empty()) {
        p.scale = detail_direct::padded(bn_scale, p.cop, 1.f);
        p.shift = detail_direct::padded(bn_shift, p.cop);
    }
    p.relu = relu;
    return p;
}

namespace detail_direct {
// Wt[(i,j)][c][o] = sum_{a,b} G[i][a] G[j][b] w[a][b][c][o], the Winograd F(Mt x Mt, 3x3) weight
// transform G g G^T, as a [(Mt+2)^2 x 9] matrix (point (Mt+2)i+j, tap 3a+b) computed in double.
// For Mt = 4 its transpose also maps backward-weights' transformed-domain gradients back to the
// taps: dw = G^T dWt G.
template <int Mt = 4>
inline const std::array<std::array<float, 9>, (Mt + 2) * (Mt + 2)>& winograd_weight_coefficients() {
    static_assert(Mt == 4 || Mt == 6, "Winograd: F(4x4,3x3) or F(6x6,3x3)");
    constexpr int A = Mt + 2;
    static const std::array<std::array<float, 9>, A * A> coef = [] {
        static constexpr double G4[6][3] = {{1.0 / 4, 0, 0},
                                            {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                            {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                            {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                            {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                            {0, 0, 1}};
        static constexpr double G6[8][3] = {{1, 0, 0},
                                            {-2.0 / 9, -2.0 / 9, -2.0 / 9},
                                            {-2.0 / 9, 2.0 / 9, -2.0 / 9},
                                            {1.0 / 90, 1.0 / 45, 2.0 / 45},
                                            {1.0 / 90, -1.0 / 45, 2.0 / 45},
                                            {32.0 / 45, 16.0 / 45, 8.0 / 45},
                                            {32.0 / 45, -16.0 / 45, 8.0 / 45},
                                            {0, 0, 1}};
        std::array<std::array<float, 9>, A * A> c{};
        for (int i = 0; i < A; ++i)
            for (int j = 0; j < A; ++j)
                for (int a = 0; a < 3; ++a)
                    for (int b = 0; b < 3; ++b) {
                        double g = 0;
                        if constexpr (Mt == 4)
                            g = G4[i][a] * G4[j][b];
                        else
                            g = G6[i][a] * G6[j][b];
                        c[i * A + j][a * 3 + b] = static_cast<float>(g);
                    }
        return c;
    }();
    return coef;
}
}  // namespace detail_direct

namespace detail_direct {
// Wt[q][c][o] = sum_k coef[q][k] w[k][c][o] into p.weights [P][ci][cop], zero past co.
template <int Mt>
inline void transform_winograd_weights(TensorView<const float> w, PreparedConv& p) {
    constexpr int P = (Mt + 2) * (Mt + 2);
    const auto& coef = winograd_weight_coefficients<Mt>();
    p.weights = Tensor<float>::uninitialized(Shape{P, p.ci, p.cop});
    const index_t ci = p.ci, co = p.co, cop = p.cop;
    float* wt = p.weights.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (ci * co >= 1024)
#endif
    for (index_t c = 0; c < ci; ++c)
        for (int q = 0; q < P; ++q) {
            float* out = wt + (q * ci + c) * cop;
            std::fill(out, out + cop, 0.f);
            for (int k = 0; k < 9; ++k) {
                const float f = coef[q][k];
                const float* in = w.data + (k * ci + c) * co;
#if defined(_OPENMP)
#pragma omp simd
#endif
                for (index_t o = 0; o < co; ++o) out[o] += f * in[o];
            }
        }
}
}  // namespace detail_direct

namespace detail_direct {
// bf16 as vcvtneps2bf16 makes it from a finite float: rounded to nearest even, a denormal input
// taken as zero. For the AMX weights, prepared once per layer, and the tests' scalar reference.
inline std::uint16_t bf16_from_float(float x) {
    std::uint32_t u = std::bit_cast<std::uint32_t>(x);
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;  // zero or denormal: signed zero
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(u >> 16);
}
inline float float_from_bf16(std::uint16_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

// Weights as the B tiles of the AMX kernels: `groups` blocks of 64 input channels x 64 outputs
// (w[(g * 64 + c) * 64 + o]), each float split into `parts` bf16 parts (the nearest bf16 of what the
// parts before it left), laid out per group as [k 2][part][column 4][16 channel pairs][16
// outputs][2 channels], k a block of 32 channels and column one of 16 outputs.
inline void pack_amx_b_tiles(const float* w, index_t groups, int parts, PreparedConv& p) {
    constexpr index_t C = 64;
    p.amx_weights.assign(static_cast<std::size_t>(groups * C * C * parts), 0);
    for (index_t g = 0; g < groups; ++g)
        for (index_t c = 0; c < C; ++c)
            for (index_t o = 0; o < C; ++o) {
                float rest = w[(g * C + c) * C + o];
                for (index_t part = 0; part < parts; ++part) {
                    const std::uint16_t b = bf16_from_float(rest);
                    rest -= float_from_bf16(b);
                    const index_t at = ((((g * 2 + c / 32) * parts + part) * 4 + o / 16) * 16 + (c % 32) / 2) * 32 + (o % 16) * 2 + c % 2;
                    p.amx_weights[static_cast<std::size_t>(at)] = b;
                }
            }
}
#if DESPECK_AMX_KERNELS
// The float F(6x6) weights [64 points][64 channels][64 outputs] (cop = 64) for fast inference's
// int8 products (detail/winograd_amx.inl): per point, each output's 64 weights scaled as
// slice_scale says for their largest magnitude and cut into three int8 slices, laid out as B
// tiles [slice 3][column 4][16 channel quads][16 outputs][4 channels], then the 64 outputs'
// unscales (floats).
inline void pack_amx_weights(const float* wt, PreparedConv& p) {
    namespace A = direct_amx;
    constexpr index_t C = A::channels;
    p.amx_weights.assign(static_cast<std::size_t>(A::points * A::point_weight_bytes / 2), 0);
    char* packed = reinterpret_cast<char*>(p.amx_weights.data());
    for (index_t pt = 0; pt < A::points; ++pt) {
        char* w = packed + pt * A::point_weight_bytes;
        for (index_t o = 0; o < C; ++o) {
            const float* column = wt + pt * C * C + o;  // 64 weights, C apart
            // A non-finite weight: zero slices, NaN unscale.
            const A::SliceScale s = A::slice_scale(A::largest_magnitude_bits(column, C, C));
            std::memcpy(w + A::point_slice_bytes + o * 4, &s.unscale, sizeof(float));
            for (index_t c = 0; c < C; ++c) {
                std::int8_t parts[A::slices];
                A::slice_value(column[c * C], s, parts);
                for (index_t j = 0; j < A::slices; ++j)
                    w[j * 4096 + (o / 16) * 1024 + (c / 4) * 64 + (o % 16) * 4 + c % 4] = static_cast<char>(parts[j]);
            }
        }
    }
}
#endif
// Direct 3x3 64 -> 64 weights (p.weights packed by input, cop = 64: [tap 9][64][64]) in the three
// parts of the nine-product exact kernel (exact for normal floats).
inline void pack_amx_exact_weights(PreparedConv& p) { pack_amx_b_tiles(p.weights.data(), 9, 3, p); }
}  // namespace detail_direct

// Lets a prepared 3x3 64 -> 64 direct layer (AVX-512 kernels) run on AMX in nine exact bf16
// partial products per float product, where the CPU has AMX and get_amx_enabled(): the float
// maths of the direct kernel up to summation order, values under about 1e-33 taken as zero
// (detail/conv2d_amx_exact.inl). Exact inference's plan asks for it; training's direct
// convolutions do not. Returns whether the layer will use it.
inline bool prepare_amx_exact(PreparedConv& p) {
    if (p.method != PreparedConv::Method::direct || p.K != 3 || p.ci != 64 || p.co != 64 || p.cop != 64 ||
        p.isa != simd_isa::avx512 || !get_amx_enabled())
        return false;
    detail_direct::pack_amx_exact_weights(p);
    p.amx_exact = true;
    return true;
}

// w [3,3,ci,co], b [co] or empty: y = relu?(conv + b) by Winograd F(m x m, 3x3), m = tile: 4
// (36 products per 16 outputs; training's forward and backward-data use it) or 6 (64 per 36: fast
// inference). The transform G g G^T is computed in double; its rounding to float and the
// transforms' own arithmetic make the result differ from direct convolution by about 1e-6
// relative per layer for m = 4 and about twice that for m = 6 (tested). With tile 6, 64 -> 64
// channels, the AVX-512 kernels and AMX enabled (get_amx_enabled), the products run on AMX as
// int8 products of three 8-bit slices per value: about 1e-5 of the output's range per layer, as
// close as float products (tested).
inline PreparedConv prepare_conv_winograd(TensorView<const float> w, TensorView<const float> b, bool relu, int tile = 4) {
    detail_direct::check_winograd_tile("prepare_conv_winograd", tile);
    if (w.shape.rank() != 4 || w.shape[0] != 3 || w.shape[1] != 3)
        detail::fail<shape_error>("prepare_conv_winograd: Winograd F(", tile, "x", tile, ",3x3) needs 3x3 weights, got ", w.shape);
    PreparedConv p;
    p.method = PreparedConv::Method::winograd;
    p.winograd_tile = tile;
    p.isa = get_simd_isa();
    const detail_direct::IsaTable t = detail_direct::table(p.isa);
    p.K = 3, p.ci = w.shape[2], p.co = w.shape[3];
    p.cop = detail_direct::round_up(p.co, t.width);
    if (tile == 6)
        detail_direct::transform_winograd_weights<6>(w, p);
    else
        detail_direct::transform_winograd_weights<4>(w, p);
    p.bias = detail_direct::padded(b, p.cop);
    p.relu = relu;
#if DESPECK_AMX_KERNELS
    if (tile == 6 && p.ci == 64 && p.co == 64 && p.isa == simd_isa::avx512 && get_amx_enabled()) {
        p.amx = true;
        detail_direct::pack_amx_weights(p.weights.data(), p);
        p.weights = Tensor<float>();
    }
#endif
    return p;
}

namespace detail_direct {
#if DESPECK_AMX_KERNELS
// A prepared 3x3 64 -> 64 direct layer by the nine-product AMX kernel.
inline void run_amx_exact(const DirectConvArgs& a, const std::uint16_t* weights) {
    // Items: bands of 32 output rows x strips of 256 columns, handed out dynamically. A static
    // split (one band per thread) left one thread waiting at the layer's end whenever the host
    // slowed the other: five-run samples of exact inference at 2 threads scattered over 0.28-0.36
    // Mpx/s with it. A band's ring starts cold: 2 extra row splits per 32 rows.
    constexpr index_t band = 32;
    const index_t rows = a.N * a.H, bands = (rows + band - 1) / band;
    const index_t strips = (a.W + direct_amx::exact_strip_pixels - 1) / direct_amx::exact_strip_pixels;
    const char* w = reinterpret_cast<const char*>(weights);
    for_each_item(bands * strips, direct_amx::exact_scratch_floats, ItemSchedule::dynamic, [&](index_t it, float* buf) {
        const index_t b = it / strips, strip = it % strips;
        direct_amx::exact_rows(a, w, b * band, std::min(rows, (b + 1) * band), strip * direct_amx::exact_strip_pixels, buf);
    });
}

// run_winograd's items and streaming with the products on AMX (64 -> 64, F(6x6), no accumulate).
inline void run_winograd_amx(WinogradArgs a, const std::uint16_t* weights) {
    const index_t m = 6, block = direct_amx::block_tiles;
    constexpr index_t stream_bytes = index_t(16) << 20;
    a.stream = reinterpret_cast<std::uintptr_t>(a.y) % 64 == 0 && a.N * a.H * a.W * a.co * index_t(sizeof(float)) > stream_bytes;
    last_streamed() = a.stream;
    a.in_place = true;
    last_in_place() = true;
    const index_t tile_rows = (a.H + m - 1) / m, tile_cols = (a.W + m - 1) / m;
    const index_t blocks = (tile_cols + block - 1) / block;
    const char* w = reinterpret_cast<const char*>(weights);
    for_each_item(a.N * tile_rows * blocks, direct_amx::scratch_floats, [&](index_t it, float* buf) {
        const index_t b = it % blocks, row = it / blocks;
        const index_t t0 = b * block, t1 = std::min(tile_cols, t0 + block);
        direct_amx::winograd_item(a, w, row / tile_rows, row % tile_rows, t0, t1, buf);
    });
}
#endif

// Items: (image, tile row, block of 24 tiles); a block's transformed input and products stay in
// L2 between the three steps: 36 (F(4x4)) or 64 (F(6x6)) x 24 x (ci + co) floats, 432 or 768 KiB
// for 64 -> 64 (half that in place, below). 24 tiles are four register blocks of 6 (AVX-512), each reusing a point's weights
// from L1; 16 tiles (6 + 6 + 4, 512 KiB) ran F(6x6) inference 3-7% slower (interleaved A/B).
//
// An F(6x6) output larger than the caches (fast inference on a big tile: 512x512x64 is 64 MiB)
// would be evicted before the next layer reads it, so whole tiles skip them: non-temporal stores
// save reading each line in before overwriting it. Only where every store fills a whole 64-byte
// line (AVX-512 vectors, co a multiple of 16, y aligned): half-line streams, 36 stores apart,
// would outrun the core's write-combining buffers.
//
// Where ci == co and one register tile spans all co channels (AVX-512 up to 64), each point's
// products are written over that point's transformed input, which nothing reads afterwards: a
// register block reads all its ci before it stores. That halves the block's scratch (384 KiB for
// F(6x6) 64 -> 64), so more of L2 is left for the weights that stream through it: fast inference
// ran 4-10% faster in interleaved A/B runs. With several column chunks per point, the first
// chunk's stores would overwrite input the next chunk still reads, so M gets its own space.
inline void run_winograd(WinogradArgs a, const IsaTable& t) {
    check_winograd_tile("Winograd", a.m);
    const index_t m = a.m, points = (m + 2) * (m + 2), block = 24;
    constexpr index_t stream_bytes = index_t(16) << 20;
    a.stream = m == 6 && !a.accumulate && t.width * index_t(sizeof(float)) == 64 && a.co % t.width == 0 &&
               reinterpret_cast<std::uintptr_t>(a.y) % 64 == 0 && a.N * a.H * a.W * a.co * index_t(sizeof(float)) > stream_bytes;
    last_streamed() = a.stream;
    a.in_place = a.ci == a.co && a.co <= static_cast<index_t>(t.max_nv) * t.width;
    last_in_place() = a.in_place;
    const index_t tile_rows = (a.H + m - 1) / m, tile_cols = (a.W + m - 1) / m;
    const index_t blocks = (tile_cols + block - 1) / block;
    const index_t items = a.N * tile_rows * blocks;
    for_each_item(items, points * block * (a.in_place ? a.ci : a.ci + a.co), [&](index_t it, float* buf) {
        const index_t b = it % blocks, row = it / blocks;
        const index_t t0 = b * block, t1 = std::min(tile_cols, t0 + block);
        t.winograd_item(a, row / tile_rows, row % tile_rows, t0, t1, buf);
    });
}
}  // namespace detail_direct

// y = the prepared layer applied to x [N,H,W,ci]; y [N,H,W,co] is overwritten.
inline void run_prepared_conv(const PreparedConv& p, TensorView<const float> x, TensorView<float> y) {
    detail_direct::check_prepared_input(p, x, y);
    if (!cpu_supports(p.isa))
        detail::fail<value_error>("prepared conv: packed for ", to_string(p.isa), ", which this CPU lacks");
    const detail_direct::IsaTable t = detail_direct::table(p.isa);
    detail_direct::last_isa() = p.isa;
    detail_direct::last_amx_exact() = false;
    if (p.method == PreparedConv::Method::small_co) {
        SmallCoArgs a;
        a.K = static_cast<int>(p.K);
        a.N = x.shape[0], a.H = x.shape[1], a.W = x.shape[2], a.ci = p.ci, a.co = p.co;
        a.x = x.data, a.wp = p.weights.data(), a.bias = p.bias.data(), a.y = y.data, a.relu = p.relu;
        detail_direct::run_small_co(a, t);
        return;
    }
    if (p.method == PreparedConv::Method::direct) {
        DirectConvArgs a;
        a.K = static_cast<int>(p.K);
        a.N = x.shape[0], a.H = x.shape[1], a.W = x.shape[2], a.ci = p.ci, a.co = p.co, a.cop = p.cop;
        a.x = x.data, a.wp = p.weights.data(), a.bias_padded = p.bias.data(), a.y = y.data;
        a.post_scale = p.scale.empty() ? nullptr : p.scale.data();
        a.post_shift = p.shift.empty() ? nullptr : p.shift.data();
        a.post_relu = p.relu;
        // The input's density is sampled once, for both choices below (16 rows).
        const bool sparse = p.sparse_input && p.K == 3;
        const double density = sparse ? detail_direct::sampled_density(a) : 1.0;
        if (p.amx_exact && !(sparse && density <= p.amx_max_sparse_density)) {
#if DESPECK_AMX_KERNELS
            if (!cpu_supports_amx()) detail::fail<value_error>("prepared conv: packed for AMX, which this CPU (or OS) lacks");
            detail_direct::last_amx_exact() = true;
            detail_direct::run_amx_exact(a, p.amx_weights.data());
            return;
#else
            detail::fail<value_error>("prepared conv: packed for AMX, which this build lacks");
#endif
        }
        if (sparse)
            detail_direct::run_forward_sparse(a, t, p.sparse_max_density, density);
        else
            detail_direct::run_forward(a, t);
        return;
    }
    WinogradArgs a;
    a.N = x.shape[0], a.H = x.shape[1], a.W = x.shape[2], a.ci = p.ci, a.co = p.co, a.cop = p.cop;
    a.x = x.data, a.wt = p.weights.data(), a.bias_padded = p.bias.data(), a.y = y.data, a.relu = p.relu;
    a.m = p.winograd_tile;
    detail_direct::last_amx() = p.amx;
    if (p.amx) {
#if DESPECK_AMX_KERNELS
        if (!cpu_supports_amx()) detail::fail<value_error>("prepared conv: packed for AMX, which this CPU (or OS) lacks");
        detail_direct::run_winograd_amx(a, p.amx_weights.data());
        return;
#else
        detail::fail<value_error>("prepared conv: packed for AMX, which this build lacks");
#endif
    }
    detail_direct::run_winograd(a, t);
}

// ---- Winograd in training: forward, backward-data and backward-weights of 3x3 layers --------

// Whether conv_algorithm::winograd runs Winograd for this layer: 3x3 with >= 16 channels on both
// sides (the 1-2 channel first and last layers gain nothing and stay direct).
inline bool winograd_applies(index_t K, index_t ci, index_t co) { return K == 3 && ci >= 16 && co >= 16; }

// y = conv(x, w) + b by Winograd F(4x4, 3x3); w transformed on every call (0.1% of the work).
inline void conv2d_forward_winograd(TensorView<const float> x, TensorView<const float> w, TensorView<const float> b,
                                    TensorView<float> y) {
    run_prepared_conv(prepare_conv_winograd(w, b, /*relu=*/false), x, y);
}

// dx += conv(dy, w rotated 180 degrees, in/out swapped) by Winograd.
inline void conv2d_backward_data_winograd(TensorView<const float> dy, TensorView<const float> w, TensorView<float> dx) {
    if (w.shape.rank() != 4 || w.shape[0] != 3 || w.shape[1] != 3)
        detail::fail<shape_error>("conv2d_backward_data_winograd: Winograd F(4x4,3x3) needs 3x3 weights, got ", w.shape);
    const index_t ci = w.shape[2], co = w.shape[3];
    // w rotated by 180 degrees with ci and co swapped: [3,3,co,ci] (width 1: no padding).
    const Tensor<float> w_rot = detail_direct::pack_weights(w, detail_direct::WeightPacking::by_output_rotated, 1);
    const PreparedConv p = prepare_conv_winograd(TensorView<const float>{w_rot.data(), Shape{3, 3, co, ci}}, {}, /*relu=*/false);
    detail_direct::check_prepared_input(p, dy, dx);
    const detail_direct::IsaTable t = detail_direct::table(p.isa);
    detail_direct::last_isa() = p.isa;
    WinogradArgs a;
    a.N = dy.shape[0], a.H = dy.shape[1], a.W = dy.shape[2], a.ci = p.ci, a.co = p.co, a.cop = p.cop;
    a.x = dy.data, a.wt = p.weights.data(), a.bias_padded = nullptr, a.y = dx.data, a.accumulate = true;
    detail_direct::run_winograd(a, t);
}

// dw += the weight gradient of a 3x3 convolution by Winograd F(4x4, 3x3) (db += column sums of
// dy; db may be empty). About 4x fewer multiplications than the direct kernel; the transforms'
// rounding makes the result differ from the exact gradient by a few 1e-6 of max |dw| (direct:
// a few 1e-7; tested).
//
// The tiles are split into a fixed number of contiguous parts (winograd_weights_parts, fewer for
// small inputs), each with its own transformed-domain accumulator [36][ci][co]; a thread takes
// whole parts and walks each in chunks of `slots` tiles (the chunk's transforms and the part's
// accumulator are 1.1 MiB at 64 channels: mostly L2, the rest L3, and always the same core's).
// The parts are then added in order. So nothing crosses between cores until the end (sharing the
// chunks between threads ran no faster on 2 threads than on 1), and the sum order, and the
// result, do not depend on the thread count; more threads than parts idle in this pass.
inline constexpr index_t winograd_weights_parts = 4;

inline void conv2d_backward_weights_winograd(TensorView<const float> x, TensorView<const float> dy, TensorView<float> dw,
                                             TensorView<float> db) {
    if (dw.shape.rank() != 4 || dw.shape[0] != 3 || dw.shape[1] != 3)
        detail::fail<shape_error>("conv2d_backward_weights_winograd: Winograd F(4x4,3x3) needs 3x3 weights, got ", dw.shape);
    const simd_isa s = get_simd_isa();
    const detail_direct::IsaTable t = detail_direct::table(s);
    detail_direct::last_isa() = s;
    WinogradWeightsArgs common;  // what every thread's arguments share; buffers are set per thread
    common.N = x.shape[0], common.H = x.shape[1], common.W = x.shape[2], common.ci = x.shape[3], common.co = dw.shape[3];
    common.x = x.data, common.dy = dy.data;
    const index_t ci = common.ci, co = common.co;
    const index_t tiles = common.N * ((common.H + 3) / 4) * ((common.W + 3) / 4);
    if (tiles == 0) return;  // an empty batch: no gradient, and db's column sums are zero too
    // 32 tiles: U and D take 36 x 32 x (ci + co) floats, 576 KiB at 64 channels.
    common.slots = std::min<index_t>(tiles, 32);
    // Each part has at least one tile (parts <= ceil(tiles / slots) <= tiles), so each part's first
    // chunk overwrites all of its accumulator.
    const index_t parts = std::min(winograd_weights_parts, (tiles + common.slots - 1) / common.slots);
    Tensor<float> dwt = Tensor<float>::uninitialized(Shape{parts, 36, ci, co});
    // Work per point in groups of 2 register tiles of input channels (one item of the direct kernel).
    const index_t group = 2 * static_cast<index_t>(t.max_rw);
    const index_t groups = (ci + group - 1) / group;
#if defined(_OPENMP)
    const int threads = static_cast<int>(std::min<index_t>(parts, omp_get_max_threads()));
#pragma omp parallel num_threads(threads) if (parts > 1)
#endif
    {
        // From the tensor cache (see run_winograd).
        Tensor<float> u = Tensor<float>::uninitialized(Shape{common.slots, 36, ci});
        Tensor<float> d = Tensor<float>::uninitialized(Shape{common.slots, 36, co});
        WinogradWeightsArgs a = common;
        a.u = u.data(), a.d = d.data();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (index_t part = 0; part < parts; ++part) {
            a.dwt = dwt.data() + part * 36 * ci * co;
            const index_t begin = tiles * part / parts, end = tiles * (part + 1) / parts;
            for (index_t first = begin; first < end; first += a.slots) {
                const index_t nt = std::min(a.slots, end - first);
                a.overwrite = first == begin;
                for (index_t k = 0; k < nt; ++k) t.winograd_weights_transform(a, first + k, k);
                for (int p = 0; p < 36; ++p)
                    for (index_t g = 0; g < groups; ++g)
                        t.winograd_weights_item(a, p, g * group, std::min(ci, (g + 1) * group), nt);
            }
        }
    }
    // dw[a][b][c][o] += sum_q coef[q][3a + b] * (sum over parts, in order, of dWt[part][q][c][o])
    const auto& coef = detail_direct::winograd_weight_coefficients();
    const float* wt = dwt.data();
#if defined(_OPENMP)
#pragma omp parallel if (ci * co >= 1024)
#endif
    {
        Tensor<float> sum = Tensor<float>::uninitialized(Shape{36, co});
        float* acc = sum.data();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (index_t c = 0; c < ci; ++c) {
            for (int q = 0; q < 36; ++q) {
                float* row = acc + q * co;
                const float* in = wt + (q * ci + c) * co;
                std::copy(in, in + co, row);
                for (index_t part = 1; part < parts; ++part) {
                    const float* more = in + part * 36 * ci * co;
#if defined(_OPENMP)
#pragma omp simd
#endif
                    for (index_t o = 0; o < co; ++o) row[o] += more[o];
                }
            }
            for (int k = 0; k < 9; ++k) {
                float* out = dw.data + (k * ci + c) * co;
                for (int q = 0; q < 36; ++q) {
                    const float f = coef[q][k];
                    if (f == 0.f) continue;
                    const float* row = acc + q * co;
#if defined(_OPENMP)
#pragma omp simd
#endif
                    for (index_t o = 0; o < co; ++o) out[o] += f * row[o];
                }
            }
        }
    }
    if (!db.empty()) detail_direct::add_bias_gradient(dy, co, db);
}

}  // namespace despeck::kernels
