// fnexec's default seccomp profile, built with libseccomp. fnexec itself loads the copy that
// seccomp_gen.cc compiled at build time (libseccomp's compile took ~4.7 ms of CPU per `fnexec
// run`, bench/seccomp.sh); this builder is what the generator runs and what the unit test compares
// that copy against.
#pragma once

#include <linux/filter.h>

#include <cstddef>
#include <vector>

#include "util/error.h"

namespace fnexec::sandbox {

Result<std::vector<sock_filter>> build_default_seccomp_filter();

struct SeccompDefaultCounts {
  size_t allowed = 0;  // syscalls allowed (some only with argument filters)
  size_t denied = 0;   // syscalls refused with EPERM
};
SeccompDefaultCounts seccomp_default_counts();

}  // namespace fnexec::sandbox
