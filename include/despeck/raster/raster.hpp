// despeck/raster/raster.hpp — rasters as the data side sees them: pixels, units, no-data and
// georeferencing, independent of the file format.
//
//   pixels   Tensor<float> [1, rows, cols, bands] (NHWC with N = 1), the network's own layout
//   units    what a value means: linear intensity (sigma0/beta0 power), amplitude, dB
//   no-data  the declared value (GDAL's no-data tag) and, for every pixel, whether it is valid
//   geo      the georeferencing tags of the source file, kept verbatim so that outputs carry the
//            same coordinate system and geotransform (see io/geotiff.hpp)
// A RasterSource hands out blocks of rows, so a scene larger than memory can be processed piece by
// piece (temporal reductions, tiled inference); a GeoTIFF reader and an in-memory raster are both
// RasterSources.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "despeck/tensor.hpp"

namespace despeck::raster {

enum class Units { unknown, linear_intensity, amplitude, db };

inline const char* to_string(Units u) {
    switch (u) {
        case Units::linear_intensity: return "linear_intensity";
        case Units::amplitude: return "amplitude";
        case Units::db: return "db";
        default: return "unknown";
    }
}
inline Units units_from_string(const std::string& s) {
    if (s == "linear_intensity" || s == "linear" || s == "intensity" || s == "power") return Units::linear_intensity;
    if (s == "amplitude") return Units::amplitude;
    if (s == "db" || s == "dB" || s == "decibel") return Units::db;
    if (s == "unknown") return Units::unknown;
    detail::fail<value_error>("unknown units '", s, "' (expected linear_intensity, amplitude or db)");
}

// The GeoTIFF georeferencing of a raster, as the raw tag payloads (empty when absent). Copying
// them verbatim onto an output keeps CRS, geotransform and tie points exactly as the input had them.
struct GeoReference {
    std::vector<double> pixel_scale;       // ModelPixelScaleTag (33550): 3 doubles
    std::vector<double> tiepoints;         // ModelTiepointTag (33922): 6 doubles per tie point
    std::vector<double> transformation;    // ModelTransformationTag (34264): 16 doubles
    std::vector<std::uint16_t> geo_keys;   // GeoKeyDirectoryTag (34735)
    std::vector<double> geo_doubles;       // GeoDoubleParamsTag (34736)
    std::string geo_ascii;                 // GeoAsciiParamsTag (34737)

    bool empty() const { return pixel_scale.empty() && tiepoints.empty() && transformation.empty() && geo_keys.empty(); }
    bool has_crs() const { return !geo_keys.empty(); }

    // GDAL-style geotransform [x0, dx, rx, y0, ry, dy] when one can be derived (a transformation
    // matrix, or one tie point with a pixel scale); pixel-corner ("area") convention of the tags.
    std::optional<std::array<double, 6>> geotransform() const {
        if (transformation.size() >= 16)
            return std::array<double, 6>{transformation[3], transformation[0], transformation[1],
                                         transformation[7], transformation[4], transformation[5]};
        if (tiepoints.size() >= 6 && pixel_scale.size() >= 2) {
            const double i = tiepoints[0], j = tiepoints[1], x = tiepoints[3], y = tiepoints[4];
            const double sx = pixel_scale[0], sy = pixel_scale[1];
            return std::array<double, 6>{x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy};
        }
        return std::nullopt;
    }
    friend bool operator==(const GeoReference&, const GeoReference&) = default;
};

struct RasterInfo {
    index_t rows = 0;    // height
    index_t cols = 0;    // width
    index_t bands = 0;
    Units units = Units::unknown;
    std::optional<double> nodata;          // the declared no-data value, if any
    GeoReference geo;
    std::string gdal_metadata;             // GDAL_METADATA XML (tag 42112), verbatim; band names etc.
    std::vector<std::string> band_names;   // from the GDAL metadata when present
    std::string source;                    // file name or description, for error messages

    std::string describe() const {
        return source + " (" + std::to_string(cols) + " x " + std::to_string(rows) + ", " + std::to_string(bands) +
               " band(s), " + to_string(units) + ")";
    }
};

// Whether a stored value is a valid measurement: finite, not the declared no-data value, and, for
// linear intensity or amplitude, positive (0 and negatives have no dB value: they are no-data).
inline bool is_valid_value(float v, Units units, const std::optional<double>& nodata) {
    if (!std::isfinite(v)) return false;
    if (nodata && static_cast<double>(v) == *nodata) return false;
    if ((units == Units::linear_intensity || units == Units::amplitude) && !(v > 0.0f)) return false;
    return true;
}

// A source of pixel blocks: rows [row0, row0 + count) of every band, as [1, count, cols, bands].
class RasterSource {
public:
    virtual ~RasterSource() = default;
    virtual const RasterInfo& info() const = 0;
    virtual Tensor<float> read_rows(index_t row0, index_t count) = 0;
};

// A whole raster in memory, which is also a RasterSource.
class MemoryRaster : public RasterSource {
public:
    MemoryRaster() = default;
    MemoryRaster(RasterInfo info, Tensor<float> pixels) : info_(std::move(info)), pixels_(std::move(pixels)) {
        const Shape expected{1, info_.rows, info_.cols, info_.bands};
        if (pixels_.shape() != expected)
            detail::fail<shape_error>("MemoryRaster ", info_.source, ": pixels ", pixels_.shape(), ", info says ", expected);
    }
    const RasterInfo& info() const override { return info_; }
    RasterInfo& info() { return info_; }
    Tensor<float>& pixels() { return pixels_; }
    const Tensor<float>& pixels() const { return pixels_; }
    Tensor<float> read_rows(index_t row0, index_t count) override {
        if (row0 < 0 || count < 0 || row0 + count > info_.rows)
            detail::fail<value_error>(info_.source, ": rows [", row0, ", ", row0 + count, ") outside 0..", info_.rows);
        Tensor<float> block = Tensor<float>::uninitialized(Shape{1, count, info_.cols, info_.bands});
        const index_t row_size = info_.cols * info_.bands;
        std::copy(pixels_.data() + row0 * row_size, pixels_.data() + (row0 + count) * row_size, block.data());
        return block;
    }

private:
    RasterInfo info_;
    Tensor<float> pixels_;
};

}  // namespace despeck::raster
