// libseccomp plumbing shared by the default profile (seccomp_default.cc, also compiled into the
// build-time generator seccomp_gen.cc) and the JSON profiles (seccomp.cc): a filter context,
// rules, syscall names and the export to classic BPF. Internal to the sandbox module.
#pragma once

#include <linux/filter.h>
#include <seccomp.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace fnexec::sandbox::seccomp_build {

struct ContextRelease {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Context = std::unique_ptr<void, ContextRelease>;

// A context whose default action is default_action, that kills other ABIs (i386, x32) and builds a
// binary tree. `origin` names the profile in errors.
Result<Context> new_context(uint32_t default_action, std::string_view origin);

Result<> add_rule(void* ctx, uint32_t action, int nr, std::span<const scmp_arg_cmp> args,
                  std::string_view name, std::string_view origin);

// libseccomp's table first, then the syscalls newer than it; __NR_SCMP_ERROR for a name neither knows.
int resolve_syscall(std::string_view name);

// The filter as the kernel loads it; refuses one over BPF_MAXINSNS.
Result<std::vector<sock_filter>> export_bpf(void* ctx, std::string_view origin);

}  // namespace fnexec::sandbox::seccomp_build
