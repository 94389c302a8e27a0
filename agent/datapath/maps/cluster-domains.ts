/*
 * fqe_cluster_domains: is this suffix (keyed hash, as a wildcard rule's)
 * one of the cluster's own domains? The value is a name rule's, for its
 * real name (ports unused), so the DNS query filter compares bytes, not
 * only a hash. Written by ../cluster-domains.ts.
 */
import { u64Codec } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { keyValueMap } from './define.js';
import { policyValueCodec } from './policy.js';

/** FQE_MAX_CLUSTER_DOMAINS */
export const clusterDomainsMap = keyValueMap({
  name: 'fqe_cluster_domains',
  property: 'clusterDomains',
  type: MapType.HASH,
  maxEntries: 64,
  flags: BPF_F_NO_PREALLOC,
  key: u64Codec,
  value: policyValueCodec,
});
