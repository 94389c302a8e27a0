/*
 * fqe_resolvers: is this address a trusted resolver? The value holds
 * ResolverFlag bits. Written by sync/static-maps.ts (flags and kube-dns).
 */
import { struct, single, addr, u32Codec } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

/** trusted; its answers checked against the route back to it unless noPathCheck */
export const ResolverFlag = { trusted: 0x1, noPathCheck: 0x2 } as const;

export const resolverKeyCodec = single(struct('resolver_key', { addr }), 'addr');

/** FQE_MAX_RESOLVERS */
export const resolversMap = keyValueMap({
  name: 'fqe_resolvers',
  property: 'resolvers',
  type: MapType.HASH,
  maxEntries: 64,
  key: resolverKeyCodec,
  value: u32Codec,
});
