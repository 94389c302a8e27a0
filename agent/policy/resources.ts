/*
 * Policy resources: FQDNEgressPolicy (namespaced) and ClusterFQDNEgressPolicy
 * (cluster-wide), group fqdn-egress.io/v1alpha1. Parses their API objects,
 * matches them against pods by label selectors, and resolves what a pod may
 * reach. Pure; never throws on bad input: what cannot be read is reported in
 * `errors` and fails closed (see below). Knows nothing of the API server or
 * the kernel.
 *
 *   spec.podSelector        LabelSelector; {} = every pod (of the namespace, or
 *                           of the selected namespaces)
 *   spec.namespaceSelector  cluster policy only; absent or {} = every namespace
 *   spec.egress[]           { names: [NAME | *.NAME], ports?: [{ port, protocol? }] }
 *                           no ports: any port, TCP and UDP; protocol TCP | UDP |
 *                           TLS (TCP with the server name check); none: TCP and UDP
 *   spec.mode               enforce (default) | audit
 *   spec.dnsFilter          on (default) | off
 *
 * Semantics (resolvePodPolicy):
 *   - a pod is enforced when a policy selects it or it carries the annotation;
 *   - it may reach the union of the rules of every policy that selects it;
 *   - when any policy selects it, its fqdn-egress.io/* annotations are ignored;
 *   - it is audited only when every policy that selects it says audit, and its
 *     DNS query filter is off only when every one says off.
 * Failing closed: a selector requirement that cannot be read matches (the
 * policy then applies to more pods, never fewer); a bad name or port allows
 * nothing; a bad mode is enforce, a bad dnsFilter is on.
 *
 * API:
 *   parsePolicy(object, scope): EgressPolicy | undefined   (undefined: no name)
 *   selectorMatches(selector, labels): boolean
 *   policiesSelecting(pod, namespaceLabels, policies): EgressPolicy[]
 *   resolvePodPolicy(annotations, selected, limits): PodPolicy
 */
import {
  ALLOW_ANNOTATION,
  MODE_ANNOTATION,
  mergeEntries,
  parsePodPolicy,
  type PodPolicy,
  type PolicyEntry,
  type PolicyLimits,
  type PolicyMode,
  type PortRule,
} from './annotation.js';
import { DNS_FILTER_ANNOTATION, type DnsFilterMode } from './dns-query-filter.js';
import { NameError, parsePattern } from './pattern.js';

/** The label the API server puts on every namespace: its name. */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

/** Entries (names × ports) one policy may hold; past it the rest allows nothing. */
export const MAX_ENTRIES_PER_POLICY = 4096;

export type PolicyScope = 'policy' | 'clusterpolicy';

export interface Requirement {
  key: string;
  /** 'unreadable': a requirement that could not be read; it matches (fail closed) */
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist' | 'unreadable';
  values: string[];
}

/** A LabelSelector: every requirement must hold; none = everything. */
export interface Selector {
  requirements: Requirement[];
}

export interface EgressPolicy {
  scope: PolicyScope;
  /** the namespace of a namespaced policy */
  namespace: string | undefined;
  name: string;
  /** "policy NS/NAME" or "clusterpolicy NAME": how inspect and logs name it */
  origin: string;
  podSelector: Selector;
  /** a cluster policy's namespaces; everything for a namespaced policy (its own namespace is checked apart) */
  namespaceSelector: Selector;
  entries: PolicyEntry[];
  mode: PolicyMode;
  dnsFilter: DnsFilterMode;
  /** what could not be read, each naming its field */
  errors: string[];
}

const EVERYTHING: Selector = { requirements: [] };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function quote(v: unknown): string {
  const text = typeof v === 'string' ? v : JSON.stringify(v);
  return `"${(text ?? String(v)).slice(0, 80)}"`;
}

/** A LabelSelector object; what cannot be read becomes an 'unreadable' requirement. */
export function parseSelector(raw: unknown, field: string, errors: string[]): Selector {
  if (raw === undefined || raw === null) return EVERYTHING;
  if (!isRecord(raw)) {
    errors.push(`${field}: expected a label selector; it matches every pod`);
    return { requirements: [{ key: '', operator: 'unreadable', values: [] }] };
  }
  const requirements: Requirement[] = [];
  const unreadable = (why: string): void => {
    errors.push(`${field}: ${why}; the requirement matches every pod`);
    requirements.push({ key: '', operator: 'unreadable', values: [] });
  };
  const { matchLabels, matchExpressions } = raw;
  if (matchLabels !== undefined && matchLabels !== null) {
    if (!isRecord(matchLabels)) unreadable('matchLabels must be a mapping of strings');
    else
      for (const [key, value] of Object.entries(matchLabels)) {
        if (typeof value !== 'string') unreadable(`matchLabels.${key} must be a string`);
        else requirements.push({ key, operator: 'In', values: [value] });
      }
  }
  if (matchExpressions !== undefined && matchExpressions !== null) {
    if (!Array.isArray(matchExpressions)) unreadable('matchExpressions must be a list');
    else
      matchExpressions.forEach((e: unknown, i) => {
        const at = `matchExpressions[${i}]`;
        if (!isRecord(e) || typeof e.key !== 'string' || e.key === '') return unreadable(`${at} needs a key`);
        const values = e.values ?? [];
        if (!Array.isArray(values) || values.some((v) => typeof v !== 'string'))
          return unreadable(`${at}.values must be a list of strings`);
        const op = e.operator;
        if (op === 'In' || op === 'NotIn') {
          if (values.length === 0) return unreadable(`${at}: ${op} needs values`);
        } else if (op === 'Exists' || op === 'DoesNotExist') {
          if (values.length !== 0) return unreadable(`${at}: ${op} takes no values`);
        } else return unreadable(`${at}: unknown operator ${quote(op)} (expected In, NotIn, Exists, DoesNotExist)`);
        requirements.push({ key: e.key, operator: op, values: values as string[] });
      });
  }
  return { requirements };
}

/** Kubernetes' label selector semantics (NotIn and DoesNotExist hold when the label is absent). */
export function selectorMatches(selector: Selector, labels: Record<string, string>): boolean {
  return selector.requirements.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    switch (r.operator) {
      case 'In':
        return has && r.values.includes(labels[r.key]!);
      case 'NotIn':
        return !has || !r.values.includes(labels[r.key]!);
      case 'Exists':
        return has;
      case 'DoesNotExist':
        return !has;
      case 'unreadable':
        return true;
    }
  });
}

const PROTOCOLS: Record<string, PortRule['proto']> = { tcp: 'tcp', udp: 'udp', tls: 'tls' };

/** One `ports` item, or undefined (an error) when it cannot be read. */
function parsePort(raw: unknown, at: string, errors: string[]): PortRule | undefined {
  if (!isRecord(raw)) {
    errors.push(`${at}: expected { port, protocol }; allows nothing`);
    return undefined;
  }
  const { port, protocol } = raw;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    errors.push(`${at}.port ${quote(port)} is not a port number 1..65535; allows nothing`);
    return undefined;
  }
  if (protocol === undefined || protocol === null) return { port, proto: 'any' };
  const proto = typeof protocol === 'string' ? PROTOCOLS[protocol.toLowerCase()] : undefined;
  if (!proto) {
    errors.push(`${at}.protocol ${quote(protocol)} is unknown (expected TCP, UDP or TLS); allows nothing`);
    return undefined;
  }
  return { port, proto };
}

function parseEgress(raw: unknown, origin: string, errors: string[]): PolicyEntry[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    errors.push('spec.egress: expected a list; allows nothing');
    return [];
  }
  const entries: PolicyEntry[] = [];
  raw.forEach((item: unknown, i) => {
    const at = `spec.egress[${i}]`;
    if (!isRecord(item)) return errors.push(`${at}: expected { names, ports }; allows nothing`);
    const names = Array.isArray(item.names) ? (item.names as unknown[]) : [];
    if (!Array.isArray(item.names)) errors.push(`${at}.names: expected a list of names; allows nothing`);
    let ports: Array<PortRule | undefined> = [undefined];
    if (item.ports !== undefined && item.ports !== null) {
      if (!Array.isArray(item.ports)) {
        errors.push(`${at}.ports: expected a list; allows nothing`);
        return;
      }
      const read = (item.ports as unknown[]).map((p, j) => parsePort(p, `${at}.ports[${j}]`, errors));
      // listed ports that are all bad allow nothing (never "any port")
      ports = read.filter((p): p is PortRule => p !== undefined);
      if (item.ports.length === 0) ports = [undefined];
    }
    names.forEach((name: unknown, j) => {
      if (typeof name !== 'string') return errors.push(`${at}.names[${j}]: expected a string; allows nothing`);
      let pattern;
      try {
        pattern = parsePattern(name);
      } catch (err) {
        if (!(err instanceof NameError)) throw err;
        return errors.push(`${at}.names[${j}] ${quote(name)}: ${err.reason}; allows nothing`);
      }
      for (const port of ports) {
        if (entries.length === MAX_ENTRIES_PER_POLICY) {
          errors.push(
            `${at}.names[${j}]: more than ${MAX_ENTRIES_PER_POLICY} names × ports in one policy; the rest allows nothing`,
          );
          return;
        }
        const portText = port ? `:${port.port}${port.proto === 'any' ? '' : `/${port.proto}`}` : '';
        entries.push({ origin, text: `${name}${portText}`, pattern, port });
      }
    });
  });
  return entries;
}

function parseChoice<T extends string>(raw: unknown, field: string, choices: readonly T[], errors: string[]): T {
  const fallback = choices[0]!;
  if (raw === undefined || raw === null) return fallback;
  const found = choices.find((c) => c === raw);
  if (found) return found;
  errors.push(`${field} ${quote(raw)} is unknown (expected ${choices.join(' or ')}); using ${fallback}`);
  return fallback;
}

/** A policy object from the API (or a file). undefined when it has no name (nothing to call it by). */
export function parsePolicy(obj: unknown, scope: PolicyScope): EgressPolicy | undefined {
  if (!isRecord(obj) || !isRecord(obj.metadata) || typeof obj.metadata.name !== 'string' || !obj.metadata.name)
    return undefined;
  const name = obj.metadata.name;
  const namespace = scope === 'policy' ? String(obj.metadata.namespace ?? '') : undefined;
  const origin = scope === 'policy' ? `policy ${namespace}/${name}` : `clusterpolicy ${name}`;
  const errors: string[] = [];
  const spec = isRecord(obj.spec) ? obj.spec : {};
  if (!isRecord(obj.spec)) errors.push('spec: missing; the policy selects every pod and allows nothing');
  const podSelector =
    spec.podSelector === undefined && isRecord(obj.spec)
      ? (errors.push('spec.podSelector: missing; it selects every pod'), EVERYTHING)
      : parseSelector(spec.podSelector, 'spec.podSelector', errors);
  const namespaceSelector =
    scope === 'clusterpolicy' ? parseSelector(spec.namespaceSelector, 'spec.namespaceSelector', errors) : EVERYTHING;
  return {
    scope,
    namespace,
    name,
    origin,
    podSelector,
    namespaceSelector,
    entries: parseEgress(spec.egress, origin, errors),
    mode: parseChoice(spec.mode, 'spec.mode', ['enforce', 'audit'] as const, errors),
    dnsFilter: parseChoice(spec.dnsFilter, 'spec.dnsFilter', ['on', 'off'] as const, errors),
    errors,
  };
}

/** A namespace's labels, with the name label the API server always sets. */
export function namespaceLabelsOf(
  namespace: string,
  labels: Record<string, string> | undefined,
): Record<string, string> {
  return { ...(labels ?? {}), [NAMESPACE_NAME_LABEL]: namespace };
}

/** The policies that select this pod: namespaced ones of its namespace, cluster ones of its namespace's labels. */
export function policiesSelecting(
  pod: { namespace: string; labels?: Record<string, string> },
  namespaceLabels: Record<string, string>,
  policies: readonly EgressPolicy[],
): EgressPolicy[] {
  const labels = pod.labels ?? {};
  return policies.filter(
    (p) =>
      (p.scope === 'policy' ? p.namespace === pod.namespace : selectorMatches(p.namespaceSelector, namespaceLabels)) &&
      selectorMatches(p.podSelector, labels),
  );
}

/** What the pod may reach: the policies that select it decide; without any, its annotation does. */
export function resolvePodPolicy(
  annotations: Record<string, string> | undefined,
  selected: readonly EgressPolicy[],
  limits: PolicyLimits,
): PodPolicy & { warnings: string[] } {
  if (selected.length === 0) return { ...parsePodPolicy(annotations, limits), warnings: [] };
  const warnings: string[] = [];
  const ordered = [...selected].sort((a, b) => (a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : 0));
  const rules = mergeEntries(
    ordered.flatMap((p) => p.entries),
    limits,
    (e, key) =>
      warnings.push(
        `"${e.text}" of ${e.origin}: "${key}" already has ${limits.portRulesPerName} port rules from the policies selecting this pod, the most one name can carry; this one allows nothing`,
      ),
  );
  const ann = annotations ?? {};
  return {
    enforced: true,
    mode: ordered.every((p) => p.mode === 'audit') ? 'audit' : 'enforce',
    dnsFilter: ordered.every((p) => p.dnsFilter === 'off') ? 'off' : 'on',
    rules,
    errors: [],
    origins: ordered.map((p) => p.origin),
    annotationIgnored: [ALLOW_ANNOTATION, MODE_ANNOTATION, DNS_FILTER_ANNOTATION].some((k) => k in ann),
    warnings,
  };
}
