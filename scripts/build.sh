#!/usr/bin/env bash
# Builds what is out of date: the BPF objects (clang), the native addon
# (node-gyp, through npm so it uses the local Node headers), the CNI
# plugin (cc, static) and the TypeScript (tsc). Assumes scripts/ensure-deps.sh ran.
set -euo pipefail
cd "$(dirname "$0")/.."

make -s -C bpf

addon=build/Release/fqe_native.node
if [ ! -f "$addon" ] || [ -n "$(find native binding.gyp bpf/lib/fqe_types.h -newer "$addon" -print -quit)" ]; then
  npm run -s build:native >/tmp/fqe-node-gyp.log 2>&1 || { cat /tmp/fqe-node-gyp.log >&2; exit 1; }
fi

# the chained CNI plugin: static, libc only (after the addon: node-gyp rebuild empties build/)
cni=build/fqdn-egress-cni
if [ ! -f "$cni" ] || [ -n "$(find cni bpf/lib/fqe_types.h -newer "$cni" -print -quit)" ]; then
  mkdir -p build
  "${CC:-cc}" -std=c11 -D_GNU_SOURCE -static -O2 -Wall -Wextra -Werror -o "$cni" cni/*.c
fi

rm -rf dist  # no stale output from removed sources
node_modules/.bin/tsc -p tsconfig.json
