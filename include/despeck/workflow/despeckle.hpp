// despeck/workflow/despeckle.hpp — a GeoTIFF scene through the clean branch to a despeckled
// GeoTIFF with the same georeferencing and no-data, in memory bounded by a tile (`despeck
// despeckle`).
//
//   input (linear intensity, amplitude or dB) -> the model's domain (dB for an additive model,
//   linear intensity for a multiplicative one), no-data filled with the scene's per-band mean
//   (computed in a first pass, so every tile sees the same fill) -> tiled inference with a halo of
//   the receptive radius (infer/tiled.hpp) -> the requested output units -> the input's no-data
//   pixels set to the no-data value (the input's, or NaN when it declares none) -> GeoTIFF,
//   written stripe by stripe and renamed into place only when complete.
// A multiplicative model's clean output can dip below 0 near dark pixels; before conversion to dB
// it is clamped to 1e-10 (-100 dB) so that no NaN or -inf reaches the file.
#pragma once

#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <vector>

#include "despeck/data/units.hpp"
#include "despeck/infer/tiled.hpp"
#include "despeck/io/geotiff.hpp"
#include "despeck/io/image.hpp"

namespace despeck::workflow {

struct DespeckleOptions {
    infer::TileOptions tiles;
    raster::Units input_units = raster::Units::unknown;   // unknown: from the file's metadata
    raster::Units output_units = raster::Units::unknown;  // unknown: the input's units
    std::filesystem::path noise_path;                     // optional: the noise branch's estimate
    std::filesystem::path quicklook_png;                  // optional: noisy | despeckled, in dB
    index_t quicklook_max_side = 1024;
};

struct DespeckleReport {
    index_t rows = 0, cols = 0, bands = 0, invalid_pixels = 0;
    bool georeferenced = false;  // the input had georeferencing tags (copied to the output)
    double seconds = 0;
};

namespace detail_despeckle {

inline raster::Units model_domain(const DeSpeckNet<float>& m) {
    return m.config().combine == CombineMode::additive_db ? raster::Units::db : raster::Units::linear_intensity;
}

// Converts one value to `to`. A linear-intensity model output can dip below 0 near dark pixels:
// it is clamped to 1e-10 (-100 dB) first, so no negative intensity, NaN amplitude or -inf dB is
// written.
inline float convert_out(float v, raster::Units from, raster::Units to) {
    if (from != raster::Units::db) v = std::max(v, 1e-10f);
    if (from == to) return v;
    return data::convert_value(v, from, to);
}

}  // namespace detail_despeckle

inline DespeckleReport despeckle_geotiff(const DeSpeckNet<float>& model, const std::filesystem::path& input_path,
                                         const std::filesystem::path& output_path, const DespeckleOptions& opt = {}) {
    const auto t0 = std::chrono::steady_clock::now();
    io::GeoTiffReader reader(input_path, opt.input_units);
    const raster::RasterInfo in = reader.info();
    if (in.units == raster::Units::unknown)
        detail::fail<value_error>("'", input_path.string(), "': the units are unknown (no UNITS metadata); say whether it "
                                  "holds linear intensity, amplitude or dB");
    if (in.bands != model.config().channels)
        detail::fail<value_error>("'", input_path.string(), "' has ", in.bands, " band(s); the model was trained on ",
                                  model.config().channels);
    const raster::Units domain = detail_despeckle::model_domain(model);
    const raster::Units out_units = opt.output_units == raster::Units::unknown ? in.units : opt.output_units;
    const index_t rows = in.rows, cols = in.cols, bands = in.bands;
    const index_t block = std::max<index_t>(64, opt.tiles.tile_rows);

    // Pass 1: per-band mean of the valid pixels in the model's domain (the no-data fill).
    std::vector<double> sum(static_cast<std::size_t>(bands), 0.0);
    index_t valid = 0;
    for (index_t r0 = 0; r0 < rows; r0 += block) {
        const Tensor<float> b = reader.read_rows(r0, std::min(block, rows - r0));
        for (index_t p = 0; p < b.size() / bands; ++p) {
            bool ok = true;
            for (index_t c = 0; c < bands && ok; ++c) ok = raster::is_valid_value(b[p * bands + c], in.units, in.nodata);
            if (!ok) continue;
            ++valid;
            for (index_t c = 0; c < bands; ++c)
                sum[static_cast<std::size_t>(c)] += data::convert_value(b[p * bands + c], in.units, domain);
        }
    }
    if (valid == 0) detail::fail<value_error>("'", input_path.string(), "' has no valid pixel (all no-data)");
    std::vector<float> fill(static_cast<std::size_t>(bands));
    for (index_t c = 0; c < bands; ++c) fill[static_cast<std::size_t>(c)] = static_cast<float>(sum[static_cast<std::size_t>(c)] / double(valid));

    // Rows of the input in the model's domain, with the validity of each pixel.
    auto load = [&](index_t row0, index_t count, std::vector<std::uint8_t>* validity) {
        Tensor<float> b = reader.read_rows(row0, count);
        if (validity) validity->assign(static_cast<std::size_t>(count * cols), 1);
        for (index_t p = 0; p < count * cols; ++p) {
            bool ok = true;
            for (index_t c = 0; c < bands && ok; ++c) ok = raster::is_valid_value(b[p * bands + c], in.units, in.nodata);
            for (index_t c = 0; c < bands; ++c)
                b[p * bands + c] = ok ? data::convert_value(b[p * bands + c], in.units, domain) : fill[static_cast<std::size_t>(c)];
            if (validity && !ok) (*validity)[static_cast<std::size_t>(p)] = 0;
        }
        return b;
    };

    raster::RasterInfo out_info = in;
    out_info.units = out_units;
    out_info.gdal_metadata.clear();  // regenerated from band names and the new units
    const bool had_invalid = valid < rows * cols;
    // The input's no-data value may be a valid value in other units (0 is no-data in linear
    // intensity but a real 0 dB): then, and when the input declares none, NaN marks no-data.
    if ((!out_info.nodata && had_invalid) || (out_info.nodata && out_units != in.units))
        out_info.nodata = std::numeric_limits<double>::quiet_NaN();
    const float nodata_out = out_info.nodata ? static_cast<float>(*out_info.nodata) : 0.0f;

    // Decimated quick-look of input and output (dB), filled while streaming.
    const index_t step = std::max<index_t>(1, (std::max(rows, cols) + opt.quicklook_max_side - 1) / opt.quicklook_max_side);
    const index_t q_rows = (rows + step - 1) / step, q_cols = (cols + step - 1) / step;
    Tensor<float> q_in, q_out, q_mask;
    if (!opt.quicklook_png.empty()) {
        q_in = Tensor<float>(Shape{1, q_rows, q_cols, bands});
        q_out = Tensor<float>(Shape{1, q_rows, q_cols, bands});
        q_mask = Tensor<float>(Shape{1, q_rows, q_cols, 1});
    }

    DespeckleReport report;
    report.rows = rows;
    report.cols = cols;
    report.bands = bands;
    report.invalid_pixels = rows * cols - valid;
    report.georeferenced = !in.geo.empty();
    auto run = [&](const std::filesystem::path& path, bool noise) {
        raster::RasterInfo info = out_info;
        if (noise) {
            info.units = domain == raster::Units::db ? raster::Units::db : raster::Units::unknown;  // a dB offset or a factor
            for (auto& n : info.band_names) n = n.empty() ? n : n + "_noise";
        }
        io::GeoTiffWriter writer(path, info);
        infer::TileOptions tiles = opt.tiles;
        tiles.noise_branch = noise;
        infer::predict_tiled<float>(
            model, rows, cols, bands, [&](index_t row0, index_t count) { return load(row0, count, nullptr); },
            [&](index_t row0, const Tensor<float>& clean) {
                const index_t count = clean.dim(1);
                std::vector<std::uint8_t> validity;
                const Tensor<float> input_block = load(row0, count, &validity);
                Tensor<float> out = Tensor<float>::uninitialized(clean.shape());
                for (index_t p = 0; p < count * cols; ++p)
                    for (index_t c = 0; c < bands; ++c) {
                        const index_t e = p * bands + c;
                        out[e] = !validity[static_cast<std::size_t>(p)] ? nodata_out
                                 : noise                                 ? clean[e]
                                                                         : detail_despeckle::convert_out(clean[e], domain, out_units);
                    }
                if (!noise && !q_in.empty())
                    for (index_t r = row0; r < row0 + count; ++r) {
                        if (r % step) continue;
                        for (index_t col = 0; col < cols; col += step) {
                            const index_t p = (r - row0) * cols + col;
                            q_mask.at(0, r / step, col / step, 0) = validity[static_cast<std::size_t>(p)];
                            for (index_t c = 0; c < bands; ++c) {
                                q_in.at(0, r / step, col / step, c) = detail_despeckle::convert_out(input_block[p * bands + c], domain, raster::Units::db);
                                q_out.at(0, r / step, col / step, c) = detail_despeckle::convert_out(clean[p * bands + c], domain, raster::Units::db);
                            }
                        }
                    }
                writer.write_rows(out);
            },
            tiles);
        writer.close();
    };
    run(output_path, false);
    if (!opt.noise_path.empty()) run(opt.noise_path, true);
    if (!opt.quicklook_png.empty()) {
        io::Stretch stretch;  // values are dB already: a linear stretch of them
        const std::vector<const Tensor<float>*> images{&q_in, &q_out};
        const std::vector<const Tensor<float>*> masks{&q_mask, &q_mask};
        io::write_panel(opt.quicklook_png, images, {"input (dB)", "despeckled (dB)"}, stretch, true, masks);
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report;
}

}  // namespace despeck::workflow
