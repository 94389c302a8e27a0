/*
 * The agent with --source kubernetes, end to end in the node-in-a-box: the
 * real agent and the real @kubernetes/client-node in the node namespace,
 * against an in-process fake API server that speaks list/watch (also in that
 * namespace), real dnsmasq behind the discovered kube-dns address.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireKernelTestEnv, OUTSIDE_LINK_V4, SILENT_RESOLVER, sleep } from '../helpers/topology.js';
import { loadStandin, untilOursHeads } from '../helpers/cni-standin.js';
import { ownLinkId } from '../../agent/datapath/attach.js';
import { withAgentBox, type AgentBox } from '../helpers/agent-fixture.js';
import { RemoteApiServer } from '../helpers/remote-apiserver.js';
import { formatIp } from '../../agent/net/addr.js';

const NODE = 'node-1';

function enforced(box: AgentBox): string[] {
  return box.maps((dp) =>
    dp.maps.pods
      .entries()
      .map(([, p]) => `${p.namespace}/${p.name}`)
      .sort(),
  );
}

/** The pod's interface carries its endpoint entry: the last thing the agent writes for a pod. */
function attached(box: AgentBox): number {
  return box.maps((dp) => dp.maps.endpoints.entries().length);
}

function resolvers(box: AgentBox): string[] {
  return box.maps((dp) =>
    dp.maps.resolvers
      .entries()
      .map(([a]) => formatIp(a))
      .sort(),
  );
}

test('the agent follows the Kubernetes API: pods on this node, edits, deletes, outages, Events, kube-dns discovery', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter'])) return;
  await withAgentBox(t, [{ name: 'payments' }, { name: 'other' }], {}, async (box) => {
    const { api, agentArgs } = await RemoteApiServer.forAgent(box.topo, OUTSIDE_LINK_V4.outside, NODE);
    try {
      const pay = box.topo.pod('payments');
      const other = box.topo.pod('other');
      await box.startAgent(agentArgs);
      assert.deepEqual(
        resolvers(box),
        [OUTSIDE_LINK_V4.outside],
        'the trusted resolver comes from the kube-dns Service',
      );

      await api.addPod({
        namespace: 'shop',
        name: 'payments',
        nodeName: NODE,
        ips: [pay.v4, pay.v6],
        annotations: { 'fqdn-egress.io/allow': 'api.stripe.test, *.' },
      });
      await api.addPod({
        namespace: 'shop',
        name: 'elsewhere',
        nodeName: 'node-2',
        ips: [other.v4],
        annotations: { 'fqdn-egress.io/allow': '' },
      });
      await api.addPod({
        namespace: 'kube-system',
        name: 'hostnet',
        nodeName: NODE,
        ips: [other.v4],
        annotations: { 'fqdn-egress.io/allow': '' },
        hostNetwork: true,
      });
      // fqe_pods is written first and the endpoint entry last: wait for both
      // before the pod resolves (the dig must meet the enforced interface).
      await box.waitFor(
        'payments enforced',
        () => enforced(box).includes('shop/payments') && attached(box) === 1,
        3000,
      );
      assert.deepEqual(enforced(box), ['shop/payments'], 'pods of other nodes and host-network pods are left alone');
      await box.dig('payments', 'api.stripe.test');
      assert.equal(await box.connect('payments', '203.0.113.10'), true, 'learned through the discovered resolver');
      assert.equal(await box.connect('payments', '203.0.113.11', 443, 500), false);
      await box.waitFor('Events on the pod', async () => (await api.events()).length >= 2, 3000);
      const events = await api.events();
      const invalid = events.find((e) => e.reason === 'InvalidAnnotation');
      assert.ok(invalid, 'an Event for the invalid entry');
      assert.deepEqual(
        {
          kind: invalid.involvedObject?.kind,
          ns: invalid.involvedObject?.namespace,
          name: invalid.involvedObject?.name,
          type: invalid.type,
        },
        { kind: 'Pod', ns: 'shop', name: 'payments', type: 'Warning' },
      );
      assert.match(invalid.message, /invalid entry "\*\."/);
      assert.ok(
        events.some((e) => e.reason === 'EnforcementStarted' && e.type === 'Normal'),
        'an Event when enforcement starts',
      );

      // An annotation edit applies.
      await api.setAnnotations('shop', 'payments', { 'fqdn-egress.io/allow': 'www.kadath.test' });
      await box.waitFor('api.stripe.test revoked', () => box.maps((dp) => dp.maps.allow.entries().length === 0), 3000);
      await box.dig('payments', 'www.kadath.test');
      assert.equal(await box.connect('payments', '203.0.113.11'), true, 'the new name');
      assert.equal(await box.connect('payments', '203.0.113.10', 443, 500), false, 'the old one is gone');

      // An outage keeps enforcement; what changed meanwhile arrives afterwards.
      await api.setDown(true);
      assert.equal(
        await box.connect('payments', '198.51.100.10', 443, 500),
        false,
        'still enforcing during the outage',
      );
      assert.equal(await box.connect('payments', '203.0.113.11'), true, 'still allowing during the outage');
      assert.deepEqual(enforced(box), ['shop/payments']);
      await api.deletePod('shop', 'payments');
      await api.setDown(false);
      await box.waitFor('the delete made during the outage', () => enforced(box).length === 0, 20_000);
      assert.equal(await box.connect('payments', '198.51.100.10'), true, 'enforcement lifted with the pod gone');

      // A changed kube-dns Service is followed.
      await api.setService({ clusterIP: SILENT_RESOLVER });
      await box.waitFor('the new resolver', () => resolvers(box).join() === SILENT_RESOLVER, 3000);
    } finally {
      api.stop();
    }
  });
});

test("a program that keeps going before ours on a pod's tcx chain: one TcxHeadContested Warning Event on the pod", async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter'])) return;
  await withAgentBox(t, [{ name: 'payments' }], {}, async (box) => {
    const { api, agentArgs } = await RemoteApiServer.forAgent(box.topo, OUTSIDE_LINK_V4.outside, NODE);
    try {
      const pay = box.topo.pod('payments');
      await box.startAgent(agentArgs);
      await api.addPod({
        namespace: 'shop',
        name: 'payments',
        nodeName: NODE,
        ips: [pay.v4, pay.v6],
        annotations: { 'fqdn-egress.io/allow': 'api.stripe.test' },
      });
      await box.waitFor(
        'our link on the pod interface',
        () => ownLinkId(box.topo.pinDir, pay.ifindex, 'ingress') !== null,
        3000,
      );
      const cni = loadStandin(box.topo, pay.ifindex);
      try {
        // Bounded: 6 retakes (the most a minute allows), then a 7th attach the agent leaves alone.
        for (let round = 1; round <= 6; round++) {
          cni.detachTcx();
          const at = process.hrtime.bigint();
          cni.attachTcx('ingress', { first: true });
          assert.notEqual(await untilOursHeads(box.topo, pay.ifindex, 'ingress', at), null, `retake ${round}`);
        }
        cni.detachTcx();
        cni.attachTcx('ingress', { first: true });
        await box.waitFor(
          'the Event',
          async () => (await api.events()).some((e) => e.reason === 'TcxHeadContested'),
          3000,
        );
        await sleep(500);
      } finally {
        cni.close();
      }
      const contested = (await api.events()).filter((e) => e.reason === 'TcxHeadContested');
      assert.equal(contested.length, 1, 'one Event per back-off');
      const e = contested[0]!;
      assert.deepEqual(
        { kind: e.involvedObject?.kind, ns: e.involvedObject?.namespace, name: e.involvedObject?.name, type: e.type },
        { kind: 'Pod', ns: 'shop', name: 'payments', type: 'Warning' },
      );
      assert.match(
        e.message,
        new RegExp(
          `^another tcx program \\(prog ${cni.progId}\\) keeps going before fqdn-egress's programs on ${pay.hostIf} \\(7 retakes needed within 60s\\): fqdn-egress stops taking the head back for 300s`,
        ),
      );
    } finally {
      api.stop();
    }
  });
});
