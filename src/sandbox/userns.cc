#include "sandbox/userns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <string>

#include "util/fs.h"
#include "util/syscalls.h"

namespace fnexec::sandbox {

Result<IdRange> parse_subid(std::string_view text, std::string_view user) {
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    auto a = line.find(':');
    if (a == std::string_view::npos || line.substr(0, a) != user) continue;
    auto b = line.find(':', a + 1);
    if (b == std::string_view::npos) continue;
    IdRange r;
    auto first = line.substr(a + 1, b - a - 1), count = line.substr(b + 1);
    auto [p1, e1] = std::from_chars(first.data(), first.data() + first.size(), r.host_first);
    auto [p2, e2] = std::from_chars(count.data(), count.data() + count.size(), r.count);
    if (e1 != std::errc{} || e2 != std::errc{} || p1 != first.data() + first.size() || r.count == 0 ||
        r.host_first == 0)
      return fail(ErrorKind::invalid, "parse subordinate id line", std::string(line));
    return r;
  }
  return fail(ErrorKind::not_found, "find subordinate ids of", std::string(user));
}

Result<IdRange> default_id_range() {
  auto uids = fs::read_file("/etc/subuid");
  auto gids = fs::read_file("/etc/subgid");
  if (!uids || !gids) return IdRange{};
  auto u = parse_subid(*uids, "fnexec");
  auto g = parse_subid(*gids, "fnexec");
  if (!u && u.error().kind != ErrorKind::not_found) return std::unexpected(u.error());
  if (!g && g.error().kind != ErrorKind::not_found) return std::unexpected(g.error());
  if (!u && !g) return IdRange{};
  if (!u || !g || u->host_first != g->host_first || u->count != g->count)
    return fail(ErrorKind::invalid, "use the fnexec lines of /etc/subuid and /etc/subgid", {},
                "they must both exist and give the same range");
  return *u;
}

Result<UniqueFd> make_user_namespace(const IdRange& range) {
  int sync[2];
  if (pipe2(sync, O_CLOEXEC) != 0) return fail_errno("create pipe for user namespace");
  UniqueFd sync_read(sync[0]), sync_write(sync[1]);

  clone_args args{};
  args.flags = CLONE_NEWUSER;
  args.exit_signal = SIGCHLD;
  // clone3 rather than fork+unshare: the namespace exists when the parent writes the maps (no race).
  long pid = sys::clone3(&args, sizeof args);
  if (pid < 0) return fail_errno("create user namespace (needs clone3, Linux >= 5.3)");
  if (pid == 0) {
    ::close(sync[1]);
    char c;
    // Waits until the parent has written the maps and opened the namespace (EOF on close).
    while (::read(sync[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  auto reap = [pid] {
    int st;
    while (::waitpid(static_cast<pid_t>(pid), &st, 0) < 0 && errno == EINTR) {
    }
  };
  std::string map = "0 " + std::to_string(range.host_first) + " " + std::to_string(range.count) + "\n";
  std::string proc = "/proc/" + std::to_string(pid);
  Result<> wrote = fs::write_file(proc + "/uid_map", map);
  if (wrote) wrote = fs::write_file(proc + "/gid_map", map);
  UniqueFd ns(::open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
  int open_err = errno;
  sync_write.reset();
  reap();
  if (!wrote) return std::unexpected(wrote.error().context("map ids of the sandbox user namespace"));
  if (!ns) return fail_errno("open user namespace of", proc, open_err);
  return ns;
}

}  // namespace fnexec::sandbox
