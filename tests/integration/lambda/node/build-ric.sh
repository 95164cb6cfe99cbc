#!/usr/bin/env bash
# Builds the AWS Lambda Node.js Runtime Interface Client (npm's aws-lambda-ric) once, into a cache
# that later runs reuse. Its own install scripts build a bundled curl with autotools and then
# aws-lambda-cpp (9 min here, 27 min at load 13); this builds what they build, minus that curl:
# aws-lambda-cpp against Debian's libcurl (libcurl4-openssl-dev), then the addon with node-gyp, as
# its postinstall.sh does. The addon then needs libcurl.so.4 at run time, so images carry it with
# `mkimage --host-binary .../rapid-client.node` (its ldd closure).
# Usage: build-ric.sh   (FNEXEC_RIC_CACHE overrides /var/cache/fnexec/aws-lambda-ric)
set -euo pipefail
cache=${FNEXEC_RIC_CACHE:-/var/cache/fnexec/aws-lambda-ric}
ric=$cache/node_modules/aws-lambda-ric
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # two suites at once build it once
if [ -f "$ric/dist/rapid-client.node" ] && [ -f "$ric/bin/index.mjs" ]; then exit 0; fi
for tool in cmake make g++ node npm; do
  command -v "$tool" >/dev/null || { echo "build-ric: $tool is missing (scripts/install-deps.sh --all)" >&2; exit 1; }
done
pkg-config --exists libcurl || { echo "build-ric: libcurl4-openssl-dev is missing (scripts/install-deps.sh)" >&2; exit 1; }
start=$(date +%s)
cd "$cache"
[ -f package.json ] || echo '{"name":"fnexec-ric-cache","version":"1.0.0","private":true}' >package.json
# The package and its dependencies (node-gyp, node-addon-api), none of their install scripts.
nice npm install --no-audit --no-fund --loglevel=error --ignore-scripts aws-lambda-ric
echo "build-ric: npm install took $(($(date +%s) - start)) s" >&2

cd "$ric/deps"
# shellcheck disable=SC1091  # AWS_LAMBDA_CPP_RELEASE, shipped with the package
. ./versions
cpp=aws-lambda-cpp-$AWS_LAMBDA_CPP_RELEASE  # the tarball carries AWS's patches already applied
rm -rf "$cpp" artifacts
tar xzf "$cpp.tar.gz" --no-same-owner
nice cmake -S "$cpp" -B "$cpp/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-fPIC \
  -DCMAKE_INSTALL_PREFIX="$ric/deps/artifacts" >/dev/null
nice cmake --build "$cpp/build" -j "$(nproc)" >/dev/null
cmake --install "$cpp/build" >/dev/null
# binding.gyp links what `deps/artifacts/bin/curl-config --static-libs` prints: the bundled static
# curl upstream, Debian's shared libcurl here.
mkdir -p artifacts/bin
printf '#!/bin/sh\necho -lcurl\n' >artifacts/bin/curl-config
chmod +x artifacts/bin/curl-config

cd "$ric"
# The headers of the node that runs the client: node-gyp would otherwise download them.
nice "$cache/node_modules/.bin/node-gyp" rebuild --nodedir=/usr --jobs="$(nproc)" --loglevel=error >/dev/null
mkdir -p dist
cp build/Release/rapid-client.node dist/
rm -rf build "deps/$cpp" deps/artifacts
if ! ldd dist/rapid-client.node | grep -q 'libcurl.so.4 =>'; then
  echo "build-ric: $ric/dist/rapid-client.node does not link libcurl" >&2
  rm -f dist/rapid-client.node
  exit 1
fi
echo "build-ric: aws-lambda-ric built in $(($(date +%s) - start)) s at $ric" >&2
