/*
 * fqe_conntrack: is this flow already tracked? Always from the pod's point
 * of view. The kernel owns the values; the flow sweeper reads and deletes
 * them. Its key, struct fqe_ct_key, also keys the TLS check's and DNS over
 * TCP's per-flow maps.
 */
import { struct, u8, u16, u32, u64, addr, pad, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

export const CtFlag = {
  outbound: 0x1,
  inbound: 0x2,
  audited: 0x4,
  closing: 0x8,
  tlsPending: 0x10,
  tlsRefused: 0x20,
  tlsWatch: 0x40,
} as const;

export const ctKeyCodec = struct('ct_key', {
  identity: u32,
  podAddr: addr,
  peerAddr: addr,
  podPort: u16,
  peerPort: u16,
  proto: u8,
  pad: pad(3),
});
export type CtKey = ValueOf<typeof ctKeyCodec>;

export const ctValueCodec = struct('ct_val', { lastSeenNs: u64, createdNs: u64, flags: u32, pad: pad(4) });
export type CtValue = ValueOf<typeof ctValueCodec>;

/** FQE_MAX_CONNTRACK */
export const conntrackMap = keyValueMap({
  name: 'fqe_conntrack',
  property: 'conntrack',
  type: MapType.LRU_HASH,
  maxEntries: 262_144,
  key: ctKeyCodec,
  value: ctValueCodec,
  readOnly: true,
});
