// despeck/io/image.hpp — pictures: PNG/JPEG in (stb_image), 8-bit PNG quick-looks and side-by-side
// panels out (stb_image_write). Part of despeck::io; the umbrella header does not include it.
//
// Reading
//   read_image(path, channels) -> Tensor<float> [1, H, W, C], values in [0, 1]: an 8-bit sample v
//   becomes v / 255, a 16-bit one v / 65535 (stbi_load / stbi_load_16; never stbi_loadf, which
//   would apply stb's 2.2 "gamma" to LDR files). Any format stb reads works (PNG 8/16-bit, JPEG,
//   BMP, TGA, GIF's first frame, PNM, PSD); Radiance HDR is turned into 8-bit by stb itself.
//   channels = 0 keeps what the file stores: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. Otherwise
//   despeck converts, in float, itself (not through stb's req_comp, whose integer luma truncates
//   to 8 bits):
//     1  grey; from colour the ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of the stored
//        (gamma-encoded) values, alpha dropped (not premultiplied)
//     2  grey + alpha (alpha = 1 where the file has none)
//     3  RGB; grey files replicate the grey value
//     4  RGBA (alpha = 1 where the file has none)
//   A grey + alpha file read with channels = 0 has C = 2: that is not a dual-pol raster, so ask
//   for 1 or 3 channels before showing it with write_png.
//
// Quick-looks (write_png, write_panel): image [1, H, W, C], C = 1 (grey), 3 (RGB) or 2 (dual-pol,
// shown as a false-colour composite, below). Steps:
//   1. display values: Stretch::domain == linear shows the values as they are; db first converts
//      linear intensity x to db_scale * log10(x) (10 for power/intensity, 20 for amplitude).
//   2. validity: a pixel is shown black when any of its channels is NaN or infinite after step 1
//      (so x <= 0 in the dB domain), or when the optional mask is 0 or NaN there. Invalid pixels
//      never enter the stretch. validity_mask() builds a mask from raster units and no-data.
//   3. stretch: each output channel gets a display range [low, high]: Stretch::min / max when set,
//      otherwise the low_percentile / high_percentile of the valid pixels. RGB channels share one
//      range (colours keep their balance) unless per_channel is set.
//   4. 8 bits: t = (v - low) / (high - low) clamped to [0, 1], byte = round(255 t) (half away from
//      zero). When high <= low (a constant image), values below low are 0, above high 255, the
//      rest 128.
//
// Percentiles are exact (std::nth_element, no histogram, no sampling) and use the definition of
// NumPy's default np.percentile (linear interpolation between closest ranks, Hyndman & Fan type
// 7): for the n valid values sorted ascending x_0 <= ... <= x_{n-1}, h = (n - 1) p / 100 and
//   P(p) = x_floor(h) + (h - floor(h)) (x_floor(h)+1 - x_floor(h)).
// So P(0) is the minimum, P(100) the maximum, and 0, 1, ..., 99 gives P(2) = 1.98, P(98) = 97.02.
//
// Dual-pol composite (C = 2, band 0 = co-pol VV (or HH), band 1 = cross-pol VH (or HV)), a common
// Sentinel-1 false-colour rendering:  R = VV dB,  G = VH dB,  B = VV dB - VH dB = VV/VH ratio in dB.
// With domain == db the bands are linear intensities converted as in step 1; with domain == linear
// they are taken to be dB already (the ratio is still their difference). The three composite
// channels always get separate ranges (VH is some 6-10 dB below VV, the ratio has its own scale);
// a fixed Stretch::min / max applies to R and G (both backscatter in dB), never to the ratio, which
// is always percentile-stretched.
//
// Panels (write_panel): images of equal height and equal channel count, left to right, separated
// by a white gap of panel_gap pixels. With shared_stretch one range per output channel is computed
// over the valid pixels of all images together — the fair way to compare noisy with despeckled,
// since a per-image stretch would hide a change of level or contrast. Labels, when any is
// non-empty, are drawn in black above each image on a white strip, with stb_easy_font's vector
// glyphs (printable ASCII; other bytes show as '?'), scaled up for tall images and clipped to the
// image's width.
//
// Every file is written through write_file_atomically: a PNG appears whole or not at all, and an
// existing file is replaced only by a complete new one. Failures raise io_error naming the file
// and the reason (errno or stbi_failure_reason); bad shapes raise shape_error, bad arguments
// value_error, before anything is written.
#pragma once

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <stb_easy_font.h>
#include <stb_image.h>
#include <stb_image_write.h>

#include "despeck/error.hpp"
#include "despeck/io/atomic_file.hpp"
#include "despeck/raster/raster.hpp"
#include "despeck/tensor.hpp"

namespace despeck::io {

// ---- reading -----------------------------------------------------------------------------------

struct ImageInfo {
    int width = 0;
    int height = 0;
    int channels = 0;        // as stored: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA
    bool sixteen_bit = false;
};

namespace detail {

// fopen with an io_error naming the file and errno's reason.
inline std::FILE* open_image_file(const std::filesystem::path& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) despeck::detail::fail<io_error>("cannot open image '", path.string(), "': ", std::strerror(errno));
    return f;
}

struct FileCloser {
    std::FILE* f;
    ~FileCloser() {
        if (f) std::fclose(f);
    }
};

inline const char* stb_reason() {
    const char* r = stbi_failure_reason();
    return r ? r : "unknown reason";
}

inline ImageInfo image_info_from_file(std::FILE* f, const std::filesystem::path& path) {
    ImageInfo info;
    if (!stbi_info_from_file(f, &info.width, &info.height, &info.channels))
        despeck::detail::fail<io_error>("cannot read image '", path.string(), "': not a readable image (stb_image: ",
                                        stb_reason(), ")");
    info.sixteen_bit = stbi_is_16_bit_from_file(f) != 0;
    return info;
}

}  // namespace detail

// Size, stored channels and sample depth of an image file, from its header.
inline ImageInfo image_info(const std::filesystem::path& path) {
    std::FILE* f = detail::open_image_file(path);
    detail::FileCloser closer{f};
    return detail::image_info_from_file(f, path);
}

// [1, H, W, C] in [0, 1]; channels = 0 keeps the stored channels, 1..4 converts (see the top).
inline Tensor<float> read_image(const std::filesystem::path& path, int channels = 0) {
    if (channels < 0 || channels > 4)
        despeck::detail::fail<value_error>("read_image '", path.string(), "': channels = ", channels,
                                           " (expected 0 = as stored, or 1..4)");
    std::FILE* f = detail::open_image_file(path);
    detail::FileCloser closer{f};
    const ImageInfo info = detail::image_info_from_file(f, path);

    int w = 0, h = 0, stored = 0;
    std::vector<float> samples;  // stored channels, normalised to [0, 1]
    if (info.sixteen_bit) {
        stbi_us* p = stbi_load_from_file_16(f, &w, &h, &stored, 0);
        if (!p) despeck::detail::fail<io_error>("cannot decode image '", path.string(), "' (stb_image: ", detail::stb_reason(), ")");
        const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * static_cast<std::size_t>(stored);
        samples.resize(n);
        for (std::size_t i = 0; i < n; ++i) samples[i] = static_cast<float>(p[i]) / 65535.0f;
        stbi_image_free(p);
    } else {
        stbi_uc* p = stbi_load_from_file(f, &w, &h, &stored, 0);
        if (!p) despeck::detail::fail<io_error>("cannot decode image '", path.string(), "' (stb_image: ", detail::stb_reason(), ")");
        const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * static_cast<std::size_t>(stored);
        samples.resize(n);
        for (std::size_t i = 0; i < n; ++i) samples[i] = static_cast<float>(p[i]) / 255.0f;
        stbi_image_free(p);
    }
    if (stored < 1 || stored > 4)
        despeck::detail::fail<io_error>("image '", path.string(), "': stb_image reports ", stored, " channels");

    const int out_c = channels == 0 ? stored : channels;
    Tensor<float> out = Tensor<float>::uninitialized(Shape{1, h, w, out_c});
    const index_t pixels = static_cast<index_t>(w) * h;
    const bool colour = stored >= 3;
    const bool has_alpha = stored == 2 || stored == 4;
    for (index_t i = 0; i < pixels; ++i) {
        const float* s = samples.data() + i * stored;
        float* d = out.data() + i * out_c;
        if (out_c == stored) {
            std::copy(s, s + stored, d);
            continue;
        }
        // BT.601 luma in double, so that r = g = b gives back exactly that value.
        const float grey = colour ? static_cast<float>(0.299 * s[0] + 0.587 * s[1] + 0.114 * s[2]) : s[0];
        const float alpha = has_alpha ? s[stored - 1] : 1.0f;
        switch (out_c) {
            case 1: d[0] = grey; break;
            case 2: d[0] = grey; d[1] = alpha; break;
            case 3:
                if (colour) std::copy(s, s + 3, d);
                else d[0] = d[1] = d[2] = grey;
                break;
            default:
                if (colour) std::copy(s, s + 3, d);
                else d[0] = d[1] = d[2] = grey;
                d[3] = alpha;
                break;
        }
    }
    return out;
}

// ---- display stretch ---------------------------------------------------------------------------

struct Stretch {
    enum class Domain { linear, db };
    Domain domain = Domain::linear;   // db: show db_scale * log10(x) of linear data
    double db_scale = 10.0;           // 10 for intensity (power), 20 for amplitude
    double low_percentile = 2.0;      // in [0, 100], used where min is not set
    double high_percentile = 98.0;    // in [0, 100], used where max is not set
    std::optional<double> min = std::nullopt;  // fixed display range, in display units (dB when domain == db)
    std::optional<double> max = std::nullopt;
    bool per_channel = false;         // RGB: one range per channel instead of one for all three

    // A fixed range [lo, hi] in display units: Stretch::fixed(0, 1) writes read_image's values back.
    static Stretch fixed(double lo, double hi, Domain d = Domain::linear) {
        Stretch s;
        s.domain = d;
        s.min = lo;
        s.max = hi;
        return s;
    }
    // Percentile stretch in dB of linear intensity.
    static Stretch db(double low_p = 2.0, double high_p = 98.0) {
        Stretch s;
        s.domain = Domain::db;
        s.low_percentile = low_p;
        s.high_percentile = high_p;
        return s;
    }
    // The usual display of a raster in these units: dB for linear intensity (x 10) and amplitude
    // (x 20), values as they are for dB and unknown units.
    static Stretch for_units(raster::Units u) {
        Stretch s;
        if (u == raster::Units::linear_intensity || u == raster::Units::amplitude) {
            s.domain = Domain::db;
            s.db_scale = u == raster::Units::amplitude ? 20.0 : 10.0;
        }
        return s;
    }
};

// The display range of one output channel: value low -> 0, high -> 255.
struct DisplayRange {
    double low = 0.0;
    double high = 1.0;
};

// Exact percentile p in [0, 100] of `values` (NumPy's default definition, see the top). Reorders
// `values`; throws value_error when it is empty, p is out of range, or a value is NaN.
inline double percentile(std::span<float> values, double p) {
    if (values.empty()) despeck::detail::fail<value_error>("percentile: no values");
    if (!(p >= 0.0 && p <= 100.0)) despeck::detail::fail<value_error>("percentile: p = ", p, " is outside [0, 100]");
    for (float v : values)
        if (std::isnan(v)) despeck::detail::fail<value_error>("percentile: NaN among the values");
    const std::size_t n = values.size();
    const double h = static_cast<double>(n - 1) * p / 100.0;
    std::size_t k = static_cast<std::size_t>(std::floor(h));
    if (k >= n) k = n - 1;
    std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
    const double lo = values[k];
    const double frac = h - static_cast<double>(k);
    if (frac == 0.0 || k + 1 >= n) return lo;
    // After nth_element everything past k is >= x_k, so x_{k+1} is the smallest of them.
    const double hi = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(k) + 1, values.end());
    return lo + frac * (hi - lo);
}

// A rendered 8-bit picture, row-major, `channels` (1 or 3) bytes a pixel, and the display ranges
// used: ranges[i][c] for image i (one entry for write_png, one per image for a panel) and output
// channel c.
struct QuickLook {
    int width = 0;
    int height = 0;
    int channels = 0;
    std::vector<std::uint8_t> pixels;
    std::vector<std::vector<DisplayRange>> ranges;

    std::uint8_t at(int row, int col, int c = 0) const {
        return pixels[(static_cast<std::size_t>(row) * static_cast<std::size_t>(width) + static_cast<std::size_t>(col)) *
                          static_cast<std::size_t>(channels) + static_cast<std::size_t>(c)];
    }
};

// A validity mask [1, H, W, 1] for a raster: 1 where every band holds a valid value
// (raster::is_valid_value: finite, not the no-data value, and > 0 for linear units), else 0.
inline Tensor<float> validity_mask(const Tensor<float>& pixels, raster::Units units, const std::optional<double>& nodata) {
    require_nhwc("validity_mask", "pixels", pixels.view());
    const index_t n = pixels.dim(0) * pixels.dim(1) * pixels.dim(2), c = pixels.dim(3);
    Tensor<float> mask(Shape{pixels.dim(0), pixels.dim(1), pixels.dim(2), 1});
    for (index_t i = 0; i < n; ++i) {
        bool ok = true;
        for (index_t k = 0; k < c && ok; ++k) ok = raster::is_valid_value(pixels[i * c + k], units, nodata);
        mask[i] = ok ? 1.0f : 0.0f;
    }
    return mask;
}

namespace detail {

// An image in display units: `channels` (1 or 3) floats a pixel, NaN for every channel of an
// invalid pixel; group[c] says which output channels share a range; ratio_channel is the composite's
// ratio (never given a fixed range), or -1.
struct DisplayImage {
    index_t height = 0;
    index_t width = 0;
    int channels = 0;
    std::vector<float> values;
    std::vector<int> group;
    int ratio_channel = -1;
};

inline void check_stretch(const char* where, const Stretch& s) {
    if (!(s.low_percentile >= 0.0 && s.low_percentile <= 100.0 && s.high_percentile >= 0.0 && s.high_percentile <= 100.0))
        despeck::detail::fail<value_error>(where, ": percentiles ", s.low_percentile, " / ", s.high_percentile,
                                           " must lie in [0, 100]");
    if (!(s.low_percentile < s.high_percentile))
        despeck::detail::fail<value_error>(where, ": low_percentile ", s.low_percentile, " must be below high_percentile ",
                                           s.high_percentile);
    if ((s.min && !std::isfinite(*s.min)) || (s.max && !std::isfinite(*s.max)))
        despeck::detail::fail<value_error>(where, ": a fixed min / max must be finite");
    if (s.min && s.max && !(*s.min < *s.max))
        despeck::detail::fail<value_error>(where, ": fixed min ", *s.min, " must be below max ", *s.max);
    if (s.domain == Stretch::Domain::db && !(std::isfinite(s.db_scale) && s.db_scale > 0.0))
        despeck::detail::fail<value_error>(where, ": db_scale ", s.db_scale, " must be positive");
}

inline DisplayImage to_display(const char* where, const Tensor<float>& image, const Stretch& s, const Tensor<float>* mask) {
    require_nhwc(where, "image", image.view());
    if (image.dim(0) != 1) despeck::detail::fail<shape_error>(where, ": image ", image.shape(), " must hold one image (N = 1)");
    const index_t h = image.dim(1), w = image.dim(2), c = image.dim(3);
    if (c < 1 || c > 3)
        despeck::detail::fail<shape_error>(where, ": image ", image.shape(),
                                           " must have 1 (grey), 2 (dual-pol composite) or 3 (RGB) channels");
    if (h == 0 || w == 0) despeck::detail::fail<shape_error>(where, ": image ", image.shape(), " is empty");
    if (h > INT_MAX / 4 || w > INT_MAX / 4)
        despeck::detail::fail<shape_error>(where, ": image ", image.shape(), " is too large for a PNG");
    if (mask) {
        if (mask->rank() != 4 || mask->dim(0) != 1 || mask->dim(1) != h || mask->dim(2) != w ||
            (mask->dim(3) != 1 && mask->dim(3) != c))
            despeck::detail::fail<shape_error>(where, ": mask ", mask->shape(), " does not fit image ", image.shape(),
                                               " (expected [1,", h, ",", w, ",1] or [1,", h, ",", w, ",", c, "])");
    }
    DisplayImage d;
    d.height = h;
    d.width = w;
    d.channels = c == 1 ? 1 : 3;
    if (c == 1) {
        d.group = {0};
    } else if (c == 2) {  // composite: R, G and the ratio B each get their own range
        d.group = {0, 1, 2};
        d.ratio_channel = 2;
    } else {
        d.group = s.per_channel ? std::vector<int>{0, 1, 2} : std::vector<int>{0, 0, 0};
    }
    d.values.resize(static_cast<std::size_t>(h * w * d.channels));

    const bool db = s.domain == Stretch::Domain::db;
    auto display = [&](float x) -> float {
        if (!db) return x;
        return x > 0.0f ? static_cast<float>(s.db_scale * std::log10(static_cast<double>(x)))
                        : std::numeric_limits<float>::quiet_NaN();
    };
    const index_t mc = mask ? mask->dim(3) : 0;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (index_t i = 0; i < h * w; ++i) {
        const float* x = image.data() + i * c;
        float* out = d.values.data() + i * d.channels;
        if (c == 2) {
            out[0] = display(x[0]);
            out[1] = display(x[1]);
            out[2] = out[0] - out[1];
        } else {
            for (index_t k = 0; k < c; ++k) out[k] = display(x[k]);
        }
        bool valid = true;
        for (int k = 0; k < d.channels; ++k) valid = valid && std::isfinite(out[k]);
        for (index_t k = 0; k < mc && valid; ++k) {
            const float m = (*mask)[i * mc + k];
            valid = !(m == 0.0f || std::isnan(m));
        }
        if (!valid) std::fill(out, out + d.channels, nan);
    }
    return d;
}

// One range per output channel of images[0] (all alike), over the valid pixels of all `images`.
inline std::vector<DisplayRange> display_ranges(const std::vector<const DisplayImage*>& images, const Stretch& s) {
    const DisplayImage& first = *images.front();
    std::vector<DisplayRange> ranges(static_cast<std::size_t>(first.channels));
    const int groups = *std::max_element(first.group.begin(), first.group.end()) + 1;
    std::vector<float> samples;
    for (int g = 0; g < groups; ++g) {
        samples.clear();
        bool is_ratio = false;
        for (const DisplayImage* d : images)
            for (int c = 0; c < d->channels; ++c) {
                if (d->group[static_cast<std::size_t>(c)] != g) continue;
                is_ratio = is_ratio || c == d->ratio_channel;
                for (index_t i = 0; i < d->height * d->width; ++i) {
                    const float v = d->values[static_cast<std::size_t>(i * d->channels + c)];
                    if (!std::isnan(v)) samples.push_back(v);
                }
            }
        const std::optional<double> fixed_lo = is_ratio ? std::nullopt : s.min;
        const std::optional<double> fixed_hi = is_ratio ? std::nullopt : s.max;
        DisplayRange r;
        if (samples.empty()) {  // nothing valid: every pixel is black whatever the range
            r.low = fixed_lo.value_or(0.0);
            r.high = fixed_hi.value_or(r.low + 1.0);
        } else {
            r.low = fixed_lo ? *fixed_lo : percentile(samples, s.low_percentile);
            r.high = fixed_hi ? *fixed_hi : percentile(samples, s.high_percentile);
        }
        for (int c = 0; c < first.channels; ++c)
            if (first.group[static_cast<std::size_t>(c)] == g) ranges[static_cast<std::size_t>(c)] = r;
    }
    return ranges;
}

inline std::uint8_t to_byte(float v, const DisplayRange& r) {
    if (std::isnan(v)) return 0;
    if (!(r.high > r.low)) return v < r.low ? 0 : (v > r.high ? 255 : 128);
    double t = (static_cast<double>(v) - r.low) / (r.high - r.low);
    t = std::clamp(t, 0.0, 1.0);
    return static_cast<std::uint8_t>(std::lround(255.0 * t));
}

// Draws `d` with `ranges` into `out` (out_channels bytes a pixel, row stride out_width) at column x0,
// row y0; grey images are replicated into 3 output channels when out_channels is 3.
inline void blit(const DisplayImage& d, const std::vector<DisplayRange>& ranges, QuickLook& out, index_t x0, index_t y0) {
    for (index_t y = 0; y < d.height; ++y)
        for (index_t x = 0; x < d.width; ++x) {
            const float* v = d.values.data() + (y * d.width + x) * d.channels;
            std::uint8_t* o = out.pixels.data() + ((y0 + y) * out.width + x0 + x) * out.channels;
            for (int c = 0; c < out.channels; ++c) {
                const int k = d.channels == 1 ? 0 : c;
                o[c] = to_byte(v[k], ranges[static_cast<std::size_t>(k)]);
            }
        }
}

// Text with stb_easy_font's glyphs (segments of a 12-pixel-high line), each font pixel drawn as a
// scale x scale block, clipped to columns [x0, x1) and rows [0, y1).
inline void draw_label(QuickLook& out, const std::string& label, index_t x0, index_t x1, index_t y0, index_t y1, int scale,
                       std::uint8_t ink) {
    std::string text;
    for (char ch : label) text += (ch >= 32 && ch <= 126) ? ch : '?';
    if (text.empty()) return;
    std::vector<char> buffer(text.size() * 64 * 64);  // generous: a glyph has well under 64 quads of 64 bytes
    const int quads = stb_easy_font_print(0.0f, 0.0f, text.data(), nullptr, buffer.data(), static_cast<int>(buffer.size()));
    for (int q = 0; q < quads; ++q) {
        float qx0 = 1e9f, qy0 = 1e9f, qx1 = -1e9f, qy1 = -1e9f;
        for (int v = 0; v < 4; ++v) {  // a vertex: float x, y, z, then 4 colour bytes
            float px = 0.0f, py = 0.0f;
            std::memcpy(&px, buffer.data() + (q * 4 + v) * 16, sizeof(float));
            std::memcpy(&py, buffer.data() + (q * 4 + v) * 16 + 4, sizeof(float));
            qx0 = std::min(qx0, px), qx1 = std::max(qx1, px), qy0 = std::min(qy0, py), qy1 = std::max(qy1, py);
        }
        const index_t ax0 = x0 + static_cast<index_t>(qx0) * scale, ax1 = x0 + static_cast<index_t>(qx1) * scale;
        const index_t ay0 = y0 + static_cast<index_t>(qy0) * scale, ay1 = y0 + static_cast<index_t>(qy1) * scale;
        for (index_t y = std::max<index_t>(ay0, 0); y < std::min<index_t>(ay1, y1); ++y)
            for (index_t x = std::max(ax0, x0); x < std::min(ax1, x1); ++x)
                for (int c = 0; c < out.channels; ++c)
                    out.pixels[static_cast<std::size_t>((y * out.width + x) * out.channels + c)] = ink;
    }
}

inline void stb_write_callback(void* context, void* data, int size) {
    auto* target = static_cast<std::pair<std::FILE*, bool>*>(context);
    if (size > 0 && !write_all(target->first, data, static_cast<std::size_t>(size))) target->second = false;
}

}  // namespace detail

// The 8-bit rendering write_png writes (no file touched).
inline QuickLook quick_look(const Tensor<float>& image, const Stretch& stretch = {}, const Tensor<float>* mask = nullptr) {
    detail::check_stretch("quick_look", stretch);
    const detail::DisplayImage d = detail::to_display("quick_look", image, stretch, mask);
    QuickLook q;
    q.width = static_cast<int>(d.width);
    q.height = static_cast<int>(d.height);
    q.channels = d.channels;
    q.pixels.assign(static_cast<std::size_t>(d.height * d.width * d.channels), 0);
    q.ranges.push_back(detail::display_ranges({&d}, stretch));
    detail::blit(d, q.ranges.front(), q, 0, 0);
    return q;
}

// Gap between the images of a panel, in pixels (white).
inline constexpr int panel_gap = 4;

// The 8-bit rendering write_panel writes (no file touched). masks: empty, or one per image (each
// may be nullptr). labels: empty, or one per image.
inline QuickLook panel_quick_look(const std::vector<const Tensor<float>*>& images, const std::vector<std::string>& labels = {},
                                  const Stretch& stretch = {}, bool shared_stretch = true,
                                  const std::vector<const Tensor<float>*>& masks = {}) {
    const char* where = "write_panel";
    detail::check_stretch(where, stretch);
    if (images.empty()) despeck::detail::fail<value_error>(where, ": no images");
    if (!labels.empty() && labels.size() != images.size())
        despeck::detail::fail<value_error>(where, ": ", labels.size(), " labels for ", images.size(), " images");
    if (!masks.empty() && masks.size() != images.size())
        despeck::detail::fail<value_error>(where, ": ", masks.size(), " masks for ", images.size(), " images");
    std::vector<detail::DisplayImage> shown;
    shown.reserve(images.size());
    for (std::size_t i = 0; i < images.size(); ++i) {
        if (!images[i]) despeck::detail::fail<value_error>(where, ": image ", i, " is null");
        shown.push_back(detail::to_display(where, *images[i], stretch, masks.empty() ? nullptr : masks[i]));
        if (images[i]->dim(1) != images[0]->dim(1) || images[i]->dim(3) != images[0]->dim(3))
            despeck::detail::fail<shape_error>(where, ": image ", i, " ", images[i]->shape(), " and image 0 ", images[0]->shape(),
                                               " differ in height or channels (a panel needs both equal)");
    }
    QuickLook q;
    q.channels = shown.front().channels;
    index_t width = 0;
    for (const auto& d : shown) width += d.width;
    width += static_cast<index_t>(panel_gap) * static_cast<index_t>(shown.size() - 1);
    const index_t image_height = shown.front().height;
    const bool any_label = std::any_of(labels.begin(), labels.end(), [](const std::string& l) { return !l.empty(); });
    const int scale = static_cast<int>(std::clamp<index_t>(image_height / 200, 1, 4));
    const index_t strip = any_label ? 14 * scale : 0;  // a 12-pixel font line and a little air
    if (width > INT_MAX / 4 || image_height + strip > INT_MAX / 4)
        despeck::detail::fail<shape_error>(where, ": the panel (", width, " x ", image_height + strip, ") is too large for a PNG");
    q.width = static_cast<int>(width);
    q.height = static_cast<int>(image_height + strip);
    q.pixels.assign(static_cast<std::size_t>(q.width) * static_cast<std::size_t>(q.height) * static_cast<std::size_t>(q.channels), 255);

    std::vector<const detail::DisplayImage*> all;
    for (const auto& d : shown) all.push_back(&d);
    const std::vector<DisplayRange> shared = shared_stretch ? detail::display_ranges(all, stretch) : std::vector<DisplayRange>{};
    index_t x0 = 0;
    for (std::size_t i = 0; i < shown.size(); ++i) {
        q.ranges.push_back(shared_stretch ? shared : detail::display_ranges({&shown[i]}, stretch));
        detail::blit(shown[i], q.ranges.back(), q, x0, strip);
        if (any_label) detail::draw_label(q, labels[i], x0 + scale, x0 + shown[i].width, scale, strip, scale, 0);
        x0 += shown[i].width + panel_gap;
    }
    return q;
}

// ---- writing -----------------------------------------------------------------------------------

// Writes a rendered picture as an 8-bit PNG, atomically.
inline void write_png(const std::filesystem::path& path, const QuickLook& picture) {
    if (picture.channels < 1 || picture.channels > 4 || picture.width < 1 || picture.height < 1 ||
        picture.pixels.size() != static_cast<std::size_t>(picture.width) * static_cast<std::size_t>(picture.height) *
                                     static_cast<std::size_t>(picture.channels))
        despeck::detail::fail<shape_error>("write_png '", path.string(), "': inconsistent picture ", picture.width, " x ",
                                           picture.height, " x ", picture.channels, " with ", picture.pixels.size(), " bytes");
    write_file_atomically(path, [&](std::FILE* f) {
        std::pair<std::FILE*, bool> target{f, true};
        const int ok = stbi_write_png_to_func(detail::stb_write_callback, &target, picture.width, picture.height,
                                              picture.channels, picture.pixels.data(), picture.width * picture.channels);
        if (!ok) throw io_error("stb_image_write could not encode the PNG (out of memory?)");
        return target.second;
    });
}

// An 8-bit quick-look PNG of image [1, H, W, C], C in {1, 2, 3} (see the top for the stretch, the
// dual-pol composite and the mask [1, H, W, 1] or [1, H, W, C], nonzero = valid).
inline void write_png(const std::filesystem::path& path, const Tensor<float>& image, const Stretch& stretch = {},
                      const Tensor<float>* mask = nullptr) {
    write_png(path, quick_look(image, stretch, mask));
}

// Images side by side in one PNG (see panel_quick_look and the top).
inline void write_panel(const std::filesystem::path& path, const std::vector<const Tensor<float>*>& images,
                        const std::vector<std::string>& labels = {}, const Stretch& stretch = {}, bool shared_stretch = true,
                        const std::vector<const Tensor<float>*>& masks = {}) {
    write_png(path, panel_quick_look(images, labels, stretch, shared_stretch, masks));
}

}  // namespace despeck::io
