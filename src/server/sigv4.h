// AWS Signature Version 4 (HMAC-SHA256) verification for the daemon's TCP listener: the AWS SDKs
// and CLI sign every request this way. Pure functions, so the unit tests run AWS's published
// vectors without a socket.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/error.h"

namespace fnexec::server::sigv4 {

// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=ID/DATE/REGION/SERVICE/aws4_request,
// SignedHeaders=a;b, Signature=HEX`.
struct Authorization {
  std::string access_key;
  std::string date;     // YYYYMMDD of the credential scope
  std::string region;
  std::string service;
  std::vector<std::string> signed_headers;  // lowercase, as listed (sorted by the signer)
  std::string signature;                    // 64 lowercase hex digits
  std::string scope() const { return date + "/" + region + "/" + service + "/aws4_request"; }
};

// ErrorKind::invalid with what is wrong with the header.
Result<Authorization> parse_authorization(std::string_view header);

// The request as the signer saw it. headers: every header of the request, names in any case,
// repeated names in order.
struct SignedRequest {
  std::string method;
  std::string target;  // path and query exactly as they came on the request line
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_hash;  // lowercase hex SHA-256 of the body (or x-amz-content-sha256)
};

// RFC 3986 unreserved characters stay, every other byte becomes %XX (uppercase); '/' too unless
// keep_slash.
std::string uri_encode(std::string_view s, bool keep_slash);
// The path with "." and ".." segments and empty segments removed, then encoded once more (the
// path arrives encoded once: services other than S3 sign it encoded twice).
std::string canonical_uri(std::string_view path);
// Query parameters decoded, encoded again strictly and sorted by name, then value.
std::string canonical_query(std::string_view query);
// Result: ErrorKind::invalid when a signed header is missing from the request.
Result<std::string> canonical_request(const SignedRequest& request, const std::vector<std::string>& signed_headers);
std::string string_to_sign(std::string_view amz_date, std::string_view scope, std::string_view canonical_request);
// HMAC chain AWS4+secret → date → region → service → "aws4_request"; 32 raw bytes.
std::string signing_key(std::string_view secret, std::string_view date, std::string_view region,
                        std::string_view service);
// Lowercase hex HMAC-SHA256 of the string to sign.
std::string signature(std::string_view signing_key, std::string_view string_to_sign);

std::string sha256_hex(std::string_view data);
std::string hex(std::string_view bytes);

// YYYYMMDD'T'HHMMSS'Z' → time point; ErrorKind::invalid for anything else.
Result<std::chrono::system_clock::time_point> parse_amz_date(std::string_view text);

// Why a signed request is refused; the daemon turns the type into x-amzn-ErrorType.
struct Refusal {
  std::string type;  // InvalidSignatureException, UnrecognizedClientException, ...
  std::string message;
};

struct VerifyOptions {
  std::chrono::system_clock::time_point now;
  std::chrono::seconds max_skew{300};  // AWS refuses requests signed more than 5 minutes away
  std::string region;                  // the region the daemon answers for
  std::string service = "lambda";
};

// Everything that can be checked before the body arrives: the header's form, the key, the scope,
// the clock. secrets: access key id → secret access key.
std::expected<Authorization, Refusal> check_header(std::string_view authorization, std::string_view amz_date,
                                                   const std::map<std::string, std::string>& secrets,
                                                   const VerifyOptions& options);
// The signature over the whole request, compared in constant time.
std::expected<void, Refusal> verify(const Authorization& auth, const SignedRequest& request,
                                    std::string_view amz_date, std::string_view secret);

}  // namespace fnexec::server::sigv4
