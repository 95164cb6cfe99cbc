// Typed errors: what failed, on what, and the errno. Library code returns Result<T>;
// the CLI and HTTP layers turn an Error into a message and an exit or status code.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <utility>

namespace fnexec {

// Broad classes the front ends map to exit codes (CLI) and status codes (HTTP).
enum class ErrorKind {
  internal,     // a setup step or syscall failed
  invalid,      // bad input: option, request, document
  not_found,    // no such image, function, file
  corrupt,      // digest mismatch, malformed or hostile archive
  exists,       // conflicting name
  unavailable,  // missing kernel feature or capacity
  protocol,     // a function broke the fnexec/1 frame protocol (src/invoke/frames.h)
  too_large,    // input over a configured bound (fnexec.conf max_* keys)
};

struct Error {
  ErrorKind kind = ErrorKind::internal;
  int err = 0;        // errno of the failed call, 0 when not a syscall failure
  std::string what;   // what failed: "mount overlay", "verify blob"
  std::string on;     // on what: a path, a pid, a digest
  std::string detail; // why, when errno does not say it: "lowerdir list too long (130 layers)"

  // "cannot WHAT ON: DETAIL (strerror)" — every part present only when set.
  std::string message() const;

  // Prefixes context as the error travels up: "import oci:/x: " + message.
  Error& context(std::string prefix);
};

template <class T = void>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(ErrorKind kind, std::string what, std::string on = {},
                                   std::string detail = {}) {
  return std::unexpected(Error{kind, 0, std::move(what), std::move(on), std::move(detail)});
}

// Captures errno at the call site, so call it right after the failing syscall.
inline std::unexpected<Error> fail_errno(std::string what, std::string on = {}, int err = errno) {
  ErrorKind kind = err == ENOENT ? ErrorKind::not_found : ErrorKind::internal;
  return std::unexpected(Error{kind, err, std::move(what), std::move(on), {}});
}

}  // namespace fnexec

// Propagates the error of a Result-returning expression, else yields its value.
// Uses a GNU statement expression: the codebase is g++/clang only.
#define FNEXEC_TRY(expr)                                              \
  __extension__({                                                                \
    auto&& fnexec_try_r_ = (expr);                                    \
    if (!fnexec_try_r_) return std::unexpected(std::move(fnexec_try_r_.error())); \
    *std::move(fnexec_try_r_);                                        \
  })
