// Non-blocking pipe plumbing shared by the one-shot invocation (invocation.cc) and the framed
// session (session.cc): write what the pipe takes, read what is there, keep a log's tail, wait until
// a deadline.
#pragma once

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "util/error.h"

namespace fnexec::invoke::detail {

using Clock = std::chrono::steady_clock;

// SIGPIPE from writes to a function's stdin is blocked in this thread, and one that came is discarded:
// EPIPE is the answer wanted here, and the process's signal dispositions are not ours to change.
class SigpipeBlocked {
 public:
  SigpipeBlocked();
  ~SigpipeBlocked();
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;
  bool discard_pending = false;

 private:
  sigset_t set_, previous_;
};

enum class WriteState { pending, done, closed };

// Writes pieces[*] from the byte offset *written on (the pieces form one stream) as far as the
// non-blocking fd takes them. closed: the reader is gone (EPIPE; the caller's SigpipeBlocked must
// discard the signal).
Result<WriteState> write_some(int fd, std::span<const std::string_view> pieces, uint64_t* written,
                              std::string_view what);

enum class ReadState { again, eof, stopped };

// Reads what the non-blocking fd has, handing each chunk to sink (returns false to stop reading).
template <class Sink>
Result<ReadState> read_available(int fd, std::span<char> buf, std::string_view what, Sink&& sink) {
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return ReadState::again;
    if (n < 0) return fail_errno("read from", std::string(what));
    if (n == 0) return ReadState::eof;
    if (!sink(std::string_view(buf.data(), static_cast<size_t>(n)))) return ReadState::stopped;
  }
}

// Keeps the last max bytes of a log. Trimmed once it holds twice the tail, so a chatty function
// costs amortised O(1) per byte; trim_log_tail() cuts it to max at the end.
void append_log_tail(std::string& log, std::string_view chunk, uint64_t max);
void trim_log_tail(std::string& log, uint64_t max);

// ppoll's timeout for a deadline: nullptr without one, else the time left (0 once passed).
const timespec* timeout_until(const std::optional<Clock::time_point>& deadline, timespec* ts);

}  // namespace fnexec::invoke::detail
