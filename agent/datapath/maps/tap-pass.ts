/*
 * fqe_tap_pass: may the agent's DNS tap take this answer? The learner marks
 * an answer to a real query it could not learn from in full (UDP: per query
 * id; TCP: per connection, dnsId 0); the value says until when (ns).
 */
import { struct, single, u8, u16, u32, u64, addr, pad, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

export const tapKeyCodec = struct('tap_key', {
  identity: u32,
  podPort: u16,
  dnsId: u16,
  resolver: addr,
  proto: u8,
  pad: pad(3),
});
export type TapKey = ValueOf<typeof tapKeyCodec>;

/** CLOCK_MONOTONIC: the tap passes it until then */
export const tapValueCodec = single(struct('tap_val', { untilNs: u64 }), 'untilNs');

/** FQE_MAX_TAP_PASS */
export const tapPassMap = keyValueMap({
  name: 'fqe_tap_pass',
  property: 'tapPass',
  type: MapType.LRU_HASH,
  maxEntries: 65_536,
  key: tapKeyCodec,
  value: tapValueCodec,
});
