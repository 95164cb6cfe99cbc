// libcurl, loaded on the first registry contact instead of at every start: linked, it and the ~30
// libraries it needs (TLS, HTTP/2, LDAP, Kerberos, IDN) were mapped by every fnexec process and
// made `fnexec --version` ~1.9x slower. Only the functions the registry client calls are resolved.
#pragma once

#include <curl/curl.h>

#include "util/error.h"

namespace fnexec::registry {

struct CurlApi {
  decltype(&curl_easy_init) easy_init = nullptr;
  decltype(&curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&curl_easy_setopt) easy_setopt = nullptr;
  decltype(&curl_easy_getinfo) easy_getinfo = nullptr;
  decltype(&curl_easy_perform) easy_perform = nullptr;
  decltype(&curl_easy_strerror) easy_strerror = nullptr;
  decltype(&curl_easy_escape) easy_escape = nullptr;
  decltype(&curl_free) free = nullptr;
  decltype(&curl_slist_append) slist_append = nullptr;
  decltype(&curl_slist_free_all) slist_free_all = nullptr;
};

// libcurl.so.4, loaded and initialised once per process (thread-safe); an error names the package.
Result<const CurlApi*> curl_api();

}  // namespace fnexec::registry
