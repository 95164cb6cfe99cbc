// One JetStream key-value bucket (nats.c kvStore), created on first use with this node's settings.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "cluster/connection.h"

namespace fnexec::cluster {

struct KvEntry {
  std::string key;
  std::string value;
  uint64_t revision = 0;
  bool deleted = false;  // a delete or purge marker (watchers only)
};

class KvBucket {
 public:
  // ttl 0: entries never expire. history: revisions kept per key.
  static Result<KvBucket> open(Connection& conn, const std::string& bucket, std::chrono::milliseconds ttl,
                               uint8_t history = 1);
  KvBucket(KvBucket&& o) noexcept : kv_(std::exchange(o.kv_, nullptr)), name_(std::move(o.name_)) {}
  KvBucket& operator=(KvBucket&&) = delete;
  ~KvBucket();

  Result<uint64_t> put(const std::string& key, std::string_view value);
  Result<std::optional<KvEntry>> get(const std::string& key);
  Result<> remove(const std::string& key);
  Result<std::vector<std::string>> keys();
  kvStore* raw() const { return kv_; }
  const std::string& name() const { return name_; }

 private:
  KvBucket(kvStore* kv, std::string name) : kv_(kv), name_(std::move(name)) {}
  kvStore* kv_;
  std::string name_;
};

// Every change of a bucket, the current values first (then one nullopt marking "caught up").
class KvWatcher {
 public:
  static Result<KvWatcher> watch_all(KvBucket& bucket);
  KvWatcher(KvWatcher&& o) noexcept : w_(std::exchange(o.w_, nullptr)) {}
  KvWatcher& operator=(KvWatcher&&) = delete;
  ~KvWatcher();
  // Waits up to timeout; unavailable on timeout or after stop().
  Result<std::optional<KvEntry>> next(std::chrono::milliseconds timeout);
  // Wakes a thread blocked in next(); safe from any thread.
  void stop();

 private:
  explicit KvWatcher(kvWatcher* w) : w_(w) {}
  kvWatcher* w_;
};

}  // namespace fnexec::cluster
