/*
 * A hostile pod floods port 53 (test/fixtures/dns-flood.c, raw sockets in
 * the pod): junk UDP to its resolver, the same from a spoofed source, fake
 * TCP segments with a lying length prefix, and "answers" from port 53, at
 * 50,000 frames/s for 10 s. The real agent (inline learner on) runs in the
 * node-in-a-box throughout. Two phases in the same run, same length:
 *   quiet   the flooder pod enforced and idle (the baseline)
 *   flood   the flood running
 * The flood runs twice (a second flood must not grow the agent's RSS).
 * In each phase a new pod is added to the endpoints file 3 s in, and the time
 * until the kernel enforces it (its interface in fqe_endpoints) is measured.
 * Measured per phase: the agent's CPU (utime + stime from /proc/PID/stat,
 * % of one core), its RSS (VmRSS) at the start and 3 s after the end, the new pod's time
 * to enforcement. Goals: the flood moves the agent's CPU by < 5% of a core,
 * the new pod is enforced within 1 s, RSS flat.
 * Bounded: the flooder stops after SECONDS (at most 1,000,000 frames); all
 * traffic stays in the box's namespaces. Prints one JSON line.
 * BENCH_SMOKE=1: 3 s phases at 10,000 frames/s.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withAgentBox, type AgentBox } from '../test/helpers/agent-fixture.js';
import { SILENT_RESOLVER, sleep } from '../test/helpers/topology.js';
import { cpuSeconds, rssMiB } from '../test/helpers/proc.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const SECONDS = SMOKE ? 3 : 10;
const RATE = SMOKE ? 10_000 : 50_000;
const ADD_POD_AT_MS = SMOKE ? 1000 : 3000;
const SPOOFED = '198.18.1.250';
const SETTLE_MS = 3000;
const SOURCE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'dns-flood.c');
interface PhaseResult {
  agentCpuPctOfCore: number;
  rssStartMiB: number;
  rssEndMiB: number;
  newPodEnforcedMs: number;
  framesSent?: number;
}

/** ms from writing the file until the kernel enforces the pod's interface. */
async function addPod(box: AgentBox, pods: string[], name: string): Promise<number> {
  const ifindex = box.topo.pod(name).ifindex;
  const t0 = Date.now();
  box.writePods(pods.map((p) => ({ name: p, allow: 'api.stripe.test' })));
  for (;;) {
    if (box.maps((dp) => dp.maps.endpoints.get(ifindex) !== undefined)) return Date.now() - t0;
    if (Date.now() - t0 > 10_000) throw new Error(`${name} was not enforced within 10 s`);
    await sleep(10);
  }
}

async function phase(box: AgentBox, pods: string[], late: string, flood: string | undefined): Promise<PhaseResult> {
  const pid = box.agent!.pid!;
  const rssStart = rssMiB(pid);
  const cpu0 = cpuSeconds(pid);
  const t0 = process.hrtime.bigint();
  const flooding = flood
    ? box.topo.exec(
        box.topo.pod('flooder').netns,
        [flood, box.topo.pod('flooder').v4, SPOOFED, SILENT_RESOLVER, String(RATE), String(SECONDS)],
        (SECONDS + 30) * 1000,
      )
    : sleep(SECONDS * 1000).then(() => ({ stdout: '' }));
  await sleep(ADD_POD_AT_MS);
  const enforcedMs = await addPod(box, pods, late);
  const out = await flooding;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpuPct = Number((((cpuSeconds(pid) - cpu0) / secs) * 100).toFixed(2));
  await sleep(SETTLE_MS); // RSS once the runtime has had its chance to collect
  const result: PhaseResult = {
    agentCpuPctOfCore: cpuPct,
    rssStartMiB: rssStart,
    rssEndMiB: rssMiB(pid),
    newPodEnforcedMs: enforcedMs,
  };
  if (flood) result.framesSent = (JSON.parse(out.stdout.trim()) as { sent: number }).sent;
  return result;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-flood-'));
  let result: Record<string, unknown> | undefined;
  try {
    const flooder = join(dir, 'dns-flood');
    execFileSync('cc', ['-O2', '-Wall', '-o', flooder, SOURCE]);
    await withAgentBox(
      undefined,
      [{ name: 'flooder' }, { name: 'quiet1' }, { name: 'late2' }, { name: 'late3' }],
      { prefix: 'fqeb' },
      async (box) => {
        box.writePods([{ name: 'flooder', allow: 'api.stripe.test' }]);
        await box.startAgent(['--log-level', 'info']);
        await sleep(1000); // past start-up
        const quiet = await phase(box, ['flooder', 'quiet1'], 'quiet1', undefined);
        const flood = await phase(box, ['flooder', 'quiet1', 'late2'], 'late2', flooder);
        // Again, with a third pod: the first flood settles the runtime's heap and
        // allocator; a second must not grow the agent further.
        const again = await phase(box, ['flooder', 'quiet1', 'late2', 'late3'], 'late3', flooder);
        const tapped =
          (await box.metric('fqdn_egress_dns_messages_total', { verdict: 'rejected-frame' })) +
          (await box.metric('fqdn_egress_dns_messages_total', { verdict: 'rejected-malformed' }));
        const cpuDelta = Number((flood.agentCpuPctOfCore - quiet.agentCpuPctOfCore).toFixed(2));
        result = {
          bench: 'flood',
          load: `${RATE} port-53 frames/s for ${SECONDS} s from one enforced pod (junk UDP, spoofed UDP, fake TCP, fake answers)`,
          baseline: { what: 'the quiet phase: same agent, flooder enforced and idle', ...quiet },
          flood,
          floodAgain: again,
          agentCpuDeltaPctOfCore: cpuDelta,
          rssGrowthFirstFloodMiB: Number((flood.rssEndMiB - flood.rssStartMiB).toFixed(1)),
          rssGrowthSecondFloodMiB: Number((again.rssEndMiB - again.rssStartMiB).toFixed(1)),
          framesTheAgentParsed: tapped,
          goal: 'CPU delta < 5% of a core, new pod enforced within 1 s during the flood, RSS flat (a second flood grows it by at most 2 MiB)',
          met:
            cpuDelta < 5 &&
            Math.max(flood.newPodEnforcedMs, again.newPodEnforcedMs) <= 1000 &&
            again.rssEndMiB - again.rssStartMiB <= 2,
        };
        await box.stopAgent();
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`flood bench failed: ${err.stack}\n`);
  process.exit(1);
});
