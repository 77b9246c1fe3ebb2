// The authors' MatConvNet models (../shared/data/pretrained) read natively with libmatio: the
// architecture and layouts that ../shared/data/pretrained/README.md documents, the radiometry it
// reports on the TerraSAR-X crop, and clear errors for files that are not such a model.
#include <doctest/doctest.h>

#include <matio.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "despeck/io/matconvnet.hpp"
#include "despeck/io/npy.hpp"
#include "support/files.hpp"
#include "support/kernel_choice.hpp"

using namespace despeck;
namespace fs = std::filesystem;

namespace {

fs::path pretrained(const std::string& name) {
    const fs::path p = fs::path(DESPECK_SHARED_DIR) / "data" / "pretrained" / name;
    if (!fs::exists(p)) FAIL("missing fixture " << p.string() << " (see ../shared/README.md)");
    return p;
}

fs::path tmp(const std::string& name) {
    const fs::path dir = fs::path(DESPECK_TEST_TMP) / "matconvnet";
    fs::create_directories(dir);
    return dir / name;
}

// The model's tensor `name` (parameter or buffer).
TensorView<const float> tensor(const DeSpeckNet<float>& model, const std::string& name) {
    for (const auto* store : {&model.parameters(), &model.buffers()})
        for (std::size_t i = 0; i < store->count(); ++i)
            if (store->entry(i).name == name) return store->value(i);
    FAIL("no tensor " << name);
    return {};
}

std::string text_of(const matvar_t* v) {
    std::string s;
    for (std::size_t i = 0; i < v->nbytes / v->data_size; ++i)
        s += v->data_size == 1 ? static_cast<const char*>(v->data)[i] : static_cast<char>(static_cast<const std::uint16_t*>(v->data)[i]);
    return s;
}

// The `net` variable of a MAT file, read with libmatio directly (freed by the caller).
matvar_t* read_net(const fs::path& path) {
    mat_t* m = Mat_Open(path.string().c_str(), MAT_ACC_RDONLY);
    REQUIRE(m != nullptr);
    matvar_t* net = Mat_VarRead(m, "net");
    Mat_Close(m);
    REQUIRE(net != nullptr);
    return net;
}

// net.params(k).value for the parameter called `name`.
matvar_t* param(matvar_t* net, const std::string& name) {
    matvar_t* params = Mat_VarGetStructFieldByName(net, "params", 0);
    for (std::size_t i = 0; i < params->dims[0] * params->dims[1]; ++i)
        if (text_of(Mat_VarGetStructFieldByName(params, "name", i)) == name) return Mat_VarGetStructFieldByName(params, "value", i);
    FAIL("no parameter " << name);
    return nullptr;
}

// Field `field` of the layer called `name`.
matvar_t* layer_field(matvar_t* net, const std::string& name, const char* field) {
    matvar_t* layers = Mat_VarGetStructFieldByName(net, "layers", 0);
    for (std::size_t i = 0; i < layers->dims[0] * layers->dims[1]; ++i)
        if (text_of(Mat_VarGetStructFieldByName(layers, "name", i)) == name) return Mat_VarGetStructFieldByName(layers, field, i);
    FAIL("no layer " << name);
    return nullptr;
}

// The base model with one change made by `edit`, written to tmp/<name>.
fs::path edited_model(const std::string& name, const std::function<void(matvar_t*)>& edit) {
    matvar_t* net = read_net(pretrained("deSpeckNet-epoch-30.mat"));
    edit(net);
    const fs::path out = tmp(name);
    fs::remove(out);
    mat_t* m = Mat_CreateVer(out.string().c_str(), nullptr, MAT_FT_MAT5);
    REQUIRE(m != nullptr);
    REQUIRE(Mat_VarWrite(m, net, MAT_COMPRESSION_ZLIB) == 0);
    Mat_Close(m);
    Mat_VarFree(net);
    return out;
}

// load_matconvnet refuses `path` with an io_error naming the file and saying one of `expect`.
void check_refused(const fs::path& path, std::initializer_list<std::string> expect) {
    try {
        (void)io::load_matconvnet<float>(path);
        FAIL("loaded " << path.string());
    } catch (const io_error& e) {
        const std::string what = e.what();
        INFO(what);
        CHECK(what.find(path.filename().string()) != std::string::npos);
        CHECK(std::any_of(expect.begin(), expect.end(), [&](const std::string& x) { return what.find(x) != std::string::npos; }));
    }
}

}  // namespace

TEST_CASE("the authors' pretrained deSpeckNet imports with the architecture and layouts its README documents") {
    const fs::path path = pretrained("deSpeckNet-epoch-30.mat");
    CHECK(io::is_mat_file(path));
    const DeSpeckNet<float> model = io::load_matconvnet<float>(path);
    const DeSpeckNetConfig& c = model.config();
    CHECK(c.depth == 17);
    CHECK(c.filters == 64);
    CHECK(c.channels == 1);
    CHECK(c.kernel == 3);
    CHECK(c.combine == CombineMode::multiplicative_linear);
    CHECK(c.bn_eps == 1e-5);  // the layers' own epsilon

    // MATLAB is column-major: convN_f(i,j,c,k) at i + 3j + 9c + 9 Cin k; despeck's [3,3,ci,co] is
    // row-major. conv3 is the clean branch's second conv, conv48 its last (3x3x64, the trailing 1
    // dropped), conv49 the noise branch's first; bnorm4 the clean branch's first batch norm.
    matvar_t* net = read_net(path);
    const auto check_conv = [&](const char* mat_name, const std::string& ours, index_t cin, index_t cout) {
        const matvar_t* raw = param(net, mat_name);
        const float* f = static_cast<const float*>(raw->data);
        const TensorView<const float> w = tensor(model, ours);
        REQUIRE(w.shape == Shape{3, 3, cin, cout});
        index_t mismatches = 0;
        for (index_t i = 0; i < 3; ++i)
            for (index_t j = 0; j < 3; ++j)
                for (index_t ch = 0; ch < cin; ++ch)
                    for (index_t k = 0; k < cout; ++k)
                        mismatches += w.data[((i * 3 + j) * cin + ch) * cout + k] != f[i + 3 * j + 9 * ch + 9 * cin * k];
        CHECK_MESSAGE(mismatches == 0, mat_name << " -> " << ours);
    };
    check_conv("conv1_f", "clean.conv0.weight", 1, 64);
    check_conv("conv3_f", "clean.conv1.weight", 64, 64);
    check_conv("conv48_f", "clean.conv16.weight", 64, 1);
    check_conv("conv49_f", "noise.conv0.weight", 1, 64);
    check_conv("conv96_f", "noise.conv16.weight", 64, 1);
    const float* moments = static_cast<const float*>(param(net, "bnorm4_m")->data);  // [64 x 2]: mean, sigma
    const TensorView<const float> mean = tensor(model, "clean.bn1.running_mean"), var = tensor(model, "clean.bn1.running_var");
    for (index_t k = 0; k < 64; ++k) {
        CHECK(mean.data[k] == moments[k]);
        // gamma / sqrt(var + eps) must equal MatConvNet's test-mode gamma / sigma.
        CHECK(std::sqrt(double(var.data[k]) + 1e-5) == doctest::Approx(moments[64 + k]).epsilon(1e-6));
    }
    CHECK(tensor(model, "clean.conv16.bias").data[0] == static_cast<const float*>(param(net, "conv48_b")->data)[0]);
    Mat_VarFree(net);
}

TEST_CASE("the imported model keeps the radiometry the README reports on TerraSAR-X, and the TV model loads too") {
    const fs::path crop = fs::path(DESPECK_SHARED_DIR) / "data" / "sar" / "tsx_slc_intensity_1look_256x256.npy";
    if (!fs::exists(crop)) FAIL("missing fixture " << crop.string() << " (see ../shared/README.md)");
    const DeSpeckNet<float> model = io::load_matconvnet<float>(pretrained("deSpeckNet-epoch-30.mat"));
    const Tensor<float> intensity = io::read_npy_f32(crop);
    REQUIRE(intensity.shape() == Shape{256, 256});
    Tensor<float> x(Shape{1, 256, 256, 1});
    std::copy(intensity.data(), intensity.data() + intensity.size(), x.data());
    const Tensor<float> clean = model.predict_clean(x.view());
    const Tensor<float> noise = model.run_branch(DeSpeckNet<float>::noise_branch, x.view());
    double in = 0, out = 0, speckle = 0;
    for (index_t i = 0; i < x.size(); ++i) in += x[i], out += clean[i], speckle += noise[i];
    // README: mean(clean) / mean(input) = 1.008 on this 1-look crop (mean 0.049); the noise
    // branch's mean is about 0.9-1.0 on in-domain data. A transposed filter or a variance read as
    // sigma puts these far off.
    MESSAGE("mean input " << in / x.size() << ", clean / input " << out / in << ", mean speckle " << speckle / x.size());
    CHECK(out / in > 1.003);
    CHECK(out / in < 1.013);
    CHECK(speckle / double(x.size()) > 0.85);
    CHECK(speckle / double(x.size()) < 1.05);

    const DeSpeckNet<float> tv = io::load_matconvnet<float>(pretrained("deSpeckNet-epoch-30_TV.mat"));
    CHECK(tv.config() == model.config());
    CHECK(tensor(tv, "clean.conv1.weight").data[0] != tensor(model, "clean.conv1.weight").data[0]);
}

TEST_CASE("fast inference on the authors' pretrained model and real TerraSAR-X stays within its bound, float and AMX products") {
    // Issue #5's bound on the trained network itself: max |fast - exact| <= 1e-3 of the exact
    // output's range (max |exact|), and the PSNR against the 2x2-multilooked crop changes by
    // < 0.01 dB; point by point, 1e-3 too (below).
    const fs::path dir = fs::path(DESPECK_SHARED_DIR) / "data" / "sar";
    const fs::path single = dir / "tsx_slc_intensity_1look_256x256.npy", multi = dir / "tsx_slc_intensity_ml2x2_128x128.npy";
    for (const auto& f : {single, multi})
        if (!fs::exists(f)) FAIL("missing fixture " << f.string() << " (see ../shared/README.md)");
    const DeSpeckNet<float> model = io::load_matconvnet<float>(pretrained("deSpeckNet-epoch-30.mat"));
    const Tensor<float> intensity = io::read_npy_f32(single), ml = io::read_npy_f32(multi);
    REQUIRE(intensity.shape() == Shape{256, 256});
    REQUIRE(ml.shape() == Shape{128, 128});
    Tensor<float> x(Shape{1, 256, 256, 1});
    std::copy(intensity.data(), intensity.data() + intensity.size(), x.data());
    const Tensor<float> exact = model.predict_clean(x.view());
    double lo = 1e30, hi = -1e30, range = 0;
    for (index_t i = 0; i < ml.size(); ++i) lo = std::min(lo, double(ml[i])), hi = std::max(hi, double(ml[i]));
    for (index_t i = 0; i < exact.size(); ++i) range = std::max(range, std::abs(double(exact[i])));
    auto psnr = [&](const Tensor<float>& out) {
        double se = 0;
        for (index_t r = 0; r < 256; ++r)
            for (index_t c = 0; c < 256; ++c) se += std::pow(double(out[r * 256 + c]) - ml[(r / 2) * 128 + c / 2], 2);
        return 10 * std::log10((hi - lo) * (hi - lo) / (se / (256.0 * 256.0)));
    };
    despeck::testing::KernelChoiceGuard guard;
    for (bool amx : despeck::testing::fast_product_amx_choices()) {
        CAPTURE(amx);
        kernels::set_amx_enabled(amx);
        const Tensor<float> fast = model.predict_clean(x.view(), InferenceMode::fast);
        CHECK(kernels::last_winograd_amx() == amx);
        double dev = 0;
        for (index_t i = 0; i < fast.size(); ++i) dev = std::max(dev, std::abs(double(fast[i]) - double(exact[i])));
        const double p_exact = psnr(exact), p_fast = psnr(fast);
        const std::string products = amx ? "AMX int8" : "float";
        MESSAGE("pretrained model, fast (" << products << " products) vs exact: max deviation " << dev / range
                                           << " of the range; PSNR vs the multilook " << p_exact << " / " << p_fast << " dB");
        CHECK(dev <= 1e-3 * range);
        CHECK(dev > 0);
        CHECK(std::abs(p_fast - p_exact) < 0.01);
        // Point by point, relative to each pixel's own clean intensity (floored at 1% of the
        // largest, where a near-zero output would make any difference look huge). Measured 1.9e-4
        // with float products, 3.4e-4 with AMX's (docs/benchmarks.md, "Fast inference accuracy").
        double pointwise = 0;
        for (index_t i = 0; i < fast.size(); ++i)
            pointwise = std::max(pointwise, std::abs(double(fast[i]) - double(exact[i])) /
                                                std::max(std::abs(double(exact[i])), 0.01 * range));
        MESSAGE("pretrained model, fast (" << products << " products) vs exact: max pointwise relative deviation " << pointwise);
        CHECK(pointwise <= 1e-3);
    }
}

TEST_CASE("files that are not such a model are refused by name") {
    const fs::path text = tmp("not_a_mat.mat");
    testing::write_bytes(text, "hello, not a MAT file");
    check_refused(text, {"is not a MATLAB v5 MAT file"});
    check_refused(tmp("absent.mat"), {"no such file"});
    // MAT v7.3 is HDF5: refused by name, also through load_model_or_matconvnet.
    const fs::path v73 = tmp("v73.mat");
    testing::write_bytes(v73, "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Nov 27 2026 HDF5 schema 1.00 .");
    CHECK(io::is_mat_file(v73));
    check_refused(v73, {"is a MAT v7.3 (HDF5) file"});
    CHECK_THROWS_WITH_AS(io::load_model_or_matconvnet<float>(v73), doctest::Contains("MAT v7.3"), io_error);

    // A MAT file without the `net` variable.
    const fs::path other = tmp("no_net.mat");
    fs::remove(other);
    {
        mat_t* m = Mat_CreateVer(other.string().c_str(), nullptr, MAT_FT_MAT5);
        REQUIRE(m != nullptr);
        size_t dims[2] = {1, 1};
        double one = 1;
        matvar_t* v = Mat_VarCreate("x", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, dims, &one, 0);
        REQUIRE(Mat_VarWrite(m, v, MAT_COMPRESSION_NONE) == 0);
        Mat_VarFree(v);
        Mat_Close(m);
    }
    check_refused(other, {"no readable variable 'net'"});

    // The real model cut short.
    const std::string bytes = testing::read_bytes(pretrained("deSpeckNet-epoch-30.mat"));
    const fs::path cut = tmp("truncated.mat");
    testing::write_bytes(cut, bytes.substr(0, bytes.size() / 2));
    check_refused(cut, {"truncated", "no readable variable 'net'"});  // as far as libmatio gets

    // The real model with one thing changed that despeck cannot run as it is.
    check_refused(edited_model("pad0.mat", [](matvar_t* net) {
                      auto* pad = static_cast<double*>(Mat_VarGetStructFieldByName(layer_field(net, "conv3", "block"), "pad", 0)->data);
                      pad[0] = pad[1] = pad[2] = pad[3] = 0;
                  }),
                  {"conv 'conv3' has pad other than 1"});
    check_refused(edited_model("stride2.mat", [](matvar_t* net) {
                      auto* stride = static_cast<double*>(Mat_VarGetStructFieldByName(layer_field(net, "conv51", "block"), "stride", 0)->data);
                      stride[0] = stride[1] = 2;
                  }),
                  {"conv 'conv51' has stride other than 1"});
    check_refused(edited_model("leaky.mat", [](matvar_t* net) {
                      static_cast<double*>(Mat_VarGetStructFieldByName(layer_field(net, "relu5", "block"), "leak", 0)->data)[0] = 0.1;
                  }),
                  {"ReLU 'relu5' is leaky"});
    check_refused(edited_model("nan.mat", [](matvar_t* net) { static_cast<float*>(param(net, "bnorm4_g")->data)[3] = NAN; }),
                  {"parameter 'bnorm4_g' holds a non-finite value"});
    check_refused(edited_model("sigma.mat", [](matvar_t* net) { static_cast<float*>(param(net, "bnorm4_m")->data)[64 + 5] = 1e-4f; }),
                  {"batch norm 'bnorm4' channel 5 has sigma"});
    check_refused(edited_model("negative_sigma.mat", [](matvar_t* net) { static_cast<float*>(param(net, "bnorm7_m")->data)[64 + 2] *= -1; }),
                  {"batch norm 'bnorm7' channel 2 has sigma -"});
    check_refused(edited_model("moments_transposed.mat", [](matvar_t* net) {
                      matvar_t* m = param(net, "bnorm4_m");  // 64 x 2 stored as 2 x 64: means and sigmas interleaved
                      std::swap(m->dims[0], m->dims[1]);
                  }),
                  {"parameter 'bnorm4_m' is 2x64, expected 64x2"});
    check_refused(edited_model("renamed.mat", [](matvar_t* net) {
                      // conv48's output is no longer 'prediction': same length, last letter changed.
                      matvar_t* out = Mat_VarGetCell(layer_field(net, "conv48", "outputs"), 0);
                      if (out->data_size == 1)
                          static_cast<char*>(out->data)[9] = 'X';
                      else
                          static_cast<std::uint16_t*>(out->data)[9] = 'X';
                  }),
                  {"neither branch ends in the variable 'prediction'"});
}

TEST_CASE("a channel whose training variance was zero (sigma = sqrt(epsilon)) imports with running_var 0") {
    const float sigma = static_cast<float>(std::sqrt(1e-5));
    const fs::path path = edited_model("dead_channel.mat", [&](matvar_t* net) { static_cast<float*>(param(net, "bnorm4_m")->data)[64 + 9] = sigma; });
    const DeSpeckNet<float> model = io::load_matconvnet<float>(path);
    const float var = tensor(model, "clean.bn1.running_var").data[9];
    CHECK(var >= 0);
    CHECK(var < 1e-11);
    CHECK(std::sqrt(double(var) + model.config().bn_eps) == doctest::Approx(sigma).epsilon(1e-6));
}
