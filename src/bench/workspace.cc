#include "bench/workspace.h"

#include <fmt/format.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>

#include "bench/peers.h"

namespace fnexec::bench {

namespace stdfs = std::filesystem;

Result<ScratchTmpfs> ScratchTmpfs::mount(const stdfs::path& parent, const std::string& size) {
  std::string templ = (parent / "fnexec-bench-XXXXXX").string();
  if (!::mkdtemp(templ.data())) return fail_errno("create a scratch directory in", parent.string());
  if (::mount("fnexec-bench", templ.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, ("size=" + size).c_str()) != 0) {
    auto e = fail_errno("mount a tmpfs on", templ);
    ::rmdir(templ.c_str());
    return e;
  }
  return ScratchTmpfs(templ);
}

ScratchTmpfs::~ScratchTmpfs() {
  if (path_.empty()) return;
  // Lazy: a sandbox or peer still dying must not keep the directory from going away.
  ::umount2(path_.c_str(), MNT_DETACH);
  ::rmdir(path_.c_str());
}

Result<stdfs::path> find_mkimage(const std::optional<std::string>& explicit_path) {
  std::vector<stdfs::path> candidates;
  if (explicit_path) candidates.push_back(*explicit_path);
  if (const char* env = std::getenv("FNEXEC_MKIMAGE"); env && *env) candidates.push_back(env);
  std::error_code ec;
  auto exe = stdfs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path().parent_path() / "rootfs-tools/mkimage");
    candidates.push_back(exe.parent_path().parent_path().parent_path() / "rootfs-tools/mkimage");
  }
  candidates.push_back("/usr/lib/fnexec/mkimage");
  for (const auto& c : candidates)
    if (::access(c.c_str(), X_OK) == 0) return c;
  if (const char* path = std::getenv("PATH")) {
    std::string p = path;
    for (size_t s = 0; s <= p.size();) {
      size_t e = p.find(':', s);
      if (e == std::string::npos) e = p.size();
      auto c = stdfs::path(p.substr(s, e - s)) / "fnexec-mkimage";
      if (e > s && ::access(c.c_str(), X_OK) == 0) return c;
      s = e + 1;
    }
  }
  if (explicit_path)
    return fail(ErrorKind::not_found, "use --mkimage", *explicit_path, "not an executable file");
  return fail(ErrorKind::not_found, "find rootfs-tools/mkimage", {},
              "give --mkimage PATH or FNEXEC_MKIMAGE, or name a stored IMAGE to bench");
}

Result<image::ResolvedImage> build_busybox_image(image::Store& store, const stdfs::path& mkimage,
                                                 const stdfs::path& archive) {
  std::string out;
  Command cmd{mkimage.string(),
              {mkimage.string(), "--busybox", "--ref", "bench:busybox", "--compression", "none", "--mtime",
               "0", "--oci-archive", archive.string()},
              -1};
  if (auto r = run_command(cmd, {}, out); !r)
    return std::unexpected(r.error().context("build the busybox image"));
  image::ImportOptions opts;
  opts.name = "bench:busybox";
  return store.import("oci-archive:" + archive.string(), opts);
}

Result<> copy_rootfs(const image::ResolvedImage& image, const stdfs::path& work, const stdfs::path& dest) {
  if (image.layers.empty())
    return fail(ErrorKind::invalid, "copy the rootfs of", image.reference, "it has no layers");
  stdfs::path source = image.layers.front();
  stdfs::path merged = work / "merged";
  bool mounted = false;
  if (image.layers.size() > 1) {
    std::error_code ec;
    stdfs::create_directories(merged, ec);
    std::string lower;
    for (auto it = image.layers.rbegin(); it != image.layers.rend(); ++it)
      lower += (lower.empty() ? "" : ":") + it->string();
    // Lower layers only: a read-only overlay, which is all a copy needs.
    if (::mount("overlay", merged.c_str(), "overlay", MS_RDONLY, ("lowerdir=" + lower).c_str()) != 0)
      return fail_errno("mount the image's layers for the peers on", merged.string());
    mounted = true;
    source = merged;
  }
  std::error_code ec;
  stdfs::create_directories(dest, ec);
  std::string out;
  auto r = run_command({"/bin/cp", {"cp", "-a", (source / ".").string(), dest.string()}, -1}, {}, out);
  if (mounted) ::umount2(merged.c_str(), MNT_DETACH);
  if (!r) return std::unexpected(r.error().context("copy the rootfs for the peers"));
  for (const char* d : {"proc", "dev", "sys", "tmp"}) stdfs::create_directories(dest / d, ec);
  return {};
}

}  // namespace fnexec::bench
