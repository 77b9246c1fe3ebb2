// despeck/autodiff/tape.hpp — the reverse-mode tape: a flat, topologically ordered list of
// tensor-level nodes.
//
// Recording order is a topological order (an op can only read nodes recorded before it), so
// backward is a plain reverse loop over the nodes, with no recursion and no sorting.
//
// Contract of every backward function (the one rule the whole engine relies on):
//   it reads the gradient of its own output and ADDS into the gradients of its inputs.
// Accumulation is what makes fan-out correct: deSpeckNet's two branches read the same input, and
// the clean-image loss and the reconstruction loss both flow into the clean branch's output.
//
// Ownership: a Tape owns the values of the nodes it records and every activation gradient; both
// live for one step and go with clear(). Parameters are borrowed views (value and gradient) into
// a ParameterStore, so they persist across steps and gradients land directly in the contiguous
// gradient buffer that the optimiser (and, later, an MPI all-reduce) reads.
#pragma once

#include <algorithm>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "despeck/parallel.hpp"
#include "despeck/tensor.hpp"

namespace despeck {

template <class T>
class Tape;

// A handle to one node of a tape. Cheap to copy; valid until the tape is cleared.
template <class T>
struct Var {
    Tape<T>* tape = nullptr;
    int id = -1;
    std::uint64_t generation = 0;  // the tape's clear() count when the Var was made

    bool valid() const { return tape != nullptr && id >= 0; }
    TensorView<T> value() const { return tape->value(*this); }
    Shape shape() const { return tape->value(*this).shape; }
    bool requires_grad() const { return tape->requires_grad(*this); }
    // Gradient of the last backward pass (allocated for every node that requires one).
    TensorView<T> grad() const { return tape->grad(*this); }
};

template <class T>
class Tape {
public:
    // Reads grad(out) and adds into the gradients of the op's inputs; receives the tape to look
    // both up and `out`, the node the function belongs to.
    using BackwardFn = std::function<void(Tape&, Var<T> out)>;

    Tape() = default;
    Tape(const Tape&) = delete;             // nodes hold views into the tape's own storage
    Tape& operator=(const Tape&) = delete;

    // A value that needs no gradient, owned by the tape.
    Var<T> constant(Tensor<T> value) {
        TensorView<T> v = own(std::move(value));
        return push(v, {}, false, nullptr, "constant");
    }
    // A value that needs no gradient, borrowed: the caller keeps it alive until clear().
    Var<T> constant_view(TensorView<const T> value) {
        return push({const_cast<T*>(value.data), value.shape}, {}, false, nullptr, "constant");
    }
    // A leaf owned by the tape whose gradient is wanted (an input in a gradient check, say).
    Var<T> variable(Tensor<T> value) {
        TensorView<T> v = own(std::move(value));
        return push(v, {}, true, nullptr, "variable");
    }
    // A leaf whose value and gradient live elsewhere (a parameter). Backward adds into `grad`;
    // zeroing it between steps is the owner's job (ParameterStore::zero_grad).
    Var<T> parameter(TensorView<T> value, TensorView<T> grad, std::string name = "parameter") {
        if (value.shape != grad.shape)
            detail::fail<shape_error>("Tape::parameter ", name, ": value ", value.shape, " and gradient ", grad.shape,
                                      " differ");
        return push(value, grad, true, nullptr, std::move(name));
    }
    // The output of an op. `backward` is dropped when no input needs a gradient.
    Var<T> record(const char* op, Tensor<T> value, bool requires_grad, BackwardFn backward) {
        TensorView<T> v = own(std::move(value));
        return push(v, {}, requires_grad, requires_grad ? std::move(backward) : nullptr, op);
    }
    // Keeps a tensor alive until clear() (values an op saves for its backward pass).
    TensorView<T> keep(Tensor<T> t) { return own(std::move(t)); }

    TensorView<T> value(Var<T> v) const { return node(v).value; }
    bool requires_grad(Var<T> v) const { return node(v).requires_grad; }
    // The gradient of v. During backward() an op's output gradient is created (zeroed) when the
    // first consumer adds into it and freed once the op's own backward has read it, so a step holds
    // only the gradients still in flight, not one per activation. Leaves (inputs, parameters)
    // keep theirs; keep_intermediate_gradients(true) keeps every one (for inspection).
    TensorView<T> grad(Var<T> v) {
        Node& n = node_mut(v);
        if (!n.requires_grad) detail::fail<error>("Tape: node ", v.id, " (", n.op, ") has no gradient");
        if (n.grad.empty()) {
            if (n.grad_released)
                detail::fail<error>("Tape: the gradient of node ", v.id, " (", n.op, ") was freed after its backward; call "
                                    "keep_intermediate_gradients(true) before backward() to read it");
            if (!backward_ran_)
                detail::fail<error>("Tape: gradient of node ", v.id, " (", n.op, ") read before backward()");
            n.grad_owned = Tensor<T>::uninitialized(n.value.shape);
            n.grad = n.grad_owned.view();
            zero_fill(n.grad);
        }
        return n.grad;
    }
    void keep_intermediate_gradients(bool keep) { keep_intermediate_ = keep; }
    const std::string& op_name(Var<T> v) const { return node(v).op; }
    std::size_t size() const { return nodes_.size(); }

    // Reverse pass from `root`, seeding d(root) with `seed` (same shape as root's value).
    // Every activation gradient starts from zero, every pass: no stale gradient survives.
    void backward(Var<T> root, TensorView<const T> seed) {
        Node& r = node_mut(root);
        if (!r.requires_grad) detail::fail<error>("Tape::backward: the root (", r.op, ") depends on no parameter");
        if (seed.shape != r.value.shape)
            detail::fail<shape_error>("Tape::backward: seed ", seed.shape, " for root ", r.value.shape);
        for (Node& n : nodes_)
            if (!n.borrowed_grad) {
                n.grad = {};
                n.grad_owned = Tensor<T>();
                n.grad_released = false;
            }
        backward_ran_ = true;
        grad(root).flat() += seed.flat();
        for (int i = root.id; i >= 0; --i) {
            Node& n = nodes_[static_cast<std::size_t>(i)];
            if (!n.backward || !n.requires_grad) continue;
            // An op whose output no consumer touched has a zero gradient: nothing to propagate.
            if (n.grad.empty()) continue;
            // A copy: the function must survive even if it recorded nodes (vector reallocation).
            const BackwardFn fn = n.backward;
            fn(*this, Var<T>{this, i, generation_});
            Node& done = nodes_[static_cast<std::size_t>(i)];
            if (!keep_intermediate_ && !done.borrowed_grad) {
                done.grad = {};
                done.grad_owned = Tensor<T>();  // back to the block cache for the next gradient
                done.grad_released = true;
            }
        }
    }
    // Reverse pass from a scalar loss (seed 1).
    void backward(Var<T> loss) {
        if (value(loss).size() != 1)
            detail::fail<shape_error>("Tape::backward: loss must hold one value, has shape ", value(loss).shape);
        Tensor<T> one(value(loss).shape, T(1));
        backward(loss, one.view());
    }

    // Ends the step: drops every node, activation and activation gradient.
    void clear() {
        ++generation_;
        nodes_.clear();
        storage_.clear();
        backward_ran_ = false;
    }

private:
    // Activation gradients are megabytes each: zeroed by all threads, not one.
    static void zero_fill(TensorView<T> g) {
        detail::parallel_chunks(g.size(), [&](index_t begin, index_t end) { std::fill(g.data + begin, g.data + end, T(0)); });
    }

    struct Node {
        TensorView<T> value;
        TensorView<T> grad;
        Tensor<T> grad_owned;  // empty for borrowed gradients and before first use
        BackwardFn backward;
        bool requires_grad = false;
        bool borrowed_grad = false;
        bool grad_released = false;
        std::string op;
    };

    TensorView<T> own(Tensor<T> t) {
        storage_.push_back(std::move(t));  // deque: addresses of earlier elements stay valid
        return storage_.back().view();
    }
    Var<T> push(TensorView<T> value, TensorView<T> grad, bool requires_grad, BackwardFn backward, std::string op) {
        Node n;
        n.value = value;
        n.grad = grad;
        n.borrowed_grad = !grad.empty();
        n.requires_grad = requires_grad;
        n.backward = std::move(backward);
        n.op = std::move(op);
        nodes_.push_back(std::move(n));
        return Var<T>{this, static_cast<int>(nodes_.size()) - 1, generation_};
    }
    const Node& node(Var<T> v) const {
        if (v.tape != this || v.id < 0 || static_cast<std::size_t>(v.id) >= nodes_.size() || v.generation != generation_)
            detail::fail<error>("Tape: Var ", v.id, " does not belong to this tape (cleared since, or another tape's)");
        return nodes_[static_cast<std::size_t>(v.id)];
    }
    Node& node_mut(Var<T> v) { return const_cast<Node&>(node(v)); }

    std::vector<Node> nodes_;
    std::deque<Tensor<T>> storage_;
    std::uint64_t generation_ = 0;
    bool backward_ran_ = false;
    bool keep_intermediate_ = false;
};

// True when any of the vars needs a gradient: an op's output then needs one too.
template <class T, class... Vars>
bool any_requires_grad(const Var<T>& first, const Vars&... rest) {
    return first.requires_grad() || (rest.requires_grad() || ...);
}

// The gradient buffer of v when it wants one, else an empty view (backward then skips it).
template <class T>
TensorView<T> grad_if_needed(Tape<T>& tape, Var<T> v) {
    return v.valid() && v.requires_grad() ? tape.grad(v) : TensorView<T>{};
}

template <class T, class... Vars>
Tape<T>& same_tape(const char* op, const Var<T>& first, const Vars&... rest) {
    if (!first.valid()) detail::fail<error>(op, ": invalid Var");
    if (((rest.tape != first.tape) || ...)) detail::fail<error>(op, ": inputs belong to different tapes");
    return *first.tape;
}

}  // namespace despeck
