#pragma once
// Percent-encoding and query strings of request targets, for the router and the SigV4 signer.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fnexec::server {

// The value of a hex digit, or -1.
int hex_digit(char c);

// %XX decoded; nullopt for a '%' that starts no escape. plus_is_space: the
// application/x-www-form-urlencoded rule for query values ('+' is a space); paths keep '+'.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space);

// One name=value pair of a query string, still percent-encoded; without '=' the value is empty.
struct QueryPair {
  std::string_view text, name, value;  // text: the whole pair, for error messages
};
// The pairs of a query string, split at '&'; empty pairs are skipped.
std::vector<QueryPair> query_pairs(std::string_view query);

}  // namespace fnexec::server
