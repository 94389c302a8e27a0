/*
 * Memory under churn, in accelerated time: the load under which Cilium's
 * agent grew to 3.4 GiB (200 answers/s, 10,000 new names an hour, TTL 5 s)
 * replayed for the equivalent of 12 hours through the agent's whole
 * learning path in process, with an injected clock that jumps ahead: nine
 * answers in ten arrive as the inline learner's records (record ->
 * KernelRecords -> FqdnCache -> Reconciler's bookkeeping), one in ten through
 * the tap (frame -> DnsLearner -> FqdnCache -> Reconciler -> the real allow
 * map in a pin dir of its own, removed at the end); every name is recorded in
 * the real fqe_names as the agent does, and pruned every simulated 30 s as
 * the agent does. Every simulated 500 ms it does what the agent's tick does
 * (cache expiry, learner sweep, flush). Names: 10,000 new ones an hour, each
 * answered while it is among the 1,000 newest; each answer carries 2 A
 * records that rotate every 20 s of simulated time (CDN-like churn).
 * TTLs go through the agent's defaults (--min-ttl 30s). RSS and heap after
 * a full GC are sampled every simulated 30 minutes, with fqe_names' fill;
 * baseline: the same right after setup (maps loaded, pipeline built). Node
 * runs with the agent's flags from the Dockerfile (--max-semi-space-size=2). Goals:
 * RSS flat (the second half's peak no higher than the first half's) and
 * under 150 MiB, fqe_names bounded.
 * Prints one JSON line. BENCH_SMOKE=1: 30 simulated minutes.
 * The kernel's own part is not exercised (no packet reaches it here): the
 * records are built as it writes them (test/helpers/records.ts).
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { Datapath } from '../agent/datapath/datapath.js';
import { parseIp } from '../agent/net/addr.js';
import { EndpointFlag, learnedRecordCodec } from '../agent/datapath/codecs.js';
import { FqdnCache } from '../agent/cache/fqdn-cache.js';
import { Reconciler } from '../agent/sync/reconciler.js';
import { DnsLearner } from '../agent/learn/dns-learner.js';
import { KernelRecords } from '../agent/learn/kernel-records.js';
import { NamePruner } from '../agent/names/name-pruner.js';
import { parsePodPolicy, rulesForName } from '../agent/policy/annotation.js';
import { POLICY_LIMITS } from '../test/helpers/policy-limits.js';
import { nameHash } from '../agent/policy/name-hash.js';
import { FLAGS, parseDuration } from '../agent/config.js';
import type { EnforcedPod } from '../agent/pods/endpoints.js';
import type { CapturedPacket } from '../agent/datapath/native.js';
import { buildFrame } from '../test/helpers/frames.js';
import { encodeLearnedRecord } from '../test/helpers/records.js';
import { ensureBpffs, PIN_ROOT } from '../test/helpers/topology.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const SIM_HOURS = SMOKE ? 0.5 : 12;
const ANSWERS_PER_SEC = 200;
const NEW_NAMES_PER_HOUR = 10_000;
const ACTIVE_NAMES = 1_000;
const ANSWER_TTL_S = 5;
const IP_ROTATION_MS = 20_000;
const TICK_MS = 500;
const BATCH_ANSWERS = 20; // the tap hands the agent batches; it flushes after each
const SAMPLE_EVERY_MS = 30 * 60_000;
const TAP_EVERY = 10; // one answer in ten is one the kernel left to the tap
const NAME_PRUNE_MS = 30_000; // as the agent
const GOAL_MIB = 150;
/** the agent's --max-semi-space-size, as the Dockerfile starts it */
const SEMI_SPACE_MIB = 2;
const POD_V4 = '198.18.1.2';
const RESOLVER = '192.0.2.2';
const IDENTITY = 1;

const MIB = 1024 * 1024;

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  g!();
  g!();
}

function memory(): { rssMiB: number; heapUsedMiB: number; externalMiB: number } {
  gc();
  const m = process.memoryUsage();
  return { rssMiB: round1(m.rss / MIB), heapUsedMiB: round1(m.heapUsed / MIB), externalMiB: round1(m.external / MIB) };
}

function round1(x: number): number {
  return Number(x.toFixed(1));
}

/** An address in 198.18.0.0/15 (never sent anything: only written to the map). */
function ipFor(n: number): string {
  const v = 0xc6120000 + (n % 131_072);
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

function hash32(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35);
  h ^= h >>> 15;
  h = Math.imul(h, 0x27d4eb2d);
  return (h ^ (h >>> 13)) >>> 0;
}

function main(): void {
  ensureBpffs();
  const pinDir = join(PIN_ROOT, `fqe-bench-memory-${process.pid}`);
  let dp: Datapath | undefined;
  try {
    dp = Datapath.load(pinDir);
    let nowMs = 1_000_000; // the injected clock (ms); the kernel never judges these entries
    const clock = () => nowMs;
    const minTtlMs = parseDuration(FLAGS['min-ttl']!.default!, 'min-ttl');
    const maxTtlMs = parseDuration(FLAGS['max-ttl']!.default!, 'max-ttl');
    const maxIpsPerName = Number(FLAGS['max-ips-per-name']!.default);
    const pod: EnforcedPod = {
      key: 'shop/churn',
      namespace: 'shop',
      name: 'churn',
      identity: IDENTITY,
      ifindex: 1,
      ifname: 'lo',
      ips: [POD_V4],
      policy: parsePodPolicy({ 'fqdn-egress.io/allow': '*.churn.test' }, POLICY_LIMITS),
      dnsFilter: 'on',
    };
    dp.maps.endpoints.set(1, { identity: IDENTITY, flags: EndpointFlag.enforce });
    dp.maps.owners.set({ identity: IDENTITY, addr: parseIp(POD_V4) }, 1);
    const maxNamesPerPod = Number(FLAGS['max-names-per-pod']!.default);
    const cache = new FqdnCache({ maxIpsPerName, maxNamesPerPod, now: clock });
    const rec = new Reconciler({
      cache,
      allow: dp.maps.allow,
      identities: () => [IDENTITY],
      portsFor: (_id, name) => (rulesForName(pod.policy, name).allowed ? [] : null),
      nameHash: (n) => nameHash(n),
      nameOf: () => undefined,
      toKernelNs: (ms) => BigInt(Math.round(ms * 1e6)),
      kernelNowNs: () => BigInt(Math.round(nowMs * 1e6)),
    });
    let accepted = 0;
    // The agent's name bookkeeping: hash -> name, mirrored in fqe_names.
    const names = new Map<bigint, string>();
    const rememberName = (hash: bigint, name: string) => {
      if (names.get(hash) === name) return;
      names.set(hash, name);
      dp!.maps.names.set(hash, name);
    };
    const learner = new DnsLearner({
      podByInterface: () => pod,
      isTrustedResolver: (ip) => ip === RESOLVER,
      kernelSawQuery: () => true,
      learn: (a) => {
        rememberName(nameHash(a.name), a.name);
        rec.markDirty(cache.learn(IDENTITY, a.name, a.answers, 'agent'));
      },
      verdict: (v) => {
        if (v === 'accepted') accepted++;
      },
      minTtlMs,
      maxTtlMs,
      nowMs: clock,
      connectGraceMs: parseDuration(FLAGS['connect-grace']!.default!, 'connect-grace'),
    });
    const connectGraceMs = parseDuration(FLAGS['connect-grace']!.default!, 'connect-grace');
    const records = new KernelRecords({
      cache,
      pod: () => pod,
      hashesTo: (name, hash) => nameHash(name) === hash,
      noteKernelEntry: (key, value, ip) => rec.noteKernelEntry(key, value, ip),
      rememberName,
      keepMs: (ttlS) => Math.max(connectGraceMs, Math.min(maxTtlMs, Math.max(minTtlMs, ttlS * 1000))),
      nameRefused: () => undefined,
    });
    const pruner = new NamePruner();
    const pruneNames = () => {
      const referenced = new Set<bigint>(rec.nameHashes());
      for (const n of cache.namesOf(IDENTITY).keys()) referenced.add(nameHash(n));
      const stored = dp!.maps.names.entries().map(([hash]) => hash);
      const gone = pruner.pass(stored, referenced);
      if (gone.length) dp!.maps.names.deleteMany(gone);
      for (const hash of gone) names.delete(hash);
    };

    const baseline = memory();
    const samples: Array<{
      simHours: number;
      rssMiB: number;
      heapUsedMiB: number;
      externalMiB: number;
      allowEntries: number;
      cacheEntries: number;
      names: number;
    }> = [];
    const sample = (simMs: number) => {
      samples.push({
        simHours: round1(simMs / 3_600_000),
        ...memory(),
        allowEntries: rec.entries,
        cacheEntries: cache.size,
        names: dp!.maps.names.entries().length,
      });
    };

    const totalMs = SIM_HOURS * 3_600_000;
    const answersPerTick = (ANSWERS_PER_SEC * TICK_MS) / 1000;
    let answers = 0;
    let seq = 0;
    let peakAllow = 0;
    const t0 = Date.now();
    for (let simMs = 0; simMs < totalMs; simMs += TICK_MS) {
      // The names introduced so far; answers go to the ACTIVE_NAMES newest.
      const introduced = Math.floor((simMs / 3_600_000) * NEW_NAMES_PER_HOUR) + ACTIVE_NAMES;
      for (let done = 0; done < answersPerTick; done += BATCH_ANSWERS) {
        const packets: CapturedPacket[] = [];
        const raw: Buffer[] = [];
        for (let k = 0; k < BATCH_ANSWERS && done + k < answersPerTick; k++) {
          const nameIdx = introduced - 1 - (hash32(seq, 1) % ACTIVE_NAMES);
          const name = `n${nameIdx}.churn.test`;
          const gen = Math.floor((nowMs + (nameIdx % 20) * 1000) / IP_ROTATION_MS);
          const ips = [0, 1].map((j) => ipFor(hash32(nameIdx * 2 + j, gen)));
          const id = seq & 0xffff;
          const sport = 1024 + (seq % 60_000);
          const viaTap = seq % TAP_EVERY === 0;
          seq++;
          answers++;
          if (!viaTap) {
            const tsNs = BigInt(Math.round(nowMs * 1e6));
            const expiresNs = tsNs + BigInt(Math.max(minTtlMs, ANSWER_TTL_S * 1000)) * 1_000_000n;
            raw.push(
              encodeLearnedRecord({
                identity: IDENTITY,
                name,
                nameHash: nameHash(name),
                tsNs,
                addrs: ips.map((ip) => ({ ip, ttlS: ANSWER_TTL_S, expiresNs })),
              }),
            );
            continue;
          }
          const question = [{ type: 'A' as const, name, class: 'IN' as const }];
          const a = dnsPacket.encode({
            type: 'response',
            id,
            questions: question,
            answers: ips.map((ip) => ({ type: 'A' as const, name, class: 'IN' as const, ttl: ANSWER_TTL_S, data: ip })),
          });
          packets.push({
            data: buildFrame({ src: RESOLVER, dst: POD_V4, proto: 'udp', sport: 53, dport: sport, payload: a }),
            ifindex: 1,
            pktType: 4,
            tsNs: 0n,
            origLen: 0,
          });
        }
        const r = records.apply(raw.map((b) => learnedRecordCodec.decode(b)));
        accepted += r.accepted;
        if (r.changes.length) rec.markDirty(r.changes);
        learner.handle(packets);
        rec.flush();
      }
      // The agent's tick.
      nowMs += TICK_MS;
      rec.markDirty(cache.expire());
      learner.sweep();
      rec.flush();
      peakAllow = Math.max(peakAllow, rec.entries);
      if ((simMs + TICK_MS) % NAME_PRUNE_MS === 0) pruneNames();
      if ((simMs + TICK_MS) % SAMPLE_EVERY_MS === 0) sample(simMs + TICK_MS);
    }
    if (samples.length === 0) sample(totalMs);
    const wallS = (Date.now() - t0) / 1000;
    if (accepted !== answers) throw new Error(`the learner accepted ${accepted} of ${answers} answers`);
    const maxRss = Math.max(...samples.map((s) => s.rssMiB));
    const maxNames = Math.max(...samples.map((s) => s.names));
    // RSS swings with the collector's cycle: compare the envelopes (peak of
    // the second half against peak of the first), and the heaps after GC.
    const mid = Math.floor(samples.length / 2);
    const peak = (xs: typeof samples, f: (x: (typeof samples)[number]) => number) => Math.max(...xs.map(f));
    const growthSecondHalfMiB =
      samples.length < 2
        ? 0
        : round1(peak(samples.slice(mid), (x) => x.rssMiB) - peak(samples.slice(0, mid), (x) => x.rssMiB));
    const heapGrowthSecondHalfMiB =
      samples.length < 2
        ? 0
        : round1(peak(samples.slice(mid), (x) => x.heapUsedMiB) - peak(samples.slice(0, mid), (x) => x.heapUsedMiB));
    const result = {
      bench: 'memory',
      load: `${ANSWERS_PER_SEC} answers/s, ${NEW_NAMES_PER_HOUR} new names/h (${ACTIVE_NAMES} active), TTL ${ANSWER_TTL_S} s (agent --min-ttl ${minTtlMs / 1000}s), 2 A per answer rotating every ${IP_ROTATION_MS / 1000} s`,
      simulatedHours: SIM_HOURS,
      answers,
      names: Math.floor(SIM_HOURS * NEW_NAMES_PER_HOUR) + ACTIVE_NAMES,
      wallSeconds: round1(wallS),
      baseline: { what: 'right after setup: maps loaded, pipeline built, after GC', ...baseline },
      node: `--max-semi-space-size=${SEMI_SPACE_MIB} (as the Dockerfile runs the agent)`,
      samples,
      maxRssMiB: maxRss,
      rssOverBaselineMiB: round1(maxRss - baseline.rssMiB),
      growthSecondHalfMiB,
      heapGrowthSecondHalfMiB,
      peakAllowEntries: peakAllow,
      allowMapCapacity: 1_048_576,
      path: `${TAP_EVERY - 1} answers in ${TAP_EVERY} as kernel records, 1 through the tap`,
      maxNamesInMap: maxNames,
      namesMapCapacity: 65_536,
      goal: `RSS flat (second half's peak <= first half's) and under ${GOAL_MIB} MiB, fqe_names bounded`,
      met: maxRss < GOAL_MIB && growthSecondHalfMiB <= 0 && maxNames < 65_536,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    dp?.close();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
  // Measure after a full GC: run again with --expose-gc (same stdout, same exit code).
  // ... and with the young generation the image gives the agent (Dockerfile).
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', `--max-semi-space-size=${SEMI_SPACE_MIB}`, process.argv[1]!, ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  process.exit(r.status ?? 1);
} else {
  try {
    main();
  } catch (err) {
    process.stderr.write(`memory bench failed: ${(err as Error).stack}\n`);
    process.exit(1);
  }
}
