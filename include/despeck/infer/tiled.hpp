// despeck/infer/tiled.hpp — clean-branch inference over a scene of any size, tile by tile.
//
// The clean branch sees 2r+1 pixels around each output pixel (r = depth * (kernel/2), 17 for
// depth 17). A tile that carries a halo of at least r pixels on every side that is not an image
// edge therefore gives exactly the whole-image result in its centre (up to float summation order);
// at image edges the tile stops where the image stops, so the zero padding is the same as for the
// whole image. The scene is processed in stripes of `tile_rows` rows (read with their halo rows)
// and each stripe in tiles of `tile_cols` columns (with halo columns); memory is bounded by one
// stripe of input and output plus one tile's activations, whatever the scene size.
//
//   read_rows(row0, count) -> Tensor [1, count, cols, bands]  (network units: dB or linear)
//   sink(row0, Tensor [1, k, cols, bands])                     stripes of output, in row order
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <type_traits>

#include "despeck/nn/despecknet.hpp"

namespace despeck::infer {

struct TileOptions {
    index_t tile_rows = 512;
    index_t tile_cols = 512;
    index_t halo = -1;  // -1: the model's receptive radius; smaller values are refused
    std::function<void(index_t rows_done, index_t rows_total)> progress;  // optional
    bool noise_branch = false;  // run the noise branch instead of the clean one (same receptive field)
    InferenceMode mode = InferenceMode::exact;  // fast: Winograd with folded batch norm (opt-in)
};

template <class T>
void predict_tiled(const DeSpeckNet<T>& model, index_t rows, index_t cols, index_t bands,
                   const std::function<Tensor<T>(index_t row0, index_t count)>& read_rows,
                   const std::function<void(index_t row0, const Tensor<T>& clean)>& sink, const TileOptions& opt = {}) {
    const index_t radius = model.config().receptive_radius();
    const index_t halo = opt.halo < 0 ? radius : opt.halo;
    if (halo < radius)
        detail::fail<value_error>("predict_tiled: halo ", halo, " is smaller than the receptive radius ", radius,
                                  " of the model; tiles would differ from the whole image");
    if (opt.tile_rows < 1 || opt.tile_cols < 1)
        detail::fail<value_error>("predict_tiled: tile size ", opt.tile_rows, " x ", opt.tile_cols, " must be positive");
    if (bands != model.config().channels)
        detail::fail<shape_error>("predict_tiled: the scene has ", bands, " band(s), the model ", model.config().channels);

    // The layers are packed (or Winograd-transformed) once for the whole scene, not per tile.
    const int branch = opt.noise_branch ? DeSpeckNet<T>::noise_branch : DeSpeckNet<T>::clean_branch;
    std::function<Tensor<T>(TensorView<const T>)> run_tile = [&](TensorView<const T> t) {
        return model.predict(branch, t, opt.mode);
    };
    if constexpr (std::is_same_v<T, float>) {
        if (kernels::simd_kernels_selected()) {
            auto plan = std::make_shared<BranchPlan<T>>(model, branch, opt.mode);
            run_tile = [plan](TensorView<const T> t) { return plan->run(t); };
        }
    }

    for (index_t r0 = 0; r0 < rows; r0 += opt.tile_rows) {
        const index_t r1 = std::min(rows, r0 + opt.tile_rows);
        const index_t in0 = std::max<index_t>(0, r0 - halo), in1 = std::min(rows, r1 + halo);
        const Tensor<T> stripe = read_rows(in0, in1 - in0);
        if (stripe.shape() != Shape{1, in1 - in0, cols, bands})
            detail::fail<shape_error>("predict_tiled: read_rows(", in0, ", ", in1 - in0, ") returned ", stripe.shape(),
                                      ", expected [1,", in1 - in0, ",", cols, ",", bands, "]");
        Tensor<T> out = Tensor<T>::uninitialized(Shape{1, r1 - r0, cols, bands});
        for (index_t c0 = 0; c0 < cols; c0 += opt.tile_cols) {
            const index_t c1 = std::min(cols, c0 + opt.tile_cols);
            const index_t ic0 = std::max<index_t>(0, c0 - halo), ic1 = std::min(cols, c1 + halo);
            Tensor<T> tile = Tensor<T>::uninitialized(Shape{1, in1 - in0, ic1 - ic0, bands});
            for (index_t r = 0; r < in1 - in0; ++r)
                std::copy(stripe.data() + (r * cols + ic0) * bands, stripe.data() + (r * cols + ic1) * bands,
                          tile.data() + r * (ic1 - ic0) * bands);
            const Tensor<T> clean = run_tile(tile.view());
            // Centre of the tile: rows [r0, r1) and cols [c0, c1) of the scene.
            for (index_t r = r0; r < r1; ++r)
                std::copy(clean.data() + ((r - in0) * (ic1 - ic0) + (c0 - ic0)) * bands,
                          clean.data() + ((r - in0) * (ic1 - ic0) + (c1 - ic0)) * bands,
                          out.data() + ((r - r0) * cols + c0) * bands);
        }
        sink(r0, out);
        if (opt.progress) opt.progress(r1, rows);
    }
}

// Convenience for an in-memory image [1, H, W, C].
template <class T>
Tensor<T> predict_tiled(const DeSpeckNet<T>& model, const Tensor<T>& image, const TileOptions& opt = {}) {
    require_nhwc("predict_tiled", "image", image.view());
    if (image.dim(0) != 1) detail::fail<shape_error>("predict_tiled: one image at a time, got ", image.shape());
    const index_t rows = image.dim(1), cols = image.dim(2), bands = image.dim(3);
    Tensor<T> result = Tensor<T>::uninitialized(image.shape());
    predict_tiled<T>(
        model, rows, cols, bands,
        [&](index_t row0, index_t count) {
            Tensor<T> block = Tensor<T>::uninitialized(Shape{1, count, cols, bands});
            std::copy(image.data() + row0 * cols * bands, image.data() + (row0 + count) * cols * bands, block.data());
            return block;
        },
        [&](index_t row0, const Tensor<T>& clean) {
            std::copy(clean.data(), clean.data() + clean.size(), result.data() + row0 * cols * bands);
        },
        opt);
    return result;
}

}  // namespace despeck::infer
