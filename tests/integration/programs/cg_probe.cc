// A function for the cgroup tests of `fnexec run`: does one hostile or measurable thing and reports
// what it measured itself, so the test can hold the sandbox's cgroup counters against it.
//   cg_probe alloc MIB      touch MIB of fresh memory, print "touched MIB"
//   cg_probe burn MS        spin until getrusage says MS ms of user CPU, print "user_us N"
//   cg_probe forkbomb       fork forever (children too), never exit
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

long user_us() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec;
}

int alloc(long mib) {
  const size_t bytes = static_cast<size_t>(mib) << 20;
  auto* p = static_cast<volatile char*>(std::malloc(bytes));
  if (!p) return 2;
  for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
  std::printf("touched %ld\n", mib);
  return 0;
}

int burn(long ms) {
  volatile unsigned long x = 0;
  while (user_us() < ms * 1000)
    for (int i = 0; i < 100000; ++i) x = x + static_cast<unsigned long>(i);
  std::printf("user_us %ld\n", user_us());
  return 0;
}

int forkbomb() {
  for (;;) {
    if (fork() < 0) usleep(1000);  // EAGAIN under pids.max: keep pressing
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && !std::strcmp(argv[1], "alloc")) return alloc(std::atol(argv[2]));
  if (argc >= 3 && !std::strcmp(argv[1], "burn")) return burn(std::atol(argv[2]));
  if (argc >= 2 && !std::strcmp(argv[1], "forkbomb")) return forkbomb();
  std::fprintf(stderr, "usage: cg_probe alloc MIB | burn MS | forkbomb\n");
  return 2;
}
