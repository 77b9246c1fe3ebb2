// despeck/io/atomic_file.hpp — write a file so that readers see the old file or the whole new
// one, never a half-written one.
//
// The bytes go to a temporary file beside the target (same directory, so rename stays on one
// file system), are flushed and fsync'ed, and the temporary is renamed over the target. On any
// failure (a full disk, say) the temporary is removed, the target is left as it was, and an
// io_error names the path and the reason.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "despeck/error.hpp"

namespace despeck::io {

// Calls write(FILE*) to fill a temporary file, then renames it onto `path`. `write` returns
// false or throws to abandon the file.
inline void write_file_atomically(const std::filesystem::path& path, const std::function<bool(std::FILE*)>& write) {
    static std::atomic<unsigned> counter{0};
    const std::filesystem::path tmp = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) detail::fail<io_error>("cannot create '", tmp.string(), "' to write '", path.string(), "': ", std::strerror(errno));
    auto abandon = [&](const std::string& why) {
        if (f) std::fclose(f);
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        detail::fail<io_error>("writing '", path.string(), "' failed: ", why, "; the previous file, if any, is unchanged");
    };
    bool ok = false;
    try {
        ok = write(f);
    } catch (const std::exception& e) {
        abandon(e.what());
    }
    if (!ok) abandon("the writer gave up");
    if (std::fflush(f) != 0) abandon(std::strerror(errno));
    if (std::ferror(f)) abandon("a write error occurred (disk full?)");
    if (::fsync(::fileno(f)) != 0) abandon(std::string("fsync: ") + std::strerror(errno));
    const int close_result = std::fclose(f);
    f = nullptr;
    if (close_result != 0) abandon(std::string("close: ") + std::strerror(errno));
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) abandon("rename: " + ec.message());
}

// Writes all of [data, data + size) or reports failure.
inline bool write_all(std::FILE* f, const void* data, std::size_t size) {
    return size == 0 || std::fwrite(data, 1, size, f) == size;
}

}  // namespace despeck::io
