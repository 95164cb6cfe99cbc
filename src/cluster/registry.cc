#include "cluster/registry.h"

#include "util/log.h"

namespace fnexec::cluster {

Result<std::unique_ptr<FunctionRegistry>> FunctionRegistry::open(Connection& conn, Local& local,
                                                                 std::function<void(const std::string&)> on_change) {
  auto bucket = FNEXEC_TRY(KvBucket::open(conn, kFunctionsBucket, std::chrono::milliseconds(0)));
  std::unique_ptr<FunctionRegistry> r(new FunctionRegistry(std::move(bucket), local));
  r->on_change_ = std::move(on_change);
  r->watcher_.emplace(FNEXEC_TRY(KvWatcher::watch_all(r->bucket_)));
  r->thread_ = std::jthread([p = r.get()](std::stop_token st) { p->watch(st); });
  return r;
}

FunctionRegistry::~FunctionRegistry() {
  thread_.request_stop();
  if (watcher_) watcher_->stop();
  if (thread_.joinable()) thread_.join();
}

Result<> FunctionRegistry::put(const std::string& name, const std::string& spec_json) {
  FNEXEC_TRY(bucket_.put(name, spec_json));
  return {};
}

Result<> FunctionRegistry::remove(const std::string& name) {
  return bucket_.remove(name);
}

Result<std::vector<std::string>> FunctionRegistry::names() {
  return bucket_.keys();
}

void FunctionRegistry::watch(std::stop_token stop) {
  std::set<std::string> initial;
  bool caught_up = false;
  while (!stop.stop_requested()) {
    auto next = watcher_->next(std::chrono::milliseconds(1000));
    if (!next) {
      if (next.error().kind != ErrorKind::unavailable && !stop.stop_requested())
        spdlog::warn("cluster: function registry watch: {}", next.error().message());
      continue;  // timeouts, and nats.c resumes the watch after a reconnect
    }
    if (!*next) {
      if (caught_up) continue;
      caught_up = true;
      // Functions this node has that the cluster deleted while it was down go too: the bucket wins.
      {
        for (const auto& name : local_.local_function_names())
          if (!initial.contains(name)) {
            spdlog::info("cluster: function={} is not in the cluster registry any more; removing it", name);
            local_.remove_cluster_function(name);
            on_change_(name);
          }
        spdlog::info("cluster: function registry caught up ({} functions)", initial.size());
      }
      continue;
    }
    auto entry = std::move(**next);
    if (!caught_up && !entry.deleted) initial.insert(entry.key);
    if (!caught_up && entry.deleted) initial.erase(entry.key);
    // Applied here, in order, on this thread of ours (not nats.c's): configuring a pool may pull an
    // image, and two changes of one function must not race on two admin threads.
    if (entry.deleted)
      local_.remove_cluster_function(entry.key);
    else
      local_.apply_cluster_function(entry.key, entry.value);
    on_change_(entry.key);
  }
}

}  // namespace fnexec::cluster
