/*
 * DNS latency as a pod sees it, with dnsperf (in the pod) against dnsmasq
 * (outside), in three set-ups measured in the same run and alternated:
 *   baseline  pod not enforced, our programs detached, no agent
 *   inline    the real agent with the inline learner (default)
 *   userspace the real agent with --inline-learner false
 *   kernelOnly (a diagnostic) programs attached and the inline learner on,
 *             agent stopped: what the kernel path alone costs
 * Every name queried is allowed by the pod's annotation (*.race.test), so
 * both learners do their full work on every answer. Latencies come from
 * dnsperf -v (one line per query, µs resolution): p50, p99, mean, and the
 * ratios of p50 and p99 to the baseline. Goals with the agent running (the
 * inline learner, the default): p50 ratio <= 1.10, p99 ratio <= 1.5, and
 * the agent's CPU (utime + stime from /proc/PID/stat over the phase) at
 * most 5% of one core while the pod resolves 1,000 names/s.
 * Bounded: a fixed query rate (-Q) for a fixed time (-l) per phase.
 * Prints one JSON line. BENCH_SMOKE=1: one round of 3 s phases.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withAgentBox, type AgentBox } from '../test/helpers/agent-fixture.js';
import { raceHostsFile, RACE_SUFFIX } from '../test/helpers/race.js';
import { dnsperf as runDnsperf, quantile, type DnsperfRun } from '../test/helpers/dnsperf.js';
import { cpuSeconds } from '../test/helpers/proc.js';
import { attachedProgram, detachPrograms } from '../agent/datapath/attach.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const SECONDS = SMOKE ? 3 : 10;
const ROUNDS = SMOKE ? 1 : 3;
const QPS = 1000;
const NAMES = 500;
const PREFIX = 'lat';

type Phase = 'baseline' | 'inline' | 'userspace' | 'kernelOnly';

function dnsperf(box: AgentBox, queryFile: string): Promise<DnsperfRun> {
  return runDnsperf(box, 'client', queryFile, SECONDS, QPS);
}

function summarize(runs: DnsperfRun[]): {
  queries: number;
  lost: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  rcodes: Record<string, number>;
} {
  const all = runs.flatMap((r) => r.latenciesUs).sort((a, b) => a - b);
  const rcodes: Record<string, number> = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.rcodes)) rcodes[k] = (rcodes[k] ?? 0) + v;
  return {
    queries: runs.reduce((s, r) => s + r.sent, 0),
    lost: runs.reduce((s, r) => s + r.lost, 0),
    p50Us: Math.round(quantile(all, 0.5)),
    p99Us: Math.round(quantile(all, 0.99)),
    meanUs: Math.round(all.reduce((s, x) => s + x, 0) / all.length),
    rcodes,
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-bench-dns-'));
  let result: Record<string, unknown> | undefined;
  try {
    const hosts = raceHostsFile(dir, PREFIX, NAMES);
    const queryFile = join(dir, 'queries.txt');
    writeFileSync(
      queryFile,
      Array.from({ length: NAMES }, (_, i) => `n${i}.${PREFIX}.${RACE_SUFFIX} A`).join('\n') + '\n',
    );
    await withAgentBox(
      undefined,
      [{ name: 'client' }],
      { dnsmasqArgs: [`--addn-hosts=${hosts}`], prefix: 'fqeb' },
      async (box) => {
        box.writePods([{ name: 'client', allow: `*.${RACE_SUFFIX}` }]);
        const pod = box.topo.pod('client');
        // Our tcx links or legacy filters (works before the agent ever pinned anything).
        const target = { netns: box.topo.nodeNsPath };
        const attached = () => attachedProgram(box.topo.pinDir, pod.ifindex, 'ingress', target) !== null;
        const runs: Record<Phase, DnsperfRun[]> = { baseline: [], inline: [], userspace: [], kernelOnly: [] };
        const learned = { inline: 0, userspace: 0 };
        const cpu = { inline: [] as number[], userspace: [] as number[] };
        for (let round = 0; round < ROUNDS; round++) {
          const phases: Phase[] = ['baseline', 'inline', 'userspace', 'kernelOnly'];
          // Rotate the order per round so drift does not favour one phase.
          for (let i = 0; i < round % phases.length; i++) phases.push(phases.shift()!);
          for (const phase of phases) {
            if (phase === 'baseline') {
              await box.stopAgent();
              // Not enforced: take our filters off the pod's veth (the agent re-attaches on start).
              detachPrograms(box.topo.pinDir, pod.ifindex, target);
              if (attached()) throw new Error('baseline: our filter is still attached');
              runs.baseline.push(await dnsperf(box, queryFile));
              continue;
            }
            if (phase === 'kernelOnly') {
              // The agent attaches with the inline learner, then goes away; the pins keep working.
              await box.stopAgent();
              await box.startAgent(['--log-level', 'info']);
              await box.stopAgent('SIGKILL');
              if (!attached()) throw new Error('kernelOnly: our filter is not attached');
              runs.kernelOnly.push(await dnsperf(box, queryFile));
              continue;
            }
            await box.stopAgent();
            await box.startAgent([
              '--log-level',
              'info',
              ...(phase === 'userspace' ? ['--inline-learner', 'false'] : []),
            ]);
            if (!attached()) throw new Error(`${phase}: the agent did not attach to the pod`);
            // The inline learner's answers reach the agent as records; the userspace learner's through the tap.
            const [metric, labels] =
              phase === 'inline'
                ? (['fqdn_egress_kernel_records_total', { outcome: 'accepted' }] as const)
                : (['fqdn_egress_dns_messages_total', { verdict: 'accepted' }] as const);
            const before = await box.metric(metric, labels);
            const pid = box.agent!.pid!;
            const cpu0 = cpuSeconds(pid);
            const t0 = process.hrtime.bigint();
            runs[phase].push(await dnsperf(box, queryFile));
            cpu[phase].push((cpuSeconds(pid) - cpu0) / (Number(process.hrtime.bigint() - t0) / 1e9));
            learned[phase] += (await box.metric(metric, labels)) - before;
          }
        }
        await box.stopAgent();
        if (learned.inline === 0 || learned.userspace === 0)
          throw new Error(
            `the agent accepted no answer (inline ${learned.inline}, userspace ${learned.userspace}): not measuring what we meant`,
          );
        const base = summarize(runs.baseline);
        const ratios = (phase: Phase) => {
          const s = summarize(runs[phase]);
          return {
            ...s,
            p50Ratio: Number((s.p50Us / base.p50Us).toFixed(3)),
            p99Ratio: Number((s.p99Us / base.p99Us).toFixed(3)),
          };
        };
        const cpuPct = (xs: number[]) => Number(((xs.reduce((a, b) => a + b, 0) / xs.length) * 100).toFixed(2));
        const inline = {
          ...ratios('inline'),
          agentLearnedAnswers: learned.inline,
          agentCpuPctOfCore: cpuPct(cpu.inline),
        };
        const userspace = {
          ...ratios('userspace'),
          agentLearnedAnswers: learned.userspace,
          agentCpuPctOfCore: cpuPct(cpu.userspace),
        };
        result = {
          bench: 'dns-latency',
          tool: `dnsperf -v in the pod -> dnsmasq outside, ${QPS} q/s for ${SECONDS} s per phase, ${ROUNDS} round(s), ${NAMES} allowed names`,
          baseline: { what: 'pod not enforced, programs detached, no agent', ...base },
          inlineLearner: inline,
          userspaceOnly: userspace,
          kernelOnly: {
            what: 'programs attached, inline learner on, agent stopped (diagnostic)',
            ...ratios('kernelOnly'),
          },
          goal: 'agent running (inline learner): p50 ratio <= 1.10, p99 ratio <= 1.5, agent CPU <= 5% of one core (stretch: ratios <= 1.02)',
          met: inline.p50Ratio <= 1.1 && inline.p99Ratio <= 1.5 && inline.agentCpuPctOfCore <= 5,
        };
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`dns-latency bench failed: ${err.stack}\n`);
  process.exit(1);
});
