/*
 * fqe_allow's real trie (an unpinned map with its layout; root): the order
 * bpf_map_get_next_key walks it in, which the walks of
 * agent/datapath/allow-walk.ts rely on; a walk of one identity's range; and
 * the reconciler writing into a full trie (ENOSPC through the binding's
 * one-by-one fallback, the trie having no batch update).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { requireKernelTestEnv } from '../helpers/topology.js';
import { native, MapType, BPF_F_NO_PREALLOC } from '../../agent/datapath/native.js';
import { BpfMap } from '../../agent/datapath/bpf-map.js';
import {
  allowKeyCodec,
  allowValueCodec,
  AllowSource,
  type AllowKey,
  type AllowValue,
} from '../../agent/datapath/codecs.js';
import { parseCidr, formatIp } from '../../agent/net/addr.js';
import { AllowWalk, trieCompare } from '../../agent/datapath/allow-walk.js';
import { Reconciler } from '../../agent/sync/reconciler.js';
import { FqdnCache } from '../../agent/cache/fqdn-cache.js';

const VALUE: AllowValue = { expiresNs: 1n, nameHash: 1n, ports: [], source: AllowSource.kernel };
const IDENTITIES = [1, 2, 3, 255, 256, 257, 512, 65536, 70000];

function allowMap(t: TestContext, maxEntries: number): BpfMap<AllowKey, AllowValue> {
  const fd = native.createMap(
    MapType.LPM_TRIE,
    allowKeyCodec.size,
    allowValueCodec.size,
    maxEntries,
    'fqe_allow',
    BPF_F_NO_PREALLOC,
  );
  t.after(() => native.closeFd(fd));
  return new BpfMap('fqe_allow', fd, allowKeyCodec.size, allowValueCodec.size, allowKeyCodec, allowValueCodec);
}

function key(identity: number, cidr: string): AllowKey {
  const c = parseCidr(cidr);
  return { identity, addr: c.addr, prefixLen: c.prefixLen };
}

/** n host entries per identity, v4 and v6 mixed, and a few prefixes */
function fill(map: BpfMap<AllowKey, AllowValue>, n: number): Map<number, AllowKey[]> {
  const keys = new Map<number, AllowKey[]>();
  for (const identity of IDENTITIES) {
    const list: AllowKey[] = [];
    for (let i = 0; i < n; i++)
      list.push(key(identity, i % 3 ? `198.18.${i >> 8}.${i & 0xff}/32` : `2001:db8::${i.toString(16)}/128`));
    list.push(key(identity, '198.18.0.0/24'), key(identity, '2001:db8::/64'));
    map.setMany(list.map((k) => [k, VALUE]));
    keys.set(identity, list);
  }
  return keys;
}

test('the kernel walks the allow trie in the order trieCompare says; from a key it does not hold, from the first', (t) => {
  if (!requireKernelTestEnv(t)) return;
  const map = allowMap(t, 65_536);
  const keys = fill(map, 500);
  const order: AllowKey[] = [];
  for (let k = map.nextKey(null); k; k = map.nextKey(k)) order.push(k);
  assert.equal(order.length, IDENTITIES.length * 502);
  for (let i = 1; i < order.length; i++) assert.ok(trieCompare(order[i - 1]!, order[i]!) < 0, `${i}: out of order`);
  const runs = order.map((k) => k.identity).filter((id, i, all) => i === 0 || all[i - 1] !== id);
  assert.deepEqual(
    runs,
    [65536, 256, 512, 1, 257, 2, 3, 70000, 255],
    'each identity one range, by its little-endian bytes',
  );
  const missing = key(257, '192.0.2.77/32');
  assert.deepEqual(map.nextKey(missing), order[0]);
  void keys;
});

test("a walk reads one identity's range of the real trie, from a key known to be before it, and survives its cursor being deleted", (t) => {
  if (!requireKernelTestEnv(t)) return;
  const map = allowMap(t, 65_536);
  const keys = fill(map, 2000);
  let calls = 0;
  const counted = {
    nextKey: (k: AllowKey | null) => (calls++, map.nextKey(k)),
    get: (k: AllowKey) => (calls++, map.get(k)),
  };
  const found = new Set<string>();
  const known = new Map(keys);
  const walk = new AllowWalk({
    map: counted,
    knownIdentities: () => known.keys(),
    knownKeys: (identity) => known.get(identity) ?? [],
    found: (k) => void found.add(`${k.identity} ${formatIp(k.addr)}/${k.prefixLen}`),
  });
  walk.add([257]);
  walk.step(1000);
  // the cursor (and what came before it) leaves the map between two steps
  const gone = keys.get(257)!.filter((k) => found.has(`257 ${formatIp(k.addr)}/${k.prefixLen}`));
  map.deleteMany(gone);
  known.set(
    257,
    keys.get(257)!.filter((k) => !gone.includes(k)),
  );
  while (walk.pending) walk.step(1000);
  const want = new Set(keys.get(257)!.map((k) => `257 ${formatIp(k.addr)}/${k.prefixLen}`));
  assert.equal(want.size, 2002);
  assert.deepEqual([...found].sort(), [...want].sort());
  assert.ok(
    calls <= 2 * 2002 + 10,
    `${calls} map calls for a range of 2,002 entries in a map of ${IDENTITIES.length * 2002}`,
  );
});

test('the reconciler and a full trie: what does not fit is retried and goes in once there is room', (t) => {
  if (!requireKernelTestEnv(t)) return;
  const map = allowMap(t, 4);
  const clock = { ms: 1000 };
  const cache = new FqdnCache({ maxIpsPerName: 10, now: () => clock.ms });
  const rec = new Reconciler({
    cache,
    allow: map,
    identities: () => [1],
    portsFor: () => [],
    nameHash: () => 7n,
    nameOf: () => 'a.test',
    toKernelNs: (ms) => BigInt(ms) * 1_000_000n,
    kernelNowNs: () => BigInt(clock.ms) * 1_000_000n,
  });
  rec.markDirty(
    cache.learn(
      1,
      'short.test',
      ['192.0.2.1', '192.0.2.2'].map((ip) => ({ ip, ttlMs: 1000 })),
      'agent',
    ),
  );
  rec.markDirty(
    cache.learn(
      1,
      'long.test',
      ['192.0.2.3', '192.0.2.4', '192.0.2.5', '192.0.2.6'].map((ip) => ({ ip, ttlMs: 60_000 })),
      'agent',
    ),
  );
  const r = rec.flush();
  assert.deepEqual(
    { upserts: r.upserts, failed: r.failed, retrying: r.retrying },
    { upserts: 4, failed: 2, retrying: 2 },
  );
  assert.match(r.error!, /ENOSPC/);
  assert.equal(map.entries().length, 4);
  assert.equal(rec.entries, 4, 'the shadow holds what the map holds');
  clock.ms += 2000; // short.test expires: room for the two that waited
  rec.markDirty(cache.expire());
  const again = rec.flush();
  assert.deepEqual(
    { upserts: again.upserts, deletes: again.deletes, failed: again.failed, retrying: again.retrying },
    { upserts: 2, deletes: 2, failed: 0, retrying: 0 },
  );
  assert.deepEqual(
    map
      .entries()
      .map(([k]) => formatIp(k.addr))
      .sort(),
    ['192.0.2.3', '192.0.2.4', '192.0.2.5', '192.0.2.6'],
  );
});
