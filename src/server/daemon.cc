// The only translation unit of the daemon that includes Beast (compile time: Beast is heavy).
#include "server/daemon.h"

#include <fcntl.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <limits>
#include <list>
#include <thread>

#include "cgroup/cgroup.h"
#include "cluster/node.h"
#include "image/store.h"
#include "net/attachment.h"
#include "server/http_framing.h"
#include "server/json.h"
#include "server/lambda_api.h"
#include "server/session_stream.h"
#include "server/sigv4.h"
#include "server/service.h"
#include "server/tls.h"
#include "util/log.h"
#include "util/openssl_api.h"
#include "util/unique_fd.h"

namespace fnexec::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using generic_socket = asio::generic::stream_protocol::socket;
namespace stdfs = std::filesystem;

Result<> sd_notify(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return {};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@'))
    return fail(ErrorKind::invalid, "notify service manager", path, "NOTIFY_SOCKET is not a socket path");
  std::memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("create notify socket");
  auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  if (::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
               addr_len) < 0)
    return fail_errno("notify service manager", path);
  return {};
}

namespace {

constexpr auto kTickInterval = std::chrono::milliseconds(250);

// Constant-time token check: comparing digests hides the length and the first differing byte.
bool token_matches(std::string_view given, std::string_view expected) {
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(given.data()), given.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(expected.data()), expected.size(), b);
  return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

class Daemon;

// One HTTP/1.1 connection: read a request, hand it to the Service, write the reply, repeat (keep-alive).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Daemon& daemon, SessionStream stream, bool needs_token)
      : daemon_(daemon),
        socket_(std::move(stream)),
        timer_(socket_.get_executor()),
        needs_token_(needs_token) {}
  void start() {
    if (socket_.is_tls()) return handshake();
    read_header();
  }
  // Closes the connection if it waits for a request (shutdown); a request in progress finishes first.
  void close_if_idle() {
    if (idle_) close();
  }
  // Between reading a request and finishing its reply.
  bool in_request() const { return !idle_ && !closed_; }

 private:
  // Every read of a request re-arms the timer: the daemon times out a silent peer, not a slow one.
  void arm_timer();
  void on_timer();
  void close() {
    closed_ = true;
    beast::error_code ec;
    socket_.socket().shutdown(asio::socket_base::shutdown_both, ec);
    socket_.socket().close(ec);
    timer_.cancel();
  }
  // TLS: the handshake runs under the idle timer, so a peer that stalls it (handshake slowloris)
  // is closed like a silent one, and the loop serves everyone else meanwhile.
  void handshake();
  void on_handshake(beast::error_code ec);
  void read_header();
  void on_header(beast::error_code ec);
  void read_body();
  template <class Parser>
  void read_body_part(Parser& parser);
  void on_body(beast::error_code ec);
  void dispatch(Request request);
  void send(Reply reply, bool close_after = false);
  // An error before the request reaches the Service: Lambda's form below /2015-03-31, else /v1's.
  Reply early_error(unsigned status, std::string_view lambda_type, std::string message) const;
  // SigV4 (sigv4.h) or the bearer token; false when it already answered with 401/403.
  bool authenticate(const http::request<http::empty_body>& req);
  void drain_and_close();

  Daemon& daemon_;
  SessionStream socket_;
  asio::steady_timer timer_;
  bool needs_token_;
  bool idle_ = false;
  bool closed_ = false;
  bool reading_body_ = false;
  bool body_timed_out_ = false;  // the timer cancelled the body read: answer 408, not a silent close
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> header_;
  std::optional<http::request_parser<http::string_body>> string_parser_;
  std::optional<http::request_parser<http::file_body>> file_parser_;
  RouteMatch match_;
  stdfs::path upload_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool head_ = false;  // the request is a HEAD: its reply carries no body
  std::optional<sigv4::Authorization> signature_;  // checked against the body once it is read
  std::string principal_ = "unix";
  std::array<char, 65536> discard_{};
  size_t drained_ = 0;
};

class Daemon {
 public:
  Daemon(const ServeOptions& options, ServeConfig config) : options_(options), config_(std::move(config)) {}
  Result<int> run();

  // Loop thread only.
  bool stopping() const { return stopping_; }
  const std::string& token() const { return token_; }
  const std::map<std::string, std::string>& access_keys() const { return config_.access_keys; }
  const LambdaSettings& lambda() const { return config_.lambda; }
  // The limit on a route's body and the fnexec.conf key that sets it, for the 413.
  std::pair<uint64_t, const char*> body_limit(Route r) const {
    if (r == Route::images_import) return {config_.max_upload_bytes, "max_upload_bytes"};
    if (r == Route::function_put) return {config_.function_limits.max_function_bytes, "max_function_bytes"};
    return {config_.max_event_bytes, "max_event_bytes"};
  }
  Result<stdfs::path> upload_path() {
    auto p = uploads_ / fmt::format("upload-{}", new_invocation_id());
    return p;
  }
  std::chrono::milliseconds request_idle_timeout() const { return config_.request_idle_timeout; }
  Service& service() { return *service_; }
  asio::io_context& io() { return io_; }
  void track(const std::shared_ptr<Session>& s) {
    std::erase_if(sessions_, [](const std::weak_ptr<Session>& w) { return w.expired(); });
    sessions_.push_back(s);
  }

 private:
  Result<> listen_unix();
  Result<> listen_tcp();
  void accept_unix();
  void accept_tcp();
  void open_session(generic_socket socket, bool needs_token);
  void on_signal(int signo);
  void reload();
  // The Service's part of config_, at start and after each reload.
  ServiceLimits service_limits() const;
  void tick();
  void begin_shutdown();
  void finish_shutdown_when_idle();

  const ServeOptions& options_;
  ServeConfig config_;
  asio::io_context io_{1};
  asio::signal_set signals_{io_, SIGTERM, SIGINT, SIGHUP};
  asio::steady_timer tick_timer_{io_};
  std::optional<asio::local::stream_protocol::acceptor> unix_acceptor_;
  std::optional<asio::ip::tcp::acceptor> tcp_acceptor_;
  std::shared_ptr<asio::ssl::context> tls_;  // TLS on the TCP listener; null: plain TCP
  std::list<std::weak_ptr<Session>> sessions_;
  std::string token_;
  stdfs::path uploads_;
  bool socket_bound_ = false;

  std::unique_ptr<State> state_;
  std::shared_ptr<cgroup::Hierarchy> cgroups_;
  std::optional<image::Store> store_;
  std::unique_ptr<pool::PoolSet> pools_;
  std::unique_ptr<asio::thread_pool> invocation_threads_;
  std::unique_ptr<asio::thread_pool> admin_threads_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<cluster::Node> cluster_;  // cluster_nats set: this daemon's membership

  bool ready_sent_ = false;
  bool stopping_ = false;
  bool pools_stopped_ = false;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point stop_deadline_;
  std::thread pool_shutdown_;
};

void Session::arm_timer() {
  body_timed_out_ = false;  // a cancel that found no read pending (the read had just completed) is void
  timer_.expires_after(daemon_.request_idle_timeout());
  timer_.async_wait([weak = weak_from_this()](beast::error_code ec) {
    if (auto self = weak.lock(); self && !ec) self->on_timer();
  });
}

void Session::on_timer() {
  // A read that completed just before this ran has re-armed the timer: that peer is not silent.
  if (timer_.expiry() > std::chrono::steady_clock::now()) return;
  if (!reading_body_) return close();
  body_timed_out_ = true;
  beast::error_code ec;
  socket_.socket().cancel(ec);  // the pending read ends with operation_aborted; on_body answers 408
}

void Session::handshake() {
  idle_ = true;
  if (daemon_.stopping()) return close();
  arm_timer();
  socket_.tls().async_handshake(asio::ssl::stream_base::server,
                                [self = shared_from_this()](beast::error_code ec) { self->on_handshake(ec); });
}

void Session::on_handshake(beast::error_code ec) {
  timer_.cancel();
  if (!ec) return read_header();
  // A plain HTTP request on the TLS port: say so in plain HTTP (as nginx does) instead of a bare
  // reset, so the client's user sees what to change.
  if (ec.category() == asio::error::get_ssl_category() && ERR_GET_REASON(ec.value()) == SSL_R_HTTP_REQUEST) {
    static const std::string kReply =
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
        "Content-Length: 70\r\n\r\n{\"error\":\"this port speaks TLS: use https:// (fnexec.conf tls_cert)\"}\n";
    return asio::async_write(socket_.socket(), asio::buffer(kReply),
                             [self = shared_from_this()](beast::error_code, size_t) { self->close(); });
  }
  spdlog::debug("event=tls_handshake_failed error=\"{}\"", ec.message());
  close();
}

void Session::read_header() {
  idle_ = true;
  if (daemon_.stopping()) return close();
  header_.emplace();
  header_->header_limit(kHeaderLimit);
  // Beast checks Content-Length against the parser's body limit (1 MiB by default) as soon as the
  // header is read, before the route and so its limit are known: on_header and read_body apply that.
  header_->body_limit(std::numeric_limits<std::uint64_t>::max());
  arm_timer();
  http::async_read_header(socket_, buffer_, *header_,
                          [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
}

void Session::on_header(beast::error_code ec) {
  idle_ = false;
  timer_.cancel();
  head_ = false;
  if (ec) {
    // EOF between requests, a reset or our own timeout: nobody to answer. A header the parser refused
    // gets a status, and the connection closes because where the next request starts is unknown.
    if (auto status = framing_error_status(ec))
      return send(Reply{*status, "application/json", json_error(framing_error_message(ec)), {}}, true);
    return close();
  }
  auto& req = header_->get();
  version_ = req.version();
  keep_alive_ = req.keep_alive();
  head_ = req.method() == http::verb::head;
  if (auto smuggle = check_message_framing(req, header_->chunked()))
    return send(Reply{400, "application/json", json_error(*smuggle), {}}, true);
  std::string target(req.target());
  match_ = route(std::string_view(req.method_string().data(), req.method_string().size()), target);

  principal_ = "unix";
  signature_.reset();
  if (needs_token_ && !authenticate(req)) return;

  auto [limit, key] = daemon_.body_limit(match_.route);
  if (auto len = header_->content_length(); len && *len > limit) {
    return send(early_error(413, "RequestTooLargeException",
                            fmt::format("request body of {} bytes is over the limit of {} bytes ({} in fnexec.conf)",
                                        *len, limit, key)),
                true);
  }
  if (req[http::field::expect] == "100-continue") {
    auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, version_);
    return http::async_write(socket_, *cont, [self = shared_from_this(), cont](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->read_body();
    });
  }
  read_body();
}

void Session::read_body() {
  uint64_t limit = daemon_.body_limit(match_.route).first;
  if (match_.route == Route::images_import) {
    auto path = daemon_.upload_path();
    file_parser_.emplace(std::move(*header_));
    file_parser_->body_limit(limit);
    beast::error_code ec;
    file_parser_->get().body().open(path->c_str(), beast::file_mode::write_new, ec);
    if (ec) {
      file_parser_.reset();
      return send(
          Reply{500, "application/json", json_error("cannot create upload file: " + ec.message()), {}}, true);
    }
    upload_ = *path;
    reading_body_ = true;
    return read_body_part(*file_parser_);
  }
  string_parser_.emplace(std::move(*header_));
  string_parser_->body_limit(limit);
  reading_body_ = true;
  read_body_part(*string_parser_);
}

template <class Parser>
void Session::read_body_part(Parser& parser) {
  if (parser.is_done()) return on_body({});  // no body, or all of it came with the header
  arm_timer();
  http::async_read_some(socket_, buffer_, parser,
                        [self = shared_from_this(), &parser](beast::error_code ec, size_t) {
                          if (ec) return self->on_body(ec);
                          self->read_body_part(parser);
                        });
}

void Session::on_body(beast::error_code ec) {
  timer_.cancel();
  reading_body_ = false;
  Request request;
  if (file_parser_) {
    file_parser_->get().body().close();
    request.method = std::string(file_parser_->get().method_string());
    request.target = std::string(file_parser_->get().target());
    file_parser_.reset();
    request.upload = std::exchange(upload_, {});
  } else {
    auto& req = string_parser_->get();
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    if (!ec && (signature_ || match_.lambda))
      for (const auto& field : req) request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    request.body = std::move(req.body());
    string_parser_.reset();
  }
  if (ec) {
    if (!request.upload.empty()) {
      std::error_code rm;
      stdfs::remove(request.upload, rm);
    }
    if (std::exchange(body_timed_out_, false))
      return send(early_error(408, "RequestTimeoutException",
                              fmt::format("no data for {} ms while reading the request body "
                                          "(request_idle_timeout); the request was not processed",
                                          daemon_.request_idle_timeout().count())),
                  true);
    if (ec == http::error::body_limit)
      return send(early_error(413, "RequestTooLargeException",
                              fmt::format("request body is over the limit of {} bytes ({} in fnexec.conf)",
                                          daemon_.body_limit(match_.route).first,
                                          daemon_.body_limit(match_.route).second)),
                  true);
    if (auto status = framing_error_status(ec))  // a malformed chunk: the stream is out of step
      return send(Reply{*status, "application/json", json_error(framing_error_message(ec)), {}}, true);
    return close();
  }
  if (auto sig = std::exchange(signature_, std::nullopt)) {
    std::string amz_date, content_sha;
    for (const auto& [k, v] : request.headers) {
      if (beast::iequals(k, "x-amz-date")) amz_date = v;
      if (beast::iequals(k, "x-amz-content-sha256")) content_sha = v;
    }
    std::string body_sha = sigv4::sha256_hex(request.body);
    if (!content_sha.empty() && content_sha != body_sha)
      return send(early_error(403, "InvalidSignatureException",
                              "x-amz-content-sha256 is not the SHA-256 of the body (UNSIGNED-PAYLOAD is not accepted)"));
    sigv4::SignedRequest signed_request{request.method, request.target, request.headers, body_sha};
    auto secret = daemon_.access_keys().find(sig->access_key);
    auto verified = secret == daemon_.access_keys().end()
                        ? std::unexpected(sigv4::Refusal{"UnrecognizedClientException", "the access key was removed"})
                        : sigv4::verify(*sig, signed_request, amz_date, secret->second);
    if (!verified) return send(early_error(403, verified.error().type, verified.error().message));
  }
  request.principal = principal_;
  request.match = std::move(match_);
  dispatch(std::move(request));
}

bool Session::authenticate(const http::request<http::empty_body>& req) {
  auto field = req[http::field::authorization];
  std::string_view given(field.data(), field.size());
  if (given.starts_with("AWS4-HMAC-SHA256")) {
    if (match_.route == Route::images_import) {
      send(early_error(403, "AccessDeniedException", "image uploads take the bearer token, not SigV4"), true);
      return false;
    }
    if (req.count("x-amz-security-token")) {
      send(early_error(403, "UnrecognizedClientException",
                       "session tokens (x-amz-security-token) are not supported: sign with an access_key of "
                       "fnexec.conf"),
           true);
      return false;
    }
    auto date = req["x-amz-date"];
    sigv4::VerifyOptions options{std::chrono::system_clock::now(), std::chrono::seconds(300),
                                 daemon_.lambda().region, "lambda"};
    auto checked = sigv4::check_header(given, std::string_view(date.data(), date.size()), daemon_.access_keys(), options);
    if (!checked) {
      send(early_error(403, checked.error().type, checked.error().message), true);
      return false;
    }
    principal_ = checked->access_key;
    signature_ = std::move(*checked);
    return true;
  }
  bool ok = given.starts_with("Bearer ") && !daemon_.token().empty() &&
            token_matches(given.substr(7), daemon_.token());
  if (ok) {
    principal_ = "token";
    return true;
  }
  if (match_.lambda) {
    send(given.empty() ? early_error(403, "MissingAuthenticationTokenException",
                                     "Missing Authentication Token: sign the request with an access_key (SigV4)")
                       : early_error(403, "UnrecognizedClientException", "The security token included in the request is invalid"),
         true);
    return false;
  }
  Reply r{401,
          "application/json",
          json_error(given.empty() ? "this endpoint needs Authorization: Bearer TOKEN"
                                   : "the bearer token is not valid"),
          {{"WWW-Authenticate", "Bearer"}}};
  send(std::move(r), true);
  return false;
}

Reply Session::early_error(unsigned status, std::string_view lambda_type, std::string message) const {
  if (!match_.lambda) return Reply{status, "application/json", json_error(message), {}};
  auto r = lambda_error(status, lambda_type, message);
  r.headers.emplace_back("x-amzn-RequestId", request_id_of(new_invocation_id()));
  return r;
}

void Session::dispatch(Request request) {
  auto self = shared_from_this();
  auto& io = daemon_.io();
  daemon_.service().handle(std::move(request), [self, &io](Reply reply) {
    asio::post(io, [self, reply = std::move(reply)]() mutable { self->send(std::move(reply)); });
  });
}

void Session::send(Reply reply, bool close_after) {
  auto res =
      std::make_shared<http::response<http::string_body>>(static_cast<http::status>(reply.status), version_);
  res->set(http::field::server, "fnexec");
  if (reply.status != 204) res->set(http::field::content_type, reply.content_type);
  for (auto& [k, v] : reply.headers) res->set(k, v);
  bool keep = keep_alive_ && !close_after && !daemon_.stopping();
  res->keep_alive(keep);
  res->body() = std::move(reply.body);
  res->prepare_payload();
  // HEAD gets the headers GET would, Content-Length included, and no body (RFC 9110 9.3.2); bytes
  // after them would be read as the start of the next reply on a kept-alive connection.
  if (head_) res->body().clear();
  http::async_write(socket_, *res,
                    [self = shared_from_this(), res, keep, close_after](beast::error_code ec, size_t) {
                      if (ec) return self->close();
                      if (close_after) return self->drain_and_close();
                      if (!keep) return self->close();
                      self->read_header();
                    });
}

// After an early reply (401, 413) the client may still be sending its body: read it away before
// closing, or the kernel answers the unread data with a reset that can destroy our reply in flight.
void Session::drain_and_close() {
  beast::error_code ec;
  socket_.socket().shutdown(asio::socket_base::shutdown_send, ec);
  timer_.expires_after(std::chrono::seconds(2));
  timer_.async_wait([weak = weak_from_this()](beast::error_code ec) {
    if (auto self = weak.lock(); self && !ec) self->close();
  });
  socket_.async_read_some(asio::buffer(discard_),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->drained_ += n;
                            if (ec || self->drained_ > (64u << 20)) return self->close();
                            self->drain_and_close();
                          });
}

// Binds the unix socket. An existing socket file is replaced only when nothing answers on it.
Result<> Daemon::listen_unix() {
  const auto& path = config_.socket;
  if (path.native().size() >= sizeof(sockaddr_un::sun_path))
    return fail(ErrorKind::invalid, "listen on unix socket", path.string(), "path too long for a socket");
  std::error_code ec;
  stdfs::create_directories(path.parent_path(), ec);
  if (ec)
    return fail(ErrorKind::internal, "create socket directory", path.parent_path().string(), ec.message());
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return fail(ErrorKind::exists, "listen on unix socket", path.string(),
                  "a file that is not a socket is there");
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.native().size());
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
      return fail(ErrorKind::exists, "listen on unix socket", path.string(),
                  "another daemon answers on it; stop it or use another --socket");
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return fail_errno("remove stale socket", path.string());
    spdlog::info("removed stale socket path={}", path.string());
  }
  asio::local::stream_protocol::endpoint ep(path.string());
  unix_acceptor_.emplace(io_);
  beast::error_code bec;
  unix_acceptor_->open(ep.protocol(), bec);
  // umask 0177 makes the socket 0600 between bind and chmod: never briefly open to everyone.
  mode_t old = ::umask(0177);
  if (!bec) unix_acceptor_->bind(ep, bec);
  ::umask(old);
  if (bec) return fail(ErrorKind::internal, "bind unix socket", path.string(), bec.message());
  socket_bound_ = true;
  if (!config_.socket_group.empty()) {
    struct group* gr = ::getgrnam(config_.socket_group.c_str());
    if (!gr) return fail(ErrorKind::not_found, "find socket group", config_.socket_group);
    if (::chown(path.c_str(), static_cast<uid_t>(-1), gr->gr_gid) != 0)
      return fail_errno("chgrp socket", path.string());
  }
  if (::chmod(path.c_str(), config_.socket_mode) != 0) return fail_errno("chmod socket", path.string());
  unix_acceptor_->listen(asio::socket_base::max_listen_connections, bec);
  if (bec) return fail(ErrorKind::internal, "listen on unix socket", path.string(), bec.message());
  accept_unix();
  spdlog::info("listening socket={}", path.string());
  return {};
}

Result<> Daemon::listen_tcp() {
  auto colon = config_.listen.rfind(':');
  std::string host = config_.listen.substr(0, colon), port = config_.listen.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  beast::error_code ec;
  asio::ip::tcp::resolver resolver(io_);
  auto results = resolver.resolve(
      host, port, asio::ip::tcp::resolver::passive | asio::ip::tcp::resolver::numeric_service, ec);
  if (ec || results.empty())
    return fail(ErrorKind::invalid, "resolve listen address", config_.listen,
                ec ? ec.message() : "no address");
  auto ep = results.begin()->endpoint();
  tcp_acceptor_.emplace(io_);
  tcp_acceptor_->open(ep.protocol(), ec);
  if (!ec) tcp_acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) tcp_acceptor_->bind(ep, ec);
  if (!ec) tcp_acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ErrorKind::internal, "listen on TCP", config_.listen, ec.message());
  accept_tcp();
  spdlog::info("listening tcp={}:{} tls={}", tcp_acceptor_->local_endpoint().address().to_string(),
               tcp_acceptor_->local_endpoint().port(), tls_ ? "on" : "off");
  if (!tls_)
    spdlog::warn("event=tcp_without_tls listen={}: the bearer token and SigV4-signed bodies cross the network in "
                 "clear; set tls_cert and tls_key in fnexec.conf",
                 config_.listen);
  return {};
}

void Daemon::open_session(generic_socket socket, bool needs_token) {
  auto s = std::make_shared<Session>(
      *this, tls_ && needs_token ? SessionStream(std::move(socket), *tls_) : SessionStream(std::move(socket)),
      needs_token);
  track(s);
  s->start();
}

void Daemon::accept_unix() {
  unix_acceptor_->async_accept([this](beast::error_code ec, asio::local::stream_protocol::socket socket) {
    if (stopping_) return;
    if (!ec)
      open_session(generic_socket(io_, asio::generic::stream_protocol(AF_UNIX, 0), socket.release()), false);
    else
      spdlog::warn("accept failed: {}", ec.message());
    accept_unix();
  });
}

void Daemon::accept_tcp() {
  tcp_acceptor_->async_accept([this](beast::error_code ec, asio::ip::tcp::socket socket) {
    if (stopping_) return;
    if (!ec) {
      socket.set_option(asio::ip::tcp::no_delay(true), ec);
      auto proto = socket.local_endpoint().protocol();
      open_session(generic_socket(io_, asio::generic::stream_protocol(proto.family(), proto.protocol()),
                                  socket.release()),
                   true);
    } else {
      spdlog::warn("accept failed: {}", ec.message());
    }
    accept_tcp();
  });
}

void Daemon::on_signal(int signo) {
  if (signo == SIGHUP) {
    reload();
  } else {
    spdlog::info("signal={} shutting down grace_ms={}", signo, config_.shutdown_grace.count());
    begin_shutdown();
  }
  if (!stopping_ || signo == SIGHUP)
    signals_.async_wait([this](beast::error_code ec, int s) {
      if (!ec) on_signal(s);
    });
}

// SIGHUP: re-read the config file and the token; what needs a restart is reported and kept.
ServiceLimits Daemon::service_limits() const {
  return {{config_.log_bytes_per_function, config_.records_per_function},
          config_.invocation_workers,
          config_.function_defaults,
          config_.function_limits,
          config_.max_layer_bytes,
          config_.max_image_bytes,
          config_.registry_auth_file,
          config_.registry_certs_dir,
          config_.lambda,
          config_.isolation};
}

void Daemon::reload() {
  (void)sd_notify("RELOADING=1");
  auto settings = read_config_file(options_.config_file, !options_.config_file_given);
  ServeConfig next;
  if (settings) {
    settings->insert(settings->end(), options_.flags.begin(), options_.flags.end());
    if (auto r = apply_settings(next, *settings); !r) settings = std::unexpected(r.error());
  }
  std::string token = token_;
  if (settings && !next.listen.empty() && next.token_file.empty() && next.access_keys.empty())
    settings = fail(ErrorKind::invalid, "reload", options_.config_file.string(),
                    "TCP needs token_file or an access_key");
  if (settings && !next.listen.empty() && !next.token_file.empty()) {
    auto t = read_token_file(next.token_file);
    if (t)
      token = *t;
    else
      settings = std::unexpected(t.error());
  }
  if (!settings) {
    spdlog::error("reload failed, keeping the running config: {}", settings.error().message());
  } else {
    for (const auto& s : *settings)
      if (is_restart_only(s.key)) {
        ServeConfig probe = config_;
        (void)apply_settings(probe, {s});
        if (probe.socket != config_.socket || probe.listen != config_.listen ||
            probe.state_dir != config_.state_dir || probe.cgroups != config_.cgroups ||
            probe.cgroup_prefix != config_.cgroup_prefix || probe.max_sandboxes != config_.max_sandboxes ||
            probe.invocation_workers != config_.invocation_workers ||
            probe.seccomp_profile_dir != config_.seccomp_profile_dir || probe.bridge != config_.bridge ||
            probe.bridge_subnet != config_.bridge_subnet || probe.bridge_subnet6 != config_.bridge_subnet6 ||
            probe.tls_cert != config_.tls_cert ||
            probe.tls_key != config_.tls_key ||
            probe.cluster.servers != config_.cluster.servers || probe.cluster.node != config_.cluster.node ||
            probe.socket_mode != config_.socket_mode || probe.socket_group != config_.socket_group ||
            probe.isolation.subid_user != config_.isolation.subid_user ||
            probe.isolation.ids_per_function != config_.isolation.ids_per_function ||
            probe.isolation.subuid_file != config_.isolation.subuid_file ||
            probe.isolation.subgid_file != config_.isolation.subgid_file)
          spdlog::warn("reload: {} changed; it takes effect after a restart", s.key);
      }
    config_.token_file = next.token_file;
    config_.max_event_bytes = next.max_event_bytes;
    config_.max_upload_bytes = next.max_upload_bytes;
    config_.log_bytes_per_function = next.log_bytes_per_function;
    config_.records_per_function = next.records_per_function;
    config_.shutdown_grace = next.shutdown_grace;
    config_.ready_timeout = next.ready_timeout;
    config_.request_idle_timeout = next.request_idle_timeout;
    config_.log_level = next.log_level;
    config_.function_defaults = next.function_defaults;
    config_.function_limits = next.function_limits;
    config_.max_layer_bytes = next.max_layer_bytes;
    config_.max_image_bytes = next.max_image_bytes;
    config_.registry_auth_file = next.registry_auth_file;
    config_.registry_certs_dir = next.registry_certs_dir;
    config_.access_keys = next.access_keys;
    config_.lambda = next.lambda;
    config_.isolation.volume_allow = next.isolation.volume_allow;
    config_.isolation.device_allow = next.isolation.device_allow;
    token_ = next.token_file.empty() ? std::string() : token;
    spdlog::set_level(spdlog::level::from_str(config_.log_level));
    service_->set_limits(service_limits());
    spdlog::info("reloaded config file={}", options_.config_file.string());
  }
  (void)sd_notify("READY=1");
}

void Daemon::tick() {
  if (!stopping_) service_->pump();
  if (!ready_sent_ && !stopping_) {
    bool warm = service_->pools_warm();
    bool waited_long = std::chrono::steady_clock::now() - started_ > config_.ready_timeout;
    if (warm || waited_long) {
      if (!warm)
        spdlog::warn("pools not warm after ready_timeout={}ms; reporting ready",
                     config_.ready_timeout.count());
      ready_sent_ = true;
      if (auto r = sd_notify("READY=1\nSTATUS=serving"); !r) spdlog::warn("{}", r.error().message());
      spdlog::info("ready");
    }
  }
  if (stopping_) return finish_shutdown_when_idle();
  tick_timer_.expires_after(kTickInterval);
  tick_timer_.async_wait([this](beast::error_code ec) {
    if (!ec) tick();
  });
}

void Daemon::begin_shutdown() {
  if (stopping_) return;
  stopping_ = true;
  (void)sd_notify("STOPPING=1");
  beast::error_code ec;
  if (unix_acceptor_) unix_acceptor_->close(ec);
  if (tcp_acceptor_) tcp_acceptor_->close(ec);
  if (socket_bound_) ::unlink(config_.socket.c_str());
  socket_bound_ = false;
  for (auto& w : sessions_)
    if (auto s = w.lock()) s->close_if_idle();
  service_->begin_shutdown();
  stop_deadline_ = std::chrono::steady_clock::now() + config_.shutdown_grace + std::chrono::seconds(5);
  // shutdown() blocks up to the grace period while in-flight invocations finish: not on the loop.
  if (pools_)
    pool_shutdown_ = std::thread([this, grace = config_.shutdown_grace] {
      pools_->shutdown(grace);
      asio::post(io_, [this] { pools_stopped_ = true; });
    });
  else
    pools_stopped_ = true;
  tick_timer_.cancel();
  tick_timer_.expires_after(std::chrono::milliseconds(10));
  tick_timer_.async_wait([this](beast::error_code) { finish_shutdown_when_idle(); });
}

void Daemon::finish_shutdown_when_idle() {
  // Replies still being written count too: stopping the loop would cut them off.
  bool idle = pools_stopped_ && service_->busy() == 0 &&
              std::none_of(sessions_.begin(), sessions_.end(), [](const std::weak_ptr<Session>& w) {
                auto s = w.lock();
                return s && s->in_request();
              });
  if (idle || std::chrono::steady_clock::now() > stop_deadline_) {
    if (!idle) spdlog::warn("shutdown: {} jobs still running at the deadline", service_->busy());
    signals_.cancel();
    io_.stop();
    return;
  }
  tick_timer_.expires_after(std::chrono::milliseconds(20));
  tick_timer_.async_wait([this](beast::error_code) { finish_shutdown_when_idle(); });
}

Result<int> Daemon::run() {
  spdlog::set_level(spdlog::level::from_str(config_.log_level));
  // Digests (imports, pulls, SigV4) cannot report a missing libcrypto later: refuse to start instead.
  FNEXEC_TRY(util::load_libcrypto());
  if (!config_.listen.empty()) {
    if (config_.token_file.empty() && config_.access_keys.empty())
      return fail(ErrorKind::invalid, "listen on TCP", config_.listen,
                  "refusing to serve TCP without a bearer token or an access key: set --token-file "
                  "(token_file in fnexec.conf) or an access_key in fnexec.conf");
    if (!config_.token_file.empty()) token_ = FNEXEC_TRY(read_token_file(config_.token_file));
  }
  if (!config_.tls_cert.empty() || !config_.tls_key.empty()) {
    if (config_.listen.empty())
      return fail(ErrorKind::invalid, "use tls_cert and tls_key", {},
                  "TLS is for the TCP listener: set listen (--listen HOST:PORT) too");
    tls_ = FNEXEC_TRY(make_tls_context(config_.tls_cert, config_.tls_key));
  }

  // One daemon per state dir: the lock is what makes recovery (lost records, stale cgroups) safe.
  std::error_code ec;
  stdfs::create_directories(config_.state_dir, ec);
  if (ec)
    return fail(ErrorKind::internal, "create state directory", config_.state_dir.string(), ec.message());
  auto lock_path = config_.state_dir / "serve.lock";
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return fail_errno("open lock file", lock_path.string());
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0)
    return fail(ErrorKind::exists, "lock state directory", config_.state_dir.string(),
                "another fnexec serve is using it");

  state_ = FNEXEC_TRY(State::open(config_.state_dir / "server.db"));
  auto recovery = FNEXEC_TRY(state_->recover(now_ms()));
  if (recovery.lost || recovery.queued || !recovery.interrupted.empty())
    spdlog::warn("recovered lost={} (sync, running when the previous instance stopped) queued={} "
                 "interrupted={} (async, delivered again per their retries)",
                 recovery.lost, recovery.queued, recovery.interrupted.size());
  if (recovery.pulls_interrupted)
    spdlog::warn("recovered {} registry pull(s) the previous instance had not finished: failed as interrupted "
                 "(GET /v1/images/pulls/ID); their verified layers stay in the store",
                 recovery.pulls_interrupted);

  uploads_ = config_.state_dir / "uploads";
  stdfs::remove_all(uploads_, ec);  // partial uploads of a previous instance
  stdfs::create_directories(uploads_, ec);
  if (ec) return fail(ErrorKind::internal, "create upload directory", uploads_.string(), ec.message());

  // Bind before any clean-up: a live daemon on this socket makes us stop here, before we touch
  // sandbox cgroups that might be its own. Connections wait in the backlog until the loop runs.
  FNEXEC_TRY(listen_unix());
  struct SocketGuard {
    Daemon* d;
    ~SocketGuard() {
      if (d && d->socket_bound_) ::unlink(d->config_.socket.c_str());
    }
  } guard{this};
  if (!config_.listen.empty()) FNEXEC_TRY(listen_tcp());

  cgroup::Options cg_options = FNEXEC_TRY(cgroup::options_from_flag(config_.cgroups));
  cg_options.prefix = config_.cgroup_prefix;
  cgroups_ = FNEXEC_TRY(cgroup::Hierarchy::detect(cg_options));
  if (cgroups_->mode() != cgroup::Mode::disabled) {
    int removed = FNEXEC_TRY(cgroups_->remove_stale());
    if (removed) spdlog::warn("removed {} sandbox cgroups left by a previous instance", removed);
  }

  // Sandboxes of a killed instance died with it, their address leases unlocked: remove the veths,
  // nftables elements and files those leases stand for before the pools lease again.
  pool::PoolSetOptions pool_options{config_.max_sandboxes, config_.seccomp_profile_dir, config_.bridge,
                                    config_.bridge_subnet, config_.bridge_subnet6};
  net::BridgeConfig bridge;
  bridge.bridge = pool_options.bridge;
  bridge.subnet = FNEXEC_TRY(net::parse_ipv4_net(pool_options.bridge_subnet));
  bridge.subnet6 = FNEXEC_TRY(net::parse_bridge_subnet6(pool_options.bridge_subnet6));
  bridge.state_dir = pool_options.network_state_dir;
  if (auto cleaned = net::clean_stale(bridge); !cleaned)
    spdlog::warn("cannot remove network state left on bridge {}: {}", bridge.bridge, cleaned.error().message());
  else if (*cleaned)
    spdlog::warn("event=network_cleaned bridge={} sandboxes={} (left by a previous instance)", bridge.bridge,
                 *cleaned);

  store_.emplace(FNEXEC_TRY(image::Store::open(config_.state_dir)));
  pools_ = FNEXEC_TRY(pool::PoolSet::create(*store_, cgroups_, pool_options));

  invocation_threads_ = std::make_unique<asio::thread_pool>(config_.invocation_workers);
  admin_threads_ = std::make_unique<asio::thread_pool>(2);
  auto on = [](asio::thread_pool& p) {
    return [&p](std::function<void()> job) { asio::post(p, std::move(job)); };
  };
  service_ = std::make_unique<Service>(
      *state_, pools_.get(), &*store_, std::string(cgroup::to_string(cgroups_->mode())),
      on(*invocation_threads_), on(*admin_threads_),
      service_limits());
  FNEXEC_TRY(service_->start(std::move(recovery.interrupted)));
  // Cluster mode: join after the local state is loaded (the registry's catch-up compares with it).
  if (config_.cluster.enabled()) {
    auto options = config_.cluster;
    if (options.node.empty()) {
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      options.node = fmt::format("{}-{}", host, ::getpid());
      std::replace_if(options.node.begin(), options.node.end(),
                      [](char c) { return !std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_'; }, '-');
    }
    cluster_ = FNEXEC_TRY(cluster::Node::start(options, *service_));
    service_->attach_cluster(cluster_.get());
  }

  signals_.async_wait([this](beast::error_code ec, int s) {
    if (!ec) on_signal(s);
  });
  guard.d = nullptr;
  tick();
  io_.run();

  // The loop stopped: no reply can be sent any more. Wait for the workers, then drop every sandbox.
  if (pool_shutdown_.joinable()) pool_shutdown_.join();
  invocation_threads_->join();
  admin_threads_->join();
  // After the workers: deliveries that ran have acked (the node's connection was still up).
  if (cluster_) {
    service_->attach_cluster(nullptr);
    cluster_.reset();
  }
  service_.reset();
  pools_.reset();
  if (socket_bound_) ::unlink(config_.socket.c_str());
  spdlog::info("stopped");
  return 0;
}

}  // namespace

Result<int> serve(const ServeOptions& options) {
  auto settings = FNEXEC_TRY(read_config_file(options.config_file, !options.config_file_given));
  settings.insert(settings.end(), options.flags.begin(), options.flags.end());
  ServeConfig config;
  FNEXEC_TRY(apply_settings(config, settings));
  // A client that goes away mid-reply must not kill the daemon with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  Daemon daemon(options, std::move(config));
  return daemon.run();
}

}  // namespace fnexec::server
