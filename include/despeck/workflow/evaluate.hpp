// despeck/workflow/evaluate.hpp — quality figures of a despeckled scene (`despeck evaluate`).
//
// With a clean reference: PSNR and RMSE in the dB domain over the pixels valid in both, with the
// reference's dynamic range (max - min in dB) as the peak; the usual figure for SAR despeckling
// on simulated speckle. With the noisy input: the ratio image noisy / despeckled in linear
// intensity, whose mean should be 1 (radiometry preserved) and whose ENL (mean^2 / variance)
// should match the input's number of looks when only speckle was removed.
// The quality-metrics issue extends this (SSIM, ENL on homogeneous areas, M-index).
#pragma once

#include <cmath>
#include <filesystem>
#include <optional>

#include "despeck/data/units.hpp"
#include "despeck/io/geotiff.hpp"

namespace despeck::workflow {

struct Evaluation {
    index_t pixels = 0;                     // compared pixels (valid everywhere involved)
    std::optional<double> psnr_db, rmse_db; // against the reference, in the dB domain
    std::optional<double> ratio_mean, ratio_enl;  // noisy / result, linear intensity
};

inline Evaluation evaluate_geotiff(const std::filesystem::path& result_path, const std::filesystem::path& reference_path = {},
                                   const std::filesystem::path& noisy_path = {}, raster::Units units = raster::Units::unknown,
                                   index_t block_rows = 256) {
    // `units` applies only to files whose metadata does not say.
    auto units_of = [&](const std::filesystem::path& p) {
        return io::GeoTiffReader(p).info().units == raster::Units::unknown ? units : raster::Units::unknown;
    };
    io::GeoTiffReader result(result_path, units_of(result_path));
    std::optional<io::GeoTiffReader> reference, noisy;
    if (!reference_path.empty()) reference.emplace(reference_path, units_of(reference_path));
    if (!noisy_path.empty()) noisy.emplace(noisy_path, units_of(noisy_path));
    const auto& ri = result.info();
    for (io::GeoTiffReader* other : {reference ? &*reference : nullptr, noisy ? &*noisy : nullptr}) {
        if (!other) continue;
        const auto& oi = other->info();
        if (oi.rows != ri.rows || oi.cols != ri.cols || oi.bands != ri.bands)
            detail::fail<value_error>("evaluate: '", oi.source, "' is ", oi.cols, " x ", oi.rows, " x ", oi.bands, ", '", ri.source,
                                      "' ", ri.cols, " x ", ri.rows, " x ", ri.bands);
        if (oi.units == raster::Units::unknown)
            detail::fail<value_error>("evaluate: the units of '", oi.source, "' are unknown");
    }
    if (ri.units == raster::Units::unknown) detail::fail<value_error>("evaluate: the units of '", ri.source, "' are unknown");
    double se = 0, ref_lo = INFINITY, ref_hi = -INFINITY, rs = 0, rss = 0;
    index_t n = 0, nr = 0;
    for (index_t r0 = 0; r0 < ri.rows; r0 += block_rows) {
        const index_t k = std::min(block_rows, ri.rows - r0);
        const Tensor<float> res = result.read_rows(r0, k);
        const Tensor<float> ref = reference ? reference->read_rows(r0, k) : Tensor<float>();
        const Tensor<float> noi = noisy ? noisy->read_rows(r0, k) : Tensor<float>();
        for (index_t i = 0; i < res.size(); ++i) {
            if (!raster::is_valid_value(res[i], ri.units, ri.nodata)) continue;
            const double res_db = data::convert_value(res[i], ri.units, raster::Units::db);
            if (reference && raster::is_valid_value(ref[i], reference->info().units, reference->info().nodata)) {
                const double ref_db = data::convert_value(ref[i], reference->info().units, raster::Units::db);
                se += (res_db - ref_db) * (res_db - ref_db);
                ref_lo = std::min(ref_lo, ref_db);
                ref_hi = std::max(ref_hi, ref_db);
                ++n;
            }
            if (noisy && raster::is_valid_value(noi[i], noisy->info().units, noisy->info().nodata)) {
                const double ratio = data::convert_value(noi[i], noisy->info().units, raster::Units::linear_intensity) /
                                     data::convert_value(res[i], ri.units, raster::Units::linear_intensity);
                if (std::isfinite(ratio)) {
                    rs += ratio;
                    rss += ratio * ratio;
                    ++nr;
                }
            }
        }
    }
    Evaluation e;
    e.pixels = reference ? n : nr;
    if (reference) {
        if (n == 0) detail::fail<value_error>("evaluate: no pixel is valid in both '", ri.source, "' and the reference");
        const double mse = se / double(n), range = ref_hi - ref_lo;
        e.rmse_db = std::sqrt(mse);
        e.psnr_db = 10 * std::log10(range * range / std::max(mse, 1e-30));
    }
    if (noisy && nr > 1) {
        const double mean = rs / double(nr), var = rss / double(nr) - mean * mean;
        e.ratio_mean = mean;
        e.ratio_enl = var > 0 ? mean * mean / var : INFINITY;
    }
    return e;
}

}  // namespace despeck::workflow
