// Logging: spdlog to stderr, one line per event, key=value fields. Never on the child side of a clone.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace fnexec::log {

enum class Threads { one, many };

// Level from FNEXEC_LOG (trace|debug|info|warn|error|off), default warn for the CLI. A daemon that
// logs from several threads asks for Threads::many (a locked sink). When stderr is the journal
// (systemd's JOURNAL_STREAM names it), each line starts with its sd-daemon(3) priority, "<3>" for an
// error, so journald records the level instead of taking every line as info.
void init(spdlog::level::level_enum default_level = spdlog::level::warn, Threads threads = Threads::one);

// Whether init found stderr to be the journal: other writers to stderr add a "<N>" prefix too.
bool to_journal();

// True when JOURNAL_STREAM ("DEV:INODE", set by systemd) names the file open on fd: only then is
// the fd the journal's stream, and not a pipe or file a child of the service was handed.
bool is_journal_stream(const char* journal_stream, int fd);

// The sd-daemon(3) priority of a level: error 3, warn 4, info 6, debug and trace 7.
int syslog_priority(spdlog::level::level_enum level);

}  // namespace fnexec::log
