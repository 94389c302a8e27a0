#!/usr/bin/env bash
# Builds what is out of date: the BPF objects (clang), the native addon
# (node-gyp, through npm so it uses the local Node headers) and the
# TypeScript (tsc). Assumes scripts/ensure-deps.sh ran.
set -euo pipefail
cd "$(dirname "$0")/.."

make -s -C bpf

addon=build/Release/fqe_native.node
if [ ! -f "$addon" ] || [ -n "$(find native binding.gyp bpf/lib/fqe_types.h -newer "$addon" -print -quit)" ]; then
  npm run -s build:native >/tmp/fqe-node-gyp.log 2>&1 || { cat /tmp/fqe-node-gyp.log >&2; exit 1; }
fi

rm -rf dist  # no stale output from removed sources
node_modules/.bin/tsc -p tsconfig.json
