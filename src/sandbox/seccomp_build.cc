#include "sandbox/seccomp_build.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "util/unique_fd.h"

namespace fnexec::sandbox::seccomp_build {

namespace {

// Syscalls newer than libseccomp 2.5.4's table, with their x86_64 numbers: the default profile
// and JSON profiles (Docker's lists several) name them like any other.
struct RawSyscall {
  std::string_view name;
  int nr;
};
#if defined(__x86_64__)
constexpr RawSyscall kNewerSyscalls[] = {
    {"cachestat", 451},         {"fchmodat2", 452},         {"map_shadow_stack", 453},
    {"futex_wake", 454},        {"futex_wait", 455},        {"futex_requeue", 456},
    {"statmount", 457},         {"listmount", 458},         {"lsm_get_self_attr", 459},
    {"lsm_set_self_attr", 460}, {"lsm_list_modules", 461},  {"mseal", 462},
    {"setxattrat", 463},        {"getxattrat", 464},        {"listxattrat", 465},
    {"removexattrat", 466},     {"open_tree_attr", 467},    {"file_getattr", 468},
    {"file_setattr", 469}};
#else
constexpr std::span<const RawSyscall> kNewerSyscalls{};
#endif

}  // namespace

int resolve_syscall(std::string_view name) {
  std::string n(name);
  int nr = seccomp_syscall_resolve_name(n.c_str());
  if (nr != __NR_SCMP_ERROR) return nr;
  for (const auto& raw : kNewerSyscalls)
    if (raw.name == name) return raw.nr;
  return __NR_SCMP_ERROR;
}

Result<Context> new_context(uint32_t default_action, std::string_view origin) {
  Context ctx(seccomp_init(default_action));
  if (!ctx)
    return fail(ErrorKind::invalid, "create seccomp filter", std::string(origin), "libseccomp refused it");
  // Other ABIs (i386 via int 0x80, x32) number syscalls differently and would walk around the
  // rules written for the native one; a clear SIGSYS beats a program failing in odd ways.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); rc < 0)
    return std::unexpected(
        Error{ErrorKind::internal, -rc, "set seccomp bad-arch action", std::string(origin), {}});
  // A binary tree keeps syscalls the kernel's action cache cannot decide (clone, personality) cheap.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); rc < 0)
    return std::unexpected(
        Error{ErrorKind::internal, -rc, "set seccomp optimisation", std::string(origin), {}});
  return ctx;
}

Result<> add_rule(void* ctx, uint32_t action, int nr, std::span<const scmp_arg_cmp> args,
                  std::string_view name, std::string_view origin) {
  int rc = seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(args.size()), args.data());
  if (rc < 0) {
    return std::unexpected(Error{ErrorKind::invalid, -rc, "use seccomp profile", std::string(origin),
                                 "rule for " + std::string(name) + " refused by libseccomp"});
  }
  return {};
}

Result<std::vector<sock_filter>> export_bpf(void* ctx, std::string_view origin) {
  // libseccomp 2.5 exports only to a file descriptor.
  UniqueFd fd(::memfd_create("fnexec-seccomp", MFD_CLOEXEC));
  if (!fd) return fail_errno("create memfd for the seccomp filter", std::string(origin));
  if (int rc = seccomp_export_bpf(ctx, fd.get()); rc < 0)
    return std::unexpected(Error{ErrorKind::internal, -rc, "export seccomp filter", std::string(origin), {}});
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail_errno("stat exported seccomp filter", std::string(origin));
  auto bytes = static_cast<size_t>(st.st_size);
  size_t count = bytes / sizeof(sock_filter);
  if (bytes == 0 || bytes % sizeof(sock_filter) != 0)
    return fail(ErrorKind::internal, "export seccomp filter", std::string(origin),
                "odd size " + std::to_string(bytes));
  if (count > BPF_MAXINSNS) {
    return fail(ErrorKind::invalid, "use seccomp profile", std::string(origin),
                "the filter has " + std::to_string(count) + " instructions, the kernel takes at most " +
                    std::to_string(BPF_MAXINSNS));
  }
  std::vector<sock_filter> filter(count);
  auto* out = reinterpret_cast<char*>(filter.data());
  for (size_t done = 0; done < bytes;) {
    ssize_t n = ::pread(fd.get(), out + done, bytes - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail_errno("read exported seccomp filter", std::string(origin), n == 0 ? EIO : errno);
    done += static_cast<size_t>(n);
  }
  return filter;
}

}  // namespace fnexec::sandbox::seccomp_build
