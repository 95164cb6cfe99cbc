// Layer unpacking: one pass over a (gzip|zstd|plain) tar blob that hashes the compressed bytes and
// the uncompressed tar stream, converts OCI whiteouts to overlay ones and refuses hostile entries.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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

// A bounded, in-order hand-off of byte blocks from one thread to another: unpack_layer passes
// decompressed blocks from its inflating thread to the tar thread through one, and a pull passes
// the compressed blob from its fetching thread (which hashes and copies it) to unpack_layer through
// another, so that one layer keeps both cores busy (bench/pull.sh: inflate, the hashes and the file
// writes were each a quarter to a third of a pull's CPU, all on one thread per layer).
class BlockPipe {
 public:
  // Small enough that a block is still in cache when the other thread reads it: with 4 x 1 MiB,
  // copying into the page cache (pwrite of file data, write of the blob) took 25% of a pull's CPU
  // samples instead of 2% (perf, bench/pull.sh).
  static constexpr size_t kBlocks = 4;
  static constexpr size_t kBlockSize = 128 << 10;

  // Producer: the next free block to fill, or an empty span once the consumer cancelled.
  std::span<unsigned char> acquire() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return cancelled_ || count_ < kBlocks; });
    if (cancelled_) return {};
    return blocks_[(head_ + count_) % kBlocks].data;
  }
  // Producer: hands over the first size bytes of the block acquire() gave.
  void publish(size_t size) {
    {
      std::lock_guard lock(mutex_);
      blocks_[(head_ + count_) % kBlocks].size = size;
      ++count_;
    }
    cv_.notify_all();
  }
  // Producer: no more blocks; error is what stopped it early, if anything did.
  void close(std::optional<Error> error = std::nullopt) {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      error_ = std::move(error);
    }
    cv_.notify_all();
  }

  // Consumer: releases the block it held and waits for the next, valid until the next call; empty
  // at the end (then error() says whether the producer failed) or once cancelled.
  std::span<const unsigned char> next() {
    std::unique_lock lock(mutex_);
    if (holding_) {
      holding_ = false;
      head_ = (head_ + 1) % kBlocks;
      --count_;
      cv_.notify_all();
    }
    cv_.wait(lock, [&] { return count_ > 0 || closed_ || cancelled_; });
    if (count_ == 0 || cancelled_) return {};
    holding_ = true;
    const Block& b = blocks_[head_];
    return std::span<const unsigned char>(b.data.data(), b.size);
  }
  std::optional<Error> error() {
    std::lock_guard lock(mutex_);
    return error_;
  }
  // Either side: stops the other (a producer waiting for room, a consumer waiting for a block).
  void cancel() {
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
    }
    cv_.notify_all();
  }

 private:
  struct Block {
    std::vector<unsigned char> data = std::vector<unsigned char>(kBlockSize);
    size_t size = 0;
  };
  std::mutex mutex_;
  std::condition_variable cv_;
  std::array<Block, kBlocks> blocks_;
  size_t head_ = 0, count_ = 0;
  bool holding_ = false, closed_ = false, cancelled_ = false;
  std::optional<Error> error_;
};

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

// The same, reading the blob from a pipe whose producer hashes and keeps the compressed bytes
// itself (a pull: on the fetching thread), with full blocks but for the last: the result's
// `compressed` digest is left empty and copy_fd unused. Cancels the pipe before returning, so a
// producer still waiting for room stops.
Result<LayerDigests> unpack_layer(BlockPipe& blob, std::optional<std::string_view> dest_dir,
                                  const UnpackOptions& options);

}  // namespace fnexec::image
