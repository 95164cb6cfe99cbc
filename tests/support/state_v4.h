// A state database as fnexec serve with schema version 4 (before per-function user namespaces) left
// it, and the same with the id_ranges table of version 5, for the migration tests. Frozen: never
// change them when the schema moves on.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace fnexec::test {

// Writes db (which must not exist) at schema version 4 with each name in functions registered as a
// oneshot function of image (min_warm 0, the image's cmd, no "userns" field). Returns "" or what failed.
std::string write_state_db_v4(const std::filesystem::path& db, const std::vector<std::string>& functions,
                              const std::string& image);

// Moves a version 4 database to version 5 as fnexec did, and records an id range for each name in
// with_range (a function that ran in its own user namespace under version 5). Returns "" or what failed.
std::string upgrade_state_db_v4_to_v5(const std::filesystem::path& db, const std::vector<std::string>& with_range);

}  // namespace fnexec::test
