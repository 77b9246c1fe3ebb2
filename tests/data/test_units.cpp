// Units and no-data: known values, round trips between every pair of units, what counts as valid
// in each unit, dB with a finite fill for no-data, and writing no-data back.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "despeck/data/units.hpp"
#include "despeck/random.hpp"

using namespace despeck;
using data::Units;

namespace {

constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();
constexpr float inf_f = std::numeric_limits<float>::infinity();

Tensor<float> pixels_of(index_t rows, index_t cols, index_t bands, std::initializer_list<float> values) {
    return Tensor<float>(Shape{1, rows, cols, bands}, values);
}

}  // namespace

TEST_CASE("units: known values") {
    CHECK(data::intensity_to_db(0.1f) == doctest::Approx(-10.0).epsilon(1e-6));
    CHECK(data::intensity_to_db(1.0f) == 0.0f);
    CHECK(data::intensity_to_db(100.0f) == doctest::Approx(20.0).epsilon(1e-6));
    CHECK(data::amplitude_to_db(0.1f) == doctest::Approx(-20.0).epsilon(1e-6));
    CHECK(data::amplitude_to_intensity(0.1f) == doctest::Approx(0.01).epsilon(1e-6));
    CHECK(data::intensity_to_amplitude(0.04f) == doctest::Approx(0.2).epsilon(1e-6));
    CHECK(data::db_to_intensity(-10.0f) == doctest::Approx(0.1).epsilon(1e-6));
    CHECK(data::db_to_amplitude(-20.0f) == doctest::Approx(0.1).epsilon(1e-6));
    CHECK(data::convert_value(0.1f, Units::amplitude, Units::db) == doctest::Approx(-20.0).epsilon(1e-6));
    CHECK(data::convert_value(-3.0f, Units::db, Units::linear_intensity) == doctest::Approx(std::pow(10.0, -0.3)).epsilon(1e-6));

    const Tensor<float> t = pixels_of(1, 2, 2, {0.1f, 1.0f, 10.0f, 0.01f});
    const Tensor<float> db = data::intensity_to_db(t);
    CHECK(db.shape() == t.shape());
    CHECK(db[0] == doctest::Approx(-10.0).epsilon(1e-6));
    CHECK(db[2] == doctest::Approx(10.0).epsilon(1e-6));
    CHECK(db[3] == doctest::Approx(-20.0).epsilon(1e-6));
    CHECK(data::amplitude_to_db(t)[3] == doctest::Approx(-40.0).epsilon(1e-6));

    // The plain conversions are only the maths: 0 and negatives have no dB value.
    CHECK(std::isinf(data::intensity_to_db(0.0f)));
    CHECK(data::intensity_to_db(0.0f) < 0);
    CHECK(std::isnan(data::intensity_to_db(-1.0f)));
}

TEST_CASE("units: round trips between every pair of units") {
    const std::uint64_t seed = 314;
    INFO("seed " << seed);
    Rng rng(seed);
    Tensor<float> intensity(Shape{1, 16, 16, 2});
    for (index_t i = 0; i < intensity.size(); ++i) intensity[i] = static_cast<float>(std::pow(10.0, rng.uniform(-6.0, 4.0)));
    const Units all[] = {Units::linear_intensity, Units::amplitude, Units::db};
    for (Units from : all) {
        const Tensor<float> x = data::convert(intensity, Units::linear_intensity, from);
        for (Units to : all) {
            INFO(raster::to_string(from) << " -> " << raster::to_string(to) << " -> back");
            const Tensor<float> there = data::convert(x, from, to);
            const Tensor<float> back = data::convert(there, to, from);
            Tensor<float> inplace = x;
            data::convert_inplace(inplace, from, to);
            CHECK(std::equal(inplace.data(), inplace.data() + inplace.size(), there.data()));  // same as the copy
            double worst = 0;
            for (index_t i = 0; i < x.size(); ++i) {
                // dB values are compared absolutely (|dB| up to 60 -> ulp 4e-6); linear ones
                // relatively: a dB rounding of 4e-6 is 1e-6 relative after 10^(x/10).
                const double err = from == Units::db ? std::abs(back[i] - x[i]) : std::abs(back[i] - x[i]) / x[i];
                worst = std::max(worst, err);
            }
            CHECK(worst < 1e-5);
        }
    }
    const Tensor<float> same = data::convert(intensity, Units::unknown, Units::unknown);
    CHECK(std::equal(same.data(), same.data() + same.size(), intensity.data()));
    CHECK_THROWS_WITH_AS(data::convert(intensity, Units::unknown, Units::db), doctest::Contains("unknown"), value_error);
    CHECK_THROWS_AS(data::convert(intensity, Units::db, Units::unknown), value_error);
}

TEST_CASE("units: validity of 0, negatives, NaN, inf and the no-data value in each unit") {
    // Each row: value, valid as linear intensity, as amplitude, as dB (with no-data -9999).
    struct Row {
        float v;
        bool linear, amplitude, db;
    };
    const Row rows[] = {
        {0.5f, true, true, true},       {1e-30f, true, true, true},   {0.0f, false, false, true},
        {-0.0f, false, false, true},    {-3.0f, false, false, true},  {nan_f, false, false, false},
        {inf_f, false, false, false},   {-inf_f, false, false, false}, {-9999.0f, false, false, false},
    };
    for (const Row& r : rows) {
        INFO("value " << r.v);
        Tensor<float> one(Shape{1, 1, 1, 1}, {r.v});
        CHECK(data::valid_mask(one, Units::linear_intensity, -9999.0)[0] == r.linear);
        CHECK(data::valid_mask(one, Units::amplitude, -9999.0)[0] == r.amplitude);
        CHECK(data::valid_mask(one, Units::db, -9999.0)[0] == r.db);
    }
    // A declared no-data of 0 makes 0 dB invalid too; without a declaration -9999 dB is a value.
    Tensor<float> zero(Shape{1, 1, 1, 1}, {0.0f});
    CHECK(data::valid_mask(zero, Units::db, 0.0)[0] == 0);
    Tensor<float> big_negative(Shape{1, 1, 1, 1}, {-9999.0f});
    CHECK(data::valid_mask(big_negative, Units::db, std::nullopt)[0] == 1);
    // A NaN no-data declaration (common in GDAL files) works as well.
    Tensor<float> nan_pixel(Shape{1, 1, 1, 1}, {nan_f});
    CHECK(data::valid_mask(nan_pixel, Units::db, std::numeric_limits<double>::quiet_NaN())[0] == 0);

    // A pixel is valid only when all of its bands are; the per-band mask keeps the detail.
    const Tensor<float> t = pixels_of(1, 3, 2, {0.1f, 0.2f, 0.1f, 0.0f, nan_f, 0.3f});
    CHECK(data::valid_mask(t, Units::linear_intensity, std::nullopt) == std::vector<std::uint8_t>{1, 0, 0});
    CHECK(data::valid_mask_per_band(t, Units::linear_intensity, std::nullopt) == std::vector<std::uint8_t>{1, 1, 1, 0, 0, 1});
    CHECK(data::count_valid(data::valid_mask(t, Units::linear_intensity, std::nullopt)) == 1);

    CHECK_THROWS_AS(data::valid_mask(Tensor<float>(Shape{3, 2}), Units::db, std::nullopt), shape_error);
}

TEST_CASE("units: to_db_with_nodata fills every invalid pixel with a finite value") {
    // 2 x 3 pixels, 2 bands, holes of every kind; no-data declared as -1.
    const Tensor<float> t = pixels_of(2, 3, 2, {0.1f, 0.01f,   0.0f, 0.01f,   1.0f, 0.1f,     //
                                                nan_f, 0.1f,   10.0f, inf_f,  -1.0f, -1.0f});
    const data::DbPixels out = data::to_db_with_nodata(t, Units::linear_intensity, -1.0);
    CHECK(out.mask == std::vector<std::uint8_t>{1, 0, 1, 0, 0, 0});
    CHECK(out.valid_count == 2);
    CHECK(out.db.shape() == t.shape());
    for (index_t i = 0; i < out.db.size(); ++i) CHECK(std::isfinite(out.db[i]));
    // Valid pixels: plain dB. Invalid ones, every band: the mean dB of the valid pixels, per band.
    CHECK(out.db[0] == doctest::Approx(-10.0).epsilon(1e-6));
    CHECK(out.db[1] == doctest::Approx(-20.0).epsilon(1e-6));
    CHECK(out.db[4] == doctest::Approx(0.0));
    CHECK(out.db[5] == doctest::Approx(-10.0).epsilon(1e-6));
    REQUIRE(out.fill.size() == 2);
    CHECK(out.fill[0] == doctest::Approx(-5.0).epsilon(1e-6));
    CHECK(out.fill[1] == doctest::Approx(-15.0).epsilon(1e-6));
    for (index_t p : {1, 3, 4, 5}) {
        CHECK(out.db[p * 2] == doctest::Approx(-5.0).epsilon(1e-6));
        CHECK(out.db[p * 2 + 1] == doctest::Approx(-15.0).epsilon(1e-6));
    }

    // A constant fill, and amplitude input.
    const data::DbPixels c = data::to_db_with_nodata(t, Units::amplitude, -1.0, data::NodataFill::constant(-30.0));
    CHECK(c.db[0] == doctest::Approx(-20.0).epsilon(1e-6));
    CHECK(c.db[2] == -30.0f);
    CHECK(c.db[3] == -30.0f);
    CHECK(c.fill == std::vector<double>{-30.0, -30.0});
    CHECK_THROWS_WITH_AS(data::to_db_with_nodata(t, Units::db, std::nullopt, data::NodataFill::constant(std::nan(""))),
                         doctest::Contains("fill value"), value_error);
    CHECK_THROWS_AS(data::to_db_with_nodata(t, Units::db, std::nullopt, data::NodataFill::constant(1e300)), value_error);
    CHECK_THROWS_WITH_AS(data::to_db_with_nodata(t, Units::unknown, std::nullopt), doctest::Contains("unknown units"), value_error);

    // dB input with extreme but valid values stays finite, and the fill too.
    const Tensor<float> d = pixels_of(1, 3, 1, {-9999.0f, 3e38f, nan_f});
    const data::DbPixels dd = data::to_db_with_nodata(d, Units::db, std::nullopt);
    for (index_t i = 0; i < dd.db.size(); ++i) CHECK(std::isfinite(dd.db[i]));
    // Tiny positive intensities (denormals) are valid and have finite dB values.
    const Tensor<float> tiny = pixels_of(1, 2, 1, {std::numeric_limits<float>::denorm_min(), 0.0f});
    const data::DbPixels td = data::to_db_with_nodata(tiny, Units::amplitude, std::nullopt);
    CHECK(td.mask == std::vector<std::uint8_t>{1, 0});
    CHECK(std::isfinite(td.db[0]));
    CHECK(std::isfinite(td.db[1]));
}

TEST_CASE("units: a raster with no valid pixel is an error naming it") {
    raster::RasterInfo info;
    info.rows = 2;
    info.cols = 2;
    info.bands = 1;
    info.units = Units::linear_intensity;
    info.nodata = 0.0;
    info.source = "S1A_empty_VV.tif";
    raster::MemoryRaster r(info, pixels_of(2, 2, 1, {0.0f, 0.0f, nan_f, -2.0f}));
    CHECK_THROWS_WITH_AS(data::to_db_with_nodata(r), doctest::Contains("S1A_empty_VV.tif"), value_error);
    CHECK_THROWS_WITH_AS(data::to_db_with_nodata(r.pixels(), Units::linear_intensity, 0.0, {}, "scene.tif"),
                         doctest::Contains("no valid pixel"), value_error);
    r.pixels()[3] = 0.5f;
    CHECK(data::to_db_with_nodata(r).valid_count == 1);
}

TEST_CASE("units: apply_nodata writes the no-data value into every band of invalid pixels") {
    const Tensor<float> original = pixels_of(1, 4, 2, {0.1f, 0.2f, 0.0f, 0.2f, 0.3f, 0.4f, nan_f, nan_f});
    const data::DbPixels db = data::to_db_with_nodata(original, Units::linear_intensity, 0.0);
    // A stand-in for the network's output: back to linear, then the input's no-data restored.
    Tensor<float> out = data::convert(db.db, Units::db, Units::linear_intensity);
    data::apply_nodata(out, db.mask, 0.0);
    CHECK(out[0] == doctest::Approx(0.1f).epsilon(1e-6));
    CHECK(out[1] == doctest::Approx(0.2f).epsilon(1e-6));
    CHECK(out[2] == 0.0f);
    CHECK(out[3] == 0.0f);  // valid in the input, but its pixel was not
    CHECK(out[4] == doctest::Approx(0.3f).epsilon(1e-6));
    CHECK(out[6] == 0.0f);
    CHECK(out[7] == 0.0f);
    CHECK(data::valid_mask(out, Units::linear_intensity, 0.0) == db.mask);

    Tensor<float> with_nan = out;
    data::apply_nodata(with_nan, db.mask, std::numeric_limits<double>::quiet_NaN());
    CHECK(std::isnan(with_nan[2]));
    CHECK(std::isnan(with_nan[7]));
    CHECK(with_nan[0] == out[0]);

    CHECK_THROWS_WITH_AS(data::apply_nodata(out, std::vector<std::uint8_t>(3, 1), 0.0), doctest::Contains("3 entries"),
                         shape_error);
}
