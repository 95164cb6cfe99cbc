#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test suite: unit, integration (root) and vm.
# Usage: scripts/test.sh [BUILDDIR] [-- extra `meson test` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
builddir=${1:-build}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
bash scripts/install-deps.sh --all
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" >/dev/null
meson compile -C "$builddir"
meson test -C "$builddir" --print-errorlogs "$@"
