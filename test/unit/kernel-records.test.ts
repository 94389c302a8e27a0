/*
 * Unit tests of the agent's record path (agent/learn/kernel-records.ts):
 * learned records as the kernel writes them, a real FQDN cache, recording
 * callbacks; no kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KernelRecords } from '../../agent/learn/kernel-records.js';
import { FqdnCache } from '../../agent/cache/fqdn-cache.js';
import {
  learnedRecordCodec,
  LEARNED_MAX_ADDRS,
  AllowSource,
  type AllowKey,
  type AllowValue,
} from '../../agent/datapath/codecs.js';
import { formatIp } from '../../agent/net/addr.js';
import { parsePodPolicy } from '../../agent/policy/annotation.js';
import { POLICY_LIMITS } from '../helpers/policy-limits.js';
import { nameHash } from '../../agent/policy/name-hash.js';
import type { EnforcedPod } from '../../agent/pods/endpoints.js';
import { encodeLearnedRecord, type RecordSpec } from '../helpers/records.js';

const KEY = 0x1234_5678_9abc_def0n;
const pod: EnforcedPod = {
  key: 'shop/payments',
  namespace: 'shop',
  name: 'payments',
  identity: 3,
  ifindex: 7,
  ifname: 'vp1',
  ips: ['198.18.1.11'],
  policy: parsePodPolicy({ 'fqdn-egress.io/allow': 'api.stripe.test:443, *.kadath.test' }, POLICY_LIMITS),
  dnsFilter: 'on',
};

function setup(maxIpsPerName = 16, maxNamesPerPod = 64) {
  const clock = { ms: 1_000 };
  const cache = new FqdnCache({ maxIpsPerName, maxNamesPerPod, now: () => clock.ms });
  const noted: Array<[AllowKey, AllowValue]> = [];
  const names = new Map<bigint, string>();
  const overCap: string[] = [];
  const records = new KernelRecords({
    cache,
    pod: (identity) => (identity === pod.identity ? pod : undefined),
    hashesTo: (name, hash) => nameHash(name, KEY) === hash,
    noteKernelEntry: (key, value) => noted.push([key, value]),
    rememberName: (hash, name) => void names.set(hash, name),
    keepMs: (ttlS) => Math.max(5_000, ttlS * 1000),
    nameRefused: (p, name) => void overCap.push(`${p.key} ${name}`),
  });
  return { clock, cache, noted, names, overCap, records };
}

function rec(name: string, ips: string[], o: Partial<RecordSpec> = {}) {
  return learnedRecordCodec.decode(
    encodeLearnedRecord({
      identity: pod.identity,
      name,
      nameHash: nameHash(name, KEY),
      tsNs: 1_000_000_000n,
      addrs: ips.map((ip) => ({ ip, ttlS: 60, expiresNs: 61_000_000_000n })),
      ports: [{ port: 443, proto: 0 }],
      ...o,
    }),
  );
}

test('a record decodes as the kernel wrote it: name, hash, ports, addresses with TTL and expiry', () => {
  const r = rec('api.stripe.test', ['203.0.113.10', '2001:db8:ff::10'], { partial: true });
  assert.equal(r.name, 'api.stripe.test');
  assert.equal(r.nameHash, nameHash('api.stripe.test', KEY));
  assert.equal(r.partial, true);
  assert.deepEqual(r.ports, [{ port: 443, proto: 0 }]);
  assert.deepEqual(
    r.addrs.map((a) => [a.ip, formatIp(a.addr), a.ttlS, a.expiresNs]),
    [
      ['203.0.113.10', '203.0.113.10', 60, 61_000_000_000n],
      ['2001:db8:ff::10', '2001:db8:ff::10', 60, 61_000_000_000n],
    ],
  );
});

test('a record that claims more addresses than it holds, or more than the kernel writes, is refused with its reason', () => {
  const good = encodeLearnedRecord({
    identity: 1,
    name: 'a.test',
    nameHash: 1n,
    tsNs: 0n,
    addrs: [{ ip: '192.0.2.1', ttlS: 1, expiresNs: 1n }],
  });
  assert.throws(() => learnedRecordCodec.decode(good.subarray(0, good.length - 1)), /cannot hold the 1 addresses/);
  assert.throws(() => learnedRecordCodec.decode(good.subarray(0, 100)), /shorter than its/);
  const many = Buffer.from(good);
  many.writeUInt16LE(LEARNED_MAX_ADDRS + 1, 20);
  assert.throws(() => learnedRecordCodec.decode(many), /cannot hold/);
});

test("an accepted record fills the cache with the answer's own expiry and tells the reconciler what the kernel wrote", () => {
  const { cache, noted, names, records } = setup();
  const r = records.apply([rec('api.stripe.test', ['203.0.113.10', '203.0.113.11'])]);
  assert.deepEqual(
    { accepted: r.accepted, refused: r.refused, addresses: r.addresses, changes: r.changes },
    { accepted: 1, refused: 0, addresses: 2, changes: [] },
  );
  assert.deepEqual(cache.ipsOf(pod.identity).sort(), ['203.0.113.10', '203.0.113.11']);
  assert.equal(
    cache.view(pod.identity, '203.0.113.10')!.expiresAtMs,
    1_000 + 60_000,
    'ts + the TTL as the agent clamps it',
  );
  assert.equal(cache.view(pod.identity, '203.0.113.10')!.learnedBy, 'kernel');
  assert.equal(noted.length, 2);
  assert.deepEqual(noted[0]![1], {
    expiresNs: 61_000_000_000n,
    nameHash: nameHash('api.stripe.test', KEY),
    ports: [{ port: 443, proto: 0 }],
    source: AllowSource.kernel,
  });
  assert.equal(names.get(nameHash('api.stripe.test', KEY)), 'api.stripe.test');
});

test("records for an unknown pod, a name that does not hash to the record's hash, or a name the pod may not reach are refused", () => {
  const { cache, noted, records } = setup();
  const r = records.apply([
    rec('api.stripe.test', ['203.0.113.10'], { identity: 99 }),
    rec('api.stripe.test', ['203.0.113.11'], { nameHash: nameHash('other.test', KEY) }),
    rec('blocked.test', ['203.0.113.12']),
    rec('kadath.test', ['203.0.113.13']), // the apex of a wildcard
  ]);
  assert.equal(r.accepted, 0);
  assert.equal(r.refused, 4);
  assert.equal(cache.size, 0);
  assert.equal(noted.length, 0);
  assert.equal(records.apply([rec('www.kadath.test', ['203.0.113.14'])]).accepted, 1, 'the wildcard itself');
});

test('an eviction the record caused is handed back for the reconciler to write', () => {
  const { cache, records } = setup(2);
  records.apply([rec('api.stripe.test', ['203.0.113.10', '203.0.113.11'])]);
  const r = records.apply([rec('api.stripe.test', ['203.0.113.12'], { tsNs: 2_000_000_000n })]);
  assert.equal(cache.ipsOf(pod.identity).length, 2);
  assert.equal(r.changes.length, 1, 'one older address was evicted');
  assert.notEqual(r.changes[0]!.ip, '203.0.113.12');
});

test('a record with more addresses than --max-ips-per-name hands back its own first addresses, which the cache evicted', () => {
  const { cache, noted, records } = setup(2);
  const r = records.apply([rec('api.stripe.test', ['203.0.113.10', '203.0.113.11', '203.0.113.12'])]);
  assert.deepEqual(cache.ipsOf(pod.identity).sort(), ['203.0.113.11', '203.0.113.12']);
  assert.equal(noted.length, 3, 'the kernel wrote all three');
  assert.deepEqual(
    r.changes,
    [{ identity: pod.identity, ip: '203.0.113.10' }],
    'the reconciler takes the evicted one out of the kernel',
  );
});

test('a new name past --max-names-per-pod is not cached: counted, reported, and its kernel entries handed back to be taken out', () => {
  const { cache, noted, names, overCap, records } = setup(16, 1);
  assert.equal(records.apply([rec('api.stripe.test', ['203.0.113.10'])]).accepted, 1);
  const r = records.apply([rec('www.kadath.test', ['203.0.113.20', '203.0.113.21'])]);
  assert.deepEqual(
    { accepted: r.accepted, refused: r.refused, overNameCap: r.overNameCap },
    { accepted: 0, refused: 0, overNameCap: 1 },
  );
  assert.deepEqual(overCap, ['shop/payments www.kadath.test']);
  assert.deepEqual(cache.ipsOf(pod.identity), ['203.0.113.10']);
  assert.deepEqual(
    r.changes.map((c) => c.ip),
    ['203.0.113.20', '203.0.113.21'],
  );
  assert.equal(noted.length, 3, 'the reconciler knows what the kernel wrote, so it can delete it');
  assert.equal(names.has(nameHash('www.kadath.test', KEY)), false, 'not recorded in fqe_names');
  assert.equal(
    records.apply([rec('api.stripe.test', ['203.0.113.11'])]).accepted,
    1,
    'a name the pod holds still learns',
  );
});
