// A blocking HTTP/1.1 client of the daemon, for the CLI: a unix socket, or TCP with a bearer token.
#pragma once

#include <simdjson.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "util/error.h"

namespace fnexec::server {

struct Endpoint {
  std::string socket;  // unix socket path; used when url is empty
  std::string url;     // http://HOST:PORT
  std::string token;   // bearer token (TCP)
};

struct HttpResponse {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// One keep-alive connection; reconnects when the daemon closed it.
class Client {
 public:
  static Result<Client> connect(const Endpoint& endpoint);
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  Result<HttpResponse> request(std::string_view method, std::string_view target, std::string_view body = {},
                               std::string_view content_type = "application/json");
  // Streams a file as the request body (image uploads).
  Result<HttpResponse> upload(std::string_view target, const std::string& path);

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads an optional member of a reply into out; false (out untouched) when absent or of another type.
template <class T>
bool read_member(simdjson::simdjson_result<simdjson::dom::element> member, T& out) {
  return member.get(out) == simdjson::SUCCESS;
}

// The "error" member of a JSON error body, or the body itself.
std::string error_message(const HttpResponse& r);

}  // namespace fnexec::server
