/*
 * fqe_tls_flows: where the ClientHello parser of a flow pending its TLS
 * check stands (keyed like fqe_conntrack). The kernel owns it; userspace
 * reads a few fields, for inspection and tests, and frees what lost flows
 * left (flow-sweeper.ts).
 */
import { struct, array, bytes, flag8, hidden, u8, u16, u32, u64, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';
import { ctKeyCodec } from './conntrack.js';

export const tlsFlowCodec = struct('tls_flow', {
  /** the next byte's TCP sequence number */
  nextSeq: u32,
  /** client bytes taken so far (kept in fqe_tls_bytes up to its size) */
  parsed: u32,
  need: hidden(u32),
  acc: hidden(u32),
  hsLeft: hidden(u32),
  extLeft: hidden(u32),
  recLeft: hidden(u16),
  recHdr: hidden(u8),
  state: hidden(u8),
  segments: u8,
  nameDone: hidden(u8),
  nameLen: hidden(u16),
  /** the stream's first data byte, as the server's SYN-ACK acked it (valid when based) */
  baseSeq: u32,
  based: flag8,
  /** ClientHellos whose server name was judged */
  hellos: u8,
  recType: hidden(u8),
  named: hidden(u8),
  firstNameAt: hidden(u32),
  firstNameLen: hidden(u32),
  reserved: hidden(array(u32, 4)),
  segLen: hidden(array(u32, 8)),
  segHash: hidden(array(u64, 8)),
  name: hidden(bytes(256)),
});
export type TlsFlow = ValueOf<typeof tlsFlowCodec>;

/** FQE_MAX_TLS_FLOWS */
export const tlsFlowsMap = keyValueMap({
  name: 'fqe_tls_flows',
  property: 'tlsFlows',
  type: MapType.LRU_HASH,
  maxEntries: 16_384,
  key: ctKeyCodec,
  value: tlsFlowCodec,
  readOnly: true,
});
