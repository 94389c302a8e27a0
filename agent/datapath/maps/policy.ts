/*
 * fqe_policy: may this pod learn from answers for this name (by keyed
 * hash), and for which ports? The hash finds the rule; the kernel then
 * compares the question's real name with the rule's `name` (labels right
 * to left, lower case). Written by sync/policy-map.ts.
 */
import { struct, u8, u16, u32, u64, pad, countOf, list, byteList, type ValueOf } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { keyValueMap } from './define.js';
import { MAX_PORT_RULES, NAME_LEN, portRuleCodec } from './common.js';

export const PolicyKind = { exact: 1, wildcard: 2 } as const;

export const policyKeyCodec = struct('policy_key', { identity: u32, kind: u32, hash: u64 });
export type PolicyKey = ValueOf<typeof policyKeyCodec>;

/** A name rule in the kernel: the ports it grants ([] = any) and the name the kernel compares. */
export const policyValueCodec = struct('policy_val', {
  nports: countOf('ports', u8),
  pad: pad(3),
  ports: list(portRuleCodec, MAX_PORT_RULES, 'port rules'),
  nameLen: countOf('name', u16),
  pad2: pad(2),
  /** the rule's name (exact) or suffix (wildcard) as the hash feeds it: labels right to left, lower case */
  name: byteList(NAME_LEN),
});
export type PolicyValue = ValueOf<typeof policyValueCodec>;

/** FQE_MAX_POLICY */
export const policyMap = keyValueMap({
  name: 'fqe_policy',
  property: 'policy',
  type: MapType.HASH,
  maxEntries: 65_536,
  flags: BPF_F_NO_PREALLOC,
  key: policyKeyCodec,
  value: policyValueCodec,
});
