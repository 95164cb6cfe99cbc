// gzip decompression through ISA-L's igzip (Debian's libisal2), loaded on first use: zlib's
// inflate was 42% of a pull's CPU samples (perf, bench/pull.sh), and igzip took the pull from ~1.8
// to ~1.4 s of CPU. Without the library, unpack_layer falls back to libarchive's zlib filter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "util/error.h"

namespace fnexec::image {

class IsalGzip {
 public:
  // nullptr when libisal.so.2 is not installed (or FNEXEC_NO_ISAL is set, to compare with zlib).
  static std::unique_ptr<IsalGzip> make();
  ~IsalGzip();
  IsalGzip(const IsalGzip&) = delete;
  IsalGzip& operator=(const IsalGzip&) = delete;

  // Where compressed bytes come from: a span of the next block, empty at the end of the blob.
  using Input = std::function<Result<std::span<const unsigned char>>()>;

  // The next block of decompressed bytes (valid until the next call), empty after the last gzip
  // member. Concatenated members are one stream; bytes after the last member that do not start
  // another one are left to the caller (still in the input, which it reads to its end).
  Result<std::span<const unsigned char>> next(const Input& input);
  // The same into the caller's buffer (igzip keeps the 32 KiB history itself): the bytes written,
  // 0 after the last member. unpack_layer inflates straight into the tar thread's blocks this way.
  Result<size_t> next_into(const Input& input, std::span<unsigned char> out);

 private:
  struct State;
  explicit IsalGzip(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace fnexec::image
