// despeck/data/units.hpp — SAR units (linear intensity, amplitude, dB) and no-data handling.
//
//   pixels   Tensor<float> [N, rows, cols, bands] (a raster is N = 1); every function here works
//            on any N, and a mask has one entry per pixel of [N, rows, cols], row-major
//   dB       10 log10(intensity) = 20 log10(amplitude); intensity = amplitude^2
//
// The plain conversions are the maths and nothing else: 0 goes to -inf dB and a negative value to
// NaN, as in NumPy. Data that may hold no-data goes through to_db_with_nodata, which replaces every
// invalid pixel by a finite fill value and returns the mask, so that NaN and -inf never reach the
// network; apply_nodata writes the declared no-data value back into an output afterwards.
// Arithmetic is done in double and rounded once to float.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "despeck/error.hpp"
#include "despeck/raster/raster.hpp"
#include "despeck/tensor.hpp"

namespace despeck::data {

using raster::Units;

// ---- scalar conversions -------------------------------------------------------------------------

inline float intensity_to_db(float v) { return static_cast<float>(10.0 * std::log10(static_cast<double>(v))); }
inline float db_to_intensity(float v) { return static_cast<float>(std::pow(10.0, static_cast<double>(v) / 10.0)); }
inline float amplitude_to_intensity(float v) { return static_cast<float>(static_cast<double>(v) * static_cast<double>(v)); }
inline float intensity_to_amplitude(float v) { return static_cast<float>(std::sqrt(static_cast<double>(v))); }
inline float amplitude_to_db(float v) { return static_cast<float>(20.0 * std::log10(static_cast<double>(v))); }
inline float db_to_amplitude(float v) { return static_cast<float>(std::pow(10.0, static_cast<double>(v) / 20.0)); }

// One value from `from` to `to` units. Throws value_error when either is unknown (and they differ).
inline float convert_value(float v, Units from, Units to) {
    if (from == to) return v;
    if (from == Units::unknown || to == Units::unknown)
        detail::fail<value_error>("convert: cannot convert from ", raster::to_string(from), " to ", raster::to_string(to));
    const double x = static_cast<double>(v);
    // Amplitude <-> intensity directly (a square needs no log); every other pair goes through dB
    // in double, so each conversion rounds to float once.
    if (from == Units::amplitude && to == Units::linear_intensity) return static_cast<float>(x * x);
    if (from == Units::linear_intensity && to == Units::amplitude) return static_cast<float>(std::sqrt(x));
    const double db = from == Units::linear_intensity ? 10.0 * std::log10(x)
                      : from == Units::amplitude      ? 20.0 * std::log10(x)
                                                      : x;
    switch (to) {
        case Units::linear_intensity: return static_cast<float>(std::pow(10.0, db / 10.0));
        case Units::amplitude: return static_cast<float>(std::pow(10.0, db / 20.0));
        default: return static_cast<float>(db);
    }
}

// ---- tensor conversions -------------------------------------------------------------------------

// In place: every element from `from` to `to` units.
inline void convert_inplace(Tensor<float>& pixels, Units from, Units to) {
    if (from == to) return;
    convert_value(1.0f, from, to);  // rejects unknown units before touching anything
    float* p = pixels.data();
    for (index_t i = 0; i < pixels.size(); ++i) p[i] = convert_value(p[i], from, to);
}
// A converted copy.
inline Tensor<float> convert(const Tensor<float>& pixels, Units from, Units to) {
    Tensor<float> out = pixels;
    convert_inplace(out, from, to);
    return out;
}

inline Tensor<float> intensity_to_db(const Tensor<float>& t) { return convert(t, Units::linear_intensity, Units::db); }
inline Tensor<float> db_to_intensity(const Tensor<float>& t) { return convert(t, Units::db, Units::linear_intensity); }
inline Tensor<float> amplitude_to_intensity(const Tensor<float>& t) { return convert(t, Units::amplitude, Units::linear_intensity); }
inline Tensor<float> intensity_to_amplitude(const Tensor<float>& t) { return convert(t, Units::linear_intensity, Units::amplitude); }
inline Tensor<float> amplitude_to_db(const Tensor<float>& t) { return convert(t, Units::amplitude, Units::db); }
inline Tensor<float> db_to_amplitude(const Tensor<float>& t) { return convert(t, Units::db, Units::amplitude); }

// ---- validity -----------------------------------------------------------------------------------

namespace detail_units {
inline void require_pixels(const char* where, const Tensor<float>& pixels) {
    if (pixels.rank() != 4)
        detail::fail<shape_error>(where, ": pixels must be [N, rows, cols, bands] (rank 4), got ", pixels.shape());
    if (pixels.dim(3) == 0) detail::fail<shape_error>(where, ": pixels ", pixels.shape(), " have no bands");
}
}  // namespace detail_units

// Per pixel of [N, rows, cols]: 1 when every band is a valid measurement (raster::is_valid_value:
// finite, not the no-data value, and > 0 for linear intensity or amplitude), else 0. A pixel with
// one bad band is no-data as a whole: the network sees all bands of a pixel together.
inline std::vector<std::uint8_t> valid_mask(const Tensor<float>& pixels, Units units, std::optional<double> nodata) {
    detail_units::require_pixels("valid_mask", pixels);
    const index_t bands = pixels.dim(3), count = pixels.size() / bands;
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(count));
    const float* p = pixels.data();
    for (index_t i = 0; i < count; ++i) {
        bool ok = true;
        for (index_t b = 0; b < bands && ok; ++b) ok = raster::is_valid_value(p[i * bands + b], units, nodata);
        mask[static_cast<std::size_t>(i)] = ok ? 1 : 0;
    }
    return mask;
}

// Per element (the layout of `pixels`, [N, rows, cols, bands]): 1 when that band's value is valid.
inline std::vector<std::uint8_t> valid_mask_per_band(const Tensor<float>& pixels, Units units, std::optional<double> nodata) {
    detail_units::require_pixels("valid_mask_per_band", pixels);
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(pixels.size()));
    const float* p = pixels.data();
    for (index_t i = 0; i < pixels.size(); ++i) mask[static_cast<std::size_t>(i)] = raster::is_valid_value(p[i], units, nodata) ? 1 : 0;
    return mask;
}

inline index_t count_valid(const std::vector<std::uint8_t>& mask) {
    index_t n = 0;
    for (auto m : mask) n += m ? 1 : 0;
    return n;
}

// ---- dB with no-data filled ---------------------------------------------------------------------

// What an invalid pixel holds in the network's input.
//   band_mean  the mean dB of the valid pixels, per band (the default). A hole then looks like an
//              average, flat patch of the scene: the convolutions near it see no step, where a
//              constant far from the data (say -100 dB) would ring through the receptive field of
//              every valid pixel within `depth` pixels of the hole, and NaN would poison everything.
//   constant   `value` in every band (must be finite), for a fill that does not depend on the scene.
// Either way the mask says which pixels are real; losses and statistics should use it.
struct NodataFill {
    enum class Mode { band_mean, constant };
    Mode mode = Mode::band_mean;
    double value = 0.0;  // for Mode::constant

    static NodataFill band_mean() { return {}; }
    static NodataFill constant(double v) { return {Mode::constant, v}; }
};

struct DbPixels {
    Tensor<float> db;                   // [N, rows, cols, bands] in dB, every element finite
    std::vector<std::uint8_t> mask;     // [N * rows * cols], 1 = valid pixel (all bands valid)
    std::vector<double> fill;           // the value written into invalid pixels, per band
    index_t valid_count = 0;            // pixels with mask 1
};

// dB pixels with invalid pixels (any band invalid, see valid_mask) set to the fill in every band.
// `source` names the data in errors. Throws value_error when no pixel is valid (there is nothing to
// learn from and no mean to fill with), when units are unknown, or when a constant fill is not finite.
inline DbPixels to_db_with_nodata(const Tensor<float>& pixels, Units units, std::optional<double> nodata,
                                  NodataFill fill = {}, std::string_view source = "pixels") {
    detail_units::require_pixels("to_db_with_nodata", pixels);
    if (units == Units::unknown)
        detail::fail<value_error>("to_db_with_nodata: ", source, " has unknown units (need linear_intensity, amplitude or db)");
    if (fill.mode == NodataFill::Mode::constant && !std::isfinite(static_cast<float>(fill.value)))
        detail::fail<value_error>("to_db_with_nodata: ", source, ": the fill value ", fill.value, " is not a finite float");
    DbPixels out;
    out.mask = valid_mask(pixels, units, nodata);
    out.valid_count = count_valid(out.mask);
    if (out.valid_count == 0)
        detail::fail<value_error>("to_db_with_nodata: ", source, " ", pixels.shape(), " has no valid pixel (units ",
                                  raster::to_string(units), ", no-data ", nodata ? std::to_string(*nodata) : std::string("none"),
                                  ")");
    const index_t bands = pixels.dim(3), count = pixels.size() / bands;
    out.db = Tensor<float>::uninitialized(pixels.shape());
    const float* p = pixels.data();
    float* d = out.db.data();
    std::vector<double> sum(static_cast<std::size_t>(bands), 0.0);
    for (index_t i = 0; i < count; ++i) {
        if (!out.mask[static_cast<std::size_t>(i)]) continue;
        for (index_t b = 0; b < bands; ++b) {
            const float v = convert_value(p[i * bands + b], units, Units::db);
            d[i * bands + b] = v;
            sum[static_cast<std::size_t>(b)] += v;
        }
    }
    out.fill.resize(static_cast<std::size_t>(bands));
    for (index_t b = 0; b < bands; ++b) {
        // Every valid value has a finite dB value (a positive float is at least 1.4e-45, above
        // -900 dB even as an amplitude), so the mean is finite too.
        const double f = fill.mode == NodataFill::Mode::constant
                             ? fill.value
                             : sum[static_cast<std::size_t>(b)] / static_cast<double>(out.valid_count);
        out.fill[static_cast<std::size_t>(b)] = static_cast<double>(static_cast<float>(f));
    }
    for (index_t i = 0; i < count; ++i) {
        if (out.mask[static_cast<std::size_t>(i)]) continue;
        for (index_t b = 0; b < bands; ++b) d[i * bands + b] = static_cast<float>(out.fill[static_cast<std::size_t>(b)]);
    }
    return out;
}

// The same for a whole raster: units, no-data and the name for errors come from its RasterInfo.
inline DbPixels to_db_with_nodata(const raster::MemoryRaster& r, NodataFill fill = {}) {
    return to_db_with_nodata(r.pixels(), r.info().units, r.info().nodata, fill, r.info().describe());
}

// ---- restoring no-data --------------------------------------------------------------------------

// Writes `nodata_value` (NaN allowed) into every band of the pixels whose mask entry is 0, e.g. to
// put the input's no-data back into the network's output before writing it. mask is
// [N * rows * cols] as returned by valid_mask / to_db_with_nodata.
inline void apply_nodata(Tensor<float>& pixels, const std::vector<std::uint8_t>& mask, double nodata_value) {
    detail_units::require_pixels("apply_nodata", pixels);
    const index_t bands = pixels.dim(3), count = pixels.size() / bands;
    if (static_cast<index_t>(mask.size()) != count)
        detail::fail<shape_error>("apply_nodata: mask has ", mask.size(), " entries, pixels ", pixels.shape(), " have ", count,
                                  " pixels");
    const float v = static_cast<float>(nodata_value);
    float* p = pixels.data();
    for (index_t i = 0; i < count; ++i)
        if (!mask[static_cast<std::size_t>(i)])
            for (index_t b = 0; b < bands; ++b) p[i * bands + b] = v;
}

}  // namespace despeck::data
