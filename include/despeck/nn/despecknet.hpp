// despeck/nn/despecknet.hpp — the deSpeckNet model: two identical branches and the rebuilt image.
//
//   input x [N, H, W, C]
//   branch (clean, noise):  conv KxK (C->F) + ReLU,
//                           (depth-2) x [conv KxK (F->F) + BatchNorm + ReLU],
//                           conv KxK (F->C)                              -> [N, H, W, C]
//   rebuilt = clean + noise   (additive_db: dB data, the TensorFlow/Earth Engine version)
//           = clean * noise   (multiplicative_linear: linear intensity, the paper's MatConvNet original)
//   loss = clean_weight * mse(clean, reference; mask) + reconstruction_weight * mse(rebuilt, x; mask)
//        + tv_weight * TV(clean)
// Every conv has a bias, as in both originals. Weights start as Keras' glorot_normal (truncated
// normal, std = sqrt(2 / (fan_in + fan_out)) / 0.8796), biases and BN shifts at 0, BN scales at 1.
// Receptive field: 2 * depth + 1 pixels (35 x 35 for depth 17).
//
// Tensor names (see docs/checkpoints.md): "<branch>.conv<i>.weight" [K,K,Cin,Cout] (HWIO),
// "<branch>.conv<i>.bias" [Cout], "<branch>.bn<i>.weight|bias|running_mean|running_var" [F],
// branch in {clean, noise}, i = 0 .. depth-1, bn only for 1 .. depth-2.
#pragma once

#include <array>
#include <type_traits>
#include <vector>
#include <cmath>
#include <cstdint>
#include <string>

#include "despeck/autodiff/tape.hpp"
#include "despeck/nn/parameters.hpp"
#include "despeck/ops/batch_norm.hpp"
#include "despeck/ops/batch_norm_relu.hpp"
#include "despeck/ops/conv2d.hpp"
#include "despeck/ops/elementwise.hpp"
#include "despeck/ops/mse.hpp"
#include "despeck/ops/relu.hpp"
#include "despeck/ops/total_variation.hpp"
#include "despeck/optim/adam.hpp"
#include "despeck/random.hpp"

namespace despeck {

enum class CombineMode { additive_db, multiplicative_linear };

inline const char* to_string(CombineMode m) {
    return m == CombineMode::additive_db ? "additive_db" : "multiplicative_linear";
}
inline CombineMode combine_mode_from_string(const std::string& s) {
    if (s == "additive_db" || s == "db" || s == "additive") return CombineMode::additive_db;
    if (s == "multiplicative_linear" || s == "linear" || s == "multiplicative") return CombineMode::multiplicative_linear;
    detail::fail<value_error>("unknown combine mode '", s, "' (expected additive_db or multiplicative_linear)");
}
inline const char* to_string(ops::TvKind k) { return k == ops::TvKind::anisotropic_l1 ? "anisotropic_l1" : "quadratic"; }
inline ops::TvKind tv_kind_from_string(const std::string& s) {
    if (s == "anisotropic_l1" || s == "l1") return ops::TvKind::anisotropic_l1;
    if (s == "quadratic" || s == "l2") return ops::TvKind::quadratic;
    detail::fail<value_error>("unknown TV kind '", s, "' (expected anisotropic_l1 or quadratic)");
}
inline const char* to_string(ops::MaskNormalization n) {
    return n == ops::MaskNormalization::element_count ? "element_count" : "weight_sum";
}
inline ops::MaskNormalization mask_normalization_from_string(const std::string& s) {
    if (s == "element_count") return ops::MaskNormalization::element_count;
    if (s == "weight_sum") return ops::MaskNormalization::weight_sum;
    detail::fail<value_error>("unknown mask normalisation '", s, "' (expected element_count or weight_sum)");
}

struct DeSpeckNetConfig {
    int depth = 17;         // conv layers per branch (>= 2)
    int filters = 64;       // feature channels of the hidden layers
    int channels = 2;       // image channels: 2 for VV+VH in dB, 1 for single-pol intensity
    int kernel = 3;         // odd kernel size
    CombineMode combine = CombineMode::additive_db;
    double bn_eps = 1e-4;
    double bn_momentum = 0.0;
    double clean_weight = 100.0;
    double reconstruction_weight = 1.0;
    double tv_weight = 0.0;
    ops::TvKind tv_kind = ops::TvKind::anisotropic_l1;
    ops::MaskNormalization mask_normalization = ops::MaskNormalization::element_count;

    void validate() const {
        if (depth < 2) detail::fail<value_error>("DeSpeckNetConfig: depth ", depth, " < 2");
        if (filters < 1) detail::fail<value_error>("DeSpeckNetConfig: filters ", filters, " < 1");
        if (channels < 1) detail::fail<value_error>("DeSpeckNetConfig: channels ", channels, " < 1");
        if (kernel < 1 || kernel % 2 == 0) detail::fail<value_error>("DeSpeckNetConfig: kernel ", kernel, " is not odd");
        if (!(bn_eps > 0)) detail::fail<value_error>("DeSpeckNetConfig: bn_eps ", bn_eps, " must be > 0");
        if (!(bn_momentum >= 0 && bn_momentum < 1))
            detail::fail<value_error>("DeSpeckNetConfig: bn_momentum ", bn_momentum, " outside [0, 1)");
        for (double w : {clean_weight, reconstruction_weight, tv_weight})
            if (!(w >= 0) || !std::isfinite(w)) detail::fail<value_error>("DeSpeckNetConfig: loss weight ", w, " is not >= 0");
    }
    // Pixels on each side that influence an output pixel: depth * (kernel / 2).
    int receptive_radius() const { return depth * (kernel / 2); }
    ops::BatchNormOptions bn_options() const { return {bn_eps, bn_momentum, false}; }

    friend bool operator==(const DeSpeckNetConfig&, const DeSpeckNetConfig&) = default;
};

template <class T>
struct Losses {
    T clean = 0;           // mse(clean, reference), unweighted (0 without a reference)
    T reconstruction = 0;  // mse(rebuilt, input), unweighted
    T tv = 0;              // TV(clean), unweighted (0 when tv_weight is 0)
    T total = 0;           // the weighted sum that is minimised
};

// exact: fp32, the same maths as the training graph's inference mode up to summation order (conv,
// bias, batch norm and ReLU fused into one pass per layer). fast: Winograd F(6x6,3x3) with batch
// norm folded into the weights, opt-in; its deviation from exact is bounded and tested.
enum class InferenceMode { exact, fast };

template <class T>
class BranchPlan;

template <class T>
class DeSpeckNet {
public:
    static constexpr std::array<const char*, 2> branch_names{"clean", "noise"};
    enum Branch { clean_branch = 0, noise_branch = 1 };

    struct Outputs {
        Var<T> clean, noise, rebuilt;
    };
    struct LossVars {
        Var<T> clean, reconstruction, tv, total;
    };

    explicit DeSpeckNet(DeSpeckNetConfig config, std::uint64_t seed = 0) : cfg_(config) {
        cfg_.validate();
        const index_t K = cfg_.kernel, F = cfg_.filters, C = cfg_.channels;
        for (int b = 0; b < 2; ++b) {
            const std::string prefix = branch_names[static_cast<std::size_t>(b)];
            for (int i = 0; i < cfg_.depth; ++i) {
                const index_t cin = i == 0 ? C : F, cout = i == cfg_.depth - 1 ? C : F;
                Layer layer;
                const std::string conv = prefix + ".conv" + std::to_string(i);
                layer.weight = params_.add(conv + ".weight", Shape{K, K, cin, cout});
                layer.bias = params_.add(conv + ".bias", Shape{cout});
                layer.has_bn = i > 0 && i < cfg_.depth - 1;
                if (layer.has_bn) {
                    const std::string bn = prefix + ".bn" + std::to_string(i);
                    layer.gamma = params_.add(bn + ".weight", Shape{F}, T(1));
                    layer.beta = params_.add(bn + ".bias", Shape{F});
                    layer.running_mean = buffers_.add(bn + ".running_mean", Shape{F}, T(0));
                    layer.running_var = buffers_.add(bn + ".running_var", Shape{F}, T(1));
                }
                layer.relu = i < cfg_.depth - 1;
                layers_[static_cast<std::size_t>(b)].push_back(layer);
            }
        }
        initialize(seed);
    }

    // Keras glorot_normal for conv weights, drawn in parameter order from one seeded generator.
    void initialize(std::uint64_t seed) {
        Rng rng(seed);
        for (std::size_t i = 0; i < params_.count(); ++i) {
            const auto& e = params_.entry(i);
            TensorView<T> v = params_.value(i);
            if (e.shape.rank() == 4) {
                const double receptive = double(e.shape[0] * e.shape[1]);
                const double fan_in = receptive * double(e.shape[2]), fan_out = receptive * double(e.shape[3]);
                const double stddev = std::sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978;
                for (index_t k = 0; k < v.size(); ++k) v[k] = static_cast<T>(stddev * rng.truncated_normal());
            } else {
                const bool is_bn_scale = e.name.find(".bn") != std::string::npos &&
                                         e.name.size() > 7 && e.name.compare(e.name.size() - 7, 7, ".weight") == 0;
                v.flat().setConstant(is_bn_scale ? T(1) : T(0));
            }
        }
        for (std::size_t i = 0; i < buffers_.count(); ++i) {
            const bool is_var = buffers_.entry(i).name.find("running_var") != std::string::npos;
            buffers_.value(i).flat().setConstant(is_var ? T(1) : T(0));
        }
    }

    const DeSpeckNetConfig& config() const { return cfg_; }
    // Replaces the training options (loss weights, TV, mask normalisation, batch-norm eps and
    // momentum) between phases, e.g. for tuning; the architecture must stay as it is.
    void set_config(const DeSpeckNetConfig& c) {
        c.validate();
        if (c.depth != cfg_.depth || c.filters != cfg_.filters || c.channels != cfg_.channels || c.kernel != cfg_.kernel ||
            c.combine != cfg_.combine)
            detail::fail<value_error>("DeSpeckNet::set_config: depth, filters, channels, kernel and combine mode are fixed (",
                                      cfg_.depth, "/", cfg_.filters, "/", cfg_.channels, "/", cfg_.kernel, "/",
                                      to_string(cfg_.combine), ")");
        cfg_ = c;
    }
    ParameterStore<T>& parameters() { return params_; }
    const ParameterStore<T>& parameters() const { return params_; }
    ParameterStore<T>& buffers() { return buffers_; }
    const ParameterStore<T>& buffers() const { return buffers_; }

    // ---- the graph on a tape -------------------------------------------------------------

    // trainable: parameters enter the tape as leaves whose gradients land in parameters().grads();
    // otherwise as constants (an evaluation graph that records no parameter gradient).
    Var<T> branch(Tape<T>& tape, int b, Var<T> x, ops::Mode mode, bool trainable = true) {
        check_input("DeSpeckNet::branch", x.value());
        auto p = [&](std::size_t i) {
            return trainable ? tape.parameter(params_.value(i), params_.grad(i), params_.entry(i).name)
                             : tape.constant_view(params_.value(i));
        };
        Var<T> h = x;
        for (const Layer& layer : layers_.at(static_cast<std::size_t>(b))) {
            h = ops::conv2d(h, p(layer.weight), p(layer.bias));
            if (layer.has_bn && layer.relu) {  // one fused op: two passes over memory, x and y kept
                h = ops::batch_norm_relu(h, p(layer.gamma), p(layer.beta), buffers_.value(layer.running_mean),
                                         buffers_.value(layer.running_var), mode, cfg_.bn_options());
                continue;
            }
            if (layer.has_bn)
                h = ops::batch_norm(h, p(layer.gamma), p(layer.beta), buffers_.value(layer.running_mean),
                                    buffers_.value(layer.running_var), mode, cfg_.bn_options());
            if (layer.relu) h = ops::relu(h);
        }
        return h;
    }

    Outputs forward(Tape<T>& tape, Var<T> x, ops::Mode mode, bool trainable = true) {
        Outputs out;
        out.clean = branch(tape, clean_branch, x, mode, trainable);
        out.noise = branch(tape, noise_branch, x, mode, trainable);
        out.rebuilt = cfg_.combine == CombineMode::additive_db ? ops::add(out.clean, out.noise)
                                                               : ops::multiply(out.clean, out.noise);
        return out;
    }

    // reference may be an invalid Var (tuning mode: no clean loss); mask may be empty.
    LossVars losses(const Outputs& out, Var<T> x, Var<T> reference, TensorView<const T> mask) {
        LossVars l;
        const auto norm = cfg_.mask_normalization;
        l.reconstruction = ops::mse(out.rebuilt, x, mask, norm);
        Var<T> total = ops::scale(l.reconstruction, T(cfg_.reconstruction_weight));
        if (reference.valid() && cfg_.clean_weight > 0) {
            require_same_shape("DeSpeckNet::losses", "reference", reference.value(), "input", x.value());
            l.clean = ops::mse(out.clean, reference, mask, norm);
            total = ops::add(total, ops::scale(l.clean, T(cfg_.clean_weight)));
        }
        if (cfg_.tv_weight > 0) {
            l.tv = ops::total_variation(out.clean, cfg_.tv_kind);
            total = ops::add(total, ops::scale(l.tv, T(cfg_.tv_weight)));
        }
        l.total = total;
        return l;
    }

    // ---- training ------------------------------------------------------------------------

    // Forward and backward on a batch, in training mode: leaves d(total)/d(parameter) in
    // parameters().grads() (zeroed first) and returns the losses. input [N,H,W,C]; reference like
    // input, or empty for tuning mode (reconstruction loss only, as the paper fine-tunes on an
    // image without reference); mask [N,H,W,1] or [N,H,W,C] or empty. Between this and the
    // optimiser step is where data-parallel training all-reduces parameters().grads().
    Losses<T> compute_gradients(TensorView<const T> input, TensorView<const T> reference, TensorView<const T> mask) {
        check_input("DeSpeckNet::compute_gradients", input);
        // The training forward pass updates the batch-norm running statistics; a failed step puts
        // them back, so a caller that skips a bad batch keeps a usable model.
        const std::vector<T> saved_buffers(buffers_.values().begin(), buffers_.values().end());
        auto fail_and_restore = [&](auto&&... parts) {
            std::copy(saved_buffers.begin(), saved_buffers.end(), buffers_.values().begin());
            params_.zero_grad();
            detail::fail<value_error>(parts...);
        };
        Tape<T> tape;
        params_.zero_grad();
        Var<T> x = tape.constant_view(input);
        Var<T> ref = reference.empty() ? Var<T>{} : tape.constant_view(reference);
        const Outputs out = forward(tape, x, ops::Mode::training);
        const LossVars l = losses(out, x, ref, mask);
        const Losses<T> result = read(l);
        if (!std::isfinite(static_cast<double>(result.total)))
            fail_and_restore("DeSpeckNet: the loss is ", result.total, " (clean ", result.clean, ", reconstruction ",
                             result.reconstruction, "); check the input for NaN/inf or lower the learning rate");
        tape.backward(l.total);
        for (T g : params_.grads())
            if (!std::isfinite(static_cast<double>(g)))
                fail_and_restore("DeSpeckNet: a gradient is ", g, " although the loss is ", result.total,
                                 "; lower the learning rate or the loss weights");
        return result;
    }

    // One optimiser step on a batch (compute_gradients, then Adam). Returns the losses before the update.
    Losses<T> train_step(TensorView<const T> input, TensorView<const T> reference, TensorView<const T> mask, Adam<T>& adam,
                         double lr) {
        const Losses<T> result = compute_gradients(input, reference, mask);
        adam.step(params_, lr);
        return result;
    }

    // Losses of a batch with batch norm in inference mode, no update (validation).
    Losses<T> evaluate(TensorView<const T> input, TensorView<const T> reference, TensorView<const T> mask) {
        check_input("DeSpeckNet::evaluate", input);
        Tape<T> tape;
        Var<T> x = tape.constant_view(input);
        Var<T> ref = reference.empty() ? Var<T>{} : tape.constant_view(reference);
        const Outputs out = forward(tape, x, ops::Mode::inference, /*trainable=*/false);
        return read(losses(out, x, ref, mask));
    }

    // ---- inference (no tape, batch norm with running statistics) ---------------------------

    // The clean branch only: what despeckling needs. x [N,H,W,C] -> [N,H,W,C]. For float, each
    // layer runs as one fused pass (see BranchPlan); `fast` opts into Winograd with batch norm
    // folded into the weights (about 2e-5 of the output's range, see docs/benchmarks.md).
    Tensor<T> predict_clean(TensorView<const T> x, InferenceMode mode = InferenceMode::exact) const {
        return predict(clean_branch, x, mode);
    }
    Tensor<T> predict_noise(TensorView<const T> x, InferenceMode mode = InferenceMode::exact) const {
        return predict(noise_branch, x, mode);
    }
    Tensor<T> predict(int b, TensorView<const T> x, InferenceMode mode = InferenceMode::exact) const {
        if constexpr (std::is_same_v<T, float>) {
            if (kernels::simd_kernels_selected()) return BranchPlan(*this, b, mode).run(x);
        }
        if (mode == InferenceMode::fast)
            detail::fail<value_error>("DeSpeckNet::predict: fast inference needs float and the direct kernels (conv "
                                      "algorithm ", kernels::to_string(kernels::get_conv_algorithm()), ")");
        return run_branch(b, x);
    }

    // One branch's layers as views into the parameter and buffer stores (inference engines read them).
    struct LayerView {
        TensorView<const T> weight, bias, gamma, beta, running_mean, running_var;  // BN views empty without BN
        bool has_bn = false, relu = false;
    };
    std::vector<LayerView> branch_layers(int b) const {
        std::vector<LayerView> out;
        for (const Layer& layer : layers_.at(static_cast<std::size_t>(b))) {
            LayerView v;
            v.weight = params_.value(layer.weight);
            v.bias = params_.value(layer.bias);
            if (layer.has_bn) {
                v.gamma = params_.value(layer.gamma), v.beta = params_.value(layer.beta);
                v.running_mean = buffers_.value(layer.running_mean), v.running_var = buffers_.value(layer.running_var);
            }
            v.has_bn = layer.has_bn, v.relu = layer.relu;
            out.push_back(v);
        }
        return out;
    }

    // x must be finite: fill no-data (NaN) pixels before calling, or a NaN would spread over the
    // receptive field around it. A non-finite input is a value_error naming the first one.
    void check_finite_input(TensorView<const T> x) const {
        check_input("DeSpeckNet::predict", x);
        for (index_t i = 0; i < x.size(); ++i)
            if (!std::isfinite(static_cast<double>(x[i])))
                detail::fail<value_error>("DeSpeckNet::predict: input ", x.shape, " has a non-finite value (", x[i],
                                          ") at flat index ", i, "; fill no-data pixels first");
    }

    // The layer-by-layer path (conv, batch norm, ReLU as separate passes through the conv
    // dispatch): any T, and the reference the fused plans are tested against.
    Tensor<T> run_branch(int b, TensorView<const T> x) const {
        check_finite_input(x);
        Tensor<T> h = Tensor<T>::from_view(x);
        for (const Layer& layer : layers_.at(static_cast<std::size_t>(b))) {
            h = ops::conv2d_forward<T>(h.view(), params_.value(layer.weight), params_.value(layer.bias));
            if (layer.has_bn)
                h = ops::batch_norm_forward_inference<T>(h.view(), params_.value(layer.gamma), params_.value(layer.beta),
                                                         buffers_.value(layer.running_mean),
                                                         buffers_.value(layer.running_var), cfg_.bn_options());
            if (layer.relu) h.flat() = h.flat().max(T(0));
        }
        return h;
    }

private:
    struct Layer {
        std::size_t weight = 0, bias = 0, gamma = 0, beta = 0, running_mean = 0, running_var = 0;
        bool has_bn = false, relu = false;
    };

    static T scalar(Var<T> v) { return v.valid() ? v.value()[0] : T(0); }
    Losses<T> read(const LossVars& l) const {
        return {scalar(l.clean), scalar(l.reconstruction), scalar(l.tv), scalar(l.total)};
    }
    void check_input(const char* where, TensorView<const T> x) const {
        require_nhwc(where, "input", x);
        if (x.shape[3] != cfg_.channels)
            detail::fail<shape_error>(where, ": input ", x.shape, " has ", x.shape[3], " channels, the model ",
                                      cfg_.channels);
        if (x.size() == 0) detail::fail<shape_error>(where, ": empty input ", x.shape);
    }

    DeSpeckNetConfig cfg_;
    ParameterStore<T> params_;
    ParameterStore<T> buffers_;
    std::array<std::vector<Layer>, 2> layers_;
};

// One branch prepared for inference (float): every layer's weights packed or Winograd-transformed
// once, batch norm (running statistics) and ReLU fused into the convolution's store. A plan owns
// copies of the weights: it stays valid when the model goes on training, and does not see it.
// Activations ping-pong between two buffers that the plan keeps for its next run, so memory is two
// [N,H,W,filters] tensors of the largest input seen. run() is therefore not reentrant: one plan per
// thread.
template <class T>
class BranchPlan {
    static_assert(std::is_same_v<T, float>, "BranchPlan: the fused inference kernels are float only");

public:
    BranchPlan(const DeSpeckNet<T>& model, int branch, InferenceMode mode) : mode_(mode), channels_(model.config().channels) {
        const double eps = model.config().bn_eps;
        bool input_follows_relu = false;
        for (const auto& layer : model.branch_layers(branch)) {
            const index_t K = layer.weight.shape[0], ci = layer.weight.shape[2], co = layer.weight.shape[3];
            Tensor<float> scale, shift;
            if (layer.has_bn) {  // as batch_norm_forward_inference: scale = gamma / sqrt(var + eps), shift = beta - mean * scale
                scale = Tensor<float>(Shape{co});
                shift = Tensor<float>(Shape{co});
                for (index_t o = 0; o < co; ++o) {
                    if (!(layer.running_var[o] >= 0))
                        detail::fail<value_error>("BranchPlan: running_var[", o, "] = ", layer.running_var[o]);
                    scale[o] = static_cast<float>(layer.gamma[o] / std::sqrt(static_cast<double>(layer.running_var[o]) + eps));
                    shift[o] = layer.beta[o] - layer.running_mean[o] * scale[o];
                }
            }
            // Winograd pays off where both sides have enough channels to fill the vector lanes;
            // the 1-2 channel first and last layers stay direct. F(6x6,3x3): 21% fewer products
            // than training's F(4x4,3x3), about twice its float error, still 50x inside the bound.
            const bool winograd = mode == InferenceMode::fast && K == 3 && ci >= 16 && co >= 16;
            if (!winograd) {
                layers_.push_back(kernels::prepare_conv_direct(layer.weight, layer.bias, scale.view(), shift.view(), layer.relu));
                // After a ReLU most inputs are zero (about 70% in a trained model): the sparse kernel
                // skips them and gives the same floats (see PreparedConv::sparse_input).
                layers_.back().sparse_input =
                    input_follows_relu && layers_.back().method == kernels::PreparedConv::Method::direct;
                // On a CPU with AMX the 64 -> 64 layers may run there, in nine exact bf16 products
                // per float product (kernels::prepare_amx_exact), where their input is too dense
                // for the sparse kernel to be the faster.
                kernels::prepare_amx_exact(layers_.back());
                input_follows_relu = layer.relu;
                continue;
            }
            input_follows_relu = layer.relu;
            // Fold batch norm: (conv(x, w) + b) * s + t = conv(x, w * s) + (b * s + t), in double.
            Tensor<float> w(layer.weight.shape), b(Shape{co});
            for (index_t i = 0; i < w.size(); ++i) {
                const index_t o = i % co;
                w[i] = static_cast<float>(double(layer.weight.data[i]) * (layer.has_bn ? double(scale[o]) : 1.0));
            }
            for (index_t o = 0; o < co; ++o)
                b[o] = static_cast<float>(layer.has_bn ? double(layer.bias[o]) * scale[o] + shift[o] : double(layer.bias[o]));
            layers_.push_back(kernels::prepare_conv_winograd(w.view(), b.view(), layer.relu, /*tile=*/6));
        }
    }

    InferenceMode mode() const { return mode_; }
    const std::vector<kernels::PreparedConv>& layers() const { return layers_; }

    // x [N,H,W,channels], finite (fill no-data first) -> [N,H,W,channels].
    Tensor<T> run(TensorView<const T> x) const {
        require_nhwc("BranchPlan::run", "input", x);
        if (x.shape[3] != channels_)
            detail::fail<shape_error>("BranchPlan::run: input ", x.shape, " has ", x.shape[3], " channels, the model ", channels_);
        if (x.size() == 0) detail::fail<shape_error>("BranchPlan::run: empty input ", x.shape);
        for (index_t i = 0; i < x.size(); ++i)
            if (!std::isfinite(static_cast<double>(x[i])))
                detail::fail<value_error>("DeSpeckNet::predict: input ", x.shape, " has a non-finite value (", x[i],
                                          ") at flat index ", i, "; fill no-data pixels first");
        const index_t N = x.shape[0], H = x.shape[1], W = x.shape[2];
        index_t widest = 0;
        for (const auto& l : layers_) widest = std::max(widest, l.co);
        // The two activation buffers grow to the largest input seen and are reused: tiles of a
        // scene come in a few sizes (edges), and fresh buffers per size would each stay cached.
        const index_t need = N * H * W * widest;
        if (ping_.size() < need) {
            ping_ = Tensor<T>();
            pong_ = Tensor<T>();
            ping_ = Tensor<T>::uninitialized(Shape{need});
            pong_ = Tensor<T>::uninitialized(Shape{need});
        }
        TensorView<const T> in = x;
        for (std::size_t k = 0; k < layers_.size(); ++k) {
            const auto& l = layers_[k];
            Tensor<T>& buf = k % 2 == 0 ? ping_ : pong_;
            TensorView<T> out{buf.data(), Shape{N, H, W, l.co}};
            kernels::run_prepared_conv(l, in, out);
            in = TensorView<const T>{out.data, out.shape};
        }
        Tensor<T> y = Tensor<T>::uninitialized(Shape{N, H, W, layers_.back().co});
        std::copy(in.data, in.data + y.size(), y.data());
        return y;
    }

private:
    InferenceMode mode_;
    index_t channels_;
    std::vector<kernels::PreparedConv> layers_;
    mutable Tensor<T> ping_, pong_;  // activation buffers, reused across run() calls
};

}  // namespace despeck
