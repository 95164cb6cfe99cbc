// A state database as fnexec serve with schema version 1 (before lifecycles) left it, for the
// migration tests. Frozen: never change it when the schema moves on.
#pragma once

#include <filesystem>
#include <string>

namespace fnexec::test {

struct StateV1Function {
  std::string name;
  std::string image;  // a reference the store has
};

// Writes db (which must not exist) with `function` registered (oneshot, min_warm 0, the image's
// cmd), a finished record "v1-done" and a record "v1-running" of an instance that was killed.
// Returns "" or what failed.
std::string write_state_db_v1(const std::filesystem::path& db, const StateV1Function& function);

}  // namespace fnexec::test
