/*
 * A stand-in for a CNI's tc program (bpf/cni_standin.bpf.c: passes
 * everything with TC_ACT_OK, counts what it sees), attached next to ours in
 * a test topology's node namespace, and a bounded wait for our link to head
 * a tcx chain again (the head guard). Nothing of it is pinned; close()
 * removes every attachment it made.
 */
import { join } from 'node:path';
import { DEFAULT_BPF_DIR, TC_PRIORITY } from '../../agent/datapath/datapath.js';
import { ownLinkId, type Direction } from '../../agent/datapath/attach.js';
import { native, BPF_F_BEFORE } from '../../agent/datapath/native.js';
import { sleep, type Topology } from './topology.js';

/** The stand-in's legacy filter: priority 1 like ours, another handle. */
export const STANDIN_HANDLE = 0x5eed;

/** A CNI's program as far as we are concerned: passes everything, counts what it saw. */
export interface Standin {
  progId: number;
  /** every packet it saw */
  seen(): bigint;
  /** IPv4 TCP SYNs (connection attempts) it saw */
  syns(): bigint;
  /** attach through tcx (appended, or first with BPF_F_BEFORE); detached by close() */
  attachTcx(direction: Direction, opts?: { first?: boolean }): void;
  /** detach its tcx links (a CNI restarting: its old links go, it attaches again) */
  detachTcx(): void;
  /** attach through legacy tc at priority 1 with its own handle; removed by close() */
  attachLegacy(direction: Direction): void;
  close(): void;
}

export function loadStandin(topo: Topology, ifindex: number): Standin {
  // Nothing in this object is pinned: the directory is never created.
  const obj = native.loadObject(join(DEFAULT_BPF_DIR, 'cni_standin.bpf.o'), `${topo.pinDir}-standin-never-used`);
  const progFd = obj.programs.standin_pass!.fd;
  const mapFd = obj.maps.standin_seen!.fd;
  const links: number[] = [];
  const legacy: Direction[] = [];
  const netns = topo.nodeNsPath;
  return {
    progId: native.progInfo(progFd).id,
    seen: () => native.mapLookup(mapFd, Buffer.from([0, 0, 0, 0]), 8)!.readBigUInt64LE(),
    syns: () => native.mapLookup(mapFd, Buffer.from([1, 0, 0, 0]), 8)!.readBigUInt64LE(),
    attachTcx(direction, opts = {}) {
      links.push(
        native.tcxAttach({ ifindex, direction, progFd, netns, ...(opts.first ? { flags: BPF_F_BEFORE } : {}) }),
      );
    },
    detachTcx() {
      for (const fd of links.splice(0)) native.closeFd(fd);
    },
    attachLegacy(direction) {
      native.tcAttach({ ifindex, direction, handle: STANDIN_HANDLE, priority: TC_PRIORITY, progFd, netns });
      legacy.push(direction);
    },
    close() {
      for (const fd of links.splice(0)) native.closeFd(fd); // the last reference: detached
      for (const direction of legacy.splice(0))
        native.tcDetach({ ifindex, direction, handle: STANDIN_HANDLE, priority: TC_PRIORITY, netns });
      native.closeObject(obj.id);
    },
  };
}

/**
 * Polls (every ~1 ms, at most `limitMs`) until our pinned link heads the
 * hook's chain again; ms since `since` (hrtime ns), or null if it never did.
 */
export async function untilOursHeads(
  topo: Topology,
  ifindex: number,
  direction: Direction,
  since: bigint,
  limitMs = 2000,
): Promise<number | null> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    const head = native.tcxQuery({ ifindex, direction, netns: topo.nodeNsPath }).linkIds[0];
    if (head !== undefined && head === ownLinkId(topo.pinDir, ifindex, direction))
      return Number(process.hrtime.bigint() - since) / 1e6;
    await sleep(1);
  }
  return null;
}
