#!/usr/bin/env bash
# The `lambda-ric` meson suite: builds (or reuses) the cached aws-lambda-ric, then runs the
# integration tests of doctest suite lambda-ric against it. A failed build fails the suite.
# Usage: run-ric-suite.sh INTEGRATION_TEST_BINARY
set -euo pipefail
if ! "$(dirname "$0")/build-ric.sh"; then
  echo "lambda-ric: building aws-lambda-ric failed (output above): the suite cannot run" >&2
  exit 1
fi
export FNEXEC_RIC_DIR=${FNEXEC_RIC_CACHE:-/var/cache/fnexec/aws-lambda-ric}/node_modules/aws-lambda-ric
exec "$1" -ts=lambda-ric
