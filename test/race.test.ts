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
import { requireKernelTestEnv } from './helpers/topology.js';
import { withAgentBox } from './helpers/agent-fixture.js';
import { compileRaceClient, raceHostsFile, runRace } from './helpers/race.js';

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
    box.maps((dp) => dp.maps.allow.deleteMany(dp.maps.allow.entries().filter(([k]) => k.identity === identity).map(([k]) => k)));
    await box.startAgent(['--inline-learner', 'false']);
    const off = await runRace(box, 'client', client.path, 'off', NAMES, identity);
    t.diagnostic(`first-SYN drops: inline learner on ${on.firstSynDrops}/${on.connects}, off ${off.firstSynDrops}/${off.connects}`);
    assert.equal(on.answered, NAMES, 'every name answered (learner on)');
    assert.equal(on.connects, NAMES);
    assert.equal(on.firstSynDrops, 0, 'no first SYN dropped with the inline learner');
    assert.equal(off.answered, NAMES, 'every name answered (learner off)');
    assert.ok(off.firstSynDrops > NAMES / 10, `without the inline learner first SYNs are dropped (${off.firstSynDrops} of ${off.connects})`);
  });
});

test('while the agent is stopped a new name is learned in the kernel and connects at once; a forbidden one is still dropped', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter'])) return;
  await withAgentBox(t, [{ name: 'payments' }], {}, async (box) => {
    box.writePods([{ name: 'payments', allow: 'api.stripe.test, *.kadath.test' }]);
    await box.startAgent();
    assert.equal(await box.stopAgent('SIGKILL'), null);
    assert.deepEqual(await box.dig('payments', 'deep.a.kadath.test'), ['203.0.113.12']);
    assert.equal(await box.connect('payments', '203.0.113.12'), true, 'a name first resolved while the agent is down');
    assert.deepEqual(await box.dig('payments', 'blocked.test'), ['198.51.100.10']);
    assert.equal(await box.connect('payments', '198.51.100.10', 443, 700), false, 'a name not allowed');
    const learned = box.maps((dp) => dp.maps.allow.entries().map(([, v]) => dp.maps.names.get(v.nameHash)));
    assert.deepEqual(learned, ['deep.a.kadath.test'], 'learned in the kernel, with its name');
    await box.startAgent();
    await box.waitFor('the restarted agent to show the kernel-learned name', async () => (await box.metric('fqdn_egress_cache_entries')) >= 1, 8000);
  });
});
