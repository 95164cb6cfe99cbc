#include "registry/reference.h"

#include "image/oci.h"

namespace fnexec::registry {

namespace {

constexpr std::string_view kTransport = "docker://";

bool valid_repository(std::string_view repo) {
  // distribution's grammar, simplified: lowercase alphanumerics separated by '.', '_', '__', '-' or '/'.
  if (repo.empty() || repo.size() > 255 || repo.front() == '/' || repo.back() == '/') return false;
  for (char c : repo)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == '/'))
      return false;
  return repo.find("//") == std::string_view::npos;
}

bool valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128 || tag.front() == '.' || tag.front() == '-') return false;
  for (char c : tag)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return false;
  return true;
}

}  // namespace

bool has_docker_transport(std::string_view ref) { return ref.starts_with(kTransport); }

std::string Reference::api_host() const { return registry == "docker.io" ? "registry-1.docker.io" : registry; }

std::string Reference::str() const {
  std::string s = "docker://" + registry + "/" + repository;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

std::string Reference::store_name() const {
  return registry + "/" + repository + ":" + (tag.empty() ? "latest" : tag);
}

Result<Reference> parse_reference(std::string_view text) {
  std::string_view ref = text;
  auto bad = [&](std::string detail) {
    return fail(ErrorKind::invalid, "parse registry reference", std::string(text), std::move(detail));
  };
  if (ref.starts_with(kTransport)) ref.remove_prefix(kTransport.size());
  if (ref.starts_with("//")) ref.remove_prefix(2);
  if (ref.empty()) return bad("empty: want [docker://]REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST]");
  Reference out;
  if (auto at = ref.find('@'); at != std::string_view::npos) {
    out.digest = std::string(ref.substr(at + 1));
    ref = ref.substr(0, at);
    if (!image::is_valid_digest(out.digest)) return bad("the digest after '@' is not sha256:<64 lowercase hex digits>");
  }
  std::string_view first = ref.substr(0, ref.find('/'));
  bool has_registry = ref.find('/') != std::string_view::npos &&
                      (first.find_first_of(".:") != std::string_view::npos || first == "localhost");
  if (has_registry) {
    out.registry = std::string(first);
    ref.remove_prefix(first.size() + 1);
  } else {
    out.registry = "docker.io";
  }
  if (size_t colon = ref.rfind(':'); colon != std::string_view::npos) {
    out.tag = std::string(ref.substr(colon + 1));
    ref = ref.substr(0, colon);
    if (!valid_tag(out.tag)) return bad("tag '" + out.tag + "' is not [A-Za-z0-9_.-]{1,128}");
  } else if (out.digest.empty()) {
    out.tag = "latest";
  }
  out.repository = std::string(ref);
  if (out.registry == "docker.io" && out.repository.find('/') == std::string::npos)
    out.repository = "library/" + out.repository;
  if (!valid_repository(out.repository))
    return bad("repository '" + out.repository + "' is not lowercase [a-z0-9._-] components separated by '/'");
  for (char c : out.registry)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
          c == ':' || c == '[' || c == ']'))
      return bad("registry '" + out.registry + "' is not a host name with an optional :PORT");
  return out;
}

}  // namespace fnexec::registry
