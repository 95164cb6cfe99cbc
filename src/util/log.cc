#include "util/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace fnexec::log {

namespace {

// %* in a pattern: "<N>", the line's priority for journald (SyslogLevelPrefix=, on by default).
class PriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    char prefix[4] = {'<', static_cast<char>('0' + syslog_priority(msg.level)), '>', '\0'};
    dest.append(prefix, prefix + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<PriorityFlag>(); }
};

bool stderr_to_journal = false;

}  // namespace

int syslog_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical: return 2;
    case spdlog::level::err: return 3;
    case spdlog::level::warn: return 4;
    case spdlog::level::info: return 6;
    default: return 7;
  }
}

bool is_journal_stream(const char* journal_stream, int fd) {
  if (!journal_stream) return false;
  uintmax_t dev = 0, ino = 0;
  int used = 0;
  if (std::sscanf(journal_stream, "%" SCNuMAX ":%" SCNuMAX "%n", &dev, &ino, &used) != 2 ||
      journal_stream[used] != '\0')
    return false;
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

bool to_journal() {
  return stderr_to_journal;
}

void init(spdlog::level::level_enum default_level, Threads threads) {
  spdlog::drop("fnexec");  // a second init (fnexec serve) replaces the first
  auto logger = threads == Threads::many ? spdlog::stderr_logger_mt("fnexec") : spdlog::stderr_logger_st("fnexec");
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  stderr_to_journal = is_journal_stream(std::getenv("JOURNAL_STREAM"), STDERR_FILENO);
  formatter->add_flag<PriorityFlag>('*').set_pattern(stderr_to_journal ? "%*fnexec %l: %v" : "fnexec %l: %v");
  logger->set_formatter(std::move(formatter));
  auto level = default_level;
  if (const char* env = std::getenv("FNEXEC_LOG")) level = spdlog::level::from_str(env);
  logger->set_level(level);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace fnexec::log
