// The CLI's HTTP client against a scripted server on a unix socket: which requests it retries after
// the connection breaks, and which it must never send twice.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include "server/client.h"
#include "util/fs.h"
#include "util/unique_fd.h"

using namespace fnexec;
using namespace fnexec::server;

namespace {

// Accepts connections on a unix socket; for each request it reads, `script` says what to do with
// it: answer it (keep-alive), or drop the connection without a reply.
class ScriptedServer {
 public:
  enum class Action { answer, drop, answer_then_close };
  using Script = std::function<Action(int request_number, const std::string& method)>;

  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    path_ = dir_.path() / "sock";
    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_.get(), 8) == 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
  }
  std::string socket() const { return path_.string(); }
  std::vector<std::string> methods() {
    std::lock_guard lock(mu_);
    return methods_;
  }
  // Waits until the server has closed `n` connections.
  void wait_closed(int n) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return closed_ >= n; });
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{listener_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) continue;
      handle(conn.get());
      conn.reset();
      std::lock_guard lock(mu_);
      ++closed_;
      cv_.notify_all();
    }
  }
  // Serves requests on one connection until the script ends it or the client goes away.
  void handle(int fd) {
    std::string in;
    for (;;) {
      size_t end;
      while ((end = in.find("\r\n\r\n")) == std::string::npos)
        if (!read_more(fd, in)) return;
      std::string method = in.substr(0, in.find(' '));
      int number;
      {
        std::lock_guard lock(mu_);
        methods_.push_back(method);
        number = static_cast<int>(methods_.size());
      }
      // Dropped with the body possibly unread: the client sees a reset or an end of stream.
      Action action = script_(number, method);
      if (action == Action::drop) return;
      size_t length = 0;
      if (auto cl = in.find("Content-Length: "); cl != std::string::npos && cl < end)
        length = std::stoul(in.substr(cl + 16));
      while (in.size() < end + 4 + length)
        if (!read_more(fd, in)) return;
      in.erase(0, end + 4 + length);
      std::string reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
      if (::write(fd, reply.data(), reply.size()) != static_cast<ssize_t>(reply.size())) return;
      if (action == Action::answer_then_close) return;
    }
  }
  bool read_more(int fd, std::string& in) {
    char buf[4096];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (stop_) return false;
      if (::poll(&p, 1, 50) != 1) continue;
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) return false;
      in.append(buf, static_cast<size_t>(n));
      return true;
    }
  }

  fs::TempDir dir_ = *fs::TempDir::make("/tmp", "fnexec-unit-client");
  std::filesystem::path path_;
  UniqueFd listener_;
  Script script_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> methods_;
  int closed_ = 0;
  std::thread thread_;
};

using Action = ScriptedServer::Action;

}  // namespace

TEST_CASE("client: a POST whose connection breaks is reported, never sent twice") {
  ScriptedServer server([](int n, const std::string&) { return n == 1 ? Action::drop : Action::answer; });
  auto client = Client::connect({server.socket(), {}, {}});
  REQUIRE(client);
  auto r = client->request("POST", "/v1/functions/f/invoke", std::string(100000, 'e'));
  REQUIRE(!r);
  CHECK(r.error().message().find("was not retried") != std::string::npos);
  // Had the client retried, the second connection would have got an answer and r would be one.
  CHECK(server.methods() == std::vector<std::string>{"POST"});
  // The client is usable afterwards, on a new connection.
  auto again = client->request("GET", "/healthz");
  REQUIRE(again);
  CHECK(again->body == "ok");
}

TEST_CASE("client: a GET whose connection breaks before any reply is retried once") {
  ScriptedServer server([](int n, const std::string&) { return n == 1 ? Action::drop : Action::answer; });
  auto client = Client::connect({server.socket(), {}, {}});
  REQUIRE(client);
  auto r = client->request("GET", "/v1/functions");
  REQUIRE_MESSAGE(r, r.error().message());
  CHECK(r->body == "ok");
  CHECK(server.methods() == std::vector<std::string>{"GET", "GET"});

  ScriptedServer always_drops([](int, const std::string&) { return Action::drop; });
  auto c2 = Client::connect({always_drops.socket(), {}, {}});
  REQUIRE(c2);
  CHECK(!c2->request("GET", "/v1/functions"));
  CHECK(always_drops.methods().size() == 2);  // once, and one retry
}

TEST_CASE("client: a POST after the server closed the idle connection goes out once, on a new one") {
  ScriptedServer server([](int, const std::string&) { return Action::answer_then_close; });
  auto client = Client::connect({server.socket(), {}, {}});
  REQUIRE(client);
  REQUIRE(client->request("GET", "/healthz"));
  server.wait_closed(1);
  auto r = client->request("POST", "/v1/functions/f/invoke", "event");
  REQUIRE_MESSAGE(r, r.error().message());
  CHECK(r->body == "ok");
  CHECK(server.methods() == std::vector<std::string>{"GET", "POST"});
}
