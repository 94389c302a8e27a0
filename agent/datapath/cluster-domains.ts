/*
 * fqe_cluster_domains holds exactly the cluster domains it is given: each
 * as its keyed hash and its real name in hash order (what the enforcer's
 * DNS query filter compares). Owns no policy: the entries come from
 * policy/dns-query-filter.ts through the agent.
 */
import type { BpfMap } from './bpf-map.js';
import type { PolicyValue } from './codecs.js';

export interface ClusterDomainKernelEntry {
  hash: bigint;
  /** labels right to left, lower case */
  name: Buffer;
}

export function syncClusterDomains(
  map: BpfMap<bigint, PolicyValue>,
  entries: readonly ClusterDomainKernelEntry[],
): void {
  const want = new Map(entries.map((e) => [e.hash, e.name]));
  for (const [hash, v] of map.entries()) {
    const name = want.get(hash);
    if (!name || !name.equals(v.name)) map.delete(hash);
  }
  // written after the stale ones are gone: the map is never over its size
  for (const [hash, name] of want) map.set(hash, { ports: [], name });
}
