#include "util/rooted.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "util/fs.h"
#include "util/syscalls.h"

namespace fnexec::rooted {

Result<UniqueFd> open_in_root(int root_fd, std::string_view path, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  std::string p(path);
  for (;;) {
    UniqueFd fd(sys::openat2(root_fd, p.c_str(), &how, sizeof how));
    if (fd) return fd;
    // EAGAIN: a rename raced the lookup (the kernel refuses rather than risk an escape); retry.
    if (errno != EAGAIN && errno != EINTR) return fail_errno("open inside root", p);
  }
}

namespace {

// O_PATH: opening a FIFO or a device for reading could block or act; only regular files are read.
Result<std::optional<UniqueFd>> open_path_in_root(const std::filesystem::path& root, std::string_view path,
                                                  int flags) {
  UniqueFd dir(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return fail_errno("open root", root.string());
  auto where = open_in_root(dir.get(), path, O_PATH | flags);
  if (where) return std::optional(std::move(*where));
  if (where.error().err == ENOENT || where.error().err == ENOTDIR) return std::nullopt;
  return std::unexpected(where.error().context(root.string()));
}

}  // namespace

Result<std::optional<struct stat>> lstat_in_root(const std::filesystem::path& root, std::string_view path) {
  auto fd = FNEXEC_TRY(open_path_in_root(root, path, O_NOFOLLOW));
  if (!fd) return std::nullopt;
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return fail_errno("stat", root.string() + "/" + std::string(path));
  return st;
}

Result<std::optional<std::string>> read_file_in_root(const std::filesystem::path& root, std::string_view path) {
  auto where = FNEXEC_TRY(open_path_in_root(root, path, 0));
  if (!where) return std::nullopt;
  struct stat st {};
  if (::fstat(where->get(), &st) != 0) return fail_errno("stat", root.string() + "/" + std::string(path));
  if (!S_ISREG(st.st_mode)) return std::nullopt;
  std::string proc = "/proc/self/fd/" + std::to_string(where->get());
  UniqueFd file(::open(proc.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file) return fail_errno("open", root.string() + "/" + std::string(path));
  return fs::read_fd(file.get(), root.string() + "/" + std::string(path));
}

}  // namespace fnexec::rooted
