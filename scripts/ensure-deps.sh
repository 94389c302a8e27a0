#!/usr/bin/env bash
# Installs what fqdn-egress needs to build, test and run the demo, and only
# what is missing: Debian packages (apt-get, as root) and the npm packages
# pinned in package-lock.json. Safe to run again; fast when nothing is missing.
# --kernel-matrix: also what the kernel matrix (scripts/kernels.sh) needs.
# --npm-only: only the npm packages (no root, no apt; the unit tests).
set -euo pipefail
cd "$(dirname "$0")/.."

# npm ci when node_modules is missing or older than the lock file.
npm_deps() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  fi
}
if [ "${1:-}" = --npm-only ]; then
  npm_deps
  exit 0
fi

PKGS=(clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 dnsmasq-base dnsutils curl
      iputils-ping iperf3 dnsperf make g++ python3 pkg-config util-linux procps openssl clang-format
      containernetworking-plugins)
if [ "${1:-}" = --kernel-matrix ]; then
  # qemu boots the kernels; busybox and cpio make their root file system; the
  # keyring checks the archive they come from; xz and zstd unpack modules
  PKGS+=(qemu-system-x86 busybox-static cpio debian-archive-keyring xz-utils zstd)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "fqdn-egress: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "fqdn-egress: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

npm_deps
