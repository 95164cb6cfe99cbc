// Where one HTTP/1.1 request ends, decided strictly: requests the daemon cannot frame without doubt
// (request smuggling, RFC 9112 6.1 and 6.3) are refused with a status, never guessed at.
// Beast types in the header: only daemon.cc and the fuzz target include it.
#pragma once

#include <boost/beast/http.hpp>
#include <cstdint>
#include <optional>
#include <string>

namespace fnexec::server {

namespace http = boost::beast::http;

// The longest request header the daemon reads (431 beyond it).
inline constexpr uint32_t kHeaderLimit = 16 * 1024;

// A status for a request the parser refused (400, or 431 for header_limit); nullopt when the peer
// just went away or the read was cancelled, when there is nobody to answer.
std::optional<unsigned> framing_error_status(const boost::beast::error_code& ec);
// The message of that status, naming what is wrong with the request.
std::string framing_error_message(const boost::beast::error_code& ec);

// After a header parsed: a Transfer-Encoding that does not end in chunked, or one sent with a
// Content-Length, makes the body's end unknowable (Beast reads `identity` or `chunked, identity` as
// no body, and the body would run as the next request). The reason for a 400, or nullopt.
std::optional<std::string> check_message_framing(const http::request<http::empty_body>& req, bool chunked);

}  // namespace fnexec::server
