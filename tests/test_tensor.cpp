// Tests of despeck/tensor.hpp: shapes, views, Eigen maps, errors that name the shapes.
#include <doctest/doctest.h>

#include "despeck/tensor.hpp"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

using namespace despeck;

TEST_CASE("Shape: size, rank, equality and printing") {
    const Shape s{2, 3, 4, 5};
    CHECK(s.rank() == 4);
    CHECK(s.size() == 120);
    CHECK(s[2] == 4);
    CHECK(s == Shape{2, 3, 4, 5});
    CHECK(s != Shape{2, 3, 5, 4});
    CHECK(s != Shape{2, 3, 4});
    CHECK(s.str() == "[2,3,4,5]");
    CHECK(Shape{}.size() == 1);
    CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5}), shape_error);
    CHECK_THROWS_AS(Shape({1, -2}), shape_error);
}

TEST_CASE("Tensor: NHWC indexing is row-major with channels fastest") {
    Tensor<float> t(Shape{2, 3, 4, 5});
    for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(i);
    CHECK(t.at(0, 0, 0, 1) == 1.0f);
    CHECK(t.at(0, 0, 1, 0) == 5.0f);
    CHECK(t.at(0, 1, 0, 0) == 20.0f);
    CHECK(t.at(1, 2, 3, 4) == 119.0f);
    // Eigen views see the same memory in the same order.
    auto m = t.matrix(24, 5);
    CHECK(m(4, 3) == t.at(0, 1, 0, 3));
    auto e = t.eigen<4>();
    CHECK(e(1, 2, 3, 4) == 119.0f);
    e(1, 0, 0, 0) = -1.0f;
    CHECK(t.at(1, 0, 0, 0) == -1.0f);
    CHECK_THROWS_AS(t.matrix(7, 5), shape_error);
    CHECK_THROWS_AS(t.eigen<3>(), shape_error);
}

TEST_CASE("Tensor: storage is aligned for SIMD, reshape keeps elements, cast converts") {
    Tensor<float> t(Shape{3, 5}, 2.5f);
    CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 16 == 0);
    t.reshape(Shape{5, 3});
    CHECK(t.shape() == Shape{5, 3});
    CHECK(t[14] == 2.5f);
    CHECK_THROWS_AS(t.reshape(Shape{4, 4}), shape_error);
    Tensor<double> d = t.cast<double>();
    CHECK(d.shape() == t.shape());
    CHECK(d[3] == 2.5);
    CHECK_THROWS_AS(Tensor<float>(Shape{2}, {1.0f, 2.0f, 3.0f}), shape_error);
}

TEST_CASE("TensorView: a view of T converts to a view of const T and shares memory") {
    Tensor<double> t(Shape{1, 2, 2, 1}, 1.0);
    TensorView<double> v = t.view();
    TensorView<const double> c = v;
    v[3] = 7.0;
    CHECK(c[3] == 7.0);
    CHECK(c.at(0, 1, 1, 0) == 7.0);
    CHECK(c.flat().sum() == doctest::Approx(10.0));
}

TEST_CASE("shape checks name the operation and both shapes") {
    Tensor<float> a(Shape{1, 2, 3, 4}), b(Shape{1, 2, 3, 5});
    try {
        require_same_shape("myop", "a", a.view(), "b", b.view());
        FAIL("no exception");
    } catch (const shape_error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("myop") != std::string::npos);
        CHECK(msg.find("[1,2,3,4]") != std::string::npos);
        CHECK(msg.find("[1,2,3,5]") != std::string::npos);
    }
    Tensor<float> v(Shape{4});
    CHECK_THROWS_AS(require_nhwc("myop", "x", v.view()), shape_error);
}

TEST_CASE("tensor cache: large blocks are reused, small ones are not cached, the limit holds") {
    release_tensor_cache();
    const void* first = nullptr;
    {
        Tensor<float> big = Tensor<float>::uninitialized(Shape{1, 256, 256, 4});  // 1 MiB
        CHECK(big.size() == 262144);
        CHECK(reinterpret_cast<std::uintptr_t>(big.data()) % 64 == 0);
        first = big.data();
    }
    CHECK(tensor_cache_idle_bytes() == 1u << 20);
    {
        Tensor<float> again(Shape{1, 256, 256, 4}, 3.0f);  // same size: the same block comes back
        CHECK(static_cast<const void*>(again.data()) == first);
        CHECK(again[12345] == 3.0f);                       // and a fill constructor still fills it
        CHECK(tensor_cache_idle_bytes() == 0);
    }
    { Tensor<float> small(Shape{100}); }
    CHECK(tensor_cache_idle_bytes() == 1u << 20);  // the small block went to the heap, not the cache
    set_tensor_cache_limit(0);
    { Tensor<float> big(Shape{1, 512, 512, 2}); }  // 2 MiB
    CHECK(tensor_cache_idle_bytes() == 1u << 20);  // over the limit: freed, not cached
    release_tensor_cache();
    CHECK(tensor_cache_idle_bytes() == 0);
    set_tensor_cache_limit(std::size_t(4) << 30);
}

// Linux: the VmFlags of the mapping that holds p, from /proc/self/smaps ("" where none is found).
static std::string mapping_flags(const void* p) {
    std::ifstream smaps("/proc/self/smaps");
    const auto addr = reinterpret_cast<std::uintptr_t>(p);
    std::string line;
    bool inside = false;
    while (std::getline(smaps, line)) {
        unsigned long long lo = 0, hi = 0;
        char dash = 0;
        std::istringstream head(line);
        if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
            inside = lo <= addr && addr < hi;
        } else if (inside && line.rfind("VmFlags:", 0) == 0) {
            return line + " ";
        }
    }
    return "";
}

TEST_CASE("tensor cache: blocks from 32 MiB on are aligned to 2 MiB huge pages, cached like the others") {
    release_tensor_cache();
    const std::size_t huge = std::size_t(2) << 20;
    const void* first = nullptr;
    {
        // 33 MiB + 4 bytes: not a whole number of huge pages (the block is rounded up, not cut)
        Tensor<float> big(Shape{(index_t(33) << 18) + 1}, 1.5f);
        CHECK(reinterpret_cast<std::uintptr_t>(big.data()) % huge == 0);
        CHECK(big[0] == 1.5f);
        CHECK(big[big.size() - 1] == 1.5f);
        first = big.data();
#if defined(__linux__)
        // The advice reached the kernel: its mapping carries "hg" (MADV_HUGEPAGE), whether or not
        // this system then grants huge pages. Only where the kernel has the feature at all.
        if (std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled")) {
            const std::string flags = mapping_flags(big.data());
            INFO("VmFlags of the block's mapping: ", flags);
            CHECK(flags.find(" hg ") != std::string::npos);
        }
#endif
    }
    CHECK(tensor_cache_idle_bytes() == (std::size_t(33) << 20) + 4);  // counted as requested
    {
        Tensor<float> again = Tensor<float>::uninitialized(Shape{(index_t(33) << 18) + 1});
        CHECK(static_cast<const void*>(again.data()) == first);
    }
    release_tensor_cache();
    CHECK(tensor_cache_idle_bytes() == 0);
}
