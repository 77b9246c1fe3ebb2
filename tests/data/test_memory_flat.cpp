// The temporal reduction of a stack of large scenes runs in flat memory: its peak resident
// memory grows by about one block of every scene, not by the scenes' size. Six 3000 x 3000
// two-band float scenes (432 MB of pixels) are written block by block, then reduced to median,
// std and mask GeoTIFFs block by block; the process's peak resident set (VmHWM, reset before the
// reduction through /proc/self/clear_refs) may grow by far less than one scene (68 MiB).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "despeck/data/temporal.hpp"
#include "despeck/io/geotiff.hpp"
#include "despeck/random.hpp"

using namespace despeck;
namespace fs = std::filesystem;

namespace {

// kB from /proc/self/status ("VmHWM:" peak, "VmRSS:" now); -1 when unavailable.
long status_kb(const std::string& key) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
    return -1;
}
bool reset_peak() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    return static_cast<bool>(out);
}

}  // namespace

TEST_CASE("temporal reduction of large scenes keeps memory flat") {
    const index_t rows = 3000, cols = 3000, bands = 2, dates = 6, block = 128;
    const fs::path dir = fs::path(DESPECK_TEST_TMP) / "memory_flat";
    fs::create_directories(dir);
    raster::RasterInfo info;
    info.rows = rows;
    info.cols = cols;
    info.bands = bands;
    info.units = raster::Units::linear_intensity;
    info.nodata = 0.0;
    info.geo.pixel_scale = {10, 10, 0};
    info.geo.tiepoints = {0, 0, 0, 500000, 4000000, 0};
    std::vector<fs::path> paths;
    for (index_t d = 0; d < dates; ++d) {
        paths.push_back(dir / ("date" + std::to_string(d) + ".tif"));
        io::GeoTiffWriteOptions opt;
        opt.deflate = false;  // fast to write and read; the test is about memory, not compression
        io::GeoTiffWriter w(paths.back(), info, opt);
        Rng rng(static_cast<std::uint64_t>(d));
        for (index_t r0 = 0; r0 < rows; r0 += block) {
            Tensor<float> b = Tensor<float>::uninitialized(Shape{1, std::min(block, rows - r0), cols, bands});
            for (index_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(0.05 * (0.5 + rng.uniform()));
            w.write_rows(b);
        }
        w.close();
    }
    std::vector<std::unique_ptr<io::GeoTiffReader>> readers;
    std::vector<raster::RasterSource*> stack;
    for (const auto& p : paths) {
        readers.push_back(std::make_unique<io::GeoTiffReader>(p));
        stack.push_back(readers.back().get());
    }
    data::TemporalOptions topt;
    topt.block_rows = block;
    io::GeoTiffWriteOptions wopt;
    wopt.deflate = false;
    io::GeoTiffWriter median_out(dir / "median.tif", data::temporal_output_info(stack, topt, "median"), wopt);
    release_tensor_cache();
    REQUIRE_MESSAGE(reset_peak(), "cannot reset the peak resident set via /proc/self/clear_refs");
    const long before = status_kb("VmRSS:");
    REQUIRE(before > 0);
    index_t rows_seen = 0;
    data::temporal_reference_blocks(
        stack,
        [&](index_t, const Tensor<float>& median, const Tensor<float>&, const std::vector<std::uint8_t>&) {
            median_out.write_rows(median);
            rows_seen += median.dim(1);
        },
        topt);
    median_out.close();
    const long peak = status_kb("VmHWM:");
    const long growth_mb = (peak - before) / 1024;
    const long scene_mb = static_cast<long>(rows * cols * bands * 4 / (1 << 20));
    MESSAGE("peak resident growth during the reduction: " << growth_mb << " MB; one scene is " << scene_mb << " MB, the stack "
                                                          << scene_mb * dates << " MB");
    CHECK(rows_seen == rows);
    CHECK(growth_mb < scene_mb);
    fs::remove_all(dir);
}
