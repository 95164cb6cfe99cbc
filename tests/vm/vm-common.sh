# Sourced by run-vm-suite.sh and run-systemd-suite.sh: the kernel and initramfs cache, the
# accelerator, and the skip rules both VM suites share. Needs HERE (this directory) and skip().
# Sets CACHE, KVER, INITRD and ACC (qemu's accelerator arguments) and ACCEL.
vm_prepare() {
    [ "$(id -u)" = 0 ] || skip "the VM suites need root (9p passthrough, cgroup writes in the guest)"
    local tool
    for tool in qemu-system-x86_64 cpio depmod xz flock "$@"; do
        command -v "$tool" >/dev/null || skip "$tool is missing: run scripts/install-deps.sh --all"
    done
    if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
        skip "/bin/busybox is missing or not static: install busybox-static"
    fi
    if [ -n "${FNEXEC_VM_CACHE:-}" ]; then CACHE=$FNEXEC_VM_CACHE
    elif [ -n "${XDG_CACHE_HOME:-}" ]; then CACHE=$XDG_CACHE_HOME/fnexec-vm
    else CACHE=/var/cache/fnexec-vm; fi
    "$HERE/fetch-kernel.sh" "$CACHE"
    local rc=$?
    [ $rc = 77 ] && skip "Debian's kernel package cannot be downloaded (see above)"
    [ $rc = 0 ] || { echo "FAIL: fetching the kernel failed ($rc)"; exit 1; }
    KVER=$(cat "$CACHE/kver")
    # The initramfs depends only on init, its build script and the kernel: cache it under their hash.
    local key
    key=$(cat "$HERE/init" "$HERE/build-initramfs.sh" "$CACHE/kver" | sha256sum | cut -c1-16)
    INITRD=$CACHE/initramfs-$key.cpio
    if [ ! -s "$INITRD" ]; then
        ( flock 9; [ -s "$INITRD" ] || "$HERE/build-initramfs.sh" "$CACHE" "$INITRD" ) 9>"$CACHE/.lock" \
            || { echo "FAIL: building the initramfs failed"; exit 1; }
    fi
    ACCEL=${FNEXEC_VM_ACCEL:-auto}
    if [ "$ACCEL" = auto ]; then
        # KVM only where it is real: nested kvm_pvm runs a stock guest through the emulator and dies.
        if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then
            ACCEL=kvm; else ACCEL=tcg; fi
    fi
    case $ACCEL in
        kvm) ACC=(-accel kvm -cpu host) ;;
        *)   ACC=(-accel tcg,thread=multi -cpu max) ;;
    esac
}
