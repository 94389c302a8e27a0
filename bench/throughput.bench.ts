/*
 * TCP throughput through a pod's veth, with iperf3 (server in the outside
 * namespace, client in the pod): the enforcer and learner attached, the pod
 * enforced and allowed (allow entry written straight into the map, as the
 * kernel tests do), against the same veth with our programs detached, in the
 * same run. The two alternate for a few rounds; medians and their ratio are
 * reported (goal: ratio >= 0.97). Before measuring, a probe to a name that
 * is not allowed checks that enforcement is really on.
 * Prints one JSON line. BENCH_SMOKE=1: 2 s runs, 1 round.
 * Everything lives in a node-in-a-box torn down at the end, also on failure.
 */
import { Datapath } from '../agent/datapath/datapath.js';
import { withTopology, OUTSIDE_HOSTS_V4, type Topology } from '../test/helpers/topology.js';
import { makeBox } from '../test/helpers/datapath-fixture.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const SECONDS = SMOKE ? 2 : 5;
const ROUNDS = SMOKE ? 1 : 6;
const IDENTITY = 7;
const SERVER = OUTSIDE_HOSTS_V4[0]!; // 203.0.113.10
const DENIED = OUTSIDE_HOSTS_V4[3]!; // 198.51.100.10: never allowed here
const PORT = 5201;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

interface IperfRun {
  gbps: number;
  retransmits: number;
}

async function iperf(topo: Topology, netns: string): Promise<IperfRun> {
  // -t bounds the run; the exec timeout bounds everything else.
  const { stdout } = await topo.exec(
    netns,
    ['iperf3', '-c', SERVER, '-p', String(PORT), '-t', String(SECONDS), '-O', '1', '-J'],
    (SECONDS + 20) * 1000,
  );
  const r = JSON.parse(stdout) as {
    error?: string;
    end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } };
  };
  if (r.error || !r.end?.sum_received) throw new Error(`iperf3: ${r.error ?? 'no result'}`);
  return { gbps: r.end.sum_received.bits_per_second / 1e9, retransmits: r.end.sum_sent?.retransmits ?? 0 };
}

async function main(): Promise<void> {
  let result: Record<string, unknown> | undefined;
  await withTopology(
    undefined,
    [{ name: 'client' }],
    async (topo) => {
      const dp = Datapath.load(topo.pinDir);
      try {
        const box = makeBox(topo, dp);
        const pod = topo.pod('client');
        await topo.startOutsideServers();
        await topo.spawnReady(
          topo.outNs,
          ['iperf3', '-s', '-B', SERVER, '-p', String(PORT), '--forceflush'],
          /Server listening/,
        );
        box.enforce('client', IDENTITY);
        box.allow(IDENTITY, `${SERVER}/32`);
        const attachOpts = { netns: topo.nodeNsPath };
        // Enforcement is really on: a destination without an allow entry is dropped.
        const denied = await topo.probe('client', 'tcp', DENIED, 80, 800);
        if (denied.ok) throw new Error(`enforcement is off: ${DENIED}:80 was reachable from an enforced pod`);

        const enforced: IperfRun[] = [];
        const baseline: IperfRun[] = [];
        let passedBefore = 0n;
        let passedAfter = 0n;
        for (let round = 0; round < ROUNDS; round++) {
          // Alternate which goes first, so a drift of the machine hits both alike.
          const order = round % 2 === 0 ? (['enforced', 'baseline'] as const) : (['baseline', 'enforced'] as const);
          for (const which of order) {
            if (which === 'enforced') {
              if (dp.attached(pod.ifindex, 'ingress', attachOpts) === null) dp.attach(pod.ifindex, attachOpts);
              passedBefore = dp.maps.counters.get(IDENTITY)?.passed ?? 0n;
              enforced.push(await iperf(topo, pod.netns));
              passedAfter = dp.maps.counters.get(IDENTITY)?.passed ?? 0n;
              if (passedAfter <= passedBefore)
                throw new Error('the enforcer passed no packet during the enforced run: not on the path');
            } else {
              dp.detach(pod.ifindex, attachOpts);
              if (dp.attached(pod.ifindex, 'ingress', attachOpts) !== null)
                throw new Error('detach left our filter in place');
              baseline.push(await iperf(topo, pod.netns));
            }
          }
        }
        dp.detach(pod.ifindex, attachOpts);
        const enforcedGbps = median(enforced.map((r) => r.gbps));
        const baselineGbps = median(baseline.map((r) => r.gbps));
        const ratio = enforcedGbps / baselineGbps;
        // Each round's two runs ran back to back: their ratio is less exposed to drift.
        const pairedRatios = enforced.map((r, i) => r.gbps / baseline[i]!.gbps);
        result = {
          bench: 'throughput',
          tool: 'iperf3 TCP, 1 stream, pod -> outside through the pod veth and the node',
          seconds: SECONDS,
          rounds: ROUNDS,
          enforced: {
            medianGbps: round3(enforcedGbps),
            runsGbps: enforced.map((r) => round3(r.gbps)),
            retransmits: enforced.map((r) => r.retransmits),
            enforcerPassedLastRun: Number(passedAfter - passedBefore),
          },
          baseline: {
            what: 'same veth, our tc programs detached',
            medianGbps: round3(baselineGbps),
            runsGbps: baseline.map((r) => round3(r.gbps)),
            retransmits: baseline.map((r) => r.retransmits),
          },
          ratio: round3(ratio),
          pairedRatios: pairedRatios.map(round3),
          medianPairedRatio: round3(median(pairedRatios)),
          goal: 'ratio >= 0.97',
          met: ratio >= 0.97,
        };
      } finally {
        dp.close();
      }
    },
    { prefix: 'fqeb' },
  );
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function round3(x: number): number {
  return Number(x.toFixed(3));
}

main().catch((err: Error) => {
  process.stderr.write(`throughput bench failed: ${err.stack}\n`);
  process.exit(1);
});
