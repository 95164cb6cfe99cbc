#!/usr/bin/env bash
# The `lambda-ric` meson suite: builds (or reuses) the cached aws-lambda-ric, then runs the
# integration tests of doctest suite lambda-ric against it.
# Usage: run-ric-suite.sh INTEGRATION_TEST_BINARY
set -euo pipefail
"$(dirname "$0")/build-ric.sh"
export FNEXEC_RIC_DIR=${FNEXEC_RIC_CACHE:-/var/cache/fnexec/aws-lambda-ric}/node_modules/aws-lambda-ric
exec "$1" -ts=lambda-ric
