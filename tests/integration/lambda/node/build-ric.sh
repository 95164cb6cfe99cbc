#!/usr/bin/env bash
# Builds the AWS Lambda Node.js Runtime Interface Client (npm's aws-lambda-ric: its install scripts
# build aws-lambda-cpp and curl from source with cmake and autotools) once, into a cache that later
# runs reuse. Measured here on 2 cores: 3 min to download and 6 min to build, 27 min at load 13,
# which is why its test is the separate `lambda-ric` suite.
# Usage: build-ric.sh   (FNEXEC_RIC_CACHE overrides /var/cache/fnexec/aws-lambda-ric)
set -euo pipefail
cache=${FNEXEC_RIC_CACHE:-/var/cache/fnexec/aws-lambda-ric}
ric=$cache/node_modules/aws-lambda-ric
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # two suites at once build it once
if [ -f "$ric/dist/rapid-client.node" ] && [ -f "$ric/bin/index.mjs" ]; then exit 0; fi
cd "$cache"
[ -f package.json ] || echo '{"name":"fnexec-ric-cache","version":"1.0.0","private":true}' >package.json
start=$(date +%s)
nice npm install --no-audit --no-fund --foreground-scripts aws-lambda-ric
# npm 11 runs no install script of a dependency until it is approved: approve this one, build it.
if [ ! -f "$ric/dist/rapid-client.node" ]; then
  npm install-scripts approve aws-lambda-ric
  nice npm rebuild aws-lambda-ric --foreground-scripts
fi
if [ ! -f "$ric/dist/rapid-client.node" ]; then
  echo "build-ric: $ric/dist/rapid-client.node was not built (needs cmake, autoconf, automake, libtool, g++)" >&2
  exit 1
fi
echo "build-ric: aws-lambda-ric built in $(($(date +%s) - start)) s at $ric" >&2
