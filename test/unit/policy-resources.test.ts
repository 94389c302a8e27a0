/*
 * Policy resources (agent/policy/resources.ts): reading FQDNEgressPolicy and
 * ClusterFQDNEgressPolicy objects, label selectors with Kubernetes'
 * semantics, and what a pod may reach when policies select it: the union of
 * their rules, audit only when all audit, the annotation ignored; bad input
 * fails closed. Pure; no kernel needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parsePolicy,
  parseSelector,
  policiesSelecting,
  resolvePodPolicy,
  selectorMatches,
  namespaceLabelsOf,
  MAX_ENTRIES_PER_POLICY,
  type EgressPolicy,
} from '../../agent/policy/resources.js';
import { ALLOW_ANNOTATION, MODE_ANNOTATION, rulesForName } from '../../agent/policy/annotation.js';
import { POLICY_LIMITS } from '../helpers/policy-limits.js';

function policy(name: string, spec: Record<string, unknown>, namespace = 'shop'): EgressPolicy {
  const p = parsePolicy({ kind: 'FQDNEgressPolicy', metadata: { name, namespace }, spec }, 'policy');
  assert.ok(p);
  return p;
}

function clusterPolicy(name: string, spec: Record<string, unknown>): EgressPolicy {
  const p = parsePolicy({ kind: 'ClusterFQDNEgressPolicy', metadata: { name }, spec }, 'clusterpolicy');
  assert.ok(p);
  return p;
}

test('a policy object is read: selectors, names × ports, mode and dnsFilter, with its origin', () => {
  const p = policy('stripe', {
    podSelector: { matchLabels: { app: 'pay' } },
    egress: [
      {
        names: ['api.stripe.com'],
        ports: [
          { port: 443, protocol: 'TCP' },
          { port: 8443, protocol: 'TLS' },
        ],
      },
      { names: ['*.kadath.io', 'dns.google'] },
      { names: ['udp.example'], ports: [{ port: 53 }] },
    ],
    mode: 'audit',
    dnsFilter: 'off',
  });
  assert.equal(p.origin, 'policy shop/stripe');
  assert.deepEqual(p.errors, []);
  assert.deepEqual(p.podSelector, { requirements: [{ key: 'app', operator: 'In', values: ['pay'] }] });
  assert.deepEqual(
    p.entries.map((e) => e.text),
    ['api.stripe.com:443/tcp', 'api.stripe.com:8443/tls', '*.kadath.io', 'dns.google', 'udp.example:53'],
  );
  assert.equal(p.mode, 'audit');
  assert.equal(p.dnsFilter, 'off');
  const c = clusterPolicy('baseline', {
    podSelector: {},
    namespaceSelector: { matchLabels: { team: 'a' } },
    egress: [],
  });
  assert.equal(c.origin, 'clusterpolicy baseline');
  assert.equal(c.mode, 'enforce');
  assert.equal(c.dnsFilter, 'on');
  assert.equal(parsePolicy({ spec: {} }, 'policy'), undefined, 'no name: nothing to call it by');
});

test('bad parts of a policy are reported by field and allow nothing; the rest applies', () => {
  const p = policy('bad', {
    podSelector: {},
    egress: [
      { names: ['ok.example', 'a*.example', '*', 'x'.repeat(64) + '.example', 7] },
      { names: ['ports.example'], ports: [{ port: 0 }, { port: 443, protocol: 'SCTP' }, { port: 70000 }] },
      { names: ['mixed.example'], ports: [{ port: 'https' }, { port: 8443 }] },
      'not an object',
    ],
    mode: 'Enforce!',
    dnsFilter: true,
  });
  assert.deepEqual(
    p.entries.map((e) => e.text),
    ['ok.example', 'mixed.example:8443'],
    'listed ports that are all bad allow nothing, never any port',
  );
  assert.equal(p.mode, 'enforce', 'a bad mode enforces');
  assert.equal(p.dnsFilter, 'on', 'a bad dnsFilter is on');
  const text = p.errors.join('\n');
  for (const want of [
    /spec\.egress\[0\]\.names\[1\] "a\*\.example"/,
    /spec\.egress\[0\]\.names\[2\] "\*"/,
    /spec\.egress\[0\]\.names\[3\] .*63/,
    /spec\.egress\[0\]\.names\[4\]: expected a string/,
    /spec\.egress\[1\]\.ports\[0\]\.port "0"/,
    /spec\.egress\[1\]\.ports\[1\]\.protocol "SCTP" is unknown/,
    /spec\.egress\[1\]\.ports\[2\]\.port "70000"/,
    /spec\.egress\[2\]\.ports\[0\]\.port "https"/,
    /spec\.egress\[3\]: expected/,
    /spec\.mode "Enforce!" is unknown/,
    /spec\.dnsFilter "true" is unknown/,
  ])
    assert.match(text, want);
});

test('a policy past its entry limit keeps the first entries and says so', () => {
  const names = Array.from({ length: 80 }, (_, i) => `n${i}.example`);
  const ports = Array.from({ length: 60 }, (_, i) => ({ port: 1000 + i }));
  const p = policy('big', { podSelector: {}, egress: [{ names, ports }] });
  assert.equal(p.entries.length, MAX_ENTRIES_PER_POLICY);
  assert.match(p.errors.join('\n'), /more than 4096 names × ports/);
});

test('label selectors follow Kubernetes: In, NotIn, Exists, DoesNotExist; {} selects all; unreadable fails closed', () => {
  const errors: string[] = [];
  const sel = parseSelector(
    {
      matchLabels: { app: 'pay' },
      matchExpressions: [
        { key: 'tier', operator: 'In', values: ['web', 'api'] },
        { key: 'env', operator: 'NotIn', values: ['dev'] },
        { key: 'team', operator: 'Exists' },
        { key: 'legacy', operator: 'DoesNotExist' },
      ],
    },
    'spec.podSelector',
    errors,
  );
  assert.deepEqual(errors, []);
  const base = { app: 'pay', tier: 'api', team: 'a' };
  assert.equal(selectorMatches(sel, base), true);
  assert.equal(selectorMatches(sel, { ...base, env: 'prod' }), true, 'NotIn: another value');
  assert.equal(selectorMatches(sel, { ...base, env: 'dev' }), false);
  assert.equal(selectorMatches(sel, { ...base, tier: 'db' }), false);
  assert.equal(selectorMatches(sel, { app: 'pay', tier: 'api' }), false, 'Exists');
  assert.equal(selectorMatches(sel, { ...base, legacy: '' }), false, 'DoesNotExist');
  assert.equal(selectorMatches(parseSelector({}, 'x', errors), {}), true, '{} selects every pod');
  assert.equal(selectorMatches(parseSelector(undefined, 'x', errors), { a: 'b' }), true);

  const bad = parseSelector(
    { matchLabels: { app: 'pay' }, matchExpressions: [{ key: 'tier', operator: 'Near', values: ['x'] }] },
    'spec.podSelector',
    errors,
  );
  assert.match(
    errors.join('\n'),
    /spec\.podSelector: matchExpressions\[0\]: unknown operator "Near".*matches every pod/,
  );
  assert.equal(
    selectorMatches(bad, { app: 'pay' }),
    true,
    'the unreadable requirement matches: more pods, never fewer',
  );
  assert.equal(selectorMatches(bad, { app: 'web' }), false, 'the readable ones still narrow');
  for (const raw of [
    { matchExpressions: [{ key: 'k', operator: 'In' }] },
    { matchExpressions: [{ key: 'k', operator: 'Exists', values: ['v'] }] },
    { matchLabels: { k: 1 } },
    'app=pay',
  ]) {
    const e: string[] = [];
    assert.equal(selectorMatches(parseSelector(raw, 's', e), {}), true, JSON.stringify(raw));
    assert.equal(e.length, 1, JSON.stringify(raw));
  }
});

test('which policies select a pod: namespaced ones in its namespace, cluster ones by namespace labels', () => {
  const inShop = policy('pay', { podSelector: { matchLabels: { app: 'pay' } }, egress: [] });
  const allShop = policy('all', { podSelector: {}, egress: [] });
  const otherNs = policy('pay', { podSelector: {}, egress: [] }, 'other');
  const teamA = clusterPolicy('team-a', { podSelector: {}, namespaceSelector: { matchLabels: { team: 'a' } } });
  const byName = clusterPolicy('by-name', {
    podSelector: { matchLabels: { app: 'pay' } },
    namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'shop' } },
  });
  const everywhere = clusterPolicy('everywhere', { podSelector: {} });
  const all = [inShop, allShop, otherNs, teamA, byName, everywhere];
  const origins = (pod: { namespace: string; labels?: Record<string, string> }, ns: Record<string, string>) =>
    policiesSelecting(pod, namespaceLabelsOf(pod.namespace, ns), all).map((p) => p.origin);
  assert.deepEqual(origins({ namespace: 'shop', labels: { app: 'pay' } }, { team: 'a' }), [
    'policy shop/pay',
    'policy shop/all',
    'clusterpolicy team-a',
    'clusterpolicy by-name',
    'clusterpolicy everywhere',
  ]);
  assert.deepEqual(origins({ namespace: 'shop', labels: { app: 'web' } }, {}), [
    'policy shop/all',
    'clusterpolicy everywhere',
  ]);
  assert.deepEqual(origins({ namespace: 'other' }, { team: 'a' }), [
    'policy other/pay',
    'clusterpolicy team-a',
    'clusterpolicy everywhere',
  ]);
});

test('selected pods: the union of the rules, each with its origins; the annotation is ignored', () => {
  const stripe = policy('stripe', {
    podSelector: {},
    egress: [{ names: ['api.stripe.com'], ports: [{ port: 443, protocol: 'TCP' }] }],
  });
  const base = clusterPolicy('baseline', {
    podSelector: {},
    egress: [
      { names: ['api.stripe.com'], ports: [{ port: 443, protocol: 'UDP' }] },
      { names: ['*.internal.example'], ports: [{ port: 443 }] },
    ],
  });
  const annotations = { [ALLOW_ANNOTATION]: 'evil.example', [MODE_ANNOTATION]: 'audit' };
  const p = resolvePodPolicy(annotations, [stripe, base], POLICY_LIMITS);
  assert.equal(p.enforced, true);
  assert.equal(p.mode, 'enforce', 'the annotation cannot switch a policy-selected pod to audit');
  assert.equal(p.annotationIgnored, true);
  assert.deepEqual(p.origins, ['clusterpolicy baseline', 'policy shop/stripe']);
  assert.equal(rulesForName(p, 'evil.example').allowed, false, 'the annotation cannot widen the policies');
  assert.deepEqual(rulesForName(p, 'api.stripe.com'), { allowed: true, ports: [{ port: 443, proto: 'any' }] });
  assert.deepEqual(rulesForName(p, 'db.internal.example').allowed, true);
  const stripeRule = p.rules.find((r) => r.pattern.kind === 'exact' && r.pattern.name === 'api.stripe.com');
  assert.deepEqual(stripeRule?.from, ['clusterpolicy baseline', 'policy shop/stripe']);

  const plain = resolvePodPolicy({}, [stripe], POLICY_LIMITS);
  assert.equal(plain.annotationIgnored, false, 'no annotation: nothing ignored');
  const none = resolvePodPolicy({ [ALLOW_ANNOTATION]: 'a.example' }, [], POLICY_LIMITS);
  assert.deepEqual(none.origins, ['annotation'], 'no policy: the annotation decides');
  assert.equal(none.dnsFilter, undefined, 'no policy: the annotation or the default decides the DNS filter');
  const off = resolvePodPolicy({}, [], POLICY_LIMITS);
  assert.equal(off.enforced, false);
});

test('audit only when every selecting policy audits; the DNS filter off only when every one says off', () => {
  const audit = policy('a', { podSelector: {}, mode: 'audit', dnsFilter: 'off', egress: [] });
  const audit2 = policy('b', { podSelector: {}, mode: 'audit', dnsFilter: 'off', egress: [] });
  const enforce = policy('c', { podSelector: {}, egress: [] });
  assert.equal(resolvePodPolicy({}, [audit, audit2], POLICY_LIMITS).mode, 'audit');
  assert.equal(resolvePodPolicy({}, [audit, audit2], POLICY_LIMITS).dnsFilter, 'off');
  assert.equal(resolvePodPolicy({}, [audit, enforce], POLICY_LIMITS).mode, 'enforce');
  assert.equal(resolvePodPolicy({}, [audit, enforce], POLICY_LIMITS).dnsFilter, 'on');
});

test('the union past the kernel port rules for one name keeps the first ones and warns', () => {
  const ports = (from: number) => Array.from({ length: 5 }, (_, i) => ({ port: from + i, protocol: 'TCP' }));
  const a = policy('a', { podSelector: {}, egress: [{ names: ['x.example'], ports: ports(1000) }] });
  const b = policy('b', { podSelector: {}, egress: [{ names: ['x.example'], ports: ports(2000) }] });
  const p = resolvePodPolicy({}, [a, b], POLICY_LIMITS);
  assert.equal(p.rules[0]!.ports.length, POLICY_LIMITS.portRulesPerName);
  assert.equal(p.warnings.length, 10 - POLICY_LIMITS.portRulesPerName);
  assert.match(p.warnings[0]!, /"x\.example:2003\/tcp" of policy shop\/b: .* allows nothing/);
});
