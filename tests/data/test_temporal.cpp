// The temporal reference: median, std and mask against a brute-force computation on random stacks
// with no-data holes and mixed units; independence from block_rows; streaming with flat memory;
// errors; and on a synthetic stack, the mask finds the change and the median finds the clean scene.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "despeck/data/synthetic.hpp"
#include "despeck/data/temporal.hpp"

using namespace despeck;
using raster::Units;

namespace {

raster::GeoReference test_geo() {
    raster::GeoReference g;
    g.pixel_scale = {20.0, 20.0, 0.0};
    g.tiepoints = {0, 0, 0, 300000.0, 4600000.0, 0};
    g.geo_keys = {1, 1, 0, 1, 3072, 0, 1, 32633};
    return g;
}

// A stack whose dates cycle through linear intensity (no-data 0), amplitude (no-data -1) and dB
// (no-data -9999), with holes of every kind in single bands. Pixel 0 is invalid on every date,
// pixel 1 valid on date 0 only.
std::vector<raster::MemoryRaster> random_stack(index_t rows, index_t cols, index_t bands, index_t dates, std::uint64_t seed,
                                               double hole_rate = 0.25) {
    Rng rng(seed);
    std::vector<double> base(static_cast<std::size_t>(rows * cols * bands));
    for (double& b : base) b = rng.uniform(-15.0, -5.0);
    std::vector<raster::MemoryRaster> out;
    for (index_t d = 0; d < dates; ++d) {
        raster::RasterInfo info;
        info.rows = rows;
        info.cols = cols;
        info.bands = bands;
        info.units = d % 3 == 0 ? Units::linear_intensity : d % 3 == 1 ? Units::amplitude : Units::db;
        info.nodata = d % 3 == 0 ? 0.0 : d % 3 == 1 ? -1.0 : -9999.0;
        info.geo = test_geo();
        info.source = "random_date_" + std::to_string(d) + ".tif";
        Tensor<float> pixels(Shape{1, rows, cols, bands});
        for (index_t i = 0; i < pixels.size(); ++i) {
            const double db = base[static_cast<std::size_t>(i)] + rng.uniform(-4.0, 4.0);
            pixels[i] = static_cast<float>(info.units == Units::linear_intensity ? std::pow(10.0, db / 10)
                                           : info.units == Units::amplitude      ? std::pow(10.0, db / 20)
                                                                                 : db);
        }
        for (index_t p = 0; p < rows * cols; ++p) {
            if (p == 1 && d == 0) continue;
            const bool force = p == 0 || p == 1;
            if (!force && rng.uniform() >= hole_rate) continue;
            const index_t b = static_cast<index_t>(rng.below(static_cast<std::uint64_t>(bands)));
            float& v = pixels[p * bands + b];
            switch (rng.below(4)) {
                case 0: v = static_cast<float>(*info.nodata); break;
                case 1: v = std::numeric_limits<float>::quiet_NaN(); break;
                case 2: v = -std::numeric_limits<float>::infinity(); break;
                default: v = info.units == Units::db ? static_cast<float>(*info.nodata) : -0.5f; break;
            }
        }
        out.emplace_back(std::move(info), std::move(pixels));
    }
    return out;
}

std::vector<raster::RasterSource*> sources_of(std::vector<raster::MemoryRaster>& rasters) {
    std::vector<raster::RasterSource*> s;
    for (auto& r : rasters) s.push_back(&r);
    return s;
}

// Written separately from the library: validity, dB and statistics by their definitions.
struct BruteForce {
    std::vector<double> median, sd;   // [rows * cols * bands], NaN where no valid date
    std::vector<int> count;           // valid dates per pixel
    std::vector<std::uint8_t> mask;
};
BruteForce brute_force(const std::vector<raster::MemoryRaster>& stack, double max_std_db, int min_valid) {
    const raster::RasterInfo& i0 = stack[0].info();
    const index_t pixels = i0.rows * i0.cols, bands = i0.bands;
    BruteForce r;
    r.median.assign(static_cast<std::size_t>(pixels * bands), std::nan(""));
    r.sd = r.median;
    r.count.assign(static_cast<std::size_t>(pixels), 0);
    r.mask.assign(static_cast<std::size_t>(pixels), 0);
    auto valid = [](float v, const raster::RasterInfo& info) {
        if (std::isnan(v) || std::isinf(v)) return false;
        if (info.nodata && v == static_cast<float>(*info.nodata)) return false;
        return info.units == Units::db || v > 0;
    };
    auto to_db = [](float v, Units u) {
        return u == Units::linear_intensity ? 10 * std::log10(double(v)) : u == Units::amplitude ? 20 * std::log10(double(v)) : double(v);
    };
    for (index_t p = 0; p < pixels; ++p) {
        std::vector<std::vector<double>> values(static_cast<std::size_t>(bands));
        for (const auto& date : stack) {
            bool all = true;
            for (index_t b = 0; b < bands; ++b) all = all && valid(date.pixels()[p * bands + b], date.info());
            if (!all) continue;
            for (index_t b = 0; b < bands; ++b)
                values[static_cast<std::size_t>(b)].push_back(to_db(date.pixels()[p * bands + b], date.info().units));
        }
        const auto n = values[0].size();
        r.count[static_cast<std::size_t>(p)] = static_cast<int>(n);
        bool stable = static_cast<int>(n) >= min_valid;
        for (index_t b = 0; b < bands && n > 0; ++b) {
            auto v = values[static_cast<std::size_t>(b)];
            std::sort(v.begin(), v.end());
            const double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
            double s1 = 0, s2 = 0;
            for (double x : v) {
                s1 += x;
                s2 += x * x;
            }
            const double sd = std::sqrt(std::max(0.0, s2 / n - (s1 / n) * (s1 / n)));
            r.median[static_cast<std::size_t>(p * bands + b)] = med;
            r.sd[static_cast<std::size_t>(p * bands + b)] = sd;
            stable = stable && sd <= max_std_db;
        }
        r.mask[static_cast<std::size_t>(p)] = stable ? 1 : 0;
    }
    return r;
}

// Compares a result with the brute force; pixels whose std is within 1e-4 dB of the threshold
// are not compared for the mask (float dB rounding could put them either side).
void check_against_brute_force(const data::TemporalResult& res, const BruteForce& bf, double max_std_db) {
    const Tensor<float>& med = res.median_db.pixels();
    const Tensor<float>& sd = res.std_db.pixels();
    const index_t bands = med.dim(3);
    double worst_median = 0, worst_sd = 0;
    index_t mask_compared = 0;
    for (std::size_t p = 0; p < bf.count.size(); ++p) {
        bool near_threshold = false;
        for (index_t b = 0; b < bands; ++b) {
            const auto e = static_cast<index_t>(p) * bands + b;
            if (bf.count[p] == 0) {
                CHECK(std::isnan(med[e]));
                CHECK(std::isnan(sd[e]));
                continue;
            }
            worst_median = std::max(worst_median, std::abs(med[e] - bf.median[static_cast<std::size_t>(e)]));
            worst_sd = std::max(worst_sd, std::abs(sd[e] - bf.sd[static_cast<std::size_t>(e)]));
            near_threshold = near_threshold || std::abs(bf.sd[static_cast<std::size_t>(e)] - max_std_db) < 1e-4;
        }
        if (!near_threshold) {
            CHECK(res.mask[p] == bf.mask[p]);
            ++mask_compared;
        }
    }
    CHECK(worst_median < 2e-4);  // float dB of values up to ~20 dB: a few ulp of 2e-6
    CHECK(worst_sd < 2e-4);
    CHECK(mask_compared > static_cast<index_t>(bf.count.size()) * 9 / 10);
}

bool identical(const Tensor<float>& a, const Tensor<float>& b) {
    if (a.shape() != b.shape()) return false;
    for (index_t i = 0; i < a.size(); ++i)
        if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
    return true;
}

// Records what is read from a source: the largest block and how often each row is read.
class SpySource : public raster::RasterSource {
public:
    explicit SpySource(raster::RasterSource& inner) : reads(static_cast<std::size_t>(inner.info().rows), 0), inner_(inner) {}
    const raster::RasterInfo& info() const override { return inner_.info(); }
    Tensor<float> read_rows(index_t row0, index_t count) override {
        max_count = std::max(max_count, count);
        for (index_t r = row0; r < row0 + count; ++r) ++reads[static_cast<std::size_t>(r)];
        return inner_.read_rows(row0, count);
    }
    index_t max_count = 0;
    std::vector<int> reads;

private:
    raster::RasterSource& inner_;
};

// A broken source that returns blocks of the wrong width.
class ShortSource : public raster::RasterSource {
public:
    explicit ShortSource(raster::RasterInfo info) : info_(std::move(info)) {}
    const raster::RasterInfo& info() const override { return info_; }
    Tensor<float> read_rows(index_t, index_t count) override { return Tensor<float>(Shape{1, count, info_.cols - 1, info_.bands}, 1.0f); }

private:
    raster::RasterInfo info_;
};

}  // namespace

TEST_CASE("temporal: median, std and mask equal a brute-force computation, with holes and mixed units") {
    const std::uint64_t seed = 4242;
    INFO("seed " << seed);
    auto stack = random_stack(13, 11, 2, 6, seed);
    data::TemporalOptions opt;
    opt.max_std_db = 2.3;
    opt.block_rows = 5;
    const data::TemporalResult res = data::temporal_reference(sources_of(stack), opt);
    const BruteForce bf = brute_force(stack, opt.max_std_db, 2);

    // The data cover what is meant to be tested: no valid date, one, and odd and even counts >= 2,
    // and both mask values.
    int none = 0, one = 0, odd = 0, even = 0;
    for (int c : bf.count) {
        none += c == 0;
        one += c == 1;
        odd += c >= 3 && c % 2 == 1;
        even += c >= 2 && c % 2 == 0;
    }
    CHECK(none >= 1);
    CHECK(one >= 1);
    CHECK(odd >= 10);
    CHECK(even >= 10);
    CHECK(data::count_valid(res.mask) >= 10);
    CHECK(data::count_valid(res.mask) <= static_cast<index_t>(res.mask.size()) - 10);

    check_against_brute_force(res, bf, opt.max_std_db);
    CHECK(res.mask[0] == 0);
    CHECK(res.mask[1] == 0);  // one valid date: std 0, but not enough dates
    CHECK(res.std_db.pixels()[2] == 0.0f);
    CHECK(res.dates == 6);

    // min_valid_dates = 1 admits the single-date pixel.
    data::TemporalOptions one_date = opt;
    one_date.min_valid_dates = 1;
    const data::TemporalResult res1 = data::temporal_reference(sources_of(stack), one_date);
    check_against_brute_force(res1, brute_force(stack, opt.max_std_db, 1), opt.max_std_db);
    CHECK(res1.mask[1] == 1);

    // The outputs describe themselves: dB, the stack's grid, the no-data of empty pixels.
    const raster::RasterInfo& mi = res.median_db.info();
    CHECK(mi.units == Units::db);
    CHECK(mi.rows == 13);
    CHECK(mi.cols == 11);
    CHECK(mi.bands == 2);
    CHECK(mi.geo == test_geo());
    REQUIRE(mi.nodata.has_value());
    CHECK(std::isnan(*mi.nodata));
    CHECK(res.std_db.info().source.find("std") != std::string::npos);
    const raster::MemoryRaster m = res.mask_raster();
    CHECK(m.pixels().shape() == Shape{1, 13, 11, 1});
    for (std::size_t p = 0; p < res.mask.size(); ++p) CHECK(m.pixels()[static_cast<index_t>(p)] == float(res.mask[p]));
    CHECK(m.info().geo == test_geo());

    // A finite value for empty pixels, when NaN is not wanted.
    data::TemporalOptions filled = opt;
    filled.empty_value = -99.0f;
    const data::TemporalResult rf = data::temporal_reference(sources_of(stack), filled);
    CHECK(rf.median_db.pixels()[0] == -99.0f);
    CHECK(rf.std_db.pixels()[1] == -99.0f);
    CHECK(*rf.median_db.info().nodata == -99.0);
}

TEST_CASE("temporal: 60 dates") {
    auto stack = random_stack(4, 5, 1, 60, 60, 0.3);
    data::TemporalOptions opt;
    opt.max_std_db = 2.3;
    const data::TemporalResult res = data::temporal_reference(sources_of(stack), opt);
    check_against_brute_force(res, brute_force(stack, opt.max_std_db, 2), opt.max_std_db);
}

TEST_CASE("temporal: the result does not depend on block_rows, and blocks stream in row order with flat memory") {
    auto stack = random_stack(13, 11, 2, 5, 77);
    data::TemporalOptions opt;
    opt.max_std_db = 2.3;
    opt.block_rows = 13;
    const data::TemporalResult whole = data::temporal_reference(sources_of(stack), opt);
    for (index_t block : {1, 7, 1000}) {
        INFO("block_rows " << block);
        opt.block_rows = block;
        const data::TemporalResult r = data::temporal_reference(sources_of(stack), opt);
        CHECK(identical(r.median_db.pixels(), whole.median_db.pixels()));
        CHECK(identical(r.std_db.pixels(), whole.std_db.pixels()));
        CHECK(r.mask == whole.mask);
    }

    // Streaming: rows [0,4), [4,8), [8,12), [12,13) in order; every source read once per row and
    // never more than block_rows rows at a time; the blocks put together are the whole result.
    std::vector<std::unique_ptr<SpySource>> spies;
    std::vector<raster::RasterSource*> sources;
    for (auto& r : stack) {
        spies.push_back(std::make_unique<SpySource>(r));
        sources.push_back(spies.back().get());
    }
    opt.block_rows = 4;
    std::vector<index_t> starts;
    Tensor<float> median(Shape{1, 13, 11, 2}, -1.0f), spread(Shape{1, 13, 11, 2}, -1.0f);
    std::vector<std::uint8_t> mask;
    data::temporal_reference_blocks(
        sources,
        [&](index_t row0, const Tensor<float>& m, const Tensor<float>& s, const std::vector<std::uint8_t>& k) {
            starts.push_back(row0);
            const index_t count = std::min<index_t>(4, 13 - row0);
            CHECK(m.shape() == Shape{1, count, 11, 2});
            CHECK(s.shape() == m.shape());
            CHECK(k.size() == static_cast<std::size_t>(count * 11));
            std::copy(m.data(), m.data() + m.size(), median.data() + row0 * 22);
            std::copy(s.data(), s.data() + s.size(), spread.data() + row0 * 22);
            mask.insert(mask.end(), k.begin(), k.end());
        },
        opt);
    CHECK(starts == std::vector<index_t>{0, 4, 8, 12});
    CHECK(identical(median, whole.median_db.pixels()));
    CHECK(identical(spread, whole.std_db.pixels()));
    CHECK(mask == whole.mask);
    for (const auto& spy : spies) {
        CHECK(spy->max_count == 4);
        CHECK(std::all_of(spy->reads.begin(), spy->reads.end(), [](int n) { return n == 1; }));
    }
    const raster::RasterInfo info = data::temporal_output_info(sources, opt, "median");
    CHECK(info.units == Units::db);
    CHECK(info.rows == 13);
}

TEST_CASE("temporal: errors name the offending source and both sizes") {
    auto stack = random_stack(13, 11, 2, 3, 5);
    CHECK_THROWS_WITH_AS(data::temporal_reference({}), doctest::Contains("empty"), value_error);

    {
        auto other = random_stack(12, 11, 2, 1, 6);
        other[0].info().source = "date2_small.tif";
        auto sources = sources_of(stack);
        sources.push_back(&other[0]);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("date2_small.tif"), value_error);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("12 rows x 11 cols x 2 bands"), value_error);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("13 rows x 11 cols x 2 bands"), value_error);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("random_date_0.tif"), value_error);
    }
    {
        auto other = random_stack(13, 11, 1, 1, 6);
        other[0].info().source = "vv_only.tif";
        auto sources = sources_of(stack);
        sources.insert(sources.begin() + 1, &other[0]);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("vv_only.tif"), value_error);
    }
    {
        auto other = random_stack(13, 11, 2, 1, 6);
        other[0].info().source = "shifted.tif";
        other[0].info().geo.tiepoints[3] += 20.0;  // one pixel east
        auto sources = sources_of(stack);
        sources.push_back(&other[0]);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("shifted.tif"), value_error);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("tie points"), value_error);
        other[0].info().geo = test_geo();
        other[0].info().geo.geo_keys.back() = 32632;
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("CRS"), value_error);
        other[0].info().geo = test_geo();
        CHECK_NOTHROW(data::temporal_reference(sources));
        other[0].info().units = Units::unknown;
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("shifted.tif"), value_error);
    }
    {
        auto sources = sources_of(stack);
        sources.push_back(nullptr);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("null"), value_error);
    }
    {
        ShortSource bad(stack[0].info());
        auto sources = sources_of(stack);
        sources.push_back(&bad);
        CHECK_THROWS_WITH_AS(data::temporal_reference(sources), doctest::Contains("[1,13,10,2]"), io_error);
    }
    auto sources = sources_of(stack);
    data::TemporalOptions bad;
    bad.block_rows = 0;
    CHECK_THROWS_WITH_AS(data::temporal_reference(sources, bad), doctest::Contains("block_rows"), value_error);
    bad = {};
    bad.min_valid_dates = 4;
    CHECK_THROWS_WITH_AS(data::temporal_reference(sources, bad), doctest::Contains("min_valid_dates"), value_error);
    bad.min_valid_dates = 0;
    CHECK_THROWS_AS(data::temporal_reference(sources, bad), value_error);
    bad = {};
    bad.max_std_db = std::nan("");
    CHECK_THROWS_WITH_AS(data::temporal_reference(sources, bad), doctest::Contains("max_std_db"), value_error);
}

TEST_CASE("temporal: on a synthetic stack the mask finds the change and the median the clean scene") {
    // 8 dates of L = 4.4 speckle (Sentinel-1 GRD), a field 12 dB brighter from date 4 on.
    const index_t rows = 96, cols = 128, bands = 2, dates = 8;
    const double looks = 4.4;
    const std::uint64_t seed = 31;
    INFO("seed " << seed);
    data::StackOptions so;
    so.change_db = 12.0;
    data::SyntheticStack s = data::synthetic_stack(rows, cols, bands, dates, seed, looks, so);
    std::vector<raster::RasterSource*> sources;
    for (auto& d : s.noisy_dates) sources.push_back(&d);
    data::TemporalOptions opt;
    // Speckle alone spreads the dB values of 8 dates: 10 log10 of Gamma(4.4, 1/4.4) has a std of
    // 4.34 * sqrt(trigamma(4.4)) = 2.19 dB, so the default 2 dB would reject about 45% of stable
    // pixels per band. 3 dB rejects a fraction p_band = 0.0477 per band (Monte Carlo over 1e6
    // sets of 8 dates, SE 2e-4), while a 12 dB change between 4 and 4 dates gives a std near
    // 6.4 dB and passes 3 dB with probability 5e-6.
    opt.max_std_db = 3.0;
    opt.block_rows = rows;  // 12288 pixels x 8 dates: above the size where the pixel loop goes parallel
    const data::TemporalResult res = data::temporal_reference(sources, opt);
    data::TemporalOptions serial = opt;
    serial.block_rows = 5;  // 640 pixels x 8 dates: below it
    const data::TemporalResult res_serial = data::temporal_reference(sources, serial);
    CHECK(identical(res.median_db.pixels(), res_serial.median_db.pixels()));
    CHECK(identical(res.std_db.pixels(), res_serial.std_db.pixels()));
    CHECK(res.mask == res_serial.mask);

    std::vector<int> valid_dates(static_cast<std::size_t>(rows * cols), 0);
    for (const auto& d : s.noisy_dates) {
        const auto m = data::valid_mask(d.pixels(), d.info().units, d.info().nodata);
        for (std::size_t p = 0; p < m.size(); ++p) valid_dates[p] += m[p];
    }
    index_t changed = 0, changed_kept = 0, stable = 0, stable_kept = 0;
    double err_sum = 0, err_sum2 = 0;
    index_t err_n = 0;
    for (std::size_t p = 0; p < valid_dates.size(); ++p) {
        if (valid_dates[p] < 2) CHECK(res.mask[p] == 0);
        if (valid_dates[p] != dates) continue;
        if (s.change_mask[p]) {
            ++changed;
            changed_kept += res.mask[p];
            continue;
        }
        ++stable;
        stable_kept += res.mask[p];
        for (index_t b = 0; b < bands; ++b) {
            const auto e = static_cast<index_t>(p) * bands + b;
            const double err = res.median_db.pixels()[e] - 10.0 * std::log10(static_cast<double>(s.clean_before.pixels()[e]));
            err_sum += err;
            err_sum2 += err * err;
            ++err_n;
        }
    }
    REQUIRE(changed > 200);
    REQUIRE(stable > 5000);
    INFO("changed pixels " << changed << " (kept " << changed_kept << "), stable pixels " << stable << " (kept " << stable_kept << ")");
    CHECK(changed_kept == 0);
    // Stable pixels are kept when both bands pass: p = (1 - 0.0477)^2 = 0.907, with a binomial
    // tolerance of 6 standard errors plus the Monte Carlo uncertainty of p.
    const double p_keep = std::pow(1.0 - 0.0477, bands);
    const double kept = static_cast<double>(stable_kept) / stable;
    CHECK(std::abs(kept - p_keep) < 6 * std::sqrt(p_keep * (1 - p_keep) / stable) + 0.001);

    // The median of 8 dates estimates the clean dB with a bias and a spread that depend on L and
    // the number of dates only: for L = 4.4 and 8 dates (mean of the 4th and 5th values), Monte
    // Carlo over 2e5 sets gives bias -0.373 dB and std 0.881 dB (SE 0.002). Over the stable
    // pixels the mean error is within 6 standard errors of the bias, and its std within 0.03 dB
    // (6 SE of a std estimated from ~20000 values, sd / sqrt(2n) = 0.0045, plus the Monte Carlo).
    const double mean_err = err_sum / err_n, sd_err = std::sqrt(err_sum2 / err_n - mean_err * mean_err);
    INFO("median - clean: mean " << mean_err << " dB, std " << sd_err << " dB over " << err_n << " values");
    CHECK(std::abs(mean_err - (-0.373)) < 6 * 0.881 / std::sqrt(static_cast<double>(err_n)) + 0.005);
    CHECK(std::abs(sd_err - 0.881) < 0.03);
}
