// The daemon's durable state in SQLite (WAL): functions, invocation records, the async queue, logs.
// Thread-safe: one connection behind a mutex; every statement is short (measured in the report).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "invoke/event_session.h"
#include "sandbox/spec.h"
#include "util/error.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fnexec::server {

// Versioned migrations; schema_version holds how many of them ran.
inline constexpr int kSchemaVersion = 8;

struct StoredFunction {
  std::string name;
  std::string spec_json;  // function_spec_json()
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
};

// Which sandbox served an invocation and how (fresh/reuse lifecycles; schema version 2).
struct SandboxFacts {
  std::string lifecycle;                   // oneshot | fresh | reuse; "" until the invocation ran
  std::string sandbox_id;                  // "" until known
  std::optional<uint64_t> sandbox_events;  // events the sandbox had served, this one included
  std::optional<uint64_t> init_us;         // the sandbox's init, on the first event it served
  std::string retired;                     // why the sandbox was retired after it, "" if it lives on
  std::string error_type;                  // Function.Error, Runtime.ExitError, ...; "" on success
  std::optional<std::string> error_body;   // the function's ERROR / INIT_ERROR json
  // Network mode bridge (schema version 3): the invocation's traffic; unset for network none.
  struct Traffic {
    uint64_t bytes_out = 0, packets_out = 0, bytes_in = 0, packets_in = 0;
  };
  std::optional<Traffic> network;
};

// One row of `invocations`. Optional columns are NULL until known.
struct InvocationRow {
  int64_t seq = 0;
  std::string id;
  std::string function;
  bool async = false;
  std::string status;  // queued | running | done | lost
  std::string start;   // warm | cold | ""
  std::string
      outcome;  // success | error | timeout | oom | output_too_large | setup_error | rejected | failed | lost
  int64_t queued_ms = 0;
  std::optional<int64_t> started_ms, finished_ms;
  std::optional<uint64_t> wall_us, cpu_user_us, cpu_system_us, memory_peak_bytes, billed_ms;
  std::optional<int> exit_code, signal;
  bool oom_killed = false, timed_out = false, output_too_large = false;
  std::string error;
  std::optional<std::string> output;  // async results only
  SandboxFacts sandbox;
  // Async delivery (schema version 4): the delivery that runs, ran last or (queued) runs next.
  uint32_t delivery = 1;
  std::optional<int64_t> next_attempt_ms;  // a queued retry runs at or after it
  bool dead_letter = false;                // its last delivery failed: see dead_letters
};

// What finish() records.
struct InvocationEnd {
  std::string id;
  std::string start;
  std::string outcome;
  int64_t finished_ms = 0;
  std::optional<uint64_t> wall_us, cpu_user_us, cpu_system_us, memory_peak_bytes, billed_ms;
  std::optional<int> exit_code, signal;
  bool oom_killed = false, timed_out = false, output_too_large = false;
  std::string error;
  std::optional<std::string> output;  // kept for async invocations
  SandboxFacts sandbox;
};

struct QueuedInvocation {
  std::string id;
  std::string function;
  uint32_t delivery = 1;        // 1-based; the one this run will be
  int64_t next_attempt_ms = 0;  // a retry waits for its backoff: not before this
};

// One entry of the dead-letter list: an async event whose every delivery failed.
struct DeadLetter {
  int64_t seq = 0;
  std::string id;  // the invocation id
  std::string function;
  std::optional<std::string> event;  // only when asked for one entry
  uint32_t attempts = 0;
  std::string outcome;  // of the last delivery
  std::string error;
  std::string error_type;
  int64_t queued_ms = 0;  // when the event was first queued
  int64_t time_ms = 0;    // when it was dead-lettered
  std::string replayed_as;  // the invocation its replay queued, "" if none
};

// A registry pull of the daemon (schema version 6), as GET /v1/images/pulls/{id} shows it after
// the pull ended or the daemon restarted.
struct PullRecord {
  std::string id;
  std::string reference;
  std::string state;  // queued | running | done | failed
  int64_t started_ms = 0;
  std::optional<int64_t> finished_ms;
  std::string image, digest;  // done
  std::string error;          // failed
  std::string layers_json = "[]";  // the layers' last progress, a JSON array
};

struct LogEntry {
  int64_t seq = 0;
  std::string invocation_id;
  int64_t time_ms = 0;
  std::string text;
};

struct Recovery {
  int lost = 0;    // sync invocations running when the previous instance died
  int queued = 0;  // async invocations waiting to run
  // Async invocations running when it died: still `running`, for the service to retry or
  // dead-letter per their function's policy (Service::start).
  std::vector<QueuedInvocation> interrupted;
  int pulls_interrupted = 0;  // registry pulls queued or running: failed, their verified layers kept
};

// A prepared statement kept for reuse; in_use while a Statement holds it (a nested use of the same SQL
// prepares a private one instead).
struct CachedStatement {
  sqlite3_stmt* stmt = nullptr;
  bool in_use = false;
};
struct SqlHash {
  using is_transparent = void;
  size_t operator()(std::string_view sql) const { return std::hash<std::string_view>{}(sql); }
};
using StatementCache = std::unordered_map<std::string, CachedStatement, SqlHash, std::equal_to<>>;

struct Retention {
  uint64_t log_bytes_per_function = 1 << 20;  // stderr tails kept per function, oldest dropped first
  uint64_t records_per_function = 10000;      // finished invocation records kept per function
};

class State {
 public:
  // Opens or creates DB, sets WAL and busy_timeout, and runs the migrations it has not seen.
  static Result<std::unique_ptr<State>> open(const std::filesystem::path& db);
  ~State();
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  Result<int> schema_version();

  // Returns true when the function was created, false when it replaced one.
  Result<bool> put_function(const std::string& name, const std::string& spec_json, int64_t now_ms);
  Result<std::optional<StoredFunction>> get_function(const std::string& name);
  Result<std::vector<StoredFunction>> list_functions();
  Result<bool> delete_function(const std::string& name);

  // Per-function user namespaces (schema version 3): the function's recorded id range when it lies in
  // `pool` and has `count` ids, else the lowest free slot of `count` ids in `pool` that no other
  // function holds and `in_use` (sandboxes still alive on a released range) does not refuse; the
  // choice is recorded before it is returned, so it never collides across restarts.
  Result<sandbox::IdRange> id_range_for(const std::string& function, sandbox::IdRange pool, uint32_t count,
                                        const std::function<bool(uid_t)>& in_use);
  // What id_range_for recorded for function, if anything.
  Result<std::optional<sandbox::IdRange>> recorded_id_range(const std::string& function);
  Result<> release_id_range(const std::string& function);

  // A sync invocation about to start: status running (lifecycle: the function's, when known).
  Result<> insert_running(const std::string& id, const std::string& function, int64_t now_ms,
                          std::string_view lifecycle = {});
  // An async invocation: status queued, event and its caller's context kept until it ran.
  Result<> enqueue(const std::string& id, const std::string& function, std::string_view event,
                   int64_t now_ms, const invoke::EventContext& context = {});
  // Queued → running; returns the event (and its context into *context when given). not_found when
  // the row is not queued any more.
  Result<std::string> start_queued(const std::string& id, int64_t now_ms, invoke::EventContext* context = nullptr);
  // Running → queued again (the pool had no capacity after all).
  Result<> requeue(const std::string& id);
  // status done (lost when outcome is lost).
  Result<> finish(const InvocationEnd& end, const Retention& retention);
  // A failed async delivery with retries left: running → queued as next_delivery, to run at or after
  // next_attempt_ms; the failed delivery's error stays in the record until then.
  Result<> retry(const InvocationEnd& failed, uint32_t next_delivery, int64_t next_attempt_ms);
  // The last delivery failed: finish() plus a dead-letter entry holding the event, in one transaction.
  Result<> dead_letter(const InvocationEnd& end, uint32_t attempts, const Retention& retention);

  // Cluster mode: one delivery of a JetStream event that ran on this node, so that this node's
  // GET /v1/invocations lists it. The row is made (or taken back from an earlier delivery here)
  // running as `delivery`, then finished like a local one, or queued again as next_delivery when
  // next_delivery is set; dead_letter marks a last failed delivery (the entry is in JetStream).
  struct ClusterDelivery {
    std::string function;
    int64_t queued_ms = 0, started_ms = 0;
    uint32_t delivery = 1;
    std::optional<std::pair<uint32_t, int64_t>> next;  // next_delivery, next_attempt_ms
    bool dead_letter = false;
  };
  Result<> record_cluster_delivery(const ClusterDelivery& d, const InvocationEnd& end, const Retention& retention);

  Result<std::optional<InvocationRow>> get_invocation(const std::string& id);
  // Newest first; function "" = all; since_ms = queued at or after.
  Result<std::vector<InvocationRow>> list_invocations(const std::string& function, int64_t since_ms,
                                                      uint64_t limit);
  // Oldest first.
  Result<std::vector<QueuedInvocation>> queued();

  // At start: running sync rows of a previous instance become lost (never dropped); running async ones
  // are returned in Recovery::interrupted; queued ones stay queued.
  Result<Recovery> recover(int64_t now_ms);

  // Oldest first: function "" = all, seq > after_seq; without events.
  Result<std::vector<DeadLetter>> dead_letters(const std::string& function, int64_t after_seq, uint64_t limit);
  // With its event.
  Result<std::optional<DeadLetter>> get_dead_letter(const std::string& id);
  Result<bool> delete_dead_letter(const std::string& id);
  // Queues the entry's event as invocation new_id (delivery 1) and notes it in replayed_as; returns
  // the function. not_found: no such entry; exists: it was replayed already.
  Result<std::string> replay_dead_letter(const std::string& id, const std::string& new_id, int64_t now_ms);

  // Registry pulls: recorded as they start and end; the newest `keep` finished ones stay.
  Result<> put_pull(const PullRecord& pull, uint64_t keep);
  Result<std::optional<PullRecord>> get_pull(const std::string& id);

  Result<> append_log(const std::string& function, const std::string& invocation_id, int64_t time_ms,
                      std::string_view text, const Retention& retention);

  // Runs writes (calls of the methods above) in ONE transaction, so that many records cost one
  // commit (RecordWriter). Each write's own result is returned; one failing leaves the others.
  // An error of the whole batch (the commit failed) means none of them was stored.
  Result<std::vector<Result<>>> batch(std::span<const std::function<Result<>(State&)>> writes);
  // Oldest first among the newest `limit` entries with time >= since_ms and seq > after_seq.
  Result<std::vector<LogEntry>> logs(const std::string& function, int64_t since_ms, int64_t after_seq,
                                     uint64_t limit);
  Result<std::optional<std::string>> log_of(const std::string& invocation_id);

 private:
  explicit State(sqlite3* db) : db_(db) {}
  Result<> exec(const char* sql);
  // One statement, prepared once: the savepoints and transactions around every record.
  Result<> exec_cached(const char* sql);
  Result<> migrate();
  // Recursive: batch() holds it while the writes it runs take it again.
  std::recursive_mutex mu_;
  sqlite3* db_;
  std::map<std::string, uint64_t> log_bytes_;      // per function, see append_log
  std::map<std::string, uint64_t> record_counts_;  // finished records per function, see finish
  // By SQL text: preparing every statement on every call was ~17% of the daemon's CPU at c=8 (perf:
  // sqlite3Parser, keywordCode). Finalized in ~State, before the connection closes.
  StatementCache statements_;
};

}  // namespace fnexec::server
