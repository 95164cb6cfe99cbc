// `fnexec info [--json] [--cgroups=auto|disabled]`: what this host's kernel gives fnexec.
#include <sys/utsname.h>

#include <cstdio>
#include <string>

#include "cgroup/cgroup.h"
#include "cli/commands.h"
#include "sandbox/seccomp.h"

namespace fnexec::cli {

namespace {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else
      out += c;
  }
  return out + "\"";
}

std::string json_list(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + json_string(v[i]);
  return out + "]";
}

std::string words(const std::vector<std::string>& v) {
  std::string out;
  for (auto& w : v) out += (out.empty() ? "" : " ") + w;
  return out.empty() ? "-" : out;
}

std::string kill_method(const cgroup::Hierarchy& h) {
  auto f = h.features();
  switch (h.mode()) {
    case cgroup::Mode::v2:
      return f.cgroup_kill ? "cgroup.kill" : f.freezer ? "cgroup.freeze+SIGKILL" : "SIGKILL";
    case cgroup::Mode::v1:
      return f.freezer ? "freezer+SIGKILL" : "SIGKILL";
    case cgroup::Mode::disabled:
      return "pid-namespace";
  }
  return "?";
}

int print_info(bool json, const std::string& cgroups_flag) {
  auto options = cgroup::options_from_flag(cgroups_flag);
  if (!options) return report(options.error());
  auto h = cgroup::Hierarchy::detect(*options);
  if (!h) return report(h.error());
  utsname u{};
  ::uname(&u);
  auto& hier = **h;
  auto f = hier.features();
  const char* yn[] = {"no", "yes"};
  auto seccomp = sandbox::default_seccomp_summary();
  if (!seccomp) return report(seccomp.error());
  std::string seccomp_text =
      "default allowlist: " + std::to_string(seccomp->allowed) + " syscalls allowed, " +
      std::to_string(seccomp->denied) + " EPERM, any other ENOSYS, other ABIs killed (" +
      std::to_string(seccomp->instructions) + " BPF instructions)";
  if (json) {
    std::printf(
        "{\"cgroup_mode\":%s,\"controllers\":%s,\"kernel\":%s,\"sandbox_parents\":%s,\"memory_peak\":%s,"
        "\"memory_peak_file\":%s,\"memory_peak_resettable\":%s,\"swap_limit\":%s,\"kill\":%s,"
        "\"clone_into_cgroup\":%s,\"device_policy\":%s,\"seccomp\":{\"profile\":\"default\",\"default_action\":\"ENOSYS\","
        "\"allowed\":%zu,\"denied\":%zu,\"bpf_instructions\":%zu}}\n",
        json_string(cgroup::to_string(hier.mode())).c_str(), json_list(hier.controllers()).c_str(),
        json_string(u.release).c_str(), json_list(hier.sandbox_parents()).c_str(),
        hier.has_memory_peak() ? "true" : "false",
        f.memory_peak_file.empty() ? "null" : json_string(f.memory_peak_file).c_str(),
        f.memory_peak_resettable ? "true" : "false", f.swap_limit ? "true" : "false",
        json_string(kill_method(hier)).c_str(), f.clone_into_cgroup ? "true" : "false",
        f.device_policy.empty() ? "null" : json_string(f.device_policy).c_str(), seccomp->allowed,
        seccomp->denied, seccomp->instructions);
    return 0;
  }
  std::printf("cgroup mode:       %s\n", std::string(cgroup::to_string(hier.mode())).c_str());
  std::printf("controllers:       %s\n", words(hier.controllers()).c_str());
  std::printf("kernel:            %s\n", u.release);
  auto parents = hier.sandbox_parents();
  if (parents.empty()) std::printf("sandbox parent:    -\n");
  for (size_t i = 0; i < parents.size(); ++i)
    std::printf("%s%s\n", i ? "                   " : "sandbox parent:    ", parents[i].c_str());
  std::printf(
      "memory peak:       %s%s\n", f.memory_peak_file.empty() ? "no" : f.memory_peak_file.c_str(),
      f.memory_peak && !f.memory_peak_resettable ? " (not resettable: pooled sandboxes include setup)" : "");
  std::printf("swap limit:        %s\n", yn[f.swap_limit]);
  std::printf("kill:              %s\n", kill_method(hier).c_str());
  std::printf("clone into cgroup: %s\n", yn[f.clone_into_cgroup]);
  std::printf("device policy:     %s\n",
              f.device_policy == "bpf"       ? "cgroup device program (BPF)"
              : f.device_policy == "devices" ? "v1 devices controller"
                                             : "none (the kernel cannot enforce one here)");
  std::printf("seccomp:           %s\n", seccomp_text.c_str());
  return 0;
}

}  // namespace

void add_info_command(CLI::App& app, Globals& g) {
  auto* sub =
      app.add_subcommand("info", "show the cgroup mode, controllers and kernel features fnexec will use");
  auto json = std::make_shared<bool>(false);
  auto cgroups = std::make_shared<std::string>("auto");
  sub->add_flag("--json", *json, "print one JSON object");
  sub->add_option("--cgroups", *cgroups,
                  "auto: cgroups are required; disabled: run without limits and accounting")
      ->check(CLI::IsMember({"auto", "disabled"}))
      ->capture_default_str();
  sub->callback([&g, json, cgroups] { g.exit_code = print_info(*json, *cgroups); });
}

}  // namespace fnexec::cli
