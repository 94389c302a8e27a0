#!/usr/bin/env bash
# `npm run bench [-- NAME...]`: installs what is missing, builds, and runs the
# benchmarks in bench/ (all, or the named ones: enforcer, learner, agent,
# cache-eviction, lost-records, throughput, dns-latency, dns-query-filter,
# tls-check, flood, tcp-reassembly, restart, memory, head-guard, cni-window).
# Each prints one JSON line. BENCH_SMOKE=1 makes a short run. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
bash scripts/build.sh
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in dist/bench/*.bench.js; do names+=("$(basename "$f" .bench.js)"); done
fi
for n in "${names[@]}"; do
  node "dist/bench/$n.bench.js"
done
