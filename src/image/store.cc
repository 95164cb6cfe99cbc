#include "image/store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "image/oci.h"
#include "image/remote.h"
#include "image/source.h"
#include "image/unpack.h"
#include "util/fs.h"
#include "util/openssl_api.h"
#include "util/unique_fd.h"

namespace fnexec::image {

namespace fsys = std::filesystem;

namespace {

constexpr int64_t kMaxDocument = 4 << 20;
// Layers at least this big get a progress line on a TTY.
constexpr int64_t kProgressThreshold = 8 << 20;

using Refs = std::map<std::string, std::string>;  // "name:tag" -> manifest digest

fsys::path blob_path(const fsys::path& root, std::string_view digest) {
  return root / "blobs" / "sha256" / std::string(digest_hex(digest));
}
fsys::path layer_path(const fsys::path& root, std::string_view diff_id) {
  return root / "layers" / "sha256" / std::string(digest_hex(diff_id));
}

fsys::path layer_info_path(const fsys::path& root, std::string_view diff_id) {
  return root / "layer-info" / (std::string(digest_hex(diff_id)) + ".json");
}

bool path_exists(const fsys::path& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

Result<std::string> read_document(const fsys::path& p, int64_t limit = kMaxDocument) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return fail_errno("read", p.string());
  if (st.st_size > limit)
    return fail(ErrorKind::corrupt, "read", p.string(), "larger than " + std::to_string(limit) + " bytes");
  return fs::read_file(p);
}

// A document of a work directory (layer record, manifest, config): written without the fsync of
// fs::write_file_atomic, because nothing leaves the work directory before the syncfs of
// make_durable or commit_work. That fsync waited for the device to flush everything written so
// far, up to 120 ms on a layer's fetching thread in bench/pull.sh.
Result<> write_work_file(const fsys::path& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) return fail_errno("create", path.string());
  if (auto w = fs::write_all(fd.get(), data, path.string()); !w) {
    ::unlink(path.c_str());
    return w;
  }
  return {};
}

Result<std::string> hash_file(int fd) {
  Sha256 h;
  std::vector<char> buf(1 << 20);
  for (off_t off = 0;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("read blob");
    if (n == 0) return h.finish();
    h.update(buf.data(), static_cast<size_t>(n));
    off += n;
  }
}

// Splits NAME[:TAG]; the tag is what follows the last ':' after the last '/'.
Result<std::pair<std::string, std::string>> parse_reference(std::string_view ref) {
  auto bad = [&](std::string detail) { return fail(ErrorKind::invalid, "parse image reference", std::string(ref), detail); };
  if (ref.empty()) return bad("empty");
  for (unsigned char c : ref)
    if (c <= ' ' || c == 0x7f || c == '"' || c == '\\') return bad("contains whitespace, quotes or control characters");
  size_t slash = ref.rfind('/');
  size_t colon = ref.rfind(':');
  std::string name(ref), tag = "latest";
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    name = ref.substr(0, colon);
    tag = ref.substr(colon + 1);
  }
  if (name.empty() || tag.empty()) return bad("want NAME[:TAG]");
  if (name.starts_with("sha256")) return bad("a name may not look like a digest");
  return std::pair{name, tag};
}

// ROOT/FILE is {"KEY": {"name": VALUE, ...}}: each entry goes to read_entry(name, value), which
// returns false for a value it cannot use. A missing file is an empty map.
template <class ReadEntry>
Result<> load_map(const fsys::path& root, const char* file, const char* key, std::string_view what,
                  ReadEntry&& read_entry) {
  auto p = root / file;
  if (!path_exists(p)) return {};
  std::string text = FNEXEC_TRY(read_document(p, 64 << 20));
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::object obj;
  auto bad = [&](std::string detail) {
    return fail(ErrorKind::corrupt, "read " + std::string(what), p.string(), detail);
  };
  if (parser.parse(padded).get_object().get(obj) || obj[key].get_object().get(obj))
    return bad(fmt::format("not a {{\"{}\": {{...}}}} document", key));
  for (auto field : obj)
    if (!read_entry(std::string(field.key), field.value))
      return bad("bad entry for " + std::string(field.key));
  return {};
}

// Writes what load_map reads: each entry is `"name":VALUE`, VALUE already JSON.
Result<> save_map(const fsys::path& root, const char* file, const char* key,
                  const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out = fmt::format("{{\"{}\":{{", key);
  for (size_t i = 0; i < entries.size(); ++i)
    out += std::string(i ? "," : "") + "\n  " + json_quote(entries[i].first) + ":" + entries[i].second;
  out += "\n}}\n";
  return fs::write_file_atomic(root / file, out);
}

Result<Refs> load_refs(const fsys::path& root) {
  Refs refs;
  FNEXEC_TRY(
      load_map(root, "refs.json", "refs", "references", [&](std::string name, simdjson::dom::element v) {
        std::string_view digest;
        if (v.get_string().get(digest) || !is_valid_digest(digest)) return false;
        refs.emplace(std::move(name), std::string(digest));
        return true;
      }));
  return refs;
}

Result<> save_refs(const fsys::path& root, const Refs& refs) {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& [name, digest] : refs) entries.emplace_back(name, json_quote(digest));
  return save_map(root, "refs.json", "refs", entries);
}

using Pins = std::map<std::string, std::pair<std::string, std::string>>;  // holder -> (reference, digest)

Result<Pins> load_pins(const fsys::path& root) {
  Pins pins;
  FNEXEC_TRY(load_map(root, "pins.json", "pins", "pins", [&](std::string holder, simdjson::dom::element v) {
    std::string_view reference, digest;
    if (v["reference"].get_string().get(reference) || v["digest"].get_string().get(digest) ||
        !is_valid_digest(digest))
      return false;
    pins.emplace(std::move(holder), std::pair{std::string(reference), std::string(digest)});
    return true;
  }));
  return pins;
}

Result<> save_pins(const fsys::path& root, const Pins& pins) {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& [holder, pin] : pins)
    entries.emplace_back(
        holder, "{\"reference\":" + json_quote(pin.first) + ",\"digest\":" + json_quote(pin.second) + "}");
  return save_map(root, "pins.json", "pins", entries);
}

// Store mutations (import, rm, gc, pin) hold ROOT/lock exclusively; readers need no lock because every
// change becomes visible by one rename.
class StoreLock {
 public:
  static Result<StoreLock> acquire(const fsys::path& root) {
    auto p = root / "lock";
    UniqueFd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return fail_errno("open store lock", p.string());
    while (::flock(fd.get(), LOCK_EX) != 0)
      if (errno != EINTR) return fail_errno("lock store", p.string());
    return StoreLock(std::move(fd));
  }

 private:
  explicit StoreLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// The manifest and config of an image in the store.
struct StoredImage {
  Manifest manifest;
  ParsedConfig config;
  std::string config_digest;
};

Result<StoredImage> load_image(const fsys::path& root, const std::string& digest) {
  auto mp = blob_path(root, digest);
  if (!path_exists(mp)) return fail(ErrorKind::not_found, "find image", digest, "no such manifest in the store");
  std::string mtext = FNEXEC_TRY(read_document(mp));
  StoredImage img;
  img.manifest = FNEXEC_TRY(parse_manifest(mtext));
  img.config_digest = img.manifest.config.digest;
  std::string ctext = FNEXEC_TRY(read_document(blob_path(root, img.config_digest)));
  img.config = FNEXEC_TRY(parse_config(ctext));
  if (img.config.diff_ids.size() != img.manifest.layers.size())
    return fail(ErrorKind::corrupt, "load image", digest, "config and manifest disagree on the number of layers");
  return img;
}

// What unpacking a layer left out; all zero for a layer without a record (older stores).
struct LayerRecord {
  uint64_t device_nodes = 0;
  uint64_t device_nodes_skipped = 0;
};

LayerRecord load_layer_record(const fsys::path& root, std::string_view diff_id) {
  LayerRecord r;
  auto text = fs::read_file(layer_info_path(root, diff_id));
  if (!text) return r;
  simdjson::dom::parser parser;
  simdjson::padded_string padded(*text);
  simdjson::dom::object obj;
  if (parser.parse(padded).get_object().get(obj)) return r;
  if (obj["device_nodes"].get_uint64().get(r.device_nodes)) r.device_nodes = 0;
  if (obj["device_nodes_skipped"].get_uint64().get(r.device_nodes_skipped)) r.device_nodes_skipped = 0;
  return r;
}

std::string layer_record_json(const LayerDigests& d) {
  return "{\"device_nodes\":" + std::to_string(d.device_nodes) +
         ",\"device_nodes_skipped\":" + std::to_string(d.device_nodes_skipped) + "}\n";
}

// ---------------------------------------------------------------------------------------------

class Importer {
 public:
  Importer(const fsys::path& root, const fsys::path& work, const ImageSource& src, const ImportOptions& options)
      : root_(root), work_(work), src_(src), options_(options) {}

  // Verifies and unpacks everything into work_; returns the manifest digest and the default name.
  Result<std::pair<std::string, std::string>> run() {
    return src_.kind() == ImageSource::Kind::docker_archive ? run_docker() : run_oci();
  }

 private:
  Result<std::pair<std::string, std::string>> run_oci() {
    auto index_path = FNEXEC_TRY(src_.file("index.json"));
    std::string text = FNEXEC_TRY(read_document(index_path));
    Index index = FNEXEC_TRY(parse_index(text));
    Descriptor desc = FNEXEC_TRY(pick_manifest(index, src_.ref()));
    std::string name = default_name(desc);
    for (int depth = 0; is_index_media_type(desc.media_type); ++depth) {
      if (depth == 4) return fail(ErrorKind::corrupt, "read image index", desc.digest, "nested more than 4 deep");
      std::string nested = FNEXEC_TRY(read_blob(desc));
      Index inner = FNEXEC_TRY(parse_index(nested));
      desc = FNEXEC_TRY(pick_manifest(inner, {}));
    }
    if (!is_manifest_media_type(desc.media_type))
      return fail(ErrorKind::corrupt, "read image", desc.digest, "media type " + desc.media_type + " is not a manifest");
    std::string mtext = FNEXEC_TRY(read_blob(desc));
    Manifest manifest = FNEXEC_TRY(parse_manifest(mtext, desc.media_type));
    if (!is_config_media_type(manifest.config.media_type))
      return fail(ErrorKind::corrupt, "read image", desc.digest, "config is not an image config");
    std::string ctext = FNEXEC_TRY(read_blob(manifest.config));
    ParsedConfig config = FNEXEC_TRY(parse_config(ctext));
    FNEXEC_TRY(check_config(config, manifest.layers.size()));
    for (size_t i = 0; i < manifest.layers.size(); ++i) {
      const auto& layer = manifest.layers[i];
      std::string path = "blobs/sha256/" + std::string(digest_hex(layer.digest));
      FNEXEC_TRY(import_layer(path, layer.digest, layer.size, config.diff_ids[i]));
    }
    FNEXEC_TRY(keep_blob(desc.digest, mtext));
    FNEXEC_TRY(keep_blob(manifest.config.digest, ctext));
    return std::pair{desc.digest, name};
  }

  Result<std::pair<std::string, std::string>> run_docker() {
    auto mpath = FNEXEC_TRY(src_.file("manifest.json"));
    std::string text = FNEXEC_TRY(read_document(mpath));
    auto images = FNEXEC_TRY(parse_docker_archive_manifest(text));
    const DockerArchiveImage* img = &images.front();
    if (!src_.ref().empty()) {
      img = nullptr;
      for (const auto& i : images)
        for (const auto& t : i.repo_tags)
          if (t == src_.ref() || t == src_.ref() + ":latest") img = &i;
      if (!img) return fail(ErrorKind::not_found, "find image", src_.ref(), "no image in the archive has this tag");
    } else if (images.size() > 1) {
      return fail(ErrorKind::invalid, "choose image", src_.path().string(),
                  std::to_string(images.size()) + " images in the archive: name one as docker-archive:FILE:NAME:TAG");
    }
    std::string ctext = FNEXEC_TRY(read_document(FNEXEC_TRY(src_.file(img->config))));
    std::string config_digest = sha256_of(ctext);
    if (auto named = digest_named_by(img->config); !named.empty() && named != config_digest)
      return fail(ErrorKind::corrupt, "verify config", img->config, "its content has digest " + config_digest);
    ParsedConfig config = FNEXEC_TRY(parse_config(ctext));
    FNEXEC_TRY(check_config(config, img->layers.size()));
    // docker save does not record compressed digests: the manifest is written here from what was read.
    std::string manifest = "{\"schemaVersion\":2,\"mediaType\":" + json_quote(media::oci_manifest) +
                           ",\"config\":{\"mediaType\":" + json_quote(media::oci_config) +
                           ",\"digest\":" + json_quote(config_digest) +
                           ",\"size\":" + std::to_string(ctext.size()) + "},\"layers\":[";
    for (size_t i = 0; i < img->layers.size(); ++i) {
      auto layer = FNEXEC_TRY(import_layer(img->layers[i], digest_named_by(img->layers[i]), -1, config.diff_ids[i]));
      std::string mt = layer.compression == "gzip"   ? std::string(media::oci_layer_gzip)
                       : layer.compression == "zstd" ? std::string(media::oci_layer_zstd)
                                                     : std::string(media::oci_layer);
      if (i) manifest += ',';
      manifest += "{\"mediaType\":" + json_quote(mt) + ",\"digest\":" + json_quote(layer.compressed) +
                  ",\"size\":" + std::to_string(layer.compressed_size) + "}";
    }
    manifest += "]}";
    std::string manifest_digest = sha256_of(manifest);
    FNEXEC_TRY(keep_blob(manifest_digest, manifest));
    FNEXEC_TRY(keep_blob(config_digest, ctext));
    std::string name = img->repo_tags.empty() ? fallback_name("latest") : img->repo_tags.front();
    if (!src_.ref().empty()) name = src_.ref();
    return std::pair{manifest_digest, name};
  }

  static std::string digest_named_by(std::string_view archive_path) {
    // "blobs/sha256/<hex>" or "<hex>.json" name their own digest.
    std::string_view p = archive_path;
    if (p.starts_with("blobs/sha256/")) p.remove_prefix(13);
    if (p.ends_with(".json")) p.remove_suffix(5);
    std::string d = "sha256:" + std::string(p);
    return is_valid_digest(d) ? d : std::string();
  }

  Result<> check_config(const ParsedConfig& config, size_t layers) {
    if (config.diff_ids.size() != layers)
      return fail(ErrorKind::corrupt, "read image config", {},
                  std::to_string(config.diff_ids.size()) + " diff_ids for " + std::to_string(layers) + " layers");
    const Platform& host = host_platform();
    if ((!config.config.os.empty() && config.config.os != host.os) ||
        (!config.config.architecture.empty() && config.config.architecture != host.architecture))
      return fail(ErrorKind::invalid, "import image", {},
                  "it is built for " + config.config.os + "/" + config.config.architecture + ", not " +
                      host.os + "/" + host.architecture + " (this host)");
    return {};
  }

  std::string fallback_name(std::string_view tag) const {
    std::string base = src_.path().filename().string();
    for (std::string_view ext : {".tar", ".oci", ".docker"})
      if (base.ends_with(ext)) base.resize(base.size() - ext.size());
    if (base.empty()) base = "image";
    return base + ":" + std::string(tag);
  }

  std::string default_name(const Descriptor& desc) const {
    if (!src_.ref().empty() && src_.ref().find_first_of(":/") != std::string::npos) return src_.ref();
    if (auto it = desc.annotations.find("io.containerd.image.name"); it != desc.annotations.end()) return it->second;
    auto it = desc.annotations.find("org.opencontainers.image.ref.name");
    if (it != desc.annotations.end() && it->second.find_first_of(":/") != std::string::npos) return it->second;
    return fallback_name(!src_.ref().empty()            ? src_.ref()
                         : it != desc.annotations.end() ? it->second
                                                        : "latest");
  }

  // A small blob (index, manifest, config): size and digest checked against its descriptor.
  Result<std::string> read_blob(const Descriptor& desc) {
    auto p = FNEXEC_TRY(src_.file("blobs/sha256/" + std::string(digest_hex(desc.digest))));
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) return fail_errno("read blob", desc.digest);
    if (st.st_size != desc.size)
      return fail(ErrorKind::corrupt, "verify blob", desc.digest,
                  std::string(st.st_size < desc.size ? "shorter" : "longer") + " than the " +
                      std::to_string(desc.size) + " bytes its descriptor says (" + std::to_string(st.st_size) + ")");
    std::string text = FNEXEC_TRY(read_document(p));
    if (auto actual = sha256_of(text); actual != desc.digest)
      return fail(ErrorKind::corrupt, "verify blob", desc.digest, "its content has digest " + actual);
    return text;
  }

  Result<> keep_blob(const std::string& digest, std::string_view bytes) {
    auto p = work_ / "blobs" / std::string(digest_hex(digest));
    if (path_exists(p)) return {};
    return write_work_file(p, bytes);
  }

  bool have_blob(std::string_view digest) const {
    return !digest.empty() &&
           (path_exists(blob_path(root_, digest)) || path_exists(work_ / "blobs" / std::string(digest_hex(digest))));
  }
  bool have_layer(std::string_view diff_id) const {
    return path_exists(layer_path(root_, diff_id)) || path_exists(work_ / "layers" / std::string(digest_hex(diff_id)));
  }

  // One layer blob: verified (compressed digest and size, uncompressed digest = diff_id), copied or
  // moved into work_/blobs, unpacked into work_/layers unless the store already has the layer.
  // expected_digest may be empty (docker-archive): the blob is then stored under what was read.
  Result<LayerDigests> import_layer(const std::string& archive_path, const std::string& expected_digest,
                                    int64_t expected_size, const std::string& diff_id) {
    if (auto it = done_.find(archive_path); it != done_.end()) return it->second;
    if (have_layer(diff_id) && have_blob(expected_digest)) {
      if (options_.allow_devices)
        if (auto skipped = load_layer_record(root_, diff_id).device_nodes_skipped)
          spdlog::warn(
              "layer {} stays without its {} device nodes: it was unpacked before without --allow-devices "
              "(remove every image using it, run `fnexec image gc`, then import again)",
              diff_id.substr(0, 19), skipped);
      // A docker-archive names no size or compression: the stored blob has both, so the manifest
      // written for it is the same as the first import's.
      auto stored = path_exists(blob_path(root_, expected_digest))
                        ? blob_path(root_, expected_digest)
                        : work_ / "blobs" / std::string(digest_hex(expected_digest));
      UniqueFd blob(::open(stored.c_str(), O_RDONLY | O_CLOEXEC));
      struct stat st;
      if (!blob || ::fstat(blob.get(), &st) != 0) return fail_errno("open stored layer blob", stored.string());
      if (expected_size >= 0 && st.st_size != expected_size)
        return fail(ErrorKind::corrupt, "verify layer blob", expected_digest,
                    "the store has it with " + std::to_string(st.st_size) + " bytes, the descriptor says " +
                        std::to_string(expected_size));
      LayerDigests d;
      d.compressed = expected_digest;
      d.compressed_size = static_cast<uint64_t>(st.st_size);
      d.compression = FNEXEC_TRY(blob_compression(blob.get()));
      done_[archive_path] = d;
      return d;
    }
    auto src_path = FNEXEC_TRY(src_.file(archive_path));
    UniqueFd fd(::open(src_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno("open layer blob", src_path.string());
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return fail_errno("stat layer blob", src_path.string());
    if (expected_size >= 0 && st.st_size != expected_size)
      return fail(ErrorKind::corrupt, "verify layer blob", expected_digest,
                  std::string(st.st_size < expected_size ? "shorter" : "longer") + " than the " +
                      std::to_string(expected_size) + " bytes its descriptor says (" + std::to_string(st.st_size) +
                      ")");
    bool copy = !src_.movable() && !have_blob(expected_digest);
    auto partial = work_ / "blobs" / ("partial-" + std::to_string(done_.size()));
    UniqueFd copy_fd;
    if (copy) {
      copy_fd.reset(::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      if (!copy_fd) return fail_errno("create", partial.string());
    }
    std::optional<std::string> dest;
    auto layer_dir = work_ / "layers" / std::string(digest_hex(diff_id));
    if (!have_layer(diff_id)) {
      if (::mkdir(layer_dir.c_str(), 0700) != 0) return fail_errno("create", layer_dir.string());
      dest = layer_dir.string();
    }
    UnpackOptions uo;
    uo.allow_devices = options_.allow_devices;
    // The tighter of the layer's cap and what the image's cap leaves, named as the one that binds.
    uint64_t image_left = options_.max_image_bytes == 0
                              ? UINT64_MAX
                              : options_.max_image_bytes - std::min(options_.max_image_bytes, unpacked_);
    uint64_t layer_cap = options_.max_layer_bytes == 0 ? UINT64_MAX : options_.max_layer_bytes;
    if (image_left < layer_cap) {
      uo.max_uncompressed_bytes = std::max<uint64_t>(image_left, 1);
      uo.limit_setting = fmt::format("what is left of the image's limit of {} bytes, {}", options_.max_image_bytes,
                                     options_.image_limit_setting);
    } else if (layer_cap != UINT64_MAX) {
      uo.max_uncompressed_bytes = layer_cap;
      uo.limit_setting = options_.layer_limit_setting;
    }
    uo.expected_size = expected_size;
    uo.copy_fd = copy_fd.get();
    std::string label = expected_digest.empty() ? archive_path : expected_digest.substr(0, 19);
    auto started = std::chrono::steady_clock::now();
    int64_t total = expected_size >= 0 ? expected_size : st.st_size;
    if (options_.progress && total >= kProgressThreshold) {
      uo.progress = [label, total, started, finished = false](uint64_t done) mutable {
        if (finished) return;
        finished = done >= static_cast<uint64_t>(total);
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        std::fprintf(stderr, "\r%s  %.1f/%.1f MB  %.1f MB/s%s", label.c_str(), static_cast<double>(done) / 1e6,
                     static_cast<double>(total) / 1e6, secs > 0 ? static_cast<double>(done) / 1e6 / secs : 0.0,
                     finished ? "\n" : "");
        std::fflush(stderr);
      };
    }
    auto digests = unpack_layer(fd.get(), dest, uo);
    if (!digests) {
      // A damaged blob usually fails decompression first; the digest is the clearer diagnosis.
      if (!expected_digest.empty() && digests.error().kind == ErrorKind::corrupt) {
        auto actual = hash_file(fd.get());
        if (actual && *actual != expected_digest)
          return fail(ErrorKind::corrupt, "verify layer blob", expected_digest, "its content has digest " + *actual);
      }
      auto e = digests.error();
      e.context("import layer " + (expected_digest.empty() ? archive_path : expected_digest));
      return std::unexpected(e);
    }
    unpacked_ += digests->uncompressed_size;
    std::string what = expected_digest.empty() ? archive_path : expected_digest;
    if (expected_size >= 0 && digests->compressed_size != static_cast<uint64_t>(expected_size))
      return fail(ErrorKind::corrupt, "verify layer blob", what,
                  "shorter than the " + std::to_string(expected_size) + " bytes its descriptor says (" +
                      std::to_string(digests->compressed_size) + ")");
    if (!expected_digest.empty() && digests->compressed != expected_digest)
      return fail(ErrorKind::corrupt, "verify layer blob", what, "its content has digest " + digests->compressed);
    if (digests->uncompressed != diff_id)
      return fail(ErrorKind::corrupt, "verify layer", what,
                  "its uncompressed tar has digest " + digests->uncompressed + " but the config says " + diff_id);
    if (dest) FNEXEC_TRY(write_work_file(layer_info_path(work_, diff_id), layer_record_json(*digests)));
    auto final_blob = work_ / "blobs" / std::string(digest_hex(digests->compressed));
    if (!have_blob(digests->compressed)) {
      auto from = copy ? partial : src_path;
      if (::rename(from.c_str(), final_blob.c_str()) != 0) return fail_errno("keep blob", final_blob.string());
    } else if (copy) {
      ::unlink(partial.c_str());
    }
    done_[archive_path] = *digests;
    return *digests;
  }

  const fsys::path& root_;
  const fsys::path& work_;
  const ImageSource& src_;
  const ImportOptions& options_;
  std::map<std::string, LayerDigests> done_;
  uint64_t unpacked_ = 0;  // tar bytes of the layers unpacked so far, for max_image_bytes
};

// Renames every entry of from/ into to/ unless to/ has it already (then ours is dropped with the
// temp dir); a directory that exists is identical by its digest.
Result<> move_all(const fsys::path& from, const fsys::path& to) {
  std::error_code ec;
  for (const auto& entry : fsys::directory_iterator(from, ec)) {
    auto target = to / entry.path().filename();
    if (path_exists(target)) continue;
    if (::rename(entry.path().c_str(), target.c_str()) != 0 && errno != EEXIST && errno != ENOTEMPTY)
      return fail_errno("move into store", target.string());
  }
  if (ec) return fail(ErrorKind::internal, "list", from.string(), ec.message());
  return {};
}

uint64_t tree_bytes(const fsys::path& p) {
  uint64_t total = 0;
  std::error_code ec;
  struct stat st;
  if (::lstat(p.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  for (auto it = fsys::recursive_directory_iterator(p, ec); !ec && it != fsys::recursive_directory_iterator();
       it.increment(ec))
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) total += static_cast<uint64_t>(st.st_size);
  return total;
}

Result<> clear_dir(const fsys::path& dir) {
  std::error_code ec;
  for (const auto& entry : fsys::directory_iterator(dir, ec)) {
    fsys::remove_all(entry.path(), ec);
    if (ec) return fail(ErrorKind::internal, "remove", entry.path().string(), ec.message());
  }
  return {};
}

// Moves a work directory's verified blobs, layer records and layers into the store.
// syncfs of the store's file system through sync_fd; a write the kernel could not complete (EIO,
// ENOSPC at writeback) since sync_fd was opened fails it, so nothing unwritten enters the store.
Result<> sync_store(int sync_fd, const fsys::path& root) {
  if (::syncfs(sync_fd) != 0) return fail_errno("sync the store's file system (a write to disk failed)", root.string());
  return {};
}

Result<> commit_work(const fsys::path& root, const fsys::path& work, int sync_fd) {
  // Unpacked files are written without fsync; one syncfs before the renames makes "renamed into
  // place" imply "complete on disk".
  FNEXEC_TRY(sync_store(sync_fd, root));
  FNEXEC_TRY(move_all(work / "blobs", root / "blobs" / "sha256"));
  // Records first: a layer is never visible without the record of what unpacking it left out.
  FNEXEC_TRY(move_all(work / "layer-info", root / "layer-info"));
  return move_all(work / "layers", root / "layers" / "sha256");
}

// An import's or pull's hold on the store: the lock, and a fresh work directory under tmp/ with the
// subdirectories commit_work() moves from. Members go in reverse: the directory before the lock.
struct StoreWork {
  StoreLock lock;
  fs::TempDir dir;
  UniqueFd sync_fd;  // the store's root, opened as the work starts: its syncfs reports every write error since
};

Result<StoreWork> begin_work(const fsys::path& root, std::string_view prefix, const char* staging) {
  auto lock = FNEXEC_TRY(StoreLock::acquire(root));
  // Nobody else holds the lock, so anything in tmp/ is left over from a crashed import or pull.
  FNEXEC_TRY(clear_dir(root / "tmp"));
  auto dir = FNEXEC_TRY(fs::TempDir::make(root / "tmp", prefix));
  for (auto sub : {staging, "blobs", "layers", "layer-info"})
    if (::mkdir((dir.path() / sub).c_str(), 0700) != 0) return fail_errno("create", sub);
  UniqueFd sync_fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!sync_fd) return fail_errno("open", root.string());
  return StoreWork{std::move(lock), std::move(dir), std::move(sync_fd)};
}

// Commits the work directory and points the reference NAME:TAG at the image; returns the reference.
Result<std::string> commit_and_name(const fsys::path& root, const fsys::path& work, int sync_fd,
                                    const std::pair<std::string, std::string>& name, const std::string& digest) {
  FNEXEC_TRY(commit_work(root, work, sync_fd));
  auto refs = FNEXEC_TRY(load_refs(root));
  std::string full = name.first + ":" + name.second;
  refs[full] = digest;
  FNEXEC_TRY(save_refs(root, refs));
  return full;
}

// ---------------------------------------------------------------------------------------------
// Pulling from a registry: the documents come through RemoteSource; each layer's bytes are hashed
// and kept on its fetching thread as they arrive, then inflated and unpacked by unpack_layer (on two
// more threads) in the same pass.

constexpr std::string_view kSchema1 = "application/vnd.docker.distribution.manifest.v1";

void keep_verified(const fsys::path& root, const fsys::path& work,
                   const std::vector<std::pair<std::string, std::string>>& verified);

class Puller {
 public:
  Puller(const fsys::path& root, const fsys::path& work, int sync_fd, RemoteSource& src, const PullOptions& options)
      : root_(root), work_(work), sync_fd_(sync_fd), src_(src), options_(options) {}

  // Verifies and unpacks everything into work_; returns the manifest digest.
  Result<std::string> run() {
    RemoteDocument top = FNEXEC_TRY(src_.manifest(options_.reference, kMaxDocument));
    std::string top_digest = sha256_of(top.bytes);
    if (is_valid_digest(options_.reference) && top_digest != options_.reference)
      return fail(ErrorKind::corrupt, "verify manifest", options_.reference,
                  "the registry sent a document with digest " + top_digest + ": it is not the one asked for");
    std::string media_type = FNEXEC_TRY(document_media_type(top));
    Descriptor desc{media_type, top_digest, static_cast<int64_t>(top.bytes.size()), {}, {}};
    std::string mtext = std::move(top.bytes);
    if (is_index_media_type(media_type)) {
      Index index = FNEXEC_TRY(parse_index(mtext));
      desc = FNEXEC_TRY(pick_manifest(index, {}, options_.platform));
      if (!is_manifest_media_type(desc.media_type))
        return fail(ErrorKind::corrupt, "read image index", top_digest,
                    "the entry for " + to_string(options_.platform) + " is a " + desc.media_type + ", not an image manifest");
      if (desc.size > kMaxDocument)
        return fail(ErrorKind::corrupt, "read manifest", desc.digest,
                    "its descriptor says " + std::to_string(desc.size) + " bytes; manifests are limited to " +
                        std::to_string(kMaxDocument));
      RemoteDocument child = FNEXEC_TRY(src_.manifest(desc.digest, kMaxDocument));
      FNEXEC_TRY(verify_bytes(desc, child.bytes, "manifest"));
      FNEXEC_TRY(keep_blob(top_digest, mtext));  // the index, so a later pull by its digest finds it
      mtext = std::move(child.bytes);
    } else if (!is_manifest_media_type(media_type)) {
      return fail(ErrorKind::invalid, "read manifest", src_.describe(),
                  "media type " + media_type + " is neither an image manifest nor an index");
    }
    spdlog::debug("pull {}: manifest at {} ms", src_.describe(), elapsed_ms());
    Manifest manifest = FNEXEC_TRY(parse_manifest(mtext, desc.media_type));
    if (!is_config_media_type(manifest.config.media_type))
      return fail(ErrorKind::corrupt, "read image", desc.digest,
                  "config media type " + manifest.config.media_type + " is not an image config (not a container image?)");
    if (manifest.config.size > kMaxDocument)
      return fail(ErrorKind::corrupt, "read image config", manifest.config.digest, "larger than " + std::to_string(kMaxDocument) + " bytes");
    std::string ctext = FNEXEC_TRY(fetch_small(manifest.config));
    ParsedConfig config = FNEXEC_TRY(parse_config(ctext));
    if (config.diff_ids.size() != manifest.layers.size())
      return fail(ErrorKind::corrupt, "read image config", manifest.config.digest,
                  std::to_string(config.diff_ids.size()) + " diff_ids for " + std::to_string(manifest.layers.size()) + " layers");
    const auto& want = options_.platform;
    if ((!config.config.os.empty() && config.config.os != want.os) ||
        (!config.config.architecture.empty() && config.config.architecture != want.architecture))
      return fail(ErrorKind::invalid, "pull image", src_.describe(),
                  "it is built for " + config.config.os + "/" + config.config.architecture + ", not " +
                      want.os + "/" + want.architecture + " (pass --platform to choose another image of an index)");
    for (const auto& l : manifest.layers)
      if (!is_layer_media_type(l.media_type))
        return fail(ErrorKind::invalid, "pull image", src_.describe(),
                    "layer " + l.digest + " has media type " + l.media_type + ", not an image layer");
    spdlog::debug("pull {}: config at {} ms", src_.describe(), elapsed_ms());
    FNEXEC_TRY(fetch_layers(manifest.layers, config.diff_ids));
    spdlog::debug("pull {}: all {} layers at {} ms", src_.describe(), manifest.layers.size(), elapsed_ms());
    FNEXEC_TRY(keep_blob(desc.digest, mtext));
    FNEXEC_TRY(keep_blob(manifest.config.digest, ctext));
    return desc.digest;
  }

  const PullResult& result() const { return result_; }

  // Milliseconds since the pull started, for the debug log's per-phase timestamps (FNEXEC_LOG=debug).
  int64_t elapsed_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count();
  }

  // After a failure: the layers that were completely verified, so the caller can keep them.
  const std::vector<std::pair<std::string, std::string>>& verified_layers() const { return verified_; }

 private:
  Result<std::string> document_media_type(const RemoteDocument& doc) {
    std::string mt = doc.media_type.substr(0, doc.media_type.find(';'));
    // The document's own mediaType wins over a generic Content-Type.
    simdjson::dom::parser parser;
    simdjson::padded_string padded(doc.bytes);
    simdjson::dom::object obj;
    if (parser.parse(padded).get_object().get(obj))
      return fail(ErrorKind::corrupt, "read manifest", src_.describe(), "not a JSON object");
    int64_t schema = 0;
    std::string_view own;
    if (!obj["mediaType"].get_string().get(own)) mt = std::string(own);
    if ((!obj["schemaVersion"].get_int64().get(schema) && schema == 1) || mt.starts_with(kSchema1))
      return fail(ErrorKind::invalid, "pull image", src_.describe(),
                  "the registry has it only as a Docker schema 1 manifest, which fnexec does not read "
                  "(deprecated since 2017): push it again with a current docker, podman or skopeo");
    if (mt.empty() || mt == "application/json") {
      // An OCI document may omit mediaType: an index has "manifests", an image manifest "config".
      mt = obj["manifests"].error() ? std::string(media::oci_manifest) : std::string(media::oci_index);
    }
    return mt;
  }

  Result<> verify_bytes(const Descriptor& d, std::string_view bytes, std::string_view what) {
    if (static_cast<int64_t>(bytes.size()) != d.size)
      return fail(ErrorKind::corrupt, "verify " + std::string(what), d.digest,
                  "the registry sent " + std::to_string(bytes.size()) + " bytes, the descriptor says " +
                      std::to_string(d.size));
    if (auto actual = sha256_of(bytes); actual != d.digest)
      return fail(ErrorKind::corrupt, "verify " + std::string(what), d.digest,
                  "the registry sent content with digest " + actual + " (a broken registry or proxy): nothing was stored");
    return {};
  }

  // A config blob: streamed into memory, then verified.
  Result<std::string> fetch_small(const Descriptor& d) {
    if (path_exists(blob_path(root_, d.digest))) return read_document(blob_path(root_, d.digest));
    std::atomic<bool> cancel = false;
    std::string out;
    auto streamed = src_.stream_blob(d, [&](std::span<const char> bytes) {
      out.append(bytes.data(), bytes.size());
      return static_cast<int64_t>(out.size()) <= d.size;
    }, cancel);
    if (static_cast<int64_t>(out.size()) <= d.size && !streamed) return std::unexpected(streamed.error());
    FNEXEC_TRY(verify_bytes(d, out, "image config"));
    return out;
  }

  Result<> keep_blob(const std::string& digest, std::string_view bytes) {
    auto p = work_ / "blobs" / std::string(digest_hex(digest));
    if (path_exists(p) || path_exists(blob_path(root_, digest))) return {};
    return write_work_file(p, bytes);
  }

  void report(const PullProgress& p) {
    if (!options_.progress) return;
    std::lock_guard lock(progress_mutex_);
    options_.progress(p);
  }

  Result<> fetch_layers(const std::vector<Descriptor>& layers, const std::vector<std::string>& diff_ids) {
    std::vector<Result<>> results(layers.size());
    // Largest first, so the longest layer starts at once and the small ones fill in around it
    // (in manifest order a 53 MB layer waited ~1 s behind a 1 MB one in bench/pull.sh).
    std::vector<size_t> order(layers.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return layers[a].size > layers[b].size; });
    std::atomic<size_t> next = 0;
    std::atomic<bool> cancel = false;
    std::thread flusher([this] { make_durable(); });
    auto worker = [&] {
      for (size_t k; (k = next++) < layers.size();) {
        size_t i = order[k];
        if (cancel) {
          results[i] = fail(ErrorKind::internal, "pull layer", layers[i].digest, "cancelled");
          continue;
        }
        results[i] = fetch_layer(i, layers, diff_ids[i], cancel);
        if (!results[i]) cancel = true;
      }
    };
    // The same diff_id twice in one image is fetched once: the first worker to reach it unpacks it.
    std::vector<std::thread> threads;
    size_t n = std::min(std::max<size_t>(options_.parallel_layers, 1), layers.size());
    for (size_t t = 1; t < n; ++t) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    {
      std::lock_guard lock(durable_mutex_);
      fetching_done_ = true;
    }
    durable_cv_.notify_one();
    flusher.join();
    // The first layer's error is the one the user sees: later ones are usually "cancelled".
    for (auto& r : results)
      if (!r && r.error().detail != "cancelled") return r;
    for (auto& r : results)
      if (!r) return r;
    if (durable_error_) return std::unexpected(*durable_error_);
    return {};
  }

  Result<> fetch_layer(size_t i, const std::vector<Descriptor>& layers, const std::string& diff_id,
                       const std::atomic<bool>& cancel) {
    const Descriptor& d = layers[i];
    PullProgress p{i, layers.size(), d.digest, 0, static_cast<uint64_t>(d.size), PullProgress::waiting};
    {
      std::lock_guard lock(claim_mutex_);
      bool stored = path_exists(layer_path(root_, diff_id)) && path_exists(blob_path(root_, d.digest));
      if (stored || !claimed_.insert(diff_id).second) {
        p.state = PullProgress::reused;
        p.done = p.total;
        report(p);
        std::lock_guard r(progress_mutex_);
        ++result_.layers_reused;
        return {};
      }
    }
    if (d.size > kMaxLayer)
      return fail(ErrorKind::invalid, "pull layer", d.digest,
                  "its descriptor says " + std::to_string(d.size) + " bytes, more than the " +
                      std::to_string(kMaxLayer >> 30) + " GiB a layer may have");
    p.state = PullProgress::fetching;
    report(p);
    const int64_t began = elapsed_ms();
    auto partial = work_ / "partial" / std::string(digest_hex(d.digest));
    UniqueFd copy(::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!copy) return fail_errno("create", partial.string());
    auto layer_dir = work_ / "layers" / std::string(digest_hex(diff_id));
    bool unpack = !path_exists(layer_path(root_, diff_id));
    if (unpack && ::mkdir(layer_dir.c_str(), 0700) != 0) return fail_errno("create", layer_dir.string());
    // The fetching thread hashes and keeps the compressed bytes as they arrive and hands them on in
    // full blocks; unpack_layer inflates them on a thread of its own and writes files on this one.
    BlockPipe blob;
    Sha256 blob_hash;
    std::optional<Error> keep_error;
    Result<> streamed;
    std::thread fetcher([&] {
      std::span<unsigned char> block;
      size_t filled = 0;
      fs::SequentialWriteback writeback(copy.get());  // as unpack_layer does for the layer's files
      auto hand_on = [&] {
        for (size_t done = 0; done < filled;) {
          ssize_t w = ::write(copy.get(), block.data() + done, filled - done);
          if (w < 0 && errno == EINTR) continue;
          if (w < 0) {
            keep_error = fail_errno("write blob", partial.string()).error();
            return false;
          }
          done += static_cast<size_t>(w);
        }
        writeback.wrote(filled);
        blob.publish(filled);
        block = {};
        filled = 0;
        return true;
      };
      streamed = src_.stream_blob(d, [&](std::span<const char> bytes) {
        blob_hash.update(bytes.data(), bytes.size());
        while (!bytes.empty()) {
          if (block.empty() && (block = blob.acquire()).empty()) return false;  // the unpacker stopped
          size_t n = std::min(bytes.size(), block.size() - filled);
          std::memcpy(block.data() + filled, bytes.data(), n);
          filled += n;
          bytes = bytes.subspan(n);
          if (filled == block.size() && !hand_on()) return false;
        }
        return true;
      }, cancel);
      if (filled && !hand_on()) streamed = fail(ErrorKind::internal, "get blob", d.digest, "cancelled");
      writeback.finish();
      blob.close();
    });
    UnpackOptions uo;
    uo.allow_devices = options_.allow_devices;
    uo.expected_size = d.size;
    uo.progress = [&](uint64_t done) {
      p.done = done;
      report(p);
    };
    auto digests = unpack_layer(blob, unpack ? std::optional<std::string_view>(layer_dir.string()) : std::nullopt, uo);
    fetcher.join();
    if (digests) digests->compressed = blob_hash.finish();
    auto failed = [&](Error e) -> Result<> {
      p.state = PullProgress::failed;
      report(p);
      e.context("pull layer " + d.digest);
      return std::unexpected(std::move(e));
    };
    if (keep_error) return failed(*keep_error);  // disk full: not the registry's fault
    // A transfer error explains a short or broken stream better than the unpacker's complaint,
    // but a fetcher stopped only because the unpacker refused the layer (its reader went away) is none.
    bool reader_gone = !streamed && !cancel && streamed.error().detail == "cancelled";
    if (!streamed && !reader_gone && (!digests || digests->compressed_size < static_cast<uint64_t>(d.size)))
      return failed(streamed.error());
    if (!digests) return failed(digests.error());
    if (digests->compressed_size != static_cast<uint64_t>(d.size))
      return failed(Error{ErrorKind::corrupt, 0, "verify layer blob", d.digest,
                          "the registry sent " + std::to_string(digests->compressed_size) +
                              " bytes, the descriptor says " + std::to_string(d.size)});
    if (digests->compressed != d.digest)
      return failed(Error{ErrorKind::corrupt, 0, "verify layer blob", d.digest,
                          "the registry sent content with digest " + digests->compressed +
                              " (a broken registry or proxy): nothing was stored"});
    if (digests->uncompressed != diff_id)
      return failed(Error{ErrorKind::corrupt, 0, "verify layer", d.digest,
                          "its uncompressed tar has digest " + digests->uncompressed + " but the config says " + diff_id});
    const int64_t unpacked = elapsed_ms();
    if (unpack) FNEXEC_TRY(write_work_file(layer_info_path(work_, diff_id), layer_record_json(*digests)));
    auto final_blob = work_ / "blobs" / std::string(digest_hex(d.digest));
    if (::rename(partial.c_str(), final_blob.c_str()) != 0) return fail_errno("keep blob", final_blob.string());
    p.state = PullProgress::done_ok;
    p.done = p.total;
    report(p);
    std::lock_guard lock(progress_mutex_);
    ++result_.layers_fetched;
    result_.bytes_fetched += static_cast<uint64_t>(d.size);
    spdlog::debug("pull layer {} ({} of {}): {} bytes -> {} unpacked, fetched+verified+unpacked {}..{} ms",
                  d.digest, i + 1, layers.size(), d.size, digests->uncompressed_size, began, unpacked);
    {
      std::lock_guard durable(durable_mutex_);
      to_make_durable_.emplace_back(d.digest, unpack ? diff_id : std::string());
    }
    durable_cv_.notify_one();
    return {};
  }

  // The flusher thread: moves verified layers into the store as soon as they are on disk (we hold
  // its lock), so a pull killed later (SIGKILL: no cleanup runs) still leaves them for the next
  // pull; unnamed, they are gc's until an image names them. One syncfs covers every layer verified
  // while the previous one ran, and the fetching threads never wait for it.
  void make_durable() {
    std::unique_lock lock(durable_mutex_);
    for (;;) {
      durable_cv_.wait(lock, [&] { return fetching_done_ || !to_make_durable_.empty(); });
      if (to_make_durable_.empty()) return;
      auto batch = std::exchange(to_make_durable_, {});
      lock.unlock();
      // syncfs first, as commit_work: in the store means complete on disk. A batch it could not
      // write stays in the work directory and goes with it.
      auto synced = sync_store(sync_fd_, root_);
      if (synced) {
        keep_verified(root_, work_, batch);
        spdlog::debug("pull: {} layer(s) durable and in the store at {} ms", batch.size(), elapsed_ms());
      }
      lock.lock();
      if (!synced) {
        if (!durable_error_) durable_error_ = synced.error();
        continue;
      }
      verified_.insert(verified_.end(), batch.begin(), batch.end());
    }
  }

  static constexpr int64_t kMaxLayer = int64_t{16} << 30;

  const fsys::path& root_;
  const fsys::path& work_;
  int sync_fd_;
  RemoteSource& src_;
  const PullOptions& options_;
  std::mutex claim_mutex_, progress_mutex_;
  std::set<std::string> claimed_;
  PullResult result_;
  std::vector<std::pair<std::string, std::string>> verified_;  // (blob digest, diff_id unpacked or "")
  std::mutex durable_mutex_;  // guards the three below and verified_ while the flusher runs
  std::condition_variable durable_cv_;
  std::vector<std::pair<std::string, std::string>> to_make_durable_;  // verified, not yet synced
  bool fetching_done_ = false;
  std::optional<Error> durable_error_;  // the first syncfs that failed
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

// After a failed pull: keeps what was completely verified, drops the rest with the work directory.
void keep_verified(const fsys::path& root, const fsys::path& work,
                   const std::vector<std::pair<std::string, std::string>>& verified) {
  auto keep = [](const fsys::path& from, const fsys::path& to) {
    if (!path_exists(to)) (void)::rename(from.c_str(), to.c_str());
  };
  for (const auto& [digest, diff_id] : verified) {
    if (!diff_id.empty()) {
      keep(layer_info_path(work, diff_id), layer_info_path(root, diff_id));
      keep(work / "layers" / std::string(digest_hex(diff_id)), layer_path(root, diff_id));
    }
    keep(work / "blobs" / std::string(digest_hex(digest)), blob_path(root, digest));
  }
}

}  // namespace

Result<Store> Store::open(fsys::path root) {
  std::error_code ec;
  root = fsys::absolute(root, ec);
  for (auto sub : {"blobs/sha256", "layers/sha256", "layer-info", "tmp"}) {
    fsys::create_directories(root / sub, ec);
    if (ec)
      return fail(ErrorKind::internal, "create store directory", (root / sub).string(),
                  ec.message() + " (choose another --root or run as root)");
  }
  return Store(root);
}

Result<ResolvedImage> Store::import(std::string_view source, const ImportOptions& options) {
  auto context = [&](Error e) {
    e.context("import " + std::string(source));
    return std::unexpected(std::move(e));
  };
  // Sha256 cannot return an error: a missing libcrypto is reported here, before any digest.
  if (auto crypto = util::load_libcrypto(); !crypto) return context(crypto.error());
  std::optional<std::pair<std::string, std::string>> name;
  if (options.name) {
    auto parsed = parse_reference(*options.name);
    if (!parsed) return context(parsed.error());
    name = *parsed;
  }
  auto work = begin_work(root_, "import-", "stage");
  if (!work) return context(work.error());
  auto src = ImageSource::open(source, work->dir.path() / "stage");
  if (!src) return context(src.error());
  Importer importer(root_, work->dir.path(), *src, options);
  auto imported = importer.run();
  if (!imported) return context(imported.error());
  auto [digest, default_name] = *imported;
  if (!name) {
    auto parsed = parse_reference(default_name);
    if (!parsed) return context(parsed.error());
    name = *parsed;
  }

  auto full = commit_and_name(root_, work->dir.path(), work->sync_fd.get(), *name, digest);
  if (!full) return context(full.error());
  auto resolved = resolve(digest);
  if (!resolved) return resolved;
  resolved->reference = *full;
  if (auto config = load_image(root_, digest)) {
    uint64_t skipped = 0;
    for (const auto& id : config->config.diff_ids) skipped += load_layer_record(root_, id).device_nodes_skipped;
    if (skipped)
      spdlog::warn("image {}: skipped {} device node{} in its layers (the sandbox has its own /dev; "
                   "import with --allow-devices to keep them)",
                   *full, skipped, skipped == 1 ? "" : "s");
  }
  return resolved;
}

namespace {

// ref -> (manifest digest, the name:tag it was found by, or the digest)
Result<std::pair<std::string, std::string>> lookup(const fsys::path& root, std::string_view ref) {
  auto refs = FNEXEC_TRY(load_refs(root));
  if (is_valid_digest(ref)) return std::pair{std::string(ref), std::string(ref)};
  std::string_view hex = ref.starts_with("sha256:") ? ref.substr(7) : ref;
  bool is_hex = hex.size() >= 4 && hex.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  if (!ref.starts_with("sha256:")) {
    auto parsed = parse_reference(ref);
    if (parsed) {
      auto it = refs.find(parsed->first + ":" + parsed->second);
      if (it != refs.end()) return std::pair{it->second, it->first};
    } else if (!is_hex) {
      return std::unexpected(parsed.error());
    }
  }
  if (is_hex) {
    std::set<std::string> matches;
    for (const auto& [n, d] : refs)
      if (digest_hex(d).starts_with(hex)) matches.insert(d);
    if (matches.size() == 1) return std::pair{*matches.begin(), *matches.begin()};
    if (matches.size() > 1)
      return fail(ErrorKind::invalid, "resolve image", std::string(ref), "prefix matches several images");
  }
  return fail(ErrorKind::not_found, "find image", std::string(ref), "no such image: see `fnexec image ls`");
}

}  // namespace

Result<ResolvedImage> Store::resolve(std::string_view ref) const {
  auto [digest, reference] = FNEXEC_TRY(lookup(root_, ref));
  auto img = FNEXEC_TRY(load_image(root_, digest));
  ResolvedImage out;
  out.manifest_digest = digest;
  out.reference = reference;
  out.config = std::move(img.config.config);
  for (const auto& diff_id : img.config.diff_ids) {
    auto p = layer_path(root_, diff_id);
    struct stat st;
    if (::stat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return fail(ErrorKind::corrupt, "resolve image", std::string(ref),
                  "layer " + diff_id + " is missing from the store: import the image again");
    out.layers.push_back(p);
  }
  return out;
}

Result<std::vector<ImageSummary>> Store::list() const {
  auto refs = FNEXEC_TRY(load_refs(root_));
  std::vector<ImageSummary> out;
  for (const auto& [full, digest] : refs) {
    auto [name, tag] = FNEXEC_TRY(parse_reference(full));
    ImageSummary s{name, tag, digest, 0, {}};
    if (auto img = load_image(root_, digest)) {
      s.size = img->manifest.config.size;
      for (const auto& l : img->manifest.layers) s.size += l.size;
      s.created = img->config.config.created;
    }
    out.push_back(std::move(s));
  }
  return out;
}

Result<ImageDetails> Store::inspect(std::string_view ref) const {
  ImageDetails d;
  d.image = FNEXEC_TRY(resolve(ref));
  auto img = FNEXEC_TRY(load_image(root_, d.image.manifest_digest));
  d.config_digest = img.config_digest;
  d.config_size = img.manifest.config.size;
  for (size_t i = 0; i < img.manifest.layers.size(); ++i) {
    const auto& l = img.manifest.layers[i];
    auto record = load_layer_record(root_, img.config.diff_ids[i]);
    d.layers.push_back({l.digest, img.config.diff_ids[i], l.media_type, l.size, d.image.layers[i],
                        record.device_nodes, record.device_nodes_skipped});
  }
  for (const auto& [full, digest] : FNEXEC_TRY(load_refs(root_)))
    if (digest == d.image.manifest_digest) d.names.push_back(full);
  return d;
}

Result<std::vector<std::string>> Store::remove(std::string_view ref) {
  auto lock = FNEXEC_TRY(StoreLock::acquire(root_));
  auto [digest, found_by] = FNEXEC_TRY(lookup(root_, ref));
  auto refs = FNEXEC_TRY(load_refs(root_));
  std::vector<std::string> removed;
  if (found_by == digest) {
    for (auto it = refs.begin(); it != refs.end();) {
      if (it->second == digest) {
        removed.push_back(it->first);
        it = refs.erase(it);
      } else {
        ++it;
      }
    }
  } else {
    refs.erase(found_by);
    removed.push_back(found_by);
  }
  if (removed.empty()) return fail(ErrorKind::not_found, "remove image", std::string(ref), "no name points at it");
  std::vector<std::string> holders;
  for (const auto& [holder, pin] : FNEXEC_TRY(load_pins(root_)))
    if (std::find(removed.begin(), removed.end(), pin.first) != removed.end()) holders.push_back(holder);
  if (!holders.empty()) {
    std::string list;
    for (const auto& h : holders) list += (list.empty() ? "" : ", ") + h;
    return fail(ErrorKind::exists, "remove image", std::string(ref),
                "in use by " + list + ": delete the function or point it at another image first");
  }
  FNEXEC_TRY(save_refs(root_, refs));
  return removed;
}

Result<GcReport> Store::gc() {
  auto lock = FNEXEC_TRY(StoreLock::acquire(root_));
  FNEXEC_TRY(clear_dir(root_ / "tmp"));
  std::set<std::string> blobs, layers;  // hex names to keep
  std::set<std::string> live;           // manifest digests: named or pinned
  for (const auto& [name, digest] : FNEXEC_TRY(load_refs(root_))) live.insert(digest);
  for (const auto& [holder, pin] : FNEXEC_TRY(load_pins(root_))) live.insert(pin.second);
  for (const auto& digest : live) {
    blobs.insert(std::string(digest_hex(digest)));
    auto img = load_image(root_, digest);
    if (!img) continue;  // an unreadable image keeps its manifest; the rest of it is lost anyway
    blobs.insert(std::string(digest_hex(img->config_digest)));
    for (const auto& l : img->manifest.layers) blobs.insert(std::string(digest_hex(l.digest)));
    for (const auto& id : img->config.diff_ids) layers.insert(std::string(digest_hex(id)));
  }
  GcReport report;
  auto sweep = [&](const fsys::path& dir, const std::set<std::string>& keep, size_t& count,
                   std::string_view suffix = {}) -> Result<> {
    std::error_code ec;
    for (const auto& entry : fsys::directory_iterator(dir, ec)) {
      std::string name = entry.path().filename().string();
      if (name.ends_with(suffix) && keep.contains(name.substr(0, name.size() - suffix.size()))) continue;
      report.bytes_freed += tree_bytes(entry.path());
      fsys::remove_all(entry.path(), ec);
      if (ec) return fail(ErrorKind::internal, "remove", entry.path().string(), ec.message());
      ++count;
    }
    if (ec) return fail(ErrorKind::internal, "list", dir.string(), ec.message());
    return {};
  };
  FNEXEC_TRY(sweep(root_ / "blobs" / "sha256", blobs, report.blobs_removed));
  FNEXEC_TRY(sweep(root_ / "layers" / "sha256", layers, report.layers_removed));
  size_t records_removed = 0;
  FNEXEC_TRY(sweep(root_ / "layer-info", layers, records_removed, ".json"));
  return report;
}

Result<ResolvedImage> Store::pin(std::string_view holder, std::string_view ref) {
  auto lock = FNEXEC_TRY(StoreLock::acquire(root_));
  auto img = FNEXEC_TRY(resolve(ref));
  auto pins = FNEXEC_TRY(load_pins(root_));
  auto& pin = pins[std::string(holder)];
  if (pin != std::pair{img.reference, img.manifest_digest}) {
    pin = {img.reference, img.manifest_digest};
    FNEXEC_TRY(save_pins(root_, pins));
  }
  return img;
}

Result<> Store::repin(const Pin& pin) {
  auto lock = FNEXEC_TRY(StoreLock::acquire(root_));
  auto pins = FNEXEC_TRY(load_pins(root_));
  pins[pin.holder] = {pin.reference, pin.digest};
  return save_pins(root_, pins);
}

Result<> Store::unpin(std::string_view holder) {
  auto lock = FNEXEC_TRY(StoreLock::acquire(root_));
  auto pins = FNEXEC_TRY(load_pins(root_));
  if (pins.erase(std::string(holder)) == 0) return {};
  return save_pins(root_, pins);
}

Result<std::vector<Pin>> Store::pins() const {
  std::vector<Pin> out;
  for (auto& [holder, pin] : FNEXEC_TRY(load_pins(root_))) out.push_back({holder, pin.first, pin.second});
  return out;
}

Result<ResolvedImage> Store::pull(RemoteSource& source, const PullOptions& options, PullResult* result) {
  auto context = [&](Error e) {
    e.context("pull " + source.describe());
    return std::unexpected(std::move(e));
  };
  if (auto crypto = util::load_libcrypto(); !crypto) return context(crypto.error());
  auto name = parse_reference(options.name ? *options.name : options.default_name);
  if (!name) return context(name.error());
  auto work = begin_work(root_, "pull-", "partial");
  if (!work) return context(work.error());
  Puller puller(root_, work->dir.path(), work->sync_fd.get(), source, options);
  auto pulled = puller.run();
  if (result) *result = puller.result();
  if (!pulled) {
    keep_verified(root_, work->dir.path(), puller.verified_layers());
    return context(pulled.error());
  }
  auto full = commit_and_name(root_, work->dir.path(), work->sync_fd.get(), *name, *pulled);
  if (!full) return context(full.error());
  spdlog::debug("pull {}: committed and named at {} ms", source.describe(), puller.elapsed_ms());
  auto resolved = resolve(*pulled);
  if (resolved) resolved->reference = *full;
  return resolved;
}

bool is_importable_source(std::string_view ref) {
  if (ref.starts_with("oci:") || ref.starts_with("oci-archive:") || ref.starts_with("docker-archive:")) return true;
  struct stat st;
  return !ref.empty() && ::stat(std::string(ref).c_str(), &st) == 0;
}

}  // namespace fnexec::image
