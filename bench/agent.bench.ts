/*
 * The agent's DNS path.
 *  1. Throughput on one core, in process, with real kernel maps: DNS answers
 *     per second through the tap path (frame parsing, the learner's checks,
 *     the FQDN cache and the reconciler writing the allow map); baseline in
 *     the same run: dns-packet's decode of the same answers alone.
 *  1b. Learned records per second through the record path (decode, the
 *     name check, the cache, the reconciler's bookkeeping: the kernel already
 *     wrote the map), in three shapes (see records()), against the tap path's
 *     answers per second above.
 *  2. Capture-to-map latency in the node-in-a-box: the real agent (inline
 *     learner off, so every entry is the agent's write) while a C client
 *     resolves fresh names, paced at about 1,000 answers/s and then as fast
 *     as it can; p50/p99 from the agent's own histogram
 *     (fqdn_egress_capture_to_map_seconds), reset by a restart between runs.
 * Prints one JSON line. BENCH_SMOKE=1: small counts.
 */
import { rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { Datapath } from '../agent/datapath/datapath.js';
import { EndpointFlag, learnedRecordCodec } from '../agent/datapath/codecs.js';
import { FqdnCache } from '../agent/cache/fqdn-cache.js';
import { Reconciler } from '../agent/sync/reconciler.js';
import { DnsLearner } from '../agent/learn/dns-learner.js';
import { KernelRecords } from '../agent/learn/kernel-records.js';
import { parsePodPolicy, rulesForName } from '../agent/policy/annotation.js';
import { POLICY_LIMITS } from '../test/helpers/policy-limits.js';
import { nameHash } from '../agent/policy/name-hash.js';
import { monotonicMs } from '../agent/agent.js';
import type { EnforcedPod } from '../agent/pods/endpoints.js';
import type { CapturedPacket } from '../agent/datapath/native.js';
import { buildFrame } from '../test/helpers/frames.js';
import { encodeLearnedRecord } from '../test/helpers/records.js';
import { ensureBpffs, PIN_ROOT } from '../test/helpers/topology.js';
import { withAgentBox } from '../test/helpers/agent-fixture.js';
import { compileRaceClient, raceHostsFile, runRace } from '../test/helpers/race.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const ANSWERS = SMOKE ? 5_000 : 100_000;
const BATCH = 64;
const RACE_NAMES = SMOKE ? 100 : 500;
/** one pod learns every name here: the figure is the learning path's, not the per-pod name cap's */
const UNCAPPED = Number.MAX_SAFE_INTEGER;

/** The one enforced pod the benchmarks learn for. */
function benchPod(): EnforcedPod {
  return {
    key: 'shop/bench',
    namespace: 'shop',
    name: 'bench',
    identity: 1,
    ifindex: 1,
    ifname: 'lo',
    ips: ['198.18.1.2'],
    policy: parsePodPolicy({ 'fqdn-egress.io/allow': '*.bench.test' }, POLICY_LIMITS),
    dnsFilter: 'on',
  };
}

function throughput(): { answersPerSec: number; baselineDecodePerSec: number; ratio: number } {
  ensureBpffs();
  const pinDir = join(PIN_ROOT, `fqe-bench-agent-${process.pid}`);
  let dp: Datapath | undefined;
  try {
    dp = Datapath.load(pinDir);
    const pod = benchPod();
    dp.maps.endpoints.set(1, { identity: 1, flags: EndpointFlag.enforce });
    const cache = new FqdnCache({ maxIpsPerName: 1000, maxNamesPerPod: UNCAPPED, now: monotonicMs });
    const rec = new Reconciler({
      cache,
      allow: dp.maps.allow,
      identities: () => [1],
      portsFor: (_id, name) => (rulesForName(pod.policy, name).allowed ? [] : null),
      nameHash: (n) => nameHash(n),
      nameOf: () => undefined,
      toKernelNs: (ms) => BigInt(Math.round(ms * 1e6)),
      kernelNowNs: () => process.hrtime.bigint(),
    });
    const learner = new DnsLearner({
      podByInterface: () => pod,
      isTrustedResolver: (ip) => ip === '192.0.2.2',
      kernelSawQuery: () => true,
      learn: (a) => rec.markDirty(cache.learn(1, a.name, a.answers, 'agent')),
      verdict: () => undefined,
      minTtlMs: 30_000,
      maxTtlMs: 3_600_000,
      connectGraceMs: 0,
      nowMs: monotonicMs,
    });
    const packets: CapturedPacket[] = [];
    const payloads: Buffer[] = [];
    for (let i = 0; i < ANSWERS; i++) {
      const name = `n${i}.bench.test`;
      const n = 0xc6120000 + i; // 198.18.0.0/15: unique for up to 131,072 answers (no traffic is sent)
      const ip = `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
      const a = dnsPacket.encode({
        type: 'response',
        id: i & 0xffff,
        questions: [{ type: 'A', name, class: 'IN' }],
        answers: [{ type: 'A', name, class: 'IN', ttl: 300, data: ip }],
      });
      payloads.push(a);
      const sport = 10000 + (i % 50000);
      packets.push({
        data: buildFrame({ src: '192.0.2.2', dst: '198.18.1.2', proto: 'udp', sport: 53, dport: sport, payload: a }),
        ifindex: 1,
        pktType: 4,
        tsNs: 0n,
        origLen: 0,
      });
    }
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < packets.length; i += BATCH) {
      learner.handle(packets.slice(i, i + BATCH));
      rec.flush();
    }
    const agentNs = Number(process.hrtime.bigint() - t0);
    if (rec.entries !== ANSWERS) throw new Error(`expected ${ANSWERS} allow entries, got ${rec.entries}`);
    const t1 = process.hrtime.bigint();
    for (const p of payloads) dnsPacket.decode(p);
    const baseNs = Number(process.hrtime.bigint() - t1);
    const answersPerSec = Math.round(ANSWERS / (agentNs / 1e9));
    const baselineDecodePerSec = Math.round(ANSWERS / (baseNs / 1e9));
    return { answersPerSec, baselineDecodePerSec, ratio: Number((answersPerSec / baselineDecodePerSec).toFixed(3)) };
  } finally {
    dp?.close();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

/** Quantile from cumulative Prometheus buckets, interpolated inside the bucket. */
function quantile(text: string, q: number): number {
  const buckets = text
    .split('\n')
    .filter((l) => l.startsWith('fqdn_egress_capture_to_map_seconds_bucket'))
    .map((l) => ({
      le: Number(/le="([^"]+)"/.exec(l)![1]!.replace('+Inf', 'Infinity')),
      n: Number(l.split(' ').pop()),
    }));
  const total = buckets[buckets.length - 1]!.n;
  const target = q * total;
  let prevLe = 0;
  let prevN = 0;
  for (const b of buckets) {
    if (b.n >= target)
      return b.le === Infinity ? prevLe : prevLe + ((target - prevN) / Math.max(1, b.n - prevN)) * (b.le - prevLe);
    prevLe = b.le;
    prevN = b.n;
  }
  return prevLe;
}

interface Latency {
  answers: number;
  answersPerSec: number;
  p50Us: number;
  p99Us: number;
}

async function latency(): Promise<{ paced: Latency; flatOut: Latency }> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-bench-'));
  const client = compileRaceClient();
  const out: Record<string, Latency> = {};
  try {
    const hosts = ['paced', 'flat'].map((p) => raceHostsFile(dir, p, RACE_NAMES));
    await withAgentBox(
      undefined,
      [{ name: 'client' }],
      { agentArgs: ['--inline-learner', 'false'], dnsmasqArgs: hosts.map((h) => `--addn-hosts=${h}`) },
      async (box) => {
        box.writePods([{ name: 'client', allow: '*.race.test' }]);
        for (const [prefix, gapUs] of [
          ['paced', 1000],
          ['flat', 0],
        ] as const) {
          await box.startAgent(['--log-level', 'info']);
          const identity = box.maps((dp) => dp.maps.pods.entries()[0]![0]);
          const t0 = Date.now();
          const r = await runRace(box, 'client', client.path, prefix, RACE_NAMES, identity, gapUs);
          const secs = (Date.now() - t0) / 1000;
          await box.waitFor(
            'every answer measured',
            async () => (await box.metric('fqdn_egress_capture_to_map_seconds_count')) >= r.answered,
            5000,
          );
          const text = await box.metricsText();
          out[prefix] = {
            answers: r.answered,
            answersPerSec: Math.round(r.answered / secs),
            p50Us: Math.round(quantile(text, 0.5) * 1e6),
            p99Us: Math.round(quantile(text, 0.99) * 1e6),
          };
          await box.stopAgent();
        }
      },
    );
  } finally {
    client.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
  return { paced: out.paced!, flatOut: out.flat! };
}

/**
 * Learned records per second: what the agent does per answer the kernel
 * learned (decode, the name check, the cache, the reconciler's bookkeeping),
 * in three shapes: every record a new name and address (the worst case: each
 * one grows the cache); 1,000 names answered again and again with rotating
 * addresses (CDN-like churn); 1,000 names answered again with the same
 * addresses (steady state: each record extends an expiry).
 */
function records(shape: 'new-names' | 'rotating' | 'steady'): number {
  const pod = benchPod();
  const cache = new FqdnCache({ maxIpsPerName: 1000, maxNamesPerPod: UNCAPPED, now: monotonicMs });
  const rec = new Reconciler({
    cache,
    allow: {
      get: () => undefined,
      set: () => undefined,
      setMany: (e) => e.length,
      delete: () => true,
      deleteMany: (k) => k.length,
    },
    identities: () => [1],
    portsFor: (_id, name) => (rulesForName(pod.policy, name).allowed ? [] : null),
    nameHash: (n) => nameHash(n),
    nameOf: () => undefined,
    toKernelNs: (ms) => BigInt(Math.round(ms * 1e6)),
    kernelNowNs: () => process.hrtime.bigint(),
  });
  const names = new Map<bigint, string>();
  const kr = new KernelRecords({
    cache,
    pod: () => pod,
    hashesTo: (name, hash) => nameHash(name) === hash,
    noteKernelEntry: (key, value, ip) => rec.noteKernelEntry(key, value, ip),
    rememberName: (hash, name) => void names.set(hash, name),
    keepMs: (ttlS) => ttlS * 1000,
    nameRefused: () => undefined,
  });
  const raw: Buffer[] = [];
  const now = process.hrtime.bigint();
  for (let i = 0; i < ANSWERS; i++) {
    const nameIdx = shape === 'new-names' ? i : i % 1000;
    const addrIdx = shape === 'steady' ? nameIdx : i;
    const name = `n${nameIdx}.bench.test`;
    const n = 0xc6120000 + addrIdx;
    const ip = `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
    const ts = now + BigInt(i) * 1000n;
    raw.push(
      encodeLearnedRecord({
        identity: 1,
        name,
        nameHash: nameHash(name),
        tsNs: ts,
        addrs: [{ ip, ttlS: 300, expiresNs: ts + 300_000_000_000n }],
      }),
    );
  }
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < raw.length; i += BATCH) {
    const r = kr.apply(raw.slice(i, i + BATCH).map((b) => learnedRecordCodec.decode(b)));
    if (r.changes.length) rec.markDirty(r.changes);
    rec.flush();
  }
  const ns = Number(process.hrtime.bigint() - t0);
  const distinct = shape === 'steady' ? 1000 : ANSWERS;
  if (rec.entries !== distinct) throw new Error(`${shape}: expected ${distinct} noted entries, got ${rec.entries}`);
  return Math.round(ANSWERS / (ns / 1e9));
}

async function main(): Promise<void> {
  const tp = throughput();
  const rc = { newNames: records('new-names'), rotating: records('rotating'), steady: records('steady') };
  const lat = await latency();
  process.stdout.write(
    `${JSON.stringify({
      bench: 'agent',
      throughput: { answers: ANSWERS, ...tp, baseline: 'dns-packet decode alone' },
      records: {
        records: ANSWERS,
        addressesPerRecord: 1,
        recordsPerSec: rc,
        baselineTapAnswersPerSec: tp.answersPerSec,
        ratioToTap: Number((rc.rotating / tp.answersPerSec).toFixed(2)),
        goal: '>= 200000 records/s',
        met: Math.min(rc.newNames, rc.rotating, rc.steady) >= 200_000,
      },
      captureToMap: lat,
    })}\n`,
  );
}

main().catch((err: Error) => {
  process.stderr.write(`agent bench failed: ${err.stack}\n`);
  process.exit(1);
});
