// Each subcommand file registers itself on the CLI11 app; main.cc only wires them up.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "registry/pull.h"
#include "util/error.h"

namespace fnexec::server {
class Client;
struct HttpResponse;
}  // namespace fnexec::server

namespace fnexec::cli {

// Exit codes shared by every subcommand (podman/crun conventions).
inline constexpr int kExitFnexecError = 125;   // bad image, bad option, setup failure
inline constexpr int kExitCannotExec = 126;    // entrypoint exists but cannot be executed
inline constexpr int kExitNotFound = 127;      // entrypoint not found
inline constexpr int kExitTimeout = 124;

struct Globals {
  std::string root;   // --root, FNEXEC_ROOT, default /var/lib/fnexec
  int exit_code = 0;  // set by the subcommand that ran
};

// Prints "fnexec: MESSAGE" to stderr and returns kExitFnexecError.
int report(const Error& e);

void add_image_commands(CLI::App& app, Globals& g);

// The registry options of `image pull`, `image import docker://...` and `run docker://...`.
struct PullFlags {
  std::string creds, auth_file, cert_dir, platform;
  bool tls_verify = true;
  bool quiet = false;
  void add_to(CLI::App* sub);
  // With a progress display on stderr unless --quiet.
  registry::PullRequest request(const std::string& reference) const;
};
void add_run_command(CLI::App& app, Globals& g);
void add_info_command(CLI::App& app, Globals& g);
void add_serve_command(CLI::App& app, Globals& g);

// Client subcommands of the daemon (cmd_fn.cc, cmd_invoke.cc, cmd_invocations.cc, cmd_logs.cc).
struct EndpointOptions {
  std::string socket;      // --socket, FNEXEC_SOCKET, default /run/fnexec/fnexec.sock
  std::string host;        // --host http://HOST:PORT, FNEXEC_HOST
  std::string token_file;  // --token-file, FNEXEC_TOKEN_FILE (TCP)
};
void add_endpoint_options(CLI::App* sub, EndpointOptions& o);
Result<server::Client> connect(const EndpointOptions& o);
// An HTTP error reply as an Error for report(): the daemon's message and the status.
Error http_error(const server::HttpResponse& r, std::string what);
// Milliseconds since the epoch as local "YYYY-MM-DD HH:MM:SS", for the client tables.
std::string local_time(int64_t ms);
void add_fn_commands(CLI::App& app, Globals& g);
void add_invoke_command(CLI::App& app, Globals& g);
void add_invocations_command(CLI::App& app, Globals& g);
void add_dead_letters_command(CLI::App& app, Globals& g);
void add_logs_command(CLI::App& app, Globals& g);
void add_cluster_command(CLI::App& app, Globals& g);
void add_bench_command(CLI::App& app, Globals& g);

}  // namespace fnexec::cli
