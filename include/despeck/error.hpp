// despeck/error.hpp — the exception types every despeck function throws.
//
// despeck never calls abort(): a bad shape, a corrupt file or a value out of range raises one of
// these, with a message that names the file, the shape or the value involved. Shape checks are
// cheap and stay on in release builds.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace despeck {

// Base of every despeck error, so callers can catch despeck's failures apart from others.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A tensor has the wrong rank or dimensions for the operation asked of it.
class shape_error : public error {
public:
    using error::error;
};

// A configuration value or argument is out of its valid range.
class value_error : public error {
public:
    using error::error;
};

// A file could not be read or written, or its contents are corrupt or inconsistent.
class io_error : public error {
public:
    using error::error;
};

namespace detail {

// Builds a message from any streamable pieces: fail<shape_error>("conv2d: x is ", x.shape()).
template <class... Parts>
std::string concat(Parts&&... parts) {
    std::ostringstream out;
    (out << ... << std::forward<Parts>(parts));
    return out.str();
}

template <class Error, class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
    throw Error(concat(std::forward<Parts>(parts)...));
}

}  // namespace detail
}  // namespace despeck
