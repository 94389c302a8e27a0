/*
 * fqe_ct_counts and fqe_ct_in_counts: how many flows each pod holds in
 * fqe_conntrack, those it opened and those opened towards it (a share of
 * their own). The datapath counts up; the flow sweeper writes exact counts.
 */
import { u32Codec, u64Codec } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

/** FQE_MAX_ENDPOINTS each */
export const ctCountsMap = keyValueMap({
  name: 'fqe_ct_counts',
  property: 'ctCounts',
  type: MapType.HASH,
  maxEntries: 4096,
  key: u32Codec,
  value: u64Codec,
});
export const ctInCountsMap = keyValueMap({
  name: 'fqe_ct_in_counts',
  property: 'ctInCounts',
  type: MapType.HASH,
  maxEntries: 4096,
  key: u32Codec,
  value: u64Codec,
});
