// The OCI distribution API over libcurl: manifests and blobs of one repository, with the
// anonymous, basic and bearer-token auth flows, per-registry CA directories, retries with backoff
// on 429/5xx/broken connections, and Range resumption of a blob that broke mid-transfer.
// libcurl (dlopened on first use) does TLS (OpenSSL, the system CA store), redirects and HTTPS_PROXY/NO_PROXY.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "image/remote.h"
#include "registry/credentials.h"
#include "registry/reference.h"
#include "util/error.h"

namespace fnexec::registry {

struct CurlApi;

struct ClientOptions {
  std::optional<Credentials> credentials;
  bool tls_verify = true;  // false: any certificate, and plain HTTP when the registry does not speak TLS
  std::string cert_dir;    // CA (*.crt) and client cert (*.cert/*.key) directory; default
                           // /etc/containers/certs.d/REGISTRY
  int attempts = 6;        // per request, for 429/5xx and broken transfers
  long stall_seconds = 30; // a transfer with no byte for this long is broken (then resumed)
};

class Client final : public image::RemoteSource {
 public:
  static Result<std::unique_ptr<Client>> make(Reference ref, ClientOptions options);
  ~Client() override;

  std::string describe() const override { return ref_.str(); }
  Result<image::RemoteDocument> manifest(std::string_view tag_or_digest, int64_t max_bytes) override;
  Result<> stream_blob(const image::Descriptor& blob, const BlobSink& sink, const std::atomic<bool>& cancel) override;

  struct Exchange;

 private:
  Client(const CurlApi* curl, Reference ref, ClientOptions options)
      : curl_(curl), ref_(std::move(ref)), options_(std::move(options)) {}

  // One request with auth and retries. sink gets the body of a 2xx response from offset *resume_at
  // on (advancing it); error bodies are kept in Exchange::body.
  Result<Exchange> request(const std::string& path, std::string_view accept, std::string_view what,
                           const std::function<bool(const char*, size_t)>& sink, uint64_t* resume_at,
                           const std::atomic<bool>* cancel);
  Exchange perform(const std::string& url, std::string_view accept, uint64_t range_from,
                   const std::function<bool(const char*, size_t)>& sink, const std::atomic<bool>* cancel,
                   bool authenticated);
  Result<> authenticate(const Exchange& refused, std::string_view what);
  Error transfer_error(const Exchange& x, std::string_view what) const;
  Error status_error(const Exchange& x, std::string_view what) const;

  const CurlApi* curl_;  // libcurl, loaded on the first Client::make (registry/curl_api.h)
  Reference ref_;
  ClientOptions options_;
  std::string ca_bundle_;   // system CAs plus the registry's own, when it has a CA directory
  std::string client_cert_, client_key_;
  std::mutex mutex_;        // guards the two below: layers are fetched from several threads
  std::string scheme_ = "https";
  std::string authorization_;  // "Authorization: ..." header, never logged
};

}  // namespace fnexec::registry
