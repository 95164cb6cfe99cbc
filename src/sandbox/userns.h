// --userns=auto: a user namespace mapping sandbox root to an unprivileged host id range.
#pragma once

#include <string_view>

#include "sandbox/spec.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::sandbox {

// The "fnexec:FIRST:COUNT" line of /etc/subuid (and /etc/subgid: must agree), else 100000:65536.
Result<IdRange> default_id_range();
// Parses subuid-format text; nullopt-like error kind not_found when no "fnexec" line.
Result<IdRange> parse_subid(std::string_view text, std::string_view user);

// A user namespace whose uid and gid maps are "0 FIRST COUNT", held by an fd. Made by a short-lived
// child that only unshares and waits; the sandbox joins it with setns after its mounts, and the
// layers are id-mapped into it so image files owned by 0 appear owned by root inside.
Result<UniqueFd> make_user_namespace(const IdRange& range);

}  // namespace fnexec::sandbox
