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
import { endpointsMap } from './maps/endpoints.js';
import { struct, mapped, u32, u64, u32Codec, type ValueOf } from './layout.js';

export const HEAD_GUARD_MAP = 'fqe_head_guard';
const KEY_SIZE = 4;
/** as many as fqe_endpoints holds interfaces */
const MAX_ENTRIES = endpointsMap.shape.maxEntries;

export const headGuardRecordCodec = struct('head_guard', {
  retakes: mapped(u64, Number, BigInt),
  lastRetakeNs: u64,
  backoffUntilNs: u64,
  aheadProgId: u32,
  backoffs: u32,
});
export type HeadGuardRecord = ValueOf<typeof headGuardRecordCodec>;
const VALUE_SIZE = headGuardRecordCodec.size;

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
/** Every record of fqe_head_guard by ifindex (the map closed again); empty when the agent never made it. */
export function readHeadGuardRecords(pinDir: string): Map<number, HeadGuardRecord> {
  const map = openHeadGuardRecords(pinDir);
  if (!map) return new Map();
  try {
    return new Map(map.entries());
  } finally {
    native.closeFd(map.fd);
  }
}

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
