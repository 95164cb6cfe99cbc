#include "sandbox/seccomp.h"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <simdjson.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>
#include <span>

#include "sandbox/capabilities.h"
#include "sandbox/seccomp_build.h"
#include "sandbox/seccomp_default.h"
#include "sandbox/seccomp_default_bpf.h"
#include "util/fs.h"
#include "util/log.h"

// FNEXEC_TRY yields the value, so it cannot take a Result<void>; this is its statement form.
namespace fnexec::sandbox {

namespace {

namespace dom = simdjson::dom;
using namespace seccomp_build;

bool known_to_libseccomp(std::string_view name) {
  std::string n(name);
  return seccomp_syscall_resolve_name(n.c_str()) != __NR_SCMP_ERROR;
}

bool has_foreign_arch(void* ctx) {
  for (uint32_t arch : std::initializer_list<uint32_t>{SCMP_ARCH_X86, SCMP_ARCH_X32, SCMP_ARCH_X86_64,
                                                      SCMP_ARCH_ARM, SCMP_ARCH_AARCH64})
    if (arch != seccomp_arch_native() && seccomp_arch_exist(ctx, arch) == 0) return true;
  return false;
}

// ---- OCI / Docker JSON profiles ----

struct Where {
  std::string_view origin;
  std::string path;  // "syscalls[3].args[0].op"
  std::unexpected<Error> bad(std::string detail) const {
    return fail(ErrorKind::invalid, "use seccomp profile", std::string(origin),
                (path.empty() ? "" : path + ": ") + std::move(detail));
  }
  Where at(std::string_view key) const {
    return {origin, path.empty() ? std::string(key) : path + "." + std::string(key)};
  }
  Where index(size_t i) const { return {origin, path + "[" + std::to_string(i) + "]"}; }
};

template <class T>
constexpr std::string_view type_name() {
  if constexpr (std::is_same_v<T, std::string_view>)
    return "a string";
  else if constexpr (std::is_same_v<T, uint64_t>)
    return "a non-negative integer";
  else if constexpr (std::is_same_v<T, dom::array>)
    return "an array";
  else
    return "an object";
}

// An optional member: absent or null → nullopt; present with the wrong type → error.
template <class T>
Result<std::optional<T>> member(dom::object obj, std::string_view key, const Where& where) {
  dom::element e;
  if (obj[key].get(e) != simdjson::SUCCESS || e.is_null()) return std::optional<T>{};
  T value;
  if (e.get(value) != simdjson::SUCCESS) return where.at(key).bad("expected " + std::string(type_name<T>()));
  return std::optional<T>{value};
}

template <class T>
Result<T> required(dom::object obj, std::string_view key, const Where& where) {
  auto v = FNEXEC_TRY(member<T>(obj, key, where));
  if (!v) return where.at(key).bad("missing");
  return *v;
}

Result<std::vector<std::string_view>> strings(dom::array arr, const Where& where) {
  std::vector<std::string_view> out;
  size_t i = 0;
  for (dom::element e : arr) {
    std::string_view s;
    if (e.get(s) != simdjson::SUCCESS) return where.index(i).bad("expected a string");
    out.push_back(s);
    ++i;
  }
  return out;
}

// Calls visit(object, where) for each element of arr, which must all be objects.
template <class Visit>
Result<> for_each_object(dom::array arr, const Where& where, Visit&& visit) {
  size_t i = 0;
  for (dom::element e : arr) {
    Where w = where.index(i++);
    dom::object obj;
    if (e.get(obj) != simdjson::SUCCESS) return w.bad("expected an object");
    if (Result<> r = visit(obj, w); !r) return r;
  }
  return {};
}

// The kernel hands back at most MAX_ERRNO (4095) as an errno.
Result<uint16_t> errno_member(dom::object obj, std::string_view key, uint16_t fallback, const Where& where) {
  auto err = FNEXEC_TRY(member<uint64_t>(obj, key, where));
  if (!err) return fallback;
  if (*err > 4095) return where.at(key).bad(std::to_string(*err) + " is not an errno (at most 4095)");
  return static_cast<uint16_t>(*err);
}

Result<uint32_t> parse_action(std::string_view name, uint16_t data, const Where& where) {
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(data);
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(data);
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  if (name == "SCMP_ACT_NOTIFY")
    return where.bad("SCMP_ACT_NOTIFY needs a seccomp agent, which fnexec does not run");
  return where.bad("unknown action '" + std::string(name) +
                   "' (expected SCMP_ACT_ALLOW, ERRNO, KILL, KILL_THREAD, KILL_PROCESS, TRAP, TRACE or LOG)");
}

Result<scmp_compare> parse_op(std::string_view op, const Where& where) {
  if (op == "SCMP_CMP_NE") return SCMP_CMP_NE;
  if (op == "SCMP_CMP_LT") return SCMP_CMP_LT;
  if (op == "SCMP_CMP_LE") return SCMP_CMP_LE;
  if (op == "SCMP_CMP_EQ") return SCMP_CMP_EQ;
  if (op == "SCMP_CMP_GE") return SCMP_CMP_GE;
  if (op == "SCMP_CMP_GT") return SCMP_CMP_GT;
  if (op == "SCMP_CMP_MASKED_EQ") return SCMP_CMP_MASKED_EQ;
  return where.bad("unknown operator '" + std::string(op) +
                   "' (expected SCMP_CMP_NE, LT, LE, EQ, GE, GT or MASKED_EQ)");
}

// "SCMP_ARCH_X86_64" → libseccomp's token for "x86_64".
Result<uint32_t> parse_arch(std::string_view name, const Where& where) {
  std::string lower;
  std::string_view bare = name.starts_with("SCMP_ARCH_") ? name.substr(10) : name;
  for (char c : bare) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  uint32_t token = seccomp_arch_resolve_name(lower.c_str());
  if (token == 0) return where.bad("unknown architecture '" + std::string(name) + "'");
  return token;
}

// Docker writes conditions with Go's architecture names ("amd64"); libseccomp's are accepted too.
bool is_native_arch(std::string_view name) {
#if defined(__x86_64__)
  return name == "amd64" || name == "x86_64" || name == "SCMP_ARCH_X86_64";
#elif defined(__aarch64__)
  return name == "arm64" || name == "aarch64" || name == "SCMP_ARCH_AARCH64";
#else
  return false;
#endif
}

bool kernel_at_least(std::string_view version) {
  int want_major = 0, want_minor = 0, major = 0, minor = 0;
  std::string v(version);
  if (std::sscanf(v.c_str(), "%d.%d", &want_major, &want_minor) < 1) return true;
  utsname u{};
  if (::uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) < 1) return true;
  return major > want_major || (major == want_major && minor >= want_minor);
}

// Docker's includes/excludes: a rule can depend on the capabilities, the architecture and the kernel.
Result<bool> rule_applies(dom::object entry, uint64_t capabilities, const Where& where) {
  auto has_cap = [&](std::string_view name) {
    auto cap = capability_from_name(name, "seccomp profile");
    return cap && (capabilities & (uint64_t{1} << *cap));
  };
  for (bool include : {true, false}) {
    std::string_view key = include ? "includes" : "excludes";
    auto cond = FNEXEC_TRY(member<dom::object>(entry, key, where));
    if (!cond) continue;
    Where w = where.at(key);
    if (auto caps = FNEXEC_TRY(member<dom::array>(*cond, "caps", w))) {
      auto names = FNEXEC_TRY(strings(*caps, w.at("caps")));
      if (!names.empty()) {
        bool all = std::all_of(names.begin(), names.end(), has_cap);
        bool any = std::any_of(names.begin(), names.end(), has_cap);
        if (include ? !all : any) return false;
      }
    }
    if (auto arches = FNEXEC_TRY(member<dom::array>(*cond, "arches", w))) {
      auto names = FNEXEC_TRY(strings(*arches, w.at("arches")));
      if (!names.empty()) {
        bool native = std::any_of(names.begin(), names.end(), is_native_arch);
        if (include != native) return false;
      }
    }
    if (auto min_kernel = FNEXEC_TRY(member<std::string_view>(*cond, "minKernel", w))) {
      if (include != kernel_at_least(*min_kernel)) return false;
    }
  }
  return true;
}

Result<std::vector<scmp_arg_cmp>> parse_args(dom::array args, const Where& where) {
  std::vector<scmp_arg_cmp> out;
  auto parsed = for_each_object(args, where, [&](dom::object arg, const Where& w) -> Result<> {
    uint64_t index = FNEXEC_TRY(required<uint64_t>(arg, "index", w));
    if (index > 5) return w.at("index").bad("a syscall has arguments 0 to 5");
    uint64_t value = FNEXEC_TRY(required<uint64_t>(arg, "value", w));
    uint64_t value_two = FNEXEC_TRY(member<uint64_t>(arg, "valueTwo", w)).value_or(0);
    scmp_compare op = FNEXEC_TRY(parse_op(FNEXEC_TRY(required<std::string_view>(arg, "op", w)), w.at("op")));
    // OCI: for MASKED_EQ, value is the mask and valueTwo the value; libseccomp takes them in that order.
    out.push_back(scmp_arg_cmp{static_cast<unsigned>(index), op, value, value_two});
    return {};
  });
  if (!parsed) return std::unexpected(std::move(parsed.error()));
  return out;
}

Result<> add_profile_entry(void* ctx, dom::object entry, uint32_t default_action, uint16_t default_errno,
                           uint64_t capabilities, const Where& where) {
  std::vector<std::string_view> names;
  if (auto list = FNEXEC_TRY(member<dom::array>(entry, "names", where)))
    names = FNEXEC_TRY(strings(*list, where.at("names")));
  if (auto one = FNEXEC_TRY(member<std::string_view>(entry, "name", where))) names.push_back(*one);
  auto action_name = FNEXEC_TRY(required<std::string_view>(entry, "action", where));
  uint16_t errno_ret = FNEXEC_TRY(errno_member(entry, "errnoRet", default_errno, where));
  uint32_t action = FNEXEC_TRY(parse_action(action_name, errno_ret, where.at("action")));
  std::vector<scmp_arg_cmp> args;
  if (auto list = FNEXEC_TRY(member<dom::array>(entry, "args", where)))
    args = FNEXEC_TRY(parse_args(*list, where.at("args")));
  if (!FNEXEC_TRY(rule_applies(entry, capabilities, where))) return {};
  // libseccomp refuses a rule that repeats the default action; it changes nothing, so runc skips it too.
  if (action == default_action) return {};

  // runc's reading of OCI: comparisons on distinct arguments must all hold (one rule); when an
  // argument repeats, libseccomp cannot AND them, so each comparison becomes its own rule.
  bool repeated = false;
  for (size_t i = 0; i < args.size(); ++i)
    for (size_t j = i + 1; j < args.size(); ++j) repeated |= args[i].arg == args[j].arg;

  for (size_t i = 0; i < names.size(); ++i) {
    std::string_view name = names[i];
    // libseccomp knows every architecture's names (other arches' resolve to pseudo numbers that
    // add no rule), so a name unknown to it and to kNewerSyscalls is a typo or a syscall newer
    // than fnexec: refused, rather than silently leaving the profile weaker or stronger than written.
    int nr = resolve_syscall(name);
    if (nr == __NR_SCMP_ERROR)
      return where.at("names").index(i).bad("unknown syscall '" + std::string(name) + "'");
    if (!known_to_libseccomp(name) && has_foreign_arch(ctx)) {
      // libseccomp 2.5 cannot translate a number it does not know to the other ABIs of a
      // multi-arch filter; the rule is left out and the call gets the default action.
      spdlog::warn("event=seccomp_rule_skipped name={} profile={} reason=\"newer than libseccomp; the "
                   "profile also lists other architectures\"",
                   name, where.origin);
      continue;
    }
    if (!repeated) {
      FNEXEC_TRY(add_rule(ctx, action, nr, args, name, where.origin));
    } else {
      for (const auto& cmp : args)
        FNEXEC_TRY(add_rule(ctx, action, nr, std::span(&cmp, 1), name, where.origin));
    }
  }
  return {};
}

}  // namespace

Result<std::vector<sock_filter>> default_seccomp_filter() {
  // Compiled at build time (seccomp_gen.cc): libseccomp's compile of this profile cost ~4.7 ms of
  // CPU per `fnexec run`; tests/unit/test_privileges.cc checks the copy equals a runtime build.
  return std::vector<sock_filter>(std::begin(generated::kDefaultSeccompFilter),
                                  std::end(generated::kDefaultSeccompFilter));
}

Result<SeccompProfileSummary> default_seccomp_summary() {
  auto counts = seccomp_default_counts();
  return SeccompProfileSummary{counts.allowed, counts.denied, std::size(generated::kDefaultSeccompFilter)};
}

Result<> check_seccomp_profile_reference(std::string_view ref) {
  if (ref.empty() || ref == "default" || ref == "unconfined" || ref.front() == '{') return {};
  bool plain = ref.size() <= 128 && ref.front() != '.' && std::all_of(ref.begin(), ref.end(), [](char c) {
                 return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
               });
  if (!plain)
    return fail(ErrorKind::invalid, "use seccomp_profile", std::string(ref),
                "expected default, unconfined, a JSON profile ({...}) or the NAME of a profile file "
                "(letters, digits, '.', '_', '-')");
  return {};
}

Result<std::vector<sock_filter>> seccomp_filter_from_profile(std::string_view json, std::string_view origin,
                                                             uint64_t capabilities) {
  Where top{origin, {}};
  dom::parser parser;
  simdjson::padded_string text(json);
  dom::element doc;
  if (auto err = parser.parse(text).get(doc); err != simdjson::SUCCESS)
    return top.bad(std::string("not valid JSON: ") + simdjson::error_message(err));
  dom::object root;
  if (doc.get(root) != simdjson::SUCCESS) return top.bad("expected a JSON object at the top");

  uint16_t default_errno = FNEXEC_TRY(errno_member(root, "defaultErrnoRet", EPERM, top));
  auto default_name = FNEXEC_TRY(required<std::string_view>(root, "defaultAction", top));
  uint32_t default_action = FNEXEC_TRY(parse_action(default_name, default_errno, top.at("defaultAction")));
  Context ctx = FNEXEC_TRY(new_context(default_action, origin));

  auto add_arch = [&](std::string_view name, const Where& w) -> Result<> {
    uint32_t token = FNEXEC_TRY(parse_arch(name, w));
    int rc = seccomp_arch_add(ctx.get(), token);
    if (rc < 0 && rc != -EEXIST)
      return w.bad("architecture '" + std::string(name) + "' refused by libseccomp");
    return {};
  };
  if (auto arches = FNEXEC_TRY(member<dom::array>(root, "architectures", top))) {
    Where w = top.at("architectures");
    auto names = FNEXEC_TRY(strings(*arches, w));
    for (size_t i = 0; i < names.size(); ++i) FNEXEC_TRY(add_arch(names[i], w.index(i)));
  }
  // Docker's archMap: the entry for the native architecture brings its sub-architectures (x86, x32).
  if (auto map = FNEXEC_TRY(member<dom::array>(root, "archMap", top))) {
    FNEXEC_TRY(for_each_object(*map, top.at("archMap"), [&](dom::object entry, const Where& w) -> Result<> {
      auto arch = FNEXEC_TRY(required<std::string_view>(entry, "architecture", w));
      if (FNEXEC_TRY(parse_arch(arch, w.at("architecture"))) != seccomp_arch_native()) return {};
      auto subs = FNEXEC_TRY(member<dom::array>(entry, "subArchitectures", w));
      auto names =
          subs ? FNEXEC_TRY(strings(*subs, w.at("subArchitectures"))) : std::vector<std::string_view>{};
      for (size_t i = 0; i < names.size(); ++i)
        FNEXEC_TRY(add_arch(names[i], w.at("subArchitectures").index(i)));
      return {};
    }));
  }
  if (FNEXEC_TRY(member<dom::array>(root, "flags", top))) {
    // The filter is loaded with prctl(PR_SET_SECCOMP), which takes no SECCOMP_FILTER_FLAG_*.
    spdlog::warn("event=seccomp_flags_ignored profile={} reason=\"fnexec loads filters without flags\"",
                 origin);
  }
  if (auto syscalls = FNEXEC_TRY(member<dom::array>(root, "syscalls", top))) {
    FNEXEC_TRY(for_each_object(*syscalls, top.at("syscalls"), [&](dom::object entry, const Where& w) {
      return add_profile_entry(ctx.get(), entry, default_action, default_errno, capabilities, w);
    }));
  }
  return export_bpf(ctx.get(), origin);
}

Result<std::vector<sock_filter>> seccomp_filter_from_file(const std::string& path, uint64_t capabilities) {
  auto text = fs::read_file(path);
  if (!text) return std::unexpected(std::move(text.error().context("use seccomp profile")));
  return seccomp_filter_from_profile(*text, path, capabilities);
}

}  // namespace fnexec::sandbox
