// `fnexec serve`: the HTTP API on a unix socket (and TCP with a bearer token) over the Service,
// with the lifecycle: single instance per state dir, crash recovery, sd_notify, SIGTERM and SIGHUP.
#pragma once

#include <filesystem>
#include <string_view>
#include <vector>

#include "server/config.h"
#include "util/error.h"

namespace fnexec::server {

struct ServeOptions {
  std::filesystem::path config_file = kDefaultConfigFile;
  bool config_file_given = false;  // a missing file is an error only when named explicitly
  std::vector<Setting> flags;      // applied over the file, at start and on every SIGHUP
};

// Runs until SIGTERM or SIGINT; returns the exit status (0 after a clean shutdown).
Result<int> serve(const ServeOptions& options);

// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or @abstract).
// Does nothing when the variable is unset.
Result<> sd_notify(std::string_view state);

}  // namespace fnexec::server
