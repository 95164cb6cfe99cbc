#include "server/service.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <chrono>
#include <filesystem>

#include "image/store.h"
#include "sandbox/devices.h"
#include "registry/pull.h"
#include "registry/reference.h"
#include "server/pulls.h"
#include "server/json.h"
#include "server/lambda_api.h"
#include "cluster/node.h"
#include "util/log.h"

namespace fnexec::server {

std::string new_invocation_id() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string id;
  for (unsigned char b : bytes) id += fmt::format("{:02x}", b);
  return id;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

Reply json_reply(unsigned status, std::string body) {
  return Reply{status, "application/json", std::move(body), {}};
}
Reply error_reply(unsigned status, std::string_view message) {
  return json_reply(status, json_error(message));
}
Reply error_reply(const Error& e) {
  return error_reply(http_status(e), e.message());
}

// JSON strings carry only text: bytes that are not UTF-8 go as base64, so every byte survives.
void bytes_field(JsonWriter& w, std::string_view name, const std::string& bytes) {
  bool text = is_valid_utf8(bytes);
  w.field(name, text ? bytes : base64_encode(bytes));
  w.field(fmt::format("{}_encoding", name), text ? "utf-8" : "base64");
}

std::string invocation_json(const InvocationRow& r, const std::optional<std::string>& log) {
  JsonWriter w;
  w.begin_object().field("id", r.id).field("function", r.function).field("mode", r.async ? "async" : "sync");
  w.field("status", r.status);
  w.key("start");
  r.start.empty() ? w.null() : w.value(r.start);
  w.key("outcome");
  r.outcome.empty() ? w.null() : w.value(r.outcome);
  w.field("queued_ms", r.queued_ms).field("started_ms", r.started_ms).field("finished_ms", r.finished_ms);
  w.field("wall_us", r.wall_us).field("cpu_user_us", r.cpu_user_us).field("cpu_system_us", r.cpu_system_us);
  w.field("memory_peak_bytes", r.memory_peak_bytes).field("billed_ms", r.billed_ms);
  w.field("exit_code", r.exit_code).field("signal", r.signal);
  w.field("oom_killed", r.oom_killed)
      .field("timed_out", r.timed_out)
      .field("output_too_large", r.output_too_large);
  w.key("error");
  r.error.empty() ? w.null() : w.value(r.error);
  if (r.output) bytes_field(w, "output", *r.output);
  if (log) w.field("stderr_tail", *log);
  const auto& f = r.sandbox;
  w.key("lifecycle");
  f.lifecycle.empty() ? w.null() : w.value(f.lifecycle);
  w.key("sandbox_id");
  f.sandbox_id.empty() ? w.null() : w.value(f.sandbox_id);
  w.field("sandbox_events", f.sandbox_events).field("init_us", f.init_us);
  w.key("retired");
  f.retired.empty() ? w.null() : w.value(f.retired);
  w.key("error_type");
  f.error_type.empty() ? w.null() : w.value(f.error_type);
  w.key("error_body");
  f.error_body ? w.raw(json_or_string(*f.error_body)) : w.null();
  if (f.network) {
    w.key("network").begin_object().field("bytes_out", f.network->bytes_out);
    w.field("packets_out", f.network->packets_out).field("bytes_in", f.network->bytes_in);
    w.field("packets_in", f.network->packets_in).end_object();
  }
  w.field("delivery", r.delivery).field("next_attempt_ms", r.next_attempt_ms).field("dead_letter", r.dead_letter);
  w.end_object();
  return w.take();
}

}  // namespace

std::string dead_letter_json(const DeadLetter& d) {
  JsonWriter w;
  w.begin_object().field("seq", d.seq).field("id", d.id).field("function", d.function);
  w.field("invocation_id", d.id).field("attempts", d.attempts).field("outcome", d.outcome);
  w.field("error", d.error).key("error_type");
  d.error_type.empty() ? w.null() : w.value(d.error_type);
  w.field("queued_ms", d.queued_ms).field("time_ms", d.time_ms).key("replayed_as");
  d.replayed_as.empty() ? w.null() : w.value(d.replayed_as);
  if (d.event) bytes_field(w, "event", *d.event);
  w.end_object();
  return w.take();
}

namespace {

Reply queued_reply(const std::string& id) {
  Reply reply = json_reply(202, fmt::format(R"({{"id":"{}","status":"queued"}})", id));
  reply.headers.emplace_back("Fnexec-Invocation-Id", id);
  reply.headers.emplace_back("Location", "/v1/invocations/" + id);
  return reply;
}

// The record of a finished invocation, from what the pool returned.
InvocationEnd end_of(const std::string& id, const pool::InvocationResult& res, Outcome outcome) {
  const auto& rec = res.record;
  InvocationEnd e;
  e.id = id;
  e.start = std::string(pool::to_string(res.start));
  e.outcome = std::string(to_string(outcome));
  e.finished_ms = now_ms();
  e.wall_us = rec.wall_us;
  e.cpu_user_us = rec.cpu_user_us;
  e.cpu_system_us = rec.cpu_system_us;
  e.memory_peak_bytes = rec.memory_peak_bytes;
  e.billed_ms = billed_ms(rec.wall_us);
  e.exit_code = rec.exit_code;
  e.signal = rec.signal;
  e.oom_killed = rec.oom_killed;
  e.timed_out = rec.timed_out;
  e.output_too_large = res.output_too_large;
  if (rec.setup_error) e.error = rec.setup_error->message();
  e.sandbox.lifecycle = std::string(pool::to_string(res.lifecycle));
  e.sandbox.sandbox_id = res.sandbox_id;
  e.sandbox.sandbox_events = res.sandbox_events;
  e.sandbox.init_us = res.init_us;
  if (rec.network)
    e.sandbox.network = SandboxFacts::Traffic{rec.network->bytes_out, rec.network->packets_out,
                                              rec.network->bytes_in, rec.network->packets_in};
  e.sandbox.retired = res.retired;
  e.sandbox.error_type = res.error_type;
  e.sandbox.error_body = res.error_body;
  return e;
}

std::string failure_message(const pool::FunctionSpec& spec, const pool::InvocationResult& res,
                            Outcome outcome) {
  const auto& rec = res.record;
  switch (outcome) {
    case Outcome::timeout:
      return fmt::format("function {} timed out after {} ms", spec.name, spec.timeout.count());
    case Outcome::oom:
      return fmt::format("function {} was killed by the OOM killer (memory_mb {})", spec.name,
                         spec.limits.memory_bytes.value_or(0) >> 20);
    case Outcome::output_too_large:
      return fmt::format("function {} wrote more than max_output_bytes ({}) to stdout", spec.name,
                         spec.max_output_bytes);
    case Outcome::setup_error:
      return rec.setup_error ? rec.setup_error->message() : "sandbox setup failed";
    default:
      break;
  }
  std::string how = rec.signal ? fmt::format("was killed by signal {}", *rec.signal)
                               : fmt::format("exited with code {}", rec.exit_code);
  if (res.error_type.empty()) return fmt::format("function {} {}", spec.name, how);
  if (res.error_type == "Function.Error")
    return fmt::format("function {} answered the event with an error (Function.Error; see error_body)",
                       spec.name);
  if (res.error_type == "Runtime.InitError")
    return fmt::format("function {} failed its init (Runtime.InitError){}", spec.name,
                       res.error_body ? "; see error_body" : "");
  if (res.error_type == "Runtime.ProtocolError")
    return fmt::format("function {} broke the {} protocol (Runtime.ProtocolError); see man 7 "
                       "fnexec-protocol",
                       spec.name, spec.protocol == pool::Protocol::lambda ? "Lambda Runtime API" : "fnexec/1");
  if (res.error_type == "Runtime.ExitError")
    return fmt::format("function {} {} while handling the event (Runtime.ExitError)", spec.name, how);
  return fmt::format("function {} failed: {}", spec.name, res.error_type);
}

}  // namespace

// The record's JSON, for the cluster's async path (service_cluster.cc, service_records.h).
std::string record_json(const InvocationRow& row) {
  return invocation_json(row, std::nullopt);
}

InvocationRow finished_row(const InvocationEnd& end) {
  InvocationRow row;
  row.id = end.id;
  row.status = "done";
  row.start = end.start;
  row.outcome = end.outcome;
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
  row.output = end.output;
  row.sandbox = end.sandbox;
  return row;
}

InvocationRow sync_record(const SyncRun& run) {
  InvocationEnd end;
  if (run.result) {
    end = end_of(run.id, *run.result, run.outcome);
  } else {
    end.id = run.id;
    end.outcome = std::string(to_string(run.outcome));
  }
  end.error = run.error;
  end.finished_ms = run.finished_ms;
  InvocationRow row = finished_row(end);
  row.function = run.spec.name;
  row.queued_ms = run.started_ms;
  row.started_ms = run.started_ms;
  if (row.sandbox.lifecycle.empty()) row.sandbox.lifecycle = std::string(pool::to_string(run.spec.lifecycle));
  return row;
}

Service::Service(State& state, pool::PoolSet* pools, image::Store* store, std::string cgroup_mode,
                 Executor invocations, Executor admin, ServiceLimits limits)
    : state_(state),
      pools_(pools),
      store_(store),
      cgroup_mode_(std::move(cgroup_mode)),
      invocations_(std::move(invocations)),
      admin_(std::move(admin)),
      records_(state),
      limits_(limits),
      lambda_(std::make_unique<LambdaApi>(*this)),
      pulls_(store ? std::make_unique<Pulls>(*store, &state) : nullptr) {}

Service::~Service() = default;

namespace {

std::string pin_holder(const std::string& function) {
  return "function " + function;
}

}  // namespace

Result<pool::FunctionSpec> Service::isolate(const pool::FunctionSpec& spec) {
  IsolationSettings isolation;
  {
    std::lock_guard lock(mu_);
    isolation = limits_.isolation;
  }
  pool::FunctionSpec out = spec;
  FNEXEC_TRY(check_volumes(spec.name, out.volumes, isolation.volume_allow));
  FNEXEC_TRY(check_devices(spec.name, out.devices, isolation.device_allow));
  for (const auto& d : out.devices) out.limits.devices.push_back(sandbox::device_rule(d));
  if (!spec.userns) {
    FNEXEC_TRY(state_.release_id_range(spec.name));
    return out;
  }
  auto ids = FNEXEC_TRY(subordinate_ids(isolation));
  out.id_range = FNEXEC_TRY(state_.id_range_for(spec.name, ids, isolation.ids_per_function, [this](uid_t first) {
    return pools_ && pools_->id_range_in_use(first);
  }));
  return out;
}

Result<> Service::configure_pool(const pool::FunctionSpec& given) {
  // Ids and volume sources are settled first: a function the config does not allow never pins an image.
  auto isolated = isolate(given);
  if (!isolated) return std::unexpected(isolated.error().context("configure function " + given.name));
  const pool::FunctionSpec& spec = *isolated;
  if (!store_) return pools_->configure(spec);
  std::optional<image::Pin> previous;
  for (auto& p : FNEXEC_TRY(store_->pins()))
    if (p.holder == pin_holder(spec.name)) previous = std::move(p);
  // A docker:// image is pulled when the store does not have it yet (as podman's default policy);
  // the function is then pinned to what the pull recorded.
  std::string reference = spec.image;
  if (registry::has_docker_transport(spec.image)) {
    auto parsed = registry::parse_reference(spec.image);
    if (!parsed) return std::unexpected(parsed.error().context("configure function " + spec.name));
    reference = parsed->digest.empty() ? parsed->store_name() : parsed->digest;
    if (!store_->resolve(reference)) {
      registry::PullRequest pull;
      pull.reference = spec.image;
      {
        std::lock_guard lock(mu_);
        pull.auth_file = limits_.registry_auth_file;
        pull.certs_root = limits_.registry_certs_dir;
      }
      // Through pulls_, so a POST /v1/images/pull of the same reference is joined, not repeated.
      auto ticket = pulls_->submit(std::move(pull));
      if (!ticket) return std::unexpected(ticket.error().context("configure function " + spec.name));
      if (ticket->joined) spdlog::info("function={} joins pull id={} of {}", spec.name, ticket->id, spec.image);
      auto pulled = pulls_->run(ticket->id, true);
      if (!pulled) return std::unexpected(pulled.error().context("configure function " + spec.name));
      spdlog::info("function={} pulled {} digest={}", spec.name, spec.image, pulled->manifest_digest);
    }
  }
  auto img = store_->pin(pin_holder(spec.name), reference);
  if (!img) return std::unexpected(img.error().context("configure function " + spec.name));
  // The pool gets the digest, not the name: what it runs is what is pinned, even if the name
  // is imported again meanwhile.
  pool::FunctionSpec pinned = spec;
  pinned.image = img->manifest_digest;
  auto configured = pools_->configure(pinned);
  if (!configured) {
    auto restored = previous ? store_->repin(*previous) : store_->unpin(pin_holder(spec.name));
    if (!restored) spdlog::error("function={} {}", spec.name, restored.error().message());
  }
  return configured;
}

Result<> Service::start(std::vector<QueuedInvocation> interrupted) {
  auto stored = FNEXEC_TRY(state_.list_functions());
  for (const auto& f : stored) {
    // Stored documents meet today's limits too: a lowered limit is logged, never silently ignored.
    auto spec = parse_function_spec(f.name, f.spec_json, {}, limits_.function_limits);
    if (!spec) {
      spdlog::error("function={} stored definition unreadable: {}", f.name, spec.error().message());
      continue;
    }
    // Said at every start: functions stored before per-function user namespaces stay host root
    // (state migration 7) until their owner opts in.
    if (!spec->userns)
      spdlog::warn("function={} event=host_root: runs as the host's root (userns false); PUT it with "
                   "\"userns\": true to give it its own user namespace",
                   f.name);
    FunctionEntry entry{std::move(*spec), {}};
    if (!pools_) {
      entry.error = "warm pools are not running";
    } else if (auto r = configure_pool(entry.spec); !r) {
      entry.error = r.error().message();
      spdlog::error("function={} pool not configured: {}", f.name, entry.error);
    }
    functions_.emplace(f.name, std::move(entry));
  }
  // Pins of functions deleted while the daemon was not running (or by an older fnexec) go; a stored
  // function whose pool failed keeps its pin, so what it used stays.
  if (store_) {
    for (const auto& p : FNEXEC_TRY(store_->pins())) {
      bool of_function = p.holder.starts_with(pin_holder(""));
      if (of_function && !functions_.contains(p.holder.substr(pin_holder("").size())))
        FNEXEC_TRY(store_->unpin(p.holder));
    }
  }
  // Async invocations the previous instance was running: that delivery failed (at-least-once).
  for (auto& q : interrupted) {
    InvocationEnd end;
    end.id = q.id;
    end.outcome = std::string(to_string(Outcome::lost));
    end.finished_ms = now_ms();
    end.error = fmt::format("delivery {}: the daemon stopped while this invocation ran", q.delivery);
    auto f = functions_.find(q.function);
    if (auto r = f == functions_.end() ? state_.finish(end, limits_.retention)
                                       : settle_failed_delivery(q, f->second.spec, end, limits_.retention);
        !r)
      return std::unexpected(r.error().context("recover invocation " + q.id));
  }
  auto queued = FNEXEC_TRY(state_.queued());
  std::lock_guard lock(mu_);
  pending_.assign(queued.begin(), queued.end());
  return {};
}

bool Service::pools_warm() const {
  if (!pools_) return true;
  auto stats = pools_->stats();
  std::lock_guard lock(mu_);
  for (const auto& [name, entry] : functions_) {
    if (!entry.error.empty() || entry.spec.min_warm == 0) continue;
    auto it = std::find_if(stats.begin(), stats.end(),
                           [&](const pool::PoolStats& s) { return s.function == name; });
    if (it == stats.end() || it->warm < entry.spec.min_warm) return false;
  }
  return true;
}

void Service::set_limits(const ServiceLimits& limits) {
  std::lock_guard lock(mu_);
  limits_ = limits;
}

void Service::begin_shutdown() {
  std::lock_guard lock(mu_);
  stopping_ = true;
}

void Service::run_job(Executor& executor, std::function<void()> job) {
  ++busy_;
  executor([this, job = std::move(job)] {
    job();
    --busy_;
  });
}

void Service::handle(Request request, Respond respond) {
  const auto& m = request.match;
  if (m.lambda) return lambda_->handle(std::move(request), std::move(respond));  // its errors too
  switch (m.route) {
    case Route::healthz: {
      std::lock_guard lock(mu_);
      return respond(stopping_ ? json_reply(503, R"({"status":"stopping"})")
                               : json_reply(200, R"({"status":"ok"})"));
    }
    case Route::metrics: {
      auto snap = metrics_.snapshot();
      if (pools_) snap.pools = pools_->stats();
      snap.cgroup_mode = cgroup_mode_;
      {
        std::lock_guard lock(mu_);
        snap.async_queued = pending_.size();
        for (const auto& [name, entry] : functions_)
          snap.lifecycles.emplace(name, pool::to_string(entry.spec.lifecycle));
      }
      return respond(Reply{200, "text/plain; version=0.0.4; charset=utf-8", format_prometheus(snap), {}});
    }
    case Route::functions_list:
      return list_functions(respond);
    case Route::function_get:
      return get_function(m.param, respond);
    case Route::function_put:
      return put_function(request, std::move(respond));
    case Route::function_delete:
      return delete_function(m.param, std::move(respond));
    case Route::function_invoke:
      return invoke(request, std::move(respond));
    case Route::function_logs:
      return logs(request, respond);
    case Route::invocations_list:
      return list_invocations(request, respond);
    case Route::invocation_get:
      return get_invocation(m.param, respond);
    case Route::dead_letters_list:  // in a cluster, the dead-letter stream; else the local list
      if (cluster_.load()) return cluster_route(request, std::move(respond));
      return list_dead_letters(request, respond);
    case Route::dead_letter_get:
      if (cluster_.load()) return cluster_dead_letter(m.route, m.param, std::move(respond));
      return get_dead_letter(m.param, respond);
    case Route::dead_letter_delete:
      if (cluster_.load()) return cluster_dead_letter(m.route, m.param, std::move(respond));
      return delete_dead_letter(m.param, std::move(respond));
    case Route::dead_letter_replay:
      if (cluster_.load()) return cluster_dead_letter(m.route, m.param, std::move(respond));
      return replay_dead_letter(m.param, std::move(respond));
    case Route::images_list:
      return images_list(respond);
    case Route::images_import:
      return images_import(request, std::move(respond));
    case Route::images_pull:
      return images_pull(request, std::move(respond));
    case Route::images_pull_get:
      return images_pull_get(m.param, respond);
    case Route::cluster_status:
      return cluster_route(request, std::move(respond));
    case Route::bad_request:
      return respond(error_reply(400, m.error));
    case Route::method_not_allowed: {
      auto r = error_reply(405, fmt::format("{} is not allowed on {}; allowed: {}", request.method,
                                            request.target.substr(0, request.target.find('?')), m.allow));
      r.headers.emplace_back("Allow", m.allow);
      return respond(std::move(r));
    }
    case Route::lambda_functions_list:
    case Route::lambda_function_get:
    case Route::lambda_function_config:
    case Route::lambda_invoke:
      return lambda_->handle(std::move(request), std::move(respond));
    case Route::not_found:
      break;
  }
  respond(error_reply(
      404, fmt::format("no such endpoint: {}", request.target.substr(0, request.target.find('?')))));
}

std::string Service::pool_json(const std::string& name, const std::vector<pool::PoolStats>& stats) const {
  JsonWriter w;
  w.begin_object();
  auto it =
      std::find_if(stats.begin(), stats.end(), [&](const pool::PoolStats& s) { return s.function == name; });
  w.field("warm", it == stats.end() ? 0u : it->warm);
  w.field("busy", it == stats.end() ? 0u : it->busy);
  w.field("starting", it == stats.end() ? 0u : it->starting);
  auto f = functions_.find(name);
  w.key("error");
  f == functions_.end() || f->second.error.empty() ? w.null() : w.value(f->second.error);
  w.end_object();
  return w.take();
}

namespace {

std::string function_json(const StoredFunction& f, const std::string& pool) {
  // The stored spec, with the record's times and the pool's state added.
  std::string body = f.spec_json;
  body.pop_back();
  body += fmt::format(",\"created_ms\":{},\"updated_ms\":{},\"pool\":{}}}", f.created_ms, f.updated_ms, pool);
  return body;
}

}  // namespace

void Service::list_functions(Respond& respond) {
  auto stored = state_.list_functions();
  if (!stored) return respond(error_reply(stored.error()));
  auto stats = pools_ ? pools_->stats() : std::vector<pool::PoolStats>{};
  JsonWriter w;
  w.begin_object().key("functions").begin_array();
  std::lock_guard lock(mu_);
  for (const auto& f : *stored) w.raw(function_json(f, pool_json(f.name, stats)));
  w.end_array().end_object();
  respond(json_reply(200, w.take()));
}

void Service::get_function(const std::string& name, Respond& respond) {
  if (auto ok = validate_function_name(name); !ok) return respond(error_reply(ok.error()));
  auto f = state_.get_function(name);
  if (!f) return respond(error_reply(f.error()));
  if (!*f) return respond(error_reply(404, fmt::format("no function named {}", name)));
  auto stats = pools_ ? pools_->stats() : std::vector<pool::PoolStats>{};
  std::lock_guard lock(mu_);
  respond(json_reply(200, function_json(**f, pool_json(name, stats))));
}

void Service::put_function(Request& request, Respond respond) {
  FunctionDefaults defaults;
  FunctionLimits function_limits;
  {
    std::lock_guard lock(mu_);
    defaults = limits_.function_defaults;
    function_limits = limits_.function_limits;
  }
  auto spec = parse_function_spec(request.match.param, request.body, defaults, function_limits);
  if (!spec) return respond(error_reply(spec.error()));
  run_job(admin_, [this, spec = std::move(*spec), respond = std::move(respond)] {
    FunctionEntry entry{spec, {}};
    if (pools_) {
      if (auto r = configure_pool(spec); !r) {
        // A reference the store does not have is the client's mistake, not a missing endpoint.
        unsigned status = r.error().kind == ErrorKind::not_found ? 400 : http_status(r.error());
        return respond(error_reply(status, r.error().message()));
      }
    } else {
      entry.error = "warm pools are not running";
    }
    auto json = function_spec_json(spec);
    auto created = state_.put_function(spec.name, json, now_ms());
    if (!created) return respond(error_reply(created.error()));
    {
      std::lock_guard lock(mu_);
      functions_[spec.name] = std::move(entry);
    }
    spdlog::info("function={} {} image={}", spec.name, *created ? "created" : "updated", spec.image);
    // Cluster mode: every other node applies it from the registry bucket.
    if (auto* node = cluster_.load())
      if (auto r = node->registry().put(spec.name, json); !r)
        return respond(error_reply(503, "stored on this node but not in the cluster registry: " + r.error().message()));
    auto f = state_.get_function(spec.name);
    auto stats = pools_ ? pools_->stats() : std::vector<pool::PoolStats>{};
    std::string body;
    {
      std::lock_guard lock(mu_);
      body = f && *f ? function_json(**f, pool_json(spec.name, stats)) : json;
    }
    respond(json_reply(*created ? 201 : 200, std::move(body)));
    pump_queue();
  });
}

void Service::delete_function(const std::string& name, Respond respond) {
  if (auto ok = validate_function_name(name); !ok) return respond(error_reply(ok.error()));
  run_job(admin_, [this, name, respond = std::move(respond)] {
    auto removed = state_.delete_function(name);
    if (!removed) return respond(error_reply(removed.error()));
    if (!*removed) return respond(error_reply(404, fmt::format("no function named {}", name)));
    if (auto* node = cluster_.load())
      if (auto r = node->registry().remove(name); !r)
        return respond(error_reply(503, "deleted on this node but not in the cluster registry: " + r.error().message()));
    {
      std::lock_guard lock(mu_);
      functions_.erase(name);
    }
    if (pools_) pools_->remove(name);
    // Another function gets these ids only once no sandbox of this one lives (State::id_range_for).
    if (auto r = state_.release_id_range(name); !r) spdlog::error("function={} {}", name, r.error().message());
    if (store_)
      if (auto r = store_->unpin(pin_holder(name)); !r)
        spdlog::error("function={} {}", name, r.error().message());
    spdlog::info("function={} deleted", name);
    respond(Reply{204, "application/json", {}, {}});
    pump_queue();  // queued async invocations of it now fail instead of waiting
  });
}

AdmissionResult Service::admit(const std::string& name) {
  std::lock_guard lock(mu_);
  if (stopping_) return {Admission::stopping, "the daemon is shutting down"};
  auto f = functions_.find(name);
  if (f == functions_.end()) return {Admission::no_function, fmt::format("no function named {}", name)};
  if (!f->second.error.empty())
    return {Admission::not_ready, fmt::format("function {} is not ready: {}", name, f->second.error)};
  auto& n = in_flight_[name];
  // In a cluster the invocation may still run on another node: forward_sync counts the 429.
  bool count_rejection = cluster_.load() == nullptr;
  if (n >= f->second.spec.max_concurrency) {
    if (count_rejection) metrics_.count(name, Outcome::rejected);
    return {Admission::function_busy,
            fmt::format("function {} is at max_concurrency ({})", name, f->second.spec.max_concurrency)};
  }
  if (in_flight_total_ >= limits_.max_in_flight) {
    if (count_rejection) metrics_.count(name, Outcome::rejected);
    return {Admission::daemon_busy,
            fmt::format("the daemon is running its maximum of {} invocations", limits_.max_in_flight)};
  }
  ++n;
  ++in_flight_total_;
  return {};
}

void Service::run_admitted(const std::string& name, std::string event, std::function<void(SyncRun)> done,
                           invoke::EventContext context) {
  run_job(invocations_, [this, name, event = std::move(event), done = std::move(done),
                         context = std::move(context)]() mutable {
    auto run = invoke_sync(name, std::move(event), context);
    // The slot is free before the reply goes out: a caller that sends its next event as soon as it
    // has the result must not find its own previous invocation still counted (429).
    release(name);
    done(std::move(run));
  });
}

void Service::enqueue(const std::string& name, std::string event, std::function<void(Result<std::string>)> done,
                      invoke::EventContext context) {
  if (cluster_.load())
    return enqueue_cluster(
        name, new_invocation_id(), false, std::move(event),
        [done = std::move(done)](Result<std::pair<std::string, bool>> r) {
          if (!r) return done(std::unexpected(r.error()));
          done(r->first);
        },
        std::move(context));
  run_job(admin_, [this, name, event = std::move(event), done = std::move(done), context = std::move(context)] {
    auto id = new_invocation_id();
    if (auto r = state_.enqueue(id, name, event, now_ms(), context); !r) return done(std::unexpected(r.error()));
    done(id);
    {
      std::lock_guard l(mu_);
      pending_.push_back({id, name});
    }
    pump_queue();
  });
}

Result<std::map<std::string, FunctionImage>> Service::function_images(const std::string& only) const {
  std::map<std::string, FunctionImage> out;
  if (!store_) return out;
  constexpr std::string_view kPrefix = "function ";
  for (const auto& pin : FNEXEC_TRY(store_->pins())) {
    if (!pin.holder.starts_with(kPrefix)) continue;
    auto name = pin.holder.substr(kPrefix.size());
    if (!only.empty() && name != only) continue;
    auto details = FNEXEC_TRY(store_->inspect(pin.digest));
    FunctionImage image{pin.digest, details.config_size};
    for (const auto& layer : details.layers) image.size += layer.size;
    out.emplace(std::move(name), std::move(image));
  }
  return out;
}

std::optional<FunctionView> Service::function(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto f = functions_.find(name);
  if (f == functions_.end()) return std::nullopt;
  return FunctionView{f->second.spec, f->second.error};
}

bool Service::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

ServiceLimits Service::limits() const {
  std::lock_guard lock(mu_);
  return limits_;
}

namespace {

// The /v1 reply of a sync invocation: stdout as the body, the record in Fnexec-* headers.
Reply v1_reply(SyncRun run) {
  if (!run.result) {
    bool no_capacity = run.result.error().kind == ErrorKind::unavailable;
    auto reply = error_reply(no_capacity ? 429 : http_status(run.result.error()), run.error);
    if (no_capacity) reply.headers.emplace_back("Retry-After", "1");
    if (!run.id.empty()) reply.headers.emplace_back("Fnexec-Invocation-Id", run.id);
    return reply;
  }
  auto& res = *run.result;
  const auto& rec = res.record;
  const auto& id = run.id;
  Reply reply;
  reply.status = http_status(run.outcome);
  bool function_error = res.error_type == "Function.Error";
  if (run.outcome == Outcome::success) {
    reply.content_type = "application/octet-stream";
    reply.body = std::move(res.output);
  } else if (function_error) {
    // Like Lambda's X-Amz-Function-Error: the function ran and answered with an error; 200 with the
    // error document as the body, so callers tell it from a failure of the platform (5xx).
    reply.body = res.error_body.value_or("{}");
    reply.headers.emplace_back("Fnexec-Function-Error", "Unhandled");
    reply.status = 200;
  } else {
    JsonWriter w;
    w.begin_object().field("error", run.error).field("invocation_id", id);
    w.field("exit_code", rec.exit_code);
    w.field("signal", rec.signal).field("oom_killed", rec.oom_killed).field("timed_out", rec.timed_out);
    w.field("output_too_large", res.output_too_large).field("stderr_tail", res.log);
    if (!res.error_type.empty()) {
      w.field("error_type", res.error_type).key("error_body");
      res.error_body ? w.raw(json_or_string(*res.error_body)) : w.null();
    }
    w.end_object();
    reply.body = w.take();
  }
  auto& h = reply.headers;
  h.emplace_back("Fnexec-Invocation-Id", id);
  if (!run.node.empty()) h.emplace_back("Fnexec-Node", run.node);  // forwarded: its record is there
  h.emplace_back("Fnexec-Start", std::string(pool::to_string(res.start)));
  h.emplace_back("Fnexec-Duration-Us", std::to_string(rec.wall_us));
  h.emplace_back("Fnexec-Billed-Ms", std::to_string(billed_ms(rec.wall_us)));
  if (rec.cpu_user_us || rec.cpu_system_us)
    h.emplace_back("Fnexec-Cpu-Us", std::to_string(rec.cpu_user_us.value_or(0) + rec.cpu_system_us.value_or(0)));
  if (rec.memory_peak_bytes) h.emplace_back("Fnexec-Memory-Peak-Bytes", std::to_string(*rec.memory_peak_bytes));
  h.emplace_back("Fnexec-Exit-Code", std::to_string(rec.exit_code));
  h.emplace_back("Fnexec-Lifecycle", std::string(pool::to_string(res.lifecycle)));
  if (res.lifecycle != pool::Lifecycle::oneshot) {
    if (!res.sandbox_id.empty()) h.emplace_back("Fnexec-Sandbox-Id", res.sandbox_id);
    h.emplace_back("Fnexec-Sandbox-Events", std::to_string(res.sandbox_events));
    if (res.init_us) h.emplace_back("Fnexec-Init-Us", std::to_string(*res.init_us));
    if (!res.retired.empty()) h.emplace_back("Fnexec-Sandbox-Retired", res.retired);
  }
  if (!res.error_type.empty()) h.emplace_back("Fnexec-Error-Type", res.error_type);
  return reply;
}

}  // namespace

void Service::invoke(Request& request, Respond respond) {
  const std::string& name = request.match.param;
  if (auto ok = validate_function_name(name); !ok) return respond(error_reply(ok.error()));
  auto mode = request.match.query.contains("mode") ? request.match.query.at("mode") : "sync";
  if (mode != "sync" && mode != "async")
    return respond(error_reply(400, fmt::format("mode must be sync or async, got '{}'", mode)));

  // Async invocations queue even while the pool cannot run them: they wait, durably, for capacity.
  if (mode == "async") {
    if (stopping()) return respond(error_reply(503, "the daemon is shutting down"));
    if (!function(name)) return respond(error_reply(404, fmt::format("no function named {}", name)));
    if (cluster_.load()) {
      // ?id=: the client's own id, so that its retry of the same request does not enqueue twice.
      bool client_id = request.match.query.contains("id");
      std::string id = client_id ? request.match.query.at("id") : new_invocation_id();
      bool id_ok = !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
      });
      if (!id_ok) return respond(error_reply(400, "id must be 1-64 of a-z 0-9 - _"));
      return enqueue_cluster(name, id, client_id, std::move(request.body),
                             [respond = std::move(respond)](Result<std::pair<std::string, bool>> r) {
                               if (!r) return respond(error_reply(r.error()));
                               auto& [id, fresh] = *r;
                               Reply reply = json_reply(202, fmt::format(R"({{"id":"{}","status":"queued","duplicate":{}}})",
                                                                         id, fresh ? "false" : "true"));
                               reply.headers.emplace_back("Fnexec-Invocation-Id", id);
                               reply.headers.emplace_back("Location", "/v1/invocations/" + id);
                               respond(std::move(reply));
                             });
    }
    return enqueue(name, std::move(request.body), [respond = std::move(respond)](Result<std::string> id) {
      respond(id ? queued_reply(*id) : error_reply(id.error()));
    });
  }

  auto admitted = admit(name);
  switch (admitted.status) {
    case Admission::admitted:
      break;
    case Admission::stopping:
    case Admission::not_ready:
      return respond(error_reply(503, admitted.message));
    case Admission::no_function:
      return respond(error_reply(404, admitted.message));
    case Admission::function_busy:
    case Admission::daemon_busy: {
      if (forward_sync(name, request.body, admitted.message,
                       [respond](SyncRun run) { respond(v1_reply(std::move(run))); }))
        return;
      auto r = error_reply(429, admitted.message);
      r.headers.emplace_back("Retry-After", "1");
      return respond(std::move(r));
    }
  }
  run_admitted(name, std::move(request.body),
               [respond = std::move(respond)](SyncRun run) { respond(v1_reply(std::move(run))); });
}

void Service::release(const std::string& function) {
  {
    std::lock_guard lock(mu_);
    if (auto it = in_flight_.find(function); it != in_flight_.end() && it->second > 0 && --it->second == 0)
      in_flight_.erase(it);
    --in_flight_total_;
  }
  pump_queue();
}

SyncRun Service::invoke_sync(const std::string& name, std::string event, const invoke::EventContext& context) {
  SyncRun run;
  Retention retention;
  {
    std::lock_guard lock(mu_);
    auto f = functions_.find(name);
    if (f == functions_.end()) {
      run.error = fmt::format("no function named {}", name);
      run.result = fail(ErrorKind::not_found, "invoke function", name, "it was deleted");
      return run;
    }
    run.spec = f->second.spec;
    retention = limits_.retention;
  }
  if (!pools_) {
    run.error = "warm pools are not running";
    run.result = fail(ErrorKind::internal, "invoke function", name, run.error);
    return run;
  }
  run.id = new_invocation_id();
  const auto& id = run.id;
  // The record is committed before the sandbox runs, so a crash leaves a `running` row to mark lost
  // (callers arriving together share the commit). The finish goes in the next batch, after the reply.
  auto lifecycle = std::string(pool::to_string(run.spec.lifecycle));
  run.started_ms = now_ms();
  if (auto r = records_.commit([&, started = run.started_ms](State& s) {
        return s.insert_running(id, name, started, lifecycle);
      });
      !r) {
    run.error = r.error().message();
    run.result = std::unexpected(r.error());
    return run;
  }

  run.result = pools_->invoke(name, event, context);
  if (!run.result) {
    InvocationEnd e;
    e.id = id;
    e.finished_ms = now_ms();
    e.error = run.result.error().message();
    run.finished_ms = e.finished_ms;
    bool no_capacity = run.result.error().kind == ErrorKind::unavailable;
    run.outcome = no_capacity ? Outcome::rejected : Outcome::failed;
    e.outcome = std::string(to_string(run.outcome));
    run.error = e.error;
    records_.submit([e, retention](State& s) { return s.finish(e, retention); });
    metrics_.count(name, run.outcome);
    return run;
  }

  auto& res = *run.result;
  run.outcome = classify(res);
  auto end = end_of(id, res, run.outcome);
  if (run.outcome != Outcome::success) end.error = failure_message(run.spec, res, run.outcome);
  run.error = end.error;
  int64_t finished_ms = end.finished_ms;
  run.finished_ms = finished_ms;
  records_.submit([end = std::move(end), retention](State& s) { return s.finish(end, retention); });
  if (!res.log.empty())
    records_.submit([name, id, finished_ms, log = res.log, retention](State& s) {
      return s.append_log(name, id, finished_ms, log, retention);
    });
  metrics_.count(name, run.outcome);
  metrics_.observe(name, res.start, res.record.wall_us);
  metrics_.observe_sandbox(name, res);
  return run;
}

void Service::pump() {
  {
    std::lock_guard lock(mu_);
    backoff_ = false;
  }
  pump_queue();
}

void Service::pump_queue() {
  std::vector<QueuedInvocation> start, orphaned;
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !pools_) return;
    int64_t now = pending_.empty() ? 0 : now_ms();
    for (auto it = pending_.begin(); it != pending_.end();) {
      auto f = functions_.find(it->function);
      if (f == functions_.end()) {
        orphaned.push_back(std::move(*it));
        it = pending_.erase(it);
        continue;
      }
      if (in_flight_total_ >= limits_.max_in_flight || backoff_) break;
      if (it->next_attempt_ms > now) {  // a retry waiting out its backoff; the tick comes back for it
        ++it;
        continue;
      }
      auto& n = in_flight_[it->function];
      if (n >= f->second.spec.max_concurrency || !f->second.error.empty()) {
        ++it;
        continue;
      }
      ++n;
      ++in_flight_total_;
      start.push_back(std::move(*it));
      it = pending_.erase(it);
    }
  }
  for (auto& q : start)
    run_job(invocations_, [this, q = std::move(q)]() mutable {
      auto function = q.function;
      run_async(std::move(q));
      release(function);
    });
  for (auto& q : orphaned)
    run_job(admin_, [this, q = std::move(q)] {
      if (!state_.start_queued(q.id, now_ms())) return;
      InvocationEnd e;
      e.id = q.id;
      e.outcome = std::string(to_string(Outcome::failed));
      e.finished_ms = now_ms();
      e.error = fmt::format("function {} was deleted before this invocation ran", q.function);
      Retention retention;
      {
        std::lock_guard lock(mu_);
        retention = limits_.retention;
      }
      if (auto r = state_.finish(e, retention); !r)
        spdlog::error("invocation={} {}", q.id, r.error().message());
    });
}

void Service::run_async(QueuedInvocation q) {
  pool::FunctionSpec spec;
  Retention retention;
  {
    std::lock_guard lock(mu_);
    auto f = functions_.find(q.function);
    if (f != functions_.end()) spec = f->second.spec;
    retention = limits_.retention;
  }
  invoke::EventContext context;
  auto event = state_.start_queued(q.id, now_ms(), &context);
  if (!event) {
    spdlog::error("invocation={} {}", q.id, event.error().message());
    return;
  }
  auto res = pools_->invoke(q.function, *event, context);
  if (!res && res.error().kind == ErrorKind::unavailable) {
    // The global sandbox cap: back to the queue front. Retrying at once would spin while the
    // cap holds, so queued work waits for the daemon's next periodic pump().
    if (auto r = state_.requeue(q.id); !r) spdlog::error("invocation={} {}", q.id, r.error().message());
    std::lock_guard lock(mu_);
    pending_.push_front(std::move(q));
    backoff_ = true;
    return;
  }
  // A function deleted meanwhile (no spec) has nothing to deliver a retry to; its metrics still
  // carry its name.
  bool have_spec = !spec.name.empty();
  if (!have_spec) spec.name = q.function;
  InvocationEnd end = end_async_delivery(q.id, spec, std::move(res), retention);
  bool failed = end.outcome != to_string(Outcome::success);
  if (auto r = failed && have_spec ? settle_failed_delivery(q, spec, end, retention) : state_.finish(end, retention);
      !r)
    spdlog::error("invocation={} {}", q.id, r.error().message());
}

InvocationEnd Service::end_async_delivery(const std::string& id, const pool::FunctionSpec& spec,
                                          Result<pool::InvocationResult> res, const Retention& retention) {
  InvocationEnd end;
  if (!res) {
    end.id = id;
    end.outcome = std::string(to_string(Outcome::failed));
    end.finished_ms = now_ms();
    end.error = res.error().message();
    metrics_.count(spec.name, Outcome::failed);
    return end;
  }
  Outcome outcome = classify(*res);
  end = end_of(id, *res, outcome);
  if (outcome != Outcome::success) end.error = failure_message(spec, *res, outcome);
  end.output = std::move(res->output);
  metrics_.count(spec.name, outcome);
  metrics_.observe(spec.name, res->start, res->record.wall_us);
  metrics_.observe_sandbox(spec.name, *res);
  if (!res->log.empty())
    if (auto r = state_.append_log(spec.name, id, end.finished_ms, res->log, retention); !r)
      spdlog::error("invocation={} {}", id, r.error().message());
  return end;
}

Result<> Service::settle_failed_delivery(const QueuedInvocation& q, const pool::FunctionSpec& spec,
                                         const InvocationEnd& end, const Retention& retention) {
  if (q.delivery > spec.retries) {
    spdlog::warn("invocation={} function={} dead-lettered after {} deliveries: {}", q.id, q.function, q.delivery,
                 end.error);
    return state_.dead_letter(end, q.delivery, retention);
  }
  QueuedInvocation next{q.id, q.function, q.delivery + 1,
                        end.finished_ms + pool::retry_delay(spec.retry_backoff, q.delivery).count()};
  FNEXEC_TRY(state_.retry(end, next.delivery, next.next_attempt_ms));
  spdlog::info("invocation={} function={} delivery {} failed ({}); delivery {} in {} ms", q.id, q.function,
               q.delivery, end.outcome, next.delivery, next.next_attempt_ms - end.finished_ms);
  std::lock_guard lock(mu_);
  pending_.push_back(std::move(next));
  return {};
}

void Service::list_dead_letters(const Request& request, Respond& respond) {
  const auto& q = request.match.query;
  std::string function = q.contains("function") ? q.at("function") : "";
  if (!function.empty())
    if (auto ok = validate_function_name(function); !ok) return respond(error_reply(ok.error()));
  auto after = query_uint(q, "after", 0, INT64_MAX);
  auto limit = query_uint(q, "limit", 50, 10000);
  for (const auto* r : {&after, &limit})
    if (!*r) return respond(error_reply(r->error()));
  auto entries = state_.dead_letters(function, static_cast<int64_t>(*after), *limit);
  if (!entries) return respond(error_reply(entries.error()));
  JsonWriter w;
  w.begin_object().key("dead_letters").begin_array();
  int64_t next = static_cast<int64_t>(*after);
  for (const auto& d : *entries) {
    w.raw(dead_letter_json(d));
    next = std::max(next, d.seq);
  }
  w.end_array().field("next", next).end_object();
  respond(json_reply(200, w.take()));
}

void Service::get_dead_letter(const std::string& id, Respond& respond) {
  auto d = state_.get_dead_letter(id);
  if (!d) return respond(error_reply(d.error()));
  if (!*d) return respond(error_reply(404, fmt::format("no dead letter with id {}", id)));
  respond(json_reply(200, dead_letter_json(**d)));
}

void Service::delete_dead_letter(const std::string& id, Respond respond) {
  run_job(admin_, [this, id, respond = std::move(respond)] {
    auto removed = state_.delete_dead_letter(id);
    if (!removed) return respond(error_reply(removed.error()));
    if (!*removed) return respond(error_reply(404, fmt::format("no dead letter with id {}", id)));
    respond(Reply{204, "application/json", {}, {}});
  });
}

void Service::replay_dead_letter(const std::string& id, Respond respond) {
  if (stopping()) return respond(error_reply(503, "the daemon is shutting down"));
  run_job(admin_, [this, id, respond = std::move(respond)] {
    auto entry = state_.get_dead_letter(id);
    if (!entry) return respond(error_reply(entry.error()));
    if (!*entry) return respond(error_reply(404, fmt::format("no dead letter with id {}", id)));
    if (!function((*entry)->function))
      return respond(error_reply(
          409, fmt::format("function {} of dead letter {} does not exist any more; create it again to replay",
                           (*entry)->function, id)));
    auto new_id = new_invocation_id();
    auto name = state_.replay_dead_letter(id, new_id, now_ms());
    if (!name) return respond(error_reply(name.error()));
    spdlog::info("dead letter={} function={} replayed as invocation={}", id, *name, new_id);
    respond(queued_reply(new_id));
    {
      std::lock_guard lock(mu_);
      pending_.push_back({new_id, *name});
    }
    pump_queue();
  });
}

void Service::logs(const Request& request, Respond& respond) {
  const auto& m = request.match;
  if (auto ok = validate_function_name(m.param); !ok) return respond(error_reply(ok.error()));
  auto since = query_uint(m.query, "since", 0, INT64_MAX);
  auto after = query_uint(m.query, "after", 0, INT64_MAX);
  auto limit = query_uint(m.query, "limit", 100, 10000);
  for (const auto* r : {&since, &after, &limit})
    if (!*r) return respond(error_reply(r->error()));
  records_.flush();  // what a reply already answered is visible
  auto entries = state_.logs(m.param, static_cast<int64_t>(*since), static_cast<int64_t>(*after), *limit);
  if (!entries) return respond(error_reply(entries.error()));
  JsonWriter w;
  w.begin_object().field("function", m.param).key("entries").begin_array();
  int64_t next = static_cast<int64_t>(*after);
  for (const auto& e : *entries) {
    w.begin_object().field("seq", e.seq).field("invocation_id", e.invocation_id).field("time_ms", e.time_ms);
    w.field("text", e.text).end_object();
    next = std::max(next, e.seq);
  }
  w.end_array().field("next", next).end_object();
  respond(json_reply(200, w.take()));
}

void Service::list_invocations(const Request& request, Respond& respond) {
  const auto& q = request.match.query;
  std::string function = q.contains("function") ? q.at("function") : "";
  if (!function.empty())
    if (auto ok = validate_function_name(function); !ok) return respond(error_reply(ok.error()));
  auto since = query_uint(q, "since", 0, INT64_MAX);
  auto limit = query_uint(q, "limit", 50, 10000);
  for (const auto* r : {&since, &limit})
    if (!*r) return respond(error_reply(r->error()));
  records_.flush();
  auto rows = state_.list_invocations(function, static_cast<int64_t>(*since), *limit);
  if (!rows) return respond(error_reply(rows.error()));
  JsonWriter w;
  w.begin_object().key("invocations").begin_array();
  for (const auto& r : *rows) w.raw(invocation_json(r, std::nullopt));
  w.end_array().end_object();
  respond(json_reply(200, w.take()));
}

void Service::get_invocation(const std::string& id, Respond& respond) {
  records_.flush();
  auto row = state_.get_invocation(id);
  if (!row) return respond(error_reply(row.error()));
  if (!*row && cluster_.load()) return cluster_invocation(id, std::nullopt, std::move(respond));
  if (!*row) return respond(error_reply(404, fmt::format("no invocation with id {}", id)));
  auto log = state_.log_of(id);
  auto json = invocation_json(**row, log ? *log : std::nullopt);
  // A cluster event's later delivery may have run on another node: the results bucket has its last word.
  if ((*row)->async && cluster_.load()) return cluster_invocation(id, std::move(json), std::move(respond));
  respond(json_reply(200, std::move(json)));
}

void Service::images_list(Respond& respond) {
  if (store_) {
    auto list = store_->list();
    if (!list) return respond(error_reply(list.error()));
    JsonWriter w;
    w.begin_object().key("images").begin_array();
    for (const auto& i : *list) {
      w.begin_object().field("name", i.name).field("tag", i.tag).field("digest", i.digest);
      w.field("size", i.size).field("created", i.created).end_object();
    }
    w.end_array().end_object();
    return respond(json_reply(200, w.take()));
  }
  respond(error_reply(503, "the image store is not open"));
}

void Service::images_import(Request& request, Respond respond) {
  auto upload = request.upload;
  auto name =
      request.match.query.contains("name") ? std::optional(request.match.query.at("name")) : std::nullopt;
  image::ImportOptions options;
  options.name = name;
  {
    std::lock_guard lock(mu_);
    options.max_layer_bytes = limits_.max_layer_bytes;
    options.max_image_bytes = limits_.max_image_bytes;
  }
  options.layer_limit_setting = "max_layer_bytes in fnexec.conf";
  options.image_limit_setting = "max_image_bytes in fnexec.conf";
  run_job(admin_, [this, upload, options = std::move(options), respond = std::move(respond)] {
    Reply reply = error_reply(503, "the image store is not open");
    if (store_) {
      auto img = store_->import(upload.string(), options);
      if (!img) {
        reply = error_reply(img.error().kind == ErrorKind::internal ? 500 : http_status(img.error()), img.error().message());
      } else {
        JsonWriter w;
        w.begin_object()
            .field("digest", img->manifest_digest)
            .field("reference", img->reference)
            .end_object();
        reply = json_reply(201, w.take());
        spdlog::info("image imported reference={} digest={}", img->reference, img->manifest_digest);
      }
    }
    std::error_code ec;
    std::filesystem::remove(upload, ec);
    respond(std::move(reply));
  });
}

// POST /v1/images/pull answers 202 with the pull's id at once; the pull runs on the admin executor
// (or in a PUT that joined it first, see Pulls::run).
void Service::images_pull(Request& request, Respond respond) {
  if (!pulls_) return respond(error_reply(503, "the image store is not open"));
  auto pull = parse_pull_request(request.body);
  if (!pull) return respond(error_reply(pull.error()));
  {
    std::lock_guard lock(mu_);
    pull->auth_file = limits_.registry_auth_file;
    pull->certs_root = limits_.registry_certs_dir;
  }
  std::string reference = pull->reference;
  auto ticket = pulls_->submit(std::move(*pull));
  if (!ticket) return respond(error_reply(ticket.error()));
  if (!ticket->joined) run_job(admin_, [this, id = ticket->id] { (void)pulls_->run(id, false); });
  JsonWriter w;
  w.begin_object().field("id", ticket->id).field("reference", reference).field("joined", ticket->joined).end_object();
  Reply reply = json_reply(202, w.take());
  reply.headers.emplace_back("Location", "/v1/images/pulls/" + ticket->id);
  respond(std::move(reply));
}

void Service::images_pull_get(const std::string& id, Respond& respond) {
  if (!pulls_) return respond(error_reply(503, "the image store is not open"));
  auto status = pulls_->status_json(id);
  if (!status) return respond(error_reply(404, fmt::format("no pull with id {} (finished pulls are kept for the last 64)", id)));
  respond(json_reply(200, std::move(*status)));
}

}  // namespace fnexec::server
