// time_train_step — times the full-size deSpeckNet training step (both branches of depth 17,
// 64 filters, batch 16 of 40x40x2, both losses, Adam) and clean-branch inference on a tile.
// Speed comparisons with PyTorch and oneDNN belong to benchmarks/; this prints the plain time.
//
//   time_train_step [--steps 3] [--tile 256] [--repeats 3] [--threads N]
//                   [--model trained.safetensors|authors.mat --image crop.npy]
// With --model, exact and fast inference are timed on that model instead, on the image mirrored
// out to the tile: a trained model's activations are sparser than an untrained one's, which the
// exact mode's sparse-input kernel turns into speed.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "despeck/despeck.hpp"
#include "despeck/io/checkpoint.hpp"
#include "despeck/io/matconvnet.hpp"
#include "despeck/io/npy.hpp"

using namespace despeck;

namespace {

// The median of --repeats runs of exact and fast clean-branch inference on img, after a warm-up;
// prints "<what> (<mode>) HxWxC: s (Mpx/s) ..." lines.
void time_inference(const DeSpeckNet<float>& model, const Tensor<float>& img, int repeats, const char* what) {
    using clock = std::chrono::steady_clock;
    const index_t H = img.shape()[1], W = img.shape()[2], C = img.shape()[3];
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
        const double s = sorted.size() % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2, px = double(H) * W;
        std::printf("%s (%s) %ldx%ldx%ld: %.3f s  (%.3f Mpx/s)  median of %d runs, Mpx/s:", what, name, long(H), long(W),
                    long(C), s, px / s / 1e6, repeats);
        for (double t : runs) std::printf(" %.3f", px / t / 1e6);
        std::printf("\n");
        if (plan) std::printf("inference plan (%s), built once per model: %.1f ms\n", name, plan_ms);
    }
}

// img [H,W] or [H,W,C] mirrored out to side x side (reflection at the edges, period 2H and 2W),
// as pytorch_despecknet.py --image does: [1,side,side,C].
Tensor<float> mirrored_tile(const Tensor<float>& img, index_t side) {
    const Shape s = img.shape();
    if (s.rank() != 2 && s.rank() != 3) throw shape_error("--image: expected [H,W] or [H,W,C], got " + s.str());
    const index_t H = s[0], W = s[1], C = s.rank() == 3 ? s[2] : 1;
    const auto mirror = [](index_t i, index_t n) {
        const index_t m = i % (2 * n);
        return m < n ? m : 2 * n - 1 - m;
    };
    Tensor<float> out(Shape{1, side, side, C});
    for (index_t h = 0; h < side; ++h)
        for (index_t w = 0; w < side; ++w)
            for (index_t c = 0; c < C; ++c) out[(h * side + w) * C + c] = img[(mirror(h, H) * W + mirror(w, W)) * C + c];
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Time the full-size deSpeckNet training step and clean-branch inference"};
    int steps = 3, tile = 256, repeats = 3, threads = 0;
    app.add_option("--steps", steps, "timed training steps after one warm-up (0: inference only)")->check(CLI::NonNegativeNumber);
    app.add_option("--tile", tile, "side of the inference tile (0: skip)")->check(CLI::NonNegativeNumber);
    app.add_option("--repeats", repeats, "timed inference runs per mode, after one warm-up; the median counts")
        ->check(CLI::PositiveNumber);
    app.add_option("--threads", threads, "OpenMP threads (0: the default)")->check(CLI::NonNegativeNumber);
    std::string model_path, image_path;
    app.add_option("--model", model_path, "a trained checkpoint or the authors' MatConvNet model (.mat): time inference on it instead (needs --image)");
    app.add_option("--image", image_path, "with --model: an image (.npy, [H,W] or [H,W,C] float32) mirrored out to the tile");
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
    std::printf("%s\n%s\nconv kernel: %s\n", describe_runtime().c_str(), kernels::describe_kernels().c_str(),
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
        if (tile > 0 && model_path.empty()) {
            Tensor<float> img(Shape{1, tile, tile, 2});
            for (index_t i = 0; i < img.size(); ++i) img[i] = static_cast<float>(-12 + 3 * rng.normal());
            time_inference(model, img, repeats, "clean-branch inference");
        }
        if (!model_path.empty()) {
            if (image_path.empty() || tile <= 0) throw value_error("--model needs --image and a --tile above 0");
            const DeSpeckNet<float> trained = io::load_model_or_matconvnet<float>(model_path);
            const Tensor<float> img = mirrored_tile(io::read_npy_f32(image_path), tile);
            if (img.shape()[3] != trained.config().channels)
                throw shape_error("--image " + image_path + " has " + std::to_string(img.shape()[3]) + " channels, the model " +
                                  std::to_string(trained.config().channels));
            time_inference(trained, img, repeats, "pretrained-model inference");
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
