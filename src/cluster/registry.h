// One function registry for the cluster: a KV bucket (key = function name, value = its document in
// function_spec_json form). Every node watches it and applies each change to its own registry and
// pools; the watch starts with the bucket's current values, so a node that was down catches up.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <thread>

#include "cluster/kv.h"
#include "cluster/local.h"

namespace fnexec::cluster {

inline constexpr const char* kFunctionsBucket = "fnexec-functions";

class FunctionRegistry {
 public:
  // on_change: called after each change was applied (the async consumers follow the registry).
  static Result<std::unique_ptr<FunctionRegistry>> open(Connection& conn, Local& local,
                                                         std::function<void(const std::string&)> on_change);
  ~FunctionRegistry();

  Result<> put(const std::string& name, const std::string& spec_json);
  Result<> remove(const std::string& name);
  // The bucket's current names (for GET /v1/cluster).
  Result<std::vector<std::string>> names();

 private:
  FunctionRegistry(KvBucket bucket, Local& local) : bucket_(std::move(bucket)), local_(local) {}
  void watch(std::stop_token stop);

  KvBucket bucket_;
  Local& local_;
  std::function<void(const std::string&)> on_change_;
  std::optional<KvWatcher> watcher_;
  std::jthread thread_;
};

}  // namespace fnexec::cluster
