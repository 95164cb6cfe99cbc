// PID 1 of a sandbox: starts the function, forwards signals to it, reaps orphans, and reports
// the function's raw wait status. Runs on the child side of clone: async-signal-safe only.
#pragma once

namespace fnexec::runtime {

// Forks; the child restores the signal mask and calls start_function(arg), which must exec or _exit.
// The parent (PID 1) forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to the
// function, reaps every child, and when the function is gone writes its wait status (an int) to
// status_fd and exits, which makes the kernel kill whatever is left in the pid namespace.
// Returns only if the fork fails, with errno set.
void run_init(void (*start_function)(const void*), const void* arg, int status_fd) noexcept;

}  // namespace fnexec::runtime
