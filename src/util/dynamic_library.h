// Libraries loaded on first use instead of at every start (libcurl, libnats, libnftables, ISA-L, OpenSSL):
// linked, they and the libraries they need would be mapped and relocated by every fnexec process.
#pragma once

#include <dlfcn.h>

#include <string>

namespace fnexec::util {

// dlopen()s a library with RTLD_LOCAL, so the libraries it brings (its OpenSSL, protobuf-c, ...)
// stay out of the global symbol scope; nullptr with *error = dlerror()'s reason when it can not.
inline void* open_private_library(const char* soname, std::string* error = nullptr) {
  void* library = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (!library && error) *error = ::dlerror();
  return library;
}

// Points f at the symbol `name` of a dlopen()ed library; false when the library lacks it.
template <class F>
bool resolve_symbol(void* library, const char* name, F& f) {
  f = reinterpret_cast<F>(::dlsym(library, name));
  return f != nullptr;
}

}  // namespace fnexec::util
