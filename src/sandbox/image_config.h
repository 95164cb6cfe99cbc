// The function's process from its image's config plus the caller's overrides, by Docker's merge
// rules: one place for `fnexec run` and the warm pools.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "sandbox/privileges.h"
#include "sandbox/spec.h"
#include "util/error.h"

namespace fnexec::image {
struct ResolvedImage;
}

namespace fnexec::sandbox {

struct ProcessOverrides {
  std::optional<std::vector<std::string>> entrypoint;  // replaces the image's Entrypoint and drops its Cmd
  std::optional<std::vector<std::string>> cmd;         // replaces the image's Cmd
  std::vector<std::string> env;                        // "K=V", set over the image's
  std::optional<std::string> workdir;                  // absolute
  std::optional<std::string> user;  // "uid[:gid]", or names from the image's /etc/passwd and /etc/group
};

// Sets spec.argv, spec.env (PATH when the image has none, the overrides, HOSTNAME=spec.hostname,
// HOME from the user's passwd entry), spec.cwd, and privileges.uid/gid.
Result<> apply_image_config(const image::ResolvedImage& img, const ProcessOverrides& overrides, SandboxSpec& spec,
                            PrivilegeSpec& privileges);

// Sets K=V in env, replacing an existing K.
void set_env(std::vector<std::string>& env, const std::string& kv);
// set_env for each of overrides in order, in time linear in both sizes (one hash set of keys).
void merge_env(std::vector<std::string>& env, const std::vector<std::string>& overrides);

}  // namespace fnexec::sandbox
