/*
 * What the inline learner learned, from its records (fqe_learned), into the
 * agent's cache: no packet is decoded and no map is read. The kernel already
 * wrote each address into fqe_allow, so nothing is written back; the
 * reconciler is told what the kernel holds (noteKernelEntry) so that it can
 * expire and replace those entries later. A record counts only when its name
 * checks out as a string: it hashes to the record's hash under this node's
 * key and the pod's policy allows it (the kernel compared the real bytes;
 * the agent does not take the kernel's word for a name either). A cache
 * change the record did not cause (an eviction past --max-ips-per-name,
 * also of the record's own first addresses) is handed back for the
 * reconciler to write. A new name past the pod's --max-names-per-pod is not
 * cached: its addresses are handed back too, so the reconciler takes out
 * what the kernel wrote for it (fail closed). Pure: no I/O, clock injected.
 */
import type { FqdnCache, Change } from '../cache/fqdn-cache.js';
import type { EnforcedPod } from '../pods/endpoints.js';
import type { LearnedRecord } from '../datapath/codecs.js';
import { AllowSource, type AllowKey, type AllowValue } from '../datapath/codecs.js';
import { rulesForName } from '../policy/annotation.js';

export interface KernelRecordsDeps {
  cache: FqdnCache;
  pod(identity: number): EnforcedPod | undefined;
  /** does this name hash to this hash (the node's keyed hash, or the unkeyed one)? */
  hashesTo(name: string, hash: bigint): boolean;
  /** the kernel wrote this entry (host `ip`): remember it as written */
  noteKernelEntry(key: AllowKey, value: AllowValue, ip: string): void;
  /** hash -> name, for egressctl and a restarted agent */
  rememberName(hash: bigint, name: string): void;
  /** how long an answer with this TTL keeps its address, in ms (the kernel's clamp and grace) */
  keepMs(ttlS: number): number;
  /** a new name past the pod's name cap: not cached (count it, log it) */
  nameRefused(pod: EnforcedPod, name: string): void;
}

export interface RecordsResult {
  accepted: number;
  /** no such pod now, or a name that does not check out */
  refused: number;
  /** a new name past the pod's name cap (its addresses are in `changes`, to be taken out) */
  overNameCap: number;
  addresses: number;
  /** cache changes the records did not write (evictions, names past the cap): the reconciler's */
  changes: Change[];
}

export class KernelRecords {
  /** names that checked out, per pod policy object: a policy change starts afresh */
  private readonly checked = new WeakMap<object, Map<bigint, string>>();

  constructor(private readonly deps: KernelRecordsDeps) {}

  private nameChecksOut(pod: EnforcedPod, name: string, hash: bigint): boolean {
    let known = this.checked.get(pod.policy);
    if (known?.get(hash) === name) return true;
    if (!this.deps.hashesTo(name, hash) || !rulesForName(pod.policy, name).allowed) return false;
    if (!known) this.checked.set(pod.policy, (known = new Map()));
    if (known.size >= 65_536) known.clear();
    known.set(hash, name);
    return true;
  }

  apply(records: LearnedRecord[]): RecordsResult {
    const result: RecordsResult = { accepted: 0, refused: 0, overNameCap: 0, addresses: 0, changes: [] };
    for (const r of records) {
      const pod = this.deps.pod(r.identity);
      if (!pod || !this.nameChecksOut(pod, r.name, r.nameHash)) {
        result.refused++;
        continue;
      }
      const admitted = this.deps.cache.admits(r.identity, r.name);
      if (admitted) this.deps.rememberName(r.nameHash, r.name);
      else {
        result.overNameCap++;
        this.deps.nameRefused(pod, r.name);
      }
      const tsMs = r.tsMs;
      const own = new Set(r.addrs.map((a) => a.ip));
      for (const a of r.addrs) {
        const changes = admitted
          ? this.deps.cache.restore(r.identity, r.name, a.ip, tsMs + this.deps.keepMs(a.ttlS), 'kernel')
          : [];
        this.deps.noteKernelEntry(
          { identity: r.identity, addr: a.addr, prefixLen: 128 },
          { expiresNs: a.expiresNs, nameHash: r.nameHash, ports: r.ports, source: AllowSource.kernel },
          a.ip,
        );
        // the changes for the record's addresses are the kernel's writes; anything else (an eviction) is not
        for (const c of changes) if (!own.has(c.ip)) result.changes.push(c);
      }
      for (const ip of own) {
        // refused, or evicted by the record's own later addresses: the kernel's entry must go (or carry other names)
        if (!admitted || !this.deps.cache.holds(r.identity, r.name, ip))
          result.changes.push({ identity: r.identity, ip });
      }
      if (!admitted) continue;
      result.accepted++;
      result.addresses += r.addrs.length;
    }
    return result;
  }
}
