// despeck — the deSpeckNet workflow as one program: prepare, train, tune, despeckle, evaluate,
// demo. A thin layer over the library: every step is a call a researcher can make from C++
// (data/prepare.hpp, workflow/training.hpp, workflow/despeckle.hpp, workflow/evaluate.hpp).
//   despeck <command> --help
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "despeck/data/prepare.hpp"
#include "despeck/data/synthetic.hpp"
#include "despeck/despeck.hpp"
#include "despeck/io/matconvnet.hpp"
#include "despeck/workflow/despeckle.hpp"
#include "despeck/workflow/evaluate.hpp"
#include "despeck/workflow/training.hpp"

using namespace despeck;
namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }

raster::Units parse_units(const std::string& s) { return s == "auto" ? raster::Units::unknown : raster::units_from_string(s); }

// "1e-3" or "1e-3@0,1e-4@30": learning rates from the given epochs on.
PiecewiseConstantSchedule parse_schedule(const std::string& text) {
    std::vector<long> bounds;
    std::vector<double> values;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const std::size_t comma = text.find(',', pos);
        const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        const std::size_t at = item.find('@');
        try {
            values.push_back(std::stod(item.substr(0, at)));
            const long from = at == std::string::npos ? 0 : std::stol(item.substr(at + 1));
            if (values.size() == 1) {
                if (from != 0) detail::fail<value_error>("the first learning rate must start at epoch 0");
            } else {
                bounds.push_back(from);
            }
        } catch (const std::logic_error&) {
            detail::fail<value_error>("cannot read the learning-rate schedule '", text, "' (expected e.g. 1e-3@0,1e-4@30)");
        }
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return PiecewiseConstantSchedule(bounds, values);
}

// Progress: a bar rewritten in place on a terminal, plain lines every ~5% otherwise.
struct Progress {
    bool tty = ::isatty(STDERR_FILENO) != 0;
    index_t last_percent = -1;
    void step(const workflow::StepInfo& s) {
        const double frac = double(s.steps_done) / double(std::max<index_t>(1, s.steps_total));
        const double speed = double(s.steps_done) / std::max(1e-9, s.seconds);
        const double eta = double(s.steps_total - s.steps_done) / std::max(1e-9, speed);
        if (tty) {
            const int width = 28, filled = static_cast<int>(frac * width);
            std::fprintf(stderr, "\r[%.*s%*s] %3.0f%% epoch %lld/%lld step %lld/%lld loss %.4g (clean %.4g, rec %.4g) %.2f step/s ETA %.0fs ",
                         filled, "############################", width - filled, "", frac * 100, (long long)s.epoch + 1,
                         (long long)s.epochs, (long long)s.step + 1, (long long)s.steps_per_epoch, (double)s.losses.total,
                         (double)s.losses.clean, (double)s.losses.reconstruction, speed, eta);
            if (s.steps_done == s.steps_total) std::fprintf(stderr, "\n");
        } else {
            const index_t percent = static_cast<index_t>(frac * 20) * 5;
            if (percent != last_percent) {
                last_percent = percent;
                std::fprintf(stderr, "%3lld%% epoch %lld step %lld loss %.4g (clean %.4g, reconstruction %.4g) %.2f step/s ETA %.0f s\n",
                             (long long)percent, (long long)s.epoch + 1, (long long)s.step + 1, (double)s.losses.total,
                             (double)s.losses.clean, (double)s.losses.reconstruction, speed, eta);
            }
        }
    }
};

void print_epoch(const workflow::EpochRecord& r) {
    std::printf("epoch %3lld  loss %.5g  clean-mse %.5g  reconstruction-mse %.5g", (long long)r.epoch + 1, r.loss, r.clean,
                r.reconstruction);
    if (r.val_loss) std::printf("  val-loss %.5g", *r.val_loss);
    std::printf("  lr %.0e  %.1f s\n", r.lr, r.seconds);
    std::fflush(stdout);
}

struct TrainArgs {
    std::string data, out, lr = "1e-3@0,1e-4@30", tv_kind = "anisotropic_l1", combine = "db";
    index_t epochs = 50, steps = 0, batch = 16;
    int depth = 17, filters = 64;
    double clean_weight = 100, reconstruction_weight = 1, tv_weight = 0;
    std::uint64_t seed = 1;
    bool resume = false, rot90 = false;
};

int run_training(DeSpeckNet<float>& model, const TrainArgs& a, bool quiet = false) {
    const data::PatchDataset train = data::load_patches(fs::path(a.data) / "train");
    std::optional<data::PatchDataset> val;
    if (fs::exists(fs::path(a.data) / "validation" / "manifest.json")) val = data::load_patches(fs::path(a.data) / "validation");
    workflow::TrainOptions opt;
    opt.epochs = a.epochs;
    opt.steps_per_epoch = a.steps;
    opt.batch_size = a.batch;
    opt.schedule = parse_schedule(a.lr);
    opt.seed = a.seed;
    // Augmentation as recorded by `despeck prepare` (--rot90 there), unless asked for here.
    opt.flips = train.manifest.options.flips;
    opt.rot90 = a.rot90 || train.manifest.options.rot90;
    opt.run_dir = a.out;
    opt.resume = a.resume;
    opt.stop = &g_stop;
    g_stop = false;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    struct RestoreSignals {
        ~RestoreSignals() {
            std::signal(SIGINT, SIG_DFL);
            std::signal(SIGTERM, SIG_DFL);
        }
    } restore_signals;
    if (!quiet)
        std::printf("training on %lld patches (%s), %lld validation; model depth %d, %d filters, %d channel(s), %s\n",
                    (long long)train.count(), train.has_reference() ? "training mode" : "tuning mode: no reference",
                    (long long)(val ? val->count() : 0), model.config().depth, model.config().filters, model.config().channels,
                    to_string(model.config().combine));
    Progress progress;
    const workflow::TrainResult r = workflow::train(
        model, train, val ? &*val : nullptr, opt, [&](const workflow::StepInfo& s) { if (!quiet) progress.step(s); },
        [&](const workflow::EpochRecord& e) { if (!quiet) print_epoch(e); });
    workflow::write_loss_curve_svg(fs::path(a.out) / "loss_curve.svg", r.history);
    if (r.interrupted) {
        std::fprintf(stderr, "\ninterrupted: state saved in %s; continue with the same command and --resume\n",
                     (fs::path(a.out) / "last.safetensors").c_str());
        return 130;
    }
    if (!quiet)
        std::printf("done: %s (best: %s), log %s, curve %s\n", (fs::path(a.out) / "last.safetensors").c_str(),
                    (fs::path(a.out) / "best.safetensors").c_str(), (fs::path(a.out) / "log.jsonl").c_str(),
                    (fs::path(a.out) / "loss_curve.svg").c_str());
    return 0;
}

void print_evaluation(const char* label, const workflow::Evaluation& e) {
    std::printf("%-28s", label);
    if (e.psnr_db) std::printf("  PSNR %6.2f dB  RMSE %5.2f dB", *e.psnr_db, *e.rmse_db);
    if (e.ratio_mean) std::printf("  ratio mean %.3f  ratio ENL %.2f", *e.ratio_mean, *e.ratio_enl);
    std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"despeck: deSpeckNet SAR despeckling on local GeoTIFF files (Mullissa et al., IEEE TGRS 60, 2022)"};
    app.require_subcommand(1);
    int threads = 0;
    app.add_option("--threads", threads, "OpenMP threads (0: the default)")->check(CLI::NonNegativeNumber);
    bool no_amx = false;
    app.add_flag("--no-amx", no_amx,
                 "leave Intel AMX's tile unit unused, as DESPECK_AMX=0 does: --fast then multiplies in float and exact mode "
                 "runs the direct kernels, the same floats as on a CPU without AMX");

    // ---- prepare
    auto* prep = app.add_subcommand("prepare", "GeoTIFF scenes -> temporal reference, change mask and a patch dataset");
    std::string p_input, p_out, p_units = "auto", p_sampling = "random";
    std::vector<std::string> p_stack;
    data::PrepareOptions p_opt;
    bool p_tuning = false;
    prep->add_option("--input", p_input, "the acquisition to learn from (GeoTIFF)")->required()->check(CLI::ExistingFile);
    prep->add_option("--stack", p_stack, "co-registered acquisitions for the temporal median (training mode)")->check(CLI::ExistingFile);
    prep->add_option("--out", p_out, "output directory")->required();
    prep->add_flag("--tuning", p_tuning, "tuning mode: patches of --input alone, no reference");
    prep->add_option("--units", p_units, "units of the files: auto (metadata), linear_intensity, amplitude, db");
    prep->add_option("--patch-size", p_opt.patches.size, "patch side in pixels")->check(CLI::PositiveNumber);
    prep->add_option("--count", p_opt.patches.count, "patches to draw (random sampling)")->check(CLI::PositiveNumber);
    prep->add_option("--sampling", p_sampling, "random or grid")->check(CLI::IsMember({"random", "grid"}));
    prep->add_option("--stride", p_opt.patches.stride, "grid stride (0: the patch size)");
    prep->add_option("--validation", p_opt.patches.validation_fraction, "share of the scene held out, by region");
    prep->add_option("--seed", p_opt.patches.seed, "seed of the split and the draws");
    prep->add_option("--max-std-db", p_opt.temporal.max_std_db, "temporal std-dev above which a pixel is masked (dB)");
    prep->add_flag("--rot90", p_opt.patches.rot90, "record 90-degree rotations as augmentation");

    // ---- train / tune
    TrainArgs t;
    auto* tr = app.add_subcommand("train", "train deSpeckNet on a prepared dataset");
    tr->add_option("--data", t.data, "dataset directory from `despeck prepare`")->required()->check(CLI::ExistingDirectory);
    tr->add_option("--out", t.out, "run directory: checkpoints, log, loss curve")->required();
    tr->add_option("--epochs", t.epochs, "epochs")->check(CLI::PositiveNumber);
    tr->add_option("--steps-per-epoch", t.steps, "steps per epoch (0: one pass over the data)")->check(CLI::NonNegativeNumber);
    tr->add_option("--batch", t.batch, "patches per step")->check(CLI::PositiveNumber);
    tr->add_option("--lr", t.lr, "learning rates by epoch, e.g. 1e-3@0,1e-4@30");
    tr->add_option("--depth", t.depth, "conv layers per branch")->check(CLI::Range(2, 64));
    tr->add_option("--filters", t.filters, "hidden channels")->check(CLI::PositiveNumber);
    tr->add_option("--combine", t.combine, "db (clean + noise, dB data) or linear (clean * noise, intensity)")
        ->check(CLI::IsMember({"db", "linear"}));
    tr->add_option("--clean-weight", t.clean_weight, "weight of MSE(clean, reference)");
    tr->add_option("--reconstruction-weight", t.reconstruction_weight, "weight of MSE(rebuilt, input)");
    tr->add_option("--tv-weight", t.tv_weight, "weight of total variation of the clean output");
    tr->add_option("--tv-kind", t.tv_kind, "anisotropic_l1 or quadratic");
    tr->add_option("--seed", t.seed, "seed of weights, shuffling and augmentation");
    tr->add_flag("--resume", t.resume, "continue from <out>/last.safetensors");

    TrainArgs u;
    u.epochs = 5;
    u.lr = "1e-4";
    std::string u_model;
    auto* tu = app.add_subcommand("tune", "fine-tune a trained model on one scene (reconstruction loss; tuning mode)");
    tu->add_option("--model", u_model, "trained checkpoint, or the authors' MatConvNet model (.mat)")->required()->check(CLI::ExistingFile);
    tu->add_option("--data", u.data, "tuning dataset (`despeck prepare --tuning`)")->required()->check(CLI::ExistingDirectory);
    tu->add_option("--out", u.out, "run directory")->required();
    tu->add_option("--epochs", u.epochs, "epochs")->check(CLI::PositiveNumber);
    tu->add_option("--steps-per-epoch", u.steps, "steps per epoch (0: one pass)")->check(CLI::NonNegativeNumber);
    tu->add_option("--batch", u.batch, "patches per step")->check(CLI::PositiveNumber);
    tu->add_option("--lr", u.lr, "learning rates by epoch");
    auto* tu_tv = tu->add_option("--tv-weight", u.tv_weight, "weight of total variation of the clean output (default: the model's)");
    tu->add_option("--seed", u.seed, "seed");
    tu->add_flag("--resume", u.resume, "continue from <out>/last.safetensors");

    // ---- despeckle
    std::string d_model, d_input, d_output, d_units = "auto", d_out_units = "auto", d_noise, d_png;
    index_t d_tile = 512;
    bool d_fast = false;
    auto* ds = app.add_subcommand("despeckle", "despeckle a GeoTIFF scene of any size (tiled, georeferenced output)");
    ds->add_option("--model", d_model, "checkpoint, or the authors' MatConvNet model (.mat)")->required()->check(CLI::ExistingFile);
    ds->add_option("--input", d_input, "scene (GeoTIFF)")->required()->check(CLI::ExistingFile);
    ds->add_option("--output", d_output, "despeckled scene (GeoTIFF)")->required();
    ds->add_option("--units", d_units, "input units: auto (metadata), linear_intensity, amplitude, db");
    ds->add_option("--output-units", d_out_units, "output units: auto (as the input), linear_intensity, amplitude, db");
    ds->add_option("--noise", d_noise, "also write the noise branch's estimate here");
    ds->add_option("--quicklook", d_png, "also write a PNG: input | despeckled, in dB");
    ds->add_option("--tile", d_tile, "tile side in pixels (memory ~ tile^2 * filters * 12 bytes)")->check(CLI::Range(16, 8192));
    ds->add_flag("--fast", d_fast,
                 "Winograd convolutions with batch norm folded: about 2.5x faster (on CPUs with AMX the products run as "
                 "exact int8 products of three 8-bit slices), within 1e-3 of exact mode at every pixel and of its largest "
                 "value (docs/benchmarks.md)");

    // ---- import-matconvnet
    std::string i_model, i_out;
    auto* im = app.add_subcommand("import-matconvnet",
                                  "convert the authors' MatConvNet model (.mat, MATLAB v5) into a despeck checkpoint");
    im->add_option("--model", i_model, "the MatConvNet model, e.g. deSpeckNet-epoch-30.mat")->required()->check(CLI::ExistingFile);
    im->add_option("--out", i_out, "the checkpoint to write (.safetensors)")->required();

    // ---- evaluate
    std::string e_result, e_reference, e_input, e_units = "auto";
    auto* ev = app.add_subcommand("evaluate", "quality figures of a despeckled scene");
    ev->add_option("--result", e_result, "despeckled scene")->required()->check(CLI::ExistingFile);
    ev->add_option("--reference", e_reference, "clean reference, if one exists")->check(CLI::ExistingFile);
    ev->add_option("--input", e_input, "the noisy input, for ratio-image statistics")->check(CLI::ExistingFile);
    ev->add_option("--units", e_units, "units when the files do not say");

    // ---- demo
    std::string demo_dir = "despeck-demo";
    index_t demo_steps = 500;
    auto* demo = app.add_subcommand("demo", "the whole workflow on a built-in synthetic scene (no downloads)");
    demo->add_option("--work", demo_dir, "working directory");
    demo->add_option("--steps", demo_steps, "training steps (the main knob for time)")->check(CLI::PositiveNumber);

    CLI11_PARSE(app, argc, argv);
    if (threads > 0 && !set_num_threads(threads)) {
        std::fprintf(stderr, "error: --threads %d needs OpenMP, which this build does not have\n", threads);
        return 2;
    }
    try {
        if (no_amx) kernels::set_amx_enabled(false);
        std::printf("%s\n%s\n", describe_runtime().c_str(), kernels::describe_kernels().c_str());
        if (*prep) {
            p_opt.units = parse_units(p_units);
            p_opt.patches.sampling = p_sampling == "grid" ? data::PatchOptions::Sampling::grid : data::PatchOptions::Sampling::random;
            data::PrepareReport r;
            if (p_tuning) {
                r = data::prepare_tuning(p_input, p_out, p_opt);
            } else {
                if (p_stack.size() < 2) detail::fail<value_error>("prepare: training mode needs --stack with at least 2 scenes (or --tuning)");
                r = data::prepare_training(p_input, std::vector<fs::path>(p_stack.begin(), p_stack.end()), p_out, p_opt);
                std::printf("temporal reference of %lld dates: %s, %s; stable pixels %lld of %lld (%.1f%%)\n", (long long)r.dates,
                            r.median_path.c_str(), r.mask_path.c_str(), (long long)r.stable_pixels, (long long)(r.rows * r.cols),
                            100.0 * double(r.stable_pixels) / double(r.rows * r.cols));
            }
            std::printf("%lld training and %lld validation patches of %lldx%lld x %lld bands in %s\n", (long long)r.train_patches,
                        (long long)r.validation_patches, (long long)p_opt.patches.size, (long long)p_opt.patches.size,
                        (long long)r.bands, p_out.c_str());
            return 0;
        }
        if (*tr) {
            if (!t.resume && fs::exists(fs::path(t.out) / "last.safetensors"))
                detail::fail<value_error>("'", t.out, "' already holds a run; use --resume to continue it or another --out");
            if (t.resume) {
                // The model (architecture, loss weights) comes from the run's own checkpoint.
                DeSpeckNet<float> model = io::load_model<float>(fs::path(t.out) / "last.safetensors");
                return run_training(model, t);
            }
            const data::PatchDataset probe = data::load_patches(fs::path(t.data) / "train");
            DeSpeckNetConfig cfg;
            cfg.depth = t.depth;
            cfg.filters = t.filters;
            cfg.channels = static_cast<int>(probe.bands());
            cfg.combine = t.combine == "db" ? CombineMode::additive_db : CombineMode::multiplicative_linear;
            cfg.clean_weight = t.clean_weight;
            cfg.reconstruction_weight = t.reconstruction_weight;
            cfg.tv_weight = t.tv_weight;
            cfg.tv_kind = tv_kind_from_string(t.tv_kind);
            DeSpeckNet<float> model(cfg, t.seed);
            return run_training(model, t);
        }
        if (*tu) {
            if (!u.resume && fs::exists(fs::path(u.out) / "last.safetensors"))
                detail::fail<value_error>("'", u.out, "' already holds a run; use --resume to continue it or another --out");
            DeSpeckNet<float> model = u.resume ? io::load_model<float>(fs::path(u.out) / "last.safetensors")
                                               : io::load_model_or_matconvnet<float>(u_model);
            if (tu_tv->count() > 0) {
                DeSpeckNetConfig cfg = model.config();
                cfg.tv_weight = u.tv_weight;
                model.set_config(cfg);
            }
            return run_training(model, u);
        }
        if (*im) {
            const DeSpeckNet<float> model = io::load_matconvnet<float>(i_model);
            io::save_checkpoint<float>(i_out, model, nullptr, {{"source", fs::path(i_model).filename().string()}});
            const DeSpeckNetConfig& c = model.config();
            std::printf("%s: deSpeckNet from %s, depth %d, %d filters, %d channel(s), %s, batch-norm eps %g\n", i_out.c_str(),
                        i_model.c_str(), c.depth, c.filters, c.channels, to_string(c.combine), c.bn_eps);
            return 0;
        }
        if (*ds) {
            const DeSpeckNet<float> model = io::load_model_or_matconvnet<float>(d_model);
            workflow::DespeckleOptions opt;
            opt.input_units = parse_units(d_units);
            opt.output_units = parse_units(d_out_units);
            opt.noise_path = d_noise;
            opt.quicklook_png = d_png;
            opt.tiles.tile_rows = opt.tiles.tile_cols = d_tile;
            opt.tiles.mode = d_fast ? InferenceMode::fast : InferenceMode::exact;
            Progress bar;
            opt.tiles.progress = [&](index_t done, index_t total) {
                if (bar.tty) std::fprintf(stderr, "\rdespeckling: %lld / %lld rows", (long long)done, (long long)total);
                if (bar.tty && done == total) std::fprintf(stderr, "\n");
            };
            const workflow::DespeckleReport r = workflow::despeckle_geotiff(model, d_input, d_output, opt);
            if (!r.georeferenced)
                std::fprintf(stderr, "warning: '%s' has no georeferencing; '%s' has none either\n", d_input.c_str(), d_output.c_str());
            std::printf("%s: %lld x %lld x %lld, %lld no-data pixels kept, %.1f s (%.3f Mpx/s)\n", d_output.c_str(), (long long)r.cols,
                        (long long)r.rows, (long long)r.bands, (long long)r.invalid_pixels, r.seconds,
                        double(r.rows * r.cols) / r.seconds / 1e6);
            return 0;
        }
        if (*ev) {
            const workflow::Evaluation e = workflow::evaluate_geotiff(e_result, e_reference, e_input, parse_units(e_units));
            print_evaluation(e_result.c_str(), e);
            return 0;
        }
        if (*demo) {
            // 1. A synthetic 8-date dual-pol stack (linear intensity, 4.4 looks, a changed field).
            const fs::path work = demo_dir;
            fs::create_directories(work / "scenes");
            const index_t size = 256;
            const data::SyntheticStack stack = data::synthetic_stack(size, size, 2, 8, /*seed=*/7, 4.4);
            std::vector<fs::path> dates;
            for (std::size_t d = 0; d < stack.noisy_dates.size(); ++d) {
                dates.push_back(work / "scenes" / ("date" + std::to_string(d + 1) + ".tif"));
                io::write_geotiff(dates.back(), stack.noisy_dates[d]);
            }
            io::write_geotiff(work / "scenes" / "clean_before.tif", stack.clean_before);
            std::printf("1/5 synthetic stack: 8 dates of %lldx%lld x 2 bands in %s\n", (long long)size, (long long)size,
                        (work / "scenes").c_str());
            // 2. Prepare: temporal median, mask, patches.
            data::PrepareOptions popt;
            popt.patches.count = 1200;
            popt.patches.split_block_rows = 40;  // a small scene: bands of one patch row
            popt.temporal.max_std_db = 3.0;  // 4.4-look speckle alone spreads ~2.2 dB over 8 dates
            const data::PrepareReport pr = data::prepare_training(dates.front(), dates, work / "dataset", popt);
            std::printf("2/5 prepared %lld training / %lld validation patches; %.0f%% of pixels stable\n", (long long)pr.train_patches,
                        (long long)pr.validation_patches, 100.0 * double(pr.stable_pixels) / double(size * size));
            // 3. Train a reduced deSpeckNet (depth 9, 32 filters) for a few minutes.
            TrainArgs a;
            a.data = (work / "dataset").string();
            a.out = (work / "run").string();
            a.depth = 9;
            a.filters = 32;
            a.steps = std::min<index_t>(100, demo_steps);
            a.epochs = (demo_steps + a.steps - 1) / a.steps;
            a.lr = "1e-3@0,1e-4@" + std::to_string(std::max<index_t>(1, a.epochs * 3 / 4));
            fs::remove_all(a.out);
            DeSpeckNetConfig cfg;
            cfg.depth = a.depth;
            cfg.filters = a.filters;
            cfg.channels = 2;
            DeSpeckNet<float> model(cfg, 1);
            std::printf("3/5 training depth %d, %d filters, %lld steps of 16 patches\n", cfg.depth, cfg.filters,
                        (long long)(a.epochs * a.steps));
            if (const int rc = run_training(model, a); rc != 0) return rc;
            // 4. A new acquisition with unknown speckle (1 look) to tune on and despeckle.
            raster::MemoryRaster target = data::synthetic_scene(size, size, 2, /*seed=*/99);
            raster::MemoryRaster clean = target;
            data::apply_speckle(target.pixels(), 1.0, 123, target.info().nodata);
            io::write_geotiff(work / "scenes" / "new_1look.tif", target);
            io::write_geotiff(work / "scenes" / "new_clean.tif", clean);
            workflow::despeckle_geotiff(model, work / "scenes" / "new_1look.tif", work / "new_despeckled_base.tif");
            data::PrepareOptions topt;
            topt.patches.count = 400;
            topt.patches.split_block_rows = 40;
            data::prepare_tuning(work / "scenes" / "new_1look.tif", work / "tuning", topt);
            TrainArgs tu_args;
            tu_args.data = (work / "tuning").string();
            tu_args.out = (work / "tune").string();
            tu_args.epochs = 2;
            tu_args.steps = 50;
            tu_args.lr = "1e-4";
            fs::remove_all(tu_args.out);
            std::printf("4/5 tuning on the new 1-look scene (reconstruction loss only)\n");
            if (const int rc = run_training(model, tu_args); rc != 0) return rc;
            // 5. Despeckle and compare.
            workflow::DespeckleOptions dopt;
            dopt.quicklook_png = work / "new_despeckled.png";
            workflow::despeckle_geotiff(model, work / "scenes" / "new_1look.tif", work / "new_despeckled.tif", dopt);
            std::printf("5/5 despeckled %s (quick-look %s)\n\n", (work / "new_despeckled.tif").c_str(), dopt.quicklook_png.c_str());
            const fs::path ref = work / "scenes" / "new_clean.tif", noisy = work / "scenes" / "new_1look.tif";
            const auto e_noisy = workflow::evaluate_geotiff(noisy, ref);
            const auto e_base = workflow::evaluate_geotiff(work / "new_despeckled_base.tif", ref, noisy);
            const auto e_tuned = workflow::evaluate_geotiff(work / "new_despeckled.tif", ref, noisy);
            std::printf("new 1-look scene against its clean reference (dB domain):\n");
            print_evaluation("noisy input", e_noisy);
            print_evaluation("deSpeckNet (trained)", e_base);
            print_evaluation("deSpeckNet (tuned)", e_tuned);
            std::printf("PSNR gain: %+.2f dB\n", *e_tuned.psnr_db - *e_noisy.psnr_db);
            return *e_tuned.psnr_db > *e_noisy.psnr_db ? 0 : 1;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
