// Layer unpacking: one pass over a (gzip|zstd|plain) tar blob that hashes the compressed bytes and
// the uncompressed tar stream, converts OCI whiteouts to overlay ones and refuses hostile entries.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "util/error.h"

namespace fnexec::image {

// Incremental sha256 (OpenSSL EVP): "sha256:<hex>" at the end.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  std::string finish();  // once

 private:
  EVP_MD_CTX* ctx_;
};

std::string sha256_of(std::string_view data);

// Entry-name rules shared by the unpacker and the archive reader.
// Strips leading slashes and "./" prefixes (as GNU tar, Docker and containerd do: umoci writes the
// layer root as "/"), repeated and trailing slashes and "." components; "" is the layer root.
// Fails on any ".." component.
Result<std::string> clean_entry_path(std::string_view name);

// dir/target normalised without touching the filesystem ("a/b" + "../c" -> "a/c"); nullopt when it
// climbs above the root. dir is relative to the root.
std::optional<std::string> resolve_lexically(std::string_view dir, std::string_view target);

// True when a symlink at link_path (clean, relative to the layer root) with this target stays inside
// the layer when resolved lexically. Absolute targets are inside: they resolve in the rootfs at run time.
bool symlink_stays_inside(std::string_view link_path, std::string_view target);

// What an OCI whiteout entry means for overlayfs.
struct Whiteout {
  enum Kind { none, remove, opaque, ignored } kind = none;
  std::string path;  // remove: the path that becomes a 0/0 char device; opaque: the directory
};
// clean_path as from clean_entry_path. ".wh..wh..opq" → opaque parent; ".wh.NAME" → remove NAME;
// other ".wh..wh." names (aufs bookkeeping) → ignored.
Whiteout classify_whiteout(std::string_view clean_path);

struct UnpackOptions {
  bool allow_devices = false;      // extract block/char devices instead of skipping them
  int64_t expected_size = -1;      // compressed size from the descriptor; reading more fails at once
  int copy_fd = -1;                // when >= 0, the compressed bytes are also written here
  // Bound on the decompressed tar stream, 0 for none: going over fails at once, so a gzip bomb
  // writes at most this much. The error names limit_setting, the knob that raises it.
  uint64_t max_uncompressed_bytes = 0;
  std::string limit_setting;
  // Called with the compressed bytes read so far, every 4 MiB and once at the end; may be empty.
  std::function<void(uint64_t done)> progress;
};

struct LayerDigests {
  std::string compressed;      // sha256 of every byte read from blob_fd
  uint64_t compressed_size = 0;
  std::string uncompressed;    // sha256 of the whole decompressed stream (the diff_id)
  uint64_t uncompressed_size = 0;
  std::string compression;     // "none", "gzip" or "zstd"
  uint64_t device_nodes = 0;   // block/char device entries seen while unpacking (kept or skipped)
  uint64_t device_nodes_skipped = 0;  // of those, left out because devices were not allowed
};

// The compression of a blob from its first bytes ("none", "gzip" or "zstd"); reads with pread.
Result<std::string> blob_compression(int blob_fd);

// Reads blob_fd to its end. With dest_dir (an empty directory), unpacks into it; without, only
// verifies the stream. The caller compares the digests with the descriptor and the diff_id.
Result<LayerDigests> unpack_layer(int blob_fd, std::optional<std::string_view> dest_dir,
                                  const UnpackOptions& options);

}  // namespace fnexec::image
