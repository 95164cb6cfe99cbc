// Logging: spdlog to stderr, one line per event, key=value fields. Never on the child side of a clone.
#pragma once

#include <spdlog/spdlog.h>

namespace fnexec::log {

// Level from FNEXEC_LOG (trace|debug|info|warn|error|off), default warn for the CLI.
void init(spdlog::level::level_enum default_level = spdlog::level::warn);

}  // namespace fnexec::log
