/*
 * fqe_allow: may this pod reach this destination, on which ports, until
 * when? An LPM trie whose prefix covers the identity (always in full) and
 * then the address, so one pod's range of the trie is contiguous
 * (allow-walk.ts). Written by the reconciler, the learners and the static
 * maps; the enforcer's decision starts here.
 */
import { struct, u8, u32, u64, addr, pad, countOf, list, mapped, named, type ValueOf } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { keyValueMap } from './define.js';
import { MAX_PORT_RULES, portRuleCodec } from './common.js';

/** bits of an allow key's prefix taken by the identity */
export const LPM_IDENTITY_BITS = 32;

export const AllowSource = { agent: 1, kernel: 2, static: 3 } as const;

/** A prefix length in the 128-bit mapped address space, stored after `extraBits` bits that always match. */
export function prefixLength(extraBits: number, what: string) {
  return named(
    'prefixlen',
    mapped(
      u32,
      (stored) => stored - extraBits,
      (len: number) => {
        if (!Number.isInteger(len) || len < 0 || len > 128)
          throw new Error(`${what}: prefix length ${len} is not in 0..128`);
        return extraBits + len;
      },
    ),
  );
}

export const allowKeyCodec = struct('allow_key', {
  /** prefix length in the 128-bit mapped address space */
  prefixLen: prefixLength(LPM_IDENTITY_BITS, 'allow key'),
  identity: u32,
  addr,
});
export type AllowKey = ValueOf<typeof allowKeyCodec>;

export const allowValueCodec = struct('allow_val', {
  /** CLOCK_MONOTONIC ns; 0n = never expires */
  expiresNs: u64,
  nameHash: u64,
  nports: countOf('ports', u8),
  /** AllowSource */
  source: u8,
  pad: pad(2),
  pad2: pad(4),
  /** empty = any port, TCP and UDP */
  ports: list(portRuleCodec, MAX_PORT_RULES, 'port rules'),
});
export type AllowValue = ValueOf<typeof allowValueCodec>;

/** FQE_MAX_ALLOW */
export const allowMap = keyValueMap({
  name: 'fqe_allow',
  property: 'allow',
  type: MapType.LPM_TRIE,
  maxEntries: 1_048_576,
  flags: BPF_F_NO_PREALLOC,
  key: allowKeyCodec,
  value: allowValueCodec,
});
