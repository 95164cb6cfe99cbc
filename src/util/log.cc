#include "util/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>

namespace fnexec::log {

void init(spdlog::level::level_enum default_level) {
  auto logger = spdlog::stderr_logger_st("fnexec");
  logger->set_pattern("fnexec %l: %v");
  auto level = default_level;
  if (const char* env = std::getenv("FNEXEC_LOG")) level = spdlog::level::from_str(env);
  logger->set_level(level);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace fnexec::log
