#include "image/oci.h"

#include <simdjson.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>

namespace fnexec::image {

namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

// Documents are small; anything bigger is hostile or not an image document.
constexpr size_t kMaxDocument = 4 << 20;

Error doc_error(std::string_view doc, std::string detail) {
  return Error{ErrorKind::corrupt, 0, "parse", std::string(doc), std::move(detail)};
}

// Holds the parser so elements stay valid while a document is being read.
struct Doc {
  simdjson::dom::parser parser;
  object root;
};

Result<> load(Doc& d, std::string_view json, std::string_view what) {
  if (json.size() > kMaxDocument) return std::unexpected(doc_error(what, "larger than 4 MiB"));
  simdjson::padded_string padded(json);
  element root;
  if (auto err = d.parser.parse(padded).get(root); err)
    return std::unexpected(doc_error(what, std::string("not valid JSON: ") + simdjson::error_message(err)));
  if (root.get_object().get(d.root)) return std::unexpected(doc_error(what, "not a JSON object"));
  return {};
}

// A string member: nullopt when absent or null, an error when of another type.
Result<std::optional<std::string>> opt_string(object o, std::string_view key, std::string_view what) {
  element e;
  if (o[key].get(e)) return std::nullopt;
  if (e.is_null()) return std::nullopt;
  std::string_view s;
  if (e.get_string().get(s)) return std::unexpected(doc_error(what, "\"" + std::string(key) + "\" is not a string"));
  return std::string(s);
}

Result<std::vector<std::string>> opt_string_array(object o, std::string_view key, std::string_view what) {
  std::vector<std::string> out;
  element e;
  if (o[key].get(e) || e.is_null()) return out;
  array a;
  if (e.get_array().get(a))
    return std::unexpected(doc_error(what, "\"" + std::string(key) + "\" is not an array"));
  for (element item : a) {
    std::string_view s;
    if (item.get_string().get(s))
      return std::unexpected(doc_error(what, "\"" + std::string(key) + "\" holds a non-string"));
    out.emplace_back(s);
  }
  return out;
}

Result<> check_schema_version(object o, std::string_view what) {
  int64_t v = 0;
  if (o["schemaVersion"].get_int64().get(v) || v != 2)
    return std::unexpected(doc_error(what, "schemaVersion is not 2"));
  return {};
}

Result<Descriptor> parse_descriptor(element e, std::string_view what) {
  object o;
  if (e.get_object().get(o)) return std::unexpected(doc_error(what, "descriptor is not an object"));
  Descriptor d;
  auto mt = FNEXEC_TRY(opt_string(o, "mediaType", what));
  if (!mt) return std::unexpected(doc_error(what, "descriptor without mediaType"));
  d.media_type = *mt;
  auto digest = FNEXEC_TRY(opt_string(o, "digest", what));
  if (!digest || !is_valid_digest(*digest))
    return std::unexpected(doc_error(what, "descriptor digest " + digest.value_or("(missing)") +
                                               " is not sha256:<64 lowercase hex>"));
  d.digest = *digest;
  if (o["size"].get_int64().get(d.size) || d.size < 0)
    return std::unexpected(doc_error(what, "descriptor " + d.digest + " has no valid size"));
  element pe;
  if (!o["platform"].get(pe) && !pe.is_null()) {
    object po;
    if (pe.get_object().get(po)) return std::unexpected(doc_error(what, "platform is not an object"));
    Platform p;
    p.os = FNEXEC_TRY(opt_string(po, "os", what)).value_or("");
    p.architecture = FNEXEC_TRY(opt_string(po, "architecture", what)).value_or("");
    p.variant = FNEXEC_TRY(opt_string(po, "variant", what)).value_or("");
    d.platform = std::move(p);
  }
  element ae;
  if (!o["annotations"].get(ae) && !ae.is_null()) {
    object ao;
    if (ae.get_object().get(ao)) return std::unexpected(doc_error(what, "annotations is not an object"));
    for (auto field : ao) {
      std::string_view v;
      if (field.value.get_string().get(v)) return std::unexpected(doc_error(what, "annotation is not a string"));
      d.annotations.emplace(std::string(field.key), std::string(v));
    }
  }
  return d;
}

}  // namespace

bool is_index_media_type(std::string_view mt) { return mt == media::oci_index || mt == media::docker_list; }
bool is_manifest_media_type(std::string_view mt) {
  return mt == media::oci_manifest || mt == media::docker_manifest;
}
bool is_config_media_type(std::string_view mt) { return mt == media::oci_config || mt == media::docker_config; }

bool is_layer_media_type(std::string_view mt) {
  static constexpr std::string_view known[] = {
      "application/vnd.oci.image.layer.v1.tar",
      "application/vnd.oci.image.layer.v1.tar+gzip",
      "application/vnd.oci.image.layer.v1.tar+zstd",
      "application/vnd.oci.image.layer.nondistributable.v1.tar",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
      "application/vnd.docker.image.rootfs.diff.tar",
      "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "application/vnd.docker.image.rootfs.diff.tar.zstd",
      "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  };
  return std::find(std::begin(known), std::end(known), mt) != std::end(known);
}

bool is_valid_digest(std::string_view digest) {
  if (digest.size() != 71 || !digest.starts_with("sha256:")) return false;
  return std::all_of(digest.begin() + 7, digest.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Result<Index> parse_index(std::string_view json) {
  constexpr std::string_view what = "image index";
  Doc d;
  FNEXEC_TRY(load(d, json, what));
  FNEXEC_TRY(check_schema_version(d.root, what));
  auto mt = FNEXEC_TRY(opt_string(d.root, "mediaType", what));
  if (mt && !is_index_media_type(*mt)) return std::unexpected(doc_error(what, "media type " + *mt + " is not an index"));
  array manifests;
  if (d.root["manifests"].get_array().get(manifests))
    return std::unexpected(doc_error(what, "\"manifests\" is missing or not an array"));
  Index index;
  for (element e : manifests) index.manifests.push_back(FNEXEC_TRY(parse_descriptor(e, what)));
  return index;
}

Result<Manifest> parse_manifest(std::string_view json, std::string_view expected_media_type) {
  constexpr std::string_view what = "image manifest";
  Doc d;
  FNEXEC_TRY(load(d, json, what));
  FNEXEC_TRY(check_schema_version(d.root, what));
  Manifest m;
  auto mt = FNEXEC_TRY(opt_string(d.root, "mediaType", what));
  m.media_type = mt.value_or(expected_media_type.empty() ? std::string(media::oci_manifest)
                                                          : std::string(expected_media_type));
  if (!is_manifest_media_type(m.media_type))
    return std::unexpected(doc_error(what, "media type " + m.media_type + " is not an image manifest"));
  if (!expected_media_type.empty() && m.media_type != expected_media_type)
    return std::unexpected(doc_error(what, "media type " + m.media_type + " differs from its descriptor's " +
                                               std::string(expected_media_type)));
  element ce;
  if (d.root["config"].get(ce)) return std::unexpected(doc_error(what, "no config descriptor"));
  m.config = FNEXEC_TRY(parse_descriptor(ce, what));
  if (!is_config_media_type(m.config.media_type))
    return std::unexpected(doc_error(what, "config media type " + m.config.media_type + " is not an image config"));
  array layers;
  if (d.root["layers"].get_array().get(layers))
    return std::unexpected(doc_error(what, "\"layers\" is missing or not an array"));
  for (element e : layers) {
    auto layer = FNEXEC_TRY(parse_descriptor(e, what));
    if (!is_layer_media_type(layer.media_type))
      return std::unexpected(doc_error(what, "layer media type " + layer.media_type + " is not supported"));
    m.layers.push_back(std::move(layer));
  }
  return m;
}

Result<ParsedConfig> parse_config(std::string_view json) {
  constexpr std::string_view what = "image config";
  Doc d;
  FNEXEC_TRY(load(d, json, what));
  ParsedConfig pc;
  pc.config.architecture = FNEXEC_TRY(opt_string(d.root, "architecture", what)).value_or("");
  pc.config.os = FNEXEC_TRY(opt_string(d.root, "os", what)).value_or("");
  pc.config.created = FNEXEC_TRY(opt_string(d.root, "created", what)).value_or("");
  element ce;
  if (!d.root["config"].get(ce) && !ce.is_null()) {
    object c;
    if (ce.get_object().get(c)) return std::unexpected(doc_error(what, "\"config\" is not an object"));
    pc.config.entrypoint = FNEXEC_TRY(opt_string_array(c, "Entrypoint", what));
    pc.config.cmd = FNEXEC_TRY(opt_string_array(c, "Cmd", what));
    pc.config.env = FNEXEC_TRY(opt_string_array(c, "Env", what));
    pc.config.working_dir = FNEXEC_TRY(opt_string(c, "WorkingDir", what)).value_or("");
    pc.config.user = FNEXEC_TRY(opt_string(c, "User", what)).value_or("");
  }
  object rootfs;
  if (d.root["rootfs"].get_object().get(rootfs)) return std::unexpected(doc_error(what, "no \"rootfs\" object"));
  auto type = FNEXEC_TRY(opt_string(rootfs, "type", what));
  if (type != "layers") return std::unexpected(doc_error(what, "rootfs.type is not \"layers\""));
  pc.diff_ids = FNEXEC_TRY(opt_string_array(rootfs, "diff_ids", what));
  for (const auto& id : pc.diff_ids)
    if (!is_valid_digest(id))
      return std::unexpected(doc_error(what, "diff_id " + id + " is not sha256:<64 lowercase hex>"));
  return pc;
}

Result<std::vector<DockerArchiveImage>> parse_docker_archive_manifest(std::string_view json) {
  constexpr std::string_view what = "docker-archive manifest.json";
  if (json.size() > kMaxDocument) return std::unexpected(doc_error(what, "larger than 4 MiB"));
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  element root;
  if (auto err = parser.parse(padded).get(root); err)
    return std::unexpected(doc_error(what, std::string("not valid JSON: ") + simdjson::error_message(err)));
  array images;
  if (root.get_array().get(images)) return std::unexpected(doc_error(what, "not a JSON array"));
  std::vector<DockerArchiveImage> out;
  for (element e : images) {
    object o;
    if (e.get_object().get(o)) return std::unexpected(doc_error(what, "entry is not an object"));
    DockerArchiveImage img;
    auto config = FNEXEC_TRY(opt_string(o, "Config", what));
    if (!config || config->empty()) return std::unexpected(doc_error(what, "entry without \"Config\""));
    img.config = *config;
    img.repo_tags = FNEXEC_TRY(opt_string_array(o, "RepoTags", what));
    img.layers = FNEXEC_TRY(opt_string_array(o, "Layers", what));
    out.push_back(std::move(img));
  }
  if (out.empty()) return std::unexpected(doc_error(what, "no images listed"));
  return out;
}

Platform platform_of_machine(std::string_view machine) {
  struct Known {
    std::string_view machine, architecture, variant;
  };
  // The kernel's names on the left, Go's GOARCH (which OCI uses) on the right.
  static constexpr Known known[] = {
      {"x86_64", "amd64", ""},   {"aarch64", "arm64", ""},    {"arm64", "arm64", ""},
      {"armv7l", "arm", "v7"},   {"armv6l", "arm", "v6"},     {"armv5tel", "arm", "v5"},
      {"i386", "386", ""},       {"i686", "386", ""},         {"ppc64le", "ppc64le", ""},
      {"s390x", "s390x", ""},    {"riscv64", "riscv64", ""},  {"mips64", "mips64le", ""},
      {"loongarch64", "loong64", ""},
  };
  for (const auto& k : known)
    if (k.machine == machine) return {"linux", std::string(k.architecture), std::string(k.variant)};
  return {"linux", std::string(machine), ""};
}

const Platform& host_platform() {
  static const Platform host = [] {
    struct utsname u{};
    ::uname(&u);
    return platform_of_machine(u.machine);
  }();
  return host;
}

std::string to_string(const Platform& p) {
  return p.os + "/" + p.architecture + (p.variant.empty() ? "" : "/" + p.variant);
}

Result<Descriptor> pick_manifest(const Index& index, std::string_view ref, const Platform& want) {
  std::vector<const Descriptor*> candidates;
  for (const auto& d : index.manifests) {
    if (!ref.empty()) {
      auto a = d.annotations.find("org.opencontainers.image.ref.name");
      auto b = d.annotations.find("io.containerd.image.name");
      bool match = (a != d.annotations.end() && a->second == ref) || (b != d.annotations.end() && b->second == ref);
      if (!match) continue;
    }
    candidates.push_back(&d);
  }
  if (candidates.empty())
    return fail(ErrorKind::not_found, "find image", ref.empty() ? "in index" : std::string(ref),
                ref.empty() ? "the index lists no manifests" : "no manifest in the index has this reference");
  if (candidates.size() == 1) return *candidates.front();
  for (const auto* d : candidates)
    if (d->platform && d->platform->os == want.os && d->platform->architecture == want.architecture &&
        (want.variant.empty() || d->platform->variant.empty() || d->platform->variant == want.variant))
      return *d;
  std::string platforms;
  for (const auto* d : candidates)
    platforms += (platforms.empty() ? "" : ", ") + (d->platform ? to_string(*d->platform) : std::string("(no platform)"));
  return fail(ErrorKind::invalid, "choose image", ref.empty() ? "in index" : std::string(ref),
              std::to_string(candidates.size()) + " manifests and none for " + to_string(want) + "; it has " +
                  platforms + ": pull with --platform OS/ARCH[/VARIANT], or import one as oci:DIR:REF");
}

std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace fnexec::image
