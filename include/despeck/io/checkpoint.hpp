// despeck/io/checkpoint.hpp — deSpeckNet checkpoints as safetensors files.
//
// Contents (all F32 unless saved from a double model, then F64; see docs/checkpoints.md):
//   "<branch>.conv<i>.weight"  [K,K,Cin,Cout] HWIO     "<branch>.conv<i>.bias"  [Cout]
//   "<branch>.bn<i>.weight|bias|running_mean|running_var" [F]
//   optionally the Adam state: "optimizer.m.<param name>", "optimizer.v.<param name>"
//   __metadata__: "format" = "despeck-checkpoint", "format_version" = "1", "despeck_version",
//                 "config" = the model configuration as a JSON string; with an optimiser state
//                 "optimizer" = "adam", "optimizer.step", "optimizer.options" = JSON {beta1, beta2,
//                 eps}; plus any caller-supplied keys (epoch, ...).
// Writing is atomic (io/atomic_file.hpp). Loading checks the format and its version, the
// configuration against the model, and every tensor's presence and shape, and names what is
// wrong. It is all-or-nothing: every tensor is read and checked before the model is touched.
#pragma once

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "despeck/io/safetensors.hpp"
#include "despeck/nn/despecknet.hpp"
#include "despeck/optim/adam.hpp"
#include "despeck/runtime.hpp"

namespace despeck::io {

inline nlohmann::json config_to_json(const DeSpeckNetConfig& c) {
    return {{"depth", c.depth},
            {"filters", c.filters},
            {"channels", c.channels},
            {"kernel", c.kernel},
            {"combine", to_string(c.combine)},
            {"bn_eps", c.bn_eps},
            {"bn_momentum", c.bn_momentum},
            {"clean_weight", c.clean_weight},
            {"reconstruction_weight", c.reconstruction_weight},
            {"tv_weight", c.tv_weight},
            {"tv_kind", to_string(c.tv_kind)},
            {"mask_normalization", to_string(c.mask_normalization)}};
}

// Missing keys keep their defaults, so older files stay readable; wrong types are errors.
inline DeSpeckNetConfig config_from_json(const nlohmann::json& j, const std::string& source = "config") {
    DeSpeckNetConfig c;
    try {
        if (!j.is_object()) throw std::runtime_error("not a JSON object");
        c.depth = j.value("depth", c.depth);
        c.filters = j.value("filters", c.filters);
        c.channels = j.value("channels", c.channels);
        c.kernel = j.value("kernel", c.kernel);
        if (j.contains("combine")) c.combine = combine_mode_from_string(j.at("combine").get<std::string>());
        c.bn_eps = j.value("bn_eps", c.bn_eps);
        c.bn_momentum = j.value("bn_momentum", c.bn_momentum);
        c.clean_weight = j.value("clean_weight", c.clean_weight);
        c.reconstruction_weight = j.value("reconstruction_weight", c.reconstruction_weight);
        c.tv_weight = j.value("tv_weight", c.tv_weight);
        if (j.contains("tv_kind")) c.tv_kind = tv_kind_from_string(j.at("tv_kind").get<std::string>());
        if (j.contains("mask_normalization"))
            c.mask_normalization = mask_normalization_from_string(j.at("mask_normalization").get<std::string>());
    } catch (const std::exception& e) {
        despeck::detail::fail<io_error>(source, ": invalid deSpeckNet configuration (", e.what(), ")");
    }
    try {
        c.validate();
    } catch (const std::exception& e) {
        despeck::detail::fail<io_error>(source, ": ", e.what());
    }
    return c;
}

// Saves the model (and the optimiser state when `adam` is given) atomically to `path`.
template <class T>
void save_checkpoint(const std::filesystem::path& path, const DeSpeckNet<T>& model, const Adam<T>* adam = nullptr,
                     const std::map<std::string, std::string>& extra_metadata = {}) {
    constexpr auto dtype = std::is_same_v<T, double> ? SafetensorsWriter::DType::F64 : SafetensorsWriter::DType::F32;
    SafetensorsWriter w;
    for (const auto& [key, value] : extra_metadata) w.set_metadata(key, value);
    w.set_metadata("format", "despeck-checkpoint");
    w.set_metadata("format_version", "1");
    w.set_metadata("despeck_version", version_string);
    w.set_metadata("config", config_to_json(model.config()).dump());
    const auto& params = model.parameters();
    for (std::size_t i = 0; i < params.count(); ++i) w.add<T>(params.entry(i).name, params.value(i), dtype);
    const auto& buffers = model.buffers();
    for (std::size_t i = 0; i < buffers.count(); ++i) w.add<T>(buffers.entry(i).name, buffers.value(i), dtype);
    if (adam && adam->step_count() > 0) {
        const auto& m = adam->first_moment();
        const auto& v = adam->second_moment();
        if (static_cast<index_t>(m.size()) != params.total_size())
            despeck::detail::fail<value_error>("save_checkpoint: the optimiser state (", m.size(),
                                               " values) does not belong to this model (", params.total_size(), ")");
        for (std::size_t i = 0; i < params.count(); ++i) {
            const auto& e = params.entry(i);
            w.add<T>("optimizer.m." + e.name, e.shape.dims(), m.data() + e.offset, e.shape.size(), dtype);
            w.add<T>("optimizer.v." + e.name, e.shape.dims(), v.data() + e.offset, e.shape.size(), dtype);
        }
        w.set_metadata("optimizer", "adam");
        w.set_metadata("optimizer.step", std::to_string(adam->step_count()));
        const nlohmann::json opts = {{"beta1", adam->options().beta1}, {"beta2", adam->options().beta2},
                                     {"eps", adam->options().eps}};
        w.set_metadata("optimizer.options", opts.dump());
    }
    w.write(path);
}

// Filling a model from named tensors, all or nothing, in two steps shared by every reader of
// models (checkpoints, the MatConvNet importer): first read_model_tensors asks `read(name,
// shape)` for each tensor of the model's parameters, then of its buffers, in store order; read
// returns a Tensor<T> of that shape (anything else is a value_error) or throws, naming the file
// and what is wrong. Only when every tensor has been read does assign_model_tensors copy them in.
namespace detail_checkpoint {
// Whether t has exactly this shape and the values for it (a tensor moved from keeps its shape).
template <class T>
bool holds(const Tensor<T>& t, const Shape& shape) {
    return t.shape() == shape && t.size() == shape.size();
}
}  // namespace detail_checkpoint

template <class T, class Read>
std::vector<Tensor<T>> read_model_tensors(const DeSpeckNet<T>& model, Read&& read) {
    std::vector<Tensor<T>> tensors;
    for (const ParameterStore<T>* store : {&model.parameters(), &model.buffers()})
        for (std::size_t i = 0; i < store->count(); ++i) {
            const auto& e = store->entry(i);
            tensors.push_back(read(e.name, e.shape));
            const Tensor<T>& t = tensors.back();
            if (!detail_checkpoint::holds(t, e.shape))
                despeck::detail::fail<value_error>("read_model_tensors: '", e.name, "' was read as ", t.size(),
                                                   " values of shape ", t.shape(), ", the model's is ", e.shape);
        }
    return tensors;
}

// Checks the count and every tensor (detail_checkpoint::holds) before it copies anything.
template <class T>
void assign_model_tensors(DeSpeckNet<T>& model, const std::vector<Tensor<T>>& tensors) {
    auto& params = model.parameters();
    auto& buffers = model.buffers();
    if (tensors.size() != params.count() + buffers.count())
        despeck::detail::fail<value_error>("assign_model_tensors: ", tensors.size(), " tensors for a model of ",
                                           params.count() + buffers.count());
    std::size_t k = 0;
    for (const ParameterStore<T>* store : {&params, &buffers})
        for (std::size_t i = 0; i < store->count(); ++i, ++k)
            if (!detail_checkpoint::holds(tensors[k], store->entry(i).shape))
                despeck::detail::fail<value_error>("assign_model_tensors: tensor ", k, " for '", store->entry(i).name,
                                                   "' holds ", tensors[k].size(), " values of shape ", tensors[k].shape(),
                                                   ", the model's is ", store->entry(i).shape);
    k = 0;
    for (ParameterStore<T>* store : {&params, &buffers})
        for (std::size_t i = 0; i < store->count(); ++i, ++k)
            std::copy(tensors[k].data(), tensors[k].data() + tensors[k].size(), store->value(i).data);
}

// The configuration stored in a checkpoint.
inline DeSpeckNetConfig read_checkpoint_config(const SafetensorsFile& file) {
    const auto& md = file.metadata();
    auto it = md.find("format");
    if (it == md.end() || it->second != "despeck-checkpoint")
        despeck::detail::fail<io_error>("'", file.path(), "' is not a despeck checkpoint (metadata 'format' is ",
                                        it == md.end() ? std::string("missing") : "'" + it->second + "'", ")");
    if (md.count("format_version") && md.at("format_version") != "1")
        despeck::detail::fail<io_error>("'", file.path(), "' has checkpoint format version ", md.at("format_version"),
                                        "; this despeck (", version_string, ") reads version 1");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(file.metadata_value("config"));
    } catch (const nlohmann::json::exception& e) {
        despeck::detail::fail<io_error>("'", file.path(), "': metadata 'config' is not valid JSON (", e.what(), ")");
    }
    return config_from_json(j, "'" + file.path() + "'");
}

// Loads weights (and the optimiser state, when `adam` is given and the file has one) into an
// existing model. The file's configuration must match the model's architecture (depth, filters,
// channels, kernel, combine mode); loss weights are taken from the file unless keep_loss_weights.
template <class T>
void load_checkpoint(const SafetensorsFile& file, DeSpeckNet<T>& model, Adam<T>* adam = nullptr,
                     bool keep_loss_weights = false) {
    const DeSpeckNetConfig stored = read_checkpoint_config(file);
    const DeSpeckNetConfig& have = model.config();
    auto mismatch = [&](const char* what, auto a, auto b) {
        despeck::detail::fail<io_error>("'", file.path(), "' holds a model with ", what, " ", a, ", this model has ", b);
    };
    if (stored.depth != have.depth) mismatch("depth", stored.depth, have.depth);
    if (stored.filters != have.filters) mismatch("filters", stored.filters, have.filters);
    if (stored.channels != have.channels) mismatch("channels", stored.channels, have.channels);
    if (stored.kernel != have.kernel) mismatch("kernel", stored.kernel, have.kernel);
    if (stored.combine != have.combine) mismatch("combine mode", to_string(stored.combine), to_string(have.combine));

    // Read and check everything first; copy into the model only when all of it is valid.
    const std::vector<Tensor<T>> values = read_model_tensors(model, [&](const std::string& name, const Shape& shape) {
        if (!file.contains(name)) despeck::detail::fail<io_error>("'", file.path(), "': missing tensor '", name, "'");
        return file.tensor<T>(name, shape);
    });
    const auto& params = model.parameters();
    std::int64_t adam_step = -1;
    std::vector<T> m, v;
    if (adam && file.metadata().count("optimizer.step")) {
        const std::string text = file.metadata_value("optimizer.step");
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), adam_step);
        if (ec != std::errc() || end != text.data() + text.size() || adam_step < 0)
            despeck::detail::fail<io_error>("'", file.path(), "': optimizer.step '", text,
                                            "' is not a non-negative integer");
        m.resize(static_cast<std::size_t>(params.total_size()));
        v.resize(m.size());
        for (std::size_t i = 0; i < params.count(); ++i) {
            const auto& e = params.entry(i);
            const Tensor<T> tm = file.tensor<T>("optimizer.m." + e.name, e.shape);
            const Tensor<T> tv = file.tensor<T>("optimizer.v." + e.name, e.shape);
            std::copy(tm.data(), tm.data() + tm.size(), m.data() + e.offset);
            std::copy(tv.data(), tv.data() + tv.size(), v.data() + e.offset);
        }
    }
    assign_model_tensors(model, values);
    if (adam_step >= 0) adam->set_state(adam_step, std::move(m), std::move(v));
    if (!keep_loss_weights) {
        DeSpeckNetConfig c = model.config();
        c.bn_eps = stored.bn_eps;
        c.bn_momentum = stored.bn_momentum;
        c.clean_weight = stored.clean_weight;
        c.reconstruction_weight = stored.reconstruction_weight;
        c.tv_weight = stored.tv_weight;
        c.tv_kind = stored.tv_kind;
        c.mask_normalization = stored.mask_normalization;
        model.set_config(c);
    }
}

template <class T>
void load_checkpoint(const std::filesystem::path& path, DeSpeckNet<T>& model, Adam<T>* adam = nullptr,
                     bool keep_loss_weights = false) {
    load_checkpoint(SafetensorsFile::read(path), model, adam, keep_loss_weights);
}

// A model built from the checkpoint's own configuration.
template <class T>
DeSpeckNet<T> load_model(const std::filesystem::path& path) {
    const SafetensorsFile file = SafetensorsFile::read(path);
    DeSpeckNet<T> model(read_checkpoint_config(file));
    load_checkpoint(file, model);
    return model;
}

}  // namespace despeck::io
