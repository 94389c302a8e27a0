/*
 * Policy resources end to end in the node-in-a-box: the real agent with
 * --source kubernetes and the real @kubernetes/client-node against the
 * in-process API server (list/watch of pods, namespaces, FQDNEgressPolicy and
 * ClusterFQDNEgressPolicy), real dnsmasq and real TCP servers outside, real
 * clients in the pods. One box; each scenario builds on the last:
 *   a namespaced policy enforces a pod with no annotation
 *   a cluster policy with a namespaceSelector enforces every pod of the matching namespaces
 *   the union of two policies, each name showing where it came from
 *   an annotation ignored under a policy, with its Event
 *   audit versus enforce
 *   a pod label change moving a pod in and out
 *   a policy edit that revokes a name cuts the pod's tracked flows to it
 *   a policy deleted while the agent is down is honoured when it is back
 *   (its flows cut too)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireKernelTestEnv, OUTSIDE_LINK_V4, NETTOOL } from '../helpers/topology.js';
import { withAgentBox, type AgentBox } from '../helpers/agent-fixture.js';
import { RemoteApiServer } from '../helpers/remote-apiserver.js';
import { egressctl } from '../helpers/egressctl.js';
import type { FakePolicy } from '../helpers/fake-apiserver.js';

const NODE = 'node-1';
const STRIPE_IP = '203.0.113.10'; // api.stripe.test
const KADATH_IP = '203.0.113.11'; // www.kadath.test
const BLOCKED_IP = '198.51.100.10'; // blocked.test

function enforced(box: AgentBox): string[] {
  return box.maps((dp) =>
    dp.maps.endpoints
      .entries()
      .map(([, ep]) => dp.maps.pods.get(ep.identity))
      .map((p) => `${p?.namespace}/${p?.name}`)
      .sort(),
  );
}

interface InspectedPod {
  namespace: string;
  name: string;
  mode: string;
  decidedBy: string[];
  annotationIgnored: boolean;
  allow: Array<{ pattern: string; ports: string[]; from: string[] }>;
}

/** A TCP connection from a pod that sends a byte every 200 ms and wants each echo back: its verdict when it ends. */
async function holdFlow(
  box: AgentBox,
  pod: string,
  ip: string,
  seconds: number,
): Promise<{ ended: Promise<{ ok: boolean; error?: string; ms: number }> }> {
  const child = await box.topo.spawnReady(
    box.topo.pod(pod).netns,
    [process.execPath, NETTOOL, 'hold', 'tcp', ip, '443', '--seconds', String(seconds)],
    /connected/,
  );
  // (wrapped: an async function returning the promise itself would make its caller wait for the end)
  const ended = new Promise<{ ok: boolean; ms: number }>((resolve) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', () => resolve(JSON.parse(out.trim().split('\n').pop()!) as { ok: boolean; ms: number }));
  });
  return { ended };
}

async function inspectPod(box: AgentBox, pod: string): Promise<InspectedPod> {
  const r = await egressctl(
    ['inspect', '--pod', pod, '--output', 'json', '--pin-dir', box.topo.pinDir],
    box.topo.nodeNsPath,
  );
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { pods: InspectedPod[] }).pods[0]!;
}

const stripe: FakePolicy = {
  kind: 'FQDNEgressPolicy',
  metadata: { name: 'stripe', namespace: 'shop' },
  spec: {
    podSelector: { matchLabels: { app: 'pay' } },
    egress: [{ names: ['api.stripe.test'], ports: [{ port: 443, protocol: 'TCP' }] }],
  },
};
const teamA: FakePolicy = {
  kind: 'ClusterFQDNEgressPolicy',
  metadata: { name: 'team-a' },
  spec: {
    podSelector: {},
    namespaceSelector: { matchLabels: { team: 'a' } },
    egress: [{ names: ['*.kadath.test'] }],
  },
};
const kadathForPay: FakePolicy = {
  kind: 'ClusterFQDNEgressPolicy',
  metadata: { name: 'kadath-for-pay' },
  spec: {
    podSelector: { matchLabels: { app: 'pay' } },
    namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'shop' } },
    egress: [{ names: ['*.kadath.test'], ports: [{ port: 443 }] }],
  },
};
const webAudit: FakePolicy = {
  kind: 'FQDNEgressPolicy',
  metadata: { name: 'web-audit', namespace: 'shop' },
  spec: { podSelector: { matchLabels: { app: 'web' } }, mode: 'audit', egress: [{ names: ['api.stripe.test'] }] },
};
const webEnforce: FakePolicy = {
  kind: 'FQDNEgressPolicy',
  metadata: { name: 'web-enforce', namespace: 'shop' },
  spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['web'] }] }, egress: [] },
};

test('policy resources decide what pods may reach: namespaced, cluster-wide, union, annotation ignored, audit, labels, deletion while down', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter'])) return;
  await withAgentBox(t, [{ name: 'payments' }, { name: 'web' }, { name: 'a1' }, { name: 'other' }], {}, async (box) => {
    const { api, agentArgs } = await RemoteApiServer.forAgent(box.topo, OUTSIDE_LINK_V4.outside, NODE);
    try {
      await api.setNamespace('shop');
      await api.setNamespace('team-a', { team: 'a' });
      await api.setNamespace('misc');
      await api.putPolicy(stripe);
      await box.startAgent(agentArgs);
      const addPod = (name: string, namespace: string, labels: Record<string, string>) => {
        const p = box.topo.pod(name);
        return api.addPod({ namespace, name, nodeName: NODE, ips: [p.v4, p.v6], labels });
      };
      await addPod('payments', 'shop', { app: 'pay' });
      await addPod('web', 'shop', { app: 'web' });
      await addPod('a1', 'team-a', { app: 'x' });
      await addPod('other', 'misc', { app: 'x' });

      await t.test('a namespaced policy enforces a pod with no annotation', async () => {
        await box.waitFor('payments enforced', () => enforced(box).join() === 'shop/payments', 5000);
        assert.deepEqual((await box.dig('payments', 'api.stripe.test')).pop(), STRIPE_IP);
        assert.equal(await box.connect('payments', STRIPE_IP), true, 'the policy allows api.stripe.test:443');
        assert.equal(await box.connect('payments', STRIPE_IP, 8443, 500), false, 'only port 443');
        assert.deepEqual(await box.dig('payments', 'blocked.test'), [], 'another name: NXDOMAIN from the kernel');
        assert.equal(await box.connect('payments', BLOCKED_IP, 443, 500), false);
        assert.equal(await box.connect('web', BLOCKED_IP), true, 'a pod the policy does not select is untouched');
        const pod = await inspectPod(box, 'shop/payments');
        assert.deepEqual(pod.decidedBy, ['policy shop/stripe']);
        assert.deepEqual(pod.allow, [{ pattern: 'api.stripe.test', ports: ['443/tcp'], from: ['policy shop/stripe'] }]);
        assert.equal(
          await box.metric('fqdn_egress_policy_selected_pods', { kind: 'FQDNEgressPolicy', policy: 'shop/stripe' }),
          1,
        );
      });

      await t.test(
        'a cluster policy with a namespaceSelector enforces every pod of the matching namespaces',
        async () => {
          await api.putPolicy(teamA);
          await box.waitFor('a1 enforced', () => enforced(box).includes('team-a/a1'), 5000);
          assert.equal(enforced(box).includes('misc/other'), false, 'a namespace without the label is not selected');
          await box.dig('a1', 'www.kadath.test');
          assert.equal(await box.connect('a1', KADATH_IP), true);
          assert.equal(await box.connect('a1', BLOCKED_IP, 443, 500), false);
          assert.equal(await box.connect('other', BLOCKED_IP), true);
          // a namespace label change takes effect like an annotation edit
          await api.setNamespace('misc', { team: 'a' });
          await box.waitFor('other enforced once its namespace has the label', () =>
            enforced(box).includes('misc/other'),
          );
          assert.equal(await box.connect('other', BLOCKED_IP, 443, 500), false);
          await api.setNamespace('misc', {});
          await box.waitFor('other free again', () => !enforced(box).includes('misc/other'));
          assert.equal(await box.connect('other', BLOCKED_IP), true);
          assert.equal(await box.metric('fqdn_egress_policies', { kind: 'ClusterFQDNEgressPolicy' }), 1);
        },
      );

      await t.test('the union of two policies, each allowed name with where it came from', async () => {
        await api.putPolicy(kadathForPay);
        await box.waitFor('payments under two policies', async () => {
          const pod = await inspectPod(box, 'shop/payments');
          return pod.decidedBy.length === 2;
        });
        await box.dig('payments', 'www.kadath.test');
        assert.equal(await box.connect('payments', KADATH_IP), true, 'the cluster policy adds *.kadath.test');
        await box.dig('payments', 'api.stripe.test');
        assert.equal(await box.connect('payments', STRIPE_IP), true, 'the namespaced policy still allows its name');
        const pod = await inspectPod(box, 'shop/payments');
        assert.deepEqual(pod.decidedBy, ['clusterpolicy kadath-for-pay', 'policy shop/stripe']);
        assert.deepEqual(
          pod.allow.map((a) => [a.pattern, a.from.join(', ')]),
          [
            ['*.kadath.test', 'clusterpolicy kadath-for-pay'],
            ['api.stripe.test', 'policy shop/stripe'],
          ],
        );
        const r = await egressctl(['policies', '--pin-dir', box.topo.pinDir], box.topo.nodeNsPath);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /shop\/payments\s+enforce\s+clusterpolicy kadath-for-pay, policy shop\/stripe/);
        assert.match(r.stdout, /team-a\/a1\s+enforce\s+clusterpolicy team-a/);
      });

      await t.test('an annotation under a policy is ignored, and one Event on the pod says so', async () => {
        await api.setAnnotations('shop', 'payments', {
          'fqdn-egress.io/allow': 'blocked.test',
          'fqdn-egress.io/mode': 'audit',
        });
        await box.waitFor('the Event', async () => (await api.events()).some((e) => e.reason === 'AnnotationIgnored'));
        assert.deepEqual(await box.dig('payments', 'blocked.test'), [], 'the annotation cannot widen the policies');
        assert.equal(await box.connect('payments', BLOCKED_IP, 443, 500), false, 'nor switch the pod to audit');
        const ignored = (await api.events()).filter((e) => e.reason === 'AnnotationIgnored');
        assert.equal(ignored.length, 1);
        assert.deepEqual(
          {
            kind: ignored[0]!.involvedObject?.kind,
            ns: ignored[0]!.involvedObject?.namespace,
            name: ignored[0]!.involvedObject?.name,
            type: ignored[0]!.type,
          },
          { kind: 'Pod', ns: 'shop', name: 'payments', type: 'Warning' },
        );
        assert.match(
          ignored[0]!.message,
          /annotations are ignored: clusterpolicy kadath-for-pay, policy shop\/stripe select it/,
        );
        const pod = await inspectPod(box, 'shop/payments');
        assert.equal(pod.annotationIgnored, true);
        assert.equal(pod.mode, 'enforce');
      });

      await t.test('audit when every selecting policy audits; enforce as soon as one enforces', async () => {
        await api.putPolicy(webAudit);
        await box.waitFor('web audited', () => enforced(box).includes('shop/web'));
        assert.equal((await inspectPod(box, 'shop/web')).mode, 'audit');
        assert.equal(await box.connect('web', BLOCKED_IP), true, 'audit: passes (and is reported)');
        await box.waitFor(
          'an audit event counted',
          async () => (await box.metric('fqdn_egress_pod_packets_total', { pod: 'web', verdict: 'audited' })) > 0,
        );
        await api.putPolicy(webEnforce);
        await box.waitFor('web enforced', async () => (await inspectPod(box, 'shop/web')).mode === 'enforce');
        assert.equal(await box.connect('web', BLOCKED_IP, 443, 500), false);
      });

      await t.test('a pod label change moves a pod out of its policies and back in', async () => {
        await api.setLabels('shop', 'web', { app: 'frontend' });
        await box.waitFor('web no longer selected', () => !enforced(box).includes('shop/web'));
        assert.equal(await box.connect('web', BLOCKED_IP), true, 'not selected, no annotation: not enforced');
        await api.setLabels('shop', 'web', { app: 'web' });
        await box.waitFor('web selected again', () => enforced(box).includes('shop/web'));
        assert.equal(await box.connect('web', BLOCKED_IP, 443, 500), false);
      });

      await t.test('a policy edit that revokes a name cuts the tracked flows to it, and only those', async () => {
        await box.dig('payments', 'www.kadath.test');
        await box.dig('payments', 'api.stripe.test');
        const revoked = await holdFlow(box, 'payments', KADATH_IP, 4);
        const kept = await holdFlow(box, 'payments', STRIPE_IP, 4);
        await api.putPolicy({ ...kadathForPay, spec: { ...kadathForPay.spec, egress: [{ names: ['cdn.test'] }] } });
        const [r, k] = await Promise.all([revoked.ended, kept.ended]);
        assert.equal(r.ok, false, `the flow to the revoked name is cut (${JSON.stringify(r)})`);
        assert.equal(k.ok, true, `the flow to a name still allowed goes on (${JSON.stringify(k)})`);
        assert.ok((await box.metric('fqdn_egress_revoked_flows_cut_total')) >= 1);
        assert.equal(await box.connect('payments', KADATH_IP, 443, 500), false, 'and a new connection is refused');
        await api.putPolicy(kadathForPay);
      });

      await t.test('a policy deleted while the agent is down is honoured when it is back', async () => {
        await box.dig('payments', 'api.stripe.test');
        assert.equal(await box.connect('payments', STRIPE_IP), true);
        const held = await holdFlow(box, 'payments', STRIPE_IP, 40);
        assert.equal(await box.stopAgent('SIGTERM'), 0);
        await api.deletePolicy('FQDNEgressPolicy', 'stripe', 'shop');
        assert.equal(await box.connect('payments', STRIPE_IP), true, 'the pins keep enforcing what was decided');
        await box.startAgent(agentArgs);
        const h = await held.ended;
        assert.equal(h.ok, false, `the open connection to the deleted policy's name is cut (${JSON.stringify(h)})`);
        assert.ok(h.ms < 40_000);
        await box.waitFor('payments decided by the cluster policy alone', async () => {
          const pod = await inspectPod(box, 'shop/payments');
          return pod.decidedBy.join() === 'clusterpolicy kadath-for-pay';
        });
        assert.equal(
          await box.connect('payments', STRIPE_IP, 443, 500),
          false,
          'the name of the deleted policy is revoked',
        );
        assert.deepEqual(await box.dig('payments', 'api.stripe.test'), [], 'and refused by the DNS filter');
        await box.dig('payments', 'www.kadath.test');
        assert.equal(await box.connect('payments', KADATH_IP), true, 'the remaining policy still applies');
      });
    } finally {
      api.stop();
    }
  });
});
