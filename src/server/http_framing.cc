#include "server/http_framing.h"

#include <fmt/format.h>

namespace fnexec::server {

std::optional<unsigned> framing_error_status(const boost::beast::error_code& ec) {
  if (ec == http::error::header_limit) return 431;
  if (ec.category() != boost::beast::error_code(http::error::bad_method).category()) return std::nullopt;
  if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec == http::error::need_more)
    return std::nullopt;
  return 400;
}

std::string framing_error_message(const boost::beast::error_code& ec) {
  if (ec == http::error::header_limit)
    return fmt::format("the request header is over {} bytes ({} KiB)", kHeaderLimit, kHeaderLimit / 1024);
  if (ec == http::error::bad_content_length)
    return "invalid Content-Length (not a decimal number, several different values, or sent with "
           "Transfer-Encoding)";
  if (ec == http::error::bad_transfer_encoding)
    return "invalid Transfer-Encoding (given twice, or sent with Content-Length)";
  return "malformed HTTP request: " + ec.message();
}

std::optional<std::string> check_message_framing(const http::request<http::empty_body>& req, bool chunked) {
  if (req.find(http::field::transfer_encoding) == req.end()) return std::nullopt;
  if (req.find(http::field::content_length) != req.end())
    return "the request has both Transfer-Encoding and Content-Length; send one (RFC 9112 6.1)";
  if (!chunked)
    return "Transfer-Encoding must end in chunked (the only coding the daemon reads); got \"" +
           std::string(req[http::field::transfer_encoding]) + "\"";
  return std::nullopt;
}

}  // namespace fnexec::server
