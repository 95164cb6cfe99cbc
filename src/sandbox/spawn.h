// Starting a sandbox process: clone3 into its namespaces and exec the sandbox init at once.
//
// The clone shares fnexec's memory and fnexec waits until the exec (CLONE_VM | CLONE_VFORK, as
// posix_spawn does): nothing of a large, multi-threaded fnexec is copied, and the child runs only
// raw system calls on a stack of its own. The init (runtime/init_main.cc) is embedded in fnexec and
// run from a sealed memfd, so nothing inside or outside the sandbox can change it.
#pragma once

#include <linux/sched.h>
#include <sys/types.h>

#include <cstddef>

#include "util/error.h"

namespace fnexec::sandbox::detail {

// What the clone child needs; it reads this from the parent's memory before its exec.
struct Spawn {
  int image_fd = -1;               // the init's memfd (close-on-exec)
  const int* open_fds = nullptr;   // ascending, image_fd among them; every other fd is closed
  size_t n_open = 0;
  const int* inherit_fds = nullptr;  // what the init needs: close-on-exec is cleared
  size_t n_inherit = 0;
  int error_fd = -1;  // where a failed exec of the init is reported (a ChildFailure)
  const char* argv[4] = {};
};

// The init's sealed memfd, made once per process.
Result<int> init_image();

// clone3 with args (its flags get CLONE_VM | CLONE_VFORK where that is supported); the child execs
// the init and never returns. Returns the child's pid, or -1 with errno, like clone3.
long spawn_clone3(clone_args& args, const Spawn& spawn);

// The child side, for a fork-like clone (the parent's fallback): execs the init or exits 125.
[[noreturn]] void spawn_child(const Spawn* spawn) noexcept;

}  // namespace fnexec::sandbox::detail
