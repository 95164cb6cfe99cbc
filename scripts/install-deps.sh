#!/usr/bin/env bash
# Installs everything fnexec needs to build, test and benchmark, from Debian packages only.
# Idempotent: packages already present are skipped by apt; apt-get update runs only when needed.
set -euo pipefail

BUILD_PKGS=(
  build-essential g++ meson ninja-build pkg-config
  libseccomp-dev libcap-dev libnl-3-dev libnl-route-3-dev libnftables-dev
  libboost-dev libsimdjson-dev libspdlog-dev libfmt-dev doctest-dev
  libarchive-dev libssl-dev libsqlite3-dev libcli11-dev libzstd-dev zlib1g-dev liblzma-dev libbz2-dev
  libcurl4-openssl-dev
  libnats-dev
  libisal-dev
)
# Used by tests and rootfs-tools at run time.
# cmake and make: the lambda-ric suite builds npm's aws-lambda-ric (aws-lambda-cpp against libcurl).
TEST_PKGS=(busybox-static zstd gzip tar python3 nodejs iproute2 nftables curl cpio kmod xz-utils
  docker-registry skopeo apache2-utils openssl awscli
  nats-server cmake make)
# Peers for bench/ (podman with CNI: bench/network-start.sh), the VM suites (cgroup v2; systemd:
# mmdebstrap, mke2fs) and the compat suite (images made by other tools).
EXTRA_PKGS=(bubblewrap crun runc umoci qemu-system-x86 mmdebstrap e2fsprogs buildah skopeo
  podman containernetworking-plugins)
# The libFuzzer targets (tests/fuzz/run.sh): clang 14 cannot use libstdc++'s <expected>.
FUZZ_PKGS=(clang-16 libclang-rt-16-dev)

want=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}")
# The Lambda API tests install the AWS SDK with npm (tests/lambda/install-sdk.sh); Debian ships npm
# apart from nodejs, NodeSource's nodejs carries its own.
command -v npm >/dev/null || want+=(npm)
case "${1:-}" in
  --all) want+=("${EXTRA_PKGS[@]}" "${FUZZ_PKGS[@]}") ;;  # the fuzz suite runs in CI
  --fuzz) want+=("${FUZZ_PKGS[@]}") ;;
  "") ;;
  *) echo "usage: $0 [--all|--fuzz]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
