// GeoTIFF reading and writing against the fixtures in ../shared/data/geotiff (written by GDAL
// 3.6, expected values computed by GDAL): every layout, real Sentinel-1 measurement files, hostile
// files; georeferencing and no-data kept on output, checked with gdalinfo as an independent
// reader; atomic, block-by-block writing.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "despeck/io/geotiff.hpp"

using namespace despeck;
namespace fs = std::filesystem;

namespace {

fs::path fixtures() {
    const fs::path dir = fs::path(DESPECK_SHARED_DIR) / "data" / "geotiff";
    if (!fs::exists(dir / "expected_values.json"))
        FAIL("the GeoTIFF fixtures are missing: expected " << dir.string()
                                                            << "/expected_values.json (see ../shared/README.md)");
    return dir;
}

const nlohmann::json& expected() {
    static const nlohmann::json j = [] {
        std::ifstream in(fixtures() / "expected_values.json");
        return nlohmann::json::parse(in);
    }();
    return j;
}

fs::path tmp(const std::string& name) {
    fs::create_directories(DESPECK_TEST_TMP);
    return fs::path(DESPECK_TEST_TMP) / name;
}

// gdalinfo -json of a file, parsed; FAIL when gdalinfo is not installed (CI installs gdal-bin).
nlohmann::json gdalinfo(const fs::path& file) {
    const std::string cmd = "gdalinfo -json '" + file.string() + "' 2>/dev/null";
    std::FILE* pipe = ::popen(cmd.c_str(), "r");
    REQUIRE_MESSAGE(pipe != nullptr, "cannot run gdalinfo");
    std::string out;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    const int rc = ::pclose(pipe);
    REQUIRE_MESSAGE(rc == 0, "gdalinfo failed on " << file.string() << " (is gdal-bin installed?)");
    return nlohmann::json::parse(out);
}

}  // namespace

TEST_CASE("GeoTIFF: every layout of the synthetic stack reads back GDAL's values") {
    for (const auto& f : expected().at("synthetic")) {
        const std::string name = f.at("file");
        CAPTURE(name);
        io::GeoTiffReader reader(fixtures() / name);
        const auto& info = reader.info();
        CHECK(info.cols == f.at("width").get<index_t>());
        CHECK(info.rows == f.at("height").get<index_t>());
        CHECK(info.bands == 2);
        REQUIRE(info.nodata.has_value());
        const auto gt = info.geo.geotransform();
        REQUIRE(gt.has_value());
        for (int i = 0; i < 6; ++i) CHECK((*gt)[static_cast<std::size_t>(i)] == f.at("geotransform")[static_cast<std::size_t>(i)].get<double>());
        CHECK(info.geo.has_crs());
        CHECK(info.band_names[0] == "VV");
        CHECK(info.band_names[1] == "VH");
        const bool db = name.find("dB") != std::string::npos;
        CHECK(info.units == (db ? raster::Units::db : raster::Units::linear_intensity));

        // Read in blocks of 100 rows: the sums cover strips and tiles cut at arbitrary rows.
        std::array<double, 2> sum{0, 0};
        std::array<index_t, 2> valid{0, 0};
        for (index_t r0 = 0; r0 < info.rows; r0 += 100) {
            const index_t n = std::min<index_t>(100, info.rows - r0);
            const Tensor<float> block = reader.read_rows(r0, n);
            for (index_t i = 0; i < block.size(); ++i) {
                const float v = block[i];
                if (static_cast<double>(v) != *info.nodata) {
                    sum[static_cast<std::size_t>(i % 2)] += v;
                    ++valid[static_cast<std::size_t>(i % 2)];
                }
            }
        }
        for (std::size_t b = 0; b < 2; ++b) {
            const auto& band = f.at("band")[b];
            CHECK(valid[b] == band.at("valid_count").get<index_t>());
            CHECK(sum[b] == doctest::Approx(band.at("sum_valid").get<double>()).epsilon(1e-9));
            for (const auto& probe : band.at("probes_row_col_value")) {
                const index_t r = probe[0], c = probe[1];
                const Tensor<float> px = reader.read_window(r, 1, c, 1);
                CHECK(px[static_cast<index_t>(b)] == probe[2].get<float>());  // bit for bit
            }
        }
    }
}

TEST_CASE("GeoTIFF: windows equal the same region of a whole read (partial tiles, planar bands)") {
    for (const char* name : {"s1_stack_d2_20240117_tile256_deflate.tif", "s1_stack_d4_20240210_bandinterleave_deflate.tif"}) {
        CAPTURE(name);
        io::GeoTiffReader reader(fixtures() / name);
        const Tensor<float> all = reader.read_rows(0, reader.info().rows);
        const Tensor<float> win = reader.read_window(250, 131, 200, 311);  // crosses tile edges at 256
        index_t mismatches = 0;
        for (index_t r = 0; r < 131; ++r)
            for (index_t c = 0; c < 311; ++c)
                for (index_t b = 0; b < 2; ++b) mismatches += win.at(0, r, c, b) != all.at(0, 250 + r, 200 + c, b);
        CHECK(mismatches == 0);
        CHECK_THROWS_AS(reader.read_window(380, 10, 0, 1), value_error);
    }
}

TEST_CASE("GeoTIFF: the noise-free reference (4 bands, no no-data) reads GDAL's sums") {
    const auto& f = expected().at("reference");
    io::GeoTiffReader reader(fixtures() / f.at("file").get<std::string>());
    CHECK(reader.info().bands == 4);
    CHECK_FALSE(reader.info().nodata.has_value());
    const Tensor<float> all = reader.read_rows(0, reader.info().rows);
    for (index_t b = 0; b < 4; ++b) {
        double s = 0;
        for (index_t i = b; i < all.size(); i += 4) s += all[i];
        CHECK(s == doctest::Approx(f.at("band")[static_cast<std::size_t>(b)].at("sum_all").get<double>()).epsilon(1e-9));
    }
}

TEST_CASE("GeoTIFF: real Sentinel-1 measurement files (GRD uint16 ZSTD; SLC CInt16 with predictor 5)") {
    io::GeoTiffReader grd(fixtures() / "real_s1" / "s1b-iw-grd-vv-20210401t052623-20210401t052648-026269-032297-001.tiff");
    CHECK(grd.info().cols == 25788);
    CHECK(grd.info().rows == 16685);
    // Read by strip-sized blocks, never the whole 1.7 GB as float: all pixels are 1.
    for (index_t r0 : {index_t(0), index_t(8000), index_t(16680)}) {
        const Tensor<float> block = grd.read_rows(r0, 5);
        CHECK(block.flat().minCoeff() == 1.0f);
        CHECK(block.flat().maxCoeff() == 1.0f);
    }
    CHECK(grd.info().geo.has_crs());

    // Predictor 5 is outside TIFF 6; libtiff may refuse it. Either zeros or a clear error, no crash.
    io::GeoTiffReader slc(fixtures() / "real_s1" / "s1a-iw1-slc-hh-20220414t102211-20220414t102236-042768-051aa4-001.tiff");
    CHECK(slc.is_complex());
    CHECK(slc.info().units == raster::Units::linear_intensity);
    try {
        const Tensor<float> rows = slc.read_rows(0, 2);
        CHECK(rows.flat().abs().maxCoeff() == 0.0f);
    } catch (const io_error& e) {
        CHECK(std::string(e.what()).find("s1a-iw1-slc") != std::string::npos);
    }
}

TEST_CASE("GeoTIFF: hostile files give clear errors, never a crash or a huge allocation") {
    // Truncated: rows before the cut read exactly; a full read fails naming the file.
    io::GeoTiffReader source(fixtures() / "s1_stack_d1_20240105_strip_raw.tif");
    io::GeoTiffReader truncated(fixtures() / "hostile" / "truncated_d1.tif");
    const Tensor<float> good = truncated.read_rows(0, 192);
    const Tensor<float> ref = source.read_rows(0, 192);
    CHECK(std::equal(good.data(), good.data() + good.size(), ref.data()));
    CHECK_THROWS_WITH_AS(truncated.read_rows(0, 384), doctest::Contains("truncated_d1.tif"), io_error);

    // 10^6 x 10^6 pixels declared in a 302-byte file.
    bool refused = false;
    try {
        io::GeoTiffReader huge(fixtures() / "hostile" / "huge_1e6x1e6_16bytes.tif");
        huge.read_window(0, 1, 0, 16);
    } catch (const io_error& e) {
        refused = std::string(e.what()).find("huge_1e6x1e6") != std::string::npos;
    }
    CHECK(refused);

    CHECK_THROWS_WITH_AS(io::GeoTiffReader(fixtures() / "hostile" / "empty.tif"), doctest::Contains("empty"), io_error);
    CHECK_THROWS_WITH_AS(io::GeoTiffReader(fixtures() / "no_such_file.tif"), doctest::Contains("does not exist"), io_error);

    // CInt16: read as intensity re^2 + im^2. Band 1 = (col-row) + i(2row-col), band 2 = (64row+col) - i(row+col).
    io::GeoTiffReader cint(fixtures() / "hostile" / "cint16_2band.tif");
    CHECK(cint.is_complex());
    const Tensor<float> z = cint.read_rows(0, cint.info().rows);
    double max_err = 0;
    for (index_t r = 0; r < 48; ++r)
        for (index_t c = 0; c < 64; ++c) {
            const double re1 = double(c - r), im1 = double(2 * r - c), re2 = double(64 * r + c), im2 = -double(r + c);
            max_err = std::max(max_err, std::abs(z.at(0, r, c, 0) - (re1 * re1 + im1 * im1)));
            max_err = std::max(max_err, std::abs(z.at(0, r, c, 1) - (re2 * re2 + im2 * im2)) / std::max(1.0, re2 * re2));
        }
    CHECK(max_err < 1e-6);
}

TEST_CASE("GeoTIFF: output keeps size, CRS, geotransform, no-data and band names (checked by gdalinfo)") {
    for (const char* name : {"s1_stack_d2_20240117_tile256_deflate.tif", "s1_stack_d6_20240305_dB.tif",
                             "s1_stack_d7_20240317_bigendian_lzw.tif"}) {
        CAPTURE(name);
        const fs::path in = fixtures() / name, out = tmp(std::string("copy_") + name);
        io::GeoTiffReader reader(in);
        {
            io::GeoTiffWriter writer(out, reader.info());
            for (index_t r0 = 0; r0 < reader.info().rows; r0 += 37)  // odd block size: strips fill across calls
                writer.write_rows(reader.read_rows(r0, std::min<index_t>(37, reader.info().rows - r0)));
            writer.close();
        }
        io::GeoTiffReader back(out);
        CHECK(back.info().geo == reader.info().geo);
        CHECK(back.info().nodata == reader.info().nodata);
        const Tensor<float> a = reader.read_rows(0, reader.info().rows), b = back.read_rows(0, back.info().rows);
        CHECK(std::equal(a.data(), a.data() + a.size(), b.data()));

        const nlohmann::json gi = gdalinfo(in), go = gdalinfo(out);
        CHECK(go.at("size") == gi.at("size"));
        CHECK(go.at("geoTransform") == gi.at("geoTransform"));
        CHECK(go.at("coordinateSystem").at("wkt") == gi.at("coordinateSystem").at("wkt"));
        REQUIRE(go.at("bands").size() == gi.at("bands").size());
        for (std::size_t i = 0; i < gi.at("bands").size(); ++i) {
            CHECK(go.at("bands")[i].at("noDataValue") == gi.at("bands")[i].at("noDataValue"));
            CHECK(go.at("bands")[i].value("description", "") == gi.at("bands")[i].value("description", ""));
        }
    }
}

TEST_CASE("GeoTIFF writer: atomic, complete, and refusing bad blocks") {
    raster::RasterInfo info;
    info.rows = 20;
    info.cols = 7;
    info.bands = 2;
    info.units = raster::Units::db;
    info.nodata = -9999.0;
    info.band_names = {"VV", "VH"};
    const fs::path path = tmp("writer_test.tif");
    fs::remove(path);
    {
        io::GeoTiffWriter w(path, info);
        w.write_rows(Tensor<float>(Shape{1, 5, 7, 2}, 1.0f));
    }  // destroyed before close(): nothing under the final name
    CHECK_FALSE(fs::exists(path));
    {
        io::GeoTiffWriter w(path, info);
        CHECK_THROWS_AS(w.write_rows(Tensor<float>(Shape{1, 5, 6, 2})), shape_error);
        w.write_rows(Tensor<float>(Shape{1, 10, 7, 2}, 2.0f));
        CHECK_THROWS_WITH_AS(w.close(), doctest::Contains("10 of 20 rows"), io_error);
    }
    CHECK_FALSE(fs::exists(path));
    {
        io::GeoTiffWriter w(path, info);
        Tensor<float> rows(Shape{1, 20, 7, 2});
        for (index_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(i) * 0.5f - 3.0f;
        w.write_rows(rows);
        w.close();
        io::GeoTiffReader r(path);
        CHECK(r.info().units == raster::Units::db);
        CHECK(r.info().band_names == std::vector<std::string>{"VV", "VH"});
        CHECK(r.info().nodata == -9999.0);
        const Tensor<float> back = r.read_rows(0, 20);
        CHECK(std::equal(back.data(), back.data() + back.size(), rows.data()));
    }
    // BigTIFF on request (automatic past 4 GB): magic 43, and GDAL reads it.
    const fs::path big = tmp("bigtiff.tif");
    {
        io::GeoTiffWriteOptions opt;
        opt.bigtiff = true;
        io::GeoTiffWriter w(big, info, opt);
        w.write_rows(Tensor<float>(Shape{1, 20, 7, 2}, 4.0f));
        w.close();
    }
    {
        std::ifstream in(big, std::ios::binary);
        unsigned char head[4] = {};
        in.read(reinterpret_cast<char*>(head), 4);
        CHECK(head[2] == 43);
    }
    CHECK(gdalinfo(big).at("size") == nlohmann::json::array({7, 20}));
    CHECK(io::GeoTiffReader(big).read_rows(19, 1)[3] == 4.0f);
    // No georeferencing: allowed (gdalinfo shows none).
    CHECK_FALSE(io::GeoTiffReader(path).info().geo.has_crs());
    CHECK_THROWS_WITH_AS(io::GeoTiffWriter(tmp("no/such/dir/x.tif"), info), doctest::Contains("no/such/dir"), io_error);
}
