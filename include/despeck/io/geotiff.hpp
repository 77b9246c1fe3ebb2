// despeck/io/geotiff.hpp — GeoTIFF rasters in and out, block by block, keeping georeferencing.
//
// Reading (libtiff, with libgeotiff's tag registration): 1..N bands of uint8, int16, uint16,
// int32, uint32, float32, float64, or complex (int16 pairs, CInt16; float32 pairs, CFloat32),
// which become intensity re^2 + im^2; strips or tiles, chunky (pixel-interleaved) or planar
// (band-interleaved), any compression libtiff decodes (deflate, LZW, ZSTD, predictors 2 and 3),
// classic or BigTIFF, either byte order; the first IFD (a COG's full-resolution image).
// Pixels come out as Tensor<float> [1, rows, cols, bands], a block of rows at a time, so a scene
// larger than memory can be processed piece by piece.
//
// Kept and written back: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory,
// GeoDoubleParams, GeoAsciiParams (verbatim: the CRS and geotransform survive exactly), GDAL's
// no-data tag (42113) and GDAL's metadata XML (42112, band names and items).
//
// Writing: float32, striped, DEFLATE with the floating-point predictor, BigTIFF when the raw size
// passes 4 GB; rows are written in order, in blocks of any size. The file is written under a
// temporary name and renamed onto the target only by close(): an error, an exception or a
// destroyed writer never leaves a partial file under the final name.
//
// Hostile files: decoding buffers are capped (a strip or tile claiming terabytes is an error, not
// an allocation), truncated data is an error naming the file and the rows, and libtiff's messages
// are captured per file and put into the exception instead of being printed.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <tiffio.h>
#include <unistd.h>
#include <xtiffio.h>

#include "despeck/error.hpp"
#include "despeck/raster/raster.hpp"

namespace despeck::io {

namespace detail_tiff {

inline constexpr ttag_t tag_gdal_metadata = 42112;
inline constexpr ttag_t tag_gdal_nodata = 42113;
inline constexpr ttag_t tag_pixel_scale = 33550;
inline constexpr ttag_t tag_tiepoint = 33922;
inline constexpr ttag_t tag_transformation = 34264;
inline constexpr ttag_t tag_geo_keys = 34735;
inline constexpr ttag_t tag_geo_doubles = 34736;
inline constexpr ttag_t tag_geo_ascii = 34737;

// A single decoded strip or tile may not exceed this (a hostile header can claim any size).
inline constexpr tmsize_t max_block_bytes = tmsize_t(1) << 30;

inline TIFFExtendProc& parent_extender() {
    static TIFFExtendProc parent = nullptr;
    return parent;
}
// Registers GDAL's two private ASCII tags so libtiff reads and writes them like known tags.
inline void gdal_tag_extender(TIFF* tif) {
    static const TIFFFieldInfo fields[] = {
        {tag_gdal_metadata, -1, -1, TIFF_ASCII, FIELD_CUSTOM, 1, 0, const_cast<char*>("GDALMetadata")},
        {tag_gdal_nodata, -1, -1, TIFF_ASCII, FIELD_CUSTOM, 1, 0, const_cast<char*>("GDALNoDataValue")},
    };
    TIFFMergeFieldInfo(tif, fields, sizeof(fields) / sizeof(fields[0]));
    if (parent_extender()) parent_extender()(tif);
}
inline void register_tags_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        XTIFFInitialize();  // libgeotiff's GeoTIFF tags
        parent_extender() = TIFFSetTagExtender(gdal_tag_extender);
    });
}

// libtiff's messages for one file, captured instead of printed.
struct Messages {
    std::string errors, warnings;
    static int on_error(TIFF*, void* self, const char* module, const char* fmt, va_list ap) {
        append(static_cast<Messages*>(self)->errors, module, fmt, ap);
        return 1;
    }
    static int on_warning(TIFF*, void* self, const char* module, const char* fmt, va_list ap) {
        append(static_cast<Messages*>(self)->warnings, module, fmt, ap);
        return 1;
    }
    static void append(std::string& out, const char* module, const char* fmt, va_list ap) {
        char buf[1024];
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        if (out.size() > 4000) return;
        if (!out.empty()) out += "; ";
        if (module) out += std::string(module) + ": ";
        out += buf;
    }
    std::string take_errors() {
        std::string e = errors.empty() ? std::string("no detail from libtiff") : errors;
        errors.clear();
        return e;
    }
};

inline TIFF* open(const std::string& path, const char* mode, Messages& messages) {
    register_tags_once();
    TIFFOpenOptions* opts = TIFFOpenOptionsAlloc();
    TIFFOpenOptionsSetErrorHandlerExtR(opts, &Messages::on_error, &messages);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, &Messages::on_warning, &messages);
    TIFFOpenOptionsSetMaxSingleMemAlloc(opts, max_block_bytes);
    TIFF* tif = TIFFOpenExt(path.c_str(), mode, opts);
    TIFFOpenOptionsFree(opts);
    return tif;
}

template <class U>
std::vector<U> get_array(TIFF* tif, ttag_t tag) {
    uint16_t count16 = 0;
    uint32_t count32 = 0;
    U* data = nullptr;
    const TIFFField* field = TIFFFindField(tif, tag, TIFF_ANY);
    if (!field) return {};
    // Tags with a 32-bit count (passcount with readcount TIFF_VARIABLE2) take a uint32_t.
    if (TIFFFieldReadCount(field) == TIFF_VARIABLE2) {
        if (!TIFFGetField(tif, tag, &count32, &data) || !data) return {};
        return std::vector<U>(data, data + count32);
    }
    if (!TIFFGetField(tif, tag, &count16, &data) || !data) return {};
    return std::vector<U>(data, data + count16);
}

inline std::string get_ascii(TIFF* tif, ttag_t tag) {
    char* text = nullptr;
    if (TIFFGetField(tif, tag, &text) && text) return text;
    return {};
}

// The Item name="..." band="N" or role="description" entries of GDAL's metadata XML are simple
// enough to scan for band descriptions without an XML library.
inline std::vector<std::string> band_names_from_gdal_metadata(const std::string& xml, index_t bands) {
    std::vector<std::string> names(static_cast<std::size_t>(bands));
    std::size_t pos = 0;
    while ((pos = xml.find("<Item", pos)) != std::string::npos) {
        const std::size_t close = xml.find('>', pos), end = xml.find("</Item>", pos);
        if (close == std::string::npos || end == std::string::npos) break;
        const std::string attrs = xml.substr(pos, close - pos);
        const std::string value = xml.substr(close + 1, end - close - 1);
        pos = end;
        if (attrs.find("role=\"description\"") == std::string::npos) continue;
        const std::size_t b = attrs.find("sample=\"");
        if (b == std::string::npos) continue;
        const index_t sample = std::atoll(attrs.c_str() + b + 8);
        if (sample >= 0 && sample < bands) names[static_cast<std::size_t>(sample)] = value;
    }
    return names;
}

inline raster::Units units_from_gdal_metadata(const std::string& xml) {
    const std::size_t p = xml.find("name=\"UNITS\"");
    if (p == std::string::npos) return raster::Units::unknown;
    const std::size_t close = xml.find('>', p), end = xml.find("</Item>", p);
    if (close == std::string::npos || end == std::string::npos) return raster::Units::unknown;
    std::string v = xml.substr(close + 1, end - close - 1);
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (v.find("db") != std::string::npos || v.find("decibel") != std::string::npos) return raster::Units::db;
    if (v.find("amplitude") != std::string::npos) return raster::Units::amplitude;
    if (v.find("intensity") != std::string::npos || v.find("linear") != std::string::npos || v.find("power") != std::string::npos)
        return raster::Units::linear_intensity;
    return raster::Units::unknown;
}

}  // namespace detail_tiff

class GeoTiffReader : public raster::RasterSource {
public:
    // units: what the values mean. Units::unknown takes them from GDAL's UNITS metadata item when
    // present (as the fixtures and despeck's own outputs carry it); complex data is always
    // converted to linear intensity.
    explicit GeoTiffReader(const std::filesystem::path& path, raster::Units units = raster::Units::unknown) {
        path_ = path.string();
        info_.source = path_;
        std::error_code ec;
        if (!std::filesystem::exists(path, ec)) despeck::detail::fail<io_error>("'", path_, "' does not exist");
        if (std::filesystem::file_size(path, ec) == 0 && !ec) despeck::detail::fail<io_error>("'", path_, "' is empty (0 bytes)");
        // "m": no memory mapping. A mapped file's pages count in the resident set as they are read,
        // so a scene streamed block by block would still end up wholly resident.
        tif_ = detail_tiff::open(path_, "rm", messages_);
        if (!tif_) despeck::detail::fail<io_error>("cannot open '", path_, "' as TIFF: ", messages_.take_errors());
        try {
            read_header(units);
        } catch (...) {
            TIFFClose(tif_);
            tif_ = nullptr;
            throw;
        }
    }
    ~GeoTiffReader() override {
        if (tif_) TIFFClose(tif_);
    }
    GeoTiffReader(const GeoTiffReader&) = delete;
    GeoTiffReader& operator=(const GeoTiffReader&) = delete;

    const raster::RasterInfo& info() const override { return info_; }
    bool is_complex() const { return complex_; }
    bool is_tiled() const { return tiled_; }

    Tensor<float> read_rows(index_t row0, index_t count) override { return read_window(row0, count, 0, info_.cols); }

    // Rows [row0, row0 + rows) x cols [col0, col0 + cols) of every band, as [1, rows, cols, bands].
    Tensor<float> read_window(index_t row0, index_t rows, index_t col0, index_t cols) {
        if (row0 < 0 || rows < 0 || col0 < 0 || cols < 0 || row0 + rows > info_.rows || col0 + cols > info_.cols)
            despeck::detail::fail<value_error>("'", path_, "': window rows [", row0, ", ", row0 + rows, ") cols [", col0, ", ",
                                               col0 + cols, ") is outside the ", info_.rows, " x ", info_.cols, " image");
        const index_t bands = info_.bands;
        Tensor<float> out = Tensor<float>::uninitialized(Shape{1, rows, cols, bands});
        if (rows == 0 || cols == 0) return out;
        const index_t block_w = tiled_ ? block_cols_ : info_.cols;
        const index_t block_h = block_rows_;
        const index_t planes = planar_separate_ ? bands : 1;
        const index_t spp_in_block = planar_separate_ ? 1 : bands;
        for (index_t plane = 0; plane < planes; ++plane) {
            for (index_t by = row0 / block_h; by * block_h < row0 + rows; ++by) {
                for (index_t bx = col0 / block_w; bx * block_w < col0 + cols; ++bx) {
                    const index_t y0 = by * block_h, x0 = bx * block_w;
                    decode_block(plane, y0, x0);
                    // Overlap of the block with the window.
                    const index_t r_begin = std::max(row0, y0), r_end = std::min(row0 + rows, std::min(y0 + block_h, info_.rows));
                    const index_t c_begin = std::max(col0, x0), c_end = std::min(col0 + cols, std::min(x0 + block_w, info_.cols));
                    for (index_t r = r_begin; r < r_end; ++r)
                        for (index_t c = c_begin; c < c_end; ++c)
                            for (index_t s = 0; s < spp_in_block; ++s) {
                                const index_t sample = ((r - y0) * block_w + (c - x0)) * spp_in_block + s;
                                const index_t band = planar_separate_ ? plane : s;
                                out[((r - row0) * cols + (c - col0)) * bands + band] = sample_value(sample);
                            }
                }
            }
        }
        return out;
    }

    // The whole image: only for rasters that fit in memory.
    raster::MemoryRaster read_all() { return raster::MemoryRaster(info_, read_rows(0, info_.rows)); }

private:
    void read_header(raster::Units units) {
        uint32_t width = 0, height = 0;
        uint16_t spp = 1, bps = 0, format = SAMPLEFORMAT_UINT, planar = PLANARCONFIG_CONTIG;
        if (!TIFFGetField(tif_, TIFFTAG_IMAGEWIDTH, &width) || !TIFFGetField(tif_, TIFFTAG_IMAGELENGTH, &height))
            despeck::detail::fail<io_error>("'", path_, "': no image size in the first IFD");
        TIFFGetFieldDefaulted(tif_, TIFFTAG_SAMPLESPERPIXEL, &spp);
        TIFFGetFieldDefaulted(tif_, TIFFTAG_BITSPERSAMPLE, &bps);
        TIFFGetFieldDefaulted(tif_, TIFFTAG_SAMPLEFORMAT, &format);
        TIFFGetFieldDefaulted(tif_, TIFFTAG_PLANARCONFIG, &planar);
        if (width == 0 || height == 0 || spp == 0)
            despeck::detail::fail<io_error>("'", path_, "': empty image (", width, " x ", height, ", ", spp, " samples)");
        info_.rows = height;
        info_.cols = width;
        info_.bands = spp;
        planar_separate_ = planar == PLANARCONFIG_SEPARATE;
        bits_ = bps;
        format_ = format;
        complex_ = format == SAMPLEFORMAT_COMPLEXINT || format == SAMPLEFORMAT_COMPLEXIEEEFP;
        const bool supported = (format == SAMPLEFORMAT_UINT && (bps == 8 || bps == 16 || bps == 32)) ||
                               (format == SAMPLEFORMAT_INT && (bps == 16 || bps == 32)) ||
                               (format == SAMPLEFORMAT_IEEEFP && (bps == 32 || bps == 64)) ||
                               (format == SAMPLEFORMAT_COMPLEXINT && bps == 32) ||
                               (format == SAMPLEFORMAT_COMPLEXIEEEFP && bps == 64);
        if (!supported)
            despeck::detail::fail<io_error>("'", path_, "': unsupported sample type (", bps, "-bit, TIFF sample format ", format,
                                            "); supported: uint8/16/32, int16/32, float32/64, complex int16 and float32");
        tiled_ = TIFFIsTiled(tif_) != 0;
        if (tiled_) {
            uint32_t tw = 0, th = 0;
            TIFFGetField(tif_, TIFFTAG_TILEWIDTH, &tw);
            TIFFGetField(tif_, TIFFTAG_TILELENGTH, &th);
            if (tw == 0 || th == 0) despeck::detail::fail<io_error>("'", path_, "': tiled image without a tile size");
            block_cols_ = tw;
            block_rows_ = th;
        } else {
            uint32_t rps = 0;
            TIFFGetFieldDefaulted(tif_, TIFFTAG_ROWSPERSTRIP, &rps);
            block_rows_ = std::clamp<index_t>(rps, 1, info_.rows);
            block_cols_ = info_.cols;
        }
        const index_t spp_in_block = planar_separate_ ? 1 : info_.bands;
        const index_t block_bytes = block_rows_ * block_cols_ * spp_in_block * (bits_ / 8);
        if (block_bytes > detail_tiff::max_block_bytes)
            despeck::detail::fail<io_error>("'", path_, "': a ", tiled_ ? "tile" : "strip", " of ", block_cols_, " x ",
                                            block_rows_, " pixels would need ", block_bytes,
                                            " bytes to decode, over the limit of ", detail_tiff::max_block_bytes,
                                            " (corrupt or hostile header?)");
        // Uncompressed blocks must hold what their size says: a bogus byte count is a corrupt file.
        uint16_t compression = COMPRESSION_NONE;
        TIFFGetFieldDefaulted(tif_, TIFFTAG_COMPRESSION, &compression);
        if (compression == COMPRESSION_NONE) {
            uint64_t* counts = nullptr;
            const bool ok = TIFFGetField(tif_, tiled_ ? TIFFTAG_TILEBYTECOUNTS : TIFFTAG_STRIPBYTECOUNTS, &counts);
            if (ok && counts && counts[0] < static_cast<uint64_t>(tiled_ ? block_bytes : std::min(block_bytes, info_.cols * spp_in_block * (bits_ / 8) * info_.rows)))
                despeck::detail::fail<io_error>("'", path_, "': the first ", tiled_ ? "tile" : "strip", " holds ", counts[0],
                                                " bytes, its size needs ", block_bytes, " (corrupt header?)");
        }
        block_.resize(static_cast<std::size_t>(block_bytes));

        // Georeferencing, verbatim.
        info_.geo.pixel_scale = detail_tiff::get_array<double>(tif_, detail_tiff::tag_pixel_scale);
        info_.geo.tiepoints = detail_tiff::get_array<double>(tif_, detail_tiff::tag_tiepoint);
        info_.geo.transformation = detail_tiff::get_array<double>(tif_, detail_tiff::tag_transformation);
        info_.geo.geo_keys = detail_tiff::get_array<uint16_t>(tif_, detail_tiff::tag_geo_keys);
        info_.geo.geo_doubles = detail_tiff::get_array<double>(tif_, detail_tiff::tag_geo_doubles);
        info_.geo.geo_ascii = detail_tiff::get_ascii(tif_, detail_tiff::tag_geo_ascii);
        const std::string nodata = detail_tiff::get_ascii(tif_, detail_tiff::tag_gdal_nodata);
        if (!nodata.empty()) {
            char* end = nullptr;
            const double v = std::strtod(nodata.c_str(), &end);
            if (end != nodata.c_str()) info_.nodata = v;
        }
        info_.gdal_metadata = detail_tiff::get_ascii(tif_, detail_tiff::tag_gdal_metadata);
        info_.band_names = detail_tiff::band_names_from_gdal_metadata(info_.gdal_metadata, info_.bands);
        info_.units = complex_ ? raster::Units::linear_intensity
                               : (units != raster::Units::unknown ? units : detail_tiff::units_from_gdal_metadata(info_.gdal_metadata));
    }

    // Decodes the strip or tile whose top-left pixel is (y0, x0) of the given plane into block_.
    void decode_block(index_t plane, index_t y0, index_t x0) {
        const index_t key = (plane * (info_.rows + 1) + y0) * (info_.cols + 1) + x0;
        if (key == cached_key_) return;
        cached_key_ = -1;
        tmsize_t got = -1;
        if (tiled_) {
            const uint32_t tile = TIFFComputeTile(tif_, static_cast<uint32_t>(x0), static_cast<uint32_t>(y0), 0,
                                                  static_cast<uint16_t>(plane));
            got = TIFFReadEncodedTile(tif_, tile, block_.data(), static_cast<tmsize_t>(block_.size()));
        } else {
            const uint32_t strip = TIFFComputeStrip(tif_, static_cast<uint32_t>(y0), static_cast<uint16_t>(plane));
            got = TIFFReadEncodedStrip(tif_, strip, block_.data(), static_cast<tmsize_t>(block_.size()));
        }
        if (got < 0)
            despeck::detail::fail<io_error>("'", path_, "': cannot decode the ", tiled_ ? "tile" : "strip", " at row ", y0,
                                            ", column ", x0, (planar_separate_ ? ", band " + std::to_string(plane + 1) : ""),
                                            " (truncated or corrupt file?): ", messages_.take_errors());
        cached_key_ = key;
    }

    // Sample i of the decoded block, as float (complex: intensity).
    float sample_value(index_t i) const {
        const unsigned char* p = block_.data();
        switch (format_) {
            case SAMPLEFORMAT_UINT:
                if (bits_ == 8) return p[i];
                if (bits_ == 16) return load<uint16_t>(p, i);
                return static_cast<float>(load<uint32_t>(p, i));
            case SAMPLEFORMAT_INT:
                if (bits_ == 16) return load<int16_t>(p, i);
                return static_cast<float>(load<int32_t>(p, i));
            case SAMPLEFORMAT_IEEEFP:
                if (bits_ == 32) return load<float>(p, i);
                return static_cast<float>(load<double>(p, i));
            case SAMPLEFORMAT_COMPLEXINT: {
                const float re = load<int16_t>(p, 2 * i), im = load<int16_t>(p, 2 * i + 1);
                return re * re + im * im;
            }
            default: {  // SAMPLEFORMAT_COMPLEXIEEEFP, 32-bit parts
                const float re = load<float>(p, 2 * i), im = load<float>(p, 2 * i + 1);
                return re * re + im * im;
            }
        }
    }
    template <class U>
    static U load(const unsigned char* p, index_t i) {
        U v;
        std::memcpy(&v, p + i * static_cast<index_t>(sizeof(U)), sizeof(U));
        return v;
    }

    std::string path_;
    TIFF* tif_ = nullptr;
    detail_tiff::Messages messages_;
    raster::RasterInfo info_;
    bool planar_separate_ = false, tiled_ = false, complex_ = false;
    uint16_t bits_ = 0, format_ = 0;
    index_t block_rows_ = 1, block_cols_ = 1;
    std::vector<unsigned char> block_;
    index_t cached_key_ = -1;
};

struct GeoTiffWriteOptions {
    index_t rows_per_strip = 16;
    bool deflate = true;            // DEFLATE with the floating-point predictor (3)
    int deflate_level = 6;
    std::optional<bool> bigtiff;    // default: BigTIFF when the raw pixels pass 4 GB (minus headroom)
};

class GeoTiffWriter {
public:
    // info gives size, bands, units, no-data, georeferencing and GDAL metadata of the output.
    GeoTiffWriter(const std::filesystem::path& path, raster::RasterInfo info, GeoTiffWriteOptions options = {})
        : final_path_(path), info_(std::move(info)), opt_(options) {
        if (info_.rows < 1 || info_.cols < 1 || info_.bands < 1 || info_.bands > 65535)
            despeck::detail::fail<value_error>("GeoTiffWriter '", path.string(), "': invalid size ", info_.cols, " x ",
                                               info_.rows, " x ", info_.bands);
        if (info_.rows > 0xFFFFFFFFll || info_.cols > 0xFFFFFFFFll)
            despeck::detail::fail<value_error>("GeoTiffWriter '", path.string(), "': size exceeds TIFF's 32-bit limit");
        static std::atomic<unsigned> counter{0};
        temp_path_ = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
        const double raw = double(info_.rows) * double(info_.cols) * double(info_.bands) * 4.0;
        const bool big = opt_.bigtiff.value_or(raw > 3.9e9);
        tif_ = detail_tiff::open(temp_path_, big ? "w8" : "w", messages_);
        if (!tif_)
            despeck::detail::fail<io_error>("cannot create '", temp_path_, "' to write '", path.string(), "': ",
                                            messages_.take_errors());
        try {
            write_header();
        } catch (...) {
            abandon();
            throw;
        }
        strip_.assign(static_cast<std::size_t>(opt_.rows_per_strip * info_.cols * info_.bands), 0.0f);
    }
    ~GeoTiffWriter() { abandon(); }
    GeoTiffWriter(const GeoTiffWriter&) = delete;
    GeoTiffWriter& operator=(const GeoTiffWriter&) = delete;

    // The next rows of the image, [1, k, cols, bands]; rows arrive in order.
    void write_rows(const Tensor<float>& block) {
        if (!tif_) despeck::detail::fail<io_error>("GeoTiffWriter '", final_path_.string(), "': already closed or failed");
        const Shape expected{1, block.dim(1), info_.cols, info_.bands};
        if (block.rank() != 4 || block.shape() != expected)
            despeck::detail::fail<shape_error>("GeoTiffWriter '", final_path_.string(), "': block ", block.shape(),
                                               ", expected [1,k,", info_.cols, ",", info_.bands, "]");
        if (next_row_ + block.dim(1) > info_.rows)
            despeck::detail::fail<value_error>("GeoTiffWriter '", final_path_.string(), "': ", next_row_ + block.dim(1),
                                               " rows written to a ", info_.rows, "-row image");
        const index_t row_size = info_.cols * info_.bands;
        for (index_t r = 0; r < block.dim(1); ++r) {
            std::copy(block.data() + r * row_size, block.data() + (r + 1) * row_size,
                      strip_.data() + rows_in_strip_ * row_size);
            ++rows_in_strip_;
            ++next_row_;
            if (rows_in_strip_ == opt_.rows_per_strip || next_row_ == info_.rows) flush_strip();
        }
    }
    index_t rows_written() const { return next_row_; }

    // Finishes the file and renames it onto the target path. Every row must have been written.
    void close() {
        if (!tif_) despeck::detail::fail<io_error>("GeoTiffWriter '", final_path_.string(), "': already closed or failed");
        if (next_row_ != info_.rows)
            despeck::detail::fail<io_error>("GeoTiffWriter '", final_path_.string(), "': only ", next_row_, " of ", info_.rows,
                                            " rows written; the file was not created");
        TIFF* tif = tif_;
        tif_ = nullptr;
        if (!TIFFFlush(tif)) {
            const std::string why = messages_.take_errors();
            TIFFClose(tif);
            remove_temp();
            despeck::detail::fail<io_error>("writing '", final_path_.string(), "' failed (disk full?): ", why);
        }
        TIFFClose(tif);
        // fsync the data before it takes the final name.
        if (std::FILE* f = std::fopen(temp_path_.c_str(), "rb")) {
            ::fsync(::fileno(f));
            std::fclose(f);
        }
        std::error_code ec;
        std::filesystem::rename(temp_path_, final_path_, ec);
        if (ec) {
            remove_temp();
            despeck::detail::fail<io_error>("cannot rename '", temp_path_, "' to '", final_path_.string(), "': ", ec.message());
        }
    }

private:
    void write_header() {
        TIFFSetField(tif_, TIFFTAG_IMAGEWIDTH, static_cast<uint32_t>(info_.cols));
        TIFFSetField(tif_, TIFFTAG_IMAGELENGTH, static_cast<uint32_t>(info_.rows));
        TIFFSetField(tif_, TIFFTAG_SAMPLESPERPIXEL, static_cast<uint16_t>(info_.bands));
        TIFFSetField(tif_, TIFFTAG_BITSPERSAMPLE, 32);
        TIFFSetField(tif_, TIFFTAG_SAMPLEFORMAT, SAMPLEFORMAT_IEEEFP);
        TIFFSetField(tif_, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
        TIFFSetField(tif_, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
        if (info_.bands > 1) {  // bands beyond the first are "unspecified" extra samples, as GDAL writes them
            std::vector<uint16_t> extra(static_cast<std::size_t>(info_.bands - 1), EXTRASAMPLE_UNSPECIFIED);
            TIFFSetField(tif_, TIFFTAG_EXTRASAMPLES, static_cast<uint16_t>(extra.size()), extra.data());
        }
        TIFFSetField(tif_, TIFFTAG_ROWSPERSTRIP, static_cast<uint32_t>(opt_.rows_per_strip));
        if (opt_.deflate) {
            TIFFSetField(tif_, TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE);
            TIFFSetField(tif_, TIFFTAG_PREDICTOR, PREDICTOR_FLOATINGPOINT);
            TIFFSetField(tif_, TIFFTAG_ZIPQUALITY, opt_.deflate_level);
        } else {
            TIFFSetField(tif_, TIFFTAG_COMPRESSION, COMPRESSION_NONE);
        }
        TIFFSetField(tif_, TIFFTAG_SOFTWARE, "despeck");
        const auto& g = info_.geo;
        if (!g.pixel_scale.empty())
            TIFFSetField(tif_, detail_tiff::tag_pixel_scale, static_cast<uint16_t>(g.pixel_scale.size()), g.pixel_scale.data());
        if (!g.tiepoints.empty())
            TIFFSetField(tif_, detail_tiff::tag_tiepoint, static_cast<uint16_t>(g.tiepoints.size()), g.tiepoints.data());
        if (!g.transformation.empty())
            TIFFSetField(tif_, detail_tiff::tag_transformation, static_cast<uint16_t>(g.transformation.size()),
                         g.transformation.data());
        if (!g.geo_keys.empty())
            TIFFSetField(tif_, detail_tiff::tag_geo_keys, static_cast<uint16_t>(g.geo_keys.size()), g.geo_keys.data());
        if (!g.geo_doubles.empty())
            TIFFSetField(tif_, detail_tiff::tag_geo_doubles, static_cast<uint16_t>(g.geo_doubles.size()), g.geo_doubles.data());
        if (!g.geo_ascii.empty()) TIFFSetField(tif_, detail_tiff::tag_geo_ascii, g.geo_ascii.c_str());
        if (info_.nodata) {
            std::ostringstream s;
            s.precision(17);
            s << *info_.nodata;
            TIFFSetField(tif_, detail_tiff::tag_gdal_nodata, s.str().c_str());
        }
        const std::string metadata = metadata_xml();
        if (!metadata.empty()) TIFFSetField(tif_, detail_tiff::tag_gdal_metadata, metadata.c_str());
    }

    // GDAL's metadata XML: the input's, or one made from the band names and units.
    std::string metadata_xml() const {
        if (!info_.gdal_metadata.empty()) return info_.gdal_metadata;
        std::string xml = "<GDALMetadata>\n";
        if (info_.units != raster::Units::unknown)
            xml += std::string("  <Item name=\"UNITS\">") + raster::to_string(info_.units) + "</Item>\n";
        for (std::size_t b = 0; b < info_.band_names.size(); ++b)
            if (!info_.band_names[b].empty())
                xml += "  <Item name=\"DESCRIPTION\" sample=\"" + std::to_string(b) + "\" role=\"description\">" +
                       info_.band_names[b] + "</Item>\n";
        xml += "</GDALMetadata>";
        return xml == "<GDALMetadata>\n</GDALMetadata>" ? std::string() : xml;
    }

    void flush_strip() {
        const uint32_t strip = static_cast<uint32_t>((next_row_ - rows_in_strip_) / opt_.rows_per_strip);
        const tmsize_t bytes = static_cast<tmsize_t>(rows_in_strip_ * info_.cols * info_.bands * 4);
        if (TIFFWriteEncodedStrip(tif_, strip, strip_.data(), bytes) < 0) {
            const std::string why = messages_.take_errors();
            abandon();
            despeck::detail::fail<io_error>("writing '", final_path_.string(), "' failed at row ", next_row_ - rows_in_strip_,
                                            " (disk full?): ", why, "; no file was created");
        }
        rows_in_strip_ = 0;
    }
    void remove_temp() {
        std::error_code ec;
        std::filesystem::remove(temp_path_, ec);
    }
    void abandon() {
        if (tif_) {
            TIFFClose(tif_);
            tif_ = nullptr;
            remove_temp();
        }
    }

    std::filesystem::path final_path_;
    std::string temp_path_;
    raster::RasterInfo info_;
    GeoTiffWriteOptions opt_;
    TIFF* tif_ = nullptr;
    detail_tiff::Messages messages_;
    std::vector<float> strip_;
    index_t rows_in_strip_ = 0, next_row_ = 0;
};

// Convenience: a whole in-memory raster to a GeoTIFF.
inline void write_geotiff(const std::filesystem::path& path, const raster::MemoryRaster& r, GeoTiffWriteOptions options = {}) {
    GeoTiffWriter w(path, r.info(), options);
    w.write_rows(r.pixels());
    w.close();
}

}  // namespace despeck::io
