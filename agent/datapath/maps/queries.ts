/*
 * fqe_queries: which DNS queries did enforced pods really send? The
 * enforcer records each; an answer teaches only when it matches one
 * (learn/query-ledger.ts).
 */
import { struct, u8, u16, u32, u64, addr, pad, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

export const queryKeyCodec = struct('query_key', { identity: u32, sport: u16, dnsId: u16, resolver: addr });
export type QueryKey = ValueOf<typeof queryKeyCodec>;

export const queryValueCodec = struct('query_val', { sentNs: u64, proto: u8, pad: pad(7) });
export type QueryValue = ValueOf<typeof queryValueCodec>;

/** FQE_MAX_PENDING */
export const queriesMap = keyValueMap({
  name: 'fqe_queries',
  property: 'queries',
  type: MapType.LRU_HASH,
  maxEntries: 65_536,
  key: queryKeyCodec,
  value: queryValueCodec,
});
