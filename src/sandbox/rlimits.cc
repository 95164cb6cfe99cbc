#include "sandbox/rlimits.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <utility>

namespace fnexec::sandbox {

namespace {

constexpr std::array<std::pair<std::string_view, int>, 14> kNames{{
    {"nofile", RLIMIT_NOFILE},
    {"nproc", RLIMIT_NPROC},
    {"core", RLIMIT_CORE},
    {"as", RLIMIT_AS},
    {"cpu", RLIMIT_CPU},
    {"fsize", RLIMIT_FSIZE},
    {"memlock", RLIMIT_MEMLOCK},
    {"stack", RLIMIT_STACK},
    {"nice", RLIMIT_NICE},
    {"rtprio", RLIMIT_RTPRIO},
    {"msgqueue", RLIMIT_MSGQUEUE},
    {"sigpending", RLIMIT_SIGPENDING},
    {"locks", RLIMIT_LOCKS},
    {"data", RLIMIT_DATA},
}};

std::string_view resource_name(int resource) {
  for (const auto& [name, r] : kNames)
    if (r == resource) return name;
  return "?";
}

std::string value_text(rlim_t v) {
  return v == RLIM_INFINITY ? "unlimited" : std::to_string(v);
}

std::optional<rlim_t> parse_value(std::string_view s) {
  if (s == "unlimited" || s == "-1") return RLIM_INFINITY;
  rlim_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || v == RLIM_INFINITY) return std::nullopt;
  return v;
}

}  // namespace

Result<Rlimit> parse_ulimit(std::string_view arg) {
  auto bad = [&](std::string detail) {
    return fail(ErrorKind::invalid, "use --ulimit", std::string(arg), std::move(detail));
  };
  auto eq = arg.find('=');
  if (eq == std::string_view::npos) return bad("expected NAME=SOFT[:HARD], like nofile=1024:2048");
  std::string_view name = arg.substr(0, eq), values = arg.substr(eq + 1);
  auto it = std::find_if(kNames.begin(), kNames.end(), [&](const auto& n) { return n.first == name; });
  if (it == kNames.end()) {
    std::string known;
    for (const auto& n : kNames) known += (known.empty() ? "" : " ") + std::string(n.first);
    return bad("unknown limit '" + std::string(name) + "' (known: " + known + ")");
  }
  auto colon = values.find(':');
  auto soft = parse_value(values.substr(0, colon));
  auto hard = colon == std::string_view::npos ? soft : parse_value(values.substr(colon + 1));
  if (!soft || !hard) return bad("a limit is a non-negative integer or 'unlimited'");
  // RLIM_INFINITY is the largest rlim_t, so plain comparison orders 'unlimited' last.
  if (*soft > *hard) return bad("soft limit above the hard limit");
  return Rlimit{it->second, *soft, *hard};
}

Result<std::vector<Rlimit>> sandbox_rlimits(const std::vector<std::string>& ulimits, bool may_raise) {
  auto current = [](int resource) {
    rlimit r{};
    ::getrlimit(resource, &r);
    return r;
  };
  std::vector<Rlimit> limits;
  auto set = [&](Rlimit l) {
    auto same =
        std::find_if(limits.begin(), limits.end(), [&](const Rlimit& x) { return x.resource == l.resource; });
    if (same != limits.end())
      *same = l;
    else
      limits.push_back(l);
  };
  // 1024 keeps select()-based code safe and bounds a function's fds; never above what we may set.
  rlim_t nofile = std::min<rlim_t>(1024, current(RLIMIT_NOFILE).rlim_max);
  set({RLIMIT_NOFILE, nofile, nofile});
  // No core files: they would land in the sandbox's throwaway upper layer or, with a host
  // core_pattern pipe, run a host helper on the sandbox's behalf.
  set({RLIMIT_CORE, 0, 0});
  // NPROC stays inherited: the kernel counts it per real uid across the whole host, so a fixed
  // value would be shared by every sandbox of that uid; the cgroup pids limit is the per-sandbox cap.
  for (const auto& arg : ulimits) {
    Rlimit l = FNEXEC_TRY(parse_ulimit(arg));
    rlim_t max = current(l.resource).rlim_max;
    if (!may_raise && l.hard > max) {
      return fail(ErrorKind::invalid, "use --ulimit", arg,
                  "hard limit " + value_text(l.hard) + " is above the current hard " +
                      std::string(resource_name(l.resource)) + " limit " + value_text(max) +
                      " and raising it needs CAP_SYS_RESOURCE; ask for at most " + value_text(max));
    }
    set(l);
  }
  return limits;
}

}  // namespace fnexec::sandbox
