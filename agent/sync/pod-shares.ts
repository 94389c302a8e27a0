/*
 * fqe_pod_shares: what each pod holds of the node-wide tables, exactly, for
 * the kernel's shares. The kernel counts up as it adds; entries expire and
 * are deleted by the agent, so the agent writes the true counts back on its
 * sweeps: allow entries as the reconciler knows them, flows under the TLS
 * check as fqe_tls_flows holds them. A pod gone from both gets zeros.
 */
import type { DatapathMaps } from '../datapath/datapath.js';

export function writePodShares(
  maps: Pick<DatapathMaps, 'tlsFlows' | 'podShares'>,
  allowByIdentity: Map<number, number>,
): void {
  const tls = new Map<number, number>();
  for (const key of maps.tlsFlows.keys()) tls.set(key.identity, (tls.get(key.identity) ?? 0) + 1);
  const identities = new Set<number>([...allowByIdentity.keys(), ...tls.keys(), ...maps.podShares.keys()]);
  for (const identity of identities) {
    maps.podShares.set(identity, {
      allow: BigInt(allowByIdentity.get(identity) ?? 0),
      tlsFlows: BigInt(tls.get(identity) ?? 0),
    });
  }
}
