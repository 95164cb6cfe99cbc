#include "server/isolation.h"

#include <fmt/format.h>

#include <algorithm>

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "sandbox/devices.h"
#include "sandbox/userns.h"
#include "util/fs.h"

namespace fnexec::server {

namespace stdfs = std::filesystem;

namespace {

Result<sandbox::IdRange> range_in(const stdfs::path& file, const std::string& user) {
  auto add_line = fmt::format("add a line such as `{}:1000000000:1073741824` to {} (and the same to the other "
                              "of /etc/subuid, /etc/subgid), or set userns = false on the function",
                              user, file.string());
  auto text = fs::read_file(file);
  if (!text) {
    if (text.error().err == ENOENT)
      return fail(ErrorKind::unavailable, "find subordinate ids for per-function user namespaces", file.string(),
                  "the file does not exist; " + add_line);
    return std::unexpected(text.error());
  }
  auto r = sandbox::parse_subid(*text, user);
  if (!r && r.error().kind == ErrorKind::not_found)
    return fail(ErrorKind::unavailable, "find subordinate ids for per-function user namespaces", file.string(),
                fmt::format("no line for {}; {}", user, add_line));
  if (!r) return std::unexpected(r.error().context(file.string()));
  return *r;
}

}  // namespace

Result<sandbox::IdRange> subordinate_ids(const IsolationSettings& s) {
  auto uids = FNEXEC_TRY(range_in(s.subuid_file, s.subid_user));
  auto gids = FNEXEC_TRY(range_in(s.subgid_file, s.subid_user));
  if (uids.host_first != gids.host_first || uids.count != gids.count)
    return fail(ErrorKind::invalid, "use subordinate ids of", s.subid_user,
                fmt::format("{} gives {}:{} but {} gives {}:{}; make the two lines the same", s.subuid_file.string(),
                            uids.host_first, uids.count, s.subgid_file.string(), gids.host_first, gids.count));
  if (uids.count < s.ids_per_function)
    return fail(ErrorKind::invalid, "use subordinate ids of", s.subid_user,
                fmt::format("its {} ids are fewer than userns_ids_per_function ({})", uids.count,
                            s.ids_per_function));
  return uids;
}

Result<VolumeAllow> parse_volume_allow(std::string_view value) {
  VolumeAllow a;
  std::string_view path = value;
  if (value.ends_with(":rw")) {
    a.writable = true;
    path.remove_suffix(3);
  } else if (value.ends_with(":ro")) {
    path.remove_suffix(3);
  }
  if (path.empty() || path[0] != '/')
    return fail(ErrorKind::invalid, "allow volume path", std::string(value), "must be an absolute path, optionally :rw");
  std::error_code ec;
  a.path = stdfs::canonical(stdfs::path(path), ec);
  if (ec) return fail(ErrorKind::invalid, "allow volume path", std::string(path), ec.message());
  return a;
}

Result<DeviceAllow> parse_device_allow(std::string_view value) {
  DeviceAllow a;
  std::string_view path = value;
  if (auto colon = value.rfind(':'); colon != std::string_view::npos) {
    a.access = std::string(value.substr(colon + 1));
    path = value.substr(0, colon);
  }
  if (path.empty() || path[0] != '/' || a.access.empty() || a.access.find_first_not_of("rwm") != std::string::npos)
    return fail(ErrorKind::invalid, "allow device", std::string(value),
                "expected an absolute device path, optionally :PERMISSIONS of r, w and m (device_allow = /dev/fuse:rw)");
  a.path = std::string(path);
  struct stat st;
  if (::stat(a.path.c_str(), &st) != 0) return fail_errno("allow device (device_allow)", a.path);
  if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
    return fail(ErrorKind::invalid, "allow device (device_allow)", a.path, "not a character or block device node");
  a.type = S_ISBLK(st.st_mode) ? 'b' : 'c';
  a.rdev = st.st_rdev;
  return a;
}

Result<> check_devices(std::string_view function, std::vector<sandbox::DeviceNode>& devices,
                       const std::vector<DeviceAllow>& allow) {
  const std::string what = "use device of function " + std::string(function);
  for (auto& d : devices) {
    auto read = sandbox::read_host_device(d);
    if (!read) return fail(ErrorKind::invalid, what, d.host, read.error().message());
    char type = S_ISBLK(d.mode) ? 'b' : 'c';
    // By number, not by path: another node or a symlink for the same device is the same device.
    auto match = std::find_if(allow.begin(), allow.end(),
                              [&](const DeviceAllow& a) { return a.type == type && a.rdev == d.rdev; });
    auto number = fmt::format("{} {}:{}", type, major(d.rdev), minor(d.rdev));
    if (match == allow.end())
      return fail(ErrorKind::invalid, what, d.host,
                  fmt::format("{} ({}) is not a device_allow device of fnexec.conf; an administrator may add "
                              "`device_allow = {}` there",
                              d.host, number, d.host));
    // 'm' is not compared: fnexec's init makes the node, so every device rule allows mknod.
    for (char c : d.access)
      if (c != 'm' && match->access.find(c) == std::string::npos)
        return fail(ErrorKind::invalid, what, d.host,
                    fmt::format("it asks for {} but device_allow = {}:{} allows {}", d.access, match->path,
                                match->access, match->access));
  }
  return {};
}

Result<> check_volumes(std::string_view function, std::vector<sandbox::Volume>& volumes,
                       const std::vector<VolumeAllow>& allow) {
  for (auto& v : volumes) {
    std::error_code ec;
    // Canonical on the host: a symlink under an allowed path must not lead out of it.
    auto real = stdfs::canonical(v.source, ec);
    if (ec)
      return fail(ErrorKind::invalid, "use volume of function " + std::string(function), v.source.string(),
                  ec.message());
    const VolumeAllow* match = nullptr;
    for (const auto& a : allow) {
      auto rel = real.lexically_relative(a.path);
      bool inside = !rel.empty() && *rel.begin() != "..";
      if (inside && (!match || a.writable)) match = &a;
    }
    if (!match)
      return fail(ErrorKind::invalid, "use volume of function " + std::string(function), v.source.string(),
                  allow.empty() ? std::string("no host path may be a volume: add `volume_allow = PATH` to fnexec.conf")
                                : fmt::format("{} is not below a volume_allow path of fnexec.conf", real.string()));
    if (!v.read_only && !match->writable)
      return fail(ErrorKind::invalid, "use volume of function " + std::string(function), v.source.string(),
                  fmt::format("it is writable (:rw) but volume_allow = {} is read-only; add :rw there to allow "
                              "writes", match->path.string()));
    v.source = std::move(real);
  }
  return {};
}

}  // namespace fnexec::server
