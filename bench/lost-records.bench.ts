/*
 * Lost learned records: what reading back the entries the agent missed
 * costs, on the real (pinned) fqe_allow holding 200,000 kernel-learned
 * entries: 100 pods with 2,000 entries each (20 names of 100 addresses),
 * one pod having lost one record of 20 addresses.
 * Baseline in the same run: the previous recovery, one synchronous pass
 * over the whole map (bpf_map_get_next_key and a lookup per entry: the trie
 * has no batch lookup), reimplemented below as it was. Now: a walk of the
 * pods that lost records only, from a key the agent knows lies before
 * their range (datapath/allow-walk.ts), in slices of RECOVERY_CALLS_PER_TICK
 * map calls (the agent takes one slice per 500 ms tick); also the worst
 * case, every pod having lost a record. Both import what they find through
 * the same steps (the reconciler's shadow, the name, the cache).
 * Prints one JSON line. BENCH_SMOKE=1: 20,000 entries.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Datapath } from '../agent/datapath/datapath.js';
import { AllowSource, type AllowKey, type AllowValue } from '../agent/datapath/codecs.js';
import { formatIp, parseIp } from '../agent/net/addr.js';
import { AllowWalk } from '../agent/datapath/allow-walk.js';
import { RECOVERY_CALLS_PER_TICK } from '../agent/learn/lost-records.js';
import { FqdnCache } from '../agent/cache/fqdn-cache.js';
import { Reconciler } from '../agent/sync/reconciler.js';
import { nameHash } from '../agent/policy/name-hash.js';
import { ensureBpffs, PIN_ROOT } from '../test/helpers/topology.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const PODS = SMOKE ? 10 : 100;
const NAMES = 20;
const PER_NAME = 100;
const LOST_POD = Math.floor(PODS / 2) + 1;
const LOST = 20;

/** pod p's address i (p < 128, i < 2048): 198.18.0.0/15 and 2001:db8:ff::/64 (never sent to) */
function addressOf(p: number, i: number): string {
  const k = i >> 1;
  return i % 2
    ? `198.${18 + (p >> 6)}.${((p & 0x3f) << 2) | (k >> 8)}.${k & 0xff}`
    : `2001:db8:ff::${p.toString(16)}:${i.toString(16)}`;
}

interface Agentish {
  cache: FqdnCache;
  rec: Reconciler;
  names: Map<bigint, string>;
  imported: number;
  /** what the agent does with a kernel entry it reads back (Agent.importKernelEntry, less its policy check) */
  importEntry(key: AllowKey, value: AllowValue): void;
}

function agentish(dp: Datapath, nowNs: bigint): Agentish {
  const cache = new FqdnCache({ maxIpsPerName: 1000, now: () => Number(nowNs) / 1e6 });
  const names = new Map<bigint, string>();
  const rec = new Reconciler({
    cache,
    allow: dp.maps.allow,
    identities: () => Array.from({ length: PODS }, (_, i) => i + 1),
    portsFor: () => [],
    nameHash: (n) => nameHash(n),
    nameOf: (h) => names.get(h),
    toKernelNs: (ms) => BigInt(Math.round(ms * 1e6)),
    kernelNowNs: () => nowNs,
  });
  const a: Agentish = {
    cache,
    rec,
    names,
    imported: 0,
    importEntry(key, value) {
      if (value.source !== AllowSource.kernel || key.prefixLen !== 128) return;
      if (!rec.noteKernelEntry(key, value)) return;
      const name = names.get(value.nameHash);
      if (!name) return;
      rec.markDirty(cache.restore(key.identity, name, formatIp(key.addr), Number(value.expiresNs) / 1e6, 'kernel'));
      a.imported++;
    },
  };
  return a;
}

function main(): void {
  ensureBpffs();
  const pinDir = join(PIN_ROOT, `fqe-bench-lost-${process.pid}`);
  let dp: Datapath | undefined;
  try {
    dp = Datapath.load(pinDir);
    const nowNs = process.hrtime.bigint();
    const expiresNs = nowNs + 3_600_000_000_000n;
    // The map as the inline learner left it, and what the agent knew from the records that came.
    const known: Array<[AllowKey, AllowValue, string]> = [];
    const names = new Map<bigint, string>();
    let written = 0;
    for (let p = 1; p <= PODS; p++) {
      const batch: Array<[AllowKey, AllowValue]> = [];
      for (let n = 0; n < NAMES; n++) {
        const name = `n${n}.pod${p}.bench.test`;
        const hash = nameHash(name);
        names.set(hash, name);
        for (let j = 0; j < PER_NAME; j++) {
          const ip = addressOf(p, n * PER_NAME + j);
          const key = { identity: p, addr: parseIp(ip), prefixLen: 128 };
          const value = { expiresNs, nameHash: hash, ports: [], source: AllowSource.kernel };
          batch.push([key, value]);
          if (!(p === LOST_POD && n === 7 && j < LOST)) known.push([key, value, name]);
        }
      }
      written += dp.maps.allow.setMany(batch);
    }
    const setup = (): Agentish => {
      const a = agentish(dp!, nowNs);
      for (const [hash, name] of names) a.names.set(hash, name);
      for (const [key, value, name] of known) {
        a.rec.noteKernelEntry(key, value);
        a.cache.restore(key.identity, name, formatIp(key.addr), Number(value.expiresNs) / 1e6, 'kernel');
      }
      return a;
    };

    // Baseline: the previous recovery, one pass over everything.
    const before = setup();
    const t0 = process.hrtime.bigint();
    for (const [key, value] of dp.maps.allow.entries()) before.importEntry(key, value);
    const fullPassMs = Number(process.hrtime.bigint() - t0) / 1e6;

    // Now: a walk of the affected pods, a slice per tick.
    const walkOf = (pods: number[]) => {
      const a = setup();
      let calls = 0;
      const walk = new AllowWalk({
        map: { nextKey: (k) => (calls++, dp!.maps.allow.nextKey(k)), get: (k) => (calls++, dp!.maps.allow.get(k)) },
        knownIdentities: () => a.rec.knownIdentities(),
        knownKeys: (identity) => a.rec.knownKeys(identity),
        found: (key, value) => a.importEntry(key, value),
      });
      walk.add(pods);
      const ticks: number[] = [];
      while (walk.pending > 0) {
        const t = process.hrtime.bigint();
        walk.step(RECOVERY_CALLS_PER_TICK);
        ticks.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      const round = (x: number) => Math.round(x * 100) / 100;
      return {
        imported: a.imported,
        calls,
        ticks: ticks.length,
        totalMs: round(ticks.reduce((s, x) => s + x, 0)),
        maxTickMs: round(Math.max(...ticks)),
      };
    };
    const onePod = walkOf([LOST_POD]);
    const everyPod = walkOf(Array.from({ length: PODS }, (_, i) => i + 1));
    console.log(
      JSON.stringify({
        bench: 'lost-records',
        entries: written,
        pods: PODS,
        lostAddresses: LOST,
        baseline: {
          what: 'one pass over fqe_allow',
          ms: Math.round(fullPassMs * 100) / 100,
          calls: 2 * written,
          imported: before.imported,
        },
        onePodLost: onePod,
        everyPodLost: everyPod,
        speedupOnePod: Math.round((fullPassMs / onePod.totalMs) * 10) / 10,
      }),
    );
  } finally {
    dp?.close();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

main();
