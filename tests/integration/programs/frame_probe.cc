// A fresh/reuse function for the lifecycle tests, speaking fnexec/1 by hand (no helper library, so
// every misbehaviour can be played): frame_probe MODE.
//   echo          OK with the event's bytes
//   count         OK "N": events this process has seen (state across events)
//   log           writes "log <event>" to stderr, then OK
//   env           OK "FNEXEC_PROTOCOL FNEXEC_LIFECYCLE FNEXEC_FUNCTION_NAME"
//   big           OK with as many bytes as the event's decimal number says
//   error         ERROR {"errorType":"ValueError",...}, and lives on
//   malformed     answers "GARBAGE" instead of a frame
//   wrong-id      answers OK with another id
//   exit          exits 3 mid-event;  crash: SIGSEGV mid-event
//   hang          never answers
//   init-error    INIT_ERROR json on stdout, "init broke" on stderr, exit 1
//   init-exit     exits 2 before READY;  init-hang: never says READY
//   init-burn     before READY: 300 ms of user CPU and 64 MiB touched and freed; then echo
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

void put(const std::string& bytes) {
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  std::fflush(stdout);
}

std::string frame(const char* kind, const std::string& id, const std::string& body) {
  return std::string(kind) + (id.empty() ? "" : " " + id) + " " + std::to_string(body.size()) + "\n" + body + "\n";
}

long user_us() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec;
}

void burn_and_touch() {
  volatile unsigned long x = 0;
  while (user_us() < 300000)
    for (int i = 0; i < 100000; ++i) x = x + static_cast<unsigned long>(i);
  const size_t bytes = size_t{64} << 20;
  auto* p = static_cast<char*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (p == MAP_FAILED) std::exit(9);
  for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
  munmap(p, bytes);
}

// One EVENT frame from stdin; false at EOF.
bool read_event(std::string& id, std::string& payload) {
  char line[300];
  if (!std::fgets(line, sizeof line, stdin)) return false;
  char idbuf[80];
  unsigned long long deadline = 0, len = 0;
  if (std::sscanf(line, "EVENT %70s %llu %llu", idbuf, &deadline, &len) != 3) std::exit(8);
  id = idbuf;
  payload.resize(len);
  if (len && std::fread(payload.data(), 1, len, stdin) != len) std::exit(8);
  if (std::fgetc(stdin) != '\n') std::exit(8);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "echo";
  if (mode == "init-error") {
    std::fputs("init broke\n", stderr);
    put(frame("INIT_ERROR", "", R"({"errorType":"ImportError","errorMessage":"no module named nope"})"));
    return 1;
  }
  if (mode == "init-exit") return 2;
  if (mode == "init-hang") pause();
  if (mode == "init-burn") burn_and_touch();
  put("READY fnexec/1\n");
  std::string id, payload;
  for (long n = 1; read_event(id, payload); ++n) {
    if (mode == "count") {
      put(frame("OK", id, std::to_string(n)));
    } else if (mode == "log") {
      std::fprintf(stderr, "log %s\n", payload.c_str());
      put(frame("OK", id, payload));
    } else if (mode == "env") {
      std::string out;
      for (const char* k : {"FNEXEC_PROTOCOL", "FNEXEC_LIFECYCLE", "FNEXEC_FUNCTION_NAME"})
        out += std::string(std::getenv(k) ? std::getenv(k) : "-") + " ";
      out.pop_back();
      put(frame("OK", id, out));
    } else if (mode == "big") {
      put(frame("OK", id, std::string(std::strtoul(payload.c_str(), nullptr, 10), 'x')));
    } else if (mode == "error") {
      put(frame("ERROR", id, R"({"errorType":"ValueError","errorMessage":"bad )" + payload + R"(","stackTrace":[]})"));
    } else if (mode == "malformed") {
      put("GARBAGE\n");
    } else if (mode == "wrong-id") {
      put(frame("OK", id + "x", payload));
    } else if (mode == "exit") {
      return 3;
    } else if (mode == "crash") {
      raise(SIGSEGV);
    } else if (mode == "hang") {
      pause();
    } else {
      put(frame("OK", id, payload));
    }
  }
  return 0;
}
