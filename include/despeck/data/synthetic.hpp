// despeck/data/synthetic.hpp — Gamma speckle and synthetic SAR scenes and time series, so that the
// whole workflow (temporal reference, patches, training, inference) runs without downloads.
//
//   speckle   fully developed L-look speckle multiplies the clean intensity by S ~ Gamma(L, 1/L):
//             E[S] = 1, Var[S] = 1/L, any real L > 0 (Sentinel-1 GRD has an ENL of about 4.4).
//             The amplitude speckle sqrt(S) is Nakagami(L, 1): E[sqrt(S)^2] = 1.
//   scene     Tensor<float> [1, rows, cols, bands] in linear intensity (sigma0), clean (no speckle):
//             Voronoi fields, each with its own dB level (sharp edges), a smooth texture and an
//             incidence-angle trend across the columns, a dark river, a few point targets 15 dB
//             above their background, VH (band index 1) several dB below VV (band index 0), and a
//             no-data border of irregular width on the left (value 0, RasterInfo.nodata = 0), as
//             on the edge of a Sentinel-1 GRD swath.
//   stack     `dates` speckled acquisitions of one scene in which one or a few fields change level
//             from date change_date on; each date has its own speckle and its own no-data border.
// Everything is deterministic from the seed through despeck::Rng (no <random> distributions, whose
// output differs between standard libraries).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "despeck/error.hpp"
#include "despeck/random.hpp"
#include "despeck/raster/raster.hpp"
#include "despeck/tensor.hpp"

namespace despeck::data {

// ---- speckle ------------------------------------------------------------------------------------

// Gamma(shape, scale 1) by Marsaglia & Tsang (2000), "A simple method for generating gamma
// variables": for shape >= 1 a transformed normal with a squeeze and a log acceptance test
// (acceptance above 95%); for shape < 1 the boost Gamma(a) = Gamma(a + 1) * U^(1/a).
inline double gamma_variate(Rng& rng, double shape) {
    if (!(shape > 0.0) || !std::isfinite(shape))
        detail::fail<value_error>("gamma_variate: shape must be positive and finite, got ", shape);
    if (shape < 1.0) {
        const double u = 1.0 - rng.uniform();  // (0, 1]
        return gamma_variate(rng, shape + 1.0) * std::pow(u, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
        double x = 0, v = 0;
        do {
            x = rng.normal();
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = rng.uniform();
        const double x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2) return d * v;
        if (std::log(u) < 0.5 * x2 + d * (1.0 - v + std::log(v))) return d * v;
    }
}

namespace detail_synthetic {
inline void require_looks(const char* where, double looks) {
    if (!(looks > 0.0) || !std::isfinite(looks))
        detail::fail<value_error>(where, ": looks must be positive and finite, got ", looks);
}
}  // namespace detail_synthetic

// One L-look intensity speckle value: Gamma(L, 1/L), mean 1, variance 1/L. Never 0 (a value that
// underflows float, possible only for L well below 1, is raised to the smallest normal float), so
// speckle never turns a valid pixel into no-data.
inline float gamma_speckle(Rng& rng, double looks) {
    detail_synthetic::require_looks("gamma_speckle", looks);
    const float s = static_cast<float>(gamma_variate(rng, looks) / looks);
    return std::max(s, std::numeric_limits<float>::min());
}

// One L-look amplitude speckle value: sqrt of the intensity speckle (Nakagami, E[A^2] = 1).
inline float amplitude_speckle(Rng& rng, double looks) {
    return static_cast<float>(std::sqrt(static_cast<double>(gamma_speckle(rng, looks))));
}

// Multiplies every element of a linear-intensity tensor by its own independent speckle value
// (bands independent too). One speckle value is drawn per element whatever the element holds, so
// the speckle at an element depends only on the seed and its index; values that are not valid
// intensities (0, negative, NaN, inf, or equal to `nodata`) are left exactly as they are.
inline void apply_speckle(Tensor<float>& linear_intensity, double looks, std::uint64_t seed,
                          std::optional<double> nodata = std::nullopt) {
    detail_synthetic::require_looks("apply_speckle", looks);
    Rng rng(seed);
    float* p = linear_intensity.data();
    for (index_t i = 0; i < linear_intensity.size(); ++i) {
        const float s = gamma_speckle(rng, looks);
        if (!raster::is_valid_value(p[i], raster::Units::linear_intensity, nodata)) continue;
        const float v = static_cast<float>(static_cast<double>(p[i]) * static_cast<double>(s));
        p[i] = v > 0.0f ? v : std::numeric_limits<float>::denorm_min();  // stays valid
    }
}

// ---- scenes -------------------------------------------------------------------------------------

struct SceneOptions {
    index_t fields = 0;              // Voronoi fields; 0 = one per ~2500 pixels, clamped to [6, 200]
    double field_db_min = -17.0;     // VV level range of the fields (dB): water-free land cover
    double field_db_max = -4.0;
    double texture_db = 1.0;         // peak of the smooth texture added to the fields (dB)
    double trend_db = 2.0;           // fall of the level from the first to the last column (dB)
    bool river = true;               // a dark sinuous band from the left to the right edge
    double river_db = -23.0;         // VV level of the water (dB)
    double river_width = 0.0;        // pixels; 0 = max(2, rows / 40)
    index_t point_targets = 4;       // single bright pixels
    double point_target_db = 15.0;   // above their background (dB)
    bool nodata_border = true;       // zero-valued columns on the left, irregular width per row
    double border_fraction = 0.06;   // mean width of that border / cols (each row at most twice it)
    double vh_offset_db = -7.0;      // VH (band index >= 1) relative to VV, mean over fields (dB)
    double vh_spread_db = 1.5;       // per-field variation of that ratio, uniform +-spread (dB)
    bool georeferenced = true;       // a UTM 32N, 10 m GeoReference (for file output)
    std::string source = "synthetic";
};

struct PointTarget {
    index_t row = 0, col = 0;
};

// Everything a scene is drawn from; background_db / clean_db give the clean level at any pixel.
struct SceneLayout {
    struct Wave {
        double k_row, k_col, phase, amplitude_db;  // amplitude_db * sin(k_row r + k_col c + phase)
    };
    index_t rows = 0, cols = 0, bands = 0;
    SceneOptions options;
    std::vector<double> site_row, site_col;        // Voronoi sites, one per field
    std::vector<std::vector<double>> field_db;     // [field][band]
    std::vector<Wave> waves;                       // texture
    double river_row0 = 0, river_amplitude = 0, river_period = 1, river_phase = 0, river_half_width = 0;
    std::vector<PointTarget> targets;
    std::vector<index_t> border_width;             // [rows]: no-data columns on the left (empty: none)

    index_t field_at(index_t r, index_t c) const {
        index_t best = 0;
        double best_d = std::numeric_limits<double>::infinity();
        for (std::size_t f = 0; f < site_row.size(); ++f) {
            const double dr = static_cast<double>(r) - site_row[f], dc = static_cast<double>(c) - site_col[f];
            const double d = dr * dr + dc * dc;
            if (d < best_d) {
                best_d = d;
                best = static_cast<index_t>(f);
            }
        }
        return best;
    }
    bool in_river(index_t r, index_t c) const {
        if (!options.river) return false;
        constexpr double two_pi = 6.283185307179586476925286766559;
        const double centre = river_row0 + river_amplitude * std::sin(two_pi * static_cast<double>(c) / river_period + river_phase);
        return std::abs(static_cast<double>(r) - centre) <= river_half_width;
    }
    double trend_db(index_t c) const {
        return cols > 1 ? options.trend_db * (0.5 - static_cast<double>(c) / static_cast<double>(cols - 1)) : 0.0;
    }
    // Clean level of every band of a pixel (out[bands]), without point targets and without the
    // no-data border; one nearest-site search per pixel.
    void background_db_pixel(index_t r, index_t c, double* out) const {
        if (in_river(r, c)) {
            for (index_t b = 0; b < bands; ++b) out[b] = options.river_db + (b > 0 ? options.vh_offset_db : 0.0) + trend_db(c);
            return;
        }
        double texture = 0;
        for (const Wave& w : waves)
            texture += w.amplitude_db * std::sin(w.k_row * static_cast<double>(r) + w.k_col * static_cast<double>(c) + w.phase);
        const std::vector<double>& levels = field_db[static_cast<std::size_t>(field_at(r, c))];
        for (index_t b = 0; b < bands; ++b) out[b] = levels[static_cast<std::size_t>(b)] + texture + trend_db(c);
    }
    double background_db(index_t r, index_t c, index_t band) const {
        std::vector<double> levels(static_cast<std::size_t>(bands));
        background_db_pixel(r, c, levels.data());
        return levels[static_cast<std::size_t>(band)];
    }
    bool is_target(index_t r, index_t c) const {
        for (const PointTarget& t : targets)
            if (t.row == r && t.col == c) return true;
        return false;
    }
    // Clean level with point targets, without the no-data border.
    double clean_db(index_t r, index_t c, index_t band) const {
        return background_db(r, c, band) + (is_target(r, c) ? options.point_target_db : 0.0);
    }
};

namespace detail_synthetic {

inline void require_size(const char* where, index_t rows, index_t cols, index_t bands) {
    if (rows <= 0 || cols <= 0 || bands <= 0)
        detail::fail<value_error>(where, ": rows, cols and bands must be positive, got ", rows, " x ", cols, " x ", bands);
}

// Widest a border row may be: twice the mean, and never more than a third of the scene.
inline index_t border_limit(index_t cols, const SceneOptions& o) {
    if (cols < 8 || !(o.border_fraction > 0.0)) return 0;
    const auto w = static_cast<index_t>(std::ceil(2.0 * o.border_fraction * static_cast<double>(cols)));
    return std::clamp<index_t>(w, 1, cols / 3);
}

// Per-row border widths in [1, limit]: a slow sinusoid (the swath edge is slanted and curved in
// image geometry) plus a mean-reverting random walk (the edge is ragged). Empty when the scene is
// narrower than 8 columns or the border is off.
inline std::vector<index_t> border_widths(index_t rows, index_t cols, const SceneOptions& o, Rng& rng) {
    const index_t limit = border_limit(cols, o);
    if (!o.nodata_border || limit == 0) return {};
    constexpr double two_pi = 6.283185307179586476925286766559;
    const double mean = 0.5 * static_cast<double>(limit);
    const double period = static_cast<double>(rows) * rng.uniform(0.7, 2.0), phase = rng.uniform(0.0, two_pi);
    std::vector<index_t> widths(static_cast<std::size_t>(rows));
    double walk = 0;
    for (index_t r = 0; r < rows; ++r) {
        walk = 0.85 * walk + rng.uniform(-1.0, 1.0) * 0.35 * mean;
        const double w = mean * (1.0 + 0.45 * std::sin(two_pi * static_cast<double>(r) / period + phase)) + walk;
        widths[static_cast<std::size_t>(r)] = std::clamp<index_t>(static_cast<index_t>(std::lround(w)), 1, limit);
    }
    return widths;
}

inline raster::GeoReference utm_georeference() {
    raster::GeoReference g;
    g.pixel_scale = {10.0, 10.0, 0.0};
    g.tiepoints = {0.0, 0.0, 0.0, 600000.0, 5200000.0, 0.0};
    // GeoKeyDirectory v1.1.0, 3 keys: GTModelType = projected, GTRasterType = PixelIsArea,
    // ProjectedCSType = EPSG:32632 (WGS 84 / UTM zone 32N).
    g.geo_keys = {1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32632};
    return g;
}

inline std::vector<std::string> band_names(index_t bands) {
    std::vector<std::string> names;
    for (index_t b = 0; b < bands; ++b)
        names.push_back(b == 0 ? "VV" : b == 1 ? "VH" : "band" + std::to_string(b + 1));
    return names;
}

inline raster::RasterInfo scene_info(const SceneLayout& l, std::string source) {
    raster::RasterInfo info;
    info.rows = l.rows;
    info.cols = l.cols;
    info.bands = l.bands;
    info.units = raster::Units::linear_intensity;
    info.nodata = 0.0;
    if (l.options.georeferenced) info.geo = utm_georeference();
    info.band_names = band_names(l.bands);
    info.source = std::move(source);
    return info;
}

// Zeroes the first widths[r] columns of every row (all bands).
inline void apply_border(Tensor<float>& pixels, const std::vector<index_t>& widths) {
    const index_t cols = pixels.dim(2), bands = pixels.dim(3);
    for (std::size_t r = 0; r < widths.size(); ++r)
        std::fill(pixels.data() + static_cast<index_t>(r) * cols * bands,
                  pixels.data() + (static_cast<index_t>(r) * cols + widths[r]) * bands, 0.0f);
}

}  // namespace detail_synthetic

// Draws a scene's layout from the seed. The draws are made in a fixed order (fields, texture,
// river, point targets, then the border), so switching the border off changes nothing else.
inline SceneLayout scene_layout(index_t rows, index_t cols, index_t bands, std::uint64_t seed, const SceneOptions& options = {}) {
    detail_synthetic::require_size("scene_layout", rows, cols, bands);
    if (!(options.field_db_min <= options.field_db_max))
        detail::fail<value_error>("scene_layout: field_db_min ", options.field_db_min, " > field_db_max ", options.field_db_max);
    constexpr double two_pi = 6.283185307179586476925286766559;
    SceneLayout l;
    l.rows = rows;
    l.cols = cols;
    l.bands = bands;
    l.options = options;
    Rng rng(seed);
    const double R = static_cast<double>(rows), C = static_cast<double>(cols);

    const index_t fields = options.fields > 0 ? options.fields : std::clamp<index_t>(rows * cols / 2500, 6, 200);
    for (index_t f = 0; f < fields; ++f) {
        l.site_row.push_back(rng.uniform(0.0, R));
        l.site_col.push_back(rng.uniform(0.0, C));
        std::vector<double> levels(static_cast<std::size_t>(bands));
        levels[0] = rng.uniform(options.field_db_min, options.field_db_max);
        for (index_t b = 1; b < bands; ++b)
            levels[static_cast<std::size_t>(b)] = levels[0] + options.vh_offset_db + rng.uniform(-1.0, 1.0) * options.vh_spread_db;
        l.field_db.push_back(std::move(levels));
    }

    // Three waves with wavelengths between a quarter and the whole of the larger side: smooth
    // over a 3x3 or 5x5 window, so the edges between fields stay the sharp features.
    const double side = std::max(R, C);
    for (int k = 0; k < 3; ++k) {
        const double wavelength = side * rng.uniform(0.25, 1.0), angle = rng.uniform(0.0, two_pi);
        const double kk = two_pi / wavelength;
        l.waves.push_back({kk * std::sin(angle), kk * std::cos(angle), rng.uniform(0.0, two_pi), options.texture_db / 3.0});
    }

    l.river_row0 = R * rng.uniform(0.3, 0.7);
    l.river_amplitude = R * rng.uniform(0.05, 0.15);
    l.river_period = C * rng.uniform(0.6, 1.5);
    l.river_phase = rng.uniform(0.0, two_pi);
    l.river_half_width = 0.5 * (options.river_width > 0 ? options.river_width : std::max(2.0, R / 40.0));

    // Point targets away from the scene edge, from any possible border and from each other.
    const index_t col_lo = detail_synthetic::border_limit(cols, options) + 2, col_hi = cols - 3, row_lo = 2, row_hi = rows - 3;
    if (options.point_targets > 0 && col_lo <= col_hi && row_lo <= row_hi) {
        for (index_t attempt = 0; attempt < 100 * options.point_targets && static_cast<index_t>(l.targets.size()) < options.point_targets; ++attempt) {
            const PointTarget t{row_lo + static_cast<index_t>(rng.below(static_cast<std::uint64_t>(row_hi - row_lo + 1))),
                                col_lo + static_cast<index_t>(rng.below(static_cast<std::uint64_t>(col_hi - col_lo + 1)))};
            bool far = true;
            for (const PointTarget& o : l.targets) far = far && (std::abs(o.row - t.row) > 3 || std::abs(o.col - t.col) > 3);
            if (far) l.targets.push_back(t);
        }
    }

    l.border_width = detail_synthetic::border_widths(rows, cols, options, rng);
    return l;
}

// The clean scene of a layout in linear intensity; with_border zeroes the layout's border.
inline raster::MemoryRaster render_scene(const SceneLayout& l, bool with_border = true, std::string source = "") {
    Tensor<float> pixels = Tensor<float>::uninitialized(Shape{1, l.rows, l.cols, l.bands});
    std::vector<double> levels(static_cast<std::size_t>(l.bands));
    for (index_t r = 0; r < l.rows; ++r)
        for (index_t c = 0; c < l.cols; ++c) {
            l.background_db_pixel(r, c, levels.data());
            const double boost = l.is_target(r, c) ? l.options.point_target_db : 0.0;
            for (index_t b = 0; b < l.bands; ++b)
                pixels.at(0, r, c, b) = static_cast<float>(std::pow(10.0, (levels[static_cast<std::size_t>(b)] + boost) / 10.0));
        }
    if (with_border) detail_synthetic::apply_border(pixels, l.border_width);
    raster::RasterInfo info = detail_synthetic::scene_info(l, source.empty() ? l.options.source : std::move(source));
    return raster::MemoryRaster(std::move(info), std::move(pixels));
}

// A clean synthetic scene, [1, rows, cols, bands] linear intensity with nodata = 0 (see the top of
// this file). Add speckle with apply_speckle.
inline raster::MemoryRaster synthetic_scene(index_t rows, index_t cols, index_t bands, std::uint64_t seed,
                                            const SceneOptions& options = {}) {
    const SceneLayout l = scene_layout(rows, cols, bands, seed, options);
    return render_scene(l, true, options.source + " scene (seed " + std::to_string(seed) + ")");
}

// ---- time series --------------------------------------------------------------------------------

struct StackOptions {
    SceneOptions scene;
    index_t changed_fields = 1;   // the field under the scene centre, then others at random
    double change_db = 10.0;      // level change of those fields in every band (dB; negative: e.g. flooding)
    index_t change_date = -1;     // first date that shows the change; -1 = dates / 2
};

struct SyntheticStack {
    std::vector<raster::MemoryRaster> noisy_dates;   // speckled, each with its own no-data border
    raster::MemoryRaster clean_before, clean_after;  // clean, no border (every pixel valid)
    std::vector<std::uint8_t> change_mask;           // [rows * cols], 1 where before != after
    index_t change_date = 0;                         // dates [change_date, dates) show clean_after
    std::vector<index_t> changed_fields;             // indices into layout.field_db
    SceneLayout layout;                              // of clean_before (border: none)
};

// `dates` acquisitions of one scene with L-look speckle; see StackOptions. The layout comes from
// scene_layout(rows, cols, bands, seed, options.scene without its border), so clean_before is the
// clean scene of that seed; the changes, borders and speckle come from a second stream.
inline SyntheticStack synthetic_stack(index_t rows, index_t cols, index_t bands, index_t dates, std::uint64_t seed,
                                      double looks, const StackOptions& options = {}) {
    detail_synthetic::require_size("synthetic_stack", rows, cols, bands);
    detail_synthetic::require_looks("synthetic_stack", looks);
    if (dates <= 0) detail::fail<value_error>("synthetic_stack: dates must be positive, got ", dates);
    const index_t change_date = options.change_date < 0 ? dates / 2 : options.change_date;
    if (change_date > dates)
        detail::fail<value_error>("synthetic_stack: change_date ", change_date, " is after the last of ", dates, " dates");

    SyntheticStack s;
    s.change_date = change_date;
    SceneOptions scene = options.scene;
    scene.nodata_border = false;
    s.layout = scene_layout(rows, cols, bands, seed, scene);
    Rng rng(seed ^ 0x5eedf00d5eedf00dULL);

    const index_t fields = static_cast<index_t>(s.layout.field_db.size());
    SceneLayout after = s.layout;
    if (options.changed_fields > 0) s.changed_fields.push_back(s.layout.field_at(rows / 2, cols / 2));
    for (index_t attempt = 0; attempt < 100 && static_cast<index_t>(s.changed_fields.size()) < std::min(options.changed_fields, fields); ++attempt) {
        const auto f = static_cast<index_t>(rng.below(static_cast<std::uint64_t>(fields)));
        if (std::find(s.changed_fields.begin(), s.changed_fields.end(), f) == s.changed_fields.end()) s.changed_fields.push_back(f);
    }
    for (index_t f : s.changed_fields)
        for (double& level : after.field_db[static_cast<std::size_t>(f)]) level += options.change_db;

    const std::string name = options.scene.source + " stack (seed " + std::to_string(seed) + ")";
    s.clean_before = render_scene(s.layout, false, name + " clean before");
    s.clean_after = render_scene(after, false, name + " clean after");
    s.change_mask.assign(static_cast<std::size_t>(rows * cols), 0);
    for (index_t i = 0; i < rows * cols; ++i)
        for (index_t b = 0; b < bands; ++b)
            if (s.clean_before.pixels()[i * bands + b] != s.clean_after.pixels()[i * bands + b]) s.change_mask[static_cast<std::size_t>(i)] = 1;

    for (index_t d = 0; d < dates; ++d) {
        const std::uint64_t speckle_seed = rng.next_u64();
        Tensor<float> pixels = (d < change_date ? s.clean_before : s.clean_after).pixels();
        apply_speckle(pixels, looks, speckle_seed);
        detail_synthetic::apply_border(pixels, detail_synthetic::border_widths(rows, cols, options.scene, rng));
        raster::RasterInfo info = s.clean_before.info();
        info.source = name + " date " + std::to_string(d);
        s.noisy_dates.emplace_back(std::move(info), std::move(pixels));
    }
    return s;
}

}  // namespace despeck::data
