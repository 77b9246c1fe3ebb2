// despeck/tensor.hpp — Shape, Tensor<T> (owning) and TensorView<T> (borrowed), over Eigen.
//
// Layouts (row-major, the last index fastest):
//   images       NHWC  [batch, height, width, channels]  — the layout of Keras and of raster bands
//   conv weights HWIO  [kh, kw, in_channels, out_channels] — the layout of Keras and MatConvNet
//   vectors      [n]   — biases, batch-norm parameters and statistics
// A Tensor owns 64-byte aligned storage; a TensorView points into a Tensor, a parameter buffer or
// user memory. Both expose their elements to Eigen without copies: flat() as a 1-D Array,
// matrix(r, c) as a row-major Matrix, eigen<R>() as an Eigen::TensorMap.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#include "despeck/error.hpp"
#include "despeck/memory.hpp"

namespace despeck {

using index_t = std::int64_t;

// Up to rank 4; enough for every tensor deSpeckNet uses.
class Shape {
public:
    static constexpr int max_rank = 4;

    Shape() = default;
    Shape(std::initializer_list<index_t> dims) {
        if (dims.size() > static_cast<std::size_t>(max_rank))
            detail::fail<shape_error>("Shape: rank ", dims.size(), " exceeds the maximum of ", max_rank);
        for (index_t d : dims) {
            if (d < 0) detail::fail<shape_error>("Shape: negative dimension ", d);
            dims_[rank_++] = d;
        }
    }
    template <class Container, class = decltype(std::declval<Container>().begin())>
    static Shape from(const Container& dims) {
        Shape s;
        for (auto d : dims) {
            if (s.rank_ == max_rank) detail::fail<shape_error>("Shape: rank exceeds the maximum of ", max_rank);
            if (d < 0) detail::fail<shape_error>("Shape: negative dimension ", d);
            s.dims_[s.rank_++] = static_cast<index_t>(d);
        }
        return s;
    }

    int rank() const { return rank_; }
    index_t operator[](int axis) const { return dims_[static_cast<std::size_t>(axis)]; }
    index_t size() const {
        index_t n = 1;
        for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
        return n;
    }
    std::vector<index_t> dims() const { return {dims_.begin(), dims_.begin() + rank_}; }

    friend bool operator==(const Shape& a, const Shape& b) {
        if (a.rank_ != b.rank_) return false;
        for (int i = 0; i < a.rank_; ++i)
            if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
        return true;
    }
    friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

    std::string str() const {
        std::string s = "[";
        for (int i = 0; i < rank_; ++i) s += (i ? "," : "") + std::to_string(dims_[static_cast<std::size_t>(i)]);
        return s + "]";
    }
    friend std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

private:
    std::array<index_t, max_rank> dims_{};
    int rank_ = 0;
};

template <class T>
using EigenArray = Eigen::Array<std::remove_const_t<T>, Eigen::Dynamic, 1>;
template <class T>
using EigenRowMatrix = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A borrowed view: pointer + shape. T may be const.
template <class T>
struct TensorView {
    T* data = nullptr;
    Shape shape;

    TensorView() = default;
    TensorView(T* d, Shape s) : data(d), shape(s) {}
    // A view of T converts to a view of const T.
    template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
    TensorView(const TensorView<U>& other) : data(other.data), shape(other.shape) {}

    index_t size() const { return shape.size(); }
    bool empty() const { return data == nullptr; }
    T& operator[](index_t i) const { return data[i]; }

    // Element of an NHWC tensor.
    T& at(index_t n, index_t h, index_t w, index_t c) const {
        return data[((n * shape[1] + h) * shape[2] + w) * shape[3] + c];
    }

    auto flat() const {
        using Map = std::conditional_t<std::is_const_v<T>, Eigen::Map<const EigenArray<T>>, Eigen::Map<EigenArray<T>>>;
        return Map(data, size());
    }
    auto matrix(index_t rows, index_t cols) const {
        if (rows * cols != size())
            detail::fail<shape_error>("TensorView::matrix: ", rows, "x", cols, " does not cover shape ", shape);
        using Map = std::conditional_t<std::is_const_v<T>, Eigen::Map<const EigenRowMatrix<T>>,
                                       Eigen::Map<EigenRowMatrix<T>>>;
        return Map(data, rows, cols);
    }
    // Eigen::TensorMap of rank R in row-major order (the same element order as despeck's).
    template <int R>
    auto eigen() const {
        if (shape.rank() != R) detail::fail<shape_error>("TensorView::eigen<", R, ">: shape is ", shape);
        std::array<Eigen::Index, R> dims{};
        for (int i = 0; i < R; ++i) dims[static_cast<std::size_t>(i)] = shape[i];
        using Base = Eigen::Tensor<std::remove_const_t<T>, R, Eigen::RowMajor, Eigen::Index>;
        using Map = std::conditional_t<std::is_const_v<T>, Eigen::TensorMap<const Base>, Eigen::TensorMap<Base>>;
        return Map(data, dims);
    }
};

// Owning, contiguous, 64-byte aligned storage from the tensor cache (memory.hpp).
template <class T>
class Tensor {
    static_assert(std::is_floating_point_v<T>, "Tensor<T>: T must be float or double");

public:
    using value_type = T;

    Tensor() = default;
    explicit Tensor(Shape shape, T fill = T(0)) : shape_(shape), data_(static_cast<std::size_t>(shape.size()), fill) {}
    Tensor(Shape shape, std::initializer_list<T> values) : shape_(shape), data_(values) {
        if (static_cast<index_t>(data_.size()) != shape.size())
            detail::fail<shape_error>("Tensor: ", data_.size(), " values for shape ", shape);
    }
    // Storage whose elements are left unset: for outputs that a kernel writes completely.
    static Tensor uninitialized(Shape shape) {
        Tensor t;
        t.shape_ = shape;
        t.data_.resize(static_cast<std::size_t>(shape.size()));
        return t;
    }
    static Tensor from_view(TensorView<const T> v) {
        Tensor t = uninitialized(v.shape);
        std::copy(v.data, v.data + v.size(), t.data());
        return t;
    }

    const Shape& shape() const { return shape_; }
    index_t size() const { return static_cast<index_t>(data_.size()); }
    int rank() const { return shape_.rank(); }
    index_t dim(int axis) const { return shape_[axis]; }
    bool empty() const { return data_.empty(); }

    T* data() { return data_.data(); }
    const T* data() const { return data_.data(); }
    T& operator[](index_t i) { return data_[static_cast<std::size_t>(i)]; }
    const T& operator[](index_t i) const { return data_[static_cast<std::size_t>(i)]; }
    T& at(index_t n, index_t h, index_t w, index_t c) { return view().at(n, h, w, c); }
    const T& at(index_t n, index_t h, index_t w, index_t c) const { return view().at(n, h, w, c); }

    TensorView<T> view() { return {data(), shape_}; }
    TensorView<const T> view() const { return {data(), shape_}; }
    operator TensorView<T>() { return view(); }
    operator TensorView<const T>() const { return view(); }

    auto flat() { return view().flat(); }
    auto flat() const { return view().flat(); }
    auto matrix(index_t rows, index_t cols) { return view().matrix(rows, cols); }
    auto matrix(index_t rows, index_t cols) const { return view().matrix(rows, cols); }
    template <int R>
    auto eigen() { return view().template eigen<R>(); }
    template <int R>
    auto eigen() const { return view().template eigen<R>(); }

    void fill(T value) { std::fill(data_.begin(), data_.end(), value); }
    // Same elements, new shape of the same size.
    Tensor reshaped(Shape shape) const& {
        Tensor t = *this;
        t.reshape(shape);
        return t;
    }
    void reshape(Shape shape) {
        if (shape.size() != size())
            detail::fail<shape_error>("Tensor::reshape: ", shape_, " has ", size(), " elements, ", shape, " has ",
                                      shape.size());
        shape_ = shape;
    }
    template <class U>
    Tensor<U> cast() const {
        Tensor<U> t(shape_);
        std::transform(data_.begin(), data_.end(), t.data(), [](T v) { return static_cast<U>(v); });
        return t;
    }

private:
    Shape shape_;
    std::vector<T, CachingAllocator<T>> data_;
};

// Throws a shape_error naming the caller when a tensor is not rank 4.
template <class V>
void require_nhwc(const char* where, const char* name, const V& t) {
    if (t.shape.rank() != 4) detail::fail<shape_error>(where, ": ", name, " must be NHWC (rank 4), got ", t.shape);
    if (t.shape[3] == 0) detail::fail<shape_error>(where, ": ", name, " ", t.shape, " has no channels");
}

template <class A, class B>
void require_same_shape(const char* where, const char* name_a, const A& a, const char* name_b, const B& b) {
    if (a.shape != b.shape)
        detail::fail<shape_error>(where, ": ", name_a, " ", a.shape, " and ", name_b, " ", b.shape, " differ");
}

}  // namespace despeck
