/*
 * Unit tests of the userspace DNS learner: synthetic frames as the tap
 * delivers them, the kernel's query records as a set, a fake clock, and
 * recording callbacks (no kernel).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { DnsLearner, type LearnedAnswer, type Verdict } from '../../agent/learn/dns-learner.js';
import { parsePodPolicy } from '../../agent/policy/annotation.js';
import { POLICY_LIMITS } from '../helpers/policy-limits.js';
import type { EnforcedPod } from '../../agent/pods/endpoints.js';
import { buildFrame } from '../helpers/frames.js';

const RESOLVER = '192.0.2.2';
const POD_IP = '198.18.1.11';
const IFINDEX = 7;
const OUTGOING = 4;

const pod: EnforcedPod = {
  key: 'shop/payments',
  namespace: 'shop',
  name: 'payments',
  identity: 3,
  ifindex: IFINDEX,
  ifname: 'vp1',
  ips: [POD_IP, '2001:db8:1::11'],
  policy: parsePodPolicy({ 'fqdn-egress.io/allow': 'api.stripe.test, *.kadath.test' }, POLICY_LIMITS),
  dnsFilter: 'on',
};

/** The kernel's query records: "identity|proto|port|id|resolver", consumed when an answer uses one. */
function setup(opts: { kernelQueries?: string[] } = {}) {
  const clock = { t: 0 };
  const learned: LearnedAnswer[] = [];
  const verdicts: Verdict[] = [];
  const kernel = new Set(opts.kernelQueries ?? []);
  const learner = new DnsLearner({
    podByInterface: (ifindex) => (ifindex === IFINDEX ? pod : undefined),
    isTrustedResolver: (ip) => ip === RESOLVER,
    kernelSawQuery: (identity, proto, port, id, resolver) =>
      kernel.delete(`${identity}|${proto}|${port}|${id}|${resolver}`),
    learn: (a) => learned.push(a),
    verdict: (v) => verdicts.push(v),
    minTtlMs: 5000,
    connectGraceMs: 0,
    maxTtlMs: 60_000,
    nowMs: () => clock.t,
  });
  return { clock, learned, verdicts, learner, kernel };
}

/** A query the kernel recorded (the tap never carries queries). */
function asked(id: number, sport = 40000, proto = 'udp'): string {
  return `3|${proto}|${sport}|${id}|${RESOLVER}`;
}

function query(name: string, id: number, sport = 40000) {
  const payload = dnsPacket.encode({ type: 'query', id, questions: [{ type: 'A', name, class: 'IN' }] });
  return {
    data: buildFrame({ src: POD_IP, dst: RESOLVER, proto: 'udp', sport, dport: 53, payload }),
    ifindex: IFINDEX,
    pktType: 0,
    tsNs: 1n,
    origLen: 0,
  };
}

function answer(
  name: string,
  id: number,
  ips: string[],
  o: { from?: string; to?: string; dport?: number; ttl?: number; qname?: string } = {},
) {
  const payload = dnsPacket.encode({
    type: 'response',
    id,
    flags: dnsPacket.RECURSION_AVAILABLE,
    questions: [{ type: 'A', name: o.qname ?? name, class: 'IN' }],
    answers: ips.map((ip) => ({ type: 'A' as const, name, class: 'IN' as const, ttl: o.ttl ?? 300, data: ip })),
  });
  const data = buildFrame({
    src: o.from ?? RESOLVER,
    dst: o.to ?? POD_IP,
    proto: 'udp',
    sport: 53,
    dport: o.dport ?? 40000,
    payload,
  });
  return { data, ifindex: IFINDEX, pktType: OUTGOING, tsNs: 2n, origLen: data.length };
}

test('an answer to a query the kernel recorded, for an allowed name, is learned, TTL clamped', () => {
  const { learned, verdicts, learner } = setup({ kernelQueries: [asked(7), asked(8)] });
  learner.handle([
    answer('api.stripe.test', 7, ['203.0.113.10', '203.0.113.11'], { ttl: 1, qname: 'API.Stripe.test' }),
  ]);
  assert.deepEqual(verdicts, ['accepted']);
  assert.equal(learned.length, 1);
  assert.equal(learned[0]!.name, 'api.stripe.test');
  assert.deepEqual(learned[0]!.answers, [
    { ip: '203.0.113.10', ttlMs: 5000 },
    { ip: '203.0.113.11', ttlMs: 5000 },
  ]);
  learner.handle([answer('www.kadath.test', 8, ['203.0.113.12'], { ttl: 86_400 })]);
  assert.equal(learned[1]!.answers[0]!.ttlMs, 60_000, 'clamped to the max TTL');
});

test('forged and unrelated answers are rejected with their reason', () => {
  const { learned, verdicts, learner } = setup({ kernelQueries: [asked(7), asked(9, 40001)] });
  const cases: Array<[ReturnType<typeof answer>, Verdict]> = [
    [answer('api.stripe.test', 7, ['198.51.100.1'], { from: '203.0.113.99' }), 'rejected-untrusted-resolver'],
    [answer('api.stripe.test', 7, ['198.51.100.2'], { to: '198.18.1.99' }), 'rejected-wrong-destination'],
    [answer('api.stripe.test', 8, ['198.51.100.3']), 'rejected-unsolicited'],
    [answer('api.stripe.test', 7, ['198.51.100.4'], { dport: 40009 }), 'rejected-unsolicited'],
    [answer('blocked.test', 9, ['198.51.100.6'], { dport: 40001 }), 'rejected-name-not-allowed'],
  ];
  for (const [frame, verdict] of cases) {
    verdicts.length = 0;
    learner.handle([frame]);
    assert.deepEqual(verdicts, [verdict]);
  }
  assert.equal(learned.length, 0);
});

test('a query is good for one answer; the same answer seen twice is a duplicate', () => {
  const { learned, verdicts, learner, kernel } = setup({ kernelQueries: [asked(7)] });
  const a = answer('api.stripe.test', 7, ['203.0.113.10']);
  learner.handle([a, a]);
  assert.deepEqual(verdicts, ['accepted', 'duplicate']);
  assert.equal(kernel.size, 0, 'the kernel record was consumed');
  verdicts.length = 0;
  learner.handle([answer('api.stripe.test', 7, ['203.0.113.66'])]);
  assert.deepEqual(verdicts, ['rejected-unsolicited'], 'a second, different answer to the same query');
  assert.equal(learned.length, 1);
});

test('a query the pod sends never reaches the parser as a query: nothing is learned from it', () => {
  const { learned, verdicts, learner } = setup();
  learner.handle([query('api.stripe.test', 7)]);
  assert.deepEqual(verdicts, ['rejected-malformed']);
  learner.handle([answer('api.stripe.test', 7, ['203.0.113.10'])]);
  assert.deepEqual(verdicts, ['rejected-malformed', 'rejected-unsolicited'], 'only the kernel vouches for a query');
  assert.equal(learned.length, 0);
});

test('the transport must match the kernel record', () => {
  const { learned, verdicts, learner } = setup({ kernelQueries: [asked(7, 40000, 'tcp')] });
  learner.handle([answer('api.stripe.test', 7, ['203.0.113.10'])]);
  assert.deepEqual(verdicts, ['rejected-unsolicited'], 'a UDP answer to a TCP query');
  assert.equal(learned.length, 0);
});

test('garbage from the tap is rejected, never thrown', () => {
  const { verdicts, learner } = setup();
  const junk = [Buffer.alloc(0), Buffer.alloc(13), Buffer.from('ff'.repeat(80), 'hex')];
  learner.handle(junk.map((data) => ({ data, ifindex: IFINDEX, pktType: OUTGOING, tsNs: 0n, origLen: data.length })));
  learner.handle([{ ...answer('api.stripe.test', 1, ['203.0.113.10']), ifindex: 99 }]);
  assert.deepEqual(verdicts, ['rejected-frame', 'rejected-frame', 'rejected-frame', 'ignored-not-enforced']);
});
