/*
 * Allow entries found in fqe_allow rather than brought by a record: at
 * start-up (what the previous agent and the kernel left) and when the
 * learned-records ring lost some (a walk of the pods that lost records).
 * An entry enters the FQDN cache only with a name that checks out as a
 * string: it hashes to the entry's hash and the pod's policy allows it; the
 * pod's --max-names-per-pod cap holds here too.
 */
import type { FqdnCache } from '../cache/fqdn-cache.js';
import type { Reconciler } from '../sync/reconciler.js';
import type { EnforcedPod } from '../pods/endpoints.js';
import type { NameRegistry } from '../names/name-registry.js';
import { formatIp } from '../net/addr.js';
import { AllowSource, type AllowKey, type AllowValue } from '../datapath/codecs.js';
import { rulesForName } from '../policy/annotation.js';

export interface KernelEntriesDeps {
  names: NameRegistry;
  cache: FqdnCache;
  reconciler: Reconciler;
  pod(identity: number): EnforcedPod | undefined;
  /** an entry whose name does not check out */
  refused(): void;
  /** a new name past the pod's cap */
  nameRefused(pod: EnforcedPod, name: string): void;
}

export class KernelEntries {
  constructor(private readonly d: KernelEntriesDeps) {}

  /**
   * The name behind a kernel entry's hash, only when it checks out as a
   * string: it hashes to that hash under this node's key (or, for entries
   * from before the key, the unkeyed hash) and the pod's policy allows it.
   */
  checkedName(identity: number, hash: bigint): string | undefined {
    const name = this.d.names.lookup(hash);
    const pod = this.d.pod(identity);
    if (!name || !this.d.names.hashesTo(name, hash) || !pod || !rulesForName(pod.policy, name).allowed) {
      this.d.refused();
      return undefined;
    }
    return name;
  }

  /** A kernel-learned entry the records did not bring (they were lost): into the cache, with its name. */
  import(key: AllowKey, value: AllowValue): void {
    const pod = this.d.pod(key.identity);
    if (!pod || value.source !== AllowSource.kernel || key.prefixLen !== 128) return;
    if (!this.d.reconciler.noteKernelEntry(key, value)) return; // known as it is
    const name = this.checkedName(key.identity, value.nameHash);
    if (!name) return;
    const ip = formatIp(key.addr);
    if (!this.d.cache.admits(key.identity, name)) {
      this.d.nameRefused(pod, name);
      this.d.reconciler.markDirty([{ identity: key.identity, ip }]);
      return;
    }
    this.d.reconciler.markDirty(this.d.cache.restore(key.identity, name, ip, Number(value.expiresNs) / 1e6, 'kernel'));
  }

  /**
   * Start-up: every entry of fqe_allow is adopted by the reconciler, and the
   * learned ones with a name on record go back into the cache. Pods are not
   * known yet: the reconciler drops names their policy does not allow.
   */
  restore(allow: Array<[AllowKey, AllowValue]>): void {
    this.d.reconciler.adopt(allow);
    for (const [key, value] of allow) {
      const name = this.d.names.known(value.nameHash);
      if (name && value.source === AllowSource.kernel && !this.d.names.hashesTo(name, value.nameHash)) continue;
      if (!name || value.expiresNs === 0n || value.source === AllowSource.static || key.prefixLen !== 128) continue;
      // past the cap (lowered since): left out of the cache, so the first full resync takes the entry out
      if (!this.d.cache.admits(key.identity, name)) continue;
      this.d.cache.restore(
        key.identity,
        name,
        formatIp(key.addr),
        Number(value.expiresNs) / 1e6,
        value.source === AllowSource.kernel ? 'kernel' : 'agent',
      );
    }
  }
}
