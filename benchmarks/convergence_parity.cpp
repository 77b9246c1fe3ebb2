// convergence_parity — issue #5's convergence check: the same full-size model (depth 17, 64
// filters, dual-pol dB), the same initial weights and the same 200 batches, trained once with the
// exact fp32 direct convolutions and once with the default (Winograd in all three passes);
// prints both loss curves and how far apart they are. `--a im2col_gemm --b direct` compares two
// exact fp32 runs that differ only in summation order: the floor any change of arithmetic meets,
// because training amplifies rounding differences.
//
//   ./build/benchmarks/convergence_parity [--steps 200] [--threads 2] [--csv curves.csv]
//                                         [--a direct] [--b automatic] [--seed 0] [--floor]
//
// Data: a synthetic dual-pol scene (data/synthetic.hpp), 1-look speckle, in dB; 40x40 patches,
// batch 16, drawn from one seeded stream, so both runs see identical batches. The reference is the
// clean scene (the supervised loss of the paper, 100 * clean + 1 * reconstruction).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "despeck/data/synthetic.hpp"
#include "despeck/despeck.hpp"

using namespace despeck;

namespace {

struct Batch {
    Tensor<float> input, reference;
};

// seed 0 is the run of docs/benchmarks.md; others shift every seed (scene, speckle, patches,
// initial weights) by 1000 * seed, to see how much the gaps vary with the draw.
std::vector<Batch> make_batches(int steps, std::uint64_t seed) {
    data::SceneOptions scene;
    scene.nodata_border = false;
    const index_t size = 256, bands = 2;
    raster::MemoryRaster clean = data::synthetic_scene(size, size, bands, 42 + 1000 * seed, scene);
    Tensor<float> noisy = clean.pixels();
    data::apply_speckle(noisy, 1.0, 43 + 1000 * seed);
    auto db = [](float v) { return static_cast<float>(10.0 * std::log10(std::max(double(v), 1e-6))); };
    Rng rng(44 + 1000 * seed);
    std::vector<Batch> out(static_cast<std::size_t>(steps));
    for (auto& b : out) {
        b.input = Tensor<float>(Shape{16, 40, 40, bands});
        b.reference = Tensor<float>(b.input.shape());
        for (index_t k = 0; k < 16; ++k) {
            const auto r0 = static_cast<index_t>(rng.uniform(0, double(size - 40)));
            const auto c0 = static_cast<index_t>(rng.uniform(0, double(size - 40)));
            for (index_t r = 0; r < 40; ++r)
                for (index_t c = 0; c < 40; ++c)
                    for (index_t q = 0; q < bands; ++q) {
                        const index_t src = ((r0 + r) * size + c0 + c) * bands + q, dst = ((k * 40 + r) * 40 + c) * bands + q;
                        b.input[dst] = db(noisy[src]);
                        b.reference[dst] = db(clean.pixels()[src]);
                    }
        }
    }
    return out;
}

std::vector<double> train(kernels::conv_algorithm algo, const std::vector<Batch>& batches, std::uint64_t seed,
                          double& seconds) {
    kernels::set_conv_algorithm(algo);
    DeSpeckNet<float> model(DeSpeckNetConfig{}, 1 + 1000 * seed);  // same seed: same initial weights
    Adam<float> adam;
    std::vector<double> losses;
    const auto t0 = std::chrono::steady_clock::now();
    for (const Batch& b : batches) losses.push_back(model.train_step(b.input.view(), b.reference.view(), {}, adam, 1e-3).total);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return losses;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Loss curves of exact (direct) and default (Winograd) training from the same start"};
    int steps = 200, threads = 0;
    std::uint64_t seed = 0;
    bool with_floor = false;
    std::string csv, algo_a = "direct", algo_b = "automatic";
    const std::vector<std::string> names = {"automatic", "direct", "winograd", "im2col_gemm", "reference"};
    app.add_option("--a", algo_a, "the baseline run's convolutions")->check(CLI::IsMember(names));
    app.add_option("--b", algo_b, "the compared run's convolutions")->check(CLI::IsMember(names));
    app.add_option("--steps", steps, "training steps per run")->check(CLI::PositiveNumber);
    app.add_option("--threads", threads, "OpenMP threads (0: the default)")->check(CLI::NonNegativeNumber);
    app.add_option("--seed", seed, "0: the documented run; others shift every seed by 1000 * seed");
    app.add_flag("--floor", with_floor, "also train with im2col_gemm (exact, another summation order) and judge b against that gap");
    app.add_option("--csv", csv, "also write the loss curves (step, a, b[, im2col_gemm]) to this file");
    CLI11_PARSE(app, argc, argv);
    if (threads > 0 && !set_num_threads(threads)) {
        std::fprintf(stderr, "error: --threads %d needs OpenMP, which this build does not have\n", threads);
        return 2;
    }
    try {
        const std::vector<Batch> batches = make_batches(steps, seed);
        auto parse = [](const std::string& n) {
            for (auto a : {kernels::conv_algorithm::automatic, kernels::conv_algorithm::direct, kernels::conv_algorithm::winograd,
                           kernels::conv_algorithm::im2col_gemm, kernels::conv_algorithm::reference})
                if (n == kernels::to_string(a)) return a;
            throw value_error("unknown conv algorithm " + n);
        };
        double t_direct = 0, t_wino = 0;
        const std::vector<double> direct = train(parse(algo_a), batches, seed, t_direct);
        const std::vector<double> wino = train(parse(algo_b), batches, seed, t_wino);
        // Point-wise relative gap, and the gaps of 10- and 50-step means and of the mean over the
        // second half. Once the loss is small and noisy, any change of rounding (even the
        // summation order of two exact kernels) moves single steps by tens of percent; the window
        // means are what a loss plot shows and what the comparison with the floor is about.
        struct Gaps {
            double pointwise = 0, mean10 = 0, mean50 = 0, half = 0;
            int worst = 0;
        };
        auto gaps = [steps](const std::vector<double>& ref, const std::vector<double>& other) {
            Gaps g;
            for (int s = 0; s < steps; ++s) {
                const double gap = std::abs(other[s] - ref[s]) / std::abs(ref[s]);
                if (gap > g.pointwise) g.pointwise = gap, g.worst = s;
            }
            auto window_gap = [&](int w) {
                double worst = 0;
                for (int s = 0; s + w <= steps; s += w) {
                    double a = 0, b = 0;
                    for (int k = s; k < s + w; ++k) a += ref[k], b += other[k];
                    worst = std::max(worst, std::abs(b - a) / std::abs(a));
                }
                return worst;
            };
            double half_a = 0, half_b = 0;
            for (int s = steps / 2; s < steps; ++s) half_a += ref[s], half_b += other[s];
            g.half = std::abs(half_b - half_a) / std::abs(half_a);
            g.mean10 = window_gap(10), g.mean50 = window_gap(50);
            return g;
        };
        auto print = [](const char* what, const Gaps& g) {
            std::printf("%s: max point-wise gap %.4f%% (step %d); max gap of 10-step means %.4f%%, of 50-step means "
                        "%.4f%%; mean of the second half %.4f%%\n",
                        what, 100 * g.pointwise, g.worst, 100 * g.mean10, 100 * g.mean50, 100 * g.half);
        };
        const Gaps g = gaps(direct, wino);
        std::vector<double> floor_run;
        double t_floor = 0;
        if (with_floor) floor_run = train(kernels::conv_algorithm::im2col_gemm, batches, seed, t_floor);
        if (!csv.empty()) {
            std::ofstream out(csv);
            out << "step," << algo_a << ',' << algo_b << (with_floor ? ",im2col_gemm" : "") << "\n";
            for (int s = 0; s < steps; ++s) {
                out << s << ',' << direct[s] << ',' << wino[s];
                if (with_floor) out << ',' << floor_run[s];
                out << '\n';
            }
            if (!out) throw error("could not write " + csv);
        }
        std::printf("a = %s, b = %s, seed %llu\n", algo_a.c_str(), algo_b.c_str(), static_cast<unsigned long long>(seed));
        std::printf("steps %d, first loss %.3f / %.3f, last loss %.3f / %.3f (a / b)\n", steps, direct[0], wino[0],
                    direct.back(), wino.back());
        std::printf("time: a %.1f s, b %.1f s\n", t_direct, t_wino);
        print("b vs a", g);
        // Pass: 50-step means within 2% and the second half's mean within 1%, or, with --floor, no
        // further apart than two exact runs (im2col vs a) are on this draw: on some draws even those
        // differ by 8% and 6% (docs/benchmarks.md).
        double limit50 = 0.02, limit_half = 0.01;
        if (with_floor) {
            const Gaps f = gaps(direct, floor_run);
            print("floor, im2col_gemm vs a", f);
            limit50 = std::max(limit50, f.mean50), limit_half = std::max(limit_half, f.half);
        }
        const bool pass = g.mean50 <= limit50 && g.half <= limit_half;
        std::printf("%s: 50-step means %.2f%% (limit %.2f%%), second half %.2f%% (limit %.2f%%)\n", pass ? "pass" : "FAIL",
                    100 * g.mean50, 100 * limit50, 100 * g.half, 100 * limit_half);
        return pass ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
