// Raw system calls for the sandbox init, which is built without a C library (-nostdlib): each
// returns the kernel's result, a negative errno on failure, and never touches errno. Also used by
// libfnexec where a child must not depend on glibc state (privileges applied before exec).
#pragma once

#include <asm/unistd.h>
#include <stddef.h>
#include <stdint.h>

namespace fnexec::runtime::sys {

#if defined(__x86_64__)
inline long call6(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) noexcept {
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
#elif defined(__aarch64__)
inline long call6(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) noexcept {
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  register long x4 __asm__("x4") = e;
  register long x5 __asm__("x5") = f;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return x0;
}
#else
#error "fnexec's sandbox init supports x86_64 and aarch64"
#endif

template <class... A>
inline long call(long n, A... args) noexcept {
  return call6(n, (long)args...);
}

// The negative errno of a failed call as a positive errno, 0 on success.
inline int err(long r) noexcept {
  return r < 0 && r > -4096 ? static_cast<int>(-r) : 0;
}

}  // namespace fnexec::runtime::sys
