/*
 * fqe_tls_bytes: the stream bytes the TLS check took of each flow under it
 * (from its first data byte; the tail is room for 64-byte copies). The
 * kernel's; userspace reads the keys only (values are 8 KiB) and frees what
 * lost flows left.
 */
import { struct, bytes } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { rawValueMap } from './define.js';
import { ctKeyCodec } from './conntrack.js';

/** FQE_TLS_MAX_BYTES + 64 */
const tlsBytesLayout = struct('tls_bytes', { b: bytes(8192 + 64) });

/** FQE_MAX_TLS_STORES */
export const tlsBytesMap = rawValueMap({
  name: 'fqe_tls_bytes',
  property: 'tlsBytes',
  type: MapType.HASH,
  maxEntries: 4096,
  flags: BPF_F_NO_PREALLOC,
  key: ctKeyCodec,
  value: tlsBytesLayout,
});
