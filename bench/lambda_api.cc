// Invoke through Lambda's API against fnexec's own /v1 invoke, same daemon, same function, same
// run: one kept-alive connection on the daemon's unix socket, requests alternated (A B A B ...) so
// both see the same machine state. Prints p50/p90/p99 and the ratio Lambda/v1.
//
//   fnexec-bench-lambda --socket PATH --function NAME [-n REQUESTS_EACH] [--warmup N] [--event JSON]
// bench/lambda-api.sh starts a daemon with a reuse function and runs this.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "util/unique_fd.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fnexec-bench-lambda: %s\n", what.c_str());
  std::exit(1);
}

fnexec::UniqueFd connect_to(const std::string& path) {
  fnexec::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) die("socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    die("cannot connect to " + path + ": " + std::strerror(errno) + " (is fnexec serve running?)");
  return fd;
}

// Sends one request and reads its reply (Content-Length framed); returns the status.
int round_trip(int fd, const std::string& request, std::string& buffer) {
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::write(fd, request.data() + sent, request.size() - sent);
    if (n <= 0) die(std::string("write: ") + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
  buffer.clear();
  size_t header_end = std::string::npos, need = 0;
  char chunk[65536];
  for (;;) {
    if (header_end == std::string::npos) {
      header_end = buffer.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        auto cl = buffer.find("Content-Length: ");
        if (cl == std::string::npos || cl > header_end) die("a reply without Content-Length");
        need = header_end + 4 + std::strtoull(buffer.c_str() + cl + 16, nullptr, 10);
      }
    }
    if (header_end != std::string::npos && buffer.size() >= need) break;
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) die("the daemon closed the connection");
    buffer.append(chunk, static_cast<size_t>(n));
  }
  return std::atoi(buffer.c_str() + 9);
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

std::string post(const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path, function, event = R"({"bench":true})";
  int n = 2000, warmup = 100;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--socket") socket_path = next();
    else if (a == "--function") function = next();
    else if (a == "-n") n = std::atoi(next().c_str());
    else if (a == "--warmup") warmup = std::atoi(next().c_str());
    else if (a == "--event") event = next();
    else die("unknown argument " + a + "; usage: --socket PATH --function NAME [-n N] [--warmup N] [--event JSON]");
  }
  if (socket_path.empty() || function.empty() || n < 1) die("--socket and --function are required");
  auto fd = connect_to(socket_path);
  const std::string v1 = post("/v1/functions/" + function + "/invoke", event);
  const std::string lambda = post("/2015-03-31/functions/" + function + "/invocations", event);
  std::string buffer;
  for (int i = 0; i < warmup; ++i) {
    if (round_trip(fd.get(), v1, buffer) != 200) die("v1 invoke failed: " + buffer);
    if (round_trip(fd.get(), lambda, buffer) != 200) die("Lambda invoke failed: " + buffer);
  }
  std::vector<double> a, b;
  a.reserve(n);
  b.reserve(n);
  for (int i = 0; i < n; ++i) {
    // Alternate which goes first, so neither always follows the other.
    for (int k = 0; k < 2; ++k) {
      bool lambda_turn = (i + k) % 2 == 1;
      auto t0 = Clock::now();
      int status = round_trip(fd.get(), lambda_turn ? lambda : v1, buffer);
      double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (status != 200) die("an invoke failed: " + buffer);
      (lambda_turn ? b : a).push_back(us);
    }
  }
  std::printf("function %s, %d requests each, alternated on one kept-alive unix-socket connection\n",
              function.c_str(), n);
  std::printf("%-28s %10s %10s %10s\n", "API", "p50 us", "p90 us", "p99 us");
  std::printf("%-28s %10.1f %10.1f %10.1f\n", "/v1 invoke (fnexec)", percentile(a, .5), percentile(a, .9),
              percentile(a, .99));
  std::printf("%-28s %10.1f %10.1f %10.1f\n", "Lambda Invoke (2015-03-31)", percentile(b, .5), percentile(b, .9),
              percentile(b, .99));
  std::printf("%-28s %10.2f %10.2f %10.2f\n", "ratio Lambda / v1", percentile(b, .5) / percentile(a, .5),
              percentile(b, .9) / percentile(a, .9), percentile(b, .99) / percentile(a, .99));
  return 0;
}
