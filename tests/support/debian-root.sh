#!/bin/bash
# Makes (once) and caches a minimal Debian 12 root filesystem as a tarball with "./"-prefixed names,
# the way GNU tar packs a directory: mmdebstrap --variant=minbase (debootstrap's minbase set) plus
# systemd, so the same root serves the compat suite (an image made by tools fnexec does not ship) and
# the systemd VM suite (its guest root). Packages come from the host's own apt sources.
# usage: debian-root.sh CACHE_DIR   → prints the tarball's path
# exit 77 (meson: skip) when mmdebstrap is missing or the archive cannot be reached.
set -euo pipefail
CACHE=$1
# systemd-sysv gives /sbin/init; dbus is what systemctl's D-Bus calls and systemd-logind expect;
# curl talks to the daemon's unix socket in the VM suite.
PACKAGES=systemd,systemd-sysv,dbus,curl,ca-certificates
command -v mmdebstrap >/dev/null || { echo "debian-root: mmdebstrap missing: run scripts/install-deps.sh --all" >&2; exit 77; }
mkdir -p "$CACHE"
KEY=$( { cat "$0"; echo "$PACKAGES"; dpkg --print-architecture; } | sha256sum | cut -c1-16)
OUT=$CACHE/debian-root-$KEY.tar
exec 9>"$CACHE/.debian-root.lock"
flock 9   # parallel suites share the cache
if [ ! -f "$OUT" ] || [ ! -s "$OUT" ]; then
    sources=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -s "$f" ] && grep -qv '^\s*\(#\|$\)' "$f" && sources+=("$f")
    done
    ((${#sources[@]})) || { echo "debian-root: the host has no apt sources" >&2; exit 77; }
    echo "debian-root: building $OUT with mmdebstrap (minbase + $PACKAGES)" >&2
    # --format: mmdebstrap guesses the format from the name's extension, and ".tmp" would make a directory.
    rm -rf "$OUT.tmp"
    if ! mmdebstrap --quiet --variant=minbase --format=tar --include="$PACKAGES" bookworm "$OUT.tmp" "${sources[@]}" >&2; then
        rm -rf "$OUT.tmp"
        echo "debian-root: mmdebstrap failed (is the Debian archive reachable?)" >&2
        exit 77
    fi
    mv "$OUT.tmp" "$OUT"
    for old in "$CACHE"/debian-root-*.tar; do [ "$old" = "$OUT" ] || [ ! -f "$old" ] || rm -f "$old"; done
fi
echo "$OUT"
