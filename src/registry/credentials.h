// Registry credentials as podman, skopeo and docker keep them: --creds USER:PASS, containers'
// auth.json ($REGISTRY_AUTH_FILE, then ${XDG_RUNTIME_DIR}/containers/auth.json) and
// ~/.docker/config.json, each {"auths": {"HOST[:PORT]": {"auth": base64("USER:PASS")}}}, or a
// credential helper the file names: {"credHelpers": {"HOST": "NAME"}} or {"credsStore": "NAME"} runs
// `docker-credential-NAME get` with the registry on stdin (docker's order: credHelpers, credsStore, auths).
// Nothing here logs or formats a password: errors name the file or helper, never its content.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "util/error.h"

namespace fnexec::registry {

struct Credentials {
  std::string username;
  std::string password;
  std::string source;  // where they came from, for errors: "--creds", "/root/.docker/config.json"
};

// "USER:PASS" (the password may contain ':').
Result<Credentials> parse_creds(std::string_view user_colon_pass);

// The credentials for registry (as written in the reference: "127.0.0.1:5000", "docker.io").
// auth_file: an explicit file (--authfile, the daemon's registry_auth_file) searched instead of the
// default locations. nullopt when no file names the registry.
Result<std::optional<Credentials>> lookup_credentials(std::string_view registry, const std::string& auth_file = {});

}  // namespace fnexec::registry
