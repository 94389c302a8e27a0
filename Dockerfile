# fqdn-egress agent image: the agent (fqdn-egress-agent), egressctl, the BPF
# objects and the native libbpf binding. Installed by charts/fqdn-egress.
#
#   docker build -t ghcr.io/fqdn-egress/fqdn-egress:0.1.0 .
#   bash scripts/image.sh      (buildah, local bases, no container registry;
#                               docs/image.md)
#
# The BPF objects are compiled for the build machine's architecture headers
# (bpf/Makefile uses /usr/include/$(uname -m)-linux-gnu): build per platform.

# The bases: the official Node 20 images by default. scripts/image.sh passes
# bases it made from Debian packages and the npm registry's Node instead. A
# build base must hold Node's headers in /usr/local/include/node (node-gyp
# --nodedir=/usr/local below) and npm; a run base, node on PATH.
ARG BASE_BUILD=node:20-bookworm
ARG BASE_RUN=node:20-bookworm-slim

# ---- build: BPF objects (clang), native addon (node-gyp), CNI plugin (cc -static), TypeScript (tsc) ----
FROM ${BASE_BUILD} AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev libelf-dev zlib1g-dev make g++ python3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so a source change reuses this layer. No install
# scripts: nothing needs one, and the addon is built below from source.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

# Sources by name (tsconfig.json also compiles test/ and bench/), so a
# developer's node_modules, dist/ and build/ never enter the image; objects
# built on the host are removed so that make rebuilds them here.
COPY tsconfig.json binding.gyp ./
COPY scripts ./scripts
COPY bpf ./bpf
COPY native ./native
COPY cni ./cni
COPY agent ./agent
COPY test ./test
COPY bench ./bench
# The official node image keeps Node's headers under /usr/local (the build
# script's default, /usr, is where Debian's nodejs package puts them); with
# them node-gyp never downloads headers.
ENV npm_config_nodedir=/usr/local
RUN rm -f bpf/*.o \
 && npm run build \
 && rm -rf dist/test dist/bench \
 && npm prune --omit=dev

# ---- runtime ----
FROM ${BASE_RUN}

# libbpf1/libelf1/zlib1g: what the native addon links against.
# iproute2: the agent runs `ip` and `bridge` to find a pod's host-side interface
# from the route to its IP (and tc is handy by hand).
# The official slim base carries Node's C headers; nothing here compiles.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libbpf1 libelf1 zlib1g iproute2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/local/include/node

WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bpf/*.o ./bpf/
COPY --from=build /app/build/Release/fqe_native.node ./build/Release/fqe_native.node
# The chained CNI plugin (static, libc only): the chart's install-cni init container
# copies it onto the node (docs/cni.md).
COPY --from=build /app/build/fqdn-egress-cni ./build/fqdn-egress-cni

# egressctl on PATH (and the agent under its package name), as small wrappers
# rather than symlinks: they need neither a shebang nor an executable bit on
# the compiled JavaScript.
RUN printf '#!/bin/sh\nexec node /app/dist/agent/cli/egressctl.js "$@"\n' > /usr/local/bin/egressctl \
 && printf '#!/bin/sh\nexec node /app/dist/agent/main.js "$@"\n' > /usr/local/bin/fqdn-egress-agent \
 && chmod 0755 /usr/local/bin/egressctl /usr/local/bin/fqdn-egress-agent

ENV NODE_ENV=production

# What this image is built from (scripts/image.sh and .github/workflows/image.yml
# fill them from git).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/fqdn-egress/fqdn-egress
LABEL org.opencontainers.image.title="fqdn-egress" \
      org.opencontainers.image.description="Kubernetes node agent: annotated pods reach only the domain names they are allowed to reach (eBPF)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# Root on purpose, without root's power: the chart drops ALL capabilities and
# adds back only BPF, NET_ADMIN, PERFMON and NET_RAW. A non-root user
# (USER 65532) cannot work with capabilities here: Kubernetes grants added
# capabilities to a non-root process only through ambient capabilities, which
# it does not set, and the chart's allowPrivilegeEscalation: false
# (no_new_privs) also blocks file capabilities on the node binary. The pins
# also live in the host's bpffs, root-owned with mode 0700, and
# CAP_DAC_OVERRIDE is dropped, so only uid 0 may write there.
USER 0

# A young generation of 2 MiB semi-spaces: the agent's garbage is small and
# short-lived; the default (16 MiB) only shows up as RSS (bench/memory.bench.ts:
# 78 against 135 MiB, same CPU).
ENTRYPOINT ["node", "--max-semi-space-size=2", "/app/dist/agent/main.js"]
