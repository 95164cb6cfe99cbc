#include "server/state.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <set>

#include "util/log.h"

namespace fnexec::server {

namespace {

// Migration N (1-based) moves the schema from version N-1 to N. Append only; never edit one that shipped.
constexpr std::array<const char*, kSchemaVersion> kMigrations = {
    R"sql(
CREATE TABLE functions (
  name TEXT PRIMARY KEY,
  spec TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE invocations (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  function TEXT NOT NULL,
  async INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'lost')),
  start_kind TEXT NOT NULL DEFAULT '',
  outcome TEXT NOT NULL DEFAULT '',
  queued_ms INTEGER NOT NULL,
  started_ms INTEGER,
  finished_ms INTEGER,
  wall_us INTEGER,
  cpu_user_us INTEGER,
  cpu_system_us INTEGER,
  memory_peak_bytes INTEGER,
  billed_ms INTEGER,
  exit_code INTEGER,
  signal INTEGER,
  oom_killed INTEGER NOT NULL DEFAULT 0,
  timed_out INTEGER NOT NULL DEFAULT 0,
  output_too_large INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX invocations_by_function ON invocations (function, seq);
CREATE INDEX invocations_unfinished ON invocations (status) WHERE status IN ('queued', 'running');
CREATE TABLE async_payloads (
  id TEXT PRIMARY KEY REFERENCES invocations (id) ON DELETE CASCADE,
  event BLOB,
  output BLOB
);
CREATE TABLE logs (
  seq INTEGER PRIMARY KEY,
  function TEXT NOT NULL,
  invocation_id TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  text BLOB NOT NULL
);
CREATE INDEX logs_by_function ON logs (function, seq);
CREATE INDEX logs_by_invocation ON logs (invocation_id);
)sql",
    // 2: lifecycles (issue 11). Functions stored before them were oneshot; their specs say so now,
    // so GET shows every field and a changed default_lifecycle never converts them.
    R"sql(
ALTER TABLE invocations ADD COLUMN lifecycle TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN sandbox_id TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN sandbox_events INTEGER;
ALTER TABLE invocations ADD COLUMN init_us INTEGER;
ALTER TABLE invocations ADD COLUMN retired TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN error_type TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN error_body TEXT;
UPDATE invocations SET lifecycle = 'oneshot' WHERE start_kind != '';
UPDATE functions SET spec = json_set(spec, '$.lifecycle', 'oneshot', '$.max_events_per_sandbox', 0,
                                     '$.init_timeout_ms', 10000)
  WHERE json_valid(spec) AND json_type(spec, '$') = 'object' AND json_type(spec, '$.lifecycle') IS NULL;
)sql",
    // 3: network bridge (issue 14): the invocation's traffic from its sandbox's counters.
    R"sql(
ALTER TABLE invocations ADD COLUMN net_bytes_out INTEGER;
ALTER TABLE invocations ADD COLUMN net_packets_out INTEGER;
ALTER TABLE invocations ADD COLUMN net_bytes_in INTEGER;
ALTER TABLE invocations ADD COLUMN net_packets_in INTEGER;
)sql",
    // 4: async delivery (issue 17): the delivery number, the backoff of a queued retry, and the
    // dead-letter list. Functions stored before it take the default retry policy when loaded.
    R"sql(
ALTER TABLE invocations ADD COLUMN delivery INTEGER NOT NULL DEFAULT 1;
ALTER TABLE invocations ADD COLUMN next_attempt_ms INTEGER;
ALTER TABLE invocations ADD COLUMN dead_letter INTEGER NOT NULL DEFAULT 0;
CREATE TABLE dead_letters (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  function TEXT NOT NULL,
  event BLOB,
  attempts INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  error TEXT NOT NULL,
  error_type TEXT NOT NULL DEFAULT '',
  queued_ms INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  replayed_as TEXT NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_by_function ON dead_letters (function, seq);
)sql",
    // 5: per-function user namespaces (issue 15): each function's slice of the subordinate ids.
    R"sql(
CREATE TABLE id_ranges (
  function TEXT PRIMARY KEY,
  host_first INTEGER NOT NULL UNIQUE,
  count INTEGER NOT NULL
);
)sql",
    // 6: registry pulls (issue 13) outlive the daemon: one interrupted by a restart shows as failed.
    R"sql(
CREATE TABLE pulls (
  id TEXT PRIMARY KEY,
  reference TEXT NOT NULL,
  state TEXT NOT NULL,
  started_ms INTEGER NOT NULL,
  finished_ms INTEGER,
  image TEXT NOT NULL DEFAULT '',
  digest TEXT NOT NULL DEFAULT '',
  error TEXT NOT NULL DEFAULT '',
  layers TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX pulls_by_start ON pulls (started_ms);
)sql",
    // 7: an upgrade does not change who a stored function runs as. Functions stored before
    // per-function user namespaces ran as host root: their specs say userns false now, so a restart
    // never moves their files' owners or their ports below 1024 (docs/ARCHITECTURE.md, security).
    // One that already ran in its own namespace since then (it holds an id range) keeps it.
    R"sql(
UPDATE functions SET spec = json_set(spec, '$.userns', json('false'))
  WHERE json_valid(spec) AND json_type(spec, '$') = 'object' AND json_type(spec, '$.userns') IS NULL
    AND name NOT IN (SELECT function FROM id_ranges);
UPDATE functions SET spec = json_set(spec, '$.userns', json('true'))
  WHERE json_valid(spec) AND json_type(spec, '$') = 'object' AND json_type(spec, '$.userns') IS NULL;
)sql",
    // 8: a Lambda caller's context (client context, Cognito identity, trace id) kept with a queued
    // Event invocation until it ran, and with its dead letter for a replay ('' = not given).
    R"sql(
ALTER TABLE async_payloads ADD COLUMN client_context TEXT NOT NULL DEFAULT '';
ALTER TABLE async_payloads ADD COLUMN cognito_identity TEXT NOT NULL DEFAULT '';
ALTER TABLE async_payloads ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN client_context TEXT NOT NULL DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN cognito_identity TEXT NOT NULL DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
)sql",
};

std::unexpected<Error> db_error(sqlite3* db, std::string what) {
  return fail(ErrorKind::internal, std::move(what), "state database", sqlite3_errmsg(db));
}

// One prepared statement, taken from the cache (prepared on first use) and reset with its bindings
// cleared on every path, so that it holds no read transaction and no bound copy once out of scope.
class Statement {
 public:
  Statement(sqlite3* db, StatementCache& cache, std::string_view sql) : db_(db) {
    auto it = cache.find(sql);
    if (it != cache.end() && !it->second.in_use) {
      cached_ = &it->second;
    } else if (it == cache.end()) {
      sqlite3_stmt* stmt = nullptr;
      rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
      if (rc_ != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return;
      }
      cached_ = &cache.emplace(std::string(sql), CachedStatement{stmt, false}).first->second;
    } else {
      rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
      return;
    }
    cached_->in_use = true;
    stmt_ = cached_->stmt;
  }
  ~Statement() {
    if (!cached_) {
      sqlite3_finalize(stmt_);
      return;
    }
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    cached_->in_use = false;
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Result<> ok(const char* what) const {
    if (rc_ != SQLITE_OK) return db_error(db_, what);
    return {};
  }
  Statement& bind(int i, std::string_view s) {
    // A null data() would bind NULL, not '' (a default-constructed string_view).
    sqlite3_bind_text(stmt_, i, s.data() ? s.data() : "", static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind_blob(int i, std::string_view s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  template <class T>
  Statement& bind(int i, const std::optional<T>& v) {
    if (v)
      sqlite3_bind_int64(stmt_, i, static_cast<int64_t>(*v));
    else
      sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // SQLITE_ROW → true, SQLITE_DONE → false.
  Result<bool> step(const char* what) {
    if (rc_ != SQLITE_OK) return db_error(db_, what);
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return db_error(db_, what);
  }
  Result<> run(const char* what) {
    FNEXEC_TRY(step(what));
    return {};
  }
  int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  template <class T>
  std::optional<T> opt(int col) const {
    if (is_null(col)) return std::nullopt;
    return static_cast<T>(sqlite3_column_int64(stmt_, col));
  }
  std::string text(int col) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  CachedStatement* cached_ = nullptr;  // null: a private statement, finalized here
  int rc_ = SQLITE_OK;
};

// The writes that need atomicity use a savepoint, not BEGIN: alone it is a transaction of its own,
// inside State::batch() it nests in the batch's one transaction.
constexpr const char* kBegin = "SAVEPOINT record";
constexpr const char* kCommit = "RELEASE record";
constexpr const char* kRollback = "ROLLBACK TO record; RELEASE record";

constexpr const char* kInvocationColumns =
    "i.seq, i.id, i.function, i.async, i.status, i.start_kind, i.outcome, i.queued_ms, i.started_ms, "
    "i.finished_ms, i.wall_us, i.cpu_user_us, i.cpu_system_us, i.memory_peak_bytes, i.billed_ms, "
    "i.exit_code, "
    "i.signal, i.oom_killed, i.timed_out, i.output_too_large, i.error, p.output, "
    "i.lifecycle, i.sandbox_id, i.sandbox_events, i.init_us, i.retired, i.error_type, i.error_body, "
    "i.net_bytes_out, i.net_packets_out, i.net_bytes_in, i.net_packets_in, i.delivery, i.next_attempt_ms, "
    "i.dead_letter";

InvocationRow read_invocation(const Statement& s) {
  InvocationRow r;
  r.seq = s.i64(0);
  r.id = s.text(1);
  r.function = s.text(2);
  r.async = s.i64(3) != 0;
  r.status = s.text(4);
  r.start = s.text(5);
  r.outcome = s.text(6);
  r.queued_ms = s.i64(7);
  r.started_ms = s.opt<int64_t>(8);
  r.finished_ms = s.opt<int64_t>(9);
  r.wall_us = s.opt<uint64_t>(10);
  r.cpu_user_us = s.opt<uint64_t>(11);
  r.cpu_system_us = s.opt<uint64_t>(12);
  r.memory_peak_bytes = s.opt<uint64_t>(13);
  r.billed_ms = s.opt<uint64_t>(14);
  r.exit_code = s.opt<int>(15);
  r.signal = s.opt<int>(16);
  r.oom_killed = s.i64(17) != 0;
  r.timed_out = s.i64(18) != 0;
  r.output_too_large = s.i64(19) != 0;
  r.error = s.text(20);
  if (!s.is_null(21)) r.output = s.text(21);
  r.sandbox.lifecycle = s.text(22);
  r.sandbox.sandbox_id = s.text(23);
  r.sandbox.sandbox_events = s.opt<uint64_t>(24);
  r.sandbox.init_us = s.opt<uint64_t>(25);
  r.sandbox.retired = s.text(26);
  r.sandbox.error_type = s.text(27);
  if (!s.is_null(28)) r.sandbox.error_body = s.text(28);
  if (!s.is_null(29))
    r.sandbox.network = SandboxFacts::Traffic{static_cast<uint64_t>(s.i64(29)), static_cast<uint64_t>(s.i64(30)),
                                              static_cast<uint64_t>(s.i64(31)), static_cast<uint64_t>(s.i64(32))};
  r.delivery = static_cast<uint32_t>(s.i64(33));
  r.next_attempt_ms = s.opt<int64_t>(34);
  r.dead_letter = s.i64(35) != 0;
  return r;
}

}  // namespace

Result<std::unique_ptr<State>> State::open(const std::filesystem::path& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return fail(ErrorKind::internal, "open state database", path.string(), msg);
  }
  std::unique_ptr<State> state(new State(db));
  // Wait for a lock instead of failing with SQLITE_BUSY (a backup or an sqlite3 shell holding the file).
  sqlite3_busy_timeout(db, 5000);
  // WAL: readers never block the writer; synchronous=NORMAL is durable across a process crash,
  // and only the last transactions can go on power loss (fsync at checkpoints).
  // locking_mode=EXCLUSIVE: the daemon is the only user (serve.lock), and it saves the file locks
  // of every transaction (measured: 12 fcntl calls per invocation record without it).
  // temp_store=MEMORY: a record's savepoint inside a batch's transaction keeps its sub-journal in
  // memory instead of a temp file (measured: ~19 pwrite calls per invocation record without it).
  FNEXEC_TRY(
      state->exec("PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                  "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"));
  if (auto r = state->migrate(); !r) return std::unexpected(r.error().context(path.string() + ": "));
  return state;
}

State::~State() {
  for (auto& [sql, cached] : statements_) sqlite3_finalize(cached.stmt);
  sqlite3_close(db_);
}

Result<> State::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return fail(ErrorKind::internal, "run SQL", "state database", msg);
  }
  return {};
}

Result<> State::exec_cached(const char* sql) {
  Statement q(db_, statements_, sql);
  return q.run(sql);
}

Result<> State::migrate() {
  std::lock_guard lock(mu_);
  // BEGIN IMMEDIATE takes the write lock first, so two daemons starting together cannot both migrate.
  FNEXEC_TRY(exec("BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"));
  auto body = [&]() -> Result<> {
    Statement q(db_, statements_, "SELECT version FROM schema_version");
    int version = FNEXEC_TRY(q.step("read schema_version")) ? static_cast<int>(q.i64(0)) : -1;
    if (version < 0) {
      FNEXEC_TRY(exec("INSERT INTO schema_version (version) VALUES (0)"));
      version = 0;
    }
    if (version > kSchemaVersion)
      return fail(ErrorKind::invalid, "open state database", {},
                  fmt::format("schema version {} is newer than this fnexec knows ({}); use a newer fnexec",
                              version, kSchemaVersion));
    for (int v = version; v < kSchemaVersion; ++v) {
      FNEXEC_TRY(exec(kMigrations[v]));
      Statement up(db_, statements_, "UPDATE schema_version SET version = ?");
      FNEXEC_TRY(up.bind(1, int64_t{v + 1}).run("update schema_version"));
      spdlog::debug("state migrated to schema_version={}", v + 1);
    }
    return {};
  };
  if (auto r = body(); !r) {
    (void)exec("ROLLBACK");
    return r;
  }
  return exec("COMMIT");
}

Result<int> State::schema_version() {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "SELECT version FROM schema_version");
  if (!FNEXEC_TRY(q.step("read schema_version"))) return 0;
  return static_cast<int>(q.i64(0));
}

Result<bool> State::put_function(const std::string& name, const std::string& spec_json, int64_t now_ms) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_,
              "INSERT INTO functions (name, spec, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?3) "
              "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_ms = excluded.updated_ms "
              "RETURNING created_ms = updated_ms");
  q.bind(1, name).bind(2, spec_json).bind(3, now_ms);
  if (!FNEXEC_TRY(q.step("store function"))) return false;
  return q.i64(0) != 0;
}

Result<std::optional<StoredFunction>> State::get_function(const std::string& name) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "SELECT name, spec, created_ms, updated_ms FROM functions WHERE name = ?");
  q.bind(1, name);
  if (!FNEXEC_TRY(q.step("read function"))) return std::nullopt;
  return StoredFunction{q.text(0), q.text(1), q.i64(2), q.i64(3)};
}

Result<std::vector<StoredFunction>> State::list_functions() {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "SELECT name, spec, created_ms, updated_ms FROM functions ORDER BY name");
  std::vector<StoredFunction> out;
  while (FNEXEC_TRY(q.step("list functions"))) out.push_back({q.text(0), q.text(1), q.i64(2), q.i64(3)});
  return out;
}

Result<bool> State::delete_function(const std::string& name) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "DELETE FROM functions WHERE name = ?");
  FNEXEC_TRY(q.bind(1, name).run("delete function"));
  return sqlite3_changes(db_) > 0;
}

Result<std::optional<sandbox::IdRange>> State::recorded_id_range(const std::string& function) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "SELECT host_first, count FROM id_ranges WHERE function = ?");
  q.bind(1, function);
  if (!FNEXEC_TRY(q.step("read id range"))) return std::nullopt;
  return sandbox::IdRange{static_cast<uid_t>(q.i64(0)), static_cast<uint32_t>(q.i64(1))};
}

Result<sandbox::IdRange> State::id_range_for(const std::string& function, sandbox::IdRange pool, uint32_t count,
                                             const std::function<bool(uid_t)>& in_use) {
  std::lock_guard lock(mu_);
  const uint64_t pool_end = uint64_t{pool.host_first} + pool.count;
  if (auto mine = FNEXEC_TRY(recorded_id_range(function));
      mine && mine->count == count && mine->host_first >= pool.host_first && mine->host_first + uint64_t{count} <= pool_end)
    return *mine;
  // Slots are aligned to `count` from the pool's start, so a taken slot is one row and the scan is
  // linear in the functions recorded.
  std::set<uint64_t> taken;
  {
    Statement q(db_, statements_, "SELECT host_first FROM id_ranges WHERE function != ?");
    q.bind(1, function);
    while (FNEXEC_TRY(q.step("read id ranges"))) taken.insert(static_cast<uint64_t>(q.i64(0)));
  }
  for (uint64_t first = pool.host_first; first + count <= pool_end; first += count) {
    // A row of another function anywhere inside this slot (a different slot size before) takes it.
    auto near = taken.lower_bound(first > count ? first - count + 1 : 0);
    if (near != taken.end() && *near < first + count) continue;
    if (in_use && in_use(static_cast<uid_t>(first))) continue;
    Statement up(db_, statements_, "INSERT OR REPLACE INTO id_ranges (function, host_first, count) VALUES (?, ?, ?)");
    FNEXEC_TRY(up.bind(1, function).bind(2, static_cast<int64_t>(first)).bind(3, int64_t{count}).run("record id range"));
    return sandbox::IdRange{static_cast<uid_t>(first), count};
  }
  return fail(ErrorKind::unavailable, "allocate user namespace ids for function", function,
              fmt::format("all {} ranges of {} ids in {}:{} are taken; give the fnexec lines of /etc/subuid and "
                          "/etc/subgid more ids, or lower userns_ids_per_function in fnexec.conf",
                          pool.count / count, count, pool.host_first, pool.count));
}

Result<> State::release_id_range(const std::string& function) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "DELETE FROM id_ranges WHERE function = ?");
  return q.bind(1, function).run("release id range");
}

Result<> State::insert_running(const std::string& id, const std::string& function, int64_t now_ms,
                               std::string_view lifecycle) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_,
              "INSERT INTO invocations (id, function, async, status, queued_ms, started_ms, lifecycle) "
              "VALUES (?1, ?2, 0, 'running', ?3, ?3, ?4)");
  return q.bind(1, id).bind(2, function).bind(3, now_ms).bind(4, lifecycle).run("record invocation");
}

Result<> State::enqueue(const std::string& id, const std::string& function, std::string_view event,
                        int64_t now_ms, const invoke::EventContext& context) {
  std::lock_guard lock(mu_);
  FNEXEC_TRY(exec_cached(kBegin));
  auto body = [&]() -> Result<> {
    Statement q(
        db_, statements_,
        "INSERT INTO invocations (id, function, async, status, queued_ms) VALUES (?1, ?2, 1, 'queued', ?3)");
    FNEXEC_TRY(q.bind(1, id).bind(2, function).bind(3, now_ms).run("queue invocation"));
    Statement p(db_, statements_,
                "INSERT INTO async_payloads (id, event, client_context, cognito_identity, trace_id) "
                "VALUES (?1, ?2, ?3, ?4, ?5)");
    p.bind(1, id).bind_blob(2, event).bind(3, context.client_context).bind(4, context.cognito_identity);
    return p.bind(5, context.trace_id).run("store event");
  };
  if (auto r = body(); !r) {
    (void)exec(kRollback);
    return r;
  }
  return exec_cached(kCommit);
}

Result<std::string> State::start_queued(const std::string& id, int64_t now_ms, invoke::EventContext* context) {
  std::lock_guard lock(mu_);
  Statement q(
      db_, statements_,
      "UPDATE invocations SET status = 'running', started_ms = ?2, next_attempt_ms = NULL "
      "WHERE id = ?1 AND status = 'queued'");
  FNEXEC_TRY(q.bind(1, id).bind(2, now_ms).run("start queued invocation"));
  if (sqlite3_changes(db_) == 0)
    return fail(ErrorKind::not_found, "start queued invocation", id, "not queued");
  Statement e(db_, statements_,
              "SELECT event, client_context, cognito_identity, trace_id FROM async_payloads WHERE id = ?");
  e.bind(1, id);
  if (!FNEXEC_TRY(e.step("read event"))) return std::string();
  if (context) *context = {e.text(1), e.text(2), e.text(3)};
  return e.text(0);
}

Result<> State::requeue(const std::string& id) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "UPDATE invocations SET status = 'queued', started_ms = NULL WHERE id = ?");
  return q.bind(1, id).run("requeue invocation");
}

Result<> State::finish(const InvocationEnd& e, const Retention& retention) {
  std::lock_guard lock(mu_);
  std::string function;
  uint64_t records = 0;
  FNEXEC_TRY(exec_cached(kBegin));
  auto body = [&]() -> Result<> {
    Statement q(db_, statements_,
                "UPDATE invocations SET status = CASE ?3 WHEN 'lost' THEN 'lost' ELSE 'done' END, "
                "start_kind = ?2, outcome = ?3, finished_ms = ?4, next_attempt_ms = NULL, "
                "wall_us = ?5, cpu_user_us = ?6, cpu_system_us = ?7, memory_peak_bytes = ?8, billed_ms = ?9, "
                "exit_code = ?10, signal = ?11, oom_killed = ?12, timed_out = ?13, output_too_large = ?14, "
                "error = ?15, lifecycle = COALESCE(NULLIF(?16, ''), lifecycle), sandbox_id = ?17, "
                "sandbox_events = ?18, init_us = ?19, retired = ?20, error_type = ?21, error_body = ?22, "
                "net_bytes_out = ?23, net_packets_out = ?24, net_bytes_in = ?25, net_packets_in = ?26 "
                "WHERE id = ?1 RETURNING function");
    q.bind(1, e.id).bind(2, e.start).bind(3, e.outcome).bind(4, e.finished_ms);
    q.bind(5, e.wall_us).bind(6, e.cpu_user_us).bind(7, e.cpu_system_us).bind(8, e.memory_peak_bytes);
    q.bind(9, e.billed_ms).bind(10, e.exit_code).bind(11, e.signal);
    q.bind(12, int64_t{e.oom_killed}).bind(13, int64_t{e.timed_out}).bind(14, int64_t{e.output_too_large});
    q.bind(15, e.error);
    // The sandbox's facts; an invocation that never ran (no lifecycle) keeps the one it was queued with.
    const SandboxFacts& f = e.sandbox;
    q.bind(16, f.lifecycle).bind(17, f.sandbox_id).bind(18, f.sandbox_events).bind(19, f.init_us);
    q.bind(20, f.retired).bind(21, f.error_type);
    if (f.error_body)
      q.bind(22, *f.error_body);
    else
      q.bind(22, std::optional<int64_t>{});
    auto traffic = [&](uint64_t SandboxFacts::Traffic::*field) {
      return f.network ? std::optional<uint64_t>((*f.network).*field) : std::nullopt;
    };
    q.bind(23, traffic(&SandboxFacts::Traffic::bytes_out)).bind(24, traffic(&SandboxFacts::Traffic::packets_out));
    q.bind(25, traffic(&SandboxFacts::Traffic::bytes_in)).bind(26, traffic(&SandboxFacts::Traffic::packets_in));
    if (!FNEXEC_TRY(q.step("finish invocation")))
      return fail(ErrorKind::not_found, "finish invocation", e.id, "no such record");
    function = q.text(0);
    if (e.output) {
      Statement p(db_, statements_, "UPDATE async_payloads SET event = NULL, client_context = '', cognito_identity = '', "
                                    "trace_id = '', output = ?2 WHERE id = ?1");
      FNEXEC_TRY(p.bind(1, e.id).bind_blob(2, *e.output).run("store output"));
    }
    // Retention: the function's finished records beyond the limit go, oldest first. Counted once
    // per function and then tracked; deleted in batches of up to 1/64 of the limit, because one
    // delete per record doubled a record's cost (measured: 204 us instead of 99 us, with the
    // limit at 10000), while one per batch costs nothing measurable (77 us either way).
    auto it = record_counts_.find(function);
    if (it == record_counts_.end()) {
      Statement count(db_, statements_,
                      "SELECT count(*) FROM invocations WHERE function = ? AND status IN ('done', 'lost')");
      count.bind(1, function);
      records = FNEXEC_TRY(count.step("count records")) ? static_cast<uint64_t>(count.i64(0)) : 0;
    } else {
      records = it->second + 1;
    }
    uint64_t batch = std::clamp<uint64_t>(retention.records_per_function / 64, 1, 256);
    if (records < retention.records_per_function + batch) return {};
    Statement prune(db_, statements_,
                    "DELETE FROM invocations WHERE seq IN (SELECT seq FROM invocations WHERE function = ?1 "
                    "AND status IN ('done', 'lost') ORDER BY seq LIMIT ?2)");
    FNEXEC_TRY(prune.bind(1, function)
                   .bind(2, static_cast<int64_t>(records - retention.records_per_function))
                   .run("prune records"));
    records = retention.records_per_function;
    return {};
  };
  if (auto r = body(); !r) {
    (void)exec(kRollback);
    record_counts_.erase(function);  // recounted next time
    return r;
  }
  FNEXEC_TRY(exec_cached(kCommit));
  record_counts_[function] = records;
  return {};
}

Result<std::vector<Result<>>> State::batch(std::span<const std::function<Result<>(State&)>> writes) {
  std::lock_guard lock(mu_);
  FNEXEC_TRY(exec_cached("BEGIN"));
  std::vector<Result<>> results;
  results.reserve(writes.size());
  for (const auto& w : writes) results.push_back(w(*this));
  if (auto r = exec_cached("COMMIT"); !r) {
    (void)exec("ROLLBACK");
    log_bytes_.clear();      // the cached sizes counted appends that did not commit; re-summed when used
    record_counts_.clear();  // likewise the finished records per function; recounted when used
    return std::unexpected(r.error());
  }
  return results;
}

Result<std::optional<InvocationRow>> State::get_invocation(const std::string& id) {
  std::lock_guard lock(mu_);
  auto sql =
      fmt::format("SELECT {} FROM invocations i LEFT JOIN async_payloads p ON p.id = i.id WHERE i.id = ?",
                  kInvocationColumns);
  Statement q(db_, statements_, sql);
  q.bind(1, id);
  if (!FNEXEC_TRY(q.step("read invocation"))) return std::nullopt;
  return read_invocation(q);
}

Result<std::vector<InvocationRow>> State::list_invocations(const std::string& function, int64_t since_ms,
                                                           uint64_t limit) {
  std::lock_guard lock(mu_);
  // Lists leave the outputs out (they can be megabytes); GET /v1/invocations/{id} has them.
  auto sql = fmt::format(
      "SELECT {} FROM invocations i LEFT JOIN (SELECT NULL AS id, NULL AS output) p ON 0 "
      "WHERE (?1 = '' OR i.function = ?1) AND i.queued_ms >= ?2 ORDER BY i.seq DESC LIMIT ?3",
      kInvocationColumns);
  Statement q(db_, statements_, sql);
  q.bind(1, function).bind(2, since_ms).bind(3, static_cast<int64_t>(limit));
  std::vector<InvocationRow> out;
  while (FNEXEC_TRY(q.step("list invocations"))) out.push_back(read_invocation(q));
  return out;
}

Result<std::vector<QueuedInvocation>> State::queued() {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_,
              "SELECT id, function, delivery, coalesce(next_attempt_ms, 0) FROM invocations "
              "WHERE status = 'queued' ORDER BY seq");
  std::vector<QueuedInvocation> out;
  while (FNEXEC_TRY(q.step("list queued invocations")))
    out.push_back({q.text(0), q.text(1), static_cast<uint32_t>(q.i64(2)), q.i64(3)});
  return out;
}

Result<Recovery> State::recover(int64_t now_ms) {
  std::lock_guard lock(mu_);
  Recovery r;
  Statement lost(db_, statements_,
                 "UPDATE invocations SET status = 'lost', outcome = 'lost', finished_ms = ?1, "
                 "error = 'the daemon stopped while this invocation ran' WHERE status = 'running' AND async = 0");
  FNEXEC_TRY(lost.bind(1, now_ms).run("mark lost invocations"));
  r.lost = sqlite3_changes(db_);
  Statement running(db_, statements_,
                    "SELECT id, function, delivery FROM invocations WHERE status = 'running' ORDER BY seq");
  while (FNEXEC_TRY(running.step("list interrupted invocations")))
    r.interrupted.push_back({running.text(0), running.text(1), static_cast<uint32_t>(running.i64(2)), 0});
  record_counts_.clear();  // lost records count as finished ones: recounted per function
  Statement q(db_, statements_, "SELECT count(*) FROM invocations WHERE status = 'queued'");
  if (FNEXEC_TRY(q.step("count queued"))) r.queued = static_cast<int>(q.i64(0));
  Statement pulls(db_, statements_,
                  "UPDATE pulls SET state = 'failed', finished_ms = ?1, error = 'interrupted: the daemon stopped "
                  "while this pull ' || (CASE state WHEN 'queued' THEN 'waited to start' ELSE 'ran' END) || "
                  "'; the layers it had completely verified stay in the store, so pulling ' || reference || "
                  "' again fetches only the rest' WHERE state IN ('queued', 'running')");
  FNEXEC_TRY(pulls.bind(1, now_ms).run("mark interrupted pulls"));
  r.pulls_interrupted = sqlite3_changes(db_);
  return r;
}

Result<> State::put_pull(const PullRecord& p, uint64_t keep) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_,
              "INSERT INTO pulls (id, reference, state, started_ms, finished_ms, image, digest, error, layers) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
              "finished_ms = excluded.finished_ms, image = excluded.image, digest = excluded.digest, "
              "error = excluded.error, layers = excluded.layers");
  q.bind(1, p.id).bind(2, p.reference).bind(3, p.state).bind(4, p.started_ms).bind(5, p.finished_ms);
  FNEXEC_TRY(q.bind(6, p.image).bind(7, p.digest).bind(8, p.error).bind(9, p.layers_json).run("record pull"));
  if (!p.finished_ms) return {};
  Statement prune(db_, statements_,
                  "DELETE FROM pulls WHERE state IN ('done', 'failed') AND id NOT IN "
                  "(SELECT id FROM pulls WHERE state IN ('done', 'failed') ORDER BY started_ms DESC LIMIT ?1)");
  return prune.bind(1, static_cast<int64_t>(keep)).run("prune pulls");
}

Result<std::optional<PullRecord>> State::get_pull(const std::string& id) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_,
              "SELECT id, reference, state, started_ms, finished_ms, image, digest, error, layers FROM pulls WHERE id = ?1");
  q.bind(1, id);
  if (!FNEXEC_TRY(q.step("read pull"))) return std::optional<PullRecord>{};
  PullRecord p{q.text(0), q.text(1), q.text(2), q.i64(3), std::nullopt, q.text(5), q.text(6), q.text(7), q.text(8)};
  if (!q.is_null(4)) p.finished_ms = q.i64(4);
  return std::optional<PullRecord>{std::move(p)};
}

Result<> State::retry(const InvocationEnd& failed, uint32_t next_delivery, int64_t next_attempt_ms) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_,
              "UPDATE invocations SET status = 'queued', delivery = ?2, next_attempt_ms = ?3, started_ms = NULL, "
              "error = ?4, error_type = ?5 WHERE id = ?1 AND status = 'running'");
  q.bind(1, failed.id).bind(2, int64_t{next_delivery}).bind(3, next_attempt_ms).bind(4, failed.error);
  FNEXEC_TRY(q.bind(5, failed.sandbox.error_type).run("queue retry"));
  if (sqlite3_changes(db_) == 0) return fail(ErrorKind::not_found, "queue retry", failed.id, "not running");
  return {};
}

Result<> State::record_cluster_delivery(const ClusterDelivery& d, const InvocationEnd& end,
                                       const Retention& retention) {
  std::lock_guard lock(mu_);
  FNEXEC_TRY(exec_cached("SAVEPOINT cluster_delivery"));
  auto body = [&]() -> Result<> {
    Statement row(db_, statements_,
                  "INSERT INTO invocations (id, function, async, status, queued_ms, started_ms, delivery, dead_letter) "
                  "VALUES (?1, ?2, 1, 'running', ?3, ?4, ?5, ?6) ON CONFLICT(id) DO UPDATE SET status = 'running', "
                  "started_ms = excluded.started_ms, delivery = excluded.delivery, dead_letter = excluded.dead_letter");
    row.bind(1, end.id).bind(2, d.function).bind(3, d.queued_ms).bind(4, d.started_ms);
    FNEXEC_TRY(row.bind(5, int64_t{d.delivery}).bind(6, int64_t{d.dead_letter}).run("record cluster delivery"));
    // finish() keeps the output in async_payloads, as for a local async invocation (no event: it is in the stream).
    Statement payload(db_, statements_, "INSERT OR IGNORE INTO async_payloads (id, event) VALUES (?1, NULL)");
    FNEXEC_TRY(payload.bind(1, end.id).run("record cluster delivery"));
    if (d.next) return retry(end, d.next->first, d.next->second);
    return finish(end, retention);
  };
  if (auto r = body(); !r) {
    (void)exec("ROLLBACK TO cluster_delivery; RELEASE cluster_delivery");
    return r;
  }
  return exec_cached("RELEASE cluster_delivery");
}

Result<> State::dead_letter(const InvocationEnd& end, uint32_t attempts, const Retention& retention) {
  std::lock_guard lock(mu_);
  FNEXEC_TRY(exec_cached("SAVEPOINT dead_letter"));
  std::string function;
  auto body = [&]() -> Result<> {
    {
      // The event is copied before finish(), which drops it from async_payloads when it keeps the
      // output; the statement is reset before finish() opens its savepoint (SQLite refuses one
      // while a statement is in progress).
      Statement q(db_, statements_,
                  "INSERT INTO dead_letters (id, function, event, attempts, outcome, error, error_type, "
                  "queued_ms, time_ms, client_context, cognito_identity, trace_id) SELECT i.id, i.function, "
                  "p.event, ?2, ?3, ?4, ?5, i.queued_ms, ?6, coalesce(p.client_context, ''), "
                  "coalesce(p.cognito_identity, ''), coalesce(p.trace_id, '') "
                  "FROM invocations i LEFT JOIN async_payloads p ON p.id = i.id WHERE i.id = ?1 RETURNING function");
      q.bind(1, end.id).bind(2, int64_t{attempts}).bind(3, end.outcome).bind(4, end.error);
      q.bind(5, end.sandbox.error_type).bind(6, end.finished_ms);
      if (!FNEXEC_TRY(q.step("store dead letter")))
        return fail(ErrorKind::not_found, "store dead letter", end.id, "no such record");
      function = q.text(0);
    }
    FNEXEC_TRY(finish(end, retention));
    Statement mark(db_, statements_, "UPDATE invocations SET dead_letter = 1 WHERE id = ?");
    FNEXEC_TRY(mark.bind(1, end.id).run("mark dead letter"));
    // Bounded like the records: the function's oldest entries beyond records_per_function go.
    Statement prune(db_, statements_,
                    "DELETE FROM dead_letters WHERE function = ?1 AND seq <= (SELECT seq FROM dead_letters "
                    "WHERE function = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)");
    return prune.bind(1, function)
        .bind(2, static_cast<int64_t>(retention.records_per_function))
        .run("prune dead letters");
  };
  if (auto r = body(); !r) {
    (void)exec("ROLLBACK TO dead_letter; RELEASE dead_letter");
    record_counts_.clear();  // finish() may have counted a record that did not commit
    return r;
  }
  return exec_cached("RELEASE dead_letter");
}

namespace {

constexpr const char* kDeadLetterColumns =
    "seq, id, function, attempts, outcome, error, error_type, queued_ms, time_ms, replayed_as";

DeadLetter read_dead_letter(const Statement& s) {
  DeadLetter d;
  d.seq = s.i64(0);
  d.id = s.text(1);
  d.function = s.text(2);
  d.attempts = static_cast<uint32_t>(s.i64(3));
  d.outcome = s.text(4);
  d.error = s.text(5);
  d.error_type = s.text(6);
  d.queued_ms = s.i64(7);
  d.time_ms = s.i64(8);
  d.replayed_as = s.text(9);
  return d;
}

}  // namespace

Result<std::vector<DeadLetter>> State::dead_letters(const std::string& function, int64_t after_seq,
                                                    uint64_t limit) {
  std::lock_guard lock(mu_);
  auto sql = fmt::format(
      "SELECT {} FROM dead_letters WHERE (?1 = '' OR function = ?1) AND seq > ?2 ORDER BY seq LIMIT ?3",
      kDeadLetterColumns);
  Statement q(db_, statements_, sql);
  q.bind(1, function).bind(2, after_seq).bind(3, static_cast<int64_t>(limit));
  std::vector<DeadLetter> out;
  while (FNEXEC_TRY(q.step("list dead letters"))) out.push_back(read_dead_letter(q));
  return out;
}

Result<std::optional<DeadLetter>> State::get_dead_letter(const std::string& id) {
  std::lock_guard lock(mu_);
  auto sql = fmt::format("SELECT {}, event FROM dead_letters WHERE id = ?", kDeadLetterColumns);
  Statement q(db_, statements_, sql);
  q.bind(1, id);
  if (!FNEXEC_TRY(q.step("read dead letter"))) return std::nullopt;
  auto d = read_dead_letter(q);
  d.event = q.text(10);
  return d;
}

Result<bool> State::delete_dead_letter(const std::string& id) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "DELETE FROM dead_letters WHERE id = ?");
  FNEXEC_TRY(q.bind(1, id).run("delete dead letter"));
  return sqlite3_changes(db_) > 0;
}

Result<std::string> State::replay_dead_letter(const std::string& id, const std::string& new_id, int64_t now_ms) {
  std::lock_guard lock(mu_);
  FNEXEC_TRY(exec_cached(kBegin));
  std::string function;
  auto body = [&]() -> Result<> {
    Statement q(db_, statements_, "SELECT function, replayed_as FROM dead_letters WHERE id = ?");
    q.bind(1, id);
    if (!FNEXEC_TRY(q.step("read dead letter")))
      return fail(ErrorKind::not_found, "replay dead letter", id, "no such dead letter");
    function = q.text(0);
    if (auto replayed = q.text(1); !replayed.empty())
      return fail(ErrorKind::exists, "replay dead letter", id,
                  fmt::format("it was replayed already as invocation {}; delete it or look at that one", replayed));
    Statement ins(db_, statements_,
                  "INSERT INTO invocations (id, function, async, status, queued_ms) VALUES (?1, ?2, 1, 'queued', ?3)");
    FNEXEC_TRY(ins.bind(1, new_id).bind(2, function).bind(3, now_ms).run("queue replay"));
    Statement p(db_, statements_,
                "INSERT INTO async_payloads (id, event, client_context, cognito_identity, trace_id) "
                "SELECT ?1, event, client_context, cognito_identity, trace_id FROM dead_letters WHERE id = ?2");
    FNEXEC_TRY(p.bind(1, new_id).bind(2, id).run("store replayed event"));
    Statement mark(db_, statements_, "UPDATE dead_letters SET replayed_as = ?2 WHERE id = ?1");
    return mark.bind(1, id).bind(2, new_id).run("mark dead letter replayed");
  };
  if (auto r = body(); !r) {
    (void)exec(kRollback);
    return std::unexpected(r.error());
  }
  FNEXEC_TRY(exec_cached(kCommit));
  return function;
}

Result<> State::append_log(const std::string& function, const std::string& invocation_id, int64_t time_ms,
                           std::string_view text, const Retention& retention) {
  std::lock_guard lock(mu_);
  // Bytes kept per function, summed once per function and then tracked, so that dropping the
  // oldest entries costs what is dropped instead of a scan of the function's logs per append.
  auto it = log_bytes_.find(function);
  if (it == log_bytes_.end()) {
    Statement sum(db_, statements_, "SELECT coalesce(sum(length(text)), 0) FROM logs WHERE function = ?");
    sum.bind(1, function);
    uint64_t total = FNEXEC_TRY(sum.step("sum log sizes")) ? static_cast<uint64_t>(sum.i64(0)) : 0;
    it = log_bytes_.emplace(function, total).first;
  }
  FNEXEC_TRY(exec_cached(kBegin));
  uint64_t total = it->second + text.size();
  auto body = [&]() -> Result<> {
    Statement q(db_, statements_,
                "INSERT INTO logs (function, invocation_id, time_ms, text) VALUES (?1, ?2, ?3, ?4)");
    FNEXEC_TRY(
        q.bind(1, function).bind(2, invocation_id).bind(3, time_ms).bind_blob(4, text).run("store log"));
    int64_t newest = sqlite3_last_insert_rowid(db_);
    while (total > retention.log_bytes_per_function) {
      // Oldest first; the newest entry always stays, even when it alone is over the budget.
      Statement old(
          db_, statements_,
          "SELECT seq, length(text) FROM logs WHERE function = ?1 AND seq < ?2 ORDER BY seq LIMIT 64");
      old.bind(1, function).bind(2, newest);
      int64_t last = -1;
      while (total > retention.log_bytes_per_function && FNEXEC_TRY(old.step("find old logs"))) {
        last = old.i64(0);
        total -= static_cast<uint64_t>(old.i64(1));
      }
      if (last < 0) break;
      Statement del(db_, statements_, "DELETE FROM logs WHERE function = ?1 AND seq <= ?2");
      FNEXEC_TRY(del.bind(1, function).bind(2, last).run("prune logs"));
    }
    return {};
  };
  if (auto r = body(); !r) {
    (void)exec(kRollback);
    log_bytes_.erase(function);  // re-summed next time
    return r;
  }
  FNEXEC_TRY(exec_cached(kCommit));
  it->second = total;
  return {};
}

Result<std::vector<LogEntry>> State::logs(const std::string& function, int64_t since_ms, int64_t after_seq,
                                          uint64_t limit) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_,
              "SELECT seq, invocation_id, time_ms, text FROM (SELECT * FROM logs WHERE function = ?1 AND "
              "time_ms >= ?2 AND seq > ?3 ORDER BY seq DESC LIMIT ?4) ORDER BY seq");
  q.bind(1, function).bind(2, since_ms).bind(3, after_seq).bind(4, static_cast<int64_t>(limit));
  std::vector<LogEntry> out;
  while (FNEXEC_TRY(q.step("read logs"))) out.push_back({q.i64(0), q.text(1), q.i64(2), q.text(3)});
  return out;
}

Result<std::optional<std::string>> State::log_of(const std::string& invocation_id) {
  std::lock_guard lock(mu_);
  Statement q(db_, statements_, "SELECT text FROM logs WHERE invocation_id = ? ORDER BY seq DESC LIMIT 1");
  q.bind(1, invocation_id);
  if (!FNEXEC_TRY(q.step("read log"))) return std::nullopt;
  return q.text(0);
}

}  // namespace fnexec::server
