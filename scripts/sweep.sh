#!/usr/bin/env bash
# Removes what an earlier test run left behind when it was killed before it
# could clean up: network namespaces and pin dirs named fqet-<pid36>-...
# whose test process no longer exists. Touches nothing else.
set -euo pipefail
alive() { [ -d "/proc/$((36#$1))" ]; }
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^fqet-' || true); do
  pid=$(echo "$ns" | cut -d- -f2)
  alive "$pid" || ip netns del "$ns" 2>/dev/null || true
done
for dir in /sys/fs/bpf/fqet-*; do
  [ -e "$dir" ] || continue
  pid=$(basename "$dir" | cut -d- -f2)
  alive "$pid" || rm -rf "$dir"
done
