// The mount half of the setup plan: an overlay rootfs on a tmpfs private to the sandbox, then the
// kernel filesystems and the user's mounts, laid out as crun lays them out.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <string>

#include "sandbox/setup_plan.h"
#include "util/syscalls.h"

namespace fnexec::sandbox::detail {

namespace {

namespace stdfs = std::filesystem;

// crun's and podman's defaults: kernel information and knobs a function has no business with.
constexpr std::array kMaskedPaths = {
    "/proc/acpi",          "/proc/asound",     "/proc/kcore",       "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi",          "/sys/firmware",    "/sys/fs/selinux",   "/sys/dev/block",
};
constexpr std::array kReadOnlyPaths = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                       "/proc/sysrq-trigger"};

constexpr size_t kPageSize = 4096;

class PlanBuilder {
 public:
  PlanBuilder(ChildPlan& plan, bool userns, uid_t root_uid) : plan_(plan), userns_(userns), root_(root_uid) {}

  SetupOp& add(OpKind kind, std::string path) {
    SetupOp op{kind};
    op.target = target_;
    op.path = plan_.keep(std::move(path));
    return plan_.ops.emplace_back(op);
  }
  void mount(std::string source, std::string path, const char* fstype, unsigned long flags,
             std::string data) {
    auto& op = add(OpKind::mount, std::move(path));
    op.source = plan_.keep(std::move(source));
    op.fstype = fstype;
    op.flags = flags;
    op.data = data.empty() ? nullptr : plan_.keep(std::move(data));
  }
  // A directory the sandbox's root owns, also under --userns=auto where host root is nobody inside.
  void mkdir(std::string path, unsigned mode) {
    auto& op = add(OpKind::mkdir, std::move(path));
    op.mode = mode;
    if (userns_) {
      op.flags = kChownNew;
      op.uid = root_;
      op.gid = root_;
    }
  }
  void mkdir_p(const std::string& path) {
    std::string prefix;
    for (const auto& part : stdfs::path(path).relative_path()) {
      prefix += "/" + part.string();
      mkdir(prefix, 0755);
    }
  }
  void symlink(std::string target, std::string path) {
    auto& op = add(OpKind::symlink, std::move(path));
    op.source = plan_.keep(std::move(target));
  }
  void device(std::string path, unsigned major, unsigned minor) {
    auto& op = add(OpKind::mknod, std::move(path));
    op.mode = 0666;
    op.dev = makedev(major, minor);
  }
  // A --device node is the sandbox root's under --userns=auto, so root inside can open it as host
  // root could (the host node's mode bits are kept); the device policy still limits the number.
  void device_node(const DeviceNode& d) {
    auto& op = add(OpKind::mknod, d.path);
    op.mode = d.mode;
    op.dev = d.rdev;
    if (userns_) {
      op.flags = kChownNew;
      op.uid = root_;
      op.gid = root_;
    }
  }
  // How the init resolves the paths of the ops added from now on (runtime/protocol.h).
  void resolve_as(Target target) { target_ = target; }
  // tmpfs options; owned by the sandbox's root under --userns=auto.
  std::string tmpfs_options(std::string base) const {
    if (userns_) base += ",uid=" + std::to_string(root_) + ",gid=" + std::to_string(root_);
    return base;
  }

 private:
  ChildPlan& plan_;
  bool userns_;
  uid_t root_;
  Target target_ = Target::host;
};

bool overlay_safe(const std::string& p) {
  return p.find_first_of(":,\\") == std::string::npos;
}

// Mount targets are resolved by the init inside the new root (Target::user), so symlinks in the
// image cannot point them at the host, at a host tree's fd or into /proc, /sys or /dev.
Result<std::string> sandbox_path(const std::string& p, std::string_view what) {
  if (p.empty() || p[0] != '/')
    return fail(ErrorKind::invalid, std::string("use ") + std::string(what), p, "must be an absolute path");
  auto norm = stdfs::path(p).lexically_normal().string();
  if (norm.size() > 1 && norm.back() == '/') norm.pop_back();
  return norm;
}

// Volumes and tmpfs mounts over the kernel's trees would hide or replace what fnexec masks there.
Result<std::string> mount_target(const std::string& p, std::string_view what) {
  auto norm = FNEXEC_TRY(sandbox_path(p, what));
  for (std::string_view tree : {"/proc", "/sys"}) {
    if (norm == "/" || norm == tree || norm.starts_with(std::string(tree) + "/"))
      return fail(ErrorKind::invalid, std::string("use ") + std::string(what), p,
                  "fnexec mounts the root, /proc and /sys itself; choose another path");
  }
  return norm;
}

}  // namespace

std::string describe(const SetupOp& op) {
  std::string path = op.path ? op.path : "";
  switch (op.kind) {
    case OpKind::mount:
      return std::string("mount ") + (op.fstype ? op.fstype : "") + " on " + path;
    case OpKind::bind_ro:
      return "make " + path + " read-only";
    case OpKind::mask:
      return "mask " + path;
    case OpKind::mkdir:
      return "create directory " + path;
    case OpKind::mknod:
      return "create device " + path;
    case OpKind::symlink:
      return "create symlink " + path;
    case OpKind::touch:
      return "create mount point " + path;
    case OpKind::chown:
      return "change owner of " + path;
    case OpKind::chdir:
      return "change directory to " + path;
    case OpKind::attach:
      return std::string("mount ") + (op.source ? op.source : "") + " on " + path;
    case OpKind::pivot_root:
      return "pivot_root into " + path;
    case OpKind::remount_ro:
      return "remount read-only " + path;
  }
  return "set up " + path;
}

Result<> plan_rootfs(const SandboxSpec& spec, int userns_fd, ChildPlan& plan, std::vector<UniqueFd>& fds) {
  if (spec.layers.empty())
    return fail(ErrorKind::invalid, "build rootfs of", spec.image_name, "image has no layers");
  const bool userns = userns_fd >= 0;
  const uid_t root = userns ? spec.id_range.host_first : 0;
  PlanBuilder b(plan, userns, root);
  const std::string scratch = spec.mount_dir.string();
  const std::string newroot = scratch + "/root";

  // Private first, so nothing below propagates back to the host.
  b.mount("none", "/", nullptr, MS_REC | MS_PRIVATE, "");
  // Upper and work dirs on a tmpfs of this mount namespace: it dies with the sandbox.
  b.mount("fnexec", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  b.mkdir(scratch + "/upper", 0755);
  b.mkdir(scratch + "/work", 0700);
  b.mkdir(scratch + "/root", 0755);

  // overlay wants the top layer first.
  std::vector<std::string> lowers;
  if (userns) {
    // Image files belong to host uid 0, unmapped in the sandbox's user namespace: each layer is
    // attached through an id-mapped mount (0 -> FIRST), and overlay (mounted here as host root, so
    // trusted.* whiteout xattrs still count) stacks those.
    b.mkdir(scratch + "/l", 0700);
    for (size_t i = spec.layers.size(); i-- > 0;) {
      const auto& layer = spec.layers[i];
      UniqueFd tree(sys::open_tree(AT_FDCWD, layer.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
      if (!tree) return fail_errno("open layer", layer.string());
      mount_attr attr{};
      attr.attr_set = MOUNT_ATTR_IDMAP;
      attr.userns_fd = static_cast<uint64_t>(userns_fd);
      if (sys::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0)
        return fail_errno("id-map layer for --userns=auto", layer.string());
      std::string dir = std::to_string(spec.layers.size() - 1 - i);
      b.mkdir(scratch + "/l/" + dir, 0755);
      auto& op = b.add(OpKind::attach, scratch + "/l/" + dir);
      op.fd = tree.get();
      op.source = plan.keep(layer.string());
      fds.push_back(std::move(tree));
      lowers.push_back("l/" + dir);
    }
    b.add(OpKind::chdir, scratch);
    b.add(OpKind::chown, scratch + "/upper").uid = root;
    plan.ops.back().gid = root;
  } else {
    for (auto it = spec.layers.rbegin(); it != spec.layers.rend(); ++it) {
      if (!it->is_absolute() || !overlay_safe(it->string()))
        return fail(ErrorKind::invalid, "use layer", it->string(),
                    "needs an absolute path without ':', ',' or '\\'");
      lowers.push_back(it->string());
    }
  }
  auto options = [&](const std::vector<std::string>& ls) {
    std::string o = "lowerdir=";
    for (size_t i = 0; i < ls.size(); ++i) o += (i ? ":" : "") + ls[i];
    return o + ",upperdir=" + scratch + "/upper,workdir=" + scratch + "/work";
  };
  std::string opts = options(lowers);
  if (opts.size() >= kPageSize && !userns) {
    // mount(2) copies one page of options: mount from the layers' common parent with short paths.
    stdfs::path common = spec.layers.front().parent_path();
    for (const auto& l : spec.layers) {
      while (!common.empty() && l.string().rfind(common.string() + "/", 0) != 0)
        common = common.parent_path();
    }
    for (auto& l : lowers) l = stdfs::path(l).lexically_relative(common).string();
    opts = options(lowers);
    b.add(OpKind::chdir, common.string());
  }
  if (opts.size() >= kPageSize)
    return fail(ErrorKind::invalid, "mount overlay for image", spec.image_name,
                "lowerdir list too long (" + std::to_string(spec.layers.size()) + " layers)");
  // nodev: a device node kept in a layer (import --allow-devices) opens nothing; /dev is its own mount.
  b.mount("overlay", newroot, "overlay", MS_NODEV, opts);
  b.add(OpKind::pivot_root, newroot);

  // Paths from here on are inside the sandbox, resolved there by the init.
  b.resolve_as(Target::fixed);
  b.mkdir("/proc", 0555);
  b.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
  b.mkdir("/dev", 0755);
  b.mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, b.tmpfs_options("mode=755,size=65536k"));
  // Device nodes made in place (crun's rootful way): cheaper than six bind mounts of the host's.
  b.device("/dev/null", 1, 3);
  b.device("/dev/zero", 1, 5);
  b.device("/dev/full", 1, 7);
  b.device("/dev/random", 1, 8);
  b.device("/dev/urandom", 1, 9);
  b.device("/dev/tty", 5, 0);
  // --device nodes: /dev is the one mount without nodev, so they can only live there.
  b.resolve_as(Target::user);
  for (const auto& d : spec.devices) {
    auto path = FNEXEC_TRY(sandbox_path(d.path, "device path"));
    if (!path.starts_with("/dev/") || path.find("/..") != std::string::npos)
      return fail(ErrorKind::invalid, "use device path", d.path, "must be below /dev");
    b.mkdir_p(stdfs::path(path).parent_path().string());
    DeviceNode node = d;
    node.path = path;
    b.device_node(node);
  }
  b.resolve_as(Target::fixed);
  b.mkdir("/dev/pts", 0755);
  b.mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620,gid=" + std::to_string(root + 5));
  b.symlink("pts/ptmx", "/dev/ptmx");
  b.mkdir("/dev/shm", 01777);
  b.mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          b.tmpfs_options("mode=1777,size=65536k"));
  b.mkdir("/dev/mqueue", 0755);
  b.mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
  b.symlink("/proc/self/fd", "/dev/fd");
  b.symlink("/proc/self/fd/0", "/dev/stdin");
  b.symlink("/proc/self/fd/1", "/dev/stdout");
  b.symlink("/proc/self/fd/2", "/dev/stderr");
  b.mkdir("/sys", 0555);
  b.mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "");
  for (const char* p : kMaskedPaths) b.add(OpKind::mask, p);
  for (const char* p : kReadOnlyPaths) b.add(OpKind::bind_ro, p).flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;

  b.resolve_as(Target::user);
  for (const auto& v : spec.volumes) {
    auto target = FNEXEC_TRY(mount_target(v.target, "volume target"));
    struct stat st;
    if (::stat(v.source.c_str(), &st) != 0) return fail_errno("use volume source", v.source.string());
    UniqueFd tree(
        sys::open_tree(AT_FDCWD, v.source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
    if (!tree) return fail_errno("open volume source", v.source.string());
    {
      // nodev like every other mount a function can write to: a device node on the host's side
      // of a volume (or one made through it) opens nothing.
      mount_attr attr{};
      attr.attr_set = MOUNT_ATTR_NODEV | (v.read_only ? MOUNT_ATTR_RDONLY : 0);
      if (sys::mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0)
        return fail_errno(v.read_only ? "make volume nodev and read-only" : "make volume nodev", v.source.string());
    }
    if (S_ISDIR(st.st_mode)) {
      b.mkdir_p(target);
    } else {
      b.mkdir_p(stdfs::path(target).parent_path().string());
      b.add(OpKind::touch, target).mode = 0644;
    }
    auto& op = b.add(OpKind::attach, target);
    op.fd = tree.get();
    op.source = plan.keep(v.source.string());
    fds.push_back(std::move(tree));
  }

  std::vector<TmpfsMount> tmpfs = spec.tmpfs;
  if (spec.read_only) {
    // As podman's --read-only-tmpfs: the usual scratch places stay writable.
    for (const char* p : {"/tmp", "/var/tmp", "/run"}) {
      if (std::none_of(tmpfs.begin(), tmpfs.end(), [&](const TmpfsMount& t) { return t.target == p; }))
        tmpfs.push_back({p, "mode=1777"});
    }
  }
  for (const auto& t : tmpfs) {
    auto target = FNEXEC_TRY(mount_target(t.target, "tmpfs target"));
    b.mkdir_p(target);
    std::string opts = t.options.empty() ? "mode=1777" : t.options;
    b.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, b.tmpfs_options(opts));
  }

  auto cwd = FNEXEC_TRY(sandbox_path(spec.cwd, "working directory"));
  b.mkdir_p(cwd);  // podman creates a missing working directory too
  b.resolve_as(Target::fixed);
  // Named again though mount_setattr keeps what it is not told to change: nodev is not optional.
  if (spec.read_only) b.add(OpKind::remount_ro, "/").flags = MS_NODEV;
  return {};
}

}  // namespace fnexec::sandbox::detail
