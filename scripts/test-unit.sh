#!/usr/bin/env bash
# `npm run test:unit`: the pure tests (test/unit/) as any user, on a machine
# with only Node: npm packages if missing, the TypeScript compiled, no apt,
# no clang, no native addon, no root. Seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh --npm-only
rm -rf dist  # no stale output from removed sources
node_modules/.bin/tsc -p tsconfig.json
node --test --test-concurrency=4 "${@:-dist/test/unit/}"
