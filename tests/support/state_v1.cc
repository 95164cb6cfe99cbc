#include "support/state_v1.h"

#include <sqlite3.h>

namespace fnexec::test {

std::string write_state_db_v1(const std::filesystem::path& db, const StateV1Function& f) {
  sqlite3* h = nullptr;
  if (sqlite3_open(db.c_str(), &h) != SQLITE_OK) {
    std::string err = h ? sqlite3_errmsg(h) : "out of memory";
    sqlite3_close(h);
    return err;
  }
  std::string spec = R"({"name":")" + f.name + R"(","image":")" + f.image +
                     R"(","entrypoint":null,"cmd":null,"env":[],"workdir":"","user":"","memory_mb":64,)"
                     R"("cpus":1,"pids_limit":256,"timeout_ms":30000,"min_warm":0,"max_concurrency":2,)"
                     R"("idle_timeout_s":600,"max_output_bytes":6291456,"max_log_bytes":65536})";
  const char* sql = R"sql(
PRAGMA journal_mode=WAL;
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
CREATE TABLE functions (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL);
CREATE TABLE invocations (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, function TEXT NOT NULL,
  async INTEGER NOT NULL, status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'lost')),
  start_kind TEXT NOT NULL DEFAULT '', outcome TEXT NOT NULL DEFAULT '', queued_ms INTEGER NOT NULL,
  started_ms INTEGER, finished_ms INTEGER, wall_us INTEGER, cpu_user_us INTEGER, cpu_system_us INTEGER,
  memory_peak_bytes INTEGER, billed_ms INTEGER, exit_code INTEGER, signal INTEGER,
  oom_killed INTEGER NOT NULL DEFAULT 0, timed_out INTEGER NOT NULL DEFAULT 0,
  output_too_large INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '');
CREATE INDEX invocations_by_function ON invocations (function, seq);
CREATE INDEX invocations_unfinished ON invocations (status) WHERE status IN ('queued', 'running');
CREATE TABLE async_payloads (id TEXT PRIMARY KEY REFERENCES invocations (id) ON DELETE CASCADE,
  event BLOB, output BLOB);
CREATE TABLE logs (seq INTEGER PRIMARY KEY, function TEXT NOT NULL, invocation_id TEXT NOT NULL,
  time_ms INTEGER NOT NULL, text BLOB NOT NULL);
CREATE INDEX logs_by_function ON logs (function, seq);
CREATE INDEX logs_by_invocation ON logs (invocation_id);
)sql";
  char* err = nullptr;
  std::string out;
  if (sqlite3_exec(h, sql, nullptr, nullptr, &err) != SQLITE_OK) out = err ? err : "schema";
  sqlite3_free(err);
  // The rows, with the names bound.
  for (const char* row :
       {"INSERT INTO functions VALUES (?1, ?2, 1, 2)",
        "INSERT INTO invocations (id, function, async, status, start_kind, outcome, queued_ms, started_ms, "
        "finished_ms, wall_us, exit_code) VALUES ('v1-done', ?1, 0, 'done', 'warm', 'success', 10, 10, 11, 900, 0)",
        "INSERT INTO invocations (id, function, async, status, queued_ms, started_ms) "
        "VALUES ('v1-running', ?1, 0, 'running', 20, 20)"}) {
    if (!out.empty()) break;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h, row, -1, &st, nullptr) != SQLITE_OK) {
      out = sqlite3_errmsg(h);
      break;
    }
    sqlite3_bind_text(st, 1, f.name.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_text(st, 2, spec.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) out = sqlite3_errmsg(h);
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return out;
}

}  // namespace fnexec::test
