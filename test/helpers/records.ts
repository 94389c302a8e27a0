/*
 * Learned records as the inline learner writes them (struct fqe_learned_rec),
 * for unit tests and benchmarks of the agent's record path. Laid out from
 * the declared layout (maps/learned.ts), which the codecs test checks
 * against the C header.
 */
import {
  learnedRecordLayout,
  learnedAddrLayout,
  portRuleCodec,
  type PortRule,
} from '../../agent/datapath/maps/index.js';
import { parseIp } from '../../agent/net/addr.js';

export interface RecordSpec {
  identity: number;
  name: string;
  nameHash: bigint;
  tsNs: bigint;
  addrs: Array<{ ip: string; ttlS: number; expiresNs: bigint }>;
  ports?: PortRule[];
  partial?: boolean;
}

export function encodeLearnedRecord(r: RecordSpec): Buffer {
  const f = learnedRecordLayout.offsets as Record<string, number>;
  const a = { size: learnedAddrLayout.size, fields: learnedAddrLayout.offsets as Record<string, number> };
  const b = Buffer.alloc(f.addrs! + r.addrs.length * a.size);
  b.writeBigUInt64LE(r.tsNs, f.tsNs!);
  b.writeBigUInt64LE(r.nameHash, f.nameHash!);
  b.writeUInt32LE(r.identity, f.identity!);
  b.writeUInt16LE(r.addrs.length, f.naddrs!);
  b.writeUInt16LE(Buffer.byteLength(r.name), f.nameLen!);
  b.writeUInt8(r.partial ? 1 : 0, f.flags!);
  const ports = r.ports ?? [];
  b.writeUInt8(ports.length, f.nports!);
  ports.forEach((p, i) => {
    b.writeUInt16LE(p.port, f.ports! + i * portRuleCodec.size);
    b.writeUInt8(p.proto, f.ports! + i * portRuleCodec.size + portRuleCodec.offsets.proto!);
  });
  b.write(r.name, f.name!, 'latin1');
  r.addrs.forEach((x, i) => {
    const at = f.addrs! + i * a.size;
    parseIp(x.ip).copy(b, at + a.fields.addr!);
    b.writeBigUInt64LE(x.expiresNs, at + a.fields.expiresNs!);
    b.writeUInt32LE(x.ttlS, at + a.fields.ttlS!);
  });
  return b;
}
