// Libraries loaded on first use instead of at every start (libcurl, libnftables): linked, they and
// the libraries they need would be mapped and relocated by every fnexec process.
#pragma once

#include <dlfcn.h>

namespace fnexec::util {

// Points f at the symbol `name` of a dlopen()ed library; false when the library lacks it.
template <class F>
bool resolve_symbol(void* library, const char* name, F& f) {
  f = reinterpret_cast<F>(::dlsym(library, name));
  return f != nullptr;
}

}  // namespace fnexec::util
