#!/usr/bin/env bash
# Builds the agent image on this machine with Debian's tools and no container
# registry, and writes it as an OCI archive (build/image.oci.tar).
#
# The Dockerfile takes its bases as build arguments (official node images by
# default). Here they are made locally and cached in buildah's storage:
#   localhost/fqe-base-run:TAG    bookworm minbase (mmdebstrap, this machine's
#                                 Debian mirror) + node at /usr/local/bin
#   localhost/fqe-base-build:TAG  the same + npm and Node's headers
#                                 (/usr/local/include/node, for node-gyp),
#                                 and this machine's CA bundle for npm
# Node comes from the npm registry's node-linux-<arch> package at an exact
# 20.x version (this machine's `node --version` when it is a 20.x), whose
# tarball carries bin/node and include/node of that very build: the addon is
# compiled against the headers of the Node that runs it, and node-gyp
# downloads nothing. npm comes from the registry's npm package. TAG names the
# Node version and a hash of the recipe below, so a changed recipe rebuilds.
# The image is then built with `buildah build --layers` (cached layers), the
# OCI labels filled from git. Needs root; installs buildah and mmdebstrap
# through apt-get when missing.
#
#   bash scripts/image.sh                 bases (when missing), image, archive
#   bash scripts/image.sh --bases         only the bases; prints their names
#   FQE_NODE_VERSION=20.x.y               another Node 20 for the bases
#   FQE_IMAGE=REPO:TAG                    image name (default: the chart's)
#   FQE_IMAGE_ARCHIVE=PATH                archive path (default build/image.oci.tar)
#   FQE_DEBIAN_MIRROR=URL                 Debian mirror (default: from /etc/apt/sources.list*)
#   FQE_IMAGE_SOURCE=URL                  org.opencontainers.image.source (a fork's repository)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "image: needs root (buildah's storage, mmdebstrap)" >&2
  exit 1
fi

# ---- tools, through apt-get and only when missing (as scripts/ensure-deps.sh) ----
# runc: for the image test (test/image/image.test.ts) to run what it built
PKGS=(buildah mmdebstrap runc git ca-certificates)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "image: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

version=$(node -p 'require("./package.json").version')
IMAGE=${FQE_IMAGE:-ghcr.io/fqdn-egress/fqdn-egress:$version}
ARCHIVE=${FQE_IMAGE_ARCHIVE:-build/image.oci.tar}

case "$(uname -m)" in
  x86_64) node_arch=x64 ;;
  aarch64) node_arch=arm64 ;;
  *) echo "image: no node-linux package for $(uname -m)" >&2; exit 1 ;;
esac
if [ -n "${FQE_NODE_VERSION:-}" ]; then
  node_version=$FQE_NODE_VERSION
elif [[ "$(node --version 2>/dev/null)" =~ ^v(20\.[0-9]+\.[0-9]+)$ ]]; then
  node_version=${BASH_REMATCH[1]}
else
  node_version=$(npm view "node-linux-$node_arch@20" version | tail -n1 | sed -E "s/.*'(.*)'.*/\1/; s/^node-linux-$node_arch@//")
fi
[[ "$node_version" =~ ^20\.[0-9]+\.[0-9]+$ ]] || { echo "image: not a Node 20 version: '$node_version'" >&2; exit 1; }
# npm for the build base; the version Node 20's own release tarballs carry.
NPM_VERSION=${FQE_NPM_VERSION:-10.8.2}

# The first Debian (and Debian security) URI this machine's apt uses.
debian_uri() { # $1: archive path suffix (debian | debian-security)
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
    | grep -E "^(URIs:|deb )" | grep -o -E "https?://[^ ]+/$1/?( |$)" | head -n1 | tr -d ' ' | sed 's,/$,,' || true
}
MIRROR=${FQE_DEBIAN_MIRROR:-$(debian_uri debian)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=$(debian_uri debian-security)
SECURITY=${SECURITY:-${MIRROR%/debian}/debian-security}

# ---- the bases ----
# Everything that decides what the bases hold is in this function; its text is
# hashed into the bases' tag.
make_bases() { # $1: run base name, $2: build base name
  local work ctr mnt
  work=$(mktemp -d /tmp/fqe-image-XXXXXX)
  ctr=""
  trap 'set +e; [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null; rm -rf "$work"' RETURN

  # Node (binary and headers) and npm, from the npm registry
  (cd "$work" && npm pack --silent "node-linux-$node_arch@$node_version" "npm@$NPM_VERSION" >/dev/null)
  mkdir -p "$work/node" "$work/npm/lib/node_modules/npm" "$work/npm/bin" "$work/npm/etc"
  tar -xzf "$work/node-linux-$node_arch-$node_version.tgz" -C "$work/node" --strip-components=1 package/bin/node package/include/node
  [ -f "$work/node/include/node/node_version.h" ] || { echo "image: node-linux-$node_arch@$node_version has no include/node" >&2; return 1; }
  tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$work/npm/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/npm/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/npm/bin/npx"
  # npm trusts this machine's CA bundle (copied below), as this machine's npm does:
  # a TLS-intercepting proxy's CA then works in the build too. Only the build base
  # carries it; nothing of it reaches the image's runtime stage.
  printf 'cafile=/etc/ssl/certs/ca-certificates.crt\nupdate-notifier=false\n' > "$work/npm/etc/npmrc"

  # run base: a bookworm minbase written straight into a scratch container's root,
  # slimmed like the official debian:bookworm-slim (no docs, man pages or locales,
  # also for what the Dockerfile installs later); merged /usr by the hook, without
  # the usrmerge package and the perl it pulls in
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    bookworm "$mnt" \
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY bookworm-security main"
  rm -rf "${mnt:?}"/dev/* # the runtime provides /dev
  install -D -m 0755 "$work/node/bin/node" "$mnt/usr/local/bin/node"
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$node_version" --cmd node \
    --label org.opencontainers.image.description="fqdn-egress local base: Debian bookworm minbase, Node $node_version" "$ctr"
  buildah commit --quiet --rm "$ctr" "$1" >/dev/null
  ctr=""

  # build base: + Node's headers where node-gyp looks with --nodedir=/usr/local, and npm
  ctr=$(buildah from --pull=never "$1")
  mnt=$(buildah mount "$ctr")
  mkdir -p "$mnt/usr/local/include"
  cp -a "$work/node/include/node" "$mnt/usr/local/include/"
  cp -a "$work/npm/." "$mnt/usr/local/"
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  buildah umount "$ctr" >/dev/null
  buildah config --label org.opencontainers.image.description="fqdn-egress local build base: Debian bookworm minbase, Node $node_version with headers, npm $NPM_VERSION" "$ctr"
  buildah commit --quiet --rm "$ctr" "$2" >/dev/null
  ctr=""
}

recipe=$( { declare -f make_bases; echo "$node_arch $node_version $NPM_VERSION $MIRROR $SECURITY"; cat /etc/ssl/certs/ca-certificates.crt; } | sha256sum | cut -c1-12)
BASE_RUN=localhost/fqe-base-run:node$node_version-$recipe
BASE_BUILD=localhost/fqe-base-build:node$node_version-$recipe
if buildah inspect --type image "$BASE_RUN" >/dev/null 2>&1 && buildah inspect --type image "$BASE_BUILD" >/dev/null 2>&1; then
  echo "image: bases cached ($BASE_RUN, $BASE_BUILD)" >&2
else
  echo "image: making the bases (Node $node_version, Debian from $MIRROR)" >&2
  make_bases "$BASE_RUN" "$BASE_BUILD"
fi
if [ "${1:-}" = --bases ]; then
  echo "BASE_BUILD=$BASE_BUILD BASE_RUN=$BASE_RUN"
  exit 0
fi

# ---- the image ----
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then revision+="-dirty"; fi
source_url=${FQE_IMAGE_SOURCE:-https://github.com/fqdn-egress/fqdn-egress}
build_args=(--build-arg "BASE_BUILD=$BASE_BUILD" --build-arg "BASE_RUN=$BASE_RUN"
            --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url")
echo "image: building $IMAGE ($revision)" >&2
# chroot isolation: the RUN steps need no OCI runtime or cgroups (both trouble on some
# VMs); host network: apt and npm reach their registries as this machine does.
buildah build --quiet --layers --pull=never --isolation=chroot --network=host \
  "${build_args[@]}" -t "$IMAGE" -f Dockerfile . >/dev/null
# The build stage by name (from the cache: instant), so that dropping the untagged
# images of earlier builds keeps this build's layers for the next one.
buildah build --quiet --layers --pull=never --isolation=chroot --network=host \
  "${build_args[@]}" --target build -t localhost/fqe-image-build-stage -f Dockerfile . >/dev/null
buildah rmi --prune >/dev/null 2>&1 || true

mkdir -p "$(dirname "$ARCHIVE")"
rm -f "$ARCHIVE"
buildah push --quiet "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE"
echo "image: $IMAGE written to $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1) archive)" >&2
