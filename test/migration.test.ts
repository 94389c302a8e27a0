/*
 * Upgrades of pinned maps: a pin whose definition changed is replaced at
 * load, keeping its entries when their layout did not change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { requireKernelTestEnv, ensureBpffs, PIN_ROOT } from './helpers/topology.js';
import { Datapath } from '../agent/datapath/datapath.js';
import { native, MapType } from '../agent/datapath/native.js';
import { LAYOUTS, allowKeyCodec, allowValueCodec, AllowSource } from '../agent/datapath/codecs.js';
import { parseCidr, formatIp } from '../agent/datapath/addr.js';

test('a changed pinned map is upgraded: entries kept when the layout is the same, dropped when it is not', (t) => {
  if (!requireKernelTestEnv(t)) return;
  ensureBpffs();
  const pinDir = join(PIN_ROOT, `fqet-${process.pid.toString(36)}-mig`);
  mkdirSync(pinDir, { recursive: true });
  t.after(() => rmSync(pinDir, { recursive: true, force: true }));
  // An "older" fqe_allow with a smaller capacity, holding one entry.
  const oldAllow = native.createMap(MapType.LPM_TRIE, LAYOUTS.allow_key.size, LAYOUTS.allow_val.size, 1024, 'fqe_allow', 1 /* BPF_F_NO_PREALLOC */);
  const c = parseCidr('203.0.113.10');
  native.mapUpdate(oldAllow, allowKeyCodec.encode({ identity: 7, addr: c.addr, prefixLen: c.prefixLen }), allowValueCodec.encode({ expiresNs: 0n, nameHash: 5n, ports: [], source: AllowSource.agent }));
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
    assert.deepEqual(entries.map(([k, v]) => [k.identity, formatIp(k.addr), v.nameHash]), [[7, '203.0.113.10', 5n]]);
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
