// Small filesystem helpers shared by modules: whole-file reads and writes with errno, temp dirs.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <cstdint>
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
// write_file's write on a file already open, for several commands through one open (a kernel
// control file takes each write(2) as one command, so data is never split); what names the file.
Result<> write_command(int fd, std::string_view data, std::string_view what);
// Writes all of data to fd from its current offset, retrying short writes and EINTR; what names the
// file in an error.
Result<> write_all(int fd, std::string_view data, std::string_view what);
// Writes to a temp file in the same directory, fsyncs it and renames it over path.
Result<> write_file_atomic(const std::filesystem::path& path, std::string_view data);
// A file a user names for output (`--report FILE`): replaced atomically when it is a regular file or
// missing, written in place when it is anything else (/dev/null, /dev/stderr, a FIFO), which a
// rename would replace with a regular file.
Result<> write_output_file(const std::filesystem::path& path, std::string_view data);

// Starts writing fd's dirty pages in [offset, offset + size) (size 0: to the end of the file) to
// disk without waiting for them, so that a later syncfs or fsync finds them already on their way
// instead of writing everything at once. A hint: a failed write shows in that later sync.
void start_writeback(int fd, off_t offset = 0, off_t size = 0);

// start_writeback for a file written front to back: every `chunk` bytes, and the rest at finish().
class SequentialWriteback {
 public:
  explicit SequentialWriteback(int fd, uint64_t chunk = uint64_t{8} << 20) : fd_(fd), chunk_(chunk) {}
  // n more bytes were written.
  void wrote(size_t n) { written_to(written_ + n); }
  // Everything below offset end was written (a file written by offset, holes included).
  void written_to(uint64_t end) {
    written_ = std::max(written_, end);
    if (written_ - started_ >= chunk_) finish();
  }
  void finish() {
    if (written_ > started_) start_writeback(fd_, static_cast<off_t>(started_), static_cast<off_t>(written_ - started_));
    started_ = written_;
  }

 private:
  int fd_;
  uint64_t chunk_;
  uint64_t written_ = 0, started_ = 0;
};

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
