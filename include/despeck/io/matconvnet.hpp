// despeck/io/matconvnet.hpp — the deSpeckNet authors' MatConvNet models, read natively.
//
// The authors published their base models as MATLAB v5 MAT files holding one struct, `net`, as
// MatConvNet's dagnn.DagNN.saveobj writes it (fields vars, params, layers, meta). This reads them
// with libmatio (Debian's libmatio-dev) into a DeSpeckNet, without MATLAB or Python:
//
//   DeSpeckNet<float> model = io::load_matconvnet<float>("deSpeckNet-epoch-30.mat");
//
// The graph is walked, not guessed from layer numbers: from the variable "input", each of the two
// chains conv -> relu -> (depth - 2) x [conv -> bnorm -> relu] -> conv is followed through the
// layers' inputs and outputs; the chain that ends in the variable "prediction" is the clean branch,
// the other the noise branch, and a dagnn.Multiply of the two outputs makes the combine
// multiplicative (linear intensity, one channel). Every conv must be 3x3 (or KxK) with stride 1,
// dilation 1, "same" padding and a bias; every ReLU leak 0; every batch norm has 64 (filters)
// channels. Anything else fails with an io_error that names the file and the layer.
//
// Layouts. A MATLAB array is column-major: filter convN_f of size [K,K,Cin,Cout] (rows, columns,
// in, out; MatConvNet convolves by cross-correlation, as despeck does) has element (i,j,c,k) at
// i + K j + K^2 c + K^2 Cin k, and despeck's [K,K,ci,co] weight holds it at ((i K + j) ci + c) co + k.
// MATLAB drops trailing singletons (the last conv's 3x3x64x1 is stored 3x3x64), so a filter's
// dims are compared with [K K Cin Cout] after dropping trailing ones.
//
// Batch norm. In test mode MatConvNet computes g (x - mean) / sigma + b, where bnormN_m = [mean,
// sigma] (64 x 2) and sigma = sqrt(var + epsilon) was stored at training time: it adds no epsilon
// at test time. despeck computes gamma (x - running_mean) / sqrt(running_var + bn_eps), so the
// import sets bn_eps to the layers' own `epsilon` (1e-5 in the authors' files; tuning mode then
// normalises batches as MatConvNet trained them) and running_var = sigma^2 - epsilon, which gives
// the same scale to float precision (a channel whose training variance was 0, sigma^2 = epsilon,
// gets running_var 0). A sigma that is not positive, or whose square is below epsilon, was not
// made by MatConvNet's sqrt(var + epsilon) and fails.
//
// The importer reads everything and checks it before it builds the model (all or nothing).
// despeck::io links libmatio; see docs/dependencies.md and docs/checkpoints.md.
#pragma once

#include <matio.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "despeck/error.hpp"
#include "despeck/io/checkpoint.hpp"
#include "despeck/nn/despecknet.hpp"

namespace despeck::io {

// The first bytes of a file (fewer where it is shorter).
inline std::string file_head(const std::filesystem::path& path, std::size_t bytes) {
    std::ifstream in(path, std::ios::binary);
    std::string head(bytes, '\0');
    in.read(head.data(), static_cast<std::streamsize>(bytes));
    head.resize(static_cast<std::size_t>(std::max<std::streamsize>(in.gcount(), 0)));
    return head;
}

// Whether `path` starts like a MAT file of any version ("MATLAB 5.0 MAT-file", "MATLAB 7.3
// MAT-file", ... in its text header). load_matconvnet reads v5 (and v7, which is v5 with
// compression) and refuses v7.3 (HDF5) by name.
inline bool is_mat_file(const std::filesystem::path& path) { return file_head(path, 7) == "MATLAB "; }

namespace detail_matconvnet {

using despeck::detail::fail;

// One dagnn layer as saved: its name, type ("dagnn.Conv", ...), variable names and block (options).
struct Layer {
    std::string name, type;
    std::vector<std::string> inputs, outputs, params;
    matvar_t* block = nullptr;  // owned by the `net` variable
};

// A parameter: MATLAB dims and float32 values in MATLAB's (column-major) order.
struct Param {
    std::vector<std::size_t> dims;
    std::vector<float> values;
};

class Reader {
public:
    explicit Reader(const std::filesystem::path& path) : path_(path.string()) {
        if (!std::filesystem::exists(path)) refuse("no such file");
        const std::string head = file_head(path, 19);
        if (head == "MATLAB 7.3 MAT-file")
            fail<io_error>("'", path_, "' is a MAT v7.3 (HDF5) file; despeck reads MAT v5/v7, as MatConvNet saves models (in MATLAB: ",
                           "net = load(f); save(g, '-struct', 'net', '-v7'))");
        if (head != "MATLAB 5.0 MAT-file")
            fail<io_error>("'", path_, "' is not a MATLAB v5 MAT file (MatConvNet models are)");
        mat_.reset(Mat_Open(path_.c_str(), MAT_ACC_RDONLY));
        if (!mat_) refuse("libmatio cannot open it as a MAT file");
        net_.reset(Mat_VarRead(mat_.get(), "net"));
        if (!net_) fail<io_error>("'", path_, "' has no readable variable 'net' (a MatConvNet DagNN saved with saveobj)");
        if (net_->class_type != MAT_C_STRUCT || numel(net_.get()) != 1)
            refuse("'net' is not a 1x1 struct");
    }

    const std::string& path() const { return path_; }

    // Throws io_error("'<path>': " + the pieces): every refusal of the import names the file.
    template <class... Pieces>
    [[noreturn]] void refuse(const Pieces&... pieces) const {
        fail<io_error>("'", path_, "': ", pieces...);
    }

    std::vector<Layer> layers() const {
        matvar_t* layers = field(net_.get(), "layers", 0, "net");
        if (layers->class_type != MAT_C_STRUCT) refuse("net.layers is not a struct array");
        std::vector<Layer> out(numel(layers));
        for (std::size_t i = 0; i < out.size(); ++i) {
            const std::string where = "net.layers(" + std::to_string(i + 1) + ")";
            Layer& l = out[i];
            l.name = text(field(layers, "name", i, where), where + ".name");
            l.type = text(field(layers, "type", i, where), where + ".type");
            l.inputs = texts(field(layers, "inputs", i, where), where + ".inputs");
            l.outputs = texts(field(layers, "outputs", i, where), where + ".outputs");
            l.params = texts(field(layers, "params", i, where), where + ".params");
            l.block = Mat_VarGetStructFieldByName(layers, "block", i);
        }
        return out;
    }

    std::map<std::string, Param> params() const {
        matvar_t* params = field(net_.get(), "params", 0, "net");
        if (params->class_type != MAT_C_STRUCT) refuse("net.params is not a struct array");
        std::map<std::string, Param> out;
        for (std::size_t i = 0; i < numel(params); ++i) {
            const std::string where = "net.params(" + std::to_string(i + 1) + ")";
            const std::string name = text(field(params, "name", i, where), where + ".name");
            matvar_t* v = field(params, "value", i, where);
            if (v->class_type != MAT_C_SINGLE || v->isComplex || v->data_size != 4 || (numel(v) > 0 && !v->data))
                refuse("parameter '", name, "' is not a real single-precision array");
            Param p;
            p.dims.assign(v->dims, v->dims + v->rank);
            const auto* data = static_cast<const float*>(v->data);
            p.values.assign(data, data + numel(v));
            if (!out.emplace(name, std::move(p)).second) refuse("two parameters are called '", name, "'");
        }
        return out;
    }

    // The numeric values of field `name` of a layer's block (as doubles), or fail.
    std::vector<double> numbers(const Layer& l, const char* name) const {
        if (!l.block || l.block->class_type != MAT_C_STRUCT)
            refuse("layer '", l.name, "' has no block options");
        matvar_t* v = Mat_VarGetStructFieldByName(l.block, name, 0);
        if (!v) refuse("layer '", l.name, "' has no option '", name, "'");
        if (v->isComplex || (numel(v) > 0 && !v->data))
            refuse("option '", name, "' of layer '", l.name, "' is not a real array");
        std::vector<double> out(numel(v));
        for (std::size_t i = 0; i < out.size(); ++i) {
            switch (v->class_type) {
                case MAT_C_DOUBLE: out[i] = static_cast<const double*>(v->data)[i]; break;
                case MAT_C_SINGLE: out[i] = static_cast<const float*>(v->data)[i]; break;
                case MAT_C_UINT8: out[i] = static_cast<const std::uint8_t*>(v->data)[i]; break;  // logical
                default: refuse("option '", name, "' of layer '", l.name, "' is not numeric");
            }
        }
        return out;
    }

private:
    static std::size_t numel(const matvar_t* v) {
        std::size_t n = 1;
        for (int r = 0; r < v->rank; ++r) n *= v->dims[r];
        return n;
    }
    matvar_t* field(matvar_t* s, const char* name, std::size_t index, const std::string& where) const {
        matvar_t* v = Mat_VarGetStructFieldByName(s, name, index);
        if (!v) refuse(where, " has no readable field '", name, "' (missing, or the file is truncated)");
        return v;
    }
    std::string text(const matvar_t* v, const std::string& where) const {
        if (v->class_type != MAT_C_CHAR) refuse(where, " is not text");
        const std::size_t n = numel(v);
        if (n > 0 && !v->data) refuse(where, " has no characters stored");
        std::string s;
        for (std::size_t i = 0; i < n; ++i) {
            unsigned c = 0;
            if (v->data_size == 1)
                c = static_cast<const unsigned char*>(v->data)[i];
            else if (v->data_size == 2)
                c = static_cast<const std::uint16_t*>(v->data)[i];
            else
                refuse(where, " has characters of ", v->data_size, " bytes");
            if (c == 0 || c > 127) refuse(where, " is not plain ASCII text");
            s += static_cast<char>(c);
        }
        return s;
    }
    // A cell array of strings (MatConvNet's inputs, outputs, params).
    std::vector<std::string> texts(matvar_t* v, const std::string& where) const {
        if (v->class_type != MAT_C_CELL) refuse(where, " is not a cell array");
        if (numel(v) > 0 && !v->data) refuse(where, " has no cells stored");
        std::vector<std::string> out(numel(v));
        for (std::size_t i = 0; i < out.size(); ++i) {
            const matvar_t* c = Mat_VarGetCell(v, static_cast<int>(i));
            if (!c) refuse(where, "{", i + 1, "} is missing");
            out[i] = text(c, where + "{" + std::to_string(i + 1) + "}");
        }
        return out;
    }

    // Owned through unique_ptr, so that a constructor that throws still closes the file.
    struct CloseMat {
        void operator()(mat_t* m) const { Mat_Close(m); }
    };
    struct FreeVar {
        void operator()(matvar_t* v) const { Mat_VarFree(v); }
    };
    std::string path_;
    std::unique_ptr<mat_t, CloseMat> mat_;
    std::unique_ptr<matvar_t, FreeVar> net_;  // declared after mat_: freed before the file closes
};

// One branch: its layers in graph order, from the conv that reads "input" to the last conv.
struct Branch {
    std::vector<const Layer*> convs, norms;
    std::string output;  // the last layer's output variable (when the walk ends: the last conv's)
};

inline Branch follow_branch(const Reader& r, const std::vector<Layer>& layers, const Layer& first) {
    // Which layer reads a variable: every one in the chain must have exactly one reader, except
    // the last conv's output (read by the combine and the losses).
    auto readers = [&](const std::string& var) {
        std::vector<const Layer*> out;
        for (const Layer& l : layers)
            for (const std::string& in : l.inputs)
                if (in == var) out.push_back(&l);
        return out;
    };
    Branch b;
    const Layer* l = &first;
    std::string expect = "dagnn.Conv";  // the type the chain needs next
    for (;;) {
        // One input: the previous layer's output (the first layer's is "input", see the caller).
        if (l->inputs.size() != 1 || (l != &first && l->inputs[0] != b.output))
            r.refuse("layer '", l->name, "' does not read just the output of the layer before it");
        if (l->outputs.size() != 1)
            r.refuse("layer '", l->name, "' has ", l->outputs.size(), " outputs, expected 1");
        if (l->type == "dagnn.Conv") {
            b.convs.push_back(l);
        } else if (l->type == "dagnn.BatchNorm") {
            b.norms.push_back(l);
        } else if (l->type != "dagnn.ReLU") {
            r.refuse("layer '", l->name, "' of type ", l->type, " inside a branch");
        }
        if (l->type != expect)
            r.refuse("layer '", l->name, "' is a ", l->type, " where the deSpeckNet branch has a ", expect);
        const std::vector<const Layer*> next = readers(l->outputs[0]);
        const bool more = next.size() == 1 && (next[0]->type == "dagnn.Conv" || next[0]->type == "dagnn.BatchNorm" ||
                                                 next[0]->type == "dagnn.ReLU");
        b.output = l->outputs[0];
        if (!more) {
            if (l->type != "dagnn.Conv")
                r.refuse("the branch from '", first.name, "' ends in '", l->name, "', a ", l->type,
                               ", not a conv");
            return b;
        }
        // conv -> relu (first) or bnorm (hidden) -> relu -> conv
        if (l->type == "dagnn.Conv")
            expect = b.convs.size() == 1 ? "dagnn.ReLU" : "dagnn.BatchNorm";
        else if (l->type == "dagnn.BatchNorm")
            expect = "dagnn.ReLU";
        else
            expect = "dagnn.Conv";
        l = next[0];
        if (b.convs.size() + b.norms.size() > 1000) r.refuse("a branch loops");
    }
}

}  // namespace detail_matconvnet

// The authors' deSpeckNet from a MatConvNet MAT file (see the top of this file).
template <class T>
DeSpeckNet<T> load_matconvnet(const std::filesystem::path& path) {
    using detail_matconvnet::Branch;
    using detail_matconvnet::Layer;
    const detail_matconvnet::Reader r(path);
    const std::vector<Layer> layers = r.layers();
    const std::map<std::string, detail_matconvnet::Param> params = r.params();

    std::set<std::string> produced;
    for (const Layer& l : layers)
        for (const std::string& out : l.outputs)
            if (!produced.insert(out).second) r.refuse("two layers write the variable '", out, "'");
    std::vector<const Layer*> starts;
    for (const Layer& l : layers)
        if (l.inputs.size() == 1 && l.inputs[0] == "input") starts.push_back(&l);
    if (starts.size() != 2)
        r.refuse(starts.size(), " layers read 'input'; deSpeckNet has two branches");
    Branch branches[2] = {follow_branch(r, layers, *starts[0]), follow_branch(r, layers, *starts[1])};
    if (branches[1].output == "prediction") std::swap(branches[0], branches[1]);
    if (branches[0].output != "prediction")
        r.refuse("neither branch ends in the variable 'prediction' (the clean image)");
    // The combine: a Multiply of the two branch outputs (the paper's linear-intensity model).
    bool multiply = false;
    for (const Layer& l : layers)
        if (l.type == "dagnn.Multiply" && l.inputs.size() == 2 &&
            std::set<std::string>(l.inputs.begin(), l.inputs.end()) == std::set<std::string>{branches[0].output, branches[1].output})
            multiply = true;
    if (!multiply)
        r.refuse("no dagnn.Multiply combines '", branches[0].output, "' and '", branches[1].output,
                       "'; only the multiplicative (linear intensity) model is supported");

    // Architecture, from the clean branch's first conv; both branches must agree.
    for (const Branch& br : branches)
        if (br.convs.size() < 2)
            r.refuse("the branch ending in '", br.output, "' has ", br.convs.size(),
                           " conv(s); deSpeckNet has at least 2");
    const auto size_of = [&](const Layer& l) { return r.numbers(l, "size"); };
    const std::vector<double> first_size = size_of(*branches[0].convs.front());
    if (first_size.size() != 4 || std::any_of(first_size.begin(), first_size.end(), [](double d) { return !(d >= 1 && d <= 4096 && d == std::floor(d)); }))
        r.refuse("conv '", branches[0].convs.front()->name, "' size is not [K K Cin Cout] with whole sizes up to 4096");
    DeSpeckNetConfig cfg;
    cfg.depth = static_cast<int>(branches[0].convs.size());
    cfg.kernel = static_cast<int>(first_size[0]);
    cfg.channels = static_cast<int>(first_size[2]);
    cfg.filters = static_cast<int>(first_size[3]);
    cfg.combine = CombineMode::multiplicative_linear;
    if (cfg.channels != 1)
        r.refuse("the model takes ", cfg.channels, " channels; the multiplicative model is single-channel");
    double epsilon = -1;
    for (int b = 0; b < 2; ++b) {
        const Branch& br = branches[b];
        if (static_cast<int>(br.convs.size()) != cfg.depth || static_cast<int>(br.norms.size()) != cfg.depth - 2)
            r.refuse("the branches differ: ", branches[0].convs.size(), " and ", br.convs.size(),
                           " convs, ", branches[0].norms.size(), " and ", br.norms.size(), " batch norms");
        for (int i = 0; i < cfg.depth; ++i) {
            const Layer& l = *br.convs[static_cast<std::size_t>(i)];
            const int cin = i == 0 ? cfg.channels : cfg.filters, cout = i == cfg.depth - 1 ? cfg.channels : cfg.filters;
            const std::vector<double> want{double(cfg.kernel), double(cfg.kernel), double(cin), double(cout)};
            if (size_of(l) != want)
                r.refuse("conv '", l.name, "' is not ", cfg.kernel, "x", cfg.kernel, "x", cin, "x", cout);
            const double pad = cfg.kernel / 2;
            for (const auto& [opt, ok] : {std::pair{"pad", std::vector<double>(4, pad)}, std::pair{"stride", std::vector<double>{1, 1}},
                                           std::pair{"dilate", std::vector<double>{1, 1}}}) {
                std::vector<double> v = r.numbers(l, opt);
                if (v.size() == 1) v.assign(ok.size(), v[0]);  // MatConvNet accepts a scalar for all sides
                if (v != ok) r.refuse("conv '", l.name, "' has ", opt, " other than ", ok[0], " on every side");
            }
            if (r.numbers(l, "hasBias") != std::vector<double>{1}) r.refuse("conv '", l.name, "' has no bias");
            if (l.params.size() != 2) r.refuse("conv '", l.name, "' has ", l.params.size(), " parameters, not 2");
        }
        for (const Layer* l : br.norms) {
            if (r.numbers(*l, "numChannels") != std::vector<double>{double(cfg.filters)})
                r.refuse("batch norm '", l->name, "' does not have ", cfg.filters, " channels");
            const std::vector<double> eps = r.numbers(*l, "epsilon");
            if (eps.size() != 1 || !(eps[0] > 0) || (epsilon > 0 && eps[0] != epsilon))
                r.refuse("batch norm '", l->name, "' has an epsilon that is not one positive value shared by all");
            epsilon = eps[0];
            if (l->params.size() != 3) r.refuse("batch norm '", l->name, "' has ", l->params.size(), " parameters, not 3");
        }
    }
    for (const Layer& l : layers)
        if (l.type == "dagnn.ReLU" && r.numbers(l, "leak") != std::vector<double>{0})
            r.refuse("ReLU '", l.name, "' is leaky; deSpeckNet's are not");
    if (epsilon > 0) cfg.bn_eps = epsilon;  // else depth 2: no batch norm, the default stays
    try {
        cfg.validate();
    } catch (const std::exception& e) {
        r.refuse(e.what());
    }

    // Values, checked and converted before the model exists. A parameter must be there and
    // finite; an array's dims are compared without trailing ones (which MATLAB drops), a
    // vector's length alone (64x1, 1x64 and, for one value, a scalar all do).
    const auto finite = [&](const std::string& name) -> const detail_matconvnet::Param& {
        const auto it = params.find(name);
        if (it == params.end()) r.refuse("parameter '", name, "' is missing");
        for (float v : it->second.values)
            if (!std::isfinite(v)) r.refuse("parameter '", name, "' holds a non-finite value (", v, ")");
        return it->second;
    };
    const auto array_param = [&](const std::string& name, std::vector<std::size_t> dims) -> const std::vector<float>& {
        const detail_matconvnet::Param& p = finite(name);
        const auto strip = [](std::vector<std::size_t> d) {
            while (!d.empty() && d.back() == 1) d.pop_back();
            return d;
        };
        if (strip(p.dims) != strip(dims)) {
            const auto text = [](const std::vector<std::size_t>& d) {
                std::string t;
                for (std::size_t n : d) t += (t.empty() ? "" : "x") + std::to_string(n);
                return t;
            };
            r.refuse("parameter '", name, "' is ", text(p.dims), ", expected ", text(dims));
        }
        return p.values;
    };
    const auto vector_param = [&](const std::string& name, index_t length) -> const std::vector<float>& {
        const detail_matconvnet::Param& p = finite(name);
        if (p.values.size() != static_cast<std::size_t>(length))
            r.refuse("parameter '", name, "' has ", p.values.size(), " values, expected ", length);
        return p.values;
    };
    // despeck's tensors by name, in despeck's shapes and layouts.
    std::map<std::string, Tensor<T>> named;
    const auto vector_tensor = [](const std::vector<float>& v) {
        Tensor<T> t(Shape{static_cast<index_t>(v.size())});
        std::copy(v.begin(), v.end(), t.data());
        return t;
    };
    const index_t K = cfg.kernel, F = cfg.filters;
    for (int b = 0; b < 2; ++b) {
        const std::string prefix = DeSpeckNet<T>::branch_names[static_cast<std::size_t>(b)];
        for (int i = 0; i < cfg.depth; ++i) {
            const Layer& l = *branches[b].convs[static_cast<std::size_t>(i)];
            const index_t cin = i == 0 ? cfg.channels : F, cout = i == cfg.depth - 1 ? cfg.channels : F;
            const std::vector<float>& f = array_param(l.params[0], {std::size_t(K), std::size_t(K), std::size_t(cin), std::size_t(cout)});
            Tensor<T> w(Shape{K, K, cin, cout});
            for (index_t ki = 0; ki < K; ++ki)
                for (index_t kj = 0; kj < K; ++kj)
                    for (index_t c = 0; c < cin; ++c)
                        for (index_t k = 0; k < cout; ++k)
                            w[((ki * K + kj) * cin + c) * cout + k] =
                                static_cast<T>(f[static_cast<std::size_t>(ki + K * kj + K * K * c + K * K * cin * k)]);
            named[prefix + ".conv" + std::to_string(i) + ".weight"] = std::move(w);
            const std::vector<float>& bias = vector_param(l.params[1], cout);
            named[prefix + ".conv" + std::to_string(i) + ".bias"] = vector_tensor(bias);
        }
        for (int i = 1; i <= cfg.depth - 2; ++i) {
            const Layer& l = *branches[b].norms[static_cast<std::size_t>(i - 1)];
            const std::string bn = prefix + ".bn" + std::to_string(i);
            const std::vector<float>& g = vector_param(l.params[0], F);
            const std::vector<float>& beta = vector_param(l.params[1], F);
            const std::vector<float>& m = array_param(l.params[2], {std::size_t(F), 2});  // mean, sigma
            Tensor<T> mean(Shape{F}), var(Shape{F});
            for (index_t k = 0; k < F; ++k) {
                // sigma = sqrt(var + epsilon) >= sqrt(epsilon); a little below it passes (float rounding).
                const double sigma = m[static_cast<std::size_t>(F + k)];
                if (!(sigma > 0) || sigma * sigma < epsilon * (1 - 1e-6))
                    r.refuse("batch norm '", l.name, "' channel ", k, " has sigma ", sigma,
                                   ", not sqrt(var + epsilon) with epsilon ", epsilon);
                mean[k] = static_cast<T>(m[static_cast<std::size_t>(k)]);
                var[k] = static_cast<T>(std::max(sigma * sigma - epsilon, 0.0));
            }
            named[bn + ".weight"] = vector_tensor(g);
            named[bn + ".bias"] = vector_tensor(beta);
            named[bn + ".running_mean"] = std::move(mean);
            named[bn + ".running_var"] = std::move(var);
        }
    }

    DeSpeckNet<T> model(cfg);
    assign_model_tensors(model, read_model_tensors(model, [&](const std::string& name, const Shape& shape) {
        auto node = named.extract(name);  // taken out: a second request for a name is refused
        if (node.empty() || node.mapped().shape() != shape)
            r.refuse("no value of shape ", shape, " for despeck tensor '", name, "'");
        return std::move(node.mapped());
    }));
    return model;
}

// A model from a despeck checkpoint or, where the file is a MAT file, from the authors' MatConvNet
// model: what the despeck program's --model options take.
template <class T>
DeSpeckNet<T> load_model_or_matconvnet(const std::filesystem::path& path) {
    return is_mat_file(path) ? load_matconvnet<T>(path) : load_model<T>(path);
}

}  // namespace despeck::io
