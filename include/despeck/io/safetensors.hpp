// despeck/io/safetensors.hpp — read and write safetensors files.
//
// Layout (https://github.com/huggingface/safetensors, the format PyTorch users load with
// safetensors.torch.load_file, or with a few lines of plain Python):
//   8 bytes   N, the header length, unsigned little-endian
//   N bytes   JSON: { "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//                     "__metadata__": {"<key>": "<string value>", ...} }
//             padded with spaces to a multiple of 8 bytes
//   the data  each tensor's raw little-endian elements, row-major, at [begin, end) of this part
// Reading checks everything before trusting it: the header length against the file size, the
// JSON, every dtype, shape and offset range, and that the byte count matches the shape. Any
// mismatch is an io_error that names the file and the tensor.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "despeck/io/atomic_file.hpp"
#include "despeck/tensor.hpp"

namespace despeck::io {

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big);

namespace detail_st {
template <class U>
U byteswap_if_big(U v) {
    if constexpr (std::endian::native == std::endian::big) {
        unsigned char b[sizeof(U)];
        std::memcpy(b, &v, sizeof(U));
        std::reverse(b, b + sizeof(U));
        std::memcpy(&v, b, sizeof(U));
    }
    return v;
}
inline std::size_t dtype_size(const std::string& dtype) {
    if (dtype == "F32" || dtype == "I32") return 4;
    if (dtype == "F64" || dtype == "I64") return 8;
    return 0;
}
}  // namespace detail_st

class SafetensorsFile {
public:
    struct Entry {
        std::string dtype;
        std::vector<index_t> shape;
        std::uint64_t begin = 0, end = 0;  // byte range within the data part
    };

    static SafetensorsFile read(const std::filesystem::path& path) {
        SafetensorsFile file;
        file.path_ = path.string();
        std::ifstream in(path, std::ios::binary);
        if (!in) despeck::detail::fail<io_error>("cannot open '", file.path_, "' for reading");
        in.seekg(0, std::ios::end);
        const auto size = static_cast<std::uint64_t>(in.tellg());
        in.seekg(0);
        if (size < 8) despeck::detail::fail<io_error>("'", file.path_, "' is not a safetensors file: ", size, " bytes");
        std::uint64_t header_len = 0;
        in.read(reinterpret_cast<char*>(&header_len), 8);
        header_len = detail_st::byteswap_if_big(header_len);
        if (header_len > size - 8 || header_len > (std::uint64_t(100) << 20))
            despeck::detail::fail<io_error>("'", file.path_, "' is truncated or corrupt: header of ", header_len,
                                            " bytes in a file of ", size);
        std::string header(header_len, '\0');
        in.read(header.data(), static_cast<std::streamsize>(header_len));
        nlohmann::json json;
        try {
            json = nlohmann::json::parse(header);
        } catch (const std::exception& e) {
            despeck::detail::fail<io_error>("'", file.path_, "': header is not valid JSON (", e.what(), ")");
        }
        if (!json.is_object()) despeck::detail::fail<io_error>("'", file.path_, "': header is not a JSON object");
        const std::uint64_t data_size = size - 8 - header_len;
        for (auto it = json.begin(); it != json.end(); ++it) {
            if (it.key() == "__metadata__") {
                if (!it.value().is_object())
                    despeck::detail::fail<io_error>("'", file.path_, "': __metadata__ is not an object");
                for (auto m = it.value().begin(); m != it.value().end(); ++m) {
                    if (!m.value().is_string())
                        despeck::detail::fail<io_error>("'", file.path_, "': metadata '", m.key(), "' is not a string");
                    file.metadata_[m.key()] = m.value().get<std::string>();
                }
                continue;
            }
            file.entries_[it.key()] = parse_entry(file.path_, it.key(), it.value(), data_size);
        }
        file.data_.resize(data_size);
        in.read(reinterpret_cast<char*>(file.data_.data()), static_cast<std::streamsize>(data_size));
        if (static_cast<std::uint64_t>(in.gcount()) != data_size)
            despeck::detail::fail<io_error>("'", file.path_, "': could not read ", data_size, " bytes of tensor data");
        return file;
    }

    const std::string& path() const { return path_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const std::map<std::string, Entry>& entries() const { return entries_; }
    bool contains(const std::string& name) const { return entries_.count(name) != 0; }
    std::string metadata_value(const std::string& key) const {
        auto it = metadata_.find(key);
        if (it == metadata_.end()) despeck::detail::fail<io_error>("'", path_, "': metadata has no '", key, "'");
        return it->second;
    }
    const Entry& entry(const std::string& name) const {
        auto it = entries_.find(name);
        if (it == entries_.end()) despeck::detail::fail<io_error>("'", path_, "': no tensor named '", name, "'");
        return it->second;
    }

    // The tensor converted to T (from F32 or F64).
    template <class T>
    Tensor<T> tensor(const std::string& name) const {
        const Entry& e = entry(name);
        if (e.shape.size() > static_cast<std::size_t>(Shape::max_rank))
            despeck::detail::fail<io_error>("'", path_, "': tensor '", name, "' has rank ", e.shape.size());
        Tensor<T> t(e.shape.empty() ? Shape{1} : Shape::from(e.shape));
        const unsigned char* src = data_.data() + e.begin;
        for (index_t i = 0; i < t.size(); ++i) {
            if (e.dtype == "F32") {
                std::uint32_t bits;
                std::memcpy(&bits, src + 4 * i, 4);
                bits = detail_st::byteswap_if_big(bits);
                t[i] = static_cast<T>(std::bit_cast<float>(bits));
            } else if (e.dtype == "F64") {
                std::uint64_t bits;
                std::memcpy(&bits, src + 8 * i, 8);
                bits = detail_st::byteswap_if_big(bits);
                t[i] = static_cast<T>(std::bit_cast<double>(bits));
            } else {
                despeck::detail::fail<io_error>("'", path_, "': tensor '", name, "' has dtype ", e.dtype,
                                                ", expected F32 or F64");
            }
        }
        return t;
    }
    // Like tensor<T>(name) but also checks the shape.
    template <class T>
    Tensor<T> tensor(const std::string& name, const Shape& expected) const {
        const Entry& e = entry(name);
        if (e.shape.size() > static_cast<std::size_t>(Shape::max_rank))
            despeck::detail::fail<io_error>("'", path_, "': tensor '", name, "' has rank ", e.shape.size(), ", expected ",
                                            expected);
        const Shape got = e.shape.empty() ? Shape{1} : Shape::from(e.shape);
        if (got != expected)
            despeck::detail::fail<io_error>("'", path_, "': tensor '", name, "' has shape ", got, ", expected ", expected);
        return tensor<T>(name);
    }

private:
    static Entry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& j,
                             std::uint64_t data_size) {
        Entry e;
        try {
            e.dtype = j.at("dtype").get<std::string>();
            for (const auto& d : j.at("shape")) {
                const auto v = d.get<std::int64_t>();
                if (v < 0) throw std::runtime_error("negative dimension");
                e.shape.push_back(v);
            }
            const auto& off = j.at("data_offsets");
            if (!off.is_array() || off.size() != 2) throw std::runtime_error("data_offsets must be [begin, end]");
            e.begin = off[0].get<std::uint64_t>();
            e.end = off[1].get<std::uint64_t>();
        } catch (const std::exception& ex) {
            despeck::detail::fail<io_error>("'", path, "': entry '", name, "' is malformed (", ex.what(), ")");
        }
        const std::size_t elem = detail_st::dtype_size(e.dtype);
        if (elem == 0) despeck::detail::fail<io_error>("'", path, "': tensor '", name, "' has unsupported dtype ", e.dtype);
        std::uint64_t count = 1;
        for (index_t d : e.shape)
            if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(d), &count))
                despeck::detail::fail<io_error>("'", path, "': tensor '", name, "' has an impossible shape (overflow)");
        std::uint64_t bytes = 0;
        if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(elem), &bytes))
            despeck::detail::fail<io_error>("'", path, "': tensor '", name, "' has an impossible shape (overflow)");
        if (e.end < e.begin || e.end > data_size)
            despeck::detail::fail<io_error>("'", path, "': tensor '", name, "' spans bytes [", e.begin, ", ", e.end,
                                            ") beyond the ", data_size, " bytes of data (truncated file?)");
        if (e.end - e.begin != bytes)
            despeck::detail::fail<io_error>("'", path, "': tensor '", name, "' holds ", e.end - e.begin, " bytes, its ",
                                            e.dtype, " shape needs ", bytes);
        return e;
    }

    std::string path_;
    std::map<std::string, std::string> metadata_;
    std::map<std::string, Entry> entries_;
    std::vector<unsigned char> data_;
};

class SafetensorsWriter {
public:
    enum class DType { F32, F64 };

    // Copies the tensor, converted to dtype.
    template <class T>
    void add(const std::string& name, TensorView<const T> t, DType dtype = DType::F32) {
        add_raw(name, t.shape.dims(), t.data, t.size(), dtype);
    }
    template <class T>
    void add(const std::string& name, const std::vector<index_t>& shape, const T* data, index_t count,
             DType dtype = DType::F32) {
        add_raw(name, shape, data, count, dtype);
    }
    void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

    // Writes atomically: the file at `path` is either the old one or the complete new one.
    void write(const std::filesystem::path& path) const {
        nlohmann::json header = nlohmann::json::object();
        std::uint64_t offset = 0;
        for (const auto& t : tensors_) {
            header[t.name] = {{"dtype", t.dtype == DType::F32 ? "F32" : "F64"},
                              {"shape", t.shape},
                              {"data_offsets", {offset, offset + t.bytes.size()}}};
            offset += t.bytes.size();
        }
        if (!metadata_.empty()) header["__metadata__"] = metadata_;
        std::string text = header.dump();
        text.append((8 - text.size() % 8) % 8, ' ');
        const std::uint64_t len = detail_st::byteswap_if_big(static_cast<std::uint64_t>(text.size()));
        write_file_atomically(path, [&](std::FILE* f) {
            if (!write_all(f, &len, 8) || !write_all(f, text.data(), text.size())) return false;
            for (const auto& t : tensors_)
                if (!write_all(f, t.bytes.data(), t.bytes.size())) return false;
            return true;
        });
    }

private:
    struct Stored {
        std::string name;
        std::vector<index_t> shape;
        DType dtype;
        std::vector<unsigned char> bytes;
    };

    template <class T>
    void add_raw(const std::string& name, const std::vector<index_t>& shape, const T* data, index_t count, DType dtype) {
        if (name == "__metadata__" || name.empty())
            despeck::detail::fail<value_error>("safetensors: invalid tensor name '", name, "'");
        for (const auto& t : tensors_)
            if (t.name == name) despeck::detail::fail<value_error>("safetensors: duplicate tensor name '", name, "'");
        Stored s{name, shape, dtype, {}};
        const std::size_t elem = dtype == DType::F32 ? 4 : 8;
        s.bytes.resize(static_cast<std::size_t>(count) * elem);
        for (index_t i = 0; i < count; ++i) {
            if (dtype == DType::F32) {
                const auto bits = detail_st::byteswap_if_big(std::bit_cast<std::uint32_t>(static_cast<float>(data[i])));
                std::memcpy(s.bytes.data() + 4 * i, &bits, 4);
            } else {
                const auto bits = detail_st::byteswap_if_big(std::bit_cast<std::uint64_t>(static_cast<double>(data[i])));
                std::memcpy(s.bytes.data() + 8 * i, &bits, 8);
            }
        }
        tensors_.push_back(std::move(s));
    }

    std::vector<Stored> tensors_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace despeck::io
