/*
 * The datapath's feature states: what this node's kernel and flags let the
 * agent run, and what falls back where a feature cannot exist. Pure: it
 * knows no maps and does no I/O.
 *
 * Features and their states (stable names: the metric
 * fqdn_egress_datapath_feature{feature,state}, egressctl status and the
 * docs/architecture.md use them; the first state is the best one):
 *   inline-learner     on | off        the DNS learner in the kernel (off: switched off, or the kernel refused it)
 *   enforcer-clock     coarse | precise the enforcer's clock (precise: a kernel before 5.11, a little slower)
 *   tls-check          on | off        the TLS server name check (off: tls-only destinations refused)
 *   dns-query-filter   on | off        the DNS query filter (off: filtered pods' queries refused)
 *   attach             tcx | legacy    how programs go on pod interfaces (legacy: a tcx program that passes runs first)
 *   tcx-head-guard     on | off | n/a  head-guard.ts (n/a: legacy attach)
 *
 * From the facts Datapath.load recorded, the attach choice and the guard's
 * switch it builds the list (datapathFeatures); says once, at start-up,
 * what each state that is not the best means (startupLines); writes the
 * states as fqe_config flag bits, which egressctl reads back while the
 * agent is down (featureFlags, featuresFromFlags; the kernel reads none
 * of them but FQE_CFG_INLINE_LEARNER_OFF). Which pods a missing feature
 * hurts is feature-notices.ts's.
 */
import { ConfigFlag } from './codecs.js';
import type { AttachMode } from './attach.js';

export const FEATURES = {
  'inline-learner': ['on', 'off'],
  'enforcer-clock': ['coarse', 'precise'],
  'tls-check': ['on', 'off'],
  'dns-query-filter': ['on', 'off'],
  attach: ['tcx', 'legacy'],
  'tcx-head-guard': ['on', 'off', 'n/a'],
} as const;

export type Feature = keyof typeof FEATURES;
export type FeatureStateName = (typeof FEATURES)[Feature][number];

export interface FeatureState {
  feature: Feature;
  state: FeatureStateName;
  /** the best state this feature has (n/a counts as best: nothing to miss) */
  best: boolean;
  /** why it is not the best, when known (the kernel's answer, a flag) */
  reason?: string;
}

/** What a state that is not the best means, in words (log lines, egressctl). */
export const FEATURE_EFFECTS: Record<string, string> = {
  'inline-learner/off':
    'learning in userspace only: a connection made right after its DNS answer may be dropped, and nothing new is learned while the agent is down',
  'enforcer-clock/precise': 'the enforcer reads the precise clock (kernel before 5.11): a little slower per packet',
  'tls-check/off':
    'the enforcer has no TLS server name check: connections only a tls rule allows are refused (fail closed)',
  'dns-query-filter/off':
    'the enforcer has no DNS query filter: every DNS query of a pod whose filter is on is refused (fail closed)',
  'attach/legacy': "programs attached through legacy tc: a tcx program (a CNI's) that passes runs first and skips them",
  'tcx-head-guard/off':
    'nobody takes the head of the tcx chains back: a program put before ours keeps it, and a pass from it skips ours',
};

export function featureEffect(f: Pick<FeatureState, 'feature' | 'state'>): string | undefined {
  return FEATURE_EFFECTS[`${f.feature}/${f.state}`];
}

/** The facts Datapath.load records (each null when the feature is there, else why not). */
export interface DatapathFacts {
  inlineLearnerUnavailable: string | null;
  enforcerOnPreciseClock: string | null;
  tlsCheckUnavailable: string | null;
  dnsQueryFilterUnavailable: string | null;
}

export interface AttachFacts {
  mode: AttachMode;
  /** null when the kernel has tcx, else its answer (attach.ts's tcxUnavailable) */
  tcxUnavailable: string | null;
}

function state(feature: Feature, value: FeatureStateName, reason?: string | null): FeatureState {
  const best = value === FEATURES[feature][0] || value === 'n/a';
  return { feature, state: value, best, ...(!best && reason ? { reason } : {}) };
}

function onOff(feature: Feature, unavailable: string | null): FeatureState {
  return state(feature, unavailable === null ? 'on' : 'off', unavailable);
}

export function datapathFeatures(dp: DatapathFacts, attach: AttachFacts, headGuard: boolean): FeatureState[] {
  const legacy = attach.mode === 'legacy' ? '--attach-mode legacy' : attach.tcxUnavailable;
  return [
    onOff('inline-learner', dp.inlineLearnerUnavailable),
    state('enforcer-clock', dp.enforcerOnPreciseClock === null ? 'coarse' : 'precise', dp.enforcerOnPreciseClock),
    onOff('tls-check', dp.tlsCheckUnavailable),
    onOff('dns-query-filter', dp.dnsQueryFilterUnavailable),
    state('attach', legacy === null ? 'tcx' : 'legacy', legacy),
    state('tcx-head-guard', legacy !== null ? 'n/a' : headGuard ? 'on' : 'off', '--tcx-head-guard off'),
  ];
}

export function featureState(features: FeatureState[], feature: Feature): FeatureState | undefined {
  return features.find((f) => f.feature === feature);
}

/** One line per feature that is not in its best state, for the agent's start-up. */
export function startupLines(
  features: FeatureState[],
): Array<{ level: 'warn' | 'error'; msg: string; fields: Record<string, unknown> }> {
  return features
    .filter((f) => !f.best)
    .map((f) => ({
      // The kernel refusing the inline learner costs first connections on every node: louder.
      level: f.feature === 'inline-learner' && f.reason !== 'switched off' ? ('error' as const) : ('warn' as const),
      msg: `datapath feature ${f.feature} is ${f.state}: ${featureEffect(f)}`,
      fields: { feature: f.feature, state: f.state, ...(f.reason ? { reason: f.reason } : {}) },
    }));
}

/** fqe_config flag bits for these states (the bits not listed stay clear). */
export function featureFlags(features: FeatureState[]): number {
  const is = (feature: Feature, value: FeatureStateName) => featureState(features, feature)?.state === value;
  return (
    ConfigFlag.statesWritten |
    (is('inline-learner', 'off') ? ConfigFlag.inlineLearnerOff : 0) |
    (is('enforcer-clock', 'precise') ? ConfigFlag.preciseClock : 0) |
    (is('tls-check', 'off') ? ConfigFlag.tlsCheckOff : 0) |
    (is('dns-query-filter', 'off') ? ConfigFlag.dnsQueryFilterOff : 0) |
    (is('attach', 'legacy') ? ConfigFlag.attachLegacy : 0) |
    (is('tcx-head-guard', 'off') ? ConfigFlag.headGuardOff : 0)
  );
}

/**
 * The states the last agent wrote into fqe_config (egressctl). Null when no
 * agent that writes them ran (only the inline learner's bit is known then).
 * The head guard runs in the agent: while it is down the guard is off.
 */
export function featuresFromFlags(flags: number, agentRunning: boolean): FeatureState[] | null {
  if (!(flags & ConfigFlag.statesWritten)) return null;
  const attachLegacy = (flags & ConfigFlag.attachLegacy) !== 0;
  const guard: FeatureState = attachLegacy
    ? state('tcx-head-guard', 'n/a')
    : flags & ConfigFlag.headGuardOff
      ? state('tcx-head-guard', 'off', '--tcx-head-guard off')
      : agentRunning
        ? state('tcx-head-guard', 'on')
        : state('tcx-head-guard', 'off', 'the agent is down');
  return [
    state('inline-learner', flags & ConfigFlag.inlineLearnerOff ? 'off' : 'on'),
    state('enforcer-clock', flags & ConfigFlag.preciseClock ? 'precise' : 'coarse'),
    state('tls-check', flags & ConfigFlag.tlsCheckOff ? 'off' : 'on'),
    state('dns-query-filter', flags & ConfigFlag.dnsQueryFilterOff ? 'off' : 'on'),
    state('attach', attachLegacy ? 'legacy' : 'tcx'),
    guard,
  ];
}
