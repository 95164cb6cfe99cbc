// Whole-process start latency of several systems, interleaved (A B C A B C ...) so that drift on the
// machine hits every system alike. Each sample: posix_spawn → waitpid, monotonic clock.
//
//   fnexec-bench-start [-n RUNS] [--warmup N] [--json FILE] [--hide-cgroup2] [--stdin FILE]
//                      NAME=ARGV... [NAME=ARGV...]
// ARGV is split on spaces; "{i}" in it becomes the sample number (crun/runc need unique ids).
// --hide-cgroup2 runs everything in a private mount namespace with /sys/fs/cgroup/unified unmounted:
// crun refuses hybrid hosts otherwise.
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

struct System {
  std::string name;
  std::vector<std::string> argv;
  std::vector<double> samples_us;
  int failures = 0;
};

std::vector<std::string> split(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string subst(std::string s, int i) {
  for (size_t p; (p = s.find("{i}")) != std::string::npos;) s.replace(p, 3, std::to_string(i));
  return s;
}

// Returns microseconds, or a negative value when the command failed.
double sample(const System& sys, int i, const char* stdin_path) {
  std::vector<std::string> args;
  for (auto& a : sys.argv) args.push_back(subst(a, i));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, stdin_path, O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  auto t1 = std::chrono::steady_clock::now();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 100, warmup = 5;
  std::string json_path, stdin_path = "/dev/null";
  bool hide_cgroup2 = false;
  std::vector<System> systems;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-n" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--warmup" && i + 1 < argc) warmup = std::atoi(argv[++i]);
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--stdin" && i + 1 < argc) stdin_path = argv[++i];
    else if (a == "--hide-cgroup2") hide_cgroup2 = true;
    else if (auto eq = a.find('='); eq != std::string::npos && eq > 0)
      systems.push_back({a.substr(0, eq), split(a.substr(eq + 1)), {}, 0});
    else {
      std::fprintf(stderr, "usage: %s [-n RUNS] [--warmup N] [--json FILE] [--hide-cgroup2] NAME=ARGV...\n", argv[0]);
      return 2;
    }
  }
  if (systems.empty() || runs < 1) {
    std::fprintf(stderr, "fnexec-bench-start: give at least one NAME=ARGV\n");
    return 2;
  }
  if (hide_cgroup2) {
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        umount2("/sys/fs/cgroup/unified", MNT_DETACH) != 0) {
      std::fprintf(stderr, "fnexec-bench-start: --hide-cgroup2: %s\n", std::strerror(errno));
      return 1;
    }
  }
  for (int i = 0; i < warmup; ++i)
    for (auto& s : systems) sample(s, -1 - i, stdin_path.c_str());
  for (int i = 0; i < runs; ++i) {
    for (auto& s : systems) {
      double us = sample(s, i, stdin_path.c_str());
      if (us < 0) ++s.failures;
      else s.samples_us.push_back(us);
    }
  }
  double base = percentile(systems[0].samples_us, 50);
  std::printf("%-14s %6s %10s %10s %10s %10s %12s\n", "system", "n", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
              "ratio");
  std::printf("%-14s %6s %10s %10s %10s %10s %12s\n", "", "", "", "", "", "", ("vs " + systems[0].name).c_str());
  for (auto& s : systems) {
    double mean = s.samples_us.empty() ? 0
                  : std::accumulate(s.samples_us.begin(), s.samples_us.end(), 0.0) /
                        static_cast<double>(s.samples_us.size());
    double p50 = percentile(s.samples_us, 50);
    std::printf("%-14s %6zu %10.2f %10.2f %10.2f %10.2f %12.3f%s\n", s.name.c_str(), s.samples_us.size(), p50 / 1000,
                percentile(s.samples_us, 90) / 1000, percentile(s.samples_us, 99) / 1000, mean / 1000,
                base > 0 ? p50 / base : 0.0, s.failures ? (" (" + std::to_string(s.failures) + " failed)").c_str() : "");
  }
  if (!json_path.empty()) {
    std::ofstream j(json_path);
    j << "{\"runs\":" << runs << ",\"systems\":[";
    for (size_t k = 0; k < systems.size(); ++k) {
      auto& s = systems[k];
      j << (k ? "," : "") << "{\"name\":\"" << s.name << "\",\"failures\":" << s.failures << ",\"p50_us\":"
        << percentile(s.samples_us, 50) << ",\"p90_us\":" << percentile(s.samples_us, 90)
        << ",\"p99_us\":" << percentile(s.samples_us, 99) << ",\"samples_us\":[";
      for (size_t m = 0; m < s.samples_us.size(); ++m) j << (m ? "," : "") << s.samples_us[m];
      j << "]}";
    }
    j << "]}\n";
  }
  for (auto& s : systems)
    if (s.failures) return 1;
  return 0;
}
