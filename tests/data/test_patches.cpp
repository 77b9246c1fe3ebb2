// Patch datasets: sampling (validity, split by region, grid counts, seeds), the .npy + manifest
// directory (round trip, a hand-parsed .npy header, xtensor's reader, clear errors), and the batch
// loader (one pass per epoch, identical augmentation of input/reference/mask, resumable order).
//
// The "numpy demo" case leaves two datasets under DESPECK_TEST_TMP/patches_numpy for the manual
// check with NumPy: python3 tests/data/check_patches_numpy.py --formula <tmp>/patches_numpy/*
#include <doctest/doctest.h>

#include "support/files.hpp"

#include <array>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>

#include "despeck/data/patches.hpp"
#include "despeck/despeck.hpp"

using namespace despeck;
using namespace despeck::data;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
    const fs::path p = fs::path(DESPECK_TEST_TMP) / name;
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
}

using despeck::testing::read_bytes;
using despeck::testing::write_bytes;
nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(read_bytes(p)); }

// A scene whose values reveal where they came from (exact in float32 for rows, cols < 8000):
//   input(r, c, b)     = 1000 r + c + 0.25 b
//   reference(r, c, b) = -(1000 r + c) - 0.25 b
//   mask(r, c)         = (7 r + 3 c) % 5 != 0
// check_patches_numpy.py --formula checks the same formulas.
struct Scene {
    index_t rows, cols, bands;
    Tensor<float> input, reference;
    std::vector<std::uint8_t> mask, valid;

    Scene(index_t r, index_t c, index_t b)
        : rows(r), cols(c), bands(b), input(Shape{1, r, c, b}), reference(Shape{1, r, c, b}),
          mask(static_cast<std::size_t>(r * c)), valid(static_cast<std::size_t>(r * c), 1) {
        for (index_t i = 0; i < r; ++i)
            for (index_t j = 0; j < c; ++j) {
                for (index_t k = 0; k < b; ++k) {
                    input.at(0, i, j, k) = static_cast<float>(1000 * i + j) + 0.25f * static_cast<float>(k);
                    reference.at(0, i, j, k) = -static_cast<float>(1000 * i + j) - 0.25f * static_cast<float>(k);
                }
                mask[static_cast<std::size_t>(i * c + j)] = (7 * i + 3 * j) % 5 != 0 ? 1 : 0;
            }
    }
    PatchSource source(bool with_reference = true, bool with_mask = true) const {
        PatchSource s;
        s.input = input.view();
        if (with_reference) s.reference = reference.view();
        if (with_mask) s.mask = mask;
        s.valid = valid;
        s.input_name = "scene_20200101_db.tif";
        if (with_reference) s.reference_name = "median_2020_db.tif";
        if (with_mask) s.mask_name = "change_mask.tif";
        for (index_t k = 0; k < bands; ++k) s.band_names.push_back(k == 0 ? "VV" : k == 1 ? "VH" : "B" + std::to_string(k));
        return s;
    }
    bool pixel_ok(index_t r, index_t c) const {
        if (!valid[static_cast<std::size_t>(r * cols + c)]) return false;
        for (index_t k = 0; k < bands; ++k)
            if (!std::isfinite(input.at(0, r, c, k)) || !std::isfinite(reference.at(0, r, c, k))) return false;
        return true;
    }
};

PatchOptions options(index_t size, PatchOptions::Sampling sampling, double fraction, index_t block_rows = 0) {
    PatchOptions o;
    o.size = size;
    o.sampling = sampling;
    o.validation_fraction = fraction;
    o.split_block_rows = block_rows;
    return o;
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
    return a.shape() == b.shape() && (a.size() == 0 || std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0);
}

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no exception)";
}

}  // namespace

// ---- sampling -----------------------------------------------------------------------------------

TEST_CASE("patch sampling never takes a patch with an invalid pixel") {
    Scene scene(120, 100, 2);
    Rng rng(11);
    for (auto& v : scene.valid) v = rng.uniform() < 0.004 ? 0 : 1;      // scattered no-data
    for (index_t r = 40; r < 70; ++r)
        for (index_t c = 10; c < 40; ++c) scene.valid[static_cast<std::size_t>(r * 100 + c)] = 0;  // a no-data block
    scene.input.at(0, 5, 95, 1) = std::numeric_limits<float>::quiet_NaN();       // not in the mask:
    scene.reference.at(0, 100, 3, 0) = std::numeric_limits<float>::infinity();   // found by the finite check

    for (auto sampling : {PatchOptions::Sampling::random, PatchOptions::Sampling::grid}) {
        PatchOptions o = options(10, sampling, 0.2, 20);
        o.count = 300;
        o.stride = 3;
        o.seed = 5;
        const PatchSample s = sample_patches(scene.source(), o);
        CAPTURE(to_string(sampling));
        CHECK(s.train.size() > 50);
        CHECK(s.validation.size() > 5);
        index_t bad = 0;
        for (const auto* set : {&s.train, &s.validation})
            for (const PatchPosition& p : *set)
                for (index_t i = 0; i < 10; ++i)
                    for (index_t j = 0; j < 10; ++j) bad += scene.pixel_ok(p.row + i, p.col + j) ? 0 : 1;
        CHECK(bad == 0);
    }
    // The invalid pixels do exclude positions: fewer grid patches than on the clean scene.
    Scene clean(120, 100, 2);
    PatchOptions g = options(10, PatchOptions::Sampling::grid, 0.0);
    g.stride = 1;
    CHECK(sample_patches(scene.source(), g).train.size() < sample_patches(clean.source(), g).train.size());
}

TEST_CASE("training and validation patches never share a pixel; validation lies in whole validation bands") {
    Scene scene(200, 64, 1);
    for (auto sampling : {PatchOptions::Sampling::random, PatchOptions::Sampling::grid}) {
        for (std::uint64_t seed : {1u, 2u, 3u}) {
            PatchOptions o = options(8, sampling, 0.25, 16);
            o.count = 400;
            o.stride = 4;
            o.seed = seed;
            CAPTURE(seed);
            const PatchSample s = sample_patches(scene.source(), o);
            // 200 rows / 16 = 12 bands of whole patch rows; round(12 * 0.25) = 3 are validation.
            REQUIRE(s.layout.bands.size() == 12);
            index_t n_val_bands = 0;
            for (const SplitBand& b : s.layout.bands) {
                n_val_bands += b.split == Split::validation;
                CHECK(b.row0 % 8 == 0);
                CHECK(b.row1 - b.row0 >= 16);
            }
            CHECK(n_val_bands == 3);
            CHECK(s.layout.bands.front().row0 == 0);
            CHECK(s.layout.bands.back().row1 == 200);
            std::vector<std::uint8_t> owner(200 * 64, 0);  // bit 1: a train patch, bit 2: a validation patch
            for (Split split : {Split::train, Split::validation})
                for (const PatchPosition& p : s.of(split))
                    for (index_t i = 0; i < 8; ++i)
                        for (index_t j = 0; j < 8; ++j) {
                            owner[static_cast<std::size_t>((p.row + i) * 64 + p.col + j)] |= split == Split::train ? 1 : 2;
                            // Every pixel of a patch lies in a band of the patch's split.
                            for (const SplitBand& b : s.layout.bands)
                                if (p.row + i >= b.row0 && p.row + i < b.row1) CHECK(b.split == split);
                        }
            CHECK(std::count(owner.begin(), owner.end(), std::uint8_t(3)) == 0);
            CHECK(std::count(owner.begin(), owner.end(), std::uint8_t(1)) > 0);
            CHECK(std::count(owner.begin(), owner.end(), std::uint8_t(2)) > 0);
            if (sampling == PatchOptions::Sampling::random) {
                CHECK(s.validation.size() == 100);  // round(400 * 0.25)
                CHECK(s.train.size() == 300);
            }
        }
    }
    // The seed decides which bands: not always the same ones.
    std::set<std::vector<index_t>> choices;
    for (std::uint64_t seed = 0; seed < 8; ++seed) {
        PatchOptions o = options(8, PatchOptions::Sampling::grid, 0.25, 16);
        o.seed = seed;
        std::vector<index_t> val;
        for (const SplitBand& b : make_split_layout(200, 64, o).bands)
            if (b.split == Split::validation) val.push_back(b.row0);
        choices.insert(val);
    }
    CHECK(choices.size() > 1);
}

TEST_CASE("grid sampling: exact counts on a known scene") {
    Scene scene(100, 80, 1);
    PatchOptions o = options(10, PatchOptions::Sampling::grid, 0.0);
    PatchSample s = sample_patches(scene.source(), o);
    REQUIRE(s.train.size() == 80);  // 10 x 8 tiles
    CHECK(s.validation.empty());
    CHECK(s.train.front() == PatchPosition{0, 0});
    CHECK(s.train[1] == PatchPosition{0, 10});
    CHECK(s.train.back() == PatchPosition{90, 70});

    o.stride = 5;
    CHECK(sample_patches(scene.source(), o).train.size() == 19 * 15);  // (100-10)/5+1 by (80-10)/5+1

    // 100 rows / 20 = 5 bands; round(5 * 0.2) = 1 validation band of 20 rows = 2 tile rows.
    o = options(10, PatchOptions::Sampling::grid, 0.2, 20);
    s = sample_patches(scene.source(), o);
    CHECK(s.validation.size() == 16);
    CHECK(s.train.size() == 64);

    // One invalid pixel removes exactly the one tile that holds it.
    scene.valid[55 * 80 + 55] = 0;
    CHECK(sample_patches(scene.source(), options(10, PatchOptions::Sampling::grid, 0.0)).train.size() == 79);
}

TEST_CASE("random sampling is reproducible from the seed and differs for another seed") {
    Scene scene(96, 96, 2);
    PatchOptions o = options(12, PatchOptions::Sampling::random, 0.2, 24);
    o.count = 50;
    o.seed = 42;
    const PatchSample a = sample_patches(scene.source(), o), b = sample_patches(scene.source(), o);
    CHECK(a.train == b.train);
    CHECK(a.validation == b.validation);
    CHECK(a.train.size() == 40);
    CHECK(a.validation.size() == 10);
    std::set<std::pair<index_t, index_t>> distinct;
    for (const auto& p : a.train) distinct.insert({p.row, p.col});
    CHECK(distinct.size() == a.train.size());
    o.seed = 43;
    const PatchSample c = sample_patches(scene.source(), o);
    CHECK(c.train != a.train);
}

TEST_CASE("sampling that cannot succeed fails with a clear error") {
    Scene scene(60, 60, 1);
    std::fill(scene.valid.begin(), scene.valid.end(), std::uint8_t(0));
    PatchOptions o = options(10, PatchOptions::Sampling::random, 0.0);
    o.count = 20;
    std::string msg = error_of([&] { sample_patches(scene.source(), o); });
    CAPTURE(msg);
    CHECK(msg.find("found 0 of the 20 train patches") != std::string::npos);
    CHECK(msg.find("0 distinct patch positions") != std::string::npos);

    Scene small(30, 30, 1);  // 21 x 21 = 441 positions for 10 x 10 patches
    o.count = 500;
    msg = error_of([&] { sample_patches(small.source(), o); });
    CAPTURE(msg);
    CHECK(msg.find("441 distinct patch positions") != std::string::npos);
    CHECK_THROWS_AS(sample_patches(small.source(), o), value_error);

    o = options(10, PatchOptions::Sampling::random, 0.1);  // one band of >= 40 rows: no validation
    CHECK(error_of([&] { sample_patches(small.source(), o); }).find("no region can be held out") != std::string::npos);
    o = options(40, PatchOptions::Sampling::grid, 0.0);
    CHECK(error_of([&] { sample_patches(small.source(), o); }).find("does not fit") != std::string::npos);
    o = options(10, PatchOptions::Sampling::grid, 1.0);
    CHECK_THROWS_AS(sample_patches(small.source(), o), value_error);
    std::vector<std::uint8_t> short_mask(10, 1);
    PatchSource bad = small.source();
    bad.mask = short_mask;
    CHECK_THROWS_AS(sample_patches(bad, options(10, PatchOptions::Sampling::grid, 0.0)), shape_error);
}

// ---- the dataset on disk ------------------------------------------------------------------------

TEST_CASE("a patch dataset round-trips bit-exactly, with the manifest describing it") {
    Scene scene(90, 70, 2);
    Rng rng(3);
    for (index_t i = 0; i < scene.input.size(); ++i) {  // arbitrary dB-like floats, not only integers
        scene.input[i] = static_cast<float>(rng.normal() * 5.0 - 12.0);
        scene.reference[i] = static_cast<float>(rng.normal() * 2.0 - 12.0);
    }
    PatchOptions o = options(10, PatchOptions::Sampling::random, 0.25, 20);
    o.count = 24;
    o.seed = 77;
    o.rot90 = true;
    const PatchSplits splits = cut_patches(scene.source(), o);
    const fs::path out = fresh_dir("patches_roundtrip");
    write_patch_splits(out, splits);

    for (Split split : {Split::train, Split::validation}) {
        const PatchDataset& written = split == Split::train ? splits.train : splits.validation;
        const fs::path dir = out / to_string(split);
        const PatchDataset loaded = load_patches(dir);
        CAPTURE(dir);
        CHECK(same_bits(loaded.input, written.input));
        CHECK(same_bits(loaded.reference, written.reference));
        CHECK(same_bits(loaded.mask, written.mask));
        CHECK(loaded.positions == written.positions);
        CHECK(loaded.manifest.split == split);
        CHECK(loaded.manifest.layout == splits.layout);
        CHECK(loaded.manifest.options.seed == 77);
        CHECK(loaded.manifest.options.rot90);
        CHECK(loaded.manifest.band_names == std::vector<std::string>{"VV", "VH"});
        // The patch really is the scene at its position.
        const PatchPosition p = loaded.positions.back();
        const index_t last = loaded.count() - 1;
        CHECK(loaded.input.at(last, 3, 4, 1) == scene.input.at(0, p.row + 3, p.col + 4, 1));
        CHECK(loaded.reference.at(last, 9, 0, 0) == scene.reference.at(0, p.row + 9, p.col, 0));
        CHECK(loaded.mask.at(last, 2, 7, 0) == (scene.mask[static_cast<std::size_t>((p.row + 2) * 70 + p.col + 7)] ? 1.0f : 0.0f));

        const nlohmann::json m = read_json(dir / "manifest.json");
        CHECK(m["format"] == "despeck-patches");
        CHECK(m["version"] == 1);
        CHECK(m["split"] == to_string(split));
        CHECK(m["mode"] == "training");
        CHECK(m["count"] == written.count());
        CHECK(m["counts"]["train"] == 18);  // 24 - round(24 * 0.25)
        CHECK(m["counts"]["validation"] == 6);
        CHECK(m["patch_size"] == 10);
        CHECK(m["bands"] == 2);
        CHECK(m["band_names"] == nlohmann::json{"VV", "VH"});
        CHECK(m["units"] == "db");
        CHECK(m["arrays"]["input"]["shape"] == nlohmann::json{written.count(), 10, 10, 2});
        CHECK(m["arrays"]["mask"]["shape"] == nlohmann::json{written.count(), 10, 10, 1});
        CHECK(m["arrays"]["reference"]["file"] == "reference.npy");
        CHECK(m["sources"]["input"] == "scene_20200101_db.tif");
        CHECK(m["sources"]["reference"] == "median_2020_db.tif");
        CHECK(m["sources"]["mask"] == "change_mask.tif");
        CHECK(m["seed"] == 77);
        CHECK(m["sampling"]["method"] == "random");
        CHECK(m["sampling"]["count"] == 24);
        CHECK(m["sampling"]["validation_fraction"] == 0.25);
        CHECK(m["sampling"]["flips"] == true);
        CHECK(m["sampling"]["rot90"] == true);
        CHECK(m["split_layout"]["scheme"] == "horizontal_bands");
        CHECK(m["split_layout"]["bands"].size() == splits.layout.bands.size());
        REQUIRE(m["positions"].size() == written.positions.size());
        CHECK(m["positions"][0] == nlohmann::json{written.positions[0].row, written.positions[0].col});
        // Atomic writes leave no temporaries behind.
        std::set<std::string> files;
        for (const auto& e : fs::directory_iterator(dir)) files.insert(e.path().filename().string());
        CHECK(files == std::set<std::string>{"input.npy", "reference.npy", "mask.npy", "manifest.json"});
    }
}

TEST_CASE("the .npy files are standard: header parsed by hand, and read by xtensor") {
    Scene scene(40, 40, 2);
    const PatchSplits splits = cut_patches(scene.source(), options(8, PatchOptions::Sampling::grid, 0.0));
    const fs::path dir = fresh_dir("patches_npy_header");
    write_patches(dir, splits.train);
    const index_t n = splits.train.count();
    REQUIRE(n == 25);
    struct Expect {
        const char* file;
        const Tensor<float>* tensor;
        std::string shape;
    };
    for (const Expect& e : {Expect{"input.npy", &splits.train.input, "(25, 8, 8, 2)"},
                            Expect{"mask.npy", &splits.train.mask, "(25, 8, 8, 1)"}}) {
        CAPTURE(e.file);
        const std::string bytes = read_bytes(dir / e.file);
        REQUIRE(bytes.size() > 10);
        CHECK(bytes.compare(0, 6, "\x93NUMPY") == 0);
        CHECK(int(static_cast<unsigned char>(bytes[6])) == 1);  // version 1.0
        CHECK(int(static_cast<unsigned char>(bytes[7])) == 0);
        const std::size_t header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
        const std::size_t data_start = 10 + header_len;
        CHECK(data_start % 16 == 0);  // NumPy aligns the data (to 64 since 1.x; 16 is the minimum)
        const std::string header = bytes.substr(10, header_len);
        CAPTURE(header);
        CHECK(header.back() == '\n');
        CHECK(header.front() == '{');
        CHECK(header.find("'descr': '<f4'") != std::string::npos);
        CHECK(header.find("'fortran_order': False") != std::string::npos);
        CHECK(header.find("'shape': " + e.shape) != std::string::npos);
        REQUIRE(bytes.size() == data_start + sizeof(float) * static_cast<std::size_t>(e.tensor->size()));
        CHECK(std::memcmp(bytes.data() + data_start, e.tensor->data(), sizeof(float) * e.tensor->size()) == 0);

        // xtensor's own reader agrees (the interop the dataset side relies on).
        const auto array = xt::load_npy<float>((dir / e.file).string());
        REQUIRE(array.dimension() == 4);
        CHECK(array.shape()[0] == 25);
        CHECK(std::equal(array.begin(), array.end(), e.tensor->data()));
    }
}

TEST_CASE("read_npy_f32: long headers and big-endian data that xt::load_npy would misread") {
    // A header of 246 bytes (low byte 0xF6 >= 0x80) and big-endian floats, as another writer might make.
    std::string dict = "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }";
    dict.append(256 - 10 - dict.size() - 1, ' ');
    dict += '\n';
    std::string file = std::string("\x93NUMPY\x01\x00", 8);
    file += static_cast<char>(dict.size() & 0xff);
    file += static_cast<char>(dict.size() >> 8);
    file += dict;
    for (float v : {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f}) {
        const auto u = std::bit_cast<std::uint32_t>(v);
        for (int shift = 24; shift >= 0; shift -= 8) file += static_cast<char>((u >> shift) & 0xff);
    }
    const fs::path path = fresh_dir("npy_reader") / "long_header.npy";
    write_bytes(path, file);
    const Tensor<float> t = io::read_npy_f32(path);
    CHECK(t.shape() == Shape{2, 3});
    CHECK(t[0] == 1.5f);
    CHECK(t[2] == 3.25f);
    CHECK(t[4] == 1e-3f);
    CHECK(t[5] == -7.0f);
}

TEST_CASE("tuning mode: input.npy and manifest.json only, and batches without reference or mask") {
    Scene scene(50, 50, 1);
    PatchOptions o = options(10, PatchOptions::Sampling::random, 0.0);
    o.count = 12;
    const PatchSplits splits = cut_patches(scene.source(false, false), o);
    const fs::path out = fresh_dir("patches_tuning");
    // Over an earlier training dataset: its reference.npy and mask.npy must not survive.
    write_patches(out / "train", cut_patches(scene.source(), o).train);
    write_patch_splits(out, splits);
    CHECK_FALSE(fs::exists(out / "validation"));
    std::set<std::string> files;
    for (const auto& e : fs::directory_iterator(out / "train")) files.insert(e.path().filename().string());
    CHECK(files == std::set<std::string>{"input.npy", "manifest.json"});
    const nlohmann::json m = read_json(out / "train" / "manifest.json");
    CHECK(m["mode"] == "tuning");
    CHECK_FALSE(m["arrays"].contains("reference"));
    CHECK_FALSE(m["arrays"].contains("mask"));
    const PatchDataset ds = load_patches(out / "train");
    CHECK(ds.count() == 12);
    CHECK_FALSE(ds.has_reference());
    CHECK_FALSE(ds.has_mask());
    BatchLoader loader(ds, {.batch_size = 5});
    const Batch b = loader.batch(0, 2);
    CHECK(b.input.shape() == Shape{2, 10, 10, 1});
    CHECK(b.reference.view().empty());
    CHECK(b.mask.view().empty());
}

TEST_CASE("numpy demo: datasets left for tests/data/check_patches_numpy.py") {
    Scene scene(120, 90, 2);
    for (index_t c = 0; c < 90; ++c) scene.valid[static_cast<std::size_t>(60 * 90 + c)] = c % 7 ? 1 : 0;
    PatchOptions o = options(16, PatchOptions::Sampling::random, 0.2, 32);
    o.count = 40;
    o.seed = 2024;
    const fs::path out = fresh_dir("patches_numpy");
    write_patch_splits(out / "training", cut_patches(scene.source(), o));
    o.validation_fraction = 0;
    write_patch_splits(out / "tuning", cut_patches(scene.source(false, false), o));
    CHECK(fs::exists(out / "training" / "validation" / "mask.npy"));
    CHECK(fs::exists(out / "tuning" / "train" / "input.npy"));
}

// ---- errors ---------------------------------------------------------------------------------------

TEST_CASE("load_patches names the file for missing, truncated, mistyped and mismatched arrays") {
    Scene scene(40, 40, 2);
    const PatchSplits splits = cut_patches(scene.source(), options(10, PatchOptions::Sampling::grid, 0.0));
    const fs::path dir = fresh_dir("patches_errors");
    auto rewrite = [&] { write_patches(dir, splits.train); };
    auto load_error = [&] { return error_of([&] { load_patches(dir); }); };

    rewrite();
    REQUIRE_NOTHROW(load_patches(dir));

    SUBCASE("missing manifest") {
        fs::remove(dir / "manifest.json");
        const std::string msg = load_error();
        CAPTURE(msg);
        CHECK(msg.find("manifest.json' is missing") != std::string::npos);
        CHECK_THROWS_AS(load_patches(dir), io_error);
    }
    SUBCASE("missing input.npy / reference.npy") {
        for (const char* name : {"input.npy", "reference.npy", "mask.npy"}) {
            rewrite();
            fs::remove(dir / name);
            const std::string msg = load_error();
            CAPTURE(msg);
            CHECK(msg.find((dir / name).string() + "' is missing") != std::string::npos);
        }
    }
    SUBCASE("truncated npy") {
        const std::string bytes = read_bytes(dir / "input.npy");
        write_bytes(dir / "input.npy", bytes.substr(0, bytes.size() - 7));
        std::string msg = load_error();
        CAPTURE(msg);
        CHECK(msg.find("input.npy' is truncated") != std::string::npos);
        CHECK(msg.find("[16,10,10,2]") != std::string::npos);
        write_bytes(dir / "input.npy", bytes.substr(0, 60));  // inside the header
        msg = load_error();
        CHECK(msg.find("input.npy' is truncated") != std::string::npos);
        write_bytes(dir / "input.npy", "not numpy at all");
        CHECK(load_error().find("no \\x93NUMPY magic") != std::string::npos);
    }
    SUBCASE("shape mismatch between input and reference") {
        Tensor<float> wrong(Shape{16, 10, 10, 1});  // one band instead of two
        io::write_npy(dir / "reference.npy", wrong.view());
        const std::string msg = load_error();
        CAPTURE(msg);
        CHECK(msg.find("reference.npy' has shape [16,10,10,1], but input.npy and manifest.json say [16,10,10,2]") !=
              std::string::npos);
        Tensor<float> fewer(Shape{15, 10, 10, 2});
        io::write_npy(dir / "reference.npy", fewer.view());
        CHECK(load_error().find("has shape [15,10,10,2]") != std::string::npos);
    }
    SUBCASE("input disagrees with the manifest") {
        Tensor<float> wrong(Shape{16, 10, 10, 3});
        io::write_npy(dir / "input.npy", wrong.view());
        CHECK(load_error().find("input.npy' has shape [16,10,10,3], but manifest.json") != std::string::npos);
    }
    SUBCASE("wrong dtype") {
        std::vector<double> values(16 * 10 * 10 * 2, 0.5);
        const std::vector<std::size_t> shape{16, 10, 10, 2};
        write_bytes(dir / "input.npy", xt::dump_npy(xt::adapt(values.data(), values.size(), xt::no_ownership(), shape)));
        const std::string msg = load_error();
        CAPTURE(msg);
        CHECK(msg.find("input.npy' holds dtype '<f8', expected float32") != std::string::npos);
    }
    SUBCASE("a mask that is not 0/1, a NaN in the input") {
        Tensor<float> mask = splits.train.mask;
        mask[5] = 0.5f;
        io::write_npy(dir / "mask.npy", mask.view());
        CHECK(load_error().find("mask.npy' holds 0.5 at flat index 5") != std::string::npos);
        rewrite();
        Tensor<float> input = splits.train.input;
        input[123] = std::numeric_limits<float>::quiet_NaN();
        io::write_npy(dir / "input.npy", input.view());
        CHECK(load_error().find("input.npy' has a non-finite value") != std::string::npos);
    }
    SUBCASE("manifest of another format or version") {
        nlohmann::json m = read_json(dir / "manifest.json");
        m["version"] = 2;
        write_bytes(dir / "manifest.json", m.dump());
        CHECK(load_error().find("format version 2; this build reads version 1") != std::string::npos);
        m["version"] = 1;
        m["format"] = "something-else";
        write_bytes(dir / "manifest.json", m.dump());
        CHECK(load_error().find("has format 'something-else'") != std::string::npos);
        m["format"] = "despeck-patches";
        m["positions"].erase(0);
        write_bytes(dir / "manifest.json", m.dump());
        CHECK(load_error().find("lists 15 positions for a count of 16") != std::string::npos);
        write_bytes(dir / "manifest.json", "{ not json");
        CHECK(load_error().find("is not valid JSON") != std::string::npos);
    }
}

// ---- batches ------------------------------------------------------------------------------------

namespace {

// N patches of size S whose content reveals patch and orientation:
//   input[n, i, j, 0] = 100 i + j     input[n, i, j, 1] = n
//   reference = -input - 0.5          mask[n, i, j] = (S i + j) % 3 == 0
constexpr index_t S = 6;
float mask_value(index_t i, index_t j) { return (S * i + j) % 3 == 0 ? 1.0f : 0.0f; }

PatchDataset orientation_dataset(index_t n) {
    PatchDataset ds;
    ds.input = Tensor<float>(Shape{n, S, S, 2});
    ds.reference = Tensor<float>(Shape{n, S, S, 2});
    ds.mask = Tensor<float>(Shape{n, S, S, 1});
    for (index_t k = 0; k < n; ++k) {
        for (index_t i = 0; i < S; ++i)
            for (index_t j = 0; j < S; ++j) {
                ds.input.at(k, i, j, 0) = static_cast<float>(100 * i + j);
                ds.input.at(k, i, j, 1) = static_cast<float>(k);
                ds.reference.at(k, i, j, 0) = -static_cast<float>(100 * i + j) - 0.5f;
                ds.reference.at(k, i, j, 1) = -static_cast<float>(k) - 0.5f;
                ds.mask.at(k, i, j, 0) = mask_value(i, j);
            }
        ds.positions.push_back({k, 0});
    }
    return ds;
}

// The numpy operation that maps a patch to its transformed version, found from where each output
// pixel came from; "" if it is none of the 8 symmetries of the square.
std::string identify(const Tensor<float>& input, index_t k) {
    const std::array<std::pair<const char*, std::function<std::pair<index_t, index_t>(index_t, index_t)>>, 8> ops{{
        {"identity", [](index_t i, index_t j) { return std::pair{i, j}; }},
        {"flipud", [](index_t i, index_t j) { return std::pair{S - 1 - i, j}; }},
        {"fliplr", [](index_t i, index_t j) { return std::pair{i, S - 1 - j}; }},
        {"rot180", [](index_t i, index_t j) { return std::pair{S - 1 - i, S - 1 - j}; }},
        {"rot90", [](index_t i, index_t j) { return std::pair{j, S - 1 - i}; }},   // np.rot90(p, 1)
        {"rot270", [](index_t i, index_t j) { return std::pair{S - 1 - j, i}; }},  // np.rot90(p, 3)
        {"transpose", [](index_t i, index_t j) { return std::pair{j, i}; }},
        {"antitranspose", [](index_t i, index_t j) { return std::pair{S - 1 - j, S - 1 - i}; }},
    }};
    for (const auto& [name, src] : ops) {
        bool all = true;
        for (index_t i = 0; i < S && all; ++i)
            for (index_t j = 0; j < S && all; ++j) {
                const auto [a, b] = src(i, j);
                all = input.at(k, i, j, 0) == static_cast<float>(100 * a + b);
            }
        if (all) return name;
    }
    return "";
}

const char* name_of_code(std::uint8_t code) {
    static const char* names[8] = {"identity", "flipud",    "fliplr", "rot180",
                                   "transpose", "rot90", "rot270", "antitranspose"};
    return names[code];
}

}  // namespace

TEST_CASE("batch loader: every patch exactly once per epoch, partial last batch kept or dropped") {
    const PatchDataset ds = orientation_dataset(37);
    for (bool drop_last : {false, true}) {
        BatchLoader loader(ds, {.batch_size = 16, .drop_last = drop_last, .seed = 9});
        CAPTURE(drop_last);
        CHECK(loader.batches_per_epoch() == (drop_last ? 2 : 3));
        for (index_t epoch = 0; epoch < 3; ++epoch) {
            std::vector<int> seen(37, 0);
            index_t total = 0;
            for (index_t b = 0; b < loader.batches_per_epoch(); ++b) {
                const Batch batch = loader.batch(epoch, b);
                CHECK(batch.input.dim(0) == (b == 2 ? 5 : 16));
                CHECK(batch.mask.shape() == Shape{batch.size(), S, S, 1});
                for (index_t k = 0; k < batch.size(); ++k) {
                    // The patch's identity read from its content, not only from indices.
                    const auto id = static_cast<index_t>(batch.input.at(k, 2, 3, 1));
                    CHECK(id == batch.indices[static_cast<std::size_t>(k)]);
                    ++seen[static_cast<std::size_t>(id)];
                    ++total;
                }
            }
            CHECK(total == (drop_last ? 32 : 37));
            CHECK(std::count(seen.begin(), seen.end(), 0) == (drop_last ? 5 : 0));
            CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c <= 1; }));
        }
        CHECK(loader.order(0) != loader.order(1));
    }
}

TEST_CASE("batch loader: input, reference and mask of a patch get the same flip or rotation") {
    const PatchDataset ds = orientation_dataset(40);
    struct Case {
        bool flips, rot90;
        std::set<std::string> expected;
    };
    const std::vector<Case> cases{
        {false, false, {"identity"}},
        {true, false, {"identity", "flipud", "fliplr", "rot180"}},
        {false, true, {"identity", "rot90", "rot180", "rot270"}},
        {true, true, {"identity", "flipud", "fliplr", "rot180", "rot90", "rot270", "transpose", "antitranspose"}},
    };
    for (const Case& c : cases) {
        CAPTURE(c.flips);
        CAPTURE(c.rot90);
        BatchLoader loader(ds, {.batch_size = 8, .flips = c.flips, .rot90 = c.rot90, .seed = 1});
        std::set<std::string> seen;
        for (index_t epoch = 0; epoch < 3; ++epoch)
            for (index_t b = 0; b < loader.batches_per_epoch(); ++b) {
                const Batch batch = loader.batch(epoch, b);
                for (index_t k = 0; k < batch.size(); ++k) {
                    const std::string op = identify(batch.input, k);
                    REQUIRE(!op.empty());
                    CHECK(op == name_of_code(batch.transforms[static_cast<std::size_t>(k)]));
                    seen.insert(op);
                    // Reference and mask moved exactly like the input.
                    for (index_t i = 0; i < S; ++i)
                        for (index_t j = 0; j < S; ++j) {
                            const float v = batch.input.at(k, i, j, 0);
                            const auto a = static_cast<index_t>(v) / 100, bcol = static_cast<index_t>(v) % 100;
                            CHECK(batch.reference.at(k, i, j, 0) == -v - 0.5f);
                            CHECK(batch.reference.at(k, i, j, 1) == -batch.input.at(k, i, j, 1) - 0.5f);
                            CHECK(batch.mask.at(k, i, j, 0) == mask_value(a, bcol));
                        }
                }
            }
        CHECK(seen == c.expected);
    }
}

TEST_CASE("batch loader: the same seed and epoch give the same batches, so a run can resume") {
    const PatchDataset ds = orientation_dataset(40);
    const BatchOptions opt{.batch_size = 16, .flips = true, .rot90 = true, .seed = 123};
    BatchLoader a(ds, opt);
    std::vector<Batch> run;
    for (int i = 0; i < 9; ++i) run.push_back(a.next());  // 3 epochs of 3 batches
    CHECK(run[3].epoch == 1);
    CHECK(run[3].index == 0);
    CHECK(run[8].epoch == 2);

    BatchLoader b(ds, opt);  // a fresh process resuming after batch (1, 1)
    b.seek(1, 2);
    for (int i = 5; i < 9; ++i) {
        const Batch resumed = b.next();
        CHECK(resumed.epoch == run[static_cast<std::size_t>(i)].epoch);
        CHECK(resumed.index == run[static_cast<std::size_t>(i)].index);
        CHECK(resumed.indices == run[static_cast<std::size_t>(i)].indices);
        CHECK(resumed.transforms == run[static_cast<std::size_t>(i)].transforms);
        CHECK(same_bits(resumed.input, run[static_cast<std::size_t>(i)].input));
        CHECK(same_bits(resumed.mask, run[static_cast<std::size_t>(i)].mask));
    }
    // Random access agrees with the sequence, and another seed shuffles differently.
    CHECK(same_bits(b.batch(0, 1).input, run[1].input));
    BatchOptions other = opt;
    other.seed = 124;
    BatchLoader c(ds, other);
    CHECK(c.order(0) != a.order(0));
    CHECK(BatchOptions::for_dataset(ds).batch_size == 16);
    CHECK_THROWS_AS(a.batch(0, 3), value_error);
    CHECK_THROWS_AS(BatchLoader(ds, {.batch_size = 64, .drop_last = true}), value_error);
}

TEST_CASE("batches feed DeSpeckNet::train_step, with a reference and in tuning mode") {
    Scene scene(48, 48, 2);
    Rng rng(4);
    for (index_t i = 0; i < scene.input.size(); ++i) {
        scene.input[i] = static_cast<float>(rng.normal() - 10.0);
        scene.reference[i] = static_cast<float>(0.3 * rng.normal() - 10.0);
    }
    PatchOptions o = options(8, PatchOptions::Sampling::random, 0.0);
    o.count = 10;
    DeSpeckNetConfig cfg;
    cfg.depth = 2;
    cfg.filters = 4;
    cfg.channels = 2;
    for (bool tuning : {false, true}) {
        const PatchSplits splits = cut_patches(scene.source(!tuning, !tuning), o);
        BatchLoader loader(splits.train, BatchOptions::for_dataset(splits.train, 1));
        const Batch batch = loader.next();
        CHECK(batch.input.shape() == Shape{10, 8, 8, 2});
        DeSpeckNet<float> net(cfg, 1);
        Adam<float> adam;
        const auto losses = net.train_step(batch.input, batch.reference, batch.mask, adam, 1e-3);
        CAPTURE(tuning);
        CHECK(std::isfinite(losses.total));
        CHECK(losses.reconstruction > 0);
        CHECK((losses.clean == 0) == tuning);
    }
}

TEST_CASE("patch_source and valid_pixels over in-memory rasters") {
    raster::RasterInfo info;
    info.rows = 30;
    info.cols = 20;
    info.bands = 2;
    info.units = raster::Units::db;
    info.nodata = -9999.0;
    info.band_names = {"VV", "VH"};
    info.source = "s1_db.tif";
    Tensor<float> pixels(Shape{1, 30, 20, 2}, -12.0f);
    pixels.at(0, 4, 5, 1) = -9999.0f;                                  // declared no-data in one band
    pixels.at(0, 7, 8, 0) = std::numeric_limits<float>::quiet_NaN();  // not finite
    const raster::MemoryRaster input(info, pixels);
    const std::vector<std::uint8_t> valid = valid_pixels(input);
    CHECK(std::count(valid.begin(), valid.end(), std::uint8_t(0)) == 2);
    CHECK(valid[4 * 20 + 5] == 0);
    CHECK(valid[7 * 20 + 8] == 0);

    PatchSource src = patch_source(input);
    src.valid = valid;
    CHECK(src.band_names == std::vector<std::string>{"VV", "VH"});
    CHECK(src.input_name == "s1_db.tif");
    PatchOptions o = options(5, PatchOptions::Sampling::grid, 0.0);
    o.stride = 1;
    const PatchSample s = sample_patches(src, o);
    for (const PatchPosition& p : s.train) {
        CHECK_FALSE((p.row <= 4 && 4 < p.row + 5 && p.col <= 5 && 5 < p.col + 5));
        CHECK_FALSE((p.row <= 7 && 7 < p.row + 5 && p.col <= 8 && 8 < p.col + 5));
    }

    raster::RasterInfo linear = info;
    linear.units = raster::Units::linear_intensity;
    const raster::MemoryRaster not_db(linear, pixels);
    CHECK(error_of([&] { patch_source(not_db); }).find("must be in dB") != std::string::npos);
    CHECK_THROWS_AS(patch_source(input, &not_db), value_error);
}
