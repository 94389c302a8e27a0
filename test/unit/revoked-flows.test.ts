/*
 * Cutting the tracked flows of a revoked name (agent/sync/revoked-flows.ts)
 * against a plain table: only outbound flows of the pod to addresses it may
 * no longer reach are removed, in one walk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RevokedFlows } from '../../agent/sync/revoked-flows.js';
import { CtFlag, type CtKey, type CtValue } from '../../agent/datapath/maps/index.js';
import { formatIp, parseIp } from '../../agent/net/addr.js';

function key(identity: number, peer: string, peerPort = 443): CtKey {
  return { identity, podAddr: parseIp('198.18.1.2'), peerAddr: parseIp(peer), podPort: 40000, peerPort, proto: 6 };
}

function table(rows: Array<[CtKey, number]>) {
  const m = new Map(rows.map(([k, flags]) => [k, { lastSeenNs: 1n, createdNs: 1n, flags } as CtValue]));
  let walks = 0;
  return {
    walks: () => walks,
    left: () => [...m.keys()].map((k) => `${k.identity} ${formatIp(k.peerAddr)}:${k.peerPort}`),
    entries: () => {
      walks++;
      return [...m.entries()];
    },
    deleteMany: (keys: CtKey[]) => keys.filter((k) => m.delete(k)).length,
  };
}

test('only the pod-opened flows to revoked addresses it may no longer reach are cut', () => {
  const t = table([
    [key(1, '203.0.113.11'), CtFlag.outbound],
    [key(1, '203.0.113.11', 8443), CtFlag.outbound],
    [key(1, '203.0.113.10'), CtFlag.outbound],
    [key(1, '203.0.113.12'), CtFlag.outbound],
    [key(1, '203.0.113.11', 9000), CtFlag.inbound],
    [key(2, '203.0.113.11'), CtFlag.outbound],
  ]);
  const still = new Set(['1 203.0.113.12']);
  const flows = new RevokedFlows({ conntrack: t, stillAllowed: (id, ip) => still.has(`${id} ${ip}`) });
  assert.equal(flows.cut(), 0, 'nothing noted: no walk');
  assert.equal(t.walks(), 0);
  flows.note([
    { identity: 1, ip: '203.0.113.11' },
    { identity: 1, ip: '203.0.113.12' },
  ]);
  assert.equal(flows.cut(), 2);
  assert.equal(t.walks(), 1, 'one walk of the table');
  assert.deepEqual(t.left(), ['1 203.0.113.10:443', '1 203.0.113.12:443', '1 203.0.113.11:9000', '2 203.0.113.11:443']);
  assert.equal(flows.cut(), 0, 'noted addresses are consumed');
  flows.note([{ identity: 1, ip: '203.0.113.12' }]);
  assert.equal(flows.cut(), 0, 'an address still allowed: no walk');
  assert.equal(t.walks(), 1);
});
