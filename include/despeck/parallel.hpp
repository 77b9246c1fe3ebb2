// despeck/parallel.hpp — element-wise loops over large buffers, split between OpenMP threads.
//
// A training step's element-wise passes (ReLU, gradient zeroing) touch megabytes each. Left to one
// thread they run while the other threads wait, and they were what kept a 2-thread training step
// below 1.8x the 1-thread one. Small buffers stay on the calling thread: starting a parallel
// region costs more than they take.
#pragma once

#include <algorithm>

#include "despeck/tensor.hpp"

namespace despeck::detail {

// Calls body(begin, end) over [0, n) in chunks of 16384 elements (64 KiB of floats: threads meet
// at most at one cache line per chunk boundary), in parallel when there are more than 8 chunks. The
// chunks are disjoint and each element is handled once, so the result is the same for any thread
// count.
template <class Body>
void parallel_chunks(index_t n, Body&& body) {
    constexpr index_t chunk = index_t(1) << 14;
    const index_t chunks = (n + chunk - 1) / chunk;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (chunks > 8)
#endif
    for (index_t k = 0; k < chunks; ++k) body(k * chunk, std::min(n, (k + 1) * chunk));
}

}  // namespace despeck::detail
