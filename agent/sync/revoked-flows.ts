/*
 * Cutting the tracked flows of a revoked name. When a pod's rules change
 * (an annotation edit, a policy edited, deleted or no longer selecting it)
 * and a name it held is no longer allowed, the flows the pod opened to that
 * name's addresses leave fqe_conntrack: their next packet is judged afresh
 * and refused, as a new connection would be. An address another allowed
 * name of the pod still holds, or one under --allow-cidrs, keeps its flows.
 * Flows that merely outlive their IP's TTL are not touched: only a rule
 * change cuts. Inbound flows (opened towards the pod) are not names' and
 * stay.
 */
import type { BpfMap } from '../datapath/bpf-map.js';
import { CtFlag, type CtKey, type CtValue } from '../datapath/maps/index.js';
import { formatIp } from '../net/addr.js';

export interface RevokedFlowsDeps {
  conntrack: Pick<BpfMap<CtKey, CtValue>, 'entries' | 'deleteMany'>;
  /** the pod may still reach this address (another name of its cache, or --allow-cidrs) */
  stillAllowed(identity: number, ip: string): boolean;
}

export class RevokedFlows {
  /** identity -> addresses whose name was revoked, waiting for cut() */
  private readonly pending = new Map<number, Set<string>>();

  constructor(private readonly deps: RevokedFlowsDeps) {}

  /** Addresses a rule change took from a pod (the cache's changes of forgetNames). */
  note(changes: Iterable<{ identity: number; ip: string }>): void {
    for (const { identity, ip } of changes) {
      let ips = this.pending.get(identity);
      if (!ips) this.pending.set(identity, (ips = new Set()));
      ips.add(ip);
    }
  }

  /** Remove the pod-opened flows to revoked addresses the pod may no longer reach. One table walk; returns the flows cut. */
  cut(): number {
    if (this.pending.size === 0) return 0;
    const revoked = new Map<number, Set<string>>();
    for (const [identity, ips] of this.pending) {
      const gone = [...ips].filter((ip) => !this.deps.stillAllowed(identity, ip));
      if (gone.length) revoked.set(identity, new Set(gone));
    }
    this.pending.clear();
    if (revoked.size === 0) return 0;
    const doomed = this.deps.conntrack
      .entries()
      .filter(
        ([k, v]) =>
          v.flags & CtFlag.outbound &&
          !(v.flags & CtFlag.inbound) &&
          revoked.get(k.identity)?.has(formatIp(k.peerAddr)) === true,
      )
      .map(([k]) => k);
    return doomed.length ? this.deps.conntrack.deleteMany(doomed) : 0;
  }
}
