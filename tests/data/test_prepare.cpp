// From the GeoTIFF stack fixtures to a patch dataset (training mode) and from one scene to a
// tuning dataset; the temporal median and mask checked against a brute-force computation here,
// and (tests/data/check_prepared_numpy.py, run by ctest after this) against NumPy on pixels that
// GDAL decodes, which shares no code with despeck.
#include <doctest/doctest.h>

#include "support/files.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "despeck/data/prepare.hpp"

using namespace despeck;
namespace fs = std::filesystem;

namespace {

fs::path fixture(const std::string& name) { return despeck::testing::geotiff_fixture(name); }

const std::vector<std::string> stack_names = {
    "s1_stack_d1_20240105_strip_raw.tif",          "s1_stack_d2_20240117_tile256_deflate.tif",
    "s1_stack_d3_20240129_tile256_lzw_pred3.tif",  "s1_stack_d4_20240210_bandinterleave_deflate.tif",
    "s1_stack_d5_20240222_bigtiff.tif",            "s1_stack_d6_20240305_dB.tif",
    "s1_stack_d7_20240317_bigendian_lzw.tif",      "s1_stack_d8_20240329_cog.tif"};

}  // namespace

TEST_CASE("prepare_training: the 8-date GeoTIFF stack becomes a reference, a mask and patches") {
    std::vector<fs::path> stack;
    for (const auto& n : stack_names) stack.push_back(fixture(n));
    // Written where ctest's NumPy check (test_prepare_numpy) looks for it.
    const fs::path out = fs::path(DESPECK_TEST_TMP) / "prepare_s1";
    fs::remove_all(out);
    data::PrepareOptions opt;
    opt.patches.count = 200;
    opt.patches.seed = 3;
    opt.temporal.block_rows = 100;
    const data::PrepareReport report = data::prepare_training(stack[0], stack, out, opt);
    CHECK(report.dates == 8);
    CHECK(report.train_patches + report.validation_patches == 200);
    CHECK(report.validation_patches > 0);

    // Brute force: per pixel, the dB values of the dates where both bands are valid.
    std::vector<raster::MemoryRaster> scenes;
    for (const auto& p : stack) scenes.push_back(io::GeoTiffReader(p).read_all());
    io::GeoTiffReader median_file(report.median_path), mask_file(report.mask_path);
    const Tensor<float> median = median_file.read_rows(0, 384), mask = mask_file.read_rows(0, 384);
    CHECK(median_file.info().geo == scenes[0].info().geo);
    CHECK(median_file.info().units == raster::Units::db);
    double max_err = 0;
    index_t stable = 0, mismatched_mask = 0, mismatched_empty = 0;
    for (index_t p = 0; p < 384 * 512; ++p) {
        std::vector<double> v[2];
        for (const auto& s : scenes) {
            const float a = s.pixels()[2 * p], b = s.pixels()[2 * p + 1];
            const auto& info = s.info();
            if (!raster::is_valid_value(a, info.units, info.nodata) || !raster::is_valid_value(b, info.units, info.nodata)) continue;
            const bool db = info.units == raster::Units::db;
            v[0].push_back(db ? a : 10 * std::log10(double(a)));
            v[1].push_back(db ? b : 10 * std::log10(double(b)));
        }
        bool is_stable = v[0].size() >= 2;
        for (int b = 0; b < 2; ++b) {
            auto& x = v[b];
            // No valid date: the median is no-data (NaN); otherwise it must be finite.
            mismatched_empty += x.empty() == std::isfinite(median[2 * p + b]);
            if (x.empty()) continue;
            std::sort(x.begin(), x.end());
            const std::size_t n = x.size();
            const double med = n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
            double mean = 0, var = 0;
            for (double e : x) mean += e;
            mean /= double(n);
            for (double e : x) var += (e - mean) * (e - mean);
            const double sd = std::sqrt(var / double(n));
            if (sd > 2.0) is_stable = false;
            max_err = std::max(max_err, std::abs(med - double(median[2 * p + b])));
        }
        stable += is_stable;
        mismatched_mask += (mask[p] == 1.0f) != is_stable;
    }
    CHECK(max_err < 1e-4);
    CHECK(mismatched_empty == 0);
    CHECK(mismatched_mask == 0);
    CHECK(stable == report.stable_pixels);
    MESSAGE("stable pixels: " << stable << " of " << 384 * 512 << "; median max error " << max_err << " dB");

    // The dataset: reference patches are the median at the recorded positions.
    const data::PatchDataset train = data::load_patches(out / "train");
    CHECK(train.count() == report.train_patches);
    CHECK(train.input.shape() == Shape{report.train_patches, 40, 40, 2});
    CHECK(train.has_reference());
    CHECK(train.has_mask());
    const auto& pos = train.positions;
    REQUIRE(static_cast<index_t>(pos.size()) == train.count());
    double patch_err = 0;
    index_t mask_diff = 0;
    for (index_t k = 0; k < train.count(); ++k)
        for (index_t r = 0; r < 40; ++r)
            for (index_t c = 0; c < 40; ++c) {
                const index_t p = (pos[static_cast<std::size_t>(k)].row + r) * 512 + pos[static_cast<std::size_t>(k)].col + c;
                for (index_t b = 0; b < 2; ++b)
                    patch_err = std::max(patch_err, double(std::abs(train.reference.at(k, r, c, b) - median[2 * p + b])));
                mask_diff += train.mask.at(k, r, c, 0) != mask[p];
            }
    CHECK(patch_err == 0.0);
    CHECK(mask_diff == 0);
    CHECK(std::isfinite(train.input.flat().sum()));
}

TEST_CASE("prepare_training / prepare_tuning: errors and tuning mode") {
    const fs::path out = fs::path(DESPECK_TEST_TMP) / "prepare_errors";
    CHECK_THROWS_AS(data::prepare_training(fixture("s1_stack_d1_20240105_strip_raw.tif"),
                                           {fixture("s1_stack_d1_20240105_strip_raw.tif")}, out),
                    value_error);
    // A scene of another size in the stack: the error names it.
    CHECK_THROWS_WITH_AS(data::prepare_training(fixture("s1_stack_d1_20240105_strip_raw.tif"),
                                                {fixture("s1_stack_d1_20240105_strip_raw.tif"), fixture("hostile/cint16_2band.tif")},
                                                out),
                         doctest::Contains("cint16_2band.tif"), value_error);

    data::PrepareOptions opt;
    opt.patches.count = 30;
    const data::PrepareReport r = data::prepare_tuning(fixture("s1_stack_d6_20240305_dB.tif"), out / "tuning", opt);
    CHECK(r.train_patches + r.validation_patches == 30);
    const data::PatchDataset ds = data::load_patches(out / "tuning" / "train");
    CHECK_FALSE(ds.has_reference());
    CHECK_FALSE(ds.has_mask());
    CHECK(ds.input.flat().maxCoeff() < 20.0f);  // dB values, no -9999 no-data leaked in
    CHECK(ds.input.flat().minCoeff() > -60.0f);
}
