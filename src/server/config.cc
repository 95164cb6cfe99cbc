#include "server/config.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <span>
#include <set>

#include "cgroup/cgroup.h"
#include "invoke/invocation.h"
#include "net/address.h"
#include "net/attachment.h"
#include "sandbox/capabilities.h"
#include "sandbox/seccomp.h"
#include "util/fs.h"

namespace fnexec::server {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Arrays, not std::set: a namespace-scope std::set is built by a static constructor at every
// process start, also of `fnexec run` and `--version`, which never read the daemon's config
// (41k instructions, callgrind). A linear search of ~35 keys is paid only when a config is read.
constexpr std::string_view kRestartOnly[] = {"socket",        "socket_mode",   "socket_group",
                                                 "listen",        "state_dir",     "cgroups",
                                                 "cgroup_prefix", "max_sandboxes", "invocation_workers",
                                                 "seccomp_profile_dir", "bridge",
                                                 "bridge_subnet",       "bridge_subnet6",      "tls_cert",
                                                 "tls_key",             "subid_user",
                                                 "userns_ids_per_function", "subuid_file", "subgid_file",
                                                 // cluster mode (src/cluster): joined at start only
                                                 "cluster_nats", "cluster_node", "cluster_nats_creds",
                                                 "cluster_nats_user", "cluster_nats_password",
                                                 "cluster_nats_tls_ca", "cluster_nats_tls_cert",
                                                 "cluster_nats_tls_key", "cluster_result_ttl",
                                                 "cluster_replicas"};
constexpr std::string_view kReloadable[] = {
    "token_file",           "max_event_bytes", "max_upload_bytes", "log_bytes_per_function",
    "records_per_function", "shutdown_grace",  "ready_timeout",    "request_idle_timeout",
    "log_level",            "default_lifecycle", "default_max_events_per_sandbox",
    "default_init_timeout", "default_idle_timeout", "max_function_bytes", "max_array_entries",
    "max_argv_bytes",       "max_env_entries",      "max_env_bytes",    "max_layer_bytes",
    "max_image_bytes",      "default_user",         "default_read_only_rootfs",
    "default_cap_drop",     "default_seccomp_profile", "default_nofile", "default_pids_limit",
    "registry_auth_file", "registry_certs_dir", "access_key", "lambda_region",
    "lambda_account_id", "default_egress", "default_userns", "volume_allow",
    "device_allow"};

bool is_listed(std::span<const std::string_view> keys, std::string_view key) {
  return std::ranges::find(keys, key) != keys.end();
}

std::unexpected<Error> bad_value(const Setting& s, std::string detail) {
  return fail(ErrorKind::invalid, "read setting", s.origin,
              fmt::format("{} = {}: {}", s.key, s.value, detail));
}

Result<uint64_t> parse_uint(const Setting& s, uint64_t min, uint64_t max) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.value.data(), s.value.data() + s.value.size(), v);
  if (ec != std::errc{} || p != s.value.data() + s.value.size() || s.value.empty())
    return bad_value(s, "not an unsigned integer");
  if (v < min || v > max) return bad_value(s, fmt::format("must be between {} and {}", min, max));
  return v;
}

Result<uint64_t> parse_bytes(const Setting& s) {
  auto v = cgroup::parse_size(s.value);
  if (!v) return bad_value(s, v.error().message());
  return *v;
}

Result<std::chrono::milliseconds> parse_setting_millis(const Setting& s) {
  auto v = parse_millis(s.value);
  if (!v) return bad_value(s, v.error().detail);
  return *v;
}

Result<> apply_cluster_setting(cluster::Options& o, const Setting& s) {
  const auto& k = s.key;
  if (k == "cluster_nats") {
    if (s.value.empty()) {
      o.servers.clear();
      return {};
    }
    auto servers = cluster::parse_servers(s.value);
    if (!servers) return bad_value(s, servers.error().detail);
    o.servers = *servers;
  } else if (k == "cluster_node") {
    bool ok = !s.value.empty() && s.value.size() <= 64 &&
              std::all_of(s.value.begin(), s.value.end(), [](char ch) {
                return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_';
              });
    if (!ok) return bad_value(s, "must be 1-64 of A-Z a-z 0-9 - _ (a key of the fnexec-nodes bucket)");
    o.node = s.value;
  } else if (k == "cluster_nats_creds") {
    o.creds_file = s.value;
  } else if (k == "cluster_nats_user") {
    o.user = s.value;
  } else if (k == "cluster_nats_password") {
    o.password = s.value;
  } else if (k == "cluster_nats_tls_ca") {
    o.tls_ca = s.value;
  } else if (k == "cluster_nats_tls_cert") {
    o.tls_cert = s.value;
  } else if (k == "cluster_nats_tls_key") {
    o.tls_key = s.value;
  } else if (k == "cluster_result_ttl") {
    auto v = FNEXEC_TRY(parse_setting_millis(s));
    if (v < std::chrono::seconds(1)) return bad_value(s, "must be at least 1s");
    o.result_ttl = v;
  } else if (k == "cluster_replicas") {
    int n = 0;
    auto [end, ec] = std::from_chars(s.value.data(), s.value.data() + s.value.size(), n);
    if (ec != std::errc() || end != s.value.data() + s.value.size() || n < 1 || n > 5)
      return bad_value(s, "must be 1 to 5 (JetStream's limit), the number of nats-servers that keep a copy");
    o.replicas = n;
  }
  return {};
}

}  // namespace

bool is_restart_only(std::string_view key) {
  return is_listed(kRestartOnly, key);
}

Result<std::chrono::milliseconds> parse_millis(std::string_view text) {
  auto d = FNEXEC_TRY(invoke::parse_duration(trim(text)));
  return std::chrono::duration_cast<std::chrono::milliseconds>(d);
}

Result<std::vector<Setting>> parse_config_text(std::string_view text, std::string_view origin) {
  std::vector<Setting> out;
  int line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    std::string where = fmt::format("{}:{}", origin, line_no);
    size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      return fail(ErrorKind::invalid, "read config", where, fmt::format("'{}' is not `key = value`", line));
    std::string key(trim(line.substr(0, eq)));
    if (!is_listed(kRestartOnly, key) && !is_listed(kReloadable, key))
      return fail(ErrorKind::invalid, "read config", where,
                  fmt::format("unknown key '{}' (see fnexec.conf(5))", key));
    out.push_back({key, std::string(trim(line.substr(eq + 1))), where});
  }
  return out;
}

Result<std::vector<Setting>> read_config_file(const std::filesystem::path& path, bool missing_ok) {
  auto text = fs::read_file(path);
  if (!text) {
    if (missing_ok && text.error().err == ENOENT) return std::vector<Setting>{};
    return std::unexpected(text.error());
  }
  auto settings = FNEXEC_TRY(parse_config_text(*text, path.string()));
  bool has_keys = std::any_of(settings.begin(), settings.end(), [](const Setting& s) { return s.key == "access_key"; });
  struct stat st {};
  if (has_keys && ::stat(path.c_str(), &st) == 0 && (st.st_mode & 0077))
    return fail(ErrorKind::invalid, "read config", path.string(),
                fmt::format("it holds access_key secrets but its mode {:04o} lets others read it; chmod 600 it",
                            st.st_mode & 07777));
  return settings;
}

Result<> apply_settings(ServeConfig& c, const std::vector<Setting>& settings) {
  for (const auto& s : settings) {
    const auto& k = s.key;
    if (k == "socket") {
      if (s.value.empty() || s.value[0] != '/') return bad_value(s, "must be an absolute path");
      c.socket = s.value;
    } else if (k == "socket_mode") {
      unsigned mode = 0;
      auto [p, ec] = std::from_chars(s.value.data(), s.value.data() + s.value.size(), mode, 8);
      if (ec != std::errc{} || p != s.value.data() + s.value.size() || mode > 0777)
        return bad_value(s, "must be an octal mode such as 0660");
      c.socket_mode = mode;
    } else if (k == "socket_group") {
      c.socket_group = s.value;
    } else if (k == "listen") {
      auto colon = s.value.rfind(':');
      if (!s.value.empty() && (colon == std::string::npos || colon == 0 || colon + 1 == s.value.size()))
        return bad_value(s, "must be HOST:PORT, e.g. 127.0.0.1:8080");
      c.listen = s.value;
    } else if (k == "tls_cert" || k == "tls_key") {
      if (s.value.empty() || s.value[0] != '/') return bad_value(s, "must be an absolute path to a PEM file");
      (k == "tls_cert" ? c.tls_cert : c.tls_key) = s.value;
    } else if (k == "state_dir") {
      if (s.value.empty() || s.value[0] != '/') return bad_value(s, "must be an absolute path");
      c.state_dir = s.value;
    } else if (k == "cgroups") {
      if (s.value != "auto" && s.value != "disabled") return bad_value(s, "must be auto or disabled");
      c.cgroups = s.value;
    } else if (k == "cgroup_prefix") {
      if (s.value.empty() || s.value.find('/') != std::string::npos || s.value[0] == '.')
        return bad_value(s, "must be one path component");
      c.cgroup_prefix = s.value;
    } else if (k == "max_sandboxes") {
      c.max_sandboxes = static_cast<uint32_t>(FNEXEC_TRY(parse_uint(s, 1, 65536)));
    } else if (k == "invocation_workers") {
      c.invocation_workers = static_cast<uint32_t>(FNEXEC_TRY(parse_uint(s, 1, 4096)));
    } else if (k.starts_with("cluster_")) {
      FNEXEC_TRY(apply_cluster_setting(c.cluster, s));
    } else if (k == "token_file") {
      c.token_file = s.value;
    } else if (k == "registry_auth_file") {
      c.registry_auth_file = s.value;
    } else if (k == "registry_certs_dir") {
      c.registry_certs_dir = s.value;
    } else if (k == "max_event_bytes") {
      c.max_event_bytes = FNEXEC_TRY(parse_bytes(s));
    } else if (k == "max_upload_bytes") {
      c.max_upload_bytes = FNEXEC_TRY(parse_bytes(s));
    } else if (k == "log_bytes_per_function") {
      c.log_bytes_per_function = FNEXEC_TRY(parse_bytes(s));
    } else if (k == "records_per_function") {
      c.records_per_function = FNEXEC_TRY(parse_uint(s, 1, UINT32_MAX));
    } else if (k == "shutdown_grace") {
      c.shutdown_grace = FNEXEC_TRY(parse_setting_millis(s));
    } else if (k == "ready_timeout") {
      c.ready_timeout = FNEXEC_TRY(parse_setting_millis(s));
    } else if (k == "request_idle_timeout") {
      c.request_idle_timeout = FNEXEC_TRY(parse_setting_millis(s));
      if (c.request_idle_timeout < std::chrono::milliseconds(100))
        return bad_value(s, "must be at least 100ms");
    } else if (k == "log_level") {
      static const std::set<std::string_view> levels = {"trace", "debug", "info", "warn", "error", "off"};
      if (!levels.contains(s.value)) return bad_value(s, "must be trace, debug, info, warn, error or off");
      c.log_level = s.value;
    } else if (k == "default_lifecycle") {
      auto l = pool::parse_lifecycle(s.value);
      if (!l) return bad_value(s, "must be oneshot, fresh or reuse");
      c.function_defaults.lifecycle = *l;
    } else if (k == "default_max_events_per_sandbox") {
      c.function_defaults.max_events_per_sandbox = static_cast<uint32_t>(FNEXEC_TRY(parse_uint(s, 0, UINT32_MAX)));
    } else if (k == "default_init_timeout") {
      auto v = FNEXEC_TRY(parse_setting_millis(s));
      if (v.count() < 1 || v > std::chrono::hours(1)) return bad_value(s, "must be between 1ms and 1h");
      c.function_defaults.init_timeout = v;
    } else if (k == "seccomp_profile_dir") {
      if (s.value.empty() || s.value[0] != '/') return bad_value(s, "must be an absolute path");
      c.seccomp_profile_dir = s.value;
    } else if (k == "bridge") {
      if (auto r = net::check_bridge_name(s.value); !r) return bad_value(s, r.error().detail);
      c.bridge = s.value;
    } else if (k == "bridge_subnet") {
      auto net = net::parse_ipv4_net(s.value);
      if (!net) return bad_value(s, net.error().detail);
      if (net->prefix > 30) return bad_value(s, "needs room for a gateway and a sandbox: /30 or larger");
      c.bridge_subnet = s.value;
    } else if (k == "bridge_subnet6") {
      if (auto net = net::parse_bridge_subnet6(s.value); !net) return bad_value(s, net.error().detail);
      c.bridge_subnet6 = s.value;
    } else if (k == "default_egress") {
      if (!net::parse_egress_default(s.value)) return bad_value(s, "must be allow or deny");
      c.function_defaults.egress_default = s.value;
    } else if (k == "default_user") {
      c.function_defaults.user = s.value;
    } else if (k == "default_read_only_rootfs") {
      if (s.value != "true" && s.value != "false") return bad_value(s, "must be true or false");
      c.function_defaults.read_only_rootfs = s.value == "true";
    } else if (k == "default_cap_drop") {
      std::vector<std::string> caps;
      for (size_t at = 0; at <= s.value.size();) {
        size_t comma = std::min(s.value.find(',', at), s.value.size());
        std::string name = s.value.substr(at, comma - at);
        std::erase_if(name, [](char ch) { return ch == ' ' || ch == '\t'; });
        if (!name.empty()) {
          if (name != "ALL" && !sandbox::capability_from_name(name, k))
            return bad_value(s, fmt::format("\"{}\" is not a capability (e.g. NET_RAW, ALL)", name));
          caps.push_back(std::move(name));
        }
        at = comma + 1;
      }
      c.function_defaults.cap_drop = std::move(caps);
    } else if (k == "default_seccomp_profile") {
      if (auto r = sandbox::check_seccomp_profile_reference(s.value); !r || s.value.starts_with("{"))
        return bad_value(s, "must be default, unconfined or the NAME of a profile in seccomp_profile_dir");
      c.function_defaults.seccomp_profile = s.value;
    } else if (k == "default_nofile") {
      c.function_defaults.nofile = FNEXEC_TRY(parse_uint(s, 16, 1 << 20));
    } else if (k == "default_pids_limit") {
      c.function_defaults.pids_limit = FNEXEC_TRY(parse_uint(s, 1, 1 << 22));
    } else if (k == "default_userns") {
      if (s.value != "true" && s.value != "false") return bad_value(s, "must be true or false");
      c.function_defaults.userns = s.value == "true";
    } else if (k == "subid_user") {
      if (s.value.empty() || s.value.find_first_of(": \t") != std::string::npos)
        return bad_value(s, "must be a user name as in /etc/subuid (no ':' or spaces)");
      c.isolation.subid_user = s.value;
    } else if (k == "subuid_file" || k == "subgid_file") {
      if (s.value.empty() || s.value[0] != '/') return bad_value(s, "must be an absolute path");
      (k == "subuid_file" ? c.isolation.subuid_file : c.isolation.subgid_file) = s.value;
    } else if (k == "userns_ids_per_function") {
      c.isolation.ids_per_function = static_cast<uint32_t>(FNEXEC_TRY(parse_uint(s, 1, uint64_t{1} << 31)));
    } else if (k == "volume_allow") {
      auto allow = parse_volume_allow(s.value);
      if (!allow) return bad_value(s, allow.error().message());
      c.isolation.volume_allow.push_back(std::move(*allow));
    } else if (k == "device_allow") {
      auto allow = parse_device_allow(s.value);
      if (!allow) return bad_value(s, allow.error().message());
      c.isolation.device_allow.push_back(std::move(*allow));
    } else if (k == "default_idle_timeout") {
      auto v = FNEXEC_TRY(parse_setting_millis(s));
      if (v > std::chrono::hours(24 * 365)) return bad_value(s, "must be at most 365 days");
      c.function_defaults.idle_timeout = std::chrono::duration_cast<std::chrono::seconds>(v);
    } else if (k == "max_function_bytes") {
      c.function_limits.max_function_bytes = FNEXEC_TRY(parse_bytes(s));
    } else if (k == "max_array_entries") {
      c.function_limits.max_array_entries = FNEXEC_TRY(parse_uint(s, 1, UINT32_MAX));
    } else if (k == "max_argv_bytes") {
      c.function_limits.max_argv_bytes = FNEXEC_TRY(parse_bytes(s));
    } else if (k == "max_env_entries") {
      c.function_limits.max_env_entries = FNEXEC_TRY(parse_uint(s, 0, UINT32_MAX));
    } else if (k == "max_env_bytes") {
      c.function_limits.max_env_bytes = FNEXEC_TRY(parse_bytes(s));
    } else if (k == "max_layer_bytes") {
      c.max_layer_bytes = FNEXEC_TRY(parse_bytes(s));
    } else if (k == "max_image_bytes") {
      c.max_image_bytes = FNEXEC_TRY(parse_bytes(s));
    } else if (k == "access_key") {
      auto space = s.value.find_first_of(" \t");
      std::string id = s.value.substr(0, space);
      std::string secret = space == std::string::npos ? "" : std::string(trim(std::string_view(s.value).substr(space)));
      auto id_ok = !id.empty() && id.size() <= 128 &&
                   std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isalnum(c); });
      if (!id_ok || secret.size() < 16 || secret.find_first_of(" \t") != std::string::npos)
        return fail(ErrorKind::invalid, "read setting", s.origin,
                    "access_key = ID SECRET: ID is letters and digits, SECRET at least 16 characters without "
                    "spaces (the value is not shown)");
      c.access_keys[id] = secret;
    } else if (k == "lambda_region") {
      bool ok = !s.value.empty() && s.value.size() <= 32 && std::all_of(s.value.begin(), s.value.end(), [](unsigned char ch) {
        return std::islower(ch) || std::isdigit(ch) || ch == '-';
      });
      if (!ok) return bad_value(s, "must be a region name such as us-east-1");
      c.lambda.region = s.value;
    } else if (k == "lambda_account_id") {
      if (s.value.size() != 12 || !std::all_of(s.value.begin(), s.value.end(), [](unsigned char ch) { return std::isdigit(ch); }))
        return bad_value(s, "must be 12 digits");
      c.lambda.account_id = s.value;
    } else {
      return fail(ErrorKind::invalid, "read setting", s.origin, fmt::format("unknown key '{}'", k));
    }
  }
  if (c.function_limits.max_function_bytes == 0)
    return fail(ErrorKind::invalid, "check config", {}, "max_function_bytes must be above 0");
  if (c.max_event_bytes == 0)
    return fail(ErrorKind::invalid, "check config", {}, "max_event_bytes must be above 0");
  return {};
}

Result<std::string> read_token_file(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail_errno("read token file", path.string());
  if (st.st_mode & 0077)
    return fail(ErrorKind::invalid, "read token file", path.string(),
                fmt::format("mode {:04o} lets others read it; chmod 600 it", st.st_mode & 07777));
  auto text = FNEXEC_TRY(fs::read_file(path));
  std::string_view token = text;
  if (auto nl = token.find('\n'); nl != std::string_view::npos) token = token.substr(0, nl);
  token = trim(token);
  if (token.size() < 16)
    return fail(ErrorKind::invalid, "read token file", path.string(),
                "the token must be at least 16 characters (e.g. `openssl rand -hex 32`)");
  return std::string(token);
}

}  // namespace fnexec::server
