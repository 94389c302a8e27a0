/*
 * fqe_cidrs: the agent-wide --allow-cidrs prefixes, any port. LPM over the
 * family and the address, so an IPv6 prefix never covers IPv4 (value: 1).
 * Written by sync/static-maps.ts.
 */
import { struct, u8, addr, pad, mapped, u32Codec, type ValueOf } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { keyValueMap } from './define.js';
import { prefixLength } from './allow.js';

/** bits of a CIDR key's prefix taken by the family word */
const CIDR_FAMILY_BITS = 32;

export const cidrKeyCodec = struct('cidr_key', {
  /** prefix length in the 128-bit mapped address space (IPv4: 96 + len) */
  prefixLen: prefixLength(CIDR_FAMILY_BITS, 'cidr key'),
  family: mapped(
    u8,
    (f): 4 | 6 => (f === 4 ? 4 : 6),
    (f: 4 | 6) => f,
  ),
  pad: pad(3),
  addr,
});
export type CidrKey = ValueOf<typeof cidrKeyCodec>;

/** FQE_MAX_CIDRS */
export const cidrsMap = keyValueMap({
  name: 'fqe_cidrs',
  property: 'cidrs',
  type: MapType.LPM_TRIE,
  maxEntries: 1024,
  flags: BPF_F_NO_PREALLOC,
  key: cidrKeyCodec,
  value: u32Codec,
});
