#!/usr/bin/env bash
# `npm run test:kernels`: the kernel matrix (test/matrix/matrix.ts). Boots
# Debian's kernels (bullseye, bookworm, trixie) in qemu and, in each and on
# this machine's kernel, loads every BPF object and runs the test-run
# suites; prints the table, writes build/kernels/. Root. Installs what it
# needs on top of what `npm test` needs, and builds first. Arguments go to
# the matrix: --suites, --no-host, --jobs, --vm-timeout, --fuzz-runs, --out,
# --cache (or FQE_KERNEL_CACHE; default /var/cache/fqdn-egress/kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test:kernels: needs root (bpf(2), apt-get)" >&2
  exit 1
fi
bash scripts/ensure-deps.sh --kernel-matrix
bash scripts/build.sh
bash scripts/sweep.sh
status=0
node dist/test/matrix/matrix.js "$@" || status=$?
bash scripts/sweep.sh
exit $status
