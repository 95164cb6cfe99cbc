#include "util/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <system_error>

#include "util/unique_fd.h"

namespace fnexec::fs {

Result<std::string> read_file(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open", path.string());
  return read_fd(fd.get(), path.string());
}

Result<std::string> read_fd(int fd, std::string_view what) {
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("read", std::string(what));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<> write_file(const std::filesystem::path& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open", path.string());
  return write_command(fd.get(), data, path.string());
}

Result<> write_command(int fd, std::string_view data, std::string_view what) {
  ssize_t n = ::write(fd, data.data(), data.size());
  if (n < 0) return fail_errno("write " + std::string(data), std::string(what));
  if (static_cast<size_t>(n) != data.size()) return fail(ErrorKind::internal, "write", std::string(what), "short write");
  return {};
}

Result<> write_all(int fd, std::string_view data, std::string_view what) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("write", std::string(what));
    if (n == 0) return fail(ErrorKind::internal, "write", std::string(what), "no progress");
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<> write_file_atomic(const std::filesystem::path& path, std::string_view data) {
  std::string tmp = path.string() + ".tmp.XXXXXX";
  UniqueFd fd(::mkstemp(tmp.data()));
  if (!fd) return fail_errno("create", tmp);
  auto cleanup = [&] { ::unlink(tmp.c_str()); };
  if (auto w = write_all(fd.get(), data, tmp); !w) {
    cleanup();
    return w;
  }
  if (::fchmod(fd.get(), 0644) != 0 || ::fsync(fd.get()) != 0) {
    auto e = fail_errno("sync", tmp);
    cleanup();
    return e;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto e = fail_errno("rename into place", path.string());
    cleanup();
    return e;
  }
  return {};
}

void start_writeback(int fd, off_t offset, off_t size) {
  (void)::sync_file_range(fd, offset, size, SYNC_FILE_RANGE_WRITE);
}

Result<> write_output_file(const std::filesystem::path& path, std::string_view data) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) return write_file_atomic(path, data);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return fail_errno("open", path.string());
  return write_all(fd.get(), data, path.string());
}

Result<TempDir> TempDir::make(const std::filesystem::path& parent, std::string_view prefix) {
  std::string tmpl = (parent / (std::string(prefix) + "XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return fail_errno("create temporary directory", tmpl);
  return TempDir(std::filesystem::path(tmpl));
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::optional<std::filesystem::path> find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream in(path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  for (std::string dir; std::getline(in, dir, ':');) {
    if (dir.empty()) continue;
    std::filesystem::path p = std::filesystem::path(dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return std::nullopt;
}

}  // namespace fnexec::fs
