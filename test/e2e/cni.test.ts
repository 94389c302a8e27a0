/*
 * The chained CNI plugin (build/fqdn-egress-cni) in the node-in-a-box, run
 * after Debian's ptp + host-local exactly as a runtime runs a conflist
 * (helpers/cni.ts). First against the bare datapath (decisions written by
 * the test): what ADD writes and in which state, CHECK, DEL, bad input.
 * Then with the real agent: the pod's first packet, with the agent running
 * and stopped, under --unknown-pods closed and open, and the agent adopting
 * what the plugin wrote. Root only; CI=true fails instead of skipping.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { requireKernelTestEnv, OUTSIDE_LINK_V4, OUTSIDE_HOSTS_V4, type Topology } from '../helpers/topology.js';
import { withBox, type Box } from '../helpers/datapath-fixture.js';
import { withAgentBox, ZONE, type AgentBox } from '../helpers/agent-fixture.js';
import { RemoteApiServer } from '../helpers/remote-apiserver.js';
import {
  PLUGIN,
  CNI_BIN_DIR,
  chainAdd,
  chainDel,
  ptpAdd,
  runPlugin,
  podEnv,
  ourConf,
  type ChainOptions,
  type CniPod,
} from '../helpers/cni.js';
import { linkPin } from '../../agent/datapath/attach.js';
import { EndpointFlag, ConfigFlag, PENDING_FLAG, PENDING_IDENTITY_BASE } from '../../agent/datapath/maps/index.js';
import type { Datapath } from '../../agent/datapath/datapath.js';
import { parseIp, formatIp } from '../../agent/net/addr.js';

const TOOLS = ['nsenter', 'dig', join(CNI_BIN_DIR, 'ptp'), join(CNI_BIN_DIR, 'host-local'), PLUGIN];

const AGENT_TOOLS = [...TOOLS, 'dnsmasq', 'curl'];
const RESOLVER = OUTSIDE_LINK_V4.outside;
const BLOCKED = ZONE['blocked.test']![0]!;
const [HOST_A] = OUTSIDE_HOSTS_V4 as [string];

function withDataDir<T>(t: TestContext, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-cni-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

function chainOpts(topo: Topology, dataDir: string, n: number, extra: Partial<ChainOptions> = {}): ChainOptions {
  return { ip: `198.19.42.${10 + n}`, dataDir, pinDir: topo.pinDir, ...extra };
}

function ifindexOf(dp: Datapath, pod: CniPod): number {
  const entry = dp.maps.pods.entries().find(([, i]) => i.name === pod.name && i.ifname === pod.hostIf);
  return entry?.[1].ifindex ?? 0;
}

/** Everything ADD may write for a pod, as the test reads it back. */
function stateOf(dp: Datapath, topo: Topology, pod: CniPod) {
  const pods = dp.maps.pods.entries().filter(([, i]) => i.namespace === pod.namespace && i.name === pod.name);
  const ifindex = pods[0]?.[1].ifindex ?? 0;
  const identities = new Set(pods.map(([id]) => id));
  return {
    pods,
    endpoint: ifindex ? dp.maps.endpoints.get(ifindex) : undefined,
    owners: dp.maps.owners
      .entries()
      .filter(([k]) => identities.has(k.identity))
      .map(([k]) => formatIp(k.addr)),
    decision: dp.maps.podDecisions.get({ namespace: pod.namespace, name: pod.name }),
    links: ifindex ? (['ingress', 'egress'] as const).filter((d) => existsSync(linkPin(topo.pinDir, ifindex, d))) : [],
  };
}

function counts(dp: Datapath) {
  return {
    endpoints: dp.maps.endpoints.entries().length,
    owners: dp.maps.owners.entries().length,
    pods: dp.maps.pods.entries().length,
    decisions: dp.maps.podDecisions.entries().length,
  };
}

function publish(box: Box, pod: { namespace: string; name: string }, identity: number, flags: number): void {
  box.dp.maps.podDecisions.set(pod, { identity, flags, sinceNs: process.hrtime.bigint() });
  if (identity)
    box.dp.maps.pods.set(identity, { ifindex: 0, flags, ifname: '', namespace: pod.namespace, name: pod.name });
}

async function digFrom(topo: Topology, netns: string, name: string): Promise<string[]> {
  const r = await topo
    .exec(netns.replace('/var/run/netns/', ''), ['dig', `@${RESOLVER}`, '+short', '+time=2', '+tries=1', name])
    .catch((e: Error) => ({ stdout: `;; ${e.message}` }));
  return r.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith(';'));
}

function connectFrom(topo: Topology, pod: CniPod, host: string, port = 443, timeoutMs = 1500): Promise<boolean> {
  return topo.probeFrom(pod.netns.replace('/var/run/netns/', ''), 'tcp', host, port, timeoutMs).then((r) => r.ok);
}

async function withPluginBox(t: TestContext, fn: (box: Box, dataDir: string) => Promise<void>): Promise<void> {
  await withDataDir(t, (dataDir) =>
    withBox(t, [], async (box) => {
      box.trustResolver(RESOLVER);
      await box.topo.startDnsmasq(ZONE);
      await fn(box, dataDir);
    }),
  );
}

test('plugin: ADD of a pod the agent enforces writes owners, its interface, the links and the endpoint; CHECK passes; DEL takes it all back', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo, dp } = box;
    const opts = chainOpts(topo, dataDir, 1);
    const ref = { namespace: 'shop', name: 'payments' };
    publish(box, ref, 7, EndpointFlag.enforce);
    const { pod, ours } = await chainAdd(topo, ref.namespace, ref.name, opts);
    assert.deepEqual(ours!.json, pod.prevResult, 'ADD prints prevResult unchanged');
    const s = stateOf(dp, topo, pod);
    assert.equal(s.pods.length, 1);
    assert.equal(s.pods[0]![0], 7, 'the identity the agent allocated');
    assert.equal(s.pods[0]![1].ifname, pod.hostIf);
    assert.deepEqual(s.endpoint, { identity: 7, flags: EndpointFlag.enforce });
    assert.deepEqual(s.owners, [opts.ip]);
    assert.deepEqual(s.links.sort(), ['egress', 'ingress']);
    assert.equal(await connectFrom(topo, pod, HOST_A, 443, 700), false, 'enforced: no allow entry, dropped');

    const check = await runPlugin(topo, PLUGIN, podEnv(pod, 'CHECK'), ourConf(topo.pinDir, pod.prevResult));
    assert.equal(check.code, 0, `CHECK: ${check.stdout} ${check.stderr}`);

    const ifindex = ifindexOf(dp, pod);
    await chainDel(topo, pod, opts);
    assert.equal(dp.maps.endpoints.get(ifindex), undefined, 'endpoint gone');
    assert.equal(dp.maps.owners.get({ identity: 7, addr: parseIp(opts.ip) }), undefined, 'owner gone');
    assert.equal(existsSync(linkPin(topo.pinDir, ifindex, 'ingress')), false, 'link gone');
    assert.equal(existsSync(linkPin(topo.pinDir, ifindex, 'egress')), false, 'link gone');
    assert.ok(dp.maps.podDecisions.get(ref), "the agent's decision stays (the agent removes it with the pod)");
    const again = await runPlugin(topo, PLUGIN, podEnv(pod, 'DEL'), ourConf(topo.pinDir, pod.prevResult));
    assert.equal(again.code, 0, 'DEL again succeeds (idempotent)');
  });
});

test('plugin: a pod the agent decided not to enforce passes through; nothing is written', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo, dp } = box;
    publish(box, { namespace: 'shop', name: 'web' }, 0, 0);
    const before = counts(dp);
    const { pod, ours } = await chainAdd(topo, 'shop', 'web', chainOpts(topo, dataDir, 2));
    assert.deepEqual(ours!.json, pod.prevResult);
    assert.deepEqual(counts(dp), before);
    assert.equal(await connectFrom(topo, pod, HOST_A), true, 'not enforced: passes at once');
  });
});

test('plugin: no decision yet under closed: pending, DNS to the trusted resolver passes, nothing else; DEL removes the pending entries', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo, dp } = box;
    const opts = chainOpts(topo, dataDir, 3);
    const { pod } = await chainAdd(topo, 'shop', 'new', opts);
    const s = stateOf(dp, topo, pod);
    assert.equal(s.pods.length, 1);
    const [identity, info] = s.pods[0]!;
    assert.ok(identity >= PENDING_IDENTITY_BASE, `a pending identity (${identity})`);
    assert.equal(info.flags, EndpointFlag.enforce | EndpointFlag.dnsFilterOff | PENDING_FLAG);
    assert.equal(s.decision?.identity, identity);
    assert.equal(s.decision?.flags, PENDING_FLAG);
    assert.deepEqual(s.endpoint, { identity, flags: EndpointFlag.enforce | EndpointFlag.dnsFilterOff });
    assert.deepEqual(s.owners, [opts.ip]);
    assert.equal(await connectFrom(topo, pod, BLOCKED, 443, 700), false, 'pending: dropped');
    assert.deepEqual(await digFrom(topo, pod.netns, 'blocked.test'), [BLOCKED], 'DNS passes');
    assert.equal(await connectFrom(topo, pod, BLOCKED, 443, 700), false, 'an answer teaches a pending pod nothing');

    const check = await runPlugin(topo, PLUGIN, podEnv(pod, 'CHECK'), ourConf(topo.pinDir, pod.prevResult));
    assert.equal(check.code, 0, `CHECK: ${check.stdout} ${check.stderr}`);

    await chainDel(topo, pod, opts);
    const after = stateOf(dp, topo, pod);
    assert.deepEqual(after.pods, [], 'fqe_pods entry gone');
    assert.equal(after.decision, undefined, 'pending decision gone');
    assert.equal(dp.maps.owners.entries().filter(([k]) => k.identity === identity).length, 0, 'owners gone');
    assert.equal(dp.maps.endpoints.get(info.ifindex), undefined, 'endpoint gone');
    assert.equal(existsSync(linkPin(topo.pinDir, info.ifindex, 'ingress')), false);
  });
});

test('plugin: no decision yet under open: pending without an endpoint entry (the pod passes)', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo, dp } = box;
    const cfg = dp.maps.config.get(0)!;
    dp.maps.config.set(0, { ...cfg, flags: cfg.flags | ConfigFlag.unknownPodsOpen });
    const { pod } = await chainAdd(topo, 'shop', 'open', chainOpts(topo, dataDir, 4));
    const s = stateOf(dp, topo, pod);
    assert.equal(s.decision?.flags, PENDING_FLAG);
    assert.equal(s.endpoint, undefined);
    assert.equal(await connectFrom(topo, pod, HOST_A), true, 'open: passes until decided');
    const check = await runPlugin(topo, PLUGIN, podEnv(pod, 'CHECK'), ourConf(topo.pinDir, pod.prevResult));
    assert.equal(check.code, 0, `CHECK: ${check.stdout} ${check.stderr}`);
  });
});

test('plugin: bad input gives the CNI error result and leaves nothing behind', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo, dp } = box;
    const pod = { ...(await ptpAdd(topo, 'shop', 'bad', chainOpts(topo, dataDir, 5))) };
    const env = podEnv(pod, 'ADD');
    const before = counts(dp);
    const cases: Array<{ what: string; stdin: string; env?: typeof env; code: number; msg: RegExp }> = [
      { what: 'malformed JSON', stdin: '{"cniVersion":"1.0.0",', code: 6, msg: /decode/ },
      { what: 'not an object', stdin: '[1,2]', code: 6, msg: /not a JSON object/ },
      { what: 'a NUL byte', stdin: '{"cniVersion":"1.0.0"}\u0000', code: 6, msg: /decode/ },
      { what: 'trailing text', stdin: '{"cniVersion":"1.0.0"} x', code: 6, msg: /decode/ },
      { what: 'missing prevResult', stdin: ourConf(topo.pinDir), code: 7, msg: /prevResult/ },
      { what: 'unsupported version', stdin: ourConf(topo.pinDir, pod.prevResult, '0.3.1'), code: 1, msg: /0\.3\.1/ },
      {
        what: 'unknown interface',
        stdin: ourConf(topo.pinDir, {
          ...pod.prevResult,
          interfaces: [{ name: 'nosuchif0' }, { name: 'eth0', sandbox: pod.netns }],
        }),
        code: 7,
        msg: /nosuchif0.*not on this host/,
      },
      {
        what: 'no host-side interface',
        stdin: ourConf(topo.pinDir, { ...pod.prevResult, interfaces: [{ name: 'eth0', sandbox: pod.netns }] }),
        code: 7,
        msg: /no host-side interface/,
      },
      {
        what: 'missing CNI_NETNS',
        stdin: ourConf(topo.pinDir, pod.prevResult),
        env: { ...env, netns: undefined },
        code: 4,
        msg: /CNI_NETNS/,
      },
      { what: 'too big', stdin: `{"cniVersion":"1.0.0","x":"${'a'.repeat(1 << 20)}"}`, code: 6, msg: /larger/ },
      { what: 'too deep', stdin: `${'['.repeat(100)}${']'.repeat(100)}`, code: 6, msg: /nested deeper/ },
    ];
    for (const c of cases) {
      const r = await runPlugin(topo, PLUGIN, c.env ?? env, c.stdin);
      assert.notEqual(r.code, 0, `${c.what}: a non-zero exit`);
      assert.ok(r.json, `${c.what}: an error result on stdout: ${r.stdout}`);
      assert.equal(r.json.code, c.code, `${c.what}: code (${r.stdout})`);
      assert.match(String(r.json.msg) + String(r.json.details ?? ''), c.msg, c.what);
      assert.equal(typeof r.json.cniVersion, 'string', `${c.what}: cniVersion`);
      assert.deepEqual(counts(dp), before, `${c.what}: nothing written`);
    }
    const ifindex = Number(
      (await topo.ip(topo.nodeNs, '-j', 'link', 'show', 'dev', pod.hostIf)).stdout.match(/"ifindex":(\d+)/)![1],
    );
    assert.equal(existsSync(linkPin(topo.pinDir, ifindex, 'ingress')), false, 'nothing attached');
  });
});

test("plugin: VERSION lists the versions; without the agent's pins ADD passes the result through", async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo } = box;
    const v = await runPlugin(topo, PLUGIN, { command: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    assert.equal(v.code, 0);
    assert.deepEqual(v.json, { cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0', '1.1.0'] });
    const pod = await ptpAdd(topo, 'shop', 'nopins', chainOpts(topo, dataDir, 6));
    const missing = join(topo.pinDir, 'never-installed');
    const r = await runPlugin(topo, PLUGIN, podEnv(pod, 'ADD'), ourConf(missing, pod.prevResult));
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json, pod.prevResult);
    assert.match(r.stderr, /no agent pins .*passed through/);
    const env = { ...podEnv(pod, 'ADD'), extra: { FQDN_EGRESS_BPF_PIN_DIR: missing } };
    const viaEnv = await runPlugin(topo, PLUGIN, env, ourConf(topo.pinDir, pod.prevResult));
    assert.match(viaEnv.stderr, /never-installed/, 'FQDN_EGRESS_BPF_PIN_DIR overrides bpfPinDir');
    const del = await runPlugin(topo, PLUGIN, podEnv(pod, 'DEL'), ourConf(missing, pod.prevResult));
    assert.equal(del.code, 0, 'DEL without pins succeeds');
  });
});

test('plugin: where the agent attaches through legacy tc, so does the plugin (clsact + cls_bpf, our handle); DEL removes the filters', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo, dp } = box;
    const cfg = dp.maps.config.get(0)!;
    dp.maps.config.set(0, { ...cfg, flags: cfg.flags | ConfigFlag.statesWritten | ConfigFlag.attachLegacy });
    publish(box, { namespace: 'shop', name: 'legacy' }, 9, EndpointFlag.enforce);
    const opts = chainOpts(topo, dataDir, 7);
    const { pod } = await chainAdd(topo, 'shop', 'legacy', opts);
    const ifindex = ifindexOf(dp, pod);
    for (const direction of ['ingress', 'egress'] as const) {
      assert.equal(existsSync(linkPin(topo.pinDir, ifindex, direction)), false, 'no tcx link');
      assert.equal(dp.attached(ifindex, direction, { netns: topo.nodeNsPath }) !== null, true, `${direction} filter`);
    }
    assert.equal(await connectFrom(topo, pod, HOST_A, 443, 700), false, 'enforced through legacy tc');
    const check = await runPlugin(topo, PLUGIN, podEnv(pod, 'CHECK'), ourConf(topo.pinDir, pod.prevResult));
    assert.equal(check.code, 0, `CHECK: ${check.stdout} ${check.stderr}`);
    await runPlugin(topo, PLUGIN, podEnv(pod, 'DEL'), ourConf(topo.pinDir, pod.prevResult));
    for (const direction of ['ingress', 'egress'] as const)
      assert.equal(dp.attached(ifindex, direction, { netns: topo.nodeNsPath }), null, `${direction} filter gone`);
    const after = await runPlugin(topo, PLUGIN, podEnv(pod, 'CHECK'), ourConf(topo.pinDir, pod.prevResult));
    assert.equal(after.code, 1, 'CHECK fails once DEL took the endpoint away');
    assert.equal(after.json?.code, 999);
  });
});

test("plugin: after the bridge plugin, the pod's veth is enforced, not the bridge", async (t) => {
  if (!requireKernelTestEnv(t, [...TOOLS, join(CNI_BIN_DIR, 'bridge')])) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo, dp } = box;
    publish(box, { namespace: 'shop', name: 'bridged' }, 11, EndpointFlag.enforce);
    const o = { ...chainOpts(topo, dataDir, 0), ip: '198.19.43.10', main: 'bridge' as const };
    const { pod } = await chainAdd(topo, 'shop', 'bridged', o);
    const ifaces = (pod.prevResult.interfaces as Array<{ name: string; sandbox?: string }>).filter((i) => !i.sandbox);
    assert.deepEqual(
      ifaces.map((i) => i.name),
      ['fqecni0', pod.hostIf],
      'bridge reports the bridge and the veth',
    );
    const s = stateOf(dp, topo, pod);
    assert.equal(s.pods[0]?.[1].ifname, pod.hostIf, 'the veth');
    assert.deepEqual(s.endpoint, { identity: 11, flags: EndpointFlag.enforce });
    assert.equal(await connectFrom(topo, pod, HOST_A, 443, 700), false, 'enforced');
    await chainDel(topo, pod, o);
    assert.equal(dp.maps.endpoints.entries().length, 0);
  });
});

test('plugin: DEL without prevResult finds a pending pod by name and removes what ADD wrote', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo, dp } = box;
    const { pod } = await chainAdd(topo, 'shop', 'noprev', chainOpts(topo, dataDir, 8));
    const [identity, info] = stateOf(dp, topo, pod).pods[0]!;
    const del = await runPlugin(topo, PLUGIN, podEnv(pod, 'DEL'), ourConf(topo.pinDir));
    assert.equal(del.code, 0, `${del.stdout} ${del.stderr}`);
    assert.deepEqual(counts(dp), { endpoints: 0, owners: 0, pods: 0, decisions: 0 });
    assert.equal(existsSync(linkPin(topo.pinDir, info.ifindex, 'ingress')), false);
    assert.ok(identity >= PENDING_IDENTITY_BASE);
  });
});

test('plugin: mutated and random input never crashes it: prevResult back, or an error result', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withPluginBox(t, async (box, dataDir) => {
    const { topo } = box;
    const pod = await ptpAdd(topo, 'shop', 'fuzz', chainOpts(topo, dataDir, 9));
    // no pins there: a run that gets past the checks passes through and writes nothing
    const env = { ...podEnv(pod, 'ADD'), extra: { FQDN_EGRESS_BPF_PIN_DIR: join(topo.pinDir, 'absent') } };
    const valid = ourConf(topo.pinDir, pod.prevResult);
    let seed = 0x5eed;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const alphabet = '{}[]":,\\ 0123456789.eE+-tfnulrsa\u0000\u00ff\n';
    for (let i = 0; i < 150; i++) {
      const chars = [...valid];
      const edits = 1 + rand(4);
      for (let e = 0; e < edits; e++) {
        const at = rand(chars.length);
        const op = rand(3);
        if (op === 0) chars.splice(at, 1);
        else if (op === 1) chars.splice(at, 0, alphabet[rand(alphabet.length)]!);
        else chars[at] = alphabet[rand(alphabet.length)]!;
      }
      const input =
        i % 10 === 9 ? [...Array(rand(64))].map(() => alphabet[rand(alphabet.length)]).join('') : chars.join('');
      const r = await runPlugin(topo, PLUGIN, env, input);
      assert.ok(r.code === 0 || r.code === 1, `exit ${r.code} (a signal?) on ${JSON.stringify(input)}`);
      assert.ok(r.json, `JSON on stdout for ${JSON.stringify(input)}: ${r.stdout}`);
      if (r.code === 1) assert.equal(typeof r.json.code, 'number', `an error result: ${r.stdout}`);
    }
  });
});

/* ---- with the real agent (file source: every pod in the file is known, IP or interface or not) ---- */

interface CniFilePod {
  name: string;
  ip: string;
  allow?: string;
}

function writeCniPods(box: AgentBox, pods: CniFilePod[]): void {
  const lines = pods.length === 0 ? ['pods: []'] : ['pods:'];
  for (const p of pods) {
    lines.push('  - namespace: shop', `    name: ${p.name}`, `    ips: [${p.ip}]`);
    if (p.allow === undefined) lines.push('    annotations: {}');
    else lines.push('    annotations:', `      fqdn-egress.io/allow: ${JSON.stringify(p.allow)}`);
  }
  box.writeRaw(`${lines.join('\n')}\n`);
}

async function withAgentCni(
  t: TestContext,
  agentArgs: string[],
  fn: (box: AgentBox, opts: (n: number) => ChainOptions) => Promise<void>,
): Promise<void> {
  await withDataDir(t, (dataDir) =>
    withAgentBox(t, [], { agentArgs }, async (box) => {
      await fn(box, (n) => chainOpts(box.topo, dataDir, n));
    }),
  );
}

async function decided(box: AgentBox, name: string): Promise<{ identity: number; flags: number }> {
  let d: { identity: number; flags: number } | undefined;
  await box.waitFor(`the decision for shop/${name}`, () => {
    d = box.maps((dp) => dp.maps.podDecisions.get({ namespace: 'shop', name }));
    return d !== undefined && (d.flags & PENDING_FLAG) === 0;
  });
  return d!;
}

test('agent running: a pod whose first packet, sent as soon as ADD returns, goes to a name it may not reach is refused; its allowed name works at once', async (t) => {
  if (!requireKernelTestEnv(t, AGENT_TOOLS)) return;
  await withAgentCni(t, [], async (box, opts) => {
    const o = opts(11);
    writeCniPods(box, [{ name: 'payments', ip: o.ip, allow: 'api.stripe.test' }]);
    await box.startAgent();
    const d = await decided(box, 'payments');
    assert.equal(d.flags, EndpointFlag.enforce, 'decided before the sandbox exists');
    const { pod } = await chainAdd(box.topo, 'shop', 'payments', o);
    assert.equal(await connectFrom(box.topo, pod, BLOCKED, 443, 700), false, 'the first packet is refused');
    assert.deepEqual(
      await digFrom(box.topo, pod.netns, 'blocked.test'),
      [],
      'its query for a name not allowed: NXDOMAIN',
    );
    assert.deepEqual(await digFrom(box.topo, pod.netns, 'api.stripe.test'), [ZONE['api.stripe.test']![0]]);
    assert.equal(await connectFrom(box.topo, pod, ZONE['api.stripe.test']![0]!), true, 'its policy was there first');
    await box.waitFor('the agent takes the pod on its interface, same identity', () =>
      box.maps((dp) => dp.maps.pods.get(d.identity)?.ifname === pod.hostIf && dp.maps.endpoints.entries().length === 1),
    );
    await chainDel(box.topo, pod, o);
    assert.equal(
      box.maps((dp) => dp.maps.endpoints.entries().length),
      0,
      'DEL takes the endpoint away',
    );
  });
});

test('agent running: a pod without the annotation is never delayed', async (t) => {
  if (!requireKernelTestEnv(t, AGENT_TOOLS)) return;
  await withAgentCni(t, [], async (box, opts) => {
    const o = opts(12);
    writeCniPods(box, [{ name: 'web', ip: o.ip }]);
    await box.startAgent();
    const d = await decided(box, 'web');
    assert.deepEqual([d.identity, d.flags], [0, 0], 'decided: not enforced');
    const { pod } = await chainAdd(box.topo, 'shop', 'web', o);
    assert.equal(await connectFrom(box.topo, pod, BLOCKED), true, 'its first packet passes');
    assert.equal(
      box.maps((dp) => dp.maps.endpoints.entries().length),
      0,
      'nothing written',
    );
  });
});

test('agent stopped, --unknown-pods closed: the first packet is refused (DNS only); the restarted agent adopts the pod and applies its policy', async (t) => {
  if (!requireKernelTestEnv(t, AGENT_TOOLS)) return;
  await withAgentCni(t, [], async (box, opts) => {
    const o = opts(13);
    writeCniPods(box, []);
    await box.startAgent();
    await box.stopAgent();
    writeCniPods(box, [{ name: 'late', ip: o.ip, allow: 'api.stripe.test' }]);
    const { pod } = await chainAdd(box.topo, 'shop', 'late', o);
    const claim = box.maps((dp) => dp.maps.podDecisions.get({ namespace: 'shop', name: 'late' }))!;
    assert.equal(claim.flags, PENDING_FLAG, 'pending');
    assert.equal(await connectFrom(box.topo, pod, BLOCKED, 443, 700), false, 'refused while pending');
    assert.deepEqual(
      await digFrom(box.topo, pod.netns, 'api.stripe.test'),
      [ZONE['api.stripe.test']![0]],
      'DNS passes',
    );
    assert.equal(
      await connectFrom(box.topo, pod, ZONE['api.stripe.test']![0]!, 443, 700),
      false,
      'nothing is allowed while pending',
    );
    await box.startAgent();
    const d = await decided(box, 'late');
    assert.deepEqual([d.identity, d.flags], [claim.identity, EndpointFlag.enforce], "the plugin's identity, adopted");
    await box.waitFor('the real endpoint', () =>
      box.maps((dp) =>
        dp.maps.endpoints
          .entries()
          .some(([, ep]) => ep.identity === claim.identity && ep.flags === EndpointFlag.enforce),
      ),
    );
    assert.deepEqual(await digFrom(box.topo, pod.netns, 'api.stripe.test'), [ZONE['api.stripe.test']![0]]);
    assert.equal(await connectFrom(box.topo, pod, ZONE['api.stripe.test']![0]!), true, 'its policy applies');
    assert.equal(await connectFrom(box.topo, pod, BLOCKED, 443, 700), false);
    assert.deepEqual(await digFrom(box.topo, pod.netns, 'blocked.test'), [], 'the DNS filter is on again');
    assert.ok(
      (await box.metric('fqdn_egress_pod_pending_seconds_count', { decision: 'enforce' })) >= 1,
      'the wait counted',
    );
  });
});

test('agent stopped, --unknown-pods open: the pod passes until decided; the restarted agent enforces it', async (t) => {
  if (!requireKernelTestEnv(t, AGENT_TOOLS)) return;
  await withAgentCni(t, ['--unknown-pods', 'open'], async (box, opts) => {
    const o = opts(14);
    writeCniPods(box, []);
    await box.startAgent();
    await box.stopAgent();
    writeCniPods(box, [{ name: 'open', ip: o.ip, allow: 'api.stripe.test' }]);
    const { pod } = await chainAdd(box.topo, 'shop', 'open', o);
    assert.equal(await connectFrom(box.topo, pod, BLOCKED), true, 'open: passed while pending');
    await box.startAgent();
    await decided(box, 'open');
    await box.waitFor('enforced', () => box.maps((dp) => dp.maps.endpoints.entries().length === 1));
    assert.equal(await connectFrom(box.topo, pod, BLOCKED, 443, 700), false, 'enforced once decided');
  });
});

test('agent stopped: a pending pod the agent then decides not to enforce loses what the plugin wrote', async (t) => {
  if (!requireKernelTestEnv(t, AGENT_TOOLS)) return;
  await withAgentCni(t, [], async (box, opts) => {
    const o = opts(15);
    writeCniPods(box, []);
    await box.startAgent();
    await box.stopAgent();
    writeCniPods(box, [{ name: 'plain', ip: o.ip }]);
    const { pod } = await chainAdd(box.topo, 'shop', 'plain', o);
    assert.equal(await connectFrom(box.topo, pod, BLOCKED, 443, 700), false, 'refused while pending');
    await box.startAgent();
    assert.equal((await decided(box, 'plain')).flags, 0);
    await box.waitFor('the pending entries gone', () =>
      box.maps(
        (dp) =>
          dp.maps.endpoints.entries().length === 0 &&
          dp.maps.pods.entries().length === 0 &&
          dp.maps.owners.entries().length === 0,
      ),
    );
    assert.equal(await connectFrom(box.topo, pod, BLOCKED), true, 'not enforced');
    assert.ok((await box.metric('fqdn_egress_pod_pending_seconds_count', { decision: 'not-enforced' })) >= 1);
  });
});

test('kubernetes source: a pod scheduled here has its decision before kubelet reports an IP; the plugin enforces its first packet; deleting the pod removes its decision and entries', async (t) => {
  if (!requireKernelTestEnv(t, AGENT_TOOLS)) return;
  const NODE = 'node-1';
  await withAgentCni(t, [], async (box, opts) => {
    const { api, agentArgs } = await RemoteApiServer.forAgent(box.topo, RESOLVER, NODE);
    try {
      await box.startAgent(agentArgs);
      await api.addPod({
        namespace: 'shop',
        name: 'payments',
        nodeName: NODE,
        annotations: { 'fqdn-egress.io/allow': 'api.stripe.test' },
      });
      await api.addPod({ namespace: 'shop', name: 'web', nodeName: NODE });
      // a pod a policy resource selects by its labels (no annotation), before its IP too
      await api.setNamespace('shop');
      await api.putPolicy({
        kind: 'FQDNEgressPolicy',
        metadata: { name: 'stripe', namespace: 'shop' },
        spec: { podSelector: { matchLabels: { app: 'pay' } }, egress: [{ names: ['api.stripe.test'] }] },
      });
      await api.addPod({ namespace: 'shop', name: 'selected', nodeName: NODE, labels: { app: 'pay' } });
      await box.waitFor('the policy-selected pod decided: enforce', () =>
        box.maps(
          (dp) => dp.maps.podDecisions.get({ namespace: 'shop', name: 'selected' })?.flags === EndpointFlag.enforce,
        ),
      );
      const d = await decided(box, 'payments');
      assert.equal(d.flags, EndpointFlag.enforce, 'decided from the watch, no IP yet');
      assert.equal((await decided(box, 'web')).flags, 0);
      const o = opts(16);
      const { pod } = await chainAdd(box.topo, 'shop', 'payments', o);
      assert.equal(await connectFrom(box.topo, pod, BLOCKED, 443, 700), false, 'the first packet is refused');
      assert.deepEqual(await digFrom(box.topo, pod.netns, 'api.stripe.test'), [ZONE['api.stripe.test']![0]]);
      assert.equal(await connectFrom(box.topo, pod, ZONE['api.stripe.test']![0]!), true);
      await box.waitFor('the agent takes the pod on the interface the plugin named', () =>
        box.logs.some((l) => l.includes('enforcing pod') && l.includes('shop/payments')),
      );
      const web = await chainAdd(box.topo, 'shop', 'web', opts(17));
      assert.equal(await connectFrom(box.topo, web.pod, BLOCKED), true, 'not annotated: never delayed');
      await chainDel(box.topo, pod, o);
      await api.deletePod('shop', 'payments');
      await box.waitFor('decision and entries gone', () =>
        box.maps(
          (dp) =>
            dp.maps.podDecisions.get({ namespace: 'shop', name: 'payments' }) === undefined &&
            !dp.maps.pods.entries().some(([, i]) => i.name === 'payments'),
        ),
      );
    } finally {
      api.stop();
    }
  });
});
