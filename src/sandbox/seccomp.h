// Seccomp: filters built with libseccomp and exported as classic BPF in the parent; loaded with
// one prctl in the child (no library call there).
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace fnexec::sandbox {

// fnexec's default profile: allow by default, EPERM for the deny list (see seccomp.cc), clone with
// namespace flags EPERM, clone3 ENOSYS, personality other than PER_LINUX or the 0xffffffff query
// EPERM, and any other ABI than the native one kills the process.
Result<std::vector<sock_filter>> default_seccomp_filter();

// An OCI runtime-spec or Docker seccomp profile (JSON). `origin` names it in errors (the file).
// `capabilities` is the sandbox's bounding set, for Docker's includes/excludes "caps" conditions.
Result<std::vector<sock_filter>> seccomp_filter_from_profile(std::string_view json, std::string_view origin,
                                                             uint64_t capabilities);
Result<std::vector<sock_filter>> seccomp_filter_from_file(const std::string& path, uint64_t capabilities);

}  // namespace fnexec::sandbox
