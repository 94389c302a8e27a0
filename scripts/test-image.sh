#!/usr/bin/env bash
# `npm run test:image`: builds the image (scripts/image.sh: local bases,
# buildah, build/image.oci.tar) and runs test/image/image.test.ts, which runs
# the archive's agent and egressctl as the chart does. Root. Installs what it
# needs, like `npm test`; prints how long the build and the test took.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test:image: needs root (buildah, namespaces, bpf(2))" >&2
  exit 1
fi
bash scripts/ensure-deps.sh
bash scripts/build.sh
# buildah working containers (and runc containers) of earlier runs killed before they could clean up
sweep_containers() {
  command -v buildah >/dev/null || return 0
  for ctr in $(buildah containers --format '{{.ContainerName}}' 2>/dev/null | grep '^fqet-' || true); do
    pid=$(echo "$ctr" | cut -d- -f2)
    [ -d "/proc/$((36#$pid))" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
  done
  # runc containers and state of such runs (test/image/image.test.ts: /run/fqet-<pid36>-runc)
  for state in /run/fqet-*-runc; do
    [ -d "$state" ] || continue
    pid=$(basename "$state" | cut -d- -f2)
    [ -d "/proc/$((36#$pid))" ] && continue
    for id in $(runc --root "$state" list -q 2>/dev/null); do runc --root "$state" delete --force "$id" >/dev/null 2>&1 || true; done
    rm -rf "$state"
  done
}
bash scripts/sweep.sh
sweep_containers
start=$SECONDS
bash scripts/image.sh
built=$SECONDS
status=0
node --test --test-concurrency=1 --test-timeout=600000 dist/test/image/image.test.js || status=$?
echo "test:image: image built in $((built - start)) s, tested in $((SECONDS - built)) s"
bash scripts/sweep.sh
sweep_containers
exit $status
