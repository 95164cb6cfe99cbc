#include "server/sigv4.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <ctime>

#include "image/unpack.h"
#include "server/uri.h"

namespace fnexec::server::sigv4 {

namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// %XX decoded; a '%' that starts no escape stays as it is (the signer encodes it again as %25).
std::string percent_decode_lenient(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

// Value as signed: outer whitespace trimmed, inner runs of spaces collapsed to one.
std::string header_value(std::string_view v) {
  v = trim(v);
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::string hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

bool is_lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  return image::sha256_of(data).substr(std::string_view("sha256:").size());
}

Result<Authorization> parse_authorization(std::string_view header) {
  auto bad = [&](std::string detail) {
    return fail(ErrorKind::invalid, "read Authorization header", {}, std::move(detail));
  };
  if (!header.starts_with(kAlgorithm) || header.size() == kAlgorithm.size() || header[kAlgorithm.size()] != ' ')
    return bad(fmt::format("the algorithm must be {}", kAlgorithm));
  std::string_view rest = header.substr(kAlgorithm.size() + 1);
  Authorization a;
  bool have_credential = false, have_headers = false, have_signature = false;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view part = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    size_t eq = part.find('=');
    if (eq == std::string_view::npos) return bad(fmt::format("'{}' is not NAME=VALUE", part));
    std::string_view name = part.substr(0, eq), value = part.substr(eq + 1);
    if (name == "Credential") {
      std::vector<std::string_view> fields;
      for (size_t i = 0;;) {
        size_t slash = value.find('/', i);
        fields.push_back(value.substr(i, slash == std::string_view::npos ? std::string_view::npos : slash - i));
        if (slash == std::string_view::npos) break;
        i = slash + 1;
      }
      if (fields.size() != 5 || fields[4] != "aws4_request" || fields[0].empty() || fields[1].size() != 8)
        return bad("Credential must be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request");
      a.access_key = fields[0];
      a.date = fields[1];
      a.region = fields[2];
      a.service = fields[3];
      have_credential = true;
    } else if (name == "SignedHeaders") {
      for (size_t i = 0; i <= value.size();) {
        size_t semi = value.find(';', i);
        if (semi == std::string_view::npos) semi = value.size();
        auto h = value.substr(i, semi - i);
        if (h.empty()) return bad("SignedHeaders has an empty name");
        a.signed_headers.push_back(lower(h));
        i = semi + 1;
      }
      have_headers = !a.signed_headers.empty();
    } else if (name == "Signature") {
      if (value.size() != 64 || !is_lower_hex(value)) return bad("Signature must be 64 lowercase hex digits");
      a.signature = value;
      have_signature = true;
    } else {
      return bad(fmt::format("unknown field '{}'", name));
    }
  }
  if (!have_credential || !have_headers || !have_signature)
    return bad("Credential, SignedHeaders and Signature are all required");
  return a;
}

std::string uri_encode(std::string_view s, bool keep_slash) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '_' || c == '.' || c == '~';
    if (unreserved || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 15]);
    }
  }
  return out;
}

std::string canonical_uri(std::string_view path) {
  std::vector<std::string_view> segments;
  for (size_t i = 0; i < path.size();) {
    size_t slash = path.find('/', i);
    if (slash == std::string_view::npos) slash = path.size();
    auto seg = path.substr(i, slash - i);
    if (seg == "..") {
      if (!segments.empty()) segments.pop_back();
    } else if (!seg.empty() && seg != ".") {
      segments.push_back(seg);
    }
    i = slash + 1;
  }
  std::string normalized = "/";
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i) normalized += '/';
    normalized += segments[i];
  }
  if (!segments.empty() && path.ends_with('/')) normalized += '/';
  return uri_encode(normalized, true);
}

std::string canonical_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  for (const auto& pair : query_pairs(query))
    params.emplace_back(uri_encode(percent_decode_lenient(pair.name), false),
                        uri_encode(percent_decode_lenient(pair.value), false));
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) out += '&';
    out += k + "=" + v;
  }
  return out;
}

Result<std::string> canonical_request(const SignedRequest& r, const std::vector<std::string>& signed_headers) {
  std::string_view target = r.target, path = target, query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  std::string out = r.method + "\n" + canonical_uri(path) + "\n" + canonical_query(query) + "\n";
  std::string names;
  for (const auto& name : signed_headers) {
    std::string joined;
    bool found = false;
    for (const auto& [k, v] : r.headers) {
      if (lower(k) != name) continue;
      if (found) joined += ',';
      joined += header_value(v);
      found = true;
    }
    if (!found)
      return fail(ErrorKind::invalid, "build canonical request", name, "a signed header is not in the request");
    out += name + ":" + joined + "\n";
    if (!names.empty()) names += ';';
    names += name;
  }
  out += "\n" + names + "\n" + r.payload_hash;
  return out;
}

std::string string_to_sign(std::string_view amz_date, std::string_view scope, std::string_view canonical) {
  return fmt::format("{}\n{}\n{}\n{}", kAlgorithm, amz_date, scope, sha256_hex(canonical));
}

std::string signing_key(std::string_view secret, std::string_view date, std::string_view region,
                        std::string_view service) {
  auto k = hmac("AWS4" + std::string(secret), date);
  k = hmac(k, region);
  k = hmac(k, service);
  return hmac(k, "aws4_request");
}

std::string signature(std::string_view key, std::string_view sts) {
  return hex(hmac(key, sts));
}

Result<std::chrono::system_clock::time_point> parse_amz_date(std::string_view text) {
  auto bad = [&] {
    return fail(ErrorKind::invalid, "read X-Amz-Date", std::string(text), "must be YYYYMMDDTHHMMSSZ");
  };
  if (text.size() != 16 || text[8] != 'T' || text[15] != 'Z') return bad();
  for (size_t i : {0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14})
    if (text[i] < '0' || text[i] > '9') return bad();
  auto num = [&](size_t at, size_t n) {
    int v = 0;
    for (size_t i = at; i < at + n; ++i) v = v * 10 + (text[i] - '0');
    return v;
  };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(4, 2) - 1;
  tm.tm_mday = num(6, 2);
  tm.tm_hour = num(9, 2);
  tm.tm_min = num(11, 2);
  tm.tm_sec = num(13, 2);
  if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
    return bad();
  return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

std::expected<Authorization, Refusal> check_header(std::string_view authorization, std::string_view amz_date,
                                                   const std::map<std::string, std::string>& secrets,
                                                   const VerifyOptions& o) {
  auto a = parse_authorization(authorization);
  if (!a) return std::unexpected(Refusal{"IncompleteSignatureException", a.error().message()});
  if (!secrets.contains(a->access_key))
    return std::unexpected(Refusal{"UnrecognizedClientException",
                                   "The security token included in the request is invalid: no access_key "
                                   "in fnexec.conf has the id " + a->access_key});
  if (a->service != o.service)
    return std::unexpected(Refusal{"InvalidSignatureException",
                                   fmt::format("Credential should be scoped to correct service: '{}', not '{}'",
                                               o.service, a->service)});
  if (a->region != o.region)
    return std::unexpected(Refusal{"InvalidSignatureException",
                                   fmt::format("Credential should be scoped to a valid region: this daemon "
                                               "answers for '{}' (lambda_region in fnexec.conf), not '{}'",
                                               o.region, a->region)});
  auto when = parse_amz_date(amz_date);
  if (!when)
    return std::unexpected(
        Refusal{"IncompleteSignatureException", "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ"});
  if (amz_date.substr(0, 8) != a->date)
    return std::unexpected(Refusal{"InvalidSignatureException",
                                   "the Credential's date is not the date of X-Amz-Date"});
  auto skew = *when > o.now ? *when - o.now : o.now - *when;
  if (skew > o.max_skew)
    return std::unexpected(Refusal{
        "InvalidSignatureException",
        fmt::format("Signature expired: {} is more than {} s away from the daemon's clock", amz_date,
                    o.max_skew.count())});
  if (std::find(a->signed_headers.begin(), a->signed_headers.end(), "host") == a->signed_headers.end())
    return std::unexpected(Refusal{"InvalidSignatureException", "the Host header must be signed"});
  return *a;
}

std::expected<void, Refusal> verify(const Authorization& auth, const SignedRequest& request,
                                    std::string_view amz_date, std::string_view secret) {
  auto canonical = canonical_request(request, auth.signed_headers);
  if (!canonical) return std::unexpected(Refusal{"InvalidSignatureException", canonical.error().message()});
  auto key = signing_key(secret, auth.date, auth.region, auth.service);
  auto expected = signature(key, string_to_sign(amz_date, auth.scope(), *canonical));
  if (CRYPTO_memcmp(expected.data(), auth.signature.data(), expected.size()) != 0)
    return std::unexpected(Refusal{"InvalidSignatureException",
                                   "The request signature we calculated does not match the signature you "
                                   "provided. Check your AWS Secret Access Key and signing method."});
  return {};
}

}  // namespace fnexec::server::sigv4
