// time_train_step — times the full-size deSpeckNet training step (both branches of depth 17,
// 64 filters, batch 16 of 40x40x2, both losses, Adam) and clean-branch inference on a tile.
// Speed comparisons with PyTorch and oneDNN belong to benchmarks/; this prints the plain time.
//
//   time_train_step [--steps 3] [--tile 256] [--repeats 3] [--threads N]
#include <algorithm>
#include <chrono>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "despeck/despeck.hpp"

using namespace despeck;

int main(int argc, char** argv) {
    CLI::App app{"Time the full-size deSpeckNet training step and clean-branch inference"};
    int steps = 3, tile = 256, repeats = 3, threads = 0;
    app.add_option("--steps", steps, "timed training steps after one warm-up (0: inference only)")->check(CLI::NonNegativeNumber);
    app.add_option("--tile", tile, "side of the inference tile (0: skip)")->check(CLI::NonNegativeNumber);
    app.add_option("--repeats", repeats, "timed inference runs per mode, after one warm-up; the median counts")
        ->check(CLI::PositiveNumber);
    app.add_option("--threads", threads, "OpenMP threads (0: the default)")->check(CLI::NonNegativeNumber);
    std::string conv = "automatic";
    app.add_option("--conv", conv, "training convolutions: automatic (Winograd where it applies), direct (exact fp32), "
                                   "winograd, im2col_gemm, reference")
        ->check(CLI::IsMember({"automatic", "direct", "winograd", "im2col_gemm", "reference"}));
    CLI11_PARSE(app, argc, argv);
    for (auto a : {kernels::conv_algorithm::automatic, kernels::conv_algorithm::direct, kernels::conv_algorithm::winograd,
                   kernels::conv_algorithm::im2col_gemm, kernels::conv_algorithm::reference})
        if (conv == kernels::to_string(a)) kernels::set_conv_algorithm(a);
    if (threads > 0 && !set_num_threads(threads)) {
        std::fprintf(stderr, "error: --threads %d needs OpenMP, which this build does not have\n", threads);
        return 2;
    }
    std::printf("%s\nconv kernel: %s\n", describe_runtime().c_str(),
                std::string(kernels::to_string(kernels::get_conv_algorithm())).c_str());
    try {
        DeSpeckNetConfig config;  // depth 17, 64 filters, 2 channels, dB additive
        DeSpeckNet<float> model(config, 1);
        Rng rng(2);
        Tensor<float> x(Shape{16, 40, 40, 2}), ref(x.shape());
        for (index_t i = 0; i < x.size(); ++i) {
            ref[i] = static_cast<float>(-12 + 3 * rng.normal());
            x[i] = ref[i] + static_cast<float>(2 * rng.normal());
        }
        Adam<float> adam;
        using clock = std::chrono::steady_clock;
        if (steps > 0) {  // --steps 0: inference only (for separate memory measurements)
            model.train_step(x.view(), ref.view(), {}, adam, 1e-3);  // warm-up
            const auto t0 = clock::now();
            Losses<float> l{};
            for (int s = 0; s < steps; ++s) l = model.train_step(x.view(), ref.view(), {}, adam, 1e-3);
            const double ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count() / steps;
            // 3 passes (forward, backward-data, backward-weights) x 2 branches x 2*MACs of the convs.
            const double macs_per_pixel = 3 * 3 * (2.0 * 64 + 15.0 * 64 * 64 + 64.0 * 2);
            const double gflop = 3 * 2 * 2 * macs_per_pixel * 16 * 40 * 40 / 1e9;
            std::printf("training step (batch 16 of 40x40x2, depth 17, 64 filters): %.1f ms  (%.1f GFLOP, %.1f GFLOP/s)  loss %.3f\n",
                        ms, gflop, gflop / (ms / 1e3), l.total);
        }
        if (tile > 0) {
            Tensor<float> img(Shape{1, tile, tile, 2});
            for (index_t i = 0; i < img.size(); ++i) img[i] = static_cast<float>(-12 + 3 * rng.normal());
            for (const auto mode : {InferenceMode::exact, InferenceMode::fast}) {
                const char* name = mode == InferenceMode::exact ? "exact" : "fast";
                // The plan (weights packed or Winograd-transformed, batch norm folded) is built
                // once, outside the timed runs, as pytorch_despecknet.py freezes its module before
                // timing it; its cost is printed on its own line. predict_clean() builds one per
                // call, and is what runs when --conv picks kernels that plans do not use.
                std::optional<BranchPlan<float>> plan;
                double plan_ms = 0;
                if (kernels::simd_kernels_selected()) {
                    const auto t_plan = clock::now();
                    plan.emplace(model, DeSpeckNet<float>::clean_branch, mode);
                    plan_ms = std::chrono::duration<double, std::milli>(clock::now() - t_plan).count();
                }
                const auto infer = [&] { return plan ? plan->run(img.view()) : model.predict_clean(img.view(), mode); };
                (void)infer();  // warm-up: first-touch pages
                // The median of --repeats runs, the statistic benchmarks/pytorch_despecknet.py
                // reports for PyTorch.
                std::vector<double> runs;
                for (int r = 0; r < repeats; ++r) {
                    const auto t1 = clock::now();
                    const Tensor<float> out = infer();
                    runs.push_back(std::chrono::duration<double>(clock::now() - t1).count());
                }
                std::vector<double> sorted = runs;
                std::sort(sorted.begin(), sorted.end());
                const std::size_t mid = sorted.size() / 2;
                const double s = sorted.size() % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2,
                             px = double(tile) * tile;
                std::printf("clean-branch inference (%s) %dx%dx2: %.3f s  (%.3f Mpx/s)  median of %d runs, Mpx/s:", name, tile,
                            tile, s, px / s / 1e6, repeats);
                for (double t : runs) std::printf(" %.3f", px / t / 1e6);
                std::printf("\n");
                if (plan) std::printf("inference plan (%s), built once per model: %.1f ms\n", name, plan_ms);
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
