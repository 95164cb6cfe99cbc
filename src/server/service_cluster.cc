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

DeadLetter local_form(cluster::DeadLetterEntry e) {
  DeadLetter d;
  d.seq = static_cast<int64_t>(e.seq);
  d.id = std::move(e.id);
  d.function = std::move(e.function);
  d.event = std::move(e.event);
  d.attempts = static_cast<uint32_t>(e.attempts);
  d.outcome = std::move(e.outcome);
  d.error = std::move(e.error);
  d.error_type = std::move(e.error_type);
  d.queued_ms = e.queued_ms;
  d.time_ms = e.time_ms;
  d.replayed_as = std::move(e.replayed_as);
  return d;
}

std::unexpected<Error> cluster_down() {
  return fail(ErrorKind::unavailable, "reach the cluster", {},
              "the NATS connection is down (the daemon reconnects by itself); local sync invocations still work");
}

}  // namespace

// The local record (delivery, next_attempt_ms and dead_letter included) and the node that ran it.
std::string cluster_record(const InvocationRow& row, const std::string& node) {
  std::string json = record_json(row);
  json.pop_back();
  if (!node.empty()) json += ",\"node\":" + json_string(node);
  return json + "}";
}

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
  if (spec && pools_) res = pools_->invoke(d.function, d.event, d.context);
  pool::FunctionSpec named;
  named.name = d.function;
  InvocationEnd end = end_async_delivery(d.id, spec ? *spec : named, std::move(res), retention);
  out.success = end.outcome == to_string(Outcome::success);
  out.outcome = end.outcome;
  out.error = end.error;
  out.error_type = end.sandbox.error_type;
  bool last = out.success || d.delivery >= d.max_deliveries;

  InvocationRow row = finished_row(end);
  row.function = d.function;
  row.async = true;
  row.status = last ? "done" : "queued";
  row.outcome = last ? end.outcome : "";
  row.queued_ms = d.queued_ms;
  row.started_ms = started;
  auto* node = cluster_.load();
  // A failed delivery with retries left: queued again for delivery N+1 after the backoff.
  row.delivery = static_cast<uint32_t>(last ? d.delivery : d.delivery + 1);
  if (!last) row.next_attempt_ms = now_ms() + d.retry_delay_ms;
  row.dead_letter = last && !out.success;
  out.record_json = cluster_record(row, node ? node->name() : "");
  // This node's own list (GET /v1/invocations) has it too, group-committed after the reply path.
  State::ClusterDelivery local{d.function, d.queued_ms, started, static_cast<uint32_t>(d.delivery), std::nullopt,
                               row.dead_letter};
  if (!last) local.next = std::pair{row.delivery, *row.next_attempt_ms};
  records_.submit([local, end = std::move(end), retention](State& s) {
    return s.record_cluster_delivery(local, end, retention);
  });
  return out;
}

std::string Service::lost_delivery_record(const cluster::Delivery& d, const std::string& error) {
  InvocationEnd end;
  end.id = d.id;
  end.outcome = std::string(to_string(Outcome::lost));
  end.finished_ms = now_ms();
  end.error = error;
  InvocationRow row = finished_row(end);
  row.function = d.function;
  row.async = true;
  row.queued_ms = d.queued_ms;
  row.delivery = static_cast<uint32_t>(d.max_deliveries);
  row.dead_letter = true;
  return cluster_record(row, "");  // no node finished it
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

void Service::enqueue_cluster(const std::string& name, std::string id, bool client_id, std::string event,
                              std::function<void(Result<std::pair<std::string, bool>>)> done,
                              invoke::EventContext context) {
  // On the admin executor: a publish waits for JetStream's ack.
  run_job(admin_, [this, name, id = std::move(id), client_id, event = std::move(event), done = std::move(done),
                   context = std::move(context)] {
    auto* node = cluster_.load();
    if (!node || !node->connected()) return done(cluster_down());
    // A client's retry (same id) of an enqueue whose event is in the stream (or has a record)
    // enqueues nothing; one whose event is in neither publishes it again, and JetStream keeps the
    // first if it was stored after all. A fresh id of ours is in neither.
    if (client_id) {
      auto enqueued = node->queue().enqueued(id);
      if (!enqueued) return done(std::unexpected(enqueued.error()));
      if (*enqueued) return done(std::pair{id, false});
    }
    auto fresh = node->queue().enqueue(name, id, event, context);
    if (!fresh) return done(std::unexpected(fresh.error()));
    done(std::pair{id, *fresh});
  });
}

void Service::cluster_invocation(const std::string& id, std::optional<std::string> local, Respond respond) {
  run_job(admin_, [this, id, local = std::move(local), respond = std::move(respond)] {
    auto* node = cluster_.load();
    if (local && (!node || !node->connected())) return respond(json_reply(200, std::move(*local)));
    if (!node || !node->connected())
      return respond(error_reply(404, fmt::format("no invocation with id {} on this node ({})", id,
                                                  cluster_down().error().detail)));
    auto r = node->queue().lookup(id);
    if (!r) return respond(local ? json_reply(200, std::move(*local)) : error_reply(503, r.error().message()));
    if (r->record) return respond(json_reply(200, std::move(*r->record)));
    if (r->queued) {
      // The record it had before any node ran it, from the event in the stream.
      InvocationRow row;
      row.id = id;
      row.function = r->queued->function;
      row.async = true;
      row.status = "queued";
      row.queued_ms = r->queued->queued_ms;
      return respond(json_reply(200, cluster_record(row, "")));
    }
    if (local) return respond(json_reply(200, std::move(*local)));
    respond(error_reply(404, fmt::format("no invocation with id {}", id)));
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
    // The same query and reply as the local list (Service::list_dead_letters).
    std::string function = query.contains("function") ? query.at("function") : "";
    if (!function.empty())
      if (auto ok = validate_function_name(function); !ok) return respond(error_reply(400, ok.error().message()));
    auto after = query_uint(query, "after", 0, INT64_MAX);
    auto limit = query_uint(query, "limit", 50, 10000);
    for (const auto* r : {&after, &limit})
      if (!*r) return respond(error_reply(400, r->error().message()));
    auto entries = node->queue().dead_letters().list(function, *after, *limit);
    if (!entries) return respond(error_reply(503, entries.error().message()));
    JsonWriter w;
    w.begin_object().key("dead_letters").begin_array();
    uint64_t next = *after;
    for (auto& e : *entries) {
      next = std::max(next, e.seq);
      w.raw(dead_letter_json(local_form(std::move(e))));
    }
    w.end_array().field("next", next).end_object();
    respond(json_reply(200, w.take()));
  });
}

void Service::cluster_dead_letter(Route route, const std::string& id, Respond respond) {
  if (route == Route::dead_letter_replay && stopping()) return respond(error_reply(503, "the daemon is shutting down"));
  run_job(admin_, [this, route, id, respond = std::move(respond)] {
    auto* node = cluster_.load();
    if (!node || !node->connected()) return respond(error_reply(503, cluster_down().error().message()));
    auto& dead = node->queue().dead_letters();
    auto not_found = [&] { respond(error_reply(404, fmt::format("no dead letter with id {}", id))); };
    if (route == Route::dead_letter_delete) {
      auto removed = dead.remove(id);
      if (!removed) return respond(error_reply(503, removed.error().message()));
      if (!*removed) return not_found();
      spdlog::info("cluster: dead letter={} removed", id);
      return respond(Reply{204, "application/json", {}, {}});
    }
    auto entry = dead.find(id);
    if (!entry) return respond(error_reply(503, entry.error().message()));
    if (!*entry) return not_found();
    if (route == Route::dead_letter_get) return respond(json_reply(200, dead_letter_json(local_form(**entry))));
    // Replay: the event goes into the invocation stream again, with its caller's context, as a new
    // invocation (delivery 1).
    const auto& e = **entry;
    if (!e.replayed_as.empty())
      return respond(error_reply(409, fmt::format("dead letter {} was replayed already as invocation {}", id,
                                                  e.replayed_as)));
    if (!function(e.function))
      return respond(error_reply(
          409, fmt::format("function {} of dead letter {} does not exist any more; create it again to replay",
                           e.function, id)));
    auto new_id = new_invocation_id();
    if (auto r = node->queue().enqueue(e.function, new_id, e.event.value_or(""), e.context); !r)
      return respond(error_reply(503, r.error().message()));
    // The event is queued again; a failed note only leaves the entry without its replayed_as.
    if (auto r = dead.mark_replayed(e, new_id); !r)
      spdlog::error("cluster: dead letter={} replayed as invocation={}, not noted: {}", id, new_id, r.error().message());
    spdlog::info("cluster: dead letter={} function={} replayed as invocation={}", id, e.function, new_id);
    Reply reply = json_reply(202, fmt::format(R"({{"id":"{}","status":"queued"}})", new_id));
    reply.headers.emplace_back("Fnexec-Invocation-Id", new_id);
    reply.headers.emplace_back("Location", "/v1/invocations/" + new_id);
    respond(std::move(reply));
  });
}

}  // namespace fnexec::server
