// despeck/data/temporal.hpp — the multi-temporal reference: per-pixel median and spread in dB over
// a stack of co-registered acquisitions, and the mask of pixels stable enough to train on.
//
//   stack      N RasterSources of the same rows x cols x bands and the same GeoReference; each
//              says its own units (linear_intensity, amplitude or db) and no-data in RasterInfo
//   median_db  [1, rows, cols, bands] dB: per pixel and band, the median over the dates on which
//              the pixel is valid; an even count takes the mean of the two middle values (as
//              numpy.median does)
//   std_db     [1, rows, cols, bands] dB: the population standard deviation (ddof = 0, as
//              numpy.std) over the same dates
//   mask       [rows * cols]: 1 where the pixel is valid on at least min_valid_dates dates and
//              std_db <= max_std_db in every band; 0 elsewhere
// A pixel is valid on a date when all of its bands are (raster::is_valid_value with that source's
// units and no-data), as in data::valid_mask: the network sees the bands of a pixel together, and
// one date then counts for all bands alike. min_valid_dates defaults to 2 because one date has a
// spread of 0 by definition, which says nothing about whether the pixel is stable. A pixel with
// no valid date gets TemporalOptions::empty_value (NaN by default, also set as the outputs'
// RasterInfo.nodata) in median and std, and mask 0.
//
// The stack is read block_rows rows at a time from every source (read_rows), so the working memory
// is O(block_rows * cols * bands * dates) floats, never the scene: temporal_reference_blocks hands
// each block of results to a sink (e.g. a GeoTIFF writer) and keeps nothing; temporal_reference
// collects the blocks into whole rasters. The result does not depend on block_rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "despeck/data/units.hpp"
#include "despeck/error.hpp"
#include "despeck/raster/raster.hpp"
#include "despeck/tensor.hpp"

namespace despeck::data {

struct TemporalOptions {
    double max_std_db = 2.0;       // the largest temporal std (dB), in every band, of a stable pixel
    index_t block_rows = 256;      // rows read from every source at a time
    index_t min_valid_dates = 2;   // fewer valid dates than this: mask 0
    float empty_value = std::numeric_limits<float>::quiet_NaN();  // median/std with no valid date
};

// Called once per block, in row order: rows [row0, row0 + median_block.dim(1)).
//   median_block, std_block [1, count, cols, bands] dB; mask_block [count * cols]
using TemporalSink = std::function<void(index_t row0, const Tensor<float>& median_block, const Tensor<float>& std_block,
                                        const std::vector<std::uint8_t>& mask_block)>;

struct TemporalResult {
    raster::MemoryRaster median_db;     // [1, rows, cols, bands] dB
    raster::MemoryRaster std_db;        // [1, rows, cols, bands] dB
    std::vector<std::uint8_t> mask;     // [rows * cols]
    index_t dates = 0;

    // The mask as a one-band raster (1.0 / 0.0, no units, no no-data) with the stack's georeference.
    raster::MemoryRaster mask_raster() const {
        raster::RasterInfo info = median_db.info();
        info.bands = 1;
        info.units = raster::Units::unknown;
        info.nodata.reset();
        info.band_names = {"stable"};
        info.source = "temporal mask of " + std::to_string(dates) + " dates";
        Tensor<float> pixels(Shape{1, info.rows, info.cols, 1});
        for (std::size_t i = 0; i < mask.size(); ++i) pixels[static_cast<index_t>(i)] = mask[i] ? 1.0f : 0.0f;
        return raster::MemoryRaster(std::move(info), std::move(pixels));
    }
};

namespace detail_temporal {

inline std::string size_of(const raster::RasterInfo& i) {
    return std::to_string(i.rows) + " rows x " + std::to_string(i.cols) + " cols x " + std::to_string(i.bands) + " bands";
}

inline std::string geo_difference(const raster::GeoReference& a, const raster::GeoReference& b) {
    std::string d;
    auto add = [&d](bool differs, const char* name) {
        if (differs) d += (d.empty() ? "" : ", ") + std::string(name);
    };
    add(a.pixel_scale != b.pixel_scale, "pixel scale");
    add(a.tiepoints != b.tiepoints, "tie points");
    add(a.transformation != b.transformation, "transformation");
    add(a.geo_keys != b.geo_keys, "geo keys (CRS)");
    add(a.geo_doubles != b.geo_doubles, "geo double params");
    add(a.geo_ascii != b.geo_ascii, "geo ASCII params");
    return d;
}

// Throws unless the stack is non-empty, every source is present with known units, and all share
// the first one's size and georeference; checks the options too.
inline void check_stack(const std::vector<raster::RasterSource*>& stack, const TemporalOptions& o) {
    if (stack.empty()) detail::fail<value_error>("temporal_reference: the stack is empty (no dates)");
    if (o.block_rows <= 0) detail::fail<value_error>("temporal_reference: block_rows must be positive, got ", o.block_rows);
    if (!(o.max_std_db >= 0.0)) detail::fail<value_error>("temporal_reference: max_std_db must be >= 0, got ", o.max_std_db);
    if (o.min_valid_dates < 1) detail::fail<value_error>("temporal_reference: min_valid_dates must be >= 1, got ", o.min_valid_dates);
    if (o.min_valid_dates > static_cast<index_t>(stack.size()))
        detail::fail<value_error>("temporal_reference: min_valid_dates ", o.min_valid_dates, " exceeds the ", stack.size(),
                                  " dates of the stack (the mask would be empty)");
    for (std::size_t k = 0; k < stack.size(); ++k)
        if (!stack[k]) detail::fail<value_error>("temporal_reference: source ", k, " of the stack is null");
    const raster::RasterInfo& first = stack[0]->info();
    for (std::size_t k = 0; k < stack.size(); ++k) {
        const raster::RasterInfo& info = stack[k]->info();
        if (info.units == raster::Units::unknown)
            detail::fail<value_error>("temporal_reference: ", info.source, " (date ", k,
                                      ") has unknown units; need linear_intensity, amplitude or db to compute dB");
        if (info.rows <= 0 || info.cols <= 0 || info.bands <= 0)
            detail::fail<value_error>("temporal_reference: ", info.source, " (date ", k, ") is empty: ", size_of(info));
        if (k == 0) continue;
        if (info.rows != first.rows || info.cols != first.cols || info.bands != first.bands)
            detail::fail<value_error>("temporal_reference: ", info.source, " (date ", k, ") is ", size_of(info), " but ",
                                      first.source, " (date 0) is ", size_of(first));
        if (!(info.geo == first.geo))
            detail::fail<value_error>("temporal_reference: ", info.source, " (date ", k, ") is not on the grid of ", first.source,
                                      " (date 0): their georeferences differ in ", geo_difference(info.geo, first.geo));
    }
}

// Rows [row0, row0 + count) of one source in dB; every band of a pixel that is invalid in any band
// is NaN (valid values always have a finite dB value, so NaN marks invalid).
inline Tensor<float> read_db_block(raster::RasterSource& src, std::size_t date, index_t row0, index_t count) {
    const raster::RasterInfo& info = src.info();
    Tensor<float> block = src.read_rows(row0, count);
    const Shape expected{1, count, info.cols, info.bands};
    if (block.shape() != expected)
        detail::fail<io_error>("temporal_reference: ", info.source, " (date ", date, ") returned ", block.shape(), " for rows [",
                               row0, ", ", row0 + count, "), expected ", expected);
    const index_t bands = info.bands, pixels = count * info.cols;
    float* p = block.data();
    constexpr float nan = std::numeric_limits<float>::quiet_NaN();
    for (index_t i = 0; i < pixels; ++i) {
        float* px = p + i * bands;
        bool ok = true;
        for (index_t b = 0; b < bands && ok; ++b) ok = raster::is_valid_value(px[b], info.units, info.nodata);
        for (index_t b = 0; b < bands; ++b) px[b] = ok ? convert_value(px[b], info.units, raster::Units::db) : nan;
    }
    return block;
}

// Median (mean of the two middle values for an even count) of v[0..n), n >= 1; reorders v.
inline double median_of(double* v, std::size_t n) {
    const std::size_t mid = n / 2;
    std::nth_element(v, v + mid, v + n);
    const double upper = v[mid];
    if (n % 2 == 1) return upper;
    const double lower = *std::max_element(v, v + mid);
    return 0.5 * (lower + upper);
}

}  // namespace detail_temporal

// The RasterInfo of a median or std output (what = "median" or "std"): the first source's size,
// georeference and band names, in dB, with empty_value as no-data. For opening an output file
// before streaming blocks into it.
inline raster::RasterInfo temporal_output_info(const std::vector<raster::RasterSource*>& stack, const TemporalOptions& options,
                                               const std::string& what) {
    detail_temporal::check_stack(stack, options);
    raster::RasterInfo info = stack[0]->info();
    info.units = raster::Units::db;
    info.nodata = static_cast<double>(options.empty_value);
    info.gdal_metadata.clear();  // the source's metadata (scaling, units) does not describe these values
    info.source = "temporal " + what + " (dB) of " + std::to_string(stack.size()) + " dates from " + stack[0]->info().source;
    return info;
}

// Streams the temporal reference block by block into `sink`; see the top of this file.
inline void temporal_reference_blocks(const std::vector<raster::RasterSource*>& stack, const TemporalSink& sink,
                                      const TemporalOptions& options = {}) {
    detail_temporal::check_stack(stack, options);
    const raster::RasterInfo& first = stack[0]->info();
    const index_t rows = first.rows, cols = first.cols, bands = first.bands;
    const std::size_t dates = stack.size();
    std::vector<Tensor<float>> db(dates);
    for (index_t row0 = 0; row0 < rows; row0 += options.block_rows) {
        const index_t count = std::min(options.block_rows, rows - row0), pixels = count * cols;
        for (std::size_t d = 0; d < dates; ++d) {
            db[d] = Tensor<float>();  // release the previous block first: at most one block per date
            db[d] = detail_temporal::read_db_block(*stack[d], d, row0, count);
        }
        Tensor<float> median = Tensor<float>::uninitialized(Shape{1, count, cols, bands});
        Tensor<float> spread = Tensor<float>::uninitialized(Shape{1, count, cols, bands});
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(pixels), 0);

        // Pixels are independent and each writes only its own outputs: no atomics, same result
        // with any number of threads. Nothing in the loop throws.
#if defined(_OPENMP)
#pragma omp parallel if (pixels * static_cast<index_t>(dates) > 65536)
#endif
        {
            std::vector<double> values(dates);
            std::vector<std::size_t> valid_dates(dates);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
            for (index_t i = 0; i < pixels; ++i) {
                std::size_t n = 0;
                for (std::size_t d = 0; d < dates; ++d)
                    if (!std::isnan(db[d][i * bands])) valid_dates[n++] = d;
                bool stable = n > 0 && static_cast<index_t>(n) >= options.min_valid_dates;
                for (index_t b = 0; b < bands; ++b) {
                    const index_t e = i * bands + b;
                    if (n == 0) {
                        median[e] = spread[e] = options.empty_value;
                        continue;
                    }
                    double sum = 0;
                    for (std::size_t k = 0; k < n; ++k) {
                        values[k] = static_cast<double>(db[valid_dates[k]][e]);
                        sum += values[k];
                    }
                    const double mean = sum / static_cast<double>(n);
                    double ss = 0;
                    for (std::size_t k = 0; k < n; ++k) ss += (values[k] - mean) * (values[k] - mean);
                    const double sd = std::sqrt(ss / static_cast<double>(n));
                    spread[e] = static_cast<float>(sd);
                    median[e] = static_cast<float>(detail_temporal::median_of(values.data(), n));
                    stable = stable && sd <= options.max_std_db;
                }
                mask[static_cast<std::size_t>(i)] = stable ? 1 : 0;
            }
        }
        sink(row0, median, spread, mask);
    }
}

// The whole temporal reference in memory (built on temporal_reference_blocks).
inline TemporalResult temporal_reference(const std::vector<raster::RasterSource*>& stack, const TemporalOptions& options = {}) {
    TemporalResult result;
    raster::RasterInfo median_info = temporal_output_info(stack, options, "median");
    raster::RasterInfo std_info = temporal_output_info(stack, options, "std");
    const index_t rows = median_info.rows, cols = median_info.cols, bands = median_info.bands;
    Tensor<float> median = Tensor<float>::uninitialized(Shape{1, rows, cols, bands});
    Tensor<float> spread = Tensor<float>::uninitialized(Shape{1, rows, cols, bands});
    result.mask.assign(static_cast<std::size_t>(rows * cols), 0);
    temporal_reference_blocks(
        stack,
        [&](index_t row0, const Tensor<float>& m, const Tensor<float>& s, const std::vector<std::uint8_t>& k) {
            const index_t offset = row0 * cols * bands;
            std::copy(m.data(), m.data() + m.size(), median.data() + offset);
            std::copy(s.data(), s.data() + s.size(), spread.data() + offset);
            std::copy(k.begin(), k.end(), result.mask.begin() + row0 * cols);
        },
        options);
    result.median_db = raster::MemoryRaster(std::move(median_info), std::move(median));
    result.std_db = raster::MemoryRaster(std::move(std_info), std::move(spread));
    result.dates = static_cast<index_t>(stack.size());
    return result;
}

}  // namespace despeck::data
