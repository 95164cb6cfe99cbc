// An empty C++ program, the start-up floor of `fnexec --version` (bench/run-start.sh part 2): built
// three ways by bench/meson.build, (a) linked as fnexec is (libstdc++.so and libsimdjson.so, which
// needs it; FNEXEC_CXX_START_SIMDJSON makes a real call into it so the link keeps it),
// (b) -static-libstdc++ -static-libgcc without simdjson, (c) fully static.
#include <cstdio>
#include <string>

#ifdef FNEXEC_CXX_START_SIMDJSON
#include <simdjson.h>
#endif

int main(int argc, char** argv) {
  std::string word(argc > 1 ? argv[1] : "");  // std::string's members come from libstdc++
#ifdef FNEXEC_CXX_START_SIMDJSON
  if (!simdjson::validate_utf8(word.data(), word.size())) return 1;
#endif
  if (!word.empty()) std::puts(word.c_str());
  return 0;
}
