#include "registry/credentials.h"

#include <simdjson.h>
#include <sys/stat.h>

#include <cstdlib>
#include <vector>

#include "server/json.h"
#include "util/fs.h"

namespace fnexec::registry {

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// The keys a file may use for registry: "HOST", "https://HOST", "HOST/v1/"; docker.io has its old name.
bool key_matches(std::string_view key, std::string_view registry) {
  if (key.starts_with("https://")) key.remove_prefix(8);
  else if (key.starts_with("http://")) key.remove_prefix(7);
  if (auto slash = key.find('/'); slash != std::string_view::npos) key = key.substr(0, slash);
  if (registry == "docker.io") return key == "docker.io" || key == "index.docker.io" || key == "registry-1.docker.io";
  return key == registry;
}

Result<std::optional<Credentials>> read_auth_file(const std::string& path, std::string_view registry) {
  auto text = FNEXEC_TRY(fs::read_file(path));
  auto bad = [&](std::string detail) {
    return fail(ErrorKind::invalid, "read registry credentials", path, std::move(detail));
  };
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::object root, auths;
  if (parser.parse(padded).get_object().get(root)) return bad("not a JSON object");
  if (root["auths"].get_object().get(auths)) return std::optional<Credentials>{};
  for (auto field : auths) {
    if (!key_matches(field.key, registry)) continue;
    std::string_view encoded;
    if (field.value["auth"].get_string().get(encoded)) continue;  // a credential helper's entry: not supported
    auto decoded = server::base64_decode(encoded);
    if (!decoded) return bad("the \"auth\" of " + std::string(field.key) + " is not base64");
    auto colon = decoded->find(':');
    if (colon == std::string::npos) return bad("the \"auth\" of " + std::string(field.key) + " is not base64(USER:PASS)");
    return std::optional<Credentials>{Credentials{decoded->substr(0, colon), decoded->substr(colon + 1), path}};
  }
  return std::optional<Credentials>{};
}

}  // namespace

Result<Credentials> parse_creds(std::string_view s) {
  auto colon = s.find(':');
  if (colon == std::string_view::npos || colon == 0)
    return fail(ErrorKind::invalid, "read --creds", {}, "want USER:PASS");
  return Credentials{std::string(s.substr(0, colon)), std::string(s.substr(colon + 1)), "--creds"};
}

Result<std::optional<Credentials>> lookup_credentials(std::string_view registry, const std::string& auth_file) {
  std::vector<std::string> files;
  if (!auth_file.empty()) {
    if (!exists(auth_file))
      return fail(ErrorKind::not_found, "read registry credentials", auth_file, "no such file");
    files.push_back(auth_file);
  } else {
    if (const char* f = std::getenv("REGISTRY_AUTH_FILE"); f && *f) files.emplace_back(f);
    if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) files.push_back(std::string(x) + "/containers/auth.json");
    if (const char* h = std::getenv("HOME"); h && *h) files.push_back(std::string(h) + "/.docker/config.json");
  }
  for (const auto& f : files) {
    if (!exists(f)) continue;
    auto found = FNEXEC_TRY(read_auth_file(f, registry));
    if (found) return found;
  }
  return std::optional<Credentials>{};
}

}  // namespace fnexec::registry
