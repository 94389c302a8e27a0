/*
 * Lost learned records: which pods lost some, and their entries back into
 * the agent's cache, at a cost bounded by what the loss touched.
 * The inline learner writes an answer's addresses into fqe_allow, adds them
 * to the pod's count (fqe_counters.learned), then queues its record; when
 * the ring is full the record is lost (fqe_learned_lost rises). Its entries
 * are in the map and enforced, but the cache does not know them, so the
 * agent would not expire, evict or revoke them. When the lost counter rises,
 * the agent compares each pod's count with the addresses its records
 * brought: a pod whose count grew by more lost records, and only the ranges
 * of the trie of such pods are walked (datapath/allow-walk.ts), at most
 * `budget` map calls per tick, resumed on the next. A tick without a loss
 * costs one read of the lost counter.
 * Accounting, so that no loss is missed: the counts are read before and
 * after a drain of the ring. A pod is walked when its count after the drain
 * exceeds the addresses it received by more than earlier walks accounted
 * for; a walk accounts for the excess before the drain, which is never more
 * than was lost, since the learner counts and queues a record in one run of
 * one program (fqe_learner_write): a record counted before that read is in
 * the ring before the drain ends, or lost. A pod whose records were queued
 * during the check may be walked once for nothing; never is a loss missed.
 * Pure: the maps, the ring and the walk are injected.
 */
import type { AllowWalk, WalkStep } from '../datapath/allow-walk.js';

/** the agent's budget: map calls per 500 ms tick for walks (each about 3-6 µs: 1,000 entries a tick) */
export const RECOVERY_CALLS_PER_TICK = 2048;

export interface LostRecordsDeps {
  /** fqe_learned_lost: records the kernel could not queue, since the map was made */
  lostCount(): bigint;
  /** fqe_counters.learned by identity: addresses the inline learner wrote */
  learnedCounts(): Map<number, bigint>;
  /** drain the ring now (its records come back through received()) */
  drain(): void;
  /** is this identity a pod the agent enforces (only those are walked)? */
  enforced(identity: number): boolean;
  walk: AllowWalk;
  /** map calls per tick for walks */
  budget: number;
}

export interface LostRecordsTick {
  /** records lost since the last tick */
  lost: bigint;
  /** identities found to have lost records (their walk is queued) */
  affected: number[];
  walk: WalkStep;
  /** identities waiting for a walk, or being walked */
  pending: number;
}

export class LostRecords {
  private lost = 0n;
  /** per identity: the kernel's count when counting began (0 for pods made later) */
  private readonly base = new Map<number, bigint>();
  /** per identity: addresses received in records since counting began */
  private readonly got = new Map<number, bigint>();
  /** per identity: lost addresses earlier walks accounted for */
  private readonly accounted = new Map<number, bigint>();
  private counting = false;

  constructor(private readonly deps: LostRecordsDeps) {}

  /** Before the agent reads the map at start-up: what it reads covers every loss until now. */
  begin(): void {
    this.lost = this.deps.lostCount();
    this.base.clear();
    for (const [identity, n] of this.deps.learnedCounts()) this.base.set(identity, n);
  }

  /** After the first drain of the ring: the records it held were counted before begin(). */
  startCounting(): void {
    this.got.clear();
    this.accounted.clear();
    this.counting = true;
  }

  /** identities waiting for a walk, or being walked */
  get pending(): number {
    return this.deps.walk.pending;
  }

  /** A record came in (accepted or not): its addresses are not lost. */
  received(identity: number, addresses: number): void {
    if (this.counting) this.got.set(identity, (this.got.get(identity) ?? 0n) + BigInt(addresses));
  }

  /** A pod went away (its counters with it). */
  forget(identity: number): void {
    this.base.delete(identity);
    this.got.delete(identity);
    this.accounted.delete(identity);
    this.deps.walk.drop(identity);
  }

  private excess(identity: number, count: bigint): bigint {
    return count - (this.base.get(identity) ?? 0n) - (this.got.get(identity) ?? 0n);
  }

  /** Once a tick: look for new losses, then walk on within the budget. */
  tick(): LostRecordsTick {
    const now = this.deps.lostCount();
    const lost = now > this.lost ? now - this.lost : 0n;
    this.lost = now;
    const affected: number[] = [];
    if (lost > 0n && this.counting) {
      const before = this.deps.learnedCounts();
      this.deps.drain();
      const after = this.deps.learnedCounts();
      for (const [identity, count] of after) {
        if (!this.deps.enforced(identity)) continue;
        const done = this.accounted.get(identity) ?? 0n;
        if (this.excess(identity, count) <= done) continue;
        affected.push(identity);
        const upTo = this.excess(identity, before.get(identity) ?? 0n);
        if (upTo > done) this.accounted.set(identity, upTo);
      }
      this.deps.walk.add(affected);
    }
    const walk = this.deps.walk.step(this.deps.budget);
    return { lost, affected, walk, pending: this.pending };
  }
}
