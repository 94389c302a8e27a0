/*
 * The agent's flags: parsed from argv and FQDN_EGRESS_<FLAG> environment
 * variables (a flag wins over its variable), validated, with defaults.
 * Pure: returns a Config or throws a ConfigError naming the flag.
 */
import { isIP } from 'node:net';
import { parseCidr, type Cidr } from './net/addr.js';
import { DEFAULT_PIN_DIR } from './datapath/datapath.js';
import { ATTACH_MODES, type AttachMode } from './datapath/attach.js';
import { DEFAULT_CLUSTER_DOMAINS, parseClusterDomains, type DnsFilterMode } from './policy/dns-query-filter.js';
import { DEFAULT_MAX_NAMES_PER_POD } from './cache/fqdn-cache.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface Config {
  source: 'kubernetes' | 'file';
  endpointsFile: string | undefined;
  nodeName: string | undefined;
  dnsServers: string[];
  /** check resolver answers against the route back to the resolver (see --help) */
  resolverPathCheck: 'auto' | 'on' | 'off';
  bpfPinDir: string;
  minTtlMs: number;
  maxTtlMs: number;
  maxIpsPerName: number;
  /** allow entries the kernel learner may add for one pod (fqe_limits) */
  maxIpsPerPod: number;
  /** names cached per pod; a new name past it is refused (not allowed) */
  maxNamesPerPod: number;
  allowCidrs: Cidr[];
  metricsAddress: { host: string; port: number } | undefined;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  inlineLearner: boolean;
  /** tracked flows one pod may hold; past it, its new flows are refused */
  flowsPerPod: number;
  /** a recorded DNS query is good for one answer within this */
  queryWindowMs: number;
  /** an accepted answer allows connections for at least this long, whatever its TTL */
  connectGraceMs: number;
  attachMode: AttachMode;
  /** keep our tcx links first in their chains (datapath/head-guard.ts) */
  tcxHeadGuard: boolean;
  /** judge enforced pods' DNS queries by name, unless a pod's annotation says otherwise */
  dnsFilter: DnsFilterMode;
  /** kubernetes source: list and watch the policy resources and the namespaces' labels */
  policies: 'on' | 'off';
  /** the cluster's own domains: queries under them always pass the DNS filter */
  clusterDomains: string[];
  /** what the CNI plugin does with a new pod the agent has not decided yet (docs/cni.md) */
  unknownPods: 'closed' | 'open';
}

interface FlagSpec {
  help: string;
  default?: string;
  boolean?: boolean;
}

export const FLAGS: Record<string, FlagSpec> = {
  source: { help: 'where pods come from: kubernetes | file (default: kubernetes inside a cluster, else file)' },
  'endpoints-file': { help: 'file source: YAML or JSON list of pods, re-read on change' },
  'node-name': { help: 'this node (kubernetes source; default: the NODE_NAME variable)' },
  'dns-servers': {
    help: 'trusted resolvers, comma separated; replaces discovery from kube-system/kube-dns (required for the file source)',
  },
  'resolver-path-check': {
    help: "auto|on|off: refuse a resolver's answer that comes in where the node does not route to the resolver (a forged source); auto: on with the file source, off with the kubernetes source (a Service address answers from wherever its pods run: no route leads back to it)",
    default: 'auto',
  },
  'bpf-pin-dir': { help: 'where maps and programs are pinned', default: DEFAULT_PIN_DIR },
  'min-ttl': { help: 'shortest time an answered IP stays allowed', default: '30s' },
  'max-ttl': { help: 'longest time an answered IP stays allowed', default: '24h' },
  'max-ips-per-name': { help: 'IPs kept per pod and name; the least recently answered go first', default: '1000' },
  'max-ips-per-pod': {
    help: "allow entries the kernel learner may add for one pod (its share of the node's 1048576); past it, answers teach it nothing new",
    default: '16384',
  },
  'max-names-per-pod': {
    help: 'names kept per pod; past it, answers for a new name are refused (not allowed) until one expires',
    default: String(DEFAULT_MAX_NAMES_PER_POD),
  },
  'allow-cidrs': {
    help: 'prefixes every enforced pod may always reach on any port, comma separated (DNS to a server inside them is not filtered)',
    default: '',
  },
  'metrics-address': { help: 'HOST:PORT for /metrics, /healthz, /readyz; "off" disables', default: '0.0.0.0:9464' },
  'log-level': { help: 'trace | debug | info | warn | error', default: 'info' },
  'inline-learner': {
    help: 'learn allowed IPs in the kernel before the pod sees the answer: true | false',
    default: 'true',
  },
  'flows-per-pod': {
    help: "tracked flows one pod may open (its share of the node's 262144), and as many opened towards it (a share of their own); past a share, new flows that way are refused",
    default: '16384',
  },
  'query-window': { help: "how long a pod's DNS query may be answered (one answer each; 100ms to 1m)", default: '5s' },
  'connect-grace': {
    help: 'an accepted answer allows connections for at least this long, even with TTL 0 (100ms to 5m)',
    default: '5s',
  },
  'attach-mode': {
    help: 'how programs go on a pod interface: auto (tcx links where the kernel has tcx, else legacy tc) | tcx | legacy',
    default: 'auto',
  },
  'tcx-head-guard': {
    help: "take the head of a pod interface's tcx chain back when another program goes before ours (tcx only): on | off",
    default: 'on',
  },
  policies: {
    help: 'kubernetes source: follow the FQDNEgressPolicy and ClusterFQDNEgressPolicy resources (and namespace labels): on | off. A pod they select is enforced by them and its annotation is ignored (docs/policies.md)',
    default: 'on',
  },
  'dns-filter': {
    help: "answer NXDOMAIN to an enforced pod's DNS query for a name outside its rules and the cluster domains: on | off (per pod: fqdn-egress.io/dns-filter)",
    default: 'on',
  },
  'cluster-domain': {
    help: "the cluster's own DNS domains, comma separated; queries under them always pass the DNS filter",
    default: DEFAULT_CLUSTER_DOMAINS.join(','),
  },
  'unknown-pods': {
    help: 'what the CNI plugin (fqdn-egress-cni) does with a new pod this agent has not decided yet (agent down or behind): closed (only DNS to the trusted resolvers and link control until decided) | open (passed until decided)',
    default: 'closed',
  },
  help: { help: 'print this help', boolean: true },
};

export function usage(): string {
  const lines = [
    'Usage: fqdn-egress-agent [flags]',
    '',
    'Lets pods annotated with fqdn-egress.io/allow reach only the names they list.',
    'Every flag can also be set as FQDN_EGRESS_<FLAG> (e.g. FQDN_EGRESS_DNS_SERVERS).',
    'Durations take a unit (500ms, 30s, 5m, 1h) or plain seconds.',
    '',
    'Flags:',
  ];
  for (const [name, spec] of Object.entries(FLAGS)) {
    const def = spec.default !== undefined && spec.default !== '' ? ` (default ${spec.default})` : '';
    lines.push(`  --${name.padEnd(18)} ${spec.help}${def}`);
  }
  return lines.join('\n');
}

/** "500ms", "30s", "5m", "1h", "2d" or plain seconds ("30", "1.5") to ms. */
export function parseDuration(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m)
    throw new ConfigError(`--${flag}: "${text}" is not a duration (examples: 500ms, 30s, 5m, 1h, or plain seconds)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit]!;
  return Math.round(n * ms);
}

function envName(flag: string): string {
  return `FQDN_EGRESS_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/** Flags from argv, then environment, then defaults. */
export function readFlags(argv: string[], env: NodeJS.ProcessEnv): Map<string, string> {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument "${arg}" (flags start with --; see --help)`);
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const spec = FLAGS[name];
    if (!spec) throw new ConfigError(`unknown flag --${name} (see --help)`);
    if (spec.boolean) {
      values.set(name, 'true');
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new ConfigError(`--${name} needs a value`);
    values.set(name, value);
  }
  for (const [name, spec] of Object.entries(FLAGS)) {
    if (values.has(name)) continue;
    const fromEnv = env[envName(name)];
    if (fromEnv !== undefined) values.set(name, fromEnv);
    else if (spec.default !== undefined) values.set(name, spec.default);
  }
  return values;
}

function list(text: string | undefined): string[] {
  return (text ?? '').split(/[\s,]+/).filter((s) => s !== '');
}

function positiveInt(text: string, flag: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1)
    throw new ConfigError(`--${flag}: "${text}" is not a positive whole number`);
  return Number(text);
}

function parseListenAddress(text: string): { host: string; port: number } | undefined {
  if (text === 'off') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new ConfigError(`--metrics-address: "${text}" is not HOST:PORT (or "off")`);
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): Config | 'help' {
  const f = readFlags(argv, env);
  if (f.get('help') === 'true') return 'help';
  const source = f.get('source') ?? (env.KUBERNETES_SERVICE_HOST ? 'kubernetes' : 'file');
  if (source !== 'kubernetes' && source !== 'file')
    throw new ConfigError(`--source: "${source}" is not one of kubernetes, file`);
  const endpointsFile = f.get('endpoints-file');
  if (source === 'file' && !endpointsFile) throw new ConfigError('--endpoints-file is required with --source file');
  const dnsServers = list(f.get('dns-servers'));
  for (const ip of dnsServers) if (isIP(ip) === 0) throw new ConfigError(`--dns-servers: "${ip}" is not an IP address`);
  if (source === 'file' && dnsServers.length === 0)
    throw new ConfigError('--dns-servers is required with --source file (the trusted resolvers)');
  const nodeName = f.get('node-name') ?? env.NODE_NAME;
  if (source === 'kubernetes' && !nodeName)
    throw new ConfigError(
      '--node-name (or the NODE_NAME variable, from the downward API) is required with --source kubernetes',
    );
  const minTtlMs = parseDuration(f.get('min-ttl')!, 'min-ttl');
  const maxTtlMs = parseDuration(f.get('max-ttl')!, 'max-ttl');
  if (maxTtlMs < minTtlMs)
    throw new ConfigError(`--max-ttl (${f.get('max-ttl')}) is shorter than --min-ttl (${f.get('min-ttl')})`);
  if (maxTtlMs === 0) throw new ConfigError('--max-ttl must be longer than 0');
  const allowCidrs = list(f.get('allow-cidrs')).map((c) => {
    try {
      return parseCidr(c);
    } catch (err) {
      throw new ConfigError(`--allow-cidrs: ${(err as Error).message}`);
    }
  });
  const logLevel = f.get('log-level')!;
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal'].includes(logLevel)) {
    throw new ConfigError(`--log-level: "${logLevel}" is not one of trace, debug, info, warn, error`);
  }
  const inlineLearner = f.get('inline-learner')!;
  if (inlineLearner !== 'true' && inlineLearner !== 'false')
    throw new ConfigError(`--inline-learner: "${inlineLearner}" is not true or false`);
  const flowsPerPod = positiveInt(f.get('flows-per-pod')!, 'flows-per-pod');
  if (flowsPerPod > 262_144)
    throw new ConfigError(`--flows-per-pod: ${flowsPerPod} is more than the flow table holds (262144)`);
  const queryWindowMs = parseDuration(f.get('query-window')!, 'query-window');
  if (queryWindowMs < 100 || queryWindowMs > 60_000)
    throw new ConfigError(`--query-window: ${f.get('query-window')} is not between 100ms and 1m`);
  const connectGraceMs = parseDuration(f.get('connect-grace')!, 'connect-grace');
  if (connectGraceMs < 100 || connectGraceMs > 300_000)
    throw new ConfigError(`--connect-grace: ${f.get('connect-grace')} is not between 100ms and 5m`);
  const attachMode = f.get('attach-mode')!;
  if (!(ATTACH_MODES as readonly string[]).includes(attachMode))
    throw new ConfigError(`--attach-mode: "${attachMode}" is not one of ${ATTACH_MODES.join(', ')}`);
  const tcxHeadGuard = f.get('tcx-head-guard')!;
  if (tcxHeadGuard !== 'on' && tcxHeadGuard !== 'off')
    throw new ConfigError(`--tcx-head-guard: "${tcxHeadGuard}" is not on or off`);
  const policies = f.get('policies')!;
  if (policies !== 'on' && policies !== 'off') throw new ConfigError(`--policies: "${policies}" is not on or off`);
  const dnsFilter = f.get('dns-filter')!;
  if (dnsFilter !== 'on' && dnsFilter !== 'off') throw new ConfigError(`--dns-filter: "${dnsFilter}" is not on or off`);
  let clusterDomains: string[];
  try {
    clusterDomains = parseClusterDomains(list(f.get('cluster-domain')));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  return {
    source,
    endpointsFile,
    nodeName,
    dnsServers,
    resolverPathCheck: oneOf(f.get('resolver-path-check')!, 'resolver-path-check', ['auto', 'on', 'off'] as const),
    bpfPinDir: f.get('bpf-pin-dir')!,
    minTtlMs,
    maxTtlMs,
    maxIpsPerName: positiveInt(f.get('max-ips-per-name')!, 'max-ips-per-name'),
    maxIpsPerPod: maxIpsPerPod(f.get('max-ips-per-pod')!),
    maxNamesPerPod: positiveInt(f.get('max-names-per-pod')!, 'max-names-per-pod'),
    allowCidrs,
    metricsAddress: parseListenAddress(f.get('metrics-address')!),
    logLevel: logLevel as Config['logLevel'],
    inlineLearner: inlineLearner === 'true',
    flowsPerPod,
    queryWindowMs,
    connectGraceMs,
    attachMode: attachMode as AttachMode,
    tcxHeadGuard: tcxHeadGuard === 'on',
    dnsFilter,
    policies,
    clusterDomains,
    unknownPods: oneOf(f.get('unknown-pods')!, 'unknown-pods', ['closed', 'open'] as const),
  };
}

/** The allow map holds 1,048,576 entries for the whole node: one pod may have at most that. */
function maxIpsPerPod(text: string): number {
  const n = positiveInt(text, 'max-ips-per-pod');
  if (n > 1_048_576) throw new ConfigError(`--max-ips-per-pod: ${n} is more than the allow map holds (1048576)`);
  return n;
}

/** A flag whose value is one of a few words. */
function oneOf<T extends string>(text: string, flag: string, words: readonly T[]): T {
  if (!(words as readonly string[]).includes(text))
    throw new ConfigError(`--${flag}: "${text}" is not one of ${words.join(', ')}`);
  return text as T;
}
