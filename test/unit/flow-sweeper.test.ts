/*
 * The flow sweeper against plain tables: idle flows go (closed TCP flows
 * sooner), a flow refreshed between the dump and the delete stays, each
 * pod's count is written exactly, and the TLS check's state of a flow that
 * is gone or past its check is freed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlowSweeper, CLOSING_IDLE_NS } from '../../agent/sync/flow-sweeper.js';
import { CtFlag, IPPROTO, type CtKey, type CtValue } from '../../agent/datapath/codecs.js';

const S = 1_000_000_000n;

function key(identity: number, podPort: number, proto: number = IPPROTO.tcp): CtKey {
  return { identity, podAddr: Buffer.alloc(16), peerAddr: Buffer.alloc(16, 1), podPort, peerPort: 443, proto };
}

function setup(now: { t: bigint }) {
  const flows = new Map<string, [CtKey, CtValue]>();
  const counts = new Map<number, bigint>();
  const tls = new Map<string, CtKey>();
  const k = (c: CtKey) => `${c.identity}/${c.podPort}/${c.proto}`;
  let onGet: ((c: CtKey) => void) | undefined;
  const inCounts = new Map<number, bigint>();
  const sweeper = new FlowSweeper({
    inCounts: { entries: () => [...inCounts], set: (id, n) => void inCounts.set(id, n) },
    flows: {
      entries: () => [...flows.values()],
      get: (c) => {
        onGet?.(c);
        return flows.get(k(c))?.[1];
      },
      deleteMany: (keys) => keys.filter((c) => flows.delete(k(c))).length,
    },
    counts: { entries: () => [...counts], set: (id, n) => void counts.set(id, n) },
    tlsState: [{ keys: () => [...tls.values()], deleteMany: (keys) => keys.filter((c) => tls.delete(k(c))).length }],
    nowNs: () => now.t,
    tcpIdleNs: 3600n * S,
    otherIdleNs: 60n * S,
  });
  const add = (c: CtKey, lastSeenNs: bigint, flags: number = CtFlag.outbound) =>
    flows.set(k(c), [c, { lastSeenNs, createdNs: 0n, flags }]);
  return {
    flows,
    counts,
    inCounts,
    tls,
    sweeper,
    add,
    addTls: (c: CtKey) => tls.set(k(c), c),
    hookGet: (f: (c: CtKey) => void) => (onGet = f),
  };
}

test("idle flows are reclaimed (closed TCP flows after a short quiet) and each pod's count is exact", () => {
  const now = { t: 10_000n * S };
  const { flows, counts, sweeper, add } = setup(now);
  add(key(1, 1), now.t - 10n * S); // live TCP
  add(key(1, 2), now.t - CLOSING_IDLE_NS - S, CtFlag.outbound | CtFlag.closing); // closed, quiet: goes
  add(key(1, 3, IPPROTO.udp), now.t - 61n * S); // idle UDP: goes
  add(key(2, 4), now.t - 3601n * S); // idle TCP: goes
  counts.set(1, 99n);
  counts.set(2, 5n);
  assert.deepEqual(sweeper.sweep(), { flows: 1, reclaimed: 3, tlsReclaimed: 0 });
  assert.deepEqual([...flows.keys()], ['1/1/6']);
  assert.deepEqual(
    [...counts],
    [
      [1, 1n],
      [2, 0n],
    ],
  );
});

test('a flow refreshed between the dump and the delete is kept', () => {
  const now = { t: 10_000n * S };
  const { flows, sweeper, add, hookGet } = setup(now);
  const c = key(1, 1, IPPROTO.udp);
  add(c, now.t - 61n * S);
  hookGet((k) => add(k, now.t)); // another CPU's packet lands right then
  assert.deepEqual(sweeper.sweep(), { flows: 1, reclaimed: 0, tlsReclaimed: 0 });
  assert.equal(flows.size, 1);
});

test("the TLS check's state goes with a flow that is gone or past its check, and stays with one pending or watched", () => {
  const now = { t: 10_000n * S };
  const { tls, sweeper, add, addTls } = setup(now);
  add(key(1, 1), now.t, CtFlag.outbound | CtFlag.tlsPending);
  add(key(1, 2), now.t, CtFlag.outbound | CtFlag.tlsWatch);
  add(key(1, 3), now.t, CtFlag.outbound); // the watch ended, the state was left
  add(key(1, 4), now.t - 3601n * S, CtFlag.outbound | CtFlag.tlsPending); // idle: the flow goes, then its state
  for (const port of [1, 2, 3, 4, 5]) addTls(key(1, port)); // 5: no flow at all
  assert.equal(sweeper.sweep().tlsReclaimed, 3);
  assert.deepEqual([...tls.keys()].sort(), ['1/1/6', '1/2/6']);
});

test('flows opened towards a pod are counted in its inbound share, apart from those it opened', () => {
  const now = { t: 10_000n * S };
  const { counts, inCounts, sweeper, add } = setup(now);
  add(key(1, 1), now.t);
  add(key(1, 2), now.t, CtFlag.inbound);
  add(key(1, 3, IPPROTO.udp), now.t, CtFlag.inbound);
  inCounts.set(2, 7n);
  sweeper.sweep();
  assert.deepEqual([...counts], [[1, 1n]]);
  assert.deepEqual([...inCounts].sort(), [
    [1, 2n],
    [2, 0n],
  ]);
});
