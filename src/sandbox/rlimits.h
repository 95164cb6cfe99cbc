// Resource limits: `--ulimit name=soft[:hard]` parsed in the parent, prlimit in the child.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "sandbox/privileges.h"
#include "util/error.h"

namespace fnexec::sandbox {

// Syntax only: "nofile=1024:2048", "core=0", "stack=unlimited" (or -1). One value sets soft and hard.
Result<Rlimit> parse_ulimit(std::string_view arg);

// The limits a sandbox gets: defaults (NOFILE 1024:1024 or lower, CORE 0:0; NPROC inherited) then
// each --ulimit in order. A hard limit above the current one is an error unless may_raise
// (the caller holds CAP_SYS_RESOURCE), because the kernel would refuse it in the child anyway.
Result<std::vector<Rlimit>> sandbox_rlimits(const std::vector<std::string>& ulimits, bool may_raise);

}  // namespace fnexec::sandbox
