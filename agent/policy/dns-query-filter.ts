/*
 * The DNS query filter's userspace half. Pure; owns what the agent tells
 * the kernel about queries (how a refused query's name is shown is in
 * dns/presentation.ts). Knows no maps: the agent writes what these return.
 *
 * What the kernel does (bpf/lib/dns_query.h): an enforced pod's query to a
 * trusted resolver passes only when its name is one the pod's rules allow,
 * or is, or lies under, one of the cluster's own domains. Those domains
 * reach the kernel here: each as its keyed hash (wildcardHash) and the real
 * bytes in hash order (hashOrderBytes), which the kernel compares before it
 * trusts a hash hit. Any other query is answered NXDOMAIN in place.
 *
 * Per pod: the annotation `fqdn-egress.io/dns-filter: "on" | "off"`; the
 * agent-wide default comes from --dns-filter. Off sets FQE_EP_DNS_FILTER_OFF.
 */
import { normalizeName, NameError } from './pattern.js';
import { hashOrderBytes, wildcardHash } from './name-hash.js';

export const DNS_FILTER_ANNOTATION = 'fqdn-egress.io/dns-filter';
export const DEFAULT_CLUSTER_DOMAINS = ['cluster.local'] as const;

export type DnsFilterMode = 'on' | 'off';

/** The filter for one pod: its annotation when valid, else the agent's default. */
export function dnsFilterFor(
  annotations: Record<string, string>,
  fallback: DnsFilterMode,
): { mode: DnsFilterMode; problem: string | null } {
  const raw = annotations[DNS_FILTER_ANNOTATION];
  if (raw === undefined) return { mode: fallback, problem: null };
  const value = raw.trim().toLowerCase();
  if (value === 'on' || value === 'off') return { mode: value, problem: null };
  // fail closed: a typo must not switch the filter off
  return { mode: 'on', problem: `${DNS_FILTER_ANNOTATION}: "${raw}" is neither "on" nor "off"; the filter stays on` };
}

/** A cluster domain as the kernel holds it: key and value of fqe_cluster_domains. */
export interface ClusterDomainEntry {
  domain: string;
  hash: bigint;
  /** labels right to left, lower case: what the kernel compares */
  name: Buffer;
}

/** Normalize --cluster-domain values; throws with the offending value. */
export function parseClusterDomains(values: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    let d: string;
    try {
      d = normalizeName(v.trim());
    } catch (err) {
      throw new Error(`--cluster-domain "${v}": ${err instanceof NameError ? err.reason : String(err)}`);
    }
    if (!out.includes(d)) out.push(d);
  }
  return out;
}

export function clusterDomainEntries(domains: readonly string[], hashKey: bigint): ClusterDomainEntry[] {
  return domains.map((domain) => ({ domain, hash: wildcardHash(domain, hashKey), name: hashOrderBytes(domain) }));
}
