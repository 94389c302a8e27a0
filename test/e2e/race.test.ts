/*
 * The first connection after a DNS answer, in the node-in-a-box with the
 * real agent: with the inline learner no first SYN is dropped; without it
 * (userspace learning only) they are, which shows the test measures the
 * race. And the inline learner keeps learning while the agent is down.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireKernelTestEnv } from '../helpers/topology.js';
import { withAgentBox } from '../helpers/agent-fixture.js';
import {
  compileRaceClient,
  raceHostsFile,
  racePoolHostsFile,
  runRace,
  type RaceMode,
  type RaceResult,
} from '../helpers/race.js';

const NAMES = 500;

test('a client that connects right after its answer: zero first-SYN drops with the inline learner, drops without', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter', 'cc'])) return;
  const dir = mkdtempSync(join(tmpdir(), 'fqe-race-hosts-'));
  const client = compileRaceClient();
  t.after(() => {
    client.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const hosts = [raceHostsFile(dir, 'on', NAMES), raceHostsFile(dir, 'off', NAMES)];
  await withAgentBox(t, [{ name: 'client' }], { dnsmasqArgs: hosts.map((h) => `--addn-hosts=${h}`) }, async (box) => {
    box.writePods([{ name: 'client', allow: '*.race.test' }]);
    await box.startAgent();
    const identity = box.maps((dp) => dp.maps.pods.entries()[0]![0]);
    const on = await runRace(box, 'client', client.path, 'on', NAMES, identity);
    await box.stopAgent();
    // Same addresses for the second run: forget what the first one learned.
    box.maps((dp) =>
      dp.maps.allow.deleteMany(
        dp.maps.allow
          .entries()
          .filter(([k]) => k.identity === identity)
          .map(([k]) => k),
      ),
    );
    await box.startAgent(['--inline-learner', 'false']);
    const off = await runRace(box, 'client', client.path, 'off', NAMES, identity);
    t.diagnostic(
      `first-SYN drops: inline learner on ${on.firstSynDrops}/${on.connects}, off ${off.firstSynDrops}/${off.connects}`,
    );
    assert.equal(on.answered, NAMES, 'every name answered (learner on)');
    assert.equal(on.connects, NAMES);
    assert.equal(on.firstSynDrops, 0, 'no first SYN dropped with the inline learner');
    assert.equal(off.answered, NAMES, 'every name answered (learner off)');
    assert.ok(
      off.firstSynDrops > NAMES / 10,
      `without the inline learner first SYNs are dropped (${off.firstSynDrops} of ${off.connects})`,
    );
  });
});

/*
 * Answer shapes beyond a small UDP answer: DNS over TCP, EDNS answers of 40
 * and 100 addresses, and a truncated UDP answer followed by the TCP retry.
 * The client connects to the LAST address of each answer. The links run at
 * MTU 9000 so that a 100-address UDP answer (about 1.7 KB) is not split into
 * IP fragments (no DNS learner reassembles those); dnsmasq answers EDNS up to
 * 4096 bytes.
 */
const SHAPE_NAMES = 300;
const SHAPES: Array<{ key: string; mode: RaceMode; perName: number; what: string }> = [
  { key: 'tcp1', mode: 'tcp', perName: 1, what: 'DNS over TCP' },
  { key: 'udp40', mode: 'edns', perName: 40, what: 'UDP (EDNS), 40 addresses' },
  { key: 'udp100', mode: 'edns', perName: 100, what: 'UDP (EDNS), 100 addresses' },
  { key: 'tc100', mode: 'udp', perName: 100, what: 'UDP truncated (no EDNS), then TCP, 100 addresses' },
];

test('every answer shape (TCP, 40 and 100 addresses, truncated then TCP): zero first-SYN drops with the inline learner, drops without', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter', 'cc'])) return;
  const dir = mkdtempSync(join(tmpdir(), 'fqe-race-shapes-'));
  const client = compileRaceClient();
  t.after(() => {
    client.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const hosts: string[] = [];
  let first = 0;
  for (const shape of SHAPES) {
    // the same addresses for both runs (the first run's entries are removed in between)
    for (const learner of ['on', 'off'])
      hosts.push(racePoolHostsFile(dir, `${learner}-${shape.key}`, SHAPE_NAMES, shape.perName, first));
    first += SHAPE_NAMES * shape.perName;
  }
  await withAgentBox(
    t,
    [{ name: 'client' }],
    { dnsmasqArgs: [...hosts.map((h) => `--addn-hosts=${h}`), '--edns-packet-max=4096'] },
    async (box) => {
      const pod = box.topo.pod('client');
      for (const [ns, dev] of [
        [box.topo.nodeNs, 'out0'],
        [box.topo.outNs, 'eth0'],
        [box.topo.nodeNs, pod.hostIf],
        [pod.netns, 'eth0'],
      ] as const) {
        await box.topo.ip(ns, 'link', 'set', 'dev', dev, 'mtu', '9000');
      }
      box.writePods([{ name: 'client', allow: '*.race.test' }]);
      const results: Record<string, { on?: RaceResult; off?: RaceResult }> = {};
      for (const learner of ['on', 'off'] as const) {
        // 300 names x (1 + 40 + 100 + 100) addresses is past the default share
        // of one pod (--max-ips-per-pod 16384), which would refuse the later ones.
        const share = ['--max-ips-per-pod', '131072'];
        await box.startAgent(learner === 'on' ? share : [...share, '--inline-learner', 'false']);
        const id = box.maps((dp) => dp.maps.pods.entries()[0]![0]);
        for (const shape of SHAPES) {
          (results[shape.key] ??= {})[learner] = await runRace(
            box,
            'client',
            client.path,
            `${learner}-${shape.key}`,
            SHAPE_NAMES,
            id,
            0,
            shape.mode,
          );
        }
        await box.stopAgent();
        // Same addresses for the second run: forget what the first one learned.
        box.maps((dp) =>
          dp.maps.allow.deleteMany(
            dp.maps.allow
              .entries()
              .filter(([k]) => k.identity === id)
              .map(([k]) => k),
          ),
        );
      }
      for (const shape of SHAPES) {
        const { on, off } = results[shape.key] as { on: RaceResult; off: RaceResult };
        t.diagnostic(
          `${shape.what}: first-SYN drops with the inline learner ${on.firstSynDrops}/${on.connects}, without ${off.firstSynDrops}/${off.connects}; TCP retries ${on.tcpRetries}; addresses per answer ${on.addresses}; answers left to the agent ${on.leftToAgent}`,
        );
      }
      for (const shape of SHAPES) {
        const { on, off } = results[shape.key] as { on: RaceResult; off: RaceResult };
        assert.equal(on.answered, SHAPE_NAMES, `${shape.what}: every name answered (learner on)`);
        assert.equal(on.addresses, shape.perName, `${shape.what}: the whole answer`);
        assert.equal(on.tcpRetries, shape.key === 'tc100' ? SHAPE_NAMES : 0, `${shape.what}: TCP retries`);
        assert.equal(on.connects, SHAPE_NAMES);
        assert.equal(on.firstSynDrops, 0, `${shape.what}: no first SYN dropped with the inline learner`);
        assert.equal(on.leftToAgent, 0, `${shape.what}: nothing left to the agent`);
        assert.equal(off.answered, SHAPE_NAMES, `${shape.what}: every name answered (learner off)`);
        assert.ok(
          off.firstSynDrops > SHAPE_NAMES / 10,
          `${shape.what}: without the inline learner first SYNs are dropped (${off.firstSynDrops} of ${off.connects})`,
        );
      }
    },
  );
});

test('while the agent is stopped a new name is learned in the kernel and connects at once; a forbidden one is still dropped', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter'])) return;
  await withAgentBox(t, [{ name: 'payments' }], {}, async (box) => {
    box.writePods([{ name: 'payments', allow: 'api.stripe.test, *.kadath.test' }]);
    await box.startAgent();
    assert.equal(await box.stopAgent('SIGKILL'), null);
    assert.deepEqual(await box.dig('payments', 'deep.a.kadath.test'), ['203.0.113.12']);
    assert.equal(await box.connect('payments', '203.0.113.12'), true, 'a name first resolved while the agent is down');
    assert.deepEqual(await box.dig('payments', 'blocked.test'), [], 'a name not allowed: the kernel answers NXDOMAIN');
    assert.equal(await box.connect('payments', '198.51.100.10', 443, 700), false, 'a name not allowed');
    const learned = box.maps((dp) => dp.maps.allow.entries().map(([, v]) => dp.maps.names.get(v.nameHash)));
    assert.deepEqual(learned, ['deep.a.kadath.test'], 'learned in the kernel, with its name');
    await box.startAgent();
    await box.waitFor(
      'the restarted agent to show the kernel-learned name',
      async () => (await box.metric('fqdn_egress_cache_entries')) >= 1,
      8000,
    );
  });
});
