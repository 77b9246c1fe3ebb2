// Gamma speckle statistics (moments with tolerances from their standard errors, and the whole
// distribution by a Kolmogorov-Smirnov test), synthetic scenes (every promised feature) and
// synthetic stacks (dates differ only by speckle, except in the changed area).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "despeck/data/synthetic.hpp"
#include "despeck/data/units.hpp"

using namespace despeck;

namespace {

// Regularised lower incomplete gamma P(a, x) (series below a + 1, Lentz continued fraction above),
// accurate to ~1e-12: the CDF of Gamma(a, 1).
double gamma_p(double a, double x) {
    if (x <= 0) return 0;
    const double log_prefix = -x + a * std::log(x) - std::lgamma(a);
    if (x < a + 1) {
        double term = 1.0 / a, sum = term;
        for (int n = 1; n < 10000; ++n) {
            term *= x / (a + n);
            sum += term;
            if (term < sum * 1e-16) break;
        }
        return sum * std::exp(log_prefix);
    }
    constexpr double tiny = 1e-300;
    double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
    for (int i = 1; i < 10000; ++i) {
        const double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (std::abs(d) < tiny) d = tiny;
        c = b + an / c;
        if (std::abs(c) < tiny) c = tiny;
        d = 1 / d;
        const double delta = d * c;
        h *= delta;
        if (std::abs(delta - 1) < 1e-16) break;
    }
    return 1 - std::exp(log_prefix) * h;
}

double db_at(const raster::MemoryRaster& r, index_t row, index_t col, index_t band) {
    return 10.0 * std::log10(static_cast<double>(r.pixels().at(0, row, col, band)));
}

bool same_pixels(const Tensor<float>& a, const Tensor<float>& b) {
    return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.size(), b.data());
}

}  // namespace

TEST_CASE("synthetic: Gamma speckle has mean 1, variance 1/L and the Gamma(L, 1/L) distribution") {
    constexpr index_t n = 200000;
    for (double looks : {1.0, 4.4, 10.0, 0.6}) {
        const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(looks * 10);
        INFO("looks " << looks << ", seed " << seed << ", " << n << " samples");
        Rng rng(seed);
        std::vector<double> s(static_cast<std::size_t>(n));
        double sum = 0;
        for (auto& v : s) {
            v = data::gamma_speckle(rng, looks);
            REQUIRE(v > 0);
            sum += v;
        }
        const double mean = sum / n;
        double ss = 0;
        for (double v : s) ss += (v - mean) * (v - mean);
        const double var = ss / (n - 1);
        // Standard errors: Var = 1/L, so SE(mean) = sqrt(1/(L n)); the fourth central moment of
        // Gamma(L, 1/L) is sigma^4 (3 + 6/L), so SE(var) = sigma^2 sqrt((2 + 6/L) / n). Five
        // standard errors: a false failure has probability < 1e-6.
        const double sigma2 = 1.0 / looks;
        const double se_mean = std::sqrt(sigma2 / n), se_var = sigma2 * std::sqrt((2.0 + 6.0 / looks) / n);
        INFO("mean " << mean << " (SE " << se_mean << "), variance " << var << " vs " << sigma2 << " (SE " << se_var << ")");
        CHECK(std::abs(mean - 1.0) < 5 * se_mean);
        CHECK(std::abs(var - sigma2) < 5 * se_var);

        // Kolmogorov-Smirnov against the exact CDF P(L, L x); 1.95 / sqrt(n) is the 0.1% point.
        std::sort(s.begin(), s.end());
        double ks = 0;
        for (index_t i = 0; i < n; ++i) {
            const double f = gamma_p(looks, looks * s[static_cast<std::size_t>(i)]);
            ks = std::max({ks, static_cast<double>(i + 1) / n - f, f - static_cast<double>(i) / n});
        }
        INFO("KS distance " << ks);
        CHECK(ks < 1.95 / std::sqrt(static_cast<double>(n)));
    }
}

TEST_CASE("synthetic: amplitude speckle is Nakagami (E[A^2] = 1, E[A] = Gamma(L+1/2) / (Gamma(L) sqrt(L)))") {
    constexpr index_t n = 200000;
    const double looks = 4.4;
    Rng rng(77);
    double sum = 0, sum2 = 0;
    for (index_t i = 0; i < n; ++i) {
        const double a = data::amplitude_speckle(rng, looks);
        sum += a;
        sum2 += a * a;
    }
    const double expected = std::exp(std::lgamma(looks + 0.5) - std::lgamma(looks)) / std::sqrt(looks);
    const double var_a = 1.0 - expected * expected;
    INFO("mean " << sum / n << " vs " << expected);
    CHECK(std::abs(sum / n - expected) < 5 * std::sqrt(var_a / n));
    CHECK(std::abs(sum2 / n - 1.0) < 5 * std::sqrt(1.0 / looks / n));
}

TEST_CASE("synthetic: speckle is reproducible from its seed and rejects bad looks") {
    Rng a(5), b(5), c(6);
    bool differs = false;
    for (int i = 0; i < 1000; ++i) {
        const float x = data::gamma_speckle(a, 2.5), y = data::gamma_speckle(b, 2.5), z = data::gamma_speckle(c, 2.5);
        CHECK(x == y);
        differs = differs || x != z;
    }
    CHECK(differs);
    Rng r(1);
    for (double bad : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
        CHECK_THROWS_WITH_AS(data::gamma_speckle(r, bad), doctest::Contains("looks"), value_error);
        Tensor<float> t(Shape{1, 1, 1, 1}, 1.0f);
        CHECK_THROWS_AS(data::apply_speckle(t, bad, 1), value_error);
    }
}

TEST_CASE("synthetic: apply_speckle multiplies valid intensities and leaves no-data alone") {
    Tensor<float> flat(Shape{1, 40, 50, 2}, 0.25f);
    Tensor<float> holes = flat;
    holes[0] = 0.0f;
    holes[1] = std::nanf("");
    holes[2] = -1.0f;
    holes[3] = -9999.0f;
    holes[4] = 7.0f;  // the declared no-data value below
    data::apply_speckle(flat, 4.4, 99);
    data::apply_speckle(holes, 4.4, 99, 7.0);
    CHECK(holes[0] == 0.0f);
    CHECK(std::isnan(holes[1]));
    CHECK(holes[2] == -1.0f);
    CHECK(holes[3] == -9999.0f);
    CHECK(holes[4] == 7.0f);
    // The speckle of an element depends only on the seed and its index, not on the holes.
    for (index_t i = 5; i < flat.size(); ++i) CHECK(holes[i] == flat[i]);
    Tensor<float> again(Shape{1, 40, 50, 2}, 0.25f);
    data::apply_speckle(again, 4.4, 99);
    CHECK(same_pixels(again, flat));
    double sum = 0;
    for (index_t i = 0; i < flat.size(); ++i) sum += flat[i] / 0.25;
    CHECK(std::abs(sum / flat.size() - 1.0) < 5 * std::sqrt(1.0 / 4.4 / flat.size()));
}

TEST_CASE("synthetic: a scene has fields, texture, a river, point targets, VH below VV and a no-data border") {
    const index_t rows = 96, cols = 128, bands = 2;
    const std::uint64_t seed = 2024;
    INFO("seed " << seed);
    const data::SceneOptions opt;
    const data::SceneLayout layout = data::scene_layout(rows, cols, bands, seed, opt);
    const raster::MemoryRaster scene = data::synthetic_scene(rows, cols, bands, seed, opt);
    const raster::RasterInfo& info = scene.info();
    CHECK(scene.pixels().shape() == Shape{1, rows, cols, bands});
    CHECK(info.units == raster::Units::linear_intensity);
    REQUIRE(info.nodata.has_value());
    CHECK(*info.nodata == 0.0);
    CHECK(info.band_names == std::vector<std::string>{"VV", "VH"});
    CHECK(info.geo.has_crs());
    CHECK(info.geo.geotransform().has_value());

    // Deterministic from the seed; another seed gives another scene.
    CHECK(same_pixels(data::synthetic_scene(rows, cols, bands, seed, opt).pixels(), scene.pixels()));
    CHECK_FALSE(same_pixels(data::synthetic_scene(rows, cols, bands, seed + 1, opt).pixels(), scene.pixels()));

    // No-data border: in every row exactly the first border_width[r] pixels are 0 (all bands),
    // of irregular width; everything else is a valid, finite, positive intensity.
    REQUIRE(layout.border_width.size() == static_cast<std::size_t>(rows));
    index_t border_pixels = 0;
    for (index_t r = 0; r < rows; ++r) {
        const index_t w = layout.border_width[static_cast<std::size_t>(r)];
        CHECK(w >= 1);
        border_pixels += w;
        for (index_t c = 0; c < cols; ++c)
            for (index_t b = 0; b < bands; ++b) {
                const float v = scene.pixels().at(0, r, c, b);
                if (c < w) CHECK(v == 0.0f);
                else CHECK((std::isfinite(v) && v > 0.0f));
            }
    }
    const auto [wmin, wmax] = std::minmax_element(layout.border_width.begin(), layout.border_width.end());
    CHECK(*wmax > *wmin);
    const auto mask = data::valid_mask(scene.pixels(), info.units, info.nodata);
    CHECK(data::count_valid(mask) == rows * cols - border_pixels);

    // Every pixel is its layout's clean level (what the other checks below rely on).
    double worst = 0;
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = layout.border_width[static_cast<std::size_t>(r)]; c < cols; ++c)
            for (index_t b = 0; b < bands; ++b) worst = std::max(worst, std::abs(db_at(scene, r, c, b) - layout.clean_db(r, c, b)));
    CHECK(worst < 1e-4);

    // Point targets: 15 dB above their background, in both bands, and 14.5..15.5 dB above the
    // neighbours of the same field (the texture changes by far less than 0.5 dB per pixel).
    CHECK(layout.targets.size() == static_cast<std::size_t>(opt.point_targets));
    for (const data::PointTarget& t : layout.targets) {
        INFO("target at row " << t.row << ", col " << t.col);
        CHECK(t.col >= layout.border_width[static_cast<std::size_t>(t.row)]);
        for (index_t b = 0; b < bands; ++b) {
            CHECK(db_at(scene, t.row, t.col, b) - layout.background_db(t.row, t.col, b) == doctest::Approx(15.0).epsilon(1e-5));
            const index_t field = layout.field_at(t.row, t.col);
            int compared = 0;
            for (index_t dr = -1; dr <= 1; ++dr)
                for (index_t dc = -1; dc <= 1; ++dc) {
                    const index_t r = t.row + dr, c = t.col + dc;
                    if ((dr == 0 && dc == 0) || layout.field_at(r, c) != field || layout.in_river(r, c) ||
                        layout.in_river(t.row, t.col))
                        continue;
                    const double step = db_at(scene, t.row, t.col, b) - db_at(scene, r, c, b);
                    CHECK((step > 14.5 && step < 15.5));
                    ++compared;
                }
            if (!layout.in_river(t.row, t.col)) CHECK(compared > 0);
        }
    }

    // Fields: several, with sharp edges (the step between two neighbouring fields is their level
    // difference) and smooth insides (neighbours in one field differ by the texture only).
    std::set<index_t> fields;
    index_t edges = 0;
    double worst_edge = 0, worst_inside = 0;
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = layout.border_width[static_cast<std::size_t>(r)]; c + 1 < cols; ++c) {
            const index_t f = layout.field_at(r, c), g = layout.field_at(r, c + 1);
            fields.insert(f);
            if (layout.in_river(r, c) || layout.in_river(r, c + 1) || layout.is_target(r, c) || layout.is_target(r, c + 1)) continue;
            const double step = db_at(scene, r, c + 1, 0) - db_at(scene, r, c, 0);
            if (f == g) {
                worst_inside = std::max(worst_inside, std::abs(step));
            } else {
                ++edges;
                const double level_step = layout.field_db[static_cast<std::size_t>(g)][0] - layout.field_db[static_cast<std::size_t>(f)][0];
                worst_edge = std::max(worst_edge, std::abs(step - level_step));
            }
        }
    CHECK(fields.size() >= 6);
    CHECK(edges > rows);
    CHECK(worst_edge < 0.3);  // 3 waves of 1/3 dB, wavelength >= 32 px: <= 0.2 dB per pixel, + the trend
    CHECK(worst_inside < 0.3);
    CHECK(worst_inside > 0.0);  // there is a texture

    // The river crosses the scene from left to right at the water level (+ the trend only).
    for (index_t c = 0; c < cols; ++c) {
        index_t wet = 0;
        for (index_t r = 0; r < rows; ++r)
            if (layout.in_river(r, c)) {
                ++wet;
                if (c >= layout.border_width[static_cast<std::size_t>(r)] && !layout.is_target(r, c))
                    CHECK(db_at(scene, r, c, 0) == doctest::Approx(opt.river_db + layout.trend_db(c)).epsilon(1e-5));
            }
        CHECK(wet >= 2);
    }

    // VH is vh_offset_db +- vh_spread_db below VV on land, exactly vh_offset_db on water.
    double ratio_sum = 0;
    index_t ratio_count = 0;
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = layout.border_width[static_cast<std::size_t>(r)]; c < cols; ++c) {
            const double ratio = db_at(scene, r, c, 1) - db_at(scene, r, c, 0);
            CHECK((ratio >= opt.vh_offset_db - opt.vh_spread_db - 1e-3 && ratio <= opt.vh_offset_db + opt.vh_spread_db + 1e-3));
            ratio_sum += ratio;
            ++ratio_count;
        }
    CHECK(ratio_sum / ratio_count < -3.0);
}

TEST_CASE("synthetic: scene options and errors") {
    data::SceneOptions no_border;
    no_border.nodata_border = false;
    const data::SceneLayout with = data::scene_layout(64, 80, 1, 3), without = data::scene_layout(64, 80, 1, 3, no_border);
    CHECK(without.border_width.empty());
    CHECK(with.site_row == without.site_row);  // switching the border off changes nothing else
    CHECK(with.field_db == without.field_db);
    CHECK(with.targets.size() == without.targets.size());
    const raster::MemoryRaster clear = data::synthetic_scene(64, 80, 1, 3, no_border);
    CHECK(data::count_valid(data::valid_mask(clear.pixels(), clear.info().units, clear.info().nodata)) == 64 * 80);

    // Tiny scenes work (no border below 8 columns, no room for targets).
    const raster::MemoryRaster tiny = data::synthetic_scene(3, 4, 2, 1);
    CHECK(tiny.pixels().shape() == Shape{1, 3, 4, 2});
    CHECK(data::count_valid(data::valid_mask(tiny.pixels(), tiny.info().units, tiny.info().nodata)) == 12);

    CHECK_THROWS_WITH_AS(data::synthetic_scene(0, 10, 1, 1), doctest::Contains("0 x 10 x 1"), value_error);
    CHECK_THROWS_AS(data::synthetic_scene(10, 10, 0, 1), value_error);
    CHECK_THROWS_AS(data::synthetic_stack(10, 10, 1, 0, 1, 4.4), value_error);
    CHECK_THROWS_AS(data::synthetic_stack(10, 10, 1, 3, 1, -4.4), value_error);
}

TEST_CASE("synthetic: stack dates differ only by speckle, except in the changed area") {
    const index_t rows = 64, cols = 96, bands = 2, dates = 6;
    const double looks = 4.4;
    const std::uint64_t seed = 808;
    INFO("seed " << seed);
    const data::SyntheticStack s = data::synthetic_stack(rows, cols, bands, dates, seed, looks);
    REQUIRE(s.noisy_dates.size() == static_cast<std::size_t>(dates));
    CHECK(s.change_date == dates / 2);
    CHECK(s.changed_fields.size() == 1);

    // Clean references: clean_before is the seed's clean scene without a border; they agree
    // outside the change mask and differ by change_db inside it, which is the changed field.
    data::SceneOptions no_border;
    no_border.nodata_border = false;
    CHECK(same_pixels(s.clean_before.pixels(), data::synthetic_scene(rows, cols, bands, seed, no_border).pixels()));
    REQUIRE(s.change_mask.size() == static_cast<std::size_t>(rows * cols));
    const index_t changed = data::count_valid(s.change_mask);
    CHECK(changed > 100);
    CHECK(changed < rows * cols / 2);
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = 0; c < cols; ++c) {
            const bool in_change = s.change_mask[static_cast<std::size_t>(r * cols + c)] != 0;
            if (in_change) CHECK(s.layout.field_at(r, c) == s.changed_fields[0]);
            for (index_t b = 0; b < bands; ++b) {
                if (in_change) {
                    const double step = db_at(s.clean_after, r, c, b) - db_at(s.clean_before, r, c, b);
                    CHECK(step == doctest::Approx(data::StackOptions{}.change_db).epsilon(1e-4));
                } else {
                    CHECK(s.clean_after.pixels().at(0, r, c, b) == s.clean_before.pixels().at(0, r, c, b));
                }
            }
        }

    // Each date = its clean reference x Gamma speckle on its own valid area: the ratio has mean 1
    // and variance 1/L (tolerances of 5 standard errors, as for the speckle test); the other
    // reference is 10 dB off in the changed area. Dates' borders and speckle are their own.
    std::vector<std::vector<std::uint8_t>> borders;  // distinct valid masks seen so far
    for (index_t d = 0; d < dates; ++d) {
        INFO("date " << d);
        const raster::MemoryRaster& date = s.noisy_dates[static_cast<std::size_t>(d)];
        CHECK(date.info().geo == s.clean_before.info().geo);
        CHECK(date.info().source.find("date " + std::to_string(d)) != std::string::npos);
        const auto mask = data::valid_mask(date.pixels(), date.info().units, date.info().nodata);
        if (std::find(borders.begin(), borders.end(), mask) == borders.end()) borders.push_back(mask);
        const raster::MemoryRaster& right = d < s.change_date ? s.clean_before : s.clean_after;
        const raster::MemoryRaster& wrong = d < s.change_date ? s.clean_after : s.clean_before;
        double sum = 0, sum2 = 0, wrong_sum = 0;
        index_t n = 0, wrong_n = 0;
        for (index_t r = 0; r < rows; ++r) {
            index_t zeros = 0;
            for (index_t c = 0; c < cols; ++c) {
                const std::size_t p = static_cast<std::size_t>(r * cols + c);
                if (!mask[p]) {
                    CHECK(zeros == c);  // no-data only as a run from the left edge
                    ++zeros;
                    CHECK(date.pixels().at(0, r, c, 0) == 0.0f);
                    continue;
                }
                for (index_t b = 0; b < bands; ++b) {
                    const double q = date.pixels().at(0, r, c, b) / right.pixels().at(0, r, c, b);
                    sum += q;
                    sum2 += q * q;
                    ++n;
                    if (s.change_mask[p]) {
                        wrong_sum += date.pixels().at(0, r, c, b) / wrong.pixels().at(0, r, c, b);
                        ++wrong_n;
                    }
                }
            }
            CHECK(zeros >= 1);
        }
        const double mean = sum / n, var = sum2 / n - mean * mean, sigma2 = 1.0 / looks;
        CHECK(std::abs(mean - 1.0) < 5 * std::sqrt(sigma2 / n));
        CHECK(std::abs(var - sigma2) < 5 * sigma2 * std::sqrt((2.0 + 6.0 / looks) / n));
        const double wrong_mean = wrong_sum / wrong_n;
        CHECK((d < s.change_date ? wrong_mean < 0.2 : wrong_mean > 5.0));
    }
    CHECK(borders.size() == static_cast<std::size_t>(dates));

    // Independent speckle between dates: over the values valid on both of two dates before the
    // change, the correlation of their speckle is within 5 / sqrt(n) of 0 (its SE is 1 / sqrt(n)).
    std::vector<double> x, y;
    const auto ma = data::valid_mask(s.noisy_dates[0].pixels(), raster::Units::linear_intensity, 0.0);
    const auto mb = data::valid_mask(s.noisy_dates[1].pixels(), raster::Units::linear_intensity, 0.0);
    for (std::size_t p = 0; p < ma.size(); ++p)
        if (ma[p] && mb[p])
            for (index_t k = 0; k < bands; ++k) {
                const index_t e = static_cast<index_t>(p) * bands + k;
                x.push_back(s.noisy_dates[0].pixels()[e] / s.clean_before.pixels()[e]);
                y.push_back(s.noisy_dates[1].pixels()[e] / s.clean_before.pixels()[e]);
            }
    REQUIRE(x.size() > 1000);
    double mx = 0, my = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        mx += x[i];
        my += y[i];
    }
    mx /= static_cast<double>(x.size());
    my /= static_cast<double>(y.size());
    double sxy = 0, sxx = 0, syy = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    const double rho = sxy / std::sqrt(sxx * syy);
    INFO("correlation of dates 0 and 1: " << rho << " over " << x.size() << " values");
    CHECK(std::abs(rho) < 5.0 / std::sqrt(static_cast<double>(x.size())));

    // Reproducible from the seed.
    const data::SyntheticStack again = data::synthetic_stack(rows, cols, bands, dates, seed, looks);
    for (index_t d = 0; d < dates; ++d)
        CHECK(same_pixels(again.noisy_dates[static_cast<std::size_t>(d)].pixels(), s.noisy_dates[static_cast<std::size_t>(d)].pixels()));
    CHECK(again.change_mask == s.change_mask);
}
