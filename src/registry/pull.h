// One pull as the CLI and the daemon ask for it: a reference as the user wrote it, credentials from
// --creds or the usual files, TLS settings and the platform, into the store (Store::pull).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "image/remote.h"
#include "image/store.h"
#include "util/error.h"

namespace fnexec::registry {

struct PullRequest {
  std::string reference;            // [docker://]REGISTRY/REPO[:TAG|@DIGEST] or a docker.io short name
  std::optional<std::string> name;  // record as NAME[:TAG]; default REGISTRY/REPO:TAG
  std::string creds;                // "USER:PASS", else looked up (auth_file, auth.json, docker config)
  std::string auth_file;
  std::string cert_dir;
  std::string certs_root;           // instead of /etc/containers/certs.d: ROOT/REGISTRY is the cert dir
  bool tls_verify = true;
  std::string platform;             // "os/arch[/variant]"; empty: this host's
  size_t parallel_layers = 3;
  std::function<void(const image::PullProgress&)> progress;
};

// "linux/arm64/v8", "linux/amd64".
Result<image::Platform> parse_platform(std::string_view text);

Result<image::ResolvedImage> pull(image::Store& store, const PullRequest& request, image::PullResult* result = nullptr);

}  // namespace fnexec::registry
