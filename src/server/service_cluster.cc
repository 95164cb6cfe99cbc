// The Service in cluster mode (cluster_nats, docs/ARCHITECTURE.md "Cluster"): what a cluster::Node
// asks of this daemon (cluster::Local) and the routes that answer from the cluster.
#include <fmt/format.h>

#include "cluster/node.h"
#include "server/json.h"
#include "server/service.h"
#include "server/service_records.h"
#include "util/log.h"

namespace fnexec::server {

namespace {

Reply json_reply(unsigned status, std::string body) {
  return Reply{status, "application/json", std::move(body), {}};
}
Reply error_reply(unsigned status, std::string_view message) {
  return json_reply(status, json_error(message));
}

// The record with the cluster's fields: which delivery, and on which node it ran.
// The local record (delivery, next_attempt_ms and dead_letter included) and the node that ran it.
std::string cluster_record(const InvocationRow& row, const std::string& node) {
  std::string json = record_json(row);
  json.pop_back();
  if (!node.empty()) json += ",\"node\":" + json_string(node);
  return json + "}";
}

std::unexpected<Error> cluster_down() {
  return fail(ErrorKind::unavailable, "reach the cluster", {},
              "the NATS connection is down (the daemon reconnects by itself); local sync invocations still work");
}

}  // namespace

void Service::attach_cluster(cluster::Node* node) {
  cluster_ = node;
}

void Service::apply_cluster_function(const std::string& name, const std::string& spec_json) {
  auto stored = state_.get_function(name);
  if (stored && *stored && (*stored)->spec_json == spec_json) return;  // this node wrote it, or has it already
  FunctionLimits function_limits;
  {
    std::lock_guard lock(mu_);
    function_limits = limits_.function_limits;
  }
  auto spec = parse_function_spec(name, spec_json, {}, function_limits);
  if (!spec) {
    spdlog::error("cluster: function={} from the registry refused: {}", name, spec.error().message());
    return;
  }
  FunctionEntry entry{*spec, {}};
  if (!pools_) {
    entry.error = "warm pools are not running";
  } else if (auto r = configure_pool(*spec); !r) {
    // Kept with its error, as at start: GET shows why, invocations get 503 until a fixed PUT.
    entry.error = r.error().message();
    spdlog::error("cluster: function={} pool not configured: {}", name, entry.error);
  }
  if (auto r = state_.put_function(name, spec_json, now_ms()); !r)
    spdlog::error("cluster: function={} not stored: {}", name, r.error().message());
  {
    std::lock_guard lock(mu_);
    functions_[name] = std::move(entry);
  }
  spdlog::info("cluster: function={} applied from the cluster registry", name);
}

void Service::remove_cluster_function(const std::string& name) {
  auto removed = state_.delete_function(name);
  if (!removed) spdlog::error("cluster: function={} not removed: {}", name, removed.error().message());
  bool had = false;
  {
    std::lock_guard lock(mu_);
    had = functions_.erase(name) > 0;
  }
  if (!had) return;
  if (pools_) pools_->remove(name);
  if (store_)
    if (auto r = store_->unpin("function " + name); !r) spdlog::error("function={} {}", name, r.error().message());
  spdlog::info("cluster: function={} removed (deleted in the cluster registry)", name);
}

std::vector<std::string> Service::local_function_names() {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, _] : functions_) out.push_back(name);
  return out;
}

std::optional<pool::FunctionSpec> Service::function_spec(const std::string& name) {
  std::lock_guard lock(mu_);
  auto f = functions_.find(name);
  if (f == functions_.end()) return std::nullopt;
  return f->second.spec;
}

uint32_t Service::free_async_slots(const std::string& name) {
  std::lock_guard lock(mu_);
  auto f = functions_.find(name);
  if (stopping_ || !pools_ || f == functions_.end() || !f->second.error.empty()) return 0;
  auto it = in_flight_.find(name);
  uint32_t used = it == in_flight_.end() ? 0 : it->second;
  uint32_t function_free = f->second.spec.max_concurrency > used ? f->second.spec.max_concurrency - used : 0;
  uint32_t daemon_free = limits_.max_in_flight > in_flight_total_ ? limits_.max_in_flight - in_flight_total_ : 0;
  return std::min(function_free, daemon_free);
}

void Service::run_delivery(cluster::Delivery d, std::function<void(cluster::DeliveryResult)> done) {
  {
    // The fetch asked for at most the free slots; a sync invocation admitted meanwhile may make this
    // one over max_concurrency for its run, which is the price of not holding slots while fetching.
    std::lock_guard lock(mu_);
    ++in_flight_[d.function];
    ++in_flight_total_;
  }
  run_job(invocations_, [this, d = std::move(d), done = std::move(done)] {
    done(run_cluster_delivery(d));
    release(d.function);
    if (auto* node = cluster_.load()) node->queue().wake();
  });
}

cluster::DeliveryResult Service::run_cluster_delivery(const cluster::Delivery& d) {
  cluster::DeliveryResult out;
  auto spec = function_spec(d.function);
  Retention retention;
  {
    std::lock_guard lock(mu_);
    retention = limits_.retention;
  }
  int64_t started = now_ms();
  Result<pool::InvocationResult> res = fail(ErrorKind::not_found, "run async event", d.function,
                                            "the function was deleted on this node");
  if (spec && pools_) res = pools_->invoke(d.function, d.event);
  pool::FunctionSpec named;
  named.name = d.function;
  InvocationEnd end = end_async_delivery(d.id, spec ? *spec : named, std::move(res), retention);
  out.success = end.outcome == to_string(Outcome::success);
  out.outcome = end.outcome;
  out.error = end.error;
  out.error_type = end.sandbox.error_type;
  bool last = out.success || d.delivery >= d.max_deliveries;

  InvocationRow row;
  row.id = d.id;
  row.function = d.function;
  row.async = true;
  row.status = last ? "done" : "queued";
  row.start = end.start;
  row.outcome = last ? end.outcome : "";
  row.queued_ms = d.queued_ms;
  row.started_ms = started;
  row.finished_ms = end.finished_ms;
  row.wall_us = end.wall_us;
  row.cpu_user_us = end.cpu_user_us;
  row.cpu_system_us = end.cpu_system_us;
  row.memory_peak_bytes = end.memory_peak_bytes;
  row.billed_ms = end.billed_ms;
  row.exit_code = end.exit_code;
  row.signal = end.signal;
  row.oom_killed = end.oom_killed;
  row.timed_out = end.timed_out;
  row.output_too_large = end.output_too_large;
  row.error = end.error;
  row.output = std::move(end.output);
  row.sandbox = end.sandbox;
  auto* node = cluster_.load();
  // A failed delivery with retries left: queued again for delivery N+1 after the backoff.
  row.delivery = static_cast<uint32_t>(last ? d.delivery : d.delivery + 1);
  if (!last) row.next_attempt_ms = now_ms() + d.retry_delay_ms;
  row.dead_letter = last && !out.success;
  out.record_json = cluster_record(row, node ? node->name() : "");
  return out;
}

std::string Service::node_status_json() {
  auto stats = pools_ ? pools_->stats() : std::vector<pool::PoolStats>{};
  std::lock_guard lock(mu_);
  JsonWriter w;
  w.begin_object().field("in_flight", in_flight_total_).field("max_in_flight", limits_.max_in_flight);
  w.key("functions").begin_object();
  for (const auto& [name, entry] : functions_) w.key(name).raw(pool_json(name, stats));
  w.end_object().end_object();
  return w.take();
}

void Service::enqueue_cluster(const std::string& name, std::string id, std::string event,
                              std::function<void(Result<std::pair<std::string, bool>>)> done) {
  // On the admin executor: a publish waits for JetStream's ack.
  run_job(admin_, [this, name, id = std::move(id), event = std::move(event), done = std::move(done)] {
    auto* node = cluster_.load();
    if (!node || !node->connected()) return done(cluster_down());
    // A retried request (same id) finds its record and enqueues nothing.
    auto existing = node->queue().result(id);
    if (!existing) return done(std::unexpected(existing.error()));
    if (*existing) return done(std::pair{id, false});
    InvocationRow row;
    row.id = id;
    row.function = name;
    row.async = true;
    row.status = "queued";
    row.queued_ms = now_ms();
    auto fresh = node->queue().enqueue(name, id, event, cluster_record(row, ""));
    if (!fresh) return done(std::unexpected(fresh.error()));
    done(std::pair{id, *fresh});
  });
}

void Service::cluster_invocation(const std::string& id, Respond respond) {
  run_job(admin_, [this, id, respond = std::move(respond)] {
    auto* node = cluster_.load();
    if (!node || !node->connected())
      return respond(error_reply(404, fmt::format("no invocation with id {} on this node ({})", id,
                                                  cluster_down().error().detail)));
    auto r = node->queue().result(id);
    if (!r) return respond(error_reply(503, r.error().message()));
    if (!*r) return respond(error_reply(404, fmt::format("no invocation with id {}", id)));
    respond(json_reply(200, std::move(**r)));
  });
}

void Service::cluster_route(const Request& request, Respond respond) {
  auto route = request.match.route;
  auto query = request.match.query;
  run_job(admin_, [this, route, query = std::move(query), respond = std::move(respond)] {
    auto* node = cluster_.load();
    if (!node)
      return respond(error_reply(404, route == Route::cluster_status
                                          ? "this daemon is not in a cluster (set cluster_nats in fnexec.conf)"
                                          : "no dead letters here: set cluster_nats in fnexec.conf"));
    if (!node->connected()) return respond(error_reply(503, cluster_down().error().message()));
    if (route == Route::cluster_status) {
      auto r = node->status_json();
      return respond(r ? json_reply(200, std::move(*r)) : error_reply(503, r.error().message()));
    }
    std::string function = query.contains("function") ? query.at("function") : "";
    auto limit = query_uint(query, "limit", 100, 10000);
    if (!limit) return respond(error_reply(400, limit.error().message()));
    auto r = node->queue().dead_letters_json(function, *limit);
    respond(r ? json_reply(200, std::move(*r)) : error_reply(503, r.error().message()));
  });
}

}  // namespace fnexec::server
