// despeck/workflow/training.hpp — the training loop behind `despeck train` and `despeck tune`:
// epochs of shuffled batches, a validation loss per epoch, checkpoints, exact resumption, logs.
//
// Files in the run directory:
//   last.safetensors   model + Adam state + position (epoch, step) after every epoch, and when
//                      interrupted (SIGINT/SIGTERM via the stop flag); written atomically
//   best.safetensors   the model with the lowest validation loss so far (or training loss without
//                      validation data)
//   log.jsonl          one JSON line per epoch: epoch, losses, validation losses, lr, seconds
// Resumption is exact: batches depend only on (seed, epoch, batch index), and the checkpoint holds
// the weights, batch-norm statistics and Adam moments; a run resumed from any checkpoint makes the
// same updates as one never stopped. A run killed without warning (SIGKILL, power loss) resumes
// from the last epoch's checkpoint and repeats that epoch's steps identically.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "despeck/data/patches.hpp"
#include "despeck/io/checkpoint.hpp"
#include "despeck/optim/schedule.hpp"

namespace despeck::workflow {

struct TrainOptions {
    index_t epochs = 50;
    index_t steps_per_epoch = 0;  // 0: one pass over the dataset
    index_t batch_size = 16;
    PiecewiseConstantSchedule schedule = PiecewiseConstantSchedule({30}, {1e-3, 1e-4});  // by epoch
    std::uint64_t seed = 1;
    bool flips = true, rot90 = false;
    std::filesystem::path run_dir;                 // where checkpoints and logs go (created)
    bool resume = false;                           // continue from run_dir/last.safetensors
    const std::atomic<bool>* stop = nullptr;       // set from a signal handler to stop cleanly
};

struct StepInfo {
    index_t epoch = 0, step = 0, steps_per_epoch = 0, epochs = 0;
    Losses<float> losses;
    double lr = 0, seconds = 0;  // seconds since this run (or resumption) started
    index_t steps_done = 0, steps_total = 0;  // of this run, for speed and ETA
};

struct EpochRecord {
    index_t epoch = 0;
    double loss = 0, clean = 0, reconstruction = 0, tv = 0;
    std::optional<double> val_loss, val_clean, val_reconstruction;
    double lr = 0, seconds = 0;
};

struct TrainResult {
    std::vector<EpochRecord> history;  // every completed epoch, including those before a resume
    bool interrupted = false;
    index_t epochs_done = 0;
    double best_loss = std::numeric_limits<double>::infinity();
};

namespace detail_train {

// Patches are stored in dB; a multiplicative (linear-intensity) model trains on 10^(dB/10).
inline Tensor<float> to_model_domain(const DeSpeckNet<float>& model, const Tensor<float>& db) {
    if (model.config().combine == CombineMode::additive_db || db.rank() == 0) return db;
    Tensor<float> linear(db.shape());
    linear.flat() = (db.flat() * (std::log(10.0f) / 10.0f)).exp();
    return linear;
}

inline nlohmann::json to_json(const EpochRecord& r) {
    nlohmann::json j = {{"epoch", r.epoch}, {"loss", r.loss}, {"clean_mse", r.clean}, {"reconstruction_mse", r.reconstruction},
                        {"tv", r.tv}, {"lr", r.lr}, {"seconds", r.seconds}};
    if (r.val_loss) {
        j["val_loss"] = *r.val_loss;
        j["val_clean_mse"] = *r.val_clean;
        j["val_reconstruction_mse"] = *r.val_reconstruction;
    }
    return j;
}
inline EpochRecord from_json(const nlohmann::json& j) {
    EpochRecord r;
    r.epoch = j.at("epoch");
    r.loss = j.at("loss");
    r.clean = j.value("clean_mse", 0.0);
    r.reconstruction = j.value("reconstruction_mse", 0.0);
    r.tv = j.value("tv", 0.0);
    r.lr = j.value("lr", 0.0);
    r.seconds = j.value("seconds", 0.0);
    if (j.contains("val_loss")) {
        r.val_loss = j.at("val_loss").get<double>();
        r.val_clean = j.value("val_clean_mse", 0.0);
        r.val_reconstruction = j.value("val_reconstruction_mse", 0.0);
    }
    return r;
}
inline void write_log(const std::filesystem::path& path, const std::vector<EpochRecord>& history) {
    std::string text;
    for (const auto& r : history) text += to_json(r).dump() + "\n";
    io::write_file_atomically(path, [&](std::FILE* f) { return io::write_all(f, text.data(), text.size()); });
}

// Losses of a whole dataset in inference mode (batch norm with running statistics), in batches.
inline Losses<double> evaluate_dataset(DeSpeckNet<float>& model, const data::PatchDataset& ds, index_t batch_size) {
    data::BatchOptions bo;
    bo.batch_size = batch_size;
    bo.flips = bo.rot90 = false;
    data::BatchLoader loader(ds, bo);
    Losses<double> sum;
    index_t n = 0;
    for (index_t b = 0; b < loader.batches_per_epoch(); ++b) {
        const data::Batch batch = loader.batch(0, b);
        const Tensor<float> input = to_model_domain(model, batch.input), reference = to_model_domain(model, batch.reference);
        const Losses<float> l = model.evaluate(input.view(), ds.has_reference() ? reference.view() : TensorView<const float>{},
                                               ds.has_mask() ? batch.mask.view() : TensorView<const float>{});
        const double w = double(batch.size());
        sum.clean += w * l.clean;
        sum.reconstruction += w * l.reconstruction;
        sum.tv += w * l.tv;
        sum.total += w * l.total;
        n += batch.size();
    }
    sum.clean /= double(n);
    sum.reconstruction /= double(n);
    sum.tv /= double(n);
    sum.total /= double(n);
    return sum;
}

}  // namespace detail_train

// Trains `model` on `train` (with a reference for training mode, without for tuning mode).
inline TrainResult train(DeSpeckNet<float>& model, const data::PatchDataset& train_set, const data::PatchDataset* validation,
                         const TrainOptions& opt, const std::function<void(const StepInfo&)>& on_step = {},
                         const std::function<void(const EpochRecord&)>& on_epoch = {}) {
    namespace fs = std::filesystem;
    if (opt.run_dir.empty()) detail::fail<value_error>("train: no run directory");
    if (opt.epochs < 1) detail::fail<value_error>("train: epochs ", opt.epochs, " must be >= 1");
    if (train_set.bands() != model.config().channels)
        detail::fail<shape_error>("train: the dataset has ", train_set.bands(), " band(s), the model ", model.config().channels);
    fs::create_directories(opt.run_dir);
    const fs::path last = opt.run_dir / "last.safetensors", best = opt.run_dir / "best.safetensors",
                   log = opt.run_dir / "log.jsonl";

    data::BatchOptions bo;
    bo.batch_size = opt.batch_size;
    bo.flips = opt.flips;
    bo.rot90 = opt.rot90;
    bo.seed = opt.seed;
    data::BatchLoader loader(train_set, bo);
    const index_t steps = opt.steps_per_epoch > 0 ? opt.steps_per_epoch : loader.batches_per_epoch();
    // Passes over the data per epoch: epoch e uses shuffles e * passes .. e * passes + passes - 1,
    // so no two epochs share a shuffle whatever steps_per_epoch is.
    const index_t passes = (steps + loader.batches_per_epoch() - 1) / loader.batches_per_epoch();
    if (validation && validation->count() > 0 &&
        (validation->bands() != train_set.bands() || validation->patch_size() != train_set.patch_size()))
        detail::fail<value_error>("train: the validation set (", validation->bands(), " band(s), ", validation->patch_size(),
                                  " px) does not match the training set (", train_set.bands(), " band(s), ",
                                  train_set.patch_size(), " px); prepare both in one run");

    Adam<float> adam;
    TrainResult result;
    index_t start_epoch = 0, start_step = 0;
    Losses<double> partial;        // loss sums of the steps an interrupted epoch already made
    double partial_seconds = 0;
    if (opt.resume) {
        if (!fs::exists(last))
            detail::fail<io_error>("train --resume: '", last.string(), "' does not exist; nothing to resume");
        const io::SafetensorsFile file = io::SafetensorsFile::read(last);
        io::load_checkpoint(file, model, &adam);
        start_epoch = std::stoll(file.metadata_value("train.epoch"));
        start_step = std::stoll(file.metadata_value("train.step"));
        result.best_loss = std::stod(file.metadata_value("train.best_loss"));
        auto require_same = [&](const char* key, const std::string& now, const char* option) {
            if (file.metadata().count(key) && file.metadata_value(key) != now)
                detail::fail<value_error>("train --resume: '", last.string(), "' was trained with ", option, " ",
                                          file.metadata_value(key), ", not ", now,
                                          "; resume with the same settings (the batches depend on them)");
        };
        require_same("train.seed", std::to_string(opt.seed), "seed");
        require_same("train.steps_per_epoch", std::to_string(steps), "steps per epoch");
        require_same("train.batch_size", std::to_string(opt.batch_size), "batch size");
        if (start_step >= steps)
            detail::fail<value_error>("train --resume: '", last.string(), "' stopped at step ", start_step, " of an epoch of ",
                                      steps, " steps");
        if (file.metadata().count("train.partial")) {
            const auto p = nlohmann::json::parse(file.metadata_value("train.partial"));
            partial.clean = p.at("clean");
            partial.reconstruction = p.at("reconstruction");
            partial.tv = p.at("tv");
            partial.total = p.at("total");
            partial_seconds = p.at("seconds");
        }
        if (fs::exists(log)) {
            std::ifstream in(log);
            std::string line;
            while (std::getline(in, line))
                if (!line.empty()) {
                    EpochRecord r = detail_train::from_json(nlohmann::json::parse(line));
                    if (r.epoch < start_epoch) result.history.push_back(r);
                }
        }
    }
    auto save = [&](const fs::path& path, index_t epoch, index_t step, const Losses<double>& sums = {}, double seconds = 0) {
        std::ostringstream best_text;
        best_text.precision(17);
        best_text << result.best_loss;
        const nlohmann::json p = {{"clean", sums.clean}, {"reconstruction", sums.reconstruction}, {"tv", sums.tv},
                                  {"total", sums.total}, {"seconds", seconds}};
        io::save_checkpoint(path, model, &adam,
                            {{"train.epoch", std::to_string(epoch)},
                             {"train.step", std::to_string(step)},
                             {"train.best_loss", best_text.str()},
                             {"train.seed", std::to_string(opt.seed)},
                             {"train.steps_per_epoch", std::to_string(steps)},
                             {"train.batch_size", std::to_string(opt.batch_size)},
                             {"train.partial", p.dump()}});
    };
    if (start_epoch >= opt.epochs) {
        result.epochs_done = start_epoch;
        return result;  // nothing left to do
    }

    const auto t0 = std::chrono::steady_clock::now();
    const index_t steps_total = (opt.epochs - start_epoch) * steps - start_step;
    index_t steps_done = 0;
    for (index_t epoch = start_epoch; epoch < opt.epochs; ++epoch) {
        const double lr = opt.schedule(static_cast<long>(epoch));
        Losses<double> sum = epoch == start_epoch ? partial : Losses<double>{};
        const double seconds_before = epoch == start_epoch ? partial_seconds : 0.0;
        const auto epoch_t0 = std::chrono::steady_clock::now();
        for (index_t step = (epoch == start_epoch ? start_step : 0); step < steps; ++step) {
            if (opt.stop && opt.stop->load()) {
                save(last, epoch, step, sum,
                     seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_t0).count());
                result.interrupted = true;
                result.epochs_done = epoch;
                return result;
            }
            // Batch indices past one pass wrap into the next shuffles of the same epoch number
            // space, so steps_per_epoch larger than the dataset still gives distinct batches.
            const index_t pass = step / loader.batches_per_epoch(), within = step % loader.batches_per_epoch();
            const data::Batch batch = loader.batch(epoch * passes + pass, within);
            const Tensor<float> input = detail_train::to_model_domain(model, batch.input);
            const Tensor<float> reference = detail_train::to_model_domain(model, batch.reference);
            const Losses<float> l = model.train_step(
                input.view(), train_set.has_reference() ? reference.view() : TensorView<const float>{},
                train_set.has_mask() ? batch.mask.view() : TensorView<const float>{}, adam, lr);
            sum.clean += l.clean;
            sum.reconstruction += l.reconstruction;
            sum.tv += l.tv;
            sum.total += l.total;
            ++steps_done;
            if (on_step) {
                StepInfo info;
                info.epoch = epoch;
                info.step = step;
                info.steps_per_epoch = steps;
                info.epochs = opt.epochs;
                info.losses = l;
                info.lr = lr;
                info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                info.steps_done = steps_done;
                info.steps_total = steps_total;
                on_step(info);
            }
        }
        const index_t n = steps;  // the sums include the steps made before an interruption
        EpochRecord rec;
        rec.epoch = epoch;
        rec.loss = sum.total / double(std::max<index_t>(1, n));
        rec.clean = sum.clean / double(std::max<index_t>(1, n));
        rec.reconstruction = sum.reconstruction / double(std::max<index_t>(1, n));
        rec.tv = sum.tv / double(std::max<index_t>(1, n));
        rec.lr = lr;
        rec.seconds = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_t0).count();
        if (validation && validation->count() > 0) {
            const Losses<double> v = detail_train::evaluate_dataset(model, *validation, opt.batch_size);
            rec.val_loss = v.total;
            rec.val_clean = v.clean;
            rec.val_reconstruction = v.reconstruction;
        }
        result.history.push_back(rec);
        const double score = rec.val_loss.value_or(rec.loss);
        if (score < result.best_loss) {
            result.best_loss = score;
            save(best, epoch + 1, 0);
        }
        // The log first: a kill between the two leaves an extra log line, which resume drops.
        detail_train::write_log(log, result.history);
        save(last, epoch + 1, 0);
        result.epochs_done = epoch + 1;
        if (on_epoch) on_epoch(rec);
    }
    return result;
}

// A loss-curve picture as SVG: training (and validation) loss per epoch, log scale.
inline void write_loss_curve_svg(const std::filesystem::path& path, const std::vector<EpochRecord>& history) {
    const double W = 640, H = 400, L = 70, R = 20, T = 30, B = 50;
    double lo = std::numeric_limits<double>::infinity(), hi = 0;
    for (const auto& r : history) {
        for (double v : {r.loss, r.val_loss.value_or(r.loss)})
            if (v > 0 && std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    if (history.empty() || !(hi > 0)) lo = 1, hi = 10;
    if (hi <= lo) hi = lo * 10;
    const double llo = std::floor(std::log10(lo)), lhi = std::ceil(std::log10(hi));
    const double n = double(std::max<std::size_t>(2, history.size()));
    auto x = [&](double e) { return L + (W - L - R) * e / (n - 1); };
    auto y = [&](double v) { return T + (H - T - B) * (lhi - std::log10(std::max(v, 1e-300))) / std::max(1.0, lhi - llo); };
    std::ostringstream s;
    s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    s << "<text x=\"" << W / 2 << "\" y=\"18\" text-anchor=\"middle\">deSpeckNet loss per epoch (log scale)</text>\n";
    for (double e = llo; e <= lhi; e += 1) {
        s << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << y(std::pow(10, e)) << "\" y2=\"" << y(std::pow(10, e))
          << "\" stroke=\"#ddd\"/>\n";
        s << "<text x=\"" << L - 6 << "\" y=\"" << y(std::pow(10, e)) + 4 << "\" text-anchor=\"end\">1e" << e << "</text>\n";
    }
    s << "<text x=\"" << W / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">epoch</text>\n";
    auto polyline = [&](bool val, const char* colour) {
        s << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\"";
        for (std::size_t i = 0; i < history.size(); ++i) {
            const auto& r = history[i];
            if (val && !r.val_loss) continue;
            s << x(double(i)) << "," << y(val ? *r.val_loss : r.loss) << " ";
        }
        s << "\"/>\n";
    };
    polyline(false, "#1f77b4");
    s << "<text x=\"" << W - R - 120 << "\" y=\"" << T + 14 << "\" fill=\"#1f77b4\">training</text>\n";
    if (!history.empty() && history.front().val_loss) {
        polyline(true, "#d62728");
        s << "<text x=\"" << W - R - 120 << "\" y=\"" << T + 30 << "\" fill=\"#d62728\">validation</text>\n";
    }
    s << "</svg>\n";
    const std::string text = s.str();
    io::write_file_atomically(path, [&](std::FILE* f) { return io::write_all(f, text.data(), text.size()); });
}

}  // namespace despeck::workflow
