/*
 * An agent restart under load. 200 concurrent clients (one process in the
 * pod, test/helpers/dns-connect-load.ts) resolve allowed names and connect
 * at once, in a loop, to ~500 distinct outside addresses; the agent runs
 * with --min-ttl 2s, so an allow entry that nobody refreshes runs out while
 * the agent is away and only the inline learner can keep the connections
 * going. In the run under test the agent is killed with SIGKILL a third of
 * the way in and started again at once; we count failed DNS queries, failed
 * and slow (retransmitted SYN) connections, the enforcer's own drops, and
 * the time from the restart to /readyz answering "ready". Baseline: the
 * same load for the same time with no restart, in the same run.
 * Goal: zero failures. Bounded: 20 s per run (BENCH_SMOKE=1: 6 s).
 * Prints one JSON line.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withAgentBox, type AgentBox } from '../test/helpers/agent-fixture.js';
import { raceAddresses } from '../test/helpers/race.js';
import { OUTSIDE_LINK_V4, sleep } from '../test/helpers/topology.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const SECONDS = SMOKE ? 6 : 20;
const CLIENTS = 200;
const PAUSE_MS = 200;
const ADDRESSES = 500;
const NAMES_PER_ADDRESS = 2;
const PORT = 80;
const LOAD = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'helpers', 'dns-connect-load.js');

interface LoadResult {
  clients: number;
  iterations: number;
  dnsOk: number;
  dnsFailed: number;
  connectOk: number;
  connectFailed: number;
  slowConnects: number;
  failures: Array<{ atMs: number; what: string }>;
}

function notAllowedDrops(box: AgentBox, identity: number): bigint {
  return box.maps((dp) => dp.maps.counters.get(identity)?.reasons['not-allowed'] ?? 0n);
}

function runLoad(box: AgentBox, namesFile: string): Promise<LoadResult> {
  return box.topo
    .exec(
      box.topo.pod('client').netns,
      [
        process.execPath,
        LOAD,
        '--resolver',
        OUTSIDE_LINK_V4.outside,
        '--names',
        namesFile,
        '--port',
        String(PORT),
        '--clients',
        String(CLIENTS),
        '--seconds',
        String(SECONDS),
        '--pause-ms',
        String(PAUSE_MS),
        '--timeout-ms',
        '2000',
      ],
      (SECONDS + 30) * 1000,
    )
    .then((r) => JSON.parse(r.stdout.trim().split('\n').pop()!) as LoadResult);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-bench-restart-'));
  let result: Record<string, unknown> | undefined;
  try {
    const addresses = raceAddresses(ADDRESSES);
    const hosts = join(dir, 'load.hosts');
    const namesFile = join(dir, 'names.txt');
    const names: string[] = [];
    const hostLines: string[] = [];
    addresses.forEach((ip, i) => {
      for (let k = 0; k < NAMES_PER_ADDRESS; k++) {
        const name = `c${i}-${k}.load.test`;
        names.push(name);
        hostLines.push(`${ip} ${name}`);
      }
    });
    writeFileSync(hosts, hostLines.join('\n') + '\n');
    writeFileSync(namesFile, names.join('\n') + '\n');
    await withAgentBox(
      undefined,
      [{ name: 'client' }],
      { dnsmasqArgs: [`--addn-hosts=${hosts}`], agentArgs: ['--log-level', 'info', '--min-ttl', '2s'], prefix: 'fqeb' },
      async (box) => {
        const { topo } = box;
        // Servers on every address the names point to (the echo servers listen on [::]).
        for (const ip of addresses) await topo.ip(topo.outNs, 'addr', 'add', `${ip}/32`, 'dev', 'eth0');
        box.writePods([{ name: 'client', allow: '*.load.test' }]);
        await box.startAgent();
        const identity = box.maps((dp) => dp.maps.pods.entries()[0]![0]);
        if (await box.connect('client', '203.0.113.10', PORT, 800))
          throw new Error('enforcement is off: an unresolved address was reachable');

        // Baseline: the same load, the agent left alone.
        let drops0 = notAllowedDrops(box, identity);
        const baseline = await runLoad(box, namesFile);
        const baselineDrops = Number(notAllowedDrops(box, identity) - drops0);

        // Under test: SIGKILL a third of the way in, restart at once.
        drops0 = notAllowedDrops(box, identity);
        const load = runLoad(box, namesFile);
        await sleep((SECONDS * 1000) / 3);
        const pidBefore = box.agent?.pid;
        await box.stopAgent('SIGKILL');
        const t0 = Date.now();
        await box.startAgent();
        const readyMs = Date.now() - t0;
        const restarted = await load;
        const restartDrops = Number(notAllowedDrops(box, identity) - drops0);
        const failures = (r: LoadResult) => r.dnsFailed + r.connectFailed + r.slowConnects;
        const summary = (r: LoadResult, drops: number) => ({
          iterations: r.iterations,
          dnsOk: r.dnsOk,
          dnsFailed: r.dnsFailed,
          connectOk: r.connectOk,
          connectFailed: r.connectFailed,
          slowConnects: r.slowConnects,
          enforcerNotAllowedDrops: drops,
          firstFailures: r.failures.slice(0, 5),
        });
        if (baseline.iterations === 0 || restarted.iterations === 0) throw new Error('the load made no iteration');
        result = {
          bench: 'restart',
          load: `${CLIENTS} concurrent resolve+connect loops (${PAUSE_MS} ms pause), ${names.length} allowed names on ${ADDRESSES} addresses, --min-ttl 2s, ${SECONDS} s per run`,
          baseline: { what: 'same load, same time, no restart', ...summary(baseline, baselineDrops) },
          restart: {
            what: `SIGKILL of the agent (pid ${pidBefore}) at ${Math.round(SECONDS / 3)} s, started again at once`,
            ...summary(restarted, restartDrops),
            restartToReadyMs: readyMs,
            readyNote: 'wall time of the agent start until /readyz says ready, polled with curl every ~50 ms',
          },
          goal: 'zero failed DNS queries, failed or slow connections and enforcer drops during the restart run',
          met: failures(restarted) === 0 && restartDrops === 0,
        };
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`restart bench failed: ${err.stack}\n`);
  process.exit(1);
});
