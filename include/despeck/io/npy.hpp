// despeck/io/npy.hpp — float32 arrays as NumPy .npy files (numpy.load reads them as they are).
//
// Format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
//   6 bytes   magic "\x93NUMPY"
//   2 bytes   format version (major, minor): 1.0, or 2.0 / 3.0 for headers over 64 KiB
//   2 bytes   (1.0) or 4 bytes (2.0, 3.0): the header length, little-endian
//   header    a Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (N, 40, 40, 2), }
//             padded with spaces and ended by '\n'
//   data      the elements, C order (last index fastest), in the byte order the descr names
// Writing goes through xtensor (xt::adapt over the tensor's memory, xt::dump_npy to a string) and
// then io::write_file_atomically, so a reader sees the old file or the whole new one.
//
// Reading does not use xt::load_npy. As of xtensor 0.24 it does not notice a truncated file (the
// missing tail is left as uninitialised memory), reads header lengths >= 128 wrongly (their low
// byte is sign-extended), reports problems as std::runtime_error without the file name, and
// returns an xarray that would have to be copied into a Tensor. read_npy_f32 checks the magic, the
// version, the header dict (descr, fortran_order, shape), and that the file size is exactly the
// header plus the data. It then reads the elements straight into the Tensor, and any problem is an
// io_error that names the file.
#pragma once

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#if __has_include(<xtensor/io/xnpy.hpp>)
#include <xtensor/io/xnpy.hpp>  // xtensor >= 0.26
#else
#include <xtensor/xnpy.hpp>
#endif

#include "despeck/io/atomic_file.hpp"
#include "despeck/tensor.hpp"

namespace despeck::io {

// The .npy bytes of a float32 tensor (shape as the tensor's, C order, native byte order).
inline std::string npy_bytes(TensorView<const float> t) {
    std::vector<std::size_t> shape;
    for (index_t d : t.shape.dims()) shape.push_back(static_cast<std::size_t>(d));
    // No copy here: the adaptor reads the tensor's memory; dump_npy copies once into its string.
    const auto array = xt::adapt(t.data, static_cast<std::size_t>(t.size()), xt::no_ownership(), shape);
    return xt::dump_npy(array);
}

// Writes t to `path` atomically.
inline void write_npy(const std::filesystem::path& path, TensorView<const float> t) {
    const std::string bytes = npy_bytes(t);
    write_file_atomically(path, [&](std::FILE* f) { return write_all(f, bytes.data(), bytes.size()); });
}

// What the header of a .npy file says.
struct NpyHeader {
    int version_major = 0, version_minor = 0;
    std::string descr;                // e.g. "<f4"
    bool fortran_order = false;
    std::vector<index_t> shape;
    std::uint64_t data_offset = 0;    // where the elements start
};

namespace detail_npy {

// A small parser for the header dict: string keys; values that are strings, True/False, or tuples
// of non-negative integers.
class DictParser {
public:
    DictParser(const std::string& text, const std::string& file) : s_(text), file_(file) {}

    NpyHeader parse() {
        NpyHeader h;
        bool seen_descr = false, seen_fortran = false, seen_shape = false;
        expect('{');
        for (;;) {
            skip_space();
            if (peek() == '}') break;
            const std::string key = string_literal();
            expect(':');
            skip_space();
            if (key == "descr") {
                if (peek() != '\'' && peek() != '"')
                    bad("'descr' is not a plain dtype string (structured arrays are not supported)");
                h.descr = string_literal();
                seen_descr = true;
            } else if (key == "fortran_order") {
                h.fortran_order = boolean();
                seen_fortran = true;
            } else if (key == "shape") {
                h.shape = tuple();
                seen_shape = true;
            } else {
                bad("unexpected key '" + key + "'");
            }
            skip_space();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            if (peek() == '}') break;
            bad("expected ',' or '}'");
        }
        expect('}');
        if (!seen_descr || !seen_fortran || !seen_shape)
            bad("the header lacks 'descr', 'fortran_order' or 'shape'");
        return h;
    }

private:
    [[noreturn]] void bad(const std::string& why) const {
        despeck::detail::fail<io_error>("'", file_, "' has a malformed .npy header (", why, " at character ", pos_,
                                        "): ", s_);
    }
    char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
    void skip_space() {
        while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    }
    void expect(char c) {
        skip_space();
        if (peek() != c) bad(std::string("expected '") + c + "'");
        ++pos_;
    }
    std::string string_literal() {
        skip_space();
        const char quote = peek();
        if (quote != '\'' && quote != '"') bad("expected a quoted string");
        const std::size_t end = s_.find(quote, pos_ + 1);
        if (end == std::string::npos) bad("unterminated string");
        std::string v = s_.substr(pos_ + 1, end - pos_ - 1);
        pos_ = end + 1;
        return v;
    }
    bool boolean() {
        if (s_.compare(pos_, 4, "True") == 0) {
            pos_ += 4;
            return true;
        }
        if (s_.compare(pos_, 5, "False") == 0) {
            pos_ += 5;
            return false;
        }
        bad("expected True or False");
    }
    std::vector<index_t> tuple() {
        expect('(');
        std::vector<index_t> dims;
        for (;;) {
            skip_space();
            if (peek() == ')') break;
            if (!std::isdigit(static_cast<unsigned char>(peek()))) bad("expected a dimension");
            index_t v = 0;
            while (std::isdigit(static_cast<unsigned char>(peek()))) {
                if (v > (index_t(1) << 48)) bad("dimension too large");
                v = v * 10 + (s_[pos_++] - '0');
            }
            dims.push_back(v);
            skip_space();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            if (peek() != ')') bad("expected ',' or ')'");
        }
        expect(')');
        return dims;
    }

    const std::string& s_;
    const std::string& file_;
    std::size_t pos_ = 0;
};

inline std::uint64_t file_size(std::ifstream& in) {
    in.seekg(0, std::ios::end);
    const auto size = static_cast<std::uint64_t>(in.tellg());
    in.seekg(0);
    return size;
}

}  // namespace detail_npy

// Reads and checks the header of an open .npy file; leaves `in` at the first element.
inline NpyHeader read_npy_header(std::ifstream& in, const std::string& file, std::uint64_t size) {
    unsigned char pre[12] = {};
    if (size < 10) despeck::detail::fail<io_error>("'", file, "' is not a .npy file: ", size, " bytes");
    in.read(reinterpret_cast<char*>(pre), 10);
    if (std::memcmp(pre, "\x93NUMPY", 6) != 0)
        despeck::detail::fail<io_error>("'", file, "' is not a .npy file (no \\x93NUMPY magic)");
    const int major = pre[6], minor = pre[7];
    std::uint64_t header_len = 0, prefix = 0;
    if (major == 1) {
        header_len = std::uint64_t(pre[8]) | (std::uint64_t(pre[9]) << 8);
        prefix = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) despeck::detail::fail<io_error>("'", file, "' is truncated: ", size, " bytes");
        in.read(reinterpret_cast<char*>(pre + 10), 2);
        header_len = std::uint64_t(pre[8]) | (std::uint64_t(pre[9]) << 8) | (std::uint64_t(pre[10]) << 16) |
                     (std::uint64_t(pre[11]) << 24);
        prefix = 12;
    } else {
        despeck::detail::fail<io_error>("'", file, "' has .npy format version ", major, ".", minor,
                                        "; versions 1.0, 2.0 and 3.0 are supported");
    }
    if (prefix + header_len > size)
        despeck::detail::fail<io_error>("'", file, "' is truncated: its .npy header of ", header_len,
                                        " bytes does not fit in the file's ", size, " bytes");
    std::string text(static_cast<std::size_t>(header_len), '\0');
    in.read(text.data(), static_cast<std::streamsize>(header_len));
    NpyHeader h = detail_npy::DictParser(text, file).parse();
    h.version_major = major;
    h.version_minor = minor;
    h.data_offset = prefix + header_len;
    return h;
}

// Reads a float32 array ('<f4' or '>f4', C order, rank 1 to 4) into a Tensor<float>.
inline Tensor<float> read_npy_f32(const std::filesystem::path& path) {
    const std::string file = path.string();
    std::ifstream in(path, std::ios::binary);
    if (!in) despeck::detail::fail<io_error>("cannot open '", file, "' for reading (missing?)");
    const std::uint64_t size = detail_npy::file_size(in);
    const NpyHeader h = read_npy_header(in, file, size);
    if (h.descr != "<f4" && h.descr != ">f4")
        despeck::detail::fail<io_error>("'", file, "' holds dtype '", h.descr,
                                        "', expected float32 ('<f4'); convert with array.astype('<f4')");
    if (h.fortran_order)
        despeck::detail::fail<io_error>("'", file,
                                        "' is in Fortran order; save it with numpy.ascontiguousarray(array)");
    if (h.shape.empty() || h.shape.size() > static_cast<std::size_t>(Shape::max_rank))
        despeck::detail::fail<io_error>("'", file, "' has rank ", h.shape.size(), "; ranks 1 to ", Shape::max_rank,
                                        " are supported");
    const Shape shape = Shape::from(h.shape);
    std::uint64_t bytes = 4;
    for (index_t d : h.shape)
        if (__builtin_mul_overflow(bytes, static_cast<std::uint64_t>(d), &bytes))
            despeck::detail::fail<io_error>("'", file, "' has an impossible shape ", shape, " (overflow)");
    const std::uint64_t held = size - h.data_offset;
    if (held < bytes)
        despeck::detail::fail<io_error>("'", file, "' is truncated: its header says float32 ", shape, ", ", bytes,
                                        " bytes of data, but the file holds ", held);
    if (held > bytes)
        despeck::detail::fail<io_error>("'", file, "' has ", held - bytes, " bytes after the ", bytes,
                                        " bytes of its float32 ", shape, " data (corrupt?)");
    Tensor<float> t = Tensor<float>::uninitialized(shape);
    in.read(reinterpret_cast<char*>(t.data()), static_cast<std::streamsize>(bytes));
    if (static_cast<std::uint64_t>(in.gcount()) != bytes)
        despeck::detail::fail<io_error>("'", file, "': could only read ", in.gcount(), " of ", bytes, " bytes of data");
    const bool file_little = h.descr[0] == '<';
    if (file_little != (std::endian::native == std::endian::little))
        for (index_t i = 0; i < t.size(); ++i) {
            std::uint32_t u = std::bit_cast<std::uint32_t>(t[i]);
            u = ((u & 0xffu) << 24) | ((u & 0xff00u) << 8) | ((u >> 8) & 0xff00u) | (u >> 24);
            t[i] = std::bit_cast<float>(u);
        }
    return t;
}

}  // namespace despeck::io
