/*
 * fqe_hash_key: the per-node secret that keys the name hash, one slot, set
 * once by the agent (names/name-registry.ts) and never 0 after that.
 */
import { struct, single, u64, u32Codec } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

export const hashKeyCodec = single(struct('hash_key', { key: u64 }), 'key');

export const hashKeyMap = keyValueMap({
  name: 'fqe_hash_key',
  property: 'hashKey',
  type: MapType.ARRAY,
  maxEntries: 1,
  key: u32Codec,
  value: hashKeyCodec,
});
