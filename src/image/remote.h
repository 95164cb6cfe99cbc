// What Store::pull needs from a registry, so that the store knows nothing of HTTP: the registry
// module (src/registry) implements it with libcurl, tests may implement it in memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "image/oci.h"
#include "util/error.h"

namespace fnexec::image {

struct RemoteDocument {
  std::string bytes;
  std::string media_type;  // the Content-Type the registry sent
};

class RemoteSource {
 public:
  virtual ~RemoteSource() = default;
  // "docker://HOST/REPO:TAG": how errors name what is pulled.
  virtual std::string describe() const = 0;
  // The manifest or index by tag or digest, at most max_bytes. A digest's bytes are not yet verified.
  virtual Result<RemoteDocument> manifest(std::string_view tag_or_digest, int64_t max_bytes) = 0;
  // Gives the blob's bytes to sink in order, exactly once each (a broken transfer resumes where it
  // stopped), at most one byte more than the descriptor's size (so the caller can refuse a longer
  // blob); stops with an error as soon as cancel is set or sink returns false. Verification is the
  // caller's. The sink runs on the calling thread (a pull hashes and keeps the blob there).
  using BlobSink = std::function<bool(std::span<const char>)>;
  virtual Result<> stream_blob(const Descriptor& blob, const BlobSink& sink, const std::atomic<bool>& cancel) = 0;
};

// One layer's state, for progress displays.
struct PullProgress {
  size_t layer = 0;         // index in the manifest
  size_t layers = 0;
  std::string digest;
  uint64_t done = 0;        // compressed bytes read so far
  uint64_t total = 0;       // the descriptor's size
  enum State { waiting, reused, fetching, done_ok, failed } state = waiting;
};

struct PullOptions {
  std::optional<std::string> name;  // "name[:tag]" to record
  std::string reference;            // the tag or digest to ask for
  std::string default_name;         // recorded when name is not given
  Platform platform;                // the image to choose from an index
  size_t parallel_layers = 3;       // layers fetched at once
  bool allow_devices = false;
  // Called from the fetching threads (serialised by the store) as layers start, progress and end.
  std::function<void(const PullProgress&)> progress;
};

struct PullResult {
  size_t layers_fetched = 0;
  size_t layers_reused = 0;
  uint64_t bytes_fetched = 0;
};

}  // namespace fnexec::image
