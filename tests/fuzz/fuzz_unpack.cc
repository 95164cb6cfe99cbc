// libFuzzer target: one layer blob (any compression) unpacked into a fresh directory. Besides
// crashes and sanitizer reports, it checks that nothing appears next to the layer directory.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "image/unpack.h"
#include "util/unique_fd.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path base = [] {
    char tmpl[] = "/tmp/fnexec-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    return std::filesystem::path(tmpl);
  }();
  fnexec::UniqueFd fd(::memfd_create("layer", MFD_CLOEXEC));
  if (!fd || ::write(fd.get(), data, size) != static_cast<ssize_t>(size)) std::abort();
  ::lseek(fd.get(), 0, SEEK_SET);
  auto layer = base / "layer";
  std::filesystem::create_directory(layer);
  fnexec::image::UnpackOptions options;
  options.expected_size = static_cast<int64_t>(size);
  auto r = fnexec::image::unpack_layer(fd.get(), layer.string(), options);
  if (r && r->compressed_size != size) std::abort();
  std::error_code ec;
  std::filesystem::remove_all(layer, ec);
  if (!std::filesystem::is_empty(base)) {
    std::fprintf(stderr, "an entry escaped the layer directory into %s\n", base.c_str());
    std::abort();
  }
  return 0;
}
