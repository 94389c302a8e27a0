/*
 * fqe_dns_tcp: where each pod's DNS-over-TCP stream to a resolver stands
 * (the next byte the resolver will read), keyed like fqe_conntrack. The
 * kernel's; userspace reads the keys only (a pod's purge).
 */
import { struct, u32, pad } from '../layout.js';
import { MapType } from '../native.js';
import { rawValueMap } from './define.js';
import { ctKeyCodec } from './conntrack.js';

const dnsTcpLayout = struct('dns_tcp', { nextSeq: u32, pad: pad(4) });

/** FQE_MAX_DNS_TCP */
export const dnsTcpMap = rawValueMap({
  name: 'fqe_dns_tcp',
  property: 'dnsTcp',
  type: MapType.LRU_HASH,
  maxEntries: 16_384,
  key: ctKeyCodec,
  value: dnsTcpLayout,
});
