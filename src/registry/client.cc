#include "registry/client.h"

#include <dirent.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "registry/curl_api.h"
#include "server/json.h"
#include "util/fs.h"

namespace fnexec::registry {

namespace {

constexpr std::string_view kManifestAccept =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";
constexpr long kMaxRedirects = 10;
constexpr long kReceiveBuffer = 1 << 20;
constexpr size_t kMaxErrorBody = 16 << 10;
constexpr std::string_view kSystemCaBundle = "/etc/ssl/certs/ca-certificates.crt";

struct CurlFree {
  const CurlApi* curl;
  void operator()(CURL* c) const { curl->easy_cleanup(c); }
  void operator()(curl_slist* l) const { curl->slist_free_all(l); }
};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  return std::string(s);
}

// WWW-Authenticate: SCHEME k="v",k2="v2" -> scheme (lowercase) and parameters.
struct Challenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};

Challenge parse_challenge(std::string_view h) {
  Challenge c;
  auto sp = h.find(' ');
  c.scheme = lower(h.substr(0, sp));
  if (sp == std::string_view::npos) return c;
  std::string_view rest = h.substr(sp + 1);
  while (!rest.empty()) {
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == ',')) rest.remove_prefix(1);
    auto eq = rest.find('=');
    if (eq == std::string_view::npos) break;
    std::string key = lower(trim(rest.substr(0, eq)));
    rest.remove_prefix(eq + 1);
    std::string value;
    if (!rest.empty() && rest.front() == '"') {
      rest.remove_prefix(1);
      while (!rest.empty() && rest.front() != '"') {
        if (rest.front() == '\\' && rest.size() > 1) rest.remove_prefix(1);
        value += rest.front();
        rest.remove_prefix(1);
      }
      if (!rest.empty()) rest.remove_prefix(1);
    } else {
      auto comma = rest.find(',');
      value = trim(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma);
    }
    c.params[key] = value;
  }
  return c;
}

bool is_retryable_status(long status) { return status == 429 || status == 408 || (status >= 500 && status <= 504); }

bool is_retryable_code(CURLcode code) {
  switch (code) {
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

std::string status_text(long status) {
  switch (status) {
    case 401: return "401 Unauthorized";
    case 403: return "403 Forbidden";
    case 404: return "404 Not Found";
    case 429: return "429 Too Many Requests";
    default: return std::to_string(status);
  }
}

// The registry's own error code ({"errors":[{"code":"MANIFEST_UNKNOWN",...}]}), when it sent one.
std::string registry_error_code(const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(body);
  simdjson::dom::element doc;
  std::string_view code;
  if (parser.parse(padded).get(doc) || doc["errors"].at(0)["code"].get_string().get(code)) return {};
  return std::string(code);
}

}  // namespace

struct Client::Exchange {
  long status = 0;
  CURLcode code = CURLE_OK;
  std::string curl_message;
  std::string content_type, www_authenticate, retry_after;
  std::string body;          // error responses and documents
  bool sink_refused = false; // the sink returned false (too large, reader gone)
  uint64_t received = 0;     // body bytes given to the sink by this exchange
};

Result<std::unique_ptr<Client>> Client::make(Reference ref, ClientOptions options) {
  const CurlApi* curl = FNEXEC_TRY(curl_api());
  std::unique_ptr<Client> c(new Client(curl, std::move(ref), std::move(options)));
  std::string dir = c->options_.cert_dir.empty() ? "/etc/containers/certs.d/" + c->ref_.registry : c->options_.cert_dir;
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> cas;
    while (auto* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      if (n.ends_with(".crt")) cas.push_back(dir + "/" + std::string(n));
      else if (n.ends_with(".cert")) c->client_cert_ = dir + "/" + std::string(n);
      else if (n.ends_with(".key")) c->client_key_ = dir + "/" + std::string(n);
    }
    ::closedir(d);
    std::sort(cas.begin(), cas.end());
    if (!cas.empty()) {
      // The registry's CAs are trusted besides the system's, as containers' certs.d does.
      if (auto system = fs::read_file(std::string(kSystemCaBundle))) c->ca_bundle_ = *system + "\n";
      for (const auto& f : cas) c->ca_bundle_ += FNEXEC_TRY(fs::read_file(f)) + "\n";
    }
  } else if (!c->options_.cert_dir.empty()) {
    return fail_errno("open --cert-dir", dir);
  }
  if (const char* s = std::getenv("FNEXEC_PULL_STALL_SECONDS"); s && std::atol(s) > 0) c->options_.stall_seconds = std::atol(s);
  return c;
}

Client::~Client() = default;

Client::Exchange Client::perform(const std::string& url, std::string_view accept, uint64_t range_from,
                                 const std::function<bool(const char*, size_t)>& sink,
                                 const std::atomic<bool>* cancel, bool authenticated) {
  Exchange x;
  std::unique_ptr<CURL, CurlFree> curl(curl_->easy_init(), CurlFree{curl_});
  if (!curl) {
    x.code = CURLE_OUT_OF_MEMORY;
    return x;
  }
  CURL* h = curl.get();
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_slist* raw = curl_->slist_append(nullptr, ("Accept: " + std::string(accept)).c_str());
  {
    std::lock_guard lock(mutex_);
    if (authenticated && !authorization_.empty()) raw = curl_->slist_append(raw, authorization_.c_str());
  }
  std::unique_ptr<curl_slist, CurlFree> headers(raw, CurlFree{curl_});
  struct Ctx {
    const CurlApi* curl;
    Exchange* x;
    CURL* h;
    const std::function<bool(const char*, size_t)>* sink;
    const std::atomic<bool>* cancel;
    uint64_t resume_from;
    uint64_t skip;  // a server that ignores Range answers 200 from byte 0: these bytes we already have
  } ctx{curl_, &x, h, &sink, cancel, range_from, 0};
  curl_->easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_->easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_->easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_->easy_setopt(h, CURLOPT_MAXREDIRS, kMaxRedirects);
  curl_->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_->easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_->easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_->easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_->easy_setopt(h, CURLOPT_LOW_SPEED_TIME, options_.stall_seconds);
  curl_->easy_setopt(h, CURLOPT_USERAGENT, "fnexec");
  // 16 KiB by default: a 100 MB blob took ~6,800 recv and poll calls each (strace -c of bench/pull.sh).
  curl_->easy_setopt(h, CURLOPT_BUFFERSIZE, kReceiveBuffer);
  if (!options_.tls_verify) {
    curl_->easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_->easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  curl_blob ca{ca_bundle_.data(), ca_bundle_.size(), CURL_BLOB_NOCOPY};
  if (!ca_bundle_.empty()) curl_->easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
  if (!client_cert_.empty() && !client_key_.empty()) {
    curl_->easy_setopt(h, CURLOPT_SSLCERT, client_cert_.c_str());
    curl_->easy_setopt(h, CURLOPT_SSLKEY, client_key_.c_str());
  }
  std::string range = std::to_string(range_from) + "-";
  if (range_from > 0) curl_->easy_setopt(h, CURLOPT_RANGE, range.c_str());
  curl_->easy_setopt(h, CURLOPT_HEADERDATA, &ctx);
  curl_->easy_setopt(h, CURLOPT_HEADERFUNCTION, +[](char* data, size_t, size_t n, void* p) -> size_t {
    auto* c = static_cast<Ctx*>(p);
    std::string_view line(data, n);
    if (line.starts_with("HTTP/")) {  // a new response (after a redirect): forget the last one's headers
      c->x->content_type.clear();
      c->x->www_authenticate.clear();
      c->x->retry_after.clear();
      auto sp = line.find(' ');
      long status = sp == std::string_view::npos ? 0 : std::atol(std::string(line.substr(sp + 1, 3)).c_str());
      c->skip = status == 200 ? c->resume_from : 0;
      return n;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos) return n;
    std::string key = lower(line.substr(0, colon));
    std::string value = trim(line.substr(colon + 1));
    if (key == "content-type") c->x->content_type = value;
    else if (key == "www-authenticate" && c->x->www_authenticate.empty()) c->x->www_authenticate = value;
    else if (key == "retry-after") c->x->retry_after = value;
    return n;
  });
  curl_->easy_setopt(h, CURLOPT_WRITEDATA, &ctx);
  curl_->easy_setopt(h, CURLOPT_WRITEFUNCTION, +[](char* data, size_t, size_t n, void* p) -> size_t {
    auto* c = static_cast<Ctx*>(p);
    long status = 0;
    c->curl->easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
      if (c->x->body.size() < kMaxErrorBody) c->x->body.append(data, std::min(n, kMaxErrorBody - c->x->body.size()));
      return n;
    }
    const char* d = data;
    size_t len = n;
    if (c->skip) {
      size_t drop = static_cast<size_t>(std::min<uint64_t>(c->skip, len));
      c->skip -= drop;
      d += drop;
      len -= drop;
    }
    if (len && !(*c->sink)(d, len)) {
      c->x->sink_refused = true;
      return 0;
    }
    c->x->received += len;
    return n;
  });
  curl_->easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_->easy_setopt(h, CURLOPT_XFERINFODATA, &ctx);
  curl_->easy_setopt(h, CURLOPT_XFERINFOFUNCTION, +[](void* p, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
    auto* c = static_cast<Ctx*>(p);
    return c->cancel && *c->cancel ? 1 : 0;
  });
  x.code = curl_->easy_perform(h);
  curl_->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x.status);
  x.curl_message = errbuf[0] ? errbuf : curl_->easy_strerror(x.code);
  return x;
}

Result<> Client::authenticate(const Exchange& refused, std::string_view what) {
  Challenge c = parse_challenge(refused.www_authenticate);
  const auto& creds = options_.credentials;
  if (c.scheme == "basic") {
    if (!creds) return std::unexpected(status_error(refused, what));
    std::lock_guard lock(mutex_);
    authorization_ = "Authorization: Basic " + server::base64_encode(creds->username + ":" + creds->password);
    return {};
  }
  if (c.scheme != "bearer" || c.params["realm"].empty())
    return fail(ErrorKind::unavailable, std::string(what), ref_.str(),
                ref_.registry + " asks for authentication fnexec does not know (" + c.scheme +
                    "): only Basic and Bearer token are supported");
  std::unique_ptr<CURL, CurlFree> esc(curl_->easy_init(), CurlFree{curl_});
  auto escape = [&](const std::string& s) {
    char* e = curl_->easy_escape(esc.get(), s.c_str(), static_cast<int>(s.size()));
    std::string out = e ? e : "";
    curl_->free(e);
    return out;
  };
  std::string scope = c.params["scope"].empty() ? "repository:" + ref_.repository + ":pull" : c.params["scope"];
  std::string url = c.params["realm"];
  url += (url.find('?') == std::string::npos ? "?" : "&");
  if (!c.params["service"].empty()) url += "service=" + escape(c.params["service"]) + "&";
  url += "scope=" + escape(scope);
  // The token endpoint gets the credentials as basic auth, or nothing for an anonymous token.
  std::string token_auth;
  if (creds) token_auth = "Authorization: Basic " + server::base64_encode(creds->username + ":" + creds->password);
  std::string body;
  auto sink = [&](const char* d, size_t n) {
    if (body.size() + n > (1 << 20)) return false;
    body.append(d, n);
    return true;
  };
  Exchange x;
  {
    std::string saved;
    {
      std::lock_guard lock(mutex_);
      saved = std::exchange(authorization_, token_auth);
    }
    x = perform(url, "application/json", 0, sink, nullptr, true);
    std::lock_guard lock(mutex_);
    authorization_ = saved;
  }
  if (x.code != CURLE_OK) {
    Error e = transfer_error(x, "get a token");
    e.detail = "the token server named by " + ref_.registry + ": " + e.detail;
    return std::unexpected(e);
  }
  if (x.status == 401 || x.status == 403) return std::unexpected(status_error(x, what));
  if (x.status != 200)
    return fail(ErrorKind::unavailable, std::string(what), ref_.str(),
                "the token server of " + ref_.registry + " answered " + status_text(x.status));
  simdjson::dom::parser parser;
  simdjson::padded_string padded(body);
  simdjson::dom::element doc;
  std::string_view token;
  if (parser.parse(padded).get(doc) || (doc["token"].get_string().get(token) && doc["access_token"].get_string().get(token)) ||
      token.empty())
    return fail(ErrorKind::corrupt, std::string(what), ref_.str(),
                "the token server of " + ref_.registry + " sent no token");
  std::lock_guard lock(mutex_);
  authorization_ = "Authorization: Bearer " + std::string(token);
  return {};
}

Error Client::transfer_error(const Exchange& x, std::string_view what) const {
  const std::string& host = ref_.registry;
  std::string detail;
  ErrorKind kind = ErrorKind::unavailable;
  switch (x.code) {
    case CURLE_COULDNT_RESOLVE_HOST:
      detail = "cannot resolve " + host + ": check the registry name (a reference without one means docker.io)";
      kind = ErrorKind::not_found;
      break;
    case CURLE_COULDNT_RESOLVE_PROXY:
      detail = "cannot resolve the proxy (HTTPS_PROXY): check it, or list " + host + " in NO_PROXY";
      break;
    case CURLE_COULDNT_CONNECT:
      detail = "cannot connect to " + host + " (" + x.curl_message + "): is the registry running, and the port right?";
      break;
    case CURLE_PEER_FAILED_VERIFICATION:
      detail = "the TLS certificate of " + host + " is not trusted (" + x.curl_message +
               "): put the CA that signed it in /etc/containers/certs.d/" + host +
               "/ca.crt or a --cert-dir, or pass --tls-verify=false for a registry you trust";
      break;
    case CURLE_SSL_CONNECT_ERROR:
      detail = "TLS with " + host + " failed (" + x.curl_message +
               "): a plain-HTTP registry needs --tls-verify=false";
      break;
    case CURLE_TOO_MANY_REDIRECTS:
      detail = host + " redirected more than " + std::to_string(kMaxRedirects) + " times (a redirect loop at the registry)";
      kind = ErrorKind::corrupt;
      break;
    case CURLE_OPERATION_TIMEDOUT:
      detail = host + " sent nothing for " + std::to_string(options_.stall_seconds) + " s (" + x.curl_message + ")";
      break;
    case CURLE_ABORTED_BY_CALLBACK:
      detail = "cancelled";
      kind = ErrorKind::internal;
      break;
    default:
      detail = host + ": " + x.curl_message;
  }
  return Error{kind, 0, std::string(what), ref_.str(), detail};
}

Error Client::status_error(const Exchange& x, std::string_view what) const {
  const std::string& host = ref_.registry;
  std::string code = registry_error_code(x.body);
  std::string said = status_text(x.status) + (code.empty() ? "" : " " + code);
  const auto& creds = options_.credentials;
  std::string detail;
  ErrorKind kind = ErrorKind::unavailable;
  if (x.status == 401 && !creds) {
    detail = host + " answered " + said + ": it needs credentials for " + ref_.repository +
             ": pass --creds USER:PASS or log in (auth.json of podman/skopeo login, or ~/.docker/config.json)";
    kind = ErrorKind::invalid;
  } else if (x.status == 401 || x.status == 403) {
    detail = host + " answered " + said + " with the credentials from " + (creds ? creds->source : "nowhere") +
             ": check the user name and password, and that the user may pull " + ref_.repository;
    kind = ErrorKind::invalid;
  } else if (x.status == 404) {
    detail = host + " answered " + said + ": " +
             (what == "get manifest" ? "no such repository or tag: check " + ref_.repository + " and the tag or digest"
                                     : "the registry lacks a blob its manifest names");
    kind = ErrorKind::not_found;
  } else {
    detail = host + " answered " + said + (is_retryable_status(x.status) ? " after " + std::to_string(options_.attempts) + " attempts: try again later" : "");
  }
  return Error{kind, 0, std::string(what), ref_.str(), detail};
}

Result<Client::Exchange> Client::request(const std::string& path, std::string_view accept, std::string_view what,
                                         const std::function<bool(const char*, size_t)>& sink, uint64_t* resume_at,
                                         const std::atomic<bool>* cancel) {
  bool authenticated_once = false;
  auto backoff = std::chrono::milliseconds(200);
  for (int attempt = 1;; ++attempt) {
    std::string scheme;
    {
      std::lock_guard lock(mutex_);
      scheme = scheme_;
    }
    uint64_t from = resume_at ? *resume_at : 0;
    Exchange x = perform(scheme + "://" + ref_.api_host() + path, accept, from, sink, cancel, true);
    if (resume_at) *resume_at += x.received;
    if (x.sink_refused) return x;  // the caller knows why
    if (x.code == CURLE_SSL_CONNECT_ERROR && !options_.tls_verify && scheme == "https") {
      // --tls-verify=false also means "plain HTTP is fine", as containers' insecure registries.
      std::lock_guard lock(mutex_);
      scheme_ = "http";
      --attempt;
      continue;
    }
    bool last = attempt >= options_.attempts;
    if (x.code != CURLE_OK) {
      if (!is_retryable_code(x.code) || last || (cancel && *cancel)) return std::unexpected(transfer_error(x, what));
      spdlog::debug("{} {}: {}; attempt {} of {}, resuming at byte {}", what, ref_.str(), x.curl_message, attempt + 1,
                    options_.attempts, resume_at ? *resume_at : 0);
    } else if (x.status == 401 && !authenticated_once) {
      FNEXEC_TRY(authenticate(x, what));
      authenticated_once = true;
      --attempt;
      continue;
    } else if (is_retryable_status(x.status) && !last) {
      spdlog::debug("{} {}: {} answered {}; attempt {} of {}", what, ref_.str(), ref_.registry, x.status, attempt + 1,
                    options_.attempts);
      if (long s = std::atol(x.retry_after.c_str()); s > 0)
        backoff = std::max(backoff, std::chrono::milliseconds(std::min(s, 30L) * 1000));
    } else if (x.status < 200 || x.status >= 300) {
      return std::unexpected(status_error(x, what));
    } else {
      return x;
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

Result<image::RemoteDocument> Client::manifest(std::string_view tag_or_digest, int64_t max_bytes) {
  std::string body;
  auto sink = [&](const char* d, size_t n) {
    if (static_cast<int64_t>(body.size() + n) > max_bytes) return false;
    body.append(d, n);
    return true;
  };
  uint64_t at = 0;
  auto x = FNEXEC_TRY(request("/v2/" + ref_.repository + "/manifests/" + std::string(tag_or_digest), kManifestAccept,
                              "get manifest", sink, &at, nullptr));
  if (x.sink_refused)
    return fail(ErrorKind::corrupt, "get manifest", ref_.str(),
                ref_.registry + " sent more than " + std::to_string(max_bytes) +
                    " bytes for the manifest " + std::string(tag_or_digest) + ": refused (manifests are small documents)");
  return image::RemoteDocument{std::move(body), x.content_type};
}

Result<> Client::stream_blob(const image::Descriptor& blob, const BlobSink& sink, const std::atomic<bool>& cancel) {
  uint64_t at = 0;    // where a resumed request starts
  uint64_t sent = 0;  // bytes given to sink
  bool reader_gone = false;
  const auto size = static_cast<uint64_t>(blob.size);
  auto pass_on = [&](const char* d, size_t n) {
    // One byte more than the descriptor says is passed on, so the verifier refuses the blob as too long.
    n = static_cast<size_t>(std::min<uint64_t>(n, size + 1 - sent));
    sent += n;
    if (!sink(std::span<const char>(d, n))) {
      reader_gone = true;
      return false;
    }
    return sent <= size;
  };
  auto x = request("/v2/" + ref_.repository + "/blobs/" + blob.digest, "*/*", "get blob " + blob.digest, pass_on, &at,
                   &cancel);
  if (!x) return std::unexpected(x.error());
  if (reader_gone) return fail(ErrorKind::internal, "get blob", blob.digest, "cancelled");
  if (x->sink_refused)
    return fail(ErrorKind::corrupt, "get blob", blob.digest,
                ref_.registry + " sent more than the " + std::to_string(blob.size) + " bytes its descriptor says: refused");
  if (at < static_cast<uint64_t>(blob.size))
    return fail(ErrorKind::corrupt, "get blob", blob.digest,
                ref_.registry + " ended the blob after " + std::to_string(at) + " of " + std::to_string(blob.size) + " bytes");
  return {};
}

}  // namespace fnexec::registry
