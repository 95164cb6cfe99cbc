// `fnexec serve` settings: /etc/fnexec/fnexec.conf (`key = value` lines, fnexec.conf(5)), then flags.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/connection.h"
#include "image/store.h"
#include "server/api.h"
#include "server/isolation.h"
#include "util/error.h"

namespace fnexec::server {

inline constexpr const char* kDefaultConfigFile = "/etc/fnexec/fnexec.conf";
inline constexpr const char* kDefaultSocket = "/run/fnexec/fnexec.sock";

struct ServeConfig {
  // Fixed for the life of the process (a change in the file on SIGHUP is logged and ignored).
  std::filesystem::path socket = kDefaultSocket;
  mode_t socket_mode = 0660;
  std::string socket_group;  // chgrp of the socket; "" keeps root's group
  std::string listen;        // HOST:PORT for TCP; needs token_file
  // TLS on the TCP listener (both or neither): PEM certificate chain and its private key.
  std::filesystem::path tls_cert;
  std::filesystem::path tls_key;
  std::filesystem::path state_dir = "/var/lib/fnexec";
  std::string cgroups = "auto";          // auto | disabled
  // Below our own cgroup; one daemon per prefix, and not `fnexec run`'s "fnexec": the daemon removes
  // every sandbox cgroup under its prefix at start.
  std::string cgroup_prefix = "fnexec-serve";
  uint32_t max_sandboxes = 256;
  uint32_t invocation_workers = 64;
  std::string bridge = "fnexec0";              // network bridge: the bridge functions' veths join
  std::string bridge_subnet = "10.87.0.0/16";  // its IPv4 subnet; the first address is the gateway
  std::string bridge_subnet6 = "none";  // its IPv6 subnet (e.g. a ULA /64), or none
  // cluster_* keys: several daemons behind NATS JetStream; no cluster_nats keeps everything local.
  cluster::Options cluster;
  std::filesystem::path seccomp_profile_dir = "/etc/fnexec/seccomp";  // NAME.json for seccomp_profile NAME  // threads that run invocations; also the daemon-wide concurrency cap

  // Reloaded on SIGHUP.
  std::filesystem::path token_file;
  // Credentials for pulls of docker:// images (auth.json format); empty: none, anonymous pulls.
  std::string registry_auth_file;
  // Per-registry CA directories (HOST:PORT/ca.crt); empty: /etc/containers/certs.d.
  std::string registry_certs_dir;
  uint64_t max_event_bytes = 6 << 20;
  uint64_t max_upload_bytes = uint64_t{4} << 30;
  uint64_t log_bytes_per_function = 1 << 20;
  uint64_t records_per_function = 10000;
  std::chrono::milliseconds shutdown_grace{10000};
  std::chrono::milliseconds ready_timeout{60000};
  // Longest wait for the next bytes of a request (and for a request on an idle connection); a body
  // may take as long as it needs while it keeps coming.
  std::chrono::milliseconds request_idle_timeout{60000};
  std::string log_level = "info";
  FunctionDefaults function_defaults;  // default_lifecycle, default_max_events_per_sandbox, ...
  FunctionLimits function_limits;      // max_function_bytes, max_array_entries, max_env_entries, ...
  uint64_t max_layer_bytes = image::kDefaultMaxLayerBytes;  // unpacked, per layer of an uploaded image
  uint64_t max_image_bytes = image::kDefaultMaxImageBytes;  // unpacked, all layers of one image
  // SigV4 on the TCP listener: `access_key = ID SECRET` lines (id → secret).
  std::map<std::string, std::string> access_keys;
  LambdaSettings lambda;  // lambda_region, lambda_account_id: the Lambda API's ARNs and SigV4 scope
  // subid_user, userns_ids_per_function (restart only), volume_allow, device_allow (reloaded);
  // default_userns is in function_defaults.
  IsolationSettings isolation;
};

// One `key = value` setting, from the file or a flag.
struct Setting {
  std::string key;
  std::string value;
  std::string origin;  // "FILE:LINE" or "--flag"
};

// Parses the file's lines: `key = value`, `#` comments, blank lines. Unknown keys are errors.
Result<std::vector<Setting>> parse_config_text(std::string_view text, std::string_view origin);
// Reads path; a missing file is not an error when missing_ok (the default path). A file with an
// access_key must not be readable by group or others.
Result<std::vector<Setting>> read_config_file(const std::filesystem::path& path, bool missing_ok);
// Applies settings in order (later ones win), with each value checked.
Result<> apply_settings(ServeConfig& config, const std::vector<Setting>& settings);
// Keys SIGHUP cannot change.
bool is_restart_only(std::string_view key);

// invoke::parse_duration ("10s", "500ms", "2m", "1.5s"; a bare number is seconds) in milliseconds.
Result<std::chrono::milliseconds> parse_millis(std::string_view text);

// Reads the bearer token: the first line of the file, surrounding whitespace removed, at least 16 bytes.
// Refuses a file that others can read or write.
Result<std::string> read_token_file(const std::filesystem::path& path);

}  // namespace fnexec::server
