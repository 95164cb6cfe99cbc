#include "invoke/pipe_io.h"

#include <pthread.h>
#include <sys/uio.h>

#include <algorithm>

namespace fnexec::invoke::detail {

SigpipeBlocked::SigpipeBlocked() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &set_, &previous_);
}

SigpipeBlocked::~SigpipeBlocked() {
  timespec zero{};
  if (discard_pending && !sigismember(&previous_, SIGPIPE))
    while (::sigtimedwait(&set_, nullptr, &zero) > 0) {
    }
  ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

Result<WriteState> write_some(int fd, std::span<const std::string_view> pieces, uint64_t* written,
                              std::string_view what) {
  for (;;) {
    // The pieces not yet written, from *written on: one writev, so a header, a large payload and
    // its trailer go out without being copied into one buffer.
    iovec iov[8];
    int n_iov = 0;
    uint64_t skip = *written;
    for (auto piece : pieces) {
      if (skip >= piece.size()) {
        skip -= piece.size();
        continue;
      }
      if (n_iov == 8) break;
      iov[n_iov++] = {const_cast<char*>(piece.data() + skip), piece.size() - skip};
      skip = 0;
    }
    if (n_iov == 0) return WriteState::done;
    ssize_t n = ::writev(fd, iov, n_iov);
    if (n > 0) {
      *written += static_cast<uint64_t>(n);
    } else if (errno == EAGAIN) {
      return WriteState::pending;
    } else if (errno == EPIPE) {
      return WriteState::closed;
    } else if (errno != EINTR) {
      return fail_errno("write event to", std::string(what));
    }
  }
}

void append_log_tail(std::string& log, std::string_view chunk, uint64_t max) {
  log.append(chunk);
  if (log.size() > 2 * max) log.erase(0, log.size() - max);
}

void trim_log_tail(std::string& log, uint64_t max) {
  if (log.size() > max) log.erase(0, log.size() - max);
}

const timespec* timeout_until(const std::optional<Clock::time_point>& deadline, timespec* ts) {
  if (!deadline) return nullptr;
  auto left = std::max(std::chrono::nanoseconds(0), *deadline - Clock::now());
  ts->tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
  ts->tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
  return ts;
}

}  // namespace fnexec::invoke::detail
