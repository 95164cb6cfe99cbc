#!/bin/bash
# The compat suite: images made by tools fnexec does not ship (umoci, buildah, skopeo, mmdebstrap and
# a hand-made Docker >= 25 docker-archive), each imported with `fnexec image import` and run with
# `fnexec run`. Any failed step fails the suite; exit 77 (meson: skip) only when a tool cannot be
# installed. Stores live on a tmpfs; buildah and skopeo run in a private mount namespace whose
# /var/lib/containers is a tmpfs, so their blob-info cache cannot land on the host.
# usage: run-compat.sh   (env: FNEXEC_BIN, FNEXEC_SOURCE_ROOT, as meson sets them)
set -euo pipefail
: "${FNEXEC_BIN:?run with meson test --suite compat}" "${FNEXEC_SOURCE_ROOT:?}"
[ "$(id -u)" = 0 ] || { echo "compat: needs root" >&2; exit 77; }

tools=(umoci buildah skopeo mmdebstrap busybox)
declare -A package=([umoci]=umoci [buildah]=buildah [skopeo]=skopeo [mmdebstrap]=mmdebstrap [busybox]=busybox-static)
for t in "${tools[@]}"; do
    command -v "$t" >/dev/null && continue
    echo "compat: installing ${package[$t]} for $t" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${package[$t]}" >/dev/null 2>&1 ||
        { echo "compat: $t missing and ${package[$t]} cannot be installed" >&2; exit 77; }
done

W=$(mktemp -d /tmp/fnexec-compat.XXXXXX)
containers_existed=$([ -e /var/lib/containers ] && echo 1 || echo 0)
cleanup() {
    local rc=$?
    umount -R "$W" 2>/dev/null || true
    rm -rf "$W"
    # The suite must leave no trace of the container tools on the host.
    if [ "$containers_existed" = 0 ] && [ -e /var/lib/containers ]; then
        echo "compat: FAIL: /var/lib/containers appeared during the suite" >&2
        rm -rf /var/lib/containers
        rc=1
    fi
    exit $rc
}
trap cleanup EXIT
mount -t tmpfs -o size=3g,mode=0700 fnexec-compat "$W"

step() { echo "== $*" >&2; }
fail() { echo "compat: FAIL: $*" >&2; exit 1; }
fx() { "$FNEXEC_BIN" --root "$STORE" "$@"; }
# expect OUTPUT PATTERN WHAT: grep -E, with the output in the failure message.
expect() { grep -Eq -- "$2" <<<"$1" || fail "$3: want /$2/, got: $1"; }
# The container tools, confined: private mounts, a tmpfs /var/lib/containers, storage under $W.
# Where the host has no /var/lib/containers, the tmpfs goes on /var/lib: a mount point made for it
# would itself be a trace on the host.
contained() {
    unshare --mount --propagation private sh -ec '
        if [ -d /var/lib/containers ]; then mount -t tmpfs none /var/lib/containers; else mount -t tmpfs none /var/lib; fi
        "$@"' contained "$@"
}
BUILDAH=(buildah --root "$W/containers/root" --runroot "$W/containers/run" --storage-driver vfs)
SKOPEO=(skopeo --insecure-policy)

# import_and_run NAME SOURCE [import flags...]: imports, then runs busybox's sh in it.
import_and_run() {
    local name=$1 src=$2
    shift 2
    local out
    out=$(fx image import "$src" --name "$name" "$@" 2>&1) || fail "import $src: $out"
    out=$(fx run "$name" -- /bin/sh -c 'echo hello from $(cat /etc/hostname-marker)' 2>&1) || fail "run $name: $out"
    expect "$out" "^hello from busybox-tree$" "run $name"
}

start=$(date +%s.%N)
STORE=$W/store

# --- a busybox tree, as a directory and as a GNU tar with "./" names --------------------------
step "busybox tree"
TREE=$W/tree
mkdir -p "$TREE/bin" "$TREE/etc" "$TREE/tmp"
cp "$(command -v busybox)" "$TREE/bin/busybox"
for applet in $("$TREE/bin/busybox" --list); do [ "$applet" = busybox ] || ln -s busybox "$TREE/bin/$applet"; done
echo busybox-tree >"$TREE/etc/hostname-marker"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$TREE/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$TREE/etc/group"
chmod 1777 "$TREE/tmp"
tar -C "$TREE" -cf "$W/tree.tar" .
[ "$(tar -tf "$W/tree.tar" | sed -n 1p)" = ./ ] || fail "GNU tar did not write ./-prefixed names"

# --- umoci: a "/" root entry (umoci insert) and "./" names (raw add-layer of a GNU tar) --------
step "umoci"
UMOCI=$W/umoci
umoci init --layout "$UMOCI"
umoci new --image "$UMOCI:bb"
umoci insert --image "$UMOCI:bb" "$TREE/bin" /bin
umoci insert --image "$UMOCI:bb" "$TREE" /
umoci raw add-layer --image "$UMOCI:bb" "$W/tree.tar"
# The layer umoci insert wrote for "/" must really start with a "/" entry, or this tests nothing.
root_layer=$(python3 - "$UMOCI" <<'EOF'
import gzip, json, sys
lay = sys.argv[1]
idx = json.load(open(f"{lay}/index.json"))
man = json.load(open(f"{lay}/blobs/sha256/" + idx["manifests"][-1]["digest"][7:]))
for l in man["layers"]:
    head = gzip.open(f"{lay}/blobs/sha256/" + l["digest"][7:]).read(512)
    print(head[:100].rstrip(b"\0").decode())
EOF
)
expect "$root_layer" "^/$" "umoci insert's layer names the root '/'"
expect "$root_layer" "^\./$" "the raw GNU tar layer names the root './'"
import_and_run umoci-bb "oci:$UMOCI:bb"

# A kept device node in a layer cannot be opened (the rootfs is nodev); the sandbox's /dev works.
step "umoci + a device node kept with --allow-devices"
python3 - "$W/dev.tar" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1], "w") as tf:
    for name, kind in (("kept", tarfile.DIRTYPE), ("kept/null", tarfile.CHRTYPE)):
        ti = tarfile.TarInfo(name); ti.type = kind; ti.mode = 0o777 if kind == tarfile.DIRTYPE else 0o666
        ti.devmajor, ti.devminor = 1, 3
        tf.addfile(ti)
EOF
umoci new --image "$UMOCI:dev"
umoci raw add-layer --image "$UMOCI:dev" "$W/tree.tar"
umoci raw add-layer --image "$UMOCI:dev" "$W/dev.tar"
out=$(fx image import "oci:$UMOCI:dev" --name umoci-dev --allow-devices 2>&1) || fail "import with --allow-devices: $out"
out=$(fx image inspect umoci-dev)
expect "$out" '"device_nodes":1,"device_nodes_skipped":0' "inspect counts the kept node"
out=$(fx run umoci-dev -- /bin/sh -c 'ls -l /kept/null; echo x >/dev/null && cat /dev/null && echo devnull-ok;
    if echo x >/kept/null; then echo kept-opened; else echo kept-refused; fi' 2>&1) || fail "run umoci-dev: $out"
expect "$out" '^crw' "the kept node is in the rootfs"
expect "$out" '^devnull-ok$' "/dev/null works in the sandbox"
expect "$out" '^kept-refused$' "a kept device node cannot be opened"
expect "$out" 'Permission denied' "opening a node on a nodev mount"

# --- buildah: FROM scratch + ADD, saved as oci-archive and docker-archive ---------------------
step "buildah"
mkdir -p "$W/ctx"
cp "$W/tree.tar" "$W/ctx/tree.tar"
printf 'FROM scratch\nADD tree.tar /\nCMD ["/bin/sh"]\n' >"$W/ctx/Containerfile"
contained "${BUILDAH[@]}" bud --pull=never --quiet -t bb:1 "$W/ctx" >/dev/null
contained "${BUILDAH[@]}" push --quiet bb:1 "oci-archive:$W/buildah-oci.tar:bb:1"
contained "${BUILDAH[@]}" push --quiet bb:1 "docker-archive:$W/buildah-docker.tar:bb:1"
import_and_run buildah-oci "oci-archive:$W/buildah-oci.tar"
import_and_run buildah-docker "docker-archive:$W/buildah-docker.tar"

# --- skopeo: copies between the three transports --------------------------------------------
step "skopeo"
contained "${SKOPEO[@]}" copy --quiet "oci-archive:$W/buildah-oci.tar:bb:1" "oci:$W/skopeo-oci:bb"
contained "${SKOPEO[@]}" copy --quiet "oci:$W/skopeo-oci:bb" "docker-archive:$W/skopeo-docker.tar:bb:2"
contained "${SKOPEO[@]}" copy --quiet "docker-archive:$W/skopeo-docker.tar" "oci-archive:$W/skopeo-oci.tar:bb"
import_and_run skopeo-oci "oci:$W/skopeo-oci:bb"
import_and_run skopeo-docker "docker-archive:$W/skopeo-docker.tar"
import_and_run skopeo-oci-archive "oci-archive:$W/skopeo-oci.tar"

# --- a Docker >= 25 docker-archive: an OCI layout whose blobs manifest.json names --------------
step "docker >= 25 docker-archive, imported twice"
python3 - "$W/skopeo-oci" "$W/docker25.tar" <<'EOF'
import io, json, os, sys, tarfile
lay, out = sys.argv[1], sys.argv[2]
idx = json.load(open(f"{lay}/index.json"))
man = json.load(open(f"{lay}/blobs/sha256/" + idx["manifests"][0]["digest"][7:]))
manifest = [{"Config": "blobs/sha256/" + man["config"]["digest"][7:], "RepoTags": ["bb:25"],
             "Layers": ["blobs/sha256/" + l["digest"][7:] for l in man["layers"]]}]
with tarfile.open(out, "w") as tf:
    for name in ("blobs", "blobs/sha256", "oci-layout", "index.json"):
        tf.add(f"{lay}/{name}", arcname=name, recursive=False)
    for b in sorted(os.listdir(f"{lay}/blobs/sha256")):
        tf.add(f"{lay}/blobs/sha256/{b}", arcname=f"blobs/sha256/{b}")
    data = json.dumps(manifest).encode()
    ti = tarfile.TarInfo("manifest.json"); ti.size = len(data); ti.mode = 0o644
    tf.addfile(ti, io.BytesIO(data))
EOF
first=$(fx image import "docker-archive:$W/docker25.tar" 2>&1) || fail "docker25 import: $first"
again=$(fx image import "docker-archive:$W/docker25.tar" 2>&1) || fail "docker25 import again: $again"
[ "$first" = "$again" ] || fail "docker25: the second import gave another image: '$first' then '$again'"
expect "$first" '^bb:25 sha256:' "docker25 import names the image from RepoTags"
out=$(fx image ls --json)
expect "$out" '"name":"bb","tag":"25"' "docker25 in image ls"
if grep -q '"size":-' <<<"$out"; then fail "a negative size in image ls: $out"; fi
[ "$(grep -c '"name":"bb","tag":"25"' <<<"$out")" = 1 ] || fail "docker25: not exactly one name: $out"
out=$(fx run bb:25 -- /bin/sh -c 'cat /etc/hostname-marker') || fail "run bb:25"
expect "$out" '^busybox-tree$' "run bb:25"
# As a plain path the same tarball reads as the oci-archive it also is.
import_and_run docker25-plain "$W/docker25.tar"

# --- a Debian root (mmdebstrap minbase + systemd), one layer added with umoci -----------------
step "debian root"
DEBIAN_TAR=$(bash "$FNEXEC_SOURCE_ROOT/tests/support/debian-root.sh" /var/cache/fnexec-vm) || exit $?
[ -f "$DEBIAN_TAR" ] || fail "debian-root.sh gave no tarball: $DEBIAN_TAR"
umoci new --image "$UMOCI:debian"
umoci raw add-layer --image "$UMOCI:debian" "$DEBIAN_TAR"
t0=$(date +%s.%N)
out=$(fx image import "oci:$UMOCI:debian" --name debian 2>&1) || fail "debian import: $out"
t1=$(date +%s.%N)
echo "compat: Debian root ($(du -m "$DEBIAN_TAR" | cut -f1) MB) imported in $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s" >&2
expect "$out" 'skipped [0-9]+ device nodes in its layers' "devices are skipped with one line"
[ "$(grep -c 'device node' <<<"$out")" = 1 ] || fail "not exactly one line about device nodes: $out"
out=$(fx image inspect debian)
expect "$out" '"device_nodes_skipped": [1-9]' "inspect counts the skipped nodes"
out=$(fx run debian -- /bin/sh -c 'cat /etc/debian_version; id; ls /usr/bin/apt-get; echo x >/dev/null && echo devnull-ok' 2>&1) ||
    fail "run debian: $out"
expect "$out" '^12\.' "debian_version"
expect "$out" '^uid=0\(root\) gid=0\(root\)' "id in the Debian root"
expect "$out" '^devnull-ok$' "/dev/null in the Debian root"

step "debian root with --allow-devices"
STORE=$W/store-devices
out=$(fx image import "oci:$UMOCI:debian" --name debian --allow-devices 2>&1) || fail "debian import --allow-devices: $out"
if grep -q 'device node' <<<"$out"; then fail "devices kept, yet a line says they were skipped: $out"; fi
out=$(fx image inspect debian)
expect "$out" '"device_nodes_skipped": 0,' "nothing skipped with --allow-devices"
expect "$out" '"device_nodes":[1-9][0-9]*,"device_nodes_skipped":0' "the kept nodes are counted"
out=$(fx run debian -- /bin/sh -c 'cat /etc/debian_version; id -un' 2>&1) || fail "run debian (devices kept): $out"
expect "$out" '^12\.' "debian_version (devices kept)"

# --- nothing left behind ---------------------------------------------------------------------
step "leaks"
for s in "$W/store" "$W/store-devices"; do
    [ -z "$(ls -A "$s/tmp")" ] || fail "$s/tmp is not empty"
done
if grep -q " $W/" /proc/self/mountinfo; then fail "mounts left under $W: $(grep " $W/" /proc/self/mountinfo)"; fi
end=$(date +%s.%N)
echo "compat: all steps passed in $(awk "BEGIN{printf \"%.1f\", $end - $start}") s" >&2
