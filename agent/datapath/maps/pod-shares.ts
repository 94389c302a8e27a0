/*
 * fqe_pod_shares: how much of the node-wide tables each pod holds. The
 * kernel counts up as it adds; the agent writes exact counts back on its
 * sweeps (sync/pod-shares.ts).
 */
import { struct, u64, u32Codec, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

export const podShareCodec = struct('pod_share', {
  /** entries of fqe_allow the pod holds */
  allow: u64,
  /** entries of fqe_tls_flows */
  tlsFlows: u64,
});
export type PodShare = ValueOf<typeof podShareCodec>;

/** FQE_MAX_ENDPOINTS */
export const podSharesMap = keyValueMap({
  name: 'fqe_pod_shares',
  property: 'podShares',
  type: MapType.HASH,
  maxEntries: 4096,
  key: u32Codec,
  value: podShareCodec,
});
