/*
 * fqe_pod_origins and fqe_rule_origins: where a pod's rules came from
 * ("annotation", or "policy NS/NAME, clusterpolicy NAME": the policy
 * resources that select it), per pod (key: identity) and per rule of
 * fqe_policy (same key). Written by the agent beside fqe_policy, read by
 * egressctl; no program reads them.
 */
import { struct, u32, cstring, u32Codec, type ValueOf } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { keyValueMap } from './define.js';
import { policyKeyCodec } from './policy.js';

/** FQE_ORIGINS_LEN */
export const ORIGINS_LEN = 500;

export const OriginFlag = {
  /** the pod carries fqdn-egress.io annotations, and policies decide instead */
  annotationIgnored: 0x1,
} as const;

export const originsCodec = struct('origins', {
  /** OriginFlag */
  flags: u32,
  /** origins joined by ", " (cut with "..." past the length) */
  text: cstring(ORIGINS_LEN, 'origins'),
});
export type Origins = ValueOf<typeof originsCodec>;

/** Origins joined as the maps hold them: cut (at a whole origin, then "...") to fit. */
export function originsText(origins: readonly string[]): string {
  let text = '';
  for (const o of origins) {
    const next = text ? `${text}, ${o}` : o;
    if (Buffer.byteLength(next) > ORIGINS_LEN - 5) return text ? `${text}, ...` : '...';
    text = next;
  }
  return text;
}

/** FQE_MAX_ENDPOINTS */
export const podOriginsMap = keyValueMap({
  name: 'fqe_pod_origins',
  property: 'podOrigins',
  type: MapType.HASH,
  maxEntries: 4096,
  flags: BPF_F_NO_PREALLOC,
  key: u32Codec,
  value: originsCodec,
});

/** FQE_MAX_POLICY */
export const ruleOriginsMap = keyValueMap({
  name: 'fqe_rule_origins',
  property: 'ruleOrigins',
  type: MapType.HASH,
  maxEntries: 65_536,
  flags: BPF_F_NO_PREALLOC,
  key: policyKeyCodec,
  value: originsCodec,
});
