/*
 * fqe_recent and fqe_recent_seq: the last events, for egressctl drops. A
 * ring of slots (slot = seq % FQE_RECENT_EVENTS) and the count of events
 * ever written to it. The kernel writes both; userspace reads.
 */
import { struct, u64, named, u32Codec, u64Codec } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';
import { eventCodec } from './events.js';

/** One slot: seq 0 = never written. */
export const recentCodec = struct('recent', { seq: u64, event: named('ev', eventCodec) });

/** FQE_RECENT_EVENTS (a power of two) */
export const recentMap = keyValueMap({
  name: 'fqe_recent',
  property: 'recent',
  type: MapType.ARRAY,
  maxEntries: 1024,
  key: u32Codec,
  value: recentCodec,
  readOnly: true,
});
export const recentSeqMap = keyValueMap({
  name: 'fqe_recent_seq',
  property: 'recentSeq',
  type: MapType.ARRAY,
  maxEntries: 1,
  key: u32Codec,
  value: u64Codec,
});
