// despeck/nn/parameters.hpp — named tensors in one contiguous buffer, with a gradient buffer of
// the same layout.
//
// Every trainable tensor of a model is a slice [offset, offset + size) of values(); its gradient
// is the same slice of grads(). The optimiser then runs one flat loop, a checkpoint writes slices,
// and data-parallel training can all-reduce grads() as a single buffer. The model's non-trained
// state (batch-norm running statistics) lives in a second store of the same kind.
#pragma once

#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "despeck/parallel.hpp"
#include "despeck/tensor.hpp"

namespace despeck {

template <class T>
class ParameterStore {
public:
    struct Entry {
        std::string name;
        Shape shape;
        index_t offset = 0;
    };

    // Adds a tensor (filled with `fill`) and returns its index. Views taken earlier stay valid only
    // until the next add(): build the whole store first, then take views.
    std::size_t add(const std::string& name, Shape shape, T fill = T(0)) {
        if (index_.count(name)) detail::fail<value_error>("ParameterStore: duplicate name '", name, "'");
        entries_.push_back({name, shape, static_cast<index_t>(values_.size())});
        values_.resize(values_.size() + static_cast<std::size_t>(shape.size()), fill);
        grads_.resize(values_.size(), T(0));
        index_[name] = entries_.size() - 1;
        return entries_.size() - 1;
    }

    std::size_t count() const { return entries_.size(); }
    const Entry& entry(std::size_t i) const { return entries_.at(i); }
    const std::vector<Entry>& entries() const { return entries_; }
    bool contains(const std::string& name) const { return index_.count(name) != 0; }
    std::size_t index_of(const std::string& name) const {
        auto it = index_.find(name);
        if (it == index_.end()) detail::fail<value_error>("ParameterStore: no tensor named '", name, "'");
        return it->second;
    }

    TensorView<T> value(std::size_t i) { return {values_.data() + entries_.at(i).offset, entries_.at(i).shape}; }
    TensorView<const T> value(std::size_t i) const { return {values_.data() + entries_.at(i).offset, entries_.at(i).shape}; }
    TensorView<T> grad(std::size_t i) { return {grads_.data() + entries_.at(i).offset, entries_.at(i).shape}; }
    TensorView<const T> grad(std::size_t i) const { return {grads_.data() + entries_.at(i).offset, entries_.at(i).shape}; }
    TensorView<T> value(const std::string& name) { return value(index_of(name)); }
    TensorView<const T> value(const std::string& name) const { return value(index_of(name)); }
    TensorView<T> grad(const std::string& name) { return grad(index_of(name)); }

    // The whole contiguous buffers.
    std::span<T> values() { return values_; }
    std::span<const T> values() const { return values_; }
    std::span<T> grads() { return grads_; }
    std::span<const T> grads() const { return grads_; }
    index_t total_size() const { return static_cast<index_t>(values_.size()); }

    void zero_grad() {
        T* g = grads_.data();
        detail::parallel_chunks(total_size(), [g](index_t begin, index_t end) { std::fill(g + begin, g + end, T(0)); });
    }

private:
    std::vector<Entry> entries_;
    std::vector<T, Eigen::aligned_allocator<T>> values_;
    std::vector<T, Eigen::aligned_allocator<T>> grads_;
    std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace despeck
