// Seccomp: filters as classic BPF, loaded with one prctl in the child (no library call there).
// The default profile's BPF is compiled at build time (seccomp_gen.cc); JSON profiles are built
// with libseccomp in the parent.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace fnexec::sandbox {

// fnexec's default profile: an allowlist (see seccomp.cc); any syscall not on it answers ENOSYS,
// the dangerous ones EPERM, clone with namespace flags EPERM, clone3 ENOSYS, socket(AF_VSOCK)
// EAFNOSUPPORT, personality other than PER_LINUX or the 0xffffffff query EPERM, and any other ABI
// than the native one (i386, x32) kills the process.
Result<std::vector<sock_filter>> default_seccomp_filter();

// What the default profile holds, for `fnexec info`.
struct SeccompProfileSummary {
  size_t allowed = 0;       // syscalls allowed (some only with argument filters)
  size_t denied = 0;        // syscalls refused with EPERM
  size_t instructions = 0;  // BPF instructions the kernel runs at most
};
Result<SeccompProfileSummary> default_seccomp_summary();

// An OCI runtime-spec or Docker seccomp profile (JSON). `origin` names it in errors (the file).
// `capabilities` is the sandbox's bounding set, for Docker's includes/excludes "caps" conditions.
Result<std::vector<sock_filter>> seccomp_filter_from_profile(std::string_view json, std::string_view origin,
                                                             uint64_t capabilities);
Result<std::vector<sock_filter>> seccomp_filter_from_file(const std::string& path, uint64_t capabilities);

// A profile as a function names it: "default", "unconfined", inline JSON (starts with '{') or
// NAME, read from DIR/NAME.json. NAME is letters, digits, '.', '_' and '-' only. Checks only.
Result<> check_seccomp_profile_reference(std::string_view ref);

}  // namespace fnexec::sandbox
