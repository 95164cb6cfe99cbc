#include "support/state_v4.h"

#include <sqlite3.h>

#include "support/state_v1.h"

namespace fnexec::test {

namespace {

// Runs sql once, or once per name with ?1 bound to the name and ?2 (when used) to a host id
// range's first id, distinct per name.
std::string exec(const std::filesystem::path& db, const char* sql, const std::vector<std::string>& names = {}) {
  sqlite3* h = nullptr;
  if (sqlite3_open(db.c_str(), &h) != SQLITE_OK) {
    std::string err = h ? sqlite3_errmsg(h) : "out of memory";
    sqlite3_close(h);
    return err;
  }
  std::string out;
  if (names.empty()) {
    char* err = nullptr;
    if (sqlite3_exec(h, sql, nullptr, nullptr, &err) != SQLITE_OK) out = err ? err : "exec";
    sqlite3_free(err);
  }
  for (size_t i = 0; i < names.size() && out.empty(); ++i) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h, sql, -1, &st, nullptr) != SQLITE_OK) {
      out = sqlite3_errmsg(h);
      break;
    }
    sqlite3_bind_text(st, 1, names[i].c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_int64(st, 2, 200000 + 65536 * static_cast<int64_t>(i));
    if (sqlite3_step(st) != SQLITE_DONE) out = sqlite3_errmsg(h);
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return out;
}

}  // namespace

std::string write_state_db_v4(const std::filesystem::path& db, const std::vector<std::string>& functions,
                              const std::string& image) {
  if (functions.empty()) return "no functions";
  if (auto e = write_state_db_v1(db, {functions.front(), image}); !e.empty()) return e;
  // Migrations 2 to 4 as they shipped, and the spec fields a version 4 fnexec wrote.
  const char* v2_to_v4 = R"sql(
ALTER TABLE invocations ADD COLUMN lifecycle TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN sandbox_id TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN sandbox_events INTEGER;
ALTER TABLE invocations ADD COLUMN init_us INTEGER;
ALTER TABLE invocations ADD COLUMN retired TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN error_type TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN error_body TEXT;
ALTER TABLE invocations ADD COLUMN net_bytes_out INTEGER;
ALTER TABLE invocations ADD COLUMN net_packets_out INTEGER;
ALTER TABLE invocations ADD COLUMN net_bytes_in INTEGER;
ALTER TABLE invocations ADD COLUMN net_packets_in INTEGER;
ALTER TABLE invocations ADD COLUMN delivery INTEGER NOT NULL DEFAULT 1;
ALTER TABLE invocations ADD COLUMN next_attempt_ms INTEGER;
ALTER TABLE invocations ADD COLUMN dead_letter INTEGER NOT NULL DEFAULT 0;
CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, function TEXT NOT NULL, event BLOB,
  attempts INTEGER NOT NULL, outcome TEXT NOT NULL, error TEXT NOT NULL, error_type TEXT NOT NULL DEFAULT '',
  queued_ms INTEGER NOT NULL, time_ms INTEGER NOT NULL, replayed_as TEXT NOT NULL DEFAULT '');
CREATE INDEX dead_letters_by_function ON dead_letters (function, seq);
UPDATE functions SET spec = json_set(spec, '$.lifecycle', 'oneshot', '$.max_events_per_sandbox', 0,
  '$.init_timeout_ms', 10000, '$.network', 'none', '$.retries', 2);
UPDATE schema_version SET version = 4;
)sql";
  if (auto e = exec(db, v2_to_v4); !e.empty()) return e;
  std::vector<std::string> rest(functions.begin() + 1, functions.end());
  if (rest.empty()) return {};
  return exec(db, "INSERT INTO functions SELECT ?1, json_set(spec, '$.name', ?1), 1, 2 FROM functions LIMIT 1", rest);
}

std::string upgrade_state_db_v4_to_v5(const std::filesystem::path& db, const std::vector<std::string>& with_range) {
  const char* v5 = R"sql(
CREATE TABLE id_ranges (function TEXT PRIMARY KEY, host_first INTEGER NOT NULL UNIQUE, count INTEGER NOT NULL);
UPDATE schema_version SET version = 5;
)sql";
  if (auto e = exec(db, v5); !e.empty()) return e;
  if (with_range.empty()) return {};
  return exec(db, "INSERT INTO id_ranges VALUES (?1, ?2, 65536)", with_range);
}

}  // namespace fnexec::test
