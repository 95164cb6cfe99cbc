// libFuzzer target: the daemon's request path without a socket. Bytes from a client are parsed as
// pipelined HTTP/1.1 requests (Beast's parser with the daemon's header limit), each framed by
// check_message_framing, routed, and a PUT body parsed as a function document under small limits.
// A framing error ends the connection, as in the daemon.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/api.h"
#include "server/http_framing.h"

using namespace fnexec::server;
namespace beast = boost::beast;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  FunctionLimits limits{.max_function_bytes = 4096,
                        .max_array_entries = 16,
                        .max_argv_bytes = 1024,
                        .max_env_entries = 16,
                        .max_env_bytes = 1024};
  for (int requests = 0; !input.empty() && requests < 64; ++requests) {
    http::request_parser<http::empty_body> header;
    header.header_limit(kHeaderLimit);
    header.eager(false);
    beast::error_code ec;
    size_t used = header.put(boost::asio::buffer(input.data(), input.size()), ec);
    if (ec == http::error::need_more) return 0;  // a partial header: the daemon waits for more
    if (ec) {
      if (!framing_error_status(ec)) std::abort();  // every parse error gets a status
      (void)framing_error_message(ec);
      return 0;
    }
    input.remove_prefix(used);
    auto& req = header.get();
    if (auto why = check_message_framing(req, header.chunked())) {
      if (why->empty()) std::abort();
      return 0;
    }
    auto match = route(std::string_view(req.method_string().data(), req.method_string().size()),
                       std::string_view(req.target().data(), req.target().size()));
    http::request_parser<http::string_body> body(std::move(header));
    body.body_limit(64 * 1024);
    while (!body.is_done()) {
      used = body.put(boost::asio::buffer(input.data(), input.size()), ec);
      input.remove_prefix(used);
      if (ec == http::error::need_more) {
        if (used == 0) return 0;  // the rest of the body is still on its way: the daemon waits
        continue;
      }
      if (ec) {
        if (ec != http::error::body_limit && !framing_error_status(ec)) std::abort();
        return 0;
      }
      if (used == 0 && !body.is_done()) return 0;
    }
    if (match.route == Route::function_put) {
      auto spec = parse_function_spec(match.param, body.get().body(), {}, limits);
      if (spec) {
        // The stored form reads back to the same document.
        auto again = parse_function_spec(match.param, function_spec_json(*spec), {}, limits);
        if (!again || function_spec_json(*again) != function_spec_json(*spec)) std::abort();
      }
    }
  }
  return 0;
}
