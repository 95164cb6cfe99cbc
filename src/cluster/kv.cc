#include "cluster/kv.h"

namespace fnexec::cluster {

Result<KvBucket> KvBucket::open(Connection& conn, const std::string& bucket, std::chrono::milliseconds ttl,
                                uint8_t history) {
  kvStore* kv = nullptr;
  natsStatus s = natslib().js_KeyValue(&kv, conn.js(), bucket.c_str());
  if (s == NATS_NOT_FOUND) {
    kvConfig cfg;
    natslib().kvConfig_Init(&cfg);
    cfg.Bucket = bucket.c_str();
    cfg.History = history;
    cfg.TTL = std::chrono::duration_cast<std::chrono::nanoseconds>(ttl).count();  // nats.c 3.4 passes it on as ns
    cfg.StorageType = js_FileStorage;
    cfg.Replicas = conn.replicas();
    s = natslib().js_CreateKeyValue(&kv, conn.js(), &cfg);
    if (s != NATS_OK) {
      auto created = nats_fail(s, "create key-value bucket", bucket);
      // Another node created it between the two calls.
      if (natslib().js_KeyValue(&kv, conn.js(), bucket.c_str()) != NATS_OK) return created;
      s = NATS_OK;
    }
  }
  if (s != NATS_OK) return nats_fail(s, "open key-value bucket", bucket);
  return KvBucket(kv, bucket);
}

KvBucket::~KvBucket() {
  if (kv_) natslib().kvStore_Destroy(kv_);
}

Result<uint64_t> KvBucket::put(const std::string& key, std::string_view value) {
  uint64_t rev = 0;
  if (auto s = natslib().kvStore_Put(&rev, kv_, key.c_str(), value.data(), static_cast<int>(value.size())); s != NATS_OK)
    return nats_fail(s, "put key " + key, name_);
  return rev;
}

namespace {

KvEntry take(kvEntry* e) {
  KvEntry out;
  out.key = natslib().kvEntry_Key(e);
  if (auto* v = static_cast<const char*>(natslib().kvEntry_Value(e)))
    out.value.assign(v, static_cast<size_t>(natslib().kvEntry_ValueLen(e)));
  out.revision = natslib().kvEntry_Revision(e);
  out.deleted = natslib().kvEntry_Operation(e) != kvOp_Put;
  natslib().kvEntry_Destroy(e);
  return out;
}

}  // namespace

Result<std::optional<KvEntry>> KvBucket::get(const std::string& key) {
  kvEntry* e = nullptr;
  natsStatus s = natslib().kvStore_Get(&e, kv_, key.c_str());
  if (s == NATS_NOT_FOUND) return std::nullopt;
  if (s != NATS_OK) return nats_fail(s, "get key " + key, name_);
  return take(e);
}

Result<> KvBucket::remove(const std::string& key) {
  if (auto s = natslib().kvStore_Delete(kv_, key.c_str()); s != NATS_OK) return nats_fail(s, "delete key " + key, name_);
  return {};
}

Result<std::vector<std::string>> KvBucket::keys() {
  kvKeysList list{};
  natsStatus s = natslib().kvStore_Keys(&list, kv_, nullptr);
  if (s == NATS_NOT_FOUND) return std::vector<std::string>{};  // an empty bucket
  if (s != NATS_OK) return nats_fail(s, "list keys", name_);
  std::vector<std::string> out(list.Keys, list.Keys + list.Count);
  natslib().kvKeysList_Destroy(&list);
  return out;
}

Result<KvWatcher> KvWatcher::watch_all(KvBucket& bucket) {
  kvWatcher* w = nullptr;
  if (auto s = natslib().kvStore_WatchAll(&w, bucket.raw(), nullptr); s != NATS_OK)
    return nats_fail(s, "watch key-value bucket", bucket.name());
  return KvWatcher(w);
}

KvWatcher::~KvWatcher() {
  if (w_) natslib().kvWatcher_Destroy(w_);
}

Result<std::optional<KvEntry>> KvWatcher::next(std::chrono::milliseconds timeout) {
  kvEntry* e = nullptr;
  natsStatus s = natslib().kvWatcher_Next(&e, w_, timeout.count());
  if (s != NATS_OK) return nats_fail(s, "watch key-value bucket");
  if (!e) return std::nullopt;
  return take(e);
}

void KvWatcher::stop() {
  if (w_) natslib().kvWatcher_Stop(w_);
}

}  // namespace fnexec::cluster
