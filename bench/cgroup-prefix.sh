# Sourced by bench scripts that start `fnexec serve` with a cgroup_prefix of their own:
# remove_cgroup_prefix PREFIX removes the empty directories named PREFIX* in every hierarchy. The
# daemon removes its sandboxes' cgroups, not its prefix directories: those are the script's.
remove_cgroup_prefix() {
  find /sys/fs/cgroup -maxdepth 3 -type d -name "$1*" -prune -print 2>/dev/null |
    while read -r d; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
}
