/*
 * The opt-in annotations of a pod, parsed into a PodPolicy. Pure; owns the
 * annotation syntax, port merging and the fail-closed handling of bad input.
 * It does not log, emit events or touch maps: callers report `errors`.
 *
 *   fqdn-egress.io/allow: "api.stripe.com:443, *.example.com  dns.google:853/tcp"
 *   fqdn-egress.io/mode:  enforce (default) | audit
 *
 * allow: entries separated by commas and/or whitespace (empty items ignored),
 * each `NAME[:PORT[/PROTO]]`; NAME as in pattern.ts; PORT 1..65535 in plain
 * decimal (no sign, no leading zero); PROTO tcp|udp|tls, any case. No port: any
 * port and protocol. PORT alone: TCP and UDP (proto 'any'). `tls`: TCP whose
 * ClientHello names a server the pod may reach (checked in the kernel).
 * An empty value is valid and allows no name. Invalid entries become errors
 * and allow nothing; the valid ones still apply. Entries for the same pattern
 * are merged (duplicates are fine): one entry without a port makes the
 * pattern allow any port; otherwise the port rules are merged (443/tcp and
 * 443/udp become 443 for both; 443/tls and 443/tcp or 443 become the latter:
 * a rule without the check wins) and at most `portRulesPerName` (the kernel's
 * limit, passed in by the caller) are kept, in
 * entry order; each rule beyond that is an error and allows nothing.
 * mode: anything other than enforce/audit (case and surrounding whitespace
 * ignored) is an error and the mode stays 'enforce'.
 *
 * API:
 *   parsePodPolicy(annotations, limits): PodPolicy
 *   mergeEntries(entries, limits, overflow): AllowRule[]   also for policy resources (resources.ts)
 *   rulesForName(policy, name): { allowed, ports }   union over matching rules
 */
import { NameError, parsePattern, matchesPattern, patternToString, type NamePattern } from './pattern.js';

export const ALLOW_ANNOTATION = 'fqdn-egress.io/allow';
export const MODE_ANNOTATION = 'fqdn-egress.io/mode';

export type PolicyMode = 'enforce' | 'audit';

/** proto 'any' = TCP and UDP; 'tls' = TCP with the server name check. */
export interface PortRule {
  port: number;
  proto: 'tcp' | 'udp' | 'any' | 'tls';
}

export interface AllowRule {
  pattern: NamePattern;
  /** Empty = any port, TCP and UDP. At most the parser's portRulesPerName, sorted by port. */
  ports: PortRule[];
  /** where the rule came from: "annotation", "policy NS/NAME", "clusterpolicy NAME" (in order of appearance) */
  from: string[];
}

/** The origin of rules written in the pod's own annotation. */
export const ANNOTATION_ORIGIN = 'annotation';

export interface PolicyError {
  /** Which annotation the bad text came from. */
  annotation: typeof ALLOW_ANNOTATION | typeof MODE_ANNOTATION;
  /** The offending entry (allow) or the raw value (mode). */
  entry: string;
  /** Complete message, e.g. `invalid entry "*.": wildcard needs a name after "*."`. */
  message: string;
}

export interface PodPolicy {
  /** The pod carries the allow annotation (even an empty one), or a policy resource selects it. */
  enforced: boolean;
  mode: PolicyMode;
  /** One rule per distinct pattern, in order of first appearance. */
  rules: AllowRule[];
  errors: PolicyError[];
  /** what decided: ["annotation"], or the policies that select the pod ("policy NS/NAME", "clusterpolicy NAME") */
  origins: string[];
  /** the DNS query filter the policies decided; undefined: the annotation or the agent's default decides */
  dnsFilter?: 'on' | 'off';
  /** the pod's allow annotation was set but policies decide (the annotation is ignored) */
  annotationIgnored?: boolean;
}

const SEPARATORS = /[\s,]+/;
const DECIMAL = /^\d+$/;
const IPV6_ENTRY = /^[\[\]0-9a-f:.\/]+$/i;
const IPV4_CIDR = /^[\d.]+\//;
const MAX_PORT = 65535;

class EntryError extends Error {}

interface ParsedEntry {
  pattern: NamePattern;
  /** undefined = any port */
  port: PortRule | undefined;
}

function parsePort(text: string): PortRule {
  const slash = text.indexOf('/');
  const portText = slash < 0 ? text : text.slice(0, slash);
  const protoText = slash < 0 ? undefined : text.slice(slash + 1);
  if (portText === '') throw new EntryError('port is empty; expected NAME:PORT[/PROTO]');
  if (!DECIMAL.test(portText)) throw new EntryError(`port "${portText}" is not a decimal number`);
  if (portText.length > 1 && portText.startsWith('0')) throw new EntryError(`port "${portText}" has a leading zero`);
  const port = Number(portText);
  if (port < 1 || port > MAX_PORT) throw new EntryError(`port ${portText} is out of range 1..${MAX_PORT}`);
  if (protoText === undefined) return { port, proto: 'any' };
  const proto = protoText.toLowerCase();
  if (proto === '') throw new EntryError('protocol is empty after "/"; expected tcp, udp or tls');
  if (proto !== 'tcp' && proto !== 'udp' && proto !== 'tls')
    throw new EntryError(`unknown protocol "${protoText}"; expected tcp, udp or tls`);
  return { port, proto };
}

function parseEntry(entry: string): ParsedEntry {
  const colons = entry.split(':').length - 1;
  if (colons > 1) {
    if (IPV6_ENTRY.test(entry))
      throw new EntryError("an IPv6 address is not a name; allow addresses with the agent's allowCIDRs instead");
    throw new EntryError('more than one ":"; expected NAME[:PORT[/PROTO]]');
  }
  const colon = entry.indexOf(':');
  const nameText = colon < 0 ? entry : entry.slice(0, colon);
  if (nameText === '') throw new EntryError('name is empty; expected NAME[:PORT[/PROTO]]');
  if (colon < 0 && nameText.includes('/') && !IPV4_CIDR.test(nameText)) {
    throw new EntryError('a protocol needs a port; expected NAME:PORT/PROTO');
  }
  let pattern: NamePattern;
  try {
    pattern = parsePattern(nameText);
  } catch (err) {
    if (err instanceof NameError) throw new EntryError(err.reason);
    throw err;
  }
  return { pattern, port: colon < 0 ? undefined : parsePort(entry.slice(colon + 1)) };
}

/**
 * Adds `rule` to `ports`, merging with what is there. Returns false when the
 * rule needs a new slot and `limit` slots are taken.
 */
function addPortRule(ports: PortRule[], rule: PortRule, limit: number): boolean {
  const protos = new Set<PortRule['proto']>();
  const expand = (p: PortRule['proto']): Array<PortRule['proto']> => (p === 'any' ? ['tcp', 'udp'] : [p]);
  const samePort = ports.filter((p) => p.port === rule.port);
  for (const p of [...samePort, rule]) for (const proto of expand(p.proto)) protos.add(proto);
  if (protos.has('tcp')) protos.delete('tls'); // TCP without the check covers TCP with it
  const merged: PortRule[] =
    protos.has('tcp') && protos.has('udp')
      ? [{ port: rule.port, proto: 'any' }]
      : (['tcp', 'udp', 'tls'] as const).filter((p) => protos.has(p)).map((proto) => ({ port: rule.port, proto }));
  if (merged.length > samePort.length && ports.length - samePort.length + merged.length > limit) return false;
  const others = ports.filter((p) => p.port !== rule.port);
  ports.splice(0, ports.length, ...others, ...merged);
  return true;
}

const PROTO_ORDER = { any: 0, tcp: 1, udp: 2, tls: 3 } as const;

function sortPorts(ports: PortRule[]): PortRule[] {
  return ports.sort((a, b) => a.port - b.port || PROTO_ORDER[a.proto] - PROTO_ORDER[b.proto]);
}

function parseMode(value: string | undefined, errors: PolicyError[]): PolicyMode {
  if (value === undefined) return 'enforce';
  const mode = value.trim().toLowerCase();
  if (mode === 'enforce' || mode === 'audit') return mode;
  errors.push({
    annotation: MODE_ANNOTATION,
    entry: value,
    message: `invalid ${MODE_ANNOTATION} "${value}": expected "enforce" or "audit"; enforcing`,
  });
  return 'enforce';
}

/** What the kernel can hold of one name's rules. */
export interface PolicyLimits {
  /** port rules one name can carry */
  portRulesPerName: number;
}

/** One allow entry before merging: where it came from, its pattern and its port (undefined = any port). */
export interface PolicyEntry {
  /** who wrote it: "annotation", "policy NS/NAME", "clusterpolicy NAME" */
  origin: string;
  /** the entry as written, for error messages */
  text: string;
  pattern: NamePattern;
  port: PortRule | undefined;
}

/**
 * Merges entries into one rule per pattern (in order of first appearance),
 * with the origins of each rule. An entry without a port makes its pattern
 * allow any port; a port rule past the kernel's limit allows nothing and is
 * reported through `overflow` (the entry and the pattern).
 */
export function mergeEntries(
  entries: Iterable<PolicyEntry>,
  limits: PolicyLimits,
  overflow: (entry: PolicyEntry, pattern: string) => void,
): AllowRule[] {
  interface Group {
    pattern: NamePattern;
    anyPort: boolean;
    ports: PolicyEntry[];
    from: Set<string>;
  }
  const groups = new Map<string, Group>();
  for (const e of entries) {
    const key = patternToString(e.pattern);
    let group = groups.get(key);
    if (group === undefined) {
      group = { pattern: e.pattern, anyPort: false, ports: [], from: new Set() };
      groups.set(key, group);
    }
    group.from.add(e.origin);
    if (e.port === undefined) group.anyPort = true;
    else group.ports.push(e);
  }
  const rules: AllowRule[] = [];
  for (const [key, group] of groups) {
    const ports: PortRule[] = [];
    if (!group.anyPort) {
      for (const e of group.ports) if (!addPortRule(ports, e.port!, limits.portRulesPerName)) overflow(e, key);
    }
    rules.push({ pattern: group.pattern, ports: sortPorts(ports), from: [...group.from] });
  }
  return rules;
}

/** The annotation's allow list as entries; invalid ones become errors. */
function annotationEntries(value: string, errors: PolicyError[]): PolicyEntry[] {
  const entries: PolicyEntry[] = [];
  for (const text of value.split(SEPARATORS)) {
    if (text === '') continue;
    try {
      entries.push({ origin: ANNOTATION_ORIGIN, text, ...parseEntry(text) });
    } catch (err) {
      if (!(err instanceof EntryError)) throw err;
      errors.push({ annotation: ALLOW_ANNOTATION, entry: text, message: `invalid entry "${text}": ${err.message}` });
    }
  }
  return entries;
}

/** Parses a pod's annotations (undefined = none). Never throws. */
export function parsePodPolicy(annotations: Record<string, string> | undefined, limits: PolicyLimits): PodPolicy {
  const errors: PolicyError[] = [];
  const mode = parseMode(annotations?.[MODE_ANNOTATION], errors);
  const value = annotations?.[ALLOW_ANNOTATION];
  if (value === undefined) return { enforced: false, mode, rules: [], errors, origins: [] };
  const rules = mergeEntries(annotationEntries(value, errors), limits, (e, key) =>
    errors.push({
      annotation: ALLOW_ANNOTATION,
      entry: e.text,
      message: `invalid entry "${e.text}": "${key}" already has ${limits.portRulesPerName} port rules, the most one name can carry; this one allows nothing`,
    }),
  );
  return { enforced: true, mode, rules, errors, origins: [ANNOTATION_ORIGIN] };
}

/**
 * What the policy allows for `name` (any DNS name; case and a trailing dot do
 * not matter): allowed when some rule matches, with the union of the ports of
 * every matching rule (empty = any port; one matching rule without ports
 * wins). When not allowed, ports is empty and means nothing. The union is not
 * capped: it can exceed portRulesPerName when several patterns match one name.
 */
export function rulesForName(policy: PodPolicy, name: string): { allowed: boolean; ports: PortRule[] } {
  const matching = policy.rules.filter((r) => matchesPattern(r.pattern, name));
  if (matching.length === 0) return { allowed: false, ports: [] };
  if (matching.some((r) => r.ports.length === 0)) return { allowed: true, ports: [] };
  const ports: PortRule[] = [];
  for (const rule of matching) {
    for (const p of rule.ports) addPortRule(ports, p, Infinity);
  }
  return { allowed: true, ports: sortPorts(ports) };
}
