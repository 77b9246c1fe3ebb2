// Pictures: reading PNG/JPEG (8 and 16 bit, channel conversion, BT.601 luma), exact percentiles,
// quick-look stretches (fixed, percentile, dB, NaN/no-data/mask, dual-pol composite), panels with
// shared and separate stretches, labels, atomic writes and clear errors.
#include <doctest/doctest.h>

#include "support/files.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "despeck/io/image.hpp"
#include "despeck/random.hpp"

using namespace despeck;
namespace fs = std::filesystem;

namespace {

const float nan_f = std::numeric_limits<float>::quiet_NaN();
const float inf_f = std::numeric_limits<float>::infinity();

fs::path tmp_dir(const std::string& name) {
    const fs::path d = fs::path(DESPECK_TEST_TMP) / "image" / name;
    fs::create_directories(d);
    return d;
}

// A file of the shared data folder: the test fails (not skips) naming what is missing.
fs::path shared_file(const std::string& relative) {
    const fs::path root = DESPECK_SHARED_DIR;
    if (!fs::is_directory(root))
        FAIL("the shared data folder '" << root.string()
                                        << "' (DESPECK_SHARED_DIR) is absent: check out ../shared beside the repository "
                                           "or configure with -DDESPECK_SHARED_DIR=<path>");
    const fs::path p = root / relative;
    if (!fs::is_regular_file(p)) FAIL("shared test file '" << p.string() << "' is missing");
    return p;
}

using despeck::testing::read_bytes;
using despeck::testing::write_bytes;

// [1, h, w, 1] from row-major values.
Tensor<float> grey(index_t h, index_t w, const std::vector<float>& v) {
    REQUIRE(static_cast<index_t>(v.size()) == h * w);
    Tensor<float> t(Shape{1, h, w, 1});
    std::copy(v.begin(), v.end(), t.data());
    return t;
}

std::vector<float> iota_values(int n, float start = 0.0f) {
    std::vector<float> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), start);
    return v;
}

// A minimal 16-bit greyscale PNG written by hand (zlib "stored" block, no compression), so the
// 16-bit path is tested without a 16-bit writer.
std::uint32_t crc32(const std::string& bytes) {
    std::uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : bytes) {
        c ^= b;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}
void put_be32(std::string& s, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((v >> shift) & 0xFF);
}
std::string png_chunk(const std::string& type, const std::string& data) {
    std::string out;
    put_be32(out, static_cast<std::uint32_t>(data.size()));
    out += type + data;
    put_be32(out, crc32(type + data));
    return out;
}
std::string png16_grey(int w, int h, const std::vector<std::uint16_t>& samples) {
    std::string raw;
    for (int y = 0; y < h; ++y) {
        raw += '\0';  // filter type none
        for (int x = 0; x < w; ++x) {
            const std::uint16_t v = samples[static_cast<std::size_t>(y * w + x)];
            raw += static_cast<char>(v >> 8);
            raw += static_cast<char>(v & 0xFF);
        }
    }
    std::uint32_t a = 1, b = 0;
    for (unsigned char c : raw) a = (a + c) % 65521u, b = (b + a) % 65521u;
    std::string z = "\x78\x01";
    z += '\x01';  // final stored block
    const auto len = static_cast<std::uint16_t>(raw.size());
    z += static_cast<char>(len & 0xFF);
    z += static_cast<char>(len >> 8);
    z += static_cast<char>(~len & 0xFF);
    z += static_cast<char>((~len >> 8) & 0xFF);
    z += raw;
    put_be32(z, (b << 16) | a);
    std::string ihdr;
    put_be32(ihdr, static_cast<std::uint32_t>(w));
    put_be32(ihdr, static_cast<std::uint32_t>(h));
    ihdr += std::string("\x10\x00\x00\x00\x00", 5);  // 16 bit, grey, deflate, adaptive filter, no interlace
    return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) + png_chunk("IDAT", z) + png_chunk("IEND", "");
}

}  // namespace

TEST_CASE("image: a ramp written with a fixed stretch reads back as the exact 8-bit values") {
    const fs::path dir = tmp_dir("ramp");
    Tensor<float> ramp = grey(2, 256, [] {
        std::vector<float> v = iota_values(256);
        std::vector<float> r = iota_values(256);
        std::reverse(r.begin(), r.end());
        v.insert(v.end(), r.begin(), r.end());
        return v;
    }());
    io::write_png(dir / "ramp.png", ramp, io::Stretch::fixed(0, 255));
    const io::ImageInfo info = io::image_info(dir / "ramp.png");
    CHECK(info.width == 256);
    CHECK(info.height == 2);
    CHECK(info.channels == 1);
    CHECK_FALSE(info.sixteen_bit);
    const Tensor<float> back = io::read_image(dir / "ramp.png");
    REQUIRE(back.shape() == Shape{1, 2, 256, 1});
    for (int x = 0; x < 256; ++x) {
        CHECK(back.at(0, 0, x, 0) == static_cast<float>(x) / 255.0f);
        CHECK(back.at(0, 1, x, 0) == static_cast<float>(255 - x) / 255.0f);
    }
    // Values outside the fixed range are clamped; 0.5 steps round half away from zero.
    Tensor<float> edge = grey(1, 4, {-10.0f, 300.0f, 0.5f, 1.5f});
    const io::QuickLook q = io::quick_look(edge, io::Stretch::fixed(0, 255));
    CHECK(q.at(0, 0) == 0);
    CHECK(q.at(0, 1) == 255);
    CHECK(q.at(0, 2) == 1);
    CHECK(q.at(0, 3) == 2);
}

TEST_CASE("image: RGB values round-trip through read_image and write_png with Stretch::fixed(0, 1)") {
    const fs::path dir = tmp_dir("rgb");
    Tensor<float> rgb(Shape{1, 3, 5, 3});
    for (index_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<float>((i * 37) % 256) / 255.0f;
    io::write_png(dir / "rgb.png", rgb, io::Stretch::fixed(0, 1));
    const Tensor<float> back = io::read_image(dir / "rgb.png");
    REQUIRE(back.shape() == rgb.shape());
    for (index_t i = 0; i < rgb.size(); ++i) CHECK(back[i] == rgb[i]);
}

TEST_CASE("image: percentiles are exact, NumPy's default definition, whatever the order") {
    std::vector<float> v = iota_values(100);
    Rng rng(7);
    for (std::size_t i = v.size() - 1; i > 0; --i) std::swap(v[i], v[static_cast<std::size_t>(rng.below(i + 1))]);
    CHECK(io::percentile(v, 2) == doctest::Approx(1.98).epsilon(1e-12));
    CHECK(io::percentile(v, 98) == doctest::Approx(97.02).epsilon(1e-12));
    CHECK(io::percentile(v, 0) == 0.0);
    CHECK(io::percentile(v, 100) == 99.0);
    CHECK(io::percentile(v, 50) == doctest::Approx(49.5));
    std::vector<float> one{3.5f};
    CHECK(io::percentile(one, 2) == 3.5);
    CHECK(io::percentile(one, 98) == 3.5);
    std::vector<float> ties{1, 1, 1, 5};
    CHECK(io::percentile(ties, 50) == 1.0);
    CHECK(io::percentile(ties, 100) == 5.0);
    std::vector<float> empty;
    CHECK_THROWS_AS(io::percentile(empty, 50), value_error);
    CHECK_THROWS_AS(io::percentile(v, 101), value_error);
    std::vector<float> with_nan{1, nan_f};
    CHECK_THROWS_AS(io::percentile(with_nan, 50), value_error);
}

TEST_CASE("image: 2/98 percentile stretch of 0..99") {
    const Tensor<float> img = grey(10, 10, iota_values(100));
    const io::QuickLook q = io::quick_look(img);  // default: linear, 2 / 98 percentiles
    REQUIRE(q.ranges.size() == 1);
    REQUIRE(q.ranges[0].size() == 1);
    CHECK(q.ranges[0][0].low == doctest::Approx(1.98));
    CHECK(q.ranges[0][0].high == doctest::Approx(97.02));
    CHECK(q.width == 10);
    CHECK(q.height == 10);
    CHECK(q.channels == 1);
    CHECK(q.at(0, 0) == 0);   // 0 and 1 are below 1.98
    CHECK(q.at(0, 1) == 0);
    CHECK(q.at(0, 2) == 0);   // (2 - 1.98) / 95.04 * 255 = 0.054
    CHECK(q.at(0, 3) == 3);   // (3 - 1.98) / 95.04 * 255 = 2.74
    CHECK(q.at(5, 0) == 129); // (50 - 1.98) / 95.04 * 255 = 128.84
    CHECK(q.at(9, 8) == 255); // 98 > 97.02
    CHECK(q.at(9, 9) == 255);
    // Through a file as well.
    const fs::path dir = tmp_dir("percentile");
    io::write_png(dir / "p.png", img);
    const Tensor<float> back = io::read_image(dir / "p.png");
    CHECK(back.at(0, 5, 0, 0) * 255.0f == doctest::Approx(129));
    // A fixed bound overrides only its own percentile.
    io::Stretch s;
    s.min = 0.0;
    const io::QuickLook q2 = io::quick_look(img, s);
    CHECK(q2.ranges[0][0].low == 0.0);
    CHECK(q2.ranges[0][0].high == doctest::Approx(97.02));
}

TEST_CASE("image: NaN, infinite and masked pixels are black and do not move the stretch") {
    std::vector<float> v = iota_values(100);
    v.push_back(nan_f);
    v.push_back(inf_f);
    v.push_back(-inf_f);
    v.push_back(1e9f);  // an outlier, masked out below
    const Tensor<float> img = grey(1, 104, v);
    Tensor<float> mask(Shape{1, 1, 104, 1}, 1.0f);
    mask[103] = 0.0f;
    const io::QuickLook q = io::quick_look(img, {}, &mask);
    CHECK(q.ranges[0][0].low == doctest::Approx(1.98));
    CHECK(q.ranges[0][0].high == doctest::Approx(97.02));
    for (int x = 100; x < 104; ++x) CHECK(q.at(0, x) == 0);
    CHECK(q.at(0, 50) == 129);
    // Without the mask the outlier moves the upper percentile.
    const io::QuickLook unmasked = io::quick_look(img);
    CHECK(unmasked.ranges[0][0].high > 97.02);
    // A mask of the wrong size is refused.
    Tensor<float> bad(Shape{1, 1, 103, 1}, 1.0f);
    CHECK_THROWS_AS(io::quick_look(img, {}, &bad), shape_error);
    // An image with no valid pixel is all black.
    const io::QuickLook none = io::quick_look(grey(1, 3, {nan_f, nan_f, inf_f}));
    CHECK(none.pixels == std::vector<std::uint8_t>(3, 0));
    // A constant image shows mid-grey, not black like no-data.
    const io::QuickLook flat = io::quick_look(grey(1, 3, {2, 2, 2}));
    CHECK(flat.pixels == std::vector<std::uint8_t>(3, 128));
}

TEST_CASE("image: validity_mask follows the raster's units and no-data value") {
    Tensor<float> px(Shape{1, 1, 4, 2}, {1.0f, 2.0f, 0.0f, 1.0f, -9999.0f, 1.0f, 3.0f, nan_f});
    const Tensor<float> m = io::validity_mask(px, raster::Units::linear_intensity, -9999.0);
    REQUIRE(m.shape() == Shape{1, 1, 4, 1});
    CHECK(m[0] == 1.0f);
    CHECK(m[1] == 0.0f);  // 0 has no dB value
    CHECK(m[2] == 0.0f);  // no-data
    CHECK(m[3] == 0.0f);  // NaN
    const Tensor<float> m_db = io::validity_mask(px, raster::Units::db, std::nullopt);
    CHECK(m_db[1] == 1.0f);  // 0 dB is a valid value
}

TEST_CASE("image: dB stretch of linear intensity") {
    // x = 10^(k/10) for k = 0..99 is k dB: the percentiles are those of 0..99, in dB.
    std::vector<float> v;
    for (int k = 0; k < 100; ++k) v.push_back(static_cast<float>(std::pow(10.0, k / 10.0)));
    v.push_back(0.0f);    // no dB value: black, not in the stretch
    v.push_back(-1.0f);
    const Tensor<float> img = grey(1, 102, v);
    const io::QuickLook q = io::quick_look(img, io::Stretch::db());
    CHECK(q.ranges[0][0].low == doctest::Approx(1.98).epsilon(1e-5));
    CHECK(q.ranges[0][0].high == doctest::Approx(97.02).epsilon(1e-5));
    CHECK(q.at(0, 50) == 129);
    CHECK(q.at(0, 100) == 0);
    CHECK(q.at(0, 101) == 0);
    // A fixed range in dB: 1 (0 dB) sits in the middle of [-10, 10] dB; 0.1 is -10 dB, 10 is 10 dB.
    const io::QuickLook f = io::quick_look(grey(1, 3, {1.0f, 0.1f, 10.0f}), io::Stretch::fixed(-10, 10, io::Stretch::Domain::db));
    CHECK(f.at(0, 0) == 128);
    CHECK(f.at(0, 1) == 0);
    CHECK(f.at(0, 2) == 255);
    // Amplitude: 20 log10, via Stretch::for_units.
    const io::Stretch amp = io::Stretch::for_units(raster::Units::amplitude);
    CHECK(amp.domain == io::Stretch::Domain::db);
    CHECK(amp.db_scale == 20.0);
    io::Stretch amp_fixed = amp;
    amp_fixed.min = -20.0;
    amp_fixed.max = 20.0;
    const io::QuickLook a = io::quick_look(grey(1, 2, {10.0f, 0.1f}), amp_fixed);  // +20 dB and -20 dB
    CHECK(a.at(0, 0) == 255);
    CHECK(a.at(0, 1) == 0);
    CHECK(io::Stretch::for_units(raster::Units::db).domain == io::Stretch::Domain::linear);
}

TEST_CASE("image: RGB shares one range unless per_channel; the dual-pol composite is (VV, VH, VV/VH) in dB") {
    // RGB: channel 2 spans twice channel 0's range.
    Tensor<float> rgb(Shape{1, 1, 2, 3}, {0.0f, 0.0f, 0.0f, 1.0f, 1.5f, 2.0f});
    io::Stretch s;
    s.low_percentile = 0;
    s.high_percentile = 100;
    const io::QuickLook shared = io::quick_look(rgb, s);
    CHECK(shared.channels == 3);
    CHECK(shared.at(0, 1, 0) == 128);
    CHECK(shared.at(0, 1, 2) == 255);
    s.per_channel = true;
    const io::QuickLook separate = io::quick_look(rgb, s);
    CHECK(separate.at(0, 1, 0) == 255);
    CHECK(separate.at(0, 1, 2) == 255);

    // Dual-pol, (VV, VH) in dB: (0, -10), (-10, -20), (-20, -20), and a pixel with VV = 0 (no dB).
    Tensor<float> dual(Shape{1, 1, 4, 2}, {1.0f, 0.1f, 0.1f, 0.01f, 0.01f, 0.01f, 0.0f, 0.5f});
    io::Stretch d = io::Stretch::db(0, 100);
    const io::QuickLook c = io::quick_look(dual, d);
    REQUIRE(c.channels == 3);
    REQUIRE(c.ranges[0].size() == 3);
    CHECK(c.ranges[0][0].low == doctest::Approx(-20));  // VV dB
    CHECK(c.ranges[0][0].high == doctest::Approx(0));
    CHECK(c.ranges[0][1].low == doctest::Approx(-20));  // VH dB
    CHECK(c.ranges[0][1].high == doctest::Approx(-10));
    CHECK(c.ranges[0][2].low == doctest::Approx(0));    // VV/VH dB
    CHECK(c.ranges[0][2].high == doctest::Approx(10));
    CHECK(c.at(0, 0, 0) == 255);
    CHECK(c.at(0, 0, 1) == 255);
    CHECK(c.at(0, 0, 2) == 255);  // ratio 10 dB
    CHECK(c.at(0, 2, 0) == 0);
    CHECK(c.at(0, 2, 2) == 0);    // ratio 0 dB
    for (int k = 0; k < 3; ++k) CHECK(c.at(0, 3, k) == 0);  // VV = 0: no dB value, the whole pixel black
    // A fixed range applies to VV and VH, never to the ratio.
    io::Stretch fixed = io::Stretch::fixed(-30, 0, io::Stretch::Domain::db);
    fixed.low_percentile = 0;
    fixed.high_percentile = 100;
    const io::QuickLook cf = io::quick_look(dual, fixed);
    CHECK(cf.ranges[0][0].low == -30.0);
    CHECK(cf.ranges[0][1].high == 0.0);
    CHECK(cf.ranges[0][2].low == doctest::Approx(0));
    CHECK(cf.ranges[0][2].high == doctest::Approx(10));
    // Domain linear: the bands are already dB, the ratio is their difference.
    Tensor<float> dual_db(Shape{1, 1, 2, 2}, {0.0f, -10.0f, -20.0f, -20.0f});
    const io::QuickLook cl = io::quick_look(dual_db, io::Stretch{.low_percentile = 0, .high_percentile = 100});
    CHECK(cl.ranges[0][2].low == doctest::Approx(0));
    CHECK(cl.ranges[0][2].high == doctest::Approx(10));
}

TEST_CASE("image: bad shapes and stretches are refused before anything is written") {
    const fs::path dir = tmp_dir("refused");
    const fs::path target = dir / "keep.png";
    io::write_png(target, grey(1, 2, {0, 1}));
    const std::string before = read_bytes(target);
    CHECK_THROWS_AS(io::write_png(target, Tensor<float>(Shape{1, 2, 2, 4})), shape_error);  // 4 channels
    CHECK_THROWS_AS(io::write_png(target, Tensor<float>(Shape{2, 2, 2, 1})), shape_error);  // N = 2
    CHECK_THROWS_AS(io::write_png(target, Tensor<float>(Shape{2, 2, 1})), shape_error);     // rank 3
    CHECK_THROWS_AS(io::write_png(target, Tensor<float>(Shape{1, 0, 2, 1})), shape_error);  // empty
    CHECK_THROWS_AS(io::write_png(target, grey(1, 2, {0, 1}), io::Stretch::fixed(1, 1)), value_error);
    CHECK_THROWS_AS(io::write_png(target, grey(1, 2, {0, 1}), io::Stretch{.low_percentile = 60, .high_percentile = 40}),
                    value_error);
    CHECK_THROWS_AS(io::write_png(target, grey(1, 2, {0, 1}), io::Stretch{.low_percentile = -1}), value_error);
    CHECK(read_bytes(target) == before);
}

TEST_CASE("image: panels put equal-height images side by side with a shared or separate stretch") {
    const fs::path dir = tmp_dir("panel");
    const Tensor<float> a = grey(2, 3, {0.0f, 0.5f, 1.0f, 0.0f, 0.5f, 1.0f});
    const Tensor<float> b = grey(2, 2, {0.0f, 0.5f, 0.0f, 0.5f});  // half a's range
    io::Stretch s;
    s.low_percentile = 0;
    s.high_percentile = 100;
    io::write_panel(dir / "shared.png", {&a, &b}, {}, s, true);
    const Tensor<float> shared = io::read_image(dir / "shared.png");
    REQUIRE(shared.shape() == Shape{1, 2, 3 + io::panel_gap + 2, 1});
    const index_t bx = 3 + io::panel_gap;
    CHECK(shared.at(0, 0, 2, 0) == 1.0f);              // a's maximum
    CHECK(shared.at(0, 0, bx + 1, 0) * 255 == doctest::Approx(128));  // b's maximum, 0.5 of the shared range
    for (int g = 0; g < io::panel_gap; ++g) CHECK(shared.at(0, 1, 3 + g, 0) == 1.0f);  // white gap

    io::write_panel(dir / "separate.png", {&a, &b}, {}, s, false);
    const Tensor<float> separate = io::read_image(dir / "separate.png");
    CHECK(separate.at(0, 0, bx + 1, 0) == 1.0f);  // b stretched over its own range

    const io::QuickLook q = io::panel_quick_look({&a, &b}, {}, s, false);
    REQUIRE(q.ranges.size() == 2);
    CHECK(q.ranges[0][0].high == 1.0);
    CHECK(q.ranges[1][0].high == 0.5);
    const io::QuickLook qs = io::panel_quick_look({&a, &b}, {}, s, true);
    CHECK(qs.ranges[1][0].high == 1.0);

    // NaN in one image changes neither the other's pixels nor the shared range.
    Tensor<float> b_nan = b;
    b_nan[0] = nan_f;
    const io::QuickLook qn = io::panel_quick_look({&a, &b_nan}, {}, s, true);
    CHECK(qn.ranges[0][0].high == 1.0);
    CHECK(qn.at(0, static_cast<int>(bx)) == 0);

    // Colour and grey cannot share a panel; heights must match; label count must match.
    const Tensor<float> c(Shape{1, 2, 2, 3});
    const Tensor<float> tall = grey(3, 1, {0, 1, 2});
    CHECK_THROWS_AS(io::panel_quick_look({&a, &c}), shape_error);
    CHECK_THROWS_AS(io::panel_quick_look({&a, &tall}), shape_error);
    CHECK_THROWS_AS(io::panel_quick_look({&a, &b}, {"only one"}), value_error);
    CHECK_THROWS_AS(io::panel_quick_look({}), value_error);
}

TEST_CASE("image: labels add a white strip with black text above each image") {
    const Tensor<float> a(Shape{1, 20, 40, 1}, 0.25f);
    const Tensor<float> b(Shape{1, 20, 30, 1}, 0.75f);
    const io::QuickLook q = io::panel_quick_look({&a, &b}, {"noisy", "clean"}, io::Stretch::fixed(0, 1));
    const int strip = q.height - 20;
    CHECK(q.width == 40 + io::panel_gap + 30);
    CHECK(strip > 0);
    int ink_a = 0, ink_b = 0;
    for (int y = 0; y < strip; ++y) {
        for (int x = 0; x < 40; ++x) ink_a += q.at(y, x) == 0;
        for (int x = 40 + io::panel_gap; x < q.width; ++x) ink_b += q.at(y, x) == 0;
        for (int x = 40; x < 40 + io::panel_gap; ++x) CHECK(q.at(y, x) == 255);  // text stays inside its image
    }
    CHECK(ink_a > 10);
    CHECK(ink_b > 10);
    CHECK(q.at(strip, 0) == 64);   // 0.25 -> 63.75
    CHECK(q.at(strip, 45) == 191); // 0.75 -> 191.25
    // Empty labels: no strip; non-ASCII bytes do not crash the font.
    CHECK(io::panel_quick_look({&a, &b}, {"", ""}).height == 20);
    CHECK(io::panel_quick_look({&a, &b}, {"\xc3\xa9t\xc3\xa9 \x7f", "\t\n"}).height > 20);
}

TEST_CASE("image: writes are atomic; an unwritable folder gives an io_error naming it and leaves nothing") {
    const fs::path dir = tmp_dir("atomic");
    for (const auto& e : fs::directory_iterator(dir)) fs::remove_all(e.path());
    const Tensor<float> img = grey(1, 2, {0, 1});

    const fs::path missing_dir = dir / "no_such_folder";
    try {
        io::write_png(missing_dir / "x.png", img);
        FAIL("writing into a missing folder did not throw");
    } catch (const io_error& e) {
        CHECK(std::string(e.what()).find(missing_dir.string()) != std::string::npos);
    }
    // A "folder" that is a regular file cannot be written into, even by root.
    write_bytes(dir / "a_file", "x");
    try {
        io::write_png(dir / "a_file" / "x.png", img);
        FAIL("writing below a regular file did not throw");
    } catch (const io_error& e) {
        CHECK(std::string(e.what()).find((dir / "a_file").string()) != std::string::npos);
    }
    // A read-only folder (only meaningful when not running as root).
    const fs::path ro = dir / "read_only";
    fs::create_directories(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    bool ro_threw = false;
    try {
        io::write_png(ro / "x.png", img);
    } catch (const io_error& e) {
        ro_threw = true;
        CHECK(std::string(e.what()).find(ro.string()) != std::string::npos);
    }
    if (!ro_threw) MESSAGE("running with root rights: the read-only folder accepted the file, as expected for root");
    CHECK(fs::is_empty(ro) == ro_threw);
    fs::permissions(ro, fs::perms::owner_all);
    fs::remove_all(ro);

    // Nothing else was left behind: no partial PNG, no temporary.
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    CHECK(names == std::vector<std::string>{"a_file"});

    // Overwriting replaces the whole file.
    io::write_png(dir / "y.png", grey(1, 2, {0, 1}), io::Stretch::fixed(0, 1));
    io::write_png(dir / "y.png", grey(1, 3, {1, 0, 1}), io::Stretch::fixed(0, 1));
    CHECK(io::read_image(dir / "y.png").shape() == Shape{1, 1, 3, 1});
}

TEST_CASE("image: the shared clean images read with the expected sizes and channels") {
    const fs::path camera = shared_file("data/clean/camera.png");
    const Tensor<float> cam = io::read_image(camera);
    CHECK(cam.shape() == Shape{1, 512, 512, 1});
    float lo = 1, hi = 0;
    for (index_t i = 0; i < cam.size(); ++i) lo = std::min(lo, cam[i]), hi = std::max(hi, cam[i]);
    CHECK(lo >= 0.0f);
    CHECK(hi <= 1.0f);
    CHECK(hi > lo);
    // Grey asked as RGB replicates; asked as 1 channel it is unchanged.
    const Tensor<float> cam3 = io::read_image(camera, 3);
    REQUIRE(cam3.shape() == Shape{1, 512, 512, 3});
    CHECK(cam3.at(0, 100, 200, 0) == cam.at(0, 100, 200, 0));
    CHECK(cam3.at(0, 100, 200, 2) == cam.at(0, 100, 200, 0));
    CHECK(io::read_image(camera, 1)[12345] == cam[12345]);
    // An 8-bit file written back with a fixed [0, 1] stretch decodes to the same values.
    const fs::path copy = tmp_dir("shared") / "camera_copy.png";
    io::write_png(copy, cam, io::Stretch::fixed(0, 1));
    const Tensor<float> cam_back = io::read_image(copy);
    CHECK(std::equal(cam.data(), cam.data() + cam.size(), cam_back.data()));

    const fs::path chelsea = shared_file("data/clean/chelsea.png");
    CHECK(io::read_image(chelsea).shape() == Shape{1, 300, 451, 3});
    const fs::path hubble = shared_file("data/clean/hubble_deep_field.jpg");
    const io::ImageInfo hi_info = io::image_info(hubble);
    CHECK(hi_info.width == 1000);
    CHECK(hi_info.height == 872);
    CHECK(io::read_image(hubble, 1).shape() == Shape{1, 872, 1000, 1});
}

TEST_CASE("image: a colour image read as 1 channel is its BT.601 luma") {
    const fs::path astronaut = shared_file("data/clean/astronaut.png");
    const Tensor<float> rgb = io::read_image(astronaut);
    REQUIRE(rgb.shape() == Shape{1, 512, 512, 3});
    const Tensor<float> y = io::read_image(astronaut, 1);
    REQUIRE(y.shape() == Shape{1, 512, 512, 1});
    double max_err = 0;
    for (index_t i = 0; i < y.size(); ++i) {
        const double luma = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
        max_err = std::max(max_err, std::abs(luma - y[i]));
    }
    CHECK(max_err < 1e-6);
    // Close to stb's own integer conversion (req_comp = 1), which truncates to 8 bits.
    int w = 0, h = 0, n = 0;
    unsigned char* stb_grey = stbi_load(astronaut.c_str(), &w, &h, &n, 1);
    REQUIRE(stb_grey != nullptr);
    double max_diff = 0;
    for (index_t i = 0; i < y.size(); ++i) max_diff = std::max(max_diff, std::abs(y[i] * 255.0 - stb_grey[i]));
    stbi_image_free(stb_grey);
    CHECK(max_diff < 1.5);
    // 2 and 4 channels add an opaque alpha.
    const Tensor<float> ya = io::read_image(astronaut, 2);
    CHECK(ya.at(0, 7, 9, 0) == y.at(0, 7, 9, 0));
    CHECK(ya.at(0, 7, 9, 1) == 1.0f);
    const Tensor<float> rgba = io::read_image(astronaut, 4);
    CHECK(rgba.at(0, 7, 9, 1) == rgb.at(0, 7, 9, 1));
    CHECK(rgba.at(0, 7, 9, 3) == 1.0f);
}

TEST_CASE("image: 16-bit PNGs read as v / 65535") {
    const fs::path p = tmp_dir("png16") / "grey16.png";
    write_bytes(p, png16_grey(3, 2, {0, 1, 65535, 32768, 256, 1000}));
    const io::ImageInfo info = io::image_info(p);
    CHECK(info.sixteen_bit);
    CHECK(info.channels == 1);
    const Tensor<float> t = io::read_image(p);
    REQUIRE(t.shape() == Shape{1, 2, 3, 1});
    const std::array<float, 6> expected{0, 1, 65535, 32768, 256, 1000};
    for (int i = 0; i < 6; ++i) CHECK(t[i] == expected[static_cast<std::size_t>(i)] / 65535.0f);
    const Tensor<float> rgb = io::read_image(p, 3);
    CHECK(rgb.at(0, 1, 0, 1) == 32768.0f / 65535.0f);
}

TEST_CASE("image: missing, corrupt, truncated and empty files give io_errors naming the file and the reason") {
    const fs::path dir = tmp_dir("errors");
    auto expect_io_error = [](const fs::path& p, const std::string& reason) {
        try {
            (void)io::read_image(p);
            FAIL("reading '" << p.string() << "' did not throw");
        } catch (const io_error& e) {
            const std::string msg = e.what();
            CHECK_MESSAGE(msg.find(p.string()) != std::string::npos, msg);
            CHECK_MESSAGE(msg.find(reason) != std::string::npos, msg);
        }
    };
    expect_io_error(dir / "does_not_exist.png", "No such file");

    write_bytes(dir / "garbage.png", std::string("this is not an image, just some bytes \x01\x02\x03\xff"));
    expect_io_error(dir / "garbage.png", "stb_image: ");

    write_bytes(dir / "empty.png", "");
    expect_io_error(dir / "empty.png", "stb_image: ");

    // A valid PNG cut in half: the header is fine, the pixels are not.
    Tensor<float> noise(Shape{1, 64, 64, 1});
    Rng rng(3);
    for (index_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<float>(rng.uniform());
    io::write_png(dir / "whole.png", noise, io::Stretch::fixed(0, 1));
    const std::string whole = read_bytes(dir / "whole.png");
    write_bytes(dir / "truncated.png", whole.substr(0, whole.size() / 2));
    expect_io_error(dir / "truncated.png", "stb_image: ");

    CHECK_THROWS_AS(io::image_info(dir / "garbage.png"), io_error);
    CHECK_THROWS_AS(io::read_image(dir / "whole.png", 5), value_error);
    CHECK_THROWS_AS(io::read_image(dir / "whole.png", -1), value_error);
}

TEST_CASE("image: quick-look of a speckled camera beside the clean one (file kept for inspection)") {
    const Tensor<float> cam = io::read_image(shared_file("data/clean/camera.png"), 1);
    // Intensity X > 0 and Y = X * S, S ~ Gamma(L = 4, 1/4): the mean of 4 unit exponentials.
    Tensor<float> clean = cam;
    for (index_t i = 0; i < clean.size(); ++i) clean[i] = (cam[i] * 255.0f + 1.0f) / 256.0f;
    Tensor<float> noisy = clean;
    Rng rng(42);
    for (index_t i = 0; i < noisy.size(); ++i) {
        double s = 0;
        for (int k = 0; k < 4; ++k) s -= std::log(1.0 - rng.uniform());
        noisy[i] = static_cast<float>(clean[i] * s / 4.0);
    }
    const fs::path out = tmp_dir("quicklook") / "camera_speckle_panel.png";
    io::write_panel(out, {&noisy, &clean}, {"speckled (L = 4), dB", "clean, dB"}, io::Stretch::db(), true);
    const io::ImageInfo info = io::image_info(out);
    CHECK(info.width == 512 * 2 + io::panel_gap);
    CHECK(info.height > 512);
    CHECK(info.channels == 1);
    MESSAGE("wrote " << out.string());

    // A dual-pol composite of the same scene: VV = clean x speckle, VH = a darker, smoother copy.
    Tensor<float> dual(Shape{1, 512, 512, 2});
    for (index_t i = 0; i < clean.size(); ++i) {
        dual[2 * i] = noisy[i];
        dual[2 * i + 1] = 0.2f * clean[i] * clean[i];
    }
    const fs::path composite = tmp_dir("quicklook") / "dualpol_composite.png";
    io::write_png(composite, dual, io::Stretch::db());
    CHECK(io::image_info(composite).channels == 3);
}
