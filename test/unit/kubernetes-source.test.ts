/*
 * The Kubernetes source against an in-process API server that speaks the real
 * list/watch protocol, through the real @kubernetes/client-node (no mocks):
 * snapshots, 410 Gone, bookmarks, outages, resolver discovery, Events, and
 * the policy resources with namespace labels (the same list/watch handling).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { FakeApiServer } from '../helpers/fake-apiserver.js';
import { Backoff, KubernetesSource, podSpecOf } from '../../agent/sources/kubernetes-source.js';
import type { PodSpec, PolicyObjects } from '../../agent/sources/pod.js';

const NODE = 'node-a';
const ALLOW = 'fqdn-egress.io/allow';

interface Harness {
  server: FakeApiServer;
  source: KubernetesSource;
  snapshots: PodSpec[][];
  resolvers: string[][];
  errors: Error[];
  /** onPolicies calls, and where they fell among onPods calls */
  policies: Array<{ objects: PolicyObjects; afterSnapshots: number }>;
  started: Promise<void>;
}

async function harness(
  t: TestContext,
  setup?: (server: FakeApiServer) => void,
  opts: { down?: boolean; policies?: boolean } = {},
): Promise<Harness> {
  const server = await FakeApiServer.start();
  t.after(() => server.close());
  setup?.(server);
  if (opts.down) server.setDown(true);
  const snapshots: PodSpec[][] = [];
  const resolvers: string[][] = [];
  const errors: Error[] = [];
  const policies: Harness['policies'] = [];
  const source = new KubernetesSource({
    kubeConfig: server.kubeConfig(),
    nodeName: NODE,
    policies: opts.policies ?? false,
    onPolicies: (objects) => policies.push({ objects, afterSnapshots: snapshots.length }),
    policyRecheckMs: 100,
    onPods: (pods) => snapshots.push(pods),
    onResolvers: (ips) => resolvers.push(ips),
    onError: (err) => errors.push(err),
    log: pino({ level: 'silent' }),
    backoff: { initialMs: 40, maxMs: 200 },
  });
  t.after(() => source.stop());
  const started = source.start();
  started.catch(() => {});
  return { server, source, snapshots, resolvers, errors, policies, started };
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 1000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const names = (pods: PodSpec[] | undefined) => (pods ?? []).map((p) => `${p.namespace}/${p.name}`);
const last = <T>(xs: T[]) => xs[xs.length - 1];
const find = (h: Harness, name: string) => h.source.snapshot?.find((p) => p.name === name);

test('pods of this node appear; other nodes, host-network, IP-less and finished pods do not', async (t) => {
  const h = await harness(t, (s) => {
    s.addPod({
      namespace: 'shop',
      name: 'payments',
      nodeName: NODE,
      ips: ['198.18.1.2', '2001:db8:1::2'],
      annotations: { [ALLOW]: 'api.stripe.com:443' },
    });
    s.addPod({ namespace: 'shop', name: 'elsewhere', nodeName: 'node-b', ips: ['198.18.2.2'] });
  });
  await h.started;
  assert.deepEqual(h.snapshots.length, 1, 'start() resolves after the first snapshot was emitted');
  assert.deepEqual(h.source.snapshot, [
    {
      namespace: 'shop',
      name: 'payments',
      ips: ['198.18.1.2', '2001:db8:1::2'],
      annotations: { [ALLOW]: 'api.stripe.com:443' },
      labels: {},
    },
  ]);
  assert.equal('interface' in h.source.snapshot![0]!, false);

  const t0 = Date.now();
  h.server.addPod({ namespace: 'shop', name: 'frontend', nodeName: NODE, ips: ['198.18.1.3'] });
  await waitFor('frontend', () => find(h, 'frontend'));
  assert.ok(Date.now() - t0 < 1000);

  h.server.addPod({
    namespace: 'kube-system',
    name: 'hostnet',
    nodeName: NODE,
    ips: ['198.18.0.1'],
    hostNetwork: true,
    annotations: { [ALLOW]: '' },
  });
  h.server.addPod({ namespace: 'shop', name: 'other-node', nodeName: 'node-b', ips: ['198.18.2.3'] });
  h.server.addPod({ namespace: 'shop', name: 'pending', nodeName: NODE });
  h.server.addPod({ namespace: 'shop', name: 'unscheduled', ips: [] });
  h.server.addPod({ namespace: 'shop', name: 'marker', nodeName: NODE, ips: ['198.18.1.9'] });
  await waitFor('marker', () => find(h, 'marker'));
  assert.deepEqual(names(h.source.snapshot), ['shop/frontend', 'shop/marker', 'shop/payments']);

  // the pending pod gets its address (podIP only: the fallback) and appears
  h.server.updatePod('shop', 'pending', (p) => {
    p.status = { phase: 'Running', podIP: '198.18.1.4' };
  });
  await waitFor('pending with its podIP', () => find(h, 'pending')?.ips[0] === '198.18.1.4');
  // a pod bound to this node later (starts matching the field selector) appears
  h.server.updatePod('shop', 'unscheduled', (p) => {
    (p.spec as Record<string, unknown>).nodeName = NODE;
    p.status = { phase: 'Running', podIP: '198.18.1.5', podIPs: [{ ip: '198.18.1.5' }] };
  });
  await waitFor('unscheduled, now bound', () => find(h, 'unscheduled'));
  // a finished pod leaves
  h.server.updatePod('shop', 'marker', (p) => {
    (p.status as Record<string, unknown>).phase = 'Succeeded';
  });
  await waitFor('marker gone', () => !find(h, 'marker'));
  assert.ok(
    h.snapshots.every((s) => s.every((p) => p.name !== 'hostnet' && p.name !== 'other-node' && p.name !== 'elsewhere')),
  );
  assert.deepEqual(h.errors, []);
});

test('annotation edits, IP changes and deletes arrive', async (t) => {
  const h = await harness(t, (s) => {
    s.addPod({
      namespace: 'shop',
      name: 'payments',
      nodeName: NODE,
      ips: ['198.18.1.2'],
      annotations: { [ALLOW]: 'api.stripe.com' },
    });
  });
  await h.started;
  h.server.updatePod('shop', 'payments', (p) => {
    (p.metadata.annotations as Record<string, string>)[ALLOW] = '*.kadath.io:443/tcp';
  });
  await waitFor('new annotation', () => find(h, 'payments')?.annotations[ALLOW] === '*.kadath.io:443/tcp');
  h.server.updatePod('shop', 'payments', (p) => {
    p.status = { phase: 'Running', podIP: '198.18.1.7', podIPs: [{ ip: '198.18.1.7' }, { ip: '2001:db8:1::7' }] };
  });
  await waitFor('new IPs', () => find(h, 'payments')?.ips.join() === '198.18.1.7,2001:db8:1::7');
  h.server.deletePod('shop', 'payments');
  await waitFor('empty snapshot after the delete', () => h.source.snapshot?.length === 0);
  assert.deepEqual(last(h.snapshots), []);
  // no duplicate snapshots: every emitted snapshot differs from the one before
  for (let i = 1; i < h.snapshots.length; i++) assert.notDeepEqual(h.snapshots[i], h.snapshots[i - 1]);
});

test('410 Gone leads to a relist and the snapshot converges, including a delete made during the gap', async (t) => {
  const h = await harness(t, (s) => {
    s.addPod({ namespace: 'shop', name: 'a', nodeName: NODE, ips: ['198.18.1.2'] });
    s.addPod({ namespace: 'shop', name: 'b', nodeName: NODE, ips: ['198.18.1.3'] });
  });
  await h.started;
  const lists = () => h.server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length;
  assert.equal(lists(), 1);
  h.server.setDown(true);
  await waitFor('an error during the gap', () => h.errors.length > 0);
  // what happens during the gap, then the server forgets it
  h.server.deletePod('shop', 'a');
  h.server.addPod({ namespace: 'shop', name: 'c', nodeName: NODE, ips: ['198.18.1.4'] });
  h.server.expireHistory();
  assert.deepEqual(names(h.source.snapshot), ['shop/a', 'shop/b'], 'the last snapshot stands during the outage');
  h.server.setDown(false);
  await waitFor('converged after the relist', () => names(h.source.snapshot).join() === 'shop/b,shop/c', 2000);
  assert.ok(lists() >= 2, 'the pods were listed again');
  assert.ok(
    h.snapshots.every((s) => s.length > 0),
    'never an empty snapshot',
  );
  // it watches again from the new list's resourceVersion and keeps following changes
  h.server.updatePod('shop', 'b', (p) => {
    (p.metadata.annotations as Record<string, string>)[ALLOW] = 'x.example.com';
  });
  await waitFor('a change after the relist', () => find(h, 'b')?.annotations[ALLOW] === 'x.example.com');
});

test('410 Gone on a live watch (history expired while connected) relists without an error', async (t) => {
  const h = await harness(t, (s) => s.addPod({ namespace: 'shop', name: 'a', nodeName: NODE, ips: ['198.18.1.2'] }));
  await h.started;
  const watchesBefore = h.server.requests.filter((r) => r.path === '/api/v1/pods' && r.watch).length;
  h.server.expireHistory(); // ends the open watches; the resumed watch gets an ERROR 410 event
  await waitFor('a relist', () => h.server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length === 2);
  await waitFor(
    'a new watch',
    () => h.server.requests.filter((r) => r.path === '/api/v1/pods' && r.watch).length >= watchesBefore + 2,
  );
  h.server.addPod({ namespace: 'shop', name: 'b', nodeName: NODE, ips: ['198.18.1.3'] });
  await waitFor('b', () => find(h, 'b'));
  assert.deepEqual(h.errors, [], '410 is routine, not an error');
});

test('bookmarks advance the resourceVersion without spurious snapshots', async (t) => {
  const h = await harness(t, (s) => s.addPod({ namespace: 'shop', name: 'a', nodeName: NODE, ips: ['198.18.1.2'] }));
  await h.started;
  const podWatches = () => h.server.requests.filter((r) => r.path === '/api/v1/pods' && r.watch);
  await waitFor('a pod watch', () => h.server.watchCount >= 3);
  assert.equal(last(podWatches())!.query.allowWatchBookmarks, 'true');
  assert.ok(Number(last(podWatches())!.query.timeoutSeconds) > 0);
  // changes this watch does not see move the resourceVersion on; a bookmark tells the client
  for (let i = 0; i < 5; i++)
    h.server.addPod({ namespace: 'shop', name: `far-${i}`, nodeName: 'node-b', ips: [`198.18.2.${i + 1}`] });
  const bookmarkRv = h.server.resourceVersion;
  h.server.sendBookmark();
  await sleep(100);
  assert.equal(h.snapshots.length, 1, 'a bookmark is not a change');
  h.server.closeWatches(); // as at timeoutSeconds: the client resumes from its resourceVersion
  await waitFor('a resumed watch', () => podWatches().length >= 2 && last(podWatches()));
  assert.equal(last(podWatches())!.query.resourceVersion, bookmarkRv, 'resumed from the bookmark');
  assert.equal(h.server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length, 1, 'no relist');
  assert.equal(h.snapshots.length, 1);
  assert.deepEqual(h.errors, []);
});

test('an outage keeps the last snapshot; after recovery a change made during the outage arrives', async (t) => {
  const h = await harness(t, (s) => {
    s.addPod({
      namespace: 'shop',
      name: 'a',
      nodeName: NODE,
      ips: ['198.18.1.2'],
      annotations: { [ALLOW]: 'a.example.com' },
    });
    s.setService({ clusterIPs: ['10.96.0.10'] });
  });
  await h.started;
  const before = h.source.snapshot;
  h.server.setDown(true);
  await waitFor('several failed retries', () => h.errors.length >= 3, 2000);
  assert.match(h.errors[0]!.message, /keeping the last state; retrying in \d+ ms/);
  assert.deepEqual(h.source.snapshot, before);
  assert.equal(h.snapshots.length, 1, 'no snapshot during the outage, empty or not');
  assert.deepEqual(h.resolvers, [['10.96.0.10']], 'resolvers stand too');
  // changes while the agent cannot see them
  h.server.updatePod('shop', 'a', (p) => {
    (p.metadata.annotations as Record<string, string>)[ALLOW] = 'b.example.com';
  });
  h.server.addPod({ namespace: 'shop', name: 'new', nodeName: NODE, ips: ['198.18.1.3'] });
  h.server.setDown(false);
  await waitFor(
    'the change made during the outage',
    () => find(h, 'a')?.annotations[ALLOW] === 'b.example.com' && find(h, 'new'),
    2000,
  );
  assert.ok(h.snapshots.every((s) => s.length > 0));
  // resumed from its resourceVersion (history kept): no relist was needed
  assert.equal(h.server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length, 1);
});

test('start() waits out an API server that is down at first, then resolves', async (t) => {
  const h = await harness(t, (s) => s.addPod({ namespace: 'shop', name: 'a', nodeName: NODE, ips: ['198.18.1.2'] }), {
    down: true,
  });
  let resolved = false;
  void h.started.then(() => (resolved = true));
  await waitFor('errors while down', () => h.errors.length >= 2);
  assert.equal(resolved, false);
  assert.equal(h.source.snapshot, undefined);
  h.server.setDown(false);
  await h.started;
  assert.deepEqual(names(h.source.snapshot), ['shop/a']);
});

test('stop() before the first list rejects start()', async (t) => {
  const h = await harness(t, undefined, { down: true });
  h.source.stop();
  await assert.rejects(h.started, /stopped before the first list/);
});

test('resolvers: the kube-dns clusterIPs and ready EndpointSlice addresses, followed as they change', async (t) => {
  const h = await harness(t, (s) => {
    s.setService({ clusterIPs: ['10.96.0.10', 'fd00:10:96::a'] });
    s.setService({ clusterIPs: ['10.96.0.99'] }, 'not-dns');
    s.setEndpointSlice('kube-dns-abc', [
      { addresses: ['198.18.5.2'], ready: true },
      { addresses: ['198.18.5.3'], ready: false },
      { addresses: ['198.18.5.4'] }, // readiness unknown counts as ready
    ]);
    s.setEndpointSlice('other-xyz', [{ addresses: ['198.18.9.9'], ready: true }], { service: 'other' });
  });
  await h.started;
  assert.deepEqual(h.resolvers, [['10.96.0.10', '198.18.5.2', '198.18.5.4', 'fd00:10:96::a']]);

  h.server.setEndpointSlice('kube-dns-abc', [
    { addresses: ['198.18.5.2'], ready: true },
    { addresses: ['198.18.5.3'], ready: true },
  ]);
  await waitFor(
    'the endpoint that became ready',
    () => last(h.resolvers)!.includes('198.18.5.3') && !last(h.resolvers)!.includes('198.18.5.4'),
  );
  h.server.setEndpointSlice('kube-dns-v6', [{ addresses: ['2001:db8:1::53', '198.18.5.2'] }], { addressType: 'IPv6' });
  await waitFor('a second slice', () => last(h.resolvers)!.includes('2001:db8:1::53'));
  h.server.setService({ clusterIPs: ['10.96.0.11'] });
  await waitFor('the changed Service', () => last(h.resolvers)!.includes('10.96.0.11'));
  assert.deepEqual(last(h.resolvers), ['10.96.0.11', '198.18.5.2', '198.18.5.3', '2001:db8:1::53']);
  h.server.setEndpointSlice('kube-dns-v6', undefined);
  h.server.setService(undefined);
  await waitFor('the deleted slice and Service', () => last(h.resolvers)!.join() === '198.18.5.2,198.18.5.3');
  // an unrelated pod change does not re-announce resolvers
  const count = h.resolvers.length;
  h.server.addPod({ namespace: 'shop', name: 'x', nodeName: NODE, ips: ['198.18.1.2'] });
  await waitFor('x', () => find(h, 'x'));
  assert.equal(h.resolvers.length, count);
  for (let i = 1; i < h.resolvers.length; i++) assert.notDeepEqual(h.resolvers[i], h.resolvers[i - 1]);
});

test('podEvent posts an Event on the pod; failures are logged, not thrown', async (t) => {
  const h = await harness(t, (s) =>
    s.addPod({ namespace: 'shop', name: 'payments', nodeName: NODE, ips: ['198.18.1.2'] }),
  );
  await h.started;
  const uid = h.server.getPod('shop', 'payments')!.metadata.uid;
  await h.source.podEvent(
    { namespace: 'shop', name: 'payments' },
    'InvalidAnnotation',
    'fqdn-egress.io/allow: invalid entry "*": a lone wildcard',
    'Warning',
  );
  assert.equal(h.server.events.length, 1);
  const ev = h.server.events[0] as Record<string, any>;
  assert.equal(h.server.requests.find((r) => r.method === 'POST')!.path, '/api/v1/namespaces/shop/events');
  assert.deepEqual(ev.involvedObject, { apiVersion: 'v1', kind: 'Pod', namespace: 'shop', name: 'payments', uid });
  assert.equal(ev.reason, 'InvalidAnnotation');
  assert.equal(ev.type, 'Warning');
  assert.equal(ev.message, 'fqdn-egress.io/allow: invalid entry "*": a lone wildcard');
  assert.equal(ev.metadata.namespace, 'shop');
  assert.match(ev.metadata.name, /^payments\.[0-9a-f]+$/);
  assert.equal(ev.source.host, NODE);
  assert.ok(!Number.isNaN(Date.parse(ev.firstTimestamp)));

  // the same event again soon after is not posted twice; another one is
  await h.source.podEvent(
    { namespace: 'shop', name: 'payments' },
    'InvalidAnnotation',
    'fqdn-egress.io/allow: invalid entry "*": a lone wildcard',
    'Warning',
  );
  await h.source.podEvent({ namespace: 'shop', name: 'payments' }, 'EnforcementStarted', 'enforcing 1 name', 'Normal');
  assert.equal(h.server.events.length, 2);
  assert.equal((h.server.events[1] as Record<string, any>).type, 'Normal');

  // a pod the source does not know: no uid, still posted
  await h.source.podEvent({ namespace: 'other', name: 'ghost' }, 'EnforcementStarted', 'hello', 'Normal');
  assert.deepEqual((h.server.events[2] as Record<string, any>).involvedObject, {
    apiVersion: 'v1',
    kind: 'Pod',
    namespace: 'other',
    name: 'ghost',
  });

  h.server.setDown(true);
  await h.source.podEvent({ namespace: 'shop', name: 'payments' }, 'EnforcementStarted', 'while down', 'Normal'); // resolves
  assert.equal(h.server.events.length, 3);
});

test('podSpecOf and Backoff', () => {
  const pod = {
    metadata: { namespace: 'n', name: 'p' },
    spec: { nodeName: NODE, containers: [] },
    status: { phase: 'Running', podIPs: [{ ip: '198.18.1.2' }, { ip: 'bogus' }] },
  };
  assert.deepEqual(podSpecOf(pod, NODE), {
    namespace: 'n',
    name: 'p',
    ips: ['198.18.1.2'],
    annotations: {},
    labels: {},
  });
  assert.equal(podSpecOf({ ...pod, status: { phase: 'Failed', podIP: '198.18.1.2' } }, NODE), undefined);
  assert.equal(podSpecOf(pod, 'node-b'), undefined);

  const b = new Backoff(100, 1000, () => 0.999);
  const delays = Array.from({ length: 8 }, () => b.next());
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
  b.reset();
  const low = new Backoff(100, 1000, () => 0);
  assert.deepEqual([low.next(), low.next()], [50, 100], 'jitter: between half and the full delay');
  assert.equal(b.next(), 100);
});

// ---- policy resources ------------------------------------------------------

const lastPolicies = (h: Harness) => last(h.policies)?.objects;
const policyNames = (h: Harness) => {
  const o = lastPolicies(h);
  const nameOf = (x: unknown) => {
    const m = (x as { metadata: { namespace?: string; name: string } }).metadata;
    return m.namespace ? `${m.namespace}/${m.name}` : m.name;
  };
  return o ? [...o.namespaced.map(nameOf), ...o.cluster.map(nameOf)].sort() : [];
};
const stripe = {
  kind: 'FQDNEgressPolicy' as const,
  metadata: { name: 'stripe', namespace: 'shop' },
  spec: { podSelector: {}, egress: [{ names: ['api.stripe.com'] }] },
};
const baseline = {
  kind: 'ClusterFQDNEgressPolicy' as const,
  metadata: { name: 'baseline' },
  spec: { podSelector: {}, namespaceSelector: { matchLabels: { team: 'a' } }, egress: [{ names: ['*.internal'] }] },
};

test('policies and namespace labels: listed before the first pod snapshot, then watched (edits, deletes, labels)', async (t) => {
  const h = await harness(
    t,
    (s) => {
      s.putPolicy(stripe);
      s.setNamespace('shop', { team: 'a' });
      s.addPod({ namespace: 'shop', name: 'a', nodeName: NODE, ips: ['198.18.1.2'], labels: { app: 'pay' } });
    },
    { policies: true },
  );
  await h.started;
  assert.equal(h.policies.length, 1);
  assert.equal(h.policies[0]!.afterSnapshots, 0, 'the policies come before the first pod snapshot');
  assert.deepEqual(policyNames(h), ['shop/stripe']);
  assert.deepEqual(lastPolicies(h)!.namespaces.shop, { team: 'a', 'kubernetes.io/metadata.name': 'shop' });
  assert.deepEqual(find(h, 'a')?.labels, { app: 'pay' }, 'pods carry their labels');
  for (const path of [
    '/apis/fqdn-egress.io/v1alpha1/fqdnegresspolicies',
    '/apis/fqdn-egress.io/v1alpha1/clusterfqdnegresspolicies',
    '/api/v1/namespaces',
  ]) {
    const watch = await waitFor(`a watch on ${path}`, () => h.server.requests.find((r) => r.path === path && r.watch));
    assert.equal(watch.query.allowWatchBookmarks, 'true', path);
  }

  h.server.putPolicy(baseline);
  await waitFor('the cluster policy', () => policyNames(h).includes('baseline'));
  h.server.putPolicy({ ...stripe, spec: { ...stripe.spec, mode: 'audit' } });
  await waitFor(
    'the edit',
    () => (lastPolicies(h)!.namespaced[0] as { spec: { mode?: string } }).spec.mode === 'audit',
  );
  h.server.setNamespace('shop', { team: 'b' });
  await waitFor('the namespace label change', () => lastPolicies(h)!.namespaces.shop?.team === 'b');
  h.server.deletePolicy('FQDNEgressPolicy', 'stripe', 'shop');
  await waitFor('the delete', () => policyNames(h).join() === 'baseline');
  const calls = h.policies.length;
  h.server.updatePod('shop', 'a', (p) => {
    p.metadata.labels = { app: 'web' };
  });
  await waitFor('the pod label change', () => find(h, 'a')?.labels?.app === 'web');
  assert.equal(h.policies.length, calls, 'a pod change does not repeat the policies');
  assert.deepEqual(h.errors, []);
});

test('policies: 410 Gone relists them and a delete made during the gap arrives; a resourceVersion-only change is no change', async (t) => {
  const h = await harness(
    t,
    (s) => {
      s.putPolicy(stripe);
      s.putPolicy(baseline);
    },
    { policies: true },
  );
  await h.started;
  const lists = () =>
    h.server.requests.filter((r) => r.path === '/apis/fqdn-egress.io/v1alpha1/clusterfqdnegresspolicies' && !r.watch)
      .length;
  h.server.setDown(true);
  await waitFor('an error during the gap', () => h.errors.length > 0);
  h.server.deletePolicy('ClusterFQDNEgressPolicy', 'baseline');
  h.server.expireHistory();
  h.server.setDown(false);
  await waitFor('converged after the relist', () => policyNames(h).join() === 'shop/stripe', 3000);
  assert.ok(lists() >= 2, 'the cluster policies were listed again');
  const calls = h.policies.length;
  h.server.putPolicy(stripe); // same spec, new resourceVersion
  await sleep(150);
  assert.equal(h.policies.length, calls, 'nothing that decides changed');
});

test('policy CRDs not installed: the source starts with no policies, and picks them up once installed', async (t) => {
  const h = await harness(t, (s) => s.setCrdsInstalled(false), { policies: true });
  await h.started;
  assert.deepEqual(policyNames(h), [], 'no policies in force');
  assert.deepEqual(h.errors, [], 'an absent CRD is not an API error');
  h.server.setCrdsInstalled(true);
  h.server.putPolicy(stripe);
  await waitFor('the policy after the CRD appeared', () => policyNames(h).join() === 'shop/stripe', 2000);
  h.server.setCrdsInstalled(false); // deleting a CRD deletes its objects
  await waitFor('no policies after the CRD went', () => policyNames(h).length === 0, 2000);
  const errors = h.errors.length;
  h.server.setCrdsInstalled(true);
  h.server.putPolicy(baseline);
  await waitFor('a policy after the CRD came back', () => policyNames(h).join() === 'baseline', 2000);
  assert.equal(h.errors.length, errors, 'the watch answering 404 meanwhile is not an API error');
});

test('without the policies option nothing of them is listed or watched', async (t) => {
  const h = await harness(t, (s) => s.putPolicy(stripe));
  await h.started;
  assert.equal(h.policies.length, 0);
  assert.equal(
    h.server.requests.filter((r) => r.path.includes('fqdn-egress.io') || r.path === '/api/v1/namespaces').length,
    0,
  );
});
