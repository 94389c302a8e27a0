/* Unit tests of the reconciler against a recording allow table (no kernel). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Reconciler, mergePorts, RETRY_BATCH, type AllowTable } from '../../agent/sync/reconciler.js';
import { FqdnCache } from '../../agent/cache/fqdn-cache.js';
import { parseCidr, formatCidr } from '../../agent/net/addr.js';
import { AllowSource, type AllowKey, type AllowValue, type PortRule } from '../../agent/datapath/codecs.js';

/**
 * The allow map as a recording fake. `fail(key)` returns an error for a
 * write or delete that must fail (ENOSPC: the map is full); setMany then
 * behaves as libbpf's fallback for a trie: one by one, stopping at the first
 * error. `batchWrites` caps how many setMany writes before it returns (a
 * partial count, as a real batch may).
 */
class RecordingTable implements AllowTable {
  readonly entries = new Map<string, AllowValue>();
  readonly log: string[] = [];
  fail: (key: string) => Error | undefined = () => undefined;
  batchWrites = Infinity;
  private str(k: AllowKey): string {
    return `${k.identity} ${formatCidr(k.addr, k.prefixLen)}`;
  }
  get(k: AllowKey): AllowValue | undefined {
    return this.entries.get(this.str(k));
  }
  set(k: AllowKey, v: AllowValue): void {
    const key = this.str(k);
    const err = this.fail(key);
    this.log.push(`${err ? 'failed ' : ''}set ${key}`);
    if (err) throw err;
    this.entries.set(key, v);
  }
  setMany(entries: Array<[AllowKey, AllowValue]>): number {
    let n = 0;
    for (const [k, v] of entries) {
      if (n >= this.batchWrites) return n;
      this.set(k, v);
      n++;
    }
    return n;
  }
  delete(k: AllowKey): boolean {
    const key = this.str(k);
    const err = this.fail(key);
    this.log.push(`${err ? 'failed ' : ''}delete ${key}`);
    if (err) throw err;
    return this.entries.delete(key);
  }
  deleteMany(keys: AllowKey[]): number {
    let n = 0;
    for (const k of keys) if (this.delete(k)) n++;
    return n;
  }
}

function enospc(): Error {
  return Object.assign(new Error('bpf_map_update_elem(fqe_allow): No space left on device (ENOSPC)'), {
    code: 'ENOSPC',
  });
}

function setup(
  policy: Record<number, Record<string, PortRule[]>>,
  opts: { names?: Map<bigint, string>; maxNamesPerPod?: number; maxIpsPerName?: number } = {},
) {
  const clock = { t: 1000 };
  const cache = new FqdnCache({
    maxIpsPerName: opts.maxIpsPerName ?? 10,
    maxNamesPerPod: opts.maxNamesPerPod,
    now: () => clock.t,
  });
  const table = new RecordingTable();
  const rec = new Reconciler({
    cache,
    allow: table,
    identities: () => Object.keys(policy).map(Number),
    portsFor: (identity, name) => policy[identity]?.[name] ?? null,
    nameHash: (name) => BigInt(name.length),
    nameOf: (hash) => opts.names?.get(hash),
    toKernelNs: (ms) => BigInt(ms) * 1_000_000n,
    kernelNowNs: () => BigInt(clock.t) * 1_000_000n,
  });
  return { clock, cache, table, rec };
}

test('learned IPs become allow entries with expiry, name hash and ports', () => {
  const { cache, table, rec } = setup({ 1: { 'api.test': [{ port: 443, proto: 6 }] } });
  rec.markDirty(cache.learn(1, 'api.test', [{ ip: '203.0.113.10', ttlMs: 5000 }], 'agent'));
  const r = rec.flush();
  assert.deepEqual(r, { upserts: 1, deletes: 0, portOverflows: 0, failed: 0, retrying: 0 });
  assert.deepEqual(table.entries.get('1 203.0.113.10'), {
    expiresNs: 6_000_000_000n,
    nameHash: 8n,
    ports: [{ port: 443, proto: 6 }],
    source: AllowSource.agent,
  });
  assert.deepEqual(
    rec.flush(),
    { upserts: 0, deletes: 0, portOverflows: 0, failed: 0, retrying: 0 },
    'nothing changed: nothing written',
  );
});

test('expired entries are removed; a name no longer allowed is revoked', () => {
  const policy: Record<number, Record<string, PortRule[]>> = { 1: { 'a.test': [], 'b.test': [] } };
  const { clock, cache, table, rec } = setup(policy);
  rec.markDirty(cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 1000 }], 'agent'));
  rec.markDirty(cache.learn(1, 'b.test', [{ ip: '203.0.113.2', ttlMs: 9000 }], 'agent'));
  rec.flush();
  clock.t += 2000;
  rec.markDirty(cache.expire());
  rec.flush();
  assert.deepEqual([...table.entries.keys()], ['1 203.0.113.2']);
  delete policy[1]!['b.test'];
  rec.markAll();
  rec.flush();
  assert.deepEqual([...table.entries.keys()], [], 'revoked on the next full resync');
});

test('allowCIDRs entries an older agent wrote into the allow map are removed (they live in fqe_cidrs now)', () => {
  const { table, rec } = setup({ 1: {} });
  const c = parseCidr('192.0.2.0/24');
  const key = { identity: 1, addr: c.addr, prefixLen: c.prefixLen };
  const value = { expiresNs: 0n, nameHash: 0n, ports: [], source: AllowSource.static };
  table.setMany([[key, value]]);
  rec.adopt([[key, value]]);
  rec.flush();
  assert.deepEqual([...table.entries.keys()], []);
});

test('a pod that goes away loses its entries, deletes before upserts', () => {
  const policy: Record<number, Record<string, PortRule[]>> = { 1: { 'a.test': [] }, 2: { 'a.test': [] } };
  const { cache, table, rec } = setup(policy);
  rec.markDirty(cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 9000 }], 'agent'));
  rec.flush();
  delete policy[1];
  cache.forgetIdentity(1);
  rec.markDirty(cache.learn(2, 'a.test', [{ ip: '203.0.113.1', ttlMs: 9000 }], 'agent'));
  rec.markAll();
  table.log.length = 0;
  rec.flush();
  assert.deepEqual(table.log, ['delete 1 203.0.113.1', 'set 2 203.0.113.1']);
});

test('entries found in the map at start-up are adopted, kept when unjudgeable, removed when stale', () => {
  const { clock, table, rec } = setup({ 1: { 'known.test': [] } }, { names: new Map([[10n, 'known.test']]) });
  const addr = (ip: string) => parseCidr(ip).addr;
  const future = BigInt(clock.t + 10_000) * 1_000_000n;
  rec.adopt([
    [
      { identity: 1, addr: addr('203.0.113.1'), prefixLen: 128 },
      { expiresNs: future, nameHash: 99n, ports: [], source: AllowSource.kernel },
    ],
    [
      { identity: 1, addr: addr('203.0.113.2'), prefixLen: 128 },
      { expiresNs: future, nameHash: 10n, ports: [], source: AllowSource.kernel },
    ],
    [
      { identity: 7, addr: addr('203.0.113.3'), prefixLen: 128 },
      { expiresNs: future, nameHash: 99n, ports: [], source: AllowSource.kernel },
    ],
  ]);
  rec.flush();
  assert.deepEqual(
    table.log.sort(),
    ['delete 1 203.0.113.2', 'delete 7 203.0.113.3'],
    'a known name not in the cache and a gone pod are removed; the opaque kernel entry stays',
  );
});

test('port rules merge; any port wins; overflow keeps 8 and is reported', () => {
  assert.deepEqual(
    mergePorts([[{ port: 443, proto: 6 }], [{ port: 443, proto: 17 }], [{ port: 80, proto: 6 }]]).ports,
    [
      { port: 80, proto: 6 },
      { port: 443, proto: 0 },
    ],
  );
  assert.deepEqual(mergePorts([[{ port: 443, proto: 6 }], []]).ports, []);
  // a tls rule (0xfe) gives way to TCP without the check on the same port, not to UDP
  assert.deepEqual(mergePorts([[{ port: 443, proto: 0xfe }], [{ port: 443, proto: 6 }]]).ports, [
    { port: 443, proto: 6 },
  ]);
  assert.deepEqual(mergePorts([[{ port: 443, proto: 0xfe }], [{ port: 443, proto: 0 }]]).ports, [
    { port: 443, proto: 0 },
  ]);
  assert.deepEqual(mergePorts([[{ port: 443, proto: 0xfe }], [{ port: 443, proto: 17 }]]).ports, [
    { port: 443, proto: 17 },
    { port: 443, proto: 0xfe },
  ]);
  assert.deepEqual(
    mergePorts([
      [{ port: 443, proto: 0xfe }],
      [
        { port: 443, proto: 0xfe },
        { port: 80, proto: 6 },
      ],
    ]).ports,
    [
      { port: 80, proto: 6 },
      { port: 443, proto: 0xfe },
    ],
  );
  const many = mergePorts([Array.from({ length: 10 }, (_, i) => ({ port: 1000 + i, proto: 6 }))]);
  assert.equal(many.ports.length, 8);
  assert.equal(many.overflow, true);
});

test('an entry the inline learner refreshed meanwhile is not deleted when our copy expires', () => {
  const { clock, cache, table, rec } = setup({ 1: { 'a.test': [], 'b.test': [] } });
  rec.markDirty(cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 1000 }], 'agent'));
  rec.flush();
  // The kernel learns b.test -> the same IP; the agent has not seen that answer yet.
  const fresh = { expiresNs: BigInt(clock.t + 5000) * 1_000_000n, nameHash: 6n, ports: [], source: AllowSource.kernel };
  table.entries.set('1 203.0.113.1', fresh);
  clock.t += 2000;
  rec.markDirty(cache.expire());
  rec.flush();
  assert.deepEqual(table.entries.get('1 203.0.113.1'), fresh, 'kept: the kernel refreshed it');
  // Once the kernel's entry has expired too, it goes.
  clock.t += 10_000;
  rec.markAll();
  rec.flush();
  assert.equal(table.entries.has('1 203.0.113.1'), false);
});

test('an entry the kernel wrote for a name the cache refused is taken out, even when a full resync is pending', () => {
  // the name is unknown to nameOf (never recorded): without the dirty mark a full resync would keep it as opaque
  const { clock, cache, table, rec } = setup({ 1: { 'a.test': [], 'b.test': [] } }, { maxNamesPerPod: 1 });
  rec.markDirty(cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 9000 }], 'agent'));
  rec.flush();
  assert.equal(cache.admits(1, 'b.test'), false);
  const key = { identity: 1, addr: parseCidr('203.0.113.2').addr, prefixLen: 128 };
  const value = { expiresNs: BigInt(clock.t + 9000) * 1_000_000n, nameHash: 6n, ports: [], source: AllowSource.kernel };
  table.setMany([[key, value]]);
  rec.noteKernelEntry(key, value);
  rec.markDirty([{ identity: 1, ip: '203.0.113.2' }]);
  rec.markAll();
  rec.flush();
  assert.deepEqual([...table.entries.keys()], ['1 203.0.113.1']);
});

test('a write that fails (map full) leaves the shadow as it was; the entries after it in the batch still go in; it is retried a second later', () => {
  const { clock, cache, table, rec } = setup({ 1: { 'a.test': [] } });
  table.fail = (key) => (key === '1 203.0.113.2' ? enospc() : undefined);
  rec.markDirty(
    cache.learn(
      1,
      'a.test',
      ['203.0.113.1', '203.0.113.2', '203.0.113.3'].map((ip) => ({ ip, ttlMs: 60_000 })),
      'agent',
    ),
  );
  const r = rec.flush();
  assert.equal(r.upserts, 2);
  assert.equal(r.failed, 1);
  assert.equal(r.retrying, 1);
  assert.match(r.error!, /^writing allow entry 1\/203\.0\.113\.2: .*ENOSPC/);
  assert.deepEqual([...table.entries.keys()].sort(), ['1 203.0.113.1', '1 203.0.113.3']);
  assert.equal(rec.entries, 2, 'the shadow holds only what the map holds');
  // not a hot loop: flushes within the second do not touch it
  table.log.length = 0;
  for (let i = 0; i < 5; i++) rec.flush();
  assert.deepEqual(table.log, []);
  // still full a second later: one more try, then another wait
  clock.t += 1000;
  assert.equal(rec.flush().failed, 1);
  assert.deepEqual(table.log, ['failed set 1 203.0.113.2', 'failed set 1 203.0.113.2'], 'the batch, then alone');
  rec.flush();
  assert.equal(table.log.length, 2);
  // room again
  table.fail = () => undefined;
  clock.t += 1000;
  assert.deepEqual(rec.flush(), { upserts: 1, deletes: 0, portOverflows: 0, failed: 0, retrying: 0 });
  assert.ok(table.entries.has('1 203.0.113.2'));
});

test('a batch that reports a partial count gets the rest written one by one', () => {
  const { cache, table, rec } = setup({ 1: { 'a.test': [] } });
  table.batchWrites = 1;
  rec.markDirty(
    cache.learn(
      1,
      'a.test',
      ['203.0.113.1', '203.0.113.2', '203.0.113.3'].map((ip) => ({ ip, ttlMs: 60_000 })),
      'agent',
    ),
  );
  assert.equal(rec.flush().upserts, 3);
  assert.equal(table.entries.size, 3);
  assert.equal(table.log.length, 3, 'nothing written twice');
});

test('an entry whose rewrite fails keeps its old value in the shadow, so the next try still sees the difference', () => {
  const { clock, cache, table, rec } = setup({ 1: { 'a.test': [] } });
  rec.markDirty(cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 5_000 }], 'agent'));
  rec.flush();
  const before = table.entries.get('1 203.0.113.1');
  table.fail = enospc;
  clock.t += 100;
  rec.markDirty(cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 60_000 }], 'agent'));
  assert.equal(rec.flush().failed, 1);
  assert.deepEqual(table.entries.get('1 203.0.113.1'), before);
  table.fail = () => undefined;
  rec.markAll();
  assert.equal(rec.flush().upserts, 1, 'a full resync writes it too');
  assert.notDeepEqual(table.entries.get('1 203.0.113.1'), before);
});

test('a delete that fails keeps the entry in the shadow and is retried', () => {
  const { clock, cache, table, rec } = setup({ 1: { 'a.test': [] } });
  rec.markDirty(cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 1_000 }], 'agent'));
  rec.flush();
  table.fail = () =>
    Object.assign(new Error('bpf_map_delete_elem(fqe_allow): Operation not permitted (EPERM)'), { code: 'EPERM' });
  clock.t += 2000;
  rec.markDirty(cache.expire());
  const r = rec.flush();
  assert.deepEqual(
    { deletes: r.deletes, failed: r.failed, retrying: r.retrying },
    { deletes: 0, failed: 1, retrying: 1 },
  );
  assert.match(r.error!, /^deleting allow entry 1\/203\.0\.113\.1: .*EPERM/);
  assert.equal(rec.entries, 1);
  table.fail = () => undefined;
  clock.t += 1000;
  assert.equal(rec.flush().deletes, 1);
  assert.equal(table.entries.size, 0);
  assert.equal(rec.entries, 0);
});

test('retries are bounded: at most RETRY_BATCH failed entries are tried again per second', () => {
  const n = RETRY_BATCH + 1000;
  const { clock, cache, table, rec } = setup({ 1: { 'a.test': [] } }, { maxIpsPerName: n });
  table.fail = enospc;
  const ips = Array.from({ length: n }, (_, i) => ({ ip: `198.18.${i >> 8}.${i & 0xff}`, ttlMs: 600_000 }));
  rec.markDirty(cache.learn(1, 'a.test', ips, 'agent'));
  assert.equal(rec.flush().failed, n);
  clock.t += 1000;
  table.log.length = 0;
  const r = rec.flush();
  assert.equal(r.failed, RETRY_BATCH);
  assert.equal(r.retrying, n);
  assert.equal(
    table.log.filter((l) => l.startsWith('failed set')).length,
    RETRY_BATCH + 1,
    'the batch stops at its first failure, then one by one',
  );
});
