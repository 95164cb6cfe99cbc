// Test support: run a command with given stdin, capture stdout/stderr and exit status.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
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

// A child with pipes on its stdin, stdout and stderr, for a conversation in steps (a long-lived
// function process speaking fnexec/1). The destructor SIGKILLs and reaps a child still running.
class Conversation {
 public:
  Conversation(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {});
  ~Conversation();
  Conversation(const Conversation&) = delete;
  Conversation& operator=(const Conversation&) = delete;

  // Writes input to the child's stdin while reading its stdout and stderr, and keeps reading until
  // want(chunk of stdout) returns true (then true) or stdout closes (then false). Throws after limit:
  // a hung child fails the test rather than hanging it.
  bool exchange(std::string_view input, const std::function<bool(std::string_view)>& want,
                std::chrono::milliseconds limit = std::chrono::minutes(2));
  void close_stdin();
  // Closes stdin, reads to the end of stdout (into *rest_of_stdout) and stderr, returns the exit code.
  int wait(std::string* rest_of_stdout = nullptr);
  const std::string& err() const { return err_text_; }

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  std::string err_text_;
};

// Runs `fnexec ARGS...` with the binary under test (FNEXEC_BIN).
ProcResult fnexec(const std::vector<std::string>& args, const ProcOptions& options = {});

}  // namespace fnexec::test
