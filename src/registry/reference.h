// Registry references as users write them: docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX], or the same
// without the transport, or a docker.io short name ("alpine" = docker.io/library/alpine:latest).
#pragma once

#include <string>
#include <string_view>

#include "util/error.h"

namespace fnexec::registry {

struct Reference {
  std::string registry;    // "127.0.0.1:5000", "docker.io"
  std::string repository;  // "library/alpine"
  std::string tag;         // empty when pinned by digest only
  std::string digest;      // "sha256:<hex>" or empty

  // The tag or digest to ask the registry for (the digest wins when both are given).
  std::string manifest_ref() const { return digest.empty() ? tag : digest; }
  // The host the HTTP API lives on: docker.io's is registry-1.docker.io.
  std::string api_host() const;
  // "docker://HOST/REPO:TAG[@DIGEST]": how errors name the reference.
  std::string str() const;
  // The store name: "HOST/REPO:TAG", or "HOST/REPO:latest" for a digest-only reference.
  std::string store_name() const;
};

// True when ref starts with the docker:// transport.
bool has_docker_transport(std::string_view ref);

// Parses a reference with or without "docker://". The first path component is a registry when it
// has a '.' or ':' or is "localhost"; otherwise the registry is docker.io, and a single-component
// repository gets docker.io's "library/" prefix. The tag defaults to "latest".
Result<Reference> parse_reference(std::string_view ref);

}  // namespace fnexec::registry
