/*
 * The datapath's feature states (agent/datapath/features.ts), their metric,
 * their fqe_config bits and egressctl's rendering of them, and the per-pod
 * notices a missing feature calls for (agent/pods/feature-notices.ts). Pure: no
 * root, no kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  datapathFeatures,
  featureFlags,
  featuresFromFlags,
  startupLines,
  FEATURES,
  type DatapathFacts,
  type FeatureState,
} from '../../agent/datapath/features.js';
import { podNotices, PodNoticeLedger } from '../../agent/pods/feature-notices.js';
import { ConfigFlag } from '../../agent/datapath/codecs.js';
import { parsePodPolicy } from '../../agent/policy/annotation.js';
import { POLICY_LIMITS } from '../helpers/policy-limits.js';
import { AgentMetrics } from '../../agent/observability/metrics.js';
import { renderStatus } from '../../agent/cli/render.js';
import type { StatusReport } from '../../agent/cli/state.js';

const ALL_THERE: DatapathFacts = {
  inlineLearnerUnavailable: null,
  enforcerOnPreciseClock: null,
  tlsCheckUnavailable: null,
  dnsQueryFilterUnavailable: null,
};
const TCX = { mode: 'auto' as const, tcxUnavailable: null };

function states(features: FeatureState[]): Record<string, string> {
  return Object.fromEntries(features.map((f) => [f.feature, f.state]));
}

test('feature states: the best everywhere on a kernel that has it all', () => {
  const f = datapathFeatures(ALL_THERE, TCX, true);
  assert.deepEqual(states(f), {
    'inline-learner': 'on',
    'enforcer-clock': 'coarse',
    'tls-check': 'on',
    'dns-query-filter': 'on',
    attach: 'tcx',
    'tcx-head-guard': 'on',
  });
  assert.ok(f.every((x) => x.best && x.reason === undefined));
  assert.deepEqual(startupLines(f), [], 'nothing to say');
  assert.deepEqual(
    Object.keys(FEATURES),
    f.map((x) => x.feature),
    'every feature, in the documented order',
  );
});

test('feature states: each fallback, with its reason', () => {
  const cases: Array<
    [
      string,
      DatapathFacts,
      typeof TCX | { mode: 'legacy' | 'auto'; tcxUnavailable: string | null },
      boolean,
      Record<string, string>,
      Record<string, string>,
    ]
  > = [
    [
      'inline learner refused',
      { ...ALL_THERE, inlineLearnerUnavailable: 'bpf_loop: unknown func' },
      TCX,
      true,
      { 'inline-learner': 'off' },
      { 'inline-learner': 'bpf_loop: unknown func' },
    ],
    [
      'precise clock',
      { ...ALL_THERE, enforcerOnPreciseClock: 'bpf_ktime_get_coarse_ns: unknown func' },
      TCX,
      true,
      { 'enforcer-clock': 'precise' },
      { 'enforcer-clock': 'bpf_ktime_get_coarse_ns: unknown func' },
    ],
    [
      'no TLS check',
      { ...ALL_THERE, tlsCheckUnavailable: 'too complex' },
      TCX,
      true,
      { 'tls-check': 'off' },
      { 'tls-check': 'too complex' },
    ],
    [
      'no query filter',
      { ...ALL_THERE, dnsQueryFilterUnavailable: 'too complex' },
      TCX,
      true,
      { 'dns-query-filter': 'off' },
      { 'dns-query-filter': 'too complex' },
    ],
    [
      'no tcx in the kernel',
      ALL_THERE,
      { mode: 'auto', tcxUnavailable: 'Invalid argument (EINVAL)' },
      true,
      { attach: 'legacy', 'tcx-head-guard': 'n/a' },
      { attach: 'Invalid argument (EINVAL)' },
    ],
    [
      'legacy forced',
      ALL_THERE,
      { mode: 'legacy', tcxUnavailable: null },
      true,
      { attach: 'legacy', 'tcx-head-guard': 'n/a' },
      { attach: '--attach-mode legacy' },
    ],
    ['guard off', ALL_THERE, TCX, false, { 'tcx-head-guard': 'off' }, { 'tcx-head-guard': '--tcx-head-guard off' }],
  ];
  for (const [what, facts, attach, guard, want, reasons] of cases) {
    const f = datapathFeatures(facts, attach, guard);
    const changed = f.filter((x) => x.state !== FEATURES[x.feature][0]);
    assert.deepEqual(states(changed), want, what);
    assert.deepEqual(
      Object.fromEntries(f.filter((x) => x.reason).map((x) => [x.feature, x.reason])),
      reasons,
      `${what}: reasons`,
    );
    const lines = startupLines(f);
    assert.equal(
      lines.length,
      Object.keys(reasons).length,
      `${what}: one line per feature not at its best (n/a is not a fallback)`,
    );
    for (const l of lines) {
      assert.match(l.msg, /^datapath feature [a-z-]+ is [a-z/]+: .+/, what);
      assert.equal(l.fields.reason, reasons[l.fields.feature as string], what);
    }
  }
  const refused = startupLines(
    datapathFeatures({ ...ALL_THERE, inlineLearnerUnavailable: 'bpf_loop: unknown func' }, TCX, true),
  );
  assert.equal(refused[0]!.level, 'error', 'a kernel refusing the inline learner is an error');
  const switchedOff = startupLines(
    datapathFeatures({ ...ALL_THERE, inlineLearnerUnavailable: 'switched off' }, TCX, true),
  );
  assert.equal(switchedOff[0]!.level, 'warn', 'switched off by a flag: a warning');
});

test('feature states round-trip through the fqe_config bits; an older agent wrote none; the guard is off while the agent is down', () => {
  const worst = datapathFeatures(
    {
      inlineLearnerUnavailable: 'x',
      enforcerOnPreciseClock: 'x',
      tlsCheckUnavailable: 'x',
      dnsQueryFilterUnavailable: 'x',
    },
    { mode: 'legacy', tcxUnavailable: null },
    true,
  );
  for (const f of [datapathFeatures(ALL_THERE, TCX, true), datapathFeatures(ALL_THERE, TCX, false), worst]) {
    const flags = featureFlags(f);
    assert.ok(flags & ConfigFlag.statesWritten);
    assert.deepEqual(states(featuresFromFlags(flags, true)!), states(f));
  }
  assert.equal(
    featureFlags(worst) & ConfigFlag.inlineLearnerOff,
    ConfigFlag.inlineLearnerOff,
    'the bit the kernel reads',
  );
  assert.equal(featureFlags(datapathFeatures(ALL_THERE, TCX, true)) & ~ConfigFlag.statesWritten, 0);
  assert.equal(featuresFromFlags(ConfigFlag.inlineLearnerOff, true), null, 'an agent from before the states');
  const down = featuresFromFlags(featureFlags(datapathFeatures(ALL_THERE, TCX, true)), false)!;
  assert.deepEqual(
    down.find((f) => f.feature === 'tcx-head-guard'),
    { feature: 'tcx-head-guard', state: 'off', best: false, reason: 'the agent is down' },
  );
});

test("fqdn_egress_datapath_feature: 1 for each feature's state, 0 for its other states", async () => {
  const metrics = new AgentMetrics({
    podCounters: () => [],
    maps: () => [],
    cacheEntries: () => 0,
    enforcedPods: () => 0,
    socketDrops: () => 0,
    contestedInterfaces: () => 0,
    recoveryPending: () => 0,
    policies: () => [],
  });
  metrics.setFeatures(
    datapathFeatures({ ...ALL_THERE, tlsCheckUnavailable: 'too complex' }, TCX, true).map((f) => ({
      ...f,
      states: FEATURES[f.feature],
    })),
  );
  const text = await metrics.registry.metrics();
  const series = text.split('\n').filter((l) => l.startsWith('fqdn_egress_datapath_feature{'));
  assert.equal(
    series.length,
    Object.values(FEATURES).reduce((n, s) => n + s.length, 0),
    'every state of every feature',
  );
  assert.ok(series.includes('fqdn_egress_datapath_feature{feature="tls-check",state="off"} 1'));
  assert.ok(series.includes('fqdn_egress_datapath_feature{feature="tls-check",state="on"} 0'));
  assert.ok(series.includes('fqdn_egress_datapath_feature{feature="tcx-head-guard",state="on"} 1'));
  assert.ok(series.includes('fqdn_egress_datapath_feature{feature="tcx-head-guard",state="n/a"} 0'));
  assert.equal(
    series.filter((l) => l.endsWith(' 1')).length,
    Object.keys(FEATURES).length,
    'one current state per feature',
  );
});

test('pod notices: tls rules without the TLS check, a filtered pod without the query filter; once per pod', () => {
  const none = datapathFeatures(ALL_THERE, TCX, true);
  const degraded = datapathFeatures(
    { ...ALL_THERE, tlsCheckUnavailable: 'program too large', dnsQueryFilterUnavailable: 'program too large' },
    TCX,
    true,
  );
  const tlsPod = {
    policy: parsePodPolicy(
      { 'fqdn-egress.io/allow': 'api.stripe.com:443/tls, *.kadath.io:8443/tls, plain.test' },
      POLICY_LIMITS,
    ),
    dnsFilter: 'off' as const,
  };
  const filtered = {
    policy: parsePodPolicy({ 'fqdn-egress.io/allow': 'plain.test' }, POLICY_LIMITS),
    dnsFilter: 'on' as const,
  };
  assert.deepEqual(podNotices(none, tlsPod), [], 'all there: nothing to say');
  assert.deepEqual(
    podNotices(degraded, {
      ...tlsPod,
      policy: parsePodPolicy({ 'fqdn-egress.io/allow': 'plain.test:443/tcp' }, POLICY_LIMITS),
    }),
    [],
    'no tls rule, filter off: not affected',
  );
  const [tls] = podNotices(degraded, tlsPod);
  assert.equal(tls!.reason, 'TlsCheckUnavailable');
  assert.equal(
    tls!.message,
    "the kernel of this node runs the enforcer without the TLS server name check (program too large): this pod's tls destinations (api.stripe.com:443/tls, *.kadath.io:8443/tls) are refused on this node",
  );
  const [dns] = podNotices(degraded, filtered);
  assert.equal(dns!.reason, 'DnsQueryFilterUnavailable');
  assert.match(
    dns!.message,
    /without the DNS query filter \(program too large\): every DNS query of this pod is refused on this node; fqdn-egress.io\/dns-filter: "off"/,
  );
  assert.match(
    podNotices(degraded, {
      ...filtered,
      policy: parsePodPolicy({ 'fqdn-egress.io/allow': 'plain.test', 'fqdn-egress.io/mode': 'audit' }, POLICY_LIMITS),
    })[0]!.message,
    /\(audit mode: reported, not refused\)/,
  );

  const ledger = new PodNoticeLedger();
  assert.equal(ledger.due('shop/a', podNotices(degraded, tlsPod)).length, 1);
  assert.deepEqual(ledger.due('shop/a', podNotices(degraded, tlsPod)), [], 'not again on the next sync');
  assert.deepEqual(
    ledger.due('shop/a', podNotices(degraded, { ...tlsPod, dnsFilter: 'on' })).map((n) => n.reason),
    ['DnsQueryFilterUnavailable'],
    'a new notice for the same pod is given',
  );
  assert.equal(ledger.due('shop/b', podNotices(degraded, tlsPod)).length, 1, 'per pod');
  ledger.forget('shop/a');
  assert.equal(ledger.due('shop/a', podNotices(degraded, tlsPod)).length, 1, 'a pod of that name later is told again');
});

test('egressctl status renders every feature on one line and explains each fallback', () => {
  const base: StatusReport = {
    pinDir: '/sys/fs/bpf/x',
    agent: { running: true, pid: 1, heartbeatAgeSeconds: 0.2, inlineLearner: 'on' },
    features: null,
    interfaces: [],
    maps: [],
    totals: { passed: '0', dropped: '0', audited: '0', learnedInKernel: '0', answersLeftToAgent: '0' },
  };
  const best = renderStatus({ ...base, features: datapathFeatures(ALL_THERE, TCX, true) }, { color: false });
  assert.match(
    best,
    /^datapath: inline-learner on, enforcer-clock coarse, tls-check on, dns-query-filter on, attach tcx, tcx-head-guard on$/m,
  );
  const legacy = datapathFeatures(
    { ...ALL_THERE, inlineLearnerUnavailable: 'switched off' },
    { mode: 'legacy', tcxUnavailable: null },
    true,
  ).map((f) => ({ ...f, effect: 'EFFECT' }));
  const text = renderStatus({ ...base, features: legacy }, { color: false });
  assert.match(
    text,
    /^datapath: inline-learner off, enforcer-clock coarse, tls-check on, dns-query-filter on, attach legacy, tcx-head-guard n\/a$/m,
  );
  assert.match(text, /^ {2}inline-learner off \(switched off\): EFFECT$/m);
  assert.match(text, /^ {2}attach legacy \(--attach-mode legacy\): EFFECT$/m);
  assert.match(
    renderStatus(base, { color: false }),
    /^inline DNS learner: on \(other feature states: not written by this agent\)$/m,
  );
});
