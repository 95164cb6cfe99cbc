#include "net/lease.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <string>
#include <system_error>

namespace fnexec::net {

namespace {

namespace stdfs = std::filesystem;

Result<> make_dir(const stdfs::path& dir) {
  std::error_code ec;
  stdfs::create_directories(dir, ec);
  if (ec) return fail_errno("create network state directory", dir.string(), ec.value());
  return {};
}

// Opens (creating) path and tries its flock without waiting: an fd when we now hold it.
Result<UniqueFd> try_hold(const stdfs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return fail_errno("open lease", path.string());
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return UniqueFd{};
    return fail_errno("lock lease", path.string());
  }
  return fd;
}

}  // namespace

Result<BridgeLock> BridgeLock::acquire(const stdfs::path& dir) {
  FNEXEC_TRY(make_dir(dir));
  auto path = dir / ".lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return fail_errno("open bridge lock", path.string());
  while (::flock(fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) return fail_errno("lock bridge", path.string());
  return BridgeLock(std::move(fd));
}

// The next address to try, kept in DIR/.next under the bridge lock: leases go round the subnet
// instead of reusing the lowest free one, whose veth the kernel may still be deleting with the
// last sandbox's namespace (deleting it first waited 25 ms) and whose conntrack entries may linger.
uint32_t read_cursor(const stdfs::path& dir, const Ipv4Net& subnet) {
  uint32_t first = subnet.address + 2;
  UniqueFd fd(::open((dir / ".next").c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  char buf[32] = {};
  if (!fd || ::read(fd.get(), buf, sizeof buf - 1) <= 0) return first;
  auto ip = parse_ipv4(std::string_view(buf).substr(0, std::string_view(buf).find('\n')));
  return ip && subnet.contains(*ip) && *ip >= first && *ip < subnet.broadcast() ? *ip : first;
}

void write_cursor(const stdfs::path& dir, uint32_t next) {
  UniqueFd fd(::open((dir / ".next").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  std::string text = format_ipv4(next) + "\n";
  if (fd) (void)!::write(fd.get(), text.data(), text.size());  // a lost cursor only restarts the round
}

Result<Lease> Lease::take(const stdfs::path& dir, const Ipv4Net& subnet,
                          const std::function<Result<>(uint32_t)>& clean) {
  FNEXEC_TRY(make_dir(dir));
  // First address: the gateway (the bridge); last: broadcast.
  uint32_t first = subnet.address + 2, count = subnet.broadcast() - first;
  uint32_t start = read_cursor(dir, subnet);
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t ip = first + (start - first + i) % count;
    auto path = dir / format_ipv4(ip);
    bool existed = ::access(path.c_str(), F_OK) == 0;
    auto fd = FNEXEC_TRY(try_hold(path));
    if (!fd) continue;  // a live owner holds it
    if (existed) FNEXEC_TRY(clean(ip));
    std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0)
      return fail_errno("write lease", path.string());
    write_cursor(dir, ip + 1 < subnet.broadcast() ? ip + 1 : first);
    return Lease(path, std::move(fd), ip);
  }
  return fail(ErrorKind::unavailable, "lease an address", subnet.to_string(),
              "every address of the bridge subnet is in use; choose a larger --bridge-subnet");
}

Lease::~Lease() {
  if (fd_ && !keep_) ::unlink(path_.c_str());
}

Result<> clean_stale_leases(const stdfs::path& dir, const std::function<Result<>(uint32_t)>& clean) {
  std::error_code ec;
  for (const auto& entry : stdfs::directory_iterator(dir, ec)) {
    auto name = entry.path().filename().string();
    if (name.starts_with(".")) continue;
    auto ip = parse_ipv4(name);
    if (!ip) continue;
    auto fd = FNEXEC_TRY(try_hold(entry.path()));
    if (!fd) continue;
    FNEXEC_TRY(clean(*ip));
    ::unlink(entry.path().c_str());
  }
  if (ec && ec != std::errc::no_such_file_or_directory)
    return fail_errno("list leases", dir.string(), ec.value());
  return {};
}

}  // namespace fnexec::net
