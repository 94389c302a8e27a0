/*
 * fqe_names: which name does this hash stand for? (key: the keyed name
 * hash). Written by the name registry for egressctl and a restarted agent;
 * no program reads it.
 */
import { struct, single, cstring, u64Codec } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { keyValueMap } from './define.js';
import { NAME_LEN } from './common.js';

/** lower case, no trailing dot, NUL padded */
export const nameCodec = single(struct('name', { name: cstring(NAME_LEN, 'name') }), 'name');

/** FQE_MAX_NAMES */
export const namesMap = keyValueMap({
  name: 'fqe_names',
  property: 'names',
  type: MapType.HASH,
  maxEntries: 65_536,
  flags: BPF_F_NO_PREALLOC,
  key: u64Codec,
  value: nameCodec,
});
