#include "server/api.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <charconv>
#include <set>
#include <vector>

#include "net/address.h"
#include "sandbox/capabilities.h"
#include "sandbox/devices.h"
#include "sandbox/privileges.h"
#include "sandbox/seccomp.h"
#include "server/json.h"
#include "server/uri.h"

namespace fnexec::server {

namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    parts.push_back(path.substr(i, j - i));
    i = j;
  }
  return parts;
}

RouteMatch by_method(std::string_view method,
                     std::initializer_list<std::pair<std::string_view, Route>> table) {
  RouteMatch m;
  for (const auto& [verb, r] : table) {
    if (method == verb || (method == "HEAD" && verb == "GET")) {
      m.route = r;
      return m;
    }
    if (!m.allow.empty()) m.allow += ", ";
    m.allow += verb;
  }
  m.route = Route::method_not_allowed;
  return m;
}

}  // namespace

RouteMatch route(std::string_view method, std::string_view target) {
  std::string_view path = target, query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  std::map<std::string, std::string> params;
  for (const auto& pair : query_pairs(query)) {
    auto k = percent_decode(pair.name, true);
    auto v = percent_decode(pair.value, true);
    if (!k || !v) {
      RouteMatch bad;
      bad.route = Route::bad_request;
      bad.error = fmt::format("query parameter '{}' is not valid percent-encoding", pair.text);
      bad.lambda = path.starts_with("/2015-03-31/");
      return bad;
    }
    params[*k] = *v;
  }

  auto parts = split_path(path);
  RouteMatch m;
  if (parts.size() == 1 && parts[0] == "healthz") {
    m = by_method(method, {{"GET", Route::healthz}});
  } else if (parts.size() == 1 && parts[0] == "metrics") {
    m = by_method(method, {{"GET", Route::metrics}});
  } else if (parts.size() >= 2 && parts[0] == "v1") {
    auto p = parts[1];
    if (p == "functions" && parts.size() == 2) {
      m = by_method(method, {{"GET", Route::functions_list}});
    } else if (p == "functions" && parts.size() == 3) {
      m = by_method(
          method,
          {{"GET", Route::function_get}, {"PUT", Route::function_put}, {"DELETE", Route::function_delete}});
    } else if (p == "functions" && parts.size() == 4 && parts[3] == "invoke") {
      m = by_method(method, {{"POST", Route::function_invoke}});
    } else if (p == "functions" && parts.size() == 4 && parts[3] == "logs") {
      m = by_method(method, {{"GET", Route::function_logs}});
    } else if (p == "invocations" && parts.size() == 2) {
      m = by_method(method, {{"GET", Route::invocations_list}});
    } else if (p == "invocations" && parts.size() == 3) {
      m = by_method(method, {{"GET", Route::invocation_get}});
    } else if (p == "dead-letters" && parts.size() == 2) {
      m = by_method(method, {{"GET", Route::dead_letters_list}});
    } else if (p == "dead-letters" && parts.size() == 3) {
      m = by_method(method, {{"GET", Route::dead_letter_get}, {"DELETE", Route::dead_letter_delete}});
    } else if (p == "dead-letters" && parts.size() == 4 && parts[3] == "replay") {
      m = by_method(method, {{"POST", Route::dead_letter_replay}});
    } else if (p == "cluster" && parts.size() == 2) {
      m = by_method(method, {{"GET", Route::cluster_status}});
    } else if (p == "images" && parts.size() == 2) {
      m = by_method(method, {{"GET", Route::images_list}, {"POST", Route::images_import}});
    } else if (p == "images" && parts.size() == 3 && parts[2] == "pull") {
      m = by_method(method, {{"POST", Route::images_pull}});
    } else if (p == "images" && parts.size() == 4 && parts[2] == "pulls") {
      m = by_method(method, {{"GET", Route::images_pull_get}});
    }
  } else if (!parts.empty() && parts[0] == "2015-03-31") {
    if (parts.size() == 2 && parts[1] == "functions") {
      m = by_method(method, {{"GET", Route::lambda_functions_list}});
    } else if (parts.size() == 3 && parts[1] == "functions") {
      m = by_method(method, {{"GET", Route::lambda_function_get}});
    } else if (parts.size() == 4 && parts[1] == "functions" && parts[3] == "configuration") {
      m = by_method(method, {{"GET", Route::lambda_function_config}});
    } else if (parts.size() == 4 && parts[1] == "functions" && parts[3] == "invocations") {
      m = by_method(method, {{"POST", Route::lambda_invoke}});
    }
    m.lambda = true;
  }
  if (parts.size() >= 3 && m.route != Route::not_found) {
    // /v1/images/pulls/{id} has its parameter one segment further.
    size_t at = m.route == Route::images_pull_get ? 3 : 2;
    auto decoded = percent_decode(parts[at], false);
    if (!decoded) {
      RouteMatch bad;
      bad.route = Route::bad_request;
      bad.error = fmt::format("path segment '{}' is not valid percent-encoding", parts[at]);
      bad.lambda = m.lambda;
      return bad;
    }
    m.param = std::move(*decoded);
  }
  m.query = std::move(params);
  return m;
}

Result<> validate_function_name(std::string_view name) {
  auto bad = [&](std::string detail) {
    return fail(ErrorKind::invalid, "accept function name", std::string(name),
                detail + "; a name is 1-63 of a-z 0-9 _ . - starting with a letter or digit");
  };
  if (name.empty()) return bad("it is empty");
  if (name.size() > 63) return bad(fmt::format("it is {} characters long", name.size()));
  auto lower_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_alnum(name[0])) return bad(fmt::format("it starts with '{}'", name[0]));
  for (char c : name)
    if (!lower_alnum(c) && c != '_' && c != '.' && c != '-')
      return bad(fmt::format("'{}' is not allowed", c));
  return {};
}

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

std::string_view type_name(element_type t) {
  switch (t) {
    case element_type::ARRAY:
      return "an array";
    case element_type::OBJECT:
      return "an object";
    case element_type::INT64:
    case element_type::UINT64:
      return "an integer";
    case element_type::DOUBLE:
      return "a number";
    case element_type::STRING:
      return "a string";
    case element_type::BOOL:
      return "a boolean";
    case element_type::NULL_VALUE:
      return "null";
  }
  return "a value";
}

std::unexpected<Error> field_error(std::string_view field, std::string detail) {
  return fail(ErrorKind::invalid, "accept function", {}, fmt::format("field \"{}\" {}", field, detail));
}

Result<uint64_t> get_uint(std::string_view field, element v, uint64_t min, uint64_t max) {
  auto t = v.type();
  uint64_t n = 0;
  if (t == element_type::UINT64) {
    n = v.get_uint64().value_unsafe();
  } else if (t == element_type::INT64) {
    int64_t s = v.get_int64().value_unsafe();
    if (s < 0) return field_error(field, fmt::format("must be at least {}, got {}", min, s));
    n = static_cast<uint64_t>(s);
  } else {
    return field_error(field, fmt::format("must be an integer, got {}", type_name(t)));
  }
  if (n < min || n > max)
    return field_error(field, fmt::format("must be between {} and {}, got {}", min, max, n));
  return n;
}

Result<std::string> get_string(std::string_view field, element v) {
  std::string_view s;
  if (v.get_string().get(s))
    return field_error(field, fmt::format("must be a string, got {}", type_name(v.type())));
  if (s.find('\0') != std::string_view::npos) return field_error(field, "must not contain NUL bytes");
  return std::string(s);
}

std::unexpected<Error> over_limit(std::string_view field, std::string_view what, uint64_t value,
                                  std::string_view key, uint64_t limit) {
  return fail(ErrorKind::too_large, "accept function", {},
              fmt::format("field \"{}\" has {} {}, over the limit of {} ({} in fnexec.conf)", field, value,
                          what, limit, key));
}

// Counts before copying: a document of a million one-letter strings is refused, never expanded.
Result<std::vector<std::string>> get_string_array(std::string_view field, element v, uint64_t max_entries,
                                                  std::string_view max_key) {
  simdjson::dom::array arr;
  if (v.get_array().get(arr))
    return field_error(field, fmt::format("must be an array of strings, got {}", type_name(v.type())));
  if (uint64_t n = arr.size(); n > max_entries) return over_limit(field, "entries", n, max_key, max_entries);
  std::vector<std::string> out;
  out.reserve(arr.size());
  for (element e : arr) {
    std::string_view s;
    if (e.get_string().get(s))
      return field_error(field, fmt::format("must be an array of strings, has {}", type_name(e.type())));
    if (s.find('\0') != std::string_view::npos) return field_error(field, "must not contain NUL bytes");
    out.emplace_back(s);
  }
  return out;
}

Result<> check_env_entry(std::string_view field, std::string_view entry) {
  auto eq = entry.find('=');
  if (eq == 0 || eq == std::string_view::npos)
    return field_error(field, fmt::format("entry \"{}\" is not KEY=VALUE", entry));
  return {};
}

uint64_t total_bytes(const std::vector<std::string>& list) {
  uint64_t n = 0;
  for (const auto& s : list) n += s.size();
  return n;
}

// env: ["K=V", ...] or {"K": "V", ...}.
Result<std::vector<std::string>> get_env(element v, const FunctionLimits& limits) {
  if (v.type() == element_type::OBJECT) {
    auto obj = simdjson::dom::object(v);
    if (uint64_t n = obj.size(); n > limits.max_env_entries)
      return over_limit("env", "entries", n, "max_env_entries", limits.max_env_entries);
    std::vector<std::string> out;
    for (auto kv : obj) {
      std::string_view s;
      if (kv.value.get_string().get(s))
        return field_error("env", fmt::format("value of \"{}\" must be a string", kv.key));
      std::string entry = fmt::format("{}={}", kv.key, s);
      FNEXEC_TRY(check_env_entry("env", entry));
      if (entry.find('\0') != std::string::npos) return field_error("env", "must not contain NUL bytes");
      out.push_back(std::move(entry));
    }
    return out;
  }
  auto list = FNEXEC_TRY(get_string_array("env", v, limits.max_env_entries, "max_env_entries"));
  for (const auto& e : list) FNEXEC_TRY(check_env_entry("env", e));
  return list;
}

constexpr uint64_t MiB = 1 << 20;

// The network fields of a function document, as `fnexec run`'s flags of the same names.
bool is_network_field(std::string_view k) {
  return k == "network" || k == "dns" || k == "add_hosts" || k == "egress_allow" || k == "egress_deny" ||
         k == "egress_default";
}

Result<> parse_network_field(std::string_view k, element v, pool::FunctionSpec::Network& n,
                             const FunctionLimits& limits) {
  if (k == "network") {
    n.mode = FNEXEC_TRY(get_string(k, v));
    if (n.mode != "none" && n.mode != "bridge")
      return field_error(k, fmt::format("must be none (loopback only) or bridge (a veth on fnexec's NATed "
                                        "bridge), got \"{}\"",
                                        n.mode));
  } else if (k == "egress_default") {
    n.egress_default = FNEXEC_TRY(get_string(k, v));
  } else {
    auto list = FNEXEC_TRY(get_string_array(k, v, limits.max_array_entries, "max_array_entries"));
    (k == "dns"            ? n.dns
     : k == "add_hosts"    ? n.add_hosts
     : k == "egress_allow" ? n.egress_allow
                           : n.egress_deny) = std::move(list);
  }
  return {};
}

// After every field: each entry parses, and the settings of a bridge are not given without one.
Result<> check_network(const pool::FunctionSpec::Network& n) {
  auto parsed = net::parse_network_settings({n.dns, n.add_hosts, n.egress_allow, n.egress_deny, n.egress_default});
  if (!parsed) return fail(ErrorKind::invalid, "accept function", {}, parsed.error().message());
  // egress_default is not counted: GET shows it for every function, and its body may be PUT back.
  bool settings = !n.dns.empty() || !n.add_hosts.empty() || !n.egress_allow.empty() || !n.egress_deny.empty();
  if (n.mode != "bridge" && settings)
    return field_error("network", "is none, but dns, add_hosts, egress_allow and egress_deny apply to "
                                  "network bridge only");
  return {};
}

// "retry_backoff": {"initial_ms": N, "multiplier": X, "max_ms": N}; members left out keep their defaults.
Result<pool::RetryBackoff> get_retry_backoff(element v) {
  constexpr std::string_view field = "retry_backoff";
  pool::RetryBackoff b;
  if (v.is_null()) return b;
  simdjson::dom::object obj;
  if (v.get_object().get(obj))
    return field_error(field, fmt::format("must be an object such as {{\"initial_ms\": 1000, \"multiplier\": 2, "
                                          "\"max_ms\": 60000}}, got {}",
                                          type_name(v.type())));
  bool max_given = false;
  for (auto kv : obj) {
    std::string_view k = kv.key;
    if (k == "initial_ms") {
      b.initial = std::chrono::milliseconds(FNEXEC_TRY(get_uint("retry_backoff.initial_ms", kv.value, 0, 3600ull * 1000)));
    } else if (k == "max_ms") {
      b.max = std::chrono::milliseconds(FNEXEC_TRY(get_uint("retry_backoff.max_ms", kv.value, 0, 6ull * 3600 * 1000)));
      max_given = true;
    } else if (k == "multiplier") {
      double m = 0;
      if (kv.value.get_double().get(m))
        return field_error("retry_backoff.multiplier", fmt::format("must be a number, got {}", type_name(kv.value.type())));
      if (!(m >= 1 && m <= 10))
        return field_error("retry_backoff.multiplier", fmt::format("must be between 1 and 10, got {}", m));
      b.multiplier = m;
    } else {
      return field_error(field, fmt::format("has an unknown member \"{}\"; known: initial_ms, multiplier, max_ms", k));
    }
  }
  // A larger initial wait with the default cap raises the cap, so {"initial_ms": 120000} means what it says.
  if (!max_given) b.max = std::max(b.max, b.initial);
  if (b.max < b.initial)
    return field_error("retry_backoff.max_ms", fmt::format("({}) must not be below initial_ms ({})", b.max.count(),
                                                            b.initial.count()));
  return b;
}

// "SOURCE:TARGET[:ro|:rw]", both absolute; read-only unless :rw. The daemon checks SOURCE against
// fnexec.conf volume_allow when it configures the function (src/server/isolation.h).
Result<sandbox::Volume> parse_volume(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return field_error("volumes", fmt::format("entry \"{}\" {}; an entry is \"/host/path:/target[:ro|:rw]\"", text, why));
  };
  sandbox::Volume v;
  v.read_only = true;
  std::string_view rest = text;
  if (rest.ends_with(":rw") || rest.ends_with(":ro")) {
    v.read_only = rest.ends_with(":ro");
    rest.remove_suffix(3);
  }
  auto colon = rest.find(':');
  if (colon == std::string_view::npos || rest.find(':', colon + 1) != std::string_view::npos)
    return bad("is not SOURCE:TARGET");
  auto source = rest.substr(0, colon), target = rest.substr(colon + 1);
  if (source.empty() || source[0] != '/' || target.empty() || target[0] != '/') return bad("needs absolute paths");
  for (std::string_view part : {source, target})
    if (part == "/.." || part.find("/../") != std::string_view::npos || part.ends_with("/.."))
      return bad("must not contain ..");
  v.source = std::string(source);
  v.target = std::string(target);
  return v;
}

}  // namespace

Result<pool::FunctionSpec> parse_function_spec(std::string_view name, std::string_view json,
                                               const FunctionDefaults& defaults, const FunctionLimits& limits) {
  FNEXEC_TRY(validate_function_name(name));
  if (json.size() > limits.max_function_bytes)
    return fail(ErrorKind::too_large, "accept function", {},
                fmt::format("the document is {} bytes, over the limit of {} (max_function_bytes in fnexec.conf)",
                            json.size(), limits.max_function_bytes));
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  element doc;
  if (auto err = parser.parse(padded).get(doc))
    return fail(ErrorKind::invalid, "parse function document", {},
                fmt::format("malformed JSON: {}", simdjson::error_message(err)));
  simdjson::dom::object obj;
  if (doc.get_object().get(obj))
    return fail(ErrorKind::invalid, "parse function document", {},
                fmt::format("expected a JSON object, got {}", type_name(doc.type())));

  pool::FunctionSpec spec;
  spec.name = std::string(name);
  spec.limits.memory_bytes = 256 * MiB;
  spec.limits.cpus = 1.0;
  spec.limits.pids = defaults.pids_limit;
  spec.user = defaults.user;
  spec.read_only_rootfs = defaults.read_only_rootfs;
  spec.cap_drop = defaults.cap_drop;
  spec.seccomp_profile = defaults.seccomp_profile.empty() ? "default" : defaults.seccomp_profile;
  spec.nofile = defaults.nofile;
  spec.userns = defaults.userns;
  spec.lifecycle = defaults.lifecycle;
  spec.init_timeout = defaults.init_timeout;
  spec.idle_timeout = defaults.idle_timeout;
  spec.network.egress_default = defaults.egress_default;
  std::set<std::string_view> seen;
  bool have_image = false;
  std::optional<uint32_t> max_events;
  bool lifecycle_given = false;
  for (auto kv : obj) {
    std::string_view k = kv.key;
    element v = kv.value;
    if (!seen.insert(k).second) return field_error(k, "is given twice");
    if (k == "name") {
      // Accepted so a GET body can be PUT back; it must agree with the URL.
      auto n = FNEXEC_TRY(get_string(k, v));
      if (n != name) return field_error(k, fmt::format("is \"{}\" but the URL names \"{}\"", n, name));
    } else if (k == "image") {
      spec.image = FNEXEC_TRY(get_string(k, v));
      if (spec.image.empty()) return field_error(k, "must not be empty");
      have_image = true;
    } else if (k == "entrypoint" || k == "cmd") {
      if (v.is_null()) continue;
      auto list = FNEXEC_TRY(get_string_array(k, v, limits.max_array_entries, "max_array_entries"));
      (k == "entrypoint" ? spec.entrypoint : spec.cmd) = std::move(list);
    } else if (k == "env") {
      spec.env = FNEXEC_TRY(get_env(v, limits));
      if (uint64_t n = total_bytes(spec.env); n > limits.max_env_bytes)
        return over_limit("env", "bytes", n, "max_env_bytes", limits.max_env_bytes);
    } else if (k == "workdir") {
      spec.workdir = FNEXEC_TRY(get_string(k, v));
      if (!spec.workdir.empty() && spec.workdir[0] != '/') return field_error(k, "must be an absolute path");
    } else if (k == "user") {
      spec.user = FNEXEC_TRY(get_string(k, v));
    } else if (k == "read_only_rootfs") {
      bool b = false;
      if (v.get_bool().get(b))
        return field_error(k, fmt::format("must be true or false, got {}", type_name(v.type())));
      spec.read_only_rootfs = b;
    } else if (k == "cap_add" || k == "cap_drop") {
      auto list = FNEXEC_TRY(get_string_array(k, v, limits.max_array_entries, "max_array_entries"));
      for (const auto& name : list) {
        if (name == "ALL" || name == "all") continue;
        if (auto cap = sandbox::capability_from_name(name, k); !cap)
          return field_error(k, fmt::format("\"{}\" is not a capability (e.g. NET_ADMIN, CAP_SYS_PTRACE, ALL)", name));
      }
      (k == "cap_add" ? spec.cap_add : spec.cap_drop) = std::move(list);
    } else if (k == "seccomp_profile") {
      if (v.type() == element_type::OBJECT) {
        // An inline profile is kept as its compact JSON text and compiled now, so a bad one is
        // refused here with its path instead of at the first sandbox start.
        spec.seccomp_profile = simdjson::minify(v);
        if (auto f = sandbox::seccomp_filter_from_profile(spec.seccomp_profile, "seccomp_profile",
                                                          sandbox::default_capabilities());
            !f)
          return std::unexpected(f.error());
      } else {
        spec.seccomp_profile = FNEXEC_TRY(get_string(k, v));
        if (spec.seccomp_profile.empty()) spec.seccomp_profile = "default";
        if (!spec.seccomp_profile.empty() && spec.seccomp_profile.front() == '{')
          return field_error(k, "an inline profile is a JSON object, not a string");
        if (auto r = sandbox::check_seccomp_profile_reference(spec.seccomp_profile); !r)
          return std::unexpected(r.error());
      }
    } else if (k == "nofile") {
      if (v.is_null())
        spec.nofile.reset();  // as GET shows an unset limit
      else
        spec.nofile = FNEXEC_TRY(get_uint(k, v, 16, 1 << 20));
    } else if (k == "userns") {
      bool b = false;
      if (v.get_bool().get(b))
        return field_error(k, fmt::format("must be true or false, got {}", type_name(v.type())));
      spec.userns = b;
    } else if (k == "volumes") {
      auto list = FNEXEC_TRY(get_string_array(k, v, limits.max_array_entries, "max_array_entries"));
      spec.volumes.clear();
      for (const auto& entry : list) spec.volumes.push_back(FNEXEC_TRY(parse_volume(entry)));
    } else if (k == "devices") {
      // Checked against fnexec.conf device_allow when the daemon configures the function.
      auto list = FNEXEC_TRY(get_string_array(k, v, limits.max_array_entries, "max_array_entries"));
      spec.devices.clear();
      for (const auto& entry : list) {
        auto node = sandbox::parse_device(entry, "devices");
        if (!node) return field_error(k, fmt::format("entry \"{}\": {}", entry, node.error().detail));
        spec.devices.push_back(std::move(*node));
      }
    } else if (k == "memory_mb") {
      spec.limits.memory_bytes = FNEXEC_TRY(get_uint(k, v, 4, 1 << 20)) * MiB;
    } else if (k == "cpus") {
      double c = 0;
      if (v.get_double().get(c))
        return field_error(k, fmt::format("must be a number, got {}", type_name(v.type())));
      if (!(c > 0 && c <= 1024))
        return field_error(k, fmt::format("must be above 0 and at most 1024, got {}", c));
      spec.limits.cpus = c;
    } else if (k == "pids_limit") {
      spec.limits.pids = FNEXEC_TRY(get_uint(k, v, 1, 1 << 22));
    } else if (k == "timeout_ms") {
      spec.timeout = std::chrono::milliseconds(FNEXEC_TRY(get_uint(k, v, 1, 24ull * 3600 * 1000)));
    } else if (k == "min_warm") {
      spec.min_warm = static_cast<uint32_t>(FNEXEC_TRY(get_uint(k, v, 0, 1024)));
    } else if (k == "max_concurrency") {
      spec.max_concurrency = static_cast<uint32_t>(FNEXEC_TRY(get_uint(k, v, 1, 1024)));
    } else if (k == "idle_timeout_s") {
      spec.idle_timeout = std::chrono::seconds(FNEXEC_TRY(get_uint(k, v, 0, 365ull * 24 * 3600)));
    } else if (k == "max_output_bytes") {
      spec.max_output_bytes = FNEXEC_TRY(get_uint(k, v, 1, 256 * MiB));
    } else if (k == "max_log_bytes") {
      spec.max_log_bytes = FNEXEC_TRY(get_uint(k, v, 0, 16 * MiB));
    } else if (k == "lifecycle") {
      auto text = FNEXEC_TRY(get_string(k, v));
      auto l = pool::parse_lifecycle(text);
      if (!l) return field_error(k, fmt::format("must be oneshot, fresh or reuse, got \"{}\"", text));
      spec.lifecycle = *l;
      lifecycle_given = true;
    } else if (k == "protocol") {
      auto text = FNEXEC_TRY(get_string(k, v));
      auto p = pool::parse_protocol(text);
      if (!p) return field_error(k, fmt::format("must be fnexec or lambda, got \"{}\"", text));
      spec.protocol = *p;
    } else if (k == "handler") {
      spec.handler = FNEXEC_TRY(get_string(k, v));
    } else if (k == "max_events_per_sandbox") {
      max_events = static_cast<uint32_t>(FNEXEC_TRY(get_uint(k, v, 0, UINT32_MAX)));
    } else if (k == "init_timeout_ms") {
      spec.init_timeout = std::chrono::milliseconds(FNEXEC_TRY(get_uint(k, v, 1, 3600ull * 1000)));
    } else if (is_network_field(k)) {
      FNEXEC_TRY(parse_network_field(k, v, spec.network, limits));
    } else if (k == "retries") {  // async delivery: retries, retry_backoff
      spec.retries = static_cast<uint32_t>(FNEXEC_TRY(get_uint(k, v, 0, pool::kMaxRetries)));
    } else if (k == "retry_backoff") {
      spec.retry_backoff = FNEXEC_TRY(get_retry_backoff(v));
    } else {
      return fail(
          ErrorKind::invalid, "accept function", {},
          fmt::format("unknown field \"{}\"; known: image, entrypoint, cmd, env, workdir, user, "
                      "read_only_rootfs, cap_add, cap_drop, seccomp_profile, nofile, userns, volumes, devices, memory_mb, "
                      "cpus, pids_limit, timeout_ms, min_warm, max_concurrency, idle_timeout_s, "
                      "max_output_bytes, max_log_bytes, lifecycle, max_events_per_sandbox, "
                      "init_timeout_ms, protocol, handler, network, dns, add_hosts, egress_allow, "
                      "egress_deny, egress_default, retries, retry_backoff",
                      k));
    }
  }
  if (spec.protocol == pool::Protocol::lambda) {
    // Lambda's model is a warm runtime serving event after event.
    if (!lifecycle_given) spec.lifecycle = pool::Lifecycle::reuse;
    if (spec.lifecycle == pool::Lifecycle::oneshot)
      return field_error("lifecycle", "is oneshot, but protocol lambda needs reuse (Lambda's model) or fresh");
  } else if (!spec.handler.empty()) {
    return field_error("handler", "applies to protocol lambda only; this function speaks fnexec");
  }
  // 0 (unlimited) is what GET returns for every lifecycle, so only a real limit is refused on the
  // lifecycles that serve one event per process anyway.
  if (max_events && *max_events != 0 && spec.lifecycle != pool::Lifecycle::reuse)
    return field_error("max_events_per_sandbox",
                       fmt::format("({}) applies to lifecycle reuse only; this function is {}", *max_events,
                                   pool::to_string(spec.lifecycle)));
  spec.max_events_per_sandbox = max_events.value_or(
      spec.lifecycle == pool::Lifecycle::reuse ? defaults.max_events_per_sandbox : 0);
  FNEXEC_TRY(check_network(spec.network));
  if (!have_image) return field_error("image", "is required (an image reference such as hello:latest)");
  uint64_t argv_bytes = (spec.entrypoint ? total_bytes(*spec.entrypoint) : 0) + (spec.cmd ? total_bytes(*spec.cmd) : 0);
  if (argv_bytes > limits.max_argv_bytes)
    return over_limit("entrypoint\" and \"cmd", "bytes", argv_bytes, "max_argv_bytes", limits.max_argv_bytes);
  if (spec.min_warm > spec.max_concurrency)
    return field_error("min_warm", fmt::format("({}) must not exceed max_concurrency ({})", spec.min_warm,
                                               spec.max_concurrency));
  return spec;
}

std::string function_spec_json(const pool::FunctionSpec& s) {
  JsonWriter w;
  w.begin_object().field("name", s.name).field("image", s.image);
  w.key("entrypoint");
  s.entrypoint ? w.value(*s.entrypoint) : w.null();
  w.key("cmd");
  s.cmd ? w.value(*s.cmd) : w.null();
  w.field("env", s.env).field("workdir", s.workdir).field("user", s.user);
  w.field("read_only_rootfs", s.read_only_rootfs).field("cap_add", s.cap_add).field("cap_drop", s.cap_drop);
  w.key("seccomp_profile");
  // An inline profile goes back as the object it was given as.
  if (!s.seccomp_profile.empty() && s.seccomp_profile.front() == '{')
    w.raw(s.seccomp_profile);
  else
    w.value(s.seccomp_profile);
  w.key("nofile");
  s.nofile ? w.value(*s.nofile) : w.null();
  w.field("userns", s.userns);
  std::vector<std::string> volumes;
  for (const auto& v : s.volumes)
    volumes.push_back(fmt::format("{}:{}:{}", v.source.string(), v.target, v.read_only ? "ro" : "rw"));
  w.field("volumes", volumes);
  std::vector<std::string> devices;
  for (const auto& d : s.devices) devices.push_back(sandbox::to_string(d));
  w.field("devices", devices);
  w.field("memory_mb", s.limits.memory_bytes.value_or(0) / MiB);
  w.field("cpus", s.limits.cpus.value_or(0));
  w.field("pids_limit", s.limits.pids.value_or(0));
  w.field("timeout_ms", static_cast<uint64_t>(s.timeout.count()));
  w.field("min_warm", s.min_warm).field("max_concurrency", s.max_concurrency);
  w.field("idle_timeout_s", static_cast<uint64_t>(s.idle_timeout.count()));
  w.field("max_output_bytes", s.max_output_bytes).field("max_log_bytes", s.max_log_bytes);
  w.field("lifecycle", pool::to_string(s.lifecycle));
  w.field("max_events_per_sandbox", s.max_events_per_sandbox);
  w.field("init_timeout_ms", static_cast<uint64_t>(s.init_timeout.count()));
  w.field("protocol", pool::to_string(s.protocol)).field("handler", s.handler);
  w.field("network", s.network.mode).field("dns", s.network.dns).field("add_hosts", s.network.add_hosts);
  w.field("egress_allow", s.network.egress_allow).field("egress_deny", s.network.egress_deny);
  w.field("egress_default", s.network.egress_default);
  w.field("retries", s.retries).key("retry_backoff").begin_object();
  w.field("initial_ms", static_cast<uint64_t>(s.retry_backoff.initial.count()));
  w.field("multiplier", s.retry_backoff.multiplier);
  w.field("max_ms", static_cast<uint64_t>(s.retry_backoff.max.count())).end_object();
  w.end_object();
  return w.take();
}

std::string json_or_string(std::string_view text) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::element doc;
  if (!text.empty() && !parser.parse(padded).get(doc)) return std::string(text);
  return json_string(text);
}

uint64_t billed_ms(uint64_t wall_us) {
  return (wall_us + 999) / 1000;
}

std::string_view to_string(Outcome o) {
  switch (o) {
    case Outcome::success:
      return "success";
    case Outcome::error:
      return "error";
    case Outcome::timeout:
      return "timeout";
    case Outcome::oom:
      return "oom";
    case Outcome::output_too_large:
      return "output_too_large";
    case Outcome::setup_error:
      return "setup_error";
    case Outcome::rejected:
      return "rejected";
    case Outcome::failed:
      return "failed";
    case Outcome::lost:
      return "lost";
  }
  return "failed";
}

Outcome classify(const pool::InvocationResult& r) {
  const auto& rec = r.record;
  if (r.output_too_large) return Outcome::output_too_large;
  if (rec.timed_out) return Outcome::timeout;
  if (rec.oom_killed) return Outcome::oom;
  if (rec.setup_error) return Outcome::setup_error;
  if (!r.error_type.empty()) return Outcome::error;  // fresh/reuse: an ERROR frame, a crash, a bad frame
  if (rec.exit_code != 0 || rec.signal) return Outcome::error;
  return Outcome::success;
}

unsigned http_status(Outcome o) {
  switch (o) {
    case Outcome::success:
      return 200;
    case Outcome::timeout:
      return 504;
    case Outcome::rejected:
      return 429;
    case Outcome::failed:
    case Outcome::lost:
      return 500;
    default:
      return 502;
  }
}

unsigned http_status(const Error& e) {
  switch (e.kind) {
    case ErrorKind::invalid:
    case ErrorKind::corrupt:
      return 400;
    case ErrorKind::not_found:
      return 404;
    case ErrorKind::exists:
      return 409;
    case ErrorKind::unavailable:
      return 503;
    case ErrorKind::protocol:
      return 502;
    case ErrorKind::too_large:
      return 413;  // the function, fnexec's upstream, misbehaved
    case ErrorKind::internal:
      return 500;
  }
  return 500;
}

Result<uint64_t> query_uint(const std::map<std::string, std::string>& query, const std::string& key,
                            uint64_t fallback, uint64_t max) {
  auto it = query.find(key);
  if (it == query.end()) return fallback;
  uint64_t v = 0;
  const auto& s = it->second;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || s.empty())
    return fail(ErrorKind::invalid, "read query parameter", key,
                fmt::format("'{}' is not an unsigned integer", s));
  if (v > max)
    return fail(ErrorKind::invalid, "read query parameter", key,
                fmt::format("{} is above the maximum {}", v, max));
  return v;
}

}  // namespace fnexec::server
