/*
 * The file source: a YAML or JSON file listing this node's pods
 * (--endpoints-file), re-read when it changes. It may also hold policy
 * resources and namespace labels, as the Kubernetes API would serve them:
 *   pods:        [{ namespace, name, ips, interface?, annotations?, labels? }]
 *   namespaces:  { NAME: { LABEL: VALUE } }
 *   policies:    [ FQDNEgressPolicy or ClusterFQDNEgressPolicy objects ]
 * Policy objects are read by policy/resources.ts (what it cannot read is
 * reported there and fails closed); here only their kind and name are checked. A file that does not parse or
 * holds an invalid pod keeps the last good snapshot (fail closed) and says
 * why. Owns reading and validating the file; knows nothing of the datapath.
 */
import { readFileSync, statSync, stat } from 'node:fs';
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';
import type { PodSpec, PolicyObjects } from './pod.js';

/** What the file holds. */
export interface EndpointsFile {
  pods: PodSpec[];
  policies: PolicyObjects;
}

const POLICY_KINDS = { FQDNEgressPolicy: 'namespaced', ClusterFQDNEgressPolicy: 'cluster' } as const;

export class EndpointsFileError extends Error {
  override name = 'EndpointsFileError';
}

function fail(path: string, where: string, what: string): never {
  throw new EndpointsFileError(`${path}: ${where}: ${what}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(path: string, where: string, raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  if (!isRecord(raw)) fail(path, where, 'must be a mapping of strings');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') fail(path, where, `"${k}" must be a string`);
    out[k] = v;
  }
  return out;
}

function parsePolicies(path: string, doc: Record<string, unknown>): PolicyObjects {
  const policies: PolicyObjects = { namespaced: [], cluster: [], namespaces: {} };
  const ns = doc.namespaces ?? {};
  if (!isRecord(ns)) fail(path, 'namespaces', 'expected a mapping of namespace name to labels');
  for (const [name, labels] of Object.entries(ns))
    policies.namespaces[name] = stringMap(path, `namespaces.${name}`, labels);
  const list = doc.policies ?? [];
  if (!Array.isArray(list)) fail(path, 'policies', 'expected a list');
  const seen = new Set<string>();
  list.forEach((raw: unknown, i) => {
    const at = `policies[${i}]`;
    if (!isRecord(raw)) fail(path, at, 'expected a mapping');
    const kind = raw.kind;
    if (kind !== 'FQDNEgressPolicy' && kind !== 'ClusterFQDNEgressPolicy')
      fail(path, at, '"kind" must be FQDNEgressPolicy or ClusterFQDNEgressPolicy');
    const meta = raw.metadata;
    if (!isRecord(meta) || typeof meta.name !== 'string' || meta.name === '') fail(path, at, 'needs metadata.name');
    if (kind === 'FQDNEgressPolicy' && (typeof meta.namespace !== 'string' || meta.namespace === ''))
      fail(path, at, 'a FQDNEgressPolicy needs metadata.namespace');
    const id = `${kind}/${String(meta.namespace ?? '')}/${meta.name}`;
    if (seen.has(id)) fail(path, at, 'listed twice');
    seen.add(id);
    policies[POLICY_KINDS[kind]].push(raw);
  });
  return policies;
}

/** Parse and validate the file's text into pods and policies. Throws EndpointsFileError. */
export function parseEndpointsDocument(text: string, path: string): EndpointsFile {
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: true });
  } catch (err) {
    fail(path, 'not valid YAML or JSON', (err as Error).message.split('\n')[0]!);
  }
  const empty: PolicyObjects = { namespaced: [], cluster: [], namespaces: {} };
  if (doc === null || doc === undefined) return { pods: [], policies: empty };
  if (!isRecord(doc)) fail(path, 'top level', 'expected a mapping with a "pods" list');
  for (const k of Object.keys(doc))
    if (!['pods', 'namespaces', 'policies'].includes(k))
      fail(path, 'top level', `unknown key "${k}" (expected pods, namespaces, policies)`);
  const policies = parsePolicies(path, doc);
  const pods = doc.pods ?? [];
  if (!Array.isArray(pods)) fail(path, 'pods', 'expected a list');
  const seen = new Set<string>();
  const specs = pods.map((raw, i): PodSpec => {
    const at = `pods[${i}]`;
    if (!isRecord(raw)) fail(path, at, 'expected a mapping');
    for (const k of Object.keys(raw)) {
      if (!['namespace', 'name', 'ips', 'interface', 'annotations', 'labels'].includes(k))
        fail(path, at, `unknown key "${k}"`);
    }
    const { namespace, name, ips, interface: iface, annotations, labels } = raw;
    if (typeof namespace !== 'string' || namespace === '') fail(path, at, '"namespace" must be a non-empty string');
    if (typeof name !== 'string' || name === '') fail(path, at, '"name" must be a non-empty string');
    const who = `${at} (${namespace}/${name})`;
    if (seen.has(`${namespace}/${name}`)) fail(path, who, 'listed twice');
    seen.add(`${namespace}/${name}`);
    if (!Array.isArray(ips) || ips.length === 0) fail(path, who, '"ips" must be a non-empty list of IP addresses');
    for (const ip of ips)
      if (typeof ip !== 'string' || isIP(ip) === 0) fail(path, who, `"${String(ip)}" is not an IP address`);
    if (iface !== undefined && (typeof iface !== 'string' || !/^[^\s/]{1,15}$/.test(iface)))
      fail(path, who, '"interface" must be an interface name (1-15 characters)');
    if (annotations !== undefined && !isRecord(annotations))
      fail(path, who, '"annotations" must be a mapping of strings');
    const ann: Record<string, string> = {};
    for (const [k, v] of Object.entries(annotations ?? {})) {
      if (typeof v !== 'string') fail(path, who, `annotation "${k}" must be a string`);
      ann[k] = v;
    }
    return {
      namespace,
      name,
      ips: ips as string[],
      ...(iface ? { interface: iface } : {}),
      annotations: ann,
      ...(labels !== undefined ? { labels: stringMap(path, `${who}: labels`, labels) } : {}),
    };
  });
  return { pods: specs, policies };
}

/** Parse and validate the file's text into pods. Throws EndpointsFileError. */
export function parseEndpointsFile(text: string, path: string): PodSpec[] {
  return parseEndpointsDocument(text, path).pods;
}

export interface FileSourceOptions {
  path: string;
  onPods(pods: PodSpec[]): void;
  /** the file's policies and namespace labels, before onPods (on every change of the file) */
  onPolicies?(policies: PolicyObjects): void;
  onError(err: Error): void;
  /** how often the file is checked for changes */
  pollMs?: number;
}

/** Reads the file now and on every change; keeps the last good snapshot on errors. */
export class FileSource {
  private lastGood: PodSpec[] | undefined;
  private lastText: string | undefined;
  /** mtime, size and inode of what was last read: a change triggers a reload */
  private lastStat = '';
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: FileSourceOptions) {}

  /** Read now, then poll for changes (an atomic rename counts too). */
  start(): void {
    this.reload();
    this.timer = setInterval(() => {
      stat(this.opts.path, (err, st) => {
        const seen = err ? `error ${err.code}` : `${st.mtimeMs} ${st.size} ${st.ino}`;
        if (seen !== this.lastStat) this.reload();
      });
    }, this.opts.pollMs ?? 250);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  get snapshot(): PodSpec[] | undefined {
    return this.lastGood;
  }

  reload(): void {
    let text: string;
    try {
      const st = statSync(this.opts.path);
      this.lastStat = `${st.mtimeMs} ${st.size} ${st.ino}`;
      text = readFileSync(this.opts.path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (this.lastStat === `error ${code}`) return; // said so already
      this.lastStat = `error ${code}`;
      this.opts.onError(
        new EndpointsFileError(
          `${this.opts.path}: cannot read: ${(err as Error).message} (keeping the last good state)`,
        ),
      );
      return;
    }
    if (text === this.lastText) return;
    try {
      const { pods, policies } = parseEndpointsDocument(text, this.opts.path);
      this.lastText = text;
      this.lastGood = pods;
      this.opts.onPolicies?.(policies);
      this.opts.onPods(pods);
    } catch (err) {
      this.lastText = text;
      const e = err as Error;
      e.message = `${e.message} (keeping the last good state)`;
      this.opts.onError(e);
    }
  }
}
