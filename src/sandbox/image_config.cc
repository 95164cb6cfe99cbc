// Docker's merge of an image config with the caller's overrides (see image_config.h).
#include "sandbox/image_config.h"

#include <sys/stat.h>

#include <charconv>
#include <unordered_map>

#include "image/store.h"
#include "util/fs.h"
#include "util/rooted.h"

namespace fnexec::sandbox {

namespace {

std::optional<unsigned> parse_id(std::string_view s) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// The topmost layer's copy of a file (a 0/0 character device there is an overlay whiteout). Each
// layer is read as its own root: a layer's `etc -> /etc` names the layer's etc, never the host's.
// A symlink that leads into a lower layer is not followed there (the file counts as absent).
std::optional<std::string> read_image_file(const image::ResolvedImage& img, const std::string& rel) {
  for (auto it = img.layers.rbegin(); it != img.layers.rend(); ++it) {
    auto entry = rooted::lstat_in_root(*it, rel);  // the entry itself, to see whiteouts
    if (!entry) return std::nullopt;
    bool present = entry->has_value();
    if (present && !S_ISREG((*entry)->st_mode) && !S_ISLNK((*entry)->st_mode)) return std::nullopt;
    auto text = rooted::read_file_in_root(*it, rel);
    if (!text) return std::nullopt;
    if (*text) return *text;
    if (present) return std::nullopt;  // a symlink to nothing in its layer
  }
  return std::nullopt;
}

// Finds NAME-or-ID in field 0 or 2 of a passwd/group style file; returns fields.
std::optional<std::vector<std::string>> find_entry(const std::optional<std::string>& file,
                                                   std::string_view key, bool by_id) {
  if (!file) return std::nullopt;
  size_t pos = 0;
  while (pos < file->size()) {
    size_t nl = file->find('\n', pos);
    std::string line = file->substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? file->size() : nl + 1;
    std::vector<std::string> f;
    size_t s = 0;
    for (;;) {
      size_t c = line.find(':', s);
      f.push_back(line.substr(s, c == std::string::npos ? std::string::npos : c - s));
      if (c == std::string::npos) break;
      s = c + 1;
    }
    if (f.size() >= 3 && f[by_id ? 2 : 0] == key) return f;
  }
  return std::nullopt;
}

// "uid[:gid]" numeric or names from the image's /etc/passwd and /etc/group, as Docker resolves them.
Result<std::pair<uid_t, gid_t>> resolve_user(const image::ResolvedImage& img, const std::string& spec,
                                             std::string* home) {
  std::string u = spec.substr(0, spec.find(':'));
  std::optional<std::string> g;
  if (auto c = spec.find(':'); c != std::string::npos) g = spec.substr(c + 1);
  auto passwd = read_image_file(img, "etc/passwd");
  uid_t uid = 0;
  gid_t gid = 0;
  std::optional<std::vector<std::string>> entry;
  if (auto id = parse_id(u)) {
    uid = *id;
    entry = find_entry(passwd, u, true);
  } else {
    entry = find_entry(passwd, u, false);
    if (!entry || entry->size() < 4 || !parse_id((*entry)[2]))
      return fail(ErrorKind::not_found, "find user", u, "not in the image's /etc/passwd (use a numeric UID)");
    uid = *parse_id((*entry)[2]);
  }
  if (entry && entry->size() >= 4) {
    if (auto pg = parse_id((*entry)[3])) gid = *pg;
    if (entry->size() >= 6) *home = (*entry)[5];
  }
  if (g) {
    if (auto id = parse_id(*g)) {
      gid = *id;
    } else {
      auto group = find_entry(read_image_file(img, "etc/group"), *g, false);
      if (!group || !parse_id((*group)[2]))
        return fail(ErrorKind::not_found, "find group", *g,
                    "not in the image's /etc/group (use a numeric GID)");
      gid = *parse_id((*group)[2]);
    }
  }
  return std::pair{uid, gid};
}

}  // namespace

void set_env(std::vector<std::string>& env, const std::string& kv) {
  auto key = kv.substr(0, kv.find('=') + 1);
  for (auto& e : env) {
    if (e.compare(0, key.size(), key) == 0) {
      e = kv;
      return;
    }
  }
  env.push_back(kv);
}

void merge_env(std::vector<std::string>& env, const std::vector<std::string>& overrides) {
  std::unordered_map<std::string, size_t> index;  // "KEY=" → position in env
  index.reserve(env.size() + overrides.size());
  for (size_t i = 0; i < env.size(); ++i) index.try_emplace(env[i].substr(0, env[i].find('=') + 1), i);
  for (const auto& kv : overrides) {
    auto [it, inserted] = index.try_emplace(kv.substr(0, kv.find('=') + 1), env.size());
    if (inserted)
      env.push_back(kv);
    else
      env[it->second] = kv;
  }
}

namespace {

bool has_env(const std::vector<std::string>& env, const std::string& key) {
  for (auto& e : env)
    if (e.compare(0, key.size() + 1, key + "=") == 0) return true;
  return false;
}

}  // namespace

Result<> apply_image_config(const image::ResolvedImage& img, const ProcessOverrides& o, SandboxSpec& spec,
                            PrivilegeSpec& ps) {
  std::vector<std::string> entry = img.config.entrypoint, cmd = img.config.cmd;
  if (o.entrypoint) {
    entry = *o.entrypoint;
    cmd.clear();
  }
  if (o.cmd) cmd = *o.cmd;
  spec.argv = entry;
  spec.argv.insert(spec.argv.end(), cmd.begin(), cmd.end());
  if (spec.argv.empty())
    return fail(ErrorKind::invalid, "run image", spec.image_name,
                "it has no Entrypoint or Cmd: give a command after IMAGE");

  std::vector<std::string> env = img.config.env;
  if (!has_env(env, "PATH"))
    env.insert(env.begin(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  merge_env(env, o.env);
  set_env(env, "HOSTNAME=" + spec.hostname);

  spec.cwd = o.workdir ? *o.workdir : (img.config.working_dir.empty() ? "/" : img.config.working_dir);
  if (spec.cwd.empty() || spec.cwd[0] != '/')
    return fail(ErrorKind::invalid, "use working directory", spec.cwd, "must be an absolute path");

  std::string user = o.user ? *o.user : img.config.user;
  std::string home = "/";
  if (!user.empty()) {
    auto [uid, gid] = FNEXEC_TRY(resolve_user(img, user, &home));
    ps.uid = uid;
    ps.gid = gid;
  } else {
    home = "/root";
  }
  if (!has_env(env, "HOME")) env.push_back("HOME=" + home);
  spec.env = std::move(env);
  return {};
}

}  // namespace fnexec::sandbox
