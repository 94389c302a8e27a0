/*
 * fqe_limits: what each pod may hold of the node-wide tables, one slot the
 * agent writes (a field left 0 takes the kernel default).
 */
import { struct, array, hidden, u32, u32Codec, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

export const limitsCodec = struct('limits', {
  /** allow entries the kernel learner may add for one pod (0: the kernel's default) */
  ipsPerPod: u32,
  /** flows of one pod under the TLS check at once (0: the kernel's default) */
  tlsFlowsPerPod: u32,
  reserved: hidden(array(u32, 6)),
});
export type Limits = ValueOf<typeof limitsCodec>;

export const limitsMap = keyValueMap({
  name: 'fqe_limits',
  property: 'limits',
  type: MapType.ARRAY,
  maxEntries: 1,
  key: u32Codec,
  value: limitsCodec,
});
