/*
 * Unit tests of the recovery from lost learned records
 * (agent/learn/lost-records.ts): a fake kernel (counts per pod, a ring, a
 * lost counter) and a recording walk. No kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LostRecords } from '../../agent/learn/lost-records.js';
import type { AllowWalk } from '../../agent/datapath/allow-walk.js';

/** The inline learner as the accounting sees it: counts, then queues or loses the record. */
class FakeKernel {
  readonly counts = new Map<number, bigint>();
  lost = 0n;
  ring: Array<[number, number]> = [];
  /** what the learner does while the agent drains the ring (after the drain, before the agent reads the counts again) */
  whileDraining: (() => void) | undefined;
  learn(identity: number, addresses: number, outcome: 'queued' | 'lost' = 'queued'): void {
    // counted and queued in one run of one program, as fqe_learner_write does
    this.counts.set(identity, (this.counts.get(identity) ?? 0n) + BigInt(addresses));
    if (outcome === 'lost') this.lost++;
    else this.ring.push([identity, addresses]);
  }
}

function setup(enforced = [1, 2, 3]) {
  const kernel = new FakeKernel();
  const walked: number[][] = [];
  const walk = {
    add: (ids: Iterable<number>) => void walked.push([...ids]),
    drop: () => undefined,
    step: () => ({ calls: 0, entries: 0, finished: 0 }),
    pending: 0,
  };
  let reads = 0;
  const lost = new LostRecords({
    lostCount: () => kernel.lost,
    learnedCounts: () => {
      reads++;
      return new Map(kernel.counts);
    },
    drain: () => {
      for (const [identity, n] of kernel.ring.splice(0)) lost.received(identity, n);
      kernel.whileDraining?.();
    },
    enforced: (identity) => enforced.includes(identity),
    walk: walk as unknown as AllowWalk,
    budget: 100,
  });
  const affected = () => lost.tick().affected.sort();
  return { kernel, lost, walked, affected, reads: () => reads };
}

test('no loss: one read of the lost counter, nothing walked', () => {
  const { kernel, lost, affected, reads } = setup();
  lost.begin();
  lost.startCounting();
  const before = reads();
  kernel.learn(1, 5);
  assert.deepEqual(affected(), []);
  assert.equal(reads(), before, 'the counts are read only after a loss');
});

test('a loss: only the pods whose count grew past what their records brought are walked', () => {
  const { kernel, lost, affected } = setup();
  lost.begin();
  lost.startCounting();
  kernel.learn(1, 4);
  kernel.learn(2, 3, 'lost');
  kernel.learn(3, 2);
  assert.deepEqual(affected(), [2]);
  assert.deepEqual(affected(), [], 'accounted for: not again without a new loss');
  kernel.learn(2, 1);
  kernel.learn(3, 7, 'lost');
  assert.deepEqual(affected(), [3]);
  kernel.learn(9, 5, 'lost');
  assert.deepEqual(affected(), [], 'a pod the agent does not enforce is not walked');
});

test('records queued while the agent checks never hide a later loss (they may cost one walk more)', () => {
  const { kernel, lost, affected } = setup();
  lost.begin();
  lost.startCounting();
  kernel.learn(1, 3, 'lost');
  kernel.whileDraining = () => kernel.learn(2, 50); // counted, not received yet
  assert.deepEqual(affected(), [1, 2], 'pod 2 looks short of 50: walked once for nothing');
  kernel.whileDraining = undefined;
  kernel.learn(2, 2, 'lost'); // fewer addresses than were on their way
  assert.deepEqual(affected(), [2], 'the loss of pod 2 is seen');
  kernel.learn(2, 60);
  kernel.learn(3, 1, 'lost');
  assert.deepEqual(affected(), [3]);
});

test('records in the ring at start-up were counted before begin(): they do not hide a loss', () => {
  const { kernel, lost, affected } = setup();
  kernel.learn(1, 40); // learned while the agent was down, still in the ring
  lost.begin();
  for (const [identity, n] of kernel.ring.splice(0)) lost.received(identity, n); // the agent's first drain
  lost.startCounting();
  kernel.learn(1, 3, 'lost');
  assert.deepEqual(affected(), [1]);
});

test('a pod that went away is forgotten', () => {
  const { kernel, lost, affected } = setup([1]);
  lost.begin();
  lost.startCounting();
  kernel.learn(1, 3, 'lost');
  lost.forget(1);
  kernel.counts.delete(1);
  assert.deepEqual(affected(), []);
});
