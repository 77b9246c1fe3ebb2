// despeck/data/prepare.hpp — from GeoTIFF scenes to a patch dataset, the way the TensorFlow
// deSpeckNet prepared its data in Earth Engine, on local files.
//
// Training mode (prepare_training):
//   stack of N co-registered scenes ──(block by block)──> temporal median (dB), std-dev (dB) and
//   stable mask, written as GeoTIFFs with the stack's georeferencing   (out/reference_median_db.tif,
//   out/reference_std_db.tif, out/stable_mask.tif)
//   input scene (one acquisition) ──> dB, no-data filled ──> 40 x 40 patches of input, reference
//   and mask, split by region ──> out/train, out/validation (input.npy, reference.npy, mask.npy,
//   manifest.json)
// Tuning mode (prepare_tuning): one scene ──> dB ──> patches of input only (no reference, no mask).
//
// Memory: the temporal reduction streams (block_rows rows of every scene at a time); patch
// cutting holds the input scene, the reference and the masks in memory: at the peak, while the
// input is converted, the raw scene, its dB copy and the median (about 12 bytes per pixel per
// band) plus two byte-per-pixel masks.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "despeck/data/patches.hpp"
#include "despeck/data/temporal.hpp"
#include "despeck/data/units.hpp"
#include "despeck/io/geotiff.hpp"

namespace despeck::data {

struct PrepareOptions {
    TemporalOptions temporal;
    PatchOptions patches;
    raster::Units units = raster::Units::unknown;  // of the input files; unknown: from their metadata
};

struct PrepareReport {
    index_t rows = 0, cols = 0, bands = 0, dates = 0;
    index_t stable_pixels = 0;      // mask 1 in the temporal reference
    index_t valid_input_pixels = 0;
    index_t train_patches = 0, validation_patches = 0;
    std::filesystem::path median_path, std_path, mask_path;
};

namespace detail_prepare {

inline void require_units(const raster::RasterInfo& info) {
    if (info.units == raster::Units::unknown)
        detail::fail<value_error>("'", info.source, "': the units are unknown (no UNITS metadata); say whether the file "
                                  "holds linear intensity, amplitude or dB");
}

// Input scene in dB with its no-data filled, and its validity.
inline raster::MemoryRaster input_db(io::GeoTiffReader& reader, std::vector<std::uint8_t>& valid) {
    raster::MemoryRaster scene = reader.read_all();
    require_units(scene.info());
    DbPixels db = to_db_with_nodata(scene.pixels(), scene.info().units, scene.info().nodata, NodataFill::band_mean(),
                                    scene.info().source);
    valid = std::move(db.mask);
    raster::RasterInfo info = scene.info();
    info.units = raster::Units::db;
    info.nodata.reset();  // filled; `valid` says which pixels are real
    return raster::MemoryRaster(std::move(info), std::move(db.db));
}

}  // namespace detail_prepare

inline PrepareReport prepare_training(const std::filesystem::path& input_path, const std::vector<std::filesystem::path>& stack_paths,
                                      const std::filesystem::path& out_dir, const PrepareOptions& options = {}) {
    if (stack_paths.size() < 2)
        detail::fail<value_error>("prepare_training: the multi-temporal stack needs at least 2 scenes, got ", stack_paths.size());
    std::filesystem::create_directories(out_dir);
    std::vector<std::unique_ptr<io::GeoTiffReader>> readers;
    std::vector<raster::RasterSource*> stack;
    for (const auto& p : stack_paths) {
        readers.push_back(std::make_unique<io::GeoTiffReader>(p, options.units));
        detail_prepare::require_units(readers.back()->info());
        stack.push_back(readers.back().get());
    }
    io::GeoTiffReader input(input_path, options.units);
    const raster::RasterInfo& first = stack[0]->info();
    if (input.info().rows != first.rows || input.info().cols != first.cols || input.info().bands != first.bands)
        detail::fail<value_error>("prepare_training: the input '", input_path.string(), "' is ", input.info().cols, " x ",
                                  input.info().rows, " x ", input.info().bands, ", the stack ('", first.source, "') ",
                                  first.cols, " x ", first.rows, " x ", first.bands);
    if (!(input.info().geo == first.geo))
        detail::fail<value_error>("prepare_training: the input '", input_path.string(),
                                  "' is not georeferenced like the stack ('", first.source, "')");

    PrepareReport report;
    report.rows = first.rows;
    report.cols = first.cols;
    report.bands = first.bands;
    report.dates = static_cast<index_t>(stack.size());
    report.median_path = out_dir / "reference_median_db.tif";
    report.std_path = out_dir / "reference_std_db.tif";
    report.mask_path = out_dir / "stable_mask.tif";

    // The reference, streamed to GeoTIFFs and kept in memory for the patches.
    raster::RasterInfo median_info = temporal_output_info(stack, options.temporal, "median");
    raster::RasterInfo std_info = temporal_output_info(stack, options.temporal, "std");
    raster::RasterInfo mask_info = median_info;
    mask_info.bands = 1;
    mask_info.units = raster::Units::unknown;
    mask_info.nodata.reset();
    mask_info.band_names = {"stable"};
    io::GeoTiffWriter median_out(report.median_path, median_info), std_out(report.std_path, std_info),
        mask_out(report.mask_path, mask_info);
    Tensor<float> median(Shape{1, first.rows, first.cols, first.bands});
    std::vector<std::uint8_t> stable(static_cast<std::size_t>(first.rows * first.cols));
    temporal_reference_blocks(
        stack,
        [&](index_t row0, const Tensor<float>& median_block, const Tensor<float>& std_block,
            const std::vector<std::uint8_t>& mask_block) {
            median_out.write_rows(median_block);
            std_out.write_rows(std_block);
            Tensor<float> m(Shape{1, median_block.dim(1), first.cols, 1});
            for (std::size_t i = 0; i < mask_block.size(); ++i) m[static_cast<index_t>(i)] = mask_block[i] ? 1.0f : 0.0f;
            mask_out.write_rows(m);
            std::copy(median_block.data(), median_block.data() + median_block.size(),
                      median.data() + row0 * first.cols * first.bands);
            std::copy(mask_block.begin(), mask_block.end(), stable.begin() + row0 * first.cols);
        },
        options.temporal);
    median_out.close();
    std_out.close();
    mask_out.close();
    for (auto s : stable) report.stable_pixels += s;

    std::vector<std::uint8_t> valid;
    raster::MemoryRaster in_db = detail_prepare::input_db(input, valid);
    for (auto v : valid) report.valid_input_pixels += v;
    raster::RasterInfo ref_info = median_info;
    ref_info.source = report.median_path.string();
    raster::MemoryRaster reference(ref_info, std::move(median));
    // A pixel is usable when the input is valid and the reference exists there (a pixel with no
    // valid date has a NaN median); unstable pixels stay in the patches with mask 0, as in the
    // original, so the network still sees them but the losses ignore them.
    for (std::size_t i = 0; i < valid.size(); ++i)
        for (index_t b = 0; b < first.bands; ++b)
            if (!std::isfinite(reference.pixels()[static_cast<index_t>(i) * first.bands + b])) valid[i] = 0;
    PatchSource src = patch_source(in_db, &reference);
    src.mask = stable;
    src.valid = valid;
    src.mask_name = report.mask_path.string();
    const PatchSplits splits = cut_patches(src, options.patches);
    write_patch_splits(out_dir, splits);
    report.train_patches = splits.train.count();
    report.validation_patches = splits.has_validation() ? splits.validation.count() : 0;
    return report;
}

// Tuning mode: patches of one scene, no reference and no mask.
inline PrepareReport prepare_tuning(const std::filesystem::path& input_path, const std::filesystem::path& out_dir,
                                    const PrepareOptions& options = {}) {
    std::filesystem::create_directories(out_dir);
    io::GeoTiffReader input(input_path, options.units);
    PrepareReport report;
    report.rows = input.info().rows;
    report.cols = input.info().cols;
    report.bands = input.info().bands;
    report.dates = 1;
    std::vector<std::uint8_t> valid;
    raster::MemoryRaster in_db = detail_prepare::input_db(input, valid);
    for (auto v : valid) report.valid_input_pixels += v;
    PatchSource src = patch_source(in_db);
    src.valid = valid;
    const PatchSplits splits = cut_patches(src, options.patches);
    write_patch_splits(out_dir, splits);
    report.train_patches = splits.train.count();
    report.validation_patches = splits.has_validation() ? splits.validation.count() : 0;
    return report;
}

}  // namespace despeck::data
