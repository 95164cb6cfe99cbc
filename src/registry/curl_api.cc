#include "registry/curl_api.h"

#include <dlfcn.h>

#include <string>

#include "util/dynamic_library.h"

namespace fnexec::registry {

namespace {

constexpr const char* kLibrary = "libcurl.so.4";

using util::resolve_symbol;

struct Loaded {
  CurlApi api;
  std::string error;  // empty: api is complete and curl_global_init succeeded
};

Loaded load() {
  Loaded l;
  // curl's shared OpenSSL stays apart from the static one fnexec links (fnexec exports no OpenSSL
  // symbol), so the two never mix state.
  void* lib = util::open_private_library(kLibrary, &l.error);
  if (!lib) return l;
  decltype(&curl_global_init) global_init = nullptr;
  CurlApi& a = l.api;
  if (!resolve_symbol(lib, "curl_global_init", global_init) ||
      !resolve_symbol(lib, "curl_easy_init", a.easy_init) ||
      !resolve_symbol(lib, "curl_easy_cleanup", a.easy_cleanup) ||
      !resolve_symbol(lib, "curl_easy_setopt", a.easy_setopt) ||
      !resolve_symbol(lib, "curl_easy_getinfo", a.easy_getinfo) ||
      !resolve_symbol(lib, "curl_easy_perform", a.easy_perform) ||
      !resolve_symbol(lib, "curl_easy_strerror", a.easy_strerror) ||
      !resolve_symbol(lib, "curl_easy_escape", a.easy_escape) || !resolve_symbol(lib, "curl_free", a.free) ||
      !resolve_symbol(lib, "curl_slist_append", a.slist_append) ||
      !resolve_symbol(lib, "curl_slist_free_all", a.slist_free_all)) {
    l.error = std::string("a function is missing from ") + kLibrary + " (" + ::dlerror() + "): it is older than 7.85";
    return l;
  }
  // Not thread-safe in older libcurl: done here, once, under the static initialiser's lock.
  if (CURLcode rc = global_init(CURL_GLOBAL_DEFAULT); rc != CURLE_OK)
    l.error = std::string("curl_global_init failed: ") + a.easy_strerror(rc);
  return l;
}

}  // namespace

Result<const CurlApi*> curl_api() {
  static const Loaded loaded = load();
  if (!loaded.error.empty())
    return fail(ErrorKind::unavailable, "load libcurl", kLibrary,
                loaded.error + "; pulling images from a registry needs libcurl with OpenSSL: apt-get install libcurl4");
  return &loaded.api;
}

}  // namespace fnexec::registry
