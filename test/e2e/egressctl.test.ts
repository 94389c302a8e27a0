/*
 * egressctl against the pinned maps of a real agent in the node-in-a-box,
 * with the agent running and after it stopped; JSON checked field by field,
 * tables for their key columns; clear errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { requireKernelTestEnv, sleep } from '../helpers/topology.js';
import { egressctl, EGRESSCTL } from '../helpers/egressctl.js';
import { withAgentBox } from '../helpers/agent-fixture.js';

test('egressctl inspect, drops and status with the agent running and stopped', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter'])) return;
  await withAgentBox(
    t,
    [{ name: 'payments' }, { name: 'auditor' }],
    { agentArgs: ['--allow-cidrs', '192.0.2.128/25'] },
    async (box) => {
      box.writePods([
        { name: 'payments', allow: 'api.stripe.test:443/tcp, *.kadath.test' },
        { name: 'auditor', allow: 'api.stripe.test', mode: 'audit' },
      ]);
      await box.startAgent();
      const pin = ['--pin-dir', box.topo.pinDir];
      await box.dig('payments', 'api.stripe.test');
      await box.dig('payments', 'www.kadath.test');
      assert.equal(await box.connect('payments', '203.0.113.10', 443), true);
      assert.equal(await box.connect('payments', '198.51.100.10', 8443, 500), false);
      assert.equal(await box.connect('payments', '203.0.113.10', 80, 500), false);
      assert.equal(await box.connect('auditor', '198.51.100.10', 443), true);

      for (const phase of ['running', 'stopped'] as const) {
        if (phase === 'stopped') {
          assert.equal(await box.stopAgent('SIGTERM'), 0);
        }
        const inspect = await egressctl(['inspect', '--output', 'json', ...pin]);
        assert.equal(inspect.code, 0, inspect.stderr);
        const pods = (JSON.parse(inspect.stdout) as { pods: Array<Record<string, unknown>> }).pods;
        const pay = pods.find((p) => p.name === 'payments') as Record<string, any>;
        assert.ok(pay, `payments listed (${phase})`);
        assert.equal(pay.namespace, 'shop');
        assert.equal(pay.mode, 'enforce');
        assert.equal(pay.interface, box.topo.pod('payments').hostIf);
        assert.equal(typeof pay.identity, 'number');
        assert.deepEqual(pay.allow, [
          { pattern: '*.kadath.test', ports: ['any'], from: ['annotation'] },
          { pattern: 'api.stripe.test', ports: ['443/tcp'], from: ['annotation'] },
        ]);
        assert.deepEqual([pay.decidedBy, pay.annotationIgnored], [['annotation'], false]);
        const stripe = pay.ips.find((i: any) => i.ip === '203.0.113.10');
        assert.equal(stripe.name, 'api.stripe.test');
        assert.deepEqual(stripe.ports, ['443/tcp']);
        assert.ok(['agent', 'kernel'].includes(stripe.learnedBy));
        assert.ok(stripe.expiresInSeconds > 0 && stripe.expiresInSeconds <= 30, `time left ${stripe.expiresInSeconds}`);
        assert.equal(pay.ips.find((i: any) => i.ip === '203.0.113.11').name, 'www.kadath.test');
        const cidr = pay.ips.find((i: any) => i.ip === '192.0.2.128/25');
        assert.deepEqual(
          { name: cidr.name, learnedBy: cidr.learnedBy, expires: cidr.expiresInSeconds },
          { name: null, learnedBy: 'static', expires: null },
        );
        assert.ok(Number(pay.counters.dropped) >= 2);
        const aud = pods.find((p) => p.name === 'auditor') as Record<string, any>;
        assert.equal(aud.mode, 'audit');

        const table = await egressctl(['inspect', '--pod', 'shop/payments', ...pin]);
        assert.equal(table.code, 0, table.stderr);
        for (const col of [
          'shop/payments',
          'IP',
          'NAME',
          'PORTS',
          'LEARNED BY',
          'TIME LEFT',
          'api.stripe.test',
          '443/tcp',
          '*.kadath.test',
        ])
          assert.ok(table.stdout.includes(col), `inspect table shows ${col}`);
        assert.ok(!table.stdout.includes('shop/auditor'), '--pod filters');
        assert.match(table.stdout, /decided by: annotation/);
        assert.match(table.stdout, /ALLOWED NAME +PORTS +FROM/);
        const policies = await egressctl(['policies', ...pin]);
        assert.equal(policies.code, 0, policies.stderr);
        assert.match(policies.stdout, /^shop\/auditor +audit +annotation +in force$/m);
        assert.match(policies.stdout, /^shop\/payments +enforce +annotation +in force$/m);
        const one = await egressctl(['policies', '--pod', 'shop/payments', '--output', 'json', ...pin]);
        assert.deepEqual(JSON.parse(one.stdout), {
          pods: [
            {
              namespace: 'shop',
              name: 'payments',
              mode: 'enforce',
              decidedBy: ['annotation'],
              annotationIgnored: false,
            },
          ],
        });
        assert.ok(!table.stdout.includes('\u001b['), 'no color when not a TTY');

        const drops = await egressctl(['drops', '--output', 'json', ...pin]);
        assert.equal(drops.code, 0, drops.stderr);
        const list = (JSON.parse(drops.stdout) as { drops: Array<Record<string, any>> }).drops;
        const portDrop = list.find((d) => d.pod === 'shop/payments' && d.port === 80);
        assert.deepEqual(
          {
            kind: portDrop?.kind,
            reason: portDrop?.reason,
            proto: portDrop?.proto,
            destination: portDrop?.destination,
            name: portDrop?.name,
          },
          { kind: 'drop', reason: 'port', proto: 'tcp', destination: '203.0.113.10', name: 'api.stripe.test' },
        );
        assert.ok(!Number.isNaN(Date.parse(portDrop!.time)));
        const unknown = list.find((d) => d.pod === 'shop/payments' && d.port === 8443);
        assert.deepEqual({ reason: unknown?.reason, name: unknown?.name }, { reason: 'not-allowed', name: null });
        assert.ok(
          list.some((d) => d.pod === 'shop/auditor' && d.kind === 'audit' && d.destination === '198.51.100.10'),
          'audit events',
        );
        const dropsTable = await egressctl(['drops', '--pod', 'shop/payments', ...pin]);
        for (const col of ['TIME', 'POD', 'REASON', 'DESTINATION', 'PORT', 'NAME', 'port', 'not-allowed'])
          assert.ok(dropsTable.stdout.includes(col), `drops table shows ${col}`);

        const st = await egressctl(['status', '--output', 'json', ...pin], box.topo.nodeNsPath);
        assert.equal(st.code, 0, st.stderr);
        const s = JSON.parse(st.stdout) as Record<string, any>;
        assert.equal(s.agent.running, phase === 'running', `agent ${phase}`);
        assert.equal(s.agent.inlineLearner, 'on');
        assert.deepEqual(
          s.features.map((f: any) => `${f.feature} ${f.state}`),
          [
            'inline-learner on',
            'enforcer-clock coarse',
            'tls-check on',
            'dns-query-filter on',
            'attach tcx',
            `tcx-head-guard ${phase === 'running' ? 'on' : 'off'}`,
          ],
          `feature states (${phase})`,
        );
        if (phase === 'stopped')
          assert.equal(s.features[5].reason, 'the agent is down', 'nobody guards the head while the agent is down');
        assert.equal(s.interfaces.length, 2);
        assert.ok(
          s.interfaces.every((i: any) => typeof i.enforcer === 'number' && typeof i.learner === 'number'),
          'programs attached',
        );
        assert.ok(s.maps.find((m: any) => m.map === 'fqe_allow').entries >= 2);
        assert.equal(s.maps.find((m: any) => m.map === 'fqe_cidrs').entries, 1, 'the --allow-cidrs prefix');
        const stTable = await egressctl(['status', ...pin]);
        assert.match(stTable.stdout, phase === 'running' ? /agent: up/ : /agent: down/);
        assert.match(
          stTable.stdout,
          phase === 'running'
            ? /^datapath: inline-learner on, enforcer-clock coarse, tls-check on, dns-query-filter on, attach tcx, tcx-head-guard on$/m
            : /^ {2}tcx-head-guard off \(the agent is down\): nobody takes the head/m,
        );
        assert.match(stTable.stdout, /HEAD RETAKEN/);
      }
    },
  );
});

test('egressctl status shows the datapath features a fallback switched off, and what that means; the agent says so once and in its metric', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter'])) return;
  await withAgentBox(t, [{ name: 'payments' }], {}, async (box) => {
    box.writePods([{ name: 'payments', allow: 'api.stripe.test' }]);
    await box.startAgent(['--inline-learner', 'false', '--attach-mode', 'legacy']);
    const pin = ['--pin-dir', box.topo.pinDir];
    const st = await egressctl(['status', '--output', 'json', ...pin], box.topo.nodeNsPath);
    assert.equal(st.code, 0, st.stderr);
    const s = JSON.parse(st.stdout) as {
      features: Array<{ feature: string; state: string; best: boolean; effect?: string }>;
    };
    assert.deepEqual(
      s.features.map((f) => `${f.feature} ${f.state}`),
      [
        'inline-learner off',
        'enforcer-clock coarse',
        'tls-check on',
        'dns-query-filter on',
        'attach legacy',
        'tcx-head-guard n/a',
      ],
    );
    assert.deepEqual(
      s.features.filter((f) => !f.best).map((f) => f.feature),
      ['inline-learner', 'attach'],
    );
    assert.match(s.features[4]!.effect!, /legacy tc: a tcx program .* runs first and skips them/);
    const table = await egressctl(['status', ...pin], box.topo.nodeNsPath);
    assert.match(
      table.stdout,
      /^datapath: inline-learner off, enforcer-clock coarse, tls-check on, dns-query-filter on, attach legacy, tcx-head-guard n\/a$/m,
    );
    assert.match(table.stdout, /^ {2}inline-learner off: learning in userspace only/m);
    assert.match(table.stdout, /^ {2}attach legacy: programs attached through legacy tc/m);

    assert.equal(await box.metric('fqdn_egress_datapath_feature', { feature: 'attach', state: 'legacy' }), 1);
    assert.equal(await box.metric('fqdn_egress_datapath_feature', { feature: 'attach', state: 'tcx' }), 0);
    assert.equal(await box.metric('fqdn_egress_datapath_feature', { feature: 'tcx-head-guard', state: 'n/a' }), 1);
    const said = box.logs.filter((l) => l.includes('datapath feature '));
    assert.equal(said.length, 2, said.join('\n'));
    assert.ok(
      said.some(
        (l) =>
          l.includes('"feature":"attach"') && l.includes('"reason":"--attach-mode legacy"') && l.includes('"level":40'),
      ),
    );
    assert.ok(said.some((l) => l.includes('"feature":"inline-learner"') && l.includes('"reason":"switched off"')));
    await sleep(1200); // a few ticks: the heartbeat rewrites fqe_config, the lines are not repeated
    assert.equal(box.logs.filter((l) => l.includes('datapath feature ')).length, 2, 'said once');
  });
});

test('egressctl drops --follow prints new events as they happen and stops on SIGINT', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter'])) return;
  await withAgentBox(t, [{ name: 'payments' }], {}, async (box) => {
    box.writePods([{ name: 'payments', allow: 'api.stripe.test' }]);
    await box.startAgent();
    assert.equal(await box.connect('payments', '198.51.100.10', 443, 300), false, 'an event before following');
    const follower = spawn(process.execPath, [
      EGRESSCTL,
      'drops',
      '--follow',
      '--output',
      'json',
      '--pod',
      'shop/payments',
      '--pin-dir',
      box.topo.pinDir,
    ]);
    let out = '';
    follower.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => follower.once('exit', resolve));
    try {
      await box.waitFor('the earlier event', () => out.includes('"port":443'), 5000);
      assert.equal(await box.connect('payments', '198.51.100.11', 8443, 300), false);
      await box.waitFor('the new event', () => out.includes('"port":8443'), 5000);
      const lines = out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { destination: string; reason: string });
      assert.deepEqual(lines.map((l) => l.destination).slice(-1), ['198.51.100.11']);
      assert.ok(lines.every((l) => l.reason === 'not-allowed'));
    } finally {
      follower.kill('SIGINT');
    }
    assert.equal(await exited, 0, 'SIGINT ends --follow cleanly');
  });
});

test('egressctl says clearly what is wrong', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  const missing = await egressctl(['inspect', '--pin-dir', '/sys/fs/bpf/fqe-nothing-here']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no fqdn-egress state at \/sys\/fs\/bpf\/fqe-nothing-here/);
  const usage = await egressctl(['bogus']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /unknown command "bogus"/);
  assert.match((await egressctl(['inspect', '--pod', 'nope'])).stderr, /--pod: "nope" is not NAMESPACE\/NAME/);
  assert.match((await egressctl(['inspect', '--follow'])).stderr, /--follow goes with drops/);
  assert.match((await egressctl(['--help'])).stdout, /Usage: egressctl <command>/);
});
