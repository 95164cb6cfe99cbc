// Hostile requests against `fnexec serve`, sent as an attacker who has read the code would send them:
// each gets a clear status, the connection it broke is closed, and the daemon goes on serving.
#include <fmt/format.h>

#include "test_serve_fixture.h"

namespace fnexec::test::serve {

namespace {

// Sends raw bytes on a new connection and reads until the daemon closes it.
std::string exchange(const stdfs::path& socket, const std::string& bytes) {
  auto fd = connect_unix(socket);
  // The daemon may answer and close before it has read everything: a failed write is fine.
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  ::shutdown(fd.get(), SHUT_WR);
  return read_to_eof(fd.get());
}

size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

// A PUT that would create function `name`, hidden as the body of a request.
std::string smuggled_put(const std::string& name) {
  std::string body = kHello;
  return "PUT /v1/functions/" + name + " HTTP/1.1\r\nHost: x\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

TEST_SUITE("serve-hostile") {
  TEST_CASE("request smuggling: Transfer-Encoding not ending in chunked, or with Content-Length, is 400 and closes") {
    Daemon d;
    d.start();
    struct Case {
      std::string name, framing;
    };
    std::string inner = smuggled_put("smuggled");
    std::string chunk = fmt::format("{:x}\r\n{}\r\n0\r\n\r\n", inner.size(), inner);
    std::vector<Case> cases = {
        {"chunked, identity", "Transfer-Encoding: chunked, identity\r\n"},
        {"identity", "Transfer-Encoding: identity\r\n"},
        {"xchunked", "Transfer-Encoding: xchunked\r\n"},
        {"CL then TE", "Content-Length: " + std::to_string(chunk.size()) + "\r\nTransfer-Encoding: chunked\r\n"},
        {"TE then CL", "Transfer-Encoding: chunked\r\nContent-Length: " + std::to_string(chunk.size()) + "\r\n"},
        {"identity with CL", "Transfer-Encoding: identity\r\nContent-Length: 0\r\n"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.name);
      // The body is a valid chunked body for the chunked cases and a bare request for the others.
      bool chunked_body = c.framing.find("chunked\r\n") != std::string::npos;
      std::string req = "POST /v1/functions/nope/invoke HTTP/1.1\r\nHost: x\r\n" + c.framing + "\r\n" +
                        (chunked_body ? chunk : inner);
      std::string reply = exchange(d.socket(), req);
      INFO(reply);
      CHECK(reply.starts_with("HTTP/1.1 400"));
      CHECK(contains(reply, "Connection: close"));
      CHECK(count_of(reply, "HTTP/1.1 ") == 1);  // nothing after the 400 ran as a request
    }
    auto list = d.curl("GET", "/v1/functions");
    CHECK(list.body == R"({"functions":[]})");
    CHECK(d.curl("GET", "/v1/functions/smuggled").status == 404);
  }

  TEST_CASE("framing errors: invalid Content-Length is 400, an oversized header 431, both close") {
    Daemon d;
    d.start();
    for (std::string cl : {"abc", "-1", "1, 2", "99999999999999999999999"}) {
      CAPTURE(cl);
      std::string reply =
          exchange(d.socket(), "PUT /v1/functions/f HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl + "\r\n\r\n");
      INFO(reply);
      CHECK(reply.starts_with("HTTP/1.1 400"));
      CHECK(contains(reply, "Content-Length"));
      CHECK(contains(reply, "Connection: close"));
    }
    std::string big = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + std::string(32 * 1024, 'a') + "\r\n\r\n";
    std::string reply = exchange(d.socket(), big);
    INFO(reply);
    CHECK(reply.starts_with("HTTP/1.1 431"));
    CHECK(contains(reply, "header is over 16384 bytes"));
    // Garbage that is not HTTP, and a malformed chunk after a good header.
    CHECK(exchange(d.socket(), "\x01\x02 NOT HTTP\r\n\r\n").starts_with("HTTP/1.1 400"));
    std::string bad_chunk = exchange(
        d.socket(), "POST /v1/functions/f/invoke HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    CHECK(bad_chunk.starts_with("HTTP/1.1 400"));
    CHECK(count_of(bad_chunk, "HTTP/1.1 ") == 1);
    CHECK(d.curl("GET", "/healthz").status == 200);
  }

  TEST_CASE("pipelining: requests on one connection are answered in order, one reply each") {
    Daemon d;
    d.start();
    std::string reqs = smuggled_put("piped") + "GET /v1/functions/piped HTTP/1.1\r\nHost: x\r\n\r\n" +
                       "GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n" +
                       "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    std::string reply = exchange(d.socket(), reqs);
    INFO(reply);
    CHECK(count_of(reply, "HTTP/1.1 ") == 4);
    auto created = reply.find("HTTP/1.1 201"), got = reply.find("HTTP/1.1 200"), missing = reply.find("HTTP/1.1 404");
    CHECK(created < got);
    CHECK(got < missing);
  }
  TEST_CASE("bounded work: oversized function documents get 413 naming the fnexec.conf key") {
    Daemon d;
    d.start();
    std::string env;
    for (int i = 0; i < 2000; ++i) env += fmt::format(R"({}"K{}=v")", i ? "," : "", i);
    auto many_env = d.curl("PUT", "/v1/functions/f", R"({"image":"hello:latest","env":[)" + env + "]}");
    CHECK(many_env.status == 413);
    CHECK(contains(many_env.body, "has 2000 entries, over the limit of 1024 (max_env_entries in fnexec.conf)"));
    std::string cmd;
    for (int i = 0; i < 100000; ++i) cmd += i ? ",\"a\"" : "\"a\"";
    auto many_args = d.curl("PUT", "/v1/functions/f", R"({"image":"hello:latest","cmd":[)" + cmd + "]}");
    CHECK(many_args.status == 413);
    CHECK(contains(many_args.body, "max_array_entries"));
    auto huge = d.curl("PUT", "/v1/functions/f", std::string(2 << 20, ' ') + kHello);
    CHECK(huge.status == 413);
    CHECK(contains(huge.body, "(max_function_bytes in fnexec.conf)"));
    CHECK(d.curl("GET", "/v1/functions").body == R"({"functions":[]})");
    CHECK(d.curl("PUT", "/v1/functions/f", kHello).status == 201);
  }

  TEST_CASE("bounded work: a huge env (limits raised) is merged in linear time and SIGTERM still stops the daemon") {
    Daemon d("max_function_bytes = 64m\nmax_env_entries = 1000000\nmax_env_bytes = 64m\nshutdown_grace = 1s\n");
    d.start();
    // 500k distinct keys: the old scan per entry would take minutes here (200k took 48 s).
    std::string env;
    for (int i = 0; i < 500000; ++i) env += fmt::format(R"({}"K{}=v")", i ? "," : "", i);
    auto body = [&](int n) {
      return fmt::format(R"({{"image":"hello:latest","min_warm":1,"memory_mb":64,"env":[{}]}})", env) + std::string(n, ' ');
    };
    std::string first = body(0);
    auto put = [&](const std::string& name, const std::string& doc) {
      return "PUT /v1/functions/" + name + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
             std::to_string(doc.size()) + "\r\n\r\n" + doc;
    };
    std::string reply = exchange(d.socket(), put("big", first));
    CHECK_MESSAGE(reply.starts_with("HTTP/1.1 201"), reply.substr(0, 300));
    // A second one in flight when SIGTERM comes: the daemon exits; the bound is one only a hang hits.
    auto fd = connect_unix(d.socket());
    std::string second = put("big2", body(1));
    size_t off = 0;
    while (off < second.size()) {
      ssize_t n = ::send(fd.get(), second.data() + off, second.size() - off, MSG_NOSIGNAL);
      REQUIRE(n > 0);
      off += static_cast<size_t>(n);
    }
    d.signal(SIGTERM);
    bool exited = false;
    for (int i = 0; i < 1200 && !exited; ++i) {  // 2 minutes
      siginfo_t info{};
      REQUIRE(::waitid(P_PID, static_cast<id_t>(d.pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0);
      exited = info.si_pid == d.pid();
      if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK_MESSAGE(exited, "the daemon did not stop within 2 minutes of SIGTERM");
    CHECK(d.stop() == 0);
  }
  TEST_CASE("bounded work: an uploaded image over max_layer_bytes gets 413 and leaves no trace") {
    Daemon d("max_layer_bytes = 512k\n");
    d.start();
    auto images_before = d.curl("GET", "/v1/images").body;
    auto archive = d.scratch() / "bb.tar";
    auto mk = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--ref", "big:1", "--oci-archive",
                         archive.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto up = d.curl("POST", "/v1/images?name=big%3A1", std::nullopt, {"--data-binary", "@" + archive.string()});
    CHECK(up.status == 413);
    CHECK_MESSAGE(contains(up.body, "it unpacks to more than 524288 bytes (max_layer_bytes in fnexec.conf)"), up.body);
    CHECK(d.curl("GET", "/v1/images").body == images_before);
    CHECK(stdfs::is_empty(d.state_dir() / "uploads"));
    CHECK(stdfs::is_empty(d.state_dir() / "tmp"));
  }
  TEST_CASE("names with traversal or NUL, and deeply nested JSON, are 400 naming the problem") {
    Daemon d;
    d.start();
    for (std::string name : {"..%2F..%2Fetc", "%2e%2e", "a%00b", "a%2Fb", "%2Ftmp%2Fx"}) {
      CAPTURE(name);
      auto r = d.curl("PUT", "/v1/functions/" + name, kHello);
      CHECK(r.status == 400);
      CHECK(contains(r.body, "a name is 1-63 of a-z 0-9 _ . -"));
      CHECK(d.curl("GET", "/v1/functions/" + name).status == 400);
    }
    auto nested = d.curl("PUT", "/v1/functions/deep", std::string(100000, '[') + std::string(100000, ']'));
    CHECK(nested.status == 400);
    CHECK(contains(nested.body, "malformed JSON"));
    auto nested_field = d.curl("PUT", "/v1/functions/deep",
                               R"({"image":"hello:latest","env":{"A":)" + std::string(5000, '[') +
                                   std::string(5000, ']') + "}}");
    CHECK(nested_field.status == 400);
    auto nul_field = d.curl("PUT", "/v1/functions/nul", R"({"image":"hello:latest","cmd":["a\u0000b"]})");
    CHECK(nul_field.status == 400);
    CHECK(contains(nul_field.body, "must not contain NUL bytes"));
    CHECK(d.curl("GET", "/v1/functions").body == R"({"functions":[]})");
    CHECK(!stdfs::exists(d.state_dir() / ".." / "etc"));
  }

  TEST_CASE("slowloris: connections that send a header byte by byte do not keep other clients out") {
    Daemon d;
    d.start();
    std::vector<UniqueFd> slow;
    for (int i = 0; i < 64; ++i) {
      slow.push_back(connect_unix(d.socket()));
      REQUIRE(::send(slow.back().get(), "GET /heal", 9, MSG_NOSIGNAL) == 9);
    }
    for (int round = 0; round < 3; ++round) {
      for (auto& fd : slow) REQUIRE(::send(fd.get(), "t", 1, MSG_NOSIGNAL) == 1);
      CHECK(d.curl("GET", "/healthz").status == 200);
      CHECK(d.curl("PUT", "/v1/functions/f" + std::to_string(round), kHello).status == 201);
    }
    // The slow ones are still served when they finish.
    std::string rest = "hz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    REQUIRE(::send(slow.front().get(), rest.data(), rest.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(rest.size()));
    CHECK(read_to_eof(slow.front().get()).starts_with("HTTP/1.1 404"));  // "GET /healttthz": no such route
  }
  TEST_CASE("functions that never read stdin or flood stderr end with a record, and the daemon serves on") {
    InvokeDaemon d;
    d.create("deaf", "echo ignored", R"("min_warm":0)");
    auto deaf = d.invoke("deaf", std::string(5 << 20, 'e'));  // a 5 MiB event nobody reads
    CHECK(deaf.status == 200);
    CHECK(deaf.body == "ignored\n");
    d.create("shouty", "yes flood >&2", R"("min_warm":0,"timeout_ms":1000,"max_log_bytes":4096)");
    auto shouty = d.invoke("shouty", "");
    CHECK(shouty.status == 504);
    auto logs = d.curl("GET", "/v1/functions/shouty/logs");
    CHECK(logs.status == 200);
    CHECK(logs.body.size() < 64 * 1024);  // the tail, not the flood
    CHECK(d.curl("GET", "/healthz").status == 200);
  }
}  // TEST_SUITE

}  // namespace fnexec::test::serve
