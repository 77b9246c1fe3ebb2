// Checkpoints: round trips (model, optimiser, metadata), atomic writes, and clear errors for
// truncated, corrupt or mismatched files.
#include <doctest/doctest.h>

#include "support/files.hpp"

#include <filesystem>
#include <fstream>
#include <utility>

#include "despeck/io/checkpoint.hpp"
#include "support/grad_check.hpp"

using namespace despeck;
namespace fs = std::filesystem;

namespace {

fs::path tmp_path(const std::string& name) {
    fs::create_directories(DESPECK_TEST_TMP);
    return fs::path(DESPECK_TEST_TMP) / name;
}

DeSpeckNetConfig small() {
    DeSpeckNetConfig c;
    c.depth = 3;
    c.filters = 4;
    c.channels = 2;
    c.tv_weight = 0.5;
    return c;
}

using despeck::testing::read_bytes;
using despeck::testing::write_bytes;

}  // namespace

TEST_CASE("checkpoint: model, running statistics, optimiser state and metadata round-trip exactly") {
    DeSpeckNet<float> model(small(), 3);
    Adam<float> adam;
    Rng rng(1);
    Tensor<float> x(Shape{2, 6, 6, 2});
    for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
    for (int i = 0; i < 3; ++i) model.train_step(x.view(), x.view(), {}, adam, 1e-3);
    const fs::path path = tmp_path("roundtrip.safetensors");
    io::save_checkpoint(path, model, &adam, {{"epoch", "7"}});

    DeSpeckNet<float> loaded(small(), 999);
    Adam<float> adam2;
    io::load_checkpoint(path, loaded, &adam2);
    CHECK(std::equal(model.parameters().values().begin(), model.parameters().values().end(), loaded.parameters().values().begin()));
    CHECK(std::equal(model.buffers().values().begin(), model.buffers().values().end(), loaded.buffers().values().begin()));
    CHECK(adam2.step_count() == 3);
    CHECK(adam2.first_moment() == adam.first_moment());
    CHECK(adam2.second_moment() == adam.second_moment());
    CHECK(io::SafetensorsFile::read(path).metadata_value("epoch") == "7");

    // Resuming gives the same next step as not stopping.
    const auto a = model.train_step(x.view(), x.view(), {}, adam, 1e-3);
    const auto b = loaded.train_step(x.view(), x.view(), {}, adam2, 1e-3);
    CHECK(a.total == b.total);
    CHECK(std::equal(model.parameters().values().begin(), model.parameters().values().end(), loaded.parameters().values().begin()));

    auto from_file = io::load_model<float>(path);
    CHECK(from_file.config() == model.config());
}

TEST_CASE("checkpoint: a double model saves F64 and loads into float") {
    DeSpeckNet<double> model(small(), 4);
    const fs::path path = tmp_path("double.safetensors");
    io::save_checkpoint(path, model);
    auto file = io::SafetensorsFile::read(path);
    CHECK(file.entry("clean.conv0.weight").dtype == "F64");
    DeSpeckNet<float> f(small(), 0);
    io::load_checkpoint(file, f);
    CHECK(f.parameters().values()[5] == static_cast<float>(model.parameters().values()[5]));
}

TEST_CASE("checkpoint: the layout is the documented safetensors one") {
    DeSpeckNet<float> model(small(), 5);
    const fs::path path = tmp_path("layout.safetensors");
    io::save_checkpoint(path, model);
    const std::string bytes = read_bytes(path);
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    const auto header = nlohmann::json::parse(bytes.substr(8, n));
    CHECK(header.at("clean.conv1.weight").at("shape") == nlohmann::json::array({3, 3, 4, 4}));
    CHECK(header.at("clean.conv1.weight").at("dtype") == "F32");
    CHECK(header.at("__metadata__").at("format") == "despeck-checkpoint");
    const auto off = header.at("noise.conv2.bias").at("data_offsets");
    float first_bias = 0;
    std::memcpy(&first_bias, bytes.data() + 8 + n + off[0].get<std::size_t>(), 4);
    CHECK(first_bias == model.parameters().value("noise.conv2.bias")[0]);
}

TEST_CASE("checkpoint: truncated, corrupt and mismatched files are clear errors") {
    DeSpeckNet<float> model(small(), 6);
    const fs::path good = tmp_path("good.safetensors");
    io::save_checkpoint(good, model);
    const std::string bytes = read_bytes(good);

    const fs::path truncated = tmp_path("truncated.safetensors");
    write_bytes(truncated, bytes.substr(0, bytes.size() - 100));
    CHECK_THROWS_WITH_AS(io::load_model<float>(truncated), doctest::Contains("truncated.safetensors"), io_error);

    write_bytes(truncated, bytes.substr(0, 5));
    CHECK_THROWS_AS(io::load_model<float>(truncated), io_error);

    std::string corrupt = bytes;
    corrupt[8] = '#';  // the header's opening brace
    const fs::path bad_json = tmp_path("corrupt.safetensors");
    write_bytes(bad_json, corrupt);
    CHECK_THROWS_WITH_AS(io::load_model<float>(bad_json), doctest::Contains("JSON"), io_error);

    std::string huge = bytes;
    const std::uint64_t big = 1ull << 40;
    std::memcpy(huge.data(), &big, 8);
    write_bytes(bad_json, huge);
    CHECK_THROWS_AS(io::load_model<float>(bad_json), io_error);

    CHECK_THROWS_WITH_AS(io::load_model<float>(tmp_path("does_not_exist.safetensors")),
                         doctest::Contains("does_not_exist"), io_error);

    // Another architecture: names the mismatch.
    DeSpeckNetConfig other = small();
    other.channels = 1;
    DeSpeckNet<float> one_channel(other, 0);
    CHECK_THROWS_WITH_AS(io::load_checkpoint(good, one_channel), doctest::Contains("channels 2"), io_error);
    other = small();
    other.combine = CombineMode::multiplicative_linear;
    DeSpeckNet<float> linear(other, 0);
    CHECK_THROWS_WITH_AS(io::load_checkpoint(good, linear), doctest::Contains("combine mode"), io_error);

    // A tensor missing or of the wrong shape.
    io::SafetensorsWriter w;
    w.set_metadata("format", "despeck-checkpoint");
    w.set_metadata("config", io::config_to_json(small()).dump());
    Tensor<float> wrong(Shape{3, 3, 2, 5});
    w.add<float>("clean.conv0.weight", wrong.view());
    const fs::path partial = tmp_path("partial.safetensors");
    w.write(partial);
    CHECK_THROWS_WITH_AS(io::load_model<float>(partial), doctest::Contains("clean.conv0.weight"), io_error);

    // Not a checkpoint at all.
    io::SafetensorsWriter plain;
    plain.add<float>("x", wrong.view());
    plain.write(partial);
    CHECK_THROWS_WITH_AS(io::load_model<float>(partial), doctest::Contains("not a despeck checkpoint"), io_error);
}

TEST_CASE("atomic write: a failing writer leaves the previous file whole and no temporary behind") {
    const fs::path path = tmp_path("atomic.bin");
    io::write_file_atomically(path, [](std::FILE* f) { return io::write_all(f, "first", 5); });
    CHECK_THROWS_AS(io::write_file_atomically(path, [](std::FILE* f) {
                        io::write_all(f, "sec", 3);
                        throw std::runtime_error("simulated crash mid-write");
                        return true;
                    }),
                    io_error);
    CHECK(read_bytes(path) == "first");
    int leftovers = 0;
    for (const auto& e : fs::directory_iterator(path.parent_path()))
        if (e.path().string().find("atomic.bin.tmp") != std::string::npos) ++leftovers;
    CHECK(leftovers == 0);
    // A directory that does not exist: an error naming it.
    CHECK_THROWS_WITH_AS(io::write_file_atomically(tmp_path("no/such/dir/x.bin"), [](std::FILE*) { return true; }),
                         doctest::Contains("no/such/dir"), io_error);
}

TEST_CASE("checkpoint: loading is all-or-nothing, and a newer format version is refused") {
    DeSpeckNet<float> source(small(), 8);
    // Every tensor right except the last buffer, which has the wrong shape.
    io::SafetensorsWriter w;
    w.set_metadata("format", "despeck-checkpoint");
    w.set_metadata("format_version", "1");
    w.set_metadata("config", io::config_to_json(small()).dump());
    for (std::size_t i = 0; i < source.parameters().count(); ++i)
        w.add<float>(source.parameters().entry(i).name, source.parameters().value(i));
    const auto& buffers = source.buffers();
    for (std::size_t i = 0; i + 1 < buffers.count(); ++i) w.add<float>(buffers.entry(i).name, buffers.value(i));
    Tensor<float> wrong(Shape{3});
    w.add<float>(buffers.entry(buffers.count() - 1).name, wrong.view());
    const fs::path path = tmp_path("half_bad.safetensors");
    w.write(path);

    DeSpeckNet<float> target(small(), 9);
    const std::vector<float> before(target.parameters().values().begin(), target.parameters().values().end());
    CHECK_THROWS_WITH_AS(io::load_checkpoint(path, target), doctest::Contains(buffers.entry(buffers.count() - 1).name.c_str()),
                         io_error);
    CHECK(std::equal(before.begin(), before.end(), target.parameters().values().begin()));  // untouched

    w.set_metadata("format_version", "2");
    w.write(path);
    CHECK_THROWS_WITH_AS(io::load_checkpoint(path, target), doctest::Contains("format version 2"), io_error);
}

TEST_CASE("model tensors: read in store order (parameters, then buffers), assigned only as a whole") {
    DeSpeckNet<float> source(small(), 11), target(small(), 12);
    Rng rng(5);  // the buffers start at 0 and 1 in every model: make the source's its own
    for (float& v : source.buffers().values()) v = static_cast<float>(rng.uniform(0.5, 2.0));
    std::vector<std::string> asked;
    const std::vector<Tensor<float>> tensors =
        io::read_model_tensors(target, [&](const std::string& name, const Shape& shape) {
            asked.push_back(name);
            const bool is_param = source.parameters().contains(name);
            const TensorView<const float> v = is_param ? std::as_const(source).parameters().value(name)
                                                       : std::as_const(source).buffers().value(name);
            Tensor<float> t(shape);
            std::copy(v.data, v.data + v.shape.size(), t.data());
            return t;
        });
    REQUIRE(asked.size() == source.parameters().count() + source.buffers().count());
    CHECK(asked.front() == source.parameters().entry(0).name);
    CHECK(asked.back() == source.buffers().entry(source.buffers().count() - 1).name);
    io::assign_model_tensors(target, tensors);
    CHECK(std::equal(source.parameters().values().begin(), source.parameters().values().end(),
                     target.parameters().values().begin()));
    CHECK(std::equal(source.buffers().values().begin(), source.buffers().values().end(), target.buffers().values().begin()));

    // A reader that hands back the wrong shape is refused by name.
    CHECK_THROWS_WITH_AS(io::read_model_tensors(target, [](const std::string&, const Shape&) { return Tensor<float>(Shape{3}); }),
                         doctest::Contains(source.parameters().entry(0).name.c_str()), value_error);
    // A list one short, one of the wrong shape, or one moved from: refused, and nothing is written.
    DeSpeckNet<float> untouched(small(), 13);
    const std::vector<float> params_before(untouched.parameters().values().begin(), untouched.parameters().values().end());
    std::vector<Tensor<float>> short_list(tensors.begin(), tensors.end() - 1);
    CHECK_THROWS_AS(io::assign_model_tensors(untouched, short_list), value_error);
    std::vector<Tensor<float>> wrong_shape = tensors;
    wrong_shape.back() = Tensor<float>(Shape{3});
    CHECK_THROWS_WITH_AS(io::assign_model_tensors(untouched, wrong_shape),
                         doctest::Contains(source.buffers().entry(source.buffers().count() - 1).name.c_str()), value_error);
    std::vector<Tensor<float>> moved_from = tensors;
    const Tensor<float> taken = std::move(moved_from.back());
    CHECK_THROWS_AS(io::assign_model_tensors(untouched, moved_from), value_error);
    CHECK(std::equal(params_before.begin(), params_before.end(), untouched.parameters().values().begin()));
}

TEST_CASE("safetensors: a shape whose byte count overflows is refused; a bad optimizer.step is an io_error") {
    DeSpeckNet<float> model(small(), 10);
    Adam<float> adam;
    Tensor<float> x(Shape{1, 4, 4, 2}, 1.0f);
    model.train_step(x.view(), x.view(), {}, adam, 1e-3);
    const fs::path path = tmp_path("with_adam.safetensors");
    io::save_checkpoint(path, model, &adam);
    const std::string bytes = read_bytes(path);
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    auto header = nlohmann::json::parse(bytes.substr(8, n));
    auto rewrite = [&](const nlohmann::json& h) {
        std::string text = h.dump();
        text.append((8 - text.size() % 8) % 8, ' ');
        const std::uint64_t len = text.size();
        std::string out(reinterpret_cast<const char*>(&len), 8);
        write_bytes(path, out + text + bytes.substr(8 + n));
    };
    auto overflow = header;
    overflow["clean.conv0.bias"]["shape"] = {4611686018427387904LL, 4};
    overflow["clean.conv0.bias"]["data_offsets"] = {0, 0};
    rewrite(overflow);
    CHECK_THROWS_WITH_AS(io::SafetensorsFile::read(path), doctest::Contains("overflow"), io_error);
    for (const char* bad : {"-3", "12abc", ""}) {
        auto h = header;
        h["__metadata__"]["optimizer.step"] = bad;
        rewrite(h);
        DeSpeckNet<float> target(small(), 11);
        const std::vector<float> before(target.parameters().values().begin(), target.parameters().values().end());
        Adam<float> fresh;
        CHECK_THROWS_WITH_AS(io::load_checkpoint(path, target, &fresh), doctest::Contains("optimizer.step"), io_error);
        CHECK(std::equal(before.begin(), before.end(), target.parameters().values().begin()));
        CHECK(fresh.step_count() == 0);
    }
}
