// Test support: run a command with given stdin, capture stdout/stderr and exit status.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace fnexec::test {

struct ProcResult {
  int exit_code = -1;  // exit status, or 128+signal like a shell
  std::string out;
  std::string err;
  std::chrono::microseconds wall{0};
};

struct ProcOptions {
  std::string stdin_data;
  std::map<std::string, std::string> env;  // added to the inherited environment
  std::optional<std::chrono::milliseconds> kill_after;  // SIGKILL the child after this long
};

ProcResult run(const std::vector<std::string>& argv, const ProcOptions& options = {});

// Runs `fnexec ARGS...` with the binary under test (FNEXEC_BIN).
ProcResult fnexec(const std::vector<std::string>& args, const ProcOptions& options = {});

}  // namespace fnexec::test
