// OCI / Docker image documents: index, manifest, config, docker-archive manifest.json.
// Parsing is strict: a document that is not valid JSON, has the wrong media type or a malformed
// digest is an error naming the document, never a best guess.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/store.h"
#include "util/error.h"

namespace fnexec::image {

namespace media {
inline constexpr std::string_view oci_index = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view oci_manifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view oci_config = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view oci_layer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view oci_layer_gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view oci_layer_zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view docker_list = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view docker_manifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view docker_config = "application/vnd.docker.container.image.v1+json";
}  // namespace media

bool is_index_media_type(std::string_view mt);
bool is_manifest_media_type(std::string_view mt);
bool is_config_media_type(std::string_view mt);
// OCI and Docker layer types, distributable or not, uncompressed, gzip or zstd.
bool is_layer_media_type(std::string_view mt);

// "sha256:" followed by 64 lowercase hex digits; the only algorithm the store accepts.
bool is_valid_digest(std::string_view digest);
// The hex part of a valid digest.
inline std::string_view digest_hex(std::string_view digest) { return digest.substr(7); }

struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;
};

// The OCI platform of a uname(2) machine name ("x86_64" -> amd64, "aarch64" -> arm64, "armv7l" ->
// arm/v7, ...); an unknown machine name is passed through as the architecture.
Platform platform_of_machine(std::string_view machine);
// This host's platform: the images it can run.
const Platform& host_platform();
// "linux/arm64/v8", without the variant when it is empty.
std::string to_string(const Platform& p);

struct Descriptor {
  std::string media_type;
  std::string digest;  // valid, see is_valid_digest
  int64_t size = 0;
  std::optional<Platform> platform;
  std::map<std::string, std::string> annotations;
};

struct Index {
  std::vector<Descriptor> manifests;
};

struct Manifest {
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;
};

struct ParsedConfig {
  ImageConfig config;
  std::vector<std::string> diff_ids;  // valid digests, bottom layer first
};

// One image of a docker-archive's manifest.json; paths are inside the archive.
struct DockerArchiveImage {
  std::string config;
  std::vector<std::string> repo_tags;
  std::vector<std::string> layers;
};

Result<Index> parse_index(std::string_view json);
// expected_media_type: the referring descriptor's, checked against the document's own (may be empty).
Result<Manifest> parse_manifest(std::string_view json, std::string_view expected_media_type = {});
Result<ParsedConfig> parse_config(std::string_view json);
Result<std::vector<DockerArchiveImage>> parse_docker_archive_manifest(std::string_view json);

// The manifest to import from an index: the one whose ref annotation equals ref when given,
// else the only one, else the one for the wanted platform (a variant only narrows the choice
// when both sides name one).
Result<Descriptor> pick_manifest(const Index& index, std::string_view ref, const Platform& want = host_platform());

// A JSON string literal with the quotes, for the few documents the store writes itself.
std::string json_quote(std::string_view s);

}  // namespace fnexec::image
