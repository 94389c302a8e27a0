/*
 * Unit tests of walks of fqe_allow (agent/datapath/allow-walk.ts) against an
 * in-memory trie with the kernel's get_next_key semantics (no kernel; the
 * order itself is checked against the real trie in
 * test/kernel/allow-map.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AllowWalk, identityCompare, trieCompare } from '../../agent/datapath/allow-walk.js';
import { parseCidr, formatIp } from '../../agent/net/addr.js';
import { AllowSource, type AllowKey, type AllowValue } from '../../agent/datapath/codecs.js';
import { FakeTrie } from '../helpers/fake-trie.js';

const VALUE: AllowValue = { expiresNs: 1n, nameHash: 1n, ports: [], source: AllowSource.kernel };

function key(identity: number, cidr: string): AllowKey {
  const c = parseCidr(cidr.includes('/') ? cidr : `${cidr}/${cidr.includes(':') ? 128 : 32}`);
  return { identity, addr: c.addr, prefixLen: c.prefixLen };
}

/** identities spread over the byte order (1, 256, 257, 65536: their little-endian bytes sort them otherwise) */
const IDENTITIES = [1, 2, 3, 255, 256, 257, 512, 65536, 70000];

function fill(perIdentity: number): { trie: FakeTrie; keys: Map<number, AllowKey[]> } {
  const trie = new FakeTrie();
  const keys = new Map<number, AllowKey[]>();
  for (const identity of IDENTITIES) {
    const list: AllowKey[] = [];
    for (let i = 0; i < perIdentity; i++) {
      const k = key(identity, i % 2 ? `198.18.${i >> 8}.${i & 0xff}` : `2001:db8::${i.toString(16)}`);
      trie.set(k, VALUE);
      list.push(k);
    }
    keys.set(identity, list);
  }
  return { trie, keys };
}

function walker(trie: FakeTrie, known: Map<number, AllowKey[]>) {
  const found: string[] = [];
  const walk = new AllowWalk({
    map: trie,
    knownIdentities: () => [...known.keys()].filter((id) => known.get(id)!.length > 0),
    knownKeys: (identity) => known.get(identity) ?? [],
    found: (k) => void found.push(`${k.identity} ${formatIp(k.addr)}`),
  });
  return { walk, found };
}

const names = (ks: AllowKey[]) => ks.map((k) => `${k.identity} ${formatIp(k.addr)}`).sort();

test('identities sort by their little-endian bytes; a prefix comes after the keys it covers', () => {
  assert.deepEqual([...IDENTITIES].sort(identityCompare), [65536, 256, 512, 1, 257, 2, 3, 70000, 255]);
  assert.ok(trieCompare(key(1, '198.18.0.1'), key(1, '198.18.0.2')) < 0);
  assert.ok(trieCompare(key(1, '198.18.0.1'), key(1, '198.18.0.0/24')) < 0, 'the /24 after its /32');
  assert.ok(trieCompare(key(1, '198.18.1.0/24'), key(1, '198.18.0.0/16')) < 0);
  assert.ok(trieCompare(key(1, '198.18.0.0/16'), key(1, '198.19.0.1')) < 0, 'a prefix before what it does not cover');
  assert.ok(trieCompare(key(256, '203.0.113.1'), key(1, '192.0.2.1')) < 0);
  assert.equal(trieCompare(key(3, '2001:db8::1'), key(3, '2001:db8::1')), 0);
});

test('a walk of one identity reads exactly its entries, from the last known key before its range', () => {
  const { trie, keys } = fill(300);
  const lost = keys.get(257)!.filter((_, i) => i % 50 === 7); // what the agent does not know
  const known = new Map([...keys].map(([id, ks]) => [id, ks.filter((k) => !lost.includes(k))]));
  const { walk, found } = walker(trie, known);
  walk.add([257]);
  const r = walk.step(100_000);
  assert.deepEqual(found.sort(), names(keys.get(257)!));
  assert.deepEqual(
    { entries: r.entries, finished: r.finished, pending: walk.pending },
    { entries: 300, finished: 1, pending: 0 },
  );
  assert.ok(r.calls <= 2 * 300 + 2, `${r.calls} calls for its 300 entries (the map holds ${IDENTITIES.length * 300})`);
});

test('a walk goes in bounded steps and resumes where it stopped', () => {
  const { trie, keys } = fill(300);
  const { walk, found } = walker(trie, keys);
  walk.add([1, 70000]);
  let steps = 0;
  while (walk.pending > 0) {
    const r = walk.step(64);
    assert.ok(r.calls <= 65, `a step made ${r.calls} calls`);
    steps++;
  }
  assert.deepEqual(found.sort(), names([...keys.get(1)!, ...keys.get(70000)!]));
  assert.ok(steps >= 18, `${steps} steps`);
});

test('a cursor deleted between steps, a stale seek point, no known key: the walk still reads the whole range', () => {
  const { trie, keys } = fill(200);
  // the cursor goes away between two steps
  const a = walker(trie, keys);
  a.walk.add([512]);
  a.walk.step(100);
  const seen = new Set(a.found);
  for (const k of keys.get(512)!) if (seen.has(`512 ${formatIp(k.addr)}`)) trie.delete(k);
  const remaining = keys.get(512)!.filter((k) => !seen.has(`512 ${formatIp(k.addr)}`));
  const known = new Map(keys);
  known.set(512, remaining);
  const b = walker(trie, known);
  b.walk.add([512]);
  while (b.walk.pending) b.walk.step(50);
  assert.deepEqual(b.found.sort(), names(remaining));
  // seek points the map does not hold (the agent's picture is stale)
  const stale = new Map([...keys].map(([id, ks]) => [id, [...ks, key(id, '192.0.2.200')]]));
  for (const id of IDENTITIES) trie.set(key(id, '192.0.2.201'), VALUE);
  const c = walker(trie, stale);
  c.walk.add([3]);
  while (c.walk.pending) c.walk.step(1000);
  assert.ok(c.found.includes('3 192.0.2.201'));
  assert.equal(c.found.length, 201);
  // nothing known: from the first key
  const d = walker(trie, new Map());
  d.walk.add([255]);
  d.walk.step(1_000_000);
  assert.equal(d.found.length, 201);
});

test('an identity added again while it is walked is walked again; a dropped one is not', () => {
  const { trie, keys } = fill(100);
  const { walk, found } = walker(trie, keys);
  walk.add([2]);
  walk.step(50);
  walk.add([2]);
  while (walk.pending) walk.step(1000);
  assert.ok(found.length > 100, 'the part before the second add is read twice');
  assert.equal(new Set(found).size, 100);
  walk.add([3]);
  walk.drop(3);
  assert.equal(walk.pending, 0);
});
