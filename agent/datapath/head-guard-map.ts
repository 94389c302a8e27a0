/*
 * fqe_head_guard: what the tcx head guard (head-guard.ts) did per interface,
 * pinned beside the other maps so egressctl can show it while the agent is
 * down, and a restarted agent keeps counting (and keeps backing off).
 *
 * Userspace only: no BPF program reads or writes it, so its layout lives
 * here, not in bpf/lib/fqe_types.h. The agent creates it (a hash map, key
 * __u32 ifindex, value below); a pin with another shape (a later layout) is
 * replaced, and its figures are lost, which costs nothing but history.
 *   value: u64 retakes           times a new link of ours took the head back
 *          u64 last_retake_ns    CLOCK_MONOTONIC of the last one (0: never)
 *          u64 backoff_until_ns  CLOCK_MONOTONIC until which the guard does not retake (0: not backing off)
 *          u32 ahead_prog_id     the program last found ahead of ours
 *          u32 backoffs          times the guard gave up for a while
 */
import { join } from 'node:path';
import { native, MapType, type BpfError } from './native.js';
import { BpfMap } from './bpf-map.js';
import { u32Codec } from './codecs.js';

export const HEAD_GUARD_MAP = 'fqe_head_guard';
const KEY_SIZE = 4;
const VALUE_SIZE = 32;
/** as many as fqe_endpoints holds interfaces */
const MAX_ENTRIES = 4096;

export interface HeadGuardRecord {
  retakes: number;
  lastRetakeNs: bigint;
  backoffUntilNs: bigint;
  aheadProgId: number;
  backoffs: number;
}

export const headGuardRecordCodec = {
  encode(r: HeadGuardRecord): Buffer {
    const b = Buffer.alloc(VALUE_SIZE);
    b.writeBigUInt64LE(BigInt(r.retakes), 0);
    b.writeBigUInt64LE(r.lastRetakeNs, 8);
    b.writeBigUInt64LE(r.backoffUntilNs, 16);
    b.writeUInt32LE(r.aheadProgId, 24);
    b.writeUInt32LE(r.backoffs, 28);
    return b;
  },
  decode(b: Buffer): HeadGuardRecord {
    return {
      retakes: Number(b.readBigUInt64LE(0)),
      lastRetakeNs: b.readBigUInt64LE(8),
      backoffUntilNs: b.readBigUInt64LE(16),
      aheadProgId: b.readUInt32LE(24),
      backoffs: b.readUInt32LE(28),
    };
  },
};

export type HeadGuardRecords = BpfMap<number, HeadGuardRecord>;

function wrap(fd: number): HeadGuardRecords {
  return new BpfMap(HEAD_GUARD_MAP, fd, KEY_SIZE, VALUE_SIZE, u32Codec, headGuardRecordCodec);
}

function fits(fd: number): boolean {
  const info = native.mapInfo(fd);
  return info.type === MapType.HASH && info.keySize === KEY_SIZE && info.valueSize === VALUE_SIZE;
}

/** The pinned map, or null when there is none (an agent from before the guard) or it has another shape. The caller closes map.fd. */
export function openHeadGuardRecords(pinDir: string): HeadGuardRecords | null {
  let fd: number;
  try {
    fd = native.objGet(join(pinDir, HEAD_GUARD_MAP));
  } catch (err) {
    if ((err as BpfError).code === 'ENOENT') return null;
    throw err;
  }
  if (fits(fd)) return wrap(fd);
  native.closeFd(fd);
  return null;
}

/** The pinned map, created (or replaced, when its shape differs) as needed. The caller closes map.fd. */
export function ensureHeadGuardRecords(pinDir: string): HeadGuardRecords {
  const pin = join(pinDir, HEAD_GUARD_MAP);
  const existing = openHeadGuardRecords(pinDir);
  if (existing) return existing;
  native.unpin(pin);
  const fd = native.createMap(MapType.HASH, KEY_SIZE, VALUE_SIZE, MAX_ENTRIES, HEAD_GUARD_MAP);
  try {
    native.pinObject(fd, pin);
  } catch (err) {
    native.closeFd(fd);
    throw err;
  }
  return wrap(fd);
}
