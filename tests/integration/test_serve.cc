// fnexec serve as users run it: a real daemon process on a temp socket with its state on a tmpfs,
// driven by real clients (curl and the fnexec CLI). Readiness comes from sd_notify on a socket the
// test owns, so no test sleeps.
#include <sqlite3.h>

#include "server/client.h"
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;

TEST_SUITE("serve") {
  TEST_CASE("functions: create, list, get, update, delete over curl and the CLI") {
    Daemon d;
    d.start();
    struct stat st {};
    REQUIRE(::stat(d.socket().c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0660);

    auto health = d.curl("GET", "/healthz");
    CHECK(health.status == 200);
    CHECK(contains(health.body, R"("status":"ok")"));

    auto created = d.curl("PUT", "/v1/functions/hello", kHello);
    CHECK(created.status == 201);
    CHECK(contains(created.body, R"("name":"hello")"));
    CHECK(contains(created.body, R"("memory_mb":64)"));
    CHECK(d.curl("PUT", "/v1/functions/hello", kHello).status == 200);  // replaced

    auto cli = d.cli({"fn", "create", "echo", "--image", "busybox:1", "--memory", "32m", "--cpus", "0.5",
                      "--timeout", "2s", "--min-warm", "0", "-e", "A=1", "--", "cat"});
    CHECK_MESSAGE(cli.exit_code == 0, cli.err);
    auto shown = d.cli({"fn", "show", "echo"});
    CHECK(shown.exit_code == 0);
    CHECK(contains(shown.out, R"("memory_mb":32)"));
    CHECK(contains(shown.out, R"("cpus":0.5)"));
    CHECK(contains(shown.out, R"("timeout_ms":2000)"));
    CHECK(contains(shown.out, R"("cmd":["cat"])"));
    CHECK(contains(shown.out, R"("env":["A=1"])"));

    auto list = d.curl("GET", "/v1/functions");
    CHECK(list.status == 200);
    CHECK(list.body.find(R"("name":"echo")") < list.body.find(R"("name":"hello")"));
    auto ls = d.cli({"fn", "ls", "-q"});
    CHECK(ls.out == "echo\nhello\n");

    CHECK(d.curl("DELETE", "/v1/functions/hello").status == 204);
    CHECK(d.curl("GET", "/v1/functions/hello").status == 404);
    auto again = d.curl("DELETE", "/v1/functions/hello");
    CHECK(again.status == 404);
    CHECK(contains(again.body, "no function named hello"));
    auto rm = d.cli({"fn", "rm", "echo"});
    CHECK(rm.exit_code == 0);
    auto gone = d.cli({"fn", "show", "echo"});
    CHECK(gone.exit_code == 125);
    CHECK(contains(gone.err, "no function named echo (HTTP 404)"));
    CHECK(d.cli({"fn", "ls", "-q"}).out.empty());
    CHECK(d.stop() == 0);
  }

  TEST_CASE("bad requests get 4xx with a message naming the problem") {
    Daemon d;
    d.start();
    auto malformed = d.curl("PUT", "/v1/functions/f", R"({"image": "x",)");
    CHECK(malformed.status == 400);
    CHECK(contains(malformed.body, "malformed JSON"));
    auto bad_name = d.curl("PUT", "/v1/functions/Hello", kHello);
    CHECK(bad_name.status == 400);
    CHECK(contains(bad_name.body, "starts with 'H'"));
    auto bad_get = d.curl("GET", "/v1/functions/a%20b");
    CHECK(bad_get.status == 400);
    CHECK(contains(bad_get.body, "' ' is not allowed"));
    auto wrong_type = d.curl("PUT", "/v1/functions/f", R"({"image":"x","memory_mb":"lots"})");
    CHECK(wrong_type.status == 400);
    CHECK(contains(wrong_type.body, R"(field \"memory_mb\" must be an integer, got a string)"));
    auto unknown_field = d.curl("PUT", "/v1/functions/f", R"({"image":"x","memroy_mb":1})");
    CHECK(unknown_field.status == 400);
    CHECK(contains(unknown_field.body, R"(unknown field \"memroy_mb\")"));
    auto unknown_fn = d.curl("POST", "/v1/functions/nope/invoke", "{}");
    CHECK(unknown_fn.status == 404);
    CHECK(contains(unknown_fn.body, "no function named nope"));
    auto no_route = d.curl("GET", "/v1/bogus");
    CHECK(no_route.status == 404);
    CHECK(contains(no_route.body, "no such endpoint: /v1/bogus"));
    auto method = d.curl("PATCH", "/v1/functions/f", "{}");
    CHECK(method.status == 405);
    CHECK(method.header("Allow") == "GET, PUT, DELETE");
    auto bad_mode = d.curl("POST", "/v1/functions/nope/invoke?mode=later", "");
    CHECK(bad_mode.status == 400);
    auto bad_limit = d.curl("GET", "/v1/invocations?limit=many");
    CHECK(bad_limit.status == 400);
    CHECK(contains(bad_limit.body, "'many' is not an unsigned integer"));
    // The CLI reports the daemon's message and exits 125.
    auto cli = d.cli({"fn", "create", "Bad", "--image", "x"});
    CHECK(cli.exit_code == 125);
    CHECK(contains(cli.err, "starts with 'B'"));
    CHECK(d.curl("GET", "/healthz").status == 200);  // still serving
  }

  TEST_CASE("events over max_event_bytes get 413; SIGHUP reloads the limit") {
    Daemon d("max_event_bytes = 1k\n");
    d.start();
    REQUIRE(d.curl("PUT", "/v1/functions/f", kHello).status == 201);
    auto big = d.curl("POST", "/v1/functions/f/invoke?mode=async", std::string(2000, 'x'));
    CHECK(big.status == 413);
    CHECK(contains(big.body, "over the limit of 1024 bytes"));
    // Chunked uploads have no Content-Length: the limit stops the body while it is read.
    auto chunked = d.curl("POST", "/v1/functions/f/invoke?mode=async", std::string(5000, 'y'),
                          {"-H", "Transfer-Encoding: chunked"});
    CHECK(chunked.status == 413);
    CHECK(d.curl("POST", "/v1/functions/f/invoke?mode=async", std::string(1000, 'x')).status == 202);

    // Raise the limit in the file and reload: no restart, the same process answers.
    std::ofstream(d.config(), std::ios::app) << "max_event_bytes = 4k\n";
    pid_t before = d.pid();
    d.signal(SIGHUP);
    auto seen = d.notify().wait_for("READY=1");
    CHECK(contains(seen, "RELOADING=1"));
    CHECK(d.curl("POST", "/v1/functions/f/invoke?mode=async", std::string(2000, 'x')).status == 202);
    CHECK(d.pid() == before);
    // A broken file on reload keeps the running config.
    std::ofstream(d.config(), std::ios::app) << "nonsense here\n";
    d.signal(SIGHUP);
    d.notify().wait_for("READY=1");
    CHECK(contains(d.log(), "reload failed, keeping the running config"));
    CHECK(d.curl("POST", "/v1/functions/f/invoke?mode=async", std::string(2000, 'x')).status == 202);
  }

  TEST_CASE("metrics parse as Prometheus text") {
    Daemon d;
    d.start();
    REQUIRE(d.curl("PUT", "/v1/functions/f", kHello).status == 201);
    REQUIRE(d.curl("POST", "/v1/functions/f/invoke?mode=async", "e").status == 202);
    auto m = d.curl("GET", "/metrics");
    CHECK(m.status == 200);
    CHECK(m.header("Content-Type").starts_with("text/plain; version=0.0.4"));
    auto samples = parse_metrics(m.body);
    CHECK(samples.contains(R"(fnexec_starts_total{kind="warm"})"));
    CHECK(samples.contains(R"(fnexec_starts_total{kind="cold"})"));
    CHECK(samples.contains("fnexec_sandboxes_alive"));
    CHECK(samples.at("fnexec_async_queued") >= 0);
    int modes = 0;
    for (const auto& [k, v] : samples)
      if (k.starts_with("fnexec_cgroup_mode{mode=")) {
        ++modes;
        CHECK(v == 1);
      }
    CHECK(modes == 1);
    CHECK(contains(m.body, "# TYPE fnexec_invocations_total counter"));
    CHECK(contains(m.body, "# TYPE fnexec_invocation_duration_seconds histogram"));
    CHECK(contains(m.body, "# TYPE fnexec_pool_sandboxes gauge"));
  }

  TEST_CASE("TCP: refuses to start without a token; 401 without or with a wrong token") {
    Daemon d;
    auto port = std::to_string(free_tcp_port());
    auto [rc, log] = d.start_expecting_failure({"--listen", "127.0.0.1:" + port});
    CHECK(rc == 125);
    CHECK(contains(log, "refusing to serve TCP without a bearer token"));
    CHECK(!stdfs::exists(d.socket()));

    auto token_file = d.scratch() / "token";
    write_file(token_file, "0123456789abcdef0123456789abcdef\n", 0644);
    auto [rc2, log2] =
        d.start_expecting_failure({"--listen", "127.0.0.1:" + port, "--token-file", token_file});
    CHECK(rc2 == 125);
    CHECK(contains(log2, "chmod 600"));

    ::chmod(token_file.c_str(), 0600);
    d.start({"--listen", "127.0.0.1:" + port, "--token-file", token_file});
    std::string url = "http://127.0.0.1:" + port;
    auto none = d.curl("GET", "/v1/functions", {}, {"--tcp", url + "/v1/functions"});
    CHECK(none.status == 401);
    CHECK(none.header("WWW-Authenticate") == "Bearer");
    auto wrong = d.curl("GET", "/v1/functions", {},
                        {"--tcp", url + "/v1/functions", "-H", "Authorization: Bearer nope"});
    CHECK(wrong.status == 401);
    CHECK(contains(wrong.body, "not valid"));
    // A 401 before a body is read still reaches the client whole.
    auto put = d.curl("PUT", "/v1/functions/f", kHello, {"--tcp", url + "/v1/functions/f"});
    CHECK(put.status == 401);
    auto ok = d.curl(
        "PUT", "/v1/functions/f", kHello,
        {"--tcp", url + "/v1/functions/f", "-H", "Authorization: Bearer 0123456789abcdef0123456789abcdef"});
    CHECK(ok.status == 201);
    // The CLI over TCP.
    auto ls = test::fnexec({"fn", "ls", "-q", "--host", url, "--token-file", token_file.string()});
    CHECK_MESSAGE(ls.exit_code == 0, ls.err);
    CHECK(ls.out == "f\n");
    auto no_token = test::fnexec({"fn", "ls", "--host", url});
    CHECK(no_token.exit_code == 125);
    CHECK(contains(no_token.err, "HTTP 401"));
    // The unix socket needs no token (its file mode is the access control).
    CHECK(d.curl("GET", "/v1/functions").status == 200);
    CHECK(d.stop() == 0);
  }

  TEST_CASE("restart keeps functions and records; SIGTERM exits 0 and removes the socket") {
    Daemon d;
    d.start();
    REQUIRE(d.curl("PUT", "/v1/functions/keep", kHello).status == 201);
    auto queued = d.curl("POST", "/v1/functions/keep/invoke?mode=async", "payload");
    REQUIRE(queued.status == 202);
    auto id = queued.header("Fnexec-Invocation-Id");
    REQUIRE(id.size() == 32);
    CHECK(queued.header("Location") == "/v1/invocations/" + id);
    CHECK(d.stop(SIGTERM) == 0);
    CHECK(!stdfs::exists(d.socket()));
    CHECK(contains(d.log(), "stopped"));

    d.start();
    auto f = d.curl("GET", "/v1/functions/keep");
    CHECK(f.status == 200);
    CHECK(contains(f.body, R"("memory_mb":64)"));
    auto rec = d.curl("GET", "/v1/invocations/" + id);
    CHECK(rec.status == 200);
    CHECK(contains(rec.body, R"("function":"keep")"));
    CHECK(contains(rec.body, R"("mode":"async")"));
    auto listed = d.cli({"invocations", "keep"});
    CHECK(listed.exit_code == 0);
    CHECK(contains(listed.out, id));
    CHECK(d.curl("GET", "/v1/invocations/0000").status == 404);
    CHECK(d.stop(SIGINT) == 0);
  }

  TEST_CASE("SIGKILL: the next instance replaces the stale socket and marks running invocations lost") {
    Daemon d;
    d.start();
    REQUIRE(d.curl("PUT", "/v1/functions/f", kHello).status == 201);
    auto q = d.curl("POST", "/v1/functions/f/invoke?mode=async", "x");
    REQUIRE(q.status == 202);
    CHECK(d.stop(SIGKILL) == 128 + SIGKILL);
    REQUIRE(stdfs::exists(d.socket()));  // a crash leaves the socket file behind

    // What a crash mid-invocation leaves: rows in `running` (one sync, the async one started).
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open((d.state_dir() / "server.db").c_str(), &db) == SQLITE_OK);
    auto id = q.header("Fnexec-Invocation-Id");
    std::string sql =
        "INSERT INTO invocations (id, function, async, status, queued_ms, started_ms) VALUES "
        "('feedfeedfeedfeedfeedfeedfeedfeed', 'f', 0, 'running', 1, 1);"
        "UPDATE invocations SET status = 'running' WHERE id = '" +
        id + "';";
    REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);

    d.start();
    CHECK(contains(d.log(), "removed stale socket"));
    CHECK(contains(d.log(), "recovered lost=1"));
    auto r = d.curl("GET", "/v1/invocations/feedfeedfeedfeedfeedfeedfeedfeed");
    CHECK(r.status == 200);
    CHECK(contains(r.body, R"("status":"lost")"));
    CHECK(contains(r.body, "the daemon stopped while this invocation ran"));
    // The async one is delivered again (at-least-once; its function's retries): delivery 2.
    wait_until([&] { return contains(d.curl("GET", "/v1/invocations/" + id).body, R"("status":"done")"); },
               "the interrupted async invocation to run again");
    CHECK(contains(d.curl("GET", "/v1/invocations/" + id).body, R"("delivery":2)"));
    CHECK(d.stop() == 0);
  }

  TEST_CASE("one daemon per state dir and per socket") {
    Daemon a;
    a.start();
    // Same state dir, other socket: the lock refuses it.
    auto other = a.scratch() / "other.sock";
    pid_t pid = -1;
    {
      std::vector<std::string> args = {test::fnexec_bin().string(),
                                       "serve",
                                       "--config",
                                       a.config().string(),
                                       "--socket",
                                       other.string(),
                                       "--state-dir",
                                       a.state_dir().string()};
      auto r = test::run(args, {.kill_after = std::chrono::milliseconds(60000)});
      CHECK(r.exit_code == 125);
      CHECK(contains(r.err, "another fnexec serve is using it"));
      CHECK(!stdfs::exists(other));
    }
    // Same socket, other state dir: a live daemon answers on it, so it is not replaced.
    {
      std::vector<std::string> args = {test::fnexec_bin().string(),
                                       "serve",
                                       "--config",
                                       a.config().string(),
                                       "--socket",
                                       a.socket().string(),
                                       "--state-dir",
                                       (a.scratch() / "s2").string()};
      auto r = test::run(args, {.kill_after = std::chrono::milliseconds(60000)});
      CHECK(r.exit_code == 125);
      CHECK(contains(r.err, "another daemon answers on it"));
    }
    (void)pid;
    CHECK(a.curl("GET", "/healthz").status == 200);
  }

  TEST_CASE("client errors: no daemon, logs and invocations of an empty daemon") {
    Daemon d;
    auto none = d.cli({"fn", "ls"});
    CHECK(none.exit_code == 125);
    CHECK(contains(none.err, "is the daemon running?"));
    d.start();
    REQUIRE(d.curl("PUT", "/v1/functions/f", kHello).status == 201);
    auto logs = d.curl("GET", "/v1/functions/f/logs?limit=5");
    CHECK(logs.status == 200);
    CHECK(contains(logs.body, R"("entries":[])"));
    auto cli_logs = d.cli({"logs", "f"});
    CHECK(cli_logs.exit_code == 0);
    CHECK(cli_logs.out.empty());
    auto inv = d.curl("GET", "/v1/invocations?function=f");
    CHECK(inv.status == 200);
    CHECK(contains(inv.body, R"("invocations":[])"));
  }

}  // TEST_SUITE

TEST_SUITE("serve") {
  TEST_CASE("images: upload an oci-archive, list it; a broken upload is refused and nothing is kept") {
    Daemon d;
    d.start();
    auto archive = d.scratch() / "hello.tar";
    auto mk = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--ref", "hello:1",
                         "--oci-archive", archive.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto up = d.curl("POST", "/v1/images?name=hello%3A1", std::nullopt,
                     {"--data-binary", "@" + archive.string(), "-H", "Content-Type: application/x-tar"});
    CHECK_MESSAGE(up.status == 201, up.body);
    CHECK(contains(up.body, R"("digest":"sha256:)"));
    auto list = d.curl("GET", "/v1/images");
    CHECK(list.status == 200);
    CHECK(contains(list.body, R"("name":"hello")"));
    CHECK(contains(list.body, R"("tag":"1")"));
    // Uncompressed, the same image is over 1 MiB: Beast's default body limit must not apply to it.
    auto big = d.scratch() / "big.tar";
    auto mk_big = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--ref", "big:1",
                             "--compression", "none", "--oci-archive", big.string()});
    REQUIRE_MESSAGE(mk_big.exit_code == 0, mk_big.err);
    REQUIRE(stdfs::file_size(big) > (1u << 20));
    auto big_up = d.curl("POST", "/v1/images?name=big%3A1", std::nullopt,
                         {"--data-binary", "@" + big.string(), "-H", "Content-Type: application/x-tar"});
    CHECK_MESSAGE(big_up.status == 201, big_up.body);

    auto junk = d.scratch() / "junk.tar";
    write_file(junk, std::string(10000, 'j'));
    auto bad =
        d.curl("POST", "/v1/images?name=junk%3A1", std::nullopt, {"--data-binary", "@" + junk.string()});
    CHECK(bad.status == 400);
    CHECK(contains(bad.body, "error"));
    CHECK(!contains(d.curl("GET", "/v1/images").body, "junk"));
    // Uploads are temporary files: none is left after the import.
    CHECK(stdfs::is_empty(d.state_dir() / "uploads"));
  }

  TEST_CASE(
      "a function pins its image: `image rm` refuses its name, `image gc` keeps it; delete releases it") {
    Daemon d;
    d.start();
    auto store = [&](std::vector<std::string> args) {
      args.insert(args.begin(), {"--root", d.state_dir().string(), "image"});
      return test::fnexec(args);
    };
    auto digest_of = [&](const std::string& ref) {
      auto r = store({"inspect", ref});
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
      std::smatch m;
      REQUIRE(std::regex_search(r.out, m, std::regex(R"re("digest": "(sha256:[0-9a-f]{64})")re")));
      return std::string(m[1]);
    };
    auto pinned = digest_of("hello:latest");
    REQUIRE(d.curl("PUT", "/v1/functions/f", kHello).status == 201);
    REQUIRE(d.curl("PUT", "/v1/functions/g", kHello).status == 201);

    // The name the functions were made with cannot go while they exist; the error names them.
    auto rm = store({"rm", "hello:latest"});
    CHECK(rm.exit_code != 0);
    CHECK_MESSAGE(contains(rm.err, "in use by function f, function g"), rm.err);
    // Another name of the same image is no function's: it goes.
    CHECK(store({"rm", "busybox:1"}).exit_code == 0);

    // hello:latest imported again as another image: the functions keep running the pinned one, and
    // gc (from the CLI, while the daemon runs) keeps it although no name points at it any more.
    auto other = d.scratch() / "other.tar";
    auto mk = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--cmd", "true", "--oci-archive",
                         other.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    REQUIRE(store({"import", other.string(), "--name", "hello:latest"}).exit_code == 0);
    REQUIRE(digest_of("hello:latest") != pinned);
    auto gc = store({"gc"});
    REQUIRE_MESSAGE(gc.exit_code == 0, gc.err);
    CHECK(digest_of(pinned) == pinned);  // manifest, config and layers all still there
    auto out = d.curl("POST", "/v1/functions/f/invoke", "still cat");
    CHECK_MESSAGE(out.status == 200, out.body);
    CHECK(out.body == "still cat");

    // Deleting the functions releases the pin: the name can go, and gc frees the old image.
    REQUIRE(d.curl("DELETE", "/v1/functions/f").status == 204);
    CHECK(contains(store({"rm", "hello:latest"}).err, "in use by function g"));
    REQUIRE(d.curl("DELETE", "/v1/functions/g").status == 204);
    CHECK(store({"gc"}).exit_code == 0);
    CHECK(store({"inspect", pinned}).exit_code != 0);
    CHECK(store({"rm", "hello:latest"}).exit_code == 0);
  }

  TEST_CASE("uploads time out on silence, not on total time (request_idle_timeout)") {
    Daemon d("request_idle_timeout = 1s\n");
    d.start();
    auto archive = d.scratch() / "slow.tar";
    auto mk = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--ref", "slow:1",
                         "--compression", "none", "--oci-archive", archive.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    // Sent at a third of its size per second: about 3 s in all, with no gap near the 1 s timeout.
    auto size = stdfs::file_size(archive);
    auto started = std::chrono::steady_clock::now();
    auto slow = d.curl("POST", "/v1/images?name=slow%3A1", std::nullopt,
                       {"--data-binary", "@" + archive.string(), "--limit-rate", std::to_string(size / 3)});
    CHECK_MESSAGE(slow.status == 201, slow.body);
    // Not a speed check: the precondition without which this part proves nothing.
    REQUIRE_MESSAGE(std::chrono::steady_clock::now() - started > std::chrono::milliseconds(1500),
                    "the rate-limited upload was faster than the idle timeout");
    CHECK(contains(d.curl("GET", "/v1/images").body, R"("name":"slow")"));

    // A body that stops arriving gets 408 naming the limit, and its partial upload is removed.
    auto fd = connect_unix(d.socket());
    std::string req =
        "POST /v1/images?name=stalled%3A1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n" +
        std::string(1000, 'x');
    REQUIRE(::write(fd.get(), req.data(), req.size()) == static_cast<ssize_t>(req.size()));
    std::string reply = read_to_eof(fd.get());
    INFO(reply);
    CHECK(reply.starts_with("HTTP/1.1 408"));
    CHECK(contains(reply, "no data for 1000 ms while reading the request body (request_idle_timeout)"));
    CHECK(stdfs::is_empty(d.state_dir() / "uploads"));
    CHECK(!contains(d.curl("GET", "/v1/images").body, "stalled"));
    // The same for an event.
    auto fd2 = connect_unix(d.socket());
    std::string ev =
        "POST /v1/functions/f/invoke HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc";
    REQUIRE(::write(fd2.get(), ev.data(), ev.size()) == static_cast<ssize_t>(ev.size()));
    CHECK(read_to_eof(fd2.get()).starts_with("HTTP/1.1 408"));
  }

  TEST_CASE("HEAD gets the headers of GET, Content-Length included, and no body") {
    Daemon d;
    d.start();
    // A raw request with Connection: close, read to EOF: anything after the blank line is a body.
    auto fd = connect_unix(d.socket());
    std::string req = "HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    REQUIRE(::write(fd.get(), req.data(), req.size()) == static_cast<ssize_t>(req.size()));
    std::string reply = read_to_eof(fd.get());
    INFO(reply);
    CHECK(reply.starts_with("HTTP/1.1 200"));
    auto end = reply.find("\r\n\r\n");
    REQUIRE(end != std::string::npos);
    CHECK(reply.size() == end + 4);
    auto get = d.curl("GET", "/healthz");
    CHECK(contains(reply, "Content-Length: " + std::to_string(get.body.size()) + "\r\n"));

    // On one kept-alive connection (the CLI's client): HEAD, then GET and a 405 to HEAD, in order.
    auto client = server::Client::connect({d.socket().string(), {}, {}});
    REQUIRE(client);
    auto ask = [&](const char* method, const char* target, unsigned status) {
      auto r = client->request(method, target);
      REQUIRE(r);
      CHECK(r->status == status);
      return *r;
    };
    auto head = ask("HEAD", "/v1/functions", 200);
    CHECK(head.body.empty());
    auto list = ask("GET", "/v1/functions", 200);
    CHECK(list.body == R"({"functions":[]})");
    CHECK(head.header("content-length") == std::to_string(list.body.size()));
    CHECK(head.header("content-type") == list.header("content-type"));
    CHECK(ask("HEAD", "/v1/functions/f/invoke", 405).body.empty());
    CHECK(ask("GET", "/healthz", 200).body == get.body);
  }

}  // TEST_SUITE
