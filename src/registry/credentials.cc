#include "registry/credentials.h"

#include <simdjson.h>
#include <sys/stat.h>

#include <cstdlib>
#include <vector>

#include "bench/peers.h"
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

// docker-credential-NAME get, with the registry on stdin, as docker and podman run it. The
// helper's answer is {"ServerURL":..,"Username":..,"Secret":..}; "not found" is no credentials.
Result<std::optional<Credentials>> from_helper(std::string_view name, std::string_view registry, const std::string& file,
                                               std::string_view setting) {
  std::string program = "docker-credential-" + std::string(name);
  auto bad = [&](std::string detail) {
    return fail(ErrorKind::invalid, "get registry credentials", program,
                std::move(detail) + " (named by \"" + std::string(setting) + "\" in " + file + ")");
  };
  if (name.empty() || name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                          std::string_view::npos)
    return bad("not a credential helper name");
  auto path = fs::find_in_path(program);
  if (!path) return bad("not found in PATH: install it, or remove the entry to use \"auths\"");
  // Docker keeps Docker Hub's credentials under its v1 URL; every other registry under its host[:port].
  std::string server = registry == "docker.io" ? "https://index.docker.io/v1/" : std::string(registry);
  std::string output;
  auto ran = bench::run_command({path->string(), {program, "get"}, -1}, server + "\n", output);
  if (!ran) {
    // Helpers answer a registry they hold nothing for with this on stdout and exit status 1.
    if (output.find("credentials not found") != std::string::npos) return std::optional<Credentials>{};
    return bad("failed for " + std::string(registry) + ": " + ran.error().detail);
  }
  simdjson::dom::parser parser;
  simdjson::padded_string padded(output);
  simdjson::dom::object answer;
  std::string_view user, secret;
  // The output holds the secret: errors describe its shape, never its text.
  if (parser.parse(padded).get_object().get(answer) || answer["Username"].get_string().get(user) ||
      answer["Secret"].get_string().get(secret))
    return bad("answered " + std::string(registry) + " without a JSON object with \"Username\" and \"Secret\"");
  if (user == "<token>")
    return bad("holds an identity token (an OAuth refresh token) for " + std::string(registry) +
               ", which fnexec does not exchange: log in with a user name and password or access token");
  return std::optional<Credentials>{Credentials{std::string(user), std::string(secret), program + " (" + file + ")"}};
}

Result<std::optional<Credentials>> read_auth_file(const std::string& path, std::string_view registry) {
  auto text = FNEXEC_TRY(fs::read_file(path));
  auto bad = [&](std::string detail) {
    return fail(ErrorKind::invalid, "read registry credentials", path, std::move(detail));
  };
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::object root, auths, helpers;
  if (parser.parse(padded).get_object().get(root)) return bad("not a JSON object");
  // As docker reads its config: a registry's own helper, then the default store, then "auths".
  if (!root["credHelpers"].get_object().get(helpers))
    for (auto field : helpers) {
      std::string_view helper;
      if (!key_matches(field.key, registry) || field.value.get_string().get(helper)) continue;
      return from_helper(helper, registry, path, "credHelpers");
    }
  if (std::string_view store; !root["credsStore"].get_string().get(store) && !store.empty()) {
    auto found = FNEXEC_TRY(from_helper(store, registry, path, "credsStore"));
    if (found) return found;
  }
  if (root["auths"].get_object().get(auths)) return std::optional<Credentials>{};
  for (auto field : auths) {
    if (!key_matches(field.key, registry)) continue;
    std::string_view encoded;
    if (field.value["auth"].get_string().get(encoded)) continue;  // an entry a credential store keeps
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
