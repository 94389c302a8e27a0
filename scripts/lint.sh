#!/usr/bin/env bash
# `npm run lint`: eslint (typescript-eslint and the layering rules of
# eslint.config.js), prettier's check (120 columns) for the TypeScript, and
# clang-format's check for bpf/ and native/. `npm run format` rewrites
# instead of checking. npm test runs the check.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t c_files < <(git ls-files 'bpf/*.c' 'bpf/*.h' 'native/*.cc' 'native/*.h' 'cni/*.c' 'cni/*.h')
if [ "${1:-}" = --write ]; then
  node_modules/.bin/prettier --log-level warn --write agent test bench eslint.config.js
  clang-format -i "${c_files[@]}"
  exit 0
fi
status=0
node_modules/.bin/eslint agent test bench || status=1
node_modules/.bin/prettier --log-level warn --check agent test bench eslint.config.js || status=1
clang-format --dry-run --Werror "${c_files[@]}" || status=1
if [ $status -ne 0 ]; then echo "lint: problems above (npm run format fixes the formatting)" >&2; fi
exit $status
