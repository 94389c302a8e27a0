#!/usr/bin/env bash
# `npm test`: installs what is missing, builds, and runs every test
# (unit, kernel and end-to-end) with node's test runner. Kernel tests need
# root; with CI=true they fail rather than skip when they cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
bash scripts/build.sh
bash scripts/sweep.sh
status=0
if [ $# -eq 0 ]; then set -- dist/test/*.test.js; fi
node --test --test-concurrency=2 --test-timeout=420000 "$@" || status=$?
bash scripts/sweep.sh
exit $status
