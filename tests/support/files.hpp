// tests/support/files.hpp — file helpers shared by the tests: whole-file bytes, and the GeoTIFF
// fixtures of ../shared (a missing fixture FAILs naming its path, never skips).
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <doctest/doctest.h>

namespace despeck::testing {

inline std::string read_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// ../shared/data/geotiff/<name>
inline std::filesystem::path geotiff_fixture(const std::string& name) {
    const std::filesystem::path p = std::filesystem::path(DESPECK_SHARED_DIR) / "data" / "geotiff" / name;
    if (!std::filesystem::exists(p)) FAIL("missing fixture " << p.string() << " (see ../shared/README.md)");
    return p;
}

}  // namespace despeck::testing
