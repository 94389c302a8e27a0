/*
 * The file source: a YAML or JSON file listing this node's pods
 * (--endpoints-file), re-read when it changes. A file that does not parse or
 * holds an invalid pod keeps the last good snapshot (fail closed) and says
 * why. Owns reading and validating the file; knows nothing of the datapath.
 */
import { readFileSync, statSync, stat } from 'node:fs';
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';
import type { PodSpec } from './pod.js';

export class EndpointsFileError extends Error {
  override name = 'EndpointsFileError';
}

function fail(path: string, where: string, what: string): never {
  throw new EndpointsFileError(`${path}: ${where}: ${what}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parse and validate the file's text into pods. Throws EndpointsFileError. */
export function parseEndpointsFile(text: string, path: string): PodSpec[] {
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: true });
  } catch (err) {
    fail(path, 'not valid YAML or JSON', (err as Error).message.split('\n')[0]!);
  }
  if (doc === null || doc === undefined) return [];
  if (!isRecord(doc)) fail(path, 'top level', 'expected a mapping with a "pods" list');
  for (const k of Object.keys(doc)) if (k !== 'pods') fail(path, 'top level', `unknown key "${k}" (expected "pods")`);
  const pods = doc.pods ?? [];
  if (!Array.isArray(pods)) fail(path, 'pods', 'expected a list');
  const seen = new Set<string>();
  return pods.map((raw, i): PodSpec => {
    const at = `pods[${i}]`;
    if (!isRecord(raw)) fail(path, at, 'expected a mapping');
    for (const k of Object.keys(raw)) {
      if (!['namespace', 'name', 'ips', 'interface', 'annotations'].includes(k)) fail(path, at, `unknown key "${k}"`);
    }
    const { namespace, name, ips, interface: iface, annotations } = raw;
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
    return { namespace, name, ips: ips as string[], ...(iface ? { interface: iface } : {}), annotations: ann };
  });
}

export interface FileSourceOptions {
  path: string;
  onPods(pods: PodSpec[]): void;
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
      const pods = parseEndpointsFile(text, this.opts.path);
      this.lastText = text;
      this.lastGood = pods;
      this.opts.onPods(pods);
    } catch (err) {
      this.lastText = text;
      const e = err as Error;
      e.message = `${e.message} (keeping the last good state)`;
      this.opts.onError(e);
    }
  }
}
