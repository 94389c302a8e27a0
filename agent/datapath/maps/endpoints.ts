/*
 * fqe_endpoints: which identity and mode owns this interface (key: ifindex).
 * Written by the endpoint manager; the programs look up every packet's
 * interface here.
 */
import { struct, u32, u32Codec, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

export const EndpointFlag = { enforce: 0x1, audit: 0x2, dnsFilterOff: 0x4 } as const;

export const endpointCodec = struct('endpoint', { identity: u32, flags: u32 });
export type Endpoint = ValueOf<typeof endpointCodec>;

/** FQE_MAX_ENDPOINTS: interfaces (and so pods) one node enforces */
export const endpointsMap = keyValueMap({
  name: 'fqe_endpoints',
  property: 'endpoints',
  type: MapType.HASH,
  maxEntries: 4096,
  key: u32Codec,
  value: endpointCodec,
});
