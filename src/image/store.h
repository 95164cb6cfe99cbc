// The content-addressed image store: verified blobs, layers unpacked once, name:tag references.
//   ROOT/blobs/sha256/<hex>        every blob, verified as it was written
//   ROOT/layers/sha256/<diff_id>/  each layer unpacked once, overlay-ready (whiteouts converted)
//   ROOT/layer-info/<diff_id>.json what unpacking left out: {"device_nodes":N,"device_nodes_skipped":M}
//   ROOT/refs.json                 name:tag -> manifest digest
//   ROOT/pins.json                 holder -> the reference and digest it uses (see Store::pin)
// This header is the contract the sandbox and server modules build on.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace fnexec::image {
class RemoteSource;
struct PullOptions;
struct PullResult;
}  // namespace fnexec::image

namespace fnexec::image {

// The parts of an OCI/Docker image config a run needs.
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "K=V"
  std::string working_dir;
  std::string user;              // "uid[:gid]" or a name, as in the config
  std::string architecture;
  std::string os;
  std::string created;
};

// An image ready to run: its layers bottom-most first, as overlay wants them reversed.
struct ResolvedImage {
  std::string manifest_digest;               // "sha256:<hex>"
  std::string reference;                     // what the user named it, or the digest
  std::vector<std::filesystem::path> layers; // absolute unpacked layer dirs, bottom first
  ImageConfig config;
};

// Lambda's limit for a container image, unpacked, is 10 GB.
inline constexpr uint64_t kDefaultMaxLayerBytes = uint64_t{10} << 30;
inline constexpr uint64_t kDefaultMaxImageBytes = uint64_t{10} << 30;

struct ImportOptions {
  std::optional<std::string> name;  // "name[:tag]" to record; default from the source's ref, if any
  bool allow_devices = false;       // keep device nodes in layers instead of skipping them
  bool progress = false;            // print a progress line for large layers (on a TTY)
  // Unpacked (tar stream) bytes allowed per layer and for all layers of the image: a gzip bomb
  // stops there with ErrorKind::too_large and leaves nothing in the store. 0 = no limit.
  uint64_t max_layer_bytes = kDefaultMaxLayerBytes;
  uint64_t max_image_bytes = kDefaultMaxImageBytes;
  // How the caller's user raises the limits, for the error: "max_layer_bytes in fnexec.conf".
  std::string layer_limit_setting = "--max-layer-bytes";
  std::string image_limit_setting = "--max-image-bytes";
};

// One name:tag of `fnexec image ls`.
struct ImageSummary {
  std::string name;
  std::string tag;
  std::string digest;   // manifest digest
  int64_t size = 0;     // config + compressed layer blobs, as the manifest says
  std::string created;  // from the config
};

struct LayerInfo {
  std::string digest;      // compressed blob
  std::string diff_id;     // uncompressed tar stream
  std::string media_type;
  int64_t size = 0;        // compressed
  std::filesystem::path path;
  uint64_t device_nodes = 0;          // block/char devices in the layer's tar
  uint64_t device_nodes_skipped = 0;  // of those, not unpacked (imported without --allow-devices)
};

// What `fnexec image inspect` shows.
struct ImageDetails {
  ResolvedImage image;
  std::vector<std::string> names;  // every name:tag pointing at it
  std::string config_digest;
  int64_t config_size = 0;
  std::vector<LayerInfo> layers;
};

// An image someone uses (the daemon pins each function's image): remove() refuses the name it was
// pinned by, and gc() keeps its content, whatever the names point at later.
struct Pin {
  std::string holder;     // "function NAME"
  std::string reference;  // as resolved: "name:tag", or the digest
  std::string digest;     // manifest digest
};

struct GcReport {
  size_t blobs_removed = 0;
  size_t layers_removed = 0;
  uint64_t bytes_freed = 0;  // blob bytes plus unpacked layer file sizes
};

class Store {
 public:
  // Opens (creating if needed) a store at root.
  static Result<Store> open(std::filesystem::path root);

  const std::filesystem::path& root() const { return root_; }

  // SOURCE: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], or a plain path
  // whose format is detected. Returns the imported image. Nothing is kept on failure.
  Result<ResolvedImage> import(std::string_view source, const ImportOptions& options);

  // Pulls from a registry (see image/remote.h): the manifest (an index resolves to the platform
  // asked for), the config, then each layer not already stored, several at once, streamed through
  // digest verification into the one-pass unpack. The image gets its name only when everything is
  // verified; on failure the layers that were completely verified stay (nameless, for gc or the
  // next pull) and nothing else does.
  Result<ResolvedImage> pull(RemoteSource& source, const PullOptions& options, PullResult* result = nullptr);

  // REF: name[:tag] (tag defaults to latest), sha256:<hex>, or a unique hex prefix of a digest.
  Result<ResolvedImage> resolve(std::string_view ref) const;

  Result<std::vector<ImageSummary>> list() const;
  Result<ImageDetails> inspect(std::string_view ref) const;
  // Removes the reference (a name:tag), or every name of a digest. Content stays until gc().
  // Refuses (ErrorKind::exists, naming the holders) to remove a name a pin was made by.
  Result<std::vector<std::string>> remove(std::string_view ref);
  // Removes blobs, layers and stale import directories that no reference and no pin needs.
  Result<GcReport> gc();

  // Resolves ref and records, in the same locked step, that holder uses the image it resolved to
  // (replacing holder's previous pin), so no gc() can run in between.
  Result<ResolvedImage> pin(std::string_view holder, std::string_view ref);
  // Records exactly this pin (a previous one, put back after a failed update).
  Result<> repin(const Pin& pin);
  // Drops holder's pin, if it has one.
  Result<> unpin(std::string_view holder);
  Result<std::vector<Pin>> pins() const;

 private:
  explicit Store(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;
};

// True when ref names a transport or an existing path, i.e. something import() accepts.
bool is_importable_source(std::string_view ref);

}  // namespace fnexec::image
