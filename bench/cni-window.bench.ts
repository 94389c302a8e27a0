/*
 * The fail-open window at a pod's start: from the pod's interface being up
 * (the first packet that can leave it) to its first packet being enforced,
 * with and without the CNI plugin (build/fqdn-egress-cni, chained after
 * Debian's ptp + host-local as a runtime runs a conflist), with the agent
 * running and stopped. A probe in the pod (test/helpers/window-probe.ts),
 * started before the interface exists, sends a UDP packet every millisecond
 * to an address the pod may not reach; a sink there records what arrived;
 * the window ends with the last packet that passed. Also counted: packets that passed after ADD returned (the
 * runtime starts the pod's containers only then: what an application could
 * send unenforced). Baseline: without the plugin, in the same run. With the
 * agent stopped and no plugin nothing ever enforces the pod: reported as not
 * enforced within the cap. Bounded: CAP_MS per probe. One JSON line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withAgentBox, ZONE, type AgentBox } from '../test/helpers/agent-fixture.js';
import { chainAdd, chainDel, type ChainOptions } from '../test/helpers/cni.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const REPEAT = SMOKE ? 1 : 5;
const CAP_MS = SMOKE ? 1500 : 3000;
const PROBE = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'helpers', 'window-probe.js');
const BLOCKED = ZONE['blocked.test']![0]!;
const SINK_PORT = 5999; // not a port of the outside servers

interface Window {
  /** ms from the first packet out to the last that passed; null: none passed */
  windowMs: number | null;
  /** the last packet passed within CAP_MS of the end: never enforced within the cap */
  notEnforcedWithinCap: boolean;
  passedAfterAdd: number;
}

let next = 0;

/** what the sink saw: send times by probe id */
const arrived = new Map<number, bigint[]>();

async function measure(box: AgentBox, dataDir: string, withPlugin: boolean, listed: boolean): Promise<Window> {
  const n = next++;
  const name = `w${n}`;
  const ip = `198.19.42.${100 + n}`;
  const opts: ChainOptions = { ip, dataDir, pinDir: box.topo.pinDir, withoutPlugin: !withPlugin };
  if (listed) {
    await listPods(box, [...listedPods, { name, ip }]);
    await box.waitFor(`the decision for ${name}`, () =>
      box.maps((dp) => dp.maps.podDecisions.get({ namespace: 'shop', name }) !== undefined),
    );
  }
  const netns = await box.topo.addBarePodNs(name);
  const probe = await box.topo.spawnReady(
    netns,
    [
      process.execPath,
      PROBE,
      'send',
      '--id',
      String(n),
      '--to',
      BLOCKED,
      '--port',
      String(SINK_PORT),
      '--cap-ms',
      String(CAP_MS),
      '--max-ms',
      String(CAP_MS + 20_000),
    ],
    /ready/,
  );
  let out = '';
  probe.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => probe.once('exit', () => resolve()));
  // the runtime's ADD, in the pod namespace the probe already runs in
  const { pod } = await chainAdd(box.topo, 'shop', name, { ...opts, netnsName: netns });
  const addedNs = process.hrtime.bigint();
  await exited;
  const r = JSON.parse(out.trim().split('\n').pop()!) as { firstSentNs: string | null };
  await new Promise((resolve) => setTimeout(resolve, 200)); // the sink's last lines
  const passed = arrived.get(n) ?? [];
  await chainDel(box.topo, pod, opts);
  if (r.firstSentNs === null) throw new Error(`${name}: the probe never got a packet out`);
  const first = BigInt(r.firstSentNs);
  const last = passed.length ? passed.reduce((a, b) => (a > b ? a : b)) : null;
  return {
    windowMs: last === null ? null : Number(last - first) / 1e6,
    notEnforcedWithinCap: last !== null && Number(last - first) / 1e6 > CAP_MS - 100,
    passedAfterAdd: passed.filter((s) => s > addedNs).length,
  };
}

const listedPods: Array<{ name: string; ip: string }> = [];

async function listPods(box: AgentBox, pods: Array<{ name: string; ip: string }>): Promise<void> {
  listedPods.splice(0, listedPods.length, ...pods);
  const lines = ['pods:'];
  for (const p of pods)
    lines.push(
      '  - namespace: shop',
      `    name: ${p.name}`,
      `    ips: [${p.ip}]`,
      '    annotations:',
      '      fqdn-egress.io/allow: "api.stripe.test"',
    );
  box.writeRaw(`${lines.join('\n')}\n`);
}

function summary(ws: Window[]) {
  const windows = ws.map((w) => (w.windowMs === null ? 0 : w.windowMs)).sort((a, b) => a - b);
  const capped = ws.filter((w) => w.notEnforcedWithinCap).length;
  return {
    runs: ws.length,
    medianWindowMs: capped === ws.length ? null : Math.round(windows[Math.floor(windows.length / 2)]! * 10) / 10,
    maxWindowMs: capped === ws.length ? null : Math.round(windows[windows.length - 1]! * 10) / 10,
    notEnforcedWithinCap: capped,
    passedAfterAdd: ws.map((w) => w.passedAfterAdd),
  };
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'fqe-cni-bench-'));
  let result: Record<string, unknown> | undefined;
  try {
    await withAgentBox(undefined, [], { agentArgs: ['--log-level', 'info'], prefix: 'fqeb' }, async (box) => {
      const sink = await box.topo.spawnReady(
        box.topo.outNs,
        [process.execPath, PROBE, 'sink', '--bind', BLOCKED, '--port', String(SINK_PORT)],
        /ready/,
      );
      let buf = '';
      sink.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) {
          const m = /^p (\d+) (\d+)$/.exec(l);
          if (!m) continue;
          const list = arrived.get(Number(m[1])) ?? [];
          list.push(BigInt(m[2]!));
          arrived.set(Number(m[1]), list);
        }
      });
      await box.startAgent();
      const running = { without: [] as Window[], with: [] as Window[] };
      for (let i = 0; i < REPEAT; i++) {
        running.without.push(await measure(box, dataDir, false, true));
        running.with.push(await measure(box, dataDir, true, true));
      }
      await box.stopAgent();
      const stopped = { without: [await measure(box, dataDir, false, false)], with: [] as Window[] };
      for (let i = 0; i < REPEAT; i++) stopped.with.push(await measure(box, dataDir, true, false));
      result = {
        bench: 'cni-window',
        what: `ms from the pod's interface up (its first packet out) to its last packet that passed, probing every 1 ms a UDP destination it may not reach; cap ${CAP_MS} ms; passedAfterAdd: packets that passed after the CNI ADD returned`,
        agentRunning: {
          baseline: { what: 'ptp + host-local only', ...summary(running.without) },
          withPlugin: summary(running.with),
        },
        agentStopped: {
          baseline: { what: 'ptp + host-local only: nothing enforces the pod', ...summary(stopped.without) },
          withPlugin: { what: 'pending, --unknown-pods closed', ...summary(stopped.with) },
        },
      };
    });
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result));
}

await main();
