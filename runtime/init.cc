#include "init.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace fnexec::runtime {

namespace {

constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

}  // namespace

void run_init(void (*start_function)(const void*), const void* arg, int status_fd) noexcept {
  // Blocked before the fork so no signal is lost between fork and sigwaitinfo; a blocked signal
  // sent to a pid-namespace init is queued rather than ignored, even without a handler.
  sigset_t waited, previous;
  sigemptyset(&waited);
  for (int s : kForwarded) sigaddset(&waited, s);
  sigaddset(&waited, SIGCHLD);
  sigprocmask(SIG_BLOCK, &waited, &previous);

  // _Fork: no atfork handlers, async-signal-safe (glibc >= 2.34).
  pid_t function = _Fork();
  if (function < 0) {
    sigprocmask(SIG_SETMASK, &previous, nullptr);
    return;
  }
  if (function == 0) {
    sigprocmask(SIG_SETMASK, &previous, nullptr);
    start_function(arg);
    _exit(127);
  }

  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&waited, &info);
    if (sig < 0) continue;  // EINTR
    if (sig != SIGCHLD) {
      kill(function, sig);
      continue;
    }
    // One SIGCHLD may stand for several exits: reap until nothing is left to reap.
    for (;;) {
      int status = 0;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      if (pid == function) {
        ssize_t w;
        do w = write(status_fd, &status, sizeof status);
        while (w < 0 && errno == EINTR);
        _exit(0);
      }
    }
  }
}

}  // namespace fnexec::runtime
