/*
 * The reconciler: makes the kernel's allow trie match what the FQDN cache
 * says, for every enforced pod (allowCIDRs live in their own map, fqe_cidrs). It keeps a shadow of
 * what the map holds, so a change costs only the entries it touches; a full
 * resync diffs everything. The shadow changes only after a write succeeded:
 * an entry whose write failed (ENOSPC: the map is full) is retried, at most
 * RETRY_BATCH entries once a second, and reported in the flush's result. It must not decide policy (portsFor does) and
 * never deletes an unexpired entry the kernel learned for a name it cannot
 * judge. Datapath and clocks are injected: unit tests use a recording table.
 */
import { parseIp, formatIp, formatCidr } from '../net/addr.js';
import {
  AllowSource,
  IPPROTO,
  MAX_PORT_RULES,
  PROTO_TLS,
  type AllowKey,
  type AllowValue,
  type PortRule,
} from '../datapath/codecs.js';
import type { Change, FqdnCache } from '../cache/fqdn-cache.js';

/**
 * The allow map as the reconciler writes it (a BpfMap, or a fake). setMany
 * returns how many of the first entries it wrote, or throws; entries past
 * a failure may or may not be written (libbpf's fallback for a trie writes
 * one by one and stops at the first error): they are written again one by
 * one. deleteMany counts absent keys as done, and throws on other errors.
 */
export interface AllowTable {
  get(key: AllowKey): AllowValue | undefined;
  set(key: AllowKey, value: AllowValue): void;
  setMany(entries: Array<[AllowKey, AllowValue]>): number;
  delete(key: AllowKey): boolean;
  deleteMany(keys: AllowKey[]): number;
}

/** failed entries wait this long before they are written again */
export const RETRY_INTERVAL_NS = 1_000_000_000n;
/** at most this many failed entries are tried again per interval */
export const RETRY_BATCH = 4096;

export interface ReconcilerDeps {
  cache: FqdnCache;
  allow: AllowTable;
  /** identities of the pods enforced right now */
  identities(): Iterable<number>;
  /** ports a pod may use towards a name ([] = any), or null if the name is not allowed */
  portsFor(identity: number, name: string): PortRule[] | null;
  nameHash(name: string): bigint;
  /** the name behind a hash, if the agent ever saw it */
  nameOf(hash: bigint): string | undefined;
  /** the cache's ms clock to the kernel's CLOCK_MONOTONIC ns */
  toKernelNs(ms: number): bigint;
  /** the kernel's clock now (to judge entries read back from the map) */
  kernelNowNs(): bigint;
}

export interface ReconcileResult {
  /** entries written (updated or added) */
  upserts: number;
  /** entries deleted */
  deletes: number;
  /** names whose port rules did not fit one entry (fail closed: extra rules dropped) */
  portOverflows: number;
  /** writes and deletes that failed this flush (retried later) */
  failed: number;
  /** the first failure's error, with the entry it was for */
  error?: string;
  /** entries waiting for a retry */
  retrying: number;
}

function keyString(identity: number, addr: Buffer, prefixLen: number): string {
  return `${identity}/${formatCidr(addr, prefixLen)}`;
}

function sameValue(a: AllowValue, b: AllowValue): boolean {
  return (
    a.expiresNs === b.expiresNs &&
    a.nameHash === b.nameHash &&
    a.source === b.source &&
    a.ports.length === b.ports.length &&
    a.ports.every((p, i) => p.port === b.ports[i]!.port && p.proto === b.ports[i]!.proto)
  );
}

/**
 * Union of port rules; an empty list (any port) wins; proto 0 covers TCP and
 * UDP; TCP (or 0) covers PROTO_TLS (TCP with the server name check).
 */
export function mergePorts(lists: PortRule[][]): { ports: PortRule[]; overflow: boolean } {
  if (lists.some((l) => l.length === 0)) return { ports: [], overflow: false };
  const byPort = new Map<number, Set<number>>();
  for (const l of lists)
    for (const r of l) (byPort.get(r.port) ?? byPort.set(r.port, new Set()).get(r.port)!).add(r.proto);
  const out: PortRule[] = [];
  for (const [port, protos] of [...byPort].sort((a, b) => a[0] - b[0])) {
    if (protos.has(0) || (protos.has(IPPROTO.tcp) && protos.has(IPPROTO.udp))) out.push({ port, proto: 0 });
    else
      for (const proto of [...protos].sort((a, b) => a - b))
        if (!(proto === PROTO_TLS && protos.has(IPPROTO.tcp))) out.push({ port, proto }); // plain TCP wins over tls
  }
  return { ports: out.slice(0, MAX_PORT_RULES), overflow: out.length > MAX_PORT_RULES };
}

interface ShadowEntry {
  key: AllowKey;
  value: AllowValue;
}

/**
 * What the map holds, as far as our writes and the kernel's records tell,
 * by key string ("identity/cidr"), kept per identity so that the keys of one
 * identity can be found without a scan (seek points for a walk of the trie).
 */
class AllowShadow {
  private readonly byIdentity = new Map<number, Map<string, ShadowEntry>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(k: string): ShadowEntry | undefined {
    return this.byIdentity.get(parseInt(k, 10))?.get(k);
  }

  set(k: string, entry: ShadowEntry): void {
    let m = this.byIdentity.get(entry.key.identity);
    if (!m) this.byIdentity.set(entry.key.identity, (m = new Map()));
    if (!m.has(k)) this.count++;
    m.set(k, entry);
  }

  delete(k: string): void {
    const identity = parseInt(k, 10);
    const m = this.byIdentity.get(identity);
    if (!m?.delete(k)) return;
    this.count--;
    if (m.size === 0) this.byIdentity.delete(identity);
  }

  *entries(): Iterable<[string, ShadowEntry]> {
    for (const m of this.byIdentity.values()) yield* m;
  }

  identities(): Iterable<number> {
    return this.byIdentity.keys();
  }

  /** Entries per identity. */
  countOf(identity: number): number {
    return this.byIdentity.get(identity)?.size ?? 0;
  }

  *keysOf(identity: number): Iterable<AllowKey> {
    for (const e of this.byIdentity.get(identity)?.values() ?? []) yield e.key;
  }
}

export class Reconciler {
  private readonly shadow = new AllowShadow();
  private dirty = new Map<string, Change>();
  private fullResyncPending = true;
  /** entries whose last write failed: key string -> key */
  private readonly retry = new Map<string, AllowKey>();
  private retryAtNs = 0n;

  constructor(private readonly deps: ReconcilerDeps) {}

  get entries(): number {
    return this.shadow.size;
  }

  /** What the kernel map holds, as read at start-up. */
  adopt(entries: Array<[AllowKey, AllowValue]>): void {
    for (const [key, value] of entries)
      this.shadow.set(keyString(key.identity, key.addr, key.prefixLen), { key, value });
    this.fullResyncPending = true;
  }

  /**
   * An entry the kernel's inline learner wrote: remember it as written.
   * Returns true when it is new or differs from what we wrote. `ip`: the
   * host address as formatIp gives it, when the caller has it.
   */
  noteKernelEntry(key: AllowKey, value: AllowValue, ip?: string): boolean {
    // a host entry's key string is its address as text: the caller may have it already
    const k =
      ip !== undefined && key.prefixLen === 128
        ? `${key.identity}/${ip}`
        : keyString(key.identity, key.addr, key.prefixLen);
    const have = this.shadow.get(k);
    if (have && sameValue(have.value, value)) return false;
    this.shadow.set(k, { key, value });
    return true;
  }

  /** How many allow entries each pod holds, as far as the reconciler knows (what it wrote, what the kernel reported). */
  entriesByIdentity(): Map<number, number> {
    const counts = new Map<number, number>();
    for (const identity of this.shadow.identities()) counts.set(identity, this.shadow.countOf(identity));
    return counts;
  }

  /** The name hashes of every entry it knows the kernel holds. */
  *nameHashes(): Iterable<bigint> {
    for (const [, { value }] of this.shadow.entries()) yield value.nameHash;
  }

  /** Identities with entries it knows the map holds. */
  knownIdentities(): Iterable<number> {
    return this.shadow.identities();
  }

  /** The keys of one identity it knows the map holds. */
  knownKeys(identity: number): Iterable<AllowKey> {
    return this.shadow.keysOf(identity);
  }

  markDirty(changes: Change[]): void {
    for (const c of changes) this.dirty.set(`${c.identity}/${c.ip}`, c);
  }

  /** Policy or pod set changed: diff everything on the next flush. */
  markAll(): void {
    this.fullResyncPending = true;
  }

  /** The entry (identity, ip) should have, or undefined. */
  private desiredHost(identity: number, ip: string, overflow: { n: number }): AllowValue | undefined {
    const view = this.deps.cache.view(identity, ip);
    if (!view) return undefined;
    let expiresAtMs = -Infinity;
    let newest: { name: string; learnedBy: string } | undefined;
    const portLists: PortRule[][] = [];
    for (const e of view.entries) {
      const ports = this.deps.portsFor(identity, e.name);
      if (!ports) continue;
      portLists.push(ports);
      if (e.expiresAtMs > expiresAtMs) {
        expiresAtMs = e.expiresAtMs;
        newest = e;
      }
    }
    if (!newest) return undefined;
    const merged = mergePorts(portLists);
    if (merged.overflow) overflow.n++;
    return {
      expiresNs: this.deps.toKernelNs(expiresAtMs),
      nameHash: this.deps.nameHash(newest.name),
      ports: merged.ports,
      source: newest.learnedBy === 'kernel' ? AllowSource.kernel : AllowSource.agent,
    };
  }

  /** Did the kernel write a newer, unexpired entry than the one we know? Then adopt it. */
  private refreshedByKernel(key: AllowKey, known: AllowValue): boolean {
    const current = this.deps.allow.get(key);
    if (!current || current.source !== AllowSource.kernel || sameValue(current, known)) return false;
    if (current.expiresNs !== 0n && current.expiresNs <= this.deps.kernelNowNs()) return false;
    this.shadow.set(keyString(key.identity, key.addr, key.prefixLen), { key, value: current });
    return true;
  }

  /** Entries we may not judge: learned by the kernel, unexpired, for a name we do not know. */
  private keepOpaque(key: AllowKey, value: AllowValue, identities: Set<number>): boolean {
    return (
      identities.has(key.identity) &&
      value.source === AllowSource.kernel &&
      value.expiresNs > this.deps.kernelNowNs() &&
      this.deps.nameOf(value.nameHash) === undefined
    );
  }

  /** Apply what changed (or everything, after markAll/adopt) to the kernel map. */
  flush(): ReconcileResult {
    const overflow = { n: 0 };
    // decided this flush, by key string: written (and the shadow updated) at the end
    const upserts = new Map<string, [AllowKey, AllowValue]>();
    const deletes = new Map<string, AllowKey>();
    const want = (k: string, key: AllowKey, value: AllowValue | undefined) => {
      if (upserts.has(k) || deletes.has(k)) return;
      const have = this.shadow.get(k);
      if (value === undefined) {
        if (!have) return;
        // The inline learner may have refreshed this entry since we last
        // wrote it (the agent sees that answer ~0.3 ms later): keep it.
        if (have.value.source !== AllowSource.static && this.refreshedByKernel(have.key, have.value)) return;
        deletes.set(k, have.key);
        return;
      }
      if (have && sameValue(have.value, value)) return;
      upserts.set(k, [key, value]);
    };

    this.dueRetries();
    const identities = new Set(this.deps.identities());
    let desired: Map<string, { key: AllowKey; value: AllowValue }> | undefined;
    if (this.fullResyncPending) {
      this.fullResyncPending = false;
      desired = new Map();
      for (const identity of identities) {
        for (const ip of this.deps.cache.ipsOf(identity)) {
          const value = this.desiredHost(identity, ip, overflow);
          const addr = parseIp(ip);
          if (value) desired.set(keyString(identity, addr, 128), { key: { identity, addr, prefixLen: 128 }, value });
        }
      }
      for (const [k, have] of [...this.shadow.entries()]) {
        if (!desired.has(k) && !this.keepOpaque(have.key, have.value, identities)) want(k, have.key, undefined);
      }
      for (const [k, d] of desired) want(k, d.key, d.value);
    }
    // Dirty entries even after a full diff: an entry the kernel wrote for a
    // name the cache refused (past the pod's name cap) is not opaque: it goes.
    for (const c of this.dirty.values()) {
      const addr = parseIp(c.ip);
      const k = keyString(c.identity, addr, 128);
      if (desired?.has(k)) continue; // decided above
      const value = identities.has(c.identity) ? this.desiredHost(c.identity, c.ip, overflow) : undefined;
      want(k, { identity: c.identity, addr, prefixLen: 128 }, value);
    }
    this.dirty.clear();
    // Deletes first: a pod's old entries are gone before anything new lands.
    const failures: string[] = [];
    const deleted = this.applyDeletes(deletes, failures);
    const written = this.applyUpserts(upserts, failures);
    return {
      upserts: written,
      deletes: deleted,
      portOverflows: overflow.n,
      failed: failures.length,
      ...(failures.length ? { error: failures[0] } : {}),
      retrying: this.retry.size,
    };
  }

  /** Failed entries whose wait is over go back into the dirty set (a bounded number). */
  private dueRetries(): void {
    if (this.retry.size === 0 || this.deps.kernelNowNs() < this.retryAtNs) return;
    let n = 0;
    for (const [k, key] of this.retry) {
      if (n++ >= RETRY_BATCH) break;
      this.retry.delete(k);
      if (key.prefixLen === 128) this.markDirty([{ identity: key.identity, ip: formatIp(key.addr) }]);
      else this.fullResyncPending = true; // (a prefix entry of an older agent: only a full diff judges it)
    }
  }

  private failed(k: string, key: AllowKey, op: string, err: unknown, failures: string[]): void {
    if (this.retry.size === 0) this.retryAtNs = this.deps.kernelNowNs() + RETRY_INTERVAL_NS;
    this.retry.set(k, key);
    failures.push(`${op} allow entry ${k}: ${(err as Error).message}`);
  }

  private applyDeletes(deletes: Map<string, AllowKey>, failures: string[]): number {
    if (deletes.size === 0) return 0;
    try {
      this.deps.allow.deleteMany([...deletes.values()]);
      for (const k of deletes.keys()) this.done(k);
      return deletes.size;
    } catch {
      // some may have gone: one by one, and only what went leaves the shadow
    }
    let n = 0;
    for (const [k, key] of deletes) {
      try {
        this.deps.allow.delete(key);
        this.done(k);
        n++;
      } catch (err) {
        this.failed(k, key, 'deleting', err, failures);
      }
    }
    return n;
  }

  private applyUpserts(upserts: Map<string, [AllowKey, AllowValue]>, failures: string[]): number {
    if (upserts.size === 0) return 0;
    const entries = [...upserts];
    let written = 0;
    try {
      written = this.deps.allow.setMany(entries.map(([, e]) => e));
    } catch {
      // some may be in: the rest one by one below
    }
    let n = 0;
    for (let i = 0; i < entries.length; i++) {
      const [k, [key, value]] = entries[i]!;
      if (i >= written) {
        try {
          this.deps.allow.set(key, value);
        } catch (err) {
          this.failed(k, key, 'writing', err, failures);
          continue;
        }
      }
      this.done(k, { key, value });
      n++;
    }
    return n;
  }

  /** A write went through: the shadow follows it, and the entry waits for no retry. */
  private done(k: string, entry?: { key: AllowKey; value: AllowValue }): void {
    if (entry) this.shadow.set(k, entry);
    else this.shadow.delete(k);
    this.retry.delete(k);
  }
}
