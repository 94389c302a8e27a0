/*
 * Upgrades of pinned maps: a pin whose definition changed is replaced at
 * load, keeping its entries when their layout did not change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { requireKernelTestEnv, ensureBpffs, PIN_ROOT } from '../helpers/topology.js';
import { Datapath } from '../../agent/datapath/datapath.js';
import { native, MapType } from '../../agent/datapath/native.js';
import { allowKeyCodec, allowValueCodec, AllowSource } from '../../agent/datapath/codecs.js';
import { parseCidr, formatIp } from '../../agent/net/addr.js';

test('a changed pinned map is upgraded: entries kept when the layout is the same, dropped when it is not', (t) => {
  if (!requireKernelTestEnv(t)) return;
  ensureBpffs();
  const pinDir = join(PIN_ROOT, `fqet-${process.pid.toString(36)}-mig`);
  mkdirSync(pinDir, { recursive: true });
  t.after(() => rmSync(pinDir, { recursive: true, force: true }));
  // An "older" fqe_allow with a smaller capacity, holding one entry.
  const oldAllow = native.createMap(
    MapType.LPM_TRIE,
    allowKeyCodec.size,
    allowValueCodec.size,
    1024,
    'fqe_allow',
    1 /* BPF_F_NO_PREALLOC */,
  );
  const c = parseCidr('203.0.113.10');
  native.mapUpdate(
    oldAllow,
    allowKeyCodec.encode({ identity: 7, addr: c.addr, prefixLen: c.prefixLen }),
    allowValueCodec.encode({ expiresNs: 0n, nameHash: 5n, ports: [], source: AllowSource.agent }),
  );
  native.pinProgram(oldAllow, join(pinDir, 'fqe_allow'));
  native.closeFd(oldAllow);
  // An "older" fqe_counters whose value layout differs.
  const oldCounters = native.createMap(MapType.PERCPU_HASH, 4, 64, 16, 'fqe_counters');
  native.pinProgram(oldCounters, join(pinDir, 'fqe_counters'));
  native.closeFd(oldCounters);

  const dp = Datapath.load(pinDir);
  try {
    const byMap = Object.fromEntries(dp.migrated.map((m) => [m.map, m]));
    assert.equal(byMap.fqe_allow?.action, 'kept');
    assert.equal(byMap.fqe_allow?.entries, 1);
    assert.equal(byMap.fqe_counters?.action, 'dropped');
    assert.equal(dp.migrated.length, 2, 'the other pins were new or unchanged');
    const entries = dp.maps.allow.entries();
    assert.deepEqual(
      entries.map(([k, v]) => [k.identity, formatIp(k.addr), v.nameHash]),
      [[7, '203.0.113.10', 5n]],
    );
    const pinned = native.objGet(join(pinDir, 'fqe_allow'));
    try {
      assert.equal(native.mapInfo(pinned).maxEntries, native.layouts().constants.MAX_ALLOW, 'the new capacity');
    } finally {
      native.closeFd(pinned);
    }
  } finally {
    dp.close();
  }
  const again = Datapath.load(pinDir);
  try {
    assert.deepEqual(again.migrated, [], 'a second load finds nothing to upgrade');
  } finally {
    again.close();
  }
});

test('an upgrade from ABI 1 converts fqe_config and fqe_counters and leaves fqe_policy to the agent', (t) => {
  if (!requireKernelTestEnv(t)) return;
  ensureBpffs();
  const pinDir = join(PIN_ROOT, `fqet-${process.pid.toString(36)}-abi1`);
  mkdirSync(pinDir, { recursive: true });
  t.after(() => rmSync(pinDir, { recursive: true, force: true }));
  const cpus = native.numPossibleCpus();
  // fqe_config of ABI 1: 48 bytes, events_per_sec at 16.
  const oldConfig = native.createMap(MapType.ARRAY, 4, 48, 1, 'fqe_config');
  const cfg = Buffer.alloc(48);
  cfg.writeUInt32LE(123, 16);
  native.mapUpdate(oldConfig, Buffer.alloc(4), cfg);
  native.pinProgram(oldConfig, join(pinDir, 'fqe_config'));
  native.closeFd(oldConfig);
  // fqe_counters of ABI 1: 144 bytes per CPU, passed at 0, reasons[8] at 64 (not-allowed = reasons[1]).
  const oldCounters = native.createMap(MapType.PERCPU_HASH, 4, 144, 4096, 'fqe_counters');
  const counters = Buffer.alloc(144 * cpus);
  for (let cpu = 0; cpu < cpus; cpu++) {
    counters.writeBigUInt64LE(10n, cpu * 144);
    counters.writeBigUInt64LE(3n, cpu * 144 + 64 + 8);
  }
  native.mapUpdate(oldCounters, Buffer.from([7, 0, 0, 0]), counters);
  native.pinProgram(oldCounters, join(pinDir, 'fqe_counters'));
  native.closeFd(oldCounters);
  // fqe_policy of ABI 1: ports only (36 bytes), no names.
  const oldPolicy = native.createMap(MapType.HASH, 16, 36, 65536, 'fqe_policy', 1);
  native.mapUpdate(oldPolicy, Buffer.alloc(16, 1), Buffer.alloc(36));
  native.pinProgram(oldPolicy, join(pinDir, 'fqe_policy'));
  native.closeFd(oldPolicy);

  const dp = Datapath.load(pinDir);
  try {
    const byMap = Object.fromEntries(dp.migrated.map((m) => [m.map, m]));
    assert.equal(byMap.fqe_config?.action, 'converted');
    assert.equal(byMap.fqe_counters?.action, 'converted');
    assert.equal(byMap.fqe_policy?.action, 'rebuilt');
    assert.equal(dp.maps.config.get(0)?.eventsPerSec, 123, 'fqe_config kept its values');
    const c = dp.maps.counters.get(7);
    assert.equal(c?.passed, 10n * BigInt(cpus), 'counters kept, summed over every CPU');
    assert.equal(c?.reasons['not-allowed'], 3n * BigInt(cpus), 'reasons moved to their new place');
    assert.equal(c?.learnRefused, 0n);
    assert.deepEqual(dp.maps.policy.entries(), [], 'fqe_policy is rewritten by the agent from the annotations');
  } finally {
    dp.close();
  }
});
