// The byte stream of one daemon connection: a plain socket (unix, or TCP without TLS) or TLS over a
// TCP socket. One type for both so Session and Beast's HTTP reads and writes are written once; the
// choice is made per connection at run time. Include only from daemon.cc (Beast and Asio SSL are heavy).
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <optional>
#include <utility>

namespace fnexec::server {

class SessionStream {
 public:
  using socket_type = boost::asio::generic::stream_protocol::socket;
  using tls_type = boost::asio::ssl::stream<socket_type>;
  using executor_type = socket_type::executor_type;

  explicit SessionStream(socket_type socket) : plain_(std::move(socket)) {}
  SessionStream(socket_type socket, boost::asio::ssl::context& tls) : tls_(std::in_place, std::move(socket), tls) {}

  bool is_tls() const { return tls_.has_value(); }
  tls_type& tls() { return *tls_; }
  // The socket under TLS (or the plain one): shutdown, close and cancel act here.
  socket_type& socket() { return tls_ ? tls_->next_layer() : *plain_; }
  executor_type get_executor() { return socket().get_executor(); }

  // AsyncReadStream / AsyncWriteStream, as Beast's http::async_read and async_write need them.
  template <class MutableBuffers, class Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_)
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    else
      plain_->async_read_some(buffers, std::forward<Handler>(handler));
  }
  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_)
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    else
      plain_->async_write_some(buffers, std::forward<Handler>(handler));
  }

 private:
  std::optional<socket_type> plain_;
  std::optional<tls_type> tls_;
};

}  // namespace fnexec::server
