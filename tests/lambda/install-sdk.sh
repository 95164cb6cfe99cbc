#!/bin/sh
# Installs the pinned AWS SDK for JavaScript (package.json here) into DEST/node_modules, once,
# next to the client script the tests run (Node resolves its imports from the script's directory).
# Usage: install-sdk.sh DEST
set -eu
dest=$1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dest"
exec 9>"$dest/.install.lock"
flock 9
cp "$here/sdk-client.mjs" "$dest/sdk-client.mjs"
if [ -f "$dest/node_modules/@aws-sdk/client-lambda/package.json" ] && cmp -s "$here/package.json" "$dest/package.json"; then
  exit 0
fi
cp "$here/package.json" "$dest/package.json"
cd "$dest"
npm install --no-audit --no-fund --loglevel=error >&2
