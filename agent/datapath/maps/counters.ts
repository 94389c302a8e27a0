/*
 * fqe_counters: how many packets each identity passed and dropped, and
 * why, per CPU. Read summed over CPUs (metrics, egressctl); the kernel
 * owns it, including its event rate limiter's state.
 */
import { struct, array, hidden, u64, u32Codec, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { perCpuMap, perCpuSlot } from './define.js';
import { REASONS, type Reason } from './events.js';

/** FQE_REASON_SLOTS: room for reasons to come, so the counters keep their layout when one is added */
const REASON_SLOTS = 16;

export const countersLayout = struct('counters', {
  passed: u64,
  dropped: u64,
  audited: u64,
  dnsQueries: u64,
  /** addresses the inline learner could not write: past the pod's share of fqe_allow, or the map full */
  learnUnwritten: u64,
  eventsSuppressed: u64,
  /** allow entries written by the inline learner */
  learned: u64,
  /** answers the inline learner left to the agent */
  learnSkipped: u64,
  /** answers whose name hash hit a rule but whose real name did not match */
  learnRefused: u64,
  reasons: array(u64, REASON_SLOTS),
  rlWindowNs: hidden(u64),
  rlCount: hidden(u64),
});
export type Counters = Omit<ValueOf<typeof countersLayout>, 'reasons'> & { reasons: Record<Reason, bigint> };

/** Sum a per-CPU counters value (each CPU's slot rounded up to 8 bytes). */
export const countersCodec = {
  slotSize: perCpuSlot(countersLayout.size),
  decodePerCpu(b: Buffer, cpus: number): Counters {
    const total = countersLayout.read(b, 0);
    for (let cpu = 1; cpu < cpus; cpu++) {
      const c = countersLayout.read(b, cpu * countersCodec.slotSize);
      for (const k of Object.keys(c) as Array<keyof typeof c>) {
        if (k === 'reasons') c.reasons.forEach((n, i) => (total.reasons[i]! += n));
        else total[k] += c[k];
      }
    }
    return {
      ...total,
      reasons: Object.fromEntries(REASONS.map((r, i) => [r, total.reasons[i]!])) as Record<Reason, bigint>,
    };
  },
};

/** FQE_MAX_ENDPOINTS */
export const countersMap = perCpuMap({
  name: 'fqe_counters',
  property: 'counters',
  type: MapType.PERCPU_HASH,
  maxEntries: 4096,
  key: u32Codec,
  value: countersLayout,
  fold: (b, cpus) => countersCodec.decodePerCpu(b, cpus),
});
