// despeck/memory.hpp — a caching allocator for tensor storage.
//
// A training step allocates the same set of large activation and gradient tensors every time,
// and frees them at its end. Fresh pages from the operating system cost a page fault each on first
// touch: measured on the target machine, that was over half of a deSpeckNet training step. Large
// blocks (>= 256 KiB) therefore go back to a cache on release and are handed out again for a
// request of the same size; small ones use the ordinary heap. Blocks are 64-byte aligned
// (AVX-512 loads).
//
// Blocks of huge_page_min_bytes (32 MiB) and more, such as the activations of inference on a big
// tile (256 MiB at 1024 x 1024 x 64), are 2 MiB aligned, rounded up to whole 2 MiB pages and, on
// Linux, marked MADV_HUGEPAGE, so that the kernel backs them with huge pages where transparent huge
// pages are on "madvise" (Debian's default) or "always"; with "never", or without the feature, it
// ignores the advice and the block keeps small pages. With 4 KiB pages a convolution's window
// spans a page per image row. A standalone fast-inference program at 1024 x 1024 on an Intel Xeon
// ran faster with huge pages in 10 of 11 interleaved A/B pairs, by 2.4% in the median; in the
// benchmark runner the difference stayed within the noise (docs/benchmarks.md). The threshold is
// by size alone: at the default batch of 16 x 40 x 40, training's activations (6.25 MiB) stay on
// small pages, where marking them added a quarter to the peak resident memory and no speed; a
// batch of 128 crosses it. 2 MiB is the huge page of x86-64 and of arm64 with 4 KiB pages.
// The cache counts a block by the size requested, not the rounded size it occupies.
//
// The cache holds at most tensor_cache_limit() bytes of idle blocks (default 4 GiB); beyond that,
// released blocks are freed. release_tensor_cache() returns every idle block to the system.
// Thread-safe (a mutex; allocations are few and large).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <utility>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace despeck {

namespace detail {

class BlockCache {
public:
    static constexpr std::size_t min_cached_bytes = std::size_t(256) << 10;
    static constexpr std::size_t alignment = 64;
    static constexpr std::size_t huge_page_bytes = std::size_t(2) << 20;
    static constexpr std::size_t huge_page_min_bytes = std::size_t(32) << 20;

    static BlockCache& instance() {
        // Deliberately never destroyed: a static or thread-local Tensor released at exit must still
        // find a live cache, whatever the order of static destruction.
        static BlockCache* cache = new BlockCache;
        return *cache;
    }

    void* acquire(std::size_t bytes) {
        if (bytes >= min_cached_bytes) {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = idle_.find(bytes);
            if (it != idle_.end()) {
                void* p = it->second;
                idle_.erase(it);
                idle_bytes_ -= bytes;
                return p;
            }
        }
        if (bytes > std::numeric_limits<std::size_t>::max() - huge_page_bytes) throw std::bad_alloc();  // rounding would wrap
        // Whole huge pages from huge_page_min_bytes on, else whole vectors.
        const bool huge = bytes >= huge_page_min_bytes;
        const std::size_t align = huge ? huge_page_bytes : alignment;
        const std::size_t rounded = bytes == 0 ? align : (bytes + align - 1) / align * align;
        void* p = std::aligned_alloc(align, rounded);
        if (!p) throw std::bad_alloc();
#if defined(MADV_HUGEPAGE)
        if (huge) (void)madvise(p, rounded, MADV_HUGEPAGE);  // advice only: small pages where it is not taken
#endif
        return p;
    }

    void release(void* p, std::size_t bytes) {
        if (!p) return;
        if (bytes >= min_cached_bytes) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (idle_bytes_ + bytes <= limit_) {
                try {
                    idle_.emplace(bytes, p);
                    idle_bytes_ += bytes;
                    return;
                } catch (...) {  // no memory for the cache's own node: free the block instead
                }
            }
        }
        std::free(p);
    }

    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& [bytes, p] : idle_) std::free(p);
        idle_.clear();
        idle_bytes_ = 0;
    }
    void set_limit(std::size_t bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        limit_ = bytes;
    }
    std::size_t limit() {
        std::lock_guard<std::mutex> lock(mutex_);
        return limit_;
    }
    std::size_t idle_bytes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return idle_bytes_;
    }

private:
    std::mutex mutex_;
    std::multimap<std::size_t, void*> idle_;
    std::size_t idle_bytes_ = 0;
    std::size_t limit_ = std::size_t(4) << 30;
};

// A std::allocator for containers whose data must be 64-byte aligned (AMX tile loads from
// unaligned rows ran at a third of their speed). Not cached: such buffers are made once per layer.
template <class T>
struct AlignedAllocator {
    using value_type = T;
    static constexpr std::size_t alignment = 64;
    AlignedAllocator() = default;
    template <class U>
    AlignedAllocator(const AlignedAllocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
        const std::size_t bytes = (n * sizeof(T) + alignment - 1) / alignment * alignment;
        void* p = std::aligned_alloc(alignment, bytes == 0 ? alignment : bytes);
        if (!p) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t) noexcept { std::free(p); }
    friend bool operator==(const AlignedAllocator&, const AlignedAllocator&) noexcept { return true; }
};

}  // namespace detail

// std::allocator-compatible front end of the cache, used by Tensor<T>.
template <class T>
struct CachingAllocator {
    using value_type = T;
    CachingAllocator() = default;
    template <class U>
    CachingAllocator(const CachingAllocator<U>&) noexcept {}
    T* allocate(std::size_t n) { return static_cast<T*>(detail::BlockCache::instance().acquire(n * sizeof(T))); }
    void deallocate(T* p, std::size_t n) noexcept { detail::BlockCache::instance().release(p, n * sizeof(T)); }
    // Value-initialisation without arguments leaves arithmetic elements uninitialised, so that
    // Tensor::uninitialized() skips a memset of a buffer that a kernel overwrites anyway.
    template <class U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
    template <class U>
    bool operator==(const CachingAllocator<U>&) const noexcept { return true; }
};

inline void release_tensor_cache() { detail::BlockCache::instance().clear(); }
inline void set_tensor_cache_limit(std::size_t bytes) { detail::BlockCache::instance().set_limit(bytes); }
inline std::size_t tensor_cache_idle_bytes() { return detail::BlockCache::instance().idle_bytes(); }

}  // namespace despeck
