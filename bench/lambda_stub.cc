#include "bench/lambda_stub.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstring>

extern char** environ;

namespace fnexec::bench {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

struct StubRuntimeApi::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::optional<tcp::socket> socket;  // Python's urllib opens one per request; curl keeps one
  boost::beast::flat_buffer buffer;
  bool holds_next = false;  // its GET .../next was read and waits for an event
  pid_t pid = -1;
  uint64_t events = 0;
  std::chrono::steady_clock::time_point acked;  // the last 202 written
  ClientTimes times;

  // The runtime's next request, on its open connection or a new one.
  std::optional<http::request<http::string_body>> read_request() {
    for (int attempts = 0; attempts < 4; ++attempts) {
      if (!socket) {
        // A runtime that exited (a wrong path, a missing handler) never connects: do not wait for it.
        for (pollfd listening{acceptor.native_handle(), POLLIN, 0}; ::poll(&listening, 1, 1000) <= 0;) {
          int status;
          if (::waitpid(pid, &status, WNOHANG) == pid) {
            std::fprintf(stderr, "stub runtime: the runtime exited before it asked for an event\n");
            pid = -1;
            return std::nullopt;
          }
        }
        socket.emplace(io);
        buffer.clear();
        boost::system::error_code ec;
        acceptor.accept(*socket, ec);
        if (ec) return std::nullopt;
        socket->set_option(tcp::no_delay(true));
      }
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(*socket, buffer, req, ec);
      if (!ec) return req;
      socket.reset();  // it closed this connection: the next request comes on a new one
    }
    return std::nullopt;
  }

  bool write(http::response<http::string_body>& res) {
    res.prepare_payload();
    boost::system::error_code ec;
    http::write(*socket, res, ec);
    if (!ec && !res.keep_alive()) socket.reset();
    return !ec;
  }
};

StubRuntimeApi::StubRuntimeApi(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StubRuntimeApi::~StubRuntimeApi() {
  if (impl_->pid > 0) {
    ::kill(impl_->pid, SIGKILL);
    int status;
    ::waitpid(impl_->pid, &status, 0);
  }
}

std::unique_ptr<StubRuntimeApi> StubRuntimeApi::start(const std::vector<std::string>& argv,
                                                      const std::filesystem::path& cwd, const std::string& handler) {
  auto impl = std::make_unique<Impl>();
  tcp::endpoint at(asio::ip::address_v4::loopback(), 0);
  impl->acceptor.open(at.protocol());
  impl->acceptor.bind(at);
  impl->acceptor.listen();
  auto port = impl->acceptor.local_endpoint().port();
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  env.push_back("AWS_LAMBDA_RUNTIME_API=127.0.0.1:" + std::to_string(port));
  env.push_back("_HANDLER=" + handler);
  env.push_back("LAMBDA_TASK_ROOT=" + cwd.string());
  env.push_back("AWS_LAMBDA_FUNCTION_NAME=stub");
  env.push_back("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128");
  env.push_back("AWS_LAMBDA_FUNCTION_VERSION=$LATEST");
  std::vector<char*> argp, envp;
  for (auto& a : argv) argp.push_back(const_cast<char*>(a.c_str()));
  argp.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  int rc = posix_spawnp(&impl->pid, argp[0], &fa, nullptr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    std::fprintf(stderr, "stub runtime: spawn %s: %s\n", argv[0].c_str(), std::strerror(rc));
    return nullptr;
  }
  return std::unique_ptr<StubRuntimeApi>(new StubRuntimeApi(std::move(impl)));
}

const StubRuntimeApi::ClientTimes& StubRuntimeApi::last_times() const {
  return impl_->times;
}

std::optional<std::string> StubRuntimeApi::invoke(std::string_view event) {
  using Clock = std::chrono::steady_clock;
  auto us_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
  };
  auto& s = *impl_;
  s.times = {};
  // Only an invoke right after the last one times the ask: after a pause (another path's round)
  // the GET waited in the socket for the caller, not the other way round.
  bool back_to_back = s.events > 0 && us_since(s.acked) < 100;
  while (!s.holds_next) {
    auto req = s.read_request();
    if (!req || req->method() != http::verb::get || !req->target().ends_with("/invocation/next")) return std::nullopt;
    s.holds_next = true;
    if (back_to_back) s.times.ask_us = us_since(s.acked);
  }
  std::string id = "00000000-0000-4000-8000-" + std::to_string(100000000000 + ++s.events);
  http::response<http::string_body> next{http::status::ok, 11};
  next.set(http::field::content_type, "application/json");
  next.set("Lambda-Runtime-Aws-Request-Id", id);
  next.set("Lambda-Runtime-Deadline-Ms", "99999999999999");
  next.set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:stub");
  next.set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0");
  next.body() = std::string(event);
  auto sent = Clock::now();
  if (!s.write(next)) return std::nullopt;
  s.holds_next = false;
  auto req = s.read_request();
  s.times.answer_us = us_since(sent);
  if (!req || req->method() != http::verb::post || req->target().find(id + "/response") == std::string::npos)
    return std::nullopt;
  http::response<http::string_body> accepted{http::status::accepted, 11};
  accepted.set(http::field::content_type, "application/json");
  accepted.keep_alive(req->keep_alive());
  accepted.body() = R"({"status":"OK"})";
  if (!s.write(accepted)) return std::nullopt;
  s.acked = Clock::now();
  return std::move(req->body());
}

}  // namespace fnexec::bench
