/*
 * Eviction past --max-ips-per-name: the cost of one big DNS answer (4,000
 * addresses, as a DNS-over-TCP answer can carry) for one pod and name, into
 * the FQDN cache, with --max-ips-per-name 100 and 1000 (the default).
 * Baseline in the same run: the cache's previous eviction, reimplemented
 * below as it was (each eviction scanned the name's IPs for the least
 * recently answered one: O(n) per eviction). Now the IPs sit in answer order
 * and the first one goes: O(1). Pure userspace, no kernel.
 * Prints one JSON line. BENCH_SMOKE=1: fewer rounds.
 */
import { FqdnCache, type AnsweredIp, type Change } from '../agent/cache/fqdn-cache.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const ROUNDS = SMOKE ? 3 : 15;
const ADDRESSES = 4000;

/** The previous eviction, as it was: a scan of the name's IPs for the oldest answer. */
class ScanEvictionCache {
  private readonly byName = new Map<string, Map<string, { ip: string; expiresAtMs: number; answeredAtMs: number }>>();
  private readonly byIp = new Map<string, Set<string>>();

  constructor(
    private readonly maxIpsPerName: number,
    private readonly now: () => number,
  ) {}

  learn(name: string, answers: AnsweredIp[]): Change[] {
    const changes: Change[] = [];
    const now = this.now();
    for (const a of answers) {
      let ips = this.byName.get(name);
      if (!ips) this.byName.set(name, (ips = new Map()));
      const old = ips.get(a.ip);
      const entry = { ip: a.ip, expiresAtMs: Math.max(now + a.ttlMs, old?.expiresAtMs ?? 0), answeredAtMs: now };
      ips.set(a.ip, entry);
      let names = this.byIp.get(a.ip);
      if (!names) this.byIp.set(a.ip, (names = new Set()));
      names.add(name);
      changes.push({ identity: 1, ip: a.ip });
      while (ips.size > this.maxIpsPerName) {
        let oldest: { ip: string; answeredAtMs: number } | undefined;
        for (const e of ips.values()) if (!oldest || e.answeredAtMs < oldest.answeredAtMs) oldest = e;
        ips.delete(oldest!.ip);
        const n = this.byIp.get(oldest!.ip);
        n?.delete(name);
        if (n?.size === 0) this.byIp.delete(oldest!.ip);
        changes.push({ identity: 1, ip: oldest!.ip });
      }
    }
    return changes;
  }
}

function answer(round: number): AnsweredIp[] {
  // 198.18.0.0/15: documentation addresses, never sent to
  return Array.from({ length: ADDRESSES }, (_, i) => {
    const n = 0xc6120000 + ((round * ADDRESSES + i) & 0x1ffff);
    return { ip: `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`, ttlMs: 300_000 };
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** ms per answer: the first answer into an empty name, and an answer that replaces a full name's IPs. */
function measure(learnInto: () => (answers: AnsweredIp[]) => void): { firstMs: number; fullMs: number } {
  const first: number[] = [];
  const full: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const learn = learnInto();
    const [one, next] = [answer(2 * r), answer(2 * r + 1)];
    let t0 = process.hrtime.bigint();
    learn(one);
    first.push(Number(process.hrtime.bigint() - t0) / 1e6);
    t0 = process.hrtime.bigint();
    learn(next);
    full.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { firstMs: median(first), fullMs: median(full) };
}

const results = [];
for (const maxIpsPerName of [100, 1000, 100, 1000]) {
  // the first two warm the JIT up
  let t = 0;
  const now = () => ++t; // every answer a later one
  const linear = measure(() => {
    const cache = new FqdnCache({ maxIpsPerName, now });
    return (answers) => void cache.learn(1, 'big.bench.test', answers, 'agent');
  });
  const scan = measure(() => {
    const cache = new ScanEvictionCache(maxIpsPerName, now);
    return (answers) => void cache.learn('big.bench.test', answers);
  });
  const round = (x: number) => Math.round(x * 100) / 100;
  results.push({
    warmUp: results.length < 2,
    maxIpsPerName,
    firstAnswerMs: round(linear.firstMs),
    baselineFirstAnswerMs: round(scan.firstMs),
    answerIntoFullNameMs: round(linear.fullMs),
    baselineAnswerIntoFullNameMs: round(scan.fullMs),
    speedup: round(scan.fullMs / linear.fullMs),
  });
}
console.log(
  JSON.stringify({
    bench: 'cache-eviction',
    answerAddresses: ADDRESSES,
    rounds: ROUNDS,
    results: results.filter((r) => !r.warmUp).map(({ warmUp: _, ...r }) => r),
  }),
);
