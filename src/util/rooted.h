// Host-side access to files inside a tree the host does not trust (an image layer, a --rootfs):
// every path resolves as if the tree were "/" (openat2 RESOLVE_IN_ROOT), so `etc -> /etc` or
// `../../etc` symlinks name the tree's own files, never the host's.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::rooted {

// Opens path (relative, or absolute meaning "from root") below the directory root_fd with flags
// (O_CLOEXEC is added); symlinks and ".." resolve inside root, magic links and mount crossings fail.
Result<UniqueFd> open_in_root(int root_fd, std::string_view path, int flags);

// The entry at path inside the tree at root, itself when it is a symlink (lstat); nullopt when absent.
Result<std::optional<struct stat>> lstat_in_root(const std::filesystem::path& root, std::string_view path);

// Reads the regular file at path inside the tree at root. nullopt when it is absent (ENOENT,
// ENOTDIR) or not a regular file (an overlay whiteout, a directory, a device).
Result<std::optional<std::string>> read_file_in_root(const std::filesystem::path& root, std::string_view path);

}  // namespace fnexec::rooted
