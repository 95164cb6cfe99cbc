// libFuzzer target: the JSON documents of an import (index, manifest, config, docker manifest.json).
#include <cstdint>
#include <string_view>

#include "image/oci.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view json(reinterpret_cast<const char*>(data), size);
  using namespace fnexec::image;
  if (auto index = parse_index(json)) {
    (void)pick_manifest(*index, {});
    (void)pick_manifest(*index, "latest");
  }
  (void)parse_manifest(json);
  (void)parse_manifest(json, media::docker_manifest);
  (void)parse_config(json);
  (void)parse_docker_archive_manifest(json);
  (void)json_quote(json);
  return 0;
}
