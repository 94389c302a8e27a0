/*
 * What the DNS query filter costs, against the same path without it, in the
 * same run:
 *   kernel   the enforcer on one query packet (BPF_PROG_TEST_RUN): allowed
 *            names (exact, wildcard, under a cluster domain) with the filter
 *            on, against the filter off (the pass-and-record path of the
 *            release before it); and a refused query, rewritten into its
 *            NXDOMAIN (measured one run at a time: the rewrite changes the
 *            packet, so a repeat would measure something else).
 *   latency  dnsperf in an enforced pod against dnsmasq, the real agent
 *            running: allowed names with the filter on against off (goal:
 *            p50 and p99 ratios <= 1.02); the time to the kernel's NXDOMAIN
 *            for refused names against the resolver's own NXDOMAIN for
 *            allowed names it does not have. Phases alternate per round.
 * Prints two JSON lines. BENCH_SMOKE=1: few runs, one round of 3 s phases.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { native } from '../agent/datapath/native.js';
import { EndpointFlag, PolicyKind } from '../agent/datapath/codecs.js';
import { clusterDomainEntries } from '../agent/policy/dns-query-filter.js';
import { LearnerHarness } from '../test/helpers/learner-harness.js';
import { buildFrame } from '../test/helpers/frames.js';
import { withAgentBox, type AgentBox } from '../test/helpers/agent-fixture.js';
import { raceHostsFile, RACE_SUFFIX } from '../test/helpers/race.js';
import { dnsperf as runDnsperf, quantile, type DnsperfRun } from '../test/helpers/dnsperf.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const REPEAT = SMOKE ? 10_000 : 1_000_000;
const ROUNDS = SMOKE ? 1 : 5;
const SINGLE_RUNS = SMOKE ? 2_000 : 50_000;
const SECONDS = SMOKE ? 3 : 10;
const LATENCY_ROUNDS = SMOKE ? 1 : 3;
const QPS = 1000;
const NAMES = 500;
const PREFIX = 'flt';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function kernelCost(): Record<string, unknown> {
  const h = LearnerHarness.open();
  try {
    h.dp.maps.hashKey.set(0, randomBytes(8).readBigUInt64LE(0) | 1n);
    h.allowName(PolicyKind.exact, 'api.stripe.test');
    h.allowName(PolicyKind.wildcard, 'kadath.test');
    for (const e of clusterDomainEntries(['cluster.local'], h.hashKey))
      h.dp.maps.clusterDomains.set(e.hash, { ports: [], name: e.name });
    const enforcer = h.dp.programs!.enforcer;
    const query = (name: string) =>
      buildFrame({
        src: h.podV4,
        dst: h.resolver,
        proto: 'udp',
        sport: 40000,
        dport: 53,
        payload: dnsPacket.encode({
          type: 'query',
          id: 7,
          flags: dnsPacket.RECURSION_DESIRED,
          questions: [{ type: 'A', name, class: 'IN' }],
        }),
      });
    const frames = {
      exact: query('api.stripe.test'),
      wildcard: query('cdn.eu.kadath.test'),
      clusterDomain: query('api.stripe.test.shop.svc.cluster.local'),
    };
    const setFilter = (on: boolean) =>
      h.dp.maps.endpoints.set(1, {
        identity: h.identity,
        flags: EndpointFlag.enforce | (on ? 0 : EndpointFlag.dnsFilterOff),
      });
    const repeated = (frame: Buffer) =>
      median(Array.from({ length: ROUNDS }, () => native.progTestRun(enforcer, frame, { repeat: REPEAT }).durationNs));
    const single = (frame: Buffer) =>
      median(Array.from({ length: SINGLE_RUNS }, () => native.progTestRun(enforcer, frame).durationNs));
    const allowed: Record<string, { filterOffNs: number; filterOnNs: number; addedNs: number; verdict: string }> = {};
    for (const [name, frame] of Object.entries(frames)) {
      setFilter(false);
      const off = repeated(frame);
      setFilter(true);
      const on = repeated(frame);
      const verdict = (native.progTestRun(enforcer, frame).retval | 0) === -1 ? 'pass' : 'refused';
      allowed[name] = { filterOffNs: off, filterOnNs: on, addedNs: on - off, verdict };
    }
    // One run at a time, both sides measured alike.
    const refusedFrame = query('c2VjcmV0LWRhdGEtMDEyMzQ1Njc4OQ.exfil.attacker.example');
    setFilter(false);
    const passedSingle = single(refusedFrame);
    setFilter(true);
    const refusedSingle = single(refusedFrame);
    const refusedVerdict = native.progTestRun(enforcer, refusedFrame).retval | 0;
    return {
      bench: 'dns-query-filter-kernel',
      tool: `BPF_PROG_TEST_RUN of the enforcer, median of ${ROUNDS} rounds of ${REPEAT} runs (refused: median of ${SINGLE_RUNS} single runs)`,
      baseline: { what: 'the same query with the filter off (pass and record, as before the filter)' },
      allowed,
      refused: {
        filterOffNs: passedSingle,
        filterOnNs: refusedSingle,
        verdict: refusedVerdict === 7 ? 'nxdomain-redirect' : `tc-action-${refusedVerdict}`,
      },
    };
  } finally {
    h.close();
  }
}

function dnsperf(box: AgentBox, queryFile: string): Promise<DnsperfRun> {
  return runDnsperf(box, 'client', queryFile, SECONDS, QPS);
}

type Phase = 'filterOn' | 'filterOff' | 'refused' | 'resolverNxdomain';

async function latency(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-bench-dnsq-'));
  let result: Record<string, unknown> = {};
  try {
    const hosts = raceHostsFile(dir, PREFIX, NAMES);
    const files: Record<Phase, string> = { filterOn: '', filterOff: '', refused: '', resolverNxdomain: '' };
    const write = (name: string, lines: string[]) => {
      const f = join(dir, name);
      writeFileSync(f, `${lines.join('\n')}\n`);
      return f;
    };
    files.filterOn = files.filterOff = write(
      'allowed.txt',
      Array.from({ length: NAMES }, (_, i) => `n${i}.${PREFIX}.${RACE_SUFFIX} A`),
    );
    files.refused = write(
      'refused.txt',
      Array.from(
        { length: NAMES },
        (_, i) => `${randomBytes(12).toString('hex')}${i}.attacker.example ${i % 2 ? 'TXT' : 'A'}`,
      ),
    );
    files.resolverNxdomain = write(
      'nx.txt',
      Array.from({ length: NAMES }, (_, i) => `x${i}.nx.${RACE_SUFFIX} A`),
    );
    const dnsmasqArgs = [
      `--addn-hosts=${hosts}`,
      `--local=/nx.${RACE_SUFFIX}/`,
      '--address=/attacker.example/198.51.100.10',
    ];
    await withAgentBox(undefined, [{ name: 'client' }], { dnsmasqArgs, prefix: 'fqeb' }, async (box) => {
      const pod = box.topo.pod('client');
      const setFilter = async (mode: 'on' | 'off') => {
        box.writePods([{ name: 'client', allow: `*.${RACE_SUFFIX}`, dnsFilter: mode }]);
        const want = mode === 'off' ? EndpointFlag.dnsFilterOff : 0;
        await box.waitFor(`the filter ${mode}`, () =>
          box.maps(
            (dp) =>
              ((dp.maps.endpoints.get(pod.ifindex)?.flags ?? -1) & EndpointFlag.dnsFilterOff) === want &&
              dp.maps.endpoints.get(pod.ifindex) !== undefined,
          ),
        );
      };
      box.writePods([{ name: 'client', allow: `*.${RACE_SUFFIX}` }]);
      await box.startAgent(['--log-level', 'info']);
      const runs: Record<Phase, DnsperfRun[]> = { filterOn: [], filterOff: [], refused: [], resolverNxdomain: [] };
      for (let round = 0; round < LATENCY_ROUNDS; round++) {
        const phases: Phase[] = ['filterOn', 'filterOff', 'refused', 'resolverNxdomain'];
        for (let i = 0; i < round % phases.length; i++) phases.push(phases.shift()!);
        for (const phase of phases) {
          await setFilter(phase === 'filterOff' ? 'off' : 'on');
          runs[phase].push(await dnsperf(box, files[phase]));
        }
      }
      await box.stopAgent();
      const summary = (phase: Phase) => {
        const all = runs[phase].flatMap((r) => r.latenciesUs).sort((a, b) => a - b);
        const rcodes: Record<string, number> = {};
        for (const r of runs[phase]) for (const [k, v] of Object.entries(r.rcodes)) rcodes[k] = (rcodes[k] ?? 0) + v;
        return {
          queries: all.length,
          lost: runs[phase].reduce((s, r) => s + r.lost, 0),
          p50Us: Math.round(quantile(all, 0.5)),
          p99Us: Math.round(quantile(all, 0.99)),
          rcodes,
        };
      };
      const off = summary('filterOff');
      const on = summary('filterOn');
      const nx = summary('resolverNxdomain');
      const refused = summary('refused');
      result = {
        bench: 'dns-query-filter-latency',
        tool: `dnsperf -v in the pod -> dnsmasq outside, real agent running, ${QPS} q/s for ${SECONDS} s per phase, ${LATENCY_ROUNDS} round(s), phases alternated`,
        baseline: { what: 'allowed names, the filter off (fqdn-egress.io/dns-filter: off)', ...off },
        filterOn: {
          ...on,
          p50Ratio: Number((on.p50Us / off.p50Us).toFixed(3)),
          p99Ratio: Number((on.p99Us / off.p99Us).toFixed(3)),
        },
        refusedByKernel: { what: 'NXDOMAIN from the kernel (tunnelling-style names, A and TXT)', ...refused },
        resolverNxdomain: { what: "the resolver's own NXDOMAIN for allowed names it does not have", ...nx },
        nxdomainRatio: Number((refused.p50Us / nx.p50Us).toFixed(3)),
        goal: 'filterOn p50 and p99 ratios <= 1.02',
        met: on.p50Us / off.p50Us <= 1.02 && on.p99Us / off.p99Us <= 1.02,
      };
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return result;
}

async function main(): Promise<void> {
  process.stdout.write(`${JSON.stringify(kernelCost())}\n`);
  process.stdout.write(`${JSON.stringify(await latency())}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`dns-query-filter bench failed: ${err.stack}\n`);
  process.exit(1);
});
