// The workflow layer: despeckling a GeoTIFF tile by tile equals one big tile and keeps the
// georeferencing and no-data; training resumes exactly, after an interruption at any step.
#include <doctest/doctest.h>

#include "support/files.hpp"

#include <atomic>
#include <cmath>
#include <filesystem>

#include "despeck/data/synthetic.hpp"
#include "despeck/workflow/despeckle.hpp"
#include "despeck/workflow/evaluate.hpp"
#include "despeck/workflow/training.hpp"

using namespace despeck;
namespace fs = std::filesystem;

namespace {

fs::path fixture(const std::string& name) { return despeck::testing::geotiff_fixture(name); }
fs::path tmp(const std::string& name) {
    fs::create_directories(DESPECK_TEST_TMP);
    return fs::path(DESPECK_TEST_TMP) / name;
}
DeSpeckNet<float> small_model(CombineMode combine = CombineMode::additive_db, int filters = 8) {
    DeSpeckNetConfig c;
    c.depth = 4;
    c.filters = filters;
    c.channels = 2;
    c.combine = combine;
    DeSpeckNet<float> m(c, 5);
    // Non-trivial batch-norm statistics from one training pass.
    Tensor<float> x(Shape{2, 16, 16, 2});
    Rng rng(1);
    for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(-12 + 3 * rng.normal());
    if (combine == CombineMode::multiplicative_linear) x.flat() = x.flat().abs() * 0.01f + 0.01f;
    m.compute_gradients(x.view(), x.view(), {});
    return m;
}

}  // namespace

TEST_CASE("despeckle_geotiff: tiles equal one big tile; georeferencing and no-data kept") {
    const DeSpeckNet<float> model = small_model();
    const fs::path in = fixture("s1_stack_d6_20240305_dB.tif");
    workflow::DespeckleOptions small, big;
    small.tiles.tile_rows = small.tiles.tile_cols = 37;
    big.tiles.tile_rows = big.tiles.tile_cols = 4096;
    small.quicklook_png = tmp("despeckle_quicklook.png");
    small.noise_path = tmp("despeckle_noise.tif");
    const workflow::DespeckleReport r = workflow::despeckle_geotiff(model, in, tmp("despeckle_small.tif"), small);
    workflow::despeckle_geotiff(model, in, tmp("despeckle_big.tif"), big);
    io::GeoTiffReader a(tmp("despeckle_small.tif")), b(tmp("despeckle_big.tif")), src(in);
    CHECK(a.info().geo == src.info().geo);
    CHECK(a.info().nodata == src.info().nodata);
    CHECK(a.info().units == raster::Units::db);
    CHECK(a.info().band_names == src.info().band_names);
    const Tensor<float> ta = a.read_rows(0, 384), tb = b.read_rows(0, 384), ts = src.read_rows(0, 384);
    double max_diff = 0;
    index_t nodata_mismatch = 0, nonfinite = 0;
    for (index_t i = 0; i < ta.size(); ++i) {
        const bool in_nodata = ts[i] == -9999.0f || ts[i - (i % 2)] == -9999.0f || ts[i - (i % 2) + 1] == -9999.0f;
        nodata_mismatch += in_nodata != (ta[i] == -9999.0f);
        nonfinite += !std::isfinite(ta[i]);
        max_diff = std::max(max_diff, double(std::abs(ta[i] - tb[i])));
    }
    CHECK(max_diff <= 1e-4);  // dB values of magnitude ~10-30: 1e-5 relative
    CHECK(nodata_mismatch == 0);
    CHECK(nonfinite == 0);
    CHECK(r.invalid_pixels > 0);
    CHECK(fs::exists(small.quicklook_png));
    CHECK(io::GeoTiffReader(small.noise_path).info().geo == src.info().geo);

    // Fast inference (Winograd, batch norm folded) through the same tiling: within 1e-3 of exact.
    // 16 filters: Winograd runs on layers with >= 16 channels on both sides.
    const DeSpeckNet<float> wide = small_model(CombineMode::additive_db, 16);
    workflow::DespeckleOptions exact = small, fast = small;
    exact.quicklook_png.clear();
    exact.noise_path.clear();
    fast = exact;
    fast.tiles.mode = InferenceMode::fast;
    workflow::despeckle_geotiff(wide, in, tmp("despeckle_exact16.tif"), exact);
    workflow::despeckle_geotiff(wide, in, tmp("despeckle_fast.tif"), fast);
    const Tensor<float> tf = io::GeoTiffReader(tmp("despeckle_fast.tif")).read_rows(0, 384);
    const Tensor<float> te = io::GeoTiffReader(tmp("despeckle_exact16.tif")).read_rows(0, 384);
    double fast_diff = 0, range = 0;
    for (index_t i = 0; i < te.size(); ++i) {
        if (te[i] == -9999.0f) {
            CHECK(tf[i] == -9999.0f);
            continue;
        }
        fast_diff = std::max(fast_diff, double(std::abs(tf[i] - te[i])));
        range = std::max(range, double(std::abs(te[i])));
    }
    CHECK(fast_diff > 0);
    CHECK(fast_diff <= 1e-3 * range);

    // Linear output from a dB model, and a model of the wrong channel count.
    workflow::DespeckleOptions lin;
    lin.output_units = raster::Units::linear_intensity;
    workflow::despeckle_geotiff(model, in, tmp("despeckle_linear.tif"), lin);
    const Tensor<float> tl = io::GeoTiffReader(tmp("despeckle_linear.tif")).read_rows(100, 1);
    const Tensor<float> td = a.read_rows(100, 1);
    for (index_t i = 0; i < tl.size(); ++i)
        if (td[i] != -9999.0f) REQUIRE(10 * std::log10(tl[i]) == doctest::Approx(td[i]).epsilon(1e-4));
    DeSpeckNetConfig one;
    one.depth = 3;
    one.filters = 4;
    one.channels = 1;
    CHECK_THROWS_WITH_AS(workflow::despeckle_geotiff(DeSpeckNet<float>(one), in, tmp("x.tif")), doctest::Contains("band(s)"),
                         value_error);
    CHECK_FALSE(fs::exists(tmp("x.tif")));
}

TEST_CASE("evaluate_geotiff: PSNR against a reference, ratio statistics against the input") {
    const fs::path in = fixture("s1_stack_d1_20240105_strip_raw.tif");
    const workflow::Evaluation self = workflow::evaluate_geotiff(in, {}, in);
    CHECK(*self.ratio_mean == doctest::Approx(1.0));
    const workflow::Evaluation vs_ref = workflow::evaluate_geotiff(in, fixture("s1_stack_d2_20240117_tile256_deflate.tif"));
    CHECK(vs_ref.psnr_db.has_value());
    CHECK(*vs_ref.rmse_db > 1.0);  // two independent speckle realisations differ by several dB
}

TEST_CASE("train: resuming after an interruption at any step gives the same model as no interruption") {
    // A tiny tuning-mode dataset from a synthetic scene (in dB).
    raster::MemoryRaster scene = data::synthetic_scene(96, 96, 2, 3);
    data::apply_speckle(scene.pixels(), 2.0, 4, scene.info().nodata);
    data::DbPixels db = data::to_db_with_nodata(scene);
    raster::RasterInfo info = scene.info();
    info.units = raster::Units::db;
    raster::MemoryRaster in_db(info, std::move(db.db));
    data::PatchSource src = data::patch_source(in_db);
    src.valid = db.mask;
    data::PatchOptions popt;
    popt.size = 24;
    popt.count = 40;
    popt.validation_fraction = 0.0;
    const data::PatchSplits splits = data::cut_patches(src, popt);

    workflow::TrainOptions opt;
    opt.epochs = 3;
    opt.steps_per_epoch = 4;
    opt.batch_size = 8;
    opt.schedule = PiecewiseConstantSchedule({2}, {1e-3, 1e-4});
    const fs::path straight = tmp("train_straight"), resumed = tmp("train_resumed");
    fs::remove_all(straight);
    fs::remove_all(resumed);
    DeSpeckNetConfig cfg;
    cfg.depth = 3;
    cfg.filters = 6;
    cfg.channels = 2;

    DeSpeckNet<float> a(cfg, 9);
    opt.run_dir = straight;
    const workflow::TrainResult ra = workflow::train(a, splits.train, nullptr, opt);
    CHECK(ra.epochs_done == 3);
    CHECK(ra.history.size() == 3);

    // Stop after the 6th step (in the middle of epoch 2), then resume twice over.
    DeSpeckNet<float> b(cfg, 9);
    std::atomic<bool> stop{false};
    opt.run_dir = resumed;
    opt.stop = &stop;
    index_t seen = 0;
    const workflow::TrainResult rb = workflow::train(b, splits.train, nullptr, opt, [&](const workflow::StepInfo&) {
        if (++seen == 6) stop = true;
    });
    CHECK(rb.interrupted);
    stop = false;
    opt.resume = true;
    DeSpeckNet<float> c(cfg, 12345);  // fresh weights: everything must come from the checkpoint
    const workflow::TrainResult rc = workflow::train(c, splits.train, nullptr, opt);
    CHECK_FALSE(rc.interrupted);
    CHECK(rc.history.size() == 3);
    CHECK(std::equal(a.parameters().values().begin(), a.parameters().values().end(), c.parameters().values().begin()));
    CHECK(std::equal(a.buffers().values().begin(), a.buffers().values().end(), c.buffers().values().begin()));
    for (std::size_t e = 0; e < 3; ++e)  // the interrupted epoch's log line too: its partial sums were saved
        CHECK(rc.history[e].loss == doctest::Approx(ra.history[e].loss).epsilon(1e-9));
    CHECK(fs::exists(resumed / "best.safetensors"));
    CHECK(fs::exists(resumed / "log.jsonl"));

    // Resuming with another batch size is refused: the batches would not be the same.
    opt.batch_size = 4;
    CHECK_THROWS_WITH_AS(workflow::train(c, splits.train, nullptr, opt), doctest::Contains("batch size"), value_error);
    opt.batch_size = 8;

    // A multiplicative (linear-intensity) model trains on 10^(dB/10) of the dB patches.
    DeSpeckNetConfig lin = cfg;
    lin.combine = CombineMode::multiplicative_linear;
    DeSpeckNet<float> m(lin, 3);
    workflow::TrainOptions lo = opt;
    lo.resume = false;
    lo.stop = nullptr;
    lo.epochs = 1;
    lo.run_dir = tmp("train_linear");
    fs::remove_all(lo.run_dir);
    const workflow::TrainResult rl = workflow::train(m, splits.train, nullptr, lo);
    // Intensities are ~0.01-1 (point targets ~30): the untrained product clean*noise misses them by
    // O(1). On the dB values (-5 to -25) the same model would miss by ~15, an MSE of ~200.
    CHECK(rl.history[0].reconstruction < 20.0);

    opt.run_dir = tmp("train_nothing_to_resume");
    fs::remove_all(opt.run_dir);
    CHECK_THROWS_WITH_AS(workflow::train(c, splits.train, nullptr, opt), doctest::Contains("nothing to resume"), io_error);
}
