// bench_kernels — Google Benchmark micro-benchmarks of despeck's convolution kernels on
// deSpeckNet's shapes, reporting GFLOP/s and the share of this machine's measured FP32 peak.
//
//   ./build/benchmarks/bench_kernels [--benchmark_filter=...] [--threads=N]
//
// FLOPs are direct-convolution FLOPs, 2 * N*H*W * Ci*Co * 9, for every pass and algorithm, so a
// Winograd figure is "effective GFLOP/s", comparable with oneDNN's (benchmarks/onednn_conv). The
// peak is measured at start-up with an FMA loop on every thread (independent accumulators, no
// memory traffic) with the widest instruction set this CPU has.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "despeck/kernels/conv2d.hpp"
#include "despeck/random.hpp"

using namespace despeck;
using namespace despeck::kernels;

namespace {

// ---- measured FP32 peak -------------------------------------------------------------------
#if DESPECK_X86 && defined(__GNUC__)
__attribute__((target("avx512f"))) double fma_loop_avx512(long iters) {
    __m512 a[12];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int k = 0; k < 12; ++k) a[k] = _mm512_set1_ps(float(k));
    for (long i = 0; i < iters; ++i)
        for (int k = 0; k < 12; ++k) a[k] = _mm512_fmadd_ps(a[k], m, c);
    float buf[16], sink = 0;  // (not _mm512_reduce_add_ps: GCC 12's header warns inside it)
    for (int k = 0; k < 12; ++k) {
        _mm512_storeu_ps(buf, a[k]);
        for (float v : buf) sink += v;
    }
    benchmark::DoNotOptimize(sink);
    return double(iters) * 12 * 16 * 2;
}
__attribute__((target("avx2,fma"))) double fma_loop_avx2(long iters) {
    __m256 a[12];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int k = 0; k < 12; ++k) a[k] = _mm256_set1_ps(float(k));
    for (long i = 0; i < iters; ++i)
        for (int k = 0; k < 12; ++k) a[k] = _mm256_fmadd_ps(a[k], m, c);
    float buf[8], sink = 0;
    for (int k = 0; k < 12; ++k) {
        _mm256_storeu_ps(buf, a[k]);
        for (float v : buf) sink += v;
    }
    benchmark::DoNotOptimize(sink);
    return double(iters) * 12 * 8 * 2;
}
#endif

// FLOP/s of all threads together.
double measure_peak_gflops() {
    auto one = [](long iters) {
#if DESPECK_X86 && defined(__GNUC__)
        if (cpu_supports(simd_isa::avx512)) return fma_loop_avx512(iters);
        if (cpu_supports(simd_isa::avx2)) return fma_loop_avx2(iters);
#endif
        volatile float x = 1;
        for (long i = 0; i < iters; ++i) x = x * 0.999999f + 1e-7f;
        return double(iters) * 2;
    };
    double best = 0;
    for (int round = 0; round < 5; ++round) {
        const auto t0 = std::chrono::steady_clock::now();
        double flops = 0;
#if defined(_OPENMP)
#pragma omp parallel reduction(+ : flops)
#endif
        flops += one(20'000'000);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, flops / s / 1e9);
    }
    return best;
}

double& peak_gflops() {
    static double p = 0;
    return p;
}

struct Shapes {
    index_t N, H, W, Ci, Co;
};

Tensor<float> random_tensor(Shape s, std::uint64_t seed) {
    Rng rng(seed);
    Tensor<float> t(s);
    for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(rng.uniform(-1, 1));
    return t;
}

void report(benchmark::State& state, const Shapes& s) {
    const double flop = 2.0 * double(s.N * s.H * s.W) * double(s.Ci * s.Co) * 9;
    state.counters["GFLOP/s"] = benchmark::Counter(flop / 1e9, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_GFLOP/s"] = peak_gflops();
    // The share of that peak, in percent: a rate like GFLOP/s (per second of the same time).
    state.counters["pct_of_peak"] =
        benchmark::Counter(flop / 1e9 / peak_gflops() * 100, benchmark::Counter::kIsIterationInvariantRate);
    state.SetLabel(std::string(to_string(get_simd_isa())));
}

// sparse_exact_layer: fused_exact_layer's layer with the sparse-input kernel on an input with 70%
// zeros at random (what a trained model's ReLUs leave: 67-72% per layer in the authors' model on
// real SAR; random positions are the worst case for its branches). The dense kernel's time does
// not depend on the values, so the two GFLOP/s figures compare directly.
// winograd6_forward runs fast inference's F(6x6) layer with float products, winograd6_amx_forward
// with AMX's int8 products of three 8-bit slices (CPUs with AMX only; see kernels/detail/winograd_amx.inl).
// amx_exact_layer: fused_exact_layer's layer on AMX in nine exact bf16 products per float product
// (kernels/detail/conv2d_amx_exact.inl), on the same input: its time does not depend on the values.
enum class Pass { forward, backward_data, backward_weights, winograd_forward, fused_exact_layer, winograd_backward_data,
                  winograd_backward_weights, winograd6_forward, sparse_exact_layer, winograd6_amx_forward, amx_exact_layer };

// args: pass, isa, N, H, W, Ci, Co
void BM_conv(benchmark::State& state) {
    const auto pass = static_cast<Pass>(state.range(0));
    const auto isa = static_cast<simd_isa>(state.range(1));
    if (!cpu_supports(isa)) {
        state.SkipWithError("this CPU lacks the instruction set");
        return;
    }
    set_simd_isa(isa);
    const bool amx = pass == Pass::winograd6_amx_forward || pass == Pass::amx_exact_layer;
    if (amx && (isa != simd_isa::avx512 || !cpu_supports_amx())) {
        state.SkipWithError("AMX runs with the AVX-512 kernels on CPUs with AMX-BF16 and AMX-INT8 only");
        return;
    }
    set_amx_enabled(amx);
    const Shapes s{state.range(2), state.range(3), state.range(4), state.range(5), state.range(6)};
    Tensor<float> x = random_tensor(Shape{s.N, s.H, s.W, s.Ci}, 1);
    if (pass == Pass::sparse_exact_layer) {
        Rng rng(6);
        for (index_t i = 0; i < x.size(); ++i) x[i] = rng.uniform() < 0.3 ? std::abs(x[i]) : 0.0f;
    }
    const Tensor<float> w = random_tensor(Shape{3, 3, s.Ci, s.Co}, 2),
                        b = random_tensor(Shape{s.Co}, 3), dy = random_tensor(Shape{s.N, s.H, s.W, s.Co}, 4),
                        scale = random_tensor(Shape{s.Co}, 5);
    Tensor<float> y(Shape{s.N, s.H, s.W, s.Co}), dx(x.shape()), dw(w.shape()), db(b.shape());
    PreparedConv prepared;
    if (pass == Pass::winograd_forward) prepared = prepare_conv_winograd(w.view(), b.view(), true);
    if (pass == Pass::winograd6_forward || pass == Pass::winograd6_amx_forward)
        prepared = prepare_conv_winograd(w.view(), b.view(), true, /*tile=*/6);
    if (pass == Pass::fused_exact_layer || pass == Pass::sparse_exact_layer || pass == Pass::amx_exact_layer)
        prepared = prepare_conv_direct(w.view(), b.view(), scale.view(), b.view(), true);
    prepared.sparse_input = pass == Pass::sparse_exact_layer;
    if (pass == Pass::amx_exact_layer && !prepare_amx_exact(prepared)) {
        state.SkipWithError("prepare_amx_exact declined the layer");
        return;
    }
    for (auto _ : state) {
        switch (pass) {
            case Pass::forward: conv2d_forward_direct(x.view(), w.view(), b.view(), y.view()); break;
            case Pass::backward_data: conv2d_backward_data_direct(dy.view(), w.view(), dx.view()); break;
            case Pass::backward_weights: conv2d_backward_weights_direct(x.view(), dy.view(), dw.view(), db.view()); break;
            case Pass::winograd_forward:
            case Pass::winograd6_forward:
            case Pass::winograd6_amx_forward:
            case Pass::fused_exact_layer:
            case Pass::sparse_exact_layer:
            case Pass::amx_exact_layer: run_prepared_conv(prepared, x.view(), y.view()); break;
            case Pass::winograd_backward_data: conv2d_backward_data_winograd(dy.view(), w.view(), dx.view()); break;
            case Pass::winograd_backward_weights:
                conv2d_backward_weights_winograd(x.view(), dy.view(), dw.view(), db.view());
                break;
        }
        benchmark::ClobberMemory();
    }
    report(state, s);
}

void shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"pass", "isa", "N", "H", "W", "Ci", "Co"});
    const std::vector<std::vector<int64_t>> training = {{16, 40, 40, 64, 64}, {16, 40, 40, 2, 64}, {16, 40, 40, 64, 2}};
    const std::vector<int64_t> tile = {1, 256, 256, 64, 64};
    for (int isa : {int(simd_isa::avx512), int(simd_isa::avx2), int(simd_isa::scalar)}) {
        for (int pass : {int(Pass::forward), int(Pass::backward_data), int(Pass::backward_weights)})
            for (const auto& sh : training) {
                if (isa == int(simd_isa::scalar) && sh[3] != 64) continue;  // the scalar path: one shape is enough
                b->Args({pass, isa, sh[0], sh[1], sh[2], sh[3], sh[4]});
            }
        for (int pass : {int(Pass::winograd_forward), int(Pass::winograd_backward_data), int(Pass::winograd_backward_weights),
                         int(Pass::winograd6_forward)})
            b->Args({pass, isa, 16, 40, 40, 64, 64});
        b->Args({int(Pass::winograd_forward), isa, tile[0], tile[1], tile[2], tile[3], tile[4]});
        b->Args({int(Pass::winograd6_forward), isa, tile[0], tile[1], tile[2], tile[3], tile[4]});
        if (isa == int(simd_isa::avx512)) {
            b->Args({int(Pass::winograd6_amx_forward), isa, 16, 40, 40, 64, 64});
            b->Args({int(Pass::winograd6_amx_forward), isa, tile[0], tile[1], tile[2], tile[3], tile[4]});
            b->Args({int(Pass::amx_exact_layer), isa, tile[0], tile[1], tile[2], tile[3], tile[4]});
        }
        b->Args({int(Pass::fused_exact_layer), isa, tile[0], tile[1], tile[2], tile[3], tile[4]});
        b->Args({int(Pass::sparse_exact_layer), isa, tile[0], tile[1], tile[2], tile[3], tile[4]});
    }
    b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_conv)->Apply(shapes);

}  // namespace

// Google Benchmark's main, plus --threads=N (OpenMP threads) and the peak measurement.
// --best-isa prints the isa argument of the instruction set despeck picks on this CPU (0 scalar,
// 1 AVX2, 2 AVX-512: what compare_all.sh times) and exits.
int main(int argc, char** argv) {
    std::vector<char*> rest;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--best-isa") == 0) {
            std::printf("%d\n", static_cast<int>(best_simd_isa()));
            return 0;
        }
        if (std::strncmp(argv[i], "--threads=", 10) == 0) {
#if defined(_OPENMP)
            omp_set_num_threads(std::atoi(argv[i] + 10));
#endif
            continue;
        }
        rest.push_back(argv[i]);
    }
    int n = static_cast<int>(rest.size());
    benchmark::Initialize(&n, rest.data());
    if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 2;
    peak_gflops() = measure_peak_gflops();
#if defined(_OPENMP)
    benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
#endif
    benchmark::AddCustomContext("fp32_peak_gflops", std::to_string(peak_gflops()));
    benchmark::AddCustomContext("best_simd", std::string(to_string(best_simd_isa())));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
