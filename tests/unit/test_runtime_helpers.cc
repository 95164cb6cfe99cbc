// Conformance of the runtime helpers (runtime/helpers/): each runs an example handler as a plain host
// process, driven over pipes with fnexec's own frame codec, one event at a time as the pool does.
#include <doctest/doctest.h>

#include <chrono>
#include <deque>
#include <random>

// The C helper is plain C; compiling it here checks that C++ can use it too.
#include "helpers/c/fnexec_function.h"
#include "invoke/frames.h"
#include "support/fixtures.h"
#include "support/proc.h"
#include "util/fs.h"

using namespace fnexec;
using namespace fnexec::invoke::frames;
using fnexec::test::Conversation;

namespace {

// The payloads that trigger an example handler's test hooks.
struct Hooks {
  std::string count_event;      // answers how many events the process has seen
  std::string remaining_event;  // answers the milliseconds left before the deadline
  std::function<std::string(const std::string&)> raise_event;  // fails with this message
  std::string print_event;  // writes "marker-print" with print()/printf and to fd 1, then answers
};

// The Python and Node examples take JSON; the C and shell ones look at the first bytes.
Hooks json_hooks() {
  return {R"({"count": true})", R"({"remaining": true})",
          [](const std::string& m) { return R"({"raise": ")" + m + "\"}"; }, R"({"print": "marker-print"})"};
}
Hooks text_hooks(bool has_print) {
  return {"count", "remaining", [](const std::string& m) { return "raise:" + m; },
          has_print ? "print:marker-print" : ""};
}

// One helper with its example handler.
struct Runtime {
  std::string name;
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  Hooks hooks;
  std::string error_type;              // the errorType of hooks.raise_event
  std::string init_error_type;         // with EXAMPLE_FAIL_INIT=1
  std::vector<std::string> log_lines;  // expected on stderr by the end
  std::string trace_file;              // named in the ERROR's stackTrace ("" when the language has none)
};

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string binary_payload(size_t n) {
  std::string s(n, '\0');
  std::mt19937 rng(5);
  for (auto& c : s) c = static_cast<char>(rng());
  s[0] = '\n';
  s[1] = '\0';
  s[n - 1] = '\n';
  return s;
}

// A function process and the frames it sent.
class Session {
 public:
  Session(const Runtime& rt, std::map<std::string, std::string> extra_env = {})
      : child_(rt.argv, with(rt, extra_env)) {}

  // The next frame, after writing input (an event, or nothing).
  Reply next(std::string_view input = {}) {
    bool got = child_.exchange(input, [this](std::string_view chunk) {
      parser_.feed(chunk);
      return drain();
    });
    if (!error_.empty()) FAIL("the helper broke the protocol: ", error_, "\nits stderr:\n", child_.err());
    if (!got || frames_.empty())
      FAIL("the helper closed stdout without a frame; its stderr:\n", child_.err());
    Reply r = std::move(frames_.front());
    frames_.pop_front();
    return r;
  }

  Reply event(const std::string& id, std::string_view payload, int64_t deadline_ms = now_ms() + 60000) {
    Reply r = next(encode_event(id, deadline_ms, payload));
    auto answers = check_reply_id(r, id);
    if (!answers) FAIL(answers.error().message());
    return r;
  }

  // Closes stdin and returns the exit code; no stray bytes may follow the last frame.
  int finish() {
    std::string rest;
    int code = child_.wait(&rest);
    parser_.feed(rest);
    drain();
    CHECK(error_.empty());
    CHECK(frames_.empty());
    CHECK(parser_.buffered() == 0);
    return code;
  }

  const std::string& err() const { return child_.err(); }

 private:
  static std::map<std::string, std::string> with(const Runtime& rt, std::map<std::string, std::string> env) {
    env.insert({"FNEXEC_PROTOCOL", "fnexec/1"});
    env.insert({"FNEXEC_LIFECYCLE", "reuse"});
    env.insert({"FNEXEC_FUNCTION_NAME", "conformance"});
    env.insert(rt.env.begin(), rt.env.end());
    return env;
  }

  bool drain() {
    for (;;) {
      auto r = parser_.next();
      if (!r) {
        error_ = r.error().message();
        return true;
      }
      if (!*r) return !frames_.empty();
      frames_.push_back(std::move(**r));
    }
  }

  Conversation child_;
  ReplyParser parser_{64 << 20};
  std::deque<Reply> frames_;
  std::string error_;
};

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

void check_conformance(const Runtime& rt) {
  INFO("runtime: ", rt.name);
  std::string big = binary_payload(5 << 20);
  {
    Session s(rt);
    Reply ready = s.next();
    REQUIRE(ready.kind == ReplyKind::ready);

    // Exact bytes: empty, one byte, 5 MiB of binary with newlines and NULs.
    for (auto [id, payload] :
         {std::pair<std::string, std::string_view>{"e-empty", ""}, {"e.1", "\n"}, {"e_big", big}}) {
      Reply r = s.event(id, payload);
      CHECK(r.kind == ReplyKind::ok);
      CHECK(r.body.size() == payload.size());
      CHECK(r.body == payload);
    }
    // State carries across events in one process: this is the fourth.
    Reply count = s.event("count-4", rt.hooks.count_event);
    CHECK(count.kind == ReplyKind::ok);
    CHECK(count.body == "4");

    // Output meant for stdout goes to the log, not into a frame (the parser would have failed).
    if (!rt.hooks.print_event.empty()) CHECK(s.event("print", rt.hooks.print_event).kind == ReplyKind::ok);

    Reply err = s.event("raise", rt.hooks.raise_event("boom 9"));
    REQUIRE(err.kind == ReplyKind::error);
    CHECK(contains(err.body, "\"errorType\":\"" + rt.error_type + "\""));
    CHECK(contains(err.body, "\"errorMessage\":\"boom 9\""));
    CHECK(contains(err.body, "\"stackTrace\":["));
    if (!rt.trace_file.empty()) CHECK(contains(err.body, rt.trace_file));

    // The deadline reaches the handler: a minute ahead, and one long past.
    Reply remaining = s.event("remaining", rt.hooks.remaining_event, now_ms() + 60000);
    REQUIRE(remaining.kind == ReplyKind::ok);
    long left = std::stol(remaining.body);
    CHECK(left > 1000);
    CHECK(left <= 61000);  // the shell helper's clock may have whole seconds only
    Reply past = s.event("past", rt.hooks.remaining_event, 1);
    CHECK(past.body == "0");

    // The process lives on after an error and still counts.
    Reply again = s.event("count-again", rt.hooks.count_event);
    CHECK(again.body == std::to_string(rt.hooks.print_event.empty() ? 8 : 9));

    CHECK(s.finish() == 0);
    for (const auto& line : rt.log_lines) CHECK_MESSAGE(contains(s.err(), line), "stderr: ", s.err());
  }
  {
    Session s(rt, {{"EXAMPLE_FAIL_INIT", "1"}});
    Reply init = s.next();
    REQUIRE(init.kind == ReplyKind::init_error);
    CHECK(contains(init.body, "\"errorType\":\"" + rt.init_error_type + "\""));
    CHECK(contains(init.body, "EXAMPLE_FAIL_INIT is set"));
    CHECK(s.finish() == 1);
  }
  {
    // Without FNEXEC_PROTOCOL (lifecycle oneshot): the event is stdin, the result stdout.
    std::string raw("bytes\0\xff\n", 8);
    auto r = test::run(rt.argv, {.stdin_data = raw, .env = rt.env});
    CHECK(r.exit_code == 0);
    CHECK(r.out == raw);
  }
  {
    // A malformed event (a length with a leading zero) ends the process with status 2 and no reply.
    auto env = rt.env;
    env["FNEXEC_PROTOCOL"] = "fnexec/1";
    auto r = test::run(rt.argv, {.stdin_data = "EVENT a 1 01\nx\n", .env = env});
    CHECK(r.exit_code == 2);
    CHECK(r.out == "READY fnexec/1\n");
    CHECK(contains(r.err, "protocol error from fnexec"));
  }
}

std::optional<std::string> program(const std::string& name) {
  auto p = fs::find_in_path(name);
  if (!p)
    MESSAGE(name, " is not installed: skipping its runtime helper (scripts/install-deps.sh installs it)");
  return p ? std::optional(p->string()) : std::nullopt;
}

std::string helper(const std::string& file) {
  return (test::runtime_helpers() / file).string();
}
std::string example(const std::string& file) {
  return (test::runtime_helpers() / "examples" / file).string();
}

Runtime shell_runtime(std::string name, std::vector<std::string> argv,
                      std::map<std::string, std::string> env) {
  argv.push_back(example("shell/handler.sh"));
  env["FNEXEC_RUNTIME_SH"] = helper("fnexec_runtime.sh");
  return Runtime{.name = std::move(name),
                 .argv = std::move(argv),
                 .env = std::move(env),
                 .hooks = text_hooks(false),
                 .error_type = "ValueError",
                 .init_error_type = "InitError",
                 .log_lines = {"init: output on stdout during init goes to the log"},
                 .trace_file = {}};
}

}  // namespace

TEST_CASE("runtime helper conformance: Python") {
  auto python = program("python3");
  if (!python) return;
  check_conformance(Runtime{
      .name = "python",
      .argv = {*python, helper("fnexec_runtime.py"), "handler.handler"},
      .env = {{"PYTHONPATH", example("python")}},
      .hooks = json_hooks(),
      .error_type = "ValueError",
      .init_error_type = "ImportError",
      .log_lines = {"marker-print\n", "fd1: marker-print\n", "Traceback"},
      .trace_file = "handler.py",
  });
}

TEST_CASE("runtime helper conformance: Node.js") {
  auto node = program("node");
  if (!node) return;
  check_conformance(Runtime{
      .name = "node",
      .argv = {*node, helper("fnexec_runtime.js"), example("node/index") + ".handler"},
      .env = {},
      .hooks = json_hooks(),
      .error_type = "RangeError",
      .init_error_type = "TypeError",
      .log_lines = {"marker-print\n", "fd1: marker-print\n", "RangeError: boom 9"},
      .trace_file = "index.js",
  });
}

TEST_CASE("runtime helper conformance: C") {
  check_conformance(Runtime{
      .name = "c",
      .argv = {test::example_c_echo().string()},
      .env = {},
      .hooks = text_hooks(true),
      .error_type = "ValueError",
      .init_error_type = "InitError",
      .log_lines = {"marker-print\n", "fd1\n"},
      .trace_file = {},
  });
}

TEST_CASE("runtime helper conformance: busybox sh") {
  // busybox's own applets (dd, wc, ...) on PATH: the helper must not rely on GNU coreutils.
  if (!std::filesystem::exists("/bin/busybox")) {
    MESSAGE("/bin/busybox is not installed: skipping (apt-get install busybox-static)");
    return;
  }
  auto dir = fs::TempDir::make("/tmp", "fnexec-busybox-");
  REQUIRE(dir);
  test::populate_busybox_rootfs(dir->path());
  auto bin = dir->path() / "bin";
  check_conformance(shell_runtime("busybox sh", {(bin / "sh").string()}, {{"PATH", bin.string()}}));
}

TEST_CASE("runtime helper conformance: bash") {
  auto bash = program("bash");
  if (!bash) return;
  check_conformance(shell_runtime("bash", {*bash}, {}));
}
