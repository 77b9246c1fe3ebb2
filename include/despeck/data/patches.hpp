// despeck/data/patches.hpp — training patches cut from a scene, saved as a NumPy dataset, and
// served as augmented batches for DeSpeckNet::train_step.
//
// 1. Sampling (sample_patches, cut_patches). A scene is co-registered rasters in memory:
//      input      [1, rows, cols, B]  dB (one acquisition)
//      reference  [1, rows, cols, B]  dB (multi-temporal median), optional: without it the dataset
//                                     is for "tuning" (reconstruction loss only)
//      mask       rows*cols uint8, nonzero = keep (0 = change, excluded from the loss), optional
//      valid      rows*cols uint8, nonzero = valid, optional. A pixel is also invalid where any
//                 band of input or reference is not finite. No patch ever contains an invalid pixel.
//    Patches are size x size with the top-left corner (row, col) anywhere the patch fits.
//
//    Train/validation split by region, not by patch. Neighbouring patches overlap and speckle-free
//    structures span many patches, so a random split by patch would validate on pixels the network
//    trained on. The scene is instead cut into horizontal bands of whole patch rows. There are
//    nb = max(1, rows / split_block_rows) bands (split_block_rows defaults to 4 * size). Band i
//    covers rows [size * floor(i * U / nb), size * floor((i + 1) * U / nb)), where U = rows / size;
//    the last band also takes the rows < size left at the bottom. Each band is at least size rows
//    tall, and with grid sampling at stride = size the patch rows fit the bands exactly.
//    round(nb * validation_fraction) bands, at least 1 and at most nb - 1 when the fraction is
//    above 0, are chosen at random from the seed and form the validation region; the rest is the
//    training region. A patch belongs to a split only when all its rows lie in that split's bands.
//    Patches across a train/validation boundary are dropped, so no training pixel is ever a
//    validation pixel. Two training patches may straddle adjacent training bands.
//    The bands span the full width. In radar geometry the columns are range, so both splits see
//    every incidence angle.
//
//    Random sampling draws top-left corners uniformly among the allowed positions of a split (its
//    corner rows, any column). It rejects corners whose patch has an invalid pixel and repeats of
//    a corner already drawn. count patches in total: round(count * validation_fraction) for
//    validation, the rest for training. It gives up after 100 * n + 100000 draws with an error
//    that names how many were found and how many valid positions exist. Grid sampling takes
//    every allowed, valid corner on the lattice (k * stride, l * stride), in raster order; count
//    is unused.
//
// 2. The dataset on disk (write_patches / write_patch_splits, load_patches): one directory per
//    split (out/train, out/validation), readable with numpy.load:
//      input.npy      float32 [N, size, size, B]  dB
//      reference.npy  float32 [N, size, size, B]  dB           (absent in tuning mode)
//      mask.npy       float32 [N, size, size, 1]  0 or 1      (absent without a change mask)
//      manifest.json  format "despeck-patches", version 1, split, counts, patch size, bands,
//                     band names, units "db", array shapes, sources, seed, sampling options,
//                     split layout and each patch's top-left (row, col) in the scene
//    Every file is written atomically (io::write_file_atomically). The manifest is removed first
//    and written last, so a directory with a manifest holds complete arrays.
//
// 3. Batches (BatchLoader): each epoch shuffles the patches and draws each patch's orientation
//    from Rng(mix(seed, epoch)). Batch b of epoch e is therefore a pure function of (seed, e, b),
//    and an interrupted run resumes exactly with seek(e, b). Augmentation is applied on the fly:
//    random vertical and horizontal flips, optionally 90-degree rotations (all 8 symmetries of the
//    square). Input, reference and mask of a patch get the same transform.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "despeck/error.hpp"
#include "despeck/io/atomic_file.hpp"
#include "despeck/io/npy.hpp"
#include "despeck/random.hpp"
#include "despeck/raster/raster.hpp"
#include "despeck/tensor.hpp"

namespace despeck::data {

// ---- options and scene --------------------------------------------------------------------------

struct PatchOptions {
    enum class Sampling { random, grid };

    index_t size = 40;                // patch height = width, pixels
    index_t count = 1000;             // random: patches in total (train + validation)
    Sampling sampling = Sampling::random;
    index_t stride = 0;               // grid: corner spacing; 0 = size (non-overlapping tiles)
    std::uint64_t seed = 0;           // the split and the random draws
    double validation_fraction = 0.1; // in [0, 1): share of bands (and of random patches) held out
    index_t split_block_rows = 0;     // minimum band height; 0 = 4 * size
    // Augmentation recorded in the manifest for the loader (BatchOptions::for_dataset); sampling
    // itself never transforms a patch.
    bool flips = true;
    bool rot90 = false;

    index_t grid_stride() const { return stride > 0 ? stride : size; }
    index_t block_rows() const { return split_block_rows > 0 ? split_block_rows : 4 * size; }
    void validate() const {
        if (size < 1) detail::fail<value_error>("PatchOptions: size ", size, " must be at least 1");
        if (stride < 0) detail::fail<value_error>("PatchOptions: stride ", stride, " must be >= 0 (0 = size)");
        if (sampling == Sampling::random && count < 1)
            detail::fail<value_error>("PatchOptions: count ", count, " must be at least 1 for random sampling");
        if (!(validation_fraction >= 0.0 && validation_fraction < 1.0))
            detail::fail<value_error>("PatchOptions: validation_fraction ", validation_fraction, " must be in [0, 1)");
        if (split_block_rows != 0 && split_block_rows < size)
            detail::fail<value_error>("PatchOptions: split_block_rows ", split_block_rows,
                                      " is below the patch size ", size, " (0 = 4 * size)");
    }
};

inline const char* to_string(PatchOptions::Sampling s) { return s == PatchOptions::Sampling::grid ? "grid" : "random"; }

enum class Split { train, validation };
inline const char* to_string(Split s) { return s == Split::validation ? "validation" : "train"; }

struct PatchPosition {
    index_t row = 0, col = 0;  // top-left corner in the scene
    friend bool operator==(const PatchPosition&, const PatchPosition&) = default;
};

// The co-registered rasters of one scene. Views and spans: the caller keeps the data alive.
struct PatchSource {
    TensorView<const float> input;          // [1, rows, cols, B] dB
    TensorView<const float> reference;      // [1, rows, cols, B] dB, or empty (tuning)
    std::span<const std::uint8_t> mask;     // rows*cols, nonzero = keep; empty = none
    std::span<const std::uint8_t> valid;    // rows*cols, nonzero = valid; empty = all finite pixels
    std::vector<std::string> band_names;    // B names or none
    std::string input_name, reference_name, mask_name;  // source files, for the manifest

    index_t rows() const { return input.shape.rank() == 4 ? input.shape[1] : 0; }
    index_t cols() const { return input.shape.rank() == 4 ? input.shape[2] : 0; }
    index_t bands() const { return input.shape.rank() == 4 ? input.shape[3] : 0; }
    bool has_reference() const { return !reference.empty(); }
    bool has_mask() const { return !mask.empty(); }

    void validate(const char* where) const {
        if (input.empty()) detail::fail<value_error>(where, ": no input raster");
        require_nhwc(where, "input", input);
        if (input.shape[0] != 1)
            detail::fail<shape_error>(where, ": input must be one scene [1, rows, cols, bands], got ", input.shape);
        if (has_reference()) require_same_shape(where, "input", input, "reference", reference);
        const auto pixels = static_cast<std::size_t>(rows() * cols());
        if (!mask.empty() && mask.size() != pixels)
            detail::fail<shape_error>(where, ": mask has ", mask.size(), " pixels, the ", rows(), " x ", cols(),
                                      " scene has ", pixels);
        if (!valid.empty() && valid.size() != pixels)
            detail::fail<shape_error>(where, ": validity mask has ", valid.size(), " pixels, the ", rows(), " x ",
                                      cols(), " scene has ", pixels);
        if (!band_names.empty() && static_cast<index_t>(band_names.size()) != bands())
            detail::fail<value_error>(where, ": ", band_names.size(), " band names for ", bands(), " bands");
    }
};

// A PatchSource over in-memory rasters, with their band names and source names. Both must be in
// dB (convert first: data/units.hpp) and of the same size.
inline PatchSource patch_source(const raster::MemoryRaster& input, const raster::MemoryRaster* reference = nullptr) {
    auto require_db = [](const char* what, const raster::RasterInfo& info) {
        if (info.units != raster::Units::db)
            detail::fail<value_error>("patch_source: the ", what, " ", info.describe(),
                                      " must be in dB; convert it first");
    };
    require_db("input", input.info());
    PatchSource src;
    src.input = input.pixels().view();
    src.input_name = input.info().source;
    src.band_names = input.info().band_names;
    if (!src.band_names.empty() && static_cast<index_t>(src.band_names.size()) != input.info().bands)
        src.band_names.clear();
    if (reference) {
        require_db("reference", reference->info());
        src.reference = reference->pixels().view();
        src.reference_name = reference->info().source;
    }
    src.validate("patch_source");
    return src;
}

// 1 where every band of the raster holds a valid value (raster::is_valid_value), else 0.
inline std::vector<std::uint8_t> valid_pixels(const raster::MemoryRaster& r) {
    const raster::RasterInfo& info = r.info();
    std::vector<std::uint8_t> valid(static_cast<std::size_t>(info.rows * info.cols), 1);
    const float* p = r.pixels().data();
    for (std::size_t i = 0; i < valid.size(); ++i)
        for (index_t b = 0; b < info.bands; ++b)
            if (!raster::is_valid_value(p[static_cast<index_t>(i) * info.bands + b], info.units, info.nodata)) valid[i] = 0;
    return valid;
}

// ---- the split --------------------------------------------------------------------------------

struct SplitBand {
    index_t row0 = 0, row1 = 0;  // rows [row0, row1)
    Split split = Split::train;
    friend bool operator==(const SplitBand&, const SplitBand&) = default;
};

struct SplitLayout {
    index_t rows = 0, cols = 0;
    std::vector<SplitBand> bands;  // top to bottom, covering [0, rows)

    // The split that owns every row of [row, row + size), or nothing when the rows cross a
    // train/validation boundary or the scene's edge.
    std::optional<Split> split_of_rows(index_t row, index_t size) const {
        if (row < 0 || size < 1 || row + size > rows) return std::nullopt;
        std::optional<Split> s;
        for (const SplitBand& b : bands) {
            if (b.row1 <= row || b.row0 >= row + size) continue;
            if (s && *s != b.split) return std::nullopt;
            s = b.split;
        }
        return s;
    }
    index_t rows_in(Split s) const {
        index_t n = 0;
        for (const SplitBand& b : bands)
            if (b.split == s) n += b.row1 - b.row0;
        return n;
    }
    friend bool operator==(const SplitLayout&, const SplitLayout&) = default;
};

namespace detail_patches {

// Two 64-bit words to one seed (splitmix64's finaliser, a bijection, applied twice).
inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) {
    auto fmix = [](std::uint64_t z) {
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    };
    return fmix(fmix(a + 0x9e3779b97f4a7c15ULL) ^ (b * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL));
}
// Independent random streams derived from PatchOptions::seed.
constexpr std::uint64_t stream_split = 1, stream_train = 2, stream_validation = 3;

}  // namespace detail_patches

// The bands of a rows x cols scene and which of them are validation (see the top of this file).
inline SplitLayout make_split_layout(index_t rows, index_t cols, const PatchOptions& opt) {
    opt.validate();
    const index_t size = opt.size;
    if (rows < size || cols < size)
        detail::fail<value_error>("patches: a ", size, " x ", size, " patch does not fit in the ", rows, " x ", cols,
                                  " scene");
    const index_t units = rows / size;
    const index_t nb = std::max<index_t>(1, rows / opt.block_rows());
    SplitLayout layout;
    layout.rows = rows;
    layout.cols = cols;
    for (index_t i = 0; i < nb; ++i)
        layout.bands.push_back({size * (i * units / nb), i + 1 == nb ? rows : size * ((i + 1) * units / nb), Split::train});
    if (opt.validation_fraction > 0.0) {
        if (nb < 2)
            detail::fail<value_error>("patches: the ", rows, "-row scene makes a single split band of at least ",
                                      opt.block_rows(), " rows, so no region can be held out for validation; lower "
                                      "split_block_rows (>= the patch size ", size,
                                      ") or set validation_fraction to 0");
        const auto wanted = static_cast<index_t>(std::llround(static_cast<double>(nb) * opt.validation_fraction));
        const index_t n_val = std::clamp<index_t>(wanted, 1, nb - 1);
        // Partial Fisher-Yates: the first n_val entries of a seeded shuffle of the band indices.
        std::vector<index_t> ids(static_cast<std::size_t>(nb));
        std::iota(ids.begin(), ids.end(), index_t(0));
        Rng rng(detail_patches::mix_seed(opt.seed, detail_patches::stream_split));
        for (index_t i = 0; i < n_val; ++i) {
            const auto j = i + static_cast<index_t>(rng.below(static_cast<std::uint64_t>(nb - i)));
            std::swap(ids[static_cast<std::size_t>(i)], ids[static_cast<std::size_t>(j)]);
            layout.bands[static_cast<std::size_t>(ids[static_cast<std::size_t>(i)])].split = Split::validation;
        }
    }
    return layout;
}

// ---- sampling ---------------------------------------------------------------------------------

struct PatchSample {
    SplitLayout layout;
    std::vector<PatchPosition> train, validation;
    const std::vector<PatchPosition>& of(Split s) const { return s == Split::train ? train : validation; }
};

namespace detail_patches {

// Per pixel: 1 if valid (the caller's mask, and every band of input and reference finite).
inline std::vector<std::uint8_t> pixel_validity(const PatchSource& src) {
    const index_t pixels = src.rows() * src.cols(), bands = src.bands();
    std::vector<std::uint8_t> valid(static_cast<std::size_t>(pixels), 1);
    for (index_t p = 0; p < pixels; ++p) {
        bool ok = src.valid.empty() || src.valid[static_cast<std::size_t>(p)] != 0;
        for (index_t b = 0; ok && b < bands; ++b) {
            ok = std::isfinite(src.input[p * bands + b]);
            if (ok && src.has_reference()) ok = std::isfinite(src.reference[p * bands + b]);
        }
        valid[static_cast<std::size_t>(p)] = ok ? 1 : 0;
    }
    return valid;
}

// ok[r * (cols - size + 1) + c] = 1 iff the size x size window at (r, c) has no invalid pixel.
// One pass with a running count of invalid pixels per column over the window's rows, then a
// sliding sum along the row: O(rows * cols).
inline std::vector<std::uint8_t> window_ok(const std::vector<std::uint8_t>& valid, index_t rows, index_t cols,
                                           index_t size) {
    const index_t h = rows - size + 1, w = cols - size + 1;
    std::vector<std::uint8_t> ok(static_cast<std::size_t>(h * w), 0);
    std::vector<index_t> col_bad(static_cast<std::size_t>(cols), 0);
    auto bad = [&](index_t r, index_t c) { return valid[static_cast<std::size_t>(r * cols + c)] ? 0 : 1; };
    for (index_t r = 0; r < size; ++r)
        for (index_t c = 0; c < cols; ++c) col_bad[static_cast<std::size_t>(c)] += bad(r, c);
    for (index_t r = 0; r < h; ++r) {
        if (r > 0)
            for (index_t c = 0; c < cols; ++c) col_bad[static_cast<std::size_t>(c)] += bad(r + size - 1, c) - bad(r - 1, c);
        index_t sum = 0;
        for (index_t c = 0; c < size; ++c) sum += col_bad[static_cast<std::size_t>(c)];
        for (index_t c = 0; c < w; ++c) {
            if (c > 0) sum += col_bad[static_cast<std::size_t>(c + size - 1)] - col_bad[static_cast<std::size_t>(c - 1)];
            ok[static_cast<std::size_t>(r * w + c)] = sum == 0 ? 1 : 0;
        }
    }
    return ok;
}

inline std::vector<PatchPosition> draw_random(Split split, const std::vector<index_t>& corner_rows, index_t w,
                                              const std::vector<std::uint8_t>& ok, index_t wanted, Rng& rng) {
    std::vector<PatchPosition> out;
    if (wanted == 0) return out;
    index_t available = 0;
    for (index_t r : corner_rows)
        for (index_t c = 0; c < w; ++c) available += ok[static_cast<std::size_t>(r * w + c)];
    const index_t max_tries = 100 * wanted + 100000;
    std::unordered_set<std::uint64_t> taken;
    index_t tries = 0;
    if (!corner_rows.empty() && available > 0) {
        for (; tries < max_tries && static_cast<index_t>(out.size()) < wanted; ++tries) {
            const index_t r = corner_rows[static_cast<std::size_t>(rng.below(corner_rows.size()))];
            const auto c = static_cast<index_t>(rng.below(static_cast<std::uint64_t>(w)));
            const auto key = static_cast<std::uint64_t>(r * w + c);
            if (!ok[key] || !taken.insert(key).second) continue;
            out.push_back({r, c});
        }
    }
    if (static_cast<index_t>(out.size()) < wanted)
        detail::fail<value_error>("random patch sampling: found ", out.size(), " of the ", wanted, " ", to_string(split),
                                  " patches requested after ", tries, " draws; the ", to_string(split), " region has ",
                                  available, " distinct patch positions without invalid pixels (", corner_rows.size(),
                                  " corner rows x ", w,
                                  " columns before the validity check). Lower count or validation_fraction, "
                                  "use a smaller patch size or grid sampling, or check the validity mask");
    return out;
}

}  // namespace detail_patches

// Chooses the patches of both splits (positions only).
inline PatchSample sample_patches(const PatchSource& src, const PatchOptions& opt) {
    src.validate("sample_patches");
    PatchSample sample;
    sample.layout = make_split_layout(src.rows(), src.cols(), opt);
    const index_t size = opt.size, h = src.rows() - size + 1, w = src.cols() - size + 1;
    const auto ok = detail_patches::window_ok(detail_patches::pixel_validity(src), src.rows(), src.cols(), size);
    std::vector<index_t> corner_rows[2];  // [train, validation]
    for (index_t r = 0; r < h; ++r)
        if (auto s = sample.layout.split_of_rows(r, size)) corner_rows[*s == Split::train ? 0 : 1].push_back(r);

    if (opt.sampling == PatchOptions::Sampling::grid) {
        const index_t stride = opt.grid_stride();
        for (index_t r = 0; r < h; r += stride) {
            const auto s = sample.layout.split_of_rows(r, size);
            if (!s) continue;
            auto& out = *s == Split::train ? sample.train : sample.validation;
            for (index_t c = 0; c < w; c += stride)
                if (ok[static_cast<std::size_t>(r * w + c)]) out.push_back({r, c});
        }
        return sample;
    }
    const bool has_validation = sample.layout.rows_in(Split::validation) > 0;
    const index_t n_val =
        has_validation ? static_cast<index_t>(std::llround(static_cast<double>(opt.count) * opt.validation_fraction)) : 0;
    Rng train_rng(detail_patches::mix_seed(opt.seed, detail_patches::stream_train));
    Rng val_rng(detail_patches::mix_seed(opt.seed, detail_patches::stream_validation));
    sample.train = detail_patches::draw_random(Split::train, corner_rows[0], w, ok, opt.count - n_val, train_rng);
    sample.validation = detail_patches::draw_random(Split::validation, corner_rows[1], w, ok, n_val, val_rng);
    return sample;
}

// ---- the dataset --------------------------------------------------------------------------------

// What manifest.json records besides the arrays and positions.
struct PatchManifest {
    Split split = Split::train;
    std::vector<std::string> band_names;
    std::string input_source, reference_source, mask_source;
    PatchOptions options;                 // the options that cut the dataset (seed included)
    SplitLayout layout;                   // the scene's size and split bands
    index_t train_count = 0, validation_count = 0;  // both splits of the cut
};

// The patches of one split. input [N, size, size, B] dB; reference like input or empty (rank 0:
// tuning mode); mask [N, size, size, 1] of 0/1 or empty.
struct PatchDataset {
    Tensor<float> input, reference, mask;
    std::vector<PatchPosition> positions;  // N top-left corners in the scene
    PatchManifest manifest;

    index_t count() const { return input.rank() == 4 ? input.dim(0) : 0; }
    index_t patch_size() const { return input.rank() == 4 ? input.dim(1) : 0; }
    index_t bands() const { return input.rank() == 4 ? input.dim(3) : 0; }
    bool has_reference() const { return reference.rank() != 0; }
    bool has_mask() const { return mask.rank() != 0; }

    // Shape checks shared by writing, loading and the batch loader.
    void validate(const char* where) const {
        if (input.rank() != 4 || input.dim(1) != input.dim(2) || input.dim(1) < 1 || input.dim(3) < 1)
            detail::fail<shape_error>(where, ": input must be [N, size, size, bands] with size, bands >= 1, got ",
                                      input.shape());
        if (has_reference() && reference.shape() != input.shape())
            detail::fail<shape_error>(where, ": reference ", reference.shape(), " and input ", input.shape(), " differ");
        const Shape mask_shape{count(), patch_size(), patch_size(), 1};
        if (has_mask() && mask.shape() != mask_shape)
            detail::fail<shape_error>(where, ": mask ", mask.shape(), " must be ", mask_shape);
        if (static_cast<index_t>(positions.size()) != count())
            detail::fail<shape_error>(where, ": ", positions.size(), " positions for ", count(), " patches");
        if (!manifest.band_names.empty() && static_cast<index_t>(manifest.band_names.size()) != bands())
            detail::fail<value_error>(where, ": ", manifest.band_names.size(), " band names for ", bands(), " bands");
    }
};

// Copies the patches at `positions` out of the scene.
inline PatchDataset extract_patches(const PatchSource& src, const std::vector<PatchPosition>& positions,
                                    index_t size) {
    src.validate("extract_patches");
    const index_t n = static_cast<index_t>(positions.size()), bands = src.bands(), cols = src.cols();
    PatchDataset ds;
    ds.input = Tensor<float>::uninitialized(Shape{n, size, size, bands});
    if (src.has_reference()) ds.reference = Tensor<float>::uninitialized(Shape{n, size, size, bands});
    if (src.has_mask()) ds.mask = Tensor<float>::uninitialized(Shape{n, size, size, 1});
    const index_t row_len = size * bands;  // one patch row: size pixels of B bands, contiguous
    for (index_t k = 0; k < n; ++k) {
        const PatchPosition p = positions[static_cast<std::size_t>(k)];
        if (p.row < 0 || p.col < 0 || p.row + size > src.rows() || p.col + size > cols)
            detail::fail<value_error>("extract_patches: patch ", k, " at (", p.row, ", ", p.col, ") of size ", size,
                                      " leaves the ", src.rows(), " x ", cols, " scene");
        for (index_t i = 0; i < size; ++i) {
            const index_t from = ((p.row + i) * cols + p.col) * bands, to = (k * size + i) * row_len;
            std::copy_n(src.input.data + from, row_len, ds.input.data() + to);
            if (src.has_reference()) std::copy_n(src.reference.data + from, row_len, ds.reference.data() + to);
            if (src.has_mask())
                for (index_t j = 0; j < size; ++j)
                    ds.mask[(k * size + i) * size + j] = src.mask[static_cast<std::size_t>((p.row + i) * cols + p.col + j)] ? 1.0f : 0.0f;
        }
    }
    ds.positions = positions;
    ds.manifest.band_names = src.band_names;
    ds.manifest.input_source = src.input_name;
    ds.manifest.reference_source = src.has_reference() ? src.reference_name : "";
    ds.manifest.mask_source = src.has_mask() ? src.mask_name : "";
    return ds;
}

struct PatchSplits {
    PatchDataset train, validation;
    SplitLayout layout;
    bool has_validation() const { return layout.rows_in(Split::validation) > 0; }
};

// sample_patches + extract_patches for both splits, with their manifests filled in.
inline PatchSplits cut_patches(const PatchSource& src, const PatchOptions& opt) {
    const PatchSample sample = sample_patches(src, opt);
    PatchSplits out;
    out.layout = sample.layout;
    for (Split s : {Split::train, Split::validation}) {
        PatchDataset& ds = s == Split::train ? out.train : out.validation;
        ds = extract_patches(src, sample.of(s), opt.size);
        ds.manifest.split = s;
        ds.manifest.options = opt;
        ds.manifest.layout = sample.layout;
        ds.manifest.train_count = static_cast<index_t>(sample.train.size());
        ds.manifest.validation_count = static_cast<index_t>(sample.validation.size());
    }
    return out;
}

// ---- manifest.json ----------------------------------------------------------------------------

inline constexpr const char* patch_format = "despeck-patches";
inline constexpr int patch_format_version = 1;

inline nlohmann::json manifest_json(const PatchDataset& ds) {
    using nlohmann::json;
    const PatchManifest& m = ds.manifest;
    auto array = [&](const char* file, const Tensor<float>& t) {
        return json{{"file", file}, {"dtype", "float32"}, {"shape", t.shape().dims()}};
    };
    json arrays = json::object();
    arrays["input"] = array("input.npy", ds.input);
    if (ds.has_reference()) arrays["reference"] = array("reference.npy", ds.reference);
    if (ds.has_mask()) {
        arrays["mask"] = array("mask.npy", ds.mask);
        arrays["mask"]["values"] = "1 = keep, 0 = excluded from the loss (change)";
    }
    json sources = json::object();
    sources["input"] = m.input_source;
    if (ds.has_reference()) sources["reference"] = m.reference_source;
    if (ds.has_mask()) sources["mask"] = m.mask_source;
    json bands = json::array();
    for (const SplitBand& b : m.layout.bands) bands.push_back({{"rows", {b.row0, b.row1}}, {"split", to_string(b.split)}});
    json positions = json::array();
    for (const PatchPosition& p : ds.positions) positions.push_back({p.row, p.col});
    const PatchOptions& o = m.options;
    return json{
        {"format", patch_format},
        {"version", patch_format_version},
        {"split", to_string(m.split)},
        {"mode", ds.has_reference() ? "training" : "tuning"},
        {"count", ds.count()},
        {"counts", {{"train", m.train_count}, {"validation", m.validation_count}}},
        {"patch_size", ds.patch_size()},
        {"bands", ds.bands()},
        {"band_names", m.band_names},
        {"units", "db"},
        {"layout", "NHWC [patch, row, col, band], C order"},
        {"arrays", arrays},
        {"sources", sources},
        {"seed", o.seed},
        {"sampling",
         {{"method", to_string(o.sampling)},
          {"count", o.count},
          {"stride", o.grid_stride()},
          {"validation_fraction", o.validation_fraction},
          {"split_block_rows", o.block_rows()},
          {"flips", o.flips},
          {"rot90", o.rot90}}},
        {"split_layout",
         {{"scheme", "horizontal_bands"}, {"scene_rows", m.layout.rows}, {"scene_cols", m.layout.cols}, {"bands", bands}}},
        {"positions", positions},
    };
}

// Writes one split's dataset into `dir` (created if needed). Each file is atomic; the manifest is
// removed first and written last; a reference.npy or mask.npy left from an earlier dataset that
// this one lacks is removed.
inline void write_patches(const std::filesystem::path& dir, const PatchDataset& ds) {
    namespace fs = std::filesystem;
    ds.validate("write_patches");
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) detail::fail<io_error>("cannot create the dataset directory '", dir.string(), "': ", ec.message());
    // Indented for people, except the positions: one [row, col] pair each, all on one line.
    nlohmann::json json = manifest_json(ds);
    const std::string positions = json.at("positions").dump();
    json.erase("positions");
    std::string manifest = json.dump(1);
    manifest.erase(manifest.find_last_not_of("}\n") + 1);  // the closing "\n}"
    manifest += ",\n \"positions\": " + positions + "\n}\n";
    auto remove = [&](const char* name) {
        std::error_code e;
        fs::remove(dir / name, e);
        if (e) detail::fail<io_error>("cannot remove the old '", (dir / name).string(), "': ", e.message());
    };
    remove("manifest.json");
    io::write_npy(dir / "input.npy", ds.input.view());
    if (ds.has_reference()) io::write_npy(dir / "reference.npy", ds.reference.view());
    else remove("reference.npy");
    if (ds.has_mask()) io::write_npy(dir / "mask.npy", ds.mask.view());
    else remove("mask.npy");
    io::write_file_atomically(dir / "manifest.json",
                              [&](std::FILE* f) { return io::write_all(f, manifest.data(), manifest.size()); });
}

// Writes out/train and, when the cut has a validation region, out/validation.
// A validation folder left from an earlier cut into the same directory is removed when this cut
// has none, so that training never picks up patches of another run.
inline void write_patch_splits(const std::filesystem::path& out, const PatchSplits& splits) {
    write_patches(out / "train", splits.train);
    if (splits.has_validation()) {
        write_patches(out / "validation", splits.validation);
    } else {
        std::error_code ec;
        std::filesystem::remove_all(out / "validation", ec);
    }
}

namespace detail_patches {

template <class T>
T get(const nlohmann::json& j, const char* key, const std::string& file) {
    try {
        return j.at(key).get<T>();
    } catch (const std::exception& e) {
        detail::fail<io_error>("'", file, "': field '", key, "' is missing or has the wrong type (", e.what(), ")");
    }
}

inline Split split_from(const std::string& s, const std::string& file) {
    if (s == "train") return Split::train;
    if (s == "validation") return Split::validation;
    detail::fail<io_error>("'", file, "': split '", s, "' is neither 'train' nor 'validation'");
}

// Reads dir/<name> and checks its shape against the manifest's (and so against input.npy's).
inline Tensor<float> read_array(const std::filesystem::path& dir, const char* name, const Shape& expected,
                                const char* agrees_with) {
    const std::filesystem::path path = dir / name;
    if (!std::filesystem::exists(path))
        detail::fail<io_error>("'", path.string(), "' is missing; manifest.json lists it");
    Tensor<float> t = io::read_npy_f32(path);
    if (t.shape() != expected)
        detail::fail<io_error>("'", path.string(), "' has shape ", t.shape(), ", but ", agrees_with, " say ", expected);
    return t;
}

inline void require_finite(const Tensor<float>& t, const std::filesystem::path& path) {
    for (index_t i = 0; i < t.size(); ++i)
        if (!std::isfinite(t[i]))
            detail::fail<io_error>("'", path.string(), "' has a non-finite value (", t[i], ") at flat index ", i,
                                   " (patch ", i / (t.size() / t.dim(0)), ")");
}

}  // namespace detail_patches

// Loads a dataset directory written by write_patches (or by anyone following the format).
inline PatchDataset load_patches(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    using detail_patches::get;
    const fs::path manifest_path = dir / "manifest.json";
    const std::string mfile = manifest_path.string();
    std::ifstream in(manifest_path);
    if (!in) detail::fail<io_error>("'", mfile, "' is missing or unreadable: '", dir.string(),
                                    "' is not a despeck patch dataset");
    nlohmann::json j;
    try {
        in >> j;
    } catch (const std::exception& e) {
        detail::fail<io_error>("'", mfile, "' is not valid JSON (", e.what(), ")");
    }
    if (!j.is_object()) detail::fail<io_error>("'", mfile, "' is not a JSON object");
    const auto format = j.value("format", std::string());
    if (format != patch_format)
        detail::fail<io_error>("'", mfile, "' has format '", format, "', expected '", patch_format, "'");
    const int version = get<int>(j, "version", mfile);
    if (version != patch_format_version)
        detail::fail<io_error>("'", mfile, "' is format version ", version, "; this build reads version ",
                               patch_format_version);
    const auto units = get<std::string>(j, "units", mfile);
    if (units != "db") detail::fail<io_error>("'", mfile, "' has units '", units, "'; despeck patches are in dB ('db')");

    PatchDataset ds;
    PatchManifest& m = ds.manifest;
    const index_t n = get<index_t>(j, "count", mfile), size = get<index_t>(j, "patch_size", mfile),
                  bands = get<index_t>(j, "bands", mfile);
    if (n < 0 || size < 1 || bands < 1)
        detail::fail<io_error>("'", mfile, "': count ", n, ", patch_size ", size, ", bands ", bands, " are invalid");
    m.split = detail_patches::split_from(get<std::string>(j, "split", mfile), mfile);
    // Required: format, version, units, split, count, patch_size, bands, positions, arrays.
    // Optional (read when present): how the patches were cut, so that a dataset made elsewhere
    // (e.g. in Python) needs only the required fields.
    try {
        if (j.contains("band_names")) m.band_names = j.at("band_names").get<std::vector<std::string>>();
        for (const auto& p : j.at("positions")) {
            if (!p.is_array() || p.size() != 2) throw std::runtime_error("a position is not [row, col]");
            ds.positions.push_back({p.at(0).get<index_t>(), p.at(1).get<index_t>()});
        }
        m.options.size = size;
        if (j.contains("counts")) {
            m.train_count = j.at("counts").value("train", index_t(0));
            m.validation_count = j.at("counts").value("validation", index_t(0));
        }
        if (j.contains("sources")) {
            const auto& src = j.at("sources");
            m.input_source = src.value("input", std::string());
            m.reference_source = src.value("reference", std::string());
            m.mask_source = src.value("mask", std::string());
        }
        if (j.contains("seed")) m.options.seed = j.at("seed").get<std::uint64_t>();
        if (j.contains("sampling")) {
            const auto& s = j.at("sampling");
            m.options.sampling = s.value("method", std::string("random")) == "grid" ? PatchOptions::Sampling::grid
                                                                                    : PatchOptions::Sampling::random;
            m.options.count = s.value("count", m.options.count);
            m.options.stride = s.value("stride", m.options.stride);
            m.options.validation_fraction = s.value("validation_fraction", m.options.validation_fraction);
            m.options.split_block_rows = s.value("split_block_rows", m.options.split_block_rows);
            m.options.flips = s.value("flips", m.options.flips);
            m.options.rot90 = s.value("rot90", m.options.rot90);
        }
        if (j.contains("split_layout")) {
            const auto& l = j.at("split_layout");
            m.layout.rows = l.at("scene_rows").get<index_t>();
            m.layout.cols = l.at("scene_cols").get<index_t>();
            for (const auto& b : l.at("bands"))
                m.layout.bands.push_back({b.at("rows").at(0).get<index_t>(), b.at("rows").at(1).get<index_t>(),
                                          detail_patches::split_from(b.at("split").get<std::string>(), mfile)});
        }
    } catch (const io_error&) {
        throw;
    } catch (const std::exception& e) {
        detail::fail<io_error>("'", mfile, "' is malformed (", e.what(), ")");
    }
    if (!m.band_names.empty() && static_cast<index_t>(m.band_names.size()) != bands)
        detail::fail<io_error>("'", mfile, "': ", m.band_names.size(), " band names for ", bands, " bands");
    if (static_cast<index_t>(ds.positions.size()) != n)
        detail::fail<io_error>("'", mfile, "' lists ", ds.positions.size(), " positions for a count of ", n);

    const auto& arrays = j.contains("arrays") ? j.at("arrays") : nlohmann::json::object();
    if (!arrays.is_object() || !arrays.contains("input"))
        detail::fail<io_error>("'", mfile, "' has no 'arrays.input' entry");
    auto listed_shape = [&](const char* key) {
        try {
            return Shape::from(arrays.at(key).at("shape").get<std::vector<index_t>>());
        } catch (const std::exception& e) {
            detail::fail<io_error>("'", mfile, "': arrays.", key, ".shape is malformed (", e.what(), ")");
        }
    };
    const Shape image{n, size, size, bands}, mask_shape{n, size, size, 1};
    for (const char* key : {"input", "reference"})
        if (arrays.contains(key) && listed_shape(key) != image)
            detail::fail<io_error>("'", mfile, "': arrays.", key, ".shape ", listed_shape(key),
                                   " disagrees with count, patch_size and bands ", image);
    if (arrays.contains("mask") && listed_shape("mask") != mask_shape)
        detail::fail<io_error>("'", mfile, "': arrays.mask.shape ", listed_shape("mask"), " should be ", mask_shape);

    ds.input = detail_patches::read_array(dir, "input.npy", image, "manifest.json (count, patch_size, bands)");
    detail_patches::require_finite(ds.input, dir / "input.npy");
    if (arrays.contains("reference")) {
        ds.reference = detail_patches::read_array(dir, "reference.npy", image, "input.npy and manifest.json");
        detail_patches::require_finite(ds.reference, dir / "reference.npy");
    }
    if (arrays.contains("mask")) {
        ds.mask = detail_patches::read_array(dir, "mask.npy", mask_shape, "input.npy and manifest.json");
        for (index_t i = 0; i < ds.mask.size(); ++i)
            if (ds.mask[i] != 0.0f && ds.mask[i] != 1.0f)
                detail::fail<io_error>("'", (dir / "mask.npy").string(), "' holds ", ds.mask[i], " at flat index ", i,
                                       "; a mask is 0 or 1");
    }
    return ds;
}

// ---- batches ----------------------------------------------------------------------------------

// The 8 symmetries of the square as 3 bits. Output pixel (i, j) of a transformed patch reads the
// source pixel found by: flip_rows (i -> S-1-i), then flip_cols (j -> S-1-j), then transpose (swap).
//   0 identity           1 vertical flip (upside down)   2 horizontal flip (mirror)  3 rotation 180
//   5 rotation 90 (numpy.rot90 k=1, counter-clockwise)  6 rotation 270 (k=3)
//   4 transpose          7 anti-transpose
namespace transform {
inline constexpr std::uint8_t flip_rows = 1, flip_cols = 2, transpose = 4;
inline constexpr std::uint8_t rot90 = flip_rows | transpose, rot180 = flip_rows | flip_cols,
                              rot270 = flip_cols | transpose;
}  // namespace transform

// dst[i, j, :] = src[source of (i, j), :] for one size x size patch of `channels` values per pixel.
inline void transform_patch(const float* src, float* dst, index_t size, index_t channels, std::uint8_t code) {
    for (index_t i = 0; i < size; ++i)
        for (index_t j = 0; j < size; ++j) {
            index_t a = (code & transform::flip_rows) ? size - 1 - i : i;
            index_t b = (code & transform::flip_cols) ? size - 1 - j : j;
            if (code & transform::transpose) std::swap(a, b);
            std::copy_n(src + (a * size + b) * channels, channels, dst + (i * size + j) * channels);
        }
}

struct BatchOptions {
    index_t batch_size = 16;
    bool drop_last = false;  // drop the last, partial batch of an epoch
    bool flips = true;       // random vertical and horizontal flips
    bool rot90 = false;      // random rotations by multiples of 90 degrees
    std::uint64_t seed = 0;  // shuffling and augmentation; the epoch number is mixed in

    // Batch size 16, with the augmentation the dataset's manifest records.
    static BatchOptions for_dataset(const PatchDataset& ds, std::uint64_t seed = 0) {
        BatchOptions o;
        o.flips = ds.manifest.options.flips;
        o.rot90 = ds.manifest.options.rot90;
        o.seed = seed;
        return o;
    }
};

// One batch, ready for DeSpeckNet::train_step(input, reference, mask, ...): input
// [n, size, size, B]; reference like input, or an empty Tensor in tuning mode; mask
// [n, size, size, 1], or empty.
struct Batch {
    Tensor<float> input, reference, mask;
    std::vector<index_t> indices;           // the dataset patches, in batch order
    std::vector<std::uint8_t> transforms;   // each patch's transform (see namespace transform)
    index_t epoch = 0, index = 0;           // which batch of which epoch
    index_t size() const { return static_cast<index_t>(indices.size()); }
};

// Serves a PatchDataset as shuffled, augmented batches. The dataset is borrowed: keep it alive.
class BatchLoader {
public:
    BatchLoader(const PatchDataset& data, BatchOptions options = {}) : data_(&data), opt_(options) {
        if (data.input.rank() != 4)
            detail::fail<shape_error>("BatchLoader: input must be [N, size, size, bands], got ", data.input.shape());
        const index_t n = data.count();
        if (data.has_reference() && data.reference.shape() != data.input.shape())
            detail::fail<shape_error>("BatchLoader: reference ", data.reference.shape(), " and input ", data.input.shape(),
                                      " differ");
        if (data.has_mask() && data.mask.shape() != Shape{n, data.patch_size(), data.patch_size(), 1})
            detail::fail<shape_error>("BatchLoader: mask ", data.mask.shape(), " must be [", n, ",", data.patch_size(),
                                      ",", data.patch_size(), ",1]");
        if (data.input.dim(1) != data.input.dim(2))
            detail::fail<shape_error>("BatchLoader: patches must be square, got ", data.input.shape());
        if (opt_.batch_size < 1) detail::fail<value_error>("BatchLoader: batch size ", opt_.batch_size, " must be >= 1");
        if (n == 0) detail::fail<value_error>("BatchLoader: the dataset has no patches");
        if (opt_.drop_last && n < opt_.batch_size)
            detail::fail<value_error>("BatchLoader: ", n, " patches make no full batch of ", opt_.batch_size,
                                      " with drop_last");
    }
    BatchLoader(const PatchDataset&& data, BatchOptions options = {}) = delete;  // would dangle

    const BatchOptions& options() const { return opt_; }
    index_t batches_per_epoch() const {
        const index_t n = data_->count(), b = opt_.batch_size;
        return opt_.drop_last ? n / b : (n + b - 1) / b;
    }

    // The patch indices of an epoch in the order its batches serve them, and their transforms.
    // (Copies: the loader keeps only the epoch it prepared last.)
    std::vector<index_t> order(index_t epoch) {
        prepare(epoch);
        return order_;
    }
    std::vector<std::uint8_t> transforms(index_t epoch) {
        prepare(epoch);
        return transforms_;
    }

    // Batch `index` (0-based) of epoch `epoch`: a pure function of (seed, epoch, index).
    Batch batch(index_t epoch, index_t index) {
        if (index < 0 || index >= batches_per_epoch())
            detail::fail<value_error>("BatchLoader: batch ", index, " of an epoch of ", batches_per_epoch(), " batches");
        prepare(epoch);
        const PatchDataset& d = *data_;
        const index_t first = index * opt_.batch_size;
        const index_t n = std::min(opt_.batch_size, d.count() - first), s = d.patch_size(), c = d.bands();
        Batch out;
        out.epoch = epoch;
        out.index = index;
        out.input = Tensor<float>::uninitialized(Shape{n, s, s, c});
        if (d.has_reference()) out.reference = Tensor<float>::uninitialized(Shape{n, s, s, c});
        if (d.has_mask()) out.mask = Tensor<float>::uninitialized(Shape{n, s, s, 1});
        for (index_t k = 0; k < n; ++k) {
            const index_t src = order_[static_cast<std::size_t>(first + k)];
            const std::uint8_t code = transforms_[static_cast<std::size_t>(first + k)];
            out.indices.push_back(src);
            out.transforms.push_back(code);
            transform_patch(d.input.data() + src * s * s * c, out.input.data() + k * s * s * c, s, c, code);
            if (d.has_reference())
                transform_patch(d.reference.data() + src * s * s * c, out.reference.data() + k * s * s * c, s, c, code);
            if (d.has_mask()) transform_patch(d.mask.data() + src * s * s, out.mask.data() + k * s * s, s, 1, code);
        }
        return out;
    }

    // Sequential use: next() serves batch (epoch(), position()) and moves on, to the next epoch
    // after the last batch. seek(e, b) resumes an interrupted run at batch b of epoch e.
    void seek(index_t epoch, index_t index = 0) {
        if (epoch < 0 || index < 0 || index > batches_per_epoch())
            detail::fail<value_error>("BatchLoader::seek: epoch ", epoch, ", batch ", index, " (", batches_per_epoch(),
                                      " batches per epoch)");
        epoch_ = epoch;
        position_ = index;
    }
    Batch next() {
        if (position_ >= batches_per_epoch()) {
            ++epoch_;
            position_ = 0;
        }
        return batch(epoch_, position_++);
    }
    index_t epoch() const { return epoch_; }
    index_t position() const { return position_; }

private:
    void prepare(index_t epoch) {
        if (epoch < 0) detail::fail<value_error>("BatchLoader: epoch ", epoch, " is negative");
        if (prepared_ == epoch) return;
        const index_t n = data_->count();
        Rng rng(detail_patches::mix_seed(opt_.seed, static_cast<std::uint64_t>(epoch)));
        order_.resize(static_cast<std::size_t>(n));
        std::iota(order_.begin(), order_.end(), index_t(0));
        for (index_t i = n - 1; i > 0; --i)
            std::swap(order_[static_cast<std::size_t>(i)],
                      order_[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i + 1)))]);
        transforms_.assign(static_cast<std::size_t>(n), 0);
        static constexpr std::uint8_t rotations[4] = {0, transform::rot90, transform::rot180, transform::rot270};
        for (auto& t : transforms_) {
            if (opt_.flips && opt_.rot90) t = static_cast<std::uint8_t>(rng.below(8));
            else if (opt_.flips) t = static_cast<std::uint8_t>(rng.below(4));  // flip_rows, flip_cols bits
            else if (opt_.rot90) t = rotations[rng.below(4)];
        }
        prepared_ = epoch;
    }

    const PatchDataset* data_;
    BatchOptions opt_;
    index_t prepared_ = -1;
    std::vector<index_t> order_;
    std::vector<std::uint8_t> transforms_;
    index_t epoch_ = 0, position_ = 0;
};

}  // namespace despeck::data
