/*
 * The flow sweeper: reclaims tracked flows that went idle (a TCP flow that
 * saw FIN or RST after CLOSING_IDLE, any other after its protocol's idle
 * timeout) and writes each pod's exact flow counts back: the flows it opened
 * to fqe_ct_counts, those opened towards it to fqe_ct_in_counts (a share
 * each), so a pod's shares of the flow table count live flows only. The datapath never
 * deletes a flow (another CPU may have just refreshed it); the sweep re-reads
 * an entry right before deleting it and keeps it when it moved. It also
 * frees the TLS check's state (parser, byte store) of flows that are gone or
 * no longer under the check: the kernel frees it with a verdict or at the
 * end of a watch, but a flow that just stops leaves it. Owns no policy; maps
 * and clock are injected (unit tests use plain tables).
 */
import { CtFlag, IPPROTO, type CtKey, type CtValue } from '../datapath/codecs.js';

/** A flow that saw FIN or RST: gone after this much quiet (final ACKs, retransmits); FQE_CT_CLOSING_IDLE_NS in bpf/lib/config.h. */
export const CLOSING_IDLE_NS = 10_000_000_000n;
/** The kernel's defaults (bpf/lib/config.h) when fqe_config leaves them 0. */
export const DEFAULT_TCP_IDLE_NS = 3_600_000_000_000n;
export const DEFAULT_OTHER_IDLE_NS = 60_000_000_000n;

export interface FlowTable {
  entries(): Array<[CtKey, CtValue]>;
  get(key: CtKey): CtValue | undefined;
  deleteMany(keys: CtKey[]): number;
}

export interface CountTable {
  entries(): Array<[number, bigint]>;
  set(identity: number, count: bigint): void;
}

/** The TLS check's per-flow state (fqe_tls_flows, fqe_tls_bytes): keys are flows. */
export interface FlowStateTable {
  keys(): CtKey[];
  deleteMany(keys: CtKey[]): number;
}

export interface FlowSweeperDeps {
  flows: FlowTable;
  /** the flows each pod opened */
  counts: CountTable;
  /** the flows opened towards each pod (fqe_ct_in_counts); absent: counted in `counts` too */
  inCounts?: CountTable;
  /** the TLS check's state tables, freed with their flows */
  tlsState?: FlowStateTable[];
  /** the kernel's CLOCK_MONOTONIC now */
  nowNs(): bigint;
  tcpIdleNs: bigint;
  otherIdleNs: bigint;
}

/** Each pod's exact count, 0 for a pod that holds none now. */
function writeCounts(table: CountTable, perPod: Map<number, bigint>): void {
  for (const [identity] of table.entries()) if (!perPod.has(identity)) table.set(identity, 0n);
  for (const [identity, n] of perPod) table.set(identity, n);
}

export class FlowSweeper {
  constructor(private readonly deps: FlowSweeperDeps) {}

  private idle(value: CtValue, proto: number, now: bigint): boolean {
    const limit =
      value.flags & CtFlag.closing
        ? CLOSING_IDLE_NS
        : proto === IPPROTO.tcp
          ? this.deps.tcpIdleNs
          : this.deps.otherIdleNs;
    return now - value.lastSeenNs > limit;
  }

  /** One pass: delete idle flows, then write the exact count of each pod's flows. */
  sweep(): { flows: number; reclaimed: number; tlsReclaimed: number } {
    const { flows, counts } = this.deps;
    const now = this.deps.nowNs();
    const out = new Map<number, bigint>();
    const inbound = new Map<number, bigint>();
    const stale: CtKey[] = [];
    let live = 0;
    for (const [key, value] of flows.entries()) {
      if (this.idle(value, key.proto, now)) {
        // Re-read: a packet on another CPU may have refreshed it since the dump.
        const current = flows.get(key);
        if (current && this.idle(current, key.proto, this.deps.nowNs())) {
          stale.push(key);
          continue;
        }
      }
      const share = this.deps.inCounts && value.flags & CtFlag.inbound ? inbound : out;
      share.set(key.identity, (share.get(key.identity) ?? 0n) + 1n);
      live++;
    }
    if (stale.length) flows.deleteMany(stale);
    writeCounts(counts, out);
    if (this.deps.inCounts) writeCounts(this.deps.inCounts, inbound);
    const tlsReclaimed = this.sweepTlsState();
    return { flows: live, reclaimed: stale.length, tlsReclaimed };
  }

  /**
   * Free TLS check state whose flow is gone or past the check. Each
   * candidate's flow is read again right before: a SYN may have just made it.
   */
  private sweepTlsState(): number {
    const { flows, tlsState = [] } = this.deps;
    const underCheck = (key: CtKey): boolean => {
      const v = flows.get(key);
      return v !== undefined && (v.flags & (CtFlag.tlsPending | CtFlag.tlsWatch)) !== 0;
    };
    let freed = 0;
    for (const table of tlsState) {
      const orphans = table.keys().filter((key) => !underCheck(key));
      if (orphans.length) freed += table.deleteMany(orphans);
    }
    return freed;
  }
}
