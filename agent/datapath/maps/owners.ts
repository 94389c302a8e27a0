/*
 * fqe_owners: does this pod own this source address? (value: 1). Written by
 * the endpoint manager; the enforcer drops what a pod sends from an address
 * not its own.
 */
import { struct, u32, addr, u32Codec, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

export const ownerKeyCodec = struct('owner_key', { identity: u32, addr });
export type OwnerKey = ValueOf<typeof ownerKeyCodec>;

/** FQE_MAX_OWNED_ADDRS */
export const ownersMap = keyValueMap({
  name: 'fqe_owners',
  property: 'owners',
  type: MapType.HASH,
  maxEntries: 16384,
  key: ownerKeyCodec,
  value: u32Codec,
});
