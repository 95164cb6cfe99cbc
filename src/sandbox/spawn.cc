#include "sandbox/spawn.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "runtime/init_image.h"
#include "runtime/protocol.h"
#include "runtime/sys.h"
#include "util/fs.h"
#include "util/syscalls.h"
#include "util/unique_fd.h"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U  // Linux 6.3: executable memfd even where vm.memfd_noexec asks otherwise
#endif

namespace fnexec::sandbox::detail {

namespace rsys = runtime::sys;

Result<int> init_image() {
  static const Result<int> image = []() -> Result<int> {
    const auto* begin = fnexec_init_image;
    auto size = static_cast<size_t>(fnexec_init_image_end - fnexec_init_image);
    UniqueFd fd(::memfd_create("fnexec-init", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC));
    if (!fd && errno == EINVAL) fd.reset(::memfd_create("fnexec-init", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) return fail_errno("create memfd for the sandbox init");
    FNEXEC_TRY(fs::write_all(fd.get(), {reinterpret_cast<const char*>(begin), size}, "memfd of the sandbox init"));
    // Sealed: no process, inside a sandbox or not, can change the init every sandbox runs.
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0)
      return fail_errno("seal the sandbox init's memfd");
    return fd.release();  // kept for the life of the process
  }();
  return image;
}

void spawn_child(const Spawn* spawn) noexcept {
  // Raw system calls only: with CLONE_VM this child shares the parent's memory, errno included.
  unsigned next = 3;
  for (size_t i = 0; i < spawn->n_open; ++i) {
    auto fd = static_cast<unsigned>(spawn->open_fds[i]);
    if (fd > next) rsys::call(__NR_close_range, next, fd - 1, 0);
    if (fd >= next) next = fd + 1;
  }
  rsys::call(__NR_close_range, next, ~0U, 0);
  for (size_t i = 0; i < spawn->n_inherit; ++i) rsys::call(__NR_fcntl, spawn->inherit_fds[i], F_SETFD, 0);
  const char* const envp[] = {nullptr};
  long r = rsys::call(__NR_execveat, spawn->image_fd, "", spawn->argv, envp, AT_EMPTY_PATH);
  runtime::wire::ChildFailure f;
  f.step = runtime::wire::step_start_init;
  f.err = rsys::err(r);
  rsys::call(__NR_write, spawn->error_fd, &f, sizeof f);
  for (;;) rsys::call(__NR_exit, 125);
}

#if defined(__x86_64__)
// long fnexec_clone3_call(clone_args*, size_t, void (*fn)(const void*), const void* arg): clone3,
// and in the child, on the stack clone3 gave it, fn(arg). The child cannot return into C++ code:
// with CLONE_VM the frames on the parent's stack are the parent's.
extern "C" long fnexec_clone3_call(clone_args*, size_t, void (*)(const Spawn*), const Spawn*);
__asm__(
    ".text\n"
    ".globl fnexec_clone3_call\n"
    ".hidden fnexec_clone3_call\n"
    ".type fnexec_clone3_call,@function\n"
    "fnexec_clone3_call:\n"
    "  mov %rdx, %r8\n"  // r8, r9: kept by syscall
    "  mov %rcx, %r9\n"
    "  mov $435, %eax\n"  // __NR_clone3
    "  syscall\n"
    "  test %rax, %rax\n"
    "  jnz 1f\n"
    "  xor %ebp, %ebp\n"
    "  mov %r9, %rdi\n"
    "  call *%r8\n"
    "  hlt\n"
    "1:\n"
    "  ret\n"
    ".size fnexec_clone3_call, .-fnexec_clone3_call\n");

namespace {

// The child's stack: one per launching thread, reused (CLONE_VFORK: the parent waits until the
// child has exec'd, so only one child at a time uses it).
struct ChildStack {
  static constexpr size_t kSize = 64 * 1024;
  void* base = nullptr;
  ~ChildStack() {
    if (base) ::munmap(base, kSize);
  }
};
thread_local ChildStack child_stack;

}  // namespace

long spawn_clone3(clone_args& args, const Spawn& spawn) {
  if (!child_stack.base) {
    void* p = ::mmap(nullptr, ChildStack::kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                     -1, 0);
    if (p == MAP_FAILED) return -1;
    child_stack.base = p;
  }
  args.flags |= CLONE_VM | CLONE_VFORK;
  args.stack = reinterpret_cast<uint64_t>(child_stack.base);
  args.stack_size = ChildStack::kSize;
  long r = fnexec_clone3_call(&args, sizeof args, spawn_child, &spawn);
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}
#else
// Elsewhere a fork-like clone3: the child copies fnexec's memory, then execs the init at once.
long spawn_clone3(clone_args& args, const Spawn& spawn) {
  long pid = sys::clone3(&args, sizeof args);
  if (pid == 0) spawn_child(&spawn);
  return pid;
}
#endif

}  // namespace fnexec::sandbox::detail
