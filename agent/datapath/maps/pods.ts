/*
 * fqe_pods: which pod owns this identity? Its interface and names, as the
 * endpoint manager last applied them, for egressctl and a restarted agent.
 */
import { struct, u32, cstring, named, u32Codec, type ValueOf } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { keyValueMap } from './define.js';

export const podInfoCodec = struct('pod_info', {
  ifindex: u32,
  /** EndpointFlag as last applied */
  flags: u32,
  ifname: cstring(16, 'interface name'),
  namespace: named('pod_namespace', cstring(64, 'pod namespace')),
  name: named('pod_name', cstring(256, 'pod name')),
});
export type PodInfo = ValueOf<typeof podInfoCodec>;

/** FQE_MAX_ENDPOINTS */
export const podsMap = keyValueMap({
  name: 'fqe_pods',
  property: 'pods',
  type: MapType.HASH,
  maxEntries: 4096,
  flags: BPF_F_NO_PREALLOC,
  key: u32Codec,
  value: podInfoCodec,
});
