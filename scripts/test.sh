#!/usr/bin/env bash
# `npm test`: installs what is missing (`npm run setup`), builds, and runs
# the lint (`npm run lint`) and every test with node's test runner: test/unit (pure), test/kernel (BPF
# programs through BPF_PROG_TEST_RUN and on veths) and test/e2e (the
# node-in-a-box with the real agent, the chart, the demo). Kernel and e2e
# tests need root; with CI=true they fail rather than skip when they cannot
# run. Arguments: test files to run instead of all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
bash scripts/build.sh
bash scripts/sweep.sh
status=0
if [ $# -eq 0 ]; then
  bash scripts/lint.sh || status=$?
  set -- dist/test/unit/*.test.js dist/test/kernel/*.test.js dist/test/e2e/*.test.js
fi
node --test --test-concurrency=2 --test-timeout=420000 "$@" || status=$?
bash scripts/sweep.sh
exit $status
