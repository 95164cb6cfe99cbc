// The one place for syscalls glibc 2.36 does not wrap. Each returns -1 with errno set
// (ENOSYS on kernels without it), like a libc wrapper, so callers can fall back.
#pragma once

#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace fnexec::sys {

inline long clone3(struct clone_args* args, size_t size) { return ::syscall(SYS_clone3, args, size); }

inline int pidfd_open(pid_t pid, unsigned flags) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
}

inline int pidfd_send_signal(int pidfd, int sig, siginfo_t* info, unsigned flags) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, info, flags));
}

inline int pivot_root(const char* new_root, const char* put_old) {
  return static_cast<int>(::syscall(SYS_pivot_root, new_root, put_old));
}

inline int fsopen(const char* fsname, unsigned flags) {
  return static_cast<int>(::syscall(SYS_fsopen, fsname, flags));
}

inline int fsconfig(int fd, unsigned cmd, const char* key, const void* value, int aux) {
  return static_cast<int>(::syscall(SYS_fsconfig, fd, cmd, key, value, aux));
}

inline int fsmount(int fd, unsigned flags, unsigned attr_flags) {
  return static_cast<int>(::syscall(SYS_fsmount, fd, flags, attr_flags));
}

inline int move_mount(int from_dfd, const char* from_path, int to_dfd, const char* to_path, unsigned flags) {
  return static_cast<int>(::syscall(SYS_move_mount, from_dfd, from_path, to_dfd, to_path, flags));
}

inline int open_tree(int dfd, const char* path, unsigned flags) {
  return static_cast<int>(::syscall(SYS_open_tree, dfd, path, flags));
}

inline int mount_setattr(int dfd, const char* path, unsigned flags, struct mount_attr* attr, size_t size) {
  return static_cast<int>(::syscall(SYS_mount_setattr, dfd, path, flags, attr, size));
}

inline int openat2(int dirfd, const char* path, struct open_how* how, size_t size) {
  return static_cast<int>(::syscall(SYS_openat2, dirfd, path, how, size));
}

inline int close_range(unsigned first, unsigned last, unsigned flags) {
  return static_cast<int>(::syscall(SYS_close_range, first, last, flags));
}

}  // namespace fnexec::sys
