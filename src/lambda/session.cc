// Requests are parsed with Beast's incremental parser (fed from non-blocking reads, no Asio I/O);
// answers are small and written with send(MSG_NOSIGNAL), except the event itself, which may take
// several POLLOUT rounds.
#include "lambda/session.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include <boost/beast/http.hpp>
#include <cinttypes>
#include <cstdio>

#include "cgroup/cgroup.h"
#include "invoke/pipe_io.h"
#include "util/log.h"

namespace fnexec::lambda {

namespace http = boost::beast::http;
using invoke::detail::Clock;

namespace {

constexpr std::string_view kApiPrefix = "/2018-06-01/runtime/";

uint64_t micros_since(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

int64_t realtime_ms() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000;
}

std::string random_hex(size_t bytes) {
  unsigned char buf[32] = {};
  bytes = std::min(bytes, sizeof buf);
  // getrandom never blocks once the pool is initialised, which it is long before a daemon starts.
  if (::getrandom(buf, bytes, 0) != static_cast<ssize_t>(bytes)) {
    uint64_t t = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
    for (size_t i = 0; i < bytes; ++i)
      buf[i] = static_cast<unsigned char>(t >> (8 * (i % 8))) ^ static_cast<unsigned char>(i);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    out += kHex[buf[i] >> 4];
    out += kHex[buf[i] & 15];
  }
  return out;
}

// A version 4 UUID, the shape of Lambda's request ids.
std::string new_request_id() {
  auto h = random_hex(16);
  h[12] = '4';
  h[16] = "89ab"[h[16] % 4];
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" +
         h.substr(20);
}

// X-Ray's format, which the Node client copies into _X_AMZN_TRACE_ID.
std::string new_trace_id() {
  char epoch[16];
  std::snprintf(epoch, sizeof epoch, "%08" PRIx64, static_cast<uint64_t>(realtime_ms() / 1000));
  return "Root=1-" + std::string(epoch) + "-" + random_hex(12) + ";Parent=" + random_hex(8) + ";Sampled=0";
}

std::string error_json(std::string_view type, std::string_view message) {
  std::string out = "{\"errorType\":\"";
  out += type;
  out += "\",\"errorMessage\":\"";
  for (char ch : message) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) ch = ' ';
    out += ch;
  }
  out += "\"}";
  return out;
}

std::string ms_text(uint64_t us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", static_cast<double>(us) / 1000.0);
  return buf;
}

}  // namespace

struct RuntimeApiSession::Connection {
  UniqueFd fd;
  std::string in;  // received, not yet parsed
  std::optional<http::request_parser<http::string_body>> parser;
  bool header_checked = false;
  std::string out;  // to send
  size_t sent = 0;
  bool close_after_write = false;
  bool closed = false;
  bool holds_next = false;  // a GET .../next waits for an event here
  bool next_keep_alive = true;
};

RuntimeApiSession::~RuntimeApiSession() = default;

Result<std::unique_ptr<RuntimeApiSession>> RuntimeApiSession::attach(sandbox::Sandbox* sandbox,
                                                                     cgroup::SandboxCgroup* cgroup,
                                                                     invoke::SessionLimits limits,
                                                                     UniqueFd listener, FunctionFacts facts) {
  std::unique_ptr<RuntimeApiSession> s(new RuntimeApiSession());
  s->started_ = Clock::now();
  auto pipes = sandbox->take_stdio();
  if (!pipes.in || !pipes.out || !pipes.err)
    return fail(ErrorKind::invalid, "serve the Lambda Runtime API to sandbox", std::to_string(sandbox->pid()),
                "it was not launched with Stdio::pipes");
  if (!listener)
    return fail(ErrorKind::invalid, "serve the Lambda Runtime API to sandbox", std::to_string(sandbox->pid()),
                "no listening socket (listen_in_sandbox)");
  // A Lambda runtime gets no stdin: EOF at once.
  pipes.in.reset();
  s->sandbox_ = sandbox;
  s->cgroup_ = cgroup;
  s->limits_ = limits;
  s->facts_ = std::move(facts);
  s->arn_ = function_arn(s->facts_);
  s->listener_ = std::move(listener);
  s->out_ = std::move(pipes.out);
  s->err_ = std::move(pipes.err);
  s->usable_ = true;
  return s;
}

void RuntimeApiSession::kill_all() {
  usable_ = false;
  // SIGKILL to PID 1 ends its whole pid namespace; the cgroup catches anything that escaped it.
  (void)sandbox_->kill();
  if (cgroup_) (void)cgroup_->kill();
  listener_.reset();
  connections_.clear();
}

bool RuntimeApiSession::function_gone() const {
  pollfd fds[2] = {{function_ended_ ? -1 : sandbox_->status_fd(), POLLIN, 0}, {sandbox_->pidfd(), POLLIN, 0}};
  return ::poll(fds, 2, 0) > 0;
}

void RuntimeApiSession::record_function_end(invoke::InvocationRecord& rec) {
  pump_log(out_);
  pump_log(err_);
  // An init that wrote nothing on its status fd was killed: record_exit reaps it instead.
  pollfd status{sandbox_->status_fd(), POLLIN, 0};
  bool killed = ::poll(&status, 1, 0) == 0;
  function_ended_ = true;
  invoke::record_exit(*sandbox_, rec, killed);
}

void RuntimeApiSession::pump_log(UniqueFd& fd) {
  if (!fd) return;
  char buf[16 << 10];
  auto state = invoke::detail::read_available(
      fd.get(), {buf, sizeof buf}, "sandbox output", [&](std::string_view chunk) {
        invoke::detail::append_log_tail(log_, chunk, limits_.max_log_bytes);
        return true;
      });
  if (!state || *state == invoke::detail::ReadState::eof) fd.reset();
}

void RuntimeApiSession::accept_connections() {
  while (listener_) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) return;  // EAGAIN, or a connection reset before we took it
    // More than a runtime ever needs at once: closed at once, the runtime sees a reset.
    if (connections_.size() >= kMaxConnections) continue;
    // Replies are whole HTTP messages in one send: never hold one back for the runtime's delayed ACK.
    int one = 1;
    (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Connection>();
    c->fd = std::move(fd);
    connections_.push_back(std::move(c));
  }
}

void RuntimeApiSession::flush(Connection& c) {
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0) {
      c.closed = true;  // EPIPE, ECONNRESET: the runtime hung up
      return;
    }
    c.sent += static_cast<size_t>(n);
  }
  c.out.clear();
  c.sent = 0;
  if (c.close_after_write) c.closed = true;
}

void RuntimeApiSession::reply(Connection& c, unsigned status, std::string_view body, bool keep_alive) {
  std::string_view reason = status == 200   ? "OK"
                            : status == 202 ? "Accepted"
                            : status == 400 ? "Bad Request"
                            : status == 403 ? "Forbidden"
                            : status == 404 ? "Not Found"
                            : status == 405 ? "Method Not Allowed"
                            : status == 413 ? "Payload Too Large"
                                            : "Error";
  c.out += "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  if (!keep_alive) c.out += "Connection: close\r\n";
  c.out += "\r\n";
  c.out += body;
  c.close_after_write = c.close_after_write || !keep_alive;
  flush(c);
}

// The runtime broke the protocol: it gets an answer naming what, and the sandbox is retired.
void RuntimeApiSession::refuse(Connection& c, unsigned status, std::string_view error_type,
                               std::string detail) {
  reply(c, status, error_json(error_type, detail), false);
  if (!verdict_.protocol) verdict_.protocol = std::move(detail);
}

void RuntimeApiSession::deliver_event() {
  if (phase_ != Phase::event || delivered_) return;
  for (auto& c : connections_) {
    if (!c->holds_next || c->closed) continue;
    c->holds_next = false;
    delivered_ = true;
    // Content-Type always: the Node client crashes on a next without one.
    c->out +=
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: " + request_id_ +
        "\r\nLambda-Runtime-Deadline-Ms: " + std::to_string(deadline_ms_) +
        "\r\nLambda-Runtime-Invoked-Function-Arn: " + arn_ +
        "\r\nLambda-Runtime-Trace-Id: " +
        (context_ && !context_->trace_id.empty() ? context_->trace_id : new_trace_id()) + "\r\n";
    // The client context decoded, as Lambda sends it: the Node client exits on anything but JSON.
    if (context_ && !context_->client_context.empty())
      c->out += "Lambda-Runtime-Client-Context: " + context_->client_context + "\r\n";
    if (context_ && !context_->cognito_identity.empty())
      c->out += "Lambda-Runtime-Cognito-Identity: " + context_->cognito_identity + "\r\n";
    c->out += "Content-Length: " + std::to_string(payload_.size()) + "\r\n";
    if (!c->next_keep_alive) c->out += "Connection: close\r\n";
    c->out += "\r\n";
    c->out += payload_;
    c->close_after_write = !c->next_keep_alive;
    flush(*c);
    return;
  }
}

void RuntimeApiSession::handle(Connection& c, unsigned method, std::string_view target, std::string& body,
                               std::string_view error_type_header, bool keep_alive) {
  auto verb = static_cast<http::verb>(method);
  if (!target.starts_with(kApiPrefix))
    return refuse(c, 404, "InvalidRequest",
                  "unknown path " + std::string(target.substr(0, 200)) + "; the Runtime API is under " +
                      std::string(kApiPrefix));
  std::string_view path = target.substr(kApiPrefix.size());
  auto method_is = [&](http::verb want) {
    if (verb == want) return true;
    refuse(c, 405, "InvalidRequest",
           std::string(http::to_string(verb)) + " " + std::string(target) + ": expected " +
               std::string(http::to_string(want)));
    return false;
  };
  if (path == "invocation/next") {
    if (!method_is(http::verb::get)) return;
    for (auto& other : connections_)
      if (other->holds_next)
        return refuse(c, 400, "InvalidRequest", "a second GET .../invocation/next while one already waits");
    if (phase_ == Phase::event && delivered_ && !verdict_.answered)
      return refuse(c, 400, "InvalidRequest",
                    "GET .../invocation/next before it answered request " + request_id_);
    c.holds_next = true;
    c.next_keep_alive = keep_alive;
    if (phase_ == Phase::init) {
      phase_ = Phase::idle;
      verdict_.ready = true;
    }
    deliver_event();
    return;
  }
  if (path == "init/error") {
    if (!method_is(http::verb::post)) return;
    if (phase_ != Phase::init)
      return refuse(c, 403, "InvalidStateTransition",
                    "POST .../init/error after its init already asked for an event");
    verdict_.init_error =
        body.empty() ? error_json(error_type_header.empty() ? "Runtime.InitError" : error_type_header, "")
                     : std::move(body);
    reply(c, 202, "{\"status\":\"OK\"}", keep_alive);
    return;
  }
  if (path.starts_with("invocation/")) {
    auto rest = path.substr(sizeof "invocation/" - 1);
    auto slash = rest.find('/');
    std::string_view id = rest.substr(0, slash),
                     what = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
    if (what != "response" && what != "error")
      return refuse(c, 404, "InvalidRequest", "unknown path " + std::string(target.substr(0, 200)));
    if (!method_is(http::verb::post)) return;
    if (phase_ != Phase::event || verdict_.answered)
      return refuse(
          c, 400, "InvalidRequestID",
          "POST .../invocation/" + std::string(id.substr(0, 64)) + "/" + std::string(what) +
              (phase_ == Phase::init ? " during its init" : " with no event in flight (answered twice?)"));
    if (id != request_id_)
      return refuse(c, 400, "InvalidRequestID",
                    "POST .../invocation/" + std::string(id.substr(0, 64)) + "/" + std::string(what) +
                        " answers no event; the event in flight is " + request_id_);
    verdict_.answered = true;
    if (what == "response") {
      output_ = std::move(body);
    } else {
      error_body_ = body.empty()
                        ? error_json(error_type_header.empty() ? "Function.Error" : error_type_header, "")
                        : std::move(body);
    }
    reply(c, 202, "{\"status\":\"OK\"}", keep_alive);
    return;
  }
  refuse(c, 404, "InvalidRequest", "unknown path " + std::string(target.substr(0, 200)));
}

void RuntimeApiSession::read_connection(Connection& c) {
  char buf[64 << 10];
  // Parsed chunk by chunk, so what is buffered stays within one request's limits; a runtime that
  // keeps writing is read at most 16 MiB per pump, so the loop still sees its deadline.
  for (int chunks = 0; chunks < 256 && !c.closed && !verdict_.protocol && !verdict_.too_large; ++chunks) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      c.closed = true;
      c.holds_next = false;
      return;
    }
    c.in.append(buf, static_cast<size_t>(n));
    parse_requests(c);
    // A short read drained the socket: the recv that would say EAGAIN is left to the next poll.
    if (static_cast<size_t>(n) < sizeof buf) return;
  }
}

void RuntimeApiSession::parse_requests(Connection& c) {
  while (!c.in.empty() && !c.closed && !verdict_.protocol && !verdict_.too_large) {
    if (!c.parser) {
      c.parser.emplace();
      c.parser->header_limit(kMaxHeaderBytes);
      c.parser->body_limit(limits_.max_output_bytes);
      c.header_checked = false;
    }
    boost::beast::error_code ec;
    size_t used = c.parser->put(boost::asio::buffer(c.in.data(), c.in.size()), ec);
    c.in.erase(0, used);
    if (ec == http::error::need_more) break;
    if (ec == http::error::body_limit) {
      verdict_.too_large = true;
      reply(c, 413,
            error_json("RequestEntityTooLarge",
                       "the body passes max_output_bytes (" + std::to_string(limits_.max_output_bytes) + ")"),
            false);
      return;
    }
    if (ec) return refuse(c, 400, "InvalidRequest", "malformed HTTP from the runtime: " + ec.message());
    if (c.parser->is_header_done() && !c.header_checked) {
      c.header_checked = true;
      // Refused before its body is read: a 6 MB body that is refused anyway is never buffered.
      auto length = c.parser->content_length();
      if (length && *length > limits_.max_output_bytes) {
        verdict_.too_large = true;
        reply(c, 413,
              error_json("RequestEntityTooLarge", "Content-Length " + std::to_string(*length) +
                                                      " passes max_output_bytes (" +
                                                      std::to_string(limits_.max_output_bytes) + ")"),
              false);
        return;
      }
      // curl and other clients wait up to a second for this before they send a large body.
      if (boost::beast::iequals(c.parser->get()[http::field::expect], "100-continue")) {
        c.out += "HTTP/1.1 100 Continue\r\n\r\n";
        flush(c);
      }
      c.parser->eager(true);
    }
    if (!c.parser->is_done()) continue;
    auto req = c.parser->release();
    c.parser.reset();
    std::string error_type(req["Lambda-Runtime-Function-Error-Type"]);
    auto target = req.target();
    handle(c, static_cast<unsigned>(req.method()), std::string_view(target.data(), target.size()), req.body(),
           error_type, req.keep_alive());
  }
}

void RuntimeApiSession::drop_closed() {
  std::erase_if(connections_, [](const auto& c) { return c->closed; });
}

void RuntimeApiSession::pump(std::span<const pollfd> ready) {
  // After a poll only the fds it reported: a read of an idle one is a syscall that finds nothing.
  auto is_ready = [&](size_t i) { return ready.empty() || (i < ready.size() && ready[i].revents != 0); };
  if (is_ready(1)) pump_log(out_);
  if (is_ready(2)) pump_log(err_);
  size_t polled = connections_.size();
  if (is_ready(0)) accept_connections();
  for (size_t i = 0; i < connections_.size(); ++i) {
    if (i < polled && !is_ready(kFixedPollFds + i)) continue;
    auto& c = *connections_[i];
    if (!c.out.empty()) flush(c);
    if (!c.closed) read_connection(c);
  }
  drop_closed();
}

std::vector<pollfd> RuntimeApiSession::event_pollfds() const {
  std::vector<pollfd> fds = {{listener_ ? listener_.get() : -1, POLLIN, 0},
                             {out_ ? out_.get() : -1, POLLIN, 0},
                             {err_ ? err_.get() : -1, POLLIN, 0},
                             {function_ended_ ? -1 : sandbox_->status_fd(), POLLIN, 0},
                             {sandbox_->pidfd(), POLLIN, 0}};
  for (auto& c : connections_)
    fds.push_back({c->fd.get(), static_cast<short>(POLLIN | (c->out.empty() ? 0 : POLLOUT)), 0});
  return fds;
}

void RuntimeApiSession::init_pollfds(std::span<pollfd, kPollFds> fds) const {
  auto all = event_pollfds();
  for (size_t i = 0; i < kPollFds; ++i) fds[i] = i < all.size() ? all[i] : pollfd{-1, 0, 0};
}

std::optional<invoke::InitOutcome> RuntimeApiSession::continue_init() {
  pump();
  invoke::InitOutcome out;
  auto failed = [&](std::string detail) {
    kill_all();
    out.init_us = micros_since(started_);
    out.detail = std::move(detail);
    invoke::detail::trim_log_tail(log_, limits_.max_log_bytes);
    out.log = std::exchange(log_, {});
    return out;
  };
  if (verdict_.init_error) {
    out.error_body = std::move(verdict_.init_error);
    return failed("its init failed (POST .../init/error)");
  }
  if (verdict_.protocol) return failed("it broke the Lambda Runtime API: " + *verdict_.protocol);
  if (verdict_.too_large) return failed("it sent a request body over max_output_bytes during its init");
  if (verdict_.ready) {
    out.ready = true;
    out.init_us = micros_since(started_);
    init_us_ = out.init_us;
    log_.clear();
    return out;
  }
  if (function_gone()) {
    invoke::InvocationRecord rec;
    record_function_end(rec);
    if (rec.setup_error) return failed(rec.setup_error->message());
    return failed(rec.signal ? "it was killed by signal " + std::to_string(*rec.signal) +
                                   " before it asked for its first event"
                             : "it exited with status " + std::to_string(rec.exit_code) +
                                   " before it asked for its first event (GET .../invocation/next)");
  }
  return std::nullopt;
}

invoke::InitOutcome RuntimeApiSession::abandon_init(std::chrono::milliseconds init_timeout) {
  kill_all();
  invoke::InitOutcome out;
  out.init_us = micros_since(started_);
  out.detail =
      "no GET .../invocation/next within init_timeout (" + std::to_string(init_timeout.count()) + " ms)";
  invoke::detail::trim_log_tail(log_, limits_.max_log_bytes);
  out.log = std::exchange(log_, {});
  return out;
}

bool RuntimeApiSession::idle_and_alive() {
  if (!usable_) return false;
  pump();
  if (verdict_.protocol || verdict_.too_large || function_gone()) {
    if (verdict_.protocol)
      spdlog::info("event=sandbox_retired sandbox={} reason=protocol detail=\"{}\"", sandbox_->pid(),
                   *verdict_.protocol);
    kill_all();
    return false;
  }
  return true;
}

Result<invoke::EventOutcome> RuntimeApiSession::run_event(std::string_view, std::string_view payload,
                                                          std::chrono::nanoseconds timeout,
                                                          const invoke::EventContext& context) {
  if (!usable_)
    return fail(ErrorKind::invalid, "send event to sandbox", std::to_string(sandbox_->pid()),
                "its function process was retired");
  invoke::EventOutcome out;
  auto& rec = out.record;
  // Counters and the memory peak start here: the init and earlier events are never billed.
  if (cgroup_) FNEXEC_TRY(cgroup_->baseline());
  request_id_ = new_request_id();
  payload_ = payload;
  context_ = &context;
  deadline_ms_ = realtime_ms() + std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
  delivered_ = false;
  verdict_ = {};
  output_.clear();
  error_body_.reset();
  phase_ = Phase::event;
  // What it logged between events belongs before this event's START, as in Lambda's log stream.
  out.log = std::exchange(log_, {});
  out.log += "START RequestId: " + request_id_ + " Version: " + std::string(kVersion) + "\n";
  std::swap(out.log, log_);

  auto start = Clock::now();
  auto deadline = start + timeout;
  auto retire = [&](std::string error_type, std::string retired) {
    kill_all();
    out.error_type = std::move(error_type);
    out.retired = std::move(retired);
    if (rec.exit_code == 0) rec.exit_code = 1;
  };
  deliver_event();
  // The runtime cannot have answered an event it was sent a moment ago: the first pump waits for
  // the poll, and each later one reads only what the poll reported.
  std::vector<pollfd> fds;
  for (bool wait_first = delivered_;; wait_first = false) {
    if (!wait_first) pump(fds);
    if (verdict_.too_large) {
      out.output_too_large = true;
      retire("Runtime.OutputTooLarge", "output_too_large");
      break;
    }
    if (verdict_.protocol) {
      out.detail = *verdict_.protocol;
      retire("Runtime.ProtocolError", "protocol");
      break;
    }
    if (verdict_.answered) {
      if (error_body_) {
        out.error_body = std::move(error_body_);
        out.error_type = "Function.Error";
        rec.exit_code = 1;
      } else {
        out.output = std::move(output_);
      }
      break;
    }
    bool gone = wait_first ? false : fds.empty() ? function_gone() : (fds[3].revents | fds[4].revents) != 0;
    if (gone) {
      // The function ended mid-event; an answer it sent before that was taken by the pump above.
      record_function_end(rec);
      log_ += "RequestId: " + request_id_ + " Error: Runtime exited" +
              (rec.signal ? " with signal " + std::to_string(*rec.signal)
                          : " with status " + std::to_string(rec.exit_code)) +
              "\nRuntime.ExitError\n";
      retire("Runtime.ExitError", "exit");
      break;
    }
    fds = event_pollfds();
    timespec ts;
    int n = ::ppoll(fds.data(), fds.size(), invoke::detail::timeout_until(deadline, &ts), nullptr);
    if (n < 0 && errno != EINTR) return fail_errno("wait for", "sandbox " + std::to_string(sandbox_->pid()));
    if (n == 0) {
      pump_log(out_);
      pump_log(err_);
      rec.timed_out = true;
      rec.exit_code = 124;
      log_ += "RequestId: " + request_id_ + " Error: Task timed out after " +
              ms_text(static_cast<uint64_t>(
                          std::chrono::duration_cast<std::chrono::microseconds>(timeout).count()) /
                      1000) +
              " seconds\n";
      retire("Runtime.Timeout", "timeout");
      break;
    }
  }
  payload_ = {};
  context_ = nullptr;
  phase_ = Phase::idle;
  rec.wall_us = micros_since(start);
  if (cgroup_) invoke::record_usage(*cgroup_, rec);
  if (rec.oom_killed && !rec.timed_out) rec.exit_code = 137;
  // Lambda's closing lines; Billed Duration in 1 ms steps, as Lambda bills since 2020.
  log_ += "END RequestId: " + request_id_ + "\nREPORT RequestId: " + request_id_ +
          "\tDuration: " + ms_text(rec.wall_us) +
          " ms\tBilled Duration: " + std::to_string((rec.wall_us + 999) / 1000) +
          " ms\tMemory Size: " + std::to_string(facts_.memory_mb) + " MB\tMax Memory Used: " +
          (rec.memory_peak_bytes ? std::to_string((*rec.memory_peak_bytes + (1 << 20) - 1) >> 20)
                                 : std::string("?")) +
          " MB";
  if (auto init = std::exchange(init_us_, std::nullopt)) log_ += "\tInit Duration: " + ms_text(*init) + " ms";
  log_ += "\n";
  invoke::detail::trim_log_tail(log_, limits_.max_log_bytes);
  out.log = std::exchange(log_, {});
  return out;
}

}  // namespace fnexec::lambda
