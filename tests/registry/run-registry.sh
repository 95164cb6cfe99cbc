#!/bin/bash
# The registry suite: `fnexec image pull` against Debian's docker-registry (distribution 2.8) started
# here on 127.0.0.1 — plain HTTP, TLS with a CA made here by openssl, htpasswd basic auth — and
# registry-proxy.py in front of it for the bearer token flow and injected faults. Images are made by
# rootfs-tools/mkimage and pushed with skopeo. Every bad input must fail with a clear error and
# leave no image behind. Exit 77 (meson: skip) only when a tool cannot be installed.
# usage: run-registry.sh   (env: FNEXEC_BIN, FNEXEC_SOURCE_ROOT, as meson sets them)
set -euo pipefail
: "${FNEXEC_BIN:?run with meson test --suite registry}" "${FNEXEC_SOURCE_ROOT:?}"
[ "$(id -u)" = 0 ] || { echo "registry: needs root" >&2; exit 77; }
HERE=$(cd "$(dirname "$0")" && pwd)

declare -A package=([docker-registry]=docker-registry [skopeo]=skopeo [htpasswd]=apache2-utils [openssl]=openssl [busybox]=busybox-static)
for t in docker-registry skopeo htpasswd openssl busybox; do
    command -v "$t" >/dev/null && continue
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${package[$t]}" >/dev/null 2>&1 ||
        { echo "registry: $t missing and ${package[$t]} cannot be installed" >&2; exit 77; }
done

W=$(mktemp -d /tmp/fnexec-registry-suite.XXXXXX)
# start_registry and start_proxy run in command substitutions: their servers' pids go to a file.
PIDS=$W/pids
: >"$PIDS"
cleanup() {
    local rc=$?
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$PIDS"
    while read -r p; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done <"$PIDS"
    rm -rf "$W"
    exit $rc
}
trap cleanup EXIT
trap 'echo "registry: FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR

step() { echo "== $*" >&2; }
fail() { echo "registry: FAIL: $*" >&2; exit 1; }
fx() { "$FNEXEC_BIN" --root "$STORE" "$@"; }
expect() { grep -Eq -- "$2" <<<"$1" || fail "$3: want /$2/, got: $1"; }
SKOPEO=(skopeo --insecure-policy --tmpdir "$W")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; fail "nothing listens on $1"; }
# A store with no image and no half-made content: what a failed pull must leave.
no_image_left() {
    [ "$(fx image ls --json | tr -d ' \n')" = "[]" ] || fail "$1: an image was recorded"
    [ -z "$(ls -A "$STORE/tmp")" ] || fail "$1: work files left in $STORE/tmp"
}

# start_registry NAME [tls] [htpasswd]: echoes the port.
start_registry() {
    local name=$1 port tls="" auth=""
    port=$(free_port)
    shift
    for opt in "$@"; do
        case $opt in
        tls) tls="  tls:
    certificate: $W/ca/server.crt
    key: $W/ca/server.key" ;;
        htpasswd) auth="auth:
  htpasswd:
    realm: fnexec-test
    path: $W/htpasswd" ;;
        esac
    done
    mkdir -p "$W/$name"
    cat >"$W/$name/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $W/$name/data
http:
  addr: 127.0.0.1:$port
$tls
$auth
YML
    docker-registry serve "$W/$name/config.yml" >"$W/$name/log" 2>&1 &
    echo $! >>"$PIDS"
    wait_port "$port"
    echo "$port"
}

# start_proxy NAME UPSTREAM MODE: echoes the port.
start_proxy() {
    local f=$W/proxy-$1
    python3 "$HERE/registry-proxy.py" "$2" "$f" "$3" >"$f.out" 2>&1 &
    echo $! >>"$PIDS"
    for _ in $(seq 100); do [ -s "$f" ] && break; sleep 0.1; done
    cat "$f"
}

STORE=$W/store
step "images (mkimage) and a CA (openssl)"
"$FNEXEC_SOURCE_ROOT/rootfs-tools/mkimage" --mtime 1700000000 --busybox --dir "$FNEXEC_SOURCE_ROOT/rootfs-tools" --ref bb:1 -o "$W/bb" >/dev/null
head -c 3000000 /dev/urandom >"$W/noise.bin"
mkdir -p "$W/big/data"; cp "$W/noise.bin" "$W/big/data/"
"$FNEXEC_SOURCE_ROOT/rootfs-tools/mkimage" --mtime 1700000000 --busybox --dir "$W/big" --ref big:1 -o "$W/bigimg" >/dev/null
mkdir -p "$W/ca"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=fnexec-test-ca -keyout "$W/ca/ca.key" -out "$W/ca/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$W/ca/server.key" -out "$W/ca/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$W/ca/san"
openssl x509 -req -in "$W/ca/server.csr" -CA "$W/ca/ca.crt" -CAkey "$W/ca/ca.key" -CAcreateserial -days 2 \
    -extfile "$W/ca/san" -out "$W/ca/server.crt" 2>/dev/null
htpasswd -Bbc "$W/htpasswd" alice wonderland 2>/dev/null

step "registries"
PLAIN=$(start_registry plain)
TLS=$(start_registry tls tls)
AUTH=$(start_registry auth tls htpasswd)
mkdir -p "$W/certs"; cp "$W/ca/ca.crt" "$W/certs/ca.crt"
"${SKOPEO[@]}" copy -q "oci:$W/bb:1" "docker://127.0.0.1:$PLAIN/test/bb:1" --dest-tls-verify=false
"${SKOPEO[@]}" copy -q "oci:$W/bigimg:1" "docker://127.0.0.1:$PLAIN/test/big:1" --dest-tls-verify=false
"${SKOPEO[@]}" copy -q "oci:$W/bb:1" "docker://127.0.0.1:$PLAIN/test/dk:1" --dest-tls-verify=false --format v2s2
"${SKOPEO[@]}" copy -q "oci:$W/bb:1" "docker://127.0.0.1:$TLS/test/bb:1" --dest-cert-dir "$W/certs"
"${SKOPEO[@]}" copy -q "oci:$W/bb:1" "docker://127.0.0.1:$AUTH/test/bb:1" --dest-cert-dir "$W/certs" --dest-creds alice:wonderland
P=127.0.0.1:$PLAIN

step "pull by tag over plain HTTP, run it, pull again (nothing downloaded twice)"
out=$(fx image pull --tls-verify=false "docker://$P/test/bb:1" 2>&1) || fail "pull: $out"
expect "$out" "^$P/test/bb:1 sha256:[0-9a-f]{64}$" "pull prints the name and digest"
digest=$(awk 'END{print $2}' <<<"$out")
out=$(fx run "$P/test/bb:1" -- /bin/sh -c 'echo pulled ok' 2>&1) || fail "run: $out"
expect "$out" "^pulled ok$" "run the pulled image"
out=$(fx image pull --tls-verify=false "docker://$P/test/bb:1" 2>&1) || fail "re-pull: $out"
expect "$out" "skipped: already in the store" "a re-pull fetches no layer"

step "libcurl and OpenSSL are loaded only when used: not by --version, nor by run of a stored image"
# OpenSSL too is dlopened on first use (util/openssl_api.*: digests, the daemon's TLS listener).
curl_tree="lib(curl|nghttp2|ldap|lber|ssh2|rtmp|psl|gssapi_krb5|idn2|brotli|ssl|crypto)"
libs=$(LD_DEBUG=libs "$FNEXEC_BIN" --version 2>&1 >/dev/null)
grep -q "calling init: .*libc.so" <<<"$libs" || fail "LD_DEBUG=libs shows no libraries: $libs"
grep -Eq "calling init: .*$curl_tree" <<<"$libs" && fail "--version loads libcurl or its libraries: $libs"
libs=$(LD_DEBUG=libs fx run "$P/test/bb:1" -- /bin/true 2>&1 >/dev/null)
grep -Eq "calling init: .*$curl_tree" <<<"$libs" && fail "run of a stored image loads libcurl: $libs"
libs=$(LD_DEBUG=libs fx image pull -q --tls-verify=false "docker://$P/test/bb:1" 2>&1 >/dev/null)
grep -q "calling init: .*libcurl.so.4" <<<"$libs" || fail "a pull does not load libcurl.so.4: $libs"
# fnexec's libcrypto (digests) and libcurl's are one object: same soname, mapped once.
[ "$(grep -c "calling init: .*libcrypto.so.3" <<<"$libs")" = 1 ] || fail "a pull does not map libcrypto.so.3 once: $libs"

step "a machine without libcurl (libcurl4 not installed): a pull names the package; import and run still work"
# A private mount namespace where an overlay whites out libcurl.so.4 in the library directory.
curl_lib=$(readlink -f "$(ldconfig -p | awk '$1 == "libcurl.so.4" {print $NF; exit}')")
libdir=$(dirname "$curl_lib")
mkdir -p "$W/nocurl/upper" "$W/nocurl/work"
for f in "$libdir"/libcurl.so.4*; do mknod "$W/nocurl/upper/${f##*/}" c 0 0; done
cat >"$W/nocurl/run.sh" <<SH
set -e
mount -t overlay nocurl -o "lowerdir=$libdir,upperdir=$W/nocurl/upper,workdir=$W/nocurl/work" "$libdir"
[ ! -e "$libdir/libcurl.so.4" ] || { echo "libcurl.so.4 still visible"; exit 1; }
if "$FNEXEC_BIN" --root "$STORE" image pull -q --tls-verify=false "docker://$P/test/bb:1" --name nocurl-pull 2>&1; then exit 3; fi
"$FNEXEC_BIN" --root "$STORE" image import "oci:$W/bb:1" --name nocurl:1 >/dev/null
"$FNEXEC_BIN" --root "$STORE" run nocurl:1 -- /bin/sh -c 'echo run without libcurl'
SH
out=$(unshare -m bash "$W/nocurl/run.sh" 2>&1) || fail "without libcurl: $out"
expect "$out" "load libcurl.*libcurl.so.4.*apt-get install libcurl4" "a pull without libcurl names the package"
expect "$out" "run without libcurl" "import and run without libcurl"
[ -e "$curl_lib" ] || fail "the host's libcurl went missing"

step "a machine without OpenSSL (libssl3 not installed): import names the package, run still works"
ssl_lib=$(readlink -f "$(ldconfig -p | awk '$1 == "libcrypto.so.3" {print $NF; exit}')")
ssl_dir=$(dirname "$ssl_lib")
mkdir -p "$W/nossl/upper" "$W/nossl/work"
for f in "$ssl_dir"/libcrypto.so.3* "$ssl_dir"/libssl.so.3*; do mknod "$W/nossl/upper/${f##*/}" c 0 0; done
cat >"$W/nossl/run.sh" <<SH
set -e
mount -t overlay nossl -o "lowerdir=$ssl_dir,upperdir=$W/nossl/upper,workdir=$W/nossl/work" "$ssl_dir"
[ ! -e "$ssl_dir/libcrypto.so.3" ] || { echo "libcrypto.so.3 still visible"; exit 1; }
if "$FNEXEC_BIN" --root "$STORE" image import "oci:$W/bb:1" --name nossl:1 2>&1; then exit 3; fi
"$FNEXEC_BIN" --root "$STORE" run "$P/test/bb:1" -- /bin/sh -c 'echo run without OpenSSL'
SH
out=$(unshare -m bash "$W/nossl/run.sh" 2>&1) || fail "without OpenSSL: $out"
expect "$out" "import oci:.*load OpenSSL libcrypto.so.3.*apt-get install libssl3" "an import without libcrypto names the package"
expect "$out" "run without OpenSSL" "run without OpenSSL"
[ -e "$ssl_lib" ] || fail "the host's libcrypto went missing"

step "pull by digest; import docker://; run docker:// (Docker schema 2 media types)"
out=$(fx image pull -q --tls-verify=false "docker://$P/test/bb@$digest" 2>&1) || fail "pull by digest: $out"
expect "$out" "$digest" "pull by digest"
out=$(fx image import --tls-verify=false "docker://$P/test/dk:1" 2>&1) || fail "import docker://: $out"
out=$(fx run -q --tls-verify=false "docker://$P/test/dk:1" -- /bin/sh -c 'echo docker ok' 2>&1) || fail "run docker://: $out"
expect "$out" "docker ok$" "run docker://"

step "TLS with the test CA: --cert-dir works, the system store alone refuses with the fix"
out=$(fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$TLS/test/bb:1" 2>&1) || fail "TLS pull: $out"
out=$(fx image pull -q "docker://127.0.0.1:$TLS/test/bb:1" --name tls-unknown-ca 2>&1) && fail "pull from an unknown CA worked"
expect "$out" "docker://127.0.0.1:$TLS/test/bb:1.*not trusted.*certs.d/127.0.0.1:$TLS/ca.crt.*--tls-verify=false" "unknown CA"

step "basic auth: no creds, wrong creds, --creds, auth.json"
out=$(fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$AUTH/test/bb:1" --name noauth 2>&1) && fail "pull without creds worked"
expect "$out" "401.*needs credentials.*--creds" "401 without credentials"
out=$(fx image pull -q --cert-dir "$W/certs" --creds alice:wrongpass "docker://127.0.0.1:$AUTH/test/bb:1" --name badauth 2>&1) &&
    fail "pull with wrong creds worked"
expect "$out" "401.*credentials from --creds" "wrong credentials"
grep -q wrongpass <<<"$out" && fail "the password appears in the error: $out"
out=$(fx image pull -q --cert-dir "$W/certs" --creds alice:wonderland "docker://127.0.0.1:$AUTH/test/bb:1" 2>&1) || fail "--creds: $out"
printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}' "$AUTH" "$(printf alice:wonderland | base64)" >"$W/auth.json"
out=$(REGISTRY_AUTH_FILE=$W/auth.json fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$AUTH/test/bb:1" --name viaauthjson 2>&1) ||
    fail "auth.json: $out"

step "credential helpers: credHelpers and credsStore run docker-credential-NAME get with the registry on stdin"
mkdir -p "$W/bin" "$W/home/.docker"
# A helper as docker's are: the server on stdin, JSON on stdout, "not found" with exit status 1.
cat >"$W/bin/docker-credential-fnexectest" <<SH
#!/bin/sh
[ "\$1" = get ] || exit 2
read -r server
echo "\$server" >>"$W/helper.log"
case \$server in
127.0.0.1:$AUTH) printf '{"ServerURL":"%s","Username":"alice","Secret":"%s"}\n' "\$server" "\${HELPER_SECRET:-wonderland}" ;;
*) echo "credentials not found in native keychain"; exit 1 ;;
esac
SH
chmod +x "$W/bin/docker-credential-fnexectest"
printf '{"credHelpers":{"127.0.0.1:%s":"fnexectest"}}' "$AUTH" >"$W/home/.docker/config.json"
out=$(HOME=$W/home PATH=$W/bin:$PATH FNEXEC_LOG=debug fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$AUTH/test/bb:1" --name viahelper 2>&1) ||
    fail "credHelpers: $out"
grep -q wonderland <<<"$out" && fail "the helper's secret appears in the output: $out"
[ "$(cat "$W/helper.log")" = "127.0.0.1:$AUTH" ] || fail "the helper was not asked for 127.0.0.1:$AUTH: $(cat "$W/helper.log")"
out=$(HOME=$W/home PATH=$W/bin:$PATH HELPER_SECRET=wrongpass fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$AUTH/test/bb:1" --name badhelper 2>&1) &&
    fail "a helper's wrong password worked"
expect "$out" "401.*credentials from docker-credential-fnexectest" "the 401 names the helper the credentials came from"
grep -q wrongpass <<<"$out" && fail "the helper's secret appears in the error: $out"
printf '{"credsStore":"fnexectest","auths":{"127.0.0.1:%s":{}}}' "$AUTH" >"$W/auth-store.json"
out=$(PATH=$W/bin:$PATH REGISTRY_AUTH_FILE=$W/auth-store.json fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$AUTH/test/bb:1" --name viastore 2>&1) ||
    fail "credsStore: $out"
# A store that holds nothing for the registry means anonymous, as with docker.
out=$(PATH=$W/bin:$PATH REGISTRY_AUTH_FILE=$W/auth-store.json fx image pull -q --tls-verify=false "docker://$P/test/bb:1" --name storeanon 2>&1) ||
    fail "credsStore without an entry for the registry: $out"
printf '{"credHelpers":{"127.0.0.1:%s":"missing"}}' "$AUTH" >"$W/auth-missing.json"
out=$(REGISTRY_AUTH_FILE=$W/auth-missing.json fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$AUTH/test/bb:1" --name nohelper 2>&1) &&
    fail "a missing helper worked"
expect "$out" "docker-credential-missing.*not found in PATH.*credHelpers.*auth-missing.json" "a missing helper is named, with the file naming it"

step "bearer token flow (the proxy plays the token server)"
BEARER=$(start_proxy bearer "$PLAIN" bearer)
out=$(fx image pull -q --tls-verify=false "docker://127.0.0.1:$BEARER/test/bb:1" --name bearer-anon 2>&1) && fail "bearer without creds worked"
expect "$out" "401" "bearer without credentials"
out=$(fx image pull -q --tls-verify=false --creds user:secret "docker://127.0.0.1:$BEARER/test/bb:1" --name bearer 2>&1) ||
    fail "bearer: $out"

step "HTTPS_PROXY is used, NO_PROXY=127.0.0.1 bypasses it"
dead=$(free_port)
out=$(HTTPS_PROXY=http://127.0.0.1:$dead NO_PROXY=127.0.0.1 fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$TLS/test/bb:1" 2>&1) ||
    fail "NO_PROXY: $out"
out=$(HTTPS_PROXY=http://127.0.0.1:$dead NO_PROXY= fx image pull -q --cert-dir "$W/certs" "docker://127.0.0.1:$TLS/test/bb:1" --name via-proxy 2>&1) &&
    fail "a dead HTTPS_PROXY was not used"

step "faults a real network has: reset, truncation, 429, 503 — each retried, the blob resumed"
for mode in reset-once truncate-once status-once=429 status-once=503; do
    STORE=$W/store-$mode
    port=$(start_proxy "$mode" "$PLAIN" "$mode")
    out=$(fx image pull -q --tls-verify=false "docker://127.0.0.1:$port/test/big:1" 2>&1) || fail "$mode: $out"
    out=$(fx run "127.0.0.1:$port/test/big:1" -- /bin/sh -c 'cmp /data/noise.bin /data/noise.bin && echo same' 2>&1) || fail "$mode run: $out"
    case $mode in reset-once | truncate-once)
        grep -Eq "bytes=[1-9][0-9]*-" "$W/proxy-$mode.log" || fail "$mode: the retry did not resume with Range: $(cat "$W/proxy-$mode.log")" ;;
    esac
done

step "bad input: each a clear error naming the registry, reference and fix; nothing left behind"
STORE=$W/store-bad
fx image ls >/dev/null
bad() {  # bad WHAT PATTERN fnexec-args...
    local what=$1 pattern=$2
    shift 2
    out=$(fx image pull -q "$@" 2>&1) && fail "$what: the pull worked"
    expect "$out" "$pattern" "$what"
    no_image_left "$what"
}
bad "unknown host" "docker://no-such-registry.invalid/x/y:1.*cannot resolve no-such-registry.invalid" \
    "docker://no-such-registry.invalid/x/y:1"
bad "404 tag" "docker://$P/test/bb:nope.*404.*no such repository or tag" --tls-verify=false "docker://$P/test/bb:nope"
bad "connection refused" "cannot connect to 127.0.0.1:$dead.*is the registry running" --tls-verify=false "docker://127.0.0.1:$dead/x:1"
port=$(start_proxy flip "$PLAIN" flip-byte)
bad "digest mismatch" "docker://127.0.0.1:$port/test/big:1.*content with digest sha256:.*nothing was stored" \
    --tls-verify=false "docker://127.0.0.1:$port/test/big:1"
port=$(start_proxy bigm "$PLAIN" big-manifest)
bad "manifest too large" "docker://127.0.0.1:$port/test/bb:1.*more than 4194304 bytes for the manifest" \
    --tls-verify=false "docker://127.0.0.1:$port/test/bb:1"
port=$(start_proxy loop "$PLAIN" redirect-loop)
bad "redirect loop" "docker://127.0.0.1:$port/test/bb:1.*redirect loop" --tls-verify=false "docker://127.0.0.1:$port/test/bb:1"
port=$(start_proxy mt "$PLAIN" wrong-type)
bad "bad media type" "docker://127.0.0.1:$port/test/bb:1.*media type text/html is neither an image manifest nor an index" \
    --tls-verify=false "docker://127.0.0.1:$port/test/bb:1"
port=$(start_proxy s1 "$PLAIN" schema1)
bad "schema 1" "docker://127.0.0.1:$port/test/bb:1.*Docker schema 1 manifest.*push it again" \
    --tls-verify=false "docker://127.0.0.1:$port/test/bb:1"
bad "bad reference" "parse registry reference.*repository 'Test/BB'" "docker://$P/Test/BB:1"

step "a layer already in the store is not fetched again, whichever image brought it"
STORE=$W/store-partial
port=$(start_proxy partial "$PLAIN" pass)
fx image pull -q --tls-verify=false "docker://127.0.0.1:$port/test/bb:1" >/dev/null
n_before=$(wc -l <"$W/proxy-partial.log")
fx image pull -q --tls-verify=false "docker://127.0.0.1:$port/test/big:1" >/dev/null
n_after=$(wc -l <"$W/proxy-partial.log")
# big shares the busybox layer with bb: only its data layer and config are fetched.
[ $((n_after - n_before)) = 2 ] || fail "big after bb fetched $((n_after - n_before)) blobs, want 2 (layer + config)"
fx image pull -q --tls-verify=false "docker://127.0.0.1:$port/test/big:1" >/dev/null
[ "$(wc -l <"$W/proxy-partial.log")" = "$n_after" ] || fail "a re-pull of big fetched blobs: $(tail -n +$((n_after + 1)) "$W/proxy-partial.log")"

step "multi-platform index (skopeo copy --all): this host's image, --platform, and the error listing the platforms"
# An index of bb for linux/amd64 and the same layers under an arm64 config, made from mkimage's layout.
python3 - "$W/bb" "$W/multi" <<'PY' >"$W/multi.digests"
import hashlib, json, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(dst, "blobs/sha256", d), "wb").write(data)
    return "sha256:" + d, len(data)
top = json.load(open(os.path.join(src, "index.json")))["manifests"][0]
manifest = json.load(open(os.path.join(src, "blobs/sha256", top["digest"][7:])))
config = json.load(open(os.path.join(src, "blobs/sha256", manifest["config"]["digest"][7:])))
entries = []
for arch, variant in (("amd64", None), ("arm64", "v8")):
    config["architecture"] = arch
    manifest["config"]["digest"], manifest["config"]["size"] = blob(json.dumps(config).encode())
    digest, size = blob(json.dumps(manifest).encode())
    platform = {"os": "linux", "architecture": arch}
    if variant: platform["variant"] = variant
    entries.append({"mediaType": manifest["mediaType"], "digest": digest, "size": size, "platform": platform})
    print(arch, digest)
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
digest, size = blob(json.dumps(index).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": index["mediaType"], "digest": digest, "size": size,
           "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}, open(os.path.join(dst, "index.json"), "w"))
PY
"${SKOPEO[@]}" copy -q --all "oci:$W/multi:multi" "docker://$P/test/multi:1" --dest-tls-verify=false
STORE=$W/store-multi
host_arch=$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')
if want=$(awk -v a="$host_arch" '$1 == a {print $2}' "$W/multi.digests") && [ -n "$want" ]; then
    out=$(fx image pull -q --tls-verify=false "docker://$P/test/multi:1" 2>&1) || fail "multi: $out"
    expect "$out" "$want" "the index entry for this host ($host_arch)"
fi
arm=$(awk '$1 == "arm64" {print $2}' "$W/multi.digests")
out=$(fx image pull -q --tls-verify=false --platform linux/arm64/v8 --name multi-arm:1 "docker://$P/test/multi:1" 2>&1) ||
    fail "--platform linux/arm64/v8: $out"
expect "$out" "^multi-arm:1 $arm$" "--platform chooses the arm64 entry"
out=$(fx image pull -q --tls-verify=false --platform linux/s390x --name multi-s390x:1 "docker://$P/test/multi:1" 2>&1) &&
    fail "--platform linux/s390x worked"
expect "$out" "none for linux/s390x; it has linux/amd64, linux/arm64/v8: pull with --platform" "no such platform"
fx image ls | grep -q multi-s390x && fail "a failed platform choice recorded an image"

step "a registry that hangs mid-blob: the stall timeout breaks the transfer and the retry resumes with Range"
STORE=$W/store-hang
port=$(start_proxy hang "$PLAIN" hang-once)
out=$(FNEXEC_PULL_STALL_SECONDS=2 fx image pull -q --tls-verify=false "docker://127.0.0.1:$port/test/big:1" 2>&1) || fail "hang: $out"
grep -Eq "bytes=[1-9][0-9]*-" "$W/proxy-hang.log" || fail "hang: the retry did not resume with Range: $(cat "$W/proxy-hang.log")"

step "SIGKILL mid-pull: no image, and the next pull fetches only what was not completely verified"
STORE=$W/store-kill
fx image ls >/dev/null
port=$(start_proxy kill "$PLAIN" slow)
fx image pull -q --tls-verify=false "docker://127.0.0.1:$port/test/big:1" >/dev/null 2>&1 &
puller=$!
# Killed once a layer is in the store and another is still coming (the slow proxy takes seconds for 3 MB).
for _ in $(seq 300); do [ -n "$(ls -A "$STORE/layers/sha256")" ] && break; sleep 0.05; done
[ -n "$(ls -A "$STORE/layers/sha256")" ] || fail "SIGKILL: no layer reached the store"
kill -KILL "$puller"
wait "$puller" 2>/dev/null || true
[ "$(fx image ls --json | tr -d ' \n')" = "[]" ] || fail "SIGKILL: an image was recorded"
n_before=$(wc -l <"$W/proxy-kill.log")
out=$(fx image pull --tls-verify=false "docker://127.0.0.1:$port/test/big:1" 2>&1) || fail "re-pull after SIGKILL: $out"
expect "$out" "skipped: already in the store" "the re-pull after SIGKILL reuses the verified layer"
[ $(($(wc -l <"$W/proxy-kill.log") - n_before)) -lt 3 ] || fail "the re-pull after SIGKILL fetched every blob again"
[ -z "$(ls -A "$STORE/tmp")" ] || fail "SIGKILL: work files left in $STORE/tmp after the next pull"
step "the daemon: fn create --image docker://... pulls with the credentials and CAs named in fnexec.conf"
STORE=$W/store-daemon
mkdir -p "$W/certs.d/127.0.0.1:$AUTH" "$STORE"
cp "$W/ca/ca.crt" "$W/certs.d/127.0.0.1:$AUTH/ca.crt"
# The test's own subordinate ids: daemon functions get per-function user namespaces by default.
echo "fnexec-test:1000000000:4194304" >"$W/subids"
printf 'registry_auth_file = %s\nregistry_certs_dir = %s\nsubid_user = fnexec-test\nsubuid_file = %s\nsubgid_file = %s\n' \
    "$W/auth.json" "$W/certs.d" "$W/subids" "$W/subids" >"$W/fnexec.conf"
SOCK=$W/fnexec.sock
"$FNEXEC_BIN" --root "$STORE" serve --config "$W/fnexec.conf" --socket "$SOCK" --cgroups disabled >"$W/serve.log" 2>&1 &
echo $! >>"$PIDS"
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
out=$("$FNEXEC_BIN" fn create --socket "$SOCK" pulled --image "docker://127.0.0.1:$AUTH/test/bb:1" --entrypoint /bin/sh 2>&1) ||
    fail "fn create docker://: $out $(cat "$W/serve.log")"
out=$(fx image ls) && expect "$out" "127.0.0.1:$AUTH/test/bb" "the daemon's pull is in its store"
out=$("$FNEXEC_BIN" fn create --socket "$SOCK" broken --image "docker://127.0.0.1:$AUTH/test/nothere:1" 2>&1) &&
    fail "fn create with a missing image worked"
expect "$out" "docker://127.0.0.1:$AUTH/test/nothere:1.*404" "fn create with a missing image"

step "the daemon: POST /v1/images/pull answers 202, progress is in GET /v1/images/pulls/{id}, and a PUT of the same reference joins it"
# Over TLS with the CA in the daemon's registry_certs_dir: a PUT cannot ask for --tls-verify=false.
port=$(PROXY_TLS_CERT=$W/ca/server.crt PROXY_TLS_KEY=$W/ca/server.key start_proxy race "$PLAIN" slow)
mkdir -p "$W/certs.d/127.0.0.1:$port" && cp "$W/ca/ca.crt" "$W/certs.d/127.0.0.1:$port/ca.crt"
api() { curl -sS --unix-socket "$SOCK" "$@"; }
reply=$(api -X POST -d "{\"reference\":\"docker://127.0.0.1:$port/test/big:1\"}" -w ' %{http_code}' http://fnexec/v1/images/pull)
expect "$reply" '^\{"id":"[0-9a-f]{32}",.*"joined":false\} 202$' "POST /v1/images/pull"
id=$(sed 's/.*"id":"\([0-9a-f]*\)".*/\1/' <<<"$reply")
out=$("$FNEXEC_BIN" fn create --socket "$SOCK" raced --image "docker://127.0.0.1:$port/test/big:1" --entrypoint /bin/sh 2>&1) ||
    fail "fn create racing the pull: $out $(cat "$W/serve.log")"
status=$(api "http://fnexec/v1/images/pulls/$id")
expect "$status" '"state":"done".*"joined":1.*"layers":\[\{"digest":"sha256:[0-9a-f]{64}","state":"(done|reused)","done":[0-9]+,"total":[0-9]+\}' "pull status"
expect "$status" '"state":"done","done":([0-9]{6,}),"total":\1\}' "pull status: the data layer was fetched"
grep -q "function=raced joins pull id=$id" "$W/serve.log" || fail "the PUT did not join the pull: $(cat "$W/serve.log")"
blobs=$(wc -l <"$W/proxy-race.log")
[ "$blobs" = "$(sort -u "$W/proxy-race.log" | wc -l)" ] || fail "a blob was downloaded twice: $(cat "$W/proxy-race.log")"
out=$(api -X POST -d '{"reference":"docker://Bad/Ref"}' -w ' %{http_code}' http://fnexec/v1/images/pull)
expect "$out" "repository.* 400$" "POST with a bad reference"
out=$(api -w ' %{http_code}' http://fnexec/v1/images/pulls/0123)
expect "$out" "no pull with id 0123.* 404$" "GET of an unknown pull"

step "fnexec image pull --remote: the daemon pulls, this process shows the progress; a failure is the daemon's error"
out=$("$FNEXEC_BIN" image pull --remote --socket "$SOCK" --name remote:1 "docker://127.0.0.1:$port/test/bb:1" 2>&1) ||
    fail "pull --remote: $out"
expect "$out" "Copying blob [0-9a-f]{12} (done|skipped: already in the store)" "pull --remote shows each layer"
expect "$out" "^remote:1 sha256:[0-9a-f]{64}$" "pull --remote prints the name and digest"
out=$(fx image ls) && expect "$out" "^remote " "the remote pull is in the daemon's store"
out=$("$FNEXEC_BIN" image pull --remote -q --socket "$SOCK" --tls-verify=false "docker://$P/test/nothere:1" 2>&1) &&
    fail "pull --remote of a missing image worked"
expect "$out" "through the daemon.*docker://$P/test/nothere:1.*404" "pull --remote of a missing image"
grep -q wonderland "$W/serve.log" && fail "the password is in the daemon's log"

step "the daemon restarts mid-pull: GET shows the pull failed as interrupted, and the next pull reuses its verified layers"
STORE=$W/store-restart
SOCK2=$W/fnexec-restart.sock
start_daemon() {
    "$FNEXEC_BIN" --root "$STORE" serve --config "$W/fnexec.conf" --socket "$SOCK2" --cgroups disabled >>"$W/serve-restart.log" 2>&1 &
    daemon=$!
    echo $daemon >>"$PIDS"
    for _ in $(seq 100); do [ -S "$SOCK2" ] && curl -s --unix-socket "$SOCK2" http://fnexec/v1/functions >/dev/null && break; sleep 0.1; done
}
start_daemon
port=$(start_proxy restart "$PLAIN" slow)
reply=$(curl -sS --unix-socket "$SOCK2" -X POST -d "{\"reference\":\"127.0.0.1:$port/test/big:1\",\"tls_verify\":false}" http://fnexec/v1/images/pull)
id=$(sed 's/.*"id":"\([0-9a-f]*\)".*/\1/' <<<"$reply")
for _ in $(seq 300); do [ -n "$(ls -A "$STORE/layers/sha256" 2>/dev/null)" ] && break; sleep 0.05; done
[ -n "$(ls -A "$STORE/layers/sha256")" ] || fail "restart: no layer reached the store before the kill"
kill -KILL "$daemon"
wait "$daemon" 2>/dev/null || true
rm -f "$SOCK2"
start_daemon
status=$(curl -sS --unix-socket "$SOCK2" "http://fnexec/v1/images/pulls/$id")
expect "$status" '"state":"failed".*"error":"interrupted: the daemon stopped while this pull ran; the layers it had completely verified stay in the store.*"interrupted":true' "an interrupted pull after the restart"
grep -q "recovered 1 registry pull" "$W/serve-restart.log" || fail "the restart does not say it failed the pull: $(cat "$W/serve-restart.log")"
n_before=$(wc -l <"$W/proxy-restart.log")
reply=$(curl -sS --unix-socket "$SOCK2" -X POST -d "{\"reference\":\"127.0.0.1:$port/test/big:1\",\"tls_verify\":false}" http://fnexec/v1/images/pull)
id=$(sed 's/.*"id":"\([0-9a-f]*\)".*/\1/' <<<"$reply")
for _ in $(seq 600); do
    status=$(curl -sS --unix-socket "$SOCK2" "http://fnexec/v1/images/pulls/$id")
    # The pull's own state follows its reference; its layers have states of their own.
    grep -q '"reference":"[^"]*","state":"\(done\|failed\)"' <<<"$status" && break
    sleep 0.1
done
expect "$status" '"reference":"[^"]*","state":"done".*"state":"reused"' "the pull after the restart reuses a verified layer"
[ $(($(wc -l <"$W/proxy-restart.log") - n_before)) -lt 3 ] || fail "the pull after the restart fetched every blob again"
# A finished pull is read back from the state database after another restart.
kill -TERM "$daemon"; wait "$daemon" 2>/dev/null || true
start_daemon
expect "$(curl -sS --unix-socket "$SOCK2" "http://fnexec/v1/images/pulls/$id")" '"state":"done","started_ms"' "a finished pull after a restart"
kill -TERM "$daemon"; wait "$daemon" 2>/dev/null || true
echo "registry: all steps passed" >&2
