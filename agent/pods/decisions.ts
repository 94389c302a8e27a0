/*
 * The agent's side of the CNI plugin's contract (docs/cni.md): per pod
 * scheduled to this node, the decision the plugin reads on ADD, in the
 * pinned fqe_pod_decisions map, keyed by namespace and name:
 *   { identity, flags: enforce | audit, with dnsFilterOff } - enforced; the
 *     identity is allocated and the pod's policy written BEFORE this is
 *     published (the endpoint manager's order), so the plugin writes only
 *     the pod's interface, addresses and endpoint;
 *   { 0, 0 } - not enforced: the plugin writes nothing;
 *   { identity, PENDING_FLAG } - written by the plugin, never by us: it
 *     found no decision (agent down or behind) and claimed that identity
 *     (>= PENDING_IDENTITY_BASE). The endpoint manager adopts or purges it;
 *     publishing the real decision ends the wait, which is reported.
 * A decision is inserted with BPF_NOEXIST: a claim the plugin made a moment
 * before is never overwritten unseen. Owns this map only; identities and
 * every other entry of a pod are the endpoint manager's. Pure apart from
 * the map it is given.
 */
import { EndpointFlag, PENDING_FLAG, type PodDecision, type PodRef } from '../datapath/maps/index.js';
import type { BpfMap } from '../datapath/bpf-map.js';
import { podKey } from '../sources/pod.js';

/** What the agent decides for one pod. */
export interface PodVerdict {
  enforced: boolean;
  mode: 'enforce' | 'audit';
  dnsFilter: 'on' | 'off';
}

/** The endpoint flags of a verdict: 0 when not enforced. */
export function verdictFlags(v: PodVerdict): number {
  if (!v.enforced) return 0;
  return (
    (v.mode === 'audit' ? EndpointFlag.audit : EndpointFlag.enforce) |
    (v.dnsFilter === 'off' ? EndpointFlag.dnsFilterOff : 0)
  );
}

/** How a decision reads in the pending histogram's label. */
export function decisionLabel(flags: number): 'enforce' | 'audit' | 'not-enforced' {
  return flags & EndpointFlag.audit ? 'audit' : flags & EndpointFlag.enforce ? 'enforce' : 'not-enforced';
}

export function isPending(d: PodDecision | undefined): boolean {
  return d !== undefined && (d.flags & PENDING_FLAG) !== 0;
}

export interface PodDecisionsOptions {
  map: Pick<BpfMap<PodRef, PodDecision>, 'get' | 'set' | 'delete' | 'entries'>;
  /** CLOCK_MONOTONIC ns (the plugin's clock) */
  nowNs: () => bigint;
  /** a pending pod got its decision after `seconds` */
  onPendingEnded?(pod: PodRef, seconds: number, decision: 'enforce' | 'audit' | 'not-enforced'): void;
}

const BPF_NOEXIST = 1;

export class PodDecisions {
  constructor(private readonly opts: PodDecisionsOptions) {}

  get(pod: PodRef): PodDecision | undefined {
    return this.opts.map.get({ namespace: pod.namespace, name: pod.name });
  }

  /** The plugin's pending claim for this pod, if it made one the agent has not answered. */
  pendingOf(pod: PodRef): PodDecision | undefined {
    const d = this.get(pod);
    return d && isPending(d) ? d : undefined;
  }

  /** Every pending claim, by pod key. */
  pendingClaims(): Map<string, { pod: PodRef; decision: PodDecision }> {
    const out = new Map<string, { pod: PodRef; decision: PodDecision }>();
    for (const [pod, decision] of this.opts.map.entries())
      if (isPending(decision)) out.set(podKey(pod), { pod, decision });
    return out;
  }

  /**
   * Publish a decision (no write when it stands already). A pending claim is
   * replaced and its wait reported. Returns false when the plugin claimed
   * the pod between our read and our insert: the claim stands; the caller
   * adopts it and publishes again.
   */
  publish(pod: PodRef, identity: number, flags: number): boolean {
    const ref = { namespace: pod.namespace, name: pod.name };
    const current = this.opts.map.get(ref);
    if (current && !isPending(current) && current.identity === identity && current.flags === flags) return true;
    const now = this.opts.nowNs();
    const value = { identity, flags, sinceNs: now };
    if (current === undefined) {
      try {
        this.opts.map.set(ref, value, BPF_NOEXIST);
      } catch (err) {
        if ((err as { code?: string }).code === 'EEXIST') return false;
        throw err;
      }
      return true;
    }
    this.opts.map.set(ref, value);
    if (isPending(current)) {
      const waited = now > current.sinceNs ? Number(now - current.sinceNs) / 1e9 : 0;
      this.opts.onPendingEnded?.(ref, waited, decisionLabel(flags));
    }
    return true;
  }

  remove(pod: PodRef): void {
    this.opts.map.delete({ namespace: pod.namespace, name: pod.name });
  }

  /** Every published decision (not the plugin's pending claims) of a pod not in `known`. */
  staleDecisions(known: ReadonlySet<string>): PodRef[] {
    return this.opts.map
      .entries()
      .filter(([pod, d]) => !isPending(d) && !known.has(podKey(pod)))
      .map(([pod]) => pod);
  }

  /** Decisions that name this identity (its purge takes them). */
  byIdentity(identity: number): PodRef[] {
    return this.opts.map
      .entries()
      .filter(([, d]) => d.identity === identity)
      .map(([pod]) => pod);
  }

  identities(): number[] {
    return this.opts.map
      .entries()
      .map(([, d]) => d.identity)
      .filter((i) => i !== 0);
  }
}
