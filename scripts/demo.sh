#!/usr/bin/env bash
# `npm run demo`: installs what is missing, builds, and runs the demo in a
# node-in-a-box of network namespaces. `-- --keep` leaves it running;
# `-- --clean` removes a kept demo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--clean" ]; then
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^fqedemo-' || true); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    ip netns del "$ns"
  done
  rm -rf /sys/fs/bpf/fqedemo-*
  echo "demo: removed"
  exit 0
fi
bash scripts/ensure-deps.sh
bash scripts/build.sh
exec node dist/test/demo.js "$@"
