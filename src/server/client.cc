// The client side of the API: the second (and last) translation unit that includes Beast.
#include "server/client.h"

#include <fmt/format.h>
#include <poll.h>
#include <simdjson.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>

namespace fnexec::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

struct Client::Impl {
  Endpoint endpoint;
  std::string host, port;
  asio::io_context io;
  std::optional<asio::generic::stream_protocol::socket> socket;
  beast::flat_buffer buffer;

  Result<> open() {
    beast::error_code ec;
    socket.reset();
    if (endpoint.url.empty()) {
      asio::local::stream_protocol::socket s(io);
      s.connect(asio::local::stream_protocol::endpoint(endpoint.socket), ec);
      if (ec)
        return fail(ErrorKind::unavailable, "connect to fnexec serve", endpoint.socket,
                    ec.message() + "; is the daemon running? (--socket, FNEXEC_SOCKET)");
      socket.emplace(io, asio::generic::stream_protocol(AF_UNIX, 0), s.release());
    } else {
      asio::ip::tcp::resolver resolver(io);
      auto results = resolver.resolve(host, port, ec);
      if (ec) return fail(ErrorKind::unavailable, "resolve", endpoint.url, ec.message());
      asio::ip::tcp::socket s(io);
      asio::connect(s, results, ec);
      if (ec) return fail(ErrorKind::unavailable, "connect to fnexec serve", endpoint.url, ec.message());
      s.set_option(asio::ip::tcp::no_delay(true), ec);
      auto proto = s.local_endpoint().protocol();
      socket.emplace(io, asio::generic::stream_protocol(proto.family(), proto.protocol()), s.release());
    }
    buffer.clear();
    return {};
  }

  // The daemon closed this idle connection: it is readable and a peek finds EOF (or an error).
  bool peer_closed() {
    pollfd p{socket->native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 0) != 1) return false;
    char byte;
    return ::recv(p.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
  }

  template <class Body>
  Result<HttpResponse> round_trip(http::request<Body>& req) {
    req.set(http::field::host, endpoint.url.empty() ? std::string("localhost") : host);
    req.set(http::field::user_agent, "fnexec");
    if (!endpoint.token.empty()) req.set(http::field::authorization, "Bearer " + endpoint.token);
    req.keep_alive(true);
    req.prepare_payload();
    // A kept-alive connection the daemon closed in the meantime (idle timeout, restart) is replaced
    // before the request goes out. One that fails anyway is retried once on a fresh connection,
    // but only for GET and HEAD and only when nothing of the reply arrived: a POST the daemon may
    // have received (an invocation) must never run twice.
    bool idempotent = req.method() == http::verb::get || req.method() == http::verb::head;
    for (int attempt = 0;; ++attempt) {
      if (socket && peer_closed()) socket.reset();
      if (!socket) FNEXEC_TRY(open());
      beast::error_code ec;
      http::write(*socket, req, ec);
      http::response_parser<http::string_body> parser;
      parser.body_limit(std::numeric_limits<uint64_t>::max());
      // A reply to HEAD has the Content-Length of the GET reply but no body to wait for.
      parser.skip(req.method() == http::verb::head);
      if (!ec) http::read(*socket, buffer, parser, ec);
      if (ec) {
        bool nothing_read = !parser.got_some() && buffer.size() == 0;
        socket.reset();
        if (attempt == 0 && idempotent && nothing_read &&
            (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
             ec == asio::error::broken_pipe || ec == asio::error::eof))
          continue;
        return fail(ErrorKind::unavailable, "talk to fnexec serve",
                    endpoint.url.empty() ? endpoint.socket : endpoint.url,
                    ec.message() + (idempotent ? "" : "; the request was not retried: check whether it ran"));
      }
      auto& res = parser.get();
      HttpResponse out;
      out.status = res.result_int();
      for (const auto& f : res) {
        std::string name(f.name_string());
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        out.headers[name] = std::string(f.value());
      }
      out.body = std::move(res.body());
      if (!res.keep_alive()) socket.reset();
      return out;
    }
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Result<Client> Client::connect(const Endpoint& endpoint) {
  auto impl = std::make_unique<Impl>();
  impl->endpoint = endpoint;
  if (!endpoint.url.empty()) {
    std::string_view u = endpoint.url;
    if (!u.starts_with("http://"))
      return fail(ErrorKind::invalid, "use --host", endpoint.url, "expected http://HOST:PORT");
    u.remove_prefix(7);
    if (auto slash = u.find('/'); slash != std::string_view::npos) u = u.substr(0, slash);
    auto colon = u.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
      return fail(ErrorKind::invalid, "use --host", endpoint.url, "expected http://HOST:PORT");
    impl->host = std::string(u.substr(0, colon));
    impl->port = std::string(u.substr(colon + 1));
    if (impl->host.size() > 2 && impl->host.front() == '[')
      impl->host = impl->host.substr(1, impl->host.size() - 2);
  }
  FNEXEC_TRY(impl->open());
  return Client(std::move(impl));
}

Result<HttpResponse> Client::request(std::string_view method, std::string_view target, std::string_view body,
                                     std::string_view content_type) {
  http::request<http::string_body> req(http::string_to_verb(beast::string_view(method.data(), method.size())),
                                       std::string(target), 11);
  if (!body.empty() || method == "POST" || method == "PUT") {
    req.set(http::field::content_type, std::string(content_type));
    req.body() = std::string(body);
  }
  return impl_->round_trip(req);
}

Result<HttpResponse> Client::upload(std::string_view target, const std::string& path) {
  http::request<http::file_body> req(http::verb::post, std::string(target), 11);
  beast::error_code ec;
  req.body().open(path.c_str(), beast::file_mode::scan, ec);
  if (ec) return fail(ErrorKind::not_found, "open", path, ec.message());
  req.set(http::field::content_type, "application/x-tar");
  return impl_->round_trip(req);
}

std::string error_message(const HttpResponse& r) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(r.body);
  std::string_view msg;
  if (!parser.parse(padded)["error"].get(msg)) return std::string(msg);
  return r.body.empty() ? fmt::format("HTTP {}", r.status) : r.body;
}

}  // namespace fnexec::server
