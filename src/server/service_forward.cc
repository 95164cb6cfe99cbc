// Sync forwarding in cluster mode (cluster/forward.h, docs/ARCHITECTURE.md "Cluster"): a sync
// invocation this node has no slot for runs on another node; the other node's SyncRun travels back
// as one JSON line (everything but the output) followed by the output's raw bytes, so the caller
// builds the same reply (/v1 or Lambda) as for a local run.
#include <fmt/format.h>
#include <simdjson.h>

#include "cluster/node.h"
#include "server/json.h"
#include "server/service.h"
#include "server/service_records.h"
#include "util/log.h"

namespace fnexec::server {

namespace {

// Takes the run's output; the rest stays for its record.
std::string encode_run(SyncRun& run) {
  JsonWriter w;
  w.begin_object().field("id", run.id).field("outcome", to_string(run.outcome)).field("error", run.error);
  std::string output;
  if (!run.result) {
    const auto& e = run.result.error();
    w.key("failure").begin_object().field("kind", static_cast<int>(e.kind)).field("errno", e.err);
    w.field("what", e.what).field("on", e.on).field("detail", e.detail).end_object();
  } else {
    auto& res = *run.result;
    const auto& rec = res.record;
    w.field("start", pool::to_string(res.start)).field("lifecycle", pool::to_string(res.lifecycle));
    w.field("output_too_large", res.output_too_large).field("log", res.log);
    w.field("sandbox_events", res.sandbox_events).field("init_us", res.init_us);
    w.field("sandbox_id", res.sandbox_id).field("retired", res.retired);
    w.field("error_body", res.error_body).field("error_type", res.error_type);
    w.key("record").begin_object().field("wall_us", rec.wall_us).field("cpu_user_us", rec.cpu_user_us);
    w.field("cpu_system_us", rec.cpu_system_us).field("memory_peak_bytes", rec.memory_peak_bytes);
    w.field("exit_code", rec.exit_code).field("signal", rec.signal).field("oom_killed", rec.oom_killed);
    w.field("timed_out", rec.timed_out).end_object();
    output = std::move(res.output);
  }
  w.end_object();
  // The writer escapes control characters, so the JSON line holds no newline of its own.
  return w.take() + "\n" + output;
}

Result<SyncRun> decode_run(const std::string& bytes, const pool::FunctionSpec& spec) {
  auto bad = [](std::string_view why) {
    return fail(ErrorKind::protocol, "read the result of a forwarded invocation", {}, std::string(why));
  };
  auto newline = bytes.find('\n');
  if (newline == std::string::npos) return bad("no header line");
  simdjson::dom::parser parser;
  simdjson::padded_string padded(std::string_view(bytes).substr(0, newline));
  simdjson::dom::object o;
  if (parser.parse(padded).get(o)) return bad("malformed JSON");
  auto str = [&](const char* k, simdjson::dom::object obj) {
    std::string_view v;
    return obj[k].get(v) ? std::string() : std::string(v);
  };
  auto num = [&](const char* k, simdjson::dom::object obj) -> std::optional<int64_t> {
    int64_t v = 0;
    if (obj[k].get(v)) return std::nullopt;
    return v;
  };
  auto flag = [&](const char* k, simdjson::dom::object obj) {
    bool v = false;
    return !obj[k].get(v) && v;
  };
  SyncRun run;
  run.spec = spec;
  run.id = str("id", o);
  run.error = str("error", o);
  auto outcome = str("outcome", o);
  for (auto candidate : {Outcome::success, Outcome::error, Outcome::timeout, Outcome::oom, Outcome::output_too_large,
                         Outcome::setup_error, Outcome::rejected, Outcome::failed, Outcome::lost})
    if (to_string(candidate) == outcome) run.outcome = candidate;
  if (simdjson::dom::object f; !o["failure"].get(f)) {
    Error e;
    e.kind = static_cast<ErrorKind>(num("kind", f).value_or(0));
    e.err = static_cast<int>(num("errno", f).value_or(0));
    e.what = str("what", f);
    e.on = str("on", f);
    e.detail = str("detail", f);
    run.result = std::unexpected(std::move(e));
    return run;
  }
  simdjson::dom::object r;
  if (o["record"].get(r)) return bad("no record");
  pool::InvocationResult res;
  res.start = str("start", o) == pool::to_string(pool::StartKind::warm) ? pool::StartKind::warm : pool::StartKind::cold;
  res.lifecycle = pool::parse_lifecycle(str("lifecycle", o)).value_or(pool::Lifecycle::oneshot);
  res.output_too_large = flag("output_too_large", o);
  res.log = str("log", o);
  res.sandbox_events = static_cast<uint64_t>(num("sandbox_events", o).value_or(1));
  if (auto v = num("init_us", o)) res.init_us = static_cast<uint64_t>(*v);
  res.sandbox_id = str("sandbox_id", o);
  res.retired = str("retired", o);
  if (std::string_view v; !o["error_body"].get(v)) res.error_body = std::string(v);
  res.error_type = str("error_type", o);
  auto& rec = res.record;
  rec.wall_us = static_cast<uint64_t>(num("wall_us", r).value_or(0));
  if (auto v = num("cpu_user_us", r)) rec.cpu_user_us = static_cast<uint64_t>(*v);
  if (auto v = num("cpu_system_us", r)) rec.cpu_system_us = static_cast<uint64_t>(*v);
  if (auto v = num("memory_peak_bytes", r)) rec.memory_peak_bytes = static_cast<uint64_t>(*v);
  rec.exit_code = static_cast<int>(num("exit_code", r).value_or(0));
  if (auto v = num("signal", r)) rec.signal = static_cast<int>(*v);
  rec.oom_killed = flag("oom_killed", r);
  rec.timed_out = flag("timed_out", r);
  res.output = bytes.substr(newline + 1);
  run.result = std::move(res);
  return run;
}

}  // namespace

std::optional<std::string> Service::admit_forwarded(const std::string& function) {
  auto admitted = admit(function);
  if (admitted.status == Admission::admitted) return std::nullopt;
  return admitted.message;
}

void Service::run_forwarded(const std::string& function, std::string event, invoke::EventContext context,
                            cluster::ForwardedDone done) {
  run_admitted(
      function, std::move(event),
      [this, done = std::move(done)](SyncRun run) {
        auto bytes = encode_run(run);
        // Built only once the caller's reply is out (forward.cc): its cost is not the caller's wait.
        done(std::move(bytes), run.id, [&] {
          auto* node = cluster_.load();
          return cluster_record(sync_record(run), node ? node->name() : "");
        });
      },
      std::move(context));
}

bool Service::forward_sync(const std::string& name, std::string& event, const std::string& local_refusal,
                           std::function<void(SyncRun)> done, invoke::EventContext context) {
  auto* node = cluster_.load();
  auto spec = function_spec(name);
  if (!node || !spec) return false;
  node->forwarder().forward(
      name, std::move(event), std::move(context), spec->timeout,
      [this, name, spec = *spec, local_refusal, done = std::move(done)](Result<cluster::ForwardReply> reply) {
        SyncRun run;
        run.spec = spec;
        if (reply) {
          auto decoded = decode_run(reply->run, spec);
          if (decoded) {
            decoded->node = reply->node;
            return done(std::move(*decoded));
          }
          reply = std::unexpected(decoded.error());
        }
        auto e = reply.error();
        // No node could take it: 429 as without a cluster (too_large: the event was not sent at all).
        if (e.kind == ErrorKind::too_large) e.kind = ErrorKind::unavailable;
        if (e.kind == ErrorKind::unavailable) metrics_.count(name, Outcome::rejected);
        run.error = e.kind == ErrorKind::unavailable ? local_refusal + "; " + e.message() : e.message();
        run.outcome = e.kind == ErrorKind::unavailable ? Outcome::rejected : Outcome::failed;
        if (e.kind != ErrorKind::unavailable)
          spdlog::warn("cluster: function={} forwarded sync invocation: {}", name, run.error);
        run.result = std::unexpected(std::move(e));
        done(std::move(run));
      });
  return true;
}

}  // namespace fnexec::server
