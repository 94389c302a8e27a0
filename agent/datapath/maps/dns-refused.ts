/*
 * fqe_dns_refused: which name did a refused DNS query (or TLS flow) ask
 * for? Keyed like its event, so egressctl drops and the agent can show it.
 * The kernel writes it; an LRU with room for the recorded events' names.
 */
import { struct, u8, u16, u32, u64, pad, countOf, byteList, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';
import { NAME_LEN } from './common.js';

export const refusedKeyCodec = struct('refused_key', { tsNs: u64, identity: u32, sport: u16, pad: pad(2) });
export type RefusedKey = ValueOf<typeof refusedKeyCodec>;

/** FQE_REFUSED_PARSED: a plain one-question query, its qtype and name set */
const REFUSED_PARSED = 0x1;

const refusedNameLayout = struct('refused_name', {
  nameLen: countOf('wire', u16),
  qtype: u16,
  flags: u8,
  proto: u8,
  pad: pad(2),
  wire: byteList(NAME_LEN),
});

export interface RefusedName {
  /** the question name as sent (wire format, no root label); null when the query was not one plain question */
  wire: Buffer | null;
  qtype: number;
  proto: number;
}

export const refusedNameCodec = {
  size: refusedNameLayout.size,
  struct: refusedNameLayout as typeof refusedNameLayout & { cName: string },
  encode: (v: RefusedName): Buffer =>
    refusedNameLayout.encode({
      wire: v.wire ?? Buffer.alloc(0),
      qtype: v.qtype,
      flags: v.wire ? REFUSED_PARSED : 0,
      proto: v.proto,
    }),
  decode(b: Buffer): RefusedName {
    const raw: ValueOf<typeof refusedNameLayout> = refusedNameLayout.decode(b);
    return { wire: raw.flags & REFUSED_PARSED ? raw.wire : null, qtype: raw.qtype, proto: raw.proto };
  },
};

/** FQE_MAX_DNS_REFUSED (2 * FQE_RECENT_EVENTS) */
export const dnsRefusedMap = keyValueMap({
  name: 'fqe_dns_refused',
  property: 'dnsRefused',
  type: MapType.LRU_HASH,
  maxEntries: 2048,
  key: refusedKeyCodec,
  value: refusedNameCodec,
});
