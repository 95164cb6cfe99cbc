#include "cluster/connection.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "util/log.h"

namespace fnexec::cluster {

std::unexpected<Error> nats_fail(natsStatus status, std::string what, std::string on) {
  std::string detail = natslib().natsStatus_GetText(status);
  if (const char* last = natslib().nats_GetLastError(nullptr); last && *last && detail != last)
    detail += fmt::format(" ({})", last);
  ErrorKind kind = status == NATS_NOT_FOUND ? ErrorKind::not_found
                   : status == NATS_TIMEOUT || status == NATS_NO_SERVER || status == NATS_CONNECTION_CLOSED ||
                           status == NATS_NO_RESPONDERS || status == NATS_CONNECTION_DISCONNECTED
                       ? ErrorKind::unavailable
                       : ErrorKind::internal;
  return fail(kind, std::move(what), std::move(on), std::move(detail));
}

std::string msg_header(natsMsg* msg, const char* name) {
  const char* v = nullptr;
  return natslib().natsMsgHeader_Get(msg, name, &v) == NATS_OK && v ? v : "";
}

Result<std::vector<std::string>> parse_servers(const std::string& list) {
  std::vector<std::string> out;
  for (size_t at = 0; at <= list.size();) {
    size_t comma = std::min(list.find(',', at), list.size());
    std::string url = list.substr(at, comma - at);
    std::erase_if(url, [](char c) { return c == ' ' || c == '\t'; });
    at = comma + 1;
    if (url.empty()) continue;
    auto scheme = url.find("://");
    std::string rest = scheme == std::string::npos ? url : url.substr(scheme + 3);
    bool known = scheme == std::string::npos || url.starts_with("nats://") || url.starts_with("tls://");
    auto colon = rest.rfind(':');
    if (!known || colon == std::string::npos || colon == 0 || colon + 1 == rest.size())
      return fail(ErrorKind::invalid, "read cluster_nats", url,
                  "each server must be nats://HOST:PORT or tls://HOST:PORT, e.g. nats://127.0.0.1:4222");
    out.push_back(scheme == std::string::npos ? "nats://" + url : url);
  }
  if (out.empty()) return fail(ErrorKind::invalid, "read cluster_nats", list, "no server given");
  return out;
}

void Connection::on_closed(natsConnection*, void* self) {
  auto* c = static_cast<Connection*>(self);
  std::lock_guard lock(c->closed_mu_);
  c->closed_ = true;
  c->closed_cv_.notify_all();
}

void Connection::on_disconnected(natsConnection*, void* self) {
  auto* c = static_cast<Connection*>(self);
  c->connected_ = false;
  if (c->closing_) return;
  spdlog::warn("cluster: lost the NATS connection; reconnecting in the background, local invocations go on");
}

void Connection::on_reconnected(natsConnection* nc, void* self) {
  auto* c = static_cast<Connection*>(self);
  c->connected_ = true;
  ++c->reconnects_;
  char url[256] = {};
  natslib().natsConnection_GetConnectedUrl(nc, url, sizeof url);
  spdlog::info("cluster: reconnected to NATS {}", url);
}

void Connection::on_error(natsConnection*, natsSubscription*, natsStatus err, void*) {
  spdlog::warn("cluster: NATS async error: {}", natslib().natsStatus_GetText(err));
}

Result<std::unique_ptr<Connection>> Connection::open(const Options& o) {
  std::unique_ptr<Connection> c(new Connection());
  c->replicas_ = o.replicas;
  if (auto s = natslib().natsOptions_Create(&c->opts_); s != NATS_OK) return nats_fail(s, "create NATS options");
  std::vector<const char*> urls;
  for (const auto& u : o.servers) urls.push_back(u.c_str());
  auto* opts = c->opts_;
  natsStatus s = natslib().natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natslib().natsOptions_SetName(opts, ("fnexec " + o.node).c_str());
  // Forever: a daemon outlives NATS restarts; meanwhile its local API keeps serving.
  if (s == NATS_OK) s = natslib().natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natslib().natsOptions_SetReconnectWait(opts, 500);
  // Each publish written by the thread that makes it: nats.c's flusher thread would otherwise be
  // woken for every one, a context switch per publish that cost more CPU than the writes it batches.
  if (s == NATS_OK) s = natslib().natsOptions_SetSendAsap(opts, true);
  // 8 MiB of publishes are buffered while reconnecting instead of failing at once.
  if (s == NATS_OK) s = natslib().natsOptions_SetReconnectBufSize(opts, 8 << 20);
  if (s == NATS_OK) s = natslib().natsOptions_SetDisconnectedCB(opts, on_disconnected, c.get());
  if (s == NATS_OK) s = natslib().natsOptions_SetReconnectedCB(opts, on_reconnected, c.get());
  if (s == NATS_OK) s = natslib().natsOptions_SetErrorHandler(opts, on_error, c.get());
  if (s == NATS_OK) s = natslib().natsOptions_SetClosedCB(opts, on_closed, c.get());
  if (s != NATS_OK) return nats_fail(s, "set NATS options");
  if (!o.creds_file.empty())
    if (s = natslib().natsOptions_SetUserCredentialsFromFiles(opts, o.creds_file.c_str(), nullptr); s != NATS_OK)
      return nats_fail(s, "read cluster_nats_creds", o.creds_file);
  if (!o.user.empty())
    if (s = natslib().natsOptions_SetUserInfo(opts, o.user.c_str(), o.password.c_str()); s != NATS_OK)
      return nats_fail(s, "set cluster_nats_user");
  if (!o.tls_ca.empty() || !o.tls_cert.empty()) {
    if (s = natslib().natsOptions_SetSecure(opts, true); s != NATS_OK) return nats_fail(s, "turn on NATS TLS");
    if (!o.tls_ca.empty())
      if (s = natslib().natsOptions_LoadCATrustedCertificates(opts, o.tls_ca.c_str()); s != NATS_OK)
        return nats_fail(s, "load cluster_nats_tls_ca", o.tls_ca);
    if (!o.tls_cert.empty())
      if (s = natslib().natsOptions_LoadCertificatesChain(opts, o.tls_cert.c_str(), o.tls_key.c_str()); s != NATS_OK)
        return nats_fail(s, "load cluster_nats_tls_cert", o.tls_cert);
  }
  if (s = natslib().natsConnection_Connect(&c->conn_, opts); s != NATS_OK)
    return fail(ErrorKind::unavailable, "connect to NATS", fmt::format("{}", fmt::join(o.servers, ",")),
                fmt::format("{}; check cluster_nats and that nats-server runs with JetStream (-js)",
                            natslib().natsStatus_GetText(s)));
  c->connected_ = true;
  jsOptions jo;
  natslib().jsOptions_Init(&jo);
  jo.Wait = 5000;
  if (s = natslib().natsConnection_JetStream(&c->js_, c->conn_, &jo); s != NATS_OK)
    return nats_fail(s, "open JetStream context");
  return c;
}

std::string Connection::url() const {
  char url[256] = {};
  natslib().natsConnection_GetConnectedUrl(conn_, url, sizeof url);
  return url;
}

Connection::~Connection() {
  if (js_) natslib().jsCtx_Destroy(js_);
  // Close before destroy: nats.c's threads stop calling back into this object.
  if (conn_) {
    closing_ = true;
    natslib().natsConnection_Close(conn_);
    std::unique_lock lock(closed_mu_);
    closed_cv_.wait_for(lock, std::chrono::seconds(5), [this] { return closed_; });
    lock.unlock();
    natslib().natsConnection_Destroy(conn_);
  }
  if (opts_) natslib().natsOptions_Destroy(opts_);
}

}  // namespace fnexec::cluster
