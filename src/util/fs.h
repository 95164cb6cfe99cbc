// Small filesystem helpers shared by modules: whole-file reads and writes with errno, temp dirs.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "util/error.h"

namespace fnexec::fs {

Result<std::string> read_file(const std::filesystem::path& path);
// Reads fd from its current offset to its end; what names the file in an error.
Result<std::string> read_fd(int fd, std::string_view what);
// Writes with one write(2) and no O_CREAT|O_TRUNC surprises: made for cgroup and proc files.
Result<> write_file(const std::filesystem::path& path, std::string_view data);
// Writes all of data to fd from its current offset, retrying short writes and EINTR; what names the
// file in an error.
Result<> write_all(int fd, std::string_view data, std::string_view what);
// Writes to a temp file in the same directory, fsyncs it and renames it over path.
Result<> write_file_atomic(const std::filesystem::path& path, std::string_view data);
// A file a user names for output (`--report FILE`): replaced atomically when it is a regular file or
// missing, written in place when it is anything else (/dev/null, /dev/stderr, a FIFO), which a
// rename would replace with a regular file.
Result<> write_output_file(const std::filesystem::path& path, std::string_view data);

// A directory made by mkdtemp, removed with everything below it when it goes out of scope.
class TempDir {
 public:
  static Result<TempDir> make(const std::filesystem::path& parent, std::string_view prefix);
  TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  // Keeps the directory: the caller renamed it into place or handed it on.
  std::filesystem::path release() { return std::exchange(path_, {}); }

 private:
  explicit TempDir(std::filesystem::path p) : path_(std::move(p)) {}
  std::filesystem::path path_;
};

// The first executable NAME in the directories of $PATH (the usual default when it is unset).
std::optional<std::filesystem::path> find_in_path(const std::string& name);

}  // namespace fnexec::fs
