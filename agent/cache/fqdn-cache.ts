/*
 * The FQDN cache: per pod identity and name, the IPs that trusted answers
 * gave, with their expiry and who learned them (the agent from the tap, or
 * the kernel's inline learner). Pure: no I/O, the clock is injected (ms on a
 * monotonic clock). It must not know about maps or policy: the reconciler
 * turns it into kernel entries.
 * Bounds (a pod chooses what it asks): at most maxIpsPerName IPs per pod and
 * name, kept in answer order (a Map re-inserted on every answer), so the
 * least recently answered goes first in O(1); at most maxNamesPerPod names
 * per pod: a new name past it is refused (callers ask admits() first, count
 * and log it), so what a pod was granted stays for its TTL and an answer
 * never costs more than its own addresses.
 */

export type LearnedBy = 'agent' | 'kernel';

export interface CachedIp {
  ip: string;
  expiresAtMs: number;
  /** when an answer last contained this IP for this name */
  answeredAtMs: number;
  learnedBy: LearnedBy;
}

export interface AnsweredIp {
  ip: string;
  ttlMs: number;
}

/** One IP of one pod, with every name it was answered for. */
export interface IpView {
  ip: string;
  /** latest expiry over its names */
  expiresAtMs: number;
  /** the name whose answer expires last */
  name: string;
  names: string[];
  learnedBy: LearnedBy;
  /** each name with its own expiry */
  entries: Array<{ name: string; expiresAtMs: number; learnedBy: LearnedBy }>;
}

/** (identity, ip) pairs whose view changed: what the reconciler must look at. */
export interface Change {
  identity: number;
  ip: string;
}

/** --max-names-per-pod's default */
export const DEFAULT_MAX_NAMES_PER_POD = 4096;

export interface FqdnCacheOptions {
  maxIpsPerName: number;
  /** names cached per pod; a new name past it is refused (default DEFAULT_MAX_NAMES_PER_POD) */
  maxNamesPerPod?: number;
  now: () => number;
}

interface PodEntries {
  /** name -> ip -> entry; each name's IPs in answer order, the least recently answered first */
  byName: Map<string, Map<string, CachedIp>>;
  /** reverse index: ip -> names */
  byIp: Map<string, Set<string>>;
}

export class FqdnCache {
  private readonly pods = new Map<number, PodEntries>();
  private entryCount = 0;
  private readonly maxNamesPerPod: number;

  constructor(private readonly opts: FqdnCacheOptions) {
    if (!(opts.maxIpsPerName >= 1)) throw new Error(`maxIpsPerName must be at least 1, got ${opts.maxIpsPerName}`);
    this.maxNamesPerPod = opts.maxNamesPerPod ?? DEFAULT_MAX_NAMES_PER_POD;
    if (!(this.maxNamesPerPod >= 1)) throw new Error(`maxNamesPerPod must be at least 1, got ${this.maxNamesPerPod}`);
  }

  get size(): number {
    return this.entryCount;
  }

  /** May this pod's answers for this name be cached: the name is cached already, or the pod has room for one more? */
  admits(identity: number, name: string): boolean {
    const p = this.pods.get(identity);
    return !p || p.byName.size < this.maxNamesPerPod || p.byName.has(name);
  }

  /** Is this IP cached for this pod and name? */
  holds(identity: number, name: string, ip: string): boolean {
    return this.pods.get(identity)?.byName.get(name)?.has(ip) ?? false;
  }

  private pod(identity: number): PodEntries {
    let p = this.pods.get(identity);
    if (!p) {
      p = { byName: new Map(), byIp: new Map() };
      this.pods.set(identity, p);
    }
    return p;
  }

  private put(identity: number, name: string, entry: CachedIp, changes: Change[]): void {
    // (the callers ask admits() first and report a refusal; this only holds the bound)
    if (!this.admits(identity, name)) return;
    const p = this.pod(identity);
    let ips = p.byName.get(name);
    if (!ips) {
      ips = new Map();
      p.byName.set(name, ips);
    }
    const old = ips.get(entry.ip);
    if (!old) this.entryCount++;
    // An answer never shortens what an earlier, longer-lived answer granted.
    const merged = old && old.expiresAtMs > entry.expiresAtMs ? { ...entry, expiresAtMs: old.expiresAtMs } : entry;
    // Re-inserted: the Map's order is answer order, the least recently answered first.
    if (old) ips.delete(entry.ip);
    ips.set(entry.ip, merged);
    let names = p.byIp.get(entry.ip);
    if (!names) {
      names = new Set();
      p.byIp.set(entry.ip, names);
    }
    names.add(name);
    if (!old || old.expiresAtMs !== merged.expiresAtMs || old.learnedBy !== merged.learnedBy)
      changes.push({ identity, ip: entry.ip });
    // The least recently answered IP is the first key: O(1) per eviction.
    while (ips.size > this.opts.maxIpsPerName) this.drop(identity, name, ips.keys().next().value!, changes);
  }

  private drop(identity: number, name: string, ip: string, changes: Change[]): void {
    const p = this.pods.get(identity);
    const ips = p?.byName.get(name);
    if (!p || !ips?.delete(ip)) return;
    this.entryCount--;
    if (ips.size === 0) p.byName.delete(name);
    const names = p.byIp.get(ip);
    names?.delete(name);
    if (names && names.size === 0) p.byIp.delete(ip);
    if (p.byName.size === 0) this.pods.delete(identity);
    changes.push({ identity, ip });
  }

  /** Record the addresses a trusted answer gave a pod for a name. */
  learn(identity: number, name: string, answers: AnsweredIp[], learnedBy: LearnedBy): Change[] {
    const now = this.opts.now();
    const changes: Change[] = [];
    for (const a of answers) {
      this.put(identity, name, { ip: a.ip, expiresAtMs: now + a.ttlMs, answeredAtMs: now, learnedBy }, changes);
    }
    return changes;
  }

  /** Put back an entry read from the kernel maps (restart, kernel learner). */
  restore(identity: number, name: string, ip: string, expiresAtMs: number, learnedBy: LearnedBy): Change[] {
    const changes: Change[] = [];
    if (expiresAtMs > this.opts.now())
      this.put(identity, name, { ip, expiresAtMs, answeredAtMs: this.opts.now(), learnedBy }, changes);
    return changes;
  }

  /** Remove every (name, ip) whose TTL ran out. */
  expire(): Change[] {
    const now = this.opts.now();
    const changes: Change[] = [];
    for (const [identity, p] of [...this.pods]) {
      for (const [name, ips] of [...p.byName]) {
        for (const e of [...ips.values()]) if (e.expiresAtMs <= now) this.drop(identity, name, e.ip, changes);
      }
    }
    return changes;
  }

  /** Forget a pod (deleted, or no longer enforced). */
  forgetIdentity(identity: number): Change[] {
    const p = this.pods.get(identity);
    if (!p) return [];
    const changes = [...p.byIp.keys()].map((ip) => ({ identity, ip }));
    for (const ips of p.byName.values()) this.entryCount -= ips.size;
    this.pods.delete(identity);
    return changes;
  }

  /** Forget the names a pod may no longer reach (policy change). */
  forgetNames(identity: number, keep: (name: string) => boolean): Change[] {
    const p = this.pods.get(identity);
    const changes: Change[] = [];
    if (!p) return changes;
    for (const [name, ips] of [...p.byName]) {
      if (keep(name)) continue;
      for (const ip of [...ips.keys()]) this.drop(identity, name, ip, changes);
    }
    return changes;
  }

  /** Everything known about one IP of one pod, or undefined. */
  view(identity: number, ip: string): IpView | undefined {
    const p = this.pods.get(identity);
    const names = p?.byIp.get(ip);
    if (!p || !names || names.size === 0) return undefined;
    let best: { name: string; e: CachedIp } | undefined;
    const entries: IpView['entries'] = [];
    for (const name of [...names].sort()) {
      const e = p.byName.get(name)?.get(ip);
      if (!e) continue;
      entries.push({ name, expiresAtMs: e.expiresAtMs, learnedBy: e.learnedBy });
      if (!best || e.expiresAtMs > best.e.expiresAtMs) best = { name, e };
    }
    if (!best) return undefined;
    return {
      ip,
      expiresAtMs: best.e.expiresAtMs,
      name: best.name,
      names: entries.map((e) => e.name),
      learnedBy: best.e.learnedBy,
      entries,
    };
  }

  ipsOf(identity: number): string[] {
    return [...(this.pods.get(identity)?.byIp.keys() ?? [])];
  }

  /** name -> entries, for inspection. */
  namesOf(identity: number): Map<string, CachedIp[]> {
    const out = new Map<string, CachedIp[]>();
    for (const [name, ips] of this.pods.get(identity)?.byName ?? []) out.set(name, [...ips.values()]);
    return out;
  }

  identities(): number[] {
    return [...this.pods.keys()];
  }
}
