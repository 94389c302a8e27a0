/*
 * fqe_learned and fqe_learned_lost: the inline learner's reports. One
 * learned record per answer it learned from, on a ring buffer the agent
 * drains (Datapath.openLearned); and, per CPU, how many records found the
 * ring full (the agent then reads fqe_allow back: learn/lost-records.ts).
 *
 * A record is a header and then naddrs addresses: the layout is declared
 * below for the cross-check, and decoded by hand (the variable tail, and a
 * hot path: thousands of records a second).
 */
import { struct, array, cstring, pad, u8, u16, u32, u64, addr, u32Codec, u64Codec } from '../layout.js';
import { formatIp, ADDR_LEN } from '../../net/addr.js';
import { MapType } from '../native.js';
import { perCpuMap, ringBuffer } from './define.js';
import { MAX_PORT_RULES, NAME_LEN, portRuleCodec, type PortRule } from './common.js';

/** FQE_LEARNED_MAX_ADDRS */
export const LEARNED_MAX_ADDRS = 128;
/** fqe_learned_rec.flags */
export const LearnedFlag = { partial: 0x1 } as const;
/** fqe_learned_addr.flags */
export const LearnedAddrFlag = { unwritten: 0x1 } as const;

export const learnedAddrLayout = struct('learned_addr', { addr, expiresNs: u64, ttlS: u32, flags: u32 });

export const learnedRecordLayout = struct('learned_rec', {
  tsNs: u64,
  nameHash: u64,
  identity: u32,
  naddrs: u16,
  nameLen: u16,
  flags: u8,
  nports: u8,
  pad: pad(6),
  ports: array(portRuleCodec, MAX_PORT_RULES),
  name: cstring(NAME_LEN, 'name'),
  addrs: array(learnedAddrLayout, LEARNED_MAX_ADDRS),
});

export interface LearnedAddress {
  ip: string;
  /** the same, as the kernel holds it (16 bytes, IPv4 mapped) */
  addr: Buffer;
  /** the allow entry's expiry after the kernel's write (CLOCK_MONOTONIC ns) */
  expiresNs: bigint;
  ttlS: number;
}

/*
 * A record's addresses are those the kernel wrote: one it could not write
 * (past the pod's share of fqe_allow, or the map full; counted in
 * learn_unwritten) is left out, so the agent does not take it as allowed.
 */
export interface LearnedRecord {
  /** when the learner wrote it (CLOCK_MONOTONIC, ms) */
  tsMs: number;
  nameHash: bigint;
  identity: number;
  /** the question, lower case, dotted, as the kernel compared it with the rule */
  name: string;
  partial: boolean;
  ports: PortRule[];
  addrs: LearnedAddress[];
}

/** a record's "any port" (shared: records are read, never changed) */
const ANY_PORT: PortRule[] = Object.freeze([]) as unknown as PortRule[];

const f = learnedRecordLayout.offsets as Record<
  'tsNs' | 'nameHash' | 'identity' | 'naddrs' | 'nameLen' | 'flags' | 'nports' | 'ports' | 'name' | 'addrs',
  number
>;
const a = learnedAddrLayout.offsets as Record<'addr' | 'expiresNs' | 'ttlS' | 'flags', number>;
const ADDR_SIZE = learnedAddrLayout.size;
const RULE_SIZE = portRuleCodec.size;
const RULE_PROTO = portRuleCodec.offsets.proto!;

export const learnedRecordCodec = {
  /** Throws on a record shorter than its header says: the kernel and agent disagree on the layout. */
  decode(b: Buffer): LearnedRecord {
    if (b.length < f.addrs)
      throw new Error(`learned record of ${b.length} bytes, shorter than its ${f.addrs}-byte header`);
    const naddrs = b.readUInt16LE(f.naddrs);
    if (naddrs > LEARNED_MAX_ADDRS || b.length < f.addrs + naddrs * ADDR_SIZE) {
      throw new Error(`learned record of ${b.length} bytes cannot hold the ${naddrs} addresses it claims`);
    }
    const nameLen = Math.min(b.readUInt16LE(f.nameLen), NAME_LEN - 1);
    const nports = Math.min(b.readUInt8(f.nports), MAX_PORT_RULES);
    const ports: PortRule[] = nports === 0 ? ANY_PORT : [];
    for (let i = 0; i < nports; i++) {
      const at = f.ports + i * RULE_SIZE;
      ports.push({ port: b.readUInt16LE(at), proto: b.readUInt8(at + RULE_PROTO) });
    }
    const addrs: LearnedAddress[] = [];
    for (let i = 0; i < naddrs; i++) {
      const at = f.addrs + i * ADDR_SIZE;
      if (b.readUInt32LE(at + a.flags) & LearnedAddrFlag.unwritten) continue;
      const ip = b.subarray(at + a.addr, at + a.addr + ADDR_LEN);
      addrs.push({
        ip: formatIp(ip),
        addr: ip,
        expiresNs: b.readBigUInt64LE(at + a.expiresNs),
        ttlS: b.readUInt32LE(at + a.ttlS),
      });
    }
    return {
      // ms as a double: exact to well under a microsecond for centuries of uptime
      tsMs: (b.readUInt32LE(f.tsNs + 4) * 2 ** 32 + b.readUInt32LE(f.tsNs)) / 1e6,
      nameHash: b.readBigUInt64LE(f.nameHash),
      identity: b.readUInt32LE(f.identity),
      name: b.toString('latin1', f.name, f.name + nameLen),
      partial: (b.readUInt8(f.flags) & LearnedFlag.partial) !== 0,
      ports,
      addrs,
    };
  },
};

function sumPerCpuU64(b: Buffer, cpus: number): bigint {
  let sum = 0n;
  for (let i = 0; i < cpus; i++) sum += b.readBigUInt64LE(i * 8);
  return sum;
}

/** FQE_LEARNED_BYTES */
export const learnedMap = ringBuffer({
  name: 'fqe_learned',
  property: 'learnedFd',
  bytes: 1 << 22,
  record: learnedRecordLayout,
});
/** learned records that found the ring full, summed over CPUs (slot 0) */
export const learnedLostMap = perCpuMap({
  name: 'fqe_learned_lost',
  property: 'learnedLost',
  type: MapType.PERCPU_ARRAY,
  maxEntries: 1,
  key: u32Codec,
  value: u64Codec,
  fold: sumPerCpuU64,
});
